#include "ws_test_client.hpp"

#include <chrono>

#include "agentmesh/core/relay_frames.hpp"

namespace agentmesh::testing {

WsTestClient::WsTestClient(net::ClientOptions options) {
  uv_loop_init(&loop_);
  net::ClientHandlers h;
  h.on_open = [this] { open_ = true; };
  h.on_text = [this](std::string_view text) {
    auto parsed = nlohmann::json::parse(text, nullptr, false);
    frames_.push_back(parsed.is_discarded() ? nlohmann::json{{"type", "<non-json>"}} : parsed);
  };
  h.on_close = [this](std::uint16_t code, std::string_view) {
    open_ = false;
    closed_ = true;
    close_code_ = code;
  };
  h.on_error = [this](const Error& e) { error_ = e.ToString(); };
  h.on_log = [](std::string_view) {};
  client_ = std::make_unique<net::WsClient>(&loop_, std::move(options), std::move(h));
}

WsTestClient::~WsTestClient() {
  client_.reset();
  // Let the transport free its handles, then close the loop.
  for (int i = 0; i < 100 && uv_loop_alive(&loop_); ++i) uv_run(&loop_, UV_RUN_NOWAIT);
  uv_walk(
      &loop_,
      [](uv_handle_t* h, void*) {
        if (!uv_is_closing(h)) uv_close(h, nullptr);
      },
      nullptr);
  uv_run(&loop_, UV_RUN_DEFAULT);
  uv_loop_close(&loop_);
}

bool WsTestClient::RunUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    uv_run(&loop_, UV_RUN_NOWAIT);
    if (done()) break;
    // Block briefly in the kernel rather than spin.
    uv_update_time(&loop_);
    uv_run(&loop_, UV_RUN_ONCE);
  }
  return true;
}

bool WsTestClient::Connect(const std::string& url, std::chrono::milliseconds timeout) {
  if (auto r = client_->Connect(url); !r) {
    error_ = r.error().ToString();
    return false;
  }
  // UV_RUN_ONCE may block until the next event; a timer bounds the wait.
  uv_timer_t timer;
  uv_timer_init(&loop_, &timer);
  uv_timer_start(
      &timer, [](uv_timer_t*) {}, 50, 50);
  const bool ok = RunUntil([this] { return open_ || closed_; }, timeout) && open_;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  uv_run(&loop_, UV_RUN_NOWAIT);
  return ok;
}

std::optional<nlohmann::json> WsTestClient::ConnectAs(const std::string& url,
                                                      const Ed25519KeyPair& identity) {
  if (!Connect(url)) return std::nullopt;
  const auto now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  Send(relay::BuildConnectFrame(identity, now, false));
  return RecvType("connected");
}

bool WsTestClient::Send(std::string_view text) {
  const bool queued = client_->SendText(text) == net::SendStatus::kQueued;
  // The transport flushes from the loop: run it so the frame leaves now.
  uv_run(&loop_, UV_RUN_NOWAIT);
  return queued;
}

std::optional<nlohmann::json> WsTestClient::Recv(std::chrono::milliseconds timeout) {
  uv_timer_t timer;
  uv_timer_init(&loop_, &timer);
  uv_timer_start(
      &timer, [](uv_timer_t*) {}, 20, 20);
  RunUntil([this] { return !frames_.empty() || closed_; }, timeout);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  uv_run(&loop_, UV_RUN_NOWAIT);
  if (frames_.empty()) return std::nullopt;
  nlohmann::json frame = std::move(frames_.front());
  frames_.pop_front();
  return frame;
}

std::optional<nlohmann::json> WsTestClient::RecvType(const std::string& type,
                                                     std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    auto frame = Recv(left);
    if (!frame) return std::nullopt;
    if (frame->value("type", "") == type) return frame;
  }
}

void WsTestClient::Pump(std::chrono::milliseconds duration) {
  uv_timer_t timer;
  uv_timer_init(&loop_, &timer);
  uv_timer_start(
      &timer, [](uv_timer_t*) {}, 20, 20);
  RunUntil([] { return false; }, duration);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  uv_run(&loop_, UV_RUN_NOWAIT);
}

std::optional<std::uint16_t> WsTestClient::WaitClosed(std::chrono::milliseconds timeout) {
  uv_timer_t timer;
  uv_timer_init(&loop_, &timer);
  uv_timer_start(
      &timer, [](uv_timer_t*) {}, 20, 20);
  RunUntil([this] { return closed_; }, timeout);
  uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
  uv_run(&loop_, UV_RUN_NOWAIT);
  return closed_ ? close_code_ : std::nullopt;
}

void WsTestClient::Close() {
  client_->Close();
  WaitClosed(std::chrono::seconds(2));
}

}  // namespace agentmesh::testing
