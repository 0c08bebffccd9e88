#include "agentmesh/core/timefmt.hpp"

#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

namespace agentmesh {
namespace {

constexpr std::int64_t kSecondsPerDay = 86'400;

// Howard Hinnant's days_from_civil: days since 1970-01-01 in the proleptic Gregorian calendar.
constexpr std::int64_t DaysFromCivil(std::int64_t y, unsigned m, unsigned d) noexcept {
  y -= m <= 2 ? 1 : 0;
  const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
  const auto yoe = static_cast<unsigned>(y - era * 400);                 // [0, 399]
  const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;  // [0, 365]
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;            // [0, 146096]
  return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

struct Civil {
  std::int64_t year;
  unsigned month;
  unsigned day;
};

// Inverse of DaysFromCivil.
constexpr Civil CivilFromDays(std::int64_t z) noexcept {
  z += 719468;
  const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const auto doe = static_cast<unsigned>(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  const unsigned d = doy - (153 * mp + 2) / 5 + 1;
  const unsigned m = mp < 10 ? mp + 3 : mp - 9;
  const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400 + (m <= 2 ? 1 : 0);
  return {y, m, d};
}

static_assert(DaysFromCivil(1970, 1, 1) == 0);
static_assert(CivilFromDays(0).year == 1970);

constexpr bool IsLeapYear(std::int64_t y) noexcept {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

constexpr unsigned DaysInMonth(std::int64_t y, unsigned m) noexcept {
  constexpr unsigned kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && IsLeapYear(y) ? 29 : kDays[m - 1];
}

// Reads exactly `count` ASCII digits at text[pos]; advances pos.
bool ReadDigits(std::string_view text, std::size_t& pos, std::size_t count, int& value) {
  if (pos > text.size() || text.size() - pos < count) return false;
  value = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const char c = text[pos + i];
    if (c < '0' || c > '9') return false;
    value = value * 10 + (c - '0');
  }
  pos += count;
  return true;
}

bool Expect(std::string_view text, std::size_t& pos, char c) {
  if (pos >= text.size() || text[pos] != c) return false;
  ++pos;
  return true;
}

struct Split {
  std::int64_t seconds;  // floor(t / 1e9)
  std::int64_t nanos;    // [0, 1e9)
};

Split SplitNanos(UnixNanos t) noexcept {
  std::int64_t seconds = t / kNanosPerSecond;
  std::int64_t nanos = t % kNanosPerSecond;
  if (nanos < 0) {
    nanos += kNanosPerSecond;
    seconds -= 1;
  }
  return {seconds, nanos};
}

// "YYYY-MM-DDTHH:MM:SS" plus the shortest of 0/3/6/9 fraction digits that is exact.
std::string FormatBase(UnixNanos t, bool with_fraction) {
  const Split split = SplitNanos(t);
  std::int64_t days = split.seconds / kSecondsPerDay;
  std::int64_t secs_of_day = split.seconds % kSecondsPerDay;
  if (secs_of_day < 0) {
    secs_of_day += kSecondsPerDay;
    days -= 1;
  }
  const Civil civil = CivilFromDays(days);
  std::string out =
      fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", civil.year, civil.month, civil.day,
                  secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
  if (with_fraction && split.nanos != 0) {
    if (split.nanos % 1'000'000 == 0) {
      out += fmt::format(".{:03}", split.nanos / 1'000'000);
    } else if (split.nanos % 1'000 == 0) {
      out += fmt::format(".{:06}", split.nanos / 1'000);
    } else {
      out += fmt::format(".{:09}", split.nanos);
    }
  }
  return out;
}

}  // namespace

Result<UnixNanos> ParseRfc3339(std::string_view text) {
  const auto bad = [](std::string what) {
    return Fail(Code::kInvalidArgument, "invalid RFC 3339 timestamp: " + what);
  };
  std::size_t pos = 0;
  int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0;
  if (!ReadDigits(text, pos, 4, year) || !Expect(text, pos, '-')) return bad("expected YYYY-");
  if (!ReadDigits(text, pos, 2, month) || !Expect(text, pos, '-')) return bad("expected MM-");
  if (!ReadDigits(text, pos, 2, day)) return bad("expected DD");
  if (!Expect(text, pos, 'T') && !Expect(text, pos, 't')) return bad("expected 'T' after the date");
  if (!ReadDigits(text, pos, 2, hour) || !Expect(text, pos, ':')) return bad("expected HH:");
  if (!ReadDigits(text, pos, 2, minute) || !Expect(text, pos, ':')) return bad("expected MM:");
  if (!ReadDigits(text, pos, 2, second)) return bad("expected SS");

  std::int64_t nanos = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    std::size_t digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (++digits > 9) return bad("more than 9 fraction digits");
      nanos = nanos * 10 + (text[pos] - '0');
      ++pos;
    }
    if (digits == 0) return bad("empty fraction");
    for (std::size_t i = digits; i < 9; ++i) nanos *= 10;
  }

  std::int64_t offset_seconds = 0;
  if (pos >= text.size()) return bad("missing offset (Z or +HH:MM)");
  if (text[pos] == 'Z' || text[pos] == 'z') {
    ++pos;
  } else if (text[pos] == '+' || text[pos] == '-') {
    const bool negative = text[pos] == '-';
    ++pos;
    int off_hour = 0, off_minute = 0;
    if (!ReadDigits(text, pos, 2, off_hour) || !Expect(text, pos, ':') ||
        !ReadDigits(text, pos, 2, off_minute)) {
      return bad("offset must be +HH:MM or -HH:MM");
    }
    if (off_hour > 23 || off_minute > 59) return bad("offset out of range");
    offset_seconds = (off_hour * 3600 + off_minute * 60) * (negative ? -1 : 1);
  } else {
    return bad("missing offset (Z or +HH:MM)");
  }
  if (pos != text.size()) return bad("trailing characters");

  if (month < 1 || month > 12) return bad("month out of range");
  if (day < 1 || static_cast<unsigned>(day) > DaysInMonth(year, static_cast<unsigned>(month))) {
    return bad("day out of range");
  }
  if (hour > 23) return bad("hour out of range");
  if (minute > 59) return bad("minute out of range");
  if (second > 59) return bad("second out of range (leap seconds are not accepted)");

  // Exact in int64 for years 0000-9999; only the nanosecond scaling can overflow.
  const std::int64_t seconds =
      DaysFromCivil(year, static_cast<unsigned>(month), static_cast<unsigned>(day)) *
          kSecondsPerDay +
      hour * 3600 + minute * 60 + second - offset_seconds;
  std::int64_t result = 0;
  if (__builtin_mul_overflow(seconds, kNanosPerSecond, &result) ||
      __builtin_add_overflow(result, nanos, &result)) {
    // seconds * 1e9 may underflow while seconds * 1e9 + nanos still fits: retry one second up.
    if (seconds >= 0 || __builtin_mul_overflow(seconds + 1, kNanosPerSecond, &result) ||
        __builtin_add_overflow(result, nanos - kNanosPerSecond, &result)) {
      return bad("outside the representable range (1677-09-21 .. 2262-04-11)");
    }
  }
  return result;
}

std::string FormatRfc3339Z(UnixNanos t) { return FormatBase(t, true) + "Z"; }

std::string FormatChronoCanonical(UnixNanos t) { return FormatBase(t, true) + "+00:00"; }

std::string FormatRfc3339Seconds(UnixNanos t) { return FormatBase(t, false) + "+00:00"; }

}  // namespace agentmesh
