#include "log.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>

#include "agentmesh/core/timefmt.hpp"

namespace agentmesh::registry {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};

}  // namespace

void SetLogLevel(LogLevel level) { g_level = static_cast<int>(level); }

LogLevel ParseLogLevel(const std::string& name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "warn") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= g_level.load(); }

void Log(LogLevel level, std::string_view message) {
  if (!LogEnabled(level)) return;
  static constexpr const char* kNames[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  std::fprintf(stderr, "%s amesh-registry %s %.*s\n",
               FormatRfc3339Z(static_cast<UnixNanos>(now) * kNanosPerMilli).c_str(),
               kNames[static_cast<int>(level)], static_cast<int>(message.size()), message.data());
}

}  // namespace agentmesh::registry
