// The relay's JSON frame codec and CONNECT verification (docs/PROTOCOL.md §6), I/O-free.
//
// One frame = one JSON object in one WebSocket text message, tagged by "type". Parsing uses the
// strict scanner (json_scan.hpp) and never builds a DOM: the hot `send` frame yields views into the
// input, and `encrypted_payload` stays a raw, still-escaped JSON string token that the relay copies
// into the `receive` frame without decoding — the relay never looks inside a payload.
//
// Lifetime: every string_view in a parsed frame points into the text given to ParseClientFrame
// (or, for AckFrame ids written with escapes, into the frame's own storage).
// Thread-safety: pure functions.
// Errors: parse failures are Error{kInvalidArgument, message, field}; map them to the wire with
// RelayErrorCode::kInvalidMessage. VerifyConnect returns the wire code to send.
#pragma once

#include <cstdint>
#include <forward_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh::relay {

// Wire error codes (SCREAMING_SNAKE_CASE on the wire).
enum class ErrorCode {
  kInvalidSignature,
  kUnknownRecipient,
  kRecipientOffline,
  kRateLimited,
  kMessageTooLarge,
  kInvalidMessage,
  kInternalError,
  kProtocolMismatch,
  kUnauthorized,
  kQueueFull,
  kReplaced,
};
std::string_view ErrorCodeName(ErrorCode code) noexcept;

// `message_type` of send/receive.
enum class MessageType { kKnock, kAccept, kReject, kMessage, kClose, kStatus, kOptimisticMessage };
std::string_view MessageTypeName(MessageType type) noexcept;
std::optional<MessageType> ParseMessageType(std::string_view text) noexcept;

enum class PresenceStatus { kOnline, kAway, kOffline, kDnd };
std::string_view PresenceStatusName(PresenceStatus status) noexcept;
std::optional<PresenceStatus> ParsePresenceStatus(std::string_view text) noexcept;

// ---- Client → relay frames -------------------------------------------------------------------

struct ConnectFrame {
  std::string protocol;
  std::string amid;
  std::string public_key;
  std::string timestamp;
  std::string signature;
  bool p2p_capable = false;
};

struct SendFrame {
  std::string_view to;             // AMID text (not yet validated as an AMID)
  std::string_view payload_token;  // raw JSON string token incl. quotes, escapes kept
  MessageType message_type = MessageType::kMessage;
  std::string_view ice_candidates;  // raw JSON array, or empty when absent
  std::optional<std::string> id;    // client id for send_result/receipt (<= 64 bytes)
};

struct PresenceFrame {
  PresenceStatus status = PresenceStatus::kOnline;
};
struct PresenceQueryFrame {
  std::string amid;
};
// ice_offer / ice_answer: forwarded with `to` replaced by the sender's AMID.
struct IceFrame {
  bool is_answer = false;
  std::string to;
  std::string_view sdp_token;   // raw JSON string token
  std::string_view candidates;  // raw JSON array, or empty
};
struct P2pEstablishedFrame {
  std::string peer;
};
struct PingFrame {
  std::string_view timestamp_token;  // raw JSON value echoed in pong, or empty
};
struct DisconnectFrame {
  std::string reason;
};
// ack: `message_id` and/or `message_ids` (1..256 ids in all, each 1..64 bytes). Each id is a
// view into the frame text, or, when it was written with escapes (never needed for the relay's
// ids), into `decoded`. Move-only: a copy's views would still point into the original.
struct AckFrame {
  std::vector<std::string_view> message_ids;
  std::forward_list<std::string> decoded;  // storage for escaped ids; usually empty

  AckFrame() = default;
  AckFrame(AckFrame&&) noexcept = default;
  AckFrame& operator=(AckFrame&&) noexcept = default;
  AckFrame(const AckFrame&) = delete;
  AckFrame& operator=(const AckFrame&) = delete;
};
struct NackFrame {
  std::string message_id;
  std::string reason;
};
struct GetPendingFrame {
  std::uint32_t limit = 100;
};

using ClientFrame = std::variant<ConnectFrame, SendFrame, PresenceFrame, PresenceQueryFrame,
                                 IceFrame, P2pEstablishedFrame, PingFrame, DisconnectFrame,
                                 AckFrame, NackFrame, GetPendingFrame>;

// Parses one client frame. Unknown `type` → kInvalidArgument with field "type".
Result<ClientFrame> ParseClientFrame(std::string_view text);

// ---- CONNECT verification --------------------------------------------------------------------

struct VerifiedConnect {
  Amid amid;
  Ed25519PublicKey public_key;
  UnixNanos timestamp = 0;
  Signature signature;
};

struct ConnectFailure {
  ErrorCode code;
  std::string message;
};

inline constexpr UnixNanos kConnectMaxPast = 300 * kNanosPerSecond;
inline constexpr UnixNanos kConnectMaxFuture = 60 * kNanosPerSecond;

// Accepted protocol strings: "agentmesh/1" and the reference's "agentmesh/0.1", "agentmesh/0.2".
bool IsSupportedProtocol(std::string_view protocol) noexcept;

// Checks protocol, key, AMID == AMID(key), freshness (now-300 s .. now+60 s) and the signature over
// the timestamp as sent or its chrono canonical form. The replay cache is the caller's (it keys on
// (amid, signature) for the freshness window).
std::expected<VerifiedConnect, ConnectFailure> VerifyConnect(const ConnectFrame& frame,
                                                             UnixNanos now);

// Builds a signed CONNECT frame for a client: the timestamp is `now` truncated to milliseconds in
// chrono's canonical form ("2026-02-01T16:25:10.555+00:00"), signed exactly as sent.
std::string BuildConnectFrame(const Ed25519KeyPair& identity, UnixNanos now, bool p2p_capable);

// ---- Relay → client frames (appended to `out`, compact JSON) ----------------------------------

void AppendConnected(std::string& out, std::string_view session_id, std::uint64_t pending);
void AppendReceive(std::string& out, std::string_view from, std::string_view payload_token,
                   MessageType type, std::string_view timestamp, std::string_view message_id,
                   std::string_view ice_candidates);
void AppendError(std::string& out, ErrorCode code, std::string_view message,
                 std::optional<std::uint32_t> retry_after_seconds = std::nullopt,
                 std::optional<std::string_view> id = std::nullopt);
enum class SendStatus { kDelivered, kQueued, kRefused };
std::string_view SendStatusName(SendStatus status) noexcept;
void AppendSendResult(std::string& out, std::string_view id, std::string_view message_id,
                      SendStatus status, std::optional<ErrorCode> code = std::nullopt,
                      std::optional<std::uint32_t> retry_after_seconds = std::nullopt);
void AppendReceipt(std::string& out, std::string_view id, std::string_view message_id, bool acked);
void AppendPresenceResponse(std::string& out, std::string_view amid, PresenceStatus status,
                            std::optional<std::string_view> last_seen);
void AppendPong(std::string& out, std::string_view timestamp_token);
void AppendIce(std::string& out, bool is_answer, std::string_view from, std::string_view sdp_token,
               std::string_view candidates);
void AppendP2pEstablished(std::string& out, std::string_view from);

// One entry of a pending_messages frame (views into the caller's storage).
struct PendingEntry {
  std::string_view message_id;
  std::string_view from;
  std::string_view payload_token;  // raw JSON string token
  std::string_view message_type;
  std::string_view timestamp;
};
void AppendPendingMessages(std::string& out, std::span<const PendingEntry> entries,
                           std::uint64_t remaining);

}  // namespace agentmesh::relay
