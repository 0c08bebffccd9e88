// JSON-RPC 2.0 over a Unix stream socket (docs/RPC.md §1-§2), on the daemon's libuv loop.
//
// Framing: one JSON object per '\n'-terminated line in both directions, lines capped at
// kMaxLineBytes (a longer line is answered with -32600 and the connection is closed). Requests
// are parsed and validated here (parse error, batch, missing jsonrpc/method, bad id, non-object
// params); valid ones go to the dispatch function with a Responder. Responses leave in request
// order even when handlers answer asynchronously (each request holds a slot; a slot is written
// once it and every earlier slot are filled). Notifications from the client (no "id") are
// dispatched with a Responder that discards the answer.
//
// Output is buffered and written by Flush(), which the daemon calls once per loop turn after its
// storage batch committed, so a reply is never visible before the state it reports is durable.
//
// Peer credentials: each accepted connection's SO_PEERCRED uid must be the daemon's uid or 0,
// else it is closed at once.
//
// Connections are referred to by ConnId; answering a closed connection is a no-op.
// Thread-safety: loop thread only. Exceptions never leave a libuv callback.
#pragma once

#include <sys/types.h>
#include <uv.h>

#include <cstdint>
#include <deque>
#include <expected>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "agentmesh/core/error.hpp"

namespace agentmesh::daemon {

inline constexpr std::size_t kMaxLineBytes = 1 << 20;

// A JSON-RPC error: `code` (RPC.md §2), `name` (data.code), message and extra data members
// (field, reason, retry_after_seconds, …).
struct RpcError {
  int code = -32603;
  std::string name = "internal";
  std::string message;
  nlohmann::json data = nlohmann::json::object();
};
using RpcResult = std::expected<nlohmann::json, RpcError>;

// The one mapping from core error codes to RPC errors (data.field = Error::field when set).
RpcError ToRpcError(const Error& error);
inline std::unexpected<RpcError> RpcFail(const Error& error) {
  return std::unexpected(ToRpcError(error));
}
std::unexpected<RpcError> RpcFail(int code, std::string name, std::string message,
                                  nlohmann::json data = nlohmann::json::object());

using ConnId = std::uint64_t;

class RpcServer;

// Answers one request. Copyable; the first call answers, later calls are ignored.
class Responder {
 public:
  Responder() = default;
  Responder(RpcServer* server, ConnId conn, std::uint64_t slot, bool notification)
      : server_(server), conn_(conn), slot_(slot), notification_(notification) {}
  void operator()(RpcResult result) const;
  // Answers with a result already serialised: `result_json` must be one JSON value (the caller
  // wrote it; it is not parsed again).
  void Text(std::string result_json) const;
  ConnId conn() const noexcept { return conn_; }
  // `fn` runs once, at the first answer of this Responder or of any copy (also for a
  // notification, which sends nothing). Replaces an earlier hook.
  void OnAnswer(std::function<void()> fn) {
    on_answer_ = std::make_shared<std::function<void()>>(std::move(fn));
  }

 private:
  void RunHook() const;

  RpcServer* server_ = nullptr;
  ConnId conn_ = 0;
  std::uint64_t slot_ = 0;
  bool notification_ = true;
  std::shared_ptr<std::function<void()>> on_answer_;
};

class RpcServer {
 public:
  using Dispatch =
      std::function<void(Responder, const std::string& method, const nlohmann::json& params)>;

  RpcServer(uv_loop_t* loop, Dispatch dispatch, std::function<void(ConnId)> on_close,
            std::function<void()> on_output);
  ~RpcServer();
  RpcServer(const RpcServer&) = delete;
  RpcServer& operator=(const RpcServer&) = delete;

  // Binds `path` (mode 0600) and listens. The caller removed any stale socket.
  Result<void> Listen(const std::string& path);
  // Stops listening and closes every connection (pending answers are dropped).
  void Close();

  // Queues the notification {"jsonrpc":"2.0","method":method,"params":params} for `conn`
  // (true for a closed connection: nothing to do). Returns false, queuing nothing, when the
  // notifications already queued for `conn` and not yet written exceed 32 MiB (answers do not
  // count), unless `even_if_unread`: the caller then stops sending it events.
  bool Notify(ConnId conn, std::string_view method, const nlohmann::json& params,
              bool even_if_unread = false);
  // Bytes of notifications queued for `conn` and not yet written (0 for a closed connection).
  std::size_t UnreadEventBytes(ConnId conn) const;
  // The peer's pid from SO_PEERCRED (0 if unknown or closed), for logs.
  pid_t PeerPid(ConnId conn) const;
  // Writes buffered output of every connection that has some.
  void Flush();
  bool has_output() const noexcept { return !dirty_.empty(); }
  // uv_hrtime() of the last read from any connection (0 before the first).
  std::uint64_t last_read_ns() const noexcept { return last_read_ns_; }
  // Set by the owner while its loop polls without sleeping; reads made then are counted.
  void set_busy_polling(bool on) noexcept { busy_polling_ = on; }
  bool busy_polling() const noexcept { return busy_polling_; }
  std::uint64_t reads() const noexcept { return reads_; }
  std::uint64_t busy_poll_reads() const noexcept { return busy_poll_reads_; }
  std::size_t connections() const noexcept { return conns_.size(); }

  // Internal, for Responder.
  void Complete(ConnId conn, std::uint64_t slot, RpcResult result);
  void CompleteText(ConnId conn, std::uint64_t slot, std::string result_json);

  struct Conn;

 private:
  // The connection whose answer `slot` is still to be written, or nullptr (gone, or answered).
  Conn* OpenSlot(ConnId conn, std::uint64_t slot);
  void OnConnection(int status);
  void OnRead(Conn& conn, ssize_t nread, const uv_buf_t* buf);
  void HandleLine(Conn& conn, std::string_view line);
  void RejectOversize(Conn& conn);
  void StartReading(Conn& conn);
  void Fill(Conn& conn, std::uint64_t slot, std::string text);
  void CloseConn(Conn& conn);
  void MarkDirty(Conn& conn);
  void WriteOut(Conn& conn);

  uv_loop_t* loop_;
  Dispatch dispatch_;
  std::function<void(ConnId)> on_close_;
  std::function<void()> on_output_;
  uv_pipe_t* listener_ = nullptr;
  std::unordered_map<ConnId, Conn*> conns_;
  std::unordered_set<ConnId> dirty_;
  std::uint64_t last_read_ns_ = 0;
  bool busy_polling_ = false;
  std::uint64_t reads_ = 0;
  std::uint64_t busy_poll_reads_ = 0;
  ConnId next_id_ = 1;
  std::string path_;
};

// Compact JSON text that never throws (invalid UTF-8 is replaced).
std::string DumpJson(const nlohmann::json& value);

}  // namespace agentmesh::daemon
