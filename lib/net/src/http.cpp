#include "agentmesh/net/http.hpp"

#include <http_parser.h>
#include <openssl/evp.h>

#include "agentmesh/core/encoding.hpp"

namespace agentmesh::net {

namespace {
constexpr std::size_t kMaxHeaderCount = 100;
constexpr std::string_view kWebSocketGuid = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

bool HasCrLf(std::string_view s) noexcept {
  return s.find_first_of("\r\n") != std::string_view::npos;
}

std::string_view Trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}
}  // namespace

// http-parser is C: these trampolines must not throw. Allocation failures become parse errors.
struct HttpParserCallbacks {
  static HttpRequestParser& Req(http_parser* p) {
    return *static_cast<HttpRequestParser*>(p->data);
  }
  static HttpResponseParser& Resp(http_parser* p) {
    return *static_cast<HttpResponseParser*>(p->data);
  }

  static int ReqBegin(http_parser* p) noexcept {
    auto& s = Req(p);
    s.request_.Clear();
    s.header_bytes_ = 0;
    s.last_was_value_ = false;
    return 0;
  }
  static int ReqUrl(http_parser* p, const char* at, std::size_t len) noexcept {
    auto& s = Req(p);
    s.header_bytes_ += len;
    if (s.header_bytes_ > s.limits_.max_header_bytes) return s.Fail(431, "request head too large");
    try {
      s.request_.target.append(at, len);
    } catch (...) {
      return s.Fail(500, "out of memory");
    }
    return 0;
  }
  static int ReqField(http_parser* p, const char* at, std::size_t len) noexcept {
    auto& s = Req(p);
    s.header_bytes_ += len + 4;  // ": " and CRLF
    if (s.header_bytes_ > s.limits_.max_header_bytes) return s.Fail(431, "request head too large");
    try {
      auto& headers = s.request_.headers;
      if (s.last_was_value_ || headers.empty()) {
        if (headers.size() >= kMaxHeaderCount) return s.Fail(431, "too many header fields");
        headers.emplace_back();
      }
      headers.back().name.append(at, len);
    } catch (...) {
      return s.Fail(500, "out of memory");
    }
    s.last_was_value_ = false;
    return 0;
  }
  static int ReqValue(http_parser* p, const char* at, std::size_t len) noexcept {
    auto& s = Req(p);
    s.header_bytes_ += len;
    if (s.header_bytes_ > s.limits_.max_header_bytes) return s.Fail(431, "request head too large");
    try {
      s.request_.headers.back().value.append(at, len);
    } catch (...) {
      return s.Fail(500, "out of memory");
    }
    s.last_was_value_ = true;
    return 0;
  }
  static int ReqHeadersComplete(http_parser* p) noexcept {
    auto& s = Req(p);
    auto& r = s.request_;
    try {
      r.method = http_method_str(static_cast<http_method>(p->method));
      r.version_major = p->http_major;
      r.version_minor = p->http_minor;
      r.keep_alive = http_should_keep_alive(p) != 0;
      const std::size_t q = r.target.find('?');
      r.path = r.target.substr(0, q);
      r.query = q == std::string::npos ? std::string() : r.target.substr(q + 1);
    } catch (...) {
      return s.Fail(500, "out of memory");
    }
    if ((p->flags & F_CONTENTLENGTH) != 0 && p->content_length > s.limits_.max_body_bytes) {
      return s.Fail(413, "request body too large");
    }
    return 0;
  }
  static int ReqBody(http_parser* p, const char* at, std::size_t len) noexcept {
    auto& s = Req(p);
    if (s.request_.body.size() + len > s.limits_.max_body_bytes) {
      return s.Fail(413, "request body too large");
    }
    try {
      s.request_.body.append(at, len);
    } catch (...) {
      return s.Fail(500, "out of memory");
    }
    return 0;
  }
  static int ReqComplete(http_parser* p) noexcept {
    Req(p).complete_ = true;
    http_parser_pause(p, 1);  // hand one request at a time to the caller
    return 0;
  }

  static int RespField(http_parser* p, const char* at, std::size_t len) noexcept {
    auto& s = Resp(p);
    s.header_bytes_ += len + 4;
    if (s.header_bytes_ > s.max_header_bytes_) return s.Fail("response head too large");
    try {
      if (s.last_was_value_ || s.headers_.empty()) {
        if (s.headers_.size() >= kMaxHeaderCount) return s.Fail("too many header fields");
        s.headers_.emplace_back();
      }
      s.headers_.back().name.append(at, len);
    } catch (...) {
      return s.Fail("out of memory");
    }
    s.last_was_value_ = false;
    return 0;
  }
  static int RespValue(http_parser* p, const char* at, std::size_t len) noexcept {
    auto& s = Resp(p);
    s.header_bytes_ += len;
    if (s.header_bytes_ > s.max_header_bytes_) return s.Fail("response head too large");
    try {
      s.headers_.back().value.append(at, len);
    } catch (...) {
      return s.Fail("out of memory");
    }
    s.last_was_value_ = true;
    return 0;
  }
  static int RespStatus(http_parser* p, const char*, std::size_t len) noexcept {
    auto& s = Resp(p);
    s.header_bytes_ += len;
    if (s.header_bytes_ > s.max_header_bytes_) return s.Fail("response head too large");
    return 0;
  }
  static int RespHeadersComplete(http_parser* p) noexcept {
    auto& s = Resp(p);
    s.status_code_ = static_cast<int>(p->status_code);
    // Anything but 101 ends the exchange: do not read a body (1 = skip body).
    return s.status_code_ == 101 ? 0 : 1;
  }
  static int RespComplete(http_parser* p) noexcept {
    Resp(p).complete_ = true;
    http_parser_pause(p, 1);
    return 0;
  }
};

namespace {
const http_parser_settings& RequestSettings() {
  static const http_parser_settings settings = [] {
    http_parser_settings s;
    http_parser_settings_init(&s);
    s.on_message_begin = &HttpParserCallbacks::ReqBegin;
    s.on_url = &HttpParserCallbacks::ReqUrl;
    s.on_header_field = &HttpParserCallbacks::ReqField;
    s.on_header_value = &HttpParserCallbacks::ReqValue;
    s.on_headers_complete = &HttpParserCallbacks::ReqHeadersComplete;
    s.on_body = &HttpParserCallbacks::ReqBody;
    s.on_message_complete = &HttpParserCallbacks::ReqComplete;
    return s;
  }();
  return settings;
}

const http_parser_settings& ResponseSettings() {
  static const http_parser_settings settings = [] {
    http_parser_settings s;
    http_parser_settings_init(&s);
    s.on_status = &HttpParserCallbacks::RespStatus;
    s.on_header_field = &HttpParserCallbacks::RespField;
    s.on_header_value = &HttpParserCallbacks::RespValue;
    s.on_headers_complete = &HttpParserCallbacks::RespHeadersComplete;
    s.on_message_complete = &HttpParserCallbacks::RespComplete;
    return s;
  }();
  return settings;
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// HttpRequestParser

HttpRequestParser::HttpRequestParser(HttpLimits limits)
    : limits_(limits), parser_(std::make_unique<http_parser>()) {
  http_parser_init(parser_.get(), HTTP_REQUEST);
  parser_->data = this;
}

HttpRequestParser::~HttpRequestParser() = default;

int HttpRequestParser::Fail(int status, std::string_view message) noexcept {
  if (error_status_ == 0) {
    error_status_ = status;
    try {
      error_ = message;
    } catch (...) {
      error_.clear();
    }
  }
  return -1;
}

HttpRequestParser::Outcome HttpRequestParser::Feed(std::string_view data) {
  if (error_status_ != 0) return {Status::kError, 0};
  complete_ = false;
  const std::size_t n =
      http_parser_execute(parser_.get(), &RequestSettings(), data.data(), data.size());
  const auto err = HTTP_PARSER_ERRNO(parser_.get());
  if (complete_ && (err == HPE_OK || err == HPE_PAUSED)) {
    if (err == HPE_PAUSED) http_parser_pause(parser_.get(), 0);
    if (parser_->upgrade) return {Status::kUpgrade, n};
    return {Status::kRequest, n};
  }
  if (err != HPE_OK) {
    if (error_status_ == 0) {
      error_status_ = err == HPE_HEADER_OVERFLOW             ? 431
                      : err == HPE_INVALID_TRANSFER_ENCODING ? 501
                                                             : 400;
      error_ = http_errno_description(err);
    }
    return {Status::kError, n};
  }
  return {Status::kNeedMore, n};
}

// ---------------------------------------------------------------------------------------------
// HttpResponseParser

HttpResponseParser::HttpResponseParser(std::size_t max_header_bytes)
    : max_header_bytes_(max_header_bytes), parser_(std::make_unique<http_parser>()) {
  http_parser_init(parser_.get(), HTTP_RESPONSE);
  parser_->data = this;
}

HttpResponseParser::~HttpResponseParser() = default;

int HttpResponseParser::Fail(std::string_view message) noexcept {
  if (error_.empty()) {
    try {
      error_ = message;
    } catch (...) {
      error_ = {};
    }
  }
  failed_ = true;
  return -1;
}

std::optional<std::string_view> HttpResponseParser::Header(std::string_view name) const noexcept {
  for (const auto& h : headers_) {
    if (EqualsIgnoreCase(h.name, name)) return std::string_view(h.value);
  }
  return std::nullopt;
}

HttpResponseParser::Outcome HttpResponseParser::Feed(std::string_view data) {
  if (complete_) return {Status::kComplete, 0};
  if (failed_) return {Status::kError, 0};
  const std::size_t n =
      http_parser_execute(parser_.get(), &ResponseSettings(), data.data(), data.size());
  const auto err = HTTP_PARSER_ERRNO(parser_.get());
  if (complete_ && (err == HPE_OK || err == HPE_PAUSED)) return {Status::kComplete, n};
  if (err != HPE_OK) {
    failed_ = true;
    if (error_.empty()) error_ = http_errno_description(err);
    return {Status::kError, n};
  }
  return {Status::kNeedMore, n};
}

// ---------------------------------------------------------------------------------------------
// Serialisation and the WebSocket handshake

void SerializeResponse(const HttpResponse& response, bool keep_alive, std::string& out) {
  out += "HTTP/1.1 ";
  out += std::to_string(response.status);
  out += ' ';
  out += HttpReasonPhrase(response.status);
  out += "\r\n";
  bool has_content_type = false;
  for (const auto& h : response.headers) {
    // Framing headers are ours; CR/LF would allow response splitting.
    if (EqualsIgnoreCase(h.name, "content-length") || EqualsIgnoreCase(h.name, "connection") ||
        EqualsIgnoreCase(h.name, "transfer-encoding") || HasCrLf(h.name) || HasCrLf(h.value)) {
      continue;
    }
    if (EqualsIgnoreCase(h.name, "content-type")) has_content_type = true;
    out += h.name;
    out += ": ";
    out += h.value;
    out += "\r\n";
  }
  if (!has_content_type && !response.content_type.empty() && !HasCrLf(response.content_type)) {
    out += "Content-Type: ";
    out += response.content_type;
    out += "\r\n";
  }
  out += "Content-Length: ";
  out += std::to_string(response.body.size());
  out += keep_alive ? "\r\nConnection: keep-alive\r\n\r\n" : "\r\nConnection: close\r\n\r\n";
  out += response.body;
}

std::string WebSocketAcceptKey(std::string_view client_key) {
  std::string input;
  input.reserve(client_key.size() + kWebSocketGuid.size());
  input.append(client_key);
  input.append(kWebSocketGuid);
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_Digest(input.data(), input.size(), digest, &digest_len, EVP_sha1(), nullptr) != 1) {
    return {};
  }
  return Base64Encode(ByteView(digest, digest_len));
}

Result<std::string> ValidateUpgradeRequest(const HttpRequest& request) {
  if (request.method != "GET") {
    return Fail(Code::kInvalidArgument, "WebSocket upgrade must use GET", "method");
  }
  if (request.version_major < 1 || (request.version_major == 1 && request.version_minor < 1)) {
    return Fail(Code::kInvalidArgument, "WebSocket upgrade needs HTTP/1.1", "version");
  }
  const auto upgrade = request.Header("upgrade");
  if (!upgrade || !HeaderHasToken(*upgrade, "websocket")) {
    return Fail(Code::kInvalidArgument, "missing 'Upgrade: websocket'", "upgrade");
  }
  const auto connection = request.Header("connection");
  if (!connection || !HeaderHasToken(*connection, "upgrade")) {
    return Fail(Code::kInvalidArgument, "missing 'Connection: Upgrade'", "connection");
  }
  const auto version = request.Header("sec-websocket-version");
  if (!version || Trim(*version) != "13") {
    return Fail(Code::kInvalidArgument, "unsupported Sec-WebSocket-Version (need 13)",
                "sec-websocket-version");
  }
  const auto key = request.Header("sec-websocket-key");
  if (!key) return Fail(Code::kInvalidArgument, "missing Sec-WebSocket-Key", "sec-websocket-key");
  const std::string_view trimmed = Trim(*key);
  const auto decoded = Base64Decode(trimmed);
  if (!decoded || decoded->size() != 16) {
    return Fail(Code::kInvalidArgument, "Sec-WebSocket-Key must be base64 of 16 bytes",
                "sec-websocket-key");
  }
  return std::string(trimmed);
}

void SerializeUpgradeResponse(std::string_view client_key, std::string& out) {
  out +=
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: ";
  out += WebSocketAcceptKey(client_key);
  out += "\r\n\r\n";
}

void SerializeUpgradeRequest(std::string_view host_header, std::string_view target,
                             std::string_view key, const std::vector<HttpHeader>& extra,
                             std::string& out) {
  out += "GET ";
  out += target.empty() ? std::string_view("/") : target;
  out += " HTTP/1.1\r\nHost: ";
  out += host_header;
  out += "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ";
  out += key;
  out += "\r\nSec-WebSocket-Version: 13\r\n";
  for (const auto& h : extra) {
    if (HasCrLf(h.name) || HasCrLf(h.value)) continue;
    out += h.name;
    out += ": ";
    out += h.value;
    out += "\r\n";
  }
  out += "\r\n";
}

}  // namespace agentmesh::net
