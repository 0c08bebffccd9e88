#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <forward_list>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/json_scan.hpp"
#include "agentmesh/core/relay_frames.hpp"

using namespace agentmesh;
using namespace agentmesh::relay;
using nlohmann::json;

namespace {

constexpr UnixNanos kNow = 1'790'000'000LL * kNanosPerSecond;  // 2026-09-21T…

ByteView View(std::string_view s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

ConnectFrame ConnectFromJson(const std::string& text) {
  auto frame = ParseClientFrame(text);
  REQUIRE(frame);
  REQUIRE(std::holds_alternative<ConnectFrame>(*frame));
  return std::get<ConnectFrame>(*frame);
}

ConnectFrame SignedConnect(const Ed25519KeyPair& id, std::string timestamp,
                           std::string signed_text) {
  ConnectFrame frame;
  frame.protocol = "agentmesh/0.2";
  frame.amid = Amid::FromPublicKey(id.public_key).str();
  frame.public_key = FormatEd25519Key(id.public_key, false);
  frame.timestamp = std::move(timestamp);
  frame.signature = FormatSignature(Sign(id.secret, View(signed_text)));
  return frame;
}

}  // namespace

TEST_CASE("send frames keep the payload token verbatim", "[relayframes]") {
  const std::string text =
      R"({"type":"send","to":"jZ6CK1dpcZD4oPYScUJvifP7BtJ","encrypted_payload":"QUJD\/x+==",)"
      R"("message_type":"knock","id":"c-1","ice_candidates":[{"candidate":"x"}]})";
  auto frame = ParseClientFrame(text);
  REQUIRE(frame);
  const auto& send = std::get<SendFrame>(*frame);
  CHECK(send.to == "jZ6CK1dpcZD4oPYScUJvifP7BtJ");
  CHECK(send.payload_token == R"("QUJD\/x+==")");
  CHECK(send.message_type == MessageType::kKnock);
  CHECK(send.id == "c-1");
  CHECK(send.ice_candidates == R"([{"candidate":"x"}])");

  std::string out;
  AppendReceive(out, "FROM", send.payload_token, send.message_type, "2026-01-01T00:00:00Z", "m-1",
                send.ice_candidates);
  auto parsed = json::parse(out);
  CHECK(parsed["type"] == "receive");
  CHECK(parsed["from"] == "FROM");
  CHECK(parsed["encrypted_payload"] == "QUJD/x+==");
  CHECK(parsed["message_type"] == "knock");
  CHECK(parsed["message_id"] == "m-1");
  CHECK(parsed["ice_candidates"][0]["candidate"] == "x");
}

TEST_CASE("client frames: every type parses, bad ones name the field", "[relayframes]") {
  CHECK(std::holds_alternative<PresenceFrame>(
      *ParseClientFrame(R"({"type":"presence","status":"dnd"})")));
  CHECK(std::holds_alternative<PresenceQueryFrame>(
      *ParseClientFrame(R"({"type":"presence_query","amid":"x"})")));
  CHECK(std::holds_alternative<PingFrame>(*ParseClientFrame(R"({"type":"ping"})")));
  CHECK(std::holds_alternative<DisconnectFrame>(*ParseClientFrame(R"({"type":"disconnect"})")));
  CHECK(std::holds_alternative<GetPendingFrame>(
      *ParseClientFrame(R"({"type":"get_pending_messages","limit":5})")));
  CHECK(std::holds_alternative<NackFrame>(
      *ParseClientFrame(R"({"type":"nack","message_id":"a","reason":"undecryptable"})")));
  auto ice = ParseClientFrame(R"({"type":"ice_offer","to":"B","sdp":"v=0","candidates":[]})");
  REQUIRE(ice);
  CHECK(std::get<IceFrame>(*ice).sdp_token == R"("v=0")");
  auto p2p = ParseClientFrame(R"({"type":"p2_p_established","peer":"B"})");
  REQUIRE(p2p);
  CHECK(std::get<P2pEstablishedFrame>(*p2p).peer == "B");
  auto ack = ParseClientFrame(R"({"type":"ack","message_ids":["a","b\u0063"]})");
  REQUIRE(ack);
  CHECK(std::get<AckFrame>(*ack).message_ids == std::vector<std::string_view>{"a", "bc"});

  const std::pair<const char*, const char*> bad[] = {
      {R"({"type":"warp"})", "type"},
      {R"({"to":"x"})", "type"},
      {R"({"type":5})", "type"},
      {R"({"type":"send","encrypted_payload":"x"})", "to"},
      {R"({"type":"send","to":"x"})", "encrypted_payload"},
      {R"({"type":"send","to":"x","encrypted_payload":5})", "encrypted_payload"},
      {R"({"type":"send","to":"x","encrypted_payload":"p","message_type":"spam"})", "message_type"},
      {R"({"type":"send","to":"x","encrypted_payload":"p","ice_candidates":"no"})",
       "ice_candidates"},
      {R"({"type":"send","to":"x","encrypted_payload":"p","id":""})", "id"},
      {R"({"type":"send","to":"\u0078","encrypted_payload":"p"})", "to"},
      {R"({"type":"connect","amid":"a","public_key":"k","timestamp":"t","signature":"s"})",
       "protocol"},
      {R"({"type":"connect","protocol":"agentmesh/1","amid":"a","public_key":"k","timestamp":"t","signature":"s","p2p_capable":"yes"})",
       "p2p_capable"},
      {R"({"type":"presence","status":"sleeping"})", "status"},
      {R"({"type":"ack"})", "message_id"},
      {R"({"type":"ack","message_ids":[1]})", "message_ids"},
      {R"({"type":"get_pending_messages","limit":0})", "limit"},
      {R"({"type":"get_pending_messages","limit":-1})", "limit"},
      {R"({"type":"ice_answer","to":"B"})", "sdp"},
  };
  for (auto [text, field] : bad) {
    INFO(text);
    auto r = ParseClientFrame(text);
    REQUIRE_FALSE(r);
    CHECK(r.error().field == field);
  }
  for (const char* garbage : {"", "null", "[]", "{", "{\"type\":\"send\"", "\xff\xfe"}) {
    CHECK_FALSE(ParseClientFrame(garbage));
  }
}

TEST_CASE("ack ids are views into the frame, escaped ids survive a move", "[relayframes]") {
  const std::string text =
      R"({"type":"ack","message_id":"x\u0031","message_ids":[ "0b7c1a52-0000-4000-8000-00000000000a" ,)"
      R"("id-2","\u0069d-\u0033"]})";
  auto parsed = ParseClientFrame(text);
  REQUIRE(parsed);
  AckFrame ack = std::move(std::get<AckFrame>(*parsed));
  parsed = ParseClientFrame(R"({"type":"ping"})");  // the variant's old storage is gone
  REQUIRE(ack.message_ids.size() == 4);
  CHECK(ack.message_ids[0] == "x1");
  CHECK(ack.message_ids[1] == "0b7c1a52-0000-4000-8000-00000000000a");
  CHECK(ack.message_ids[2] == "id-2");
  CHECK(ack.message_ids[3] == "id-3");
  // Unescaped ids point into the frame text itself: no copy was made.
  const auto inside = [&](std::string_view v) {
    return v.data() >= text.data() && v.data() + v.size() <= text.data() + text.size();
  };
  CHECK(inside(ack.message_ids[1]));
  CHECK(inside(ack.message_ids[2]));
  CHECK_FALSE(inside(ack.message_ids[0]));
  CHECK_FALSE(inside(ack.message_ids[3]));

  std::string many = R"({"type":"ack","message_ids":[)";
  for (int i = 0; i < 256; ++i) many += (i ? ",\"" : "\"") + std::to_string(i) + "\"";
  const std::string max_text = many + "]}";  // ids are views: the text must outlive them
  auto max = ParseClientFrame(max_text);
  REQUIRE(max);
  CHECK(std::get<AckFrame>(*max).message_ids.size() == 256);
  CHECK(std::get<AckFrame>(*max).message_ids[255] == "255");
  auto over = ParseClientFrame(many + R"(,"256"]})");
  REQUIRE_FALSE(over);
  CHECK(over.error().field == "message_ids");

  // Not JSON at all: refused by the scanner before the ack is looked at.
  CHECK_FALSE(ParseClientFrame(R"({"type":"ack","message_ids":["a",]})"));
  CHECK_FALSE(ParseClientFrame(R"({"type":"ack","message_ids":["a" "b"]})"));
  for (const char* bad :
       {R"({"type":"ack","message_ids":["a",null]})", R"({"type":"ack","message_ids":[""]})",
        R"({"type":"ack","message_ids":[]})", R"({"type":"ack","message_ids":"a"})"}) {
    INFO(bad);
    auto r = ParseClientFrame(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().field.starts_with("message_id"));
  }
  std::string long_id = R"({"type":"ack","message_ids":[")" + std::string(65, 'a') + R"("]})";
  CHECK_FALSE(ParseClientFrame(long_id));
}

TEST_CASE("send frames parse the same on the one-pass and the general path", "[relayframes]") {
  // The first form takes the one-pass path; the others (escaped names or values, null
  // ice_candidates, duplicates) take the general one. All must give the same frame.
  const std::vector<std::string> forms = {
      R"({"type":"send","to":"B","encrypted_payload":"p\n","message_type":"knock","id":"ab"})",
      R"({"type":"send","\u0074o":"B","encrypted_payload":"p\n","message_type":"knock","id":"ab"})",
      R"({"type":"send","to":"B","encrypted_payload":"p\n","message_type":"kn\u006fck","id":"ab"})",
      R"({"type":"send","to":"B","encrypted_payload":"p\n","message_type":"knock","id":"a\u0062"})",
      R"({"type":"send","to":"A","encrypted_payload":"p\n","message_type":"knock","id":"ab","to":"B"})",
      R"({"type":"send","to":"B","encrypted_payload":"p\n","message_type":"knock","id":"ab","ice_candidates":null})",
  };
  for (const auto& text : forms) {
    INFO(text);
    auto parsed = ParseClientFrame(text);
    REQUIRE(parsed);
    const auto& f = std::get<SendFrame>(*parsed);
    CHECK(f.to == "B");
    CHECK(f.payload_token == R"("p\n")");
    CHECK(f.message_type == MessageType::kKnock);
    CHECK(f.id == std::optional<std::string>("ab"));
    CHECK(f.ice_candidates.empty());
  }
  const std::pair<const char*, const char*> bad[] = {
      {R"({"type":"send","to":5,"encrypted_payload":"p"})", "to"},
      {R"({"type":"send","to":"\u0042","encrypted_payload":"p"})", "to"},
      {R"({"type":"send","to":"B","encrypted_payload":"p","message_type":7})", "message_type"},
      {R"({"type":"send","to":"B","encrypted_payload":"p","id":")"
       R"(0123456789012345678901234567890123456789012345678901234567890123456789"})",
       "id"},
      {R"({"type":"send","to":"B","encrypted_payload":"p","id":7})", "id"},
      {R"({"type":"send","to":"B","encrypted_payload":"p","ice_candidates":{}})", "ice_candidates"},
  };
  for (auto [text, field] : bad) {
    INFO(text);
    auto r = ParseClientFrame(text);
    REQUIRE_FALSE(r);
    CHECK(r.error().field == field);
  }
}

TEST_CASE("ParseStringArray and ParseStringArrayViews agree", "[jsonscan]") {
  for (const char* raw : {R"([])", R"( [ "a" , "b\n" ] )", R"(["\ud83d\ude00","é"])"}) {
    INFO(raw);
    auto owned = ParseStringArray(raw, 10);
    REQUIRE(owned);
    std::vector<std::string_view> views;
    std::forward_list<std::string> decoded;
    REQUIRE(ParseStringArrayViews(raw, 10, views, decoded));
    CHECK(std::vector<std::string>(views.begin(), views.end()) == *owned);
  }
  for (const char* raw :
       {R"(["a"] x)", R"(["a",])", R"([1])", R"({"a":1})", R"(["\x"])", "[\"\xff\"]", R"(["a")"}) {
    INFO(raw);
    CHECK_FALSE(ParseStringArray(raw, 10));
    std::vector<std::string_view> views;
    std::forward_list<std::string> decoded;
    CHECK_FALSE(ParseStringArrayViews(raw, 10, views, decoded));
  }
  auto limited = ParseStringArray(R"(["a","b","c"])", 2);
  REQUIRE_FALSE(limited);
  CHECK(limited.error().code == Code::kLimitExceeded);
}

TEST_CASE("CONNECT built by the client verifies", "[relayframes]") {
  DeterministicRng rng(7);
  auto id = Ed25519KeyPair::Generate(rng);
  const std::string text = BuildConnectFrame(id, kNow, true);
  const ConnectFrame frame = ConnectFromJson(text);
  CHECK(frame.protocol == "agentmesh/1");
  CHECK(frame.p2p_capable);
  auto verified = VerifyConnect(frame, kNow + 5 * kNanosPerSecond);
  REQUIRE(verified);
  CHECK(verified->amid == Amid::FromPublicKey(id.public_key));
}

TEST_CASE("CONNECT accepts the raw and the chrono-canonical signed string", "[relayframes]") {
  DeterministicRng rng(8);
  auto id = Ed25519KeyPair::Generate(rng);
  const std::string z = FormatRfc3339Z(kNow + 555 * kNanosPerMilli);
  const std::string canonical = FormatChronoCanonical(kNow + 555 * kNanosPerMilli);
  REQUIRE(z != canonical);
  // TypeScript SDK: signs and sends the same "…Z" string.
  CHECK(VerifyConnect(SignedConnect(id, z, z), kNow));
  // Reference relay clients: the server re-renders to "+00:00" before verifying.
  CHECK(VerifyConnect(SignedConnect(id, z, canonical), kNow));
  // Prefixed key is fine too.
  auto prefixed = SignedConnect(id, z, z);
  prefixed.public_key = FormatEd25519Key(id.public_key, true);
  CHECK(VerifyConnect(prefixed, kNow));
}

TEST_CASE("CONNECT failures carry the right wire code", "[relayframes]") {
  DeterministicRng rng(9);
  auto id = Ed25519KeyPair::Generate(rng);
  auto other = Ed25519KeyPair::Generate(rng);
  const std::string ts = FormatRfc3339Seconds(kNow);
  auto good = SignedConnect(id, ts, ts);
  REQUIRE(VerifyConnect(good, kNow));

  auto expect = [](const ConnectFrame& f, UnixNanos now, ErrorCode code) {
    auto r = VerifyConnect(f, now);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == code);
    CHECK_FALSE(r.error().message.empty());
  };
  auto f = good;
  f.protocol = "agentmesh/9";
  expect(f, kNow, ErrorCode::kProtocolMismatch);
  f = good;
  f.amid = Amid::FromPublicKey(other.public_key).str();
  expect(f, kNow, ErrorCode::kInvalidSignature);
  f = good;
  f.public_key = FormatX25519Key(X25519PublicKey(), true);
  expect(f, kNow, ErrorCode::kInvalidSignature);
  f = good;
  f.public_key = "not base64";
  expect(f, kNow, ErrorCode::kInvalidSignature);
  f = good;
  f.signature = "AAAA";
  expect(f, kNow, ErrorCode::kInvalidSignature);
  f = SignedConnect(other, ts, ts);
  f.amid = good.amid;
  f.public_key = good.public_key;  // signature by another key
  expect(f, kNow, ErrorCode::kInvalidSignature);
  f = good;
  f.timestamp = "yesterday";
  expect(f, kNow, ErrorCode::kInvalidSignature);
  // Window: 300 s in the past, 60 s in the future.
  CHECK(VerifyConnect(good, kNow + 300 * kNanosPerSecond));
  expect(good, kNow + 301 * kNanosPerSecond, ErrorCode::kInvalidSignature);
  CHECK(VerifyConnect(good, kNow - 60 * kNanosPerSecond));
  expect(good, kNow - 61 * kNanosPerSecond, ErrorCode::kInvalidSignature);
  // A signature over a different timestamp does not verify.
  expect(SignedConnect(id, ts, FormatRfc3339Seconds(kNow + kNanosPerSecond)), kNow,
         ErrorCode::kInvalidSignature);
}

TEST_CASE("relay output frames are valid JSON with the reference field names", "[relayframes]") {
  std::string out;
  AppendConnected(out, "5b0e-uuid", 2);
  CHECK(json::parse(out) ==
        json{{"type", "connected"}, {"session_id", "5b0e-uuid"}, {"pending_messages", 2}});
  out.clear();
  AppendError(out, ErrorCode::kRateLimited, "Rate \"limit\" exceeded", 37, "c-1");
  CHECK(json::parse(out) == json{{"type", "error"},
                                 {"code", "RATE_LIMITED"},
                                 {"message", "Rate \"limit\" exceeded"},
                                 {"retry_after_seconds", 37},
                                 {"id", "c-1"}});
  out.clear();
  AppendSendResult(out, "c-1", "m-1", SendStatus::kRefused, ErrorCode::kQueueFull);
  CHECK(json::parse(out) == json{{"type", "send_result"},
                                 {"id", "c-1"},
                                 {"message_id", "m-1"},
                                 {"status", "refused"},
                                 {"code", "QUEUE_FULL"}});
  out.clear();
  AppendReceipt(out, "c-1", "m-1", true);
  CHECK(json::parse(out)["status"] == "acked");
  out.clear();
  AppendPresenceResponse(out, "A", PresenceStatus::kOffline, std::nullopt);
  CHECK(json::parse(out) ==
        json{{"type", "presence_response"}, {"amid", "A"}, {"status", "offline"}});
  out.clear();
  AppendPong(out, R"("2026-01-01T00:00:00Z")");
  CHECK(json::parse(out)["timestamp"] == "2026-01-01T00:00:00Z");
  out.clear();
  AppendIce(out, false, "A", R"("v=0")", "");
  CHECK(json::parse(out) ==
        json{{"type", "ice_offer"}, {"to", "A"}, {"sdp", "v=0"}, {"candidates", json::array()}});
  out.clear();
  AppendP2pEstablished(out, "A");
  CHECK(json::parse(out) == json{{"type", "p2_p_established"}, {"peer", "A"}});
}

TEST_CASE("pending_messages frames carry the SDK's and our id names", "[relayframes]") {
  std::string out;
  const PendingEntry entries[] = {{"m1", "A", R"("cGF5")", "message", "2026-01-01T00:00:00Z"},
                                  {"m2", "B", R"("eA==")", "knock", "2026-01-01T00:00:01Z"}};
  AppendPendingMessages(out, entries, 3);
  auto parsed = json::parse(out);
  CHECK(parsed["type"] == "pending_messages");
  REQUIRE(parsed["messages"].size() == 2);
  CHECK(parsed["messages"][0]["message_id"] == "m1");
  CHECK(parsed["messages"][0]["id"] == "m1");
  CHECK(parsed["messages"][1]["encrypted_payload"] == "eA==");
  CHECK(parsed["remaining"] == 3);
  out.clear();
  AppendPendingMessages(out, {}, 0);
  CHECK(json::parse(out)["messages"].empty());
}
