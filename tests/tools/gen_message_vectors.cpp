// Writes tests/vectors/knock.json and tests/vectors/envelope.json: session-layer messages built
// from fixed inputs (keys from DeterministicRng, fixed timestamps), with the canonical signing
// string, the signature and the compact serialization of each. tests/unit/{knock,envelope}_test.cpp
// rebuild every message from the recorded inputs and compare byte for byte.
//
// Usage: gen_message_vectors [output_dir]   (default: tests/vectors, relative to the cwd)
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/envelope.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/knock.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/core/timefmt.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

struct Party {
  Ed25519KeyPair signing;
  X25519KeyPair exchange;
  Amid amid;
};

Party MakeParty(std::uint64_t seed) {
  DeterministicRng rng(seed);
  Ed25519KeyPair signing = Ed25519KeyPair::Generate(rng);
  X25519KeyPair exchange = X25519KeyPair::Generate(rng);
  Amid amid = Amid::FromPublicKey(signing.public_key);
  return Party{std::move(signing), std::move(exchange), std::move(amid)};
}

json PartyJson(const Party& p, std::uint64_t rng_seed) {
  return {{"rng_seed", rng_seed},
          {"ed25519_seed_hex", HexEncode(p.signing.Seed().Expose())},
          {"x25519_secret_hex", HexEncode(p.exchange.secret.Expose())},
          {"amid", p.amid.str()},
          {"signing_public_key", FormatEd25519Key(p.signing.public_key)},
          {"exchange_public_key", FormatX25519Key(p.exchange.public_key)}};
}

[[noreturn]] void Die(const std::string& what, const Error& error) {
  std::cerr << "gen_message_vectors: " << what << ": " << error.ToString() << "\n";
  std::exit(1);
}

template <typename T>
T Must(Result<T> r, const std::string& what) {
  if (!r) Die(what, r.error());
  return std::move(*r);
}

void MustOk(const Result<void>& r, const std::string& what) {
  if (!r) Die(what, r.error());
}

UnixNanos Ts(std::string_view text) { return Must(ParseRfc3339(text), std::string(text)); }

// `serialized` defaults to the compact dump of `object`; envelopes pass their canonical wire text.
json Record(std::string name, json inputs, const json& object, std::string serialized = {}) {
  return {{"name", std::move(name)},
          {"inputs", std::move(inputs)},
          {"signing_string", Must(SigningInput(object), "signing input")},
          {"signature", object.contains("signature") ? object["signature"] : json(nullptr)},
          {"serialized", serialized.empty() ? object.dump() : std::move(serialized)}};
}

json IntentJson(const Intent& i) {
  json out = {{"category", i.category}, {"urgency", UrgencyName(i.urgency)}};
  if (i.subcategory) out["subcategory"] = *i.subcategory;
  if (i.action) out["action"] = *i.action;
  return out;
}

json SessionRequestJson(const SessionRequest& r) {
  json out = {{"type", SessionTypeName(r.type)},
              {"ttl_seconds", r.ttl_seconds},
              {"signed_messages", r.signed_messages}};
  if (r.expected_messages) out["expected_messages"] = *r.expected_messages;
  return out;
}

json KnockInputs(const KnockParams& p, std::string_view timestamp) {
  json out = {{"session_id", p.session_id},
              {"to", p.to.str()},
              {"tier", ToString(p.tier)},
              {"intent", IntentJson(p.intent)},
              {"session_request", SessionRequestJson(p.session_request)},
              {"timestamp", timestamp}};
  if (p.display_name) out["display_name"] = *p.display_name;
  if (p.organization) out["organization"] = *p.organization;
  if (p.reputation_score) out["reputation_score"] = *p.reputation_score;
  return out;
}

json KnockVectors(const Party& alice, const Party& bob, const std::string& session_id) {
  json vectors = json::array();
  {
    const std::string_view ts = "2026-02-01T12:00:00Z";
    KnockParams p{.session_id = session_id,
                  .to = bob.amid,
                  .intent = {.category = "travel",
                             .subcategory = "flights",
                             .action = "search",
                             .urgency = Urgency::kNormal},
                  .session_request = {.type = SessionType::kRequestResponse,
                                      .expected_messages = 5,
                                      .ttl_seconds = 300,
                                      .signed_messages = true},
                  .tier = Tier::kVerified,
                  .display_name = "Alice's Assistant \xE2\x9C\x88",  // U+2708 AIRPLANE
                  .organization = "Acme \"Travel\" Ltd",
                  .reputation_score = 0.92,
                  .timestamp = Ts(ts)};
    Knock k = Must(BuildKnock(p, alice.signing, alice.exchange.public_key), "knock full");
    vectors.push_back(Record("knock_full", KnockInputs(p, ts), k.object));
  }
  {
    const std::string_view ts = "2026-02-01T12:00:00.123Z";
    KnockParams p{.session_id = session_id,
                  .to = bob.amid,
                  .intent = {.category = "x-acme-monitoring"},
                  .session_request = {.type = SessionType::kStream,
                                      .ttl_seconds = 86400,
                                      .signed_messages = false},
                  .timestamp = Ts(ts)};
    Knock k = Must(BuildKnock(p, alice.signing, alice.exchange.public_key), "knock minimal");
    vectors.push_back(Record("knock_minimal_unsigned_stream", KnockInputs(p, ts), k.object));
  }
  {
    // A KNOCK from a newer peer: numeric tier (the spec's form), null organization and members
    // this version does not know. They are covered by the signature and must be preserved.
    const std::string_view ts = "2026-02-01T12:00:00Z";
    KnockParams p{.session_id = session_id,
                  .to = bob.amid,
                  .intent = {.category = "commerce", .urgency = Urgency::kHigh},
                  .session_request = {.type = SessionType::kConversation, .ttl_seconds = 600},
                  .tier = Tier::kOrganization,
                  .timestamp = Ts(ts)};
    Knock k = Must(BuildKnock(p, alice.signing, alice.exchange.public_key), "knock ext");
    json object = k.object;
    const json modify = {{"from.tier", 1.5},
                         {"from.organization", nullptr},
                         {"x_trace", {{"hops", 2}, {"note", "forwarded\tby proxy"}}},
                         {"intent.x_priority_hint", 0.000001}};
    object["from"]["tier"] = 1.5;
    object["from"]["organization"] = nullptr;
    object["x_trace"] = modify["x_trace"];
    object["intent"]["x_priority_hint"] = 0.000001;
    MustOk(SignObject(object, alice.signing.secret), "re-sign ext");
    Must(ParseKnock(object.dump()), "parse ext");
    json inputs = KnockInputs(p, ts);
    inputs["modify_then_resign"] = modify;
    vectors.push_back(Record("knock_numeric_tier_unknown_members", inputs, object));
  }
  return vectors;
}

json AcceptVectors(const Party& bob, const Party& alice, const std::string& session_id) {
  json vectors = json::array();
  const std::string_view ts = "2026-02-01T12:00:01Z";
  AcceptParams p{.session_id = session_id,
                 .to = alice.amid,
                 .capabilities = {"search", "book", "status"},
                 .constraints = {.max_message_size_bytes = 65536,
                                 .max_messages = 20,
                                 .ttl_seconds = 300,
                                 .signed_messages = true},
                 .timestamp = Ts(ts)};
  Accept a = Must(BuildAccept(p, bob.signing), "accept");
  json inputs = {{"session_id", p.session_id},
                 {"to", p.to.str()},
                 {"capabilities", p.capabilities},
                 {"constraints",
                  {{"max_message_size_bytes", p.constraints.max_message_size_bytes},
                   {"max_messages", p.constraints.max_messages},
                   {"ttl_seconds", p.constraints.ttl_seconds},
                   {"signed_messages", p.constraints.signed_messages}}},
                 {"timestamp", ts}};
  vectors.push_back(Record("accept", inputs, a.object));
  return vectors;
}

json RejectVectors(const Party& bob, const Party& alice, const std::string& session_id) {
  json vectors = json::array();
  {
    const std::string_view ts = "2026-02-01T12:00:01Z";
    RejectParams p{.session_id = session_id,
                   .to = alice.amid,
                   .reason = RejectReason::kIntentNotAccepted,
                   .human_readable = "I don't handle creative requests.\nTry 'creative'.",
                   .timestamp = Ts(ts)};
    Reject r = Must(BuildReject(p, bob.signing), "reject");
    vectors.push_back(Record("reject_intent",
                             {{"session_id", p.session_id},
                              {"to", p.to.str()},
                              {"reason", RejectReasonName(p.reason)},
                              {"human_readable", *p.human_readable},
                              {"timestamp", ts}},
                             r.object));
  }
  {
    const std::string_view ts = "2026-02-01T12:00:01.5Z";
    RejectParams p{.session_id = session_id,
                   .to = alice.amid,
                   .reason = RejectReason::kRateLimited,
                   .retry_after_seconds = 37,
                   .timestamp = Ts(ts)};
    Reject r = Must(BuildReject(p, bob.signing), "reject rate");
    vectors.push_back(Record("reject_rate_limited",
                             {{"session_id", p.session_id},
                              {"to", p.to.str()},
                              {"reason", RejectReasonName(p.reason)},
                              {"retry_after_seconds", *p.retry_after_seconds},
                              {"timestamp", ts}},
                             r.object));
  }
  return vectors;
}

json EnvelopeVectors(const Party& alice, const Party& bob, const std::string& session_id) {
  struct Case {
    const char* name;
    const Party* from;
    const Party* to;
    std::uint64_t sequence;
    EnvelopeType type;
    const char* timestamp;
    json payload;
    bool sign;
  };
  const Case cases[] = {
      {"request_signed", &alice, &bob, 1, EnvelopeType::kRequest, "2026-02-01T12:00:02Z",
       json::parse(R"({"intent":{"category":"travel","action":"search"},
                       "parameters":{"origin":"TLV","destination":"BER","date":"2026-02-08",
                                     "passengers":1,"class":"economy",
                                     "preferences":{"max_stops":1,"airline_preference":["LH","EL AL"]}},
                       "budget":{"max":500,"currency":"USD"},
                       "response_format":{"type":"structured",
                                          "schema":"agentmesh/travel/flight-results/v1"}})"),
       true},
      {"response_signed_numbers_and_unicode", &bob, &alice, 1, EnvelopeType::kResponse,
       "2026-02-01T12:00:03.250Z",
       json::parse(R"({"status":"success","results":[{"flight":"LH1234","price":320.0,
                       "score":0.6,"tiny":1e-7,"huge":1e21,"city":"Z\u00fcrich \u2708",
                       "note":"line1\nline2 \"quoted\" \u0001"}],"result_count":3})"),
       true},
      {"status_unsigned", &bob, &alice, 2, EnvelopeType::kStatus, "2026-02-01T12:00:04Z",
       json::parse(R"({"status":"processing","progress":0.6,"estimated_completion_seconds":5})"),
       false},
      {"error_signed", &bob, &alice, 3, EnvelopeType::kError, "2026-02-01T12:00:05Z",
       MakeErrorPayload("CAPABILITY_UNAVAILABLE", "Flight search is temporarily unavailable.", 60),
       true},
      {"capability_negotiation_signed", &alice, &bob, 2, EnvelopeType::kCapabilityNegotiation,
       "2026-02-01T12:00:06Z",
       json::parse(R"({"i_need":["flight_search","booking"],"languages":["en","he"]})"), true},
      {"close_signed", &alice, &bob, 3, EnvelopeType::kClose, "2026-02-01T12:00:07Z",
       MakeClosePayload("completed", "Searched 3 flights."), true},
  };
  json vectors = json::array();
  for (const Case& c : cases) {
    EnvelopeParams p{.session_id = session_id,
                     .sequence = c.sequence,
                     .from = c.from->amid,
                     .to = c.to->amid,
                     .type = c.type,
                     .timestamp = Ts(c.timestamp),
                     .payload = c.payload};
    Envelope e = c.sign ? Must(BuildSignedEnvelope(p, c.from->signing), c.name)
                        : Must(BuildUnsignedEnvelope(p), c.name);
    json inputs = {{"session_id", session_id},
                   {"sequence", c.sequence},
                   {"from", c.from == &alice ? "initiator" : "responder"},
                   {"to", c.to == &alice ? "initiator" : "responder"},
                   {"type", EnvelopeTypeName(c.type)},
                   {"timestamp", c.timestamp},
                   {"payload", c.payload},
                   {"signed", c.sign}};
    vectors.push_back(Record(c.name, inputs, e.Object(), e.Serialize()));
  }
  return vectors;
}

void Write(const std::string& path, const json& doc) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << doc.dump(1) << "\n";
  if (!out) {
    std::cerr << "gen_message_vectors: cannot write " << path << "\n";
    std::exit(1);
  }
  std::cout << "wrote " << path << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "tests/vectors";
  const Party alice = MakeParty(1);  // initiator
  const Party bob = MakeParty(2);    // responder
  DeterministicRng session_rng(3);
  const std::string session_id = NewSessionId(session_rng);

  const json keys = {{"initiator", PartyJson(alice, 1)}, {"responder", PartyJson(bob, 2)}};
  const std::string common =
      "Keys: Ed25519 from ed25519_seed_hex, X25519 from x25519_secret_hex (generated by "
      "DeterministicRng(rng_seed): Ed25519 seed then X25519 secret). signing_string = RFC 8785 "
      "canonical JSON of the message without \"signature\"; signature = base64 Ed25519 over its "
      "UTF-8 bytes; serialized = this library's compact output (nlohmann dump(), members sorted; "
      "number "
      "spellings may differ from the signing string, and any JSON text with the same value is "
      "valid "
      "on the wire). Timestamps are "
      "emitted as RFC 3339 with Z and 0/3/6/9 fraction digits.";

  json knock_doc = {
      {"description",
       "agentmesh/1 KNOCK, ACCEPT and REJECT built from `inputs` (KNOCK from the initiator to the "
       "responder, ACCEPT/REJECT from the responder to the initiator; session_id from "
       "NewSessionId(DeterministicRng(3))). `modify_then_resign`: after building, set these "
       "members (dotted paths) and sign again. " +
           common},
      {"keys", keys},
      {"knock", KnockVectors(alice, bob, session_id)},
      {"accept", AcceptVectors(bob, alice, session_id)},
      {"reject", RejectVectors(bob, alice, session_id)}};
  json envelope_doc = {
      {"description",
       "agentmesh/1 in-session envelopes built from `inputs`; from/to name a party in `keys`; "
       "signed = false means the session negotiated signed_messages false and the envelope has "
       "no signature member. " +
           common},
      {"keys", keys},
      {"envelopes", EnvelopeVectors(alice, bob, session_id)}};
  Write(dir + "/knock.json", knock_doc);
  Write(dir + "/envelope.json", envelope_doc);
  return 0;
}
