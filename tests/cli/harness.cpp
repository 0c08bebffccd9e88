#include "harness.hpp"

#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <sstream>

#include "cli.hpp"

namespace amesh::test {

RunResult Amesh(const std::vector<std::string>& args, const RunOptions& options) {
  std::istringstream in(options.stdin_text);
  std::ostringstream out, err;
  Io io;
  io.in = &in;
  io.out = &out;
  io.err = &err;
  io.stdin_is_tty = options.stdin_is_tty;
  auto env = options.env;
  io.env = [env](std::string_view name) -> std::optional<std::string> {
    auto it = env.find(std::string(name));
    if (it == env.end()) return std::nullopt;
    return it->second;
  };
  io.self_exe = options.self_exe;
  std::vector<std::string> argv = {"amesh"};
  argv.insert(argv.end(), args.begin(), args.end());
  RunResult r;
  r.status = RunAmesh(argv, std::move(io));
  r.out = out.str();
  r.err = err.str();
  return r;
}

ScratchDir::ScratchDir() {
  std::string pattern = "/tmp/amesh-cli-XXXXXX";
  if (::mkdtemp(pattern.data()) != nullptr) path_ = pattern;
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

json RpcErrorObject(int code, const std::string& data_code, const std::string& message,
                    json extra_data) {
  extra_data["code"] = data_code;
  return json{{"error", {{"code", code}, {"message", message}, {"data", extra_data}}}};
}

FakeDaemon::FakeDaemon(std::filesystem::path socket, Handler handler)
    : socket_(std::move(socket)), handler_(std::move(handler)) {
  listen_fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, socket_.c_str(), sizeof addr.sun_path - 1);
  ::unlink(socket_.c_str());
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(listen_fd_, 16) != 0) {
    ::close(listen_fd_);
    listen_fd_ = -1;
  }
  if (::pipe2(wake_pipe_, O_CLOEXEC) != 0) wake_pipe_[0] = wake_pipe_[1] = -1;
  thread_ = std::thread([this] { Serve(); });
}

FakeDaemon::~FakeDaemon() {
  stop_ = true;
  if (wake_pipe_[1] >= 0) {
    const char c = 'x';
    [[maybe_unused]] auto n = ::write(wake_pipe_[1], &c, 1);
  }
  if (thread_.joinable()) thread_.join();
  for (int fd : connections_) ::close(fd);
  if (listen_fd_ >= 0) ::close(listen_fd_);
  for (int fd : wake_pipe_) {
    if (fd >= 0) ::close(fd);
  }
  ::unlink(socket_.c_str());
}

namespace {
void WriteAll(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}
}  // namespace

void FakeDaemon::Push(const json& params) {
  const std::string line =
      json{{"jsonrpc", "2.0"}, {"method", "event"}, {"params", params}}.dump() + "\n";
  std::lock_guard lock(mutex_);
  for (int fd : subscribers_) WriteAll(fd, line);
}

void FakeDaemon::SendRaw(const std::string& line) {
  std::lock_guard lock(mutex_);
  for (int fd : connections_) WriteAll(fd, line);
}

std::vector<json> FakeDaemon::Requests() {
  std::lock_guard lock(mutex_);
  return requests_;
}

void FakeDaemon::Serve() {
  std::map<int, std::string> buffers;
  while (!stop_) {
    std::vector<pollfd> fds = {{wake_pipe_[0], POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    {
      std::lock_guard lock(mutex_);
      for (int fd : connections_) fds.push_back({fd, POLLIN, 0});
    }
    if (::poll(fds.data(), fds.size(), 1000) <= 0) continue;
    if (fds[0].revents != 0) break;
    if ((fds[1].revents & POLLIN) != 0) {
      const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        std::lock_guard lock(mutex_);
        connections_.push_back(fd);
      }
    }
    for (std::size_t i = 2; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      const int fd = fds[i].fd;
      char chunk[65536];
      const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
      bool closed = n <= 0;
      if (!closed) {
        std::string& buffer = buffers[fd];
        buffer.append(chunk, static_cast<std::size_t>(n));
        std::size_t newline;
        while (!closed && (newline = buffer.find('\n')) != std::string::npos) {
          const std::string line = buffer.substr(0, newline);
          buffer.erase(0, newline + 1);
          json request = json::parse(line, nullptr, false);
          {
            std::lock_guard lock(mutex_);
            requests_.push_back(request);
          }
          if (request.is_discarded() || !request.is_object()) continue;
          const std::string method = request.value("method", "");
          json reply = handler_(method, request.value("params", json::object()));
          if (reply.contains("delay_ms")) {
            std::this_thread::sleep_for(std::chrono::milliseconds(reply["delay_ms"].get<int>()));
          }
          if (reply.value("close", false)) {
            closed = true;
            break;
          }
          if (method == "subscribe") {
            std::lock_guard lock(mutex_);
            // One copy of each event per connection, however often it subscribed.
            if (std::find(subscribers_.begin(), subscribers_.end(), fd) == subscribers_.end()) {
              subscribers_.push_back(fd);
            }
          }
          if (!request.contains("id")) continue;
          json response = {{"jsonrpc", "2.0"}, {"id", request["id"]}};
          if (reply.contains("error")) {
            response["error"] = reply["error"];
          } else {
            response["result"] = reply.value("result", json::object());
          }
          std::lock_guard lock(mutex_);
          WriteAll(fd, response.dump() + "\n");
          if (reply.contains("then_event")) {
            WriteAll(fd,
                     json{{"jsonrpc", "2.0"}, {"method", "event"}, {"params", reply["then_event"]}}
                             .dump() +
                         "\n");
          }
        }
      }
      if (closed) {
        std::lock_guard lock(mutex_);
        ::close(fd);
        buffers.erase(fd);
        std::erase(connections_, fd);
        std::erase(subscribers_, fd);
      }
    }
  }
}

}  // namespace amesh::test
