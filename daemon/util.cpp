#include "util.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/rng.hpp"

namespace agentmesh::daemon {
namespace {
LogLevel g_level = LogLevel::kInfo;
UnixNanos g_clock_offset = 0;
bool g_withhold_ratchet_acks = false;
}  // namespace

UnixNanos Now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
             .count() +
         g_clock_offset;
}

void SetClockOffset(UnixNanos offset) { g_clock_offset = offset; }

void SetWithholdRatchetAcks(bool on) { g_withhold_ratchet_acks = on; }
bool WithholdRatchetAcks() { return g_withhold_ratchet_acks; }

bool SdNotify(std::string_view state) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || *path == '\0') return false;
  const std::string_view name(path);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (name.size() >= sizeof addr.sun_path || (name[0] != '/' && name[0] != '@')) return false;
  std::memcpy(addr.sun_path, name.data(), name.size());
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
  if (name[0] == '@') {
    addr.sun_path[0] = '\0';  // abstract namespace: no terminating NUL counted
  } else {
    len += 1;
  }
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  const ssize_t n = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL,
                             reinterpret_cast<const sockaddr*>(&addr), len);
  ::close(fd);
  return n == static_cast<ssize_t>(state.size());
}

Result<SessionId> SessionIdFromUuid(std::string_view uuid) {
  if (uuid.size() != 36 || uuid[8] != '-' || uuid[13] != '-' || uuid[18] != '-' ||
      uuid[23] != '-') {
    return Fail(Code::kInvalidArgument, "not a UUID");
  }
  std::string hex;
  for (char c : uuid) {
    if (c != '-') hex.push_back(c);
  }
  auto bytes = HexDecode(hex);
  if (!bytes || bytes->size() != 16) return Fail(Code::kInvalidArgument, "not a UUID");
  SessionId id;
  SessionId::FromBytes(*bytes, id);
  return id;
}

std::string UuidFromSessionId(const SessionId& id) {
  const std::string hex = HexEncode(id.view());
  return fmt::format("{}-{}-{}-{}-{}", hex.substr(0, 8), hex.substr(8, 4), hex.substr(12, 4),
                     hex.substr(16, 4), hex.substr(20, 12));
}

std::string NewMessageId() {
  SystemRng rng;
  auto bytes = rng.Array<16>();
  return "m" + HexEncode(ByteView(bytes.data(), bytes.size()));
}

Result<std::string> ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) {
      return Fail(Code::kNotFound, fmt::format("{} does not exist", path.string()));
    }
    return Fail(Code::kIo, fmt::format("cannot read {}", path.string()));
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

Result<void> WriteFileAtomic(const std::filesystem::path& path, std::string_view data,
                             unsigned mode) {
  const std::string tmp = path.string() + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) {
    return Fail(Code::kIo, fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
  }
  ::fchmod(fd, mode);
  std::size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = ::write(fd, data.data() + off, data.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      return Fail(Code::kIo, fmt::format("cannot write {}: {}", tmp, std::strerror(err)));
    }
    off += static_cast<std::size_t>(n);
  }
  ::fsync(fd);
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    return Fail(Code::kIo, fmt::format("cannot rename {}: {}", tmp, std::strerror(errno)));
  }
  return {};
}

Result<void> MakeDirs(const std::filesystem::path& path, unsigned mode) {
  std::filesystem::path current;
  for (const auto& part : path) {
    current /= part;
    if (current.empty() || current == "/") continue;
    if (::mkdir(current.c_str(), mode) != 0 && errno != EEXIST) {
      return Fail(Code::kIo,
                  fmt::format("cannot create {}: {}", current.string(), std::strerror(errno)));
    }
  }
  return {};
}

Result<void> MakePrivateDir(const std::filesystem::path& path) {
  struct stat st {};
  if (::lstat(path.c_str(), &st) != 0) {
    return Fail(Code::kIo, fmt::format("cannot read {}: {}", path.string(), std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return Fail(
        Code::kConflict,
        fmt::format("{} is not a directory (a symlink is not accepted either)", path.string()));
  }
  if (st.st_uid != ::getuid()) {
    return Fail(Code::kPermissionDenied,
                fmt::format("{} belongs to uid {}, not to this user (uid {}): remove it or choose "
                            "another --socket",
                            path.string(), st.st_uid, ::getuid()));
  }
  if ((st.st_mode & 07777) != 0700 && ::chmod(path.c_str(), 0700) != 0) {
    return Fail(Code::kIo, fmt::format("cannot make {} private (0700): {}", path.string(),
                                       std::strerror(errno)));
  }
  return {};
}

void SetLogLevel(LogLevel level) { g_level = level; }

Result<LogLevel> ParseLogLevel(std::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warn") return LogLevel::kWarn;
  if (name == "error") return LogLevel::kError;
  return Fail(Code::kInvalidArgument, "must be debug, info, warn or error", "log_level");
}

void Log(LogLevel level, std::string_view message) {
  if (level < g_level) return;
  static constexpr const char* kNames[] = {"DEBUG", "INFO", "WARN", "ERROR"};
  const std::string line =
      fmt::format("{} agentmeshd {} {}\n", FormatRfc3339Z(Now() / kNanosPerMilli * kNanosPerMilli),
                  kNames[static_cast<int>(level)], message);
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
}

}  // namespace agentmesh::daemon
