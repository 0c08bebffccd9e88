#include "curl_uv.hpp"

#include <curl/curl.h>

#include <cstdio>
#include <exception>
#include <mutex>
#include <utility>
#include <vector>

namespace agentmesh::daemon::detail {

void EnsureCurlGlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// ---- UvTimer ---------------------------------------------------------------------------------

struct UvTimer::Handle {
  uv_timer_t timer;
  std::function<void()> fn;
};

UvTimer::UvTimer(uv_loop_t* loop) : handle_(new Handle) {
  uv_timer_init(loop, &handle_->timer);
  handle_->timer.data = handle_;
}

UvTimer::~UvTimer() {
  uv_timer_stop(&handle_->timer);
  handle_->fn = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(&handle_->timer),
           [](uv_handle_t* h) { delete static_cast<Handle*>(h->data); });
}

void UvTimer::Start(std::uint64_t timeout_ms, std::function<void()> fn) {
  handle_->fn = std::move(fn);
  uv_timer_start(
      &handle_->timer,
      [](uv_timer_t* t) {
        auto* h = static_cast<Handle*>(t->data);
        // Moved out first: the callback may destroy the owner (and so reset h->fn).
        auto call = std::move(h->fn);
        h->fn = nullptr;
        if (!call) return;
        try {
          call();
        } catch (const std::exception& e) {
          std::fprintf(stderr, "agentmeshd: timer callback threw: %s\n", e.what());
        } catch (...) {
          std::fprintf(stderr, "agentmeshd: timer callback threw\n");
        }
      },
      timeout_ms, 0);
}

void UvTimer::Stop() {
  uv_timer_stop(&handle_->timer);
  handle_->fn = nullptr;
}

bool UvTimer::active() const noexcept {
  return uv_is_active(reinterpret_cast<const uv_handle_t*>(&handle_->timer)) != 0;
}

// ---- CurlMulti -------------------------------------------------------------------------------

struct CurlMulti::Socket {
  uv_poll_t poll;
  CurlMulti* owner;
  curl_socket_t fd;
};

void CurlMulti::ClosePoll(Socket* socket) {
  uv_poll_stop(&socket->poll);
  uv_close(reinterpret_cast<uv_handle_t*>(&socket->poll),
           [](uv_handle_t* h) { delete static_cast<Socket*>(h->data); });
}

CurlMulti::CurlMulti(uv_loop_t* loop)
    : loop_(loop), multi_(nullptr), timer_(loop), alive_(std::make_shared<bool>(true)) {
  EnsureCurlGlobalInit();
  multi_ = curl_multi_init();
  curl_multi_setopt(multi_, CURLMOPT_SOCKETFUNCTION, &CurlMulti::OnSocket);
  curl_multi_setopt(multi_, CURLMOPT_SOCKETDATA, this);
  curl_multi_setopt(multi_, CURLMOPT_TIMERFUNCTION, &CurlMulti::OnTimer);
  curl_multi_setopt(multi_, CURLMOPT_TIMERDATA, this);
}

CurlMulti::~CurlMulti() {
  destroying_ = true;
  timer_.Stop();
  for (auto& [easy, done] : transfers_) curl_multi_remove_handle(multi_, easy);
  transfers_.clear();
  // Polls are closed before curl closes the sockets; callbacks during cleanup are ignored.
  for (Socket* s : sockets_) ClosePoll(s);
  sockets_.clear();
  curl_multi_cleanup(multi_);
  alive_.reset();
}

bool CurlMulti::Add(CURL* easy, Completion done) {
  if (curl_multi_add_handle(multi_, easy) != CURLM_OK) return false;
  transfers_[easy] = std::move(done);
  return true;
}

void CurlMulti::Remove(CURL* easy) {
  auto it = transfers_.find(easy);
  if (it == transfers_.end()) return;
  transfers_.erase(it);
  curl_multi_remove_handle(multi_, easy);
}

int CurlMulti::OnSocket(CURL* /*easy*/, int fd, int what, void* userp, void* socketp) noexcept {
  auto* self = static_cast<CurlMulti*>(userp);
  if (self->destroying_) return 0;
  auto* s = static_cast<Socket*>(socketp);
  if (what == CURL_POLL_REMOVE) {
    if (s != nullptr) {
      curl_multi_assign(self->multi_, fd, nullptr);
      self->sockets_.erase(s);
      ClosePoll(s);
    }
    return 0;
  }
  if (s == nullptr) {
    s = new Socket{};
    s->owner = self;
    s->fd = fd;
    if (uv_poll_init_socket(self->loop_, &s->poll, fd) != 0) {
      delete s;
      return -1;
    }
    s->poll.data = s;
    self->sockets_.insert(s);
    curl_multi_assign(self->multi_, fd, s);
  }
  int events = 0;
  if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
  if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
  uv_poll_start(&s->poll, events, &CurlMulti::OnPoll);
  return 0;
}

int CurlMulti::OnTimer(CURLM* /*multi*/, long timeout_ms, void* userp) noexcept {
  auto* self = static_cast<CurlMulti*>(userp);
  if (self->destroying_) return 0;
  if (timeout_ms < 0) {
    self->timer_.Stop();
    return 0;
  }
  // Never call curl_multi_socket_action from inside this callback: always go through the loop.
  self->timer_.Start(static_cast<std::uint64_t>(timeout_ms),
                     [self] { self->Action(CURL_SOCKET_TIMEOUT, 0); });
  return 0;
}

void CurlMulti::OnPoll(uv_poll_t* poll, int status, int events) noexcept {
  auto* s = static_cast<Socket*>(poll->data);
  int flags = 0;
  if (status < 0) {
    flags = CURL_CSELECT_ERR;
  } else {
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  }
  s->owner->Action(s->fd, flags);
}

void CurlMulti::Action(int fd, int ev_bitmask) {
  int running = 0;
  curl_multi_socket_action(multi_, fd, ev_bitmask, &running);
  ProcessDone();
}

void CurlMulti::ProcessDone() {
  std::weak_ptr<bool> alive = alive_;
  int left = 0;
  while (CURLMsg* msg = curl_multi_info_read(multi_, &left)) {
    if (msg->msg != CURLMSG_DONE) continue;
    CURL* easy = msg->easy_handle;
    const int result = msg->data.result;
    auto it = transfers_.find(easy);
    if (it == transfers_.end()) continue;
    Completion done = std::move(it->second);
    transfers_.erase(it);
    curl_multi_remove_handle(multi_, easy);
    try {
      if (done) done(result);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "agentmeshd: curl completion threw: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "agentmeshd: curl completion threw\n");
    }
    if (alive.expired()) return;
  }
}

}  // namespace agentmesh::daemon::detail
