#include "agentmesh/net/ws_codec.hpp"

#include <wslay/wslay.h>

#include <algorithm>
#include <cstring>
#include <new>

#include "agentmesh/net/types.hpp"

namespace agentmesh::net {

bool IsValidUtf8(std::string_view text) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());
  const auto* end = p + text.size();
  while (p < end) {
    // Fast path: 8 ASCII bytes at a time.
    if (end - p >= 8) {
      std::uint64_t word;
      std::memcpy(&word, p, 8);
      if ((word & 0x8080808080808080ULL) == 0) {
        p += 8;
        continue;
      }
    }
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int extra = 0;
    std::uint32_t cp = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      extra = 1;
      cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      extra = 2;
      cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      extra = 3;
      cp = c & 0x07;
    } else {
      return false;  // continuation byte as lead, overlong 2-byte lead (C0/C1), or > F4
    }
    if (end - p <= extra) return false;
    for (int i = 1; i <= extra; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((extra == 2 && cp < 0x800) || (extra == 3 && (cp < 0x10000 || cp > 0x10FFFF))) {
      return false;  // overlong or out of range
    }
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;  // UTF-16 surrogates
    p += extra + 1;
  }
  return true;
}

WsCodec::WsCodec(WsRole role, std::size_t max_message_bytes, Rng* mask_rng)
    : role_(role), max_message_bytes_(max_message_bytes), mask_rng_(mask_rng) {
  wslay_frame_callbacks callbacks{};
  callbacks.send_callback = &WsCodec::SendCallback;
  callbacks.recv_callback = &WsCodec::RecvCallback;
  callbacks.genmask_callback = &WsCodec::MaskCallback;
  if (wslay_frame_context_init(&ctx_, &callbacks, this) != 0) throw std::bad_alloc();
}

WsCodec::~WsCodec() { wslay_frame_context_free(ctx_); }

ssize_t WsCodec::SendCallback(const std::uint8_t* data, std::size_t len, int /*flags*/,
                              void* user) {
  auto* self = static_cast<WsCodec*>(user);
  // Appending can throw bad_alloc; wslay is C, so the exception must not unwind through it.
  try {
    self->out_->insert(self->out_->end(), data, data + len);
  } catch (...) {
    return -1;
  }
  return static_cast<ssize_t>(len);
}

// Input is decoded by Feed itself; wslay's receive side is never used.
ssize_t WsCodec::RecvCallback(std::uint8_t*, std::size_t, int, void*) { return -1; }

int WsCodec::MaskCallback(std::uint8_t* buf, std::size_t len, void* user) {
  auto* self = static_cast<WsCodec*>(user);
  if (self->mask_rng_ == nullptr || len > sizeof(self->mask_pool_)) return -1;
  try {
    if (self->mask_pool_left_ < len) {
      self->mask_rng_->Fill(MutableByteView(self->mask_pool_, sizeof(self->mask_pool_)));
      self->mask_pool_left_ = sizeof(self->mask_pool_);
    }
  } catch (...) {
    return -1;
  }
  std::memcpy(buf, self->mask_pool_ + (sizeof(self->mask_pool_) - self->mask_pool_left_), len);
  self->mask_pool_left_ -= len;
  return 0;
}

std::expected<WsCodec::FeedResult, WsViolation> WsCodec::Fail(std::uint16_t code,
                                                              std::string message) {
  failed_ = true;
  return std::unexpected(WsViolation{code, std::move(message)});
}

std::size_t WsCodec::FrameSize(std::size_t payload_len) const noexcept {
  std::size_t header = 2;
  if (payload_len >= 65536) {
    header += 8;
  } else if (payload_len >= 126) {
    header += 2;
  }
  if (role_ == WsRole::kClient) header += 4;
  return header + payload_len;
}

void WsCodec::AppendFrame(Bytes& out, WsOpcode opcode, ByteView payload) {
  const bool control = (static_cast<std::uint8_t>(opcode) & 0x8) != 0;
  if (control && payload.size() > 125) payload = payload.first(125);
  // Geometric growth: an exact reserve per frame would copy the whole buffer on every append,
  // quadratic when one loop turn queues many frames for a connection.
  const std::size_t need = out.size() + FrameSize(payload.size());
  if (need > out.capacity()) out.reserve(std::max(need, 2 * out.capacity()));
  wslay_frame_iocb iocb{};
  iocb.fin = 1;
  iocb.rsv = WSLAY_RSV_NONE;
  iocb.opcode = static_cast<std::uint8_t>(opcode);
  iocb.payload_length = payload.size();
  iocb.mask = role_ == WsRole::kClient ? 1 : 0;
  iocb.data = payload.data();
  iocb.data_length = payload.size();
  out_ = &out;
  const std::size_t before = out.size();
  // With a send callback that always accepts everything, one call emits the whole frame.
  const ssize_t r = wslay_frame_send(ctx_, &iocb);
  out_ = nullptr;
  if (r < 0 || static_cast<std::size_t>(r) != payload.size()) {
    out.resize(before);
    throw std::bad_alloc();  // the only way the callbacks fail
  }
}

void WsCodec::AppendClose(Bytes& out, std::uint16_t code, std::string_view reason) {
  if (code == close_code::kNoStatus) {
    AppendFrame(out, WsOpcode::kClose, {});
    return;
  }
  std::uint8_t body[125];
  body[0] = static_cast<std::uint8_t>(code >> 8);
  body[1] = static_cast<std::uint8_t>(code & 0xFF);
  std::size_t n = std::min<std::size_t>(reason.size(), 123);
  // Never cut a UTF-8 sequence in half: back up to a lead byte.
  while (n > 0 && n < reason.size() && (static_cast<unsigned char>(reason[n]) & 0xC0) == 0x80) {
    --n;
  }
  if (n > 0) std::memcpy(body + 2, reason.data(), n);
  AppendFrame(out, WsOpcode::kClose, ByteView(body, n + 2));
}

std::expected<bool, WsViolation> WsCodec::DeliverControl(WsSink& sink) {
  const ByteView payload(control_);
  switch (frame_opcode_) {
    case WsOpcode::kPing:
      return sink.OnWsPing(payload);
    case WsOpcode::kPong:
      return sink.OnWsPong(payload);
    case WsOpcode::kClose: {
      if (payload.empty()) return sink.OnWsClose(close_code::kNoStatus, {});
      if (payload.size() == 1) {
        failed_ = true;
        return std::unexpected(WsViolation{close_code::kProtocolError, "1-byte close payload"});
      }
      const auto code = static_cast<std::uint16_t>((payload[0] << 8) | payload[1]);
      if (!IsValidWireCloseCode(code)) {
        failed_ = true;
        return std::unexpected(WsViolation{close_code::kProtocolError, "invalid close code"});
      }
      const std::string_view reason(reinterpret_cast<const char*>(payload.data()) + 2,
                                    payload.size() - 2);
      if (!IsValidUtf8(reason)) {
        failed_ = true;
        return std::unexpected(
            WsViolation{close_code::kInvalidPayload, "close reason is not valid UTF-8"});
      }
      return sink.OnWsClose(code, reason);
    }
    default:
      return true;
  }
}

namespace {
// dst[i] = src[i] ^ key[(offset + i) % 4], eight bytes at a time (dst may equal src).
void UnmaskCopy(std::uint8_t* dst, const std::uint8_t* src, std::size_t n,
                const std::uint8_t key[4], std::uint64_t offset) noexcept {
  std::uint8_t rotated[8];
  for (std::size_t i = 0; i < 8; ++i) rotated[i] = key[(offset + i) & 3];
  std::uint64_t k64;
  std::memcpy(&k64, rotated, 8);
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t v;
    std::memcpy(&v, src + i, 8);
    v ^= k64;
    std::memcpy(dst + i, &v, 8);
  }
  for (; i < n; ++i) dst[i] = src[i] ^ rotated[i & 7];
}

// Bytes of the frame header implied by its first two bytes.
std::size_t HeaderSize(std::uint8_t b1) noexcept {
  const std::uint8_t len7 = b1 & 0x7F;
  return 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + ((b1 & 0x80) != 0 ? 4 : 0);
}
}  // namespace

std::expected<WsCodec::FeedResult, WsViolation> WsCodec::BeginFrame(const std::uint8_t* h) {
  const bool fin = (h[0] & 0x80) != 0;
  if ((h[0] & 0x70) != 0) return Fail(close_code::kProtocolError, "reserved bits set");
  const auto opcode = static_cast<WsOpcode>(h[0] & 0x0F);
  const bool masked = (h[1] & 0x80) != 0;
  std::uint64_t len = h[1] & 0x7F;
  std::size_t at = 2;
  if (len == 126) {
    len = (std::uint64_t{h[2]} << 8) | h[3];
    at = 4;
  } else if (len == 127) {
    len = 0;
    for (int i = 0; i < 8; ++i) len = (len << 8) | h[2 + i];
    at = 10;
    if ((len >> 63) != 0) return Fail(close_code::kProtocolError, "malformed frame header");
  }
  const bool want_mask = role_ == WsRole::kServer;
  if (masked != want_mask) {
    return Fail(close_code::kProtocolError,
                want_mask ? "client frame is not masked" : "server frame is masked");
  }
  if (masked) std::memcpy(mask_key_, h + at, 4);
  frame_masked_ = masked;
  switch (opcode) {
    case WsOpcode::kContinuation:
      if (!in_message_) return Fail(close_code::kProtocolError, "unexpected continuation");
      break;
    case WsOpcode::kText:
    case WsOpcode::kBinary:
      if (in_message_) return Fail(close_code::kProtocolError, "expected continuation frame");
      break;
    case WsOpcode::kClose:
    case WsOpcode::kPing:
    case WsOpcode::kPong:
      if (!fin || len > 125) {
        return Fail(close_code::kProtocolError, "malformed frame header (control frame)");
      }
      break;
    default:
      return Fail(close_code::kProtocolError, "unknown opcode");
  }
  const bool control = (static_cast<std::uint8_t>(opcode) & 0x8) != 0;
  if (!control) {
    const std::uint64_t so_far = opcode == WsOpcode::kContinuation ? message_.size() : 0;
    if (len > max_message_bytes_ - so_far) {
      return Fail(close_code::kMessageTooBig,
                  "message exceeds " + std::to_string(max_message_bytes_) + " bytes");
    }
    if (opcode != WsOpcode::kContinuation) {
      message_opcode_ = opcode;
      message_.clear();
    }
    in_message_ = true;
  } else {
    control_.clear();
  }
  in_frame_ = true;
  frame_opcode_ = opcode;
  frame_fin_ = fin;
  frame_len_ = len;
  frame_got_ = 0;
  return FeedResult::kConsumed;
}

std::expected<WsCodec::FeedResult, WsViolation> WsCodec::Feed(ByteView data, WsSink& sink) {
  if (failed_) return Fail(close_code::kProtocolError, "codec already failed");
  const std::uint8_t* p = data.data();
  std::size_t n = data.size();
  for (;;) {
    if (!in_frame_) {
      // The header: parsed in place when it is complete in the input (the common case), else
      // gathered in header_ across calls.
      if (header_len_ == 0 && n >= 2 && n >= HeaderSize(p[1])) {
        const std::size_t size = HeaderSize(p[1]);
        if (auto r = BeginFrame(p); !r) return r;
        p += size;
        n -= size;
      } else {
        if (n == 0) break;
        while (n > 0) {
          const std::size_t need = header_len_ < 2 ? 2 : HeaderSize(header_[1]);
          if (header_len_ == need) break;
          const std::size_t take = std::min(need - header_len_, n);
          std::memcpy(header_ + header_len_, p, take);
          header_len_ += take;
          p += take;
          n -= take;
        }
        if (header_len_ < 2 || header_len_ < HeaderSize(header_[1])) break;  // need more input
        header_len_ = 0;
        if (auto r = BeginFrame(header_); !r) return r;
      }
    }

    // Payload bytes of the current frame available in this input.
    const std::size_t take =
        static_cast<std::size_t>(std::min<std::uint64_t>(n, frame_len_ - frame_got_));
    if (take == 0 && frame_len_ != 0) break;  // need more input
    const std::uint64_t offset = frame_got_;
    frame_got_ += take;
    const bool frame_done = frame_got_ == frame_len_;
    const bool control = (static_cast<std::uint8_t>(frame_opcode_) & 0x8) != 0;
    bool keep_going = true;
    auto append = [&](Bytes& to) {
      const std::size_t at = to.size();
      to.resize(at + take);
      if (frame_masked_) {
        UnmaskCopy(to.data() + at, p, take, mask_key_, offset);
      } else if (take > 0) {
        std::memcpy(to.data() + at, p, take);
      }
    };
    if (control) {
      append(control_);
      if (frame_done) {
        in_frame_ = false;
        auto delivered = DeliverControl(sink);
        if (!delivered) return std::unexpected(std::move(delivered.error()));
        keep_going = *delivered;
      }
    } else {
      ByteView message;
      bool deliver = false;
      if (frame_done && frame_fin_ && frame_opcode_ != WsOpcode::kContinuation &&
          take == frame_len_) {
        // The whole message is in this input: unmask it into the reused buffer (a server) or
        // deliver the input itself (a client: frames from servers are not masked).
        if (frame_masked_) {
          message_.resize(take);
          UnmaskCopy(message_.data(), p, take, mask_key_, 0);
          message = ByteView(message_);
        } else {
          message = ByteView(p, take);
        }
        deliver = true;
      } else {
        append(message_);
        if (frame_done && frame_fin_) {
          message = ByteView(message_);
          deliver = true;
        }
      }
      if (frame_done) in_frame_ = false;
      if (deliver) {
        in_message_ = false;
        if (message_opcode_ == WsOpcode::kText &&
            !IsValidUtf8(
                std::string_view(reinterpret_cast<const char*>(message.data()), message.size()))) {
          return Fail(close_code::kInvalidPayload, "text message is not valid UTF-8");
        }
        keep_going = sink.OnWsMessage(message_opcode_, message);
        message_.clear();
      }
    }
    p += take;
    n -= take;
    if (!keep_going) return FeedResult::kStopped;
  }
  return FeedResult::kConsumed;
}

}  // namespace agentmesh::net
