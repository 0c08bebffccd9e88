// Logging to stderr, one line per event: "2026-11-23T10:00:00.123Z amesh-registry INFO message".
// Thread-safety: any thread (each line is one fprintf); the level is an atomic.
#pragma once

#include <string>
#include <string_view>

namespace agentmesh::registry {

enum class LogLevel { kDebug, kInfo, kWarn, kError };
void SetLogLevel(LogLevel level);
LogLevel ParseLogLevel(const std::string& name);  // unknown names mean info
bool LogEnabled(LogLevel level);
void Log(LogLevel level, std::string_view message);

}  // namespace agentmesh::registry
