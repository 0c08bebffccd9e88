#include "http_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <strings.h>
#include <cctype>
#include <cstdio>

namespace agentmesh::testing {

std::optional<std::string> HttpResult::Header(const std::string& name) const {
  for (const auto& [k, v] : headers) {
    if (::strcasecmp(k.c_str(), name.c_str()) == 0) return v;
  }
  return std::nullopt;
}

nlohmann::json HttpResult::Json() const { return nlohmann::json::parse(body, nullptr, false); }

HttpConnection::HttpConnection(std::uint16_t port) : port_(port) {}

HttpConnection::~HttpConnection() {
  if (fd_ >= 0) ::close(fd_);
}

bool HttpConnection::Connect() {
  if (fd_ >= 0) return true;
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port_);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd_);
    fd_ = -1;
    return false;
  }
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  buffer_.clear();
  return true;
}

HttpResult HttpConnection::Request(
    const std::string& method, const std::string& target, const std::string& body,
    const std::vector<std::pair<std::string, std::string>>& headers) {
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  for (const auto& [k, v] : headers) request += k + ": " + v + "\r\n";
  if (!body.empty() || method == "POST") {
    request +=
        "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  request += "\r\n" + body;
  return Raw(request);
}

HttpResult HttpConnection::Raw(const std::string& bytes) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!Connect()) return {};
    std::size_t sent = 0;
    bool failed = false;
    while (sent < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
      if (n <= 0) {
        failed = true;
        break;
      }
      sent += static_cast<std::size_t>(n);
    }
    if (!failed) {
      HttpResult r = ReadResponse();
      if (r.status != 0 || attempt == 1) return r;
    }
    // The server closed an idle keep-alive connection: reconnect once.
    ::close(fd_);
    fd_ = -1;
  }
  return {};
}

HttpResult HttpConnection::ReadResponse() {
  HttpResult result;
  auto fill = [&]() -> bool {
    pollfd pfd{fd_, POLLIN, 0};
    if (::poll(&pfd, 1, 20000) <= 0) return false;
    char chunk[16384];
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n <= 0) return false;
    buffer_.append(chunk, static_cast<std::size_t>(n));
    return true;
  };
  std::size_t head_end;
  while ((head_end = buffer_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return {};
  }
  const std::string head = buffer_.substr(0, head_end);
  buffer_.erase(0, head_end + 4);
  std::size_t line_end = head.find("\r\n");
  const std::string status_line = head.substr(0, line_end);
  if (status_line.size() < 12) return {};
  result.status = std::atoi(status_line.c_str() + 9);
  std::size_t content_length = 0;
  bool close = false;
  while (line_end != std::string::npos) {
    const std::size_t start = line_end + 2;
    line_end = head.find("\r\n", start);
    const std::string line =
        head.substr(start, line_end == std::string::npos ? std::string::npos : line_end - start);
    const auto colon = line.find(':');
    if (colon == std::string::npos) continue;
    std::string name = line.substr(0, colon);
    std::string value = line.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.erase(0, 1);
    if (::strcasecmp(name.c_str(), "Content-Length") == 0) content_length = std::stoul(value);
    if (::strcasecmp(name.c_str(), "Connection") == 0 &&
        ::strcasecmp(value.c_str(), "close") == 0) {
      close = true;
    }
    result.headers.emplace_back(std::move(name), std::move(value));
  }
  while (buffer_.size() < content_length) {
    if (!fill()) return {};
  }
  result.body = buffer_.substr(0, content_length);
  buffer_.erase(0, content_length);
  if (close) {
    ::close(fd_);
    fd_ = -1;
  }
  return result;
}

HttpResult HttpRequest(std::uint16_t port, const std::string& method, const std::string& target,
                       const std::string& body) {
  HttpConnection c(port);
  return c.Request(method, target, body);
}

std::string UrlEncode(const std::string& value) {
  std::string out;
  for (unsigned char c : value) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", c);
      out += buf;
    }
  }
  return out;
}

}  // namespace agentmesh::testing
