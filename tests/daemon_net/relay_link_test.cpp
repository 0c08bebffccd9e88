// RelayLink against the real amesh-relay binary on loopback: authentication, live and
// store-and-forward delivery with acks and receipts, reconnection after the relay dies, and wss://
// with a certificate made by the test.
#include "relay_link.hpp"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agentmesh/core/identity.hpp"
#include "loop_helpers.hpp"
#include "process.hpp"

using namespace agentmesh;
using namespace agentmesh::daemon;
using namespace agentmesh::testing;
using namespace std::chrono_literals;

namespace {

Ed25519KeyPair Identity(std::uint64_t seed) {
  DeterministicRng rng(seed);
  return Ed25519KeyPair::Generate(rng);
}

Amid AmidOf(const Ed25519KeyPair& id) { return Amid::FromPublicKey(id.public_key); }

class RelayProcess {
 public:
  explicit RelayProcess(std::vector<std::string> extra = {}) : extra_(std::move(extra)) { Start(); }

  void Start() {
    std::vector<std::string> argv = {AMESH_RELAY_BIN, "--listen",
                                     "127.0.0.1:" + std::to_string(port_), "--store",
                                     (dir_.path() / "relay.db").string()};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    REQUIRE(process_.Start(argv, dir_.path() / "relay.log"));
    auto line = process_.WaitForLine("listening on port", 10s);
    INFO(process_.StderrLog());
    REQUIRE(line.has_value());
    port_ = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(' ') + 1)));
  }
  void Kill9() { process_.Kill(); }
  std::string url(const char* scheme = "ws") const {
    return std::string(scheme) + "://127.0.0.1:" + std::to_string(port_) + "/v1/connect";
  }
  std::string log() const { return process_.StderrLog(); }

 private:
  TempDir dir_;
  ChildProcess process_;
  std::vector<std::string> extra_;
  std::uint16_t port_ = 0;
};

// A RelayLink plus everything its handlers reported.
struct Agent {
  Agent(uv_loop_t* loop, const std::string& url, std::uint64_t seed, bool auto_ack = true,
        RelayLinkOptions options = {})
      : id(AmidOf(Identity(seed))), auto_ack_(auto_ack) {
    options.url = url;
    if (options.min_backoff_ms == 250) options.min_backoff_ms = 50;
    if (options.max_backoff_ms == 30'000) options.max_backoff_ms = 400;
    RelayLink::Handlers h;
    h.on_state = [this](bool up, std::string_view detail) {
      states.emplace_back(up, std::string(detail));
      if (up)
        ++ups;
      else
        ++downs;
    };
    h.on_message = [this](const IncomingMessage& m) {
      messages.push_back(m);
      if (auto_ack_) link->Ack(m.id);
    };
    h.on_send_result = [this](const SendResult& r) { results[r.message_id] = r; };
    h.on_receipt = [this](const Receipt& r) { receipts[r.message_id] = r; };
    link = std::make_unique<RelayLink>(loop, std::move(options), Identity(seed), std::move(h));
  }

  std::string LastDetail() const { return states.empty() ? "" : states.back().second; }

  Amid id;
  bool auto_ack_;
  std::unique_ptr<RelayLink> link;
  std::vector<std::pair<bool, std::string>> states;
  int ups = 0, downs = 0;
  std::vector<IncomingMessage> messages;
  std::map<std::string, SendResult> results;
  std::map<std::string, Receipt> receipts;
};

}  // namespace

TEST_CASE("relay link connects, authenticates and delivers live with ack and receipt",
          "[relay_link]") {
  RelayProcess relay;
  TestLoop loop;
  {
    Agent a(loop.get(), relay.url(), 1), b(loop.get(), relay.url(), 2);
    CHECK_FALSE(a.link->connected());
    a.link->Start();
    b.link->Start();
    CHECK(a.states.empty());  // Start never calls back synchronously
    REQUIRE(loop.RunUntil([&] { return a.link->connected() && b.link->connected(); }));
    CHECK(a.ups == 1);
    CHECK_FALSE(a.states.front().second.empty());  // the relay session id

    // Not connected yet / bad arguments.
    auto bad_type = a.link->Send(b.id, "bogus", "eA==");
    REQUIRE_FALSE(bad_type);
    CHECK(bad_type.error().code == Code::kInvalidArgument);
    auto bad_id = a.link->Send(b.id, "message", "eA==", "has space");
    REQUIRE_FALSE(bad_id);
    CHECK(bad_id.error().code == Code::kInvalidArgument);

    auto sent = a.link->Send(b.id, "message", "aGVsbG8=");
    REQUIRE(sent);
    CHECK(sent->size() == 32);
    REQUIRE(loop.RunUntil([&] { return a.receipts.contains(*sent); }));
    REQUIRE(a.results.contains(*sent));
    CHECK(a.results[*sent].outcome == SendOutcome::kDelivered);
    CHECK_FALSE(a.results[*sent].relay_message_id.empty());
    REQUIRE(b.messages.size() == 1);
    CHECK(b.messages[0].from == a.id.str());
    CHECK(b.messages[0].encrypted_payload == "aGVsbG8=");
    CHECK(b.messages[0].message_type == "message");
    CHECK(b.messages[0].id == a.results[*sent].relay_message_id);
    CHECK_FALSE(b.messages[0].timestamp.empty());
    CHECK(a.receipts[*sent].acked);

    // A caller-chosen id (an outbox resend) is used as given.
    auto again = a.link->Send(b.id, "knock", "a25vY2s=", "outbox-17");
    REQUIRE(again);
    CHECK(*again == "outbox-17");
    REQUIRE(loop.RunUntil([&] { return a.receipts.contains("outbox-17"); }));
    CHECK(b.messages.size() == 2);
    CHECK(b.messages[1].message_type == "knock");

    // Stop: no callback, then not connected; Send is refused with kUnavailable.
    const auto states_before = a.states.size();
    a.link->Stop();
    CHECK_FALSE(a.link->connected());
    auto offline = a.link->Send(b.id, "message", "eA==");
    REQUIRE_FALSE(offline);
    CHECK(offline.error().code == Code::kUnavailable);
    loop.RunFor(100ms);
    CHECK(a.states.size() == states_before);
  }
}

TEST_CASE("relay link: send to an offline agent is queued, then delivered and acked on connect",
          "[relay_link]") {
  RelayProcess relay;
  TestLoop loop;
  {
    Agent a(loop.get(), relay.url(), 11);
    const Amid c_id = AmidOf(Identity(12));
    a.link->Start();
    REQUIRE(loop.RunUntil([&] { return a.link->connected(); }));
    std::vector<std::string> ids;
    for (int i = 0; i < 3; ++i) {
      auto sent = a.link->Send(c_id, "message", "cXVldWVk" + std::to_string(i));
      REQUIRE(sent);
      ids.push_back(*sent);
    }
    REQUIRE(loop.RunUntil([&] { return a.results.size() == 3; }));
    for (const auto& id : ids) CHECK(a.results[id].outcome == SendOutcome::kQueued);

    // The recipient does not ack the first time: the messages come back on the next connection.
    {
      Agent c(loop.get(), relay.url(), 12, /*auto_ack=*/false);
      c.link->Start();
      REQUIRE(loop.RunUntil([&] { return c.messages.size() == 3; }));
      CHECK(c.messages[0].encrypted_payload == "cXVldWVk0");
      CHECK(c.messages[2].encrypted_payload == "cXVldWVk2");
      c.link->Stop();
      loop.RunFor(100ms);
    }
    std::vector<std::string> first_ids;
    {
      Agent c(loop.get(), relay.url(), 12, /*auto_ack=*/true);
      c.link->Start();
      REQUIRE(loop.RunUntil([&] { return c.messages.size() == 3; }));
      for (const auto& m : c.messages) first_ids.push_back(m.id);
      // The sender learns that each was acked.
      REQUIRE(loop.RunUntil([&] { return a.receipts.size() == 3; }));
      for (const auto& id : ids) CHECK(a.receipts[id].acked);
      // get_pending_messages: nothing left.
      c.link->RequestPending();
      loop.RunFor(100ms);
      CHECK(c.messages.size() == 3);
      c.link->Stop();
      loop.RunFor(100ms);
    }
    {
      Agent c(loop.get(), relay.url(), 12);
      c.link->Start();
      REQUIRE(loop.RunUntil([&] { return c.link->connected(); }));
      loop.RunFor(200ms);
      CHECK(c.messages.empty());  // acked messages are gone for good
    }
  }
}

TEST_CASE("relay link: nack reaches the sender as a receipt", "[relay_link]") {
  RelayProcess relay;
  TestLoop loop;
  {
    Agent a(loop.get(), relay.url(), 21), b(loop.get(), relay.url(), 22, false);
    a.link->Start();
    b.link->Start();
    REQUIRE(loop.RunUntil([&] { return a.link->connected() && b.link->connected(); }));
    auto sent = a.link->Send(b.id, "message", "bmFjaw==");
    REQUIRE(sent);
    REQUIRE(loop.RunUntil([&] { return b.messages.size() == 1; }));
    b.link->Nack(b.messages[0].id, "undecryptable");
    REQUIRE(loop.RunUntil([&] { return a.receipts.contains(*sent); }));
    CHECK_FALSE(a.receipts[*sent].acked);
  }
}

TEST_CASE("relay link reconnects with backoff after the relay is killed and restarted",
          "[relay_link]") {
  RelayProcess relay;
  TestLoop loop;
  {
    Agent a(loop.get(), relay.url(), 31), b(loop.get(), relay.url(), 32);
    a.link->Start();
    b.link->Start();
    REQUIRE(loop.RunUntil([&] { return a.link->connected() && b.link->connected(); }));
    relay.Kill9();
    REQUIRE(loop.RunUntil([&] { return !a.link->connected() && !b.link->connected(); }));
    CHECK(a.downs >= 1);
    // While the relay is down, attempts fail (each reports on_state(false)) and back off.
    loop.RunFor(1500ms);
    const int failed_attempts = a.downs;
    CHECK(failed_attempts >= 2);
    CHECK(failed_attempts <= 12);  // 50 ms doubling to 400 ms, jittered: far fewer than 30
    auto down = a.link->Send(b.id, "message", "eA==");
    REQUIRE_FALSE(down);
    CHECK(down.error().code == Code::kUnavailable);

    relay.Start();  // same port, same store
    REQUIRE(loop.RunUntil([&] { return a.link->connected() && b.link->connected(); }));
    CHECK(a.ups == 2);
    auto sent = a.link->Send(b.id, "message", "YmFjaw==");
    REQUIRE(sent);
    REQUIRE(loop.RunUntil([&] { return b.messages.size() == 1; }));
    CHECK(b.messages[0].encrypted_payload == "YmFjaw==");
  }
}

TEST_CASE("relay link: a second link with the same identity replaces the first", "[relay_link]") {
  RelayProcess relay;
  TestLoop loop;
  {
    RelayLinkOptions slow;
    slow.min_backoff_ms = 5'000;  // so the replaced link does not come back during the test
    slow.max_backoff_ms = 5'000;
    Agent first(loop.get(), relay.url(), 41, true, slow);
    first.link->Start();
    REQUIRE(loop.RunUntil([&] { return first.link->connected(); }));
    Agent second(loop.get(), relay.url(), 41);
    second.link->Start();
    REQUIRE(loop.RunUntil([&] { return second.link->connected() && first.downs == 1; }));
    CHECK(first.LastDetail().find("REPLACED") != std::string::npos);
  }
}

TEST_CASE("relay link: a handler may destroy the link", "[relay_link]") {
  RelayProcess relay;
  TestLoop loop;
  {
    Agent a(loop.get(), relay.url(), 51);
    RelayLinkOptions o;
    o.url = relay.url();
    std::unique_ptr<RelayLink> b;
    int got = 0;
    RelayLink::Handlers h;
    h.on_message = [&](const IncomingMessage&) {
      ++got;
      b.reset();
    };
    b = std::make_unique<RelayLink>(loop.get(), o, Identity(52), std::move(h));
    a.link->Start();
    REQUIRE(loop.RunUntil([&] { return a.link->connected(); }));
    // Two queued messages arrive in one burst; the link dies on the first one.
    REQUIRE(a.link->Send(AmidOf(Identity(52)), "message", "MQ=="));
    REQUIRE(a.link->Send(AmidOf(Identity(52)), "message", "Mg=="));
    REQUIRE(loop.RunUntil([&] { return a.results.size() == 2; }));
    b->Start();
    REQUIRE(loop.RunUntil([&] { return got > 0; }));
    loop.RunFor(100ms);
    CHECK(got == 1);
    CHECK(b == nullptr);
  }
}

TEST_CASE("relay link: an unreachable relay reports each failed attempt", "[relay_link]") {
  TestLoop loop;
  {
    // A port nobody listens on: take a relay's port, then kill it.
    std::string url;
    {
      RelayProcess relay;
      url = relay.url();
    }
    Agent a(loop.get(), url, 61);
    a.link->Start();
    REQUIRE(loop.RunUntil([&] { return a.downs >= 2; }));
    CHECK(a.ups == 0);
    CHECK_FALSE(a.LastDetail().empty());
    a.link->Stop();
  }
}

TEST_CASE("relay link over wss with a test certificate, and a wrong CA fails verification",
          "[relay_link]") {
  TempDir certs;
  const auto cert = certs.path() / "cert.pem";
  const auto key = certs.path() / "key.pem";
  const auto other_cert = certs.path() / "other.pem";
  const auto other_key = certs.path() / "other-key.pem";
  auto make = [](const std::filesystem::path& c, const std::filesystem::path& k) {
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout " +
        k.string() + " -out " + c.string() + " 2>/dev/null";
    return std::system(cmd.c_str()) == 0;
  };
  REQUIRE(make(cert, key));
  REQUIRE(make(other_cert, other_key));
  RelayProcess relay({"--tls-cert", cert.string(), "--tls-key", key.string()});
  TestLoop loop;
  {
    RelayLinkOptions good;
    good.ca_file = cert.string();
    Agent a(loop.get(), relay.url("wss"), 71, true, good),
        b(loop.get(), relay.url("wss"), 72, true, good);
    a.link->Start();
    b.link->Start();
    REQUIRE(loop.RunUntil([&] { return a.link->connected() && b.link->connected(); }));
    auto sent = a.link->Send(b.id, "message", "dGxz");
    REQUIRE(sent);
    REQUIRE(loop.RunUntil([&] { return a.receipts.contains(*sent); }));
    CHECK(b.messages.at(0).encrypted_payload == "dGxz");

    RelayLinkOptions wrong;
    wrong.ca_file = other_cert.string();
    Agent c(loop.get(), relay.url("wss"), 73, true, wrong);
    c.link->Start();
    REQUIRE(loop.RunUntil([&] { return c.downs >= 1; }));
    CHECK(c.ups == 0);
    INFO(c.LastDetail());
    CHECK(c.LastDetail().find("auth_failed") != std::string::npos);

    RelayLinkOptions system_store;  // the system store does not trust the test certificate
    Agent d(loop.get(), relay.url("wss"), 74, true, system_store);
    d.link->Start();
    REQUIRE(loop.RunUntil([&] { return d.downs >= 1; }));
    CHECK(d.ups == 0);
  }
}
