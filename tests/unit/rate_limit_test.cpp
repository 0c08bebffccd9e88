#include <catch2/catch.hpp>

#include "agentmesh/core/rate_limit.hpp"

using namespace agentmesh;

namespace {
constexpr UnixNanos kT0 = 1'770'000'000 * kNanosPerSecond;
constexpr UnixNanos kSec = kNanosPerSecond;
}  // namespace

TEST_CASE("a full bucket allows a burst of its capacity", "[ratelimit]") {
  TokenBucket b = TokenBucket::Full(5, 1, kT0);
  CHECK(b.Available(kT0) == 5);
  for (int i = 0; i < 5; ++i) CHECK(b.TryTake(kT0));
  CHECK_FALSE(b.TryTake(kT0));
  CHECK(b.Available(kT0) == Approx(0).margin(1e-12));
  // A failed take consumes nothing.
  CHECK_FALSE(b.TryTake(kT0));
  CHECK(b.tokens == Approx(0).margin(1e-12));
}

TEST_CASE("tokens refill with time up to capacity", "[ratelimit]") {
  TokenBucket b = TokenBucket::Full(4, 2, kT0);  // 2 tokens per second
  for (int i = 0; i < 4; ++i) REQUIRE(b.TryTake(kT0));
  CHECK(b.Available(kT0 + kSec / 4) == Approx(0.5));
  CHECK_FALSE(b.TryTake(kT0 + kSec / 4));
  CHECK(b.TryTake(kT0 + kSec / 2));  // 1 token
  CHECK_FALSE(b.TryTake(kT0 + kSec / 2));
  CHECK(b.Available(kT0 + 100 * kSec) == 4);  // capped
  CHECK(b.TryTake(kT0 + 100 * kSec, 4));
  CHECK_FALSE(b.TryTake(kT0 + 100 * kSec, 0.5));
  // Available() is const: it does not move `last` or `tokens`.
  const TokenBucket copy = b;
  (void)b.Available(kT0 + 1000 * kSec);
  CHECK(b == copy);
}

TEST_CASE("PerMinute: burst n, then n per minute", "[ratelimit]") {
  TokenBucket b = TokenBucket::PerMinute(30, kT0);
  CHECK(b.capacity == 30);
  CHECK(b.refill_per_second == Approx(0.5));
  for (int i = 0; i < 30; ++i) REQUIRE(b.TryTake(kT0));
  CHECK_FALSE(b.TryTake(kT0));
  CHECK(b.RetryAfter(kT0) == 2 * kSec);
  CHECK_FALSE(b.TryTake(kT0 + 2 * kSec - 1));
  CHECK(b.TryTake(kT0 + 2 * kSec));
  // Over one minute exactly 30 more.
  int taken = 0;
  for (UnixNanos t = kT0 + 2 * kSec; t <= kT0 + 62 * kSec; t += kSec / 10) taken += b.TryTake(t);
  CHECK(taken == 30);
}

TEST_CASE("RetryAfter is exact enough to succeed at the returned time", "[ratelimit]") {
  for (double per_minute : {1.0, 7.0, 30.0, 100.0, 999.0}) {
    INFO(per_minute);
    TokenBucket b = TokenBucket::PerMinute(per_minute, kT0);
    UnixNanos now = kT0;
    while (b.TryTake(now)) {
    }
    for (int i = 0; i < 20; ++i) {
      const UnixNanos wait = b.RetryAfter(now);
      REQUIRE(wait > 0);
      REQUIRE(wait != TokenBucket::kNever);
      CHECK_FALSE(b.Available(now + wait - 1) >= 1);  // 1 ns early: not yet
      now += wait;
      CHECK(b.TryTake(now));
      CHECK_FALSE(b.TryTake(now));
    }
  }
  TokenBucket b = TokenBucket::Full(3, 1, kT0);
  CHECK(b.RetryAfter(kT0) == 0);
  CHECK(b.RetryAfter(kT0, 3) == 0);
  CHECK(b.RetryAfter(kT0, 4) == TokenBucket::kNever);  // more than capacity
  REQUIRE(b.TryTake(kT0, 3));
  CHECK(b.RetryAfter(kT0, 2) == 2 * kSec);
  CHECK(b.RetryAfter(kT0 + kSec / 2, 1) == kSec / 2);
  TokenBucket frozen = TokenBucket::Full(1, 0, kT0);
  REQUIRE(frozen.TryTake(kT0));
  CHECK(frozen.RetryAfter(kT0) == TokenBucket::kNever);
  CHECK_FALSE(frozen.TryTake(kT0 + 1000 * kSec));
}

TEST_CASE("a clock going backwards mints no tokens", "[ratelimit]") {
  TokenBucket b = TokenBucket::Full(2, 1, kT0);
  REQUIRE(b.TryTake(kT0 + 10 * kSec, 2));  // empty at t0+10
  // Jump back: no refill, and `last` does not move back.
  CHECK_FALSE(b.TryTake(kT0));
  CHECK(b.last == kT0 + 10 * kSec);
  CHECK(b.Available(kT0) == Approx(0).margin(1e-12));
  // Back and forth repeatedly: only real forward time counts.
  for (int i = 0; i < 10; ++i) {
    (void)b.TryTake(kT0 + 10 * kSec + kSec / 2, 0);
    (void)b.TryTake(kT0 - 1000 * kSec, 0);
  }
  CHECK(b.Available(kT0 + 10 * kSec + kSec / 2) == Approx(0.5));
  CHECK(b.Available(kT0 + 11 * kSec) == Approx(1));
  // A caller whose clock is behind is told to wait until the bucket's time plus the refill.
  CHECK(b.RetryAfter(kT0 + 9 * kSec, 1) == 2 * kSec);
  CHECK(b.TryTake(kT0 + 11 * kSec));
}

TEST_CASE("degenerate bucket arguments", "[ratelimit]") {
  TokenBucket b = TokenBucket::Full(-3, -1, kT0);
  CHECK(b.capacity == 0);
  CHECK(b.refill_per_second == 0);
  CHECK_FALSE(b.TryTake(kT0));
  CHECK(b.TryTake(kT0, 0));  // taking nothing always succeeds
  TokenBucket n = TokenBucket::Full(std::numeric_limits<double>::quiet_NaN(), 1, kT0);
  CHECK(n.capacity == 0);
  // Extreme times do not overflow.
  TokenBucket e = TokenBucket::Full(1, 1, std::numeric_limits<UnixNanos>::min());
  REQUIRE(e.TryTake(std::numeric_limits<UnixNanos>::min()));
  CHECK(e.Available(std::numeric_limits<UnixNanos>::max()) == 1);
  CHECK(e.TryTake(std::numeric_limits<UnixNanos>::max()));
}
