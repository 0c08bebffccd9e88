#include "relay.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <span>
#include <unordered_map>
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

// A message id: a random UUID v4, kept as 128 bits on the hot path and as its 36-character
// lower-case text on the wire and in the store.
struct MessageKey {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  friend bool operator==(const MessageKey&, const MessageKey&) = default;
};

struct MessageKeyHash {
  std::size_t operator()(const MessageKey& k) const noexcept {
    return static_cast<std::size_t>(k.hi ^ (k.lo * 0x9E3779B97F4A7C15ULL));
  }
};

using MessageIdText = std::array<char, 36>;

MessageIdText FormatMessageKey(const MessageKey& key) {
  static constexpr char kHex[] = "0123456789abcdef";
  MessageIdText out{};
  char* p = out.data();
  for (const std::uint64_t word : {key.hi, key.lo}) {
    for (int shift = 60; shift >= 0; shift -= 4) *p++ = kHex[(word >> shift) & 0xF];
  }
  // 32 hex digits → 8-4-4-4-12 with dashes, moved from the back.
  std::memmove(out.data() + 24, out.data() + 20, 12);
  out[23] = '-';
  std::memmove(out.data() + 19, out.data() + 16, 4);
  out[18] = '-';
  std::memmove(out.data() + 14, out.data() + 12, 4);
  out[13] = '-';
  std::memmove(out.data() + 9, out.data() + 8, 4);
  out[8] = '-';
  return out;
}

// Only the exact form FormatMessageKey writes; anything else is not one of our live ids.
std::optional<MessageKey> ParseMessageKey(std::string_view text) {
  static constexpr auto kValue = [] {
    std::array<std::uint8_t, 256> t{};
    t.fill(0xFF);
    for (int c = '0'; c <= '9'; ++c)
      t[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(c - '0');
    for (int c = 'a'; c <= 'f'; ++c)
      t[static_cast<std::size_t>(c)] = static_cast<std::uint8_t>(c - 'a' + 10);
    return t;
  }();
  if (text.size() != 36 || text[8] != '-' || text[13] != '-' || text[18] != '-' ||
      text[23] != '-') {
    return std::nullopt;
  }
  MessageKey key;
  std::uint8_t bad = 0;
  int digits = 0;
  for (std::size_t i = 0; i < 36; ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) continue;
    const std::uint8_t v = kValue[static_cast<unsigned char>(text[i])];
    bad |= v;
    std::uint64_t& word = digits++ < 16 ? key.hi : key.lo;
    word = (word << 4) | (v & 0xF);
  }
  if (bad & 0xF0) return std::nullopt;
  return key;
}

std::string_view View(const MessageIdText& text) { return {text.data(), text.size()}; }

// UUID v4 source: blocks of ChaCha20 keystream, each under a fresh 32-byte key from the system
// RNG, so getrandom(2) runs once per 256 ids instead of once per message.
class MessageIds {
 public:
  explicit MessageIds(Rng& rng) : rng_(rng) {}
  MessageKey Next() {
    if (used_ == sizeof(pool_)) {
      DeterministicRng(rng_.Array<32>()).Fill(MutableByteView(pool_, sizeof(pool_)));
      used_ = 0;
    }
    MessageKey key;
    std::memcpy(&key.hi, pool_ + used_, 8);
    std::memcpy(&key.lo, pool_ + used_ + 8, 8);
    used_ += 16;
    key.hi = (key.hi & ~0xF000ULL) | 0x4000ULL;              // version 4
    key.lo = (key.lo & ~(0xC0ULL << 56)) | (0x80ULL << 56);  // RFC 4122 variant
    return key;
  }

 private:
  Rng& rng_;
  std::uint8_t pool_[4096];
  std::size_t used_ = sizeof(pool_);
};

// True when JSON quotes `s` as-is: printable ASCII without '"' and '\\'.
bool PlainJsonString(std::string_view s) {
  for (const char c : s) {
    if (c < 0x20 || c > 0x7E || c == '"' || c == '\\') return false;
  }
  return true;
}

// relay_frames' AppendReceive, byte for byte, for the routing hot path: the strings the relay
// fills in (an AMID, its own timestamp and message id) never need escaping, so they are quoted
// as-is instead of going through the per-character escaper. Anything else takes the general path.
// Precondition: `from`, `timestamp` and `message_id` need no JSON escaping (PlainJsonString) —
// true by construction on the live path: an AMID validated at CONNECT (base58), the relay's own
// timestamp and message id.
void AppendReceiveFramePlain(std::string& out, std::string_view from,
                             std::string_view payload_token, MessageType type,
                             std::string_view timestamp, std::string_view message_id,
                             std::string_view ice_candidates) {
  const std::string_view type_name = MessageTypeName(type);
  out.reserve(out.size() + 120 + from.size() + payload_token.size() + timestamp.size() +
              message_id.size() + ice_candidates.size());
  out += R"({"type":"receive","from":")";
  out += from;
  out += R"(","encrypted_payload":)";
  out += payload_token;
  out += R"(,"message_type":")";
  out += type_name;
  out += R"(","timestamp":")";
  out += timestamp;
  out += R"(","message_id":")";
  out += message_id;
  out += '"';
  if (!ice_candidates.empty()) {
    out += R"(,"ice_candidates":)";
    out += ice_candidates;
  }
  out += '}';
}

// The same for strings of unknown origin (rows read back from the store).
void AppendReceiveFrame(std::string& out, std::string_view from, std::string_view payload_token,
                        MessageType type, std::string_view timestamp, std::string_view message_id,
                        std::string_view ice_candidates) {
  if (!PlainJsonString(from) || !PlainJsonString(timestamp) || !PlainJsonString(message_id)) {
    AppendReceive(out, from, payload_token, type, timestamp, message_id, ice_candidates);
    return;
  }
  AppendReceiveFramePlain(out, from, payload_token, type, timestamp, message_id, ice_candidates);
}

// Heterogeneous lookup, so AMIDs seen as string_views in frames need no std::string.
struct StringHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const noexcept {
    return std::hash<std::string_view>{}(s);
  }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

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

struct SenderLimits {
  TokenBucket messages;
  TokenBucket knocks;
};

// A message written to a connection and not yet acked. Entries pushed from the store carry only
// the id (the store has the rest); live ones keep what is needed to store them if the connection
// ends first, and to send the sender its receipt.
struct Inflight {
  bool in_store = false;
  std::uint64_t live_order = 0;  // delivery order of live messages on their connection
  MessageType type = MessageType::kMessage;
  std::uint8_t sender_size = 0;
  UnixNanos created_at = 0;
  UnixNanos expires_at = 0;
  std::string sender_and_payload;  // sender AMID then the raw payload token: one allocation
  std::string client_id;

  std::string_view sender() const { return {sender_and_payload.data(), sender_size}; }
  std::string_view payload() const {
    return std::string_view(sender_and_payload).substr(sender_size);
  }
};

struct Conn {
  net::ConnId id = 0;
  std::string ip;
  std::string amid;  // empty until CONNECT succeeded
  UnixNanos auth_deadline = 0;
  std::uint32_t invalid_frames = 0;
  bool closing = false;
  bool more_pending = false;    // queued messages held back by flow control
  std::int64_t pushed_seq = 0;  // store seq of the last queued message written to this connection
  std::uint32_t store_inflight = 0;  // entries of `inflight` pushed from the store
  // Messages written to this connection and not yet acked, by message id.
  std::unordered_map<MessageKey, Inflight, MessageKeyHash> inflight;
  SenderLimits* limits = nullptr;  // this agent's buckets in limits_ (reset when it is cleared)
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
    h.on_binary = [this](net::ConnId id, ByteView) { OnBinary(id); };
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
    for (auto& [id, conn] : conns_) conn.limits = nullptr;
    SetLogLevel(ParseLogLevel(config_.log_level));
    Log(LogLevel::kInfo, "configuration reloaded");
  }

  std::string store_path_;

 private:
  // ---- connection lifecycle ----

  // Connections per address: up to max_connections_per_ip are served. Beyond it a connection is
  // still upgraded, so it can be told why (RATE_LIMITED, then close 1008), while the address has
  // fewer than twice the cap open; past that, TCP connections are refused outright, so a flood
  // costs the relay no more than 2 x cap descriptors per address.
  bool OnAccept(const net::PeerAddress& peer) {
    if (stopping_) return false;
    const auto it = per_ip_.find(peer.ip);
    const std::uint64_t open = it == per_ip_.end() ? 0 : it->second;
    if (open >= 2 * std::uint64_t{config_.max_connections_per_ip}) {
      ++metrics_.refused_per_ip;
      return false;
    }
    return true;
  }

  void OnOpen(net::ConnId id, const net::PeerAddress& peer) {
    Conn fresh;
    fresh.id = id;
    fresh.ip = peer.ip;
    fresh.auth_deadline = WallNow() + std::int64_t{config_.auth_timeout_seconds} * kNanosPerSecond;
    const std::uint32_t from_ip = ++per_ip_[peer.ip];
    Conn& conn = conns_.emplace(id, std::move(fresh)).first->second;
    if (from_ip > config_.max_connections_per_ip) {
      ++metrics_.refused_per_ip;
      SendError(id, ErrorCode::kRateLimited,
                fmt::format("too many connections from {} (at most {})", peer.ip,
                            config_.max_connections_per_ip));
      CloseConn(conn, 1008, "too many connections from this address");
    }
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
  // They are stored in the order they were delivered, so the next connection gets them in the
  // order their senders sent them (a ratchet chain cannot skip ahead by more than its limit).
  void PersistInflight(Conn& conn) {
    std::vector<std::pair<std::uint64_t, QueuedMessage>> live;
    for (auto& [key, inflight] : conn.inflight) {
      if (!inflight.in_store) {
        live.emplace_back(inflight.live_order, ToQueued(conn.amid, key, std::move(inflight)));
      }
    }
    conn.inflight.clear();
    conn.store_inflight = 0;
    std::sort(live.begin(), live.end(),
              [](const auto& x, const auto& y) { return x.first < y.first; });
    std::vector<QueuedMessage> batch;
    batch.reserve(live.size());
    for (auto& entry : live) batch.push_back(std::move(entry.second));
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

  static QueuedMessage ToQueued(const std::string& recipient, const MessageKey& key, Inflight&& f) {
    QueuedMessage m;
    m.message_id = std::string(View(FormatMessageKey(key)));
    m.recipient = recipient;
    m.sender = std::string(f.sender());
    m.message_type = std::string(MessageTypeName(f.type));
    m.payload_token = std::string(f.payload());
    m.client_id = std::move(f.client_id);
    m.created_at = f.created_at;
    m.expires_at = f.expires_at;
    return m;
  }

  static bool IsInflight(const Conn& conn, std::string_view message_id) {
    const auto key = ParseMessageKey(message_id);
    return key && conn.inflight.contains(*key);
  }

  // The relay's time on receive frames, at millisecond precision: formatted once per millisecond.
  std::string_view Timestamp(UnixNanos now) {
    const UnixNanos ms = now / kNanosPerMilli;
    if (ms != stamp_ms_) {
      stamp_ms_ = ms;
      stamp_ = FormatRfc3339Z(ms * kNanosPerMilli);
    }
    return stamp_;
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
    // Now, not when the socket is gone: sends from here on queue behind these, in order.
    PersistInflight(conn);
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

  // Frames are JSON text. Binary before CONNECT is a wrong first frame; after it, an invalid one.
  void OnBinary(net::ConnId id) {
    auto it = conns_.find(id);
    if (it == conns_.end() || it->second.closing) return;
    ++metrics_.frames_in;
    if (it->second.amid.empty()) {
      ++metrics_.auth_failures;
      SendError(id, ErrorCode::kUnauthorized, "the first frame must be connect (JSON text)");
      CloseConn(it->second, 1008, "unauthorized");
      return;
    }
    Invalid(id, ErrorCode::kInvalidMessage, "binary frames are not supported; send JSON text");
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
    // Anything queued this turn (also for this agent) goes to the store now: after the replaced
    // connection's live messages (older), and while this connection has no route yet, since
    // CommitQueued pushes to routed connections, and a receive frame written before `connected`
    // is dropped by the client and would stay in flight here.
    CommitQueued();
    conn.amid = amid;
    routes_[amid] = conn.id;
    presence_[amid] = Presence{PresenceStatus::kOnline, now};
    ++metrics_.connects;
    const std::uint32_t pending = QueueCount(amid);
    out_.clear();
    AppendConnected(out_, View(FormatMessageKey(ids_.Next())), pending);
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
    auto loaded = store_->LoadFor(conn.amid, WallNow(), limit, conn.pushed_seq);
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
      if (IsInflight(conn, m.message_id)) continue;
      timestamps.push_back(FormatRfc3339Z(m.created_at / kNanosPerMilli * kNanosPerMilli));
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
        AppendReceiveFrame(out_, m.sender, m.payload_token, type, timestamps.back(), m.message_id,
                           {});
        if (server_->SendText(conn.id, out_) != net::SendStatus::kQueued) break;
        ++metrics_.delivered_from_store;
      }
      ++sent;
    }
    // A full load may have left more in the store: pushed as the reader acks or on the next tick.
    if (!as_pending_frame && sent > 0 && loaded->size() >= limit) conn.more_pending = true;
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
      if (IsInflight(conn, m.message_id)) continue;
      if (const auto key = ParseMessageKey(m.message_id)) {
        conn.inflight[*key].in_store = true;
        ++conn.store_inflight;
      }
      conn.pushed_seq = std::max(conn.pushed_seq, m.seq);
      ++marked;
    }
  }

  TokenBucket& Bucket(Conn& conn, bool knock, UnixNanos now) {
    if (conn.limits == nullptr) {
      auto it = limits_.find(conn.amid);
      if (it == limits_.end()) {
        it = limits_
                 .emplace(conn.amid,
                          SenderLimits{TokenBucket::PerMinute(config_.messages_per_minute, now),
                                       TokenBucket::PerMinute(config_.knocks_per_minute, now)})
                 .first;
      }
      conn.limits = &it->second;
    }
    return knock ? conn.limits->knocks : conn.limits->messages;
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
    TokenBucket& bucket = Bucket(conn, knock, now);
    if (!bucket.TryTake(now)) {
      ++metrics_.rate_limited;
      const auto retry = static_cast<std::uint32_t>(
          std::max<UnixNanos>(1, (bucket.RetryAfter(now) + kNanosPerSecond - 1) / kNanosPerSecond));
      Refuse(conn, frame, ErrorCode::kRateLimited,
             knock ? "KNOCK rate limit exceeded" : "message rate limit exceeded", retry);
      return;
    }
    // A connected recipient's AMID was validated at its CONNECT; only others need parsing.
    Conn* target = nullptr;
    if (auto route = routes_.find(frame.to); route != routes_.end()) {
      auto c = conns_.find(route->second);
      if (c != conns_.end() && !c->second.closing && !HasStoredBacklog(c->second)) {
        target = &c->second;
      }
    } else if (!Amid::Parse(frame.to)) {
      Refuse(conn, frame, ErrorCode::kInvalidMessage, "'to' is not a valid AMID");
      return;
    }
    const MessageKey key = ids_.Next();
    const MessageIdText message_id = FormatMessageKey(key);
    const UnixNanos expires_at = now + std::int64_t{config_.store_ttl_seconds} * kNanosPerSecond;

    if (target != nullptr) {
      out_.clear();
      AppendReceiveFramePlain(out_, conn.amid, frame.payload_token, frame.message_type,
                              Timestamp(now), View(message_id), frame.ice_candidates);
      if (server_->SendText(target->id, out_) == net::SendStatus::kQueued) {
        ++metrics_.delivered_live;
        if (frame.id) {
          out_.clear();
          AppendSendResult(out_, *frame.id, View(message_id), SendStatus::kDelivered);
          server_->SendText(conn.id, out_);
        }
        Inflight& f = target->inflight[key];
        f.live_order = ++live_order_;
        f.type = frame.message_type;
        f.created_at = now;
        f.expires_at = expires_at;
        f.sender_size = static_cast<std::uint8_t>(conn.amid.size());
        f.sender_and_payload.reserve(conn.amid.size() + frame.payload_token.size());
        f.sender_and_payload.append(conn.amid).append(frame.payload_token);
        if (frame.id) f.client_id = *frame.id;
        return;
      }
      // The reader is being disconnected (backpressure closes it at once; a socket that is no
      // longer open is closed now): its live messages are stored before this one, which falls
      // through to the durable queue behind them.
      if (!target->closing) CloseConn(*target, 1011, "connection not writable");
    }
    QueuedMessage m;
    m.message_id = std::string(View(message_id));
    m.recipient = std::string(frame.to);
    m.sender = conn.amid;
    m.message_type = std::string(MessageTypeName(frame.message_type));
    m.payload_token = std::string(frame.payload_token);
    m.client_id = frame.id.value_or("");
    m.created_at = now;
    m.expires_at = expires_at;
    const std::uint32_t queued = QueueCount(m.recipient) + PendingFor(m.recipient);
    if (queued >= config_.max_queue_per_recipient) {
      Refuse(conn, frame, ErrorCode::kQueueFull,
             fmt::format("recipient is offline and its queue is full ({} messages)", queued));
      return;
    }
    ++pending_per_recipient_[m.recipient];
    pending_.push_back(std::move(m));
    pending_senders_.push_back(conn.id);
  }

  // Whether messages older than a new send still wait in the store for this connection (not yet
  // pushed, or queued this turn): the new send then queues behind them instead of overtaking them.
  bool HasStoredBacklog(const Conn& target) const {
    return target.more_pending || PendingFor(target.amid) > 0 ||
           QueueCount(target.amid) > target.store_inflight;
  }

  std::uint32_t PendingFor(const std::string& amid) const {
    auto it = pending_per_recipient_.find(amid);
    return it == pending_per_recipient_.end() ? 0 : it->second;
  }

  // Group commit: every send queued during this loop turn is committed in one transaction, then
  // its sender learns "queued" (and an agent that came online meanwhile gets it pushed).
  void CommitQueued() {
    if (pending_.empty()) return;
    auto result = store_->Insert(pending_);
    std::vector<QueuedMessage> done;
    std::vector<net::ConnId> senders;
    done.swap(pending_);
    senders.swap(pending_senders_);
    pending_per_recipient_.clear();
    std::vector<net::ConnId> online;  // recipients that connected after their sends were read
    for (std::size_t i = 0; i < done.size(); ++i) {
      const QueuedMessage& m = done[i];
      auto sender = conns_.find(senders[i]);
      if (!result) {
        ++metrics_.dropped["store_error"];
        if (sender != conns_.end()) {
          if (!m.client_id.empty()) {
            out_.clear();
            AppendSendResult(out_, m.client_id, {}, SendStatus::kRefused,
                             ErrorCode::kInternalError);
            server_->SendText(sender->first, out_);
          }
          SendError(sender->first, ErrorCode::kInternalError, "message store unavailable");
        }
        continue;
      }
      ++queue_counts_[m.recipient];
      ++queued_total_;
      ++metrics_.queued;
      if (sender != conns_.end() && !m.client_id.empty()) {
        out_.clear();
        AppendSendResult(out_, m.client_id, m.message_id, SendStatus::kQueued);
        server_->SendText(sender->first, out_);
      }
      if (auto route = routes_.find(m.recipient); route != routes_.end()) {
        if (std::find(online.begin(), online.end(), route->second) == online.end()) {
          online.push_back(route->second);
        }
      }
    }
    // Keep the buffers' capacity for the next turn.
    done.clear();
    senders.clear();
    if (pending_.empty()) {
      pending_.swap(done);
      pending_senders_.swap(senders);
    }
    if (!result) {
      Log(LogLevel::kError, "store: commit failed: " + result.error().message);
      return;
    }
    for (const net::ConnId id : online) {
      auto c = conns_.find(id);
      if (c != conns_.end() && !c->second.closing) PushPending(c->second, 1000, false);
    }
  }

  void Handle(Conn& conn, const AckFrame& frame) { Settle(conn, frame.message_ids, true); }

  void Handle(Conn& conn, const NackFrame& frame) {
    ++metrics_.nacked;
    Log(LogLevel::kDebug,
        fmt::format("{} nacked {}: {}", conn.amid, frame.message_id, frame.reason));
    const std::string_view id = frame.message_id;
    Settle(conn, std::span(&id, 1), false);
  }

  void Settle(Conn& conn, std::span<const std::string_view> ids, bool acked) {
    // Ids not live on this connection: pushed from the queue, or from an earlier connection.
    std::vector<std::string_view> from_store;
    for (const std::string_view id : ids) {
      const auto key = ParseMessageKey(id);
      auto it = key ? conn.inflight.find(*key) : conn.inflight.end();
      if (it == conn.inflight.end() || it->second.in_store) {
        from_store.push_back(id);
        if (it != conn.inflight.end()) {
          conn.inflight.erase(it);
          --conn.store_inflight;
        }
        continue;
      }
      if (acked) ++metrics_.acked;
      if (!it->second.client_id.empty()) {
        SendReceipt(it->second.sender(), it->second.client_id, id, acked);
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
          if (acked) ++metrics_.acked;
          if (!m.client_id.empty()) SendReceipt(m.sender, m.client_id, m.message_id, acked);
        }
      }
    }
    if (conn.more_pending && !conn.closing) PushPending(conn, 1000, false);
  }

  void SendReceipt(std::string_view sender, std::string_view client_id, std::string_view message_id,
                   bool acked) {
    auto route = routes_.find(sender);
    if (route == routes_.end()) return;
    out_.clear();
    AppendReceipt(out_, client_id, message_id, acked);
    server_->SendText(route->second, out_);
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
    metric("amesh_relay_connections_refused_total", "counter",
           "Connections refused (max_connections, or over max_connections_per_ip).",
           s.connections_refused + metrics_.refused_per_ip);
    metric("amesh_relay_frames_in_total", "counter", "Frames received.", metrics_.frames_in);
    metric("amesh_relay_frames_out_total", "counter", "Frames sent.", s.frames_out);
    metric("amesh_relay_bytes_in_total", "counter", "Bytes received.", s.bytes_in);
    metric("amesh_relay_bytes_out_total", "counter", "Bytes sent.", s.bytes_out);
    metric("amesh_relay_socket_reads_total", "counter", "Socket reads that returned data.",
           s.read_calls);
    metric("amesh_relay_socket_writes_total", "counter",
           "Socket writes (output of a connection coalesced per loop turn).", s.write_calls);
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
  std::uint64_t live_order_ = 0;
  bool timer_started_ = false;
  bool stopping_ = false;
  SystemRng rng_;
  MessageIds ids_{rng_};
  std::string out_;  // reused output buffer
  UnixNanos stamp_ms_ = -1;
  std::string stamp_;

  std::unordered_map<net::ConnId, Conn> conns_;
  StringMap<net::ConnId> routes_;
  std::unordered_map<std::string, Presence> presence_;
  std::unordered_map<std::string, std::uint32_t> per_ip_;
  std::unordered_map<std::string, SenderLimits> limits_;
  std::unordered_map<std::string, UnixNanos> replay_cache_;
  std::unordered_map<std::string, std::uint32_t> queue_counts_;
  std::unordered_map<std::string, std::uint32_t> pending_per_recipient_;
  std::vector<QueuedMessage> pending_;  // sends waiting for the group commit of this loop turn
  std::vector<net::ConnId> pending_senders_;  // the connection each of them came from
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
