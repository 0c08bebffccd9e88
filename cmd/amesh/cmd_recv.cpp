// amesh recv: take messages out of the inbox and print them as NDJSON (method `recv`); with
// --peek, print them and leave them there for `amesh ack` (method `ack`).
#include <algorithm>
#include <istream>
#include <iterator>
#include <set>
#include <sstream>
#include <vector>

#include "commands.hpp"

namespace amesh {
namespace {

struct RecvArgs {
  bool follow = false;
  bool peek = false;
  std::string session;
  std::string from;
  std::string timeout;
  int limit = 100;
};

// Longest single `recv` wait in --follow mode; the loop simply calls again.
constexpr long long kFollowSliceMs = 25000;

int RunRecv(Context& ctx, RecvArgs& args) {
  if (args.peek && args.follow) {
    return ctx.UsageError("--peek cannot be combined with --follow",
                          "peeked messages stay in the inbox, so a follow would print them again "
                          "and again; use `amesh recv --peek` and `amesh ack` in a loop");
  }
  json params = {{"limit", args.limit}};
  if (args.peek) params["peek"] = true;
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
    const json messages = result->value("messages", json::array());
    if (ctx.json_output()) {
      ctx.PrintJson(*result);
    } else {
      for (const auto& m : messages) ctx.PrintJsonLine(m);
    }
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

struct AckArgs {
  std::vector<std::string> ids;
};

// The ids of `messages` (message objects); false if one has no string "id".
bool IdsOf(const json& messages, std::vector<std::string>& ids) {
  for (const auto& m : messages) {
    if (!m.is_object() || !m.contains("id") || !m["id"].is_string()) return false;
    ids.push_back(m["id"].get<std::string>());
  }
  return true;
}

// Appends the ids in `in`: either one JSON document (a `recv` result {"messages":[…]} as
// `amesh --json recv` prints it, a message object, or an array of them), or one message per
// line: a bare id or a message object (what `amesh recv` prints). False with `error` set on
// input that is none of these.
bool ReadIds(std::istream& in, std::vector<std::string>& ids, std::string& error) {
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const json whole = json::parse(text, nullptr, false);
  if (!whole.is_discarded() && (whole.is_object() || whole.is_array())) {
    const json messages = whole.is_array() ? whole
                          : whole.contains("messages") && whole["messages"].is_array()
                              ? whole["messages"]
                              : json::array({whole});
    if (IdsOf(messages, ids)) return true;
    error = "standard input: every message needs a string \"id\"";
    return false;
  }
  std::istringstream lines(text);
  std::string line;
  for (int n = 1; std::getline(lines, line); ++n) {
    const auto first = line.find_first_not_of(" \t\r");
    if (first == std::string::npos) continue;
    const auto last = line.find_last_not_of(" \t\r");
    const std::string item = line.substr(first, last - first + 1);
    if (item.front() != '{') {
      ids.push_back(item);
      continue;
    }
    const json object = json::parse(item, nullptr, false);
    if (!IdsOf(json::array({object}), ids)) {
      error = "standard input line " + std::to_string(n) +
              ": a JSON line must be a message object with a string \"id\"";
      return false;
    }
  }
  return true;
}

// Ids per `ack` call: well inside the daemon's 1 MiB request line.
constexpr std::size_t kAckBatch = 1000;

int RunAck(Context& ctx, AckArgs& args) {
  std::vector<std::string> ids;
  for (const auto& id : args.ids) {
    if (id != "-") {
      ids.push_back(id);
      continue;
    }
    if (ctx.io().stdin_is_tty) {
      return ctx.UsageError("- reads message ids from standard input, which is a terminal",
                            "amesh recv --peek > batch && handle < batch && amesh ack - < batch");
    }
    std::string error;
    if (!ReadIds(ctx.in(), ids, error)) return ctx.UsageError(error);
  }
  std::vector<std::string> unique;
  std::set<std::string> seen;
  for (const auto& id : ids) {
    if (id.empty() || id.size() > 256 || id.find_first_of(" \t") != std::string::npos) {
      return ctx.UsageError("not a message id: '" + id + "'");
    }
    if (seen.insert(id).second) unique.push_back(id);
  }
  if (unique.empty()) {
    return ctx.UsageError("no message id given", "amesh ack ID… (or - to read them)");
  }
  std::size_t removed = 0;
  for (std::size_t at = 0; at < unique.size(); at += kAckBatch) {
    const std::size_t end = std::min(unique.size(), at + kAckBatch);
    const std::vector<std::string> batch(unique.begin() + static_cast<std::ptrdiff_t>(at),
                                         unique.begin() + static_cast<std::ptrdiff_t>(end));
    auto result = ctx.Call("ack", json{{"ids", batch}});
    if (!result) return ctx.Fail(result.error());
    removed += result->value("removed", std::size_t{0});
  }
  if (ctx.json_output()) {
    ctx.PrintJson(json{{"removed", removed}});
    return kExitOk;
  }
  ctx.out() << "Removed " << removed << " of " << unique.size() << " message"
            << (unique.size() == 1 ? "" : "s") << " from the inbox";
  if (removed < unique.size()) {
    const std::size_t missing = unique.size() - removed;
    ctx.out() << " (" << missing << (missing == 1 ? " was" : " were") << " not there)";
  }
  ctx.out() << '\n';
  return kExitOk;
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
  sub->add_flag("--peek", args->peek,
                "print the messages but leave them in the inbox, until `amesh ack` removes them");

  auto ack = std::make_shared<AckArgs>();
  CLI::App* ack_cmd = AddCommand(
      root, ctx, "ack", "Remove messages from the inbox after `amesh recv --peek` printed them",
      [ack](Context& c) { return RunAck(c, *ack); });
  ack_cmd
      ->add_option("ID", ack->ids,
                   "message ids; - reads ids, or the NDJSON `amesh recv` prints, from stdin")
      ->required();
}

}  // namespace amesh
