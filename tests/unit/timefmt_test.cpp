#include <catch2/catch.hpp>

#include <cstdint>
#include <limits>
#include <string>

#include "agentmesh/core/timefmt.hpp"

using namespace agentmesh;

namespace {

// Seconds values cross-checked with Python's datetime.fromisoformat(...).timestamp().
constexpr UnixNanos kT2026 = 1'769'963'110 * kNanosPerSecond;  // 2026-02-01T16:25:10Z

UnixNanos Parsed(std::string_view text) {
  auto r = ParseRfc3339(text);
  INFO(text << (r ? std::string() : " -> " + r.error().ToString()));
  REQUIRE(r);
  return *r;
}

}  // namespace

TEST_CASE("chrono canonical form of the reference examples", "[time]") {
  CHECK(FormatChronoCanonical(Parsed("2026-02-01T16:25:10.555Z")) ==
        "2026-02-01T16:25:10.555+00:00");
  CHECK(FormatChronoCanonical(Parsed("2026-02-01T16:25:10.000Z")) == "2026-02-01T16:25:10+00:00");
  CHECK(FormatChronoCanonical(Parsed("2026-02-01T18:25:10.555+02:00")) ==
        "2026-02-01T16:25:10.555+00:00");
  CHECK(FormatChronoCanonical(Parsed("2026-02-01T16:25:10.555123Z")) ==
        "2026-02-01T16:25:10.555123+00:00");
  CHECK(FormatChronoCanonical(Parsed("2026-02-01T16:25:10.555123456Z")) ==
        "2026-02-01T16:25:10.555123456+00:00");
  CHECK(Parsed("2026-02-01T16:25:10.555Z") == kT2026 + 555 * kNanosPerMilli);
}

TEST_CASE("parsing: offsets, fractions and case", "[time]") {
  CHECK(Parsed("2026-02-01T16:25:10Z") == kT2026);
  CHECK(Parsed("2026-02-01t16:25:10z") == kT2026);
  CHECK(Parsed("2026-02-01T16:25:10+00:00") == kT2026);
  CHECK(Parsed("2026-02-01T16:25:10-00:00") == kT2026);
  CHECK(Parsed("2026-02-01T11:10:10-05:15") == kT2026);
  CHECK(Parsed("2026-02-02T03:25:10+11:00") == kT2026);  // offset crosses a day boundary
  CHECK(Parsed("2026-02-01T16:25:10.5Z") == kT2026 + 500 * kNanosPerMilli);
  CHECK(Parsed("2026-02-01T16:25:10.000000001Z") == kT2026 + 1);
  CHECK(Parsed("1970-01-01T00:00:00Z") == 0);
}

TEST_CASE("FormatRfc3339Z uses 0, 3, 6 or 9 fraction digits", "[time]") {
  CHECK(FormatRfc3339Z(kT2026) == "2026-02-01T16:25:10Z");
  CHECK(FormatRfc3339Z(kT2026 + 555 * kNanosPerMilli) == "2026-02-01T16:25:10.555Z");
  CHECK(FormatRfc3339Z(kT2026 + 500 * kNanosPerMilli) == "2026-02-01T16:25:10.500Z");
  CHECK(FormatRfc3339Z(kT2026 + 555'123'000) == "2026-02-01T16:25:10.555123Z");
  CHECK(FormatRfc3339Z(kT2026 + 1'000) == "2026-02-01T16:25:10.000001Z");
  CHECK(FormatRfc3339Z(kT2026 + 555'123'456) == "2026-02-01T16:25:10.555123456Z");
  CHECK(FormatRfc3339Z(kT2026 + 1) == "2026-02-01T16:25:10.000000001Z");
  CHECK(FormatRfc3339Z(0) == "1970-01-01T00:00:00Z");
}

TEST_CASE("FormatRfc3339Seconds drops the fraction", "[time]") {
  CHECK(FormatRfc3339Seconds(kT2026 + 999 * kNanosPerMilli) == "2026-02-01T16:25:10+00:00");
  CHECK(FormatRfc3339Seconds(-1) == "1969-12-31T23:59:59+00:00");  // floors, never rounds up
}

TEST_CASE("times before 1970", "[time]") {
  CHECK(FormatRfc3339Z(-1) == "1969-12-31T23:59:59.999999999Z");
  CHECK(FormatRfc3339Z(-kNanosPerSecond) == "1969-12-31T23:59:59Z");
  CHECK(FormatRfc3339Z(-kNanosPerMilli) == "1969-12-31T23:59:59.999Z");
  CHECK(Parsed("1969-12-31T23:59:59.999999999Z") == -1);
  CHECK(Parsed("1969-07-20T20:17:40Z") == -14'182'940 * kNanosPerSecond);
  CHECK(Parsed("1900-01-01T00:00:00Z") == -2'208'988'800 * kNanosPerSecond);
  CHECK(FormatRfc3339Z(-2'208'988'800 * kNanosPerSecond) == "1900-01-01T00:00:00Z");
}

TEST_CASE("the whole int64 range round trips at its ends", "[time]") {
  constexpr UnixNanos kMin = std::numeric_limits<UnixNanos>::min();
  constexpr UnixNanos kMax = std::numeric_limits<UnixNanos>::max();
  CHECK(FormatRfc3339Z(kMin) == "1677-09-21T00:12:43.145224192Z");
  CHECK(FormatRfc3339Z(kMax) == "2262-04-11T23:47:16.854775807Z");
  CHECK(Parsed(FormatRfc3339Z(kMin)) == kMin);
  CHECK(Parsed(FormatRfc3339Z(kMax)) == kMax);
  CHECK_FALSE(ParseRfc3339("1677-09-21T00:12:43.145224191Z"));
  CHECK_FALSE(ParseRfc3339("2262-04-11T23:47:16.854775808Z"));
  CHECK_FALSE(ParseRfc3339("0000-01-01T00:00:00Z"));
  CHECK_FALSE(ParseRfc3339("9999-12-31T23:59:59Z"));
}

TEST_CASE("leap years", "[time]") {
  CHECK(Parsed("2000-02-29T12:00:00Z") == 951'825'600 * kNanosPerSecond);
  CHECK(FormatRfc3339Z(951'825'600 * kNanosPerSecond) == "2000-02-29T12:00:00Z");
  CHECK(Parsed("2024-02-29T00:00:00Z") + 86'400 * kNanosPerSecond ==
        Parsed("2024-03-01T00:00:00Z"));
  CHECK(Parsed("2023-02-28T00:00:00Z") + 86'400 * kNanosPerSecond ==
        Parsed("2023-03-01T00:00:00Z"));
  CHECK_FALSE(ParseRfc3339("2100-02-29T00:00:00Z"));
  CHECK_FALSE(ParseRfc3339("2023-02-29T00:00:00Z"));
  CHECK_FALSE(ParseRfc3339("1900-02-29T00:00:00Z"));
  CHECK_FALSE(ParseRfc3339("2024-02-30T00:00:00Z"));
  CHECK_FALSE(ParseRfc3339("2024-04-31T00:00:00Z"));
}

TEST_CASE("format and parse agree across many instants", "[time]") {
  // Walk ~600 years in irregular steps, covering every month length and fraction width.
  for (UnixNanos t = std::numeric_limits<UnixNanos>::min() + 12'345;
       t < std::numeric_limits<UnixNanos>::max() - 3'000'000'000'000'000'000LL;
       t += 2'999'999'937'123'456'789LL / 1024) {
    INFO(t);
    CHECK(Parsed(FormatRfc3339Z(t)) == t);
    CHECK(Parsed(FormatChronoCanonical(t)) == t);
  }
}

TEST_CASE("malformed timestamps are rejected", "[time]") {
  const char* bad[] = {
      "",
      "2026-02-01T16:25:10",              // missing offset
      "2026-02-01T16:25:10.555",          // missing offset after a fraction
      "2026-13-01T16:25:10Z",             // month 13
      "2026-00-01T16:25:10Z",             // month 0
      "2026-01-32T16:25:10Z",             // day 32
      "2026-01-00T16:25:10Z",             // day 0
      "2026-02-01T24:00:00Z",             // hour 24
      "2026-02-01T16:60:10Z",             // minute 60
      "2026-02-01T16:25:60Z",             // leap second
      "2026-02-01T16:25:10.1234567890Z",  // 10 fraction digits
      "2026-02-01T16:25:10.Z",            // empty fraction
      "2026-02-01T16:25:10Zjunk",         // trailing junk
      "2026-02-01T16:25:10Z ",
      " 2026-02-01T16:25:10Z",
      "2026-02-01 16:25:10Z",      // space separator
      "2026-02-01T16:25Z",         // no seconds
      "26-02-01T16:25:10Z",        // two-digit year
      "2026-2-01T16:25:10Z",       // one-digit month
      "2026-02-01T16:25:10+0200",  // offset without colon
      "2026-02-01T16:25:10+02",
      "2026-02-01T16:25:10+24:00",  // offset hour out of range
      "2026-02-01T16:25:10+02:60",
      "2026-02-01T16:25:10UTC",
      "+2026-02-01T16:25:10Z",
      "2026-02-01T16:25:1aZ",
      "2026/02/01T16:25:10Z",
  };
  for (const char* text : bad) {
    INFO("'" << text << "'");
    auto r = ParseRfc3339(text);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
}
