// amesh knock: ask a peer for a session (method `knock`).
#include "commands.hpp"

namespace amesh {
namespace {

struct KnockArgs {
  std::string amid;
  std::string intent;
  std::string action;
  std::string type = "request_response";
  int ttl = 300;
  int expected_messages = 0;
  bool unsigned_messages = false;
  double timeout = 30;
};

std::string ConstraintsText(const json& c) {
  if (!c.is_object() || c.empty()) return "-";
  std::string out;
  auto add = [&](std::string part) {
    if (!out.empty()) out += ", ";
    out += std::move(part);
  };
  if (c.contains("max_message_size_bytes")) {
    add("max " + Field(c, "max_message_size_bytes") + " B/message");
  }
  if (c.contains("max_messages")) add(Field(c, "max_messages") + " messages");
  if (c.contains("ttl_seconds")) add("ttl " + Field(c, "ttl_seconds") + " s");
  if (c.contains("signed_messages")) {
    add(c.value("signed_messages", true) ? "signed messages" : "unsigned messages");
  }
  return out;
}

int RunKnock(Context& ctx, const KnockArgs& args) {
  int status = 0;
  if (!ValidAmid(ctx, args.amid, &status)) return status;
  if (auto bad = CheckIntent(args.intent)) return ctx.UsageError("--intent: " + *bad);
  if (!args.action.empty()) {
    if (auto bad = CheckIntentSegment(args.action, "--action")) return ctx.UsageError(*bad);
  }
  const auto timeout_ms = static_cast<long long>(args.timeout * 1000);
  json params = {{"amid", args.amid},
                 {"intent", args.intent},
                 {"type", args.type},
                 {"ttl_seconds", args.ttl},
                 {"timeout_ms", timeout_ms}};
  if (!args.action.empty()) params["action"] = args.action;
  if (args.expected_messages > 0) params["expected_messages"] = args.expected_messages;
  if (args.unsigned_messages) params["signed_messages"] = false;
  return CallAndPrint(
      ctx, "knock", params,
      [&](const json& r) {
        ctx.out() << "KNOCK accepted by " << StringField(r, "peer", args.amid) << '\n';
        PrintFields(ctx.out(), {{"session", Field(r, "session_id")},
                                {"type", Field(r, "type")},
                                {"capabilities", Field(r, "capabilities")},
                                {"constraints", ConstraintsText(r.value("constraints", json()))}});
      },
      std::chrono::milliseconds(timeout_ms + 15000));
}

}  // namespace

void RegisterKnock(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<KnockArgs>();
  CLI::App* sub = AddCommand(root, ctx, "knock",
                             "Ask an agent for a session (a signed KNOCK its policy judges)",
                             [args](Context& c) { return RunKnock(c, *args); });
  Kind(sub->add_option("AMID", args->amid, "the agent to knock on")->required(), ctx,
       ValueKind::kAmid);
  sub->add_option("--intent,-i", args->intent, "what the session is for: CATEGORY[/SUBCATEGORY]")
      ->type_name("CAT[/SUB]")
      ->required();
  sub->add_option("--action,-a", args->action, "the intended action, e.g. search")
      ->type_name("ACTION");
  Choices(sub->add_option("--type,-t", args->type, "session type (default request_response)")
              ->type_name("TYPE"),
          ctx, {"request_response", "conversation", "stream"});
  sub->add_option("--ttl", args->ttl, "session lifetime in seconds (1 to 86400; default 300)")
      ->type_name("SECONDS")
      ->check(CLI::Range(1, 86400));
  sub->add_option("--expected-messages", args->expected_messages,
                  "how many messages the session should carry")
      ->type_name("N")
      ->check(CLI::Range(1, 1000000));
  sub->add_flag("--unsigned", args->unsigned_messages,
                "ask for a session without per-message signatures (faster streams)");
  sub->add_option("--timeout", args->timeout, "seconds to wait for ACCEPT or REJECT (default 30)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.1, 3600.0));
}

}  // namespace amesh
