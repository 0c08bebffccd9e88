// amesh close: end a session politely with a close envelope (method `close`).
#include "commands.hpp"

namespace amesh {
namespace {

struct CloseArgs {
  std::string session;
  std::string reason;
  std::string summary;
};

int RunClose(Context& ctx, CloseArgs& args) {
  int status = 0;
  if (!ValidSession(ctx, args.session, &status)) return status;
  json params = {{"session_id", args.session}};
  if (!args.reason.empty()) params["reason"] = args.reason;
  if (!args.summary.empty()) params["summary"] = args.summary;
  return CallAndPrint(ctx, "close", params, [&](const json& r) {
    ctx.out() << "Closed session " << Field(r, "session_id") << '\n';
  });
}

}  // namespace

void RegisterClose(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<CloseArgs>();
  CLI::App* sub = AddCommand(root, ctx, "close", "Close a session (the peer is told)",
                             [args](Context& c) { return RunClose(c, *args); });
  Kind(sub->add_option("SESSION", args->session, "the session id")->required(), ctx,
       ValueKind::kSession);
  sub->add_option("--reason", args->reason, "why (default completed)")->type_name("REASON");
  sub->add_option("--summary", args->summary, "a short summary for the peer")->type_name("TEXT");
}

}  // namespace amesh
