// amesh audit: the audit log (method `audit`; --follow adds `subscribe` to "audit" events).
#include <set>

#include "commands.hpp"

namespace amesh {
namespace {

struct AuditArgs {
  bool follow = false;
  std::string since;
  int limit = 100;
};

// One event as a line: time, event name, then the other members as key=value.
std::string EventLine(const json& event) {
  if (!event.is_object()) return Compact(event);
  std::string time = "-", name = "-";
  for (const char* key : {"timestamp", "time", "at"}) {
    if (event.contains(key)) {
      time = Field(event, key);
      break;
    }
  }
  for (const char* key : {"event", "type", "kind"}) {
    if (event.contains(key)) {
      name = Field(event, key);
      break;
    }
  }
  std::string line = time + "  " + name;
  for (const auto& [key, value] : event.items()) {
    if (key == "timestamp" || key == "time" || key == "at" || key == "event" || key == "type" ||
        key == "kind") {
      continue;
    }
    line += "  " + key + "=" + CellText(value);
  }
  return line;
}

// An `audit` notification's params: {subscription, type:"audit", time, record:{…}} (RPC.md §4);
// the audit record itself is `record`.
json EventFromNotification(const json& params) {
  if (auto it = params.find("record"); it != params.end() && it->is_object()) return *it;
  return params;
}

int RunAudit(Context& ctx, const AuditArgs& args) {
  json params = {{"limit", args.limit}};
  if (!args.since.empty()) {
    auto since = ParseSince(args.since);
    if (!since) return ctx.UsageError(since.error());
    params["since"] = *since;
  }
  auto print = [&](const json& event) {
    if (ctx.json_output()) {
      ctx.PrintJsonLine(event);
    } else {
      ctx.out() << EventLine(event) << std::endl;
    }
  };
  if (!args.follow) {
    return CallAndPrint(ctx, "audit", params, [&](const json& r) {
      for (const auto& e : r.value("events", json::array())) print(e);
    });
  }
  // Subscribe first, then read the backlog, so nothing falls between the two; events seen in
  // both are printed once.
  auto client = ctx.Daemon();
  if (!client) return ctx.Fail(client.error());
  auto subscribed =
      (*client)->Call("subscribe", json{{"events", {"audit"}}}, Context::kDefaultTimeout);
  if (!subscribed) return ctx.Fail(subscribed.error());
  auto backlog = (*client)->Call("audit", params, Context::kDefaultTimeout);
  if (!backlog) return ctx.Fail(backlog.error());
  std::set<std::string> seen;  // printed from a backlog, not yet seen as an event
  std::string last_time;       // of the last event printed
  std::set<std::string> printed_at_last_time;
  auto print_once = [&](const json& e) {
    const std::string time = e.value("time", "");
    if (time != last_time) {
      last_time = time;
      printed_at_last_time.clear();
    }
    printed_at_last_time.insert(Compact(e));
    print(e);
  };
  for (const auto& e : backlog->value("events", json::array())) {
    seen.insert(Compact(e));
    print_once(e);
  }
  while (true) {
    auto event = (*client)->NextEvent(std::nullopt);
    if (!event) return ctx.Fail(event.error());
    if (!*event) continue;
    if ((**event).value("type", "") == "subscription.dropped") {
      // This process read too slowly (its output is slower than the events): subscribe again and
      // catch up from the log, from the last event printed.
      auto again =
          (*client)->Call("subscribe", json{{"events", {"audit"}}}, Context::kDefaultTimeout);
      if (!again) return ctx.Fail(again.error());
      while (true) {
        json page_params = {{"limit", 10000}};
        if (!last_time.empty()) page_params["since"] = last_time;
        auto page = (*client)->Call("audit", page_params, Context::kDefaultTimeout);
        if (!page) return ctx.Fail(page.error());
        const json events = page->value("events", json::array());
        const std::string page_start = last_time;
        for (const auto& e : events) {
          if (e.value("time", "") == last_time && printed_at_last_time.contains(Compact(e))) {
            continue;
          }
          seen.insert(Compact(e));
          print_once(e);
        }
        if (events.size() < 10000 || last_time == page_start) break;
      }
      if (!ctx.out()) return kExitOk;
      continue;
    }
    const json e = EventFromNotification(**event);
    if (!seen.empty() && seen.erase(Compact(e)) > 0) continue;
    print_once(e);
    if (!ctx.out()) return kExitOk;
  }
}

}  // namespace

void RegisterAudit(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<AuditArgs>();
  CLI::App* sub =
      AddCommand(root, ctx, "audit",
                 "Print the audit log (KNOCKs, decisions, sessions, breakers), oldest first",
                 [args](Context& c) { return RunAudit(c, *args); });
  sub->add_flag("--follow,-f", args->follow, "keep printing new events until interrupted");
  sub->add_option("--since", args->since,
                  "only events since an RFC 3339 time or a duration ago (90s, 15m, 2h, 7d)")
      ->type_name("TIME");
  sub->add_option("--limit", args->limit, "at most N events (1 to 10000; default 100)")
      ->type_name("N")
      ->check(CLI::Range(1, 10000));
}

}  // namespace amesh
