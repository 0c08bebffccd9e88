// Test harness for agentmeshd: a blocking JSON-RPC client over the Unix socket, and processes for
// a local mesh (relay, registry, daemons), each in the test's own temp dir and killed on exit.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <poll.h>
#include <catch2/catch.hpp>
#include <chrono>
#include <deque>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "process.hpp"

namespace agentmesh::testing {

using nlohmann::json;
using namespace std::chrono_literals;

class RpcClient {
 public:
  RpcClient() = default;
  ~RpcClient() { Close(); }
  RpcClient(const RpcClient&) = delete;
  RpcClient& operator=(const RpcClient&) = delete;

  bool Connect(const std::string& path) {
    Close();
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      Close();
      return false;
    }
    return true;
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
    buffer_.clear();
  }
  bool connected() const { return fd_ >= 0; }

  bool WriteRaw(const std::string& data) {
    std::size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }

  // Next line (response or notification), or nullopt on EOF/timeout.
  std::optional<std::string> ReadLine(std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      const auto nl = buffer_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return line;
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0 || fd_ < 0) return std::nullopt;
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
      char chunk[65536];
      const ssize_t n = ::read(fd_, chunk, sizeof chunk);
      if (n <= 0) return std::nullopt;
      buffer_.append(chunk, static_cast<std::size_t>(n));
    }
  }

  // Reads until the response with `id`, queueing notifications.
  json ReadResponse(std::int64_t id, std::chrono::milliseconds timeout = 30s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto line = ReadLine(std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now()));
      if (!line) break;
      auto doc = json::parse(*line, nullptr, false);
      if (doc.is_discarded()) return json{{"bad_line", *line}};
      if (doc.contains("method")) {
        events_.push_back(doc);
        continue;
      }
      if (doc.contains("id") && doc["id"] == id) return doc;
    }
    return json{{"timeout", true}};
  }

  // Full response object of one call.
  json CallRaw(const std::string& method, const json& params = json::object(),
               std::chrono::milliseconds timeout = 30s) {
    const std::int64_t id = next_id_++;
    json req = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}, {"params", params}};
    if (!WriteRaw(req.dump() + "\n")) return json{{"write_failed", true}};
    return ReadResponse(id, timeout);
  }

  // The result of a call that must succeed.
  json Call(const std::string& method, const json& params = json::object(),
            std::chrono::milliseconds timeout = 30s) {
    json r = CallRaw(method, params, timeout);
    INFO(method << " " << params.dump() << " -> " << r.dump());
    REQUIRE(r.contains("result"));
    return r["result"];
  }

  // The error object of a call that must fail.
  json CallError(const std::string& method, const json& params = json::object(),
                 std::chrono::milliseconds timeout = 30s) {
    json r = CallRaw(method, params, timeout);
    INFO(method << " " << params.dump() << " -> " << r.dump());
    REQUIRE(r.contains("error"));
    return r["error"];
  }

  // Waits for an event notification of `type`.
  std::optional<json> WaitEvent(const std::string& type, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (true) {
      for (auto it = events_.begin(); it != events_.end(); ++it) {
        if ((*it)["params"]["type"] == type) {
          json ev = (*it)["params"];
          events_.erase(it);
          return ev;
        }
      }
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return std::nullopt;
      auto line = ReadLine(left);
      if (!line) return std::nullopt;
      auto doc = json::parse(*line, nullptr, false);
      if (!doc.is_discarded() && doc.contains("method")) events_.push_back(doc);
    }
  }

 private:
  int fd_ = -1;
  std::string buffer_;
  std::int64_t next_id_ = 1;
  std::deque<json> events_;
};

// A server program that prints "... listening on port N".
class ServerProcess {
 public:
  bool Start(std::vector<std::string> argv, const std::filesystem::path& log) {
    if (!process_.Start(argv, log)) return false;
    auto line = process_.WaitForLine("listening on port", 20s);
    if (!line) return false;
    port_ = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(' ') + 1)));
    return true;
  }
  std::uint16_t port() const { return port_; }
  ChildProcess& process() { return process_; }
  std::string log() const { return process_.StderrLog(); }

 private:
  ChildProcess process_;
  std::uint16_t port_ = 0;
};

class DaemonProcess {
 public:
  DaemonProcess(std::filesystem::path home, std::string registry_url, std::string relay_url)
      : home_(std::move(home)),
        socket_((home_ / "d.sock").string()),
        registry_url_(std::move(registry_url)),
        relay_url_(std::move(relay_url)) {
    std::filesystem::create_directories(home_);
    std::filesystem::permissions(home_, std::filesystem::perms::owner_all);
  }

  void Start(bool wait = true) {
    std::vector<std::string> argv = {AGENTMESHD_BIN, "--foreground", "--home",      home_.string(),
                                     "--socket",     socket_,        "--log-level", "debug"};
    argv.insert(argv.end(), extra_args.begin(), extra_args.end());
    REQUIRE(process_.Start(argv, home_ / "stderr.log"));
    if (!wait) return;
    auto line = process_.WaitForLine("listening on", 30s);
    INFO(log());
    REQUIRE(line.has_value());
    REQUIRE(rpc.Connect(socket_));
  }
  void Kill9() {
    rpc.Close();
    process_.Kill();
  }
  int Terminate() {
    rpc.Close();
    return process_.Signal(SIGTERM, true);
  }
  void Hup() { process_.Signal(SIGHUP, false); }

  // init with the mesh's URLs.
  json Init(const std::string& name) {
    return rpc.Call("init", {{"name", name}, {"registry", registry_url_}, {"relay", relay_url_}});
  }
  // Waits until status says the relay link is up.
  bool WaitRelay(std::chrono::milliseconds timeout = 20s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      json s = rpc.Call("status");
      if (s["relay"]["connected"] == true) return true;
      std::this_thread::sleep_for(50ms);
    }
    return false;
  }

  RpcClient rpc;
  std::vector<std::string> extra_args;  // appended to agentmeshd's argv by Start()
  const std::filesystem::path& home() const { return home_; }
  const std::string& socket() const { return socket_; }
  std::string log() const { return process_.StderrLog(); }
  ChildProcess& process() { return process_; }

 private:
  std::filesystem::path home_;
  std::string socket_;
  std::string registry_url_, relay_url_;
  ChildProcess process_;
};

}  // namespace agentmesh::testing
