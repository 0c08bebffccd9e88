// WebSocket + HTTP/1.1 server on one libuv loop (the relay's and the registry's front end).
//
//   WsServer    accepts TCP (optionally TLS) connections on host:port; each connection starts as
//               HTTP/1.1 (keep-alive, pipelining answered in order) and may upgrade to WebSocket
//               (RFC 6455). Plain requests (/health, /metrics, ...) go to on_http/on_http_async on
//               the same port.
//   HttpServer  the same engine with upgrades disabled, exposing only the HTTP API.
//
// Performance contract: everything queued for one connection during a loop turn leaves in ONE
// write (flushed from uv_prepare/uv_check; synchronous when the socket takes it all, else a
// uv_write), with at most one write in flight per connection; frames queued while a write is in
// flight join the next one. Input and output buffers are reused, so the steady state does not
// allocate per message: on_text sees each message unmasked in the connection's reused buffer.
//
// Connections are named by ConnId, never by pointer. Sending to an id that is gone is a counted
// no-op (SendStatus::kNoSuchConn). on_open, if called, is always followed by exactly one on_close
// for the same id, after which the id is unknown. on_close is called when the TCP connection is
// gone (after the close handshake, a failure or a timeout); `code` is the peer's close code when
// it sent one, else the code we sent, else 1006.
//
// Limits: max_message_bytes for a (reassembled) WebSocket message → on_error + close 1009;
// http_limits for request heads (431) and bodies (413); max_output_bytes of queued output per
// connection → the frame is dropped and on_backpressure is called (the application may then
// Close the slow reader or keep dropping).
//
// Ownership and lifetime: the server is owned by the application and bound to one loop. Handles
// are closed asynchronously: after Stop() the loop ends once every connection is closed; after
// the destructor (which aborts what is still open, without further callbacks) the loop must run
// again so the handles can be freed. The loop must outlive both.
//
// Errors the transport answers by itself are JSON, `{"error":"<description>"}` with Content-Type
// application/json (HttpResponse::JsonError), followed by closing the connection: 400 malformed
// request or refused upgrade, 404 (no handler, or a path other than websocket_path), 413 body
// over http_limits.max_body_bytes (declared or while reading a chunked body), 431 head over
// http_limits.max_header_bytes or over 100 header fields, 501 unsupported transfer coding, 500 an
// exception from on_http, 503 an upgrade while stopping, and on_upgrade's default 403.
//
// Threading: every method and every callback runs on the loop thread. Callbacks may call any
// method of the server (Send*, Close, Respond, Stop) and may destroy it. An exception escaping
// a callback is logged (on_log), counted, and closes that connection (1011).
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"
#include "agentmesh/net/http.hpp"
#include "agentmesh/net/tls.hpp"
#include "agentmesh/net/types.hpp"

namespace agentmesh::net {

struct ServerOptions {
  std::string host = "127.0.0.1";  // numeric IPv4/IPv6 address; "0.0.0.0" / "::" for all
  std::uint16_t port = 0;          // 0 = pick a free port (read it with port() after Listen)
  int backlog = 511;

  bool enable_websocket = true;
  // When non-empty, only this request path may upgrade (others get 404).
  std::string websocket_path;

  std::size_t max_message_bytes = 64 * 1024;   // reassembled WebSocket message
  std::size_t max_output_bytes = 1024 * 1024;  // queued, unwritten output per connection
  HttpLimits http_limits;                      // request head / body bounds
  std::size_t max_connections = 0;             // 0 = unlimited

  std::uint64_t ping_interval_ms = 0;      // 0 = no server pings; else ping after this idle time
  std::uint64_t pong_timeout_ms = 10'000;  // no traffic this long after a ping → drop (1006)
  std::uint64_t close_timeout_ms = 5'000;  // bound on close handshake, flush and FIN exchange
  std::uint64_t http_idle_timeout_ms = 30'000;  // idle keep-alive / incomplete request / TLS

  // Set → every connection is TLS (https/wss). Build with TlsContext::CreateServer.
  std::shared_ptr<TlsContext> tls;
  bool tcp_nodelay = true;
};

struct ServerHandlers {
  // Flood protection: return false to refuse a new TCP connection (it is closed at once).
  std::function<bool(const PeerAddress& peer)> on_accept;

  // Optional gate for upgrades that passed RFC 6455 validation: return false and fill `reject`
  // (e.g. 401/403; it starts as the JSON 403 `{"error":"forbidden"}`) to refuse. The default
  // accepts.
  std::function<bool(const HttpRequest& request, HttpResponse& reject)> on_upgrade;

  std::function<void(ConnId, const HttpRequest& upgrade_request, const PeerAddress& peer)> on_open;
  // Text message (valid UTF-8). The view is valid only during the call.
  std::function<void(ConnId, std::string_view text)> on_text;
  // Binary message. Unset → binary messages are refused with close 1003.
  std::function<void(ConnId, ByteView data)> on_binary;
  std::function<void(ConnId, std::uint16_t code, std::string_view reason)> on_close;
  // A peer broke a rule (message too big → kLimitExceeded; protocol/UTF-8 → kInvalidArgument);
  // the connection is being closed with the matching code.
  std::function<void(ConnId, const Error& error)> on_error;
  // A send was dropped because `queued_bytes` + the frame would exceed max_output_bytes.
  std::function<void(ConnId, std::size_t queued_bytes)> on_backpressure;
  // After a backpressure event, the queue fell to half the bound.
  std::function<void(ConnId)> on_drain;

  // Plain HTTP requests. If on_http_async is set it wins: call Respond(id, ...) exactly once,
  // now or later (requests on one connection are handed over one at a time). Otherwise on_http
  // answers synchronously. Neither set → 404.
  std::function<HttpResponse(const HttpRequest& request)> on_http;
  std::function<void(ConnId, const HttpRequest& request)> on_http_async;

  // Diagnostics (exceptions from callbacks). Unset → stderr.
  std::function<void(std::string_view message)> on_log;
};

class WsServer {
 public:
  WsServer(uv_loop_t* loop, ServerOptions options, ServerHandlers handlers);
  ~WsServer();
  WsServer(const WsServer&) = delete;
  WsServer& operator=(const WsServer&) = delete;

  // Binds and listens. Errors: kInvalidArgument (bad host), kIo (bind/listen failed, e.g.
  // "address already in use"), kConflict (already listening or stopped).
  Result<void> Listen();
  // The bound port (after a successful Listen), else 0.
  std::uint16_t port() const noexcept;

  // Queue a message on an open WebSocket (see SendStatus for the outcomes).
  SendStatus SendText(ConnId id, std::string_view text);
  SendStatus SendBinary(ConnId id, ByteView data);

  // Starts the close handshake (WebSocket) or closes after pending output (HTTP). Returns false
  // when the id is unknown or already closing. on_close follows later.
  bool Close(ConnId id, std::uint16_t code = 1000, std::string_view reason = {});

  // Answers the request handed to on_http_async. kNotFound if the connection is gone,
  // kConflict if no response is awaited.
  Result<void> Respond(ConnId id, HttpResponse response);

  // Stops accepting, sends close 1001 to every WebSocket, lets in-flight HTTP responses finish,
  // then closes everything (bounded by close_timeout_ms). Idempotent. Callbacks continue until
  // the last on_close.
  void Stop();
  bool stopping() const noexcept;

  std::size_t QueuedBytes(ConnId id) const noexcept;  // 0 if unknown
  std::optional<PeerAddress> Peer(ConnId id) const;
  std::size_t connection_count() const noexcept;
  const TransportStats& stats() const noexcept;

  class Impl;

 private:
  Impl* impl_;  // frees itself once its handles are closed
};

// A plain HTTP/1.1 server (the registry): keep-alive, body limit, optional TLS, sync or async
// handlers. Same engine and contracts as WsServer with enable_websocket = false; upgrade
// requests are answered 400.
class HttpServer {
 public:
  struct Handlers {
    std::function<bool(const PeerAddress& peer)> on_accept;
    std::function<HttpResponse(const HttpRequest& request)> on_http;
    std::function<void(ConnId, const HttpRequest& request)> on_http_async;
    std::function<void(std::string_view message)> on_log;
  };

  HttpServer(uv_loop_t* loop, ServerOptions options, Handlers handlers);
  Result<void> Listen() { return server_.Listen(); }
  std::uint16_t port() const noexcept { return server_.port(); }
  Result<void> Respond(ConnId id, HttpResponse response) {
    return server_.Respond(id, std::move(response));
  }
  void Stop() { server_.Stop(); }
  std::size_t connection_count() const noexcept { return server_.connection_count(); }
  const TransportStats& stats() const noexcept { return server_.stats(); }

 private:
  static ServerHandlers Convert(Handlers handlers);
  WsServer server_;
};

}  // namespace agentmesh::net
