// amesh reply: answer in a session (method `reply`).
#include "commands.hpp"

namespace amesh {
namespace {

struct ReplyArgs {
  std::string session;
  std::optional<std::string> payload;
  std::string type = "response";
  std::optional<std::string> idempotency_key;
};

int RunReply(Context& ctx, ReplyArgs& args) {
  int status = 0;
  if (!ValidSession(ctx, args.session, &status)) return status;
  auto payload = ReadJsonArgument(ctx, args.payload, "PAYLOAD", true);
  if (!payload) return ctx.UsageError(payload.error());
  json params = {{"session_id", args.session}, {"payload", std::move(*payload)}};
  if (args.type != "response") params["type"] = args.type;
  if (args.idempotency_key) {
    if (auto bad = CheckIdempotencyKey(*args.idempotency_key)) return ctx.UsageError(*bad);
    params["idempotency_key"] = *args.idempotency_key;
  }
  return CallAndPrint(ctx, "reply", params, [&](const json& r) {
    ctx.out() << "Replied (" << args.type << ") in session " << Field(r, "session_id")
              << " (sequence " << Field(r, "sequence") << ", " << Field(r, "delivery") << ")\n";
  });
}

}  // namespace

void RegisterReply(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<ReplyArgs>();
  CLI::App* sub = AddCommand(root, ctx, "reply", "Answer in a session (a response by default)",
                             [args](Context& c) { return RunReply(c, *args); });
  Kind(sub->add_option("SESSION", args->session, "the session id")->required(), ctx,
       ValueKind::kSession);
  sub->add_option("PAYLOAD", args->payload,
                  "the answer: a JSON object, or - for stdin (the default when stdin is not a "
                  "terminal)");
  Choices(sub->add_option("--type,-t", args->type, "envelope type (default response)")
              ->type_name("TYPE"),
          ctx, {"response", "status", "error", "request", "capability_negotiation_response"});
  sub->add_option("--idempotency-key,-k", args->idempotency_key,
                  "reply at most once under KEY (see send)")
      ->type_name("KEY");
}

}  // namespace amesh
