// Integration tests against a misbehaving peer: a hand-built client of the relay that holds its
// own keys and ratchets, so it can send what a correct agentmeshd never sends — a KNOCK whose
// signature does not verify, envelopes beyond the ACCEPT's constraints, replayed ciphertexts.
// The receiver is a real agentmeshd in a real mesh; these check its side of the protocol.
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/envelope.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/knock.hpp"
#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/ratchet.hpp"
#include "agentmesh/core/rng.hpp"
#include "harness.hpp"
#include "mesh.hpp"
#include "util.hpp"
#include "ws_test_client.hpp"

using namespace agentmesh;
using namespace agentmesh::testing;

#ifdef AMESH_REGISTRY_BIN  // the rogue takes its peers' prekey bundles from the registry

namespace {

UnixNanos WallNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// The rogue's side of one session with a daemon.
struct RogueSession {
  std::string id;
  agentmesh::Amid peer;
  std::optional<RatchetSession> ratchet = std::nullopt;
  std::uint64_t next_sequence = 1;
};

// An agent that is not registered (the receiver sees an unknown, anonymous sender) and connects
// to the relay with its own identity.
class RoguePeer {
 public:
  explicit RoguePeer(const std::string& relay_url)
      : signing_(Ed25519KeyPair::Generate(rng_)),
        exchange_(X25519KeyPair::Generate(rng_)),
        amid_(agentmesh::Amid::FromPublicKey(signing_.public_key)) {
    REQUIRE(ws_.ConnectAs(relay_url, signing_).has_value());
  }

  const agentmesh::Amid& amid() const { return amid_; }
  // Frames Next() passed over: from another agent, or not of the session it waited on.
  int skipped() const { return skipped_; }

  // X3DH with the prekey bundle the registry serves for `peer`.
  RogueSession Open(Mesh& mesh, DaemonProcess& peer) {
    json who = peer.rpc.Call("whoami");
    auto peer_amid = agentmesh::Amid::Parse(who["amid"].get<std::string>());
    auto peer_signing = ParseEd25519Key(who["signing_public_key"].get<std::string>());
    REQUIRE(peer_amid.has_value());
    REQUIRE(peer_signing.has_value());
    const std::string body =
        HttpGetText(mesh.registry_port(), "/v1/registry/prekeys/" + peer_amid->str());
    auto bundle = ParseBundleJson(std::string_view(body));
    INFO(body);
    REQUIRE(bundle.has_value());
    RogueSession s{.id = NewSessionId(rng_), .peer = *peer_amid};
    auto sid = agentmesh::daemon::SessionIdFromUuid(s.id);
    REQUIRE(sid.has_value());
    auto ratchet = RatchetSession::Initiate(exchange_, *bundle, *peer_signing, *sid, rng_);
    REQUIRE(ratchet.has_value());
    s.ratchet.emplace(std::move(*ratchet));
    return s;
  }

  // A correctly signed KNOCK for `s` from this agent (the test may spoil it).
  Knock MakeKnock(const RogueSession& s, const std::string& category = "travel") {
    KnockParams params{.session_id = s.id,
                       .to = s.peer,
                       .intent = {.category = category},
                       .session_request = {.type = SessionType::kConversation,
                                           .ttl_seconds = 3600,
                                           .signed_messages = true},
                       .timestamp = WallNow()};
    auto knock = BuildKnock(params, signing_, exchange_.public_key);
    REQUIRE(knock.has_value());
    return std::move(*knock);
  }

  // A signed envelope of `s` with the next sequence number; no size limit of its own.
  std::string MakeEnvelope(RogueSession& s, const json& payload,
                           EnvelopeType type = EnvelopeType::kRequest) {
    const EnvelopeParams params{.session_id = s.id,
                                .sequence = s.next_sequence++,
                                .from = amid_,
                                .to = s.peer,
                                .type = type,
                                .timestamp = WallNow(),
                                .payload = payload,
                                .max_message_size_bytes = kMaxEnvelopeBytesCap};
    auto env = BuildSignedEnvelope(params, signing_);
    REQUIRE(env.has_value());
    return env->Serialize();
  }

  // Encrypts `plaintext` in `s`; returns the relay payload (base64 ratchet message).
  std::string Seal(RogueSession& s, const std::string& plaintext) {
    auto ciphertext = s.ratchet->Encrypt(AsBytes(plaintext), rng_);
    REQUIRE(ciphertext.has_value());
    return Base64Encode(*ciphertext);
  }

  // Sends a relay payload to `to` and waits for the relay to take it.
  void SendPayload(const agentmesh::Amid& to, const std::string& payload,
                   const std::string& message_type) {
    const std::string id = "rogue-" + std::to_string(++sends_);
    REQUIRE(ws_.Send(json{{"type", "send"},
                          {"to", to.str()},
                          {"encrypted_payload", payload},
                          {"message_type", message_type},
                          {"id", id}}));
    auto result = ws_.RecvType("send_result");
    REQUIRE(result.has_value());
    INFO(result->dump());
    REQUIRE((*result)["id"] == id);
    REQUIRE((*result)["status"] != "refused");
  }

  // The next `receive` frame as it came (acked), whoever sent it; nullopt after `timeout`.
  std::optional<json> NextFrame(std::chrono::milliseconds timeout = 10s) {
    auto frame = ws_.RecvType("receive", timeout);
    if (frame) ws_.Send(json{{"type", "ack"}, {"message_id", (*frame)["message_id"]}});
    return frame;
  }

  // The next message `s`'s peer sent, decrypted and parsed; nullopt after `timeout`.
  std::optional<SessionMessage> Next(RogueSession& s, std::chrono::milliseconds timeout = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      auto frame = ws_.RecvType("receive", std::chrono::duration_cast<std::chrono::milliseconds>(
                                               deadline - std::chrono::steady_clock::now()));
      if (!frame) return std::nullopt;
      ws_.Send(json{{"type", "ack"}, {"message_id", (*frame)["message_id"]}});
      if ((*frame)["from"] != s.peer.str()) {
        ++skipped_;
        continue;
      }
      auto bytes = Base64Decode((*frame)["encrypted_payload"].get<std::string>());
      REQUIRE(bytes.has_value());
      auto plain = s.ratchet->Decrypt(*bytes);
      if (!plain) {  // another session's message
        ++skipped_;
        continue;
      }
      const std::string_view text(reinterpret_cast<const char*>(plain->Expose().data()),
                                  plain->size());
      auto parsed = ParseSessionPlaintext(text);
      INFO(text);
      REQUIRE(parsed.has_value());
      return std::move(*parsed);
    }
    return std::nullopt;
  }

  // A session `peer` accepted (REQUIREd), with its ACCEPT's constraints.
  std::pair<RogueSession, SessionConstraints> Accepted(Mesh& mesh, DaemonProcess& peer) {
    RogueSession s = Open(mesh, peer);
    SendPayload(s.peer, Seal(s, MakeKnock(s).Serialize()), "knock");
    auto answer = Next(s);
    REQUIRE(answer.has_value());
    REQUIRE(std::holds_alternative<Accept>(*answer));
    return {std::move(s), std::get<Accept>(*answer).constraints};
  }

 private:
  SystemRng rng_;
  Ed25519KeyPair signing_;
  X25519KeyPair exchange_;
  agentmesh::Amid amid_;
  WsTestClient ws_;
  int sends_ = 0;
  int skipped_ = 0;
};

// Polls `path` until `needle` is on at least `want` lines (the audit log is written after the
// turn's commit, so after the answer the test may already hold).
bool WaitLineCount(const std::filesystem::path& path, const std::string& needle, int want) {
  for (int i = 0; i < 200; ++i) {
    if (CountLines(path, needle) >= static_cast<std::size_t>(want)) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

std::string SessionState(DaemonProcess& d, const std::string& sid) {
  const json listed = d.rpc.Call("sessions");
  for (const auto& s : listed["sessions"]) {
    if (s["session_id"] == sid) return s["state"].get<std::string>();
  }
  return "";
}

}  // namespace

TEST_CASE("peer: a KNOCK whose signature does not verify is rejected with invalid_signature",
          "[daemon][peer]") {
  Mesh mesh;
  auto& bob = mesh.Agent("bob", json::array({"travel"}));
  RoguePeer rogue(mesh.relay_url());

  struct Forgery {
    const char* name;
    std::function<void(Knock&)> spoil;
  };
  const std::vector<Forgery> forgeries = {
      // The body changed after signing: the signature no longer covers it.
      {"intent changed after signing",
       [](Knock& k) { k.object["intent"]["category"] = "banking"; }},
      // A signature from another key over the same body.
      {"signed by another key",
       [](Knock& k) {
         SystemRng rng;
         auto other = Ed25519KeyPair::Generate(rng);
         REQUIRE(SignObject(k.object, other.secret).has_value());
       }},
  };
  const auto audit = bob.home() / "logs" / "audit.jsonl";
  std::vector<RogueSession> replays;
  int n = 0;
  for (const auto& forgery : forgeries) {
    INFO(forgery.name);
    RogueSession s = rogue.Open(mesh, bob);
    Knock knock = rogue.MakeKnock(s);
    forgery.spoil(knock);
    const std::string payload = rogue.Seal(s, knock.Serialize());
    rogue.SendPayload(s.peer, payload, "knock");
    auto answer = rogue.Next(s);
    INFO(mesh.log());
    REQUIRE(answer.has_value());
    REQUIRE(std::holds_alternative<Reject>(*answer));
    CHECK(std::get<Reject>(*answer).reason == RejectReason::kInvalidSignature);
    CHECK(SessionState(bob, s.id) == "rejected");
    ++n;
    CHECK(WaitLineCount(audit, "\"invalid_signature\"", n));

    // The same prekey message again (a replay under a new relay id) opens nothing and is not
    // answered: the session id is consumed.
    rogue.SendPayload(s.peer, payload, "knock");
    replays.push_back(std::move(s));
  }
  // A proper KNOCK after the replays (the relay keeps their order) is accepted: by then bob has
  // handled the replays, and they neither reached the policy nor were answered.
  auto [good, constraints] = rogue.Accepted(mesh, bob);
  CHECK(WaitLineCount(audit, "\"knock.received\"", n + 1));
  CHECK(CountLines(audit, "\"knock.received\"") == static_cast<std::size_t>(n + 1));
  CHECK(rogue.skipped() == 0);  // nothing came for the replayed sessions before the ACCEPT
  for (auto& replayed : replays) CHECK_FALSE(rogue.Next(replayed, 200ms).has_value());
  CHECK(bob.rpc.Call("sessions", {{"state", "active"}})["sessions"].size() == 1);
}

TEST_CASE("peer: undecryptable or malformed first messages are refused and change nothing",
          "[daemon][peer]") {
  Mesh mesh;
  auto& bob = mesh.Agent("bob", json::array({"travel"}));
  RoguePeer rogue(mesh.relay_url());
  RogueSession s = rogue.Open(mesh, bob);
  const std::string knock = rogue.Seal(s, rogue.MakeKnock(s).Serialize());
  auto knock_bytes = Base64Decode(knock);
  REQUIRE(knock_bytes.has_value());
  Bytes flipped = *knock_bytes;
  flipped.back() ^= 0x01;  // the AEAD tag no longer matches
  const Bytes truncated(knock_bytes->begin(), knock_bytes->begin() + 40);
  Bytes noise(100);
  for (std::size_t i = 0; i < noise.size(); ++i) noise[i] = static_cast<std::uint8_t>(i * 7);
  RogueSession not_knock = rogue.Open(mesh, bob);
  RogueSession not_json = rogue.Open(mesh, bob);
  const std::vector<std::pair<const char*, std::string>> garbage = {
      {"not base64", "not base64 !!!"},
      {"noise", Base64Encode(noise)},
      {"truncated prekey message", Base64Encode(truncated)},
      {"prekey message with a bad tag", Base64Encode(flipped)},
      {"first message not a KNOCK",
       rogue.Seal(not_knock, rogue.MakeEnvelope(not_knock, {{"n", 1}}))},
      {"first message not JSON", rogue.Seal(not_json, "{not json")},
  };
  for (const auto& [name, payload] : garbage) {
    INFO(name);
    rogue.SendPayload(s.peer, payload, "knock");
  }
  // The real KNOCK of the session whose copy was spoiled is still accepted: a failed attempt
  // used up nothing (not the one-time prekey, not the session id). The relay keeps the order, so
  // by the ACCEPT bob has handled every piece of garbage.
  rogue.SendPayload(s.peer, knock, "knock");
  auto answer = rogue.Next(s);
  INFO(mesh.log());
  REQUIRE(answer.has_value());
  CHECK(std::holds_alternative<Accept>(*answer));
  CHECK(rogue.skipped() == 0);  // no answer to any of the garbage

  const json sessions = bob.rpc.Call("sessions");
  REQUIRE(sessions["sessions"].size() == 1);
  CHECK(sessions["sessions"][0]["session_id"] == s.id);
  CHECK(CountLines(bob.home() / "logs" / "audit.jsonl", "\"knock.received\"") == 1);
  CHECK(bob.rpc.Call("status")["inbox"]["pending"] == 0);
  std::size_t dropped = 0;
  const std::string log = bob.log();
  for (auto at = log.find("dropping relay message"); at != std::string::npos;
       at = log.find("dropping relay message", at + 1)) {
    ++dropped;
  }
  CHECK(dropped == garbage.size());
  CHECK(log.find("the first message of a session is not a KNOCK") != std::string::npos);

  // A message of the accepted session, relayed by another agent, is not taken as the rogue's.
  RoguePeer courier(mesh.relay_url());
  const std::string stolen = rogue.Seal(s, rogue.MakeEnvelope(s, {{"n", 1}}));
  courier.SendPayload(s.peer, stolen, "message");
  // The two copies travel on different relay connections: the courier's is handled first.
  CHECK(WaitLog(bob, "session belongs to another peer"));
  rogue.SendPayload(s.peer, stolen, "message");
  json got = RecvAll(bob, 1, 10s);
  REQUIRE(got.size() == 1);
  CHECK(got[0]["payload"]["n"] == 1);
  CHECK(got[0]["from"] == rogue.amid().str());
}

TEST_CASE("peer: messages sent ahead of a KNOCK's answer are held only up to a bound",
          "[daemon][peer]") {
  Mesh mesh;
  auto& bob = mesh.Agent("bob", json::array({"travel"}));
  RoguePeer rogue(mesh.relay_url());
  RogueSession s = rogue.Open(mesh, bob);
  // With the registry stopped, bob's lookup of the sender waits (10 s) before the policy decides:
  // everything of the session that arrives meanwhile is held in memory.
  REQUIRE(mesh.registry().process().Stop());
  rogue.SendPayload(s.peer, rogue.Seal(s, rogue.MakeKnock(s).Serialize()), "knock");
  for (int i = 1; i <= 70; ++i) {
    rogue.SendPayload(s.peer, rogue.Seal(s, rogue.MakeEnvelope(s, {{"n", i}})), "message");
  }
  auto answer = rogue.Next(s, 30s);
  mesh.registry().process().Signal(SIGCONT, false);
  INFO(mesh.log());
  REQUIRE(answer.has_value());
  REQUIRE(std::holds_alternative<Accept>(*answer));
  json got = RecvAll(bob, 64, 20s);
  REQUIRE(got.size() == 64);
  for (int i = 0; i < 64; ++i) CHECK(got[i]["payload"]["n"] == i + 1);
  CHECK(bob.rpc.Call("recv", {{"timeout_ms", 500}})["messages"].empty());
  CHECK(bob.log().find("too many messages before its session's KNOCK was answered") !=
        std::string::npos);
}

TEST_CASE("peer: a KNOCK relayed from another identity than its sender is invalid_signature",
          "[daemon][peer]") {
  // A correctly signed KNOCK of one agent, sent over the relay connection of another: the relay
  // vouches for the connection's AMID, and the receiver must not take the KNOCK's word over it.
  Mesh mesh;
  auto& bob = mesh.Agent("bob", json::array({"travel"}));
  RoguePeer author(mesh.relay_url());
  RoguePeer courier(mesh.relay_url());
  RogueSession s = author.Open(mesh, bob);
  const std::string payload = author.Seal(s, author.MakeKnock(s).Serialize());
  courier.SendPayload(s.peer, payload, "knock");
  INFO(mesh.log());
  REQUIRE(WaitAudit(bob, {"\"knock.decided\"", "\"invalid_signature\""}));
  CHECK(SessionState(bob, s.id) == "rejected");
  // The REJECT goes to the connection the KNOCK came from (which cannot read it), not to the
  // agent the KNOCK names.
  auto to_courier = courier.NextFrame();
  REQUIRE(to_courier.has_value());
  CHECK((*to_courier)["from"] == s.peer.str());
  CHECK((*to_courier)["message_type"] == "reject");
  CHECK_FALSE(author.NextFrame(500ms).has_value());
}

TEST_CASE("peer: the receiver enforces the ACCEPT's max_message_size_bytes", "[daemon][peer]") {
  Mesh mesh;
  auto& bob = mesh.Agent("bob", json::array({"travel"}));
  bob.rpc.Call("policy.set",
               {{"policy", {{"default_constraints", {{"max_message_size_bytes", 600}}}}}});
  bob.rpc.Call("subscribe", {{"events", json::array({"session.closed"})}});
  RoguePeer rogue(mesh.relay_url());
  auto [s, constraints] = rogue.Accepted(mesh, bob);
  CHECK(constraints.max_message_size_bytes == 600);

  rogue.SendPayload(s.peer, rogue.Seal(s, rogue.MakeEnvelope(s, {{"n", 1}})), "message");
  const std::string big = rogue.MakeEnvelope(s, {{"x", std::string(1000, 'x')}});
  REQUIRE(big.size() > 600);
  rogue.SendPayload(s.peer, rogue.Seal(s, big), "message");

  auto closed = bob.rpc.WaitEvent("session.closed", 10s);
  INFO(mesh.log());
  REQUIRE(closed.has_value());
  CHECK((*closed)["session"]["session_id"] == s.id);
  CHECK((*closed)["session"]["reason"] == "max_message_size_exceeded");
  json got = RecvAll(bob, 2, 2s);
  REQUIRE(got.size() == 1);  // the small one only
  CHECK(got[0]["payload"]["n"] == 1);
  CHECK(WaitAudit(bob, {"\"constraint.violated\"", "\"max_message_size\""}));
  // The rogue is told the session is over.
  auto told = rogue.Next(s);
  REQUIRE(told.has_value());
  REQUIRE(std::holds_alternative<Envelope>(*told));
  CHECK(std::get<Envelope>(*told).type == EnvelopeType::kClose);
}

TEST_CASE("peer: the receiver enforces the ACCEPT's max_messages", "[daemon][peer]") {
  Mesh mesh;
  auto& bob = mesh.Agent("bob", json::array({"travel"}));
  bob.rpc.Call("policy.set", {{"policy", {{"default_constraints", {{"max_messages", 3}}}}}});
  bob.rpc.Call("subscribe", {{"events", json::array({"session.closed"})}});
  RoguePeer rogue(mesh.relay_url());
  auto [s, constraints] = rogue.Accepted(mesh, bob);
  REQUIRE(constraints.max_messages == 3);
  for (int i = 1; i <= 4; ++i) {
    rogue.SendPayload(s.peer, rogue.Seal(s, rogue.MakeEnvelope(s, {{"n", i}})), "message");
  }
  auto closed = bob.rpc.WaitEvent("session.closed", 10s);
  INFO(mesh.log());
  REQUIRE(closed.has_value());
  CHECK((*closed)["session"]["reason"] == "max_messages_exceeded");
  json got = RecvAll(bob, 4, 2s);
  REQUIRE(got.size() == 3);
  for (int i = 0; i < 3; ++i) CHECK(got[i]["payload"]["n"] == i + 1);
  CHECK(WaitAudit(bob, {"\"constraint.violated\"", "\"max_messages\""}));
}

TEST_CASE("peer: an envelope that fails its signature closes the session unread",
          "[daemon][peer]") {
  Mesh mesh;
  auto& bob = mesh.Agent("bob", json::array({"travel"}));
  bob.rpc.Call("subscribe", {{"events", json::array({"session.closed"})}});
  RoguePeer rogue(mesh.relay_url());
  auto [s, constraints] = rogue.Accepted(mesh, bob);
  REQUIRE(constraints.signed_messages);
  json env = json::parse(rogue.MakeEnvelope(s, {{"amount", 10}}));
  env["payload"]["amount"] = 10000;  // altered after signing
  rogue.SendPayload(s.peer, rogue.Seal(s, env.dump()), "message");
  auto closed = bob.rpc.WaitEvent("session.closed", 10s);
  INFO(mesh.log());
  REQUIRE(closed.has_value());
  CHECK((*closed)["session"]["reason"] == "protocol_violation");
  CHECK(RecvAll(bob, 1, 1s).empty());
  CHECK(WaitAudit(bob, {"\"constraint.violated\"", "\"invalid_envelope\""}));
}

TEST_CASE("peer: replayed ciphertexts and sequence numbers reach the application once",
          "[daemon][peer]") {
  Mesh mesh;
  auto& bob = mesh.Agent("bob", json::array({"travel"}));
  RoguePeer rogue(mesh.relay_url());
  auto [s, constraints] = rogue.Accepted(mesh, bob);
  const std::string first = rogue.Seal(s, rogue.MakeEnvelope(s, {{"n", 1}}));
  rogue.SendPayload(s.peer, first, "message");
  // The same ratchet message under a new relay id: the ratchet refuses it as a replay.
  rogue.SendPayload(s.peer, first, "message");
  // A new ratchet message that repeats sequence 1: the envelope layer drops it.
  --s.next_sequence;
  rogue.SendPayload(s.peer, rogue.Seal(s, rogue.MakeEnvelope(s, {{"n", 100}})), "message");
  rogue.SendPayload(s.peer, rogue.Seal(s, rogue.MakeEnvelope(s, {{"n", 2}})), "message");
  // The relay keeps the order: once n=2 is here, the replays before it have been handled.
  json got = RecvAll(bob, 2, 20s);
  INFO(got.dump() << mesh.log());
  REQUIRE(got.size() == 2);
  CHECK(bob.rpc.Call("recv")["messages"].empty());
  CHECK(got[0]["payload"]["n"] == 1);
  CHECK(got[1]["payload"]["n"] == 2);
  CHECK(SessionState(bob, s.id) == "active");
}

#endif  // AMESH_REGISTRY_BIN
