// amesh send: one message to a session or an agent, optionally waiting for the response
// (method `send`).
#include <charconv>

#include "commands.hpp"

namespace amesh {
namespace {

constexpr double kDefaultWaitSeconds = 30;

struct SendArgs {
  std::string target;
  std::optional<std::string> payload;
  std::string intent;
  std::string action;
  std::string type = "request";
  std::optional<std::string> idempotency_key;
  std::string wait;  // the --wait value ("" = the default)
  CLI::Option* wait_option = nullptr;
  CLI::Option* payload_option = nullptr;
};

std::optional<double> Seconds(const std::string& text) {
  double v = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size() || v < 0 || v > 86400) {
    return std::nullopt;
  }
  return v;
}

int RunSend(Context& ctx, SendArgs& args) {
  // `amesh send X --wait '{"q":1}'`: CLI11 hands the payload to --wait's optional value.
  std::optional<double> wait_seconds;
  if (args.wait_option->count() > 0) {
    if (args.wait.empty()) {
      wait_seconds = kDefaultWaitSeconds;
    } else if (auto s = Seconds(args.wait)) {
      wait_seconds = *s;
    } else if (!args.payload) {
      args.payload = args.wait;
      wait_seconds = kDefaultWaitSeconds;
    } else {
      return ctx.UsageError("--wait takes a number of seconds (0 to 86400), not '" + args.wait +
                            "'");
    }
  }
  json params = {{"type", args.type}};
  if (LooksLikeSessionId(args.target)) {
    params["to"] = NormalizeSessionId(args.target);
  } else if (auto bad = CheckAmid(args.target); !bad) {
    params["to"] = args.target;
  } else {
    return ctx.UsageError("'" + args.target + "' is neither a session id nor an AMID",
                          "list sessions with `amesh sessions`; find agents with `amesh search`");
  }
  if (!args.intent.empty()) {
    if (auto bad = CheckIntent(args.intent)) return ctx.UsageError("--intent: " + *bad);
    params["intent"] = args.intent;
  }
  if (!args.action.empty()) {
    if (auto bad = CheckIntentSegment(args.action, "--action")) return ctx.UsageError(*bad);
    params["action"] = args.action;
  }
  if (args.idempotency_key) {
    if (auto bad = CheckIdempotencyKey(*args.idempotency_key)) return ctx.UsageError(*bad);
    params["idempotency_key"] = *args.idempotency_key;
  }
  auto payload = ReadJsonArgument(ctx, args.payload, "PAYLOAD", true);
  if (!payload) return ctx.UsageError(payload.error());
  params["payload"] = std::move(*payload);

  // Budget: a knock may come first (its default answer timeout is 30 s), then the wait.
  auto timeout = std::chrono::milliseconds(Context::kDefaultTimeout);
  if (wait_seconds) {
    const auto wait_ms = static_cast<long long>(*wait_seconds * 1000);
    params["wait_ms"] = wait_ms;
    timeout += std::chrono::milliseconds(wait_ms);
  }
  auto result = ctx.Call("send", params, timeout);
  if (!result) {
    if (result.error().data_code == "timeout" && wait_seconds) {
      return ctx.Fail(result.error(),
                      "no response within the wait; it may still arrive: `amesh recv --session " +
                          StringField(result.error().data, "session_id", "ID") + "`");
    }
    return ctx.Fail(result.error());
  }
  const bool duplicate = result->value("delivery", "") == "duplicate";
  if (duplicate && wait_seconds) {
    // Sent by an earlier call: its response (if any) went to that call or is in the inbox.
    return ctx.Error(kExitError, "already sent under this idempotency key (session " +
                                     Field(*result, "session_id") + ", sequence " +
                                     Field(*result, "sequence") +
                                     "); not waiting: read a response with `amesh recv --session " +
                                     Field(*result, "session_id") + "`");
  }
  if (ctx.json_output()) {
    ctx.PrintJson(*result);
    return kExitOk;
  }
  if (!wait_seconds) {
    ctx.out() << "Sent " << args.type << " in session " << Field(*result, "session_id")
              << " (sequence " << Field(*result, "sequence") << ", " << Field(*result, "delivery")
              << ")\n";
    return kExitOk;
  }
  const json response = result->value("response", json());
  const json body = response.is_object() ? response.value("payload", json()) : json();
  ctx.PrintJsonLine(body);
  if (response.is_object() && response.value("type", "") == "error") {
    return ctx.Error(kExitError, "the peer answered with an error: " +
                                     (body.is_object() ? StringField(body, "message", Compact(body))
                                                       : Compact(body)));
  }
  return kExitOk;
}

}  // namespace

void RegisterSend(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<SendArgs>();
  CLI::App* sub =
      AddCommand(root, ctx, "send",
                 "Send a JSON message to a session or an agent (knocking first when needed)",
                 [args](Context& c) { return RunSend(c, *args); });
  Kind(sub->add_option("TARGET", args->target, "a session id, or an agent's AMID")->required(), ctx,
       ValueKind::kSession);
  args->payload_option =
      sub->add_option("PAYLOAD", args->payload,
                      "the message: a JSON object, or - to read it from stdin (the default when "
                      "stdin is not a terminal)");
  sub->add_option("--intent,-i", args->intent,
                  "CATEGORY[/SUBCATEGORY] for a new session (needed with an AMID unless a "
                  "session for it is cached)")
      ->type_name("CAT[/SUB]");
  sub->add_option("--action,-a", args->action, "the intended action, for a new session")
      ->type_name("ACTION");
  Choices(sub->add_option("--type,-t", args->type, "envelope type (default request)")
              ->type_name("TYPE"),
          ctx,
          {"request", "response", "status", "error", "capability_negotiation",
           "capability_negotiation_response"});
  sub->add_option(
         "--idempotency-key,-k", args->idempotency_key,
         "send at most once under KEY: a retry with the same KEY (within 24 h) is not sent "
         "again and prints the first send's sequence")
      ->type_name("KEY");
  args->wait_option =
      sub->add_option("--wait,-w", args->wait,
                      "wait for the response (default 30 s) and print its payload as JSON")
          ->type_name("SECONDS")
          ->expected(0, 1);
}

}  // namespace amesh
