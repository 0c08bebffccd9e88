#include "agentmesh/core/envelope.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <utility>

#include "agentmesh/core/canonical_json.hpp"
#include "agentmesh/core/json_scan.hpp"

namespace agentmesh {
namespace {

using nlohmann::json;

std::unexpected<Error> Invalid(std::string field, std::string message) {
  return Fail(Code::kInvalidArgument, std::move(message), std::move(field));
}

template <typename T>
std::unexpected<Error> Propagate(const Result<T>& r) {
  return std::unexpected(r.error());
}

constexpr std::array<std::pair<std::string_view, EnvelopeType>, 7> kEnvelopeTypeNames = {{
    {"request", EnvelopeType::kRequest},
    {"response", EnvelopeType::kResponse},
    {"status", EnvelopeType::kStatus},
    {"error", EnvelopeType::kError},
    {"close", EnvelopeType::kClose},
    {"capability_negotiation", EnvelopeType::kCapabilityNegotiation},
    {"capability_negotiation_response", EnvelopeType::kCapabilityNegotiationResponse},
}};

Result<Envelope> ParseEnvelopeObject(json object, std::size_t wire_size) {
  if (!object.is_object()) return Invalid("", "envelope must be a JSON object");
  auto session_id = detail::GetSessionId(object, "session_id");
  if (!session_id) return Propagate(session_id);
  auto sequence =
      detail::GetInteger(object, "sequence", "", true, 1, static_cast<std::int64_t>(kMaxSequence));
  if (!sequence) return Propagate(sequence);
  auto from = detail::GetAmid(object, "from", "");
  if (!from) return Propagate(from);
  auto to = detail::GetAmid(object, "to", "");
  if (!to) return Propagate(to);
  auto type_text = detail::GetString(object, "type", "");
  if (!type_text) return Propagate(type_text);
  auto type = ParseEnvelopeType(*type_text);
  if (!type) return Invalid("type", type.error().message);
  auto timestamp = detail::GetTimestamp(object, "timestamp");
  if (!timestamp) return Propagate(timestamp);
  auto payload = detail::GetMember(object, "payload", "", true);
  if (!payload) return Propagate(payload);
  if (auto r = ValidatePayload(*type, **payload); !r) return Propagate(r);
  auto signature = detail::GetSignatureMember(object, false);
  if (!signature) return Propagate(signature);
  return Envelope{.session_id = std::move(*session_id),
                  .sequence = static_cast<std::uint64_t>(**sequence),
                  .from = std::move(*from),
                  .to = std::move(*to),
                  .type = *type,
                  .timestamp = *timestamp,
                  .payload = **payload,
                  .signature = *signature,
                  .object = std::move(object),
                  .wire_size = wire_size};
}

// Builds the envelope without a parse round trip: the members are written once, directly in
// RFC 8785 order (from, payload, sequence, session_id, [signature,] timestamp, to, type), so the
// signing input is `head + tail` and the wire text is the same with the signature spliced in.
Result<Envelope> BuildEnvelope(const EnvelopeParams& params, const Ed25519KeyPair* signer) {
  if (signer != nullptr && Amid::FromPublicKey(signer->public_key) != params.from) {
    return Invalid("from", "is not the AMID of the signing key");
  }
  if (auto r = ValidateSessionId(params.session_id); !r) {
    return Invalid("session_id", r.error().message);
  }
  if (params.sequence < 1 || params.sequence > kMaxSequence) {
    return Invalid("sequence", fmt::format("must be an integer in [1, {}]", kMaxSequence));
  }
  if (auto r = ValidatePayload(params.type, params.payload); !r) return Propagate(r);
  auto canonical_payload = CanonicalJson(params.payload);
  if (!canonical_payload) return Invalid("payload", canonical_payload.error().message);
  const std::string timestamp = FormatRfc3339Z(params.timestamp);
  const std::string_view type_name = EnvelopeTypeName(params.type);

  std::string head;
  head.reserve(canonical_payload->size() + 160);
  head += "{\"from\":";
  AppendJsonString(head, params.from.str());
  head += ",\"payload\":";
  head += *canonical_payload;
  head += ",\"sequence\":";
  head += fmt::format_int(params.sequence).str();
  head += ",\"session_id\":";
  AppendJsonString(head, params.session_id);
  std::string tail = ",\"timestamp\":";
  AppendJsonString(tail, timestamp);
  tail += ",\"to\":";
  AppendJsonString(tail, params.to.str());
  tail += ",\"type\":";
  AppendJsonString(tail, type_name);
  tail += '}';

  std::optional<Signature> signature;
  std::string sig_text;
  std::string text;
  if (signer != nullptr) {
    std::string input;
    input.reserve(head.size() + tail.size());
    input.append(head).append(tail);
    signature = Sign(signer->secret, AsBytes(input));
    sig_text = FormatSignature(*signature);
    text.reserve(input.size() + sig_text.size() + 16);
    text.append(head).append(",\"signature\":\"").append(sig_text).append("\"").append(tail);
  } else {
    text = std::move(head);
    text += tail;
  }
  const std::size_t limit = std::min(params.max_message_size_bytes, kMaxEnvelopeBytesCap);
  if (text.size() > limit) {
    return Fail(Code::kLimitExceeded,
                fmt::format("envelope is {} bytes serialized, limit {}", text.size(), limit));
  }

  // No DOM of the whole envelope (Envelope::object stays null, Object() parses `text` on demand):
  // the payload is copied once, into Envelope::payload.
  const std::size_t size = text.size();
  return Envelope{.session_id = params.session_id,
                  .sequence = params.sequence,
                  .from = params.from,
                  .to = params.to,
                  .type = params.type,
                  .timestamp = params.timestamp,
                  .payload = params.payload,
                  .signature = signature,
                  .object = nullptr,
                  .text = std::move(text),
                  .wire_size = size};
}

Result<void> RequireNonEmptyString(const json& payload, std::string_view key) {
  const std::string field = detail::FieldPath("payload", key);
  const auto it = payload.find(key);
  if (it == payload.end()) return Invalid(field, "is required");
  const std::string* s = it->get_ptr<const std::string*>();
  if (s == nullptr || s->empty()) return Invalid(field, "must be a non-empty string");
  return {};
}

}  // namespace

std::string_view EnvelopeTypeName(EnvelopeType type) noexcept {
  for (const auto& [name, value] : kEnvelopeTypeNames) {
    if (value == type) return name;
  }
  return "unknown";
}

Result<EnvelopeType> ParseEnvelopeType(std::string_view name) {
  for (const auto& [text, value] : kEnvelopeTypeNames) {
    if (text == name) return value;
  }
  return Fail(Code::kInvalidArgument, fmt::format("unknown envelope type \"{}\"", name));
}

std::string Envelope::Serialize() const { return text.empty() ? detail::Dump(object) : text; }

json Envelope::Object() const {
  if (!object.is_null() || text.empty()) return object;
  json parsed = json::parse(text, nullptr, false);
  return parsed.is_discarded() ? json() : parsed;
}

Result<Envelope> BuildSignedEnvelope(const EnvelopeParams& params, const Ed25519KeyPair& signer) {
  return BuildEnvelope(params, &signer);
}

Result<Envelope> BuildUnsignedEnvelope(const EnvelopeParams& params) {
  return BuildEnvelope(params, nullptr);
}

Result<Envelope> ParseEnvelope(std::string_view json_text, std::size_t max_bytes) {
  auto object =
      detail::ParseObjectText(json_text, std::min(max_bytes, kMaxEnvelopeBytesCap), "envelope");
  if (!object) return Propagate(object);
  auto envelope = ParseEnvelopeObject(std::move(*object), json_text.size());
  if (envelope) envelope->text = std::string(json_text);
  return envelope;
}

Result<Envelope> ParseEnvelope(const json& object) {
  if (!object.is_object()) return Invalid("", "envelope must be a JSON object");
  const std::size_t size = detail::Dump(object).size();
  if (size > kMaxEnvelopeBytesCap) {
    return Fail(Code::kLimitExceeded, fmt::format("envelope is {} bytes serialized, limit {}", size,
                                                  kMaxEnvelopeBytesCap));
  }
  return ParseEnvelopeObject(object, size);
}

Result<void> VerifyEnvelope(const Envelope& envelope, const EnvelopeCheck& check, UnixNanos now) {
  if (envelope.wire_size > check.max_message_size_bytes) {
    return Fail(Code::kLimitExceeded,
                fmt::format("envelope is {} bytes, the session allows {}", envelope.wire_size,
                            check.max_message_size_bytes));
  }
  if (envelope.session_id != check.session_id) {
    return Invalid("session_id", "envelope belongs to another session");
  }
  if (envelope.from != check.sender) {
    return Fail(Code::kAuthFailed, "envelope claims another sender than the session's peer",
                "from");
  }
  if (envelope.to != check.receiver) {
    return Fail(Code::kPermissionDenied, "envelope addressed to another agent", "to");
  }
  if (check.freshness) {
    if (auto r = CheckFreshness(envelope.timestamp, now, check.freshness->max_past,
                                check.freshness->max_future);
        !r) {
      return r;
    }
  }
  // A built envelope has no DOM (object is null); its text is canonical JSON, parsed here only
  // when its signature has to be checked.
  const bool has_signature_member =
      envelope.signature.has_value() ||
      (envelope.object.is_object() && envelope.object.contains("signature"));
  if (!check.signed_messages) {
    if (has_signature_member) {
      return Invalid("signature", "must be absent: the session negotiated unsigned messages");
    }
    return {};
  }
  if (!envelope.signature) {
    return Fail(Code::kAuthFailed, "the session requires signed messages", "signature");
  }
  if (auto r = detail::CheckAmidOfKey(check.sender, check.sender_key, "from"); !r) return r;
  if (envelope.object.is_null())
    return detail::VerifySignature(envelope.Object(), check.sender_key);
  return detail::VerifySignature(envelope.object, check.sender_key);
}

Result<void> CheckSequence(std::uint64_t expected_next, std::uint64_t got) {
  if (got < expected_next) {
    return Fail(Code::kReplay,
                fmt::format("sequence {} already received (expected {})", got, expected_next),
                "sequence");
  }
  if (got > expected_next) {
    return Fail(Code::kInvalidArgument,
                fmt::format("sequence gap: expected {}, got {}", expected_next, got), "sequence");
  }
  return {};
}

json MakeClosePayload(std::string_view reason, std::optional<std::string_view> summary) {
  json payload = {{"reason", reason}};
  if (summary) payload["summary"] = *summary;
  return payload;
}

json MakeErrorPayload(std::string_view code, std::string_view message,
                      std::optional<std::uint32_t> retry_after_seconds) {
  json payload = {{"code", code}, {"message", message}};
  if (retry_after_seconds) payload["retry_after_seconds"] = *retry_after_seconds;
  return payload;
}

Result<void> ValidatePayload(EnvelopeType type, const json& payload) {
  if (!payload.is_object()) return Invalid("payload", "must be an object");
  switch (type) {
    case EnvelopeType::kClose:
      return RequireNonEmptyString(payload, "reason");
    case EnvelopeType::kError:
      if (auto r = RequireNonEmptyString(payload, "code"); !r) return r;
      return RequireNonEmptyString(payload, "message");
    default:
      return {};
  }
}

Result<SessionMessage> ParseSessionPlaintext(std::string_view json_text,
                                             std::size_t max_envelope_bytes) {
  const std::size_t envelope_limit = std::min(max_envelope_bytes, kMaxEnvelopeBytesCap);
  auto object = detail::ParseObjectText(
      json_text, std::max({envelope_limit, kMaxKnockBytes, kMaxAcceptBytes, kMaxRejectBytes}),
      "plaintext");
  if (!object) return Propagate(object);
  auto type = detail::GetString(*object, "type", "");
  if (!type) return Propagate(type);

  const auto check_size = [&](std::size_t limit, std::string_view what) -> Result<void> {
    if (json_text.size() > limit) {
      return Fail(Code::kLimitExceeded,
                  fmt::format("{} is {} bytes, limit {}", what, json_text.size(), limit));
    }
    return {};
  };
  if (*type == "knock") {
    if (auto r = check_size(kMaxKnockBytes, "KNOCK"); !r) return Propagate(r);
    auto knock = ParseKnock(*object);
    if (!knock) return Propagate(knock);
    return SessionMessage(std::move(*knock));
  }
  if (*type == "accept") {
    if (auto r = check_size(kMaxAcceptBytes, "ACCEPT"); !r) return Propagate(r);
    auto accept = ParseAccept(*object);
    if (!accept) return Propagate(accept);
    return SessionMessage(std::move(*accept));
  }
  if (*type == "reject") {
    if (auto r = check_size(kMaxRejectBytes, "REJECT"); !r) return Propagate(r);
    auto reject = ParseReject(*object);
    if (!reject) return Propagate(reject);
    return SessionMessage(std::move(*reject));
  }
  if (!ParseEnvelopeType(*type)) {
    return Invalid("type", fmt::format("unknown message type \"{}\"", *type));
  }
  if (auto r = check_size(envelope_limit, "envelope"); !r) return Propagate(r);
  auto envelope = ParseEnvelopeObject(std::move(*object), json_text.size());
  if (!envelope) return Propagate(envelope);
  envelope->text = std::string(json_text);
  return SessionMessage(std::move(*envelope));
}

}  // namespace agentmesh
