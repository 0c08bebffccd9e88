#include "agentmesh/net/server.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <unordered_map>
#include <vector>

#include "agentmesh/net/link.hpp"

namespace agentmesh::net {

using detail::Link;
using detail::LinkConfig;
using detail::LinkHost;

namespace {
constexpr std::size_t kReadBufferSize = 64 * 1024;

std::uint64_t SweepInterval(const ServerOptions& o) {
  std::uint64_t shortest = 4000;
  for (std::uint64_t v :
       {o.ping_interval_ms, o.pong_timeout_ms, o.close_timeout_ms, o.http_idle_timeout_ms}) {
    if (v != 0) shortest = std::min(shortest, v);
  }
  return std::clamp<std::uint64_t>(shortest / 4, 5, 1000);
}
}  // namespace

class ServerConn;

class WsServer::Impl final : public LinkHost {
 public:
  Impl(uv_loop_t* loop, ServerOptions options, ServerHandlers handlers)
      : loop_(loop),
        options_(std::move(options)),
        handlers_(std::move(handlers)),
        read_buf_(kReadBufferSize) {
    link_config_.max_output_bytes = options_.max_output_bytes;
    link_config_.ping_interval_ms = options_.ping_interval_ms;
    link_config_.pong_timeout_ms = options_.pong_timeout_ms;
    link_config_.close_timeout_ms = options_.close_timeout_ms;
    link_config_.idle_timeout_ms = options_.http_idle_timeout_ms;
  }

  Result<void> Listen();
  void Stop();
  void Detach() noexcept;
  // Resumed from the next prepare/check callback (both run every loop iteration).
  void QueueResume(ConnId id) { resume_.push_back(id); }
  ServerConn* Find(ConnId id) const noexcept {
    const auto it = conns_.find(id);
    return it == conns_.end() ? nullptr : it->second;
  }

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

  uv_loop_t* loop_;
  ServerOptions options_;
  ServerHandlers handlers_;
  LinkConfig link_config_;
  TransportStats stats_;

  uv_tcp_t listen_{};
  uv_prepare_t prepare_{};
  uv_check_t check_{};
  uv_timer_t timer_{};
  int open_handles_ = 0;
  std::size_t links_alive_ = 0;
  bool listen_open_ = false;
  bool aux_open_ = false;
  bool stopping_ = false;
  bool detached_ = false;
  std::uint16_t port_ = 0;

  ConnId next_id_ = 1;
  std::unordered_map<ConnId, ServerConn*> conns_;
  std::vector<Link*> dirty_;
  std::vector<Link*> flushing_;
  std::vector<ConnId> resume_;  // HTTP connections to continue after an async response
  std::vector<ConnId> resuming_;
  Bytes read_buf_;
  Bytes plain_buf_;
  std::string response_buf_;

 private:
  void Accept(int status);
  void FlushDirty() noexcept;
  void Sweep() noexcept;
  void CloseListener() noexcept;
  void CloseAux() noexcept;
  void MaybeDelete() noexcept {
    if (detached_ && open_handles_ == 0 && links_alive_ == 0) delete this;
  }

  static void OnConnectionCb(uv_stream_t* server, int status) noexcept;
  static void OnPrepareCb(uv_prepare_t* handle) noexcept;
  static void OnCheckCb(uv_check_t* handle) noexcept;
  static void OnTimerCb(uv_timer_t* handle) noexcept;
  static void OnHandleClosedCb(uv_handle_t* handle) noexcept;
};

// ---------------------------------------------------------------------------------------------
// One accepted connection.

class ServerConn final : public Link {
 public:
  ServerConn(WsServer::Impl& server, ConnId id)
      : Link(server, id, server.link_config_), server_(server) {}

  PeerAddress peer_;
  bool registered_ = false;  // in server_.conns_
  bool opened_ = false;      // on_open was called: on_close is owed

  void Begin() {
    parser_ = std::make_unique<HttpRequestParser>(server_.options_.http_limits);
    StartReading();
  }

  bool awaiting_response() const noexcept { return awaiting_response_; }

  void WriteResponse(const HttpResponse& response) {
    if (!awaiting_response_ || phase() != Phase::kHttp) return;
    awaiting_response_ = false;
    std::string& buf = server_.response_buf_;
    buf.clear();
    SerializeResponse(response, response_keep_alive_, buf);
    AppendRaw(buf);
    if (buf.capacity() > 256 * 1024) std::string().swap(buf);
    Touch();
    if (!response_keep_alive_) {
      SetPhase(Phase::kClosing);
      FinishAfterFlush();
      return;
    }
    // Pipelined requests continue from the next flush, never from inside Respond(): the
    // application is not re-entered while it is answering.
    if (!in_drain_) server_.QueueResume(id());
  }

  // Continues parsing after an asynchronous response (called by the server's flush).
  void ResumeHttp() {
    if (phase() != Phase::kHttp || awaiting_response_) return;
    StartReading();
    DrainHttp();
  }

  bool CloseByApp(std::uint16_t code, std::string_view reason) {
    switch (phase()) {
      case Phase::kOpen:
        return CloseWebSocket(code, reason);
      case Phase::kHttp:
        SetPhase(Phase::kClosing);
        FinishAfterFlush();
        return true;
      default:
        return false;
    }
  }

  void BeginStop() {
    switch (phase()) {
      case Phase::kOpen:
        CloseWebSocket(close_code::kGoingAway, "server shutting down");
        break;
      case Phase::kHttp:
        if (awaiting_response_) {
          response_keep_alive_ = false;
        } else {
          SetPhase(Phase::kClosing);
          FinishAfterFlush();
        }
        break;
      default:
        break;
    }
  }

 protected:
  void OnHttpData(ByteView data) override {
    stash_.append(reinterpret_cast<const char*>(data.data()), data.size());
    if (awaiting_response_) {
      // Pipelined requests wait; stop reading if the client keeps pushing.
      const auto& limits = server_.options_.http_limits;
      if (stash_.size() > limits.max_header_bytes + limits.max_body_bytes) StopReading();
      return;
    }
    DrainHttp();
  }

  void OnMessage(WsOpcode opcode, ByteView payload) override {
    if (server_.detached_) return;
    auto& h = server_.handlers_;
    if (opcode == WsOpcode::kText) {
      if (h.on_text) {
        h.on_text(id(),
                  std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()));
      }
    } else if (h.on_binary) {
      h.on_binary(id(), payload);
    } else {
      FailWebSocket(close_code::kUnsupportedData, "binary messages are not accepted");
    }
  }

  void OnViolation(const WsViolation& v) override {
    if (server_.detached_ || !server_.handlers_.on_error) return;
    const Code code =
        v.close_code == close_code::kMessageTooBig ? Code::kLimitExceeded : Code::kInvalidArgument;
    server_.handlers_.on_error(id(), Error{code, v.message, {}});
  }

  void OnBackpressure(std::size_t queued_bytes) override {
    if (!server_.detached_ && server_.handlers_.on_backpressure) {
      server_.handlers_.on_backpressure(id(), queued_bytes);
    }
  }

  void OnDrain() override {
    if (!server_.detached_ && server_.handlers_.on_drain) server_.handlers_.on_drain(id());
  }

  bool HasPendingWork() const noexcept override { return awaiting_response_; }

 private:
  struct DrainGuard {
    bool& flag;
    explicit DrainGuard(bool& f) : flag(f) { flag = true; }
    ~DrainGuard() { flag = false; }
  };

  void DrainHttp() {
    if (in_drain_) return;
    DrainGuard guard(in_drain_);
    while (phase() == Phase::kHttp && !awaiting_response_ && !stash_.empty() && parser_) {
      const auto outcome = parser_->Feed(stash_);
      switch (outcome.status) {
        case HttpRequestParser::Status::kNeedMore:
          stash_.clear();
          return;
        case HttpRequestParser::Status::kError:
          stash_.clear();
          SendHttpError(parser_->error_status(), parser_->error());
          return;
        case HttpRequestParser::Status::kRequest:
          stash_.erase(0, outcome.consumed);
          HandleRequest();
          break;
        case HttpRequestParser::Status::kUpgrade: {
          std::string rest = stash_.substr(outcome.consumed);
          std::string().swap(stash_);  // HTTP is over on this connection
          HandleUpgrade(std::move(rest));
          return;
        }
      }
    }
  }

  void HandleRequest() {
    HttpRequest& request = parser_->request();
    request.peer = peer_;
    ++server_.stats_.http_requests;
    response_keep_alive_ = request.keep_alive && !server_.stopping_;
    awaiting_response_ = true;
    if (server_.detached_) return;
    auto& h = server_.handlers_;
    if (h.on_http_async) {
      h.on_http_async(id(), request);
      return;
    }
    HttpResponse response;
    if (h.on_http) {
      try {
        response = h.on_http(request);
      } catch (const std::exception& e) {
        ++server_.stats_.handler_exceptions;
        server_.Log(std::string("on_http threw: ") + e.what());
        response = HttpResponse::JsonError(500, "internal error");
        response_keep_alive_ = false;
      }
    } else {
      response = HttpResponse::JsonError(404, "not found");
    }
    WriteResponse(response);
  }

  void SendHttpError(int status, std::string_view message, bool version_header = false) {
    ++server_.stats_.http_errors;
    HttpResponse response = HttpResponse::JsonError(status, message);
    if (version_header) response.headers.push_back({"Sec-WebSocket-Version", "13"});
    awaiting_response_ = true;
    response_keep_alive_ = false;
    WriteResponse(response);
  }

  void HandleUpgrade(std::string rest) {
    HttpRequest& request = parser_->request();
    request.peer = peer_;
    const auto& options = server_.options_;
    if (!options.enable_websocket) {
      SendHttpError(400, "WebSocket upgrades are not served here");
      return;
    }
    if (!options.websocket_path.empty() && request.path != options.websocket_path) {
      SendHttpError(404, "not found");
      return;
    }
    auto key = ValidateUpgradeRequest(request);
    if (!key) {
      SendHttpError(400, key.error().message, key.error().field == "sec-websocket-version");
      return;
    }
    if (server_.stopping_ || server_.detached_) {
      SendHttpError(503, "server shutting down");
      return;
    }
    auto& h = server_.handlers_;
    if (h.on_upgrade) {
      HttpResponse reject = HttpResponse::JsonError(403, "forbidden");
      if (!h.on_upgrade(request, reject)) {
        ++server_.stats_.http_errors;
        awaiting_response_ = true;
        response_keep_alive_ = false;
        WriteResponse(reject);
        return;
      }
    }
    std::string response;
    SerializeUpgradeResponse(*key, response);
    AppendRaw(response);
    EnableWebSocket(WsRole::kServer, options.max_message_bytes, nullptr);
    ++server_.stats_.websocket_opened;
    opened_ = true;
    const HttpRequest upgrade = std::move(request);
    parser_.reset();
    if (h.on_open) h.on_open(id(), upgrade, peer_);
    if (phase() == Phase::kOpen && !rest.empty()) {
      FeedWebSocket(ByteView(reinterpret_cast<const std::uint8_t*>(rest.data()), rest.size()));
    }
  }

  WsServer::Impl& server_;
  std::unique_ptr<HttpRequestParser> parser_;
  std::string stash_;  // received, not yet parsed HTTP bytes
  bool awaiting_response_ = false;
  bool response_keep_alive_ = true;
  bool in_drain_ = false;
};

// ---------------------------------------------------------------------------------------------
// WsServer::Impl

void WsServer::Impl::Log(std::string_view message) noexcept {
  try {
    if (handlers_.on_log && !detached_) {
      handlers_.on_log(message);
      return;
    }
  } catch (...) {
  }
  std::fprintf(stderr, "agentmesh_net: %.*s\n", static_cast<int>(message.size()), message.data());
}

Result<void> WsServer::Impl::Listen() {
  if (listen_open_ || stopping_ || detached_) {
    return Fail(Code::kConflict, "server already listening or stopped");
  }
  sockaddr_storage addr{};
  const bool v6 = options_.host.find(':') != std::string::npos;
  const int parsed =
      v6 ? uv_ip6_addr(options_.host.c_str(), options_.port, reinterpret_cast<sockaddr_in6*>(&addr))
         : uv_ip4_addr(options_.host.c_str(), options_.port, reinterpret_cast<sockaddr_in*>(&addr));
  if (parsed != 0) {
    return Fail(Code::kInvalidArgument, "not a numeric IP address: " + options_.host, "host");
  }
  int r = uv_tcp_init(loop_, &listen_);
  if (r != 0) return Fail(Code::kIo, std::string("uv_tcp_init: ") + uv_strerror(r));
  listen_.data = this;
  listen_open_ = true;
  ++open_handles_;
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  r = uv_tcp_bind(&listen_, reinterpret_cast<const sockaddr*>(&addr), 0);
  if (r == 0)
    r = uv_listen(reinterpret_cast<uv_stream_t*>(&listen_), options_.backlog,
                  &Impl::OnConnectionCb);
  if (r != 0) {
    CloseListener();
    return Fail(Code::kIo, "listen on " + where + ": " + uv_strerror(r));
  }
  sockaddr_storage bound{};
  int len = sizeof(bound);
  if (uv_tcp_getsockname(&listen_, reinterpret_cast<sockaddr*>(&bound), &len) == 0) {
    port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                              : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  }
  uv_prepare_init(loop_, &prepare_);
  uv_check_init(loop_, &check_);
  uv_timer_init(loop_, &timer_);
  prepare_.data = check_.data = timer_.data = this;
  open_handles_ += 3;
  aux_open_ = true;
  uv_prepare_start(&prepare_, &Impl::OnPrepareCb);
  uv_check_start(&check_, &Impl::OnCheckCb);
  uv_unref(reinterpret_cast<uv_handle_t*>(&prepare_));  // flushing alone never keeps the loop
  uv_unref(reinterpret_cast<uv_handle_t*>(&check_));
  const std::uint64_t sweep = SweepInterval(options_);
  uv_timer_start(&timer_, &Impl::OnTimerCb, sweep, sweep);
  return {};
}

void WsServer::Impl::CloseListener() noexcept {
  if (!listen_open_) return;
  listen_open_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&listen_), &Impl::OnHandleClosedCb);
}

void WsServer::Impl::CloseAux() noexcept {
  if (!aux_open_) return;
  aux_open_ = false;
  uv_close(reinterpret_cast<uv_handle_t*>(&prepare_), &Impl::OnHandleClosedCb);
  uv_close(reinterpret_cast<uv_handle_t*>(&check_), &Impl::OnHandleClosedCb);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Impl::OnHandleClosedCb);
}

void WsServer::Impl::Stop() {
  if (stopping_) return;
  stopping_ = true;
  CloseListener();
  for (auto& [id, conn] : conns_) conn->BeginStop();
  if (conns_.empty()) CloseAux();
}

void WsServer::Impl::Detach() noexcept {
  detached_ = true;
  stopping_ = true;
  CloseListener();
  for (auto& [id, conn] : conns_) conn->Abort();
  CloseAux();
  MaybeDelete();
}

void WsServer::Impl::Accept(int status) {
  if (status < 0) {
    Log(std::string("accept failed: ") + uv_strerror(status));
    return;
  }
  auto* conn = new ServerConn(*this, next_id_++);
  if (!conn->InitHandle(loop_)) {
    delete conn;
    return;
  }
  ++links_alive_;
  if (uv_accept(reinterpret_cast<uv_stream_t*>(&listen_), conn->stream()) != 0) {
    conn->Abort();
    return;
  }
  const PeerAddress peer = detail::GetPeerAddress(conn->tcp());
  bool refuse = stopping_ || detached_ ||
                (options_.max_connections != 0 && conns_.size() >= options_.max_connections);
  if (!refuse && handlers_.on_accept) {
    try {
      refuse = !handlers_.on_accept(peer);
    } catch (const std::exception& e) {
      ++stats_.handler_exceptions;
      Log(std::string("on_accept threw: ") + e.what());
      refuse = true;
    }
  }
  if (refuse) {
    ++stats_.connections_refused;
    conn->Abort();
    return;
  }
  conn->peer_ = peer;
  conn->registered_ = true;
  conns_.emplace(conn->id(), conn);
  ++stats_.connections_accepted;
  ++stats_.connections_current;
  if (options_.tcp_nodelay) uv_tcp_nodelay(conn->tcp(), 1);
  if (options_.tls) {
    auto session = TlsSession::Create(options_.tls);
    if (!session) {
      ++stats_.tls_failures;
      Log("TLS session: " + session.error().message);
      conn->Abort();
      return;
    }
    conn->SetTls(std::move(*session));
  }
  conn->Begin();
}

void WsServer::Impl::OnLinkClosed(Link& link) noexcept {
  auto& conn = static_cast<ServerConn&>(link);
  if (link.dirty()) std::erase(dirty_, &link);
  if (!conn.registered_) return;
  conns_.erase(conn.id());
  --stats_.connections_current;
  if (conn.opened_ && !detached_ && handlers_.on_close) {
    try {
      handlers_.on_close(conn.id(), conn.close_code(), conn.close_reason());
    } catch (const std::exception& e) {
      ++stats_.handler_exceptions;
      Log(std::string("on_close threw: ") + e.what());
    } catch (...) {
      ++stats_.handler_exceptions;
      Log("on_close threw");
    }
  }
  if (stopping_ && conns_.empty()) CloseAux();
}

void WsServer::Impl::FlushDirty() noexcept {
  if (!resume_.empty()) {
    resuming_.swap(resume_);
    for (ConnId id : resuming_) {
      ServerConn* conn = Find(id);
      if (conn == nullptr) continue;
      try {
        conn->ResumeHttp();
      } catch (const std::exception& e) {
        conn->HandleException(e.what());
      } catch (...) {
        conn->HandleException("unknown exception");
      }
    }
    resuming_.clear();
  }
  if (dirty_.empty()) return;
  flushing_.swap(dirty_);
  for (Link* link : flushing_) link->Flush();
  flushing_.clear();
}

void WsServer::Impl::Sweep() noexcept {
  const std::uint64_t now = uv_now(loop_);
  for (auto& [id, conn] : conns_) conn->Tick(now);
}

void WsServer::Impl::OnConnectionCb(uv_stream_t* server, int status) noexcept {
  auto* impl = static_cast<Impl*>(server->data);
  try {
    impl->Accept(status);
  } catch (const std::exception& e) {
    impl->Log(std::string("accept: ") + e.what());
  } catch (...) {
    impl->Log("accept: unknown exception");
  }
}

void WsServer::Impl::OnPrepareCb(uv_prepare_t* handle) noexcept {
  static_cast<Impl*>(handle->data)->FlushDirty();
}

void WsServer::Impl::OnCheckCb(uv_check_t* handle) noexcept {
  static_cast<Impl*>(handle->data)->FlushDirty();
}

void WsServer::Impl::OnTimerCb(uv_timer_t* handle) noexcept {
  static_cast<Impl*>(handle->data)->Sweep();
}

void WsServer::Impl::OnHandleClosedCb(uv_handle_t* handle) noexcept {
  auto* impl = static_cast<Impl*>(handle->data);
  --impl->open_handles_;
  impl->MaybeDelete();
}

// ---------------------------------------------------------------------------------------------
// WsServer

WsServer::WsServer(uv_loop_t* loop, ServerOptions options, ServerHandlers handlers)
    : impl_(new Impl(loop, std::move(options), std::move(handlers))) {}

WsServer::~WsServer() { impl_->Detach(); }

Result<void> WsServer::Listen() { return impl_->Listen(); }

std::uint16_t WsServer::port() const noexcept { return impl_->port_; }

SendStatus WsServer::SendText(ConnId id, std::string_view text) {
  ServerConn* conn = impl_->Find(id);
  if (conn == nullptr) {
    ++impl_->stats_.send_no_conn;
    return SendStatus::kNoSuchConn;
  }
  return conn->SendMessage(
      WsOpcode::kText, ByteView(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

SendStatus WsServer::SendBinary(ConnId id, ByteView data) {
  ServerConn* conn = impl_->Find(id);
  if (conn == nullptr) {
    ++impl_->stats_.send_no_conn;
    return SendStatus::kNoSuchConn;
  }
  return conn->SendMessage(WsOpcode::kBinary, data);
}

bool WsServer::Close(ConnId id, std::uint16_t code, std::string_view reason) {
  ServerConn* conn = impl_->Find(id);
  return conn != nullptr && conn->CloseByApp(code, reason);
}

Result<void> WsServer::Respond(ConnId id, HttpResponse response) {
  ServerConn* conn = impl_->Find(id);
  if (conn == nullptr) return Fail(Code::kNotFound, "connection is gone");
  if (!conn->awaiting_response()) return Fail(Code::kConflict, "no response is awaited");
  conn->WriteResponse(response);
  return {};
}

void WsServer::Stop() { impl_->Stop(); }

bool WsServer::stopping() const noexcept { return impl_->stopping_; }

std::size_t WsServer::QueuedBytes(ConnId id) const noexcept {
  const ServerConn* conn = impl_->Find(id);
  return conn == nullptr ? 0 : conn->QueuedBytes();
}

std::optional<PeerAddress> WsServer::Peer(ConnId id) const {
  const ServerConn* conn = impl_->Find(id);
  if (conn == nullptr) return std::nullopt;
  return conn->peer_;
}

std::size_t WsServer::connection_count() const noexcept { return impl_->conns_.size(); }

const TransportStats& WsServer::stats() const noexcept { return impl_->stats_; }

// ---------------------------------------------------------------------------------------------
// HttpServer

namespace {
ServerOptions WithoutWebSocket(ServerOptions options) {
  options.enable_websocket = false;
  return options;
}
}  // namespace

ServerHandlers HttpServer::Convert(Handlers handlers) {
  ServerHandlers h;
  h.on_accept = std::move(handlers.on_accept);
  h.on_http = std::move(handlers.on_http);
  h.on_http_async = std::move(handlers.on_http_async);
  h.on_log = std::move(handlers.on_log);
  return h;
}

HttpServer::HttpServer(uv_loop_t* loop, ServerOptions options, Handlers handlers)
    : server_(loop, WithoutWebSocket(std::move(options)), Convert(std::move(handlers))) {}

}  // namespace agentmesh::net
