#include "agentmesh/dns/txt_resolver.hpp"

#include <ares.h>
#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <deque>
#include <exception>
#include <map>
#include <mutex>
#include <utility>

namespace agentmesh::dns {

namespace {

std::once_flag g_ares_init;

// "ip", "ip:port", "[ip6]", "[ip6]:port" -> the "host:port" / "[ip6]:port" form of
// ares_set_servers_ports_csv.
Result<std::string> NormaliseServer(std::string_view text) {
  std::string host;
  std::string_view port_text;
  bool v6 = false;
  if (text.starts_with('[')) {
    const auto close = text.find(']');
    if (close == std::string_view::npos) {
      return Fail(Code::kInvalidArgument, fmt::format("resolver address '{}': missing ']'", text));
    }
    host = std::string(text.substr(1, close - 1));
    const std::string_view rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (!rest.starts_with(':')) {
        return Fail(Code::kInvalidArgument, fmt::format("resolver address '{}': bad port", text));
      }
      port_text = rest.substr(1);
    }
    v6 = true;
  } else if (std::count(text.begin(), text.end(), ':') > 1) {
    host = std::string(text);  // bare IPv6
    v6 = true;
  } else {
    const auto colon = text.find(':');
    host = std::string(text.substr(0, colon));
    if (colon != std::string_view::npos) port_text = text.substr(colon + 1);
  }
  unsigned char buf[16];
  if (inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), buf) != 1) {
    return Fail(Code::kInvalidArgument,
                fmt::format("resolver address '{}' is not a numeric IP address", text));
  }
  unsigned port = 53;
  if (!port_text.empty() || text.ends_with(':')) {
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || port == 0 ||
        port > 65535) {
      return Fail(Code::kInvalidArgument, fmt::format("resolver address '{}': bad port", text));
    }
  }
  return v6 ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
}

Error AresError(int status, std::string_view name) {
  Code code = Code::kUnavailable;
  switch (status) {
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
      code = Code::kNotFound;
      break;
    case ARES_ETIMEOUT:
      code = Code::kTimeout;
      break;
    case ARES_EBADNAME:
    case ARES_EBADQUERY:
    case ARES_EBADFAMILY:
      code = Code::kInvalidArgument;
      break;
    case ARES_ENOMEM:
      code = Code::kInternal;
      break;
    default:
      break;  // refused, servfail, connection refused, bad response, cancelled, …
  }
  return Error{code, fmt::format("TXT {}: {}", name, ares_strerror(status)), {}};
}

}  // namespace

class TxtResolver::Impl {
 public:
  struct Query {
    Impl* impl;
    Callback callback;
    std::string name;
  };
  struct Poll {
    uv_poll_t handle;
    Impl* impl;
    ares_socket_t fd;
  };
  struct Ready {
    Callback callback;
    Result<std::vector<std::string>> result;
  };

  explicit Impl(uv_loop_t* loop) : loop_(loop) {
    uv_timer_init(loop, &timeout_timer_);
    uv_timer_init(loop, &deliver_timer_);
    timeout_timer_.data = this;
    deliver_timer_.data = this;
  }

  Result<void> Init(const TxtResolverOptions& options) {
    std::call_once(g_ares_init, [] { ares_library_init(ARES_LIB_INIT_ALL); });
    if (options.servers.empty()) {
      return Fail(Code::kInvalidArgument, "no resolver addresses configured");
    }
    std::string csv;
    for (const auto& server : options.servers) {
      auto normalised = NormaliseServer(server);
      if (!normalised) return std::unexpected(normalised.error());
      if (!csv.empty()) csv += ',';
      csv += *normalised;
    }
    ares_options opts{};
    opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
    opts.timeout = static_cast<int>(std::max<std::int64_t>(1, options.timeout.count()));
    opts.tries = std::max(1, options.tries);
    opts.sock_state_cb = &Impl::OnSockState;
    opts.sock_state_cb_data = this;
    const int mask = ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB;
    int rc = ares_init_options(&channel_, &opts, mask);
    if (rc != ARES_SUCCESS) {
      channel_ = nullptr;
      return Fail(Code::kUnavailable, fmt::format("c-ares init: {}", ares_strerror(rc)));
    }
    rc = ares_set_servers_ports_csv(channel_, csv.c_str());
    if (rc != ARES_SUCCESS) {
      return Fail(Code::kInvalidArgument,
                  fmt::format("resolver addresses '{}': {}", csv, ares_strerror(rc)));
    }
    return {};
  }

  void Resolve(std::string_view name, Callback callback) {
    if (detached_) return;
    if (name.empty() || name.size() > 254 || name.find('\0') != std::string_view::npos) {
      Enqueue(std::move(callback),
              Fail(Code::kInvalidArgument, "TXT lookup: the name is empty, too long or has NUL"));
      return;
    }
    auto* query = new Query{this, std::move(callback), std::string(name)};
    ++pending_;
    ares_query(channel_, query->name.c_str(), ns_c_in, ns_t_txt, &Impl::OnAnswer, query);
    UpdateTimer();
  }

  void Cancel() {
    if (channel_ != nullptr) ares_cancel(channel_);
    UpdateTimer();
  }

  std::size_t pending() const noexcept { return pending_; }

  // Called by ~TxtResolver: no more callbacks; free everything once the handles are closed.
  void Detach() {
    detached_ = true;
    ready_.clear();
    if (channel_ != nullptr) {
      ares_destroy(channel_);  // answers queries with ARES_EDESTRUCTION, closes the sockets
      channel_ = nullptr;
    }
    for (auto& [fd, poll] : polls_) ClosePoll(poll);
    polls_.clear();
    CloseHandle(reinterpret_cast<uv_handle_t*>(&timeout_timer_));
    CloseHandle(reinterpret_cast<uv_handle_t*>(&deliver_timer_));
  }

 private:
  void CloseHandle(uv_handle_t* handle) {
    ++closing_;
    uv_close(handle, [](uv_handle_t* h) {
      auto* self = static_cast<Impl*>(h->data);
      if (--self->closing_ == 0 && self->detached_) delete self;
    });
  }

  void ClosePoll(Poll* poll) {
    uv_poll_stop(&poll->handle);
    ++closing_;
    uv_close(reinterpret_cast<uv_handle_t*>(&poll->handle), [](uv_handle_t* h) {
      auto* p = static_cast<Poll*>(h->data);
      Impl* self = p->impl;
      delete p;
      if (--self->closing_ == 0 && self->detached_) delete self;
    });
  }

  void Enqueue(Callback callback, Result<std::vector<std::string>> result) {
    ready_.push_back(Ready{std::move(callback), std::move(result)});
    uv_timer_start(&deliver_timer_, &Impl::OnDeliver, 0, 0);
  }

  // Re-arms the timeout timer for c-ares' next retransmission or deadline.
  void UpdateTimer() {
    if (detached_ || channel_ == nullptr) return;
    if (pending_ == 0) {
      uv_timer_stop(&timeout_timer_);
      return;
    }
    timeval storage{};
    const timeval* next = ares_timeout(channel_, nullptr, &storage);
    if (next == nullptr) {
      uv_timer_stop(&timeout_timer_);
      return;
    }
    const std::uint64_t ms = static_cast<std::uint64_t>(next->tv_sec) * 1000 +
                             static_cast<std::uint64_t>(next->tv_usec + 999) / 1000;
    uv_timer_start(&timeout_timer_, &Impl::OnTimeout, ms, 0);
  }

  static void OnSockState(void* data, ares_socket_t fd, int readable, int writable) noexcept {
    auto* self = static_cast<Impl*>(data);
    auto it = self->polls_.find(fd);
    if (readable == 0 && writable == 0) {
      if (it != self->polls_.end()) {
        self->ClosePoll(it->second);
        self->polls_.erase(it);
      }
      return;
    }
    Poll* poll = nullptr;
    if (it == self->polls_.end()) {
      poll = new Poll{};
      poll->impl = self;
      poll->fd = fd;
      if (uv_poll_init_socket(self->loop_, &poll->handle, fd) != 0) {
        delete poll;  // c-ares will time the query out
        return;
      }
      poll->handle.data = poll;
      self->polls_.emplace(fd, poll);
    } else {
      poll = it->second;
    }
    const int events = (readable != 0 ? UV_READABLE : 0) | (writable != 0 ? UV_WRITABLE : 0);
    uv_poll_start(&poll->handle, events, &Impl::OnPoll);
  }

  static void OnPoll(uv_poll_t* handle, int status, int events) noexcept {
    auto* poll = static_cast<Poll*>(handle->data);
    Impl* self = poll->impl;
    const ares_socket_t fd = poll->fd;
    if (self->channel_ == nullptr) return;
    // On a poll error let c-ares read and write so it notices the socket's error itself.
    const bool read = status < 0 || (events & UV_READABLE) != 0;
    const bool write = status < 0 || (events & UV_WRITABLE) != 0;
    ares_process_fd(self->channel_, read ? fd : ARES_SOCKET_BAD, write ? fd : ARES_SOCKET_BAD);
    self->UpdateTimer();  // `poll` may be gone now; `self` is not
  }

  static void OnTimeout(uv_timer_t* timer) noexcept {
    auto* self = static_cast<Impl*>(timer->data);
    if (self->channel_ == nullptr) return;
    ares_process_fd(self->channel_, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    self->UpdateTimer();
  }

  static void OnAnswer(void* arg, int status, int /*timeouts*/, unsigned char* abuf,
                       int alen) noexcept {
    std::unique_ptr<Query> query(static_cast<Query*>(arg));
    Impl* self = query->impl;
    --self->pending_;
    if (self->detached_ || status == ARES_EDESTRUCTION) return;
    try {
      self->Enqueue(std::move(query->callback), Parse(status, abuf, alen, query->name));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "agentmesh dns: dropping a TXT answer: %s\n", e.what());
    }
  }

  static Result<std::vector<std::string>> Parse(int status, const unsigned char* abuf, int alen,
                                                const std::string& name) {
    if (status != ARES_SUCCESS) return std::unexpected(AresError(status, name));
    ares_txt_ext* head = nullptr;
    const int rc = ares_parse_txt_reply_ext(abuf, alen, &head);
    if (rc != ARES_SUCCESS) return std::unexpected(AresError(rc, name));
    std::vector<std::string> records;
    for (const ares_txt_ext* chunk = head; chunk != nullptr; chunk = chunk->next) {
      if (chunk->record_start != 0 || records.empty()) records.emplace_back();
      records.back().append(reinterpret_cast<const char*>(chunk->txt), chunk->length);
    }
    ares_free_data(head);
    if (records.empty()) return std::unexpected(AresError(ARES_ENODATA, name));
    return records;
  }

  static void OnDeliver(uv_timer_t* timer) noexcept {
    auto* self = static_cast<Impl*>(timer->data);
    std::deque<Ready> batch;
    batch.swap(self->ready_);
    for (auto& item : batch) {
      if (self->detached_) return;  // a callback destroyed the resolver: drop the rest
      try {
        if (item.callback) item.callback(std::move(item.result));
      } catch (const std::exception& e) {
        std::fprintf(stderr, "agentmesh dns: TXT callback threw: %s\n", e.what());
      }
    }
  }

  uv_loop_t* loop_;
  ares_channel channel_ = nullptr;
  uv_timer_t timeout_timer_;
  uv_timer_t deliver_timer_;
  std::map<ares_socket_t, Poll*> polls_;
  std::deque<Ready> ready_;
  std::size_t pending_ = 0;
  int closing_ = 0;
  bool detached_ = false;
};

Result<std::unique_ptr<TxtResolver>> TxtResolver::Create(uv_loop_t* loop,
                                                         TxtResolverOptions options) {
  auto* impl = new Impl(loop);
  std::unique_ptr<TxtResolver> resolver(new TxtResolver(impl));  // frees impl via Detach
  if (auto r = impl->Init(options); !r) return std::unexpected(r.error());
  return resolver;
}

TxtResolver::~TxtResolver() { impl_->Detach(); }

void TxtResolver::Resolve(std::string_view name, Callback callback) {
  impl_->Resolve(name, std::move(callback));
}

void TxtResolver::Cancel() { impl_->Cancel(); }

std::size_t TxtResolver::pending() const noexcept { return impl_->pending(); }

std::string OrgChallengeName(std::string_view domain) {
  return fmt::format("_agentmesh.{}", domain);
}

std::string OrgChallengeValue(std::string_view challenge) {
  return fmt::format("agentmesh-verify={}", challenge);
}

}  // namespace agentmesh::dns
