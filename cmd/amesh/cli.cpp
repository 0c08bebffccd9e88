#include "cli.hpp"

#include <algorithm>
#include <filesystem>
#include <iostream>

#include "daemon_control.hpp"
#include "output.hpp"

#ifndef AMESH_VERSION
#define AMESH_VERSION "0.0.0"
#endif

namespace amesh {
namespace {

using agentmesh::rpc::ErrorOrigin;
using agentmesh::rpc::RpcError;

std::size_t EditDistance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// The generic "what to do" for an error code.
std::string DefaultHint(const RpcError& e, const Context& ctx) {
  if (e.origin == ErrorOrigin::kUnreachable) {
    if (ctx.globals.no_autostart) {
      return "is agentmeshd running? start it with `amesh daemon start` (or drop --no-autostart)";
    }
    return "is agentmeshd installed? try `amesh daemon start`; its log is " + DaemonLogPath(ctx);
  }
  if (e.origin == ErrorOrigin::kClientTimeout) {
    return "agentmeshd did not answer in time: check `amesh daemon status` and " +
           DaemonLogPath(ctx);
  }
  if (e.origin == ErrorOrigin::kDisconnected || e.origin == ErrorOrigin::kProtocol) {
    return "agentmeshd may have crashed or been stopped: see " + DaemonLogPath(ctx);
  }
  if (e.origin == ErrorOrigin::kLocal) return "";
  const std::string& c = e.data_code;
  if (c == "not_initialized") return "run `amesh init` to create this agent's identity";
  if (c == "unavailable") {
    return "the registry or relay is unreachable: check `amesh status`; retrying may help";
  }
  if (c == "timeout")
    return "the peer did not answer in time; retry, or allow more time (--timeout)";
  if (c == "not_found") return "check the AMID or session id (`amesh sessions`, `amesh search`)";
  if (c == "method_not_found") {
    return "this agentmeshd does not know that method: is it older than amesh? "
           "(`amesh daemon status`)";
  }
  if (c == "internal") return "this is a bug in agentmeshd; its log is " + DaemonLogPath(ctx);
  if (c == "permission_denied") return "see `amesh status` and `amesh policy show`";
  if (c == "limit_exceeded" || c == "knock_rejected") {
    if (e.data.is_object()) {
      if (auto it = e.data.find("retry_after_seconds"); it != e.data.end() && it->is_number()) {
        return "retry in " + std::to_string(it->get<long long>()) + " s";
      }
    }
  }
  return "";
}

// The one-line message for an error.
std::string ErrorMessage(const RpcError& e) {
  if (e.data_code == "knock_rejected" && e.data.is_object()) {
    const std::string reason = StringField(e.data, "reason");
    const std::string human = StringField(e.data, "human_readable");
    if (!reason.empty()) {
      return "KNOCK rejected: " + reason + (human.empty() ? "" : " (\"" + human + "\")");
    }
  }
  if (!e.field.empty() && e.message.find(e.field) == std::string::npos) {
    return e.field + ": " + e.message;
  }
  return e.message;
}

// The selected subcommand path, e.g. "amesh policy set".
std::string CommandPath(const CLI::App& root) {
  std::string path = root.get_name();
  const CLI::App* app = &root;
  while (true) {
    const auto subs = app->get_subcommands();
    if (subs.empty()) break;
    app = subs.front();
    path += " " + app->get_name();
  }
  return path;
}

CLI::App* Deepest(CLI::App* app) {
  while (true) {
    const auto subs = app->get_subcommands();
    if (subs.empty()) return app;
    app = subs.front();
  }
}

// Checks the words that should name (sub)commands, skipping options and the values of the
// global options that take one. Returns a usage message for the first unknown one, git-style:
// "unknown command 'X'" plus the nearest name as a hint.
std::optional<std::pair<std::string, std::string>> UnknownCommand(
    const CLI::App& root, const std::vector<std::string>& args) {
  const CLI::App* app = &root;
  std::string path = "amesh";
  for (std::size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") return std::nullopt;
    if (a == "--socket" || a == "--home") {
      ++i;
      continue;
    }
    if (!a.empty() && a[0] == '-') continue;
    const auto subs = app->get_subcommands([](const CLI::App*) { return true; });
    if (subs.empty()) return std::nullopt;  // positionals of a leaf command
    const CLI::App* next = nullptr;
    for (const CLI::App* sub : subs) {
      if (sub->check_name(a)) next = sub;
    }
    if (next == nullptr) {
      std::string suggestion;
      std::size_t best = 3;
      for (const CLI::App* sub : subs) {
        if (sub->get_group().empty()) continue;  // hidden
        const std::size_t d = EditDistance(a, sub->get_name());
        if (d < best) best = d, suggestion = sub->get_name();
      }
      const std::string what = app == &root ? "unknown command '" + a + "'"
                                            : "unknown subcommand '" + a + "' of `" + path + "`";
      return std::pair(what, suggestion.empty()
                                 ? "run `" + path + " --help` for the list of commands"
                                 : "did you mean `" + path + " " + suggestion + "`?");
    }
    app = next;
    path += " " + next->get_name();
  }
  return std::nullopt;
}

}  // namespace

int ExitStatusFor(const RpcError& error) noexcept {
  switch (error.origin) {
    case ErrorOrigin::kUnreachable:
      return kExitUnreachable;
    case ErrorOrigin::kClientTimeout:
      return kExitTimeout;
    case ErrorOrigin::kLocal:
      return kExitUnreachable;
    case ErrorOrigin::kDisconnected:
    case ErrorOrigin::kProtocol:
      return kExitError;
    case ErrorOrigin::kServer:
      break;
  }
  namespace r = agentmesh::rpc;
  switch (error.code) {
    case r::kParseError:
    case r::kInvalidRequest:
    case r::kMethodNotFound:
    case r::kInvalidParams:
      return kExitUsage;
    case r::kNotFound:
      return kExitNotFound;
    case r::kUnavailable:
      return kExitUnavailable;
    case r::kTimeout:
      return kExitTimeout;
    case r::kKnockRejected:
      return kExitRejected;
    case r::kNotInitialized:
      return kExitNotInitialized;
    default:
      return kExitError;
  }
}

// RPC.md §1 (agentmesh::rpc::ResolveSocketPath): the same rule as agentmeshd, so amesh finds the
// daemon it would autostart.
std::string Context::SocketPath() const {
  return agentmesh::rpc::ResolveSocketPath(globals.socket, globals.home, io_.env);
}

std::string Context::HomeDir() const { return agentmesh::rpc::ResolveHome(globals.home, io_.env); }

agentmesh::rpc::RpcResult<agentmesh::rpc::Client*> Context::Daemon(bool allow_autostart) {
  if (client_) return &*client_;
  auto connected = agentmesh::rpc::Client::Connect(SocketPath());
  if (!connected) {
    if (!allow_autostart || globals.no_autostart || !IsNotListening(connected.error())) {
      return std::unexpected(connected.error());
    }
    pid_t pid = 0;
    auto started = StartDaemon(*this, &pid);
    if (!started) return std::unexpected(started.error());
    err() << "amesh: started agentmeshd (pid " << pid << ", log " << DaemonLogPath(*this) << ")\n";
    client_.emplace(std::move(*started));
    return &*client_;
  }
  client_.emplace(std::move(*connected));
  return &*client_;
}

agentmesh::rpc::RpcResult<json> Context::Call(std::string_view method, const json& params,
                                              agentmesh::rpc::Timeout timeout) {
  auto client = Daemon();
  if (!client) return std::unexpected(client.error());
  return (*client)->Call(method, params, timeout);
}

void Context::SetClient(agentmesh::rpc::Client client) { client_.emplace(std::move(client)); }
void Context::DropClient() { client_.reset(); }

int Context::Fail(const RpcError& error, std::string_view hint) {
  if (globals.json) PrintJson(json{{"error", error.ToJson()}});
  err() << "amesh: " << ErrorMessage(error) << '\n';
  std::string h = hint.empty() ? DefaultHint(error, *this) : std::string(hint);
  // Skip a hint whose `command` the daemon's message already names ("run `amesh init`").
  if (const auto open = h.find('`'); open != std::string::npos) {
    const auto close = h.find('`', open + 1);
    if (close != std::string::npos &&
        error.message.find(h.substr(open + 1, close - open - 1)) != std::string::npos) {
      h.clear();
    }
  }
  if (!h.empty()) err() << "amesh: hint: " << h << '\n';
  return ExitStatusFor(error);
}

int Context::UsageError(std::string_view message, std::string_view hint) {
  return Error(kExitUsage, message, hint);
}

int Context::Error(int status, std::string_view message, std::string_view hint) {
  err() << "amesh: " << message << '\n';
  if (!hint.empty()) err() << "amesh: hint: " << hint << '\n';
  return status;
}

void Context::PrintJson(const json& value) { out() << Pretty(value) << '\n'; }

void Context::PrintJsonLine(const json& value) { out() << Compact(value) << std::endl; }

std::unique_ptr<CLI::App> BuildApp(Context& ctx) {
  auto app = std::make_unique<CLI::App>(
      "amesh: the AgentMesh command line. Talks to agentmeshd (started on demand) over its "
      "control socket.",
      "amesh");
  app->set_version_flag("--version", std::string("amesh ") + AMESH_VERSION);
  app->require_subcommand(1);
  app->fallthrough();
  app->option_defaults()->always_capture_default(false);
  app->add_option(
         "--socket", ctx.globals.socket,
         "agentmeshd's control socket (default $AGENTMESH_SOCKET, else HOME/agentmeshd.sock "
         "when --home or $AGENTMESH_HOME is given, else "
         "$XDG_RUNTIME_DIR/agentmesh/agentmeshd.sock, else ~/.agentmesh/agentmeshd.sock)")
      ->type_name("PATH");
  app->add_option("--home", ctx.globals.home,
                  "the agent's home directory (default $AGENTMESH_HOME, else ~/.agentmesh)")
      ->type_name("DIR");
  app->add_flag("--json", ctx.globals.json,
                "print the daemon's JSON result instead of human-readable text");
  app->add_flag("--no-autostart", ctx.globals.no_autostart,
                "never start agentmeshd; fail with exit status 3 when it is not running");
  app->footer(
      "Exit status: 0 ok, 1 error, 2 usage or bad input, 3 daemon unreachable, 4 KNOCK rejected,\n"
      "5 timeout, 6 not found, 7 not initialized, 8 registry or relay unavailable.\n"
      "Run `amesh COMMAND --help` for a command's options; see amesh(1) and agentmesh(7).");

  RegisterInit(*app, ctx);
  RegisterWhoami(*app, ctx);
  RegisterRegister(*app, ctx);
  RegisterLookup(*app, ctx);
  RegisterSearch(*app, ctx);
  RegisterKnock(*app, ctx);
  RegisterSend(*app, ctx);
  RegisterRecv(*app, ctx);
  RegisterReply(*app, ctx);
  RegisterClose(*app, ctx);
  RegisterSessions(*app, ctx);
  RegisterPolicy(*app, ctx);
  RegisterPeers(*app, ctx);
  RegisterBreakers(*app, ctx);
  RegisterAudit(*app, ctx);
  RegisterStatus(*app, ctx);
  RegisterDaemon(*app, ctx);
  RegisterRpc(*app, ctx);
  RegisterServe(*app, ctx);
  RegisterCompletion(*app, ctx);
  return app;
}

int RunAmesh(const std::vector<std::string>& args, Io io) noexcept {
  std::ostream& err = io.err != nullptr ? *io.err : std::cerr;
  try {
    Context ctx(std::move(io));
    auto app = BuildApp(ctx);

    // An unknown command word gets git's treatment: say so, and suggest the nearest command.
    if (auto unknown = UnknownCommand(*app, args)) {
      return ctx.UsageError(unknown->first, unknown->second);
    }

    std::vector<std::string> reversed(args.rbegin(), args.rend());
    if (!reversed.empty()) reversed.pop_back();  // the program name
    try {
      app->parse(reversed);
    } catch (const CLI::CallForHelp&) {
      ctx.out() << app->help();
      return kExitOk;
    } catch (const CLI::CallForAllHelp&) {
      ctx.out() << app->help("", CLI::AppFormatMode::All);
      return kExitOk;
    } catch (const CLI::CallForVersion& e) {
      ctx.out() << e.what() << '\n';
      return kExitOk;
    } catch (const CLI::ParseError& e) {
      const std::string path = CommandPath(*app);
      std::string message = e.what();
      if (message == "A subcommand is required") {
        message = path == "amesh" ? "missing command" : "missing subcommand of `" + path + "`";
      }
      return ctx.UsageError(message, "run `" + path + " --help`");
    }

    CLI::App* selected = Deepest(app.get());
    auto runner = ctx.runners.find(selected);
    if (runner == ctx.runners.end()) {
      return ctx.UsageError("missing command", "run `amesh --help`");
    }
    const int status = runner->second(ctx);
    ctx.out().flush();
    return status;
  } catch (const std::exception& e) {
    err << "amesh: internal error: " << e.what() << '\n';
    return kExitError;
  } catch (...) {
    err << "amesh: internal error\n";
    return kExitError;
  }
}

}  // namespace amesh
