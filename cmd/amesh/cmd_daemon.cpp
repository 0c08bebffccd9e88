// amesh daemon start|stop|status: agentmeshd's lifecycle (methods ping, daemon.stop).
#include <signal.h>
#include <sys/wait.h>

#include <thread>

#include "commands.hpp"
#include "daemon_control.hpp"

namespace amesh {
namespace {

using agentmesh::rpc::Client;

agentmesh::rpc::RpcResult<json> Ping(Client& client) {
  return client.Call("ping", json::object(), std::chrono::milliseconds(5000));
}

std::string Describe(const json& pong) {
  return "pid " + Field(pong, "pid") + ", version " + Field(pong, "version") + ", up " +
         HumanDuration(IntField(pong, "uptime_seconds"));
}

int RunStart(Context& ctx) {
  const std::string socket = ctx.SocketPath();
  if (auto client = Client::Connect(socket)) {
    if (auto pong = Ping(*client)) {
      if (ctx.json_output()) {
        ctx.PrintJson(json{{"started", false}, {"socket", socket}, {"ping", *pong}});
      } else {
        ctx.out() << "agentmeshd is already running (" << Describe(*pong) << ", socket " << socket
                  << ")\n";
      }
      return kExitOk;
    }
  }
  pid_t pid = 0;
  auto started = StartDaemon(ctx, &pid);
  if (!started) return ctx.Fail(started.error());
  if (ctx.json_output()) {
    ctx.PrintJson(
        json{{"started", true}, {"pid", pid}, {"socket", socket}, {"log", DaemonLogPath(ctx)}});
  } else {
    ctx.out() << "agentmeshd started (pid " << pid << ", socket " << socket << ", log "
              << DaemonLogPath(ctx) << ")\n";
  }
  return kExitOk;
}

int RunStop(Context& ctx) {
  const std::string socket = ctx.SocketPath();
  auto client = Client::Connect(socket);
  if (!client) {
    if (IsNotListening(client.error())) {
      if (ctx.json_output()) {
        ctx.PrintJson(json{{"stopped", false}, {"running", false}, {"socket", socket}});
      } else {
        ctx.out() << "agentmeshd is not running (socket " << socket << ")\n";
      }
      return kExitOk;
    }
    return ctx.Fail(client.error());
  }
  auto pong = Ping(*client);
  auto stop = client->Call("daemon.stop", json::object(), std::chrono::milliseconds(10000));
  if (!stop && stop.error().origin != agentmesh::rpc::ErrorOrigin::kDisconnected) {
    return ctx.Fail(stop.error());
  }
  // Wait until the socket stops answering (and the process is gone, when we know its pid).
  const long long pid = pong ? IntField(*pong, "pid", 0) : 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    const bool socket_gone = !Client::Connect(socket).has_value();
    // waitpid reaps the daemon when this process started it (it would linger as a zombie and
    // still answer kill(pid, 0)); for anyone else's child it fails with ECHILD.
    const bool process_gone = pid <= 0 ||
                              ::waitpid(static_cast<pid_t>(pid), nullptr, WNOHANG) == pid ||
                              ::kill(static_cast<pid_t>(pid), 0) != 0;
    if (socket_gone && process_gone) {
      if (ctx.json_output()) {
        ctx.PrintJson(json{{"stopped", true}, {"pid", pid}, {"socket", socket}});
      } else {
        ctx.out() << "agentmeshd stopped" << (pid > 0 ? " (pid " + std::to_string(pid) + ")" : "")
                  << '\n';
      }
      return kExitOk;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return ctx.Error(kExitTimeout, "agentmeshd accepted daemon.stop but is still running after 10 s",
                   pid > 0 ? "kill it with `kill " + std::to_string(pid) + "`" : "");
}

int RunDaemonStatus(Context& ctx) {
  const std::string socket = ctx.SocketPath();
  auto client = Client::Connect(socket);
  agentmesh::rpc::RpcResult<json> pong = client ? Ping(*client) : std::unexpected(client.error());
  if (!pong) {
    if (ctx.json_output()) {
      ctx.PrintJson(json{{"running", false}, {"socket", socket}, {"error", pong.error().ToJson()}});
    } else {
      ctx.out() << "agentmeshd is not running (socket " << socket << ")\n";
    }
    return ExitStatusFor(pong.error()) == kExitTimeout ? kExitTimeout : kExitUnreachable;
  }
  if (ctx.json_output()) {
    json out = *pong;
    out["running"] = true;
    out["socket"] = socket;
    ctx.PrintJson(out);
  } else {
    ctx.out() << "agentmeshd is running (" << Describe(*pong) << ", socket " << socket << ")\n";
  }
  return kExitOk;
}

}  // namespace

void RegisterDaemon(CLI::App& root, Context& ctx) {
  CLI::App* daemon = AddGroup(root, "daemon", "Start, stop or check agentmeshd");
  AddCommand(*daemon, ctx, "start", "Start agentmeshd in the background (if it is not running)",
             [](Context& c) { return RunStart(c); });
  AddCommand(*daemon, ctx, "stop", "Stop agentmeshd and wait until it has exited",
             [](Context& c) { return RunStop(c); });
  AddCommand(*daemon, ctx, "status",
             "Say whether agentmeshd answers on the socket (exit 3 when it does not)",
             [](Context& c) { return RunDaemonStatus(c); });
}

}  // namespace amesh
