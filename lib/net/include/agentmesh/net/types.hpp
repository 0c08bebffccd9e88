// Vocabulary shared by the transport layer (agentmesh_net): connection ids, peer addresses, HTTP
// request/response values, WebSocket close codes, send results and statistics counters.
//
// Everything here is a plain value type. The loop-bound classes (WsServer, HttpServer, WsClient)
// live in server.hpp and client.hpp.
//
// Thread-safety: plain values; no shared state.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agentmesh::net {

// A connection handle. Ids are assigned by a server in increasing order starting at 1 and are never
// reused during the server's lifetime, so a stale id can never reach a new connection. 0 is never a
// valid id.
using ConnId = std::uint64_t;
inline constexpr ConnId kNoConn = 0;

// Remote endpoint of a TCP connection, in numeric form ("127.0.0.1" / "::1").
struct PeerAddress {
  std::string ip;
  std::uint16_t port = 0;

  // "1.2.3.4:80" or "[::1]:80".
  std::string ToString() const;
};

// WebSocket close status codes (RFC 6455 §7.4.1) used by this layer.
namespace close_code {
inline constexpr std::uint16_t kNormal = 1000;
inline constexpr std::uint16_t kGoingAway = 1001;
inline constexpr std::uint16_t kProtocolError = 1002;
inline constexpr std::uint16_t kUnsupportedData = 1003;
inline constexpr std::uint16_t kNoStatus = 1005;  // never sent; reported when a close had no code
inline constexpr std::uint16_t kAbnormal = 1006;  // never sent; reported when TCP ended w/o close
inline constexpr std::uint16_t kInvalidPayload = 1007;
inline constexpr std::uint16_t kPolicyViolation = 1008;
inline constexpr std::uint16_t kMessageTooBig = 1009;
inline constexpr std::uint16_t kInternalError = 1011;
}  // namespace close_code

// True for codes a peer may put on the wire (1000-1003, 1007-1011, 3000-4999).
bool IsValidWireCloseCode(std::uint16_t code) noexcept;

// One header line. Names keep the case they were received/created with; lookups are
// case-insensitive.
struct HttpHeader {
  std::string name;
  std::string value;
};

// ASCII case-insensitive equality (header names, tokens).
bool EqualsIgnoreCase(std::string_view a, std::string_view b) noexcept;

// True when the comma-separated header value `list` contains `token` (case-insensitive), e.g.
// HeaderHasToken("keep-alive, Upgrade", "upgrade").
bool HeaderHasToken(std::string_view list, std::string_view token) noexcept;

// A parsed HTTP/1.x request. For WebSocket upgrades this is the upgrade request as received.
struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string target;  // request-target as received: "/v1/agents?x=1"
  std::string path;    // target up to '?': "/v1/agents" (not percent-decoded)
  std::string query;   // after '?', without it; empty if none
  int version_major = 1;
  int version_minor = 1;
  std::vector<HttpHeader> headers;
  std::string body;
  bool keep_alive = true;  // the client allows the connection to be reused
  PeerAddress peer;

  // First header with this name (case-insensitive), or nullopt. The view points into `headers`.
  std::optional<std::string_view> Header(std::string_view name) const noexcept;

  // Resets to the empty state but keeps allocated capacity (the parsers reuse one request).
  void Clear() noexcept;
};

// An HTTP response to serialise. Content-Length and Connection are always added by the
// transport; do not set them here. Content-Type is added from `content_type` unless empty.
struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::vector<HttpHeader> headers;
  std::string body;

  static HttpResponse Text(int status, std::string body);
  static HttpResponse Json(int status, std::string body);
  // `{"error":"<message>"}` (message JSON-escaped) with Content-Type application/json: the form of
  // every error the transport answers by itself (400, 404, 413, 431, 500, 501, 503, ...).
  static HttpResponse JsonError(int status, std::string_view message);
};

// Canonical reason phrase ("OK", "Not Found", ...); "Unknown" for codes it does not know.
std::string_view HttpReasonPhrase(int status) noexcept;

// Outcome of a send call. Every outcome other than kQueued is also counted in the stats.
enum class SendStatus {
  kQueued,        // the frame is in the connection's output buffer and will be written
  kNoSuchConn,    // the id is unknown (never existed or already gone): a counted no-op
  kNotOpen,       // the connection exists but is not (or no longer) an open WebSocket
  kBackpressure,  // the output bound would be exceeded: the frame was dropped, on_backpressure told
  kTooLarge,      // the frame alone is larger than the output bound
};

std::string_view SendStatusName(SendStatus status) noexcept;

// Counters kept by every server and client. All are monotonically increasing except
// `connections_current`.
struct TransportStats {
  std::uint64_t connections_accepted = 0;  // TCP connections accepted (or made, for a client)
  std::uint64_t connections_refused = 0;   // refused by on_accept or max_connections
  std::uint64_t connections_current = 0;   // currently open TCP connections
  std::uint64_t websocket_opened = 0;      // successful upgrades / handshakes
  std::uint64_t http_requests = 0;         // plain HTTP requests answered (not upgrades)
  std::uint64_t http_errors = 0;           // malformed/oversized requests answered 4xx and closed
  std::uint64_t frames_in = 0;             // complete data messages received (text + binary)
  std::uint64_t frames_out = 0;            // data frames queued for sending (text + binary)
  std::uint64_t bytes_in = 0;              // bytes read from sockets (wire bytes, incl. TLS)
  std::uint64_t bytes_out = 0;             // bytes written to sockets (wire bytes, incl. TLS)
  std::uint64_t write_calls = 0;           // socket writes (one per connection per flush)
  std::uint64_t read_calls = 0;            // read callbacks that delivered bytes
  std::uint64_t send_no_conn = 0;          // sends to unknown ids (SendStatus::kNoSuchConn)
  std::uint64_t send_not_open = 0;         // sends to closing / non-WebSocket connections
  std::uint64_t send_dropped = 0;          // frames dropped by the output bound
  std::uint64_t backpressure_events = 0;   // on_backpressure notifications
  std::uint64_t protocol_errors = 0;       // WebSocket protocol/limit violations by peers
  std::uint64_t tls_failures = 0;          // TLS handshakes or records that failed
  std::uint64_t pings_sent = 0;            // keep-alive pings sent
  std::uint64_t timeouts = 0;              // connections ended by a timeout (idle, pong, close)
  std::uint64_t handler_exceptions = 0;    // exceptions thrown by application callbacks
};

}  // namespace agentmesh::net
