// amesh sessions: list sessions (method `sessions`).
#include "commands.hpp"

namespace amesh {

void RegisterSessions(CLI::App& root, Context& ctx) {
  auto state = std::make_shared<std::string>();
  CLI::App* sub = AddCommand(
      root, ctx, "sessions", "List sessions (peer, intent, state, message counts)",
      [state](Context& c) {
        json params = json::object();
        if (!state->empty()) params["state"] = *state;
        return CallAndPrint(c, "sessions", params, [&](const json& r) {
          const json sessions = r.value("sessions", json::array());
          if (sessions.empty()) {
            c.out() << "No sessions.\n";
            return;
          }
          Table table(
              {"SESSION", "PEER", "ROLE", "INTENT", "TYPE", "STATE", "SENT/RECV", "EXPIRES"});
          for (const auto& s : sessions) {
            table.AddRow({Field(s, "session_id"), Field(s, "peer"), Field(s, "role"),
                          IntentText(s.value("intent", json())), Field(s, "type"),
                          Field(s, "state"),
                          Field(s, "messages_sent") + "/" + Field(s, "messages_received"),
                          Field(s, "expires_at")});
          }
          table.Print(c.out());
        });
      });
  Choices(sub->add_option("--state", *state, "only sessions in this state")->type_name("STATE"),
          ctx, {"pending", "active", "closed", "killed", "rejected", "expired"});
}

}  // namespace amesh
