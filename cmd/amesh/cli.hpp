// amesh: the command-line client of agentmeshd (docs/RPC.md, man/amesh.1).
//
// The program is a library (amesh_cli) plus a four-line main, so tests drive the same code
// in-process with their own streams and environment. Every subcommand lives in its own
// cmd_<name>.cpp, whose Register<Name>() adds the CLI11 subcommand and a runner; a runner only
// validates input, calls the daemon through Context and formats the result.
//
// Exit statuses (RPC.md §2), the contract scripts rely on:
//   0 ok · 1 error · 2 usage or bad input · 3 daemon unreachable · 4 KNOCK rejected ·
//   5 timeout · 6 not found · 7 not initialized · 8 registry/relay unavailable
//
// Error output: one line `amesh: <message>` on stderr, then, when there is something to do about
// it, a line `amesh: hint: <what to do>`. With --json the daemon's error object is also printed on
// stdout as {"error":{code,message,data}} so a script reading stdout sees JSON either way.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentmesh/rpc/client.hpp"
#include "agentmesh/rpc/paths.hpp"

namespace amesh {

using nlohmann::json;

// Exit statuses.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;
inline constexpr int kExitRejected = 4;
inline constexpr int kExitTimeout = 5;
inline constexpr int kExitNotFound = 6;
inline constexpr int kExitNotInitialized = 7;
inline constexpr int kExitUnavailable = 8;

// The exit status for an RPC failure (server error codes per RPC.md §2; client-side failures:
// unreachable → 3, client timeout → 5, anything else → 1).
int ExitStatusFor(const agentmesh::rpc::RpcError& error) noexcept;

// What the process sees of the world. main() fills it from the real process; tests use
// string streams, a fake environment and stdin_is_tty as they like.
struct Io {
  std::istream* in = nullptr;
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  bool stdin_is_tty = false;
  agentmesh::rpc::Environment env;
  // Absolute path of the running amesh binary ("" if unknown): agentmeshd is looked for next to
  // it before $PATH.
  std::string self_exe;
};

// Global options (before or after the subcommand: the root app falls through).
struct Globals {
  std::string socket;  // --socket
  std::string home;    // --home (also passed to an auto-started agentmeshd)
  bool json = false;   // --json
  bool no_autostart = false;
};

// Shell-completion metadata recorded while the CLI is built (completion.cpp reads it).
enum class ValueKind { kAny, kFile, kChoice, kAmid, kSession, kCommand };
struct CompletionHints {
  std::map<const CLI::Option*, ValueKind> kinds;
  std::map<const CLI::Option*, std::vector<std::string>> choices;
};

class Context;
using Runner = std::function<int(Context&)>;

// Per-invocation state shared by the runners: options, streams, the daemon connection.
class Context {
 public:
  explicit Context(Io io) : io_(std::move(io)) {}

  Globals globals;
  CompletionHints hints;
  std::map<const CLI::App*, Runner> runners;

  std::istream& in() { return *io_.in; }
  std::ostream& out() { return *io_.out; }
  std::ostream& err() { return *io_.err; }
  const Io& io() const { return io_; }
  bool json_output() const { return globals.json; }

  // The resolved socket path and home directory (RPC.md §1).
  std::string SocketPath() const;
  std::string HomeDir() const;

  // The daemon connection, made on first use. When the socket is absent or refuses and
  // autostart is allowed, starts agentmeshd first (daemon_control.cpp). The pointer stays valid
  // for the life of the Context.
  agentmesh::rpc::RpcResult<agentmesh::rpc::Client*> Daemon(bool allow_autostart = true);

  // Daemon() + Client::Call.
  agentmesh::rpc::RpcResult<json> Call(std::string_view method, const json& params,
                                       agentmesh::rpc::Timeout timeout = kDefaultTimeout);

  // Reports an RPC failure (stderr message + hint; the error object on stdout with --json) and
  // returns its exit status. `hint` replaces the generic hint for the error's code when given.
  int Fail(const agentmesh::rpc::RpcError& error, std::string_view hint = {});
  // Reports bad input (`amesh: <message>` + optional hint) and returns 2.
  int UsageError(std::string_view message, std::string_view hint = {});
  // Reports any other failure and returns `status`.
  int Error(int status, std::string_view message, std::string_view hint = {});

  // Prints `value` as the command's JSON output (pretty, 2-space indent, one trailing newline).
  void PrintJson(const json& value);
  // Prints `value` as one compact line (NDJSON) and flushes.
  void PrintJsonLine(const json& value);

  // Replaces the connection (tests and `daemon` subcommands).
  void SetClient(agentmesh::rpc::Client client);
  void DropClient();

  static constexpr std::chrono::milliseconds kDefaultTimeout{60000};

 private:
  Io io_;
  std::optional<agentmesh::rpc::Client> client_;
};

// Builds the whole command tree bound to `ctx` (which must outlive the app).
std::unique_ptr<CLI::App> BuildApp(Context& ctx);

// Runs amesh with argv (args[0] is the program name). Never throws: every failure becomes an
// exit status and a message on io.err.
int RunAmesh(const std::vector<std::string>& args, Io io) noexcept;

// The completion script for `shell` ("bash", "zsh" or "fish"; "" for anything else), generated
// from the command tree `root` built by BuildApp with `ctx`.
std::string GenerateCompletion(const CLI::App& root, const Context& ctx, std::string_view shell);

// Subcommand registration, one per cmd_*.cpp.
void RegisterInit(CLI::App& root, Context& ctx);
void RegisterWhoami(CLI::App& root, Context& ctx);
void RegisterRegister(CLI::App& root, Context& ctx);
void RegisterLookup(CLI::App& root, Context& ctx);
void RegisterSearch(CLI::App& root, Context& ctx);
void RegisterKnock(CLI::App& root, Context& ctx);
void RegisterSend(CLI::App& root, Context& ctx);
void RegisterRecv(CLI::App& root, Context& ctx);  // recv, ack
void RegisterReply(CLI::App& root, Context& ctx);
void RegisterClose(CLI::App& root, Context& ctx);
void RegisterSessions(CLI::App& root, Context& ctx);
void RegisterPolicy(CLI::App& root, Context& ctx);
void RegisterPeers(CLI::App& root, Context& ctx);  // block, unblock, allow
void RegisterBreakers(CLI::App& root,
                      Context& ctx);  // pause, resume, kill, shutdown, emergency-stop
void RegisterAudit(CLI::App& root, Context& ctx);
void RegisterStatus(CLI::App& root, Context& ctx);
void RegisterDaemon(CLI::App& root, Context& ctx);
void RegisterRpc(CLI::App& root, Context& ctx);
void RegisterServe(CLI::App& root, Context& ctx);
void RegisterCompletion(CLI::App& root, Context& ctx);

}  // namespace amesh
