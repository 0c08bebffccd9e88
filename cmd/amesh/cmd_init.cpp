// amesh init: create the agent's identity (method `init`).
#include "commands.hpp"

namespace amesh {
namespace {

struct InitArgs {
  std::string name;
  std::string registry;
  std::string relay;
  bool force = false;
};

bool HasScheme(const std::string& url, std::initializer_list<std::string_view> schemes) {
  for (auto scheme : schemes) {
    if (url.starts_with(scheme) && url.size() > scheme.size()) return true;
  }
  return false;
}

int RunInit(Context& ctx, const InitArgs& args) {
  json params = json::object();
  if (!args.name.empty()) params["name"] = args.name;
  if (!args.registry.empty()) {
    if (!HasScheme(args.registry, {"http://", "https://"})) {
      return ctx.UsageError("--registry must be an http:// or https:// URL, not '" + args.registry +
                            "'");
    }
    params["registry"] = args.registry;
  }
  if (!args.relay.empty()) {
    if (!HasScheme(args.relay, {"ws://", "wss://"})) {
      return ctx.UsageError("--relay must be a ws:// or wss:// URL, not '" + args.relay + "'");
    }
    params["relay"] = args.relay;
  }
  if (args.force) params["force"] = true;
  return CallAndPrint(ctx, "init", params, [&](const json& r) {
    const std::string amid = StringField(r, "amid", "?");
    const std::string home = StringField(r, "home", ctx.HomeDir());
    if (r.value("created", false)) {
      ctx.out() << "Initialized agent " << amid << " in " << home << '\n'
                << "Next: `amesh register --capability CAP` to be found by other agents.\n";
    } else {
      ctx.out() << "Already initialized: agent " << amid << " in " << home
                << " (--force replaces the identity)\n";
    }
  });
}

}  // namespace

void RegisterInit(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<InitArgs>();
  CLI::App* sub = AddCommand(root, ctx, "init", "Create this agent's identity and settings",
                             [args](Context& c) { return RunInit(c, *args); });
  sub->add_option("--name", args->name, "display name shown to other agents")->type_name("NAME");
  sub->add_option("--registry", args->registry, "registry URL (http:// or https://)")
      ->type_name("URL");
  sub->add_option("--relay", args->relay, "relay URL (ws:// or wss://)")->type_name("URL");
  sub->add_flag("--force", args->force,
                "replace an existing identity (the old AMID is lost for good)");
}

}  // namespace amesh
