// Small helpers every bench program shares: medians, percentiles, wall time, and rates printed
// for people. Header-only; no state.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace agentmesh::bench {

// The median of `v` (the mean of the two middle values for an even count); 0 when empty.
inline double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// The p-quantile (0 <= p <= 1, nearest rank) of `v`, which it reorders; 0 when empty.
inline double Percentile(std::vector<std::uint64_t>& v, double p) {
  if (v.empty()) return 0;
  const std::size_t k =
      std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return static_cast<double>(v[k]);
}

// Nanoseconds since the Unix epoch, from the system clock.
inline std::int64_t WallNowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// "1.23 M/s", "45.6 k/s" or "789 /s".
inline std::string Human(double ops) {
  char buf[32];
  if (ops >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2f M/s", ops / 1e6);
  } else if (ops >= 1e3) {
    std::snprintf(buf, sizeof buf, "%.1f k/s", ops / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f /s", ops);
  }
  return buf;
}

}  // namespace agentmesh::bench
