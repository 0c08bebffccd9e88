#include "daemon_control.hpp"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "output.hpp"

namespace amesh {
namespace {

namespace fs = std::filesystem;
using agentmesh::rpc::Client;
using agentmesh::rpc::ErrorOrigin;
using agentmesh::rpc::RpcError;

bool IsExecutable(const fs::path& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec) && ::access(path.c_str(), X_OK) == 0;
}

std::unexpected<RpcError> Unreachable(std::string message) {
  RpcError e;
  e.origin = ErrorOrigin::kUnreachable;
  e.data_code = std::string(agentmesh::rpc::kDataCodeUnreachable);
  e.message = std::move(message);
  return std::unexpected(std::move(e));
}

std::string LastLine(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line)) {
    if (!line.empty()) last = line;
  }
  return last;
}

}  // namespace

bool IsNotListening(const RpcError& error) noexcept {
  return error.origin == ErrorOrigin::kUnreachable &&
         (error.os_error == ENOENT || error.os_error == ECONNREFUSED);
}

std::optional<std::string> FindDaemonBinary(const Io& io) {
  if (io.env) {
    if (auto explicit_path = io.env("AGENTMESHD"); explicit_path && !explicit_path->empty()) {
      return *explicit_path;
    }
  }
  if (!io.self_exe.empty()) {
    const fs::path beside = fs::path(io.self_exe).parent_path() / "agentmeshd";
    if (IsExecutable(beside)) return beside.string();
  }
  const auto path_env = io.env ? io.env("PATH") : std::nullopt;
  const std::string path = path_env ? *path_env : "/usr/local/bin:/usr/bin:/bin";
  std::size_t start = 0;
  while (start <= path.size()) {
    const std::size_t end = std::min(path.find(':', start), path.size());
    const std::string dir = path.substr(start, end - start);
    if (!dir.empty()) {
      const fs::path candidate = fs::path(dir) / "agentmeshd";
      if (IsExecutable(candidate)) return candidate.string();
    }
    start = end + 1;
  }
  return std::nullopt;
}

std::string DaemonLogPath(const Context& ctx) {
  return (fs::path(ctx.HomeDir()) / "logs" / "agentmeshd.log").string();
}

agentmesh::rpc::RpcResult<Client> StartDaemon(Context& ctx, pid_t* started_pid) {
  const auto binary = FindDaemonBinary(ctx.io());
  if (!binary) {
    return Unreachable(
        "cannot start agentmeshd: it is neither next to amesh nor on $PATH (set AGENTMESHD to "
        "its path)");
  }
  const std::string home = ctx.HomeDir();
  const std::string socket = ctx.SocketPath();
  std::error_code ec;
  if (!fs::exists(home, ec)) {
    fs::create_directories(home, ec);
    if (ec) return Unreachable("cannot create " + home + ": " + ec.message());
    ::chmod(home.c_str(), 0700);
  }
  fs::create_directories(fs::path(home) / "logs", ec);
  const std::string log = DaemonLogPath(ctx);
  std::vector<std::string> argv = {*binary, "--foreground", "--socket", socket, "--home", home};

  // Everything the child needs is prepared before fork(): after it, only async-signal-safe
  // calls (the caller may have other threads).
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  const std::string cannot_run = "amesh: cannot run " + *binary + "\n";
  const pid_t pid = ::fork();
  if (pid < 0)
    return Unreachable(std::string("cannot start agentmeshd: fork: ") + ::strerror(errno));
  if (pid == 0) {
    // Child: detach from the terminal's session so the daemon outlives this shell, then exec.
    ::setsid();
    const int null_fd = ::open("/dev/null", O_RDONLY);
    if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd >= 0) {
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
    }
    ::close_range(3, ~0u, 0);
    ::signal(SIGPIPE, SIG_DFL);
    ::execv(args[0], args.data());
    [[maybe_unused]] auto n = ::write(STDERR_FILENO, cannot_run.data(), cannot_run.size());
    ::_exit(127);
  }
  if (started_pid != nullptr) *started_pid = pid;

  const auto deadline = std::chrono::steady_clock::now() + kStartTimeout;
  bool exited = false;
  int status = 0;
  while (true) {
    // Try the socket first: another amesh may have won the race to start the daemon, in which
    // case ours exits ("already running") while the socket answers.
    if (auto client = Client::Connect(socket)) {
      if (auto pong = client->Call("ping", json::object(), std::chrono::milliseconds(2000))) {
        return std::move(*client);
      }
    }
    if (!exited && ::waitpid(pid, &status, WNOHANG) == pid) exited = true;
    if (exited) {
      std::string why = WIFEXITED(status)
                            ? "exited with status " + std::to_string(WEXITSTATUS(status))
                            : "was killed by signal " + std::to_string(WTERMSIG(status));
      const std::string last = LastLine(log);
      return Unreachable("agentmeshd " + why + (last.empty() ? "" : ": " + last) + " (log: " + log +
                         ")");
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return Unreachable("agentmeshd (pid " + std::to_string(pid) + ") did not answer on " +
                         socket + " within " + std::to_string(kStartTimeout.count() / 1000) +
                         " s (log: " + log + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // namespace amesh
