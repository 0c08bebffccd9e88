#include "agentmesh/rpc/client.hpp"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <utility>

#include "agentmesh/rpc/paths.hpp"

namespace agentmesh::rpc {
namespace {

using Clock = std::chrono::steady_clock;
using Deadline = std::optional<Clock::time_point>;

std::unexpected<RpcError> ClientError(ErrorOrigin origin, std::string_view data_code,
                                      std::string message, int os_error = 0) {
  RpcError e;
  e.origin = origin;
  e.data_code = std::string(data_code);
  e.message = std::move(message);
  e.os_error = os_error;
  return std::unexpected<RpcError>(std::move(e));
}

Deadline DeadlineFrom(Timeout timeout) {
  if (!timeout) return std::nullopt;
  return Clock::now() + *timeout;
}

// Milliseconds left for poll(): -1 = forever, 0 = expired (poll once).
int PollMillis(const Deadline& deadline) {
  if (!deadline) return -1;
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - Clock::now());
  if (left.count() <= 0) return 0;
  // Round up so a sub-millisecond remainder still waits rather than spinning.
  return static_cast<int>(std::min<long long>(left.count() + 1, 1 << 30));
}

}  // namespace

RpcResult<Client> Client::Connect(const std::string& path) {
  if (path.empty()) return ClientError(ErrorOrigin::kLocal, kDataCodeLocal, "empty socket path");
  if (path.size() > MaxSocketPathLength()) {
    return ClientError(
        ErrorOrigin::kLocal, kDataCodeLocal,
        "socket path is longer than " + std::to_string(MaxSocketPathLength()) + " bytes: " + path);
  }
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    const int err = errno;
    return ClientError(ErrorOrigin::kLocal, kDataCodeLocal,
                       std::string("socket(): ") + ::strerror(err), err);
  }
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  int rc;
  do {
    rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  } while (rc != 0 && errno == EINTR);
  if (rc != 0) {
    const int err = errno;
    ::close(fd);
    return ClientError(ErrorOrigin::kUnreachable, kDataCodeUnreachable,
                       "cannot connect to " + path + ": " + ::strerror(err), err);
  }
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    const int err = errno;
    ::close(fd);
    return ClientError(ErrorOrigin::kLocal, kDataCodeLocal,
                       std::string("fcntl(): ") + ::strerror(err), err);
  }
  return Client(fd, path);
}

Client::Client(Client&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      path_(std::move(other.path_)),
      next_id_(other.next_id_),
      buffer_(std::move(other.buffer_)),
      outstanding_(std::move(other.outstanding_)),
      responses_(std::move(other.responses_)),
      events_(std::move(other.events_)),
      broken_(std::move(other.broken_)),
      write_timeout_(other.write_timeout_) {}

Client& Client::operator=(Client&& other) noexcept {
  if (this != &other) {
    Close();
    fd_ = std::exchange(other.fd_, -1);
    path_ = std::move(other.path_);
    next_id_ = other.next_id_;
    buffer_ = std::move(other.buffer_);
    outstanding_ = std::move(other.outstanding_);
    responses_ = std::move(other.responses_);
    events_ = std::move(other.events_);
    broken_ = std::move(other.broken_);
    write_timeout_ = other.write_timeout_;
  }
  return *this;
}

Client::~Client() { Close(); }

void Client::Close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Client::Poison(RpcError error) {
  if (!broken_) broken_ = std::move(error);
  Close();
}

RpcResult<void> Client::WriteLine(const std::string& line) {
  if (broken_) return std::unexpected(*broken_);
  const Deadline deadline = Clock::now() + write_timeout_;
  std::size_t written = 0;
  while (written < line.size()) {
    const ssize_t n = ::send(fd_, line.data() + written, line.size() - written, MSG_NOSIGNAL);
    if (n > 0) {
      written += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd{fd_, POLLOUT, 0};
      const int millis = PollMillis(deadline);
      if (millis == 0) {
        // A partial line would desynchronise the stream: the connection is unusable now.
        Poison(ClientError(ErrorOrigin::kClientTimeout, kDataCodeClientTimeout,
                           "timed out writing to " + path_)
                   .error());
        return std::unexpected(*broken_);
      }
      ::poll(&pfd, 1, millis);
      continue;
    }
    const int err = n < 0 ? errno : EPIPE;
    Poison(RpcError{ErrorOrigin::kDisconnected, 0, std::string(kDataCodeDisconnected),
                    "connection to agentmeshd lost while writing: " + std::string(::strerror(err)),
                    "", nullptr, err});
    return std::unexpected(*broken_);
  }
  return {};
}

RpcResult<std::int64_t> Client::SendRequest(std::string_view method, const nlohmann::json& params) {
  if (broken_) return std::unexpected(*broken_);
  const std::int64_t id = next_id_++;
  nlohmann::json request = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}};
  if (!params.is_null()) request["params"] = params;
  // error_handler::replace: invalid UTF-8 in a user string becomes U+FFFD instead of throwing.
  std::string line = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');
  if (auto written = WriteLine(line); !written) return std::unexpected(written.error());
  outstanding_.push_back(id);
  return id;
}

RpcResult<void> Client::SendNotification(std::string_view method, const nlohmann::json& params) {
  nlohmann::json request = {{"jsonrpc", "2.0"}, {"method", method}};
  if (!params.is_null()) request["params"] = params;
  std::string line = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  line.push_back('\n');
  return WriteLine(line);
}

void Client::Dispatch(const std::string& line) {
  if (line.empty() || line == "\r") return;
  nlohmann::json message = nlohmann::json::parse(line, nullptr, false);
  if (message.is_discarded() || !message.is_object()) {
    Poison(RpcError{ErrorOrigin::kProtocol, 0, std::string(kDataCodeProtocol),
                    "agentmeshd sent a line that is not a JSON object", "", nullptr, 0});
    return;
  }
  auto method = message.find("method");
  auto id = message.find("id");
  if (method != message.end()) {
    // A notification from the server. Only `event` is defined (RPC.md §4); requests from the
    // server (with an id) are not part of the contract and are ignored.
    if (id == message.end() && method->is_string() && *method == "event") {
      auto params = message.find("params");
      events_.push_back(params != message.end() ? *params : nlohmann::json::object());
    }
    return;
  }
  // A response. A null id answers a request the daemon could not parse: responses come in
  // request order, so it belongs to the oldest outstanding request.
  std::int64_t response_id = 0;
  if (id != message.end() && id->is_number_integer()) {
    response_id = id->get<std::int64_t>();
  } else if (!outstanding_.empty()) {
    response_id = outstanding_.front();
  } else {
    return;
  }
  std::erase(outstanding_, response_id);
  if (auto error = message.find("error"); error != message.end()) {
    responses_.insert_or_assign(response_id, std::unexpected(ErrorFromJson(*error)));
  } else if (auto result = message.find("result"); result != message.end()) {
    responses_.insert_or_assign(response_id, *result);
  } else {
    responses_.insert_or_assign(
        response_id, ClientError(ErrorOrigin::kProtocol, kDataCodeProtocol,
                                 "agentmeshd sent a response with neither result nor error"));
  }
}

RpcResult<bool> Client::ReadSome(Deadline deadline) {
  if (broken_) return std::unexpected(*broken_);
  while (true) {
    pollfd pfd{fd_, POLLIN, 0};
    const int ready = ::poll(&pfd, 1, PollMillis(deadline));
    if (ready < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      Poison(RpcError{ErrorOrigin::kLocal, 0, std::string(kDataCodeLocal),
                      std::string("poll(): ") + ::strerror(err), "", nullptr, err});
      return std::unexpected(*broken_);
    }
    if (ready == 0) return false;
    char chunk[65536];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
    if (n <= 0) {
      const int err = n < 0 ? errno : 0;
      Poison(RpcError{ErrorOrigin::kDisconnected, 0, std::string(kDataCodeDisconnected),
                      err != 0 ? "connection to agentmeshd lost: " + std::string(::strerror(err))
                               : "agentmeshd closed the connection",
                      "", nullptr, err});
      return std::unexpected(*broken_);
    }
    const std::size_t old_size = buffer_.size();
    buffer_.append(chunk, static_cast<std::size_t>(n));
    std::size_t start = 0;
    std::size_t newline = buffer_.find('\n', old_size);
    while (newline != std::string::npos) {
      Dispatch(buffer_.substr(start, newline - start));
      if (broken_) return std::unexpected(*broken_);
      start = newline + 1;
      newline = buffer_.find('\n', start);
    }
    buffer_.erase(0, start);
    if (buffer_.size() > kMaxResponseLineBytes) {
      Poison(RpcError{ErrorOrigin::kProtocol, 0, std::string(kDataCodeProtocol),
                      "agentmeshd sent a line longer than the client's limit", "", nullptr, 0});
      return std::unexpected(*broken_);
    }
    return true;
  }
}

RpcResult<nlohmann::json> Client::Await(std::int64_t id, Timeout timeout) {
  const Deadline deadline = DeadlineFrom(timeout);
  while (true) {
    if (auto it = responses_.find(id); it != responses_.end()) {
      RpcResult<nlohmann::json> out = std::move(it->second);
      responses_.erase(it);
      return out;
    }
    if (broken_) return std::unexpected(*broken_);
    auto read = ReadSome(deadline);
    if (!read) return std::unexpected(read.error());
    if (!*read) {
      return ClientError(ErrorOrigin::kClientTimeout, kDataCodeClientTimeout,
                         "no answer from agentmeshd within " +
                             std::to_string(timeout ? timeout->count() : 0) + " ms");
    }
  }
}

RpcResult<nlohmann::json> Client::Call(std::string_view method, const nlohmann::json& params,
                                       Timeout timeout) {
  auto id = SendRequest(method, params);
  if (!id) return std::unexpected(id.error());
  return Await(*id, timeout);
}

RpcResult<std::optional<nlohmann::json>> Client::NextEvent(Timeout timeout) {
  const Deadline deadline = DeadlineFrom(timeout);
  while (true) {
    if (!events_.empty()) {
      nlohmann::json event = std::move(events_.front());
      events_.pop_front();
      return std::optional<nlohmann::json>(std::move(event));
    }
    if (broken_) return std::unexpected(*broken_);
    auto read = ReadSome(deadline);
    if (!read) return std::unexpected(read.error());
    if (!*read) return std::optional<nlohmann::json>();
  }
}

}  // namespace agentmesh::rpc
