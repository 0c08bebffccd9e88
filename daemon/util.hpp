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

// Wall clock (system_clock) as UnixNanos, plus the test-only offset below.
UnixNanos Now();
// Test-only (agentmeshd's hidden --test-clock-offset): shifts Now() by `offset`. Only the daemon's
// own clock moves (prekey ages, session TTLs, KNOCK/envelope timestamps); requests to the
// registry and the relay keep the real clock. Call before the loop starts.
void SetClockOffset(UnixNanos offset);
// Test-only (hidden --test-withhold-acks): relay messages a session's ratchet accepted are never
// acked, so the relay delivers them again after a reconnect. Call before the loop starts.
void SetWithholdRatchetAcks(bool on);
bool WithholdRatchetAcks();

// systemd's readiness protocol (sd_notify(3)) without libsystemd: sends `state` (e.g. "READY=1")
// as one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for the
// abstract namespace). No-op when the variable is unset; errors are ignored (returns false).
bool SdNotify(std::string_view state);

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
// Checks that `path` is a directory (not a symlink) owned by this uid, and makes it mode 0700.
// Errors: kIo (cannot stat or chmod), kConflict (not a directory), kPermissionDenied (another
// owner).
Result<void> MakePrivateDir(const std::filesystem::path& path);

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
