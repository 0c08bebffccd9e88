// The wire never carries plaintext: both daemons reach the relay through a recording TCP proxy on
// loopback (our own packet capture, which needs no capture privileges), every WebSocket frame of
// the recording is decoded (client frames unmasked), and a marker sent in payloads must not be in
// any of them, while the frames that carried those messages are.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <mutex>
#include <thread>

#include "harness.hpp"

#ifdef AMESH_REGISTRY_BIN

using namespace agentmesh::testing;

namespace {

// Forwards every connection accepted on a loopback port to `target_port` and records the bytes of
// each direction. Owns one thread; the destructor stops it and closes every socket.
class RecordingProxy {
 public:
  struct Connection {
    std::string to_server;  // bytes the client sent
    std::string to_client;  // bytes the server sent
  };

  explicit RecordingProxy(std::uint16_t target_port) : target_port_(target_port) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(listen_fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(listen_fd_, 16) == 0);
    socklen_t len = sizeof addr;
    REQUIRE(::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    REQUIRE(::pipe2(wake_, O_CLOEXEC) == 0);
    thread_ = std::thread([this] { Run(); });
  }

  ~RecordingProxy() {
    stop_ = true;
    (void)!::write(wake_[1], "x", 1);
    thread_.join();
    for (auto& p : pairs_) {
      ::close(p.client);
      ::close(p.server);
    }
    ::close(listen_fd_);
    ::close(wake_[0]);
    ::close(wake_[1]);
  }

  std::uint16_t port() const { return port_; }

  std::vector<Connection> Recorded() {
    std::lock_guard lock(mutex_);
    return recorded_;
  }

 private:
  struct Pair {
    int client = -1;
    int server = -1;
    std::size_t index = 0;
    bool closed = false;
  };

  void Run() {
    while (!stop_) {
      std::vector<pollfd> fds = {{listen_fd_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
      for (const auto& p : pairs_) {
        if (p.closed) continue;
        fds.push_back({p.client, POLLIN, 0});
        fds.push_back({p.server, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), 1000) <= 0) continue;
      std::size_t at = 2;
      for (auto& p : pairs_) {
        if (p.closed) continue;
        const bool client_ready = fds[at].revents != 0;
        const bool server_ready = fds[at + 1].revents != 0;
        at += 2;
        if (client_ready && !Pump(p, p.client, p.server, true)) Close(p);
        if (!p.closed && server_ready && !Pump(p, p.server, p.client, false)) Close(p);
      }
      // After the pairs: fds holds entries only for the pairs that existed when poll ran.
      if (fds[0].revents & POLLIN) Accept();
    }
  }

  void Accept() {
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(target_port_);
    if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      ::close(client);
      ::close(server);
      return;
    }
    std::lock_guard lock(mutex_);
    recorded_.emplace_back();
    pairs_.push_back({client, server, recorded_.size() - 1, false});
  }

  // Moves what is readable on `from` to `to`, recording it. False at EOF or on an error.
  bool Pump(const Pair& p, int from, int to, bool client_to_server) {
    char buf[65536];
    const ssize_t n = ::read(from, buf, sizeof buf);
    if (n <= 0) return false;
    {
      std::lock_guard lock(mutex_);
      auto& rec = recorded_[p.index];
      (client_to_server ? rec.to_server : rec.to_client).append(buf, static_cast<std::size_t>(n));
    }
    std::size_t off = 0;
    while (off < static_cast<std::size_t>(n)) {
      const ssize_t w = ::send(to, buf + off, static_cast<std::size_t>(n) - off, MSG_NOSIGNAL);
      if (w <= 0) return false;
      off += static_cast<std::size_t>(w);
    }
    return true;
  }

  static void Close(Pair& p) {
    ::shutdown(p.client, SHUT_RDWR);
    ::shutdown(p.server, SHUT_RDWR);
    p.closed = true;
  }

  std::uint16_t target_port_;
  std::uint16_t port_ = 0;
  int listen_fd_ = -1;
  int wake_[2] = {-1, -1};
  std::atomic<bool> stop_{false};
  std::vector<Pair> pairs_;  // proxy thread only
  std::mutex mutex_;
  std::vector<Connection> recorded_;
  std::thread thread_;
};

// The payloads of the RFC 6455 frames in `stream` after the HTTP upgrade, unmasked. Stops at a
// truncated frame (a connection cut mid-frame).
std::vector<std::string> WebSocketPayloads(const std::string& stream) {
  std::vector<std::string> out;
  std::size_t at = stream.find("\r\n\r\n");
  if (at == std::string::npos) return out;
  at += 4;
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(stream[i]); };
  while (at + 2 <= stream.size()) {
    const bool masked = (byte(at + 1) & 0x80) != 0;
    std::uint64_t length = byte(at + 1) & 0x7f;
    std::size_t header = 2;
    if (length == 126) {
      if (at + 4 > stream.size()) break;
      length = (std::uint64_t{byte(at + 2)} << 8) | byte(at + 3);
      header = 4;
    } else if (length == 127) {
      if (at + 10 > stream.size()) break;
      length = 0;
      for (int i = 0; i < 8; ++i) length = (length << 8) | byte(at + 2 + i);
      header = 10;
    }
    unsigned char mask[4] = {0, 0, 0, 0};
    if (masked) {
      if (at + header + 4 > stream.size()) break;
      for (int i = 0; i < 4; ++i) mask[i] = byte(at + header + i);
      header += 4;
    }
    if (at + header + length > stream.size()) break;
    std::string payload = stream.substr(at + header, length);
    for (std::size_t i = 0; i < payload.size(); ++i) payload[i] ^= static_cast<char>(mask[i % 4]);
    out.push_back(std::move(payload));
    at += header + length;
  }
  return out;
}

}  // namespace

TEST_CASE("daemon: a loopback capture of both relay connections carries no payload plaintext",
          "[daemon]") {
  TempDir dir;
  ServerProcess relay;
  REQUIRE(relay.Start(
      {AMESH_RELAY_BIN, "--listen", "127.0.0.1:0", "--store", (dir.path() / "relay.db").string()},
      dir.path() / "relay.log"));
  ServerProcess registry;
  std::filesystem::create_directories(dir.path() / "registry");
  REQUIRE(registry.Start({AMESH_REGISTRY_BIN, "--listen", "127.0.0.1:0", "--state-dir",
                          (dir.path() / "registry").string()},
                         dir.path() / "registry.log"));
  RecordingProxy proxy(relay.port());
  const std::string registry_url = "http://127.0.0.1:" + std::to_string(registry.port());
  const std::string relay_url = "ws://127.0.0.1:" + std::to_string(proxy.port()) + "/v1/connect";

  DaemonProcess alice(dir.path() / "alice", registry_url, relay_url);
  DaemonProcess bob(dir.path() / "bob", registry_url, relay_url);
  for (auto* d : {&alice, &bob}) {
    d->Start();
    REQUIRE(d->Init(d->home().filename().string())["created"] == true);
    REQUIRE(d->rpc.Call("register", {{"capabilities", json::array({"travel"})}}).is_object());
    REQUIRE(d->WaitRelay());
  }
  const std::string bob_amid = bob.rpc.Call("whoami")["amid"];
  json knock = alice.rpc.Call("knock", {{"amid", bob_amid}, {"intent", "travel"}});
  INFO(knock.dump() << "\n" << alice.log() << "\n" << bob.log());
  REQUIRE(knock["state"] == "active");

  const std::string marker = "MARKER-4b9d2e-ON-THE-WIRE";
  constexpr int kMessages = 5;
  for (int i = 0; i < kMessages; ++i) {
    json sent = alice.rpc.Call(
        "send", {{"to", knock["session_id"]}, {"payload", {{"secret", marker}, {"n", i}}}});
    REQUIRE(sent.contains("sequence"));
  }
  int received = 0;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (received < kMessages && std::chrono::steady_clock::now() < deadline) {
    json got = bob.rpc.Call("recv", {{"timeout_ms", 1000}, {"limit", 100}});
    for (const auto& m : got["messages"]) {
      CHECK(m["payload"]["secret"] == marker);  // the plaintext arrived, decrypted at the end
      ++received;
    }
  }
  REQUIRE(received == kMessages);

  auto recorded = proxy.Recorded();
  REQUIRE(recorded.size() >= 2);  // one relay connection per daemon at least
  std::size_t frames = 0;
  std::size_t frames_naming_bob = 0;
  for (const auto& connection : recorded) {
    for (const auto* stream : {&connection.to_server, &connection.to_client}) {
      CHECK(stream->find(marker) == std::string::npos);  // raw bytes
      for (const auto& payload : WebSocketPayloads(*stream)) {
        ++frames;
        CHECK(payload.find(marker) == std::string::npos);  // decoded frames
        if (payload.find(bob_amid) != std::string::npos) ++frames_naming_bob;
      }
    }
  }
  // The capture is real: it decoded the CONNECT handshakes, the KNOCK and the sends addressed to
  // bob, and the receive frames delivered to him.
  CHECK(frames >= 2 + 1 + kMessages);
  CHECK(frames_naming_bob >= 1 + kMessages);
}

#endif  // AMESH_REGISTRY_BIN
