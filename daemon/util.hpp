// Small helpers shared by the daemon's files: wall clock, session-id conversions, files and
// logging. Loop thread only unless stated.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/ratchet.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh::daemon {

inline constexpr const char* kVersion = "0.1.0";

// An Error value (Error{} aggregate initialisation without naming `field`).
inline Error MakeError(Code code, std::string message, std::string field = {}) {
  return Error{code, std::move(message), std::move(field)};
}

// Wall clock (system_clock) as UnixNanos.
UnixNanos Now();

// The 16 ratchet session-id bytes of a canonical UUID text, and back. kInvalidArgument for text
// that is not 32 hex digits in 8-4-4-4-12 form.
Result<SessionId> SessionIdFromUuid(std::string_view uuid);
std::string UuidFromSessionId(const SessionId& id);

// A random relay client message id: "m" followed by 32 hex digits.
std::string NewMessageId();

// Reads a whole file. kNotFound when it does not exist, kIo otherwise.
Result<std::string> ReadFile(const std::filesystem::path& path);
// Writes `data` to path.tmp with `mode`, fsyncs it and renames it over `path`.
Result<void> WriteFileAtomic(const std::filesystem::path& path, std::string_view data,
                             unsigned mode = 0600);
// mkdir -p with `mode` for every directory created (existing ones are left alone).
Result<void> MakeDirs(const std::filesystem::path& path, unsigned mode = 0700);

// ---- Logging: "2026-11-24T10:00:00.123Z agentmeshd INFO message" on stderr (which is the log
// file once daemonized). Messages must never contain secret material.
enum class LogLevel { kDebug, kInfo, kWarn, kError };
void SetLogLevel(LogLevel level);
Result<LogLevel> ParseLogLevel(std::string_view name);
void Log(LogLevel level, std::string_view message);
inline void LogDebug(std::string_view m) { Log(LogLevel::kDebug, m); }
inline void LogInfo(std::string_view m) { Log(LogLevel::kInfo, m); }
inline void LogWarn(std::string_view m) { Log(LogLevel::kWarn, m); }
inline void LogError(std::string_view m) { Log(LogLevel::kError, m); }

}  // namespace agentmesh::daemon
