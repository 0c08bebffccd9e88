// amesh rpc: call any JSON-RPC method of agentmeshd (docs/RPC.md) and print its result.
#include "commands.hpp"

namespace amesh {
namespace {

struct RpcArgs {
  std::string method;
  std::optional<std::string> params;
  bool follow = false;
};

int RunRpc(Context& ctx, const RpcArgs& args) {
  json params = json::object();
  if (args.params) {
    auto parsed = ReadJsonArgument(ctx, args.params, "PARAMS_JSON", true);
    if (!parsed) return ctx.UsageError(parsed.error());
    params = std::move(*parsed);
  }
  auto client = ctx.Daemon();
  if (!client) return ctx.Fail(client.error());
  auto result = (*client)->Call(args.method, params, Context::kDefaultTimeout);
  if (!result) return ctx.Fail(result.error());
  if (args.follow) {
    ctx.PrintJsonLine(*result);
    while (ctx.out()) {
      auto event = (*client)->NextEvent(std::nullopt);
      if (!event) return ctx.Fail(event.error());
      if (*event) ctx.PrintJsonLine(**event);
    }
    return kExitOk;
  }
  ctx.PrintJson(*result);
  return kExitOk;
}

}  // namespace

void RegisterRpc(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<RpcArgs>();
  CLI::App* sub = AddCommand(root, ctx, "rpc",
                             "Call a JSON-RPC method of agentmeshd directly (see docs/RPC.md)",
                             [args](Context& c) { return RunRpc(c, *args); });
  Choices(sub->add_option("METHOD", args->method, "the method, e.g. ping or sessions")->required(),
          ctx, {"ack",         "allow",          "audit",    "block",       "close",
                "daemon.stop", "emergency_stop", "init",     "kill",        "knock",
                "lookup",      "pause",          "ping",     "policy.get",  "policy.set",
                "policy.test", "recv",           "register", "reply",       "resume",
                "search",      "send",           "sessions", "shutdown",    "status",
                "subscribe",   "transcript",     "unblock",  "unsubscribe", "whoami"},
          false);
  sub->add_option("PARAMS_JSON", args->params,
                  "the params object ({} when absent), or - to read it from stdin");
  sub->add_flag("--follow,-f", args->follow,
                "after the result, print event notifications as NDJSON (for subscribe)");
}

}  // namespace amesh
