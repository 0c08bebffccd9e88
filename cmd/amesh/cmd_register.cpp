// amesh register: publish this agent in the registry (method `register`).
#include "commands.hpp"

namespace amesh {
namespace {

struct RegisterArgs {
  std::vector<std::string> capabilities;
  std::string display_name;
};

int RunRegister(Context& ctx, const RegisterArgs& args) {
  json params = json::object();
  if (!args.capabilities.empty()) {
    json caps = json::array();
    for (const auto& cap : args.capabilities) {
      if (auto bad = CheckCapability(cap, false)) return ctx.UsageError("--capability: " + *bad);
      caps.push_back(cap);
    }
    params["capabilities"] = std::move(caps);
  }
  if (!args.display_name.empty()) params["display_name"] = args.display_name;
  return CallAndPrint(ctx, "register", params, [&](const json& r) {
    ctx.out() << "Registered " << Field(r, "amid") << " at " << Field(r, "registry") << " (tier "
              << Field(r, "tier") << ")\n";
  });
}

}  // namespace

void RegisterRegister(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<RegisterArgs>();
  CLI::App* sub =
      AddCommand(root, ctx, "register",
                 "Publish this agent (capabilities, prekeys) in the registry so others find it",
                 [args](Context& c) { return RunRegister(c, *args); });
  sub->add_option("--capability,-c", args->capabilities,
                  "a capability this agent offers, e.g. travel/flights (repeat, or separate with "
                  "commas)")
      ->type_name("CAP")
      ->delimiter(',');
  sub->add_option("--display-name", args->display_name, "name shown in search results")
      ->type_name("NAME");
}

}  // namespace amesh
