// RFC 3339 timestamps, computed without reading any clock.
//
// Time values are UnixNanos: signed nanoseconds since 1970-01-01T00:00:00Z. Callers pass "now" in.
//
//   ParseRfc3339    accepts "YYYY-MM-DDTHH:MM:SS[.fraction](Z|z|±HH:MM)", 't' allowed, 1..9 fraction
//                   digits, leap second 60 rejected, years 0000-9999; converts any offset to UTC.
//   FormatRfc3339Z  "2026-02-01T16:25:10.555Z"-style, fraction with 0, 3, 6 or 9 digits (shortest
//                   exact), as Rust's serde/chrono emits and as agentmesh/1 emits.
//   FormatChronoCanonical
//                   chrono's to_rfc3339() form: "+00:00" offset, fraction 0/3/6/9 digits — the
//                   string the reference relay/registry verify CONNECT signatures over.
//   FormatRfc3339Seconds
//                   whole seconds, "+00:00" offset ("2026-02-01T16:25:10+00:00"): the client-side
//                   choice that every reference verifier accepts.
//
// Thread-safety: pure. Errors: kInvalidArgument naming what is wrong.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "agentmesh/core/error.hpp"

namespace agentmesh {

using UnixNanos = std::int64_t;
inline constexpr UnixNanos kNanosPerSecond = 1'000'000'000;
inline constexpr UnixNanos kNanosPerMilli = 1'000'000;

Result<UnixNanos> ParseRfc3339(std::string_view text);
std::string FormatRfc3339Z(UnixNanos t);
std::string FormatChronoCanonical(UnixNanos t);
std::string FormatRfc3339Seconds(UnixNanos t);

}  // namespace agentmesh
