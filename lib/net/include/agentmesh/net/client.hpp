// WebSocket client on a libuv loop: ws:// and wss:// URLs, used by the daemon (relay link), the
// tests and the benchmarks.
//
// It resolves the host (numeric addresses skip DNS; names go through uv_getaddrinfo and every
// returned address is tried in turn), connects, runs TLS (certificate and host name verified;
// see TlsContext::ClientConfig) for wss://, sends the upgrade request with a random
// Sec-WebSocket-Key, checks Sec-WebSocket-Accept, and then exchanges masked frames. Output is
// coalesced exactly like the server's: one write per loop turn at most.
//
// Callback contract, per Connect():
//   on_open        once, when the handshake succeeded;
//   on_text / on_binary for each message (views valid during the call only);
//   on_error       zero or more times with details of a failure (DNS, connect, TLS
//                  verification → kAuthFailed, handshake rejected, protocol violation, timeout);
//   on_close       exactly once, last: the close code (peer's, ours, or 1006 when the TCP
//                  connection ended without a close handshake or never opened).
// After on_close the client is idle and may Connect() again.
//
// Lifetime: owned by the application, bound to one loop that must outlive it. The destructor
// aborts any connection without further callbacks; run the loop afterwards so the handles are
// freed. Callbacks may call any method, including destroying the client.
//
// Threading: the loop thread only.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/net/tls.hpp"
#include "agentmesh/net/types.hpp"

namespace agentmesh::net {

// A parsed ws:// or wss:// URL.
struct WsUrl {
  bool secure = false;
  std::string host;  // without brackets for IPv6 literals
  std::uint16_t port = 0;
  std::string target;  // path + query, at least "/"

  // The Host header value: host, with brackets for IPv6 and ":port" when not the default.
  std::string HostHeader() const;
};

// Errors: kInvalidArgument for another scheme, a missing host, a bad port, userinfo or a fragment.
Result<WsUrl> ParseWsUrl(std::string_view url);

struct ClientOptions {
  std::size_t max_message_bytes = 64 * 1024;
  std::size_t max_output_bytes = 1024 * 1024;
  std::uint64_t connect_timeout_ms = 10'000;  // DNS + TCP + TLS + upgrade
  std::uint64_t ping_interval_ms = 0;         // 0 = no client pings
  std::uint64_t pong_timeout_ms = 10'000;
  std::uint64_t close_timeout_ms = 5'000;
  // TLS for wss://. Null → a default verifying context using the system trust store.
  std::shared_ptr<TlsContext> tls;
  // Name verified in the server certificate (and sent as SNI). Empty → the URL's host.
  std::string tls_server_name;
  // Extra headers for the upgrade request (e.g. Origin, Authorization).
  std::vector<HttpHeader> headers;
  // Sec-WebSocket-Key and masking keys. Null → libsodium's SystemRng. Must outlive the client.
  Rng* rng = nullptr;
  bool tcp_nodelay = true;
};

struct ClientHandlers {
  std::function<void()> on_open;
  std::function<void(std::string_view text)> on_text;
  std::function<void(ByteView data)> on_binary;  // unset → binary messages are ignored
  std::function<void(std::uint16_t code, std::string_view reason)> on_close;
  std::function<void(const Error& error)> on_error;
  std::function<void(std::size_t queued_bytes)> on_backpressure;
  std::function<void()> on_drain;
  std::function<void(std::string_view message)> on_log;  // unset → stderr
};

class WsClient {
 public:
  enum class State { kIdle, kConnecting, kOpen, kClosing };

  WsClient(uv_loop_t* loop, ClientOptions options, ClientHandlers handlers);
  ~WsClient();
  WsClient(const WsClient&) = delete;
  WsClient& operator=(const WsClient&) = delete;

  // Starts connecting; the outcome arrives through the callbacks. Errors (no callbacks follow):
  // kInvalidArgument (bad URL), kConflict (not idle), and TLS context errors.
  Result<void> Connect(std::string_view url);

  SendStatus SendText(std::string_view text);
  SendStatus SendBinary(ByteView data);
  // Starts the close handshake (open) or aborts the attempt (connecting). False when idle.
  bool Close(std::uint16_t code = 1000, std::string_view reason = {});

  State state() const noexcept;
  std::size_t QueuedBytes() const noexcept;
  const TransportStats& stats() const noexcept;

  class Impl;

 private:
  Impl* impl_;  // frees itself once its handles are closed
};

}  // namespace agentmesh::net
