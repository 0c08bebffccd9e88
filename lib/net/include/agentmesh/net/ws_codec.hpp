// RFC 6455 framing, I/O-free: a WsCodec turns received bytes into complete messages and control
// frames, and appends outgoing frames to a caller-owned byte buffer. Outgoing frames are written
// by wslay's frame layer (wslay_frame_send, with masking for clients). Incoming frames are decoded
// here: header parsing in place, unmasking eight bytes at a time (wslay_frame_recv copies every
// byte through its own 4 KiB buffer and unmasks byte by byte, which was the largest user-space cost
// of the relay's routing path), message reassembly with a size limit, opcode/RSV/mask rules
// (control frames FIN and <= 125 bytes; the 64-bit length's top bit clear), UTF-8 validation of
// text messages and close reasons, and close-code validation.
//
// Frame layout (RFC 6455 §5.2), for reference:
//
//   byte 0      FIN(1) RSV1-3(3) opcode(4)
//   byte 1      MASK(1) len7(7)        len7 = 0..125 | 126 → 16-bit length | 127 → 64-bit length
//   [2 or 8]    extended payload length, big-endian
//   [4]         masking key (client → server frames only)
//   payload
//
// Output never allocates per frame: frames are appended to the given buffer, whose capacity the
// caller reuses. Input never allocates in the steady state either: a masked message (client →
// server) is unmasked into one reused buffer; an unmasked one (server → client) that arrives as one
// frame inside one read chunk is delivered as a view of the input itself.
//
// Thread-safety: one codec per connection, used from one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <expected>
#include <string>
#include <string_view>

#include <sys/types.h>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/rng.hpp"

struct wslay_frame_context;

namespace agentmesh::net {

enum class WsRole { kServer, kClient };

enum class WsOpcode : std::uint8_t {
  kContinuation = 0x0,
  kText = 0x1,
  kBinary = 0x2,
  kClose = 0x8,
  kPing = 0x9,
  kPong = 0xA,
};

// Receives what the codec decodes. Views are valid only during the call. Each method returns true
// to keep decoding, false to stop (e.g. the connection is being closed); unconsumed input is then
// discarded by Feed.
class WsSink {
 public:
  virtual bool OnWsMessage(WsOpcode opcode, ByteView payload) = 0;  // kText (valid UTF-8) / kBinary
  virtual bool OnWsPing(ByteView payload) = 0;
  virtual bool OnWsPong(ByteView payload) = 0;
  // `code` is close_code::kNoStatus when the frame had no body; `reason` is valid UTF-8.
  virtual bool OnWsClose(std::uint16_t code, std::string_view reason) = 0;

 protected:
  ~WsSink() = default;
};

// A fatal violation by the peer: the connection must be failed with `close_code`.
struct WsViolation {
  std::uint16_t close_code;  // 1002 protocol error, 1007 bad UTF-8, 1009 message too big
  std::string message;
};

// True when `text` is well-formed UTF-8 (no overlongs, no surrogates, ≤ U+10FFFF).
bool IsValidUtf8(std::string_view text) noexcept;

class WsCodec {
 public:
  // `max_message_bytes` bounds a reassembled data message (and thus any single frame). `mask_rng`
  // supplies masking keys and is required for WsRole::kClient; it must outlive the codec.
  WsCodec(WsRole role, std::size_t max_message_bytes, Rng* mask_rng = nullptr);
  ~WsCodec();
  WsCodec(const WsCodec&) = delete;
  WsCodec& operator=(const WsCodec&) = delete;

  enum class FeedResult { kConsumed, kStopped };

  // Decodes all of `data`, calling `sink` for every complete message / control frame. Partial
  // frames are kept for the next call. Returns kStopped when the sink asked to stop, and a
  // WsViolation when the peer broke the protocol or a limit (the codec is then unusable).
  std::expected<FeedResult, WsViolation> Feed(ByteView data, WsSink& sink);

  // Appends one complete frame (FIN set) to `out`. Control frames must carry ≤ 125 bytes (larger
  // control payloads are truncated to 125). Masks when the role is kClient.
  void AppendFrame(Bytes& out, WsOpcode opcode, ByteView payload);
  // Appends a close frame. code == close_code::kNoStatus sends an empty body. The reason is
  // truncated to fit the 125-byte control-frame limit.
  void AppendClose(Bytes& out, std::uint16_t code, std::string_view reason);

  // Wire size of a frame with this payload length (header + payload) for this codec's role.
  std::size_t FrameSize(std::size_t payload_len) const noexcept;

  std::size_t max_message_bytes() const noexcept { return max_message_bytes_; }

 private:
  static ssize_t SendCallback(const std::uint8_t* data, std::size_t len, int flags, void* user);
  static ssize_t RecvCallback(std::uint8_t* buf, std::size_t len, int flags, void* user);
  static int MaskCallback(std::uint8_t* buf, std::size_t len, void* user);
  std::expected<FeedResult, WsViolation> Fail(std::uint16_t code, std::string message);
  std::expected<bool, WsViolation> DeliverControl(WsSink& sink);
  // Validates a complete frame header (2 to 14 bytes at `header`) and starts the frame.
  std::expected<FeedResult, WsViolation> BeginFrame(const std::uint8_t* header);

  WsRole role_;
  std::size_t max_message_bytes_;
  Rng* mask_rng_;
  wslay_frame_context* ctx_ = nullptr;
  bool failed_ = false;

  // A frame header split across Feed calls.
  std::uint8_t header_[14] = {};
  std::size_t header_len_ = 0;
  // Output buffer appended to by SendCallback during AppendFrame.
  Bytes* out_ = nullptr;

  // Current frame.
  bool in_frame_ = false;
  WsOpcode frame_opcode_ = WsOpcode::kContinuation;
  bool frame_fin_ = false;
  std::uint64_t frame_len_ = 0;
  std::uint64_t frame_got_ = 0;
  bool frame_masked_ = false;
  std::uint8_t mask_key_[4] = {};
  // Current (possibly fragmented) data message.
  bool in_message_ = false;
  WsOpcode message_opcode_ = WsOpcode::kText;
  Bytes message_;
  Bytes control_;
  // Masking keys are drawn from the RNG in blocks to keep RNG calls off the per-frame path.
  std::uint8_t mask_pool_[256] = {};
  std::size_t mask_pool_left_ = 0;
};

}  // namespace agentmesh::net
