// A blocking JSON-RPC 2.0 client of agentmeshd's Unix stream socket (docs/RPC.md).
//
// Wire format: one JSON object per line in each direction. The client numbers its requests
// 1, 2, 3… on each connection. Requests may be pipelined (SendRequest several times, then Await
// each id); the daemon answers in request order, and the client files every response under its id
// so Await may be called in any order. After `subscribe`, the daemon interleaves notifications
//
//   {"jsonrpc":"2.0","method":"event","params":{"subscription":1,"type":"message.received",…}}
//
// with responses; the client queues their `params` while it waits for a response, and NextEvent
// hands them out in arrival order. Server messages that are neither a response nor an `event`
// notification are ignored.
//
// Timeouts: every waiting call takes a Timeout (nullopt = wait forever) and uses poll(2), so a
// silent daemon can never hang the caller past it. A timeout leaves the connection usable: a late
// response is filed under its id and dropped when nobody awaits it.
//
// Errors: every failure is an RpcError (error.hpp). A server error belongs to one call and leaves
// the connection usable. A client-side failure (kDisconnected, kProtocol) poisons the connection:
// every later call fails with the same error.
//
// Ownership and threads: a Client owns its socket (closed by the destructor) and is move-only.
// It is not thread-safe; use one Client per thread. SIGPIPE is never raised (MSG_NOSIGNAL).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <expected>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "agentmesh/rpc/error.hpp"

namespace agentmesh::rpc {

// How long to wait; nullopt means no limit.
using Timeout = std::optional<std::chrono::milliseconds>;

template <typename T>
using RpcResult = std::expected<T, RpcError>;

// Longest line the client accepts from the daemon (a larger one is kProtocol): results such as
// `audit` with 10 000 events are far bigger than the daemon's 1 MiB request cap.
inline constexpr std::size_t kMaxResponseLineBytes = 64u << 20;

class Client {
 public:
  // Connects to the socket at `path`. Fails with kUnreachable (os_error = ENOENT when the socket
  // does not exist, ECONNREFUSED when nothing listens on it, EACCES…) or kLocal (e.g. the path is
  // longer than MaxSocketPathLength()). Never blocks longer than the kernel's connect().
  static RpcResult<Client> Connect(const std::string& path);

  Client(Client&& other) noexcept;
  Client& operator=(Client&& other) noexcept;
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  ~Client();

  // Writes one request line and returns its id without waiting for the answer. `params` must be
  // an object or null (null omits `params`). Blocks only while the socket buffer is full, at most
  // `write_timeout`.
  RpcResult<std::int64_t> SendRequest(std::string_view method, const nlohmann::json& params);

  // Writes a notification (no id): the daemon executes it and does not answer.
  RpcResult<void> SendNotification(std::string_view method, const nlohmann::json& params);

  // Waits for the response to request `id`: its `result`, or the server's error (kServer).
  // Events that arrive meanwhile are queued for NextEvent. kTimeout when `timeout` passes first.
  RpcResult<nlohmann::json> Await(std::int64_t id, Timeout timeout);

  // SendRequest + Await.
  RpcResult<nlohmann::json> Call(std::string_view method, const nlohmann::json& params,
                                 Timeout timeout);

  // The next event notification's `params`: a queued one first, else the next one read from the
  // socket. Responses read meanwhile are filed for Await. nullopt when `timeout` passes first
  // (a zero timeout polls). kDisconnected when the daemon closes the connection.
  RpcResult<std::optional<nlohmann::json>> NextEvent(Timeout timeout);

  // Events already read and not yet handed out.
  std::size_t queued_events() const noexcept { return events_.size(); }

  // The connected socket, for poll(2) alongside other descriptors. Data may already be buffered
  // inside the client: check queued_events() before polling.
  int fd() const noexcept { return fd_; }
  const std::string& path() const noexcept { return path_; }

  // Limit for writing one line (default 10 s).
  void set_write_timeout(std::chrono::milliseconds timeout) noexcept { write_timeout_ = timeout; }

 private:
  Client(int fd, std::string path) noexcept : fd_(fd), path_(std::move(path)) {}

  RpcResult<void> WriteLine(const std::string& line);
  // Reads whatever is available (waiting up to `deadline`) and dispatches complete lines.
  // Returns false on timeout, an error when the connection failed.
  RpcResult<bool> ReadSome(std::optional<std::chrono::steady_clock::time_point> deadline);
  void Dispatch(const std::string& line);
  void Poison(RpcError error);
  void Close() noexcept;

  int fd_ = -1;
  std::string path_;
  std::int64_t next_id_ = 1;
  std::string buffer_;
  std::deque<std::int64_t> outstanding_;  // ids sent and not yet answered, oldest first
  std::map<std::int64_t, RpcResult<nlohmann::json>> responses_;
  std::deque<nlohmann::json> events_;
  std::optional<RpcError> broken_;
  std::chrono::milliseconds write_timeout_{10000};
};

}  // namespace agentmesh::rpc
