// INTERNAL to agentmesh_net: not part of the API. Applications use WsServer, HttpServer and
// WsClient; this header is installed with them only because the library keeps no private headers.
//
// A Link is one TCP connection owned by a LinkHost (a server or a client) on one libuv loop. It
// implements everything the server and client sides share:
//
//   * the uv_tcp_t, allocated with the Link and freed only in its uv_close callback;
//   * optional TLS through a TlsSession (memory BIOs);
//   * coalesced output: frames are appended to `out_` during a loop turn; the host flushes every
//     dirty Link once per turn (uv_prepare/uv_check) with one write: uv_try_write, and only what
//     the socket did not take goes to a uv_write, with one uv_write in flight per Link while more
//     output accumulates behind it;
//   * a bound on queued output bytes with backpressure/drain notifications;
//   * the WebSocket state machine on top of WsCodec: pings answered, close handshake, failing the
//     connection on violations, and an orderly TCP end (flush → shutdown → read to EOF, all
//     bounded by timeouts).
//
// Lifecycle: kHttp (TLS handshake and HTTP exchange) → kOpen (WebSocket) → kClosing (close frame
// sent or the connection failed) → kDraining (output flushed, FIN sent, input discarded until EOF)
// → kClosed (uv_close called; the Link is deleted in the close callback after the host's
// OnLinkClosed). Abort() jumps to kClosed from anywhere.
//
// Thread: the loop thread only. All libuv callbacks are noexcept and catch everything.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/net/tls.hpp"
#include "agentmesh/net/types.hpp"
#include "agentmesh/net/ws_codec.hpp"

namespace agentmesh::net::detail {

class Link;

// What a Link needs from its owner.
class LinkHost {
 public:
  // Put the link on the host's dirty list; the host calls link.Flush() before the loop blocks.
  virtual void ScheduleFlush(Link& link) noexcept = 0;
  // Called from the link's close callback, just before the link is deleted.
  virtual void OnLinkClosed(Link& link) noexcept = 0;
  // Called right after the link was deleted (the host may now free itself).
  virtual void AfterLinkFreed() noexcept = 0;
  // Shared scratch buffers, valid during one read callback.
  virtual Bytes& ReadBuffer() noexcept = 0;
  virtual Bytes& PlainBuffer() noexcept = 0;
  virtual TransportStats& Stats() noexcept = 0;
  virtual void Log(std::string_view message) noexcept = 0;

 protected:
  virtual ~LinkHost() = default;
};

struct LinkConfig {
  std::size_t max_output_bytes = 1024 * 1024;
  std::uint64_t ping_interval_ms = 0;  // 0 = no keep-alive pings
  std::uint64_t pong_timeout_ms = 10'000;
  std::uint64_t close_timeout_ms = 5'000;
  std::uint64_t idle_timeout_ms = 0;  // kHttp phase without activity (0 = none)
};

class Link : public WsSink {
 public:
  enum class Phase { kHttp, kOpen, kClosing, kDraining, kClosed };

  Link(LinkHost& host, ConnId id, const LinkConfig& config);
  virtual ~Link();
  Link(const Link&) = delete;
  Link& operator=(const Link&) = delete;

  // uv_tcp_init. On failure the link was never a handle: delete it directly.
  bool InitHandle(uv_loop_t* loop) noexcept;
  uv_stream_t* stream() noexcept { return reinterpret_cast<uv_stream_t*>(&tcp_); }
  uv_tcp_t* tcp() noexcept { return &tcp_; }

  ConnId id() const noexcept { return id_; }
  Phase phase() const noexcept { return phase_; }
  bool dirty() const noexcept { return dirty_; }
  std::uint16_t close_code() const noexcept { return close_code_; }
  const std::string& close_reason() const noexcept { return close_reason_; }
  std::size_t QueuedBytes() const noexcept { return out_.size() + wire_.size() + inflight_.size(); }

  void SetTls(std::unique_ptr<TlsSession> tls) noexcept { tls_ = std::move(tls); }
  void StartReading() noexcept;
  void StopReading() noexcept;

  // Host side: write what accumulated (one write syscall at most) and advance a pending close.
  void Flush() noexcept;
  // Host side: timeouts and keep-alive pings.
  void Tick(std::uint64_t now_ms) noexcept;
  // Closes the TCP handle now (no flush). Idempotent.
  void Abort() noexcept;

  // WebSocket operations (kOpen only).
  SendStatus SendMessage(WsOpcode opcode, ByteView payload);
  bool CloseWebSocket(std::uint16_t code, std::string_view reason);
  // Fails the WebSocket: sends a close frame with `code` unless one was sent, discards further
  // input and ends the TCP connection after the flush.
  void FailWebSocket(std::uint16_t code, std::string_view reason);

  // Absolute uv_now() time after which OnTimeout() runs (0 = none).
  void SetDeadline(std::uint64_t deadline_ms) noexcept { deadline_ms_ = deadline_ms; }

  // Logs and counts an exception that escaped a callback for this connection, then fails it
  // (1011 when it is an open WebSocket) or aborts it.
  void HandleException(std::string_view what) noexcept;

  // Records why the connection ended, for the close report (if nothing better is known).
  void SetCloseInfo(std::uint16_t code, std::string_view reason);

 protected:
  // Hooks for the server/client subclass. They may call back into the Link.
  virtual void OnHttpData(ByteView data) = 0;  // plaintext while kHttp
  virtual void OnTlsReady() {}                 // TLS handshake finished
  virtual void OnMessage(WsOpcode opcode, ByteView payload) = 0;
  virtual void OnViolation(const WsViolation& /*violation*/) {}
  virtual void OnTransportError(const Error& /*error*/) {}  // TLS failure, I/O error
  virtual void OnBackpressure(std::size_t /*queued_bytes*/) {}
  virtual void OnDrain() {}
  virtual void OnTimeout() { Abort(); }                           // deadline_ms_ passed
  virtual bool HasPendingWork() const noexcept { return false; }  // e.g. a response is awaited

  // Helpers for subclasses.
  std::uint64_t Now() const noexcept { return uv_now(tcp_.loop); }
  void AppendRaw(std::string_view bytes);
  void ScheduleFlush() noexcept;
  void FinishAfterFlush() noexcept;
  void EnableWebSocket(WsRole role, std::size_t max_message_bytes, Rng* mask_rng);
  void FeedWebSocket(ByteView data);
  void SetPhase(Phase phase) noexcept { phase_ = phase; }
  TlsSession* tls() noexcept { return tls_.get(); }
  LinkHost& host() noexcept { return host_; }
  const LinkConfig& config() const noexcept { return config_; }
  void Touch() noexcept { last_activity_ms_ = Now(); }

  // WsSink
  bool OnWsMessage(WsOpcode opcode, ByteView payload) override;
  bool OnWsPing(ByteView payload) override;
  bool OnWsPong(ByteView payload) override;
  bool OnWsClose(std::uint16_t code, std::string_view reason) override;

 private:
  static void AllocCb(uv_handle_t* handle, std::size_t suggested, uv_buf_t* buf) noexcept;
  static void ReadCb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept;
  static void WriteCb(uv_write_t* req, int status) noexcept;
  static void ShutdownCb(uv_shutdown_t* req, int status) noexcept;
  static void CloseCb(uv_handle_t* handle) noexcept;

  void OnRead(ssize_t nread, const uv_buf_t* buf);
  void OnWritten(int status);
  void AfterWrite();  // output left the process: drain notification
  void ProcessPlain(ByteView data);
  void HandleEof();
  void StartShutdown();

  LinkHost& host_;
  ConnId id_;
  LinkConfig config_;
  uv_tcp_t tcp_{};
  uv_write_t write_req_{};
  uv_shutdown_t shutdown_req_{};
  bool handle_initialised_ = false;

  Phase phase_ = Phase::kHttp;
  std::unique_ptr<TlsSession> tls_;
  bool tls_ready_ = false;
  std::unique_ptr<WsCodec> codec_;

  Bytes out_;       // queued this turn (plaintext when TLS is on)
  Bytes wire_;      // TLS only: ciphertext waiting for the socket
  Bytes inflight_;  // owned by the uv_write in flight
  bool writing_ = false;
  bool dirty_ = false;
  bool reading_ = false;
  bool finish_after_flush_ = false;
  bool shutdown_started_ = false;
  bool shutdown_done_ = false;
  bool eof_seen_ = false;
  bool backpressured_ = false;

  bool close_sent_ = false;
  bool close_received_ = false;
  bool failed_ = false;
  bool close_info_set_ = false;
  std::uint16_t close_code_ = close_code::kAbnormal;
  std::string close_reason_;

  std::uint64_t last_activity_ms_ = 0;
  std::uint64_t ping_sent_ms_ = 0;
  bool ping_outstanding_ = false;
  std::uint64_t deadline_ms_ = 0;  // 0 = none
};

// Numeric peer address of a connected TCP handle (empty on failure).
PeerAddress GetPeerAddress(const uv_tcp_t* tcp) noexcept;

}  // namespace agentmesh::net::detail
