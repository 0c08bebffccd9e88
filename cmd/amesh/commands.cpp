#include "commands.hpp"

namespace amesh {

CLI::App* AddCommand(CLI::App& parent, Context& ctx, const std::string& name,
                     const std::string& description, Runner run, bool hidden) {
  CLI::App* sub = parent.add_subcommand(name, description);
  sub->group(hidden ? "" : "Commands");
  ctx.runners.emplace(sub, std::move(run));
  return sub;
}

CLI::App* AddGroup(CLI::App& parent, const std::string& name, const std::string& description) {
  CLI::App* sub = parent.add_subcommand(name, description);
  sub->group("Commands");
  sub->require_subcommand(1);
  return sub;
}

CLI::Option* Kind(CLI::Option* option, Context& ctx, ValueKind kind) {
  ctx.hints.kinds[option] = kind;
  return option;
}

CLI::Option* Choices(CLI::Option* option, Context& ctx, std::vector<std::string> choices,
                     bool enforce) {
  if (enforce) option->check(CLI::IsMember(choices));
  ctx.hints.kinds[option] = ValueKind::kChoice;
  ctx.hints.choices[option] = std::move(choices);
  return option;
}

int CallAndPrint(Context& ctx, std::string_view method, const json& params,
                 const std::function<void(const json&)>& human, agentmesh::rpc::Timeout timeout) {
  auto result = ctx.Call(method, params, timeout);
  if (!result) return ctx.Fail(result.error());
  if (ctx.json_output()) {
    ctx.PrintJson(*result);
  } else {
    human(*result);
  }
  return kExitOk;
}

bool ValidAmid(Context& ctx, const std::string& amid, int* status) {
  if (auto bad = CheckAmid(amid)) {
    *status = ctx.UsageError(*bad);
    return false;
  }
  return true;
}

bool ValidSession(Context& ctx, std::string& session_id, int* status) {
  if (auto bad = CheckSessionId(session_id)) {
    *status = ctx.UsageError(*bad);
    return false;
  }
  session_id = NormalizeSessionId(session_id);
  return true;
}

std::string IntentText(const json& intent) {
  if (intent.is_string()) return intent.get<std::string>();
  if (!intent.is_object()) return "-";
  std::string out = StringField(intent, "category", "-");
  const std::string sub = StringField(intent, "subcategory");
  if (!sub.empty()) out += "/" + sub;
  return out;
}

}  // namespace amesh
