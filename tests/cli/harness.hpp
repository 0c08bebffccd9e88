// Test harness for amesh: run the CLI in-process with captured streams and a fake environment,
// and a fake agentmeshd (a thread serving scripted JSON-RPC answers on a Unix socket) so the
// CLI's output and exit statuses can be checked without the real daemon.
#pragma once

#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

namespace amesh::test {

using nlohmann::json;

struct RunResult {
  int status = -1;
  std::string out;
  std::string err;
};

struct RunOptions {
  std::string stdin_text;
  bool stdin_is_tty = true;
  std::map<std::string, std::string> env;  // the whole environment the CLI sees
  std::string self_exe;
};

// Runs amesh in-process: args exclude the program name.
RunResult Amesh(const std::vector<std::string>& args, const RunOptions& options);

// A temporary directory removed with its contents on destruction. Short path (under /tmp) so
// socket paths fit in sun_path.
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  ScratchDir(const ScratchDir&) = delete;
  ScratchDir& operator=(const ScratchDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// A scripted JSON-RPC server on a Unix socket. The handler gets (method, params) and returns
// either {"result": …} or {"error": {…}}; returning {"close": true} closes the connection without
// answering, {"delay_ms": N, …} answers after N ms. Push() sends an event notification to every
// connection that called `subscribe`.
class FakeDaemon {
 public:
  using Handler = std::function<json(const std::string& method, const json& params)>;

  FakeDaemon(std::filesystem::path socket, Handler handler);
  ~FakeDaemon();
  FakeDaemon(const FakeDaemon&) = delete;
  FakeDaemon& operator=(const FakeDaemon&) = delete;

  // Sends {"jsonrpc":"2.0","method":"event","params":params} to subscribed connections.
  void Push(const json& params);
  // Every request received so far (objects as parsed), in order.
  std::vector<json> Requests();
  // Sends a raw line to every connection (for protocol-error tests).
  void SendRaw(const std::string& line);

 private:
  void Serve();
  void HandleConnection(int fd);

  std::filesystem::path socket_;
  Handler handler_;
  int listen_fd_ = -1;
  int wake_pipe_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mutex_;
  std::vector<json> requests_;
  std::vector<int> subscribers_;
  std::vector<int> connections_;
};

// A json error object as agentmeshd sends it.
json RpcErrorObject(int code, const std::string& data_code, const std::string& message,
                    json extra_data = json::object());

}  // namespace amesh::test
