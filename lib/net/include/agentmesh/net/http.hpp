// HTTP/1.1 message handling, I/O-free, on top of http-parser (nodejs/http-parser 2.9):
//
//   HttpRequestParser   server side: requests with header-size and body-size limits, keep-alive,
//                       pipelining (one request at a time) and the WebSocket upgrade hand-off.
//   HttpResponseParser  client side: the response to a WebSocket upgrade request.
//   SerializeResponse / SerializeUpgradeRequest / WebSocketAcceptKey / ValidateUpgradeRequest:
//                       the byte-level pieces of RFC 7230 and RFC 6455 §4.
//
// Thread-safety: one parser per connection, used from one thread; free functions are pure.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentmesh/core/error.hpp"
#include "agentmesh/net/types.hpp"

struct http_parser;

namespace agentmesh::net {

struct HttpLimits {
  // Request line + all header lines (names and values) in bytes. Exceeding it → 431.
  std::size_t max_header_bytes = 16 * 1024;
  // Body bytes (after de-chunking). Exceeding it → 413.
  std::size_t max_body_bytes = 1024 * 1024;
};

class HttpRequestParser {
 public:
  explicit HttpRequestParser(HttpLimits limits);
  ~HttpRequestParser();
  HttpRequestParser(const HttpRequestParser&) = delete;
  HttpRequestParser& operator=(const HttpRequestParser&) = delete;

  enum class Status {
    kNeedMore,  // everything consumed, no complete request yet
    kRequest,   // a complete request is in request(); bytes after it were not consumed
    kUpgrade,   // a complete request with Upgrade semantics; bytes after it belong to the new
                // protocol and the parser must not be fed again
    kError,     // malformed or over a limit: answer error_status() and close the connection
  };
  struct Outcome {
    Status status = Status::kNeedMore;
    std::size_t consumed = 0;  // bytes of the input that were consumed
  };

  // Parses from `data`. After kRequest, handle request() and then call Feed again with the
  // unconsumed rest (possibly empty) to continue with the next pipelined request.
  Outcome Feed(std::string_view data);

  // The request completed by the last kRequest/kUpgrade outcome (mutable so it can be moved).
  HttpRequest& request() noexcept { return request_; }
  // For kError: 400 (malformed), 413 (body too large), 431 (headers too large), 501 (unsupported
  // transfer coding), and a short description.
  int error_status() const noexcept { return error_status_; }
  const std::string& error() const noexcept { return error_; }

 private:
  friend struct HttpParserCallbacks;
  int Fail(int status, std::string_view message) noexcept;

  HttpLimits limits_;
  std::unique_ptr<http_parser> parser_;
  HttpRequest request_;
  std::size_t header_bytes_ = 0;
  bool last_was_value_ = false;
  bool complete_ = false;
  int error_status_ = 0;
  std::string error_;
};

// Parses one HTTP/1.1 response head (the reply to a WebSocket upgrade). The message completes
// right after the head: a 101 hands the rest of the stream to the new protocol, and the body of any
// other status is not read (the caller reports the status and closes).
class HttpResponseParser {
 public:
  explicit HttpResponseParser(std::size_t max_header_bytes = 16 * 1024);
  ~HttpResponseParser();
  HttpResponseParser(const HttpResponseParser&) = delete;
  HttpResponseParser& operator=(const HttpResponseParser&) = delete;

  enum class Status { kNeedMore, kComplete, kError };
  struct Outcome {
    Status status = Status::kNeedMore;
    std::size_t consumed = 0;
  };
  Outcome Feed(std::string_view data);

  int status_code() const noexcept { return status_code_; }
  const std::vector<HttpHeader>& headers() const noexcept { return headers_; }
  std::optional<std::string_view> Header(std::string_view name) const noexcept;
  const std::string& error() const noexcept { return error_; }

 private:
  friend struct HttpParserCallbacks;
  int Fail(std::string_view message) noexcept;

  std::size_t max_header_bytes_;
  std::unique_ptr<http_parser> parser_;
  int status_code_ = 0;
  std::vector<HttpHeader> headers_;
  std::size_t header_bytes_ = 0;
  bool last_was_value_ = false;
  bool complete_ = false;
  bool failed_ = false;
  std::string error_;
};

// Appends "HTTP/1.1 <status> <reason>\r\n" + headers + Content-Type (unless empty) +
// Content-Length + "Connection: keep-alive|close" + "\r\n" + body to `out`.
void SerializeResponse(const HttpResponse& response, bool keep_alive, std::string& out);

// base64(SHA-1(client_key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11")), RFC 6455 §4.2.2.
std::string WebSocketAcceptKey(std::string_view client_key);

// Checks a request against RFC 6455 §4.2.1: GET, HTTP/1.1 or later, "Upgrade: websocket",
// "Connection: upgrade" token, Sec-WebSocket-Version 13, and a Sec-WebSocket-Key that is base64 of
// 16 bytes. On success returns the key. On failure returns kInvalidArgument; the caller answers
// 400 (with "Sec-WebSocket-Version: 13" when the version was the problem).
Result<std::string> ValidateUpgradeRequest(const HttpRequest& request);

// The 101 response for a validated key.
void SerializeUpgradeResponse(std::string_view client_key, std::string& out);

// The client's upgrade request: "GET <target> HTTP/1.1" with Host, Upgrade, Connection,
// Sec-WebSocket-Key, Sec-WebSocket-Version and any extra headers.
void SerializeUpgradeRequest(std::string_view host_header, std::string_view target,
                             std::string_view key, const std::vector<HttpHeader>& extra,
                             std::string& out);

}  // namespace agentmesh::net
