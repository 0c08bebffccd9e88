#include <catch2/catch.hpp>

#include <fstream>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agentmesh/core/canonical_json.hpp"
#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/envelope.hpp"
#include "agentmesh/core/knock.hpp"
#include "vectors.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

struct Party {
  Ed25519KeyPair signing;
  X25519KeyPair exchange;
  Amid amid;
};

Party PartyFromRng(std::uint64_t seed) {
  DeterministicRng rng(seed);
  Ed25519KeyPair signing = Ed25519KeyPair::Generate(rng);
  X25519KeyPair exchange = X25519KeyPair::Generate(rng);
  Amid amid = Amid::FromPublicKey(signing.public_key);
  return Party{std::move(signing), std::move(exchange), std::move(amid)};
}

Party PartyFromHex(const json& keys) {
  Ed25519Seed seed;
  REQUIRE(Ed25519Seed::FromBytes(*HexDecode(keys["ed25519_seed_hex"].get<std::string>()), seed));
  X25519SecretKey x;
  REQUIRE(X25519SecretKey::FromBytes(*HexDecode(keys["x25519_secret_hex"].get<std::string>()), x));
  Ed25519KeyPair signing = Ed25519KeyPair::FromSeed(seed);
  X25519KeyPair exchange = X25519KeyPair::FromSecret(std::move(x));
  Amid amid = Amid::FromPublicKey(signing.public_key);
  CHECK(amid.str() == keys["amid"].get<std::string>());
  CHECK(FormatEd25519Key(signing.public_key) == keys["signing_public_key"].get<std::string>());
  CHECK(FormatX25519Key(exchange.public_key) == keys["exchange_public_key"].get<std::string>());
  return Party{std::move(signing), std::move(exchange), std::move(amid)};
}

using agentmesh::test_vectors::LoadVectors;

UnixNanos Ts(std::string_view text) {
  auto t = ParseRfc3339(text);
  REQUIRE(t);
  return *t;
}

const UnixNanos kT0 = 1769947200LL * kNanosPerSecond;  // 2026-02-01T12:00:00Z
constexpr const char* kSessionId = "3b241101-e2bb-4255-8caf-4136c566a962";

json::json_pointer Ptr(std::string_view dotted) {
  std::string p = "/";
  for (char c : dotted) p += (c == '.') ? '/' : c;
  return json::json_pointer(p);
}

void Erase(json& j, std::string_view dotted) {
  const auto ptr = Ptr(dotted);
  j[ptr.parent_pointer()].erase(ptr.back());
}

KnockParams FullParams(const Party& to) {
  return KnockParams{.session_id = kSessionId,
                     .to = to.amid,
                     .intent = {.category = "travel",
                                .subcategory = "flights",
                                .action = "search",
                                .urgency = Urgency::kHigh},
                     .session_request = {.type = SessionType::kConversation,
                                         .expected_messages = 5,
                                         .ttl_seconds = 300,
                                         .signed_messages = true},
                     .tier = Tier::kVerified,
                     .display_name = "Alice's Assistant",
                     .organization = "Acme",
                     .reputation_score = 0.92,
                     .timestamp = kT0};
}

struct Fixture {
  Party alice = PartyFromRng(101);
  Party bob = PartyFromRng(102);
  Party carol = PartyFromRng(103);

  Knock MakeKnock() {
    auto k = BuildKnock(FullParams(bob), alice.signing, alice.exchange.public_key);
    REQUIRE(k);
    return *k;
  }
  json KnockJson() { return MakeKnock().object; }
  Accept MakeAccept() {
    auto a = BuildAccept(AcceptParams{.session_id = kSessionId,
                                      .to = alice.amid,
                                      .capabilities = {"search", "book"},
                                      .constraints = {},
                                      .timestamp = kT0 + kNanosPerSecond},
                         bob.signing);
    REQUIRE(a);
    return *a;
  }
  Reject MakeReject() {
    auto r = BuildReject(RejectParams{.session_id = kSessionId,
                                      .to = alice.amid,
                                      .reason = RejectReason::kRateLimited,
                                      .human_readable = "slow down",
                                      .retry_after_seconds = 37,
                                      .timestamp = kT0 + kNanosPerSecond},
                         bob.signing);
    REQUIRE(r);
    return *r;
  }
};

void RequireFieldError(const Error& e, Code code, std::string_view field) {
  INFO(e.ToString());
  CHECK(e.code == code);
  CHECK(e.field == field);
  CHECK_FALSE(e.message.empty());
}

// Parse an edited KNOCK and expect it to verify with a kAuthFailed on `field`.
void RequireTamperDetected(const json& edited, const Amid& self, std::string_view field) {
  auto parsed = ParseKnock(edited);
  REQUIRE(parsed);
  auto v = VerifyKnock(*parsed, self, kT0);
  REQUIRE_FALSE(v);
  RequireFieldError(v.error(), Code::kAuthFailed, field);
}

KnockParams ParamsFromInputs(const json& in) {
  Intent intent{.category = in["intent"]["category"].get<std::string>()};
  if (in["intent"].contains("subcategory"))
    intent.subcategory = in["intent"]["subcategory"].get<std::string>();
  if (in["intent"].contains("action")) intent.action = in["intent"]["action"].get<std::string>();
  intent.urgency = *ParseUrgency(in["intent"]["urgency"].get<std::string>());
  const json& r = in["session_request"];
  SessionRequest request{.type = *ParseSessionType(r["type"].get<std::string>()),
                         .ttl_seconds = r["ttl_seconds"].get<std::uint32_t>(),
                         .signed_messages = r["signed_messages"].get<bool>()};
  if (r.contains("expected_messages"))
    request.expected_messages = r["expected_messages"].get<std::uint32_t>();
  KnockParams p{.session_id = in["session_id"].get<std::string>(),
                .to = *Amid::Parse(in["to"].get<std::string>()),
                .intent = intent,
                .session_request = request,
                .tier = *TierFromName(in["tier"].get<std::string>()),
                .timestamp = Ts(in["timestamp"].get<std::string>())};
  if (in.contains("display_name")) p.display_name = in["display_name"].get<std::string>();
  if (in.contains("organization")) p.organization = in["organization"].get<std::string>();
  if (in.contains("reputation_score")) p.reputation_score = in["reputation_score"].get<double>();
  return p;
}

void CheckRecorded(const json& v, const json& object) {
  auto input = SigningInput(object);
  REQUIRE(input);
  CHECK(*input == v["signing_string"].get<std::string>());
  CHECK(object["signature"] == v["signature"]);
  CHECK(object.dump() == v["serialized"].get<std::string>());
}

}  // namespace

TEST_CASE("KNOCK/ACCEPT/REJECT vectors are recomputed byte for byte", "[knock]") {
  const json doc = LoadVectors("knock.json");
  const Party alice = PartyFromHex(doc["keys"]["initiator"]);
  const Party bob = PartyFromHex(doc["keys"]["responder"]);
  REQUIRE(doc["knock"].size() >= 3);

  for (const json& v : doc["knock"]) {
    INFO(v["name"].get<std::string>());
    const KnockParams p = ParamsFromInputs(v["inputs"]);
    auto built = BuildKnock(p, alice.signing, alice.exchange.public_key);
    REQUIRE(built);
    json object = built->object;
    if (v["inputs"].contains("modify_then_resign")) {
      for (const auto& [path, value] : v["inputs"]["modify_then_resign"].items()) {
        object[Ptr(path)] = value;
      }
      REQUIRE(SignObject(object, alice.signing.secret));
    }
    CheckRecorded(v, object);
    // The published text parses and verifies, and its unknown members survive.
    auto parsed = ParseKnock(v["serialized"].get<std::string>());
    REQUIRE(parsed);
    CHECK(parsed->Serialize() == v["serialized"].get<std::string>());
    CHECK(VerifyKnock(*parsed, bob.amid, p.timestamp));
    CHECK(parsed->from.exchange_public_key == alice.exchange.public_key);
  }
  for (const json& v : doc["accept"]) {
    INFO(v["name"].get<std::string>());
    const json& in = v["inputs"];
    const json& c = in["constraints"];
    AcceptParams p{
        .session_id = in["session_id"].get<std::string>(),
        .to = *Amid::Parse(in["to"].get<std::string>()),
        .capabilities = in["capabilities"].get<std::vector<std::string>>(),
        .constraints = {.max_message_size_bytes = c["max_message_size_bytes"].get<std::uint64_t>(),
                        .max_messages = c["max_messages"].get<std::uint32_t>(),
                        .ttl_seconds = c["ttl_seconds"].get<std::uint32_t>(),
                        .signed_messages = c["signed_messages"].get<bool>()},
        .timestamp = Ts(in["timestamp"].get<std::string>())};
    auto built = BuildAccept(p, bob.signing);
    REQUIRE(built);
    CheckRecorded(v, built->object);
    auto parsed = ParseAccept(v["serialized"].get<std::string>());
    REQUIRE(parsed);
    CHECK(VerifyAccept(*parsed, bob.signing.public_key, alice.amid, p.timestamp));
  }
  for (const json& v : doc["reject"]) {
    INFO(v["name"].get<std::string>());
    const json& in = v["inputs"];
    RejectParams p{.session_id = in["session_id"].get<std::string>(),
                   .to = *Amid::Parse(in["to"].get<std::string>()),
                   .reason = *ParseRejectReason(in["reason"].get<std::string>()),
                   .timestamp = Ts(in["timestamp"].get<std::string>())};
    if (in.contains("human_readable")) p.human_readable = in["human_readable"].get<std::string>();
    if (in.contains("retry_after_seconds"))
      p.retry_after_seconds = in["retry_after_seconds"].get<std::uint32_t>();
    auto built = BuildReject(p, bob.signing);
    REQUIRE(built);
    CheckRecorded(v, built->object);
    auto parsed = ParseReject(v["serialized"].get<std::string>());
    REQUIRE(parsed);
    CHECK(VerifyReject(*parsed, bob.signing.public_key, alice.amid, p.timestamp));
  }
}

TEST_CASE("KNOCK round trips through text and verifies", "[knock]") {
  Fixture f;
  const Knock k = f.MakeKnock();
  const std::string text = k.Serialize();
  CHECK(text.size() < kMaxKnockBytes);

  auto parsed = ParseKnock(text);
  REQUIRE(parsed);
  CHECK(parsed->Serialize() == text);
  CHECK(parsed->session_id == kSessionId);
  CHECK(parsed->from.amid == f.alice.amid);
  CHECK(parsed->from.signing_public_key == f.alice.signing.public_key);
  CHECK(parsed->from.exchange_public_key == f.alice.exchange.public_key);
  CHECK(parsed->from.tier == Tier::kVerified);
  CHECK(parsed->from.display_name == "Alice's Assistant");
  CHECK(parsed->from.organization == "Acme");
  CHECK(parsed->from.reputation_score == 0.92);
  CHECK(parsed->to == f.bob.amid);
  CHECK(parsed->intent.category == "travel");
  CHECK(parsed->intent.subcategory == "flights");
  CHECK(parsed->intent.action == "search");
  CHECK(parsed->intent.urgency == Urgency::kHigh);
  CHECK(parsed->session_request.type == SessionType::kConversation);
  CHECK(parsed->session_request.expected_messages == 5u);
  CHECK(parsed->session_request.ttl_seconds == 300u);
  CHECK(parsed->session_request.signed_messages);
  CHECK(parsed->timestamp == kT0);
  CHECK(parsed->signature == k.signature);

  // Wire shape: snake_case, names for enums, prefixed keys.
  CHECK(k.object["type"] == "knock");
  CHECK(k.object["protocol_version"] == "agentmesh/1");
  CHECK(k.object["from"]["tier"] == "verified");
  CHECK(k.object["from"]["signing_public_key"].get<std::string>().starts_with("ed25519:"));
  CHECK(k.object["from"]["exchange_public_key"].get<std::string>().starts_with("x25519:"));
  CHECK(k.object["timestamp"] == "2026-02-01T12:00:00Z");
  CHECK_FALSE(k.object.contains("session_key"));

  CHECK(VerifyKnock(*parsed, f.bob.amid, kT0));
}

TEST_CASE("KNOCK signature covers the RFC 8785 form without the signature", "[knock]") {
  Fixture f;
  const Knock k = f.MakeKnock();
  auto input = SigningInput(k.object);
  REQUIRE(input);
  CHECK(*input == *CanonicalJsonWithout(k.object, "signature"));
  CHECK(input->find("signature") == std::string::npos);
  const ByteView bytes(reinterpret_cast<const std::uint8_t*>(input->data()), input->size());
  CHECK(Verify(f.alice.signing.public_key, bytes, k.signature));
  CHECK(FormatSignature(k.signature) == k.object["signature"].get<std::string>());
  CHECK(VerifyObjectSignature(k.object, f.alice.signing.public_key));
  auto wrong = VerifyObjectSignature(k.object, f.bob.signing.public_key);
  REQUIRE_FALSE(wrong);
  RequireFieldError(wrong.error(), Code::kAuthFailed, "signature");
}

TEST_CASE("KNOCK defaults and optional members", "[knock]") {
  Fixture f;
  json j = f.KnockJson();
  for (const char* path :
       {"from.display_name", "from.organization", "from.reputation_score", "intent.subcategory",
        "intent.action", "intent.urgency", "session_request.expected_messages",
        "session_request.signed_messages"}) {
    Erase(j, path);
  }
  auto k = ParseKnock(j);
  REQUIRE(k);
  CHECK_FALSE(k->from.display_name);
  CHECK_FALSE(k->from.organization);
  CHECK_FALSE(k->from.reputation_score);
  CHECK_FALSE(k->intent.subcategory);
  CHECK_FALSE(k->intent.action);
  CHECK(k->intent.urgency == Urgency::kNormal);
  CHECK_FALSE(k->session_request.expected_messages);
  CHECK(k->session_request.signed_messages);

  // null means "not given" for optional members.
  json n = f.KnockJson();
  n[Ptr("from.organization")] = nullptr;
  n[Ptr("intent.subcategory")] = nullptr;
  n[Ptr("session_request.expected_messages")] = nullptr;
  auto kn = ParseKnock(n);
  REQUIRE(kn);
  CHECK_FALSE(kn->from.organization);
  CHECK_FALSE(kn->intent.subcategory);
  CHECK_FALSE(kn->session_request.expected_messages);
}

TEST_CASE("KNOCK: every missing required member is named", "[knock]") {
  Fixture f;
  const json base = f.KnockJson();
  for (const char* path : {"type", "protocol_version", "session_id", "from", "from.amid",
                           "from.signing_public_key", "from.exchange_public_key", "from.tier", "to",
                           "intent", "intent.category", "session_request", "session_request.type",
                           "session_request.ttl_seconds", "timestamp", "signature"}) {
    INFO(path);
    json j = base;
    Erase(j, path);
    auto r = ParseKnock(j);
    REQUIRE_FALSE(r);
    RequireFieldError(r.error(), Code::kInvalidArgument, path);
    // The text form reports the same.
    auto t = ParseKnock(j.dump());
    REQUIRE_FALSE(t);
    CHECK(t.error().field == path);
  }
}

TEST_CASE("KNOCK: every member of the wrong JSON type is named", "[knock]") {
  Fixture f;
  const json base = f.KnockJson();
  const std::vector<std::pair<const char*, json>> cases = {
      {"type", 42},
      {"protocol_version", 1},
      {"session_id", 7},
      {"from", "alice"},
      {"from.amid", 1},
      {"from.signing_public_key", true},
      {"from.exchange_public_key", json::array()},
      {"from.tier", true},
      {"from.tier", json::object()},
      {"from.display_name", 1},
      {"from.organization", false},
      {"from.reputation_score", "high"},
      {"to", json::array({"x"})},
      {"intent", "travel"},
      {"intent.category", 1},
      {"intent.subcategory", 2},
      {"intent.action", json::array()},
      {"intent.urgency", 3},
      {"session_request", 1},
      {"session_request.type", 1},
      {"session_request.expected_messages", "5"},
      {"session_request.ttl_seconds", 300.5},
      {"session_request.ttl_seconds", "300"},
      {"session_request.signed_messages", "yes"},
      {"timestamp", 1769947200},
      {"signature", 1},
      {"signature", nullptr},
  };
  for (const auto& [path, value] : cases) {
    INFO(path << " = " << value.dump());
    json j = base;
    j[Ptr(path)] = value;
    auto r = ParseKnock(j);
    REQUIRE_FALSE(r);
    RequireFieldError(r.error(), Code::kInvalidArgument, path);
  }
}

TEST_CASE("KNOCK: malformed values are rejected with the field named", "[knock]") {
  Fixture f;
  const json base = f.KnockJson();
  const std::string b64_16 = Base64Encode(Bytes(16, 7));
  const std::string ok_sig = base["signature"].get<std::string>();
  const std::vector<std::pair<const char*, json>> cases = {
      {"type", "accept"},
      {"type", "KNOCK"},
      {"protocol_version", "agentmesh/0.1"},
      {"protocol_version", "agentmesh/0.2"},
      {"protocol_version", "agentmesh/2"},
      {"session_id", "3B241101-E2BB-4255-8CAF-4136C566A962"},  // upper case
      {"session_id", "3b241101-e2bb-1255-8caf-4136c566a962"},  // version 1
      {"session_id", "3b241101-e2bb-4255-7caf-4136c566a962"},  // wrong variant
      {"session_id", "3b241101e2bb42558caf4136c566a962"},
      {"session_id", "sess_0123456789abcdef"},
      {"from.amid", "not-base58!"},
      {"from.amid", "1" + f.alice.amid.str()},  // non-canonical
      {"from.signing_public_key", "ed25519:not base64"},
      {"from.signing_public_key", "ed25519:" + b64_16},                           // 16 bytes
      {"from.signing_public_key", FormatX25519Key(f.alice.exchange.public_key)},  // x25519: prefix
      {"from.signing_public_key", "rsa:" + Base64Encode(f.alice.signing.public_key.view())},
      {"from.exchange_public_key", FormatEd25519Key(f.alice.signing.public_key)},  // ed25519:
      {"from.exchange_public_key", "x25519:" + b64_16},
      {"from.exchange_public_key", "x25519:AAAA"},
      {"from.tier", 3},
      {"from.tier", 0},
      {"from.tier", "gold"},
      {"from.display_name", ""},
      {"from.display_name", std::string(129, 'a')},
      {"from.display_name", "evil\x1b[2J"},
      {"from.organization", std::string(129, 'o')},
      {"from.reputation_score", 1.5},
      {"from.reputation_score", -0.1},
      {"to", "0OIl"},
      {"to", ""},
      {"intent.category", ""},
      {"intent.category", "Travel"},
      {"intent.category", "travel/flights"},
      {"intent.category", "travel flights"},
      {"intent.category", std::string(65, 'a')},
      {"intent.subcategory", "Flights"},
      {"intent.action", ""},
      {"intent.urgency", "urgent"},
      {"session_request.type", "one-shot"},
      {"session_request.type", "streaming"},
      {"session_request.expected_messages", 0},
      {"session_request.expected_messages", 1000001},
      {"session_request.ttl_seconds", 0},
      {"session_request.ttl_seconds", -5},
      {"session_request.ttl_seconds", 86401},
      {"timestamp", "2026-02-01 12:00:00"},
      {"timestamp", "1769947200000"},
      {"timestamp", "2026-02-01T12:00:60Z"},
      {"signature", "not base64"},
      {"signature", b64_16},
      {"signature", ok_sig.substr(0, ok_sig.size() - 2)},  // missing padding
  };
  for (const auto& [path, value] : cases) {
    INFO(path << " = " << value.dump());
    json j = base;
    j[Ptr(path)] = value;
    auto r = ParseKnock(j);
    REQUIRE_FALSE(r);
    RequireFieldError(r.error(), Code::kInvalidArgument, path);
  }
  // Spelled-out messages for the common cases.
  json j = base;
  j[Ptr("intent.category")] = "";
  CHECK(ParseKnock(j).error().message == "must be a non-empty string");
  j = base;
  j["protocol_version"] = "agentmesh/0.1";
  CHECK(ParseKnock(j).error().message.find("agentmesh/0.1") != std::string::npos);
}

TEST_CASE("KNOCK accepts the spec's tier numbers and custom categories", "[knock]") {
  Fixture f;
  const std::vector<std::pair<json, Tier>> tiers = {
      {2, Tier::kAnonymous},           {1, Tier::kVerified},
      {1.5, Tier::kOrganization},      {2.0, Tier::kAnonymous},
      {"anonymous", Tier::kAnonymous}, {"organization", Tier::kOrganization}};
  for (const auto& [value, tier] : tiers) {
    INFO(value.dump());
    json j = f.KnockJson();
    j[Ptr("from.tier")] = value;
    auto k = ParseKnock(j);
    REQUIRE(k);
    CHECK(k->from.tier == tier);
  }
  for (const char* category : {"x-acme", "x-acme-widgets", "a", "travel_2", "0-9_z"}) {
    json j = f.KnockJson();
    j[Ptr("intent.category")] = category;
    CHECK(ParseKnock(j));
  }
  json j = f.KnockJson();
  j[Ptr("intent.category")] = std::string(64, 'z');
  CHECK(ParseKnock(j));
}

TEST_CASE("KNOCK builder validates like the parser", "[knock]") {
  Fixture f;
  KnockParams p = FullParams(f.bob);
  p.intent.category = "Travel";
  auto r = BuildKnock(p, f.alice.signing, f.alice.exchange.public_key);
  REQUIRE_FALSE(r);
  RequireFieldError(r.error(), Code::kInvalidArgument, "intent.category");

  p = FullParams(f.bob);
  p.session_id = "not-a-uuid";
  r = BuildKnock(p, f.alice.signing, f.alice.exchange.public_key);
  REQUIRE_FALSE(r);
  RequireFieldError(r.error(), Code::kInvalidArgument, "session_id");

  p = FullParams(f.bob);
  p.session_request.ttl_seconds = 0;
  r = BuildKnock(p, f.alice.signing, f.alice.exchange.public_key);
  REQUIRE_FALSE(r);
  RequireFieldError(r.error(), Code::kInvalidArgument, "session_request.ttl_seconds");

  p = FullParams(f.bob);
  p.display_name = std::string(129, 'd');
  r = BuildKnock(p, f.alice.signing, f.alice.exchange.public_key);
  REQUIRE_FALSE(r);
  RequireFieldError(r.error(), Code::kInvalidArgument, "from.display_name");

  p = FullParams(f.bob);
  p.display_name = "bad \xff utf-8";
  r = BuildKnock(p, f.alice.signing, f.alice.exchange.public_key);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Code::kInvalidArgument);
}

TEST_CASE("KNOCK: AMID that is not the signing key's is an auth failure", "[knock]") {
  Fixture f;
  // Alice signs a KNOCK claiming to be Carol.
  json j = f.KnockJson();
  j[Ptr("from.amid")] = f.carol.amid.str();
  REQUIRE(SignObject(j, f.alice.signing.secret));
  RequireTamperDetected(j, f.bob.amid, "from.amid");

  // Carol's key with Alice's AMID, signed by Carol.
  j = f.KnockJson();
  j[Ptr("from.signing_public_key")] = FormatEd25519Key(f.carol.signing.public_key);
  REQUIRE(SignObject(j, f.carol.signing.secret));
  RequireTamperDetected(j, f.bob.amid, "from.amid");

  // Consistent AMID and key, but the signature is Alice's: signature fails.
  j = f.KnockJson();
  j[Ptr("from.amid")] = f.carol.amid.str();
  j[Ptr("from.signing_public_key")] = FormatEd25519Key(f.carol.signing.public_key);
  RequireTamperDetected(j, f.bob.amid, "signature");
}

TEST_CASE("KNOCK: tampering with any member after signing fails verification", "[knock]") {
  Fixture f;
  const json base = f.KnockJson();
  const std::vector<std::pair<const char*, json>> edits = {
      {"session_id", "0f8e1c2a-4b7d-4e21-9a3b-5c6d7e8f9a0b"},
      {"from.exchange_public_key", FormatX25519Key(f.carol.exchange.public_key)},
      {"from.tier", "organization"},
      {"from.tier", 1},  // same tier, other spelling: still a different signed value
      {"from.display_name", "Mallory"},
      {"from.organization", nullptr},
      {"from.reputation_score", 1.0},
      {"intent.category", "finance"},
      {"intent.subcategory", "hotels"},
      {"intent.action", "book"},
      {"intent.urgency", "critical"},
      {"session_request.type", "stream"},
      {"session_request.expected_messages", 6},
      {"session_request.ttl_seconds", 86400},
      {"session_request.signed_messages", false},
      {"timestamp", "2026-02-01T12:00:01Z"},
      {"timestamp", "2026-02-01T13:00:00+01:00"},  // same instant, other spelling
  };
  for (const auto& [path, value] : edits) {
    INFO(path << " = " << value.dump());
    json j = base;
    j[Ptr(path)] = value;
    RequireTamperDetected(j, f.bob.amid, "signature");
  }
  // Removing an optional member is tampering too.
  for (const char* path :
       {"from.display_name", "intent.action", "session_request.signed_messages"}) {
    INFO(path);
    json j = base;
    Erase(j, path);
    RequireTamperDetected(j, f.bob.amid, "signature");
  }
  // Re-addressing to Carol: Carol (the new `to`) rejects the signature.
  json j = base;
  j["to"] = f.carol.amid.str();
  RequireTamperDetected(j, f.carol.amid, "signature");
  // A bit flip in the signature.
  j = base;
  auto sig = *Base64Decode(j["signature"].get<std::string>());
  sig[10] ^= 1;
  j["signature"] = Base64Encode(sig);
  RequireTamperDetected(j, f.bob.amid, "signature");
}

TEST_CASE("KNOCK: unknown members are covered by the signature and preserved", "[knock]") {
  Fixture f;
  json j = f.KnockJson();
  j["x_extension"] = {{"hops", 1}};
  j[Ptr("intent.x_hint")] = "fast";
  // Added after signing: verification fails.
  RequireTamperDetected(j, f.bob.amid, "signature");

  // Signed with them: verifies, and they survive parse and serialize.
  REQUIRE(SignObject(j, f.alice.signing.secret));
  auto k = ParseKnock(j.dump());
  REQUIRE(k);
  CHECK(VerifyKnock(*k, f.bob.amid, kT0));
  CHECK(k->object["x_extension"]["hops"] == 1);
  CHECK(k->Serialize().find("\"x_hint\":\"fast\"") != std::string::npos);

  // Stripping one of them breaks it again.
  json stripped = k->object;
  stripped.erase("x_extension");
  RequireTamperDetected(stripped, f.bob.amid, "signature");
}

TEST_CASE("KNOCK addressed to another agent is refused", "[knock]") {
  Fixture f;
  const Knock k = f.MakeKnock();
  auto r = VerifyKnock(k, f.carol.amid, kT0);
  REQUIRE_FALSE(r);
  RequireFieldError(r.error(), Code::kPermissionDenied, "to");
  CHECK(r.error().message == "KNOCK addressed to another agent");
}

TEST_CASE("KNOCK freshness window is -300 s / +60 s by default", "[knock]") {
  Fixture f;
  const Knock k = f.MakeKnock();
  const UnixNanos s = kNanosPerSecond;
  CHECK(VerifyKnock(k, f.bob.amid, kT0 + 300 * s));
  CHECK(VerifyKnock(k, f.bob.amid, kT0 - 60 * s));
  auto stale = VerifyKnock(k, f.bob.amid, kT0 + 300 * s + 1);
  REQUIRE_FALSE(stale);
  RequireFieldError(stale.error(), Code::kReplay, "timestamp");
  CHECK(stale.error().message.find("stale") != std::string::npos);
  auto future = VerifyKnock(k, f.bob.amid, kT0 - 61 * s);
  REQUIRE_FALSE(future);
  RequireFieldError(future.error(), Code::kReplay, "timestamp");
  CHECK(future.error().message.find("future") != std::string::npos);
  // A custom window.
  CHECK(VerifyKnock(k, f.bob.amid, kT0 + 3600 * s, FreshnessWindow{.max_past = 7200 * s}));
  CHECK_FALSE(VerifyKnock(k, f.bob.amid, kT0 - s, FreshnessWindow{.max_future = 0}));
}

TEST_CASE("CheckFreshness bounds and extremes", "[knock]") {
  const UnixNanos s = kNanosPerSecond;
  CHECK(CheckFreshness(kT0, kT0));
  CHECK(CheckFreshness(kT0 - 300 * s, kT0));
  CHECK(CheckFreshness(kT0 + 60 * s, kT0));
  CHECK(CheckFreshness(kT0 - 300 * s - 1, kT0).error().code == Code::kReplay);
  CHECK(CheckFreshness(kT0 + 60 * s + 1, kT0).error().code == Code::kReplay);
  CHECK(CheckFreshness(kT0 - 10 * s, kT0, 5 * s, 0).error().code == Code::kReplay);
  const UnixNanos min = std::numeric_limits<UnixNanos>::min();
  const UnixNanos max = std::numeric_limits<UnixNanos>::max();
  CHECK(CheckFreshness(min, max).error().code == Code::kReplay);
  CHECK(CheckFreshness(max, min).error().code == Code::kReplay);
  CHECK(CheckFreshness(max, -1).error().code == Code::kReplay);
  CHECK(CheckFreshness(min, kT0).error().code == Code::kReplay);
}

TEST_CASE("KNOCK size limit", "[knock]") {
  Fixture f;
  json j = f.KnockJson();
  j["x_padding"] = std::string(kMaxKnockBytes, 'p');
  auto r = ParseKnock(j);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Code::kLimitExceeded);
  // The text form is refused before parsing, even if it is not JSON at all.
  const std::string big(kMaxKnockBytes + 1, '{');
  auto t = ParseKnock(std::string_view(big));
  REQUIRE_FALSE(t);
  CHECK(t.error().code == Code::kLimitExceeded);
  // Exactly at the limit is fine as far as size goes.
  json small = f.KnockJson();
  small["x_padding"] = "";
  const std::size_t room = kMaxKnockBytes - small.dump().size();
  small["x_padding"] = std::string(room, 'p');
  REQUIRE(small.dump().size() == kMaxKnockBytes);
  CHECK(ParseKnock(small.dump()));
}

TEST_CASE("KNOCK text parser is strict about JSON", "[knock]") {
  Fixture f;
  const std::string text = f.MakeKnock().Serialize();
  // Duplicate member: different parsers would disagree about what was signed.
  std::string dup = text;
  dup.insert(1, "\"to\":\"" + f.carol.amid.str() + "\",");
  auto r = ParseKnock(dup);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Code::kInvalidArgument);
  CHECK(r.error().field == "to");
  CHECK(r.error().message.find("duplicate") != std::string::npos);
  // Duplicates in nested objects too.
  std::string nested = text;
  nested.insert(nested.find("\"category\""), "\"category\":\"finance\",");
  CHECK(ParseKnock(nested).error().message.find("duplicate") != std::string::npos);
  // Not JSON, not an object, truncated, deep nesting.
  for (std::string_view bad :
       {"", "null", "[]", "\"knock\"", "{", "{\"type\":\"knock\"", "{} {}"}) {
    INFO(bad);
    auto b = ParseKnock(bad);
    REQUIRE_FALSE(b);
    CHECK(b.error().code == Code::kInvalidArgument);
  }
  std::string deep = "{\"x\":" + std::string(100, '[') + std::string(100, ']') + "}";
  auto d = ParseKnock(deep);
  REQUIRE_FALSE(d);
  CHECK(d.error().message.find("deeper") != std::string::npos);
  // Compact output: no newlines, no space after separators.
  CHECK(text.find('\n') == std::string::npos);
  CHECK(text.find("\": ") == std::string::npos);
  CHECK(text.find(", \"") == std::string::npos);
  CHECK(ParseKnock(json::array()).error().code == Code::kInvalidArgument);
}

TEST_CASE("session ids are UUID v4", "[knock]") {
  DeterministicRng rng(9);
  for (int i = 0; i < 50; ++i) {
    const std::string id = NewSessionId(rng);
    INFO(id);
    CHECK(id.size() == 36);
    CHECK(ValidateSessionId(id));
  }
  DeterministicRng a(5), b(5);
  CHECK(NewSessionId(a) == NewSessionId(b));
  CHECK(ValidateSessionId(kSessionId));
  for (std::string_view bad :
       {"", "3b241101-e2bb-4255-8caf-4136c566a96", "3b241101-e2bb-4255-8caf-4136c566a9622",
        "3b241101_e2bb-4255-8caf-4136c566a962", "3b241101-e2bb-4255-8caf-4136c566a96g",
        "3b241101-e2bb-5255-8caf-4136c566a962", "3b241101-e2bb-4255-caf0-4136c566a962"}) {
    INFO(bad);
    CHECK(ValidateSessionId(bad).error().code == Code::kInvalidArgument);
  }
}

TEST_CASE("enumerations have stable names", "[knock]") {
  for (auto t : {SessionType::kRequestResponse, SessionType::kConversation, SessionType::kStream}) {
    CHECK(*ParseSessionType(SessionTypeName(t)) == t);
  }
  CHECK(SessionTypeName(SessionType::kRequestResponse) == "request_response");
  CHECK(ParseSessionType("one-shot").error().code == Code::kInvalidArgument);
  for (auto u : {Urgency::kLow, Urgency::kNormal, Urgency::kHigh, Urgency::kCritical}) {
    CHECK(*ParseUrgency(UrgencyName(u)) == u);
  }
  const std::vector<std::string_view> reasons = {"invalid_signature",
                                                 "blocked",
                                                 "insufficient_trust",
                                                 "rate_limited",
                                                 "intent_not_accepted",
                                                 "not_in_allowlist",
                                                 "low_reputation",
                                                 "at_capacity",
                                                 "paused"};
  for (std::string_view name : reasons) {
    auto r = ParseRejectReason(name);
    REQUIRE(r);
    CHECK(RejectReasonName(*r) == name);
  }
  CHECK(ParseRejectReason("nope").error().code == Code::kInvalidArgument);
  CHECK(ParseRejectReason("BLOCKED").error().code == Code::kInvalidArgument);
}

TEST_CASE("ACCEPT round trip, shape and verification", "[knock]") {
  Fixture f;
  const Accept a = f.MakeAccept();
  auto parsed = ParseAccept(a.Serialize());
  REQUIRE(parsed);
  CHECK(parsed->Serialize() == a.Serialize());
  CHECK(parsed->session_id == kSessionId);
  CHECK(parsed->from == f.bob.amid);
  CHECK(parsed->to == f.alice.amid);
  CHECK(parsed->capabilities == std::vector<std::string>{"search", "book"});
  CHECK(parsed->constraints.max_message_size_bytes == 65536u);
  CHECK(parsed->constraints.max_messages == 20u);
  CHECK(parsed->constraints.ttl_seconds == 300u);
  CHECK(parsed->constraints.signed_messages);
  CHECK_FALSE(a.object.contains("session_key"));
  CHECK(a.object["type"] == "accept");

  const UnixNanos now = kT0 + kNanosPerSecond;
  CHECK(VerifyAccept(*parsed, f.bob.signing.public_key, f.alice.amid, now));
  auto wrong_key = VerifyAccept(*parsed, f.carol.signing.public_key, f.alice.amid, now);
  REQUIRE_FALSE(wrong_key);
  RequireFieldError(wrong_key.error(), Code::kAuthFailed, "from");
  auto wrong_to = VerifyAccept(*parsed, f.bob.signing.public_key, f.carol.amid, now);
  REQUIRE_FALSE(wrong_to);
  RequireFieldError(wrong_to.error(), Code::kPermissionDenied, "to");
  auto stale =
      VerifyAccept(*parsed, f.bob.signing.public_key, f.alice.amid, now + 301 * kNanosPerSecond);
  REQUIRE_FALSE(stale);
  RequireFieldError(stale.error(), Code::kReplay, "timestamp");

  // signed_messages absent means true.
  json j = a.object;
  Erase(j, "constraints.signed_messages");
  auto d = ParseAccept(j);
  REQUIRE(d);
  CHECK(d->constraints.signed_messages);
  // Empty capability list is allowed.
  j = a.object;
  j["capabilities"] = json::array();
  CHECK(ParseAccept(j));
}

TEST_CASE("ACCEPT: missing, mistyped, out-of-range and tampered members", "[knock]") {
  Fixture f;
  const json base = f.MakeAccept().object;
  for (const char* path : {"type", "session_id", "from", "to", "capabilities", "constraints",
                           "constraints.max_message_size_bytes", "constraints.max_messages",
                           "constraints.ttl_seconds", "timestamp", "signature"}) {
    INFO(path);
    json j = base;
    Erase(j, path);
    auto r = ParseAccept(j);
    REQUIRE_FALSE(r);
    RequireFieldError(r.error(), Code::kInvalidArgument, path);
  }
  const std::vector<std::pair<const char*, json>> bad = {
      {"type", "knock"},
      {"session_id", 1},
      {"from", 1},
      {"to", true},
      {"capabilities", "search"},
      {"capabilities[1]", 7},
      {"capabilities[0]", ""},
      {"capabilities[0]", "has space"},
      {"constraints", json::array()},
      {"constraints.max_message_size_bytes", "65536"},
      {"constraints.max_message_size_bytes", 255},
      {"constraints.max_message_size_bytes", (1 << 20) + 1},
      {"constraints.max_messages", 0},
      {"constraints.max_messages", 2.5},
      {"constraints.ttl_seconds", 86401},
      {"constraints.signed_messages", 1},
      {"timestamp", "yesterday"},
      {"signature", false},
  };
  for (const auto& [path, value] : bad) {
    INFO(path << " = " << value.dump());
    json j = base;
    const std::string p = path;
    if (p.starts_with("capabilities[")) {
      j["capabilities"][static_cast<std::size_t>(p[13] - '0')] = value;
    } else {
      j[Ptr(path)] = value;
    }
    auto r = ParseAccept(j);
    REQUIRE_FALSE(r);
    RequireFieldError(r.error(), Code::kInvalidArgument, path);
  }
  json many = base;
  many["capabilities"] = json::array();
  for (int i = 0; i < 65; ++i) many["capabilities"].push_back("c" + std::to_string(i));
  CHECK(ParseAccept(many).error().field == "capabilities");

  const UnixNanos now = kT0 + kNanosPerSecond;
  const std::vector<std::pair<const char*, json>> edits = {
      {"session_id", "0f8e1c2a-4b7d-4e21-9a3b-5c6d7e8f9a0b"},
      {"capabilities", json::array({"search", "book", "pay"})},
      {"constraints.max_message_size_bytes", 1 << 20},
      {"constraints.max_messages", 21},
      {"constraints.ttl_seconds", 301},
      {"constraints.signed_messages", false},
      {"timestamp", "2026-02-01T12:00:02Z"},
      {"x_unknown", 1},
  };
  for (const auto& [path, value] : edits) {
    INFO(path);
    json j = base;
    j[Ptr(path)] = value;
    auto a = ParseAccept(j);
    REQUIRE(a);
    auto v = VerifyAccept(*a, f.bob.signing.public_key, f.alice.amid, now);
    REQUIRE_FALSE(v);
    RequireFieldError(v.error(), Code::kAuthFailed, "signature");
  }
}

TEST_CASE("REJECT round trip, reasons and verification", "[knock]") {
  Fixture f;
  const Reject r = f.MakeReject();
  auto parsed = ParseReject(r.Serialize());
  REQUIRE(parsed);
  CHECK(parsed->reason == RejectReason::kRateLimited);
  CHECK(parsed->human_readable == "slow down");
  CHECK(parsed->retry_after_seconds == 37u);
  CHECK(r.object["reason"] == "rate_limited");
  const UnixNanos now = kT0 + kNanosPerSecond;
  CHECK(VerifyReject(*parsed, f.bob.signing.public_key, f.alice.amid, now));

  json j = r.object;
  j["reason"] = "because";
  auto unknown = ParseReject(j);
  REQUIRE_FALSE(unknown);
  RequireFieldError(unknown.error(), Code::kInvalidArgument, "reason");

  j = r.object;
  j["retry_after_seconds"] = nullptr;
  auto null_retry = ParseReject(j);
  REQUIRE(null_retry);
  CHECK_FALSE(null_retry->retry_after_seconds);

  for (const auto& [path, value] :
       std::vector<std::pair<const char*, json>>{{"retry_after_seconds", -1},
                                                 {"retry_after_seconds", "37"},
                                                 {"retry_after_seconds", 86401},
                                                 {"human_readable", 5},
                                                 {"human_readable", std::string(513, 'h')},
                                                 {"human_readable", "bell\a"},
                                                 {"reason", 3},
                                                 {"type", "accept"}}) {
    INFO(path << " = " << value.dump());
    json k = r.object;
    k[path] = value;
    auto e = ParseReject(k);
    REQUIRE_FALSE(e);
    RequireFieldError(e.error(), Code::kInvalidArgument, path);
  }
  for (const char* path :
       {"type", "session_id", "from", "to", "reason", "timestamp", "signature"}) {
    INFO(path);
    json k = r.object;
    k.erase(path);
    CHECK(ParseReject(k).error().field == path);
  }
  // Multi-line human_readable is fine.
  RejectParams p{.session_id = kSessionId,
                 .to = f.alice.amid,
                 .reason = RejectReason::kPaused,
                 .human_readable = "line 1\nline 2\tend",
                 .timestamp = kT0};
  CHECK(BuildReject(p, f.bob.signing));

  for (const auto& [path, value] : std::vector<std::pair<const char*, json>>{
           {"reason", "blocked"}, {"retry_after_seconds", 0}, {"human_readable", "ok"}}) {
    INFO(path);
    json k = r.object;
    k[path] = value;
    auto e = ParseReject(k);
    REQUIRE(e);
    CHECK(VerifyReject(*e, f.bob.signing.public_key, f.alice.amid, now).error().code ==
          Code::kAuthFailed);
  }
}

TEST_CASE("ACCEPT/REJECT must answer the KNOCK they claim to", "[knock]") {
  Fixture f;
  const Knock knock = f.MakeKnock();
  const Accept accept = f.MakeAccept();
  const Reject reject = f.MakeReject();
  CHECK(CheckAnswersKnock(accept, knock));
  CHECK(CheckAnswersKnock(reject, knock));

  AcceptParams p{
      .session_id = "0f8e1c2a-4b7d-4e21-9a3b-5c6d7e8f9a0b", .to = f.alice.amid, .timestamp = kT0};
  auto other_session = BuildAccept(p, f.bob.signing);
  REQUIRE(other_session);
  CHECK(CheckAnswersKnock(*other_session, knock).error().field == "session_id");

  p.session_id = kSessionId;
  auto from_carol = BuildAccept(p, f.carol.signing);
  REQUIRE(from_carol);
  CHECK(CheckAnswersKnock(*from_carol, knock).error().field == "from");

  p.to = f.carol.amid;
  auto to_carol = BuildAccept(p, f.bob.signing);
  REQUIRE(to_carol);
  CHECK(CheckAnswersKnock(*to_carol, knock).error().field == "to");

  // The responder may not turn signing off when the KNOCK asked for it, but may turn it on.
  p.to = f.alice.amid;
  p.constraints.signed_messages = false;
  auto unsigned_accept = BuildAccept(p, f.bob.signing);
  REQUIRE(unsigned_accept);
  CHECK(CheckAnswersKnock(*unsigned_accept, knock).error().field == "constraints.signed_messages");
  KnockParams kp = FullParams(f.bob);
  kp.session_request.signed_messages = false;
  auto unsigned_knock = BuildKnock(kp, f.alice.signing, f.alice.exchange.public_key);
  REQUIRE(unsigned_knock);
  CHECK(CheckAnswersKnock(*unsigned_accept, *unsigned_knock));
  CHECK(CheckAnswersKnock(accept, *unsigned_knock));
}

TEST_CASE("SignObject / VerifyObjectSignature on arbitrary objects", "[knock]") {
  Fixture f;
  json j = {{"b", 1}, {"a", {{"z", "é"}, {"y", 2.5}}}};
  REQUIRE(SignObject(j, f.alice.signing.secret));
  CHECK(VerifyObjectSignature(j, f.alice.signing.public_key));
  // Re-signing replaces the previous signature and gives the same (deterministic) one.
  const json before = j["signature"];
  REQUIRE(SignObject(j, f.alice.signing.secret));
  CHECK(j["signature"] == before);
  json k = j;
  k["a"]["y"] = 2.25;
  CHECK(VerifyObjectSignature(k, f.alice.signing.public_key).error().code == Code::kAuthFailed);
  json no_sig = {{"a", 1}};
  CHECK(VerifyObjectSignature(no_sig, f.alice.signing.public_key).error().field == "signature");
  json not_object = json::array({1, 2});
  CHECK_FALSE(SignObject(not_object, f.alice.signing.secret));
  // Values JCS cannot represent cannot be signed.
  json big = {{"n", std::uint64_t{1} << 60}};
  CHECK(SignObject(big, f.alice.signing.secret).error().code == Code::kInvalidArgument);
}
