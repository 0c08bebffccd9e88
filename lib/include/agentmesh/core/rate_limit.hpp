// Token-bucket rate limiting as a plain value (no clock, no locking).
//
// A bucket holds up to `capacity` tokens and gains `refill_per_second` tokens per second of time
// passed in by the caller, never exceeding `capacity`. Taking n tokens succeeds only when n are
// available; a failed take consumes nothing. Tokens are fractional (doubles), so a bucket refilling
// 30 per minute has half a token after one second.
//
// Time is UnixNanos supplied by the caller (see timefmt.hpp). The bucket remembers the latest time
// it has accounted for (`last`). If the caller's clock goes backwards (now < last), that call sees
// no refill and `last` stays where it was: the same stretch of time is never credited twice, so a
// clock that jumps back and forth cannot mint tokens.
//
// Typical use (the daemon keeps one bucket per sender AMID in its own bounded map):
//
//   TokenBucket bucket = TokenBucket::PerMinute(policy.rate_limit.knocks_per_minute, now);
//   ...
//   if (!bucket.TryTake(now)) reject with retry_after = bucket.RetryAfter(now);
//
// Floating-point slack: a take succeeds when the available amount is within 1e-12 × max(1,
// capacity) tokens of n, so that TryTake(now + RetryAfter(now, n), n) always succeeds despite
// rounding.
//
// Thread-safety: a value type; synchronise externally if shared (the daemon uses it on its loop
// thread only). All functions are noexcept and never allocate.
#pragma once

#include <limits>

#include "agentmesh/core/timefmt.hpp"

namespace agentmesh {

struct TokenBucket {
  // Returned by RetryAfter when the request can never be satisfied (n > capacity or no refill).
  static constexpr UnixNanos kNever = std::numeric_limits<UnixNanos>::max();

  double capacity = 0;           // maximum tokens (the burst size); >= 0
  double refill_per_second = 0;  // tokens gained per second; >= 0
  double tokens = 0;             // tokens available as of `last`, in [0, capacity]
  UnixNanos last = 0;            // the latest time accounted for

  // A bucket holding `capacity` tokens at `now`. Negative or NaN arguments are treated as 0.
  static TokenBucket Full(double capacity, double per_second, UnixNanos now) noexcept;

  // Full(n, n / 60, now): a burst of n, then n per minute.
  static TokenBucket PerMinute(double n, UnixNanos now) noexcept;

  // Refills up to `now`, then takes `n` tokens if available. Returns whether it took them; on
  // false the token count is unchanged (apart from the refill). n <= 0 always succeeds.
  bool TryTake(UnixNanos now, double n = 1) noexcept;

  // Tokens that would be available at `now` (does not modify the bucket).
  double Available(UnixNanos now) const noexcept;

  // Nanoseconds from `now` until `n` tokens will be available: 0 if they are available now,
  // kNever if n > capacity or the bucket does not refill. Rounded up to a whole nanosecond.
  UnixNanos RetryAfter(UnixNanos now, double n = 1) const noexcept;

  friend bool operator==(const TokenBucket&, const TokenBucket&) = default;
};

}  // namespace agentmesh
