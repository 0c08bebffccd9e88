// libcurl's multi interface driven by a libuv loop, and a small owned uv_timer_t, for the daemon's
// network clients (registry_client.cpp, relay_link.cpp). Internal to agentmeshd_net.
//
// CurlMulti owns one CURLM*. Curl tells it which sockets to watch (CURLMOPT_SOCKETFUNCTION →
// one uv_poll_t per socket) and when to wake up (CURLMOPT_TIMERFUNCTION → one uv_timer_t); loop
// events go back to curl through curl_multi_socket_action, and finished transfers are reported
// through the completion callback given to Add(). The multi handle keeps its connection cache,
// so sequential requests to one host reuse a keep-alive connection.
//
// Lifetime: the loop must outlive the object. The destructor removes (without reporting) every
// transfer still added, cleans up the multi handle and closes its uv handles; their memory is freed
// by their close callbacks, so run the loop afterwards. Easy handles passed to Add() stay owned by
// the caller (the caller must Remove() before freeing one).
// Threading: the loop thread only. Exceptions: none escape; callbacks are noexcept trampolines.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <unordered_map>
#include <unordered_set>

typedef void CURL;
typedef void CURLM;

namespace agentmesh::daemon::detail {

// Calls curl_global_init once per process (thread-safe).
void EnsureCurlGlobalInit();

// A uv_timer_t owned by a C++ object: the handle lives on the heap and is freed in its close
// callback, so destroying the owner is always safe (even from inside the timer's own callback).
class UvTimer {
 public:
  explicit UvTimer(uv_loop_t* loop);
  ~UvTimer();
  UvTimer(const UvTimer&) = delete;
  UvTimer& operator=(const UvTimer&) = delete;

  // (Re)arms a one-shot timer. `fn` runs on the loop thread; it must not throw.
  void Start(std::uint64_t timeout_ms, std::function<void()> fn);
  void Stop();
  bool active() const noexcept;

 private:
  struct Handle;
  Handle* handle_;
};

class CurlMulti {
 public:
  // `result` is a CURLcode. Runs on the loop thread after the transfer has been removed from the
  // multi handle; may call Add/Remove or destroy the CurlMulti.
  using Completion = std::function<void(int result)>;

  explicit CurlMulti(uv_loop_t* loop);
  ~CurlMulti();
  CurlMulti(const CurlMulti&) = delete;
  CurlMulti& operator=(const CurlMulti&) = delete;

  // Adds a configured easy handle. False when curl refuses it (then `done` is never called).
  bool Add(CURL* easy, Completion done);
  // Removes a transfer without reporting it. No-op for an unknown handle.
  void Remove(CURL* easy);
  std::size_t size() const noexcept { return transfers_.size(); }

 private:
  struct Socket;
  static int OnSocket(CURL* easy, int fd, int what, void* userp, void* socketp) noexcept;
  static int OnTimer(CURLM* multi, long timeout_ms, void* userp) noexcept;
  static void OnPoll(uv_poll_t* poll, int status, int events) noexcept;
  static void ClosePoll(Socket* socket);
  void Action(int fd, int ev_bitmask);
  void ProcessDone();

  uv_loop_t* loop_;
  CURLM* multi_;
  UvTimer timer_;
  std::unordered_map<CURL*, Completion> transfers_;
  std::unordered_set<Socket*> sockets_;  // live poll records (freed by their close callbacks)
  std::shared_ptr<bool> alive_;          // expires when this object is destroyed
  bool destroying_ = false;
};

}  // namespace agentmesh::daemon::detail
