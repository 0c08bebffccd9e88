#include "relay_link.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <exception>
#include <unordered_set>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "agentmesh/core/relay_frames.hpp"
#include "agentmesh/net/client.hpp"
#include "agentmesh/net/tls.hpp"
#include "curl_uv.hpp"

namespace agentmesh::daemon {

namespace {

using nlohmann::json;

constexpr std::uint64_t kStableAfterMs = 10'000;  // an up-time that resets the backoff
constexpr std::uint64_t kPongTimeoutMs = 10'000;
constexpr std::size_t kMaxAckBatch = 256;  // the relay's limit per ack frame
constexpr std::size_t kMaxIdBytes = 64;

UnixNanos SystemNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string NewMessageId() {
  unsigned char raw[16];
  randombytes_buf(raw, sizeof raw);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(32);
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

bool IsValidClientId(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
  });
}

std::string StringMember(const json& obj, const char* name) {
  auto it = obj.find(name);
  return it != obj.end() && it->is_string() ? it->get<std::string>() : std::string();
}

void LogLine(const std::string& line) {
  std::fprintf(stderr, "agentmeshd: relay: %s\n", line.c_str());
}

// True when `s` can be written between JSON quotes as is: printable ASCII without '"' or '\\'
// (base64, AMIDs, client ids, message types).
bool IsPlainJsonText(std::string_view s) noexcept {
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c >= 0x7F || c == '"' || c == '\\') return false;
  }
  return true;
}

// The hot frames (`receive`, `send_result`, `receipt`, `pong`) are flat objects of plain strings
// and small integers. FlatFrame reads exactly those without building a DOM; Parse() refuses
// (and the caller uses nlohmann) anything else: nested values, escapes, non-ASCII, fractions,
// negative or huge numbers, malformed text. So every frame it accepts means the same as it would
// through nlohmann (for a duplicate key the last one wins, as there).
class FlatFrame {
 public:
  bool Parse(std::string_view text) {
    members_.clear();
    std::size_t i = 0;
    const std::size_t n = text.size();
    auto skip_ws = [&] {
      while (i < n && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
        ++i;
    };
    // A string without escapes or non-ASCII; i is at the opening quote.
    auto string = [&](std::string_view& out) {
      if (i >= n || text[i] != '"') return false;
      const std::size_t start = ++i;
      while (i < n && text[i] != '"') {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c < 0x20 || c >= 0x80 || c == '\\') return false;
        ++i;
      }
      if (i >= n) return false;
      out = text.substr(start, i - start);
      ++i;
      return true;
    };
    skip_ws();
    if (i >= n || text[i] != '{') return false;
    ++i;
    skip_ws();
    if (i < n && text[i] == '}') {
      ++i;
    } else {
      while (true) {
        skip_ws();
        Member m;
        if (!string(m.key)) return false;
        skip_ws();
        if (i >= n || text[i] != ':') return false;
        ++i;
        skip_ws();
        if (i >= n) return false;
        if (text[i] == '"') {
          if (!string(m.value)) return false;
          m.kind = Kind::kString;
        } else if (text[i] >= '0' && text[i] <= '9') {
          const std::size_t start = i;
          while (i < n && text[i] >= '0' && text[i] <= '9') ++i;
          m.value = text.substr(start, i - start);
          // Plain unsigned integers only (no leading zero, fits 64 bits comfortably).
          if (m.value.size() > 18 || (m.value.size() > 1 && m.value[0] == '0')) return false;
          if (i < n && (text[i] == '.' || text[i] == 'e' || text[i] == 'E')) return false;
          m.kind = Kind::kUnsigned;
        } else {
          for (std::string_view word : {"true", "false", "null"}) {
            if (text.substr(i, word.size()) == word) {
              m.value = word;
              i += word.size();
              break;
            }
          }
          if (m.value.empty()) return false;  // nested value, negative number, garbage
          m.kind = Kind::kLiteral;
        }
        members_.push_back(m);
        skip_ws();
        if (i < n && text[i] == ',') {
          ++i;
          continue;
        }
        if (i < n && text[i] == '}') {
          ++i;
          break;
        }
        return false;
      }
    }
    skip_ws();
    return i == n;
  }

  // The string member `name` ("" when absent or not a string), like StringMember.
  std::string String(std::string_view name) const {
    const Member* m = Find(name);
    return m != nullptr && m->kind == Kind::kString ? std::string(m->value) : std::string();
  }
  std::optional<std::uint64_t> Unsigned(std::string_view name) const {
    const Member* m = Find(name);
    if (m == nullptr || m->kind != Kind::kUnsigned) return std::nullopt;
    std::uint64_t v = 0;
    for (const char c : m->value) v = v * 10 + static_cast<std::uint64_t>(c - '0');
    return v;
  }
  // A string member's text, else the member's JSON text (what json::dump() prints for it).
  std::optional<std::string> Text(std::string_view name) const {
    const Member* m = Find(name);
    if (m == nullptr) return std::nullopt;
    return std::string(m->value);
  }

 private:
  enum class Kind { kString, kUnsigned, kLiteral };
  struct Member {
    std::string_view key, value;
    Kind kind = Kind::kString;
  };
  const Member* Find(std::string_view name) const {
    for (auto it = members_.rbegin(); it != members_.rend(); ++it) {
      if (it->key == name) return &*it;
    }
    return nullptr;
  }
  std::vector<Member> members_;
};

// The same three accessors over a parsed DOM frame.
class DomFrame {
 public:
  explicit DomFrame(const json& frame) : frame_(frame) {}
  std::string String(std::string_view name) const {
    auto it = frame_.find(name);
    return it != frame_.end() && it->is_string() ? it->get<std::string>() : std::string();
  }
  std::optional<std::uint64_t> Unsigned(std::string_view name) const {
    auto it = frame_.find(name);
    if (it == frame_.end() || !it->is_number_unsigned()) return std::nullopt;
    return it->get<std::uint64_t>();
  }
  std::optional<std::string> Text(std::string_view name) const {
    auto it = frame_.find(name);
    if (it == frame_.end()) return std::nullopt;
    return it->is_string() ? it->get<std::string>() : it->dump();
  }

 private:
  const json& frame_;
};

}  // namespace

class RelayLink::Impl {
 public:
  enum class State { kStopped, kWaiting, kConnecting, kAuthenticating, kConnected };

  Impl(uv_loop_t* loop, RelayLinkOptions options, Ed25519KeyPair identity, Handlers handlers)
      : loop_(loop),
        options_(std::move(options)),
        identity_(std::move(identity)),
        handlers_(std::move(handlers)),
        timer_(loop),
        ack_timer_(loop) {
    if (options_.min_backoff_ms == 0) options_.min_backoff_ms = 1;
    if (options_.max_backoff_ms < options_.min_backoff_ms) {
      options_.max_backoff_ms = options_.min_backoff_ms;
    }
  }

  ~Impl() {
    alive_.reset();
    // WsClient destructors abort without callbacks; the timers close themselves.
    ws_.reset();
    closing_.clear();
  }

  bool connected() const noexcept { return state_ == State::kConnected; }

  void Start() {
    if (state_ != State::kStopped) return;
    state_ = State::kWaiting;
    failures_ = 0;
    // Always from the loop: Start() itself never calls back.
    timer_.Start(0, [this] { Attempt(); });
  }

  void Stop() {
    if (state_ == State::kStopped) return;
    const bool authenticated = state_ == State::kConnected;
    if (authenticated) FlushAcks();
    state_ = State::kStopped;
    timer_.Stop();
    ack_timer_.Stop();
    acks_.clear();
    awaiting_.clear();
    if (ws_ && ws_->state() != net::WsClient::State::kIdle) {
      if (authenticated) ws_->SendText(R"({"type":"disconnect","reason":"client stopped"})");
      ws_->Close(net::close_code::kNormal, "client stopped");
      // Finishes its close handshake on its own; freed in its on_close (or with the link).
      closing_.emplace_back(ws_id_, std::move(ws_));
      ++ws_id_;  // its remaining callbacks no longer match the current client
    }
  }

  Result<std::string> Send(const Amid& to, std::string_view message_type, std::string_view payload,
                           std::string message_id) {
    if (state_ != State::kConnected) return Fail(Code::kUnavailable, "relay link is not connected");
    if (!relay::ParseMessageType(message_type)) {
      return Fail(Code::kInvalidArgument, fmt::format("unknown message_type '{}'", message_type),
                  "message_type");
    }
    if (message_id.empty()) {
      message_id = NewMessageId();
    } else if (!IsValidClientId(message_id)) {
      return Fail(Code::kInvalidArgument, "message id must be 1-64 characters of [A-Za-z0-9_-]",
                  "message_id");
    }
    std::string frame;
    if (IsPlainJsonText(payload) && IsPlainJsonText(message_type)) {
      // The common case (base64 payload): the frame text written directly, byte for byte what
      // json::dump() makes of it (members sorted), without copying the payload into a DOM and
      // escaping it back out.
      const std::string& to_text = to.str();
      frame.reserve(payload.size() + message_id.size() + message_type.size() + to_text.size() + 80);
      frame += R"({"encrypted_payload":")";
      frame += payload;
      frame += R"(","id":")";
      frame += message_id;
      frame += R"(","message_type":")";
      frame += message_type;
      frame += R"(","to":")";
      frame += to_text;
      frame += R"(","type":"send"})";
    } else {
      try {
        json j = {{"type", "send"},
                  {"to", to.str()},
                  {"encrypted_payload", std::string(payload)},
                  {"message_type", std::string(message_type)},
                  {"id", message_id}};
        frame = j.dump();
      } catch (const std::exception& e) {
        return Fail(Code::kInvalidArgument, std::string("payload: ") + e.what(),
                    "encrypted_payload");
      }
    }
    if (frame.size() > options_.max_frame_bytes) {
      return Fail(Code::kLimitExceeded,
                  fmt::format("send frame of {} bytes exceeds the relay limit of {}", frame.size(),
                              options_.max_frame_bytes));
    }
    switch (ws_->SendText(frame)) {
      case net::SendStatus::kQueued:
        break;
      case net::SendStatus::kBackpressure:
      case net::SendStatus::kTooLarge:
        return Fail(Code::kLimitExceeded, "relay link output buffer is full");
      default:
        return Fail(Code::kUnavailable, "relay link is not open");
    }
    awaiting_.insert(message_id);
    return message_id;
  }

  void Ack(std::string_view message_id) {
    if (state_ != State::kConnected || message_id.empty()) return;
    acks_.emplace_back(message_id);
    if (acks_.size() >= kMaxAckBatch) {
      FlushAcks();
    } else if (!ack_timer_.active()) {
      ack_timer_.Start(0, [this] { FlushAcks(); });
    }
  }

  void Nack(std::string_view message_id, std::string_view reason) {
    if (state_ != State::kConnected || message_id.empty()) return;
    try {
      json j = {{"type", "nack"},
                {"message_id", std::string(message_id)},
                {"reason", std::string(reason)}};
      ws_->SendText(j.dump(-1, ' ', false, json::error_handler_t::replace));
    } catch (const std::exception& e) {
      LogLine(std::string("nack not sent: ") + e.what());
    }
  }

  void RequestPending() {
    if (state_ != State::kConnected) return;
    FlushAcks();
    // Bound the answer so it fits in max_message_bytes: each entry carries at most one
    // relay-sized payload.
    const std::size_t per_entry = options_.max_frame_bytes + 1024;
    const std::size_t limit = std::clamp<std::size_t>(
        per_entry == 0 ? 100 : options_.max_message_bytes / per_entry, 1, 100);
    ws_->SendText(fmt::format(R"({{"type":"get_pending_messages","limit":{}}})", limit));
  }

 private:
  // ---- connection cycle ---------------------------------------------------------------------

  void Attempt() {
    if (state_ != State::kWaiting) return;
    state_ = State::kConnecting;
    relay_error_.clear();
    ws_error_.clear();
    replaced_ = false;
    const std::uint64_t attempt = ++attempt_;
    if (options_.url.rfind("wss:", 0) == 0 && !tls_) {
      auto tls = net::TlsContext::CreateClient({.ca_file = options_.ca_file, .verify_peer = true});
      if (!tls) return AttemptFailed("TLS setup failed: " + tls.error().message);
      tls_ = std::move(*tls);
    }
    if (!ws_) {
      net::ClientOptions o;
      o.max_message_bytes = options_.max_message_bytes;
      o.max_output_bytes = options_.max_output_bytes;
      o.connect_timeout_ms = options_.connect_timeout_ms;
      o.ping_interval_ms = options_.ping_interval_ms;
      o.pong_timeout_ms = kPongTimeoutMs;
      o.tls = tls_;
      const std::uint64_t id = ++ws_id_;
      net::ClientHandlers h;
      h.on_open = [this, id] {
        if (id == ws_id_) OnOpen();
      };
      h.on_text = [this, id](std::string_view text) {
        if (id == ws_id_) OnText(text);
      };
      h.on_error = [this, id](const Error& e) {
        if (id == ws_id_) ws_error_ = e.ToString();
      };
      h.on_close = [this, id](std::uint16_t code, std::string_view reason) {
        if (id == ws_id_) {
          OnClosed(code, reason);
        } else {
          ReapClosing(id);
        }
      };
      h.on_log = [](std::string_view m) { LogLine(std::string(m)); };
      ws_ = std::make_unique<net::WsClient>(loop_, std::move(o), std::move(h));
    }
    auto r = ws_->Connect(options_.url);
    if (!r) return AttemptFailed("cannot connect: " + r.error().ToString());
    if (state_ == State::kConnecting && attempt == attempt_) {
      timer_.Start(options_.connect_timeout_ms, [this] {
        if (state_ != State::kConnecting && state_ != State::kAuthenticating) return;
        if (relay_error_.empty()) relay_error_ = "timed out waiting for the relay's `connected`";
        if (ws_) ws_->Close(net::close_code::kNormal, "connect timeout");
      });
    }
  }

  void OnOpen() {
    if (state_ != State::kConnecting) return;
    state_ = State::kAuthenticating;
    dropped_early_ = 0;
    const UnixNanos now = options_.now ? options_.now() : SystemNow();
    ws_->SendText(relay::BuildConnectFrame(identity_, now, false));
  }

  // The attempt ended without a WsClient close (setup failure).
  void AttemptFailed(std::string detail) {
    state_ = State::kWaiting;
    ScheduleReconnect(false);
    Notify(false, detail);
  }

  void OnClosed(std::uint16_t code, std::string_view reason) {
    if (state_ == State::kStopped) return;
    const bool was_connected = state_ == State::kConnected;
    std::string detail;
    if (!relay_error_.empty()) {
      detail = relay_error_;
    } else if (!ws_error_.empty() && !was_connected) {
      detail = ws_error_;
    } else {
      detail = fmt::format("connection closed ({}{}{})", code, reason.empty() ? "" : " ", reason);
    }
    state_ = State::kWaiting;
    timer_.Stop();
    ack_timer_.Stop();
    acks_.clear();
    awaiting_.clear();
    const bool stable = was_connected && uv_now(loop_) - connected_at_ >= kStableAfterMs;
    ScheduleReconnect(stable && !replaced_);
    Notify(false, detail);
  }

  void ScheduleReconnect(bool reset) {
    if (reset) failures_ = 0;
    const unsigned shift = std::min<unsigned>(failures_, 30);
    const std::uint64_t base =
        std::min<std::uint64_t>(options_.max_backoff_ms, options_.min_backoff_ms << shift);
    // Jitter: uniformly in [base/2, base].
    const std::uint64_t half = base / 2;
    const std::uint64_t delay =
        half + (half + 1 > 1 ? randombytes_uniform(static_cast<std::uint32_t>(
                                   std::min<std::uint64_t>(half + 1, UINT32_MAX)))
                             : 0);
    ++failures_;
    timer_.Start(delay, [this] { Attempt(); });
  }

  void ReapClosing(std::uint64_t id) {
    // Destroying a WsClient inside its own callback is allowed by its contract.
    std::erase_if(closing_, [id](const auto& entry) { return entry.first == id; });
  }

  // ---- frames -------------------------------------------------------------------------------

  void OnText(std::string_view text) {
    // Fast path for the per-message frames (see FlatFrame); everything else takes the DOM.
    if (flat_.Parse(text)) {
      const std::string type = flat_.String("type");
      if (type == "receive") {
        if (state_ == State::kConnected) {
          Deliver(flat_, "message_id");
        } else {
          DroppedEarly();
        }
        return;
      }
      if (type == "send_result") {
        OnSendResult(flat_);
        return;
      }
      if (type == "receipt") {
        OnReceipt(flat_);
        return;
      }
      if (type == "pong") return;
    }
    json frame = json::parse(text, nullptr, false);
    if (frame.is_discarded() || !frame.is_object()) {
      LogLine("ignoring a relay frame that is not a JSON object");
      return;
    }
    const std::string type = StringMember(frame, "type");
    if (type == "connected") {
      if (state_ != State::kAuthenticating) return;
      state_ = State::kConnected;
      timer_.Stop();
      connected_at_ = uv_now(loop_);
      Notify(true, StringMember(frame, "session_id"));
    } else if (type == "receive") {
      if (state_ != State::kConnected) return DroppedEarly();
      Deliver(DomFrame(frame), "message_id");
    } else if (type == "pending_messages") {
      if (state_ != State::kConnected) return;
      OnPending(frame);
    } else if (type == "send_result") {
      OnSendResult(DomFrame(frame));
    } else if (type == "receipt") {
      OnReceipt(DomFrame(frame));
    } else if (type == "error") {
      OnError(frame);
    }
    // pong, presence_response, ice_offer/ice_answer, p2_p_established: not used by the link.
  }

  // A receive frame before `connected` cannot be acked: the relay keeps it in flight on this
  // connection and delivers it again on the next one. A relay that does this is out of protocol.
  void DroppedEarly() {
    if (dropped_early_++ == 0) {
      LogLine("dropped a message the relay sent before `connected` (it is delivered again later)");
    }
  }

  // Returns false when the link was destroyed by the handler. Frame: FlatFrame or DomFrame.
  template <typename Frame>
  bool Deliver(const Frame& m, const char* id_member) {
    IncomingMessage msg;
    msg.id = m.String(id_member);
    if (msg.id.empty() && std::string_view(id_member) == "message_id") msg.id = m.String("id");
    msg.from = m.String("from");
    msg.message_type = m.String("message_type");
    msg.encrypted_payload = m.String("encrypted_payload");
    if (auto ts = m.Text("timestamp")) msg.timestamp = std::move(*ts);
    if (!handlers_.on_message) return true;
    return Guard([&] { handlers_.on_message(msg); });
  }

  template <typename Frame>
  void OnReceipt(const Frame& frame) {
    Receipt r;
    r.message_id = frame.String("id");
    r.relay_message_id = frame.String("message_id");
    r.acked = frame.String("status") == "acked";
    if (handlers_.on_receipt) Guard([&] { handlers_.on_receipt(r); });
  }

  void OnPending(const json& frame) {
    auto it = frame.find("messages");
    std::size_t count = 0;
    if (it != frame.end() && it->is_array()) {
      for (const json& m : *it) {
        if (!m.is_object()) continue;
        ++count;
        if (!Deliver(DomFrame(m), "message_id")) return;
        if (state_ != State::kConnected) return;
      }
    }
    auto rem = frame.find("remaining");
    if (count > 0 && rem != frame.end() && rem->is_number_unsigned() &&
        rem->get<std::uint64_t>() > 0) {
      RequestPending();
    }
  }

  template <typename Frame>
  void OnSendResult(const Frame& frame) {
    SendResult r;
    r.message_id = frame.String("id");
    awaiting_.erase(r.message_id);
    const std::string status = frame.String("status");
    r.outcome = status == "delivered" ? SendOutcome::kDelivered
                : status == "queued"  ? SendOutcome::kQueued
                                      : SendOutcome::kRefused;
    if (r.outcome == SendOutcome::kRefused) {
      r.reason = frame.String("code");
      if (r.reason.empty()) r.reason = "REFUSED";
    }
    r.relay_message_id = frame.String("message_id");
    if (auto retry = frame.Unsigned("retry_after_seconds")) {
      r.retry_after_seconds = static_cast<std::uint32_t>(*retry);
    }
    if (handlers_.on_send_result) Guard([&] { handlers_.on_send_result(r); });
  }

  void OnError(const json& frame) {
    const std::string code = StringMember(frame, "code");
    const std::string message = StringMember(frame, "message");
    const std::string id = StringMember(frame, "id");
    if (!id.empty() && awaiting_.erase(id) > 0) {
      // A relay that answered a send only with an error frame: report it as refused.
      SendResult r;
      r.message_id = id;
      r.outcome = SendOutcome::kRefused;
      r.reason = code.empty() ? "REFUSED" : code;
      auto retry = frame.find("retry_after_seconds");
      if (retry != frame.end() && retry->is_number_unsigned()) {
        r.retry_after_seconds = retry->get<std::uint32_t>();
      }
      if (handlers_.on_send_result) Guard([&] { handlers_.on_send_result(r); });
      return;
    }
    if (!id.empty()) return;  // already reported through send_result
    if (code == "REPLACED") replaced_ = true;
    if (state_ != State::kConnected || code == "REPLACED") {
      relay_error_ = fmt::format("relay error {}: {}", code, message);
    } else {
      LogLine(fmt::format("relay error {}: {}", code, message));
    }
  }

  void FlushAcks() {
    ack_timer_.Stop();
    if (acks_.empty() || state_ != State::kConnected) {
      acks_.clear();
      return;
    }
    for (std::size_t i = 0; i < acks_.size(); i += kMaxAckBatch) {
      const std::size_t end = std::min(acks_.size(), i + kMaxAckBatch);
      json ids = json::array();
      for (std::size_t k = i; k < end; ++k) ids.push_back(acks_[k]);
      json j = {{"type", "ack"}, {"message_ids", std::move(ids)}};
      ws_->SendText(j.dump(-1, ' ', false, json::error_handler_t::replace));
    }
    acks_.clear();
  }

  // ---- calling out --------------------------------------------------------------------------

  // Runs a user handler; false when it destroyed the link (the caller must return at once).
  template <typename F>
  bool Guard(F&& f) {
    std::weak_ptr<bool> alive = alive_;
    try {
      f();
    } catch (const std::exception& e) {
      LogLine(std::string("handler threw: ") + e.what());
    } catch (...) {
      LogLine("handler threw");
    }
    return !alive.expired();
  }

  void Notify(bool up, std::string_view detail) {
    if (handlers_.on_state) Guard([&] { handlers_.on_state(up, detail); });
  }

  uv_loop_t* loop_;
  RelayLinkOptions options_;
  Ed25519KeyPair identity_;
  Handlers handlers_;
  State state_ = State::kStopped;
  std::unique_ptr<net::WsClient> ws_;
  std::uint64_t ws_id_ = 0;
  std::vector<std::pair<std::uint64_t, std::unique_ptr<net::WsClient>>> closing_;
  std::shared_ptr<net::TlsContext> tls_;
  detail::UvTimer timer_;      // start, backoff, and the connect deadline
  detail::UvTimer ack_timer_;  // coalesces acks of one loop turn into one frame
  std::vector<std::string> acks_;
  std::unordered_set<std::string> awaiting_;  // client ids of sends without an answer yet
  std::uint64_t attempt_ = 0;
  unsigned failures_ = 0;
  std::uint64_t connected_at_ = 0;
  std::string relay_error_;
  std::string ws_error_;
  bool replaced_ = false;
  std::uint64_t dropped_early_ = 0;  // receive frames before `connected` on this connection
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  FlatFrame flat_;  // reused: its member list keeps its capacity
};

RelayLink::RelayLink(uv_loop_t* loop, RelayLinkOptions options, Ed25519KeyPair identity,
                     Handlers handlers)
    : impl_(std::make_unique<Impl>(loop, std::move(options), std::move(identity),
                                   std::move(handlers))) {}

RelayLink::~RelayLink() = default;

void RelayLink::Start() { impl_->Start(); }
void RelayLink::Stop() { impl_->Stop(); }
bool RelayLink::connected() const noexcept { return impl_->connected(); }

Result<std::string> RelayLink::Send(const Amid& to, std::string_view message_type,
                                    std::string_view encrypted_payload_b64,
                                    std::string message_id) {
  return impl_->Send(to, message_type, encrypted_payload_b64, std::move(message_id));
}

void RelayLink::Ack(std::string_view message_id) { impl_->Ack(message_id); }
void RelayLink::Nack(std::string_view message_id, std::string_view reason) {
  impl_->Nack(message_id, reason);
}
void RelayLink::RequestPending() { impl_->RequestPending(); }

}  // namespace agentmesh::daemon
