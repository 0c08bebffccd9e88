// A small blocking HTTP/1.1 client for the registry integration tests.
//
// HttpConnection keeps one TCP connection to 127.0.0.1:<port> open (keep-alive) and sends one
// request at a time; responses are read by Content-Length. Raw() sends arbitrary bytes (for
// malformed-request tests). Errors (refused, reset, timeout) give status 0.
//
// Thread-safety: one connection per thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace agentmesh::testing {

struct HttpResult {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;

  std::optional<std::string> Header(const std::string& name) const;
  // The body parsed as JSON (discarded value when it is not JSON).
  nlohmann::json Json() const;
};

class HttpConnection {
 public:
  explicit HttpConnection(std::uint16_t port);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  HttpResult Request(const std::string& method, const std::string& target,
                     const std::string& body = {},
                     const std::vector<std::pair<std::string, std::string>>& headers = {});
  // Writes `bytes` as they are and reads one response.
  HttpResult Raw(const std::string& bytes);

 private:
  bool Connect();
  HttpResult ReadResponse();

  std::uint16_t port_;
  int fd_ = -1;
  std::string buffer_;
};

// One request on a fresh connection.
HttpResult HttpRequest(std::uint16_t port, const std::string& method, const std::string& target,
                       const std::string& body = {});

// Percent-encodes a query-string value.
std::string UrlEncode(const std::string& value);

}  // namespace agentmesh::testing
