#include "agentmesh/core/relay_frames.hpp"

#include <fmt/format.h>

#include <array>

#include "agentmesh/core/json_scan.hpp"

namespace agentmesh::relay {
namespace {

constexpr std::size_t kMaxClientIdBytes = 64;
constexpr std::size_t kMaxAckIds = 256;

constexpr std::array<std::string_view, 11> kErrorNames = {
    "INVALID_SIGNATURE", "UNKNOWN_RECIPIENT", "RECIPIENT_OFFLINE", "RATE_LIMITED",
    "MESSAGE_TOO_LARGE", "INVALID_MESSAGE",   "INTERNAL_ERROR",    "PROTOCOL_MISMATCH",
    "UNAUTHORIZED",      "QUEUE_FULL",        "REPLACED"};
constexpr std::array<std::string_view, 7> kMessageTypeNames = {
    "knock", "accept", "reject", "message", "close", "status", "optimistic_message"};
constexpr std::array<std::string_view, 4> kPresenceNames = {"online", "away", "offline", "dnd"};

std::unexpected<Error> Missing(std::string_view field) {
  return Fail(Code::kInvalidArgument, "is required", std::string(field));
}

// Required string member (decoded).
Result<std::string> RequiredString(const ScannedObject& obj, std::string_view name) {
  auto value = obj.GetString(name);
  if (!value) return std::unexpected(value.error());
  if (!*value) return Missing(name);
  return std::move(**value);
}

Result<std::string_view> RequiredRawString(const ScannedObject& obj, std::string_view name) {
  const ScannedMember* member = obj.Find(name);
  if (member == nullptr) return Missing(name);
  if (member->kind != JsonKind::kString) {
    return Fail(Code::kInvalidArgument, "must be a string", std::string(name));
  }
  return member->raw;
}

Result<std::string_view> OptionalRawArray(const ScannedObject& obj, std::string_view name) {
  const ScannedMember* member = obj.Find(name);
  if (member == nullptr || member->kind == JsonKind::kNull) return std::string_view();
  if (member->kind != JsonKind::kArray) {
    return Fail(Code::kInvalidArgument, "must be an array", std::string(name));
  }
  return member->raw;
}

// The general path: one Find per field, escapes decoded, every error named.
Result<ClientFrame> ParseSendChecked(const ScannedObject& obj) {
  SendFrame frame;
  std::string scratch;
  auto to = obj.GetStringView("to", scratch);
  if (!to) return std::unexpected(to.error());
  if (!*to) return Missing("to");
  if (!scratch.empty()) {
    // An AMID never needs escapes; refusing them keeps `to` a view into the input.
    return Fail(Code::kInvalidArgument, "must not contain escapes", "to");
  }
  frame.to = **to;
  auto payload = RequiredRawString(obj, "encrypted_payload");
  if (!payload) return std::unexpected(payload.error());
  frame.payload_token = *payload;
  std::string type_scratch;
  auto type = obj.GetStringView("message_type", type_scratch);
  if (!type) return std::unexpected(type.error());
  if (*type) {
    auto parsed = ParseMessageType(**type);
    if (!parsed) return Fail(Code::kInvalidArgument, "unknown message_type", "message_type");
    frame.message_type = *parsed;
  }
  auto ice = OptionalRawArray(obj, "ice_candidates");
  if (!ice) return std::unexpected(ice.error());
  frame.ice_candidates = *ice;
  auto id = obj.GetString("id");
  if (!id) return std::unexpected(id.error());
  if (*id) {
    if ((*id)->empty() || (*id)->size() > kMaxClientIdBytes) {
      return Fail(Code::kInvalidArgument, "must be 1 to 64 bytes", "id");
    }
    frame.id = std::move(**id);
  }
  return frame;
}

// The routing hot path: one pass over the members. Only the common shape is handled here (plain
// member names, the right kinds, no escapes in to/message_type/id); anything else goes to
// ParseSendChecked, which decides and words the outcome, so both paths agree by construction.
Result<ClientFrame> ParseSend(const ScannedObject& obj) {
  const ScannedMember* to = nullptr;
  const ScannedMember* payload = nullptr;
  const ScannedMember* type = nullptr;
  const ScannedMember* ice = nullptr;
  const ScannedMember* id = nullptr;
  for (const ScannedMember& m : obj.members()) {
    if (m.name_has_escapes) return ParseSendChecked(obj);
    if (m.name == "to") {
      to = &m;
    } else if (m.name == "encrypted_payload") {
      payload = &m;
    } else if (m.name == "message_type") {
      type = &m;
    } else if (m.name == "ice_candidates") {
      ice = &m;
    } else if (m.name == "id") {
      id = &m;
    }
  }
  const auto plain_string = [](const ScannedMember* m) {
    return m->kind == JsonKind::kString && !m->value_has_escapes;
  };
  if (to == nullptr || !plain_string(to) || payload == nullptr ||
      payload->kind != JsonKind::kString || (type != nullptr && !plain_string(type)) ||
      (ice != nullptr && ice->kind != JsonKind::kArray && ice->kind != JsonKind::kNull) ||
      (id != nullptr && !plain_string(id))) {
    return ParseSendChecked(obj);
  }
  SendFrame frame;
  frame.to = to->raw.substr(1, to->raw.size() - 2);
  frame.payload_token = payload->raw;
  if (type != nullptr) {
    auto parsed = ParseMessageType(type->raw.substr(1, type->raw.size() - 2));
    if (!parsed) return ParseSendChecked(obj);
    frame.message_type = *parsed;
  }
  if (ice != nullptr && ice->kind == JsonKind::kArray) frame.ice_candidates = ice->raw;
  if (id != nullptr) {
    const std::string_view text = id->raw.substr(1, id->raw.size() - 2);
    if (text.empty() || text.size() > kMaxClientIdBytes) return ParseSendChecked(obj);
    frame.id = std::string(text);
  }
  return frame;
}

Result<ClientFrame> ParseConnect(const ScannedObject& obj) {
  ConnectFrame frame;
  for (auto [name, target] : {std::pair{"protocol", &frame.protocol},
                              {"amid", &frame.amid},
                              {"public_key", &frame.public_key},
                              {"timestamp", &frame.timestamp},
                              {"signature", &frame.signature}}) {
    auto value = RequiredString(obj, name);
    if (!value) return std::unexpected(value.error());
    *target = std::move(*value);
  }
  auto p2p = obj.GetBool("p2p_capable");
  if (!p2p) return std::unexpected(p2p.error());
  frame.p2p_capable = p2p->value_or(false);
  return frame;
}

Result<ClientFrame> ParseIce(const ScannedObject& obj, bool is_answer) {
  IceFrame frame;
  frame.is_answer = is_answer;
  auto to = RequiredString(obj, "to");
  if (!to) return std::unexpected(to.error());
  frame.to = std::move(*to);
  auto sdp = RequiredRawString(obj, "sdp");
  if (!sdp) return std::unexpected(sdp.error());
  frame.sdp_token = *sdp;
  auto candidates = OptionalRawArray(obj, "candidates");
  if (!candidates) return std::unexpected(candidates.error());
  frame.candidates = *candidates;
  return frame;
}

Result<ClientFrame> ParseAck(const ScannedObject& obj) {
  AckFrame frame;
  std::string scratch;
  auto single = obj.GetStringView("message_id", scratch);
  if (!single) return std::unexpected(single.error());
  if (*single) {
    if (scratch.empty()) {
      frame.message_ids.push_back(**single);
    } else {
      frame.message_ids.push_back(frame.decoded.emplace_front(std::move(scratch)));
    }
  }
  if (const ScannedMember* many = obj.Find("message_ids")) {
    if (many->kind != JsonKind::kArray) {
      return Fail(Code::kInvalidArgument, "must be an array of strings", "message_ids");
    }
    auto ids = ParseStringArrayViews(many->raw, kMaxAckIds + 1, frame.message_ids, frame.decoded);
    if (!ids) return Fail(Code::kInvalidArgument, ids.error().message, "message_ids");
  }
  if (frame.message_ids.empty()) return Missing("message_id");
  if (frame.message_ids.size() > kMaxAckIds) {
    return Fail(Code::kLimitExceeded, "at most 256 ids per ack", "message_ids");
  }
  for (const std::string_view id : frame.message_ids) {
    if (id.empty() || id.size() > kMaxClientIdBytes) {
      return Fail(Code::kInvalidArgument, "ids are 1 to 64 bytes", "message_ids");
    }
  }
  return frame;
}

}  // namespace

std::string_view ErrorCodeName(ErrorCode code) noexcept {
  return kErrorNames[static_cast<std::size_t>(code)];
}

std::string_view MessageTypeName(MessageType type) noexcept {
  return kMessageTypeNames[static_cast<std::size_t>(type)];
}

std::optional<MessageType> ParseMessageType(std::string_view text) noexcept {
  for (std::size_t i = 0; i < kMessageTypeNames.size(); ++i) {
    if (kMessageTypeNames[i] == text) return static_cast<MessageType>(i);
  }
  return std::nullopt;
}

std::string_view PresenceStatusName(PresenceStatus status) noexcept {
  return kPresenceNames[static_cast<std::size_t>(status)];
}

std::optional<PresenceStatus> ParsePresenceStatus(std::string_view text) noexcept {
  for (std::size_t i = 0; i < kPresenceNames.size(); ++i) {
    if (kPresenceNames[i] == text) return static_cast<PresenceStatus>(i);
  }
  return std::nullopt;
}

Result<ClientFrame> ParseClientFrame(std::string_view text) {
  auto scanned = ScanObject(text);
  if (!scanned) return std::unexpected(scanned.error());
  const ScannedObject& obj = *scanned;
  std::string scratch;
  auto type = obj.GetStringView("type", scratch);
  if (!type) return std::unexpected(type.error());
  if (!*type) return Missing("type");
  const std::string_view t = **type;

  if (t == "send") return ParseSend(obj);
  if (t == "connect") return ParseConnect(obj);
  if (t == "ack") return ParseAck(obj);
  if (t == "ping") {
    PingFrame frame;
    if (const ScannedMember* ts = obj.Find("timestamp")) frame.timestamp_token = ts->raw;
    return frame;
  }
  if (t == "presence") {
    auto status = RequiredString(obj, "status");
    if (!status) return std::unexpected(status.error());
    auto parsed = ParsePresenceStatus(*status);
    if (!parsed) return Fail(Code::kInvalidArgument, "unknown presence status", "status");
    return PresenceFrame{*parsed};
  }
  if (t == "presence_query") {
    auto amid = RequiredString(obj, "amid");
    if (!amid) return std::unexpected(amid.error());
    return PresenceQueryFrame{std::move(*amid)};
  }
  if (t == "ice_offer") return ParseIce(obj, false);
  if (t == "ice_answer") return ParseIce(obj, true);
  if (t == "p2_p_established") {
    auto peer = RequiredString(obj, "peer");
    if (!peer) return std::unexpected(peer.error());
    return P2pEstablishedFrame{std::move(*peer)};
  }
  if (t == "disconnect") {
    auto reason = obj.GetString("reason");
    if (!reason) return std::unexpected(reason.error());
    return DisconnectFrame{reason->value_or("")};
  }
  if (t == "nack") {
    auto id = RequiredString(obj, "message_id");
    if (!id) return std::unexpected(id.error());
    auto reason = obj.GetString("reason");
    if (!reason) return std::unexpected(reason.error());
    return NackFrame{std::move(*id), reason->value_or("")};
  }
  if (t == "get_pending_messages") {
    auto limit = obj.GetUint("limit");
    if (!limit) return std::unexpected(limit.error());
    GetPendingFrame frame;
    if (*limit) {
      if (**limit == 0 || **limit > 1000) {
        return Fail(Code::kInvalidArgument, "must be 1 to 1000", "limit");
      }
      frame.limit = static_cast<std::uint32_t>(**limit);
    }
    return frame;
  }
  return Fail(Code::kInvalidArgument, fmt::format("unknown frame type '{}'", t), "type");
}

bool IsSupportedProtocol(std::string_view protocol) noexcept {
  return protocol == "agentmesh/1" || protocol == "agentmesh/0.1" || protocol == "agentmesh/0.2";
}

std::expected<VerifiedConnect, ConnectFailure> VerifyConnect(const ConnectFrame& frame,
                                                             UnixNanos now) {
  auto failure = [](ErrorCode code, std::string message) {
    return std::unexpected(ConnectFailure{code, std::move(message)});
  };
  if (!IsSupportedProtocol(frame.protocol)) {
    return failure(ErrorCode::kProtocolMismatch,
                   fmt::format("unsupported protocol '{}' (expected agentmesh/1)", frame.protocol));
  }
  auto key = ParseEd25519Key(frame.public_key);
  if (!key)
    return failure(ErrorCode::kInvalidSignature, "invalid public_key: " + key.error().message);
  const Amid amid = Amid::FromPublicKey(*key);
  if (amid.str() != frame.amid) {
    return failure(ErrorCode::kInvalidSignature, "amid does not match public_key");
  }
  auto ts = ParseRfc3339(frame.timestamp);
  if (!ts) return failure(ErrorCode::kInvalidSignature, "invalid timestamp: " + ts.error().message);
  if (*ts < now - kConnectMaxPast) {
    return failure(ErrorCode::kInvalidSignature, "timestamp too old (more than 300 s)");
  }
  if (*ts > now + kConnectMaxFuture) {
    return failure(ErrorCode::kInvalidSignature, "timestamp in the future (more than 60 s)");
  }
  auto sig = ParseSignature(frame.signature);
  if (!sig) return failure(ErrorCode::kInvalidSignature, "invalid signature encoding");
  const auto as_bytes = [](std::string_view s) {
    return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
  };
  bool valid = Verify(*key, as_bytes(frame.timestamp), *sig);
  if (!valid) {
    const std::string canonical = FormatChronoCanonical(*ts);
    if (canonical != frame.timestamp) valid = Verify(*key, as_bytes(canonical), *sig);
  }
  if (!valid) return failure(ErrorCode::kInvalidSignature, "signature verification failed");
  return VerifiedConnect{amid, *key, *ts, *sig};
}

std::string BuildConnectFrame(const Ed25519KeyPair& identity, UnixNanos now, bool p2p_capable) {
  // Millisecond precision in chrono's canonical form: verifiable by the raw-string and the
  // canonical rule alike, and distinct for reconnects within the same second (the relay's replay
  // cache refuses a repeated signature).
  const std::string timestamp = FormatChronoCanonical(now / kNanosPerMilli * kNanosPerMilli);
  const Signature sig =
      Sign(identity.secret,
           ByteView(reinterpret_cast<const std::uint8_t*>(timestamp.data()), timestamp.size()));
  std::string out = R"({"type":"connect","protocol":"agentmesh/1","amid":)";
  AppendJsonString(out, Amid::FromPublicKey(identity.public_key).str());
  out += R"(,"public_key":)";
  AppendJsonString(out, FormatEd25519Key(identity.public_key, false));
  out += R"(,"signature":)";
  AppendJsonString(out, FormatSignature(sig));
  out += R"(,"timestamp":)";
  AppendJsonString(out, timestamp);
  out += p2p_capable ? R"(,"p2p_capable":true})" : R"(,"p2p_capable":false})";
  return out;
}

void AppendConnected(std::string& out, std::string_view session_id, std::uint64_t pending) {
  out += R"({"type":"connected","session_id":)";
  AppendJsonString(out, session_id);
  out += R"(,"pending_messages":)";
  out += std::to_string(pending);
  out += '}';
}

void AppendReceive(std::string& out, std::string_view from, std::string_view payload_token,
                   MessageType type, std::string_view timestamp, std::string_view message_id,
                   std::string_view ice_candidates) {
  out += R"({"type":"receive","from":)";
  AppendJsonString(out, from);
  out += R"(,"encrypted_payload":)";
  out += payload_token;
  out += R"(,"message_type":")";
  out += MessageTypeName(type);
  out += R"(","timestamp":)";
  AppendJsonString(out, timestamp);
  out += R"(,"message_id":)";
  AppendJsonString(out, message_id);
  if (!ice_candidates.empty()) {
    out += R"(,"ice_candidates":)";
    out += ice_candidates;
  }
  out += '}';
}

void AppendError(std::string& out, ErrorCode code, std::string_view message,
                 std::optional<std::uint32_t> retry_after_seconds,
                 std::optional<std::string_view> id) {
  out += R"({"type":"error","code":")";
  out += ErrorCodeName(code);
  out += R"(","message":)";
  AppendJsonString(out, message);
  if (retry_after_seconds) {
    out += R"(,"retry_after_seconds":)";
    out += std::to_string(*retry_after_seconds);
  }
  if (id) {
    out += R"(,"id":)";
    AppendJsonString(out, *id);
  }
  out += '}';
}

std::string_view SendStatusName(SendStatus status) noexcept {
  switch (status) {
    case SendStatus::kDelivered:
      return "delivered";
    case SendStatus::kQueued:
      return "queued";
    case SendStatus::kRefused:
      return "refused";
  }
  return "refused";
}

void AppendSendResult(std::string& out, std::string_view id, std::string_view message_id,
                      SendStatus status, std::optional<ErrorCode> code,
                      std::optional<std::uint32_t> retry_after_seconds) {
  out += R"({"type":"send_result","id":)";
  AppendJsonString(out, id);
  if (!message_id.empty()) {
    out += R"(,"message_id":)";
    AppendJsonString(out, message_id);
  }
  out += R"(,"status":")";
  out += SendStatusName(status);
  out += '"';
  if (code) {
    out += R"(,"code":")";
    out += ErrorCodeName(*code);
    out += '"';
  }
  if (retry_after_seconds) {
    out += R"(,"retry_after_seconds":)";
    out += std::to_string(*retry_after_seconds);
  }
  out += '}';
}

void AppendReceipt(std::string& out, std::string_view id, std::string_view message_id, bool acked) {
  out += R"({"type":"receipt","id":)";
  AppendJsonString(out, id);
  out += R"(,"message_id":)";
  AppendJsonString(out, message_id);
  out += acked ? R"(,"status":"acked"})" : R"(,"status":"nacked"})";
}

void AppendPresenceResponse(std::string& out, std::string_view amid, PresenceStatus status,
                            std::optional<std::string_view> last_seen) {
  out += R"({"type":"presence_response","amid":)";
  AppendJsonString(out, amid);
  out += R"(,"status":")";
  out += PresenceStatusName(status);
  out += '"';
  if (last_seen) {
    out += R"(,"last_seen":)";
    AppendJsonString(out, *last_seen);
  }
  out += '}';
}

void AppendPong(std::string& out, std::string_view timestamp_token) {
  out += R"({"type":"pong")";
  if (!timestamp_token.empty()) {
    out += R"(,"timestamp":)";
    out += timestamp_token;
  }
  out += '}';
}

void AppendIce(std::string& out, bool is_answer, std::string_view from, std::string_view sdp_token,
               std::string_view candidates) {
  out += is_answer ? R"({"type":"ice_answer","to":)" : R"({"type":"ice_offer","to":)";
  AppendJsonString(out, from);
  out += R"(,"sdp":)";
  out += sdp_token;
  out += R"(,"candidates":)";
  out += candidates.empty() ? std::string_view("[]") : candidates;
  out += '}';
}

void AppendP2pEstablished(std::string& out, std::string_view from) {
  out += R"({"type":"p2_p_established","peer":)";
  AppendJsonString(out, from);
  out += '}';
}

void AppendPendingMessages(std::string& out, std::span<const PendingEntry> entries,
                           std::uint64_t remaining) {
  out += R"({"type":"pending_messages","messages":[)";
  bool first = true;
  for (const auto& e : entries) {
    if (!first) out += ',';
    first = false;
    out += R"({"message_id":)";
    AppendJsonString(out, e.message_id);
    out += R"(,"id":)";
    AppendJsonString(out, e.message_id);
    out += R"(,"from":)";
    AppendJsonString(out, e.from);
    out += R"(,"encrypted_payload":)";
    out += e.payload_token;
    out += R"(,"message_type":)";
    AppendJsonString(out, e.message_type);
    out += R"(,"timestamp":)";
    AppendJsonString(out, e.timestamp);
    out += '}';
  }
  out += R"(],"remaining":)";
  out += std::to_string(remaining);
  out += '}';
}

}  // namespace agentmesh::relay
