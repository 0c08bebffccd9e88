// amesh status: the daemon, the identity, the relay and registry links (methods ping + status,
// pipelined).
#include "commands.hpp"

namespace amesh {
namespace {

int RunStatus(Context& ctx) {
  auto client = ctx.Daemon();
  if (!client) return ctx.Fail(client.error());
  // Both requests go out before either answer is read.
  auto ping_id = (*client)->SendRequest("ping", json::object());
  if (!ping_id) return ctx.Fail(ping_id.error());
  auto status_id = (*client)->SendRequest("status", json::object());
  if (!status_id) return ctx.Fail(status_id.error());
  auto ping = (*client)->Await(*ping_id, Context::kDefaultTimeout);
  if (!ping) return ctx.Fail(ping.error());
  auto status = (*client)->Await(*status_id, Context::kDefaultTimeout);
  if (!status) return ctx.Fail(status.error());
  if (ctx.json_output()) {
    ctx.PrintJson(*status);
    return kExitOk;
  }
  const json& s = *status;
  const bool initialized = s.value("initialized", false);
  const json relay = s.value("relay", json::object());
  const json registry = s.value("registry", json::object());
  const json sessions = s.value("sessions", json::object());
  const json inbox = s.value("inbox", json::object());
  const json outbox = s.value("outbox", json::object());
  std::vector<std::pair<std::string, std::string>> fields;
  fields.emplace_back("agent",
                      initialized ? Field(s, "amid") : "not initialized (run `amesh init`)");
  fields.emplace_back("daemon", "agentmeshd " + Field(*ping, "version") + ", pid " +
                                    Field(*ping, "pid") + ", up " +
                                    HumanDuration(IntField(*ping, "uptime_seconds")));
  fields.emplace_back("home", Field(s, "home"));
  fields.emplace_back("socket", StringField(s, "socket", ctx.SocketPath()));
  fields.emplace_back("relay",
                      Field(relay, "url") +
                          (relay.value("connected", false) ? " (connected)" : " (not connected)"));
  fields.emplace_back("registry",
                      Field(registry, "url") +
                          (registry.value("reachable", false) ? " (reachable)" : " (unreachable)"));
  std::string presence = "not registered";
  if (registry.value("registered", false)) {
    auto it = registry.find("presence");
    presence = it != registry.end() && it->is_string()
                   ? it->get<std::string>() + " (in the registry)"
                   : "not reported yet";
  }
  fields.emplace_back("presence", presence);
  fields.emplace_back("sessions", std::to_string(IntField(sessions, "active")) + " active");
  fields.emplace_back("inbox", std::to_string(IntField(inbox, "pending")) + " pending");
  fields.emplace_back("outbox", std::to_string(IntField(outbox, "pending")) +
                                    " not yet confirmed by the relay or the recipient");
  fields.emplace_back("knocks", s.value("paused", false)
                                    ? "paused: all rejected (`amesh resume` to accept)"
                                    : "judged by the policy (`amesh policy show`)");
  PrintFields(ctx.out(), fields);
  return kExitOk;
}

}  // namespace

void RegisterStatus(CLI::App& root, Context& ctx) {
  AddCommand(root, ctx, "status",
             "Show the agent, the daemon, relay and registry connectivity, sessions and inbox",
             [](Context& c) { return RunStatus(c); });
}

}  // namespace amesh
