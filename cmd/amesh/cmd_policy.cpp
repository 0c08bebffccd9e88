// amesh policy show|set|test: the KNOCK policy (methods policy.get, policy.set, policy.test).
#include "commands.hpp"

namespace amesh {
namespace {

struct PolicyTestArgs {
  std::optional<std::string> knock;
  std::string from;
  std::string intent;
  std::string tier;
  double reputation = -1;
  int active_sessions = -1;
  bool paused = false;
};

// The AMID of 20 zero bytes: a syntactically valid sender for a dry run that names none.
constexpr const char* kPlaceholderAmid = "11111111111111111111";

int RunShow(Context& ctx) {
  return CallAndPrint(ctx, "policy.get", json::object(), [&](const json& r) {
    ctx.out() << "# " << StringField(r, "path", "policy.json") << '\n';
    ctx.out() << Pretty(r.value("policy", json::object())) << '\n';
  });
}

int RunSet(Context& ctx, const std::string& file) {
  auto policy = ReadJsonFile(ctx, file, "policy");
  if (!policy)
    return ctx.UsageError(policy.error(), "the keys are described in agentmesh-policy(5)");
  auto result = ctx.Call("policy.set", json{{"policy", std::move(*policy)}});
  if (!result) {
    return ctx.Fail(result.error(), result.error().data_code == "invalid_argument"
                                        ? "the keys are described in agentmesh-policy(5)"
                                        : "");
  }
  if (ctx.json_output()) {
    ctx.PrintJson(*result);
  } else {
    ctx.out() << "Policy updated"
              << (result->contains("path") ? " (" + Field(*result, "path") + ")" : "") << '\n';
  }
  return kExitOk;
}

// Prints the decision trace: the core's DecisionToJson shape ({accepted, reason,
// human_readable, retry_after_seconds, constraints, trace:[{rule, passed, detail}]}).
bool PrintDecision(Context& ctx, const json& r) {
  const bool accepted = r.value("accepted", false);
  Table table({"#", "RULE", "RESULT", "DETAIL"});
  int n = 0;
  for (const auto& step : r.value("trace", json::array())) {
    std::string outcome;
    if (auto p = step.find("passed"); p != step.end() && p->is_boolean()) {
      outcome = p->get<bool>() ? "pass" : "fail";
    }
    table.AddRow({std::to_string(++n), Field(step, "rule"), outcome, Field(step, "detail")});
  }
  if (!table.empty()) table.Print(ctx.out());
  if (accepted) {
    ctx.out() << "decision: accept";
    if (auto c = r.find("constraints"); c != r.end() && c->is_object()) {
      ctx.out() << " with " << Compact(*c);
    }
    ctx.out() << '\n';
  } else {
    ctx.out() << "decision: reject (" << Field(r, "reason") << ")";
    const std::string human = StringField(r, "human_readable");
    if (!human.empty()) ctx.out() << ": " << human;
    ctx.out() << '\n';
  }
  return accepted;
}

int RunTest(Context& ctx, const PolicyTestArgs& args) {
  json knock;
  if (!args.intent.empty() && !args.knock) {
    if (auto bad = CheckIntent(args.intent)) return ctx.UsageError("--intent: " + *bad);
    const std::string from = args.from.empty() ? kPlaceholderAmid : args.from;
    if (auto bad = CheckAmid(from)) return ctx.UsageError("--from: " + *bad);
    const auto slash = args.intent.find('/');
    json intent = {{"category", args.intent.substr(0, slash)}};
    if (slash != std::string::npos) intent["subcategory"] = args.intent.substr(slash + 1);
    knock = {{"type", "knock"}, {"from", {{"amid", from}}}, {"intent", std::move(intent)}};
  } else {
    if (!args.intent.empty() || !args.from.empty()) {
      return ctx.UsageError("give either KNOCK_JSON or --intent/--from, not both");
    }
    auto parsed = ReadJsonArgument(ctx, args.knock, "KNOCK_JSON", true);
    if (!parsed) {
      return ctx.UsageError(parsed.error(),
                            "e.g. amesh policy test '{\"from\":{\"amid\":\"…\"},\"intent\":"
                            "{\"category\":\"travel\"}}', or amesh policy test --intent travel");
    }
    knock = std::move(*parsed);
  }
  json params = {{"knock", std::move(knock)}};
  json context = json::object();
  if (!args.tier.empty()) {
    auto tier = ParseTier(args.tier);
    if (!tier) return ctx.UsageError("--tier: " + tier.error());
    context["tier"] = *tier;
  }
  if (args.reputation >= 0) context["reputation"] = args.reputation;
  if (args.active_sessions >= 0) context["active_sessions"] = args.active_sessions;
  if (args.paused) context["paused"] = true;
  if (!context.empty()) params["context"] = std::move(context);
  auto result = ctx.Call("policy.test", params);
  if (!result) return ctx.Fail(result.error());
  bool accepted;
  if (ctx.json_output()) {
    ctx.PrintJson(*result);
    accepted = result->value("decision", "") == "accept" || result->value("accepted", false);
  } else {
    accepted = PrintDecision(ctx, *result);
  }
  return accepted ? kExitOk : kExitRejected;
}

}  // namespace

void RegisterPolicy(CLI::App& root, Context& ctx) {
  CLI::App* policy = AddGroup(root, "policy", "Show, replace or dry-run the KNOCK policy");
  AddCommand(*policy, ctx, "show", "Print the policy in force and its file",
             [](Context& c) { return RunShow(c); });

  auto file = std::make_shared<std::string>();
  CLI::App* set =
      AddCommand(*policy, ctx, "set", "Validate and install a new policy (FILE, or - for stdin)",
                 [file](Context& c) { return RunSet(c, *file); });
  Kind(set->add_option("FILE", *file, "policy.json to install, or - for stdin")->required(), ctx,
       ValueKind::kFile);

  auto args = std::make_shared<PolicyTestArgs>();
  CLI::App* test = AddCommand(
      *policy, ctx, "test",
      "Dry-run the policy on a KNOCK and print the decision trace (exit 4 when it would reject)",
      [args](Context& c) { return RunTest(c, *args); });
  test->add_option("KNOCK_JSON", args->knock,
                   "the KNOCK as JSON (at least from.amid and intent), or - for stdin");
  test->add_option("--intent,-i", args->intent, "build the KNOCK from this intent instead")
      ->type_name("CAT[/SUB]");
  Kind(test->add_option("--from", args->from, "sender AMID for --intent")->type_name("AMID"), ctx,
       ValueKind::kAmid);
  Choices(test->add_option("--tier", args->tier, "the sender's registry tier")->type_name("TIER"),
          ctx, {"anonymous", "verified", "organization"}, false);
  test->add_option("--reputation", args->reputation, "the sender's registry reputation (0 to 1)")
      ->type_name("R")
      ->check(CLI::Range(0.0, 1.0));
  test->add_option("--active-sessions", args->active_sessions, "sessions active right now")
      ->type_name("N")
      ->check(CLI::NonNegativeNumber);
  test->add_flag("--paused", args->paused, "as if `amesh pause` were in force");
}

}  // namespace amesh
