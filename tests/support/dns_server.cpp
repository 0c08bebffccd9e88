#include "dns_server.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

namespace agentmesh::testing {
namespace {

std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// True once a DNS query to 127.0.0.1:port gets an answer (any answer), within about 2 s.
bool Answers(int port, const std::string& zone) {
  std::string query = {'\x12', '\x34', '\x01', '\x00', '\x00', '\x01',
                       '\x00', '\x00', '\x00', '\x00', '\x00', '\x00'};
  std::string name = "probe." + zone;
  std::size_t start = 0;
  while (start < name.size()) {
    std::size_t dot = name.find('.', start);
    if (dot == std::string::npos) dot = name.size();
    query += static_cast<char>(dot - start);
    query += name.substr(start, dot - start);
    start = dot + 1;
  }
  query += std::string("\x00\x00\x10\x00\x01", 5);  // root, TXT, IN
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  bool ok = false;
  for (int i = 0; i < 20 && !ok; ++i) {
    ::sendto(fd, query.data(), query.size(), 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, 100) > 0) {
      char buf[512];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      ok = n >= 2 && buf[0] == '\x12' && buf[1] == '\x34';
    }
  }
  ::close(fd);
  return ok;
}

}  // namespace

int FreeUdpPort() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

bool DnsServer::Installed() { return ::access(kBinary, X_OK) == 0; }

std::string DnsServer::Log() const { return log_.empty() ? std::string() : ReadAll(log_); }

bool DnsServer::Launch(int port, int attempt) {
  log_ = dir_.path() / ("dnsmasq-" + std::to_string(attempt) + ".log");
  std::vector<std::string> argv = {kBinary,
                                   "--no-daemon",
                                   "--conf-file=/dev/null",
                                   "--pid-file",
                                   "--no-resolv",
                                   "--no-hosts",
                                   "--port=" + std::to_string(port),
                                   "--listen-address=127.0.0.1",
                                   "--bind-interfaces"};
  for (const auto& zone : zones_) argv.push_back("--local=/" + zone + "/");
  for (const auto& r : records_) argv.push_back("--txt-record=" + r.name + "," + r.value);
  if (::geteuid() == 0) argv.insert(argv.end(), {"--user=nobody", "--group=nogroup"});
  if (!process_.Start(argv, log_)) return false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    const std::string text = ReadAll(log_);
    if (text.find("started, version") != std::string::npos) {
      if (!Answers(port, zones_.empty() ? std::string("example.org") : zones_.front())) break;
      port_ = port;
      return true;
    }
    if (text.find("FAILED") != std::string::npos ||
        text.find("failed to create listening socket") != std::string::npos) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  process_.Kill();
  return false;
}

bool DnsServer::Start(std::vector<std::string> zones, std::vector<TxtRecord> records) {
  zones_ = std::move(zones);
  records_ = std::move(records);
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (Launch(FreeUdpPort(), attempt)) return true;
  }
  return false;
}

bool DnsServer::Restart(std::vector<TxtRecord> records) {
  const int port = port_;
  Stop();
  records_ = std::move(records);
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (Launch(port, 10 + attempt)) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return false;
}

void DnsServer::Stop() {
  if (process_.running()) process_.Kill();
}

}  // namespace agentmesh::testing
