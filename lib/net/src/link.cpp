#include "agentmesh/net/link.hpp"

#include <cstring>
#include <exception>

namespace agentmesh::net::detail {

namespace {
// Buffers that grew beyond this during a burst are released once written, so an idle connection
// does not pin a large allocation.
constexpr std::size_t kKeepCapacity = 256 * 1024;
}  // namespace

PeerAddress GetPeerAddress(const uv_tcp_t* tcp) noexcept {
  PeerAddress peer;
  sockaddr_storage addr{};
  int len = sizeof(addr);
  if (uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&addr), &len) != 0) return peer;
  char ip[INET6_ADDRSTRLEN] = {};
  try {
    if (addr.ss_family == AF_INET) {
      const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
      uv_ip4_name(in, ip, sizeof(ip));
      peer.port = ntohs(in->sin_port);
    } else if (addr.ss_family == AF_INET6) {
      const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
      uv_ip6_name(in6, ip, sizeof(ip));
      peer.port = ntohs(in6->sin6_port);
    }
    peer.ip = ip;
  } catch (...) {
    peer = {};
  }
  return peer;
}

Link::Link(LinkHost& host, ConnId id, const LinkConfig& config)
    : host_(host), id_(id), config_(config) {}

Link::~Link() = default;

bool Link::InitHandle(uv_loop_t* loop) noexcept {
  if (uv_tcp_init(loop, &tcp_) != 0) return false;
  tcp_.data = this;
  write_req_.data = this;
  shutdown_req_.data = this;
  handle_initialised_ = true;
  last_activity_ms_ = uv_now(loop);
  return true;
}

void Link::StartReading() noexcept {
  if (reading_ || phase_ == Phase::kClosed || eof_seen_) return;
  if (uv_read_start(stream(), &Link::AllocCb, &Link::ReadCb) == 0) reading_ = true;
}

void Link::StopReading() noexcept {
  if (!reading_) return;
  uv_read_stop(stream());
  reading_ = false;
}

void Link::ScheduleFlush() noexcept {
  if (dirty_ || phase_ == Phase::kClosed) return;
  dirty_ = true;
  host_.ScheduleFlush(*this);
}

void Link::AppendRaw(std::string_view bytes) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(bytes.data());
  out_.insert(out_.end(), p, p + bytes.size());
  ScheduleFlush();
}

void Link::FinishAfterFlush() noexcept {
  finish_after_flush_ = true;
  if (deadline_ms_ == 0) deadline_ms_ = Now() + config_.close_timeout_ms;
  ScheduleFlush();
}

void Link::SetCloseInfo(std::uint16_t code, std::string_view reason) {
  if (close_info_set_) return;
  close_info_set_ = true;
  close_code_ = code;
  close_reason_ = reason;
}

void Link::EnableWebSocket(WsRole role, std::size_t max_message_bytes, Rng* mask_rng) {
  codec_ = std::make_unique<WsCodec>(role, max_message_bytes, mask_rng);
  phase_ = Phase::kOpen;
  deadline_ms_ = 0;
  last_activity_ms_ = Now();
}

// ---------------------------------------------------------------------------------------------
// Output

void Link::Flush() noexcept {
  dirty_ = false;
  if (phase_ == Phase::kClosed) return;
  try {
    if (tls_) {
      if (tls_->handshake_done() && !out_.empty()) {
        auto r = tls_->SendPlaintext(out_);
        out_.clear();
        if (!r) {
          ++host_.Stats().tls_failures;
          OnTransportError(r.error());
          Abort();
          return;
        }
      }
      if (finish_after_flush_ && out_.empty()) tls_->Shutdown();  // close_notify before FIN
      tls_->TakeOutput(wire_);
    }
    Bytes& pending = tls_ ? wire_ : out_;
    if (!writing_ && !pending.empty()) {
      // Synchronous attempt first: when the socket takes everything (the common case) there is no
      // write request, no completion callback and, with libuv 1.44, no epoll_ctl afterwards.
      uv_buf_t now = uv_buf_init(reinterpret_cast<char*>(pending.data()),
                                 static_cast<unsigned int>(pending.size()));
      const int written = uv_try_write(stream(), &now, 1);
      if (written < 0 && written != UV_EAGAIN) {
        SetCloseInfo(close_code::kAbnormal, uv_strerror(written));
        Abort();
        return;
      }
      ++host_.Stats().write_calls;
      if (written > 0) {
        host_.Stats().bytes_out += static_cast<std::uint64_t>(written);
        last_activity_ms_ = Now();
        if (static_cast<std::size_t>(written) == pending.size()) {
          if (pending.capacity() > kKeepCapacity) {
            Bytes().swap(pending);
          } else {
            pending.clear();
          }
          AfterWrite();
          if (phase_ == Phase::kClosed) return;
        } else {
          pending.erase(pending.begin(), pending.begin() + written);
        }
      }
    }
    if (!writing_ && !pending.empty()) {
      inflight_.swap(pending);
      const uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(inflight_.data()),
                                       static_cast<unsigned int>(inflight_.size()));
      if (uv_write(&write_req_, stream(), &buf, 1, &Link::WriteCb) != 0) {
        Abort();
        return;
      }
      writing_ = true;
      return;
    }
    const bool plain_drained = !tls_ || out_.empty() || !tls_->handshake_done();
    if (!writing_ && pending.empty() && plain_drained && finish_after_flush_ &&
        !shutdown_started_) {
      StartShutdown();
    }
  } catch (const std::exception& e) {
    HandleException(e.what());
  } catch (...) {
    HandleException("unknown exception");
  }
}

void Link::OnWritten(int status) {
  writing_ = false;
  if (phase_ == Phase::kClosed) return;  // cancelled by uv_close
  if (status < 0) {
    SetCloseInfo(close_code::kAbnormal, uv_strerror(status));
    Abort();
    return;
  }
  host_.Stats().bytes_out += inflight_.size();
  if (inflight_.capacity() > kKeepCapacity) {
    Bytes().swap(inflight_);
  } else {
    inflight_.clear();
  }
  last_activity_ms_ = Now();
  AfterWrite();
  if (phase_ != Phase::kClosed && (!out_.empty() || !wire_.empty() || finish_after_flush_)) {
    ScheduleFlush();
  }
}

void Link::AfterWrite() {
  if (backpressured_ && QueuedBytes() <= config_.max_output_bytes / 2) {
    backpressured_ = false;
    OnDrain();
  }
}

void Link::StartShutdown() {
  shutdown_started_ = true;
  phase_ = Phase::kDraining;
  deadline_ms_ = Now() + config_.close_timeout_ms;
  if (uv_shutdown(&shutdown_req_, stream(), &Link::ShutdownCb) != 0) {
    Abort();
    return;
  }
  StartReading();  // read (and discard) until the peer's EOF so our last bytes are not reset
}

void Link::Abort() noexcept {
  if (phase_ == Phase::kClosed) return;
  phase_ = Phase::kClosed;
  reading_ = false;
  if (!handle_initialised_) return;
  uv_close(reinterpret_cast<uv_handle_t*>(&tcp_), &Link::CloseCb);
}

// ---------------------------------------------------------------------------------------------
// Input

void Link::OnRead(ssize_t nread, const uv_buf_t* buf) {
  if (nread == 0) return;
  if (nread < 0) {
    if (nread == UV_EOF) {
      HandleEof();
    } else {
      SetCloseInfo(close_code::kAbnormal, uv_strerror(static_cast<int>(nread)));
      Abort();
    }
    return;
  }
  host_.Stats().bytes_in += static_cast<std::uint64_t>(nread);
  ++host_.Stats().read_calls;
  last_activity_ms_ = Now();
  ping_outstanding_ = false;  // any traffic proves the peer is alive
  if (phase_ == Phase::kDraining || phase_ == Phase::kClosed || failed_) return;
  const ByteView data(reinterpret_cast<const std::uint8_t*>(buf->base),
                      static_cast<std::size_t>(nread));
  if (!tls_) {
    ProcessPlain(data);
    return;
  }
  Bytes& plain = host_.PlainBuffer();
  plain.clear();
  auto r = tls_->ReceiveCiphertext(data, plain);
  if (tls_->HasOutput()) ScheduleFlush();
  if (!r) {
    ++host_.Stats().tls_failures;
    SetCloseInfo(close_code::kAbnormal, r.error().message);
    OnTransportError(r.error());
    Abort();
    return;
  }
  if (!tls_ready_ && tls_->handshake_done()) {
    tls_ready_ = true;
    OnTlsReady();
    if (phase_ == Phase::kClosed) return;
  }
  if (!plain.empty()) ProcessPlain(plain);
  if (tls_->peer_closed() && phase_ != Phase::kClosed) HandleEof();
}

void Link::ProcessPlain(ByteView data) {
  switch (phase_) {
    case Phase::kHttp:
      OnHttpData(data);
      break;
    case Phase::kOpen:
    case Phase::kClosing:
      FeedWebSocket(data);
      break;
    default:
      break;
  }
}

void Link::FeedWebSocket(ByteView data) {
  if (!codec_ || failed_ || data.empty()) return;
  auto r = codec_->Feed(data, *this);
  if (r) return;
  ++host_.Stats().protocol_errors;
  const WsViolation violation = std::move(r.error());
  OnViolation(violation);
  FailWebSocket(violation.close_code, violation.message);
}

void Link::HandleEof() {
  eof_seen_ = true;
  StopReading();
  if (phase_ == Phase::kClosed) return;
  if (phase_ == Phase::kDraining) {
    if (shutdown_done_) Abort();  // otherwise ShutdownCb sees eof_seen_ and finishes
    return;
  }
  if ((phase_ == Phase::kHttp || phase_ == Phase::kClosing) &&
      (writing_ || !out_.empty() || !wire_.empty() || HasPendingWork())) {
    // The peer half-closed after its request (or close frame): still deliver what we owe it.
    FinishAfterFlush();
    return;
  }
  SetCloseInfo(close_code::kAbnormal, "connection closed by peer");
  Abort();
}

// ---------------------------------------------------------------------------------------------
// WebSocket state machine

SendStatus Link::SendMessage(WsOpcode opcode, ByteView payload) {
  auto& stats = host_.Stats();
  if (phase_ != Phase::kOpen) {
    ++stats.send_not_open;
    return SendStatus::kNotOpen;
  }
  const std::size_t frame = codec_->FrameSize(payload.size());
  if (frame > config_.max_output_bytes) {
    ++stats.send_dropped;
    return SendStatus::kTooLarge;
  }
  const std::size_t queued = QueuedBytes();
  if (queued + frame > config_.max_output_bytes) {
    ++stats.send_dropped;
    ++stats.backpressure_events;
    backpressured_ = true;
    OnBackpressure(queued);
    return SendStatus::kBackpressure;
  }
  codec_->AppendFrame(out_, opcode, payload);
  ++stats.frames_out;
  ScheduleFlush();
  return SendStatus::kQueued;
}

bool Link::CloseWebSocket(std::uint16_t code, std::string_view reason) {
  if (phase_ != Phase::kOpen) return false;
  const std::uint16_t wire_code = IsValidWireCloseCode(code) ? code : close_code::kNoStatus;
  codec_->AppendClose(out_, wire_code, reason);
  close_sent_ = true;
  SetCloseInfo(code, reason);
  phase_ = Phase::kClosing;
  deadline_ms_ = Now() + config_.close_timeout_ms;
  ScheduleFlush();
  return true;
}

void Link::FailWebSocket(std::uint16_t code, std::string_view reason) {
  if (phase_ == Phase::kClosed || phase_ == Phase::kDraining) return;
  failed_ = true;
  if (!close_sent_ && codec_) {
    codec_->AppendClose(out_, code, reason);
    close_sent_ = true;
  }
  SetCloseInfo(code, reason);
  phase_ = Phase::kClosing;
  FinishAfterFlush();
}

bool Link::OnWsMessage(WsOpcode opcode, ByteView payload) {
  if (phase_ != Phase::kOpen) return phase_ == Phase::kClosing && !failed_;
  ++host_.Stats().frames_in;
  OnMessage(opcode, payload);
  return phase_ == Phase::kOpen || (phase_ == Phase::kClosing && !failed_);
}

bool Link::OnWsPing(ByteView payload) {
  if (phase_ == Phase::kOpen &&
      QueuedBytes() + codec_->FrameSize(payload.size()) <= config_.max_output_bytes) {
    codec_->AppendFrame(out_, WsOpcode::kPong, payload);
    ScheduleFlush();
  }
  return phase_ == Phase::kOpen || (phase_ == Phase::kClosing && !failed_);
}

bool Link::OnWsPong(ByteView /*payload*/) {
  ping_outstanding_ = false;
  return phase_ == Phase::kOpen || (phase_ == Phase::kClosing && !failed_);
}

bool Link::OnWsClose(std::uint16_t code, std::string_view reason) {
  close_received_ = true;
  if (!close_sent_) {
    codec_->AppendClose(out_, code, {});  // echo the status code (RFC 6455 §5.5.1)
    close_sent_ = true;
  }
  if (!failed_) {
    close_info_set_ = false;  // the peer's close is the authoritative report
    SetCloseInfo(code, reason);
  }
  phase_ = Phase::kClosing;
  FinishAfterFlush();
  return false;
}

// ---------------------------------------------------------------------------------------------
// Timers

void Link::Tick(std::uint64_t now_ms) noexcept {
  if (phase_ == Phase::kClosed) return;
  try {
    if (deadline_ms_ != 0 && now_ms >= deadline_ms_) {
      ++host_.Stats().timeouts;
      SetCloseInfo(close_code::kAbnormal, "timeout");
      OnTimeout();
      return;
    }
    if (phase_ == Phase::kHttp && config_.idle_timeout_ms != 0 && !HasPendingWork() && !writing_ &&
        now_ms - last_activity_ms_ >= config_.idle_timeout_ms) {
      ++host_.Stats().timeouts;
      SetCloseInfo(close_code::kAbnormal, "idle timeout");
      Abort();
      return;
    }
    if (phase_ == Phase::kOpen && config_.ping_interval_ms != 0) {
      if (ping_outstanding_) {
        if (now_ms - ping_sent_ms_ >= config_.pong_timeout_ms) {
          ++host_.Stats().timeouts;
          SetCloseInfo(close_code::kAbnormal, "pong timeout");
          Abort();
        }
      } else if (now_ms - last_activity_ms_ >= config_.ping_interval_ms) {
        if (QueuedBytes() + codec_->FrameSize(0) <= config_.max_output_bytes) {
          codec_->AppendFrame(out_, WsOpcode::kPing, {});
          ++host_.Stats().pings_sent;
          ScheduleFlush();
        }
        ping_outstanding_ = true;
        ping_sent_ms_ = now_ms;
      }
    }
  } catch (const std::exception& e) {
    HandleException(e.what());
  } catch (...) {
    HandleException("unknown exception");
  }
}

// ---------------------------------------------------------------------------------------------
// libuv trampolines

void Link::HandleException(std::string_view what) noexcept {
  ++host_.Stats().handler_exceptions;
  try {
    host_.Log("connection " + std::to_string(id_) + ": exception: " + std::string(what));
  } catch (...) {
  }
  if (phase_ == Phase::kOpen) {
    try {
      FailWebSocket(close_code::kInternalError, "internal error");
      return;
    } catch (...) {
    }
  }
  SetCloseInfo(close_code::kInternalError, "internal error");
  Abort();
}

void Link::AllocCb(uv_handle_t* handle, std::size_t /*suggested*/, uv_buf_t* buf) noexcept {
  auto* link = static_cast<Link*>(handle->data);
  Bytes& b = link->host_.ReadBuffer();
  *buf = uv_buf_init(reinterpret_cast<char*>(b.data()), static_cast<unsigned int>(b.size()));
}

void Link::ReadCb(uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) noexcept {
  auto* link = static_cast<Link*>(stream->data);
  try {
    link->OnRead(nread, buf);
  } catch (const std::exception& e) {
    link->HandleException(e.what());
  } catch (...) {
    link->HandleException("unknown exception");
  }
}

void Link::WriteCb(uv_write_t* req, int status) noexcept {
  auto* link = static_cast<Link*>(req->data);
  try {
    link->OnWritten(status);
  } catch (const std::exception& e) {
    link->HandleException(e.what());
  } catch (...) {
    link->HandleException("unknown exception");
  }
}

void Link::ShutdownCb(uv_shutdown_t* req, int status) noexcept {
  auto* link = static_cast<Link*>(req->data);
  link->shutdown_done_ = true;
  if (link->phase_ == Phase::kClosed) return;
  if (status < 0 || link->eof_seen_) link->Abort();
}

void Link::CloseCb(uv_handle_t* handle) noexcept {
  auto* link = static_cast<Link*>(handle->data);
  LinkHost& host = link->host_;
  host.OnLinkClosed(*link);
  delete link;
  host.AfterLinkFreed();
}

}  // namespace agentmesh::net::detail
