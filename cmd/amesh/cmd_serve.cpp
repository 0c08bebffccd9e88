// amesh serve: turn any program into an agent service. For each incoming request in a session
// whose intent matches --intent, runs COMMAND with the request payload (one JSON line) on stdin
// and replies with its stdout parsed as JSON; when the command fails, times out or prints
// something that is not JSON, replies with an `error` envelope instead.
//
// Mechanics: `subscribe` to message.received and session.opened; on start and on each event,
// `recv` with `peek`, one message at a time, from sessions where this agent is the receiver and
// the intent matches; `reply` per request with the idempotency key "serve:<message id>"; then
// `ack` the message. A crash of serve (or of the command) at any point leaves the request in the
// inbox, and the next serve handles it again; if the reply had gone out already, the key makes
// the second reply a duplicate that is not sent (within the daemon's 24 h key memory). So a
// request gets at most one reply, and exactly one unless the daemon refuses it for good (the
// session ended). The peek takes a lease: several servers of one agent share the requests, each
// handled by one of them; the command runs twice for a request only across a crash.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

#include <algorithm>
#include <cctype>
#include <map>
#include <string_view>
#include <thread>

#include "commands.hpp"

namespace amesh {
namespace {

using agentmesh::rpc::Client;

struct ServeArgs {
  std::string intent;
  double timeout = 60;
  int max_requests = 0;
  std::vector<std::string> command;
};

constexpr int kRpcLimitExceeded = -32005;
// The reply travels in one RPC line (at most 1 MiB) and one envelope (at most 1 MiB): output
// larger than this could never be sent, so it is answered as response_too_large at once.
constexpr std::size_t kMaxOutputBytes = (1u << 20) - (16u << 10);
// How much longer than the command's timeout a request stays leased to this server (the reply
// and ack take moments; a reply held back by the message rate takes longer).
constexpr long long kLeaseMarginMs = 120'000;
// How often a reply refused for the session's message rate is tried again before giving up.
constexpr int kReplyAttempts = 5;

struct CommandOutcome {
  bool started = false;
  bool timed_out = false;
  bool too_large = false;
  int status = 0;  // waitpid status
  std::string out;
};

// Runs argv with `input` on stdin and extra environment variables; collects stdout; stderr is
// inherited. Kills the child (SIGKILL) when `timeout` passes.
CommandOutcome RunCommand(const std::vector<std::string>& argv, const std::string& input,
                          const std::vector<std::pair<std::string, std::string>>& env,
                          std::chrono::milliseconds timeout) {
  CommandOutcome outcome;
  int in_pipe[2], out_pipe[2];
  if (::pipe2(in_pipe, O_CLOEXEC) != 0) return outcome;
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    ::close(in_pipe[0]);
    ::close(in_pipe[1]);
    return outcome;
  }
  // argv and the environment are built before fork(): the child only makes async-signal-safe
  // calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view entry(*e);
    bool replaced = false;
    for (const auto& [name, value] : env) {
      replaced = replaced || (entry.starts_with(name) && entry.size() > name.size() &&
                              entry[name.size()] == '=');
    }
    if (!replaced) env_strings.emplace_back(entry);
  }
  for (const auto& [name, value] : env) env_strings.push_back(name + "=" + value);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string cannot_run = "amesh serve: cannot run " + argv[0] + "\n";

  const pid_t pid = ::fork();
  if (pid < 0) {
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]}) ::close(fd);
    return outcome;
  }
  if (pid == 0) {
    ::dup2(in_pipe[0], STDIN_FILENO);
    ::dup2(out_pipe[1], STDOUT_FILENO);
    ::signal(SIGPIPE, SIG_DFL);
    ::execvpe(args[0], args.data(), envp.data());
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, cannot_run.data(), cannot_run.size());
    ::_exit(127);
  }
  outcome.started = true;
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  int write_fd = in_pipe[1];
  const int read_fd = out_pipe[0];
  ::fcntl(write_fd, F_SETFL, O_NONBLOCK);
  std::size_t written = 0;
  if (input.empty()) {
    ::close(write_fd);
    write_fd = -1;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  bool eof = false;
  while (!eof) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      outcome.timed_out = true;
      break;
    }
    pollfd fds[2] = {{read_fd, POLLIN, 0}, {write_fd, POLLOUT, 0}};
    const int n = ::poll(fds, write_fd >= 0 ? 2 : 1, static_cast<int>(left));
    if (n < 0 && errno != EINTR) break;
    if (write_fd >= 0 && (fds[1].revents & (POLLOUT | POLLERR | POLLHUP)) != 0) {
      const ssize_t w = ::write(write_fd, input.data() + written, input.size() - written);
      if (w > 0) written += static_cast<std::size_t>(w);
      if (w < 0 && errno != EAGAIN && errno != EINTR) written = input.size();  // EPIPE: it quit
      if (written >= input.size()) {
        ::close(write_fd);
        write_fd = -1;
      }
    }
    if ((fds[0].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      char chunk[8192];
      const ssize_t r = ::read(read_fd, chunk, sizeof chunk);
      if (r > 0) {
        outcome.out.append(chunk, static_cast<std::size_t>(r));
        if (outcome.out.size() > kMaxOutputBytes) {
          outcome.too_large = true;
          break;
        }
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        eof = true;
      }
    }
  }
  if (write_fd >= 0) ::close(write_fd);
  ::close(read_fd);
  if (outcome.timed_out || outcome.too_large) ::kill(pid, SIGKILL);
  // After stdout closed, give the process the rest of the time to exit.
  while (true) {
    const pid_t r = ::waitpid(pid, &outcome.status, WNOHANG);
    if (r == pid || (r < 0 && errno != EINTR)) break;
    if (std::chrono::steady_clock::now() >= deadline && !outcome.timed_out) {
      outcome.timed_out = true;
      ::kill(pid, SIGKILL);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return outcome;
}

bool IntentMatches(std::string_view pattern, const json& intent) {
  if (pattern == "*") return true;
  const std::string category = StringField(intent, "category");
  const std::string sub = StringField(intent, "subcategory");
  const auto slash = pattern.find('/');
  if (slash == std::string_view::npos) return category == pattern;
  return category == pattern.substr(0, slash) && sub == pattern.substr(slash + 1);
}

class Server {
 public:
  Server(Context& ctx, const ServeArgs& args, Client& client)
      : ctx_(ctx), args_(args), client_(client) {}

  // Returns an exit status when serving must stop.
  std::optional<int> Run() {
    auto subscribed =
        client_.Call("subscribe", json{{"events", {"message.received", "session.opened"}}},
                     Context::kDefaultTimeout);
    if (!subscribed) return ctx_.Fail(subscribed.error());
    Log("serving intent '" + args_.intent + "' with `" + CommandText() + "`");
    if (auto stop = Rescan()) return stop;
    while (true) {
      auto event = client_.NextEvent(std::chrono::seconds(30));
      if (!event) return ctx_.Fail(event.error());
      if (!*event) {
        // Quiet for a while: look for anything a missed event left behind.
        if (auto stop = Rescan()) return stop;
        continue;
      }
      // Event payloads are nested (RPC.md §4): session.opened carries `session`,
      // message.received carries `message`.
      const json& e = **event;
      const std::string type = StringField(e, "type");
      if (type == "subscription.dropped") {
        // Events piled up while a command ran: subscribe again, then look at every session.
        Log("the daemon dropped the subscription (events unread while busy); subscribing again");
        auto again =
            client_.Call("subscribe", json{{"events", {"message.received", "session.opened"}}},
                         Context::kDefaultTimeout);
        if (!again) return ctx_.Fail(again.error());
        if (auto stop = Rescan()) return stop;
        continue;
      }
      const json payload = e.value(type == "session.opened" ? "session" : "message", json());
      const std::string session_id = StringField(payload, "session_id");
      if (session_id.empty()) continue;
      if (type == "session.opened") {
        Remember(payload);
        continue;
      }
      if (type != "message.received") continue;
      if (!sessions_.contains(session_id)) {
        if (auto stop = RefreshSessions()) return stop;
      }
      if (Mine(session_id)) {
        if (auto stop = Drain(session_id)) return stop;
      }
    }
  }

 private:
  void Log(const std::string& line) { ctx_.err() << "amesh serve: " << line << std::endl; }

  std::string CommandText() const {
    std::string out;
    for (const auto& a : args_.command) out += (out.empty() ? "" : " ") + a;
    return out;
  }

  void Remember(const json& session) {
    const std::string id = StringField(session, "session_id");
    if (id.empty()) return;
    const bool receiver = StringField(session, "role", "receiver") == "receiver";
    sessions_[id] = receiver && IntentMatches(args_.intent, session.value("intent", json()));
    intents_[id] = IntentText(session.value("intent", json()));
  }

  bool Mine(const std::string& session_id) const {
    auto it = sessions_.find(session_id);
    return it != sessions_.end() && it->second;
  }

  std::optional<int> RefreshSessions() {
    auto result = client_.Call("sessions", json::object(), Context::kDefaultTimeout);
    if (!result) return ctx_.Fail(result.error());
    for (const auto& s : result->value("sessions", json::array())) Remember(s);
    return std::nullopt;
  }

  std::optional<int> Rescan() {
    if (auto stop = RefreshSessions()) return stop;
    std::vector<std::string> mine;
    for (const auto& [id, matches] : sessions_) {
      if (matches) mine.push_back(id);
    }
    for (const auto& id : mine) {
      if (auto stop = Drain(id)) return stop;
    }
    return std::nullopt;
  }

  std::optional<int> Drain(const std::string& session_id) {
    while (true) {
      // The lease keeps other servers of this agent off the request while the command runs; it
      // ends with the ack, or at once if this process dies (its connection closes).
      const auto lease_ms = static_cast<long long>(args_.timeout * 1000) + kLeaseMarginMs;
      auto result = client_.Call("recv",
                                 json{{"session_id", session_id},
                                      {"limit", 1},
                                      {"timeout_ms", 0},
                                      {"peek", true},
                                      {"lease_ms", lease_ms}},
                                 Context::kDefaultTimeout);
      if (!result) {
        // A session that ended between the event and the call is not a reason to stop serving.
        if (result.error().origin == agentmesh::rpc::ErrorOrigin::kServer &&
            result.error().data_code != "not_initialized") {
          Log("session " + session_id + ": " + result.error().message);
          return std::nullopt;
        }
        return ctx_.Fail(result.error());
      }
      const json messages = result->value("messages", json::array());
      if (messages.empty()) return std::nullopt;
      for (const auto& message : messages) {
        const std::optional<int> stop = Handle(message);
        if (stop && *stop != kExitOk) return stop;
        // Done with it (replied, or nothing to reply to): out of the inbox.
        auto acked = client_.Call("ack", json{{"ids", {StringField(message, "id")}}},
                                  Context::kDefaultTimeout);
        if (!acked) return ctx_.Fail(acked.error());
        if (stop) return stop;
      }
    }
  }

  // "serve:<message id>", or none for an id (from the relay) that is not a valid key.
  static std::optional<std::string> ReplyKey(const std::string& message_id) {
    const std::string key = "serve:" + message_id;
    if (message_id.empty() || key.size() > 128) return std::nullopt;
    for (const char c : message_id) {
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != ':' &&
          c != '-') {
        return std::nullopt;
      }
    }
    return key;
  }

  std::optional<int> Handle(const json& message) {
    const std::string session_id = StringField(message, "session_id");
    const std::string from = StringField(message, "from", "?");
    const std::string type = StringField(message, "type");
    if (type != "request") {
      Log("session " + session_id + ": ignoring a '" + type + "' message from " + from);
      return std::nullopt;
    }
    const json payload = message.value("payload", json::object());
    const CommandOutcome run = RunCommand(
        args_.command, Compact(payload) + "\n",
        {{"AMESH_SESSION_ID", session_id},
         {"AMESH_FROM", from},
         {"AMESH_MESSAGE_ID", StringField(message, "id")},
         {"AMESH_INTENT", intents_.contains(session_id) ? intents_[session_id] : args_.intent}},
        std::chrono::milliseconds(static_cast<long long>(args_.timeout * 1000)));

    json reply_payload;
    std::string reply_type = "response";
    auto fail = [&](std::string code, std::string text) {
      reply_type = "error";
      reply_payload = {{"code", std::move(code)}, {"message", std::move(text)}};
    };
    if (!run.started) {
      fail("service_unavailable", "the service command could not be started");
    } else if (run.timed_out) {
      fail("timeout", "the service did not answer within " +
                          std::to_string(static_cast<long long>(args_.timeout)) + " s");
    } else if (run.too_large) {
      fail("response_too_large",
           "the service's output exceeded " + std::to_string(kMaxOutputBytes / 1024) + " KiB");
    } else if (!WIFEXITED(run.status) || WEXITSTATUS(run.status) != 0) {
      fail("service_failed",
           WIFEXITED(run.status)
               ? "the service exited with status " + std::to_string(WEXITSTATUS(run.status))
               : "the service was killed by signal " + std::to_string(WTERMSIG(run.status)));
    } else {
      auto parsed = ParseJsonText(run.out, "the service's output");
      if (!parsed) {
        fail("invalid_response", parsed.error());
      } else if (parsed->is_object()) {
        reply_payload = std::move(*parsed);
      } else {
        reply_payload = {{"result", std::move(*parsed)}};
      }
    }
    json reply_params = {
        {"session_id", session_id}, {"payload", reply_payload}, {"type", reply_type}};
    if (auto key = ReplyKey(StringField(message, "id"))) reply_params["idempotency_key"] = *key;
    auto replied = client_.Call("reply", reply_params, Context::kDefaultTimeout);
    for (int attempt = 1; !replied && attempt < kReplyAttempts; ++attempt) {
      const agentmesh::rpc::RpcError& e = replied.error();
      if (e.origin != agentmesh::rpc::ErrorOrigin::kServer || e.code != kRpcLimitExceeded) break;
      if (const auto wait = e.data.find("retry_after_seconds");
          e.data.is_object() && wait != e.data.end() && wait->is_number()) {
        // The session's message rate: the reply can go out in a moment.
        const double seconds = std::clamp(wait->get<double>(), 0.1, 60.0);
        Log("session " + session_id + ": the session's message rate holds the reply back " +
            std::to_string(static_cast<int>(seconds + 0.5)) + " s");
        std::this_thread::sleep_for(std::chrono::milliseconds(static_cast<long>(seconds * 1000)));
      } else if (reply_type == "response" && e.field == "payload") {
        // Too large for the session (its max_message_size_bytes) or the relay: say so instead.
        reply_type = "error";
        reply_payload = {{"code", "response_too_large"}, {"message", e.message}};
        reply_params["type"] = reply_type;
        reply_params["payload"] = reply_payload;
      } else {
        break;
      }
      replied = client_.Call("reply", reply_params, Context::kDefaultTimeout);
    }
    if (!replied) {
      if (replied.error().origin != agentmesh::rpc::ErrorOrigin::kServer) {
        return ctx_.Fail(replied.error());
      }
      Log("session " + session_id + ": could not reply: " + replied.error().message);
    } else {
      Log("session " + session_id + " from " + from + ": " +
          (reply_type == "response" ? "replied"
                                    : "replied with error " + StringField(reply_payload, "code") +
                                          " (" + StringField(reply_payload, "message") + ")") +
          " (" + StringField(*replied, "delivery", "sent") + ")");
    }
    ++handled_;
    if (args_.max_requests > 0 && handled_ >= args_.max_requests) return kExitOk;
    return std::nullopt;
  }

  Context& ctx_;
  const ServeArgs& args_;
  Client& client_;
  std::map<std::string, bool> sessions_;  // session id → handled by this server
  std::map<std::string, std::string> intents_;
  int handled_ = 0;
};

int RunServe(Context& ctx, const ServeArgs& args) {
  if (auto bad = args.intent == "*" ? std::nullopt : CheckIntent(args.intent)) {
    return ctx.UsageError("--intent: " + *bad);
  }
  if (args.command.empty()) {
    return ctx.UsageError("missing COMMAND", "amesh serve --intent CAT -- COMMAND [ARGS…]");
  }
  // A service that closes its stdin early must not kill amesh with SIGPIPE.
  ::signal(SIGPIPE, SIG_IGN);
  auto client = ctx.Daemon();
  if (!client) return ctx.Fail(client.error());
  Server server(ctx, args, **client);
  return server.Run().value_or(kExitOk);
}

}  // namespace

void RegisterServe(CLI::App& root, Context& ctx) {
  auto args = std::make_shared<ServeArgs>();
  CLI::App* sub = AddCommand(
      root, ctx, "serve",
      "Answer requests of one intent by running COMMAND (payload on stdin, reply = its stdout)",
      [args](Context& c) { return RunServe(c, *args); });
  sub->add_option("--intent,-i", args->intent,
                  "the intent served: CATEGORY (any subcategory), CATEGORY/SUB, or *")
      ->type_name("CAT[/SUB]")
      ->required();
  sub->add_option("--timeout", args->timeout,
                  "seconds COMMAND may run per request before it is killed (default 60)")
      ->type_name("SECONDS")
      ->check(CLI::Range(0.1, 86400.0));
  sub->add_option("--max-requests", args->max_requests, "exit after answering N requests")
      ->type_name("N")
      ->check(CLI::PositiveNumber);
  Kind(sub->add_option("COMMAND", args->command, "the program and its arguments, after --")
           ->expected(1, -1),
       ctx, ValueKind::kCommand);
  sub->positionals_at_end(false);
}

}  // namespace amesh
