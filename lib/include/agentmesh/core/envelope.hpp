// The in-session message Envelope of agentmesh/1, and the daemon's entry point for decrypted
// ratchet plaintexts.
//
// Every message inside an established session is one Envelope, serialized as compact JSON,
// signed (unless the session negotiated signed_messages = false) and then encrypted by the Double
// Ratchet. The relay sees only ciphertext.
//
//   {"session_id":"3b241101-e2bb-4255-8caf-4136c566a962",
//    "sequence":1,
//    "from":"<sender amid>",
//    "to":"<receiver amid>",
//    "type":"request",
//    "timestamp":"2026-02-01T12:00:02Z",
//    "payload":{"intent":{"category":"travel","action":"search"},"parameters":{"origin":"TLV"}},
//    "signature":"<b64 64 bytes>"}
//
//   session_id  UUID v4 of the session (the KNOCK's)
//   sequence    integer 1..2^53-1; starts at 1 and is counted per sender per session. Order must be
//               preserved: the receiver requires exactly the next number (CheckSequence), so a
//               replay (lower) is kReplay and a gap (higher) is kInvalidArgument.
//   from / to   sender / receiver AMIDs, checked against the session's parties
//   type        "request" | "response" | "status" | "error" | "close" | "capability_negotiation" |
//               "capability_negotiation_response"
//   timestamp   RFC 3339
//   payload     a JSON object (any other JSON type is kInvalidArgument "payload"); for "close" it
//               needs a non-empty string "reason", for "error" non-empty strings "code" and
//               "message" (spec §6.2); other members are free-form and preserved.
//   signature   present iff the session negotiated signed_messages (the default): Ed25519 by the
//               sender's identity key over the RFC 8785 canonical JSON of the envelope without its
//               "signature" member (SigningInput() in knock.hpp). When unsigned the member is
//               absent, and the AEAD alone authenticates the message.
//
// Unknown top-level members are preserved (Object()) and covered by the signature. The serialized
// size of an Envelope is limited by the session's constraints.max_message_size_bytes
// (kLimitExceeded) and never exceeds kMaxEnvelopeBytesCap.
//
// Replay defence inside a session is the ratchet plus the sequence number, so envelope timestamps
// are not freshness-checked by default (store-and-forward may deliver hours later); a caller that
// wants a window passes EnvelopeCheck::freshness.
//
// All functions are pure. Thread-safety: values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <nlohmann/json.hpp>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/knock.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh {

inline constexpr std::size_t kDefaultMaxMessageSizeBytes = 65536;
// Largest sequence number: the largest integer RFC 8785 (IEEE-754 double) represents exactly.
inline constexpr std::uint64_t kMaxSequence = (std::uint64_t{1} << 53) - 1;

enum class EnvelopeType {
  kRequest,
  kResponse,
  kStatus,
  kError,
  kClose,
  kCapabilityNegotiation,
  kCapabilityNegotiationResponse,
};
std::string_view EnvelopeTypeName(EnvelopeType type) noexcept;  // e.g. "capability_negotiation"
Result<EnvelopeType> ParseEnvelopeType(std::string_view name);

struct Envelope {
  std::string session_id = {};
  std::uint64_t sequence = 0;
  Amid from;
  Amid to;
  EnvelopeType type = EnvelopeType::kRequest;
  UnixNanos timestamp = 0;
  // Always an object: a copy of the envelope's "payload" member.
  nlohmann::json payload = nlohmann::json::object();
  // Absent in sessions without signed_messages.
  std::optional<Signature> signature = std::nullopt;
  // The envelope as received, unknown members included; the signature covers exactly
  // SigningInput(object). Null for an envelope made by BuildSignedEnvelope/BuildUnsignedEnvelope:
  // the send path only needs `text`, so the builders do not pay for a second copy of the payload
  // in a DOM. Use Object() to get the DOM of either kind.
  nlohmann::json object = nullptr;
  // The text it was parsed from, or, when built, its RFC 8785 canonical form with the signature
  // member in its sorted place (so the signing input is the text minus that member). Empty for an
  // envelope parsed from a DOM.
  std::string text = {};
  // Bytes of the text it was parsed from, else of Serialize(). This is what the session's
  // max_message_size_bytes limits.
  std::size_t wire_size = 0;

  // `text` when set, else the compact dump of `object`.
  std::string Serialize() const;
  // The envelope as a JSON object: `object` when set, else parsed from `text` (a built envelope;
  // the text is valid JSON by construction, so this never fails for one). Costs a parse for a
  // built envelope: not for hot paths.
  nlohmann::json Object() const;
};

struct EnvelopeParams {
  std::string session_id = {};
  std::uint64_t sequence = 1;
  Amid from;
  Amid to;
  EnvelopeType type = EnvelopeType::kRequest;
  UnixNanos timestamp = 0;
  nlohmann::json payload = nlohmann::json::object();
  // The session's constraints.max_message_size_bytes; the built envelope must fit.
  std::size_t max_message_size_bytes = kDefaultMaxMessageSizeBytes;
};

// Builds an envelope signed by `signer`; params.from must be the signer's AMID (kInvalidArgument,
// field "from"). Validated like ParseEnvelope; kLimitExceeded if Serialize() is longer than
// params.max_message_size_bytes.
Result<Envelope> BuildSignedEnvelope(const EnvelopeParams& params, const Ed25519KeyPair& signer);
// Same without a "signature" member, for sessions that negotiated signed_messages = false.
Result<Envelope> BuildUnsignedEnvelope(const EnvelopeParams& params);

// Strict parse. The text form fails with kLimitExceeded when longer than `max_bytes` before any
// parsing. Does NOT verify the signature or the parties: call VerifyEnvelope and CheckSequence.
Result<Envelope> ParseEnvelope(std::string_view json_text,
                               std::size_t max_bytes = kMaxEnvelopeBytesCap);
Result<Envelope> ParseEnvelope(const nlohmann::json& object);
// Unambiguous spellings of the text form (a std::string would otherwise also convert to json).
inline Result<Envelope> ParseEnvelope(const std::string& json_text,
                                      std::size_t max_bytes = kMaxEnvelopeBytesCap) {
  return ParseEnvelope(std::string_view(json_text), max_bytes);
}
inline Result<Envelope> ParseEnvelope(const char* json_text,
                                      std::size_t max_bytes = kMaxEnvelopeBytesCap) {
  return ParseEnvelope(std::string_view(json_text), max_bytes);
}

// What the receiving daemon knows about the session the ratchet delivered the envelope on.
struct EnvelopeCheck {
  std::string session_id = {};
  Amid sender;                       // the peer that sent this envelope
  Amid receiver;                     // ourselves
  Ed25519PublicKey sender_key = {};  // the sender's identity signing key (KNOCK or registry)
  bool signed_messages = true;       // the ACCEPT's constraints.signed_messages
  std::size_t max_message_size_bytes = kDefaultMaxMessageSizeBytes;
  // Off by default, see the top of this file.
  std::optional<FreshnessWindow> freshness = std::nullopt;
};

// Checks, cheapest first:
//   wire_size <= max_message_size_bytes                 else kLimitExceeded
//   session_id == check.session_id                       else kInvalidArgument "session_id"
//   from == check.sender                                 else kAuthFailed "from"
//   to == check.receiver        else kPermissionDenied "to", "envelope addressed to another agent"
//   freshness (only if check.freshness is set)           else kReplay "timestamp"
//   unsigned session: no signature member                else kInvalidArgument "signature"
//   signed session: signature present (kAuthFailed "signature"), sender_key's AMID == sender
//     (kAuthFailed "from"), signature verifies (kAuthFailed "signature").
// The sequence number is checked separately with CheckSequence, against the daemon's state.
Result<void> VerifyEnvelope(const Envelope& envelope, const EnvelopeCheck& check, UnixNanos now);

// OK iff got == expected_next. got < expected_next: kReplay ("sequence N already received");
// got > expected_next: kInvalidArgument ("sequence gap"). Field "sequence" in both cases.
Result<void> CheckSequence(std::uint64_t expected_next, std::uint64_t got);

// ---------------------------------------------------------------------------------------------
// Standard payloads (spec §6.2). Builders return payload objects for EnvelopeParams::payload.

//   {"reason":"completed","summary":"Searched 3 flights."}
nlohmann::json MakeClosePayload(std::string_view reason,
                                std::optional<std::string_view> summary = std::nullopt);
//   {"code":"CAPABILITY_UNAVAILABLE","message":"Retry later.","retry_after_seconds":60}
nlohmann::json MakeErrorPayload(std::string_view code, std::string_view message,
                                std::optional<std::uint32_t> retry_after_seconds = std::nullopt);
// The minimal per-type rules described at the top of this file; fields are reported as
// "payload.reason", "payload.code", .... ParseEnvelope applies this.
Result<void> ValidatePayload(EnvelopeType type, const nlohmann::json& payload);

// ---------------------------------------------------------------------------------------------
// Decrypted plaintexts

using SessionMessage = std::variant<Knock, Accept, Reject, Envelope>;

// Parses a decrypted ratchet plaintext, dispatching on its top-level "type": "knock", "accept",
// "reject", or an EnvelopeType name. An unknown or missing type is kInvalidArgument with field
// "type". Size limits: kLimitExceeded if the text is longer than the larger of
// `max_envelope_bytes` and kMaxAcceptBytes (checked before parsing), then the limit of the
// dispatched type (kMaxKnockBytes, kMaxAcceptBytes, kMaxRejectBytes or max_envelope_bytes).
// Nothing is verified: the daemon calls the matching Verify* next.
Result<SessionMessage> ParseSessionPlaintext(std::string_view json_text,
                                             std::size_t max_envelope_bytes = kMaxEnvelopeBytesCap);

}  // namespace agentmesh
