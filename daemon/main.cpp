// agentmeshd: the AgentMesh per-user daemon (see agentmeshd(8), docs/RPC.md).
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "config.hpp"
#include "daemon.hpp"
#include "util.hpp"

namespace {

using agentmesh::daemon::Daemon;
using agentmesh::daemon::DaemonOptions;

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? std::string(v) : std::string();
}

// True when something accepts connections on `path`.
bool SocketAnswers(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

struct Signals {
  Daemon* daemon;
  uv_signal_t term, intr, hup;
};

}  // namespace

int main(int argc, char** argv) {
  using namespace agentmesh::daemon;
  try {
    CLI::App app{
        "agentmeshd: the AgentMesh per-user daemon. Holds the agent's keys, ratchet sessions,\n"
        "policy and audit log, keeps the relay connection and serves JSON-RPC 2.0 on a Unix\n"
        "socket (docs/RPC.md). `amesh` starts it on demand."};
    app.set_version_flag("--version", std::string("agentmeshd ") + kVersion + " (agentmesh/1)");
    std::string home, socket_path, config_path;
    std::optional<std::string> log_level;
    bool foreground = false, help_config = false;
    app.add_option("--home", home, "state directory (default $AGENTMESH_HOME or ~/.agentmesh)");
    app.add_option(
        "--socket", socket_path,
        "socket path (default $AGENTMESH_SOCKET, else <home>/agentmeshd.sock when --home "
        "or $AGENTMESH_HOME is given, else $XDG_RUNTIME_DIR/agentmesh/agentmeshd.sock, "
        "else ~/.agentmesh/agentmeshd.sock)");
    app.add_flag("--foreground", foreground, "stay in the foreground and log to stderr");
    app.add_option("--config", config_path, "config file (default <home>/config.json)");
    app.add_option("--log-level", log_level, "debug | info | warn | error");
    app.add_flag("--help-config", help_config, "describe every config.json key and exit");
    // Test-only, hidden from --help: shifts the daemon's clock (prekey rotation tests).
    std::int64_t clock_offset_seconds = 0;
    app.add_option("--test-clock-offset", clock_offset_seconds)->group("");
    bool withhold_acks = false;  // test-only: see SetWithholdRatchetAcks
    app.add_flag("--test-withhold-acks", withhold_acks)->group("");
    CLI11_PARSE(app, argc, argv);
    if (help_config) {
      std::fputs(DescribeConfig().c_str(), stdout);
      return 0;
    }
    if (log_level) {
      if (auto level = ParseLogLevel(*log_level); !level) {
        std::fprintf(stderr, "agentmeshd: --log-level must be debug, info, warn or error\n");
        return 2;
      }
    }
    // Socket rule (RPC.md §1): --socket > $AGENTMESH_SOCKET > <home>/agentmeshd.sock when the
    // home was given (--home or $AGENTMESH_HOME) > $XDG_RUNTIME_DIR/agentmesh/agentmeshd.sock >
    // ~/.agentmesh/agentmeshd.sock. So daemons with different homes never share a socket.
    if (home.empty()) home = Env("AGENTMESH_HOME");
    const bool home_given = !home.empty();
    if (home.empty()) {
      const std::string user_home = Env("HOME");
      if (user_home.empty()) {
        std::fprintf(stderr, "agentmeshd: set --home, $AGENTMESH_HOME or $HOME\n");
        return 2;
      }
      home = user_home + "/.agentmesh";
    }
    const std::filesystem::path home_path = std::filesystem::absolute(home);
    if (socket_path.empty()) socket_path = Env("AGENTMESH_SOCKET");
    if (socket_path.empty() && home_given) {
      socket_path = (home_path / "agentmeshd.sock").string();
    }
    if (socket_path.empty() && !Env("XDG_RUNTIME_DIR").empty()) {
      socket_path = Env("XDG_RUNTIME_DIR") + "/agentmesh/agentmeshd.sock";
    }
    if (socket_path.empty()) socket_path = (home_path / "agentmeshd.sock").string();
    socket_path = std::filesystem::absolute(socket_path).string();
    if (socket_path.size() >= sizeof(sockaddr_un::sun_path)) {
      std::fprintf(stderr, "agentmeshd: socket path too long: %s\n", socket_path.c_str());
      return 2;
    }

    if (auto r = MakeDirs(home_path / "logs"); !r) {
      std::fprintf(stderr, "agentmeshd: %s\n", r.error().message.c_str());
      return 1;
    }
    ::chmod(home_path.c_str(), 0700);
    const auto socket_dir = std::filesystem::path(socket_path).parent_path();
    if (!std::filesystem::exists(socket_dir)) {
      if (auto r = MakeDirs(socket_dir); !r) {
        std::fprintf(stderr, "agentmeshd: %s\n", r.error().message.c_str());
        return 1;
      }
    }
    // The shared runtime directory's agentmesh/ is private to the user, also when it already
    // existed (the home was made 0700 above). The parent of a socket path given by the user is
    // the user's choice (the socket itself is 0600 and peers are checked).
    if (!Env("XDG_RUNTIME_DIR").empty() &&
        socket_dir == std::filesystem::absolute(Env("XDG_RUNTIME_DIR")) / "agentmesh") {
      if (auto r = MakePrivateDir(socket_dir); !r) {
        std::fprintf(stderr, "agentmeshd: %s\n", r.error().message.c_str());
        return 1;
      }
    }

    // One daemon per home: the lock is held for the life of the process.
    const int lock_fd =
        ::open((home_path / "agentmeshd.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd < 0 || ::flock(lock_fd, LOCK_EX | LOCK_NB) != 0) {
      std::fprintf(stderr, "agentmeshd: another agentmeshd is running for %s\n", home_path.c_str());
      return 1;
    }
    if (SocketAnswers(socket_path)) {
      std::fprintf(stderr, "agentmeshd: another agentmeshd already answers on %s\n",
                   socket_path.c_str());
      return 1;
    }
    struct stat st {};
    if (::lstat(socket_path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        std::fprintf(stderr, "agentmeshd: %s exists and is not a socket\n", socket_path.c_str());
        return 1;
      }
      ::unlink(socket_path.c_str());  // stale socket of a dead daemon
    }

    int ready_fd = -1;
    if (!foreground) {
      int fds[2];
      if (::pipe2(fds, O_CLOEXEC) != 0) {
        std::perror("agentmeshd: pipe");
        return 1;
      }
      const pid_t pid = ::fork();
      if (pid < 0) {
        std::perror("agentmeshd: fork");
        return 1;
      }
      if (pid > 0) {
        ::close(fds[1]);
        std::string status;
        char buf[512];
        ssize_t n;
        while ((n = ::read(fds[0], buf, sizeof buf)) > 0) status.append(buf, n);
        if (status == "ok") {
          std::printf("agentmeshd started (pid %d), socket %s\n", static_cast<int>(pid),
                      socket_path.c_str());
          return 0;
        }
        std::fprintf(
            stderr, "agentmeshd: %s\n",
            status.empty() ? "the daemon exited during startup; see its log" : status.c_str());
        return 1;
      }
      ::close(fds[0]);
      ready_fd = fds[1];
      ::setsid();
      const int null_fd = ::open("/dev/null", O_RDWR);
      const int log_fd = ::open((home_path / "logs" / "agentmeshd.log").c_str(),
                                O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
      if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
      if (log_fd >= 0) {
        ::dup2(log_fd, STDOUT_FILENO);
        ::dup2(log_fd, STDERR_FILENO);
      }
    }
    auto report = [&](const std::string& message) {
      if (ready_fd >= 0) {
        (void)!::write(ready_fd, message.data(), message.size());
        ::close(ready_fd);
        ready_fd = -1;
      }
    };

    if (clock_offset_seconds != 0) {
      SetClockOffset(clock_offset_seconds * agentmesh::kNanosPerSecond);
      LogWarn(fmt::format("test clock offset: {} s", clock_offset_seconds));
    }
    if (withhold_acks) {
      SetWithholdRatchetAcks(true);
      LogWarn("test: relay messages accepted by a session ratchet are not acked");
    }
    std::signal(SIGPIPE, SIG_IGN);
    uv_loop_t loop;
    uv_loop_init(&loop);
    DaemonOptions options;
    options.home = home_path;
    options.socket_path = socket_path;
    if (!config_path.empty()) options.config_path = std::filesystem::absolute(config_path);
    options.log_level = log_level;
    auto daemon = Daemon::Create(&loop, std::move(options));
    if (!daemon) {
      const std::string message = daemon.error().ToString();
      LogError(message);
      report(message);
      if (foreground) std::fprintf(stderr, "agentmeshd: %s\n", message.c_str());
      uv_loop_close(&loop);
      return 1;
    }
    if (auto r = (*daemon)->Start(); !r) {
      const std::string message = r.error().ToString();
      LogError(message);
      report(message);
      (*daemon)->Stop();
      uv_run(&loop, UV_RUN_DEFAULT);
      daemon->reset();
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_loop_close(&loop);
      return 1;
    }
    auto* signals = new Signals{daemon->get(), {}, {}, {}};
    for (uv_signal_t* s : {&signals->term, &signals->intr, &signals->hup}) {
      uv_signal_init(&loop, s);
      s->data = signals;
    }
    auto on_stop = [](uv_signal_t* s, int signum) {
      auto* sig = static_cast<Signals*>(s->data);
      LogInfo(signum == SIGTERM ? "SIGTERM: stopping" : "SIGINT: stopping");
      sig->daemon->Stop();
      for (uv_signal_t* h : {&sig->term, &sig->intr, &sig->hup}) {
        uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
      }
    };
    uv_signal_start(&signals->term, on_stop, SIGTERM);
    uv_signal_start(&signals->intr, on_stop, SIGINT);
    uv_signal_start(
        &signals->hup,
        [](uv_signal_t* s, int) {
          LogInfo("SIGHUP: reloading config.json and policy.json");
          static_cast<Signals*>(s->data)->daemon->Reload();
        },
        SIGHUP);
    // Without a signal, daemon.stop ends the loop: close the signal handles then too.
    uv_check_t* watch = new uv_check_t;
    uv_check_init(&loop, watch);
    watch->data = signals;
    uv_check_start(watch, [](uv_check_t* c) {
      auto* sig = static_cast<Signals*>(c->data);
      if (!sig->daemon->stopping()) return;
      for (uv_signal_t* h : {&sig->term, &sig->intr, &sig->hup}) {
        if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(h))) {
          uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
        }
      }
      uv_close(reinterpret_cast<uv_handle_t*>(c),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
    });

    // Ready: tests and `amesh` wait for this line (foreground) or the parent's exit.
    std::printf("agentmeshd listening on %s\n", socket_path.c_str());
    std::fflush(stdout);
    report("ok");
    // systemd Type=notify: the socket listens and the relay/registry clients are started.
    SdNotify(fmt::format("READY=1\nMAINPID={}", static_cast<long>(::getpid())));

    uv_run(&loop, UV_RUN_DEFAULT);
    daemon->reset();
    uv_run(&loop, UV_RUN_DEFAULT);
    delete signals;
    ::unlink(socket_path.c_str());
    if (uv_loop_close(&loop) != 0) LogWarn("loop closed with handles still open");
    LogInfo("stopped");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "agentmeshd: fatal: %s\n", e.what());
    return 1;
  }
}
