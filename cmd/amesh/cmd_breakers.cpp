// Circuit breakers: amesh pause|resume|kill|shutdown|emergency-stop (methods pause, resume,
// kill, shutdown, emergency_stop).
#include "commands.hpp"

namespace amesh {

void RegisterBreakers(CLI::App& root, Context& ctx) {
  AddCommand(root, ctx, "pause", "Reject every new KNOCK (reason paused) until `amesh resume`",
             [](Context& c) {
               return CallAndPrint(c, "pause", json::object(), [&](const json&) {
                 c.out() << "Paused: new KNOCKs are rejected (undo with `amesh resume`)\n";
               });
             });
  AddCommand(root, ctx, "resume", "Accept new KNOCKs again (per the policy)", [](Context& c) {
    return CallAndPrint(c, "resume", json::object(), [&](const json&) {
      c.out() << "Resumed: new KNOCKs are judged by the policy again\n";
    });
  });

  auto session = std::make_shared<std::string>();
  CLI::App* kill = AddCommand(
      root, ctx, "kill", "End a session at once, without telling the peer", [session](Context& c) {
        int status = 0;
        if (!ValidSession(c, *session, &status)) return status;
        return CallAndPrint(c, "kill", json{{"session_id", *session}}, [&](const json& r) {
          c.out() << "Killed session " << Field(r, "session_id") << '\n';
        });
      });
  Kind(kill->add_option("SESSION", *session, "the session id")->required(), ctx,
       ValueKind::kSession);

  AddCommand(root, ctx, "shutdown",
             "Circuit breaker: close every session and refuse new ones (undo with resume)",
             [](Context& c) {
               return CallAndPrint(c, "shutdown", json::object(), [&](const json& r) {
                 c.out() << "Shut down: closed " << IntField(r, "sessions_closed")
                         << " sessions; new sessions are refused (undo with `amesh resume`)\n";
               });
             });
  AddCommand(root, ctx, "emergency-stop",
             "Kill every session, pause, and run the configured stop command", [](Context& c) {
               return CallAndPrint(c, "emergency_stop", json::object(), [&](const json& r) {
                 c.out() << "Emergency stop: killed " << IntField(r, "sessions_killed")
                         << " sessions; paused";
                 const json stop = r.value("stop_command", json::object());
                 if (stop.value("ran", false)) {
                   c.out() << "; stop command ran (exit status " << Field(stop, "exit_status")
                           << ")";
                 } else {
                   c.out() << "; no stop command configured";
                 }
                 c.out() << '\n';
               });
             });
}

}  // namespace amesh
