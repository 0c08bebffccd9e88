// Loop tests: real uv_loop_t, real sockets on 127.0.0.1 (port 0), WsServer/HttpServer against
// WsClient and a raw TCP client. Every test ends with REQUIRE(uv_loop_close(&loop) == 0), so a
// leaked handle fails it.
#include <catch2/catch.hpp>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <uv.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "agentmesh/core/json_scan.hpp"
#include "agentmesh/net/client.hpp"
#include "agentmesh/net/server.hpp"

using namespace agentmesh;
using namespace agentmesh::net;

namespace {

// ---------------------------------------------------------------------------------------------
// Loop helpers

// Runs the loop until `done()` or `timeout_ms` passes. A 2 ms repeating timer keeps the loop
// turning so the predicate is re-checked. Returns done().
bool RunUntil(uv_loop_t* loop, const std::function<bool()>& done, std::uint64_t timeout_ms = 5000) {
  uv_timer_t tick;
  uv_timer_init(loop, &tick);
  uv_timer_start(
      &tick, [](uv_timer_t*) {}, 2, 2);
  const std::uint64_t deadline = uv_now(loop) + timeout_ms;
  while (!done() && uv_now(loop) < deadline) uv_run(loop, UV_RUN_ONCE);
  uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
  uv_run(loop, UV_RUN_NOWAIT);
  return done();
}

// Runs the loop until no handle is left (bounded by a watchdog that does not keep it alive).
bool RunToEnd(uv_loop_t* loop, std::uint64_t timeout_ms = 10000) {
  struct Watch {
    uv_timer_t timer;
    bool fired = false;
  } watch;
  uv_timer_init(loop, &watch.timer);
  watch.timer.data = &watch;
  uv_timer_start(
      &watch.timer,
      [](uv_timer_t* t) {
        static_cast<Watch*>(t->data)->fired = true;
        uv_stop(t->loop);
      },
      timeout_ms, 0);
  uv_unref(reinterpret_cast<uv_handle_t*>(&watch.timer));
  uv_run(loop, UV_RUN_DEFAULT);
  uv_close(reinterpret_cast<uv_handle_t*>(&watch.timer), nullptr);
  uv_run(loop, UV_RUN_DEFAULT);
  return !watch.fired;
}

// A raw TCP client: writes arbitrary bytes, records everything it receives and whether the
// server closed the connection.
class RawClient {
 public:
  explicit RawClient(uv_loop_t* loop) : loop_(loop) {
    uv_tcp_init(loop, &tcp_);
    tcp_.data = this;
    open_ = true;
  }
  ~RawClient() { Close(); }

  void Connect(std::uint16_t port) {
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", port, &addr);
    connect_.data = this;
    uv_tcp_connect(&connect_, &tcp_, reinterpret_cast<const sockaddr*>(&addr),
                   [](uv_connect_t* req, int status) {
                     auto* self = static_cast<RawClient*>(req->data);
                     self->connected_ = status == 0;
                     if (status == 0 && self->read_on_connect_) self->StartReading();
                   });
  }
  bool WaitConnected() {
    return RunUntil(loop_, [this] { return connected_; });
  }
  void StartReading() {
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&tcp_),
        [](uv_handle_t*, std::size_t, uv_buf_t* buf) {
          static char storage[64 * 1024];
          *buf = uv_buf_init(storage, sizeof(storage));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
          auto* self = static_cast<RawClient*>(s->data);
          if (n > 0) self->received_.append(buf->base, static_cast<std::size_t>(n));
          if (n < 0) {
            self->eof_ = true;
            uv_read_stop(s);
          }
        });
  }
  void Write(std::string data) {
    struct Req {
      uv_write_t req;
      std::string data;
    };
    auto* r = new Req{{}, std::move(data)};
    r->req.data = r;
    const uv_buf_t buf = uv_buf_init(r->data.data(), static_cast<unsigned>(r->data.size()));
    uv_write(&r->req, reinterpret_cast<uv_stream_t*>(&tcp_), &buf, 1,
             [](uv_write_t* req, int) { delete static_cast<Req*>(req->data); });
  }
  void Close() {
    if (!open_) return;
    uv_close(reinterpret_cast<uv_handle_t*>(&tcp_),
             [](uv_handle_t* h) { static_cast<RawClient*>(h->data)->open_ = false; });
    RunUntil(loop_, [this] { return !open_; });
  }

  bool read_on_connect_ = true;
  const std::string& received() const { return received_; }
  bool eof() const { return eof_; }

 private:
  uv_loop_t* loop_;
  uv_tcp_t tcp_{};
  uv_connect_t connect_{};
  bool open_ = false;
  bool connected_ = false;
  bool eof_ = false;
  std::string received_;
};

std::string UpgradeRequest(std::string_view extra_or_replacement = {}) {
  std::string r =
      "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
      "Connection: Upgrade\r\n";
  if (extra_or_replacement.empty()) {
    r += "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
  } else {
    r += extra_or_replacement;
  }
  return r + "\r\n";
}

// A masked client frame built by hand (fragments, arbitrary opcodes).
std::string ClientFrame(bool fin, std::uint8_t opcode, std::string_view payload) {
  std::string out;
  out.push_back(static_cast<char>((fin ? 0x80 : 0) | opcode));
  if (payload.size() < 126) {
    out.push_back(static_cast<char>(0x80 | payload.size()));
  } else if (payload.size() < 65536) {
    out.push_back(static_cast<char>(0x80 | 126));
    out.push_back(static_cast<char>(payload.size() >> 8));
    out.push_back(static_cast<char>(payload.size() & 0xFF));
  } else {
    out.push_back(static_cast<char>(0x80 | 127));
    for (int shift = 56; shift >= 0; shift -= 8) {
      out.push_back(
          static_cast<char>((static_cast<std::uint64_t>(payload.size()) >> shift) & 0xFF));
    }
  }
  const char key[4] = {0x0A, 0x1B, 0x2C, 0x3D};
  out.append(key, 4);
  for (std::size_t i = 0; i < payload.size(); ++i) out.push_back(payload[i] ^ key[i % 4]);
  return out;
}

// A WsClient with recorded callbacks.
struct ClientProbe {
  bool opened = false;
  bool closed = false;
  std::uint16_t close_code = 0;
  std::string close_reason;
  std::vector<std::string> texts;
  std::vector<Bytes> binaries;
  std::vector<Error> errors;

  ClientHandlers Handlers() {
    ClientHandlers h;
    h.on_open = [this] { opened = true; };
    h.on_text = [this](std::string_view t) { texts.emplace_back(t); };
    h.on_binary = [this](ByteView b) { binaries.emplace_back(b.begin(), b.end()); };
    h.on_close = [this](std::uint16_t code, std::string_view reason) {
      closed = true;
      close_code = code;
      close_reason = reason;
    };
    h.on_error = [this](const Error& e) { errors.push_back(e); };
    return h;
  }
};

// An echo server with recorded callbacks.
struct ServerProbe {
  std::vector<ConnId> opened;
  std::vector<std::pair<ConnId, std::uint16_t>> closed;
  std::vector<Error> errors;
  std::vector<Bytes> binaries;
  std::size_t texts = 0;
  std::size_t backpressure = 0;
  WsServer* server = nullptr;

  ServerHandlers EchoHandlers() {
    ServerHandlers h;
    h.on_open = [this](ConnId id, const HttpRequest&, const PeerAddress&) { opened.push_back(id); };
    h.on_text = [this](ConnId id, std::string_view text) {
      ++texts;
      server->SendText(id, text);
    };
    h.on_binary = [this](ConnId id, ByteView data) {
      binaries.emplace_back(data.begin(), data.end());
      server->SendBinary(id, data);
    };
    h.on_close = [this](ConnId id, std::uint16_t code, std::string_view) {
      closed.emplace_back(id, code);
    };
    h.on_error = [this](ConnId, const Error& e) { errors.push_back(e); };
    h.on_backpressure = [this](ConnId, std::size_t) { ++backpressure; };
    h.on_http = [](const HttpRequest& req) {
      if (req.path == "/health") return HttpResponse::Json(200, R"({"status":"ok"})");
      if (req.method == "POST")
        return HttpResponse::Text(200, "got " + std::to_string(req.body.size()));
      return HttpResponse::Text(404, "not found\n");
    };
    return h;
  }
};

std::string Url(std::uint16_t port, bool secure = false) {
  return std::string(secure ? "wss" : "ws") + "://127.0.0.1:" + std::to_string(port) + "/ws";
}

// ---------------------------------------------------------------------------------------------
// Self-signed certificate generated at run time (EC P-256, SAN localhost + 127.0.0.1).

struct TempDir {
  std::filesystem::path path;
  TempDir() {
    std::string templ = (std::filesystem::temp_directory_path() / "amesh-net-XXXXXX").string();
    REQUIRE(mkdtemp(templ.data()) != nullptr);
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

struct CertFiles {
  std::string cert;
  std::string key;
};

CertFiles MakeSelfSignedCert(const std::filesystem::path& dir, const std::string& name) {
  EVP_PKEY* pkey = EVP_EC_gen("P-256");
  REQUIRE(pkey != nullptr);
  X509* x509 = X509_new();
  REQUIRE(x509 != nullptr);
  X509_set_version(x509, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x509), 1);
  X509_gmtime_adj(X509_getm_notBefore(x509), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x509), 24 * 3600);
  X509_set_pubkey(x509, pkey);
  X509_NAME* subject = X509_get_subject_name(x509);
  X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_ASC,
                             reinterpret_cast<const unsigned char*>(name.c_str()), -1, -1, 0);
  X509_set_issuer_name(x509, subject);
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, x509, x509, nullptr, nullptr, 0);
  for (auto [nid, value] : {std::pair{NID_subject_alt_name, "DNS:localhost,IP:127.0.0.1"},
                            std::pair{NID_basic_constraints, "critical,CA:TRUE"}}) {
    X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &ctx, nid, value);
    REQUIRE(ext != nullptr);
    X509_add_ext(x509, ext, -1);
    X509_EXTENSION_free(ext);
  }
  REQUIRE(X509_sign(x509, pkey, EVP_sha256()) > 0);
  CertFiles files{(dir / (name + ".crt")).string(), (dir / (name + ".key")).string()};
  FILE* f = std::fopen(files.cert.c_str(), "w");
  REQUIRE(f != nullptr);
  PEM_write_X509(f, x509);
  std::fclose(f);
  f = std::fopen(files.key.c_str(), "w");
  REQUIRE(f != nullptr);
  PEM_write_PrivateKey(f, pkey, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  X509_free(x509);
  EVP_PKEY_free(pkey);
  return files;
}

}  // namespace

// =============================================================================================

TEST_CASE("loop: WebSocket echo between WsServer and WsClient on port 0", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    WsServer server(&loop, {}, sp.EchoHandlers());
    sp.server = &server;
    REQUIRE(server.Listen());
    REQUIRE(server.port() != 0);

    ClientProbe cp;
    WsClient client(&loop, {}, cp.Handlers());
    REQUIRE(client.Connect(Url(server.port())));
    CHECK(client.state() == WsClient::State::kConnecting);
    REQUIRE(RunUntil(&loop, [&] { return cp.opened; }));
    CHECK(client.state() == WsClient::State::kOpen);
    REQUIRE(sp.opened.size() == 1);
    CHECK(server.Peer(sp.opened[0])->ip == "127.0.0.1");

    CHECK(client.SendText("hello") == SendStatus::kQueued);
    CHECK(client.SendText("") == SendStatus::kQueued);
    CHECK(client.SendText("h\xC3\xA9llo") == SendStatus::kQueued);
    REQUIRE(RunUntil(&loop, [&] { return cp.texts.size() == 3; }));
    CHECK(cp.texts[0] == "hello");
    CHECK(cp.texts[1].empty());
    CHECK(cp.texts[2] == "h\xC3\xA9llo");

    CHECK(client.Close(1000, "done"));
    REQUIRE(RunUntil(&loop, [&] { return cp.closed && sp.closed.size() == 1; }));
    CHECK(cp.close_code == 1000);
    CHECK(sp.closed[0].second == 1000);
    CHECK(cp.errors.empty());
    CHECK(sp.errors.empty());
    CHECK(client.state() == WsClient::State::kIdle);
    CHECK(server.connection_count() == 0);

    // Sends to a gone id are counted no-ops.
    CHECK(server.SendText(sp.opened[0], "late") == SendStatus::kNoSuchConn);
    CHECK(server.SendText(12345, "never") == SendStatus::kNoSuchConn);
    CHECK(server.stats().send_no_conn == 2);
    CHECK(server.stats().frames_in == 3);
    CHECK(server.stats().frames_out == 3);

    server.Stop();
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: 1000 messages in one loop turn are coalesced into few writes", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    WsServer server(&loop, {}, sp.EchoHandlers());
    sp.server = &server;
    REQUIRE(server.Listen());
    ClientProbe cp;
    WsClient client(&loop, {}, cp.Handlers());
    REQUIRE(client.Connect(Url(server.port())));
    REQUIRE(RunUntil(&loop, [&] { return cp.opened; }));

    const auto client_writes_before = client.stats().write_calls;
    const auto server_writes_before = server.stats().write_calls;
    for (int i = 0; i < 1000; ++i) {
      REQUIRE(client.SendText("message number " + std::to_string(i)) == SendStatus::kQueued);
    }
    REQUIRE(RunUntil(&loop, [&] { return cp.texts.size() == 1000; }));
    for (int i = 0; i < 1000; ++i) REQUIRE(cp.texts[i] == "message number " + std::to_string(i));
    const auto client_writes = client.stats().write_calls - client_writes_before;
    const auto server_writes = server.stats().write_calls - server_writes_before;
    INFO("client writes " << client_writes << ", server writes " << server_writes);
    CHECK(client_writes == 1);  // everything queued in one turn → one uv_write
    CHECK(server_writes < 20);  // echoes of each read batch leave together
    CHECK(server.stats().frames_out == 1000);

    server.Stop();
    REQUIRE(RunUntil(&loop, [&] { return cp.closed; }));
    CHECK(cp.close_code == 1001);
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: fragmented and 64 KiB messages and oversized → 1009 + error callback", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    WsServer server(&loop, {}, sp.EchoHandlers());  // default max_message_bytes = 64 KiB
    sp.server = &server;
    REQUIRE(server.Listen());

    SECTION("64 KiB exactly passes through client and server") {
      ClientProbe cp;
      WsClient client(&loop, {}, cp.Handlers());
      REQUIRE(client.Connect(Url(server.port())));
      REQUIRE(RunUntil(&loop, [&] { return cp.opened; }));
      const std::string big(64 * 1024, 'z');
      REQUIRE(client.SendText(big) == SendStatus::kQueued);
      REQUIRE(RunUntil(&loop, [&] { return cp.texts.size() == 1; }));
      CHECK(cp.texts[0] == big);
      client.Close();
      REQUIRE(RunUntil(&loop, [&] { return cp.closed; }));
    }

    SECTION("one byte more → on_error(kLimitExceeded) and close 1009") {
      ClientProbe cp;
      WsClient client(&loop, {}, cp.Handlers());
      REQUIRE(client.Connect(Url(server.port())));
      REQUIRE(RunUntil(&loop, [&] { return cp.opened; }));
      REQUIRE(client.SendText(std::string(64 * 1024 + 1, 'z')) == SendStatus::kQueued);
      REQUIRE(RunUntil(&loop, [&] { return cp.closed && sp.closed.size() == 1; }));
      CHECK(cp.close_code == 1009);
      REQUIRE(sp.errors.size() == 1);
      CHECK(sp.errors[0].code == Code::kLimitExceeded);
      CHECK(sp.closed[0].second == 1009);
      CHECK(cp.texts.empty());
      CHECK(server.stats().protocol_errors == 1);
    }

    SECTION("fragments are reassembled; fragments over the limit → 1009") {
      RawClient raw(&loop);
      raw.Connect(server.port());
      REQUIRE(raw.WaitConnected());
      raw.Write(UpgradeRequest());
      // "frag" + ping + "ment" + "ed", then a 40 KiB + 40 KiB fragmented message (too big).
      std::string frames = ClientFrame(false, 0x1, "frag") + ClientFrame(true, 0x9, "p") +
                           ClientFrame(false, 0x0, "ment") + ClientFrame(true, 0x0, "ed");
      raw.Write(frames);
      REQUIRE(
          RunUntil(&loop, [&] { return raw.received().find("fragmented") != std::string::npos; }));
      CHECK(raw.received().find("\x8A\x01p") != std::string::npos);  // the pong
      raw.Write(ClientFrame(false, 0x2, std::string(40 * 1024, 'a')) +
                ClientFrame(true, 0x0, std::string(40 * 1024, 'b')));
      REQUIRE(RunUntil(&loop, [&] { return raw.eof(); }));
      const auto close_frame = raw.received().rfind('\x88');  // close frame: 88 len 03 F1 ...
      REQUIRE(close_frame != std::string::npos);
      CHECK(raw.received().substr(close_frame + 2, 2) == "\x03\xF1");  // status 1009
      REQUIRE(sp.errors.size() == 1);
      CHECK(sp.errors[0].code == Code::kLimitExceeded);
      raw.Close();
      REQUIRE(RunUntil(&loop, [&] { return sp.closed.size() == 1; }));
      CHECK(sp.closed[0].second == 1009);
    }

    server.Stop();
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: binary frames are reported separately and can be refused", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    ServerHandlers handlers = sp.EchoHandlers();
    const bool accept_binary = GENERATE(true, false);
    if (!accept_binary) handlers.on_binary = nullptr;
    WsServer server(&loop, {}, handlers);
    sp.server = &server;
    REQUIRE(server.Listen());
    ClientProbe cp;
    WsClient client(&loop, {}, cp.Handlers());
    REQUIRE(client.Connect(Url(server.port())));
    REQUIRE(RunUntil(&loop, [&] { return cp.opened; }));
    const Bytes payload = {0x00, 0xFF, 0x10, 0x80};
    REQUIRE(client.SendBinary(payload) == SendStatus::kQueued);
    if (accept_binary) {
      REQUIRE(RunUntil(&loop, [&] { return cp.binaries.size() == 1; }));
      CHECK(sp.binaries.size() == 1);
      CHECK(sp.binaries[0] == payload);
      CHECK(cp.binaries[0] == payload);
      CHECK(sp.texts == 0);
    } else {
      REQUIRE(RunUntil(&loop, [&] { return cp.closed; }));
      CHECK(cp.close_code == 1003);
    }
    server.Stop();
    REQUIRE(RunUntil(&loop, [&] { return cp.closed; }));
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: malformed upgrades get 400 and the connection closes", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    WsServer server(&loop, {}, sp.EchoHandlers());
    sp.server = &server;
    REQUIRE(server.Listen());

    struct Case {
      const char* name;
      std::string request;
      int status;
      const char* must_contain;
    };
    const std::vector<Case> cases = {
        {"missing key", UpgradeRequest("Sec-WebSocket-Version: 13\r\n"), 400, "Sec-WebSocket-Key"},
        {"bad version",
         UpgradeRequest(
             "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n"),
         400, "Sec-WebSocket-Version: 13"},
        {"garbage bytes",
         std::string("\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03garbage\r\n\r\n"), 400,
         "Connection: close"},
        {"not GET",
         "POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
         "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
         400, "GET"},
    };
    for (const auto& c : cases) {
      INFO(c.name);
      RawClient raw(&loop);
      raw.Connect(server.port());
      REQUIRE(raw.WaitConnected());
      raw.Write(c.request);
      REQUIRE(RunUntil(&loop, [&] { return raw.eof(); }));
      CHECK(raw.received().rfind("HTTP/1.1 " + std::to_string(c.status), 0) == 0);
      CHECK(raw.received().find(c.must_contain) != std::string::npos);
      raw.Close();
    }
    CHECK(sp.opened.empty());
    CHECK(server.stats().http_errors == cases.size());
    REQUIRE(RunUntil(&loop, [&] { return server.connection_count() == 0; }));
    server.Stop();
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: plain HTTP on the WebSocket port with keep-alive and a body limit", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    ServerOptions options;
    options.http_limits.max_body_bytes = 100;
    WsServer server(&loop, options, sp.EchoHandlers());
    sp.server = &server;
    REQUIRE(server.Listen());

    SECTION("two requests on one connection, then a pipelined pair") {
      RawClient raw(&loop);
      raw.Connect(server.port());
      REQUIRE(raw.WaitConnected());
      raw.Write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
      REQUIRE(RunUntil(
          &loop, [&] { return raw.received().find(R"({"status":"ok"})") != std::string::npos; }));
      CHECK(raw.received().rfind("HTTP/1.1 200 OK\r\n", 0) == 0);
      CHECK(raw.received().find("Connection: keep-alive") != std::string::npos);
      raw.Write("GET /missing HTTP/1.1\r\nHost: x\r\n\r\n");
      REQUIRE(RunUntil(&loop,
                       [&] { return raw.received().find("HTTP/1.1 404") != std::string::npos; }));
      CHECK_FALSE(raw.eof());
      raw.Write(
          "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
          "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
      REQUIRE(RunUntil(&loop, [&] { return raw.eof(); }));
      const auto got3 = raw.received().find("got 3");
      const auto last_ok = raw.received().rfind(R"({"status":"ok"})");
      CHECK(got3 != std::string::npos);
      CHECK(last_ok > got3);  // answered in order
      CHECK(server.stats().http_requests == 4);
      CHECK(server.stats().connections_accepted == 1);
      raw.Close();
    }

    SECTION("a body over the limit → 413 and close") {
      RawClient raw(&loop);
      raw.Connect(server.port());
      REQUIRE(raw.WaitConnected());
      raw.Write("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" +
                std::string(101, 'x'));
      REQUIRE(RunUntil(&loop, [&] { return raw.eof(); }));
      CHECK(raw.received().rfind("HTTP/1.1 413", 0) == 0);
      CHECK(raw.received().find("Connection: close") != std::string::npos);
      raw.Close();
    }

    REQUIRE(RunUntil(&loop, [&] { return server.connection_count() == 0; }));
    server.Stop();
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

namespace {
// Splits a raw response into status code, Content-Type and body; checks Content-Length.
struct RawResponse {
  int status = 0;
  std::string content_type;
  std::string body;
};
RawResponse ParseRawResponse(const std::string& raw) {
  RawResponse r;
  const auto head_end = raw.find("\r\n\r\n");
  REQUIRE(head_end != std::string::npos);
  REQUIRE(raw.rfind("HTTP/1.1 ", 0) == 0);
  r.status = std::stoi(raw.substr(9, 3));
  const std::string head = raw.substr(0, head_end + 2);
  auto header = [&](const std::string& name) -> std::string {
    const auto at = head.find("\r\n" + name + ": ");
    if (at == std::string::npos) return {};
    const auto from = at + 4 + name.size();
    return head.substr(from, head.find("\r\n", from) - from);
  };
  r.content_type = header("Content-Type");
  r.body = raw.substr(head_end + 4);
  CHECK(header("Content-Length") == std::to_string(r.body.size()));
  return r;
}
}  // namespace

TEST_CASE("loop: every HTTP error the transport answers itself is a JSON error object", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerOptions options;
    options.http_limits.max_body_bytes = 100;
    options.http_limits.max_header_bytes = 1024;
    options.websocket_path = "/ws";
    ServerHandlers handlers;
    handlers.on_http = [](const HttpRequest& req) -> HttpResponse {
      if (req.path == "/throw") throw std::runtime_error("boom");
      return HttpResponse::Text(200, "ok");
    };
    handlers.on_upgrade = [](const HttpRequest& req, HttpResponse&) {
      return req.Header("x-allow").has_value();  // refused → the default reject
    };
    handlers.on_log = [](std::string_view) {};
    WsServer ws(&loop, options, std::move(handlers));
    REQUIRE(ws.Listen());
    // No handlers at all: every plain request is a 404 made by the transport.
    HttpServer bare(&loop, options, {});
    REQUIRE(bare.Listen());

    struct Case {
      const char* name;
      bool bare;
      std::string request;
      int status;
      const char* error_contains;
    };
    const std::string upgrade_key =
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    const std::vector<Case> cases = {
        {"garbage", false, std::string("\x16\x03\x01\x00\xA5garbage\r\n\r\n"), 400, ""},
        {"declared body over the limit", false,
         "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n" + std::string(101, 'x'), 413,
         "body too large"},
        {"body over twice the limit", false,
         "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 250\r\n\r\n" + std::string(250, 'x'), 413,
         "body too large"},
        {"chunked body over the limit", false,
         "POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n" +
             std::string(64, 'a') + "\r\n40\r\n" + std::string(64, 'b') + "\r\n0\r\n\r\n",
         413, "body too large"},
        {"head over the limit", false,
         "GET /x HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(2000, 'h') + "\r\n\r\n", 431,
         "head too large"},
        {"too many header fields", false,
         [] {
           std::string r = "GET /x HTTP/1.1\r\n";
           for (int i = 0; i < 101; ++i) r += "A:" + std::to_string(i % 10) + "\r\n";
           return r + "\r\n";
         }(),
         431, "header fields"},
        {"upgrade on another path", false,
         "GET /other HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
             upgrade_key + "\r\n",
         404, "not found"},
        {"upgrade without a key", false, UpgradeRequest("Sec-WebSocket-Version: 13\r\n"), 400,
         "Sec-WebSocket-Key"},
        {"upgrade refused by on_upgrade", false, UpgradeRequest(), 403, "forbidden"},
        {"handler throws", false, "GET /throw HTTP/1.1\r\nHost: x\r\n\r\n", 500, "internal"},
        {"no handler", true, "GET /x HTTP/1.1\r\nHost: x\r\n\r\n", 404, "not found"},
        {"upgrade on an HTTP-only server", true, UpgradeRequest(), 400, "WebSocket"},
    };
    for (const auto& c : cases) {
      INFO(c.name);
      RawClient raw(&loop);
      raw.Connect(c.bare ? bare.port() : ws.port());
      REQUIRE(raw.WaitConnected());
      raw.Write(c.request);
      if (c.status == 404 && c.bare) {
        REQUIRE(RunUntil(&loop, [&] { return raw.received().find("\"}") != std::string::npos; }));
      } else {
        REQUIRE(RunUntil(&loop, [&] { return raw.eof(); }));
      }
      const RawResponse r = ParseRawResponse(raw.received());
      CHECK(r.status == c.status);
      CHECK(r.content_type == "application/json");
      auto obj = ScanObject(r.body);
      REQUIRE(obj);
      REQUIRE(obj->members().size() == 1);
      auto error = obj->GetString("error");
      REQUIRE(error);
      REQUIRE(error->has_value());
      CHECK_FALSE((*error)->empty());
      CHECK((*error)->find(c.error_contains) != std::string::npos);
      raw.Close();
    }
    REQUIRE(RunUntil(&loop,
                     [&] { return ws.connection_count() == 0 && bare.connection_count() == 0; }));
    ws.Stop();
    bare.Stop();
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: HttpServer answers asynchronously and in order", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    std::vector<std::pair<ConnId, std::string>> pending;
    HttpServer::Handlers handlers;
    handlers.on_http_async = [&](ConnId id, const HttpRequest& req) {
      pending.emplace_back(id, req.path);
    };
    HttpServer server(&loop, {}, handlers);
    REQUIRE(server.Listen());
    RawClient raw(&loop);
    raw.Connect(server.port());
    REQUIRE(raw.WaitConnected());
    raw.Write("GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /second HTTP/1.1\r\nHost: x\r\n\r\n");
    REQUIRE(RunUntil(&loop, [&] { return pending.size() == 1; }));
    RunUntil(
        &loop, [] { return false; }, 30);
    REQUIRE(pending.size() == 1);  // the second waits for the first answer
    CHECK(pending[0].second == "/first");
    CHECK(server.Respond(pending[0].first, HttpResponse::Text(200, "one")));
    CHECK(pending.size() == 1);  // the next request is handed over later, never from Respond
    CHECK(server.Respond(pending[0].first, HttpResponse::Text(200, "dup")).error().code ==
          Code::kConflict);
    REQUIRE(RunUntil(&loop, [&] { return pending.size() == 2; }));
    CHECK(pending[1].second == "/second");
    CHECK(pending[1].first == pending[0].first);
    CHECK(server.Respond(pending[1].first, HttpResponse::Text(200, "two")));
    CHECK(server.Respond(pending[1].first, HttpResponse::Text(200, "dup")).error().code ==
          Code::kConflict);
    CHECK(server.Respond(999, HttpResponse::Text(200, "x")).error().code == Code::kNotFound);
    REQUIRE(RunUntil(&loop, [&] { return raw.received().find("two") != std::string::npos; }));
    CHECK(raw.received().find("one") < raw.received().find("two"));

    // Upgrades are not served by an HttpServer.
    RawClient ws(&loop);
    ws.Connect(server.port());
    REQUIRE(ws.WaitConnected());
    ws.Write(UpgradeRequest());
    REQUIRE(RunUntil(&loop, [&] { return ws.eof(); }));
    CHECK(ws.received().rfind("HTTP/1.1 400", 0) == 0);
    ws.Close();
    raw.Close();
    REQUIRE(RunUntil(&loop, [&] { return server.connection_count() == 0; }));
    server.Stop();
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: a reader that stops reading triggers backpressure", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    ServerOptions options;
    options.max_output_bytes = 256 * 1024;
    options.close_timeout_ms = 200;
    ServerHandlers handlers = sp.EchoHandlers();
    std::size_t queued_at_event = 0;
    WsServer* server_ptr = nullptr;
    handlers.on_backpressure = [&](ConnId id, std::size_t queued) {
      if (sp.backpressure++ == 0) {
        queued_at_event = queued;
        server_ptr->Close(id, 1008, "slow reader");  // the relay's policy: drop the slow reader
      }
    };
    WsServer server(&loop, options, handlers);
    server_ptr = &server;
    sp.server = &server;
    REQUIRE(server.Listen());

    RawClient raw(&loop);
    raw.read_on_connect_ = false;  // never reads: the kernel buffers fill, then ours
    raw.Connect(server.port());
    REQUIRE(raw.WaitConnected());
    raw.Write(UpgradeRequest());
    REQUIRE(RunUntil(&loop, [&] { return sp.opened.size() == 1; }));
    const ConnId id = sp.opened[0];

    // Push 64 KiB every millisecond until the server reports backpressure.
    struct Pump {
      uv_timer_t timer;
      WsServer* server;
      ConnId id;
      std::string chunk = std::string(60 * 1024, 'q');
    } pump{{}, &server, id};
    uv_timer_init(&loop, &pump.timer);
    pump.timer.data = &pump;
    uv_timer_start(
        &pump.timer,
        [](uv_timer_t* t) {
          auto* p = static_cast<Pump*>(t->data);
          p->server->SendText(p->id, p->chunk);
        },
        1, 1);
    REQUIRE(RunUntil(
        &loop, [&] { return sp.backpressure > 0; }, 10000));
    uv_close(reinterpret_cast<uv_handle_t*>(&pump.timer), nullptr);
    CHECK(queued_at_event > 0);
    CHECK(queued_at_event <= options.max_output_bytes);
    CHECK(server.stats().send_dropped >= 1);
    // The close frame cannot reach a reader that does not read: the close timeout ends it.
    REQUIRE(RunUntil(&loop, [&] { return sp.closed.size() == 1; }));
    CHECK(sp.closed[0].second == 1008);
    CHECK(server.SendText(id, "gone") == SendStatus::kNoSuchConn);
    raw.Close();
    server.Stop();
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: Stop() closes every connection and the loop ends clean", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    WsServer server(&loop, {}, sp.EchoHandlers());
    sp.server = &server;
    REQUIRE(server.Listen());
    std::vector<std::unique_ptr<ClientProbe>> probes;
    std::vector<std::unique_ptr<WsClient>> clients;
    for (int i = 0; i < 5; ++i) {
      probes.push_back(std::make_unique<ClientProbe>());
      clients.push_back(
          std::make_unique<WsClient>(&loop, ClientOptions{}, probes.back()->Handlers()));
      REQUIRE(clients.back()->Connect(Url(server.port())));
    }
    RawClient idle_http(&loop);  // an idle keep-alive HTTP connection is closed too
    idle_http.Connect(server.port());
    REQUIRE(RunUntil(&loop, [&] {
      for (auto& p : probes) {
        if (!p->opened) return false;
      }
      return true;
    }));
    REQUIRE(server.connection_count() == 6);
    server.Stop();
    CHECK(server.stopping());
    REQUIRE(RunUntil(&loop, [&] {
      for (auto& p : probes) {
        if (!p->closed) return false;
      }
      return idle_http.eof();
    }));
    idle_http.Close();  // the server half-closed it and waits for our FIN
    REQUIRE(RunUntil(&loop, [&] { return server.connection_count() == 0; }));
    for (auto& p : probes) CHECK(p->close_code == 1001);
    CHECK(sp.closed.size() == 5);
    // New connections are refused once stopped.
    ClientProbe late;
    WsClient late_client(&loop, {}, late.Handlers());
    REQUIRE(late_client.Connect(Url(server.port())));
    REQUIRE(RunUntil(&loop, [&] { return late.closed; }));
    CHECK_FALSE(late.opened);
    CHECK(late.close_code == 1006);
    REQUIRE_FALSE(late.errors.empty());
    CHECK(late.errors[0].code == Code::kUnavailable);
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: on_accept can refuse connections", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    ServerHandlers handlers = sp.EchoHandlers();
    int seen = 0;
    handlers.on_accept = [&](const PeerAddress& peer) {
      CHECK(peer.ip == "127.0.0.1");
      return ++seen > 1;  // refuse the first connection only
    };
    WsServer server(&loop, {}, handlers);
    sp.server = &server;
    REQUIRE(server.Listen());
    ClientProbe refused;
    WsClient c1(&loop, {}, refused.Handlers());
    REQUIRE(c1.Connect(Url(server.port())));
    REQUIRE(RunUntil(&loop, [&] { return refused.closed; }));
    CHECK_FALSE(refused.opened);
    ClientProbe accepted;
    WsClient c2(&loop, {}, accepted.Handlers());
    REQUIRE(c2.Connect(Url(server.port())));
    REQUIRE(RunUntil(&loop, [&] { return accepted.opened; }));
    CHECK(server.stats().connections_refused == 1);
    server.Stop();
    REQUIRE(RunUntil(&loop, [&] { return accepted.closed; }));
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: server pings and a peer that never answers is dropped", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    ServerOptions options;
    options.ping_interval_ms = 40;
    options.pong_timeout_ms = 80;
    WsServer server(&loop, options, sp.EchoHandlers());
    sp.server = &server;
    REQUIRE(server.Listen());

    // A WsClient answers pings automatically and stays connected.
    ClientProbe cp;
    WsClient client(&loop, {}, cp.Handlers());
    REQUIRE(client.Connect(Url(server.port())));
    REQUIRE(RunUntil(&loop, [&] { return cp.opened; }));

    // A raw peer reads (so it sees the pings) but never answers.
    RawClient raw(&loop);
    raw.Connect(server.port());
    REQUIRE(raw.WaitConnected());
    raw.Write(UpgradeRequest());
    REQUIRE(RunUntil(
        &loop, [&] { return sp.closed.size() == 1; }, 3000));
    CHECK(sp.closed[0].second == 1006);
    CHECK(raw.received().find("\x89\x00", 0) != std::string::npos);  // it got a ping
    CHECK(server.stats().pings_sent >= 2);
    CHECK(server.stats().timeouts >= 1);
    CHECK_FALSE(cp.closed);
    raw.Close();
    server.Stop();
    REQUIRE(RunUntil(&loop, [&] { return cp.closed; }));
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: destroying server and client mid-connection leaks nothing", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    auto server = std::make_unique<WsServer>(&loop, ServerOptions{}, sp.EchoHandlers());
    sp.server = server.get();
    REQUIRE(server->Listen());
    ClientProbe cp;
    auto client = std::make_unique<WsClient>(&loop, ClientOptions{}, cp.Handlers());
    REQUIRE(client->Connect(Url(server->port())));
    REQUIRE(RunUntil(&loop, [&] { return cp.opened; }));
    client->SendText("in flight");
    client.reset();  // no callbacks after this
    server.reset();
    CHECK_FALSE(cp.closed);
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: callbacks may destroy their own server or client", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    std::unique_ptr<WsServer> server;
    ServerHandlers handlers;
    int texts = 0;
    handlers.on_text = [&](ConnId id, std::string_view text) {
      ++texts;
      if (text == "die") {
        server->SendText(id, "bye");  // queued, then dropped with the server
        server.reset();
      }
    };
    server = std::make_unique<WsServer>(&loop, ServerOptions{}, handlers);
    REQUIRE(server->Listen());
    const std::uint16_t port = server->port();

    ClientProbe cp;
    std::unique_ptr<WsClient> client;
    ClientHandlers ch = cp.Handlers();
    ch.on_close = [&](std::uint16_t code, std::string_view) {
      cp.closed = true;
      cp.close_code = code;
      client.reset();  // destroy the client from its own last callback
    };
    client = std::make_unique<WsClient>(&loop, ClientOptions{}, ch);
    REQUIRE(client->Connect(Url(port)));
    REQUIRE(RunUntil(&loop, [&] { return cp.opened; }));
    client->SendText("one");
    client->SendText("die");
    client->SendText("never handled");  // same read batch as "die"
    REQUIRE(RunUntil(&loop, [&] { return cp.closed; }));
    CHECK(texts == 2);
    CHECK(cp.close_code == 1006);
    CHECK(server == nullptr);
    CHECK(client == nullptr);
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: client errors for refused connections and bad URLs", "[loop]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    // Find a port with nothing listening: bind a server, read its port, stop it.
    std::uint16_t port = 0;
    {
      WsServer s(&loop, {}, {});
      REQUIRE(s.Listen());
      port = s.port();
      s.Stop();
    }
    REQUIRE(RunToEnd(&loop));
    ClientProbe cp;
    WsClient client(&loop, {}, cp.Handlers());
    CHECK(client.Connect("http://127.0.0.1/").error().code == Code::kInvalidArgument);
    REQUIRE(client.Connect(Url(port)));
    CHECK(client.Connect(Url(port)).error().code == Code::kConflict);
    REQUIRE(RunUntil(&loop, [&] { return cp.closed; }));
    CHECK(cp.close_code == 1006);
    REQUIRE(cp.errors.size() == 1);
    CHECK(cp.errors[0].code == Code::kUnavailable);
    CHECK(client.SendText("x") == SendStatus::kNotOpen);

    // Name resolution path (localhost → possibly ::1 then 127.0.0.1): still refused, but
    // every address is tried and exactly one error + one close are reported.
    ClientProbe cp2;
    WsClient client2(&loop, {}, cp2.Handlers());
    REQUIRE(client2.Connect("ws://localhost:" + std::to_string(port) + "/"));
    REQUIRE(RunUntil(&loop, [&] { return cp2.closed; }));
    CHECK(cp2.errors.size() == 1);
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

TEST_CASE("loop: wss echo with a run-time self-signed certificate", "[loop][tls]") {
  TempDir dir;
  const CertFiles files = MakeSelfSignedCert(dir.path, "localhost");
  auto server_tls = TlsContext::CreateServer(files.cert, files.key);
  REQUIRE(server_tls);
  CHECK(TlsContext::CreateServer(files.cert, files.cert).error().code == Code::kInvalidArgument);

  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    ServerOptions options;
    options.tls = *server_tls;
    WsServer server(&loop, options, sp.EchoHandlers());
    sp.server = &server;
    REQUIRE(server.Listen());

    SECTION("verifying against the certificate as CA: echo works (IP and DNS names)") {
      auto client_tls = TlsContext::CreateClient({.ca_file = files.cert});
      REQUIRE(client_tls);
      for (const char* name : {"", "localhost"}) {
        INFO("tls_server_name=" << name);
        ClientOptions copts;
        copts.tls = *client_tls;
        copts.tls_server_name = name;
        ClientProbe cp;
        WsClient client(&loop, copts, cp.Handlers());
        REQUIRE(client.Connect(Url(server.port(), true)));
        REQUIRE(RunUntil(&loop, [&] { return cp.opened || cp.closed; }));
        REQUIRE(cp.opened);
        for (int i = 0; i < 100; ++i) client.SendText("secret " + std::to_string(i));
        client.SendText(std::string(64 * 1024, 's'));
        REQUIRE(RunUntil(&loop, [&] { return cp.texts.size() == 101; }));
        CHECK(cp.texts[99] == "secret 99");
        CHECK(cp.texts[100].size() == 64 * 1024);
        client.Close();
        REQUIRE(RunUntil(&loop, [&] { return cp.closed; }));
        CHECK(cp.close_code == 1000);
        CHECK(cp.errors.empty());
      }
      CHECK(server.stats().tls_failures == 0);
    }

    SECTION("without the CA the client refuses the server") {
      auto client_tls = TlsContext::CreateClient({});  // system trust store only
      REQUIRE(client_tls);
      ClientOptions copts;
      copts.tls = *client_tls;
      ClientProbe cp;
      WsClient client(&loop, copts, cp.Handlers());
      REQUIRE(client.Connect(Url(server.port(), true)));
      REQUIRE(RunUntil(&loop, [&] { return cp.closed; }));
      CHECK_FALSE(cp.opened);
      REQUIRE_FALSE(cp.errors.empty());
      CHECK(cp.errors[0].code == Code::kAuthFailed);
      CHECK(cp.errors[0].message.find("certificate verify failed") != std::string::npos);
    }

    SECTION("a name not in the certificate is refused") {
      auto client_tls = TlsContext::CreateClient({.ca_file = files.cert});
      REQUIRE(client_tls);
      ClientOptions copts;
      copts.tls = *client_tls;
      copts.tls_server_name = "relay.example.org";
      ClientProbe cp;
      WsClient client(&loop, copts, cp.Handlers());
      REQUIRE(client.Connect(Url(server.port(), true)));
      REQUIRE(RunUntil(&loop, [&] { return cp.closed; }));
      CHECK_FALSE(cp.opened);
      REQUIRE_FALSE(cp.errors.empty());
      CHECK(cp.errors[0].code == Code::kAuthFailed);
    }

    SECTION("a plaintext client on the TLS port is dropped") {
      RawClient raw(&loop);
      raw.Connect(server.port());
      REQUIRE(raw.WaitConnected());
      raw.Write(UpgradeRequest());
      REQUIRE(RunUntil(&loop, [&] { return raw.eof(); }));
      CHECK(raw.received().find("101") == std::string::npos);
      raw.Close();
      CHECK(server.stats().tls_failures == 1);
    }

    REQUIRE(RunUntil(&loop, [&] { return server.connection_count() == 0; }));
    server.Stop();
  }
  REQUIRE(RunToEnd(&loop));
  REQUIRE(uv_loop_close(&loop) == 0);
}

// Not a correctness test: prints a loopback echo figure (client and server share one thread).
// Run with: net_tests "[.bench]"
TEST_CASE("bench: loopback echo throughput", "[.bench]") {
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  {
    ServerProbe sp;
    WsServer server(&loop, {}, sp.EchoHandlers());
    sp.server = &server;
    REQUIRE(server.Listen());
    constexpr int kClients = 50;
    constexpr int kWindow = 200;
    constexpr int kTotalPerClient = 20000;
    const std::string payload(256, 'm');
    struct Peer {
      std::unique_ptr<WsClient> client;
      int received = 0;
      int sent = 0;
      bool opened = false;
    };
    std::vector<Peer> peers(kClients);
    for (auto& p : peers) {
      ClientHandlers h;
      h.on_open = [&p] { p.opened = true; };
      h.on_text = [&p, &payload](std::string_view) {
        ++p.received;
        if (p.sent < kTotalPerClient) {
          p.client->SendText(payload);
          ++p.sent;
        }
      };
      p.client = std::make_unique<WsClient>(&loop, ClientOptions{}, h);
      REQUIRE(p.client->Connect(Url(server.port())));
    }
    REQUIRE(RunUntil(&loop, [&] {
      for (auto& p : peers) {
        if (!p.opened) return false;
      }
      return true;
    }));
    const auto start = std::chrono::steady_clock::now();
    for (auto& p : peers) {
      for (int i = 0; i < kWindow; ++i, ++p.sent) p.client->SendText(payload);
    }
    REQUIRE(RunUntil(
        &loop,
        [&] {
          for (auto& p : peers) {
            if (p.received < kTotalPerClient) return false;
          }
          return true;
        },
        120000));
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double total = double(kClients) * kTotalPerClient;
    std::printf(
        "loopback echo: %d clients, %.0f round trips of 256 B in %.2f s = %.0f msg/s "
        "(server frames in+out %.0f/s); server writes %llu, frames out %llu\n",
        kClients, total, secs, total / secs, 2 * total / secs,
        static_cast<unsigned long long>(server.stats().write_calls),
        static_cast<unsigned long long>(server.stats().frames_out));
    server.Stop();
  }
  REQUIRE(RunToEnd(&loop, 30000));
  REQUIRE(uv_loop_close(&loop) == 0);
}
