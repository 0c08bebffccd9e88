// Session handshake messages of agentmesh/1: KNOCK, ACCEPT and REJECT.
//
// A session starts with the initiator's KNOCK (who I am, what I want, what kind of session), which
// travels as the plaintext of the first (prekey) ratchet message, so the relay sees neither intent
// nor identity hints. The receiver evaluates it with hard-coded policy and answers with ACCEPT
// (capabilities + constraints, never key material) or REJECT (a reason code). Every in-session
// message after that is an Envelope (envelope.hpp).
//
// Encoding rules shared by all three messages (and by the Envelope):
//   - A message is one JSON object, members in snake_case, tagged by its top-level "type".
//   - Signature: Ed25519 over the UTF-8 bytes of the RFC 8785 canonical JSON of the whole object
//     with its top-level "signature" member removed (SigningInput()); "signature" holds the 64
//     signature bytes in standard, padded base64. The verifier recomputes the canonical form from
//     the object it RECEIVED, so members this version does not know are covered too: they are kept
//     in the parsed value (`object`) and re-emitted verbatim by Serialize().
//   - Timestamps are RFC 3339 strings (emitted as FormatRfc3339Z, e.g. "2026-02-01T12:00:00Z").
//     Verifiers accept a timestamp inside [now - 300 s, now + 60 s] by default (CheckFreshness).
//   - AMIDs are canonical base58 (identity.hpp). Keys are "ed25519:<b64>" / "x25519:<b64>"; the
//     prefix is optional on input and always emitted.
//   - session_id is a UUID version 4 in its canonical lower-case text form
//     ("8-4-4-4-12" hex digits), chosen by the initiator and echoed by ACCEPT/REJECT/Envelope.
//   - Optional members may be absent or JSON null; both mean "not given".
//   - Strict parsing: a missing required member, a member of the wrong JSON type or a value out of
//     range fails with kInvalidArgument and Error::field naming it with a dotted path
//     ("intent.category", "session_request.ttl_seconds", "capabilities[2]").
//   - Text entry points check the size before parsing (kLimitExceeded), reject duplicate member
//     names and nesting deeper than kMaxJsonDepth (kInvalidArgument), and require an object.
//
// Typed structs are views of `object`: parsing fills both, and callers must not edit one without
// re-parsing. All functions are pure (no clock, no I/O); "now" is passed in. Thread-safety: values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/core/tier.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh {

// The only protocol version this code speaks. Anything else in a KNOCK is kInvalidArgument.
inline constexpr std::string_view kProtocolVersion = "agentmesh/1";

// Serialized size limits (bytes of the JSON text; for an object given as nlohmann::json, bytes of
// its compact dump()).
inline constexpr std::size_t kMaxKnockBytes = 4096;
inline constexpr std::size_t kMaxAcceptBytes = 8192;
inline constexpr std::size_t kMaxRejectBytes = 4096;
// Containers nested deeper than this (objects and arrays; the top-level object is depth 1) are
// rejected by the text parsers.
inline constexpr int kMaxJsonDepth = 64;

// ---------------------------------------------------------------------------------------------
// Freshness

inline constexpr UnixNanos kDefaultMaxPast = 300 * kNanosPerSecond;
inline constexpr UnixNanos kDefaultMaxFuture = 60 * kNanosPerSecond;

struct FreshnessWindow {
  UnixNanos max_past = kDefaultMaxPast;      // how old a timestamp may be
  UnixNanos max_future = kDefaultMaxFuture;  // how far ahead of `now` (clock skew) it may be
};

// OK iff now - max_past <= ts <= now + max_future. Otherwise kReplay, field "timestamp", with a
// message saying how stale or how far in the future the timestamp is. Overflow-safe.
Result<void> CheckFreshness(UnixNanos ts, UnixNanos now, UnixNanos max_past = kDefaultMaxPast,
                            UnixNanos max_future = kDefaultMaxFuture);

// ---------------------------------------------------------------------------------------------
// Session ids

// A fresh UUID v4 (122 random bits from `rng`) in canonical lower-case form.
std::string NewSessionId(Rng& rng);
// OK iff `text` is a lower-case canonical UUID with version nibble 4 and variant bits 10xx.
// kInvalidArgument otherwise (field left empty; callers set it).
Result<void> ValidateSessionId(std::string_view text);

// ---------------------------------------------------------------------------------------------
// Signatures over canonical JSON

// CanonicalJsonWithout(object, "signature"): the exact byte string a signature covers.
// kInvalidArgument if `object` is not an object or holds a value JCS cannot represent.
Result<std::string> SigningInput(const nlohmann::json& object);
// Sets object["signature"] = base64(Ed25519(secret, SigningInput(object))). Any previous
// signature member is ignored (it is not part of the signing input) and replaced.
Result<void> SignObject(nlohmann::json& object, const Ed25519SecretKey& secret);
// Checks object["signature"] against `key`: kInvalidArgument (field "signature") if it is absent,
// not a string, not base64 or not 64 bytes; kAuthFailed (field "signature") if it does not verify.
Result<void> VerifyObjectSignature(const nlohmann::json& object, const Ed25519PublicKey& key);

// ---------------------------------------------------------------------------------------------
// Enumerations. Each has a stable wire name; Parse* of an unknown name is kInvalidArgument.

// Trust tiers are agentmesh::Tier from tier.hpp. A KNOCK emits the name (ToString(tier)) and
// accepts the name or the spec's number (TierFromJson).

// Session types (spec §5.6).
enum class SessionType { kRequestResponse, kConversation, kStream };
// "request_response" | "conversation" | "stream"
std::string_view SessionTypeName(SessionType type) noexcept;
Result<SessionType> ParseSessionType(std::string_view name);

enum class Urgency { kLow, kNormal, kHigh, kCritical };
std::string_view UrgencyName(Urgency urgency) noexcept;  // low | normal | high | critical
Result<Urgency> ParseUrgency(std::string_view name);

// REJECT reason codes (spec §5.3 evaluation steps, plus "paused").
enum class RejectReason {
  kInvalidSignature,
  kBlocked,
  kInsufficientTrust,
  kRateLimited,
  kIntentNotAccepted,
  kNotInAllowlist,
  kLowReputation,
  kAtCapacity,
  kPaused,
};
std::string_view RejectReasonName(RejectReason reason) noexcept;  // e.g. "intent_not_accepted"
Result<RejectReason> ParseRejectReason(std::string_view name);

// ---------------------------------------------------------------------------------------------
// KNOCK
//
//   {"type":"knock","protocol_version":"agentmesh/1",
//    "session_id":"3b241101-e2bb-4255-8caf-4136c566a962",
//    "from":{"amid":"jZ6CK1dpcZD4oPYScUJvifP7BtJ",
//            "signing_public_key":"ed25519:<b64 32 bytes>",
//            "exchange_public_key":"x25519:<b64 32 bytes>",
//            "tier":"verified",
//            "display_name":"Alice's Assistant",
//            "organization":null,
//            "reputation_score":0.92},
//    "to":"<receiver amid>",
//    "intent":{"category":"travel","subcategory":"flights","action":"search","urgency":"normal"},
//    "session_request":{"type":"request_response","expected_messages":5,"ttl_seconds":300,
//                       "signed_messages":true},
//    "timestamp":"2026-02-01T12:00:00Z",
//    "signature":"<b64 64 bytes>"}
//
// Members (required unless marked optional):
//   type                        "knock"
//   protocol_version            exactly "agentmesh/1"
//   session_id                  UUID v4, chosen by the initiator
//   from.amid                   must equal Amid::FromPublicKey(from.signing_public_key)
//   from.signing_public_key     Ed25519 key that signs this KNOCK
//   from.exchange_public_key    X25519 identity key. This is what binds the X3DH identity key to
//                               the signed identity: the daemon must compare it with IK_A of the
//                               prekey ratchet message that carried this KNOCK.
//   from.tier                   "anonymous" | "verified" | "organization", or 2 | 1 | 1.5
//   from.display_name           optional, 1..128 bytes, no control characters
//   from.organization           optional (or null), 1..128 bytes, no control characters
//   from.reputation_score       optional number in [0, 1]
//   to                          receiver AMID
//   intent.category             1..64 chars of [a-z0-9_-]; custom categories are spelled
//                               "x-<namespace>" (e.g. "x-acme" or "x-acme-widgets")
//   intent.subcategory          optional, same grammar
//   intent.action               optional, same grammar
//   intent.urgency              optional "low" | "normal" | "high" | "critical" (default normal)
//   session_request.type        "request_response" | "conversation" | "stream"
//   session_request.expected_messages  optional integer 1..1000000
//   session_request.ttl_seconds integer 1..86400
//   session_request.signed_messages    optional bool (default true): per-envelope signatures
//   timestamp                   RFC 3339
//   signature                   see top of file
// The whole KNOCK is at most kMaxKnockBytes.
//
// from.tier and from.reputation_score are HINTS ONLY, claimed by the sender: receiver policy must
// use the values the registry reports for from.amid, never these.

struct KnockSender {
  Amid amid;
  Ed25519PublicKey signing_public_key = {};
  X25519PublicKey exchange_public_key = {};
  Tier tier = Tier::kAnonymous;  // hint only
  std::optional<std::string> display_name = std::nullopt;
  std::optional<std::string> organization = std::nullopt;
  std::optional<double> reputation_score = std::nullopt;  // hint only
};

struct Intent {
  std::string category = {};
  std::optional<std::string> subcategory = std::nullopt;
  std::optional<std::string> action = std::nullopt;
  Urgency urgency = Urgency::kNormal;
};

struct SessionRequest {
  SessionType type = SessionType::kRequestResponse;
  std::optional<std::uint32_t> expected_messages = std::nullopt;
  std::uint32_t ttl_seconds = 300;
  bool signed_messages = true;
};

struct Knock {
  std::string session_id = {};
  KnockSender from;
  Amid to;
  Intent intent = {};
  SessionRequest session_request = {};
  UnixNanos timestamp = 0;
  Signature signature = {};
  // The message as received or built, unknown members included. The signature covers exactly
  // SigningInput(object).
  nlohmann::json object = nlohmann::json::object();

  // Compact JSON of `object` (nlohmann dump()); never throws.
  std::string Serialize() const;
};

// What the initiator chooses; from.* comes from the keys passed to BuildKnock.
struct KnockParams {
  std::string session_id = {};  // NewSessionId(rng)
  Amid to;
  Intent intent = {};
  SessionRequest session_request = {};
  Tier tier = Tier::kAnonymous;
  std::optional<std::string> display_name = std::nullopt;
  std::optional<std::string> organization = std::nullopt;
  std::optional<double> reputation_score = std::nullopt;
  UnixNanos timestamp = 0;
};

// Builds and signs a KNOCK from `signer` (whose AMID becomes from.amid) and the sender's X25519
// identity key. The result is validated exactly as ParseKnock would (kInvalidArgument naming the
// bad field); kLimitExceeded if it would exceed kMaxKnockBytes.
Result<Knock> BuildKnock(const KnockParams& params, const Ed25519KeyPair& signer,
                         const X25519PublicKey& exchange_public_key);

// Strict parse (see rules above). Does NOT verify the signature: call VerifyKnock.
Result<Knock> ParseKnock(std::string_view json_text);
Result<Knock> ParseKnock(const nlohmann::json& object);
// Unambiguous spellings of the text form (a std::string would otherwise also convert to json).
inline Result<Knock> ParseKnock(const std::string& json_text) {
  return ParseKnock(std::string_view(json_text));
}
inline Result<Knock> ParseKnock(const char* json_text) {
  return ParseKnock(std::string_view(json_text));
}

// Receiver-side checks, cheapest first (docs/PROTOCOL.md §11.1; size, JSON types and
// protocol_version were already checked by the parser):
//   1. to == self: else kPermissionDenied, field "to", message "KNOCK addressed to another agent"
//   2. from.amid == Amid::FromPublicKey(from.signing_public_key): else kAuthFailed "from.amid"
//   3. CheckFreshness(timestamp, now, window): else kReplay "timestamp"
//   4. the signature verifies over SigningInput(object): else kAuthFailed "signature"
// The daemon must additionally compare from.exchange_public_key with the ratchet's IK_A and keep
// its own replay cache of session ids.
Result<void> VerifyKnock(const Knock& knock, const Amid& self, UnixNanos now,
                         const FreshnessWindow& window = {});

// ---------------------------------------------------------------------------------------------
// ACCEPT
//
//   {"type":"accept","session_id":"3b241101-e2bb-4255-8caf-4136c566a962",
//    "from":"<responder amid>","to":"<initiator amid>",
//    "capabilities":["search","book","status"],
//    "constraints":{"max_message_size_bytes":65536,"max_messages":20,"ttl_seconds":300,
//                   "signed_messages":true},
//    "timestamp":"2026-02-01T12:00:01Z","signature":"<b64>"}
//
//   session_id                         echoes the KNOCK's
//   from / to                          responder / initiator AMIDs
//   capabilities                       array (possibly empty, at most 64) of strings 1..128 bytes
//                                      without whitespace or control characters
//   constraints.max_message_size_bytes integer 256..kMaxEnvelopeBytesCap (serialized Envelope)
//   constraints.max_messages           integer 1..1000000 (per sender)
//   constraints.ttl_seconds            integer 1..86400
//   constraints.signed_messages        optional bool (default true); the session's binding value
// There is no session_key: key material never travels in an ACCEPT (the ratchet already has it).
// Both daemons enforce the constraints on every Envelope.

inline constexpr std::size_t kMaxEnvelopeBytesCap = 1 << 20;  // 1 MiB
inline constexpr std::size_t kMinMessageSizeBytes = 256;

struct SessionConstraints {
  std::uint64_t max_message_size_bytes = 65536;
  std::uint32_t max_messages = 20;
  std::uint32_t ttl_seconds = 300;
  bool signed_messages = true;
};

struct Accept {
  std::string session_id = {};
  Amid from;
  Amid to;
  std::vector<std::string> capabilities = {};
  SessionConstraints constraints = {};
  UnixNanos timestamp = 0;
  Signature signature = {};
  nlohmann::json object = nlohmann::json::object();

  std::string Serialize() const;
};

struct AcceptParams {
  std::string session_id = {};
  Amid to;
  std::vector<std::string> capabilities = {};
  SessionConstraints constraints = {};
  UnixNanos timestamp = 0;
};

// Signed by `signer`, whose AMID becomes "from". Validated like ParseAccept.
Result<Accept> BuildAccept(const AcceptParams& params, const Ed25519KeyPair& signer);
Result<Accept> ParseAccept(std::string_view json_text);
Result<Accept> ParseAccept(const nlohmann::json& object);
// Unambiguous spellings of the text form (a std::string would otherwise also convert to json).
inline Result<Accept> ParseAccept(const std::string& json_text) {
  return ParseAccept(std::string_view(json_text));
}
inline Result<Accept> ParseAccept(const char* json_text) {
  return ParseAccept(std::string_view(json_text));
}

// Initiator-side checks with the responder's Ed25519 key (from the registry lookup), in order:
//   to == self                                   else kPermissionDenied "to"
//   Amid::FromPublicKey(responder_key) == from   else kAuthFailed "from"
//   freshness                                    else kReplay "timestamp"
//   signature                                    else kAuthFailed "signature"
Result<void> VerifyAccept(const Accept& accept, const Ed25519PublicKey& responder_key,
                          const Amid& self, UnixNanos now, const FreshnessWindow& window = {});

// ---------------------------------------------------------------------------------------------
// REJECT
//
//   {"type":"reject","session_id":"3b241101-e2bb-4255-8caf-4136c566a962",
//    "from":"<responder amid>","to":"<initiator amid>",
//    "reason":"intent_not_accepted",
//    "human_readable":"I don't handle creative requests.",
//    "retry_after_seconds":null,
//    "timestamp":"2026-02-01T12:00:01Z","signature":"<b64>"}
//
//   reason               one of RejectReasonName(); an unknown code is kInvalidArgument "reason"
//   human_readable       optional, 1..512 bytes, no control characters except \n and \t
//   retry_after_seconds  optional (or null) integer 0..86400

struct Reject {
  std::string session_id = {};
  Amid from;
  Amid to;
  RejectReason reason = RejectReason::kBlocked;
  std::optional<std::string> human_readable = std::nullopt;
  std::optional<std::uint32_t> retry_after_seconds = std::nullopt;
  UnixNanos timestamp = 0;
  Signature signature = {};
  nlohmann::json object = nlohmann::json::object();

  std::string Serialize() const;
};

struct RejectParams {
  std::string session_id = {};
  Amid to;
  RejectReason reason = RejectReason::kBlocked;
  std::optional<std::string> human_readable = std::nullopt;
  std::optional<std::uint32_t> retry_after_seconds = std::nullopt;
  UnixNanos timestamp = 0;
};

Result<Reject> BuildReject(const RejectParams& params, const Ed25519KeyPair& signer);
Result<Reject> ParseReject(std::string_view json_text);
Result<Reject> ParseReject(const nlohmann::json& object);
// Unambiguous spellings of the text form (a std::string would otherwise also convert to json).
inline Result<Reject> ParseReject(const std::string& json_text) {
  return ParseReject(std::string_view(json_text));
}
inline Result<Reject> ParseReject(const char* json_text) {
  return ParseReject(std::string_view(json_text));
}
// Same checks as VerifyAccept.
Result<void> VerifyReject(const Reject& reject, const Ed25519PublicKey& responder_key,
                          const Amid& self, UnixNanos now, const FreshnessWindow& window = {});

// Does this (already verified) answer belong to `knock`? kInvalidArgument naming the member unless
// session_id matches, from == knock.to and to == knock.from.amid. For an ACCEPT additionally: if
// the KNOCK asked for signed messages, constraints.signed_messages must be true (a responder may
// turn signing on, never off).
Result<void> CheckAnswersKnock(const Accept& accept, const Knock& knock);
Result<void> CheckAnswersKnock(const Reject& reject, const Knock& knock);

// ---------------------------------------------------------------------------------------------
// Internal helpers shared by knock.cpp and envelope.cpp. Not a stable API.
namespace detail {

// Compact dump that never throws (invalid UTF-8 is replaced, which only matters for objects that
// did not come from the text parser and will fail canonicalization anyway).
std::string Dump(const nlohmann::json& value);
// Size check, then non-throwing parse with duplicate-name and depth checks; must be an object.
Result<nlohmann::json> ParseObjectText(std::string_view text, std::size_t max_bytes,
                                       std::string_view what);
// "prefix.key" or "key".
std::string FieldPath(std::string_view prefix, std::string_view key);

// Member readers. `required` members that are absent fail "is required"; optional members that
// are absent or null yield std::nullopt. Errors are kInvalidArgument naming FieldPath(prefix, key).
Result<const nlohmann::json*> GetMember(const nlohmann::json& object, std::string_view key,
                                        std::string_view prefix, bool required);
Result<const nlohmann::json*> GetObject(const nlohmann::json& object, std::string_view key,
                                        std::string_view prefix);
Result<std::string> GetString(const nlohmann::json& object, std::string_view key,
                              std::string_view prefix);
Result<std::optional<std::int64_t>> GetInteger(const nlohmann::json& object, std::string_view key,
                                               std::string_view prefix, bool required,
                                               std::int64_t min, std::int64_t max);
Result<std::optional<bool>> GetBool(const nlohmann::json& object, std::string_view key,
                                    std::string_view prefix);
Result<Amid> GetAmid(const nlohmann::json& object, std::string_view key, std::string_view prefix);
Result<UnixNanos> GetTimestamp(const nlohmann::json& object, std::string_view key);
Result<std::string> GetSessionId(const nlohmann::json& object, std::string_view key);
// Requires "type" to be a string equal to `expected`.
Result<void> ExpectType(const nlohmann::json& object, std::string_view expected);
// The "signature" member: required => kInvalidArgument if absent.
Result<std::optional<Signature>> GetSignatureMember(const nlohmann::json& object, bool required);
// kAuthFailed (field `field`) unless `claimed` is the AMID of `key`.
Result<void> CheckAmidOfKey(const Amid& claimed, const Ed25519PublicKey& key,
                            std::string_view field);
// VerifyObjectSignature, with a signing input that cannot be formed reported as kAuthFailed.
Result<void> VerifySignature(const nlohmann::json& object, const Ed25519PublicKey& key);

}  // namespace detail

}  // namespace agentmesh
