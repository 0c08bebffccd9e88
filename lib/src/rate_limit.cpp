#include "agentmesh/core/rate_limit.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace agentmesh {
namespace {

// Absorbs floating-point rounding so that TryTake(now + RetryAfter(now, n), n) succeeds; far
// smaller than what one nanosecond of refill adds at any practical rate.
double Slack(double capacity) { return 1e-12 * std::max(1.0, capacity); }

double NonNegative(double x) { return (std::isnan(x) || x < 0) ? 0.0 : x; }

// Seconds from `from` to `to`, or 0 when `to` is not later. Exact difference (no int64 overflow).
double SecondsSince(UnixNanos from, UnixNanos to) {
  if (to <= from) return 0.0;
  const std::uint64_t ns = static_cast<std::uint64_t>(to) - static_cast<std::uint64_t>(from);
  return static_cast<double>(ns) / static_cast<double>(kNanosPerSecond);
}

}  // namespace

TokenBucket TokenBucket::Full(double capacity, double per_second, UnixNanos now) noexcept {
  const double cap = NonNegative(capacity);
  return TokenBucket{cap, NonNegative(per_second), cap, now};
}

TokenBucket TokenBucket::PerMinute(double n, UnixNanos now) noexcept {
  const double cap = NonNegative(n);
  return Full(cap, cap / 60.0, now);
}

double TokenBucket::Available(UnixNanos now) const noexcept {
  return std::min(capacity, tokens + SecondsSince(last, now) * refill_per_second);
}

bool TokenBucket::TryTake(UnixNanos now, double n) noexcept {
  if (now > last) {
    tokens = Available(now);
    last = now;
  }
  if (!(n > 0)) return true;
  if (tokens + Slack(capacity) < n) return false;
  tokens = std::max(0.0, tokens - n);
  return true;
}

UnixNanos TokenBucket::RetryAfter(UnixNanos now, double n) const noexcept {
  const double available = Available(now);
  if (!(n > 0) || available + Slack(capacity) >= n) return 0;
  if (n > capacity + Slack(capacity) || !(refill_per_second > 0)) return kNever;
  // Refill only accrues after `last`, so a caller whose clock is behind waits for it to catch up.
  const double behind = now < last ? SecondsSince(now, last) * 1e9 : 0.0;
  const double ns = behind + std::ceil((n - available) / refill_per_second * 1e9);
  if (!(ns < 9.2e18)) return kNever;
  return std::max<UnixNanos>(1, static_cast<UnixNanos>(ns));
}

}  // namespace agentmesh
