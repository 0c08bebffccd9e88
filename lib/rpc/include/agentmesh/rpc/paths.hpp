// Where agentmeshd lives: the home directory and the control socket (docs/RPC.md §1).
//
//   home   = --home, else $AGENTMESH_HOME, else ~/.agentmesh
//   socket = --socket, else $AGENTMESH_SOCKET, else $XDG_RUNTIME_DIR/agentmesh/agentmeshd.sock,
//            else <home>/agentmeshd.sock
//
// Empty flags and empty environment variables count as absent. `~` is $HOME, else the passwd
// entry of the current uid. The functions are shared by agentmeshd and every client so both sides
// always agree on the path; they never touch the file system (nothing is created or checked).
//
// Thread-safety: pure functions of their arguments. The Environment passed in is called
// synchronously and not retained.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace agentmesh::rpc {

// Reads an environment variable; returns nullopt when it is unset. Tests inject fakes.
using Environment = std::function<std::optional<std::string>(std::string_view name)>;

// The process environment (getenv).
Environment ProcessEnvironment();

// Names of the environment variables involved.
inline constexpr std::string_view kEnvHome = "AGENTMESH_HOME";
inline constexpr std::string_view kEnvSocket = "AGENTMESH_SOCKET";
inline constexpr std::string_view kEnvRuntimeDir = "XDG_RUNTIME_DIR";

// File name of the socket inside its directory.
inline constexpr std::string_view kSocketFileName = "agentmeshd.sock";

// The agent's home directory. `home_flag` is the value of --home (nullopt or "" when not given).
std::string ResolveHome(const std::optional<std::string>& home_flag, const Environment& env);

// The control socket path. `socket_flag` is --socket, `home_flag` is --home (each nullopt or ""
// when not given). Precedence: --socket, $AGENTMESH_SOCKET, <home>/agentmeshd.sock when --home or
// $AGENTMESH_HOME is given, $XDG_RUNTIME_DIR/agentmesh/agentmeshd.sock,
// ~/.agentmesh/agentmeshd.sock.
std::string ResolveSocketPath(const std::optional<std::string>& socket_flag,
                              const std::optional<std::string>& home_flag, const Environment& env);

// The largest path a Unix socket address can hold here (sizeof(sockaddr_un::sun_path) - 1).
std::size_t MaxSocketPathLength() noexcept;

}  // namespace agentmesh::rpc
