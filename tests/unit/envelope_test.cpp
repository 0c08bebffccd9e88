#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <variant>
#include <vector>

#include <nlohmann/json.hpp>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/envelope.hpp"
#include "agentmesh/core/knock.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

struct Peer {
  Ed25519KeyPair signing;
  X25519KeyPair exchange;
  Amid amid;
};

Peer PeerFromRng(std::uint64_t seed) {
  DeterministicRng rng(seed);
  Ed25519KeyPair signing = Ed25519KeyPair::Generate(rng);
  X25519KeyPair exchange = X25519KeyPair::Generate(rng);
  Amid amid = Amid::FromPublicKey(signing.public_key);
  return Peer{std::move(signing), std::move(exchange), std::move(amid)};
}

Peer PeerFromHex(const json& keys) {
  Ed25519Seed seed;
  REQUIRE(Ed25519Seed::FromBytes(*HexDecode(keys["ed25519_seed_hex"].get<std::string>()), seed));
  X25519SecretKey x;
  REQUIRE(X25519SecretKey::FromBytes(*HexDecode(keys["x25519_secret_hex"].get<std::string>()), x));
  Ed25519KeyPair signing = Ed25519KeyPair::FromSeed(seed);
  X25519KeyPair exchange = X25519KeyPair::FromSecret(std::move(x));
  Amid amid = Amid::FromPublicKey(signing.public_key);
  CHECK(amid.str() == keys["amid"].get<std::string>());
  return Peer{std::move(signing), std::move(exchange), std::move(amid)};
}

json LoadEnvelopeVectors() {
  std::ifstream in(std::string(AGENTMESH_VECTORS_DIR) + "/envelope.json");
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  json doc = json::parse(text.str(), nullptr, false);
  REQUIRE_FALSE(doc.is_discarded());
  return doc;
}

const UnixNanos kT0 = 1769947202LL * kNanosPerSecond;  // 2026-02-01T12:00:02Z
constexpr const char* kSession = "0f8e1c2a-4b7d-4e21-9a3b-5c6d7e8f9a0b";

json::json_pointer Ptr(std::string_view dotted) {
  std::string p = "/";
  for (char c : dotted) p += (c == '.') ? '/' : c;
  return json::json_pointer(p);
}

struct Fixture {
  Peer alice = PeerFromRng(201);
  Peer bob = PeerFromRng(202);
  Peer carol = PeerFromRng(203);

  EnvelopeParams Params(EnvelopeType type = EnvelopeType::kRequest,
                        json payload = {{"q", "flights TLV-BER"}, {"n", 2}}) {
    return EnvelopeParams{.session_id = kSession,
                          .sequence = 1,
                          .from = alice.amid,
                          .to = bob.amid,
                          .type = type,
                          .timestamp = kT0,
                          .payload = std::move(payload)};
  }
  Envelope Signed() {
    auto e = BuildSignedEnvelope(Params(), alice.signing);
    REQUIRE(e);
    return *e;
  }
  Envelope Unsigned() {
    auto e = BuildUnsignedEnvelope(Params());
    REQUIRE(e);
    return *e;
  }
  // What Bob's daemon knows about the session with Alice.
  EnvelopeCheck Check(bool signed_messages = true) {
    return EnvelopeCheck{.session_id = kSession,
                         .sender = alice.amid,
                         .receiver = bob.amid,
                         .sender_key = alice.signing.public_key,
                         .signed_messages = signed_messages};
  }
};

void RequireFieldError(const Error& e, Code code, std::string_view field) {
  INFO(e.ToString());
  CHECK(e.code == code);
  CHECK(e.field == field);
  CHECK_FALSE(e.message.empty());
}

}  // namespace

TEST_CASE("envelope vectors are recomputed byte for byte", "[envelope]") {
  const json doc = LoadEnvelopeVectors();
  const Peer initiator = PeerFromHex(doc["keys"]["initiator"]);
  const Peer responder = PeerFromHex(doc["keys"]["responder"]);
  REQUIRE(doc["envelopes"].size() >= 5);
  for (const json& v : doc["envelopes"]) {
    INFO(v["name"].get<std::string>());
    const json& in = v["inputs"];
    const Peer& from = in["from"] == "initiator" ? initiator : responder;
    const Peer& to = in["from"] == "initiator" ? responder : initiator;
    EnvelopeParams p{.session_id = in["session_id"].get<std::string>(),
                     .sequence = in["sequence"].get<std::uint64_t>(),
                     .from = from.amid,
                     .to = to.amid,
                     .type = *ParseEnvelopeType(in["type"].get<std::string>()),
                     .timestamp = *ParseRfc3339(in["timestamp"].get<std::string>()),
                     .payload = in["payload"]};
    const bool is_signed = in["signed"].get<bool>();
    auto built = is_signed ? BuildSignedEnvelope(p, from.signing) : BuildUnsignedEnvelope(p);
    REQUIRE(built);
    CHECK(*SigningInput(built->Object()) == v["signing_string"].get<std::string>());
    CHECK(built->Serialize() == v["serialized"].get<std::string>());
    if (is_signed) {
      CHECK(built->Object()["signature"] == v["signature"]);
    } else {
      CHECK(v["signature"].is_null());
      CHECK_FALSE(built->Object().contains("signature"));
    }
    // The receiver's view.
    auto parsed = ParseEnvelope(v["serialized"].get<std::string>());
    REQUIRE(parsed);
    const EnvelopeCheck check{.session_id = p.session_id,
                              .sender = from.amid,
                              .receiver = to.amid,
                              .sender_key = from.signing.public_key,
                              .signed_messages = is_signed};
    CHECK(VerifyEnvelope(*parsed, check, p.timestamp));
  }
}

TEST_CASE("envelope round trips, signed and unsigned", "[envelope]") {
  Fixture f;
  for (bool is_signed : {true, false}) {
    INFO("signed " << is_signed);
    const Envelope e = is_signed ? f.Signed() : f.Unsigned();
    const std::string text = e.Serialize();
    auto parsed = ParseEnvelope(text);
    REQUIRE(parsed);
    CHECK(parsed->Serialize() == text);
    CHECK(parsed->wire_size == text.size());
    CHECK(e.wire_size == text.size());
    CHECK(parsed->session_id == kSession);
    CHECK(parsed->sequence == 1u);
    CHECK(parsed->from == f.alice.amid);
    CHECK(parsed->to == f.bob.amid);
    CHECK(parsed->type == EnvelopeType::kRequest);
    CHECK(parsed->timestamp == kT0);
    CHECK(parsed->payload == json{{"q", "flights TLV-BER"}, {"n", 2}});
    CHECK(parsed->signature.has_value() == is_signed);
    CHECK(e.Object().contains("signature") == is_signed);
    CHECK(VerifyEnvelope(*parsed, f.Check(is_signed), kT0));
  }
}

TEST_CASE("envelope: a built envelope carries no DOM, and Object() and Verify work from its text",
          "[envelope]") {
  Fixture f;
  for (bool is_signed : {true, false}) {
    INFO("signed " << is_signed);
    const Envelope e = is_signed ? f.Signed() : f.Unsigned();
    CHECK(e.object.is_null());  // the builders do not pay for a second copy of the payload
    CHECK(e.payload == json{{"q", "flights TLV-BER"}, {"n", 2}});
    const json object = e.Object();
    REQUIRE(object.is_object());
    CHECK(object == json::parse(e.Serialize()));
    CHECK(object["payload"] == e.payload);
    CHECK(object.contains("signature") == is_signed);
    // Verify straight on the built value, as on the parsed one.
    CHECK(VerifyEnvelope(e, f.Check(is_signed), kT0));
    // The other session kind refuses it either way.
    CHECK_FALSE(VerifyEnvelope(e, f.Check(!is_signed), kT0));
  }
  // A parsed envelope keeps its DOM, and Object() returns it.
  auto parsed = ParseEnvelope(f.Signed().Serialize());
  REQUIRE(parsed);
  CHECK(parsed->object.is_object());
  CHECK(parsed->Object() == parsed->object);
}

TEST_CASE("envelope: every missing required member is named", "[envelope]") {
  Fixture f;
  const json base = f.Signed().Object();
  for (const char* key : {"session_id", "sequence", "from", "to", "type", "timestamp", "payload"}) {
    INFO(key);
    json j = base;
    j.erase(key);
    auto r = ParseEnvelope(j);
    REQUIRE_FALSE(r);
    RequireFieldError(r.error(), Code::kInvalidArgument, key);
    CHECK(ParseEnvelope(j.dump()).error().field == key);
  }
  // The signature is optional at parse time (its presence is a session property).
  json j = base;
  j.erase("signature");
  CHECK(ParseEnvelope(j));
}

TEST_CASE("envelope: wrong JSON types and bad values are named", "[envelope]") {
  Fixture f;
  const json base = f.Signed().Object();
  const std::vector<std::pair<const char*, json>> cases = {
      {"session_id", 1},
      {"session_id", "not-a-uuid"},
      {"sequence", "1"},
      {"sequence", 1.5},
      {"sequence", 1.0},
      {"sequence", 0},
      {"sequence", -1},
      {"sequence", std::uint64_t{1} << 53},
      {"sequence", true},
      {"from", 1},
      {"from", "not base58 0OIl"},
      {"to", nullptr},
      {"type", 1},
      {"type", "chat"},
      {"type", "knock"},
      {"type", "REQUEST"},
      {"timestamp", 1769947202},
      {"timestamp", "2026-02-01"},
      {"payload", json::array()},
      {"payload", "text"},
      {"payload", 5},
      {"payload", nullptr},
      {"signature", 7},
      {"signature", "AAAA"},
      {"signature", nullptr},
  };
  for (const auto& [key, value] : cases) {
    INFO(key << " = " << value.dump());
    json j = base;
    j[key] = value;
    auto r = ParseEnvelope(j);
    REQUIRE_FALSE(r);
    RequireFieldError(r.error(), Code::kInvalidArgument, key);
  }
  // Largest sequence.
  json j = base;
  j["sequence"] = kMaxSequence;
  auto big = ParseEnvelope(j);
  REQUIRE(big);
  CHECK(big->sequence == kMaxSequence);
}

TEST_CASE("envelope payload must be an object and close and error have required members",
          "[envelope]") {
  Fixture f;
  auto not_object =
      BuildSignedEnvelope(f.Params(EnvelopeType::kRequest, json::array({1})), f.alice.signing);
  REQUIRE_FALSE(not_object);
  RequireFieldError(not_object.error(), Code::kInvalidArgument, "payload");

  auto close_ok = BuildSignedEnvelope(
      f.Params(EnvelopeType::kClose, MakeClosePayload("completed", "done")), f.alice.signing);
  REQUIRE(close_ok);
  CHECK(close_ok->payload == json{{"reason", "completed"}, {"summary", "done"}});
  CHECK(MakeClosePayload("timeout") == json{{"reason", "timeout"}});

  auto close_bad =
      BuildSignedEnvelope(f.Params(EnvelopeType::kClose, json::object()), f.alice.signing);
  REQUIRE_FALSE(close_bad);
  RequireFieldError(close_bad.error(), Code::kInvalidArgument, "payload.reason");
  CHECK(ValidatePayload(EnvelopeType::kClose, {{"reason", ""}}).error().field == "payload.reason");
  CHECK(ValidatePayload(EnvelopeType::kClose, {{"reason", 1}}).error().field == "payload.reason");

  const json error_payload = MakeErrorPayload("CAPABILITY_UNAVAILABLE", "later", 60);
  CHECK(error_payload == json{{"code", "CAPABILITY_UNAVAILABLE"},
                              {"message", "later"},
                              {"retry_after_seconds", 60}});
  CHECK(ValidatePayload(EnvelopeType::kError, error_payload));
  CHECK(ValidatePayload(EnvelopeType::kError, MakeErrorPayload("X", "y")));
  CHECK(ValidatePayload(EnvelopeType::kError, {{"message", "m"}}).error().field == "payload.code");
  CHECK(ValidatePayload(EnvelopeType::kError, {{"code", "C"}}).error().field == "payload.message");
  CHECK(ValidatePayload(EnvelopeType::kError, {{"code", "C"}, {"message", 3}}).error().field ==
        "payload.message");
  for (auto t :
       {EnvelopeType::kRequest, EnvelopeType::kResponse, EnvelopeType::kStatus,
        EnvelopeType::kCapabilityNegotiation, EnvelopeType::kCapabilityNegotiationResponse}) {
    CHECK(ValidatePayload(t, json::object()));
    CHECK(ValidatePayload(t, json::array()).error().field == "payload");
  }
  // Parsing applies the payload rules too.
  json j = close_ok->Object();
  j["payload"].erase("reason");
  CHECK(ParseEnvelope(j).error().field == "payload.reason");
}

TEST_CASE("envelope types have stable names", "[envelope]") {
  const std::vector<std::pair<EnvelopeType, std::string_view>> names = {
      {EnvelopeType::kRequest, "request"},
      {EnvelopeType::kResponse, "response"},
      {EnvelopeType::kStatus, "status"},
      {EnvelopeType::kError, "error"},
      {EnvelopeType::kClose, "close"},
      {EnvelopeType::kCapabilityNegotiation, "capability_negotiation"},
      {EnvelopeType::kCapabilityNegotiationResponse, "capability_negotiation_response"}};
  for (const auto& [type, name] : names) {
    CHECK(EnvelopeTypeName(type) == name);
    CHECK(*ParseEnvelopeType(name) == type);
  }
  CHECK(ParseEnvelopeType("encrypted").error().code == Code::kInvalidArgument);
}

TEST_CASE("VerifyEnvelope checks the session's parties and signing mode", "[envelope]") {
  Fixture f;
  const Envelope e = f.Signed();
  CHECK(VerifyEnvelope(e, f.Check(), kT0));

  EnvelopeCheck c = f.Check();
  c.session_id = "3b241101-e2bb-4255-8caf-4136c566a962";
  RequireFieldError(VerifyEnvelope(e, c, kT0).error(), Code::kInvalidArgument, "session_id");

  c = f.Check();
  c.sender = f.carol.amid;
  c.sender_key = f.carol.signing.public_key;
  RequireFieldError(VerifyEnvelope(e, c, kT0).error(), Code::kAuthFailed, "from");

  c = f.Check();
  c.receiver = f.carol.amid;
  auto to = VerifyEnvelope(e, c, kT0);
  RequireFieldError(to.error(), Code::kPermissionDenied, "to");
  CHECK(to.error().message == "envelope addressed to another agent");

  // A sender key that is not the sender's.
  c = f.Check();
  c.sender_key = f.carol.signing.public_key;
  RequireFieldError(VerifyEnvelope(e, c, kT0).error(), Code::kAuthFailed, "from");

  // Signed session, unsigned envelope.
  const Envelope u = f.Unsigned();
  RequireFieldError(VerifyEnvelope(u, f.Check(true), kT0).error(), Code::kAuthFailed, "signature");
  // Unsigned session, signed envelope: the member must be absent.
  RequireFieldError(VerifyEnvelope(e, f.Check(false), kT0).error(), Code::kInvalidArgument,
                    "signature");
  CHECK(VerifyEnvelope(u, f.Check(false), kT0));

  // A signed envelope from Carol (well formed, her own key) on Alice's session.
  EnvelopeParams p = f.Params();
  p.from = f.carol.amid;
  auto carol = BuildSignedEnvelope(p, f.carol.signing);
  REQUIRE(carol);
  RequireFieldError(VerifyEnvelope(*carol, f.Check(), kT0).error(), Code::kAuthFailed, "from");
}

TEST_CASE("envelope: tampering with any member after signing fails verification", "[envelope]") {
  Fixture f;
  const json base = f.Signed().Object();
  const std::vector<std::pair<const char*, json>> edits = {
      {"sequence", 2},
      {"type", "response"},
      {"timestamp", "2026-02-01T12:00:03Z"},
      {"payload", json{{"q", "flights TLV-BER"}, {"n", 3}}},
      {"payload.q", "flights TLV-CDG"},
      {"payload.n", 2.5},
      {"payload.extra", true},
      {"x_unknown", "added after signing"},
  };
  for (const auto& [path, value] : edits) {
    INFO(path << " = " << value.dump());
    json j = base;
    j[Ptr(path)] = value;
    auto e = ParseEnvelope(j);
    REQUIRE(e);
    RequireFieldError(VerifyEnvelope(*e, f.Check(), kT0).error(), Code::kAuthFailed, "signature");
  }
  // session_id and `to` edits, with a check that matches them, fail on the signature too.
  json j = base;
  j["session_id"] = "3b241101-e2bb-4255-8caf-4136c566a962";
  auto moved = ParseEnvelope(j);
  REQUIRE(moved);
  EnvelopeCheck c = f.Check();
  c.session_id = "3b241101-e2bb-4255-8caf-4136c566a962";
  RequireFieldError(VerifyEnvelope(*moved, c, kT0).error(), Code::kAuthFailed, "signature");

  j = base;
  j["to"] = f.carol.amid.str();
  auto readdressed = ParseEnvelope(j);
  REQUIRE(readdressed);
  c = f.Check();
  c.receiver = f.carol.amid;
  RequireFieldError(VerifyEnvelope(*readdressed, c, kT0).error(), Code::kAuthFailed, "signature");

  // Removing a payload member.
  j = base;
  j["payload"].erase("n");
  RequireFieldError(VerifyEnvelope(*ParseEnvelope(j), f.Check(), kT0).error(), Code::kAuthFailed,
                    "signature");
}

TEST_CASE("envelope: unknown members signed by the sender are preserved", "[envelope]") {
  Fixture f;
  json j = f.Signed().Object();
  j["x_trace_id"] = "abc";
  REQUIRE(SignObject(j, f.alice.signing.secret));
  auto e = ParseEnvelope(j.dump());
  REQUIRE(e);
  CHECK(VerifyEnvelope(*e, f.Check(), kT0));
  CHECK(e->Serialize().find("\"x_trace_id\":\"abc\"") != std::string::npos);
  json stripped = e->Object();
  stripped.erase("x_trace_id");
  RequireFieldError(VerifyEnvelope(*ParseEnvelope(stripped), f.Check(), kT0).error(),
                    Code::kAuthFailed, "signature");
}

TEST_CASE("envelope size limits", "[envelope]") {
  Fixture f;
  EnvelopeParams p = f.Params(EnvelopeType::kResponse, {{"blob", std::string(2000, 'b')}});
  p.max_message_size_bytes = 1024;
  auto too_big = BuildSignedEnvelope(p, f.alice.signing);
  REQUIRE_FALSE(too_big);
  CHECK(too_big.error().code == Code::kLimitExceeded);
  CHECK(BuildUnsignedEnvelope(p).error().code == Code::kLimitExceeded);

  p.max_message_size_bytes = 4096;
  auto fits = BuildSignedEnvelope(p, f.alice.signing);
  REQUIRE(fits);
  const std::string text = fits->Serialize();
  CHECK(fits->wire_size == text.size());

  // Text over the parser's limit is refused before parsing.
  auto r = ParseEnvelope(text, text.size() - 1);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Code::kLimitExceeded);
  CHECK(ParseEnvelope(text, text.size()));
  const std::string huge(kMaxEnvelopeBytesCap + 1, ' ');
  CHECK(ParseEnvelope(std::string_view(huge), kMaxEnvelopeBytesCap * 4).error().code ==
        Code::kLimitExceeded);

  // The session's constraint is checked on the received size.
  auto parsed = ParseEnvelope(text);
  REQUIRE(parsed);
  EnvelopeCheck c = f.Check();
  c.max_message_size_bytes = text.size();
  CHECK(VerifyEnvelope(*parsed, c, kT0));
  c.max_message_size_bytes = text.size() - 1;
  CHECK(VerifyEnvelope(*parsed, c, kT0).error().code == Code::kLimitExceeded);
  // Whitespace counts: the limit is on what arrived.
  const std::string padded = text + std::string(100, ' ');
  auto padded_env = ParseEnvelope(padded);
  REQUIRE(padded_env);
  CHECK(padded_env->wire_size == padded.size());
  c.max_message_size_bytes = text.size();
  CHECK(VerifyEnvelope(*padded_env, c, kT0).error().code == Code::kLimitExceeded);
}

TEST_CASE("envelope freshness is opt-in", "[envelope]") {
  Fixture f;
  const Envelope e = f.Signed();
  const UnixNanos day = 86400 * kNanosPerSecond;
  CHECK(VerifyEnvelope(e, f.Check(), kT0 + 3 * day));  // store-and-forward delay
  EnvelopeCheck c = f.Check();
  c.freshness = FreshnessWindow{};
  CHECK(VerifyEnvelope(e, c, kT0 + 10 * kNanosPerSecond));
  RequireFieldError(VerifyEnvelope(e, c, kT0 + day).error(), Code::kReplay, "timestamp");
  RequireFieldError(VerifyEnvelope(e, c, kT0 - day).error(), Code::kReplay, "timestamp");
}

TEST_CASE("CheckSequence requires exactly the next number", "[envelope]") {
  CHECK(CheckSequence(1, 1));
  CHECK(CheckSequence(42, 42));
  auto replay = CheckSequence(5, 4);
  REQUIRE_FALSE(replay);
  RequireFieldError(replay.error(), Code::kReplay, "sequence");
  RequireFieldError(CheckSequence(5, 1).error(), Code::kReplay, "sequence");
  auto gap = CheckSequence(5, 6);
  REQUIRE_FALSE(gap);
  RequireFieldError(gap.error(), Code::kInvalidArgument, "sequence");
  CHECK(gap.error().message.find("sequence gap") != std::string::npos);
  CHECK(CheckSequence(1, kMaxSequence).error().code == Code::kInvalidArgument);
}

TEST_CASE("builder refuses a from that is not the signer", "[envelope]") {
  Fixture f;
  EnvelopeParams p = f.Params();
  p.from = f.carol.amid;
  auto r = BuildSignedEnvelope(p, f.alice.signing);
  REQUIRE_FALSE(r);
  RequireFieldError(r.error(), Code::kInvalidArgument, "from");
  p = f.Params();
  p.sequence = 0;
  CHECK(BuildSignedEnvelope(p, f.alice.signing).error().field == "sequence");
  p = f.Params();
  p.session_id = "x";
  CHECK(BuildUnsignedEnvelope(p).error().field == "session_id");
}

TEST_CASE("ParseSessionPlaintext dispatches on type", "[envelope]") {
  Fixture f;
  DeterministicRng rng(7);
  const std::string sid = NewSessionId(rng);
  auto knock = BuildKnock(
      KnockParams{
          .session_id = sid, .to = f.bob.amid, .intent = {.category = "travel"}, .timestamp = kT0},
      f.alice.signing, f.alice.exchange.public_key);
  REQUIRE(knock);
  auto accept = BuildAccept(AcceptParams{.session_id = sid, .to = f.alice.amid, .timestamp = kT0},
                            f.bob.signing);
  REQUIRE(accept);
  auto reject = BuildReject(RejectParams{.session_id = sid,
                                         .to = f.alice.amid,
                                         .reason = RejectReason::kAtCapacity,
                                         .timestamp = kT0},
                            f.bob.signing);
  REQUIRE(reject);
  const Envelope envelope = f.Signed();

  auto m = ParseSessionPlaintext(knock->Serialize());
  REQUIRE(m);
  REQUIRE(std::holds_alternative<Knock>(*m));
  CHECK(VerifyKnock(std::get<Knock>(*m), f.bob.amid, kT0));

  m = ParseSessionPlaintext(accept->Serialize());
  REQUIRE(m);
  REQUIRE(std::holds_alternative<Accept>(*m));
  CHECK(std::get<Accept>(*m).session_id == sid);

  m = ParseSessionPlaintext(reject->Serialize());
  REQUIRE(m);
  REQUIRE(std::holds_alternative<Reject>(*m));
  CHECK(std::get<Reject>(*m).reason == RejectReason::kAtCapacity);

  m = ParseSessionPlaintext(envelope.Serialize());
  REQUIRE(m);
  REQUIRE(std::holds_alternative<Envelope>(*m));
  CHECK(std::get<Envelope>(*m).wire_size == envelope.Serialize().size());
  CHECK(VerifyEnvelope(std::get<Envelope>(*m), f.Check(), kT0));

  for (auto t : {EnvelopeType::kStatus, EnvelopeType::kCapabilityNegotiationResponse}) {
    auto e = BuildUnsignedEnvelope(f.Params(t, json::object()));
    REQUIRE(e);
    auto pm = ParseSessionPlaintext(e->Serialize());
    REQUIRE(pm);
    CHECK(std::get<Envelope>(*pm).type == t);
  }

  // Unknown, missing or mistyped type.
  json j = envelope.Object();
  j["type"] = "encrypted";
  auto unknown = ParseSessionPlaintext(j.dump());
  REQUIRE_FALSE(unknown);
  RequireFieldError(unknown.error(), Code::kInvalidArgument, "type");
  j.erase("type");
  CHECK(ParseSessionPlaintext(j.dump()).error().field == "type");
  j["type"] = 3;
  CHECK(ParseSessionPlaintext(j.dump()).error().field == "type");
  CHECK(ParseSessionPlaintext("[]").error().code == Code::kInvalidArgument);
  CHECK(ParseSessionPlaintext("not json").error().code == Code::kInvalidArgument);

  // Per-type size limits: a KNOCK above 4096 bytes is refused even when envelopes may be larger.
  json big_knock = knock->object;
  big_knock["x_padding"] = std::string(kMaxKnockBytes, 'p');
  auto too_big = ParseSessionPlaintext(big_knock.dump(), 1 << 20);
  REQUIRE_FALSE(too_big);
  CHECK(too_big.error().code == Code::kLimitExceeded);
  // An envelope above the caller's limit.
  EnvelopeParams p = f.Params(EnvelopeType::kRequest, {{"blob", std::string(9000, 'b')}});
  p.max_message_size_bytes = kMaxEnvelopeBytesCap;
  auto large = BuildSignedEnvelope(p, f.alice.signing);
  REQUIRE(large);
  CHECK(ParseSessionPlaintext(large->Serialize(), 65536));
  CHECK(ParseSessionPlaintext(large->Serialize(), 4096).error().code == Code::kLimitExceeded);
  // Field errors inside the dispatched message keep their names.
  json bad_knock = knock->object;
  bad_knock["intent"]["category"] = 1;
  CHECK(ParseSessionPlaintext(bad_knock.dump()).error().field == "intent.category");
}

TEST_CASE("plaintext parser survives hostile input", "[envelope]") {
  Fixture f;
  // Deep nesting within the size limit is refused without recursion.
  const std::size_t depth = 400000;
  const std::string deep = "{\"a\":" + std::string(depth, '[') + std::string(depth, ']') + "}";
  REQUIRE(deep.size() < kMaxEnvelopeBytesCap);
  CHECK(ParseEnvelope(deep).error().code == Code::kInvalidArgument);
  CHECK(ParseSessionPlaintext(deep).error().code == Code::kInvalidArgument);
  const std::string deep_objects = [] {
    std::string s;
    for (int i = 0; i < 10000; ++i) s += "{\"a\":";
    s += "1";
    s += std::string(10000, '}');
    return s;
  }();
  CHECK(ParseSessionPlaintext(deep_objects).error().code == Code::kInvalidArgument);
  // Numbers that do not fit, lone surrogates, invalid UTF-8, inside an otherwise valid envelope.
  const std::string valid = f.Unsigned().Serialize();
  REQUIRE(ParseSessionPlaintext(valid));
  for (std::string_view member : {R"("x":1e999,)", R"("x":"\ud800",)", "\"x\":\"\xff\",",
                                  R"("x":"\udc00\ud800",)", "\"x\":\"\xc0\xaf\","}) {
    INFO(member);
    std::string bad = valid;
    bad.insert(1, member);
    CHECK(ParseSessionPlaintext(bad).error().code == Code::kInvalidArgument);
  }
  // Random corruption of valid messages never crashes and never verifies as something else.
  const std::string original = f.Signed().Serialize();
  DeterministicRng rng(99);
  int parsed_ok = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string mutated = original;
    const auto r = rng.Array<4>();
    const std::size_t pos = (static_cast<std::size_t>(r[0]) << 8 | r[1]) % mutated.size();
    mutated[pos] = static_cast<char>(r[2]);
    if (r[3] & 1) mutated.erase(pos, r[3] % 7);
    auto m = ParseSessionPlaintext(mutated);
    if (!m) continue;
    ++parsed_ok;
    if (const auto* e = std::get_if<Envelope>(&*m)) {
      if (VerifyEnvelope(*e, f.Check(), kT0)) {
        // Only a semantically identical envelope (e.g. an escaped character) may verify.
        CHECK(*SigningInput(e->Object()) == *SigningInput(f.Signed().Object()));
      }
    }
  }
  CHECK(parsed_ok > 0);
}
