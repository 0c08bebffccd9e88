// Starting agentmeshd on demand (like gpg-agent) and the `amesh daemon start|stop|status`
// commands.
//
// Autostart: when the socket is absent or nothing listens on it (ENOENT, ECONNREFUSED) and
// --no-autostart was not given, amesh starts `agentmeshd --foreground --socket S [--home H]`
// in a new session (setsid) with stdin on /dev/null and stdout/stderr appended to
// <home>/logs/agentmeshd.log (where agentmeshd logs when it daemonizes itself), then waits up to
// kStartTimeout for the socket to answer `ping`. The binary is, in order: $AGENTMESHD (an explicit
// path), `agentmeshd` next to the amesh binary, `agentmeshd` on $PATH.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>

#include "agentmesh/rpc/client.hpp"
#include "cli.hpp"

namespace amesh {

inline constexpr std::chrono::milliseconds kStartTimeout{5000};

// The agentmeshd binary to run, or nullopt when none is found.
std::optional<std::string> FindDaemonBinary(const Io& io);

// Where an auto-started daemon's output goes.
std::string DaemonLogPath(const Context& ctx);

// Starts agentmeshd and waits until it answers `ping` on ctx.SocketPath(). On success returns a
// connected client; `started_pid` receives the pid. Failures are kUnreachable errors whose
// message says what went wrong (binary not found, exited early with the log's last line, did not
// answer in time).
agentmesh::rpc::RpcResult<agentmesh::rpc::Client> StartDaemon(Context& ctx, pid_t* started_pid);

// True when the error means "nobody is listening" (so starting a daemon may help).
bool IsNotListening(const agentmesh::rpc::RpcError& error) noexcept;

}  // namespace amesh
