// amesh block|unblock|allow: the policy's blocklist and allowlist (methods block, unblock,
// allow).
#include "commands.hpp"

namespace amesh {
namespace {

void AddPeerCommand(CLI::App& root, Context& ctx, const std::string& name,
                    const std::string& description,
                    std::function<void(Context&, const std::string&, const json&)> human) {
  auto amid = std::make_shared<std::string>();
  CLI::App* sub = AddCommand(root, ctx, name, description, [=](Context& c) {
    int status = 0;
    if (!ValidAmid(c, *amid, &status)) return status;
    return CallAndPrint(c, name, json{{"amid", *amid}}, [&](const json& r) { human(c, *amid, r); });
  });
  Kind(sub->add_option("AMID", *amid, "the agent")->required(), ctx, ValueKind::kAmid);
}

}  // namespace

void RegisterPeers(CLI::App& root, Context& ctx) {
  AddPeerCommand(root, ctx, "block", "Block an agent: its KNOCKs are rejected, its sessions killed",
                 [](Context& c, const std::string& amid, const json& r) {
                   c.out() << "Blocked " << amid << " (" << IntField(r, "sessions_killed")
                           << " sessions killed)\n";
                 });
  AddPeerCommand(root, ctx, "unblock", "Remove an agent from the blocklist",
                 [](Context& c, const std::string& amid, const json&) {
                   c.out() << "Unblocked " << amid << '\n';
                 });
  AddPeerCommand(root, ctx, "allow",
                 "Add an agent to the allowlist (and remove it from the blocklist)",
                 [](Context& c, const std::string& amid, const json& r) {
                   const json list = r.value("allowlist", json::array());
                   c.out() << "Allowed " << amid << " (allowlist: " << list.size()
                           << (list.size() == 1 ? " agent)\n" : " agents)\n");
                 });
}

}  // namespace amesh
