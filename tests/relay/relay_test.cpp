// Integration tests: the real amesh-relay binary on loopback, driven by real WebSocket clients.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/json_scan.hpp"
#include "agentmesh/core/relay_frames.hpp"
#include "agentmesh/net/client.hpp"
#include "agentmesh/net/tls.hpp"
#include "loopback_http.hpp"
#include "process.hpp"
#include "ws_test_client.hpp"

using namespace agentmesh;
using namespace agentmesh::testing;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

UnixNanos Now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Ed25519KeyPair Identity(std::uint64_t seed) {
  DeterministicRng rng(seed);
  return Ed25519KeyPair::Generate(rng);
}

std::string AmidOf(const Ed25519KeyPair& id) { return Amid::FromPublicKey(id.public_key).str(); }

class RelayProcess {
 public:
  explicit RelayProcess(std::vector<std::string> extra = {}) : extra_(std::move(extra)) { Start(); }

  void Start() {
    std::vector<std::string> argv = {AMESH_RELAY_BIN,
                                     "--listen",
                                     "127.0.0.1:" + std::to_string(port_),
                                     "--store",
                                     (dir_.path() / "relay.db").string(),
                                     "--log-level",
                                     "debug"};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    REQUIRE(process_.Start(argv, dir_.path() / "relay.log"));
    auto line = process_.WaitForLine("listening on port", 10s);
    INFO(process_.StderrLog());
    REQUIRE(line.has_value());
    port_ = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(' ') + 1)));
  }
  void Kill9() { process_.Kill(); }
  int Terminate() { return process_.Signal(SIGTERM, true); }
  ChildProcess& process() { return process_; }
  std::string url(const char* scheme = "ws") const {
    return std::string(scheme) + "://127.0.0.1:" + std::to_string(port_) + "/v1/connect";
  }
  std::uint16_t port() const { return port_; }
  const std::filesystem::path& dir() const { return dir_.path(); }
  std::string log() const { return process_.StderrLog(); }

 private:
  TempDir dir_;
  ChildProcess process_;
  std::vector<std::string> extra_;
  std::uint16_t port_ = 0;
};

json Send(const std::string& to, const std::string& payload, const std::string& id = {},
          const std::string& type = "message") {
  json frame = {
      {"type", "send"}, {"to", to}, {"encrypted_payload", payload}, {"message_type", type}};
  if (!id.empty()) frame["id"] = id;
  return frame;
}

json ConnectFrame(const Ed25519KeyPair& id, const std::string& timestamp,
                  const std::string& signed_text, const std::string& protocol = "agentmesh/1") {
  const Signature sig =
      Sign(id.secret,
           ByteView(reinterpret_cast<const std::uint8_t*>(signed_text.data()), signed_text.size()));
  return {{"type", "connect"},      {"protocol", protocol},
          {"amid", AmidOf(id)},     {"public_key", FormatEd25519Key(id.public_key, false)},
          {"timestamp", timestamp}, {"signature", FormatSignature(sig)}};
}

}  // namespace

TEST_CASE("relay: CONNECT succeeds and /health, /metrics answer", "[relay]") {
  RelayProcess relay;
  WsTestClient a;
  auto connected = a.ConnectAs(relay.url(), Identity(1));
  INFO(relay.log());
  REQUIRE(connected);
  CHECK((*connected)["session_id"].is_string());
  CHECK((*connected)["pending_messages"] == 0);

  const std::string health = LoopbackHttpGet(relay.port(), "/health");
  CHECK(health.find("200 OK") != std::string::npos);
  CHECK(health.find(R"("agents_online":1)") != std::string::npos);
  const std::string metrics = LoopbackHttpGet(relay.port(), "/metrics");
  CHECK(metrics.find("amesh_relay_connects_total 1") != std::string::npos);
  CHECK(LoopbackHttpGet(relay.port(), "/nope").find("404") != std::string::npos);
}

TEST_CASE("relay: every CONNECT failure gets an error frame, then a close", "[relay]") {
  RelayProcess relay;
  const auto id = Identity(2);
  const auto other = Identity(3);
  const std::string ts = FormatRfc3339Seconds(Now());

  struct Case {
    const char* name;
    std::string frame;
    const char* code;
  };
  json wrong_amid = ConnectFrame(id, ts, ts);
  wrong_amid["amid"] = AmidOf(other);
  json wrong_key = ConnectFrame(other, ts, ts);
  wrong_key["amid"] = AmidOf(id);
  wrong_key["public_key"] = FormatEd25519Key(id.public_key, false);
  const std::string stale = FormatRfc3339Seconds(Now() - 400 * kNanosPerSecond);
  const std::string future = FormatRfc3339Seconds(Now() + 120 * kNanosPerSecond);
  const Case cases[] = {
      {"not JSON", "hello", "UNAUTHORIZED"},
      {"send before connect", Send(AmidOf(other), "x").dump(), "UNAUTHORIZED"},
      {"missing field", R"({"type":"connect","protocol":"agentmesh/1"})", "UNAUTHORIZED"},
      {"bad protocol", ConnectFrame(id, ts, ts, "agentmesh/9").dump(), "PROTOCOL_MISMATCH"},
      {"amid mismatch", wrong_amid.dump(), "INVALID_SIGNATURE"},
      {"signature by another key", wrong_key.dump(), "INVALID_SIGNATURE"},
      {"stale timestamp", ConnectFrame(id, stale, stale).dump(), "INVALID_SIGNATURE"},
      {"future timestamp", ConnectFrame(id, future, future).dump(), "INVALID_SIGNATURE"},
      {"signature over another string", ConnectFrame(id, ts, ts + "x").dump(), "INVALID_SIGNATURE"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    WsTestClient client;
    REQUIRE(client.Connect(relay.url()));
    client.Send(c.frame);
    auto error = client.RecvType("error");
    REQUIRE(error);
    CHECK((*error)["code"] == c.code);
    CHECK_FALSE((*error)["message"].get<std::string>().empty());
    CHECK(client.WaitClosed().has_value());
  }

  // A captured CONNECT cannot be replayed.
  const json good = ConnectFrame(id, ts, ts);
  WsTestClient first;
  REQUIRE(first.Connect(relay.url()));
  first.Send(good);
  REQUIRE(first.RecvType("connected"));
  WsTestClient replay;
  REQUIRE(replay.Connect(relay.url()));
  replay.Send(good);
  auto error = replay.RecvType("error");
  REQUIRE(error);
  CHECK((*error)["code"] == "INVALID_SIGNATURE");

  // The reference SDK's style: "…Z" timestamp with milliseconds, signed as sent.
  const auto sdk = Identity(4);
  const std::string z = FormatRfc3339Z(Now() / kNanosPerMilli * kNanosPerMilli);
  WsTestClient sdk_client;
  REQUIRE(sdk_client.Connect(relay.url()));
  sdk_client.Send(ConnectFrame(sdk, z, z, "agentmesh/0.2"));
  CHECK(sdk_client.RecvType("connected"));
}

TEST_CASE("relay: no CONNECT within the auth timeout closes the connection", "[relay]") {
  RelayProcess relay({"--auth-timeout", "1"});
  WsTestClient idle;
  REQUIRE(idle.Connect(relay.url()));
  auto error = idle.RecvType("error", 4s);
  REQUIRE(error);
  CHECK((*error)["code"] == "UNAUTHORIZED");
  CHECK(idle.WaitClosed().has_value());
}

TEST_CASE("relay: live routing with send_result, ack and receipt", "[relay]") {
  RelayProcess relay;
  const auto a_id = Identity(10);
  const auto b_id = Identity(11);
  WsTestClient a, b;
  REQUIRE(a.ConnectAs(relay.url(), a_id));
  REQUIRE(b.ConnectAs(relay.url(), b_id));

  a.Send(Send(AmidOf(b_id), "Y2lwaGVydGV4dA==", "c1", "knock"));
  auto result = a.RecvType("send_result");
  REQUIRE(result);
  CHECK((*result)["id"] == "c1");
  CHECK((*result)["status"] == "delivered");
  auto received = b.RecvType("receive");
  REQUIRE(received);
  CHECK((*received)["from"] == AmidOf(a_id));
  CHECK((*received)["encrypted_payload"] == "Y2lwaGVydGV4dA==");
  CHECK((*received)["message_type"] == "knock");
  CHECK((*received)["message_id"] == (*result)["message_id"]);

  b.Send(json{{"type", "ack"}, {"message_id", (*received)["message_id"]}});
  auto receipt = a.RecvType("receipt");
  REQUIRE(receipt);
  CHECK((*receipt)["id"] == "c1");
  CHECK((*receipt)["status"] == "acked");

  // Sender cannot spoof `from`; an extra "from" member is ignored.
  json spoof = Send(AmidOf(b_id), "eA==");
  spoof["from"] = AmidOf(b_id);
  a.Send(spoof);
  auto r2 = b.RecvType("receive");
  REQUIRE(r2);
  CHECK((*r2)["from"] == AmidOf(a_id));
}

// The relay writes receive frames with its own fast builder; they must stay byte-identical to the
// codec's AppendReceive (escaped payloads, ICE candidates, live and from the store).
TEST_CASE("relay: receive frames are byte-identical to AppendReceive", "[relay]") {
  RelayProcess relay;
  const auto a_id = Identity(12);
  const auto b_id = Identity(13);
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), a_id));

  uv_loop_t loop;
  uv_loop_init(&loop);
  std::vector<std::string> texts;
  bool open = false;
  net::ClientHandlers h;
  h.on_open = [&] { open = true; };
  h.on_text = [&](std::string_view text) { texts.emplace_back(text); };
  auto b = std::make_unique<net::WsClient>(&loop, net::ClientOptions{}, std::move(h));
  auto pump = [&](const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (!done() && std::chrono::steady_clock::now() < deadline) uv_run(&loop, UV_RUN_NOWAIT);
    return done();
  };

  // Queued first (b offline), then live: both paths must match.
  a.Send(Send(AmidOf(b_id), "q\\u00e9\\\"x", "c0"));
  REQUIRE(a.RecvType("send_result"));
  REQUIRE(b->Connect(relay.url()));
  REQUIRE(pump([&] { return open; }));
  b->SendText(relay::BuildConnectFrame(b_id, Now(), false));
  REQUIRE(pump([&] { return texts.size() >= 2; }));  // connected, then the queued message
  json ice = Send(AmidOf(b_id), "cGF5bG9hZA==\\n\\/", {}, "message");
  ice["ice_candidates"] = json::array({{{"candidate", "c"}, {"sdp_mid", "0"}}});
  a.Send(ice);
  REQUIRE(pump([&] { return texts.size() >= 3; }));

  for (std::size_t i = 1; i < 3; ++i) {
    INFO(texts[i]);
    const json frame = json::parse(texts[i]);
    const auto type = relay::ParseMessageType(frame["message_type"].get<std::string>());
    REQUIRE(type);
    std::string payload_token;
    AppendJsonString(payload_token, frame["encrypted_payload"].get<std::string>());
    const std::string ice_raw =
        frame.contains("ice_candidates") ? ice["ice_candidates"].dump() : "";
    std::string expected;
    relay::AppendReceive(expected, frame["from"].get<std::string>(), payload_token, *type,
                         frame["timestamp"].get<std::string>(),
                         frame["message_id"].get<std::string>(), ice_raw);
    CHECK(texts[i] == expected);
  }
  b.reset();
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
}

TEST_CASE("relay: queued messages survive kill -9 and are delivered in order after restart",
          "[relay]") {
  RelayProcess relay;
  const auto a_id = Identity(20);
  const auto b_id = Identity(21);
  {
    WsTestClient a;
    REQUIRE(a.ConnectAs(relay.url(), a_id));
    for (int i = 0; i < 5; ++i) {
      a.Send(Send(AmidOf(b_id), "bXNn" + std::to_string(i) + "==", "q" + std::to_string(i)));
      auto result = a.RecvType("send_result");
      REQUIRE(result);
      CHECK((*result)["status"] == "queued");
    }
  }
  relay.Kill9();
  relay.Start();
  WsTestClient b;
  auto connected = b.ConnectAs(relay.url(), b_id);
  REQUIRE(connected);
  CHECK((*connected)["pending_messages"] == 5);
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) {
    auto m = b.RecvType("receive");
    REQUIRE(m);
    CHECK((*m)["encrypted_payload"] == "bXNn" + std::to_string(i) + "==");
    CHECK((*m)["from"] == AmidOf(a_id));
    ids.push_back((*m)["message_id"]);
  }
  b.Send(json{{"type", "ack"}, {"message_ids", ids}});
  b.Pump(200ms);
  b.Close();
  WsTestClient b2;
  auto again = b2.ConnectAs(relay.url(), b_id);
  REQUIRE(again);
  CHECK((*again)["pending_messages"] == 0);
}

TEST_CASE("relay: unacknowledged messages are delivered again on the next connection", "[relay]") {
  RelayProcess relay;
  const auto a_id = Identity(30);
  const auto b_id = Identity(31);
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), a_id));
  std::string message_id;
  {
    WsTestClient b;
    REQUIRE(b.ConnectAs(relay.url(), b_id));
    a.Send(Send(AmidOf(b_id), "bGl2ZQ==", "live"));
    auto m = b.RecvType("receive");
    REQUIRE(m);
    message_id = (*m)["message_id"];
    b.Close();  // no ack
  }
  a.Pump(100ms);
  WsTestClient b;
  auto connected = b.ConnectAs(relay.url(), b_id);
  REQUIRE(connected);
  CHECK((*connected)["pending_messages"] == 1);
  auto m = b.RecvType("receive");
  REQUIRE(m);
  CHECK((*m)["message_id"] == message_id);
  CHECK((*m)["encrypted_payload"] == "bGl2ZQ==");

  // get_pending_messages lists nothing new (it is in flight here) until acked.
  b.Send(json{{"type", "ack"}, {"message_id", message_id}});
  b.Send(json{{"type", "get_pending_messages"}});
  auto pending = b.RecvType("pending_messages");
  REQUIRE(pending);
  CHECK((*pending)["messages"].empty());
  auto receipt = a.RecvType("receipt");
  REQUIRE(receipt);
  CHECK((*receipt)["id"] == "live");

  // An agent cannot ack (delete) someone else's queued message.
  a.Send(Send(AmidOf(Identity(32)), "b3RoZXI=", "o1"));
  auto queued = a.RecvType("send_result");
  REQUIRE(queued);
  b.Send(json{{"type", "ack"}, {"message_id", (*queued)["message_id"]}});
  b.Pump(100ms);
  WsTestClient c;
  auto c_connected = c.ConnectAs(relay.url(), Identity(32));
  REQUIRE(c_connected);
  CHECK((*c_connected)["pending_messages"] == 1);
}

TEST_CASE("relay: messages queued in the loop turn of the recipient's CONNECT follow `connected`",
          "[relay]") {
  // A client drops a receive frame that comes before `connected` (it cannot ack it yet), so
  // none may: a message pushed early stayed in flight, unacked, until the connection ended.
  RelayProcess relay({"--messages-per-minute", "100000"});
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), Identity(33)));
  constexpr int kCount = 20;
  // One attempt with a new recipient; returns how many messages its `connected` announced.
  auto attempt = [&](int n) {
    const auto b_id = Identity(static_cast<std::uint64_t>(34 + n));
    WsTestClient b;
    REQUIRE(b.Connect(relay.url()));
    // Stopped, the relay reads both sockets in one turn when it resumes: a's sends first, each
    // queued since b is not connected, then b's CONNECT. (It may still read them in two turns,
    // b's CONNECT first: the caller tries again.)
    REQUIRE(relay.process().Stop());
    std::set<std::string> sent;
    for (int i = 0; i < kCount; ++i) {
      const std::string id = "q" + std::to_string(n) + "-" + std::to_string(i);
      a.Send(Send(AmidOf(b_id), "cXVldWVk", id));
      sent.insert(id);
    }
    a.Pump(100ms);  // every frame written to the socket before b's CONNECT
    b.Send(relay::BuildConnectFrame(b_id, Now(), false));
    REQUIRE(relay.process().Signal(SIGCONT, false) == 0);
    auto first = b.Recv();
    REQUIRE(first);
    INFO(first->dump());
    REQUIRE((*first)["type"] == "connected");
    std::set<std::string> message_ids;
    for (int i = 0; i < kCount; ++i) {
      auto m = b.RecvType("receive");
      REQUIRE(m);
      message_ids.insert((*m)["message_id"].get<std::string>());
    }
    CHECK(message_ids.size() == kCount);
    // Acked, every one is taken from the store (or settled live) and receipted to a.
    b.Send(json{{"type", "ack"}, {"message_ids", message_ids}});
    std::set<std::string> receipted;
    for (int i = 0; i < kCount; ++i) {
      auto receipt = a.RecvType("receipt");
      REQUIRE(receipt);
      receipted.insert((*receipt)["id"].get<std::string>());
    }
    CHECK(receipted == sent);
    CHECK(LoopbackHttpGet(relay.port(), "/metrics").find("\namesh_relay_queued_messages 0") !=
          std::string::npos);
    return (*first)["pending_messages"].get<int>();
  };
  int announced = 0;
  for (int n = 0; n < 10 && announced != kCount; ++n) announced = attempt(n);
  CHECK(announced == kCount);  // all of them were queued when b's CONNECT was handled
}

TEST_CASE("relay: a backlog larger than one store load is pushed whole without acks", "[relay]") {
  RelayProcess relay({"--messages-per-minute", "100000", "--max-queue", "100000"});
  const auto b_id = Identity(36);
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), Identity(35)));
  constexpr int kCount = 1100;  // one load is 1000
  for (int i = 0; i < kCount; ++i) a.Send(Send(AmidOf(b_id), "YmFja2xvZw==", std::to_string(i)));
  for (int i = 0; i < kCount; ++i) {
    auto r = a.RecvType("send_result");
    REQUIRE(r);
    REQUIRE((*r)["status"] == "queued");
  }
  WsTestClient b;
  auto connected = b.ConnectAs(relay.url(), b_id);
  REQUIRE(connected);
  CHECK((*connected)["pending_messages"] == kCount);
  std::set<std::string> got;
  for (int i = 0; i < kCount; ++i) {
    auto m = b.RecvType("receive");
    if (!m) break;
    got.insert((*m)["message_id"].get<std::string>());
  }
  CHECK(got.size() == kCount);
}

TEST_CASE("relay: queued messages expire after the TTL", "[relay]") {
  RelayProcess relay({"--store-ttl", "1", "--expiry-interval-ms", "100"});
  const auto a_id = Identity(40);
  const auto b_id = Identity(41);
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), a_id));
  a.Send(Send(AmidOf(b_id), "dHRs", "t1"));
  REQUIRE(a.RecvType("send_result"));
  std::this_thread::sleep_for(2500ms);
  WsTestClient b;
  auto connected = b.ConnectAs(relay.url(), b_id);
  REQUIRE(connected);
  CHECK((*connected)["pending_messages"] == 0);
  CHECK_FALSE(b.RecvType("receive", 300ms));
  CHECK(LoopbackHttpGet(relay.port(), "/metrics").find("amesh_relay_expired_total 1") !=
        std::string::npos);
}

TEST_CASE("relay: a full queue refuses the send instead of dropping", "[relay]") {
  RelayProcess relay({"--max-queue", "3"});
  const auto a_id = Identity(50);
  const auto b_id = Identity(51);
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), a_id));
  for (int i = 0; i < 3; ++i) {
    a.Send(Send(AmidOf(b_id), "cQ==", "f" + std::to_string(i)));
    auto r = a.RecvType("send_result");
    REQUIRE(r);
    CHECK((*r)["status"] == "queued");
  }
  a.Send(Send(AmidOf(b_id), "cQ==", "f3"));
  auto refused = a.RecvType("send_result");
  REQUIRE(refused);
  CHECK((*refused)["status"] == "refused");
  CHECK((*refused)["code"] == "QUEUE_FULL");
  auto error = a.RecvType("error");
  REQUIRE(error);
  CHECK((*error)["code"] == "QUEUE_FULL");
  // The first three are all still there.
  WsTestClient b;
  auto connected = b.ConnectAs(relay.url(), b_id);
  REQUIRE(connected);
  CHECK((*connected)["pending_messages"] == 3);
}

TEST_CASE("relay: per-sender rate limits for messages and KNOCKs", "[relay]") {
  RelayProcess relay({"--messages-per-minute", "5", "--knocks-per-minute", "2"});
  const auto a_id = Identity(60);
  const auto b_id = Identity(61);
  WsTestClient a, b;
  REQUIRE(a.ConnectAs(relay.url(), a_id));
  REQUIRE(b.ConnectAs(relay.url(), b_id));
  int delivered = 0;
  int limited = 0;
  for (int i = 0; i < 8; ++i) {
    a.Send(Send(AmidOf(b_id), "cg==", "m" + std::to_string(i)));
    auto r = a.RecvType("send_result");
    REQUIRE(r);
    if ((*r)["status"] == "delivered") ++delivered;
    if ((*r)["status"] == "refused") {
      ++limited;
      CHECK((*r)["code"] == "RATE_LIMITED");
      CHECK((*r)["retry_after_seconds"].get<int>() >= 1);
    }
  }
  CHECK(delivered == 5);
  CHECK(limited == 3);
  int knocks = 0;
  for (int i = 0; i < 4; ++i) {
    a.Send(Send(AmidOf(b_id), "aw==", "k" + std::to_string(i), "knock"));
    auto r = a.RecvType("send_result");
    REQUIRE(r);
    if ((*r)["status"] == "delivered") ++knocks;
  }
  CHECK(knocks == 2);
}

TEST_CASE("relay: oversized frames get MESSAGE_TOO_LARGE and a 1009 close", "[relay]") {
  RelayProcess relay({"--max-frame", "2048"});
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), Identity(70)));
  a.Send(Send(AmidOf(Identity(71)), std::string(4000, 'A')));
  auto error = a.RecvType("error");
  REQUIRE(error);
  CHECK((*error)["code"] == "MESSAGE_TOO_LARGE");
  auto code = a.WaitClosed();
  REQUIRE(code);
  CHECK(*code == 1009);
}

TEST_CASE("relay: bad frames after CONNECT get INVALID_MESSAGE and the connection survives",
          "[relay]") {
  RelayProcess relay;
  const auto b_id = Identity(81);
  WsTestClient a, b;
  REQUIRE(a.ConnectAs(relay.url(), Identity(80)));
  REQUIRE(b.ConnectAs(relay.url(), b_id));
  for (const char* bad : {"not json", "[]", R"({"type":"teleport"})", R"({"type":"send"})",
                          R"({"type":"send","to":"not-an-amid!","encrypted_payload":"x"})",
                          R"({"type":"send","to":"x","encrypted_payload":{"a":1}})",
                          R"({"type":"presence","status":"asleep"})"}) {
    INFO(bad);
    a.Send(std::string_view(bad));
    auto error = a.RecvType("error");
    REQUIRE(error);
    CHECK((*error)["code"] == "INVALID_MESSAGE");
  }
  CHECK(a.open());
  a.Send(Send(AmidOf(b_id), "b2s=", "ok"));
  auto r = a.RecvType("send_result");
  REQUIRE(r);
  CHECK((*r)["status"] == "delivered");
  // Invalid UTF-8 in a text frame fails the WebSocket connection (RFC 6455 §8.1): close 1007.
  a.Send(std::string_view("{\"type\":\"send\",\"to\":\"\xff\"}"));
  auto code = a.WaitClosed();
  REQUIRE(code);
  CHECK(*code == 1007);
}

TEST_CASE("relay: a second CONNECT for an AMID replaces the first cleanly", "[relay]") {
  RelayProcess relay;
  const auto a_id = Identity(90);
  const auto b_id = Identity(91);
  WsTestClient sender;
  REQUIRE(sender.ConnectAs(relay.url(), b_id));
  WsTestClient first;
  REQUIRE(first.ConnectAs(relay.url(), a_id));
  WsTestClient second;
  std::this_thread::sleep_for(1100ms);  // a new whole-second timestamp: not a replay
  REQUIRE(second.ConnectAs(relay.url(), a_id));
  auto error = first.RecvType("error");
  REQUIRE(error);
  CHECK((*error)["code"] == "REPLACED");
  CHECK(first.WaitClosed().has_value());
  // The old socket's teardown must not unregister the new one.
  sender.Pump(200ms);
  sender.Send(Send(AmidOf(a_id), "bmV3", "n1"));
  auto r = sender.RecvType("send_result");
  REQUIRE(r);
  CHECK((*r)["status"] == "delivered");
  auto m = second.RecvType("receive");
  REQUIRE(m);
  CHECK((*m)["encrypted_payload"] == "bmV3");
}

TEST_CASE("relay: presence with last_seen", "[relay]") {
  RelayProcess relay;
  const auto a_id = Identity(100);
  WsTestClient q;
  REQUIRE(q.ConnectAs(relay.url(), Identity(101)));
  q.Send(json{{"type", "presence_query"}, {"amid", AmidOf(a_id)}});
  auto unknown = q.RecvType("presence_response");
  REQUIRE(unknown);
  CHECK((*unknown)["status"] == "offline");
  CHECK_FALSE(unknown->contains("last_seen"));
  {
    WsTestClient a;
    REQUIRE(a.ConnectAs(relay.url(), a_id));
    q.Send(json{{"type", "presence_query"}, {"amid", AmidOf(a_id)}});
    auto online = q.RecvType("presence_response");
    REQUIRE(online);
    CHECK((*online)["status"] == "online");
    CHECK((*online)["last_seen"].is_string());
    a.Send(json{{"type", "presence"}, {"status", "dnd"}});
    a.Pump(100ms);
    q.Send(json{{"type", "presence_query"}, {"amid", AmidOf(a_id)}});
    auto dnd = q.RecvType("presence_response");
    REQUIRE(dnd);
    CHECK((*dnd)["status"] == "dnd");
    a.Close();
  }
  q.Pump(100ms);
  q.Send(json{{"type", "presence_query"}, {"amid", AmidOf(a_id)}});
  auto offline = q.RecvType("presence_response");
  REQUIRE(offline);
  CHECK((*offline)["status"] == "offline");
  CHECK((*offline)["last_seen"].is_string());
}

TEST_CASE("relay: ICE signalling is forwarded with the sender's AMID", "[relay]") {
  RelayProcess relay;
  const auto a_id = Identity(110);
  const auto b_id = Identity(111);
  WsTestClient a, b;
  REQUIRE(a.ConnectAs(relay.url(), a_id));
  REQUIRE(b.ConnectAs(relay.url(), b_id));
  a.Send(
      json{{"type", "ice_offer"},
           {"to", AmidOf(b_id)},
           {"sdp", "v=0"},
           {"candidates",
            json::array({{{"candidate", "c1"}, {"sdp_mid", nullptr}, {"sdp_mline_index", 0}}})}});
  auto offer = b.RecvType("ice_offer");
  REQUIRE(offer);
  CHECK((*offer)["to"] == AmidOf(a_id));
  CHECK((*offer)["sdp"] == "v=0");
  CHECK((*offer)["candidates"][0]["candidate"] == "c1");
  b.Send(json{{"type", "p2_p_established"}, {"peer", AmidOf(a_id)}});
  auto established = a.RecvType("p2_p_established");
  REQUIRE(established);
  CHECK((*established)["peer"] == AmidOf(b_id));
  a.Send(json{{"type", "ice_answer"}, {"to", AmidOf(Identity(112))}, {"sdp", "x"}});
  auto error = a.RecvType("error");
  REQUIRE(error);
  CHECK((*error)["code"] == "RECIPIENT_OFFLINE");
}

TEST_CASE("relay: connection flood from one address is capped with RATE_LIMITED", "[relay]") {
  RelayProcess relay({"--max-connections-per-ip", "3"});
  std::vector<std::unique_ptr<WsTestClient>> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(std::make_unique<WsTestClient>());
    REQUIRE(clients.back()->ConnectAs(relay.url(), Identity(150 + static_cast<unsigned>(i))));
  }
  // Over the cap: upgraded, told why, closed; the held connections are untouched.
  for (int i = 0; i < 5; ++i) {
    INFO("extra connection " << i);
    WsTestClient extra;
    REQUIRE(extra.Connect(relay.url()));
    auto error = extra.RecvType("error");
    REQUIRE(error);
    CHECK((*error)["code"] == "RATE_LIMITED");
    CHECK((*error)["message"].get<std::string>().find("too many connections") != std::string::npos);
    auto code = extra.WaitClosed();
    REQUIRE(code);
    CHECK(*code == 1008);
  }
  for (auto& c : clients) CHECK(c->open());
  const std::string metrics = LoopbackHttpGet(relay.port(), "/metrics");
  CHECK(metrics.find("amesh_relay_connections_refused_total 5") != std::string::npos);
  clients.pop_back();
  std::this_thread::sleep_for(200ms);
  WsTestClient again;
  CHECK(again.ConnectAs(relay.url(), Identity(160)));
}

namespace {
// A blocking WebSocket client on a raw socket, for frames WsTestClient cannot send (binary).
class RawWs {
 public:
  explicit RawWs(std::uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    Write(
        "GET /v1/connect HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    while (buf_.find("\r\n\r\n") == std::string::npos) REQUIRE(Fill());
    REQUIRE(buf_.rfind("HTTP/1.1 101", 0) == 0);
    buf_.erase(0, buf_.find("\r\n\r\n") + 4);
  }
  ~RawWs() { ::close(fd_); }

  void SendFrame(std::uint8_t opcode, std::string_view payload) {
    REQUIRE(payload.size() < 65536);
    std::string f;
    f += static_cast<char>(0x80 | opcode);
    if (payload.size() < 126) {
      f += static_cast<char>(0x80 | payload.size());
    } else {
      f += static_cast<char>(0x80 | 126);
      f += static_cast<char>(payload.size() >> 8);
      f += static_cast<char>(payload.size() & 0xFF);
    }
    const char mask[4] = {1, 2, 3, 4};
    f.append(mask, 4);
    for (std::size_t i = 0; i < payload.size(); ++i)
      f += static_cast<char>(payload[i] ^ mask[i % 4]);
    Write(f);
  }
  // The next server frame as (opcode, payload); nullopt on EOF or timeout.
  std::optional<std::pair<int, std::string>> ReadFrame() {
    while (true) {
      if (buf_.size() >= 2) {
        const auto b1 = static_cast<unsigned char>(buf_[1]);
        std::size_t len = b1 & 0x7F;
        std::size_t head = 2;
        if (len == 126 && buf_.size() >= 4) {
          len = (static_cast<unsigned char>(buf_[2]) << 8) | static_cast<unsigned char>(buf_[3]);
          head = 4;
        }
        if (len < 126 || head == 4) {
          if (buf_.size() >= head + len) {
            std::pair<int, std::string> frame{buf_[0] & 0x0F, buf_.substr(head, len)};
            buf_.erase(0, head + len);
            return frame;
          }
        }
      }
      if (!Fill()) return std::nullopt;
    }
  }

 private:
  void Write(std::string_view data) {
    REQUIRE(::send(fd_, data.data(), data.size(), MSG_NOSIGNAL) ==
            static_cast<ssize_t>(data.size()));
  }
  bool Fill() {
    char tmp[4096];
    const ssize_t n = ::read(fd_, tmp, sizeof tmp);
    if (n <= 0) return false;
    buf_.append(tmp, static_cast<std::size_t>(n));
    return true;
  }
  int fd_ = -1;
  std::string buf_;
};
}  // namespace

TEST_CASE("relay: binary frames are refused with an error frame", "[relay]") {
  RelayProcess relay;
  SECTION("as the first frame: UNAUTHORIZED, then close 1008") {
    RawWs raw(relay.port());
    raw.SendFrame(0x2, "\x01\x02binary");
    auto error = raw.ReadFrame();
    REQUIRE(error);
    CHECK(error->first == 0x1);
    const json parsed = json::parse(error->second);
    CHECK(parsed["type"] == "error");
    CHECK(parsed["code"] == "UNAUTHORIZED");
    auto close = raw.ReadFrame();
    REQUIRE(close);
    CHECK(close->first == 0x8);
    REQUIRE(close->second.size() >= 2);
    CHECK(((static_cast<unsigned char>(close->second[0]) << 8) |
           static_cast<unsigned char>(close->second[1])) == 1008);
  }
  SECTION("after CONNECT: INVALID_MESSAGE and the connection stays usable") {
    RawWs raw(relay.port());
    raw.SendFrame(0x1, relay::BuildConnectFrame(Identity(175), Now(), false));
    auto connected = raw.ReadFrame();
    REQUIRE(connected);
    CHECK(json::parse(connected->second)["type"] == "connected");
    raw.SendFrame(0x2, "\x01\x02binary");
    auto error = raw.ReadFrame();
    REQUIRE(error);
    CHECK(error->first == 0x1);
    CHECK(json::parse(error->second)["code"] == "INVALID_MESSAGE");
    raw.SendFrame(0x1, R"({"type":"ping","timestamp":7})");
    auto pong = raw.ReadFrame();
    REQUIRE(pong);
    const json parsed = json::parse(pong->second);
    CHECK(parsed["type"] == "pong");
    CHECK(parsed["timestamp"] == 7);
  }
}

TEST_CASE("relay: --max-invalid-frames closes a connection that keeps sending garbage", "[relay]") {
  RelayProcess relay({"--max-invalid-frames", "3"});
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), Identity(170)));
  for (int i = 0; i < 3; ++i) a.Send("garbage");
  int errors = 0;
  while (auto e = a.RecvType("error", 1s)) {
    CHECK((*e)["code"] == "INVALID_MESSAGE");
    ++errors;
  }
  CHECK(errors == 3);
  auto code = a.WaitClosed();
  REQUIRE(code);
  CHECK(*code == 1008);
  CHECK(LoopbackHttpGet(relay.port(), "/metrics").find("amesh_relay_invalid_frames_total 3") !=
        std::string::npos);
}

TEST_CASE("relay: SIGHUP applies a valid new config to running connections", "[relay]") {
  TempDir config_dir;
  const auto config = config_dir.path() / "relay.json";
  std::ofstream(config) << R"({"messages_per_minute": 1000})";
  RelayProcess relay({"--config", config.string()});
  const auto b_id = Identity(181);
  WsTestClient a, b;
  REQUIRE(a.ConnectAs(relay.url(), Identity(180)));
  REQUIRE(b.ConnectAs(relay.url(), b_id));
  std::ofstream(config, std::ios::trunc) << R"({"messages_per_minute": 2})";
  relay.process().Signal(SIGHUP, false);
  for (int i = 0; i < 50 && relay.log().find("configuration reloaded") == std::string::npos; ++i) {
    std::this_thread::sleep_for(50ms);
  }
  REQUIRE(relay.log().find("configuration reloaded") != std::string::npos);
  std::vector<std::string> statuses;
  for (int i = 0; i < 3; ++i) {
    a.Send(Send(AmidOf(b_id), "aGk=", "h" + std::to_string(i)));
    auto r = a.RecvType("send_result");
    REQUIRE(r);
    statuses.push_back((*r)["status"]);
  }
  CHECK(statuses == std::vector<std::string>{"delivered", "delivered", "refused"});
}

TEST_CASE("relay: a large queue drains under flow control once each and in order", "[relay]") {
  TempDir config_dir;
  const auto config = config_dir.path() / "relay.json";
  std::ofstream(config) << R"({"max_output_bytes": 65536, "max_frame_bytes": 16384,)"
                           R"( "messages_per_minute": 100000, "max_queue_per_recipient": 100000})";
  RelayProcess relay({"--config", config.string()});
  const auto a_id = Identity(130);
  const auto b_id = Identity(131);
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), a_id));
  const std::string payload(4000, 'q');
  std::vector<std::string> queued;
  for (int i = 0; i < 300; ++i) {
    a.Send(Send(AmidOf(b_id), payload, "d" + std::to_string(i)));
    auto r = a.RecvType("send_result");
    REQUIRE(r);
    REQUIRE((*r)["status"] == "queued");
    queued.push_back((*r)["message_id"].get<std::string>());
  }
  WsTestClient b;
  auto connected = b.ConnectAs(relay.url(), b_id);
  REQUIRE(connected);
  CHECK((*connected)["pending_messages"] == 300);
  std::vector<std::string> got;
  while (got.size() < queued.size()) {
    auto m = b.RecvType("receive", 5s);
    if (!m) break;
    got.push_back((*m)["message_id"].get<std::string>());
    b.Send(json{{"type", "ack"}, {"message_id", (*m)["message_id"]}});
  }
  CHECK(got == queued);
  CHECK_FALSE(b.RecvType("receive", 300ms));
  b.Send(json{{"type", "get_pending_messages"}});
  auto pending = b.RecvType("pending_messages");
  REQUIRE(pending);
  CHECK((*pending)["messages"].empty());
}

TEST_CASE("relay: a reader that stays too slow is disconnected and loses nothing", "[relay]") {
  // Nor does it reorder: a ratchet chain cannot skip far ahead, so per-recipient order matters.
  TempDir config_dir;
  const auto config = config_dir.path() / "relay.json";
  std::ofstream(config) << R"({"max_output_bytes": 65536, "max_frame_bytes": 16384,)"
                           R"( "messages_per_minute": 100000, "max_queue_per_recipient": 100000})";
  RelayProcess relay({"--config", config.string()});
  const auto a_id = Identity(120);
  const auto b_id = Identity(121);
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), a_id));
  std::vector<std::string> sent_in_order;  // message ids, in the order a sent them
  std::map<std::string, std::string> id_of_client_id;
  const auto collect_results = [&](int first, int count) {
    for (int results = 0; results < count; ++results) {
      auto r = a.RecvType("send_result", 10s);
      REQUIRE(r);
      CHECK((*r)["status"] != "refused");
      id_of_client_id[(*r)["id"].get<std::string>()] = (*r)["message_id"].get<std::string>();
    }
    for (int i = first; i < first + count; ++i) {
      REQUIRE(id_of_client_id.contains("s" + std::to_string(i)));
      sent_in_order.push_back(id_of_client_id["s" + std::to_string(i)]);
    }
  };
  {
    WsTestClient b;
    REQUIRE(b.ConnectAs(relay.url(), b_id));
    // b never reads: its socket buffers and then the relay's output bound fill up.
    const std::string payload(12000, 'p');
    for (int i = 0; i < 600; ++i) {
      a.Send(Send(AmidOf(b_id), payload, "s" + std::to_string(i)));
      if (i % 20 == 19) a.Pump(20ms);
    }
    collect_results(0, 600);
    b.Close();
  }
  const std::string metrics = LoopbackHttpGet(relay.port(), "/metrics");
  CHECK(metrics.find("amesh_relay_slow_disconnects_total 0") == std::string::npos);
  // Everything arrives on the next connection(s), once each after acks, in the order sent — also
  // what a sends while the backlog is still being pushed.
  std::vector<std::string> got;
  std::set<std::string> seen;
  int next = 600;
  for (int round = 0; round < 10 && got.size() < sent_in_order.size() + 50; ++round) {
    WsTestClient b;
    REQUIRE(b.ConnectAs(relay.url(), b_id));
    if (round == 0) {
      for (int i = 0; i < 50; ++i) {
        a.Send(Send(AmidOf(b_id), "late", "s" + std::to_string(next + i)));
      }
    }
    int received = 0;
    while (auto m = b.RecvType("receive", 1s)) {
      const std::string id = (*m)["message_id"].get<std::string>();
      if (seen.insert(id).second) got.push_back(id);
      b.Send(json{{"type", "ack"}, {"message_id", (*m)["message_id"]}});
      if (round == 0 && ++received == 100) {
        collect_results(next, 50);  // the late sends were answered meanwhile
        next += 50;
      }
    }
    b.Close();
  }
  CHECK(next == 650);
  CHECK(got.size() == sent_in_order.size());
  std::size_t first_difference = 0;
  while (first_difference < std::min(got.size(), sent_in_order.size()) &&
         got[first_difference] == sent_in_order[first_difference]) {
    ++first_difference;
  }
  INFO("the first message out of order is number " << first_difference);
  CHECK(first_difference == sent_in_order.size());
}

TEST_CASE("relay: wss:// with a certificate made by the test", "[relay]") {
  TempDir certs;
  const auto cert = certs.path() / "cert.pem";
  const auto key = certs.path() / "key.pem";
  const std::string cmd =
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
      "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout " +
      key.string() + " -out " + cert.string() + " 2>/dev/null";
  REQUIRE(std::system(cmd.c_str()) == 0);
  RelayProcess relay({"--tls-cert", cert.string(), "--tls-key", key.string()});
  auto tls = net::TlsContext::CreateClient({.ca_file = cert.string(), .verify_peer = true});
  REQUIRE(tls);
  net::ClientOptions options;
  options.tls = *tls;
  const auto a_id = Identity(130);
  const auto b_id = Identity(131);
  WsTestClient a(options), b(options);
  REQUIRE(a.ConnectAs(relay.url("wss"), a_id));
  REQUIRE(b.ConnectAs(relay.url("wss"), b_id));
  a.Send(Send(AmidOf(b_id), "dGxz", "t"));
  auto m = b.RecvType("receive");
  REQUIRE(m);
  CHECK((*m)["encrypted_payload"] == "dGxz");
  // Without the certificate as a trust anchor, verification fails.
  WsTestClient untrusted;
  CHECK_FALSE(untrusted.Connect(relay.url("wss"), 3s));
}

TEST_CASE("relay: SIGTERM exits cleanly and SIGHUP with a bad config keeps running", "[relay]") {
  TempDir config_dir;
  const auto config = config_dir.path() / "relay.json";
  std::ofstream(config) << R"({"messages_per_minute": 50})";
  RelayProcess relay({"--config", config.string()});
  std::ofstream(config, std::ios::trunc) << R"({"messages_per_minute": "many"})";
  relay.process().Signal(SIGHUP, false);
  std::this_thread::sleep_for(300ms);
  WsTestClient a;
  REQUIRE(a.ConnectAs(relay.url(), Identity(140)));
  CHECK(relay.log().find("keeping the running configuration") != std::string::npos);
  const int status = relay.Terminate();
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(a.WaitClosed().has_value());
}

TEST_CASE("relay: invalid flags and config are refused with a non-zero exit", "[relay]") {
  TempDir dir;
  for (std::vector<std::string> args :
       {std::vector<std::string>{"--fsync", "sometimes"},
        std::vector<std::string>{"--max-queue", "0"}, std::vector<std::string>{"--no-such-flag"}}) {
    args.insert(args.begin(), AMESH_RELAY_BIN);
    args.push_back("--store");
    args.push_back((dir.path() / "x.db").string());
    ChildProcess p;
    REQUIRE(p.Start(args, dir.path() / "err.log"));
    const int status = p.Signal(0, true, 5s);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) != 0);
  }
}
