#include "relay.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/json_scan.hpp"
#include "agentmesh/core/rate_limit.hpp"
#include "agentmesh/core/relay_frames.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/net/server.hpp"
#include "agentmesh/net/tls.hpp"
#include "queue_store.hpp"

namespace agentmesh::relay {
namespace {

LogLevel g_log_level = LogLevel::kInfo;

UnixNanos WallNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string NewMessageId(Rng& rng) {
  std::array<std::uint8_t, 16> b = rng.Array<16>();
  b[6] = static_cast<std::uint8_t>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3f) | 0x80);
  const std::string hex = HexEncode(b);
  return fmt::format("{}-{}-{}-{}-{}", hex.substr(0, 8), hex.substr(8, 4), hex.substr(12, 4),
                     hex.substr(16, 4), hex.substr(20));
}

Result<std::pair<std::string, std::uint16_t>> SplitListen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(listen.substr(colon + 1), &used);
    if (used != listen.size() - colon - 1) port = 70000;
  } catch (const std::exception&) {
    port = 70000;
  }
  if (port > 65535) return Fail(Code::kInvalidArgument, "invalid port", "listen");
  return std::pair{host, static_cast<std::uint16_t>(port)};
}

struct Presence {
  PresenceStatus status = PresenceStatus::kOffline;
  UnixNanos last_seen = 0;
};

struct Inflight {
  QueuedMessage message;
  bool in_store = false;  // committed to the store (pushed from the queue)
};

struct Conn {
  net::ConnId id = 0;
  std::string ip;
  std::string amid;  // empty until CONNECT succeeded
  UnixNanos auth_deadline = 0;
  std::uint32_t invalid_frames = 0;
  bool closing = false;
  bool more_pending = false;  // queued messages held back by flow control
  // Messages written to this connection and not yet acked, by message id.
  std::unordered_map<std::string, Inflight> inflight;
};

struct SenderLimits {
  TokenBucket messages;
  TokenBucket knocks;
};

// A send waiting for the group commit at the end of the loop turn.
struct PendingQueued {
  QueuedMessage message;
  net::ConnId sender_conn = 0;
};

}  // namespace

void SetLogLevel(LogLevel level) { g_log_level = level; }

LogLevel ParseLogLevel(const std::string& name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "warn") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

void Log(LogLevel level, std::string_view message) {
  if (level < g_log_level) return;
  static constexpr const char* kNames[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  std::fprintf(stderr, "%s amesh-relay %s %.*s\n",
               FormatRfc3339Z(WallNow() / 1'000'000 * 1'000'000).c_str(),
               kNames[static_cast<int>(level)], static_cast<int>(message.size()), message.data());
}

class Relay::Impl {
 public:
  Impl(uv_loop_t* loop, RelayConfig config, std::unique_ptr<QueueStore> store)
      : loop_(loop), config_(std::move(config)), store_(std::move(store)) {}

  ~Impl() {
    if (timer_started_) {
      uv_close(reinterpret_cast<uv_handle_t*>(timer_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
      uv_close(reinterpret_cast<uv_handle_t*>(check_),
               [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
    } else {
      delete timer_;
      delete check_;
    }
  }

  Result<void> Init() {
    auto counts = store_->CountsByRecipient();
    if (!counts) return std::unexpected(counts.error());
    queue_counts_ = std::move(*counts);
    for (const auto& [amid, n] : queue_counts_) queued_total_ += n;

    net::ServerOptions options;
    auto hp = SplitListen(config_.listen);
    if (!hp) return std::unexpected(hp.error());
    options.host = hp->first;
    options.port = hp->second;
    options.max_message_bytes = config_.max_frame_bytes;
    options.max_output_bytes = config_.max_output_bytes;
    options.max_connections = config_.max_connections;
    options.ping_interval_ms = std::uint64_t{config_.ping_interval_seconds} * 1000;
    if (!config_.tls_cert.empty()) {
      auto tls = net::TlsContext::CreateServer(config_.tls_cert, config_.tls_key);
      if (!tls) return std::unexpected(tls.error());
      options.tls = *tls;
    }
    net::ServerHandlers h;
    h.on_accept = [this](const net::PeerAddress& peer) { return OnAccept(peer); };
    h.on_open = [this](net::ConnId id, const net::HttpRequest&, const net::PeerAddress& peer) {
      OnOpen(id, peer);
    };
    h.on_text = [this](net::ConnId id, std::string_view text) { OnText(id, text); };
    h.on_binary = [this](net::ConnId id, ByteView) {
      Invalid(id, ErrorCode::kInvalidMessage, "binary frames are not supported; send JSON text");
    };
    h.on_close = [this](net::ConnId id, std::uint16_t, std::string_view) { OnClose(id); };
    h.on_error = [this](net::ConnId id, const Error& error) { OnTransportError(id, error); };
    h.on_backpressure = [this](net::ConnId id, std::size_t queued) { OnBackpressure(id, queued); };
    h.on_http = [this](const net::HttpRequest& request) { return OnHttp(request); };
    h.on_log = [](std::string_view message) { Log(LogLevel::kWarn, message); };
    server_ = std::make_unique<net::WsServer>(loop_, options, std::move(h));

    timer_ = new uv_timer_t;
    check_ = new uv_check_t;
    uv_timer_init(loop_, timer_);
    uv_check_init(loop_, check_);
    timer_->data = this;
    check_->data = this;
    timer_started_ = true;
    uv_timer_start(
        timer_, [](uv_timer_t* t) { static_cast<Impl*>(t->data)->OnTick(); }, 1000, 1000);
    uv_check_start(check_, [](uv_check_t* c) { static_cast<Impl*>(c->data)->CommitQueued(); });
    return {};
  }

  Result<void> Listen() {
    if (auto r = server_->Listen(); !r) return r;
    Log(LogLevel::kInfo, fmt::format("listening on {}{} (store {}, {} queued)",
                                     config_.tls_cert.empty() ? "ws://" : "wss://", config_.listen,
                                     store_path_, queued_total_));
    return {};
  }

  std::uint16_t port() const noexcept { return server_ ? server_->port() : 0; }

  void Stop() {
    if (stopping_) return;
    stopping_ = true;
    Log(LogLevel::kInfo, "stopping: closing connections");
    CommitQueued();
    // Commit what is in flight before the connections go, so a restart redelivers it.
    for (auto& [id, conn] : conns_) PersistInflight(conn);
    server_->Stop();
    uv_timer_stop(timer_);
    uv_check_stop(check_);
    uv_close(reinterpret_cast<uv_handle_t*>(timer_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    uv_close(reinterpret_cast<uv_handle_t*>(check_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
    timer_started_ = false;
    timer_ = nullptr;
    check_ = nullptr;
  }

  void Reload(const RelayConfig& next) {
    const RelayConfig& cur = config_;
    for (auto [name, changed] :
         {std::pair{"listen", next.listen != cur.listen},
          {"store", next.store != cur.store},
          {"fsync", next.fsync != cur.fsync},
          {"tls_cert", next.tls_cert != cur.tls_cert},
          {"tls_key", next.tls_key != cur.tls_key},
          {"max_frame_bytes", next.max_frame_bytes != cur.max_frame_bytes},
          {"max_output_bytes", next.max_output_bytes != cur.max_output_bytes},
          {"ping_interval_seconds", next.ping_interval_seconds != cur.ping_interval_seconds},
          {"max_connections", next.max_connections != cur.max_connections}}) {
      if (changed) Log(LogLevel::kWarn, fmt::format("reload: '{}' changes only on restart", name));
    }
    RelayConfig applied = next;
    applied.listen = cur.listen;
    applied.store = cur.store;
    applied.fsync = cur.fsync;
    applied.tls_cert = cur.tls_cert;
    applied.tls_key = cur.tls_key;
    applied.max_frame_bytes = cur.max_frame_bytes;
    applied.max_output_bytes = cur.max_output_bytes;
    applied.ping_interval_seconds = cur.ping_interval_seconds;
    applied.max_connections = cur.max_connections;
    config_ = applied;
    limits_.clear();  // new rates apply to fresh buckets
    SetLogLevel(ParseLogLevel(config_.log_level));
    Log(LogLevel::kInfo, "configuration reloaded");
  }

  std::string store_path_;

 private:
  // ---- connection lifecycle ----

  bool OnAccept(const net::PeerAddress& peer) {
    if (stopping_) return false;
    auto& n = per_ip_[peer.ip];
    if (n >= config_.max_connections_per_ip) {
      ++metrics_.refused_per_ip;
      return false;
    }
    return true;
  }

  void OnOpen(net::ConnId id, const net::PeerAddress& peer) {
    Conn conn;
    conn.id = id;
    conn.ip = peer.ip;
    conn.auth_deadline = WallNow() + std::int64_t{config_.auth_timeout_seconds} * kNanosPerSecond;
    ++per_ip_[peer.ip];
    conns_.emplace(id, std::move(conn));
  }

  void OnClose(net::ConnId id) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    Conn& conn = it->second;
    PersistInflight(conn);
    if (!conn.amid.empty()) {
      auto route = routes_.find(conn.amid);
      if (route != routes_.end() && route->second == id) {
        routes_.erase(route);
        presence_[conn.amid] = Presence{PresenceStatus::kOffline, WallNow()};
        Log(LogLevel::kDebug, fmt::format("{} disconnected", conn.amid));
      }
    }
    auto ip = per_ip_.find(conn.ip);
    if (ip != per_ip_.end() && --ip->second == 0) per_ip_.erase(ip);
    conns_.erase(it);
  }

  // Live, unacked messages of a closing connection go to the store so they are delivered again.
  void PersistInflight(Conn& conn) {
    std::vector<QueuedMessage> batch;
    for (auto& [mid, inflight] : conn.inflight) {
      if (!inflight.in_store) batch.push_back(std::move(inflight.message));
    }
    conn.inflight.clear();
    if (batch.empty()) return;
    if (auto r = store_->Insert(batch); !r) {
      Log(LogLevel::kError, "store: cannot persist in-flight messages: " + r.error().message);
      return;
    }
    for (const auto& m : batch) {
      ++queue_counts_[m.recipient];
      ++queued_total_;
    }
  }

  void OnTransportError(net::ConnId id, const Error& error) {
    if (error.code == Code::kLimitExceeded) {
      ++metrics_.dropped["too_large"];
      std::string out;
      AppendError(out, ErrorCode::kMessageTooLarge,
                  fmt::format("frame exceeds {} bytes", config_.max_frame_bytes));
      server_->SendText(id, out);
    } else {
      ++metrics_.dropped["protocol_error"];
    }
  }

  void OnBackpressure(net::ConnId id, std::size_t queued) {
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second.closing) return;
    ++metrics_.slow_disconnects;
    Log(LogLevel::kWarn,
        fmt::format("disconnecting slow reader {} ({} bytes queued)",
                    it->second.amid.empty() ? "(unauthenticated)" : it->second.amid, queued));
    CloseConn(it->second, 1008, "reader too slow");
  }

  void CloseConn(Conn& conn, std::uint16_t code, std::string_view reason) {
    if (conn.closing) return;
    conn.closing = true;
    server_->Close(conn.id, code, reason);
  }

  void SendError(net::ConnId id, ErrorCode code, std::string_view message,
                 std::optional<std::uint32_t> retry = std::nullopt,
                 std::optional<std::string_view> client_id = std::nullopt) {
    out_.clear();
    AppendError(out_, code, message, retry, client_id);
    server_->SendText(id, out_);
  }

  void Invalid(net::ConnId id, ErrorCode code, std::string_view message) {
    auto it = conns_.find(id);
    if (it == conns_.end()) return;
    ++metrics_.invalid_frames;
    SendError(id, code, message);
    if (++it->second.invalid_frames >= config_.max_invalid_frames) {
      CloseConn(it->second, 1008, "too many invalid frames");
    }
  }

  // ---- frames ----

  void OnText(net::ConnId id, std::string_view text) {
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second.closing) return;
    Conn& conn = it->second;
    ++metrics_.frames_in;
    auto frame = ParseClientFrame(text);
    if (conn.amid.empty()) {
      if (!frame || !std::holds_alternative<ConnectFrame>(*frame)) {
        ++metrics_.auth_failures;
        SendError(id, ErrorCode::kUnauthorized,
                  frame ? "the first frame must be connect"
                        : "the first frame must be connect: " + frame.error().ToString());
        CloseConn(conn, 1008, "unauthorized");
        return;
      }
      HandleConnect(conn, std::get<ConnectFrame>(*frame));
      return;
    }
    if (!frame) {
      Invalid(id, ErrorCode::kInvalidMessage, frame.error().ToString());
      return;
    }
    std::visit([&](auto& f) { Handle(conn, f); }, *frame);
  }

  void HandleConnect(Conn& conn, const ConnectFrame& frame) {
    const UnixNanos now = WallNow();
    auto verified = VerifyConnect(frame, now);
    if (!verified) {
      ++metrics_.auth_failures;
      Log(LogLevel::kInfo,
          fmt::format("CONNECT from {} refused: {}", conn.ip, verified.error().message));
      SendError(conn.id, verified.error().code, verified.error().message);
      CloseConn(conn, 1008, "authentication failed");
      return;
    }
    const std::string replay_key = frame.amid + "/" + frame.signature;
    if (!replay_cache_.emplace(replay_key, now + kConnectMaxPast + kConnectMaxFuture).second) {
      ++metrics_.auth_failures;
      SendError(conn.id, ErrorCode::kInvalidSignature, "CONNECT replayed (signature already used)");
      CloseConn(conn, 1008, "authentication failed");
      return;
    }
    const std::string amid = verified->amid.str();
    if (auto old = routes_.find(amid); old != routes_.end() && old->second != conn.id) {
      auto old_conn = conns_.find(old->second);
      if (old_conn != conns_.end()) {
        SendError(old_conn->first, ErrorCode::kReplaced,
                  "another connection authenticated as this agent");
        PersistInflight(old_conn->second);
        old_conn->second.amid.clear();  // its teardown must not touch the new route
        CloseConn(old_conn->second, 1000, "replaced");
      }
    }
    conn.amid = amid;
    routes_[amid] = conn.id;
    presence_[amid] = Presence{PresenceStatus::kOnline, now};
    ++metrics_.connects;
    CommitQueued();  // anything queued for this agent this turn becomes visible to PushPending
    const std::uint32_t pending = QueueCount(amid);
    out_.clear();
    AppendConnected(out_, NewMessageId(rng_), pending);
    server_->SendText(conn.id, out_);
    Log(LogLevel::kDebug, fmt::format("{} connected from {} ({} pending)", amid, conn.ip, pending));
    PushPending(conn, 1000, false);
  }

  std::uint32_t QueueCount(const std::string& amid) const {
    auto it = queue_counts_.find(amid);
    return it == queue_counts_.end() ? 0 : it->second;
  }

  // Sends queued messages not yet in flight on `conn`, as receive frames or one pending_messages.
  void PushPending(Conn& conn, std::uint32_t limit, bool as_pending_frame) {
    if (!as_pending_frame) conn.more_pending = false;
    if (QueueCount(conn.amid) == 0) {
      if (as_pending_frame) {
        out_.clear();
        AppendPendingMessages(out_, {}, 0);
        server_->SendText(conn.id, out_);
      }
      return;
    }
    auto loaded = store_->LoadFor(conn.amid, WallNow(), limit + conn.inflight.size());
    if (!loaded) {
      Log(LogLevel::kError, "store: cannot load queued messages: " + loaded.error().message);
      SendError(conn.id, ErrorCode::kInternalError, "cannot read the message store");
      return;
    }
    std::vector<PendingEntry> entries;
    std::vector<std::string> timestamps;
    timestamps.reserve(loaded->size());
    std::uint32_t sent = 0;
    for (auto& m : *loaded) {
      if (sent >= limit) break;
      if (conn.inflight.contains(m.message_id)) continue;
      timestamps.push_back(FormatRfc3339Z(m.created_at));
      auto type = ParseMessageType(m.message_type).value_or(MessageType::kMessage);
      if (as_pending_frame) {
        entries.push_back(
            {m.message_id, m.sender, m.payload_token, m.message_type, timestamps.back()});
      } else {
        // Flow control: keep the connection's output under half its bound; the rest follows as
        // the reader acks (Settle) or on the next tick.
        if (server_->QueuedBytes(conn.id) > config_.max_output_bytes / 2) {
          conn.more_pending = true;
          break;
        }
        out_.clear();
        AppendReceive(out_, m.sender, m.payload_token, type, timestamps.back(), m.message_id, {});
        if (server_->SendText(conn.id, out_) != net::SendStatus::kQueued) break;
        ++metrics_.delivered_from_store;
      }
      ++sent;
    }
    if (as_pending_frame) {
      out_.clear();
      const std::uint32_t total = QueueCount(conn.amid);
      AppendPendingMessages(out_, entries,
                            total > conn.inflight.size() + entries.size()
                                ? total - conn.inflight.size() - entries.size()
                                : 0);
      if (server_->SendText(conn.id, out_) == net::SendStatus::kQueued) {
        metrics_.delivered_from_store += entries.size();
      } else {
        return;
      }
    }
    std::uint32_t marked = 0;
    for (auto& m : *loaded) {
      if (marked >= sent) break;
      if (conn.inflight.contains(m.message_id)) continue;
      std::string mid = m.message_id;
      conn.inflight.emplace(std::move(mid), Inflight{std::move(m), true});
      ++marked;
    }
  }

  TokenBucket& Bucket(const std::string& amid, bool knock) {
    const UnixNanos now = WallNow();
    auto it = limits_.find(amid);
    if (it == limits_.end()) {
      it = limits_
               .emplace(amid, SenderLimits{TokenBucket::PerMinute(config_.messages_per_minute, now),
                                           TokenBucket::PerMinute(config_.knocks_per_minute, now)})
               .first;
    }
    return knock ? it->second.knocks : it->second.messages;
  }

  void Refuse(Conn& conn, const SendFrame& frame, ErrorCode code, std::string_view message,
              std::optional<std::uint32_t> retry = std::nullopt) {
    ++metrics_.dropped[std::string(ErrorCodeName(code))];
    if (frame.id) {
      out_.clear();
      AppendSendResult(out_, *frame.id, {}, SendStatus::kRefused, code, retry);
      server_->SendText(conn.id, out_);
    }
    SendError(conn.id, code, message, retry,
              frame.id ? std::optional<std::string_view>(*frame.id) : std::nullopt);
  }

  void Handle(Conn& conn, const SendFrame& frame) {
    const UnixNanos now = WallNow();
    const bool knock = frame.message_type == MessageType::kKnock;
    TokenBucket& bucket = Bucket(conn.amid, knock);
    if (!bucket.TryTake(now)) {
      ++metrics_.rate_limited;
      const auto retry = static_cast<std::uint32_t>(
          std::max<UnixNanos>(1, (bucket.RetryAfter(now) + kNanosPerSecond - 1) / kNanosPerSecond));
      Refuse(conn, frame, ErrorCode::kRateLimited,
             knock ? "KNOCK rate limit exceeded" : "message rate limit exceeded", retry);
      return;
    }
    if (!Amid::Parse(frame.to)) {
      Refuse(conn, frame, ErrorCode::kInvalidMessage, "'to' is not a valid AMID");
      return;
    }
    QueuedMessage m;
    m.message_id = NewMessageId(rng_);
    m.recipient = std::string(frame.to);
    m.sender = conn.amid;
    m.message_type = std::string(MessageTypeName(frame.message_type));
    m.payload_token = std::string(frame.payload_token);
    m.client_id = frame.id.value_or("");
    m.created_at = now;
    m.expires_at = now + std::int64_t{config_.store_ttl_seconds} * kNanosPerSecond;

    if (auto route = routes_.find(m.recipient); route != routes_.end()) {
      auto target = conns_.find(route->second);
      if (target != conns_.end() && !target->second.closing) {
        out_.clear();
        AppendReceive(out_, m.sender, m.payload_token, frame.message_type, FormatRfc3339Z(now),
                      m.message_id, frame.ice_candidates);
        if (server_->SendText(target->first, out_) == net::SendStatus::kQueued) {
          ++metrics_.delivered_live;
          if (frame.id) {
            out_.clear();
            AppendSendResult(out_, *frame.id, m.message_id, SendStatus::kDelivered);
            server_->SendText(conn.id, out_);
          }
          std::string mid = m.message_id;
          target->second.inflight.emplace(std::move(mid), Inflight{std::move(m), false});
          return;
        }
        // Backpressure: the reader is being disconnected; fall through to the durable queue.
      }
    }
    const std::uint32_t queued = QueueCount(m.recipient) + PendingFor(m.recipient);
    if (queued >= config_.max_queue_per_recipient) {
      Refuse(conn, frame, ErrorCode::kQueueFull,
             fmt::format("recipient is offline and its queue is full ({} messages)", queued));
      return;
    }
    ++pending_per_recipient_[m.recipient];
    pending_.push_back(PendingQueued{std::move(m), conn.id});
  }

  std::uint32_t PendingFor(const std::string& amid) const {
    auto it = pending_per_recipient_.find(amid);
    return it == pending_per_recipient_.end() ? 0 : it->second;
  }

  // Group commit: every send queued during this loop turn is committed in one transaction, then
  // its sender learns "queued" (and an agent that came online meanwhile gets it pushed).
  void CommitQueued() {
    if (pending_.empty()) return;
    std::vector<QueuedMessage> batch;
    batch.reserve(pending_.size());
    for (const auto& p : pending_) batch.push_back(p.message);
    auto result = store_->Insert(batch);
    std::vector<PendingQueued> done = std::move(pending_);
    pending_.clear();
    pending_per_recipient_.clear();
    for (auto& p : done) {
      auto sender = conns_.find(p.sender_conn);
      if (!result) {
        ++metrics_.dropped["store_error"];
        if (sender != conns_.end()) {
          if (!p.message.client_id.empty()) {
            out_.clear();
            AppendSendResult(out_, p.message.client_id, {}, SendStatus::kRefused,
                             ErrorCode::kInternalError);
            server_->SendText(sender->first, out_);
          }
          SendError(sender->first, ErrorCode::kInternalError, "message store unavailable");
        }
        continue;
      }
      ++queue_counts_[p.message.recipient];
      ++queued_total_;
      ++metrics_.queued;
      if (sender != conns_.end() && !p.message.client_id.empty()) {
        out_.clear();
        AppendSendResult(out_, p.message.client_id, p.message.message_id, SendStatus::kQueued);
        server_->SendText(sender->first, out_);
      }
    }
    if (!result) {
      Log(LogLevel::kError, "store: commit failed: " + result.error().message);
      return;
    }
    // A recipient that connected after its messages were queued this turn gets them now.
    std::unordered_set<std::string> recipients;
    for (const auto& p : done) recipients.insert(p.message.recipient);
    for (const auto& r : recipients) {
      auto route = routes_.find(r);
      if (route == routes_.end()) continue;
      auto c = conns_.find(route->second);
      if (c != conns_.end() && !c->second.closing) PushPending(c->second, 1000, false);
    }
  }

  void Handle(Conn& conn, const AckFrame& frame) { Settle(conn, frame.message_ids, true); }

  void Handle(Conn& conn, const NackFrame& frame) {
    ++metrics_.nacked;
    Log(LogLevel::kDebug,
        fmt::format("{} nacked {}: {}", conn.amid, frame.message_id, frame.reason));
    Settle(conn, {frame.message_id}, false);
  }

  void Settle(Conn& conn, const std::vector<std::string>& ids, bool acked) {
    std::vector<std::string> from_store;
    std::vector<QueuedMessage> settled;
    for (const auto& id : ids) {
      auto it = conn.inflight.find(id);
      if (it == conn.inflight.end()) {
        from_store.push_back(id);  // e.g. pushed on an earlier connection
        continue;
      }
      if (it->second.in_store) {
        from_store.push_back(id);
      } else {
        settled.push_back(std::move(it->second.message));
      }
      conn.inflight.erase(it);
    }
    if (!from_store.empty()) {
      auto taken = store_->Take(conn.amid, from_store);
      if (!taken) {
        Log(LogLevel::kError, "store: cannot delete acked messages: " + taken.error().message);
      } else {
        for (auto& m : *taken) {
          auto count = queue_counts_.find(m.recipient);
          if (count != queue_counts_.end() && count->second > 0 && --count->second == 0) {
            queue_counts_.erase(count);
          }
          if (queued_total_ > 0) --queued_total_;
          settled.push_back(std::move(m));
        }
      }
    }
    metrics_.acked += acked ? settled.size() : 0;
    if (conn.more_pending && !conn.closing) PushPending(conn, 1000, false);
    for (const auto& m : settled) {
      if (m.client_id.empty()) continue;
      auto route = routes_.find(m.sender);
      if (route == routes_.end()) continue;
      out_.clear();
      AppendReceipt(out_, m.client_id, m.message_id, acked);
      server_->SendText(route->second, out_);
    }
  }

  void Handle(Conn& conn, const GetPendingFrame& frame) { PushPending(conn, frame.limit, true); }

  void Handle(Conn& conn, const ConnectFrame&) {
    Invalid(conn.id, ErrorCode::kInvalidMessage, "already connected");
  }

  void Handle(Conn& conn, const PresenceFrame& frame) {
    presence_[conn.amid] = Presence{frame.status, WallNow()};
  }

  void Handle(Conn& conn, const PresenceQueryFrame& frame) {
    out_.clear();
    auto it = presence_.find(frame.amid);
    if (it == presence_.end()) {
      AppendPresenceResponse(out_, frame.amid, PresenceStatus::kOffline, std::nullopt);
    } else {
      const std::string seen = FormatRfc3339Z(it->second.last_seen);
      AppendPresenceResponse(out_, frame.amid, it->second.status, seen);
    }
    server_->SendText(conn.id, out_);
  }

  std::optional<net::ConnId> LiveRoute(const std::string& amid) {
    auto route = routes_.find(amid);
    if (route == routes_.end()) return std::nullopt;
    auto c = conns_.find(route->second);
    if (c == conns_.end() || c->second.closing) return std::nullopt;
    return route->second;
  }

  void Handle(Conn& conn, const IceFrame& frame) {
    auto target = LiveRoute(frame.to);
    if (!target) {
      SendError(conn.id, ErrorCode::kRecipientOffline, "ICE peer is not connected");
      return;
    }
    out_.clear();
    AppendIce(out_, frame.is_answer, conn.amid, frame.sdp_token, frame.candidates);
    server_->SendText(*target, out_);
  }

  void Handle(Conn& conn, const P2pEstablishedFrame& frame) {
    auto target = LiveRoute(frame.peer);
    if (!target) {
      SendError(conn.id, ErrorCode::kRecipientOffline, "peer is not connected");
      return;
    }
    out_.clear();
    AppendP2pEstablished(out_, conn.amid);
    server_->SendText(*target, out_);
  }

  void Handle(Conn& conn, const PingFrame& frame) {
    out_.clear();
    AppendPong(out_, frame.timestamp_token);
    server_->SendText(conn.id, out_);
  }

  void Handle(Conn& conn, const DisconnectFrame& frame) {
    Log(LogLevel::kDebug, fmt::format("{} disconnects: {}", conn.amid, frame.reason));
    CloseConn(conn, 1000, "disconnect");
  }

  // ---- periodic work ----

  void OnTick() {
    const UnixNanos now = WallNow();
    for (auto& [id, conn] : conns_) {
      if (conn.amid.empty() && !conn.closing && now > conn.auth_deadline) {
        ++metrics_.auth_failures;
        SendError(id, ErrorCode::kUnauthorized, "no connect frame in time");
        CloseConn(conn, 1008, "authentication timeout");
      }
    }
    for (auto& [id, conn] : conns_) {
      if (conn.more_pending && !conn.closing) PushPending(conn, 1000, false);
    }
    for (auto it = replay_cache_.begin(); it != replay_cache_.end();) {
      it = it->second < now ? replay_cache_.erase(it) : std::next(it);
    }
    if (now - last_expiry_ >= std::int64_t{config_.expiry_interval_ms} * kNanosPerMilli) {
      last_expiry_ = now;
      Expire(now);
    }
  }

  void Expire(UnixNanos now) {
    auto expired = store_->DeleteExpired(now);
    if (!expired) {
      Log(LogLevel::kError, "store: expiry failed: " + expired.error().message);
      return;
    }
    std::uint64_t total = 0;
    for (const auto& [amid, n] : *expired) {
      total += n;
      auto it = queue_counts_.find(amid);
      if (it != queue_counts_.end()) {
        it->second = it->second > n ? it->second - n : 0;
        if (it->second == 0) queue_counts_.erase(it);
      }
    }
    queued_total_ = queued_total_ > total ? queued_total_ - total : 0;
    metrics_.expired += total;
    if (total > 0) Log(LogLevel::kInfo, fmt::format("expired {} queued messages", total));
  }

  // ---- HTTP ----

  net::HttpResponse OnHttp(const net::HttpRequest& request) {
    if (request.method != "GET" && request.method != "HEAD") {
      return net::HttpResponse::Json(405, R"({"error":"method not allowed"})");
    }
    if (request.path == "/health" || request.path == "/v1/health") {
      return net::HttpResponse::Json(
          200, fmt::format(R"({{"status":"ok","protocol":"agentmesh/1","connections":{},)"
                           R"("agents_online":{},"queued":{}}})",
                           conns_.size(), routes_.size(), queued_total_));
    }
    if (request.path == "/metrics") {
      net::HttpResponse r = net::HttpResponse::Text(200, Metrics());
      r.content_type = "text/plain; version=0.0.4; charset=utf-8";
      return r;
    }
    return net::HttpResponse::Json(
        404, R"({"error":"not found: use /health, /metrics, or a WebSocket upgrade"})");
  }

  std::string Metrics() {
    const net::TransportStats& s = server_->stats();
    std::string out;
    auto metric = [&](const char* name, const char* type, const char* help, auto value) {
      out +=
          fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, value);
    };
    metric("amesh_relay_connections", "gauge", "Open connections.", conns_.size());
    metric("amesh_relay_agents_online", "gauge", "Authenticated agents.", routes_.size());
    metric("amesh_relay_queued_messages", "gauge", "Messages in the store.", queued_total_);
    metric("amesh_relay_connections_accepted_total", "counter", "TCP connections accepted.",
           s.connections_accepted);
    metric("amesh_relay_connections_refused_total", "counter", "Connections refused.",
           s.connections_refused + metrics_.refused_per_ip);
    metric("amesh_relay_frames_in_total", "counter", "Frames received.", metrics_.frames_in);
    metric("amesh_relay_frames_out_total", "counter", "Frames sent.", s.frames_out);
    metric("amesh_relay_bytes_in_total", "counter", "Bytes received.", s.bytes_in);
    metric("amesh_relay_bytes_out_total", "counter", "Bytes sent.", s.bytes_out);
    metric("amesh_relay_connects_total", "counter", "Successful CONNECTs.", metrics_.connects);
    metric("amesh_relay_auth_failures_total", "counter", "Failed or missing CONNECTs.",
           metrics_.auth_failures);
    metric("amesh_relay_rate_limited_total", "counter", "Sends refused by rate limits.",
           metrics_.rate_limited);
    metric("amesh_relay_delivered_live_total", "counter", "Messages written to a live recipient.",
           metrics_.delivered_live);
    metric("amesh_relay_delivered_from_store_total", "counter", "Queued messages pushed.",
           metrics_.delivered_from_store);
    metric("amesh_relay_queued_total", "counter", "Messages committed to the store.",
           metrics_.queued);
    metric("amesh_relay_acked_total", "counter", "Messages acknowledged by recipients.",
           metrics_.acked);
    metric("amesh_relay_nacked_total", "counter", "Messages refused by recipients.",
           metrics_.nacked);
    metric("amesh_relay_expired_total", "counter", "Queued messages expired.", metrics_.expired);
    metric("amesh_relay_invalid_frames_total", "counter", "Invalid frames.",
           metrics_.invalid_frames);
    metric("amesh_relay_slow_disconnects_total", "counter", "Readers disconnected as too slow.",
           metrics_.slow_disconnects);
    out +=
        "# HELP amesh_relay_dropped_total Sends not accepted, by reason.\n"
        "# TYPE amesh_relay_dropped_total counter\n";
    for (const auto& [reason, n] : metrics_.dropped) {
      out += fmt::format("amesh_relay_dropped_total{{reason=\"{}\"}} {}\n", reason, n);
    }
    return out;
  }

  struct Counters {
    std::uint64_t frames_in = 0, connects = 0, auth_failures = 0, rate_limited = 0;
    std::uint64_t delivered_live = 0, delivered_from_store = 0, queued = 0, acked = 0;
    std::uint64_t nacked = 0, expired = 0, invalid_frames = 0, slow_disconnects = 0;
    std::uint64_t refused_per_ip = 0;
    std::map<std::string, std::uint64_t> dropped;
  };

  uv_loop_t* loop_;
  RelayConfig config_;
  std::unique_ptr<QueueStore> store_;
  std::unique_ptr<net::WsServer> server_;
  uv_timer_t* timer_ = nullptr;
  uv_check_t* check_ = nullptr;
  bool timer_started_ = false;
  bool stopping_ = false;
  SystemRng rng_;
  std::string out_;  // reused output buffer

  std::unordered_map<net::ConnId, Conn> conns_;
  std::unordered_map<std::string, net::ConnId> routes_;
  std::unordered_map<std::string, Presence> presence_;
  std::unordered_map<std::string, std::uint32_t> per_ip_;
  std::unordered_map<std::string, SenderLimits> limits_;
  std::unordered_map<std::string, UnixNanos> replay_cache_;
  std::unordered_map<std::string, std::uint32_t> queue_counts_;
  std::unordered_map<std::string, std::uint32_t> pending_per_recipient_;
  std::vector<PendingQueued> pending_;
  std::uint64_t queued_total_ = 0;
  UnixNanos last_expiry_ = 0;
  Counters metrics_;
};

Relay::Relay(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Relay::~Relay() = default;

Result<std::unique_ptr<Relay>> Relay::Create(uv_loop_t* loop, const RelayConfig& config) {
  if (auto r = ValidateConfig(config); !r) return std::unexpected(r.error());
  std::string path = config.store;
  if (path.empty()) {
    const char* state_dir = std::getenv("STATE_DIRECTORY");
    path = (state_dir != nullptr && *state_dir != '\0')
               ? (std::filesystem::path(state_dir) / "relay.db").string()
               : std::string("relay.db");
  }
  auto store = QueueStore::Open(
      path, config.fsync == "full" ? storage::Synchronous::kFull : storage::Synchronous::kNormal);
  if (!store) {
    Error e = store.error();
    e.message = fmt::format("store {}: {}", path, e.message);
    return std::unexpected(e);
  }
  auto impl = std::make_unique<Impl>(loop, config, std::move(*store));
  impl->store_path_ = path;
  if (auto r = impl->Init(); !r) return std::unexpected(r.error());
  return std::unique_ptr<Relay>(new Relay(std::move(impl)));
}

Result<void> Relay::Listen() { return impl_->Listen(); }
std::uint16_t Relay::port() const noexcept { return impl_->port(); }
void Relay::Stop() { impl_->Stop(); }
void Relay::Reload(const RelayConfig& config) { impl_->Reload(config); }

}  // namespace agentmesh::relay
