#include "agentmesh/core/knock.hpp"

#include <fmt/format.h>

#include <array>
#include <utility>

#include "agentmesh/core/canonical_json.hpp"
#include "agentmesh/core/encoding.hpp"

namespace agentmesh {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxTokenLength = 64;
constexpr std::size_t kMaxDisplayNameBytes = 128;
constexpr std::size_t kMaxHumanReadableBytes = 512;
constexpr std::size_t kMaxCapabilities = 64;
constexpr std::size_t kMaxCapabilityBytes = 128;
constexpr std::int64_t kMaxTtlSeconds = 86400;
constexpr std::int64_t kMaxExpectedMessages = 1'000'000;
constexpr std::int64_t kMaxRetryAfterSeconds = 86400;

std::unexpected<Error> Invalid(std::string field, std::string message) {
  return Fail(Code::kInvalidArgument, std::move(message), std::move(field));
}

template <typename T>
std::unexpected<Error> Propagate(const Result<T>& r) {
  return std::unexpected(r.error());
}

// Intent tokens: 1..64 of [a-z0-9_-].
bool IsToken(std::string_view s) {
  if (s.empty() || s.size() > kMaxTokenLength) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// True if `s` has a C0 control character or DEL, other than those in `allowed`.
bool HasControl(std::string_view s, std::string_view allowed = {}) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 || u == 0x7f) && allowed.find(c) == std::string_view::npos) return true;
  }
  return false;
}

Result<std::optional<std::string>> GetOptionalText(const json& object, std::string_view key,
                                                   std::string_view prefix, std::size_t max_bytes,
                                                   std::string_view allowed_controls = {}) {
  auto member = detail::GetMember(object, key, prefix, false);
  if (!member) return Propagate(member);
  if (*member == nullptr) return std::optional<std::string>();
  const std::string* s = (*member)->get_ptr<const std::string*>();
  const std::string field = detail::FieldPath(prefix, key);
  if (s == nullptr) return Invalid(field, "must be a string");
  if (s->empty() || s->size() > max_bytes) {
    return Invalid(field, fmt::format("must be 1..{} bytes", max_bytes));
  }
  if (HasControl(*s, allowed_controls)) {
    return Invalid(field, "must not contain control characters");
  }
  return std::optional<std::string>(*s);
}

Result<std::optional<std::string>> GetOptionalToken(const json& object, std::string_view key,
                                                    std::string_view prefix) {
  auto member = detail::GetMember(object, key, prefix, false);
  if (!member) return Propagate(member);
  if (*member == nullptr) return std::optional<std::string>();
  const std::string* s = (*member)->get_ptr<const std::string*>();
  const std::string field = detail::FieldPath(prefix, key);
  if (s == nullptr) return Invalid(field, "must be a string");
  if (!IsToken(*s)) return Invalid(field, "must be 1..64 characters of [a-z0-9_-]");
  return std::optional<std::string>(*s);
}

Result<Tier> GetTier(const json& object, std::string_view prefix) {
  auto member = detail::GetMember(object, "tier", prefix, true);
  if (!member) return Propagate(member);
  auto tier = TierFromJson(**member);
  if (!tier) return Invalid(detail::FieldPath(prefix, "tier"), tier.error().message);
  return *tier;
}

Result<std::optional<double>> GetReputation(const json& object, std::string_view prefix) {
  auto member = detail::GetMember(object, "reputation_score", prefix, false);
  if (!member) return Propagate(member);
  if (*member == nullptr) return std::optional<double>();
  const std::string field = detail::FieldPath(prefix, "reputation_score");
  if (!(*member)->is_number()) return Invalid(field, "must be a number");
  const double v = (*member)->get<double>();
  if (!(v >= 0.0 && v <= 1.0)) return Invalid(field, "must be between 0 and 1");
  return std::optional<double>(v);
}

template <typename Key>
Result<Key> GetKey(const json& object, std::string_view key, std::string_view prefix,
                   Result<Key> (*parse)(std::string_view)) {
  auto text = detail::GetString(object, key, prefix);
  if (!text) return Propagate(text);
  auto parsed = parse(*text);
  if (!parsed) return Invalid(detail::FieldPath(prefix, key), parsed.error().message);
  return *parsed;
}

Result<KnockSender> ParseSender(const json& object) {
  auto from = detail::GetObject(object, "from", "");
  if (!from) return Propagate(from);
  const json& f = **from;
  auto amid = detail::GetAmid(f, "amid", "from");
  if (!amid) return Propagate(amid);
  auto signing = GetKey<Ed25519PublicKey>(f, "signing_public_key", "from", &ParseEd25519Key);
  if (!signing) return Propagate(signing);
  auto exchange = GetKey<X25519PublicKey>(f, "exchange_public_key", "from", &ParseX25519Key);
  if (!exchange) return Propagate(exchange);
  auto tier = GetTier(f, "from");
  if (!tier) return Propagate(tier);
  auto display_name = GetOptionalText(f, "display_name", "from", kMaxDisplayNameBytes);
  if (!display_name) return Propagate(display_name);
  auto organization = GetOptionalText(f, "organization", "from", kMaxDisplayNameBytes);
  if (!organization) return Propagate(organization);
  auto reputation = GetReputation(f, "from");
  if (!reputation) return Propagate(reputation);
  return KnockSender{.amid = std::move(*amid),
                     .signing_public_key = *signing,
                     .exchange_public_key = *exchange,
                     .tier = *tier,
                     .display_name = std::move(*display_name),
                     .organization = std::move(*organization),
                     .reputation_score = *reputation};
}

Result<Intent> ParseIntent(const json& object) {
  auto intent = detail::GetObject(object, "intent", "");
  if (!intent) return Propagate(intent);
  const json& i = **intent;
  auto category = detail::GetString(i, "category", "intent");
  if (!category) return Propagate(category);
  if (!IsToken(*category)) {
    return Invalid("intent.category", "must be 1..64 characters of [a-z0-9_-]");
  }
  auto subcategory = GetOptionalToken(i, "subcategory", "intent");
  if (!subcategory) return Propagate(subcategory);
  auto action = GetOptionalToken(i, "action", "intent");
  if (!action) return Propagate(action);
  Urgency urgency = Urgency::kNormal;
  auto urgency_member = detail::GetMember(i, "urgency", "intent", false);
  if (!urgency_member) return Propagate(urgency_member);
  if (*urgency_member != nullptr) {
    const std::string* s = (*urgency_member)->get_ptr<const std::string*>();
    if (s == nullptr) return Invalid("intent.urgency", "must be a string");
    auto parsed = ParseUrgency(*s);
    if (!parsed) return Invalid("intent.urgency", parsed.error().message);
    urgency = *parsed;
  }
  return Intent{.category = std::move(*category),
                .subcategory = std::move(*subcategory),
                .action = std::move(*action),
                .urgency = urgency};
}

Result<SessionRequest> ParseSessionRequest(const json& object) {
  auto request = detail::GetObject(object, "session_request", "");
  if (!request) return Propagate(request);
  const json& r = **request;
  auto type_text = detail::GetString(r, "type", "session_request");
  if (!type_text) return Propagate(type_text);
  auto type = ParseSessionType(*type_text);
  if (!type) return Invalid("session_request.type", type.error().message);
  auto expected =
      detail::GetInteger(r, "expected_messages", "session_request", false, 1, kMaxExpectedMessages);
  if (!expected) return Propagate(expected);
  auto ttl = detail::GetInteger(r, "ttl_seconds", "session_request", true, 1, kMaxTtlSeconds);
  if (!ttl) return Propagate(ttl);
  auto signed_messages = detail::GetBool(r, "signed_messages", "session_request");
  if (!signed_messages) return Propagate(signed_messages);
  SessionRequest out;
  out.type = *type;
  if (*expected) out.expected_messages = static_cast<std::uint32_t>(**expected);
  out.ttl_seconds = static_cast<std::uint32_t>(**ttl);
  out.signed_messages = signed_messages->value_or(true);
  return out;
}

// Size of an object that did not come from text: its compact serialization.
Result<void> CheckObjectSize(const json& object, std::size_t max_bytes, std::string_view what) {
  const std::size_t size = detail::Dump(object).size();
  if (size > max_bytes) {
    return Fail(Code::kLimitExceeded,
                fmt::format("{} is {} bytes serialized, limit {}", what, size, max_bytes));
  }
  return {};
}

Result<std::vector<std::string>> ParseCapabilities(const json& object) {
  auto member = detail::GetMember(object, "capabilities", "", true);
  if (!member) return Propagate(member);
  const json& caps = **member;
  if (!caps.is_array()) return Invalid("capabilities", "must be an array");
  if (caps.size() > kMaxCapabilities) {
    return Invalid("capabilities", fmt::format("must have at most {} entries", kMaxCapabilities));
  }
  std::vector<std::string> out;
  out.reserve(caps.size());
  for (std::size_t i = 0; i < caps.size(); ++i) {
    const std::string field = fmt::format("capabilities[{}]", i);
    const std::string* s = caps[i].get_ptr<const std::string*>();
    if (s == nullptr) return Invalid(field, "must be a string");
    if (s->empty() || s->size() > kMaxCapabilityBytes) {
      return Invalid(field, fmt::format("must be 1..{} bytes", kMaxCapabilityBytes));
    }
    for (char c : *s) {
      const auto u = static_cast<unsigned char>(c);
      if (u <= 0x20 || u == 0x7f) {
        return Invalid(field, "must not contain whitespace or control characters");
      }
    }
    out.push_back(*s);
  }
  return out;
}

Result<SessionConstraints> ParseConstraints(const json& object) {
  auto constraints = detail::GetObject(object, "constraints", "");
  if (!constraints) return Propagate(constraints);
  const json& c = **constraints;
  auto size = detail::GetInteger(c, "max_message_size_bytes", "constraints", true,
                                 static_cast<std::int64_t>(kMinMessageSizeBytes),
                                 static_cast<std::int64_t>(kMaxEnvelopeBytesCap));
  if (!size) return Propagate(size);
  auto max_messages =
      detail::GetInteger(c, "max_messages", "constraints", true, 1, kMaxExpectedMessages);
  if (!max_messages) return Propagate(max_messages);
  auto ttl = detail::GetInteger(c, "ttl_seconds", "constraints", true, 1, kMaxTtlSeconds);
  if (!ttl) return Propagate(ttl);
  auto signed_messages = detail::GetBool(c, "signed_messages", "constraints");
  if (!signed_messages) return Propagate(signed_messages);
  SessionConstraints out;
  out.max_message_size_bytes = static_cast<std::uint64_t>(**size);
  out.max_messages = static_cast<std::uint32_t>(**max_messages);
  out.ttl_seconds = static_cast<std::uint32_t>(**ttl);
  out.signed_messages = signed_messages->value_or(true);
  return out;
}

Result<Knock> ParseKnockObject(const json& object) {
  if (!object.is_object()) return Invalid("", "KNOCK must be a JSON object");
  if (auto r = detail::ExpectType(object, "knock"); !r) return Propagate(r);
  auto version = detail::GetString(object, "protocol_version", "");
  if (!version) return Propagate(version);
  if (*version != kProtocolVersion) {
    return Invalid("protocol_version",
                   fmt::format("unsupported protocol version \"{}\" (expected {})", *version,
                               kProtocolVersion));
  }
  auto session_id = detail::GetSessionId(object, "session_id");
  if (!session_id) return Propagate(session_id);
  auto from = ParseSender(object);
  if (!from) return Propagate(from);
  auto to = detail::GetAmid(object, "to", "");
  if (!to) return Propagate(to);
  auto intent = ParseIntent(object);
  if (!intent) return Propagate(intent);
  auto request = ParseSessionRequest(object);
  if (!request) return Propagate(request);
  auto timestamp = detail::GetTimestamp(object, "timestamp");
  if (!timestamp) return Propagate(timestamp);
  auto signature = detail::GetSignatureMember(object, true);
  if (!signature) return Propagate(signature);
  return Knock{.session_id = std::move(*session_id),
               .from = std::move(*from),
               .to = std::move(*to),
               .intent = std::move(*intent),
               .session_request = *request,
               .timestamp = *timestamp,
               .signature = **signature,
               .object = object};
}

// The members ACCEPT and REJECT share: the frame checks, who answers whom for which session,
// and the signed timestamp. The kind-specific members are parsed between the two calls, so an
// error names the first bad member in document order of the spec's field list.
struct AnswerHead {
  std::string session_id;
  Amid from;
  Amid to;
};

struct AnswerTail {
  UnixNanos timestamp = 0;
  Signature signature;
};

Result<AnswerHead> ParseAnswerHead(const json& object, std::string_view type,
                                   std::string_view what) {
  if (!object.is_object()) return Invalid("", fmt::format("{} must be a JSON object", what));
  if (auto r = detail::ExpectType(object, type); !r) return Propagate(r);
  auto session_id = detail::GetSessionId(object, "session_id");
  if (!session_id) return Propagate(session_id);
  auto from = detail::GetAmid(object, "from", "");
  if (!from) return Propagate(from);
  auto to = detail::GetAmid(object, "to", "");
  if (!to) return Propagate(to);
  return AnswerHead{std::move(*session_id), std::move(*from), std::move(*to)};
}

Result<AnswerTail> ParseAnswerTail(const json& object) {
  auto timestamp = detail::GetTimestamp(object, "timestamp");
  if (!timestamp) return Propagate(timestamp);
  auto signature = detail::GetSignatureMember(object, true);
  if (!signature) return Propagate(signature);
  return AnswerTail{*timestamp, **signature};
}

Result<Accept> ParseAcceptObject(const json& object) {
  auto head = ParseAnswerHead(object, "accept", "ACCEPT");
  if (!head) return Propagate(head);
  auto capabilities = ParseCapabilities(object);
  if (!capabilities) return Propagate(capabilities);
  auto constraints = ParseConstraints(object);
  if (!constraints) return Propagate(constraints);
  auto tail = ParseAnswerTail(object);
  if (!tail) return Propagate(tail);
  return Accept{.session_id = std::move(head->session_id),
                .from = std::move(head->from),
                .to = std::move(head->to),
                .capabilities = std::move(*capabilities),
                .constraints = *constraints,
                .timestamp = tail->timestamp,
                .signature = tail->signature,
                .object = object};
}

Result<Reject> ParseRejectObject(const json& object) {
  auto head = ParseAnswerHead(object, "reject", "REJECT");
  if (!head) return Propagate(head);
  auto reason_text = detail::GetString(object, "reason", "");
  if (!reason_text) return Propagate(reason_text);
  auto reason = ParseRejectReason(*reason_text);
  if (!reason) return Invalid("reason", reason.error().message);
  auto human = GetOptionalText(object, "human_readable", "", kMaxHumanReadableBytes, "\n\t");
  if (!human) return Propagate(human);
  auto retry =
      detail::GetInteger(object, "retry_after_seconds", "", false, 0, kMaxRetryAfterSeconds);
  if (!retry) return Propagate(retry);
  auto tail = ParseAnswerTail(object);
  if (!tail) return Propagate(tail);
  std::optional<std::uint32_t> retry_after;
  if (*retry) retry_after = static_cast<std::uint32_t>(**retry);
  return Reject{.session_id = std::move(head->session_id),
                .from = std::move(head->from),
                .to = std::move(head->to),
                .reason = *reason,
                .human_readable = std::move(*human),
                .retry_after_seconds = retry_after,
                .timestamp = tail->timestamp,
                .signature = tail->signature,
                .object = object};
}

// Shared tail of the responder-side verifications (ACCEPT and REJECT).
Result<void> VerifyAnswer(const json& object, const Amid& from, const Amid& to, UnixNanos timestamp,
                          const Ed25519PublicKey& responder_key, const Amid& self, UnixNanos now,
                          const FreshnessWindow& window, std::string_view what) {
  if (to != self) {
    return Fail(Code::kPermissionDenied, fmt::format("{} addressed to another agent", what), "to");
  }
  if (auto r = detail::CheckAmidOfKey(from, responder_key, "from"); !r) return r;
  if (auto r = CheckFreshness(timestamp, now, window.max_past, window.max_future); !r) return r;
  return detail::VerifySignature(object, responder_key);
}

template <typename Answer>
Result<void> CheckAnswerParties(const Answer& answer, const Knock& knock) {
  if (answer.session_id != knock.session_id) {
    return Invalid("session_id", "does not match the KNOCK's session_id");
  }
  if (answer.from != knock.to) return Invalid("from", "is not the agent the KNOCK was sent to");
  if (answer.to != knock.from.amid) return Invalid("to", "is not the agent that sent the KNOCK");
  return {};
}

template <typename T, std::size_t N>
Result<T> ParseName(std::string_view name,
                    const std::array<std::pair<std::string_view, T>, N>& table,
                    std::string_view what) {
  for (const auto& [text, value] : table) {
    if (text == name) return value;
  }
  return Fail(Code::kInvalidArgument, fmt::format("unknown {} \"{}\"", what, name));
}

template <typename T, std::size_t N>
std::string_view NameOf(T value, const std::array<std::pair<std::string_view, T>, N>& table) {
  for (const auto& [text, v] : table) {
    if (v == value) return text;
  }
  return "unknown";
}

constexpr std::array<std::pair<std::string_view, SessionType>, 3> kSessionTypeNames = {{
    {"request_response", SessionType::kRequestResponse},
    {"conversation", SessionType::kConversation},
    {"stream", SessionType::kStream},
}};

constexpr std::array<std::pair<std::string_view, Urgency>, 4> kUrgencyNames = {{
    {"low", Urgency::kLow},
    {"normal", Urgency::kNormal},
    {"high", Urgency::kHigh},
    {"critical", Urgency::kCritical},
}};

constexpr std::array<std::pair<std::string_view, RejectReason>, 9> kRejectReasonNames = {{
    {"invalid_signature", RejectReason::kInvalidSignature},
    {"blocked", RejectReason::kBlocked},
    {"insufficient_trust", RejectReason::kInsufficientTrust},
    {"rate_limited", RejectReason::kRateLimited},
    {"intent_not_accepted", RejectReason::kIntentNotAccepted},
    {"not_in_allowlist", RejectReason::kNotInAllowlist},
    {"low_reputation", RejectReason::kLowReputation},
    {"at_capacity", RejectReason::kAtCapacity},
    {"paused", RejectReason::kPaused},
}};

std::string SecondsText(double nanos) {
  return fmt::format("{:.3f} s", nanos / static_cast<double>(kNanosPerSecond));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Freshness and session ids

Result<void> CheckFreshness(UnixNanos ts, UnixNanos now, UnixNanos max_past, UnixNanos max_future) {
  UnixNanos age = 0;
  if (__builtin_sub_overflow(now, ts, &age)) {
    // Only possible with values centuries apart: the sign of the true difference is that of now.
    return Fail(Code::kReplay,
                now > ts ? "timestamp is too old" : "timestamp is too far in the future",
                "timestamp");
  }
  if (age > max_past) {
    return Fail(
        Code::kReplay,
        fmt::format("timestamp is stale: {} old, limit {}", SecondsText(static_cast<double>(age)),
                    SecondsText(static_cast<double>(max_past))),
        "timestamp");
  }
  if (age < 0 && age < -max_future) {
    return Fail(Code::kReplay,
                fmt::format("timestamp is {} in the future, limit {}",
                            SecondsText(-static_cast<double>(age)),
                            SecondsText(static_cast<double>(max_future))),
                "timestamp");
  }
  return {};
}

std::string NewSessionId(Rng& rng) {
  auto b = rng.Array<16>();
  b[6] = static_cast<std::uint8_t>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3f) | 0x80);
  const std::string hex = HexEncode(ByteView(b.data(), b.size()));
  return fmt::format("{}-{}-{}-{}-{}", hex.substr(0, 8), hex.substr(8, 4), hex.substr(12, 4),
                     hex.substr(16, 4), hex.substr(20, 12));
}

Result<void> ValidateSessionId(std::string_view text) {
  if (text.size() != 36) {
    return Fail(Code::kInvalidArgument, "must be a UUID v4 (36 characters, lower-case hex)");
  }
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return Fail(Code::kInvalidArgument, "must be a UUID v4 (8-4-4-4-12 groups)");
      continue;
    }
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return Fail(Code::kInvalidArgument, "must be a UUID v4 in lower-case hex");
    }
  }
  if (text[14] != '4') return Fail(Code::kInvalidArgument, "must be a UUID of version 4");
  if (std::string_view("89ab").find(text[19]) == std::string_view::npos) {
    return Fail(Code::kInvalidArgument, "must be a UUID v4 with the RFC 4122 variant");
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Signatures

Result<std::string> SigningInput(const json& object) {
  if (!object.is_object())
    return Fail(Code::kInvalidArgument, "a signed message must be an object");
  return CanonicalJsonWithout(object, "signature");
}

Result<void> SignObject(json& object, const Ed25519SecretKey& secret) {
  auto input = SigningInput(object);
  if (!input) return Propagate(input);
  const Signature sig =
      Sign(secret, ByteView(reinterpret_cast<const std::uint8_t*>(input->data()), input->size()));
  object["signature"] = FormatSignature(sig);
  return {};
}

Result<void> VerifyObjectSignature(const json& object, const Ed25519PublicKey& key) {
  auto sig = detail::GetSignatureMember(object, true);
  if (!sig) return Propagate(sig);
  auto input = SigningInput(object);
  if (!input) return Propagate(input);
  if (!Verify(key, ByteView(reinterpret_cast<const std::uint8_t*>(input->data()), input->size()),
              **sig)) {
    return Fail(Code::kAuthFailed, "signature does not verify", "signature");
  }
  return {};
}

// ---------------------------------------------------------------------------------------------
// Enumerations

std::string_view SessionTypeName(SessionType type) noexcept {
  return NameOf(type, kSessionTypeNames);
}

Result<SessionType> ParseSessionType(std::string_view name) {
  return ParseName(name, kSessionTypeNames, "session type");
}

std::string_view UrgencyName(Urgency urgency) noexcept { return NameOf(urgency, kUrgencyNames); }

Result<Urgency> ParseUrgency(std::string_view name) {
  return ParseName(name, kUrgencyNames, "urgency");
}

std::string_view RejectReasonName(RejectReason reason) noexcept {
  return NameOf(reason, kRejectReasonNames);
}

Result<RejectReason> ParseRejectReason(std::string_view name) {
  return ParseName(name, kRejectReasonNames, "reject reason");
}

// ---------------------------------------------------------------------------------------------
// KNOCK

std::string Knock::Serialize() const { return detail::Dump(object); }

Result<Knock> BuildKnock(const KnockParams& params, const Ed25519KeyPair& signer,
                         const X25519PublicKey& exchange_public_key) {
  json from = {{"amid", Amid::FromPublicKey(signer.public_key).str()},
               {"signing_public_key", FormatEd25519Key(signer.public_key)},
               {"exchange_public_key", FormatX25519Key(exchange_public_key)},
               {"tier", ToString(params.tier)}};
  if (params.display_name) from["display_name"] = *params.display_name;
  if (params.organization) from["organization"] = *params.organization;
  if (params.reputation_score) from["reputation_score"] = *params.reputation_score;

  json intent = {{"category", params.intent.category},
                 {"urgency", UrgencyName(params.intent.urgency)}};
  if (params.intent.subcategory) intent["subcategory"] = *params.intent.subcategory;
  if (params.intent.action) intent["action"] = *params.intent.action;

  const SessionRequest& req = params.session_request;
  json request = {{"type", SessionTypeName(req.type)},
                  {"ttl_seconds", req.ttl_seconds},
                  {"signed_messages", req.signed_messages}};
  if (req.expected_messages) request["expected_messages"] = *req.expected_messages;

  json object = {{"type", "knock"},
                 {"protocol_version", kProtocolVersion},
                 {"session_id", params.session_id},
                 {"from", std::move(from)},
                 {"to", params.to.str()},
                 {"intent", std::move(intent)},
                 {"session_request", std::move(request)},
                 {"timestamp", FormatRfc3339Z(params.timestamp)}};
  if (auto r = SignObject(object, signer.secret); !r) return Propagate(r);
  if (auto r = CheckObjectSize(object, kMaxKnockBytes, "KNOCK"); !r) return Propagate(r);
  return ParseKnockObject(object);
}

Result<Knock> ParseKnock(std::string_view json_text) {
  auto object = detail::ParseObjectText(json_text, kMaxKnockBytes, "KNOCK");
  if (!object) return Propagate(object);
  return ParseKnockObject(*object);
}

Result<Knock> ParseKnock(const json& object) {
  if (object.is_object()) {
    if (auto r = CheckObjectSize(object, kMaxKnockBytes, "KNOCK"); !r) return Propagate(r);
  }
  return ParseKnockObject(object);
}

Result<void> VerifyKnock(const Knock& knock, const Amid& self, UnixNanos now,
                         const FreshnessWindow& window) {
  if (knock.to != self) {
    return Fail(Code::kPermissionDenied, "KNOCK addressed to another agent", "to");
  }
  if (auto r = detail::CheckAmidOfKey(knock.from.amid, knock.from.signing_public_key, "from.amid");
      !r) {
    return r;
  }
  if (auto r = CheckFreshness(knock.timestamp, now, window.max_past, window.max_future); !r) {
    return r;
  }
  return detail::VerifySignature(knock.object, knock.from.signing_public_key);
}

// ---------------------------------------------------------------------------------------------
// ACCEPT

std::string Accept::Serialize() const { return detail::Dump(object); }

Result<Accept> BuildAccept(const AcceptParams& params, const Ed25519KeyPair& signer) {
  const SessionConstraints& c = params.constraints;
  json object = {{"type", "accept"},
                 {"session_id", params.session_id},
                 {"from", Amid::FromPublicKey(signer.public_key).str()},
                 {"to", params.to.str()},
                 {"capabilities", params.capabilities},
                 {"constraints",
                  {{"max_message_size_bytes", c.max_message_size_bytes},
                   {"max_messages", c.max_messages},
                   {"ttl_seconds", c.ttl_seconds},
                   {"signed_messages", c.signed_messages}}},
                 {"timestamp", FormatRfc3339Z(params.timestamp)}};
  if (auto r = SignObject(object, signer.secret); !r) return Propagate(r);
  if (auto r = CheckObjectSize(object, kMaxAcceptBytes, "ACCEPT"); !r) return Propagate(r);
  return ParseAcceptObject(object);
}

Result<Accept> ParseAccept(std::string_view json_text) {
  auto object = detail::ParseObjectText(json_text, kMaxAcceptBytes, "ACCEPT");
  if (!object) return Propagate(object);
  return ParseAcceptObject(*object);
}

Result<Accept> ParseAccept(const json& object) {
  if (object.is_object()) {
    if (auto r = CheckObjectSize(object, kMaxAcceptBytes, "ACCEPT"); !r) return Propagate(r);
  }
  return ParseAcceptObject(object);
}

Result<void> VerifyAccept(const Accept& accept, const Ed25519PublicKey& responder_key,
                          const Amid& self, UnixNanos now, const FreshnessWindow& window) {
  return VerifyAnswer(accept.object, accept.from, accept.to, accept.timestamp, responder_key, self,
                      now, window, "ACCEPT");
}

// ---------------------------------------------------------------------------------------------
// REJECT

std::string Reject::Serialize() const { return detail::Dump(object); }

Result<Reject> BuildReject(const RejectParams& params, const Ed25519KeyPair& signer) {
  json object = {{"type", "reject"},
                 {"session_id", params.session_id},
                 {"from", Amid::FromPublicKey(signer.public_key).str()},
                 {"to", params.to.str()},
                 {"reason", RejectReasonName(params.reason)},
                 {"timestamp", FormatRfc3339Z(params.timestamp)}};
  if (params.human_readable) object["human_readable"] = *params.human_readable;
  if (params.retry_after_seconds) object["retry_after_seconds"] = *params.retry_after_seconds;
  if (auto r = SignObject(object, signer.secret); !r) return Propagate(r);
  if (auto r = CheckObjectSize(object, kMaxRejectBytes, "REJECT"); !r) return Propagate(r);
  return ParseRejectObject(object);
}

Result<Reject> ParseReject(std::string_view json_text) {
  auto object = detail::ParseObjectText(json_text, kMaxRejectBytes, "REJECT");
  if (!object) return Propagate(object);
  return ParseRejectObject(*object);
}

Result<Reject> ParseReject(const json& object) {
  if (object.is_object()) {
    if (auto r = CheckObjectSize(object, kMaxRejectBytes, "REJECT"); !r) return Propagate(r);
  }
  return ParseRejectObject(object);
}

Result<void> VerifyReject(const Reject& reject, const Ed25519PublicKey& responder_key,
                          const Amid& self, UnixNanos now, const FreshnessWindow& window) {
  return VerifyAnswer(reject.object, reject.from, reject.to, reject.timestamp, responder_key, self,
                      now, window, "REJECT");
}

Result<void> CheckAnswersKnock(const Accept& accept, const Knock& knock) {
  if (auto r = CheckAnswerParties(accept, knock); !r) return r;
  if (knock.session_request.signed_messages && !accept.constraints.signed_messages) {
    return Invalid("constraints.signed_messages",
                   "must be true: the KNOCK asked for signed messages");
  }
  return {};
}

Result<void> CheckAnswersKnock(const Reject& reject, const Knock& knock) {
  return CheckAnswerParties(reject, knock);
}

// ---------------------------------------------------------------------------------------------
// Internal helpers

namespace detail {

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

namespace {

// nlohmann's DOM builder plus two checks: containers nested deeper than kMaxJsonDepth stop the
// parse, and a repeated member name is remembered (the parse goes on, so a text that is also
// malformed is reported as malformed). A duplicate is rejected because different JSON parsers
// resolve it differently, so a signature could be read two ways.
class StrictDomBuilder {
 public:
  explicit StrictDomBuilder(json& root) : root_(root) {}

  bool null() { return Value(nullptr); }
  bool boolean(bool value) { return Value(value); }
  bool number_integer(json::number_integer_t value) { return Value(value); }
  bool number_unsigned(json::number_unsigned_t value) { return Value(value); }
  bool number_float(json::number_float_t value, const json::string_t& /*text*/) {
    return Value(value);
  }
  bool string(json::string_t& value) { return Value(std::move(value)); }
  bool binary(json::binary_t& /*value*/) { return false; }  // not produced by the text parser

  bool start_object(std::size_t /*size*/) { return Open(json::value_t::object); }
  bool key(json::string_t& name) {
    auto& members = stack_.back()->get_ref<json::object_t&>();
    auto [it, inserted] = members.try_emplace(name);
    if (!inserted && duplicate_.empty()) duplicate_ = name;
    member_ = &it->second;
    return true;
  }
  bool end_object() { return Close(); }
  bool start_array(std::size_t /*size*/) { return Open(json::value_t::array); }
  bool end_array() { return Close(); }
  bool parse_error(std::size_t /*position*/, const std::string& /*token*/,
                   const nlohmann::detail::exception& /*error*/) {
    malformed_ = true;
    return false;
  }

  bool too_deep() const noexcept { return too_deep_; }
  bool malformed() const noexcept { return malformed_; }
  const std::string& duplicate() const noexcept { return duplicate_; }

 private:
  template <typename V>
  json* Place(V&& value) {
    if (stack_.empty()) {
      root_ = json(std::forward<V>(value));
      return &root_;
    }
    json& parent = *stack_.back();
    if (parent.is_array()) {
      auto& items = parent.get_ref<json::array_t&>();
      items.emplace_back(std::forward<V>(value));
      return &items.back();
    }
    *member_ = json(std::forward<V>(value));
    return member_;
  }
  template <typename V>
  bool Value(V&& value) {
    Place(std::forward<V>(value));
    return true;
  }
  bool Open(json::value_t kind) {
    if (stack_.size() + 1 > static_cast<std::size_t>(kMaxJsonDepth)) {
      too_deep_ = true;
      return false;
    }
    stack_.push_back(Place(kind));
    return true;
  }
  bool Close() {
    stack_.pop_back();
    return true;
  }

  json& root_;
  std::vector<json*> stack_;
  json* member_ = nullptr;
  std::string duplicate_;
  bool too_deep_ = false;
  bool malformed_ = false;
};

}  // namespace

Result<json> ParseObjectText(std::string_view text, std::size_t max_bytes, std::string_view what) {
  if (text.size() > max_bytes) {
    return Fail(Code::kLimitExceeded,
                fmt::format("{} is {} bytes, limit {}", what, text.size(), max_bytes));
  }
  json parsed;
  StrictDomBuilder builder(parsed);
  const bool ok = json::sax_parse(text.begin(), text.end(), &builder,
                                  nlohmann::detail::input_format_t::json, /*strict=*/true);
  if (builder.too_deep()) {
    return Fail(Code::kInvalidArgument,
                fmt::format("{} nests JSON deeper than {} levels", what, kMaxJsonDepth));
  }
  if (!ok || builder.malformed()) {
    return Fail(Code::kInvalidArgument, fmt::format("{} is not valid JSON", what));
  }
  if (!builder.duplicate().empty()) {
    return Fail(Code::kInvalidArgument,
                fmt::format("{} has a duplicate member \"{}\"", what, builder.duplicate()),
                builder.duplicate());
  }
  if (!parsed.is_object()) {
    return Fail(Code::kInvalidArgument, fmt::format("{} must be a JSON object", what));
  }
  return parsed;
}

std::string FieldPath(std::string_view prefix, std::string_view key) {
  if (prefix.empty()) return std::string(key);
  std::string out;
  out.reserve(prefix.size() + 1 + key.size());
  out.append(prefix).append(".").append(key);
  return out;
}

Result<const json*> GetMember(const json& object, std::string_view key, std::string_view prefix,
                              bool required) {
  const auto it = object.find(key);
  if (it == object.end() || (!required && it->is_null())) {
    if (required) return Invalid(FieldPath(prefix, key), "is required");
    return static_cast<const json*>(nullptr);
  }
  return &*it;
}

Result<const json*> GetObject(const json& object, std::string_view key, std::string_view prefix) {
  auto member = GetMember(object, key, prefix, true);
  if (!member) return member;
  if (!(*member)->is_object()) return Invalid(FieldPath(prefix, key), "must be an object");
  return member;
}

Result<std::string> GetString(const json& object, std::string_view key, std::string_view prefix) {
  auto member = GetMember(object, key, prefix, true);
  if (!member) return Propagate(member);
  const std::string* s = (*member)->get_ptr<const std::string*>();
  if (s == nullptr || s->empty()) {
    return Invalid(FieldPath(prefix, key), "must be a non-empty string");
  }
  return *s;
}

Result<std::optional<std::int64_t>> GetInteger(const json& object, std::string_view key,
                                               std::string_view prefix, bool required,
                                               std::int64_t min, std::int64_t max) {
  auto member = GetMember(object, key, prefix, required);
  if (!member) return Propagate(member);
  if (*member == nullptr) return std::optional<std::int64_t>();
  const json& v = **member;
  const std::string range = fmt::format("must be an integer in {}..{}", min, max);
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(max) || static_cast<std::int64_t>(u) < min) {
      return Invalid(FieldPath(prefix, key), range);
    }
    return std::optional<std::int64_t>(static_cast<std::int64_t>(u));
  }
  if (v.is_number_integer()) {
    const auto i = v.get<std::int64_t>();
    if (i < min || i > max) return Invalid(FieldPath(prefix, key), range);
    return std::optional<std::int64_t>(i);
  }
  return Invalid(FieldPath(prefix, key), "must be an integer");
}

Result<std::optional<bool>> GetBool(const json& object, std::string_view key,
                                    std::string_view prefix) {
  auto member = GetMember(object, key, prefix, false);
  if (!member) return Propagate(member);
  if (*member == nullptr) return std::optional<bool>();
  if (!(*member)->is_boolean()) return Invalid(FieldPath(prefix, key), "must be a boolean");
  return std::optional<bool>((*member)->get<bool>());
}

Result<Amid> GetAmid(const json& object, std::string_view key, std::string_view prefix) {
  auto text = GetString(object, key, prefix);
  if (!text) return Propagate(text);
  auto amid = Amid::Parse(*text);
  if (!amid) return Invalid(FieldPath(prefix, key), amid.error().message);
  return *amid;
}

Result<UnixNanos> GetTimestamp(const json& object, std::string_view key) {
  auto text = GetString(object, key, "");
  if (!text) return Propagate(text);
  auto ts = ParseRfc3339(*text);
  if (!ts) return Invalid(std::string(key), "must be an RFC 3339 timestamp: " + ts.error().message);
  return *ts;
}

Result<std::string> GetSessionId(const json& object, std::string_view key) {
  auto text = GetString(object, key, "");
  if (!text) return Propagate(text);
  if (auto r = ValidateSessionId(*text); !r) return Invalid(std::string(key), r.error().message);
  return text;
}

Result<void> ExpectType(const json& object, std::string_view expected) {
  auto type = GetString(object, "type", "");
  if (!type) return Propagate(type);
  if (*type != expected) {
    return Invalid("type", fmt::format("must be \"{}\", got \"{}\"", expected, *type));
  }
  return {};
}

Result<std::optional<Signature>> GetSignatureMember(const json& object, bool required) {
  const auto it = object.find("signature");
  if (it == object.end()) {
    if (required) return Invalid("signature", "is required");
    return std::optional<Signature>();
  }
  const std::string* s = it->get_ptr<const std::string*>();
  if (s == nullptr) return Invalid("signature", "must be a base64 string");
  auto sig = ParseSignature(*s);
  if (!sig) return Invalid("signature", sig.error().message);
  return std::optional<Signature>(*sig);
}

Result<void> CheckAmidOfKey(const Amid& claimed, const Ed25519PublicKey& key,
                            std::string_view field) {
  if (Amid::FromPublicKey(key) != claimed) {
    return Fail(Code::kAuthFailed, "AMID does not match the signing public key",
                std::string(field));
  }
  return {};
}

Result<void> VerifySignature(const json& object, const Ed25519PublicKey& key) {
  auto r = VerifyObjectSignature(object, key);
  if (!r && r.error().code == Code::kInvalidArgument && r.error().field != "signature") {
    // The signing input could not be formed (e.g. a value JCS cannot represent).
    return Fail(Code::kAuthFailed, "cannot form the signing input: " + r.error().message,
                "signature");
  }
  return r;
}

}  // namespace detail

}  // namespace agentmesh
