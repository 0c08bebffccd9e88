// amesh recv: take messages out of the inbox and print them as NDJSON (method `recv`).
#include "commands.hpp"

namespace amesh {
namespace {

struct RecvArgs {
  bool follow = false;
  std::string session;
  std::string from;
  std::string timeout;
  int limit = 100;
};

// Longest single `recv` wait in --follow mode; the loop simply calls again.
constexpr long long kFollowSliceMs = 25000;

int RunRecv(Context& ctx, RecvArgs& args) {
  json params = {{"limit", args.limit}};
  int status = 0;
  if (!args.session.empty()) {
    if (!ValidSession(ctx, args.session, &status)) return status;
    params["session_id"] = args.session;
  }
  if (!args.from.empty()) {
    if (!ValidAmid(ctx, args.from, &status)) return status;
    params["from"] = args.from;
  }
  std::optional<long long> timeout_ms;
  if (!args.timeout.empty()) {
    auto ms = SecondsToMillis(args.timeout, "--timeout");
    if (!ms) return ctx.UsageError(ms.error());
    timeout_ms = *ms;
  }

  if (!args.follow) {
    params["timeout_ms"] = timeout_ms.value_or(0);
    auto result =
        ctx.Call("recv", params,
                 std::chrono::milliseconds(timeout_ms.value_or(0)) + Context::kDefaultTimeout);
    if (!result) return ctx.Fail(result.error());
    if (ctx.json_output()) {
      ctx.PrintJson(*result);
      return kExitOk;
    }
    const json messages = result->value("messages", json::array());
    for (const auto& m : messages) ctx.PrintJsonLine(m);
    if (messages.empty() && timeout_ms.value_or(0) > 0) {
      return ctx.Error(kExitTimeout, "no message within " + args.timeout + " s");
    }
    return kExitOk;
  }

  // --follow: call recv again and again; with --timeout, stop after that long without a
  // message.
  auto idle_deadline = std::chrono::steady_clock::now();
  auto reset_deadline = [&] {
    idle_deadline =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms.value_or(0));
  };
  reset_deadline();
  while (true) {
    long long slice = kFollowSliceMs;
    if (timeout_ms) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                            idle_deadline - std::chrono::steady_clock::now())
                            .count();
      if (left <= 0) return kExitOk;
      slice = std::min(slice, static_cast<long long>(left));
    }
    params["timeout_ms"] = slice;
    auto result =
        ctx.Call("recv", params, std::chrono::milliseconds(slice) + Context::kDefaultTimeout);
    if (!result) return ctx.Fail(result.error());
    const json messages = result->value("messages", json::array());
    for (const auto& m : messages) ctx.PrintJsonLine(m);
    if (!messages.empty()) reset_deadline();
    if (!ctx.out()) return kExitOk;  // stdout closed (e.g. `| head -1`)
  }
}

}  // namespace

void RegisterRecv(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<RecvArgs>();
  CLI::App* sub =
      AddCommand(root, ctx, "recv",
                 "Take received messages out of the inbox and print them, one JSON object per line",
                 [args](Context& c) { return RunRecv(c, *args); });
  sub->add_flag("--follow,-f", args->follow, "keep waiting for messages until interrupted");
  Kind(sub->add_option("--session,-s", args->session, "only messages of this session")
           ->type_name("ID"),
       ctx, ValueKind::kSession);
  Kind(sub->add_option("--from", args->from, "only messages from this agent")->type_name("AMID"),
       ctx, ValueKind::kAmid);
  sub->add_option("--timeout", args->timeout,
                  "wait up to this many seconds for a message (exit 5 if none); with --follow, "
                  "stop after this long without one")
      ->type_name("SECONDS");
  sub->add_option("--limit", args->limit, "at most N messages per call (1 to 10000)")
      ->type_name("N")
      ->check(CLI::Range(1, 10000));
}

}  // namespace amesh
