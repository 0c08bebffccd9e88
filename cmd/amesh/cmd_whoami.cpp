// amesh whoami: this agent's identity (method `whoami`).
#include "commands.hpp"

namespace amesh {

void RegisterWhoami(CLI::App& root, Context& ctx) {
  AddCommand(root, ctx, "whoami", "Show this agent's AMID, public keys, registry and relay",
             [](Context& c) {
               return CallAndPrint(c, "whoami", json::object(), [&](const json& r) {
                 PrintFields(c.out(), {{"amid", Field(r, "amid")},
                                       {"name", Field(r, "display_name")},
                                       {"signing key", Field(r, "signing_public_key")},
                                       {"exchange key", Field(r, "exchange_public_key")},
                                       {"registry", Field(r, "registry")},
                                       {"relay", Field(r, "relay")}});
               });
             });
}

}  // namespace amesh
