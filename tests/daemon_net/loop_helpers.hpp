// Loop-test helpers for the daemon_net tests: a uv loop that is run until a condition holds, and
// that must close clean at the end (every handle freed).
#pragma once

#include <uv.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <functional>

#include "agentmesh/core/timefmt.hpp"

namespace agentmesh::testing {

class TestLoop {
 public:
  TestLoop() { uv_loop_init(&loop_); }
  ~TestLoop() {
    // Let closing handles finish; a handle left open fails the test.
    for (int i = 0; i < 200 && uv_loop_alive(&loop_); ++i) uv_run(&loop_, UV_RUN_NOWAIT);
    const int rc = uv_loop_close(&loop_);
    CHECK(rc == 0);
    if (rc != 0) {
      uv_walk(
          &loop_, [](uv_handle_t* h, void*) { UNSCOPED_INFO("open handle type " << h->type); },
          nullptr);
    }
  }
  TestLoop(const TestLoop&) = delete;
  TestLoop& operator=(const TestLoop&) = delete;

  uv_loop_t* get() { return &loop_; }

  // Runs the loop until `done()` or `timeout`; returns done().
  bool RunUntil(const std::function<bool()>& done,
                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    uv_timer_t tick;
    uv_timer_init(&loop_, &tick);
    uv_timer_start(
        &tick, [](uv_timer_t*) {}, 5, 5);  // wakes the loop to re-check `done`
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (!done() && std::chrono::steady_clock::now() < deadline) uv_run(&loop_, UV_RUN_ONCE);
    uv_close(reinterpret_cast<uv_handle_t*>(&tick), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
    return done();
  }

  // Runs the loop for `d` regardless.
  void RunFor(std::chrono::milliseconds d) {
    RunUntil([] { return false; }, d);
  }

 private:
  uv_loop_t loop_;
};

inline UnixNanos WallNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace agentmesh::testing
