#include "agentmesh/net/client.hpp"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <exception>
#include <vector>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/net/http.hpp"
#include "agentmesh/net/link.hpp"

namespace agentmesh::net {

using detail::Link;
using detail::LinkConfig;
using detail::LinkHost;

// ---------------------------------------------------------------------------------------------
// URLs

std::string WsUrl::HostHeader() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != (secure ? 443 : 80)) h += ":" + std::to_string(port);
  return h;
}

Result<WsUrl> ParseWsUrl(std::string_view url) {
  WsUrl out;
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    return Fail(Code::kInvalidArgument, "URL must start with ws:// or wss://", "url");
  }
  const std::string_view scheme = url.substr(0, scheme_end);
  if (EqualsIgnoreCase(scheme, "ws")) {
    out.secure = false;
  } else if (EqualsIgnoreCase(scheme, "wss")) {
    out.secure = true;
  } else {
    return Fail(Code::kInvalidArgument, "unsupported URL scheme '" + std::string(scheme) + "'",
                "url");
  }
  std::string_view rest = url.substr(scheme_end + 3);
  if (rest.find('#') != std::string_view::npos) {
    return Fail(Code::kInvalidArgument, "WebSocket URLs cannot have a fragment", "url");
  }
  const std::size_t authority_end = rest.find_first_of("/?");
  const std::string_view authority = rest.substr(0, authority_end);
  std::string_view target =
      authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) {
    return Fail(Code::kInvalidArgument, "userinfo in URLs is not supported", "url");
  }
  std::string_view host;
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return Fail(Code::kInvalidArgument, "unterminated IPv6 literal", "url");
    }
    host = authority.substr(1, close - 1);
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Fail(Code::kInvalidArgument, "bad authority", "url");
      port_text = after.substr(1);
      if (port_text.empty()) return Fail(Code::kInvalidArgument, "empty port", "url");
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return Fail(Code::kInvalidArgument, "empty port", "url");
    }
  }
  if (host.empty()) return Fail(Code::kInvalidArgument, "URL has no host", "url");
  out.host = std::string(host);
  out.port = out.secure ? 443 : 80;
  if (!port_text.empty()) {
    unsigned value = 0;
    const auto [ptr, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc() || ptr != port_text.data() + port_text.size() || value == 0 ||
        value > 65535) {
      return Fail(Code::kInvalidArgument, "bad port '" + std::string(port_text) + "'", "url");
    }
    out.port = static_cast<std::uint16_t>(value);
  }
  if (target.empty()) {
    out.target = "/";
  } else if (target.front() == '?') {
    out.target = "/" + std::string(target);
  } else {
    out.target = std::string(target);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Impl

class ClientLink;

class WsClient::Impl final : public LinkHost {
 public:
  Impl(uv_loop_t* loop, ClientOptions options, ClientHandlers handlers)
      : loop_(loop),
        options_(std::move(options)),
        handlers_(std::move(handlers)),
        rng_(options_.rng != nullptr ? options_.rng : &system_rng_),
        read_buf_(64 * 1024) {
    link_config_.max_output_bytes = options_.max_output_bytes;
    link_config_.ping_interval_ms = options_.ping_interval_ms;
    link_config_.pong_timeout_ms = options_.pong_timeout_ms;
    link_config_.close_timeout_ms = options_.close_timeout_ms;
    link_config_.idle_timeout_ms = 0;
  }

  Result<void> Connect(std::string_view url);
  bool Close(std::uint16_t code, std::string_view reason);
  void Detach() noexcept;
  State state() const noexcept;

  // LinkHost
  void ScheduleFlush(Link& link) noexcept override {
    try {
      dirty_.push_back(&link);
    } catch (...) {
      link.Abort();
    }
  }
  void OnLinkClosed(Link& link) noexcept override;
  void AfterLinkFreed() noexcept override {
    --links_alive_;
    MaybeDelete();
  }
  Bytes& ReadBuffer() noexcept override { return read_buf_; }
  Bytes& PlainBuffer() noexcept override { return plain_buf_; }
  TransportStats& Stats() noexcept override { return stats_; }
  void Log(std::string_view message) noexcept override;

  void ReportError(Code code, std::string message) noexcept;
  void TryNextAddress();
  void Finish(std::uint16_t code, std::string_view reason) noexcept;

  uv_loop_t* loop_;
  ClientOptions options_;
  ClientHandlers handlers_;
  SystemRng system_rng_;
  Rng* rng_;
  LinkConfig link_config_;
  TransportStats stats_;
  std::shared_ptr<TlsContext> default_tls_;

  uv_prepare_t prepare_{};
  uv_check_t check_{};
  uv_timer_t timer_{};
  bool aux_open_ = false;
  int open_handles_ = 0;
  std::size_t links_alive_ = 0;
  int pending_reqs_ = 0;
  bool detached_ = false;

  // The current attempt (between Connect and on_close).
  bool active_ = false;
  bool opened_ = false;
  bool abort_requested_ = false;
  ConnId attempt_ = 0;
  WsUrl url_;
  std::shared_ptr<TlsContext> tls_;
  std::vector<sockaddr_storage> addrs_;
  std::size_t next_addr_ = 0;
  std::string connect_error_;
  std::uint64_t deadline_ms_ = 0;
  ClientLink* link_ = nullptr;
  struct Resolve {
    uv_getaddrinfo_t req;
    Impl* impl;
  };
  Resolve* resolve_ = nullptr;

  std::vector<Link*> dirty_;
  std::vector<Link*> flushing_;
  Bytes read_buf_;
  Bytes plain_buf_;

 private:
  void EnsureAux();
  void CloseAux() noexcept;
  void MaybeDelete() noexcept {
    if (detached_ && open_handles_ == 0 && links_alive_ == 0 && pending_reqs_ == 0) delete this;
  }
  void FlushDirty() noexcept;
  void Sweep() noexcept;

  static void ResolveCb(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept;
  static void OnPrepareCb(uv_prepare_t* handle) noexcept;
  static void OnCheckCb(uv_check_t* handle) noexcept;
  static void OnTimerCb(uv_timer_t* handle) noexcept;
  static void OnHandleClosedCb(uv_handle_t* handle) noexcept;
};

// ---------------------------------------------------------------------------------------------
// The connection of one attempt.

class ClientLink final : public Link {
 public:
  ClientLink(WsClient::Impl& client, ConnId id)
      : Link(client, id, client.link_config_), client_(client) {
    connect_req_.data = this;
  }

  uv_connect_t connect_req_{};
  bool connect_failed_ = false;
  bool connected_ = false;

  static void ConnectCb(uv_connect_t* req, int status) noexcept {
    auto* link = static_cast<ClientLink*>(req->data);
    if (link->phase() == Phase::kClosed) return;  // cancelled by Abort
    try {
      if (status < 0) {
        link->client_.connect_error_ = uv_strerror(status);
        link->connect_failed_ = true;
        link->Abort();
        return;
      }
      link->OnConnected();
    } catch (const std::exception& e) {
      link->client_.ReportError(Code::kInternal, e.what());
      link->Abort();
    } catch (...) {
      link->Abort();
    }
  }

 protected:
  void OnHttpData(ByteView data) override {
    if (!response_) {
      client_.ReportError(Code::kInvalidArgument, "server sent data before the handshake");
      Abort();
      return;
    }
    const std::string_view text(reinterpret_cast<const char*>(data.data()), data.size());
    const auto outcome = response_->Feed(text);
    if (outcome.status == HttpResponseParser::Status::kNeedMore) return;
    if (outcome.status == HttpResponseParser::Status::kError) {
      client_.ReportError(Code::kInvalidArgument,
                          "malformed handshake response: " + response_->error());
      SetCloseInfo(close_code::kAbnormal, "malformed handshake response");
      Abort();
      return;
    }
    const int status = response_->status_code();
    if (status != 101) {
      const std::string message = "server refused the WebSocket upgrade: HTTP " +
                                  std::to_string(status) + " " +
                                  std::string(HttpReasonPhrase(status));
      client_.ReportError(Code::kUnavailable, message);
      SetCloseInfo(close_code::kAbnormal, message);
      Abort();
      return;
    }
    const auto upgrade = response_->Header("upgrade");
    const auto connection = response_->Header("connection");
    const auto accept = response_->Header("sec-websocket-accept");
    if (!upgrade || !HeaderHasToken(*upgrade, "websocket") || !connection ||
        !HeaderHasToken(*connection, "upgrade") || !accept || *accept != expected_accept_) {
      client_.ReportError(Code::kAuthFailed, "invalid WebSocket handshake response");
      SetCloseInfo(close_code::kAbnormal, "invalid handshake response");
      Abort();
      return;
    }
    response_.reset();
    EnableWebSocket(WsRole::kClient, client_.options_.max_message_bytes, client_.rng_);
    ++client_.stats_.websocket_opened;
    client_.opened_ = true;
    if (!client_.detached_ && client_.handlers_.on_open) client_.handlers_.on_open();
    const ByteView rest = data.subspan(outcome.consumed);
    if (phase() == Phase::kOpen && !rest.empty()) FeedWebSocket(rest);
  }

  void OnTlsReady() override { SendUpgrade(); }

  void OnMessage(WsOpcode opcode, ByteView payload) override {
    if (client_.detached_) return;
    auto& h = client_.handlers_;
    if (opcode == WsOpcode::kText) {
      if (h.on_text) {
        h.on_text(std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
      }
    } else if (h.on_binary) {
      h.on_binary(payload);
    }
  }

  void OnViolation(const WsViolation& v) override {
    client_.ReportError(
        v.close_code == close_code::kMessageTooBig ? Code::kLimitExceeded : Code::kInvalidArgument,
        v.message);
  }

  void OnTransportError(const Error& error) override {
    client_.ReportError(error.code, error.message);
  }

  void OnBackpressure(std::size_t queued_bytes) override {
    if (!client_.detached_ && client_.handlers_.on_backpressure) {
      client_.handlers_.on_backpressure(queued_bytes);
    }
  }

  void OnDrain() override {
    if (!client_.detached_ && client_.handlers_.on_drain) client_.handlers_.on_drain();
  }

  void OnTimeout() override {
    if (phase() == Phase::kHttp) {
      client_.ReportError(Code::kTimeout, "WebSocket connect/handshake timed out");
      SetCloseInfo(close_code::kAbnormal, "handshake timeout");
    }
    Abort();
  }

 private:
  void OnConnected() {
    connected_ = true;
    ++client_.stats_.connections_accepted;
    ++client_.stats_.connections_current;
    if (client_.options_.tcp_nodelay) uv_tcp_nodelay(tcp(), 1);
    StartReading();
    if (!client_.url_.secure) {
      SendUpgrade();
      return;
    }
    const std::string& name = client_.options_.tls_server_name.empty()
                                  ? client_.url_.host
                                  : client_.options_.tls_server_name;
    auto session = TlsSession::Create(client_.tls_, name);
    if (!session) {
      client_.ReportError(session.error().code, session.error().message);
      Abort();
      return;
    }
    SetTls(std::move(*session));
    auto started = tls()->StartHandshake();
    if (!started) {
      ++client_.stats_.tls_failures;
      client_.ReportError(started.error().code, started.error().message);
      Abort();
      return;
    }
    ScheduleFlush();
  }

  void SendUpgrade() {
    std::uint8_t key_bytes[16];
    client_.rng_->Fill(MutableByteView(key_bytes, sizeof(key_bytes)));
    const std::string key = Base64Encode(ByteView(key_bytes, sizeof(key_bytes)));
    expected_accept_ = WebSocketAcceptKey(key);
    std::string request;
    SerializeUpgradeRequest(client_.url_.HostHeader(), client_.url_.target, key,
                            client_.options_.headers, request);
    response_ = std::make_unique<HttpResponseParser>();
    AppendRaw(request);
  }

  WsClient::Impl& client_;
  std::unique_ptr<HttpResponseParser> response_;
  std::string expected_accept_;
};

// ---------------------------------------------------------------------------------------------
// Impl methods

void WsClient::Impl::Log(std::string_view message) noexcept {
  try {
    if (handlers_.on_log && !detached_) {
      handlers_.on_log(message);
      return;
    }
  } catch (...) {
  }
  std::fprintf(stderr, "agentmesh_net: %.*s\n", static_cast<int>(message.size()), message.data());
}

void WsClient::Impl::ReportError(Code code, std::string message) noexcept {
  if (detached_ || !handlers_.on_error) return;
  try {
    handlers_.on_error(Error{code, std::move(message), {}});
  } catch (const std::exception& e) {
    ++stats_.handler_exceptions;
    Log(std::string("on_error threw: ") + e.what());
  } catch (...) {
    ++stats_.handler_exceptions;
  }
}

void WsClient::Impl::EnsureAux() {
  if (aux_open_) return;
  uv_prepare_init(loop_, &prepare_);
  uv_check_init(loop_, &check_);
  uv_timer_init(loop_, &timer_);
  prepare_.data = check_.data = timer_.data = this;
  open_handles_ += 3;
  aux_open_ = true;
  uv_prepare_start(&prepare_, &Impl::OnPrepareCb);
  uv_check_start(&check_, &Impl::OnCheckCb);
  uv_unref(reinterpret_cast<uv_handle_t*>(&prepare_));
  uv_unref(reinterpret_cast<uv_handle_t*>(&check_));
}

void WsClient::Impl::CloseAux() noexcept {
  if (!aux_open_) return;
  aux_open_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), &Impl::OnHandleClosedCb);
  uv_close(reinterpret_cast<uv_handle_t*>(&check_), &Impl::OnHandleClosedCb);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Impl::OnHandleClosedCb);
}

Result<void> WsClient::Impl::Connect(std::string_view url) {
  if (active_) return Fail(Code::kConflict, "client is not idle");
  auto parsed = ParseWsUrl(url);
  if (!parsed) return std::unexpected(parsed.error());
  std::shared_ptr<TlsContext> tls;
  if (parsed->secure) {
    if (options_.tls) {
      tls = options_.tls;
    } else {
      if (!default_tls_) {
        auto created = TlsContext::CreateClient({});
        if (!created) return std::unexpected(created.error());
        default_tls_ = std::move(*created);
      }
      tls = default_tls_;
    }
    if (tls->is_server()) return Fail(Code::kInvalidArgument, "a server TLS context was given");
  }
  addrs_.clear();
  sockaddr_storage addr{};
  const std::string& host = parsed->host;
  const bool numeric =
      uv_ip4_addr(host.c_str(), parsed->port, reinterpret_cast<sockaddr_in*>(&addr)) == 0 ||
      uv_ip6_addr(host.c_str(), parsed->port, reinterpret_cast<sockaddr_in6*>(&addr)) == 0;
  EnsureAux();
  url_ = std::move(*parsed);
  tls_ = std::move(tls);
  next_addr_ = 0;
  connect_error_.clear();
  opened_ = false;
  abort_requested_ = false;
  ++attempt_;
  deadline_ms_ = uv_now(loop_) + options_.connect_timeout_ms;
  if (numeric) {
    addrs_.push_back(addr);
  } else {
    auto* resolve = new Resolve{};
    resolve->impl = this;
    resolve->req.data = resolve;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    const std::string port = std::to_string(url_.port);
    const int r = uv_getaddrinfo(loop_, &resolve->req, &Impl::ResolveCb, url_.host.c_str(),
                                 port.c_str(), &hints);
    if (r != 0) {
      delete resolve;
      return Fail(Code::kIo, std::string("cannot resolve ") + url_.host + ": " + uv_strerror(r));
    }
    resolve_ = resolve;
    ++pending_reqs_;
  }
  active_ = true;
  std::uint64_t sweep = options_.connect_timeout_ms;
  for (std::uint64_t v :
       {options_.ping_interval_ms, options_.pong_timeout_ms, options_.close_timeout_ms}) {
    if (v != 0) sweep = std::min(sweep, v);
  }
  sweep = std::clamp<std::uint64_t>(sweep / 4, 5, 1000);
  uv_timer_start(&timer_, &Impl::OnTimerCb, sweep, sweep);
  if (numeric) TryNextAddress();
  return {};
}

void WsClient::Impl::TryNextAddress() {
  if (abort_requested_) {
    Finish(close_code::kAbnormal, "aborted");
    return;
  }
  if (next_addr_ >= addrs_.size()) {
    const std::string message = "cannot connect to " + url_.HostHeader() + ": " +
                                (connect_error_.empty() ? "no address" : connect_error_);
    ReportError(Code::kUnavailable, message);
    Finish(close_code::kAbnormal, message);
    return;
  }
  auto* link = new ClientLink(*this, attempt_);
  if (!link->InitHandle(loop_)) {
    delete link;
    ReportError(Code::kIo, "uv_tcp_init failed");
    Finish(close_code::kAbnormal, "uv_tcp_init failed");
    return;
  }
  ++links_alive_;
  link_ = link;
  link->SetDeadline(deadline_ms_);
  const auto* addr = reinterpret_cast<const sockaddr*>(&addrs_[next_addr_]);
  const int r = uv_tcp_connect(&link->connect_req_, link->tcp(), addr, &ClientLink::ConnectCb);
  if (r != 0) {
    connect_error_ = uv_strerror(r);
    link->connect_failed_ = true;
    link->Abort();
  }
}

void WsClient::Impl::Finish(std::uint16_t code, std::string_view reason) noexcept {
  active_ = false;
  opened_ = false;
  abort_requested_ = false;
  if (aux_open_) uv_timer_stop(&timer_);
  if (detached_ || !handlers_.on_close) return;
  try {
    handlers_.on_close(code, reason);
  } catch (const std::exception& e) {
    ++stats_.handler_exceptions;
    Log(std::string("on_close threw: ") + e.what());
  } catch (...) {
    ++stats_.handler_exceptions;
  }
}

void WsClient::Impl::OnLinkClosed(Link& link) noexcept {
  auto& cl = static_cast<ClientLink&>(link);
  if (link.dirty()) std::erase(dirty_, &link);
  if (cl.connected_) --stats_.connections_current;
  if (link_ == &cl) link_ = nullptr;
  if (detached_) return;
  if (cl.connect_failed_ && !abort_requested_) {
    ++next_addr_;
    try {
      TryNextAddress();
    } catch (...) {
      Finish(close_code::kAbnormal, "internal error");
    }
    return;
  }
  const std::string reason = link.close_reason();
  Finish(link.close_code(), reason);
}

void WsClient::Impl::ResolveCb(uv_getaddrinfo_t* req, int status, addrinfo* res) noexcept {
  auto* resolve = static_cast<Resolve*>(req->data);
  Impl* impl = resolve->impl;
  std::vector<sockaddr_storage> found;
  try {
    for (addrinfo* ai = status == 0 ? res : nullptr; ai != nullptr; ai = ai->ai_next) {
      if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6) continue;
      sockaddr_storage s{};
      std::memcpy(&s, ai->ai_addr, std::min<std::size_t>(ai->ai_addrlen, sizeof(s)));
      found.push_back(s);
    }
  } catch (...) {
    found.clear();
  }
  if (res != nullptr) uv_freeaddrinfo(res);
  delete resolve;
  --impl->pending_reqs_;
  if (impl->resolve_ == resolve) impl->resolve_ = nullptr;
  if (impl->detached_) {
    impl->MaybeDelete();
    return;
  }
  if (impl->abort_requested_) {
    impl->Finish(close_code::kAbnormal, "aborted");
    return;
  }
  if (found.empty()) {
    const std::string message = "cannot resolve " + impl->url_.host + ": " +
                                (status != 0 ? uv_strerror(status) : "no usable address");
    impl->ReportError(Code::kUnavailable, message);
    impl->Finish(close_code::kAbnormal, message);
    return;
  }
  impl->addrs_ = std::move(found);
  try {
    impl->TryNextAddress();
  } catch (...) {
    impl->Finish(close_code::kAbnormal, "internal error");
  }
}

bool WsClient::Impl::Close(std::uint16_t code, std::string_view reason) {
  if (!active_) return false;
  if (link_ != nullptr && link_->phase() == Link::Phase::kOpen) {
    return link_->CloseWebSocket(code, reason);
  }
  if (opened_ || abort_requested_) return false;  // already closing
  abort_requested_ = true;
  if (link_ != nullptr) {
    link_->SetCloseInfo(close_code::kAbnormal, "aborted");
    link_->Abort();
  } else if (resolve_ != nullptr) {
    uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_->req));
  }
  return true;
}

void WsClient::Impl::Detach() noexcept {
  detached_ = true;
  if (link_ != nullptr) link_->Abort();
  if (resolve_ != nullptr) uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_->req));
  CloseAux();
  MaybeDelete();
}

WsClient::State WsClient::Impl::state() const noexcept {
  if (!active_) return State::kIdle;
  if (link_ == nullptr) return opened_ ? State::kClosing : State::kConnecting;
  switch (link_->phase()) {
    case Link::Phase::kHttp:
      return State::kConnecting;
    case Link::Phase::kOpen:
      return State::kOpen;
    default:
      return opened_ ? State::kClosing : State::kConnecting;
  }
}

void WsClient::Impl::FlushDirty() noexcept {
  if (dirty_.empty()) return;
  flushing_.swap(dirty_);
  for (Link* link : flushing_) link->Flush();
  flushing_.clear();
}

void WsClient::Impl::Sweep() noexcept {
  const std::uint64_t now = uv_now(loop_);
  if (link_ != nullptr) {
    link_->Tick(now);
  } else if (active_ && resolve_ != nullptr && !abort_requested_ && now >= deadline_ms_) {
    ReportError(Code::kTimeout, "DNS resolution timed out");
    abort_requested_ = true;
    uv_cancel(reinterpret_cast<uv_req_t*>(&resolve_->req));
  }
}

void WsClient::Impl::OnPrepareCb(uv_prepare_t* handle) noexcept {
  static_cast<Impl*>(handle->data)->FlushDirty();
}

void WsClient::Impl::OnCheckCb(uv_check_t* handle) noexcept {
  static_cast<Impl*>(handle->data)->FlushDirty();
}

void WsClient::Impl::OnTimerCb(uv_timer_t* handle) noexcept {
  static_cast<Impl*>(handle->data)->Sweep();
}

void WsClient::Impl::OnHandleClosedCb(uv_handle_t* handle) noexcept {
  auto* impl = static_cast<Impl*>(handle->data);
  --impl->open_handles_;
  impl->MaybeDelete();
}

// ---------------------------------------------------------------------------------------------
// WsClient

WsClient::WsClient(uv_loop_t* loop, ClientOptions options, ClientHandlers handlers)
    : impl_(new Impl(loop, std::move(options), std::move(handlers))) {}

WsClient::~WsClient() { impl_->Detach(); }

Result<void> WsClient::Connect(std::string_view url) { return impl_->Connect(url); }

SendStatus WsClient::SendText(std::string_view text) {
  if (impl_->link_ == nullptr) {
    ++impl_->stats_.send_not_open;
    return SendStatus::kNotOpen;
  }
  return impl_->link_->SendMessage(
      WsOpcode::kText, ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

SendStatus WsClient::SendBinary(ByteView data) {
  if (impl_->link_ == nullptr) {
    ++impl_->stats_.send_not_open;
    return SendStatus::kNotOpen;
  }
  return impl_->link_->SendMessage(WsOpcode::kBinary, data);
}

bool WsClient::Close(std::uint16_t code, std::string_view reason) {
  return impl_->Close(code, reason);
}

WsClient::State WsClient::state() const noexcept { return impl_->state(); }

std::size_t WsClient::QueuedBytes() const noexcept {
  return impl_->link_ == nullptr ? 0 : impl_->link_->QueuedBytes();
}

const TransportStats& WsClient::stats() const noexcept { return impl_->stats_; }

}  // namespace agentmesh::net
