#include "agentmesh/rpc/paths.hpp"

#include <pwd.h>
#include <stdlib.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>

namespace agentmesh::rpc {
namespace {

std::optional<std::string> NonEmpty(const std::optional<std::string>& value) {
  if (value && !value->empty()) return value;
  return std::nullopt;
}

std::string UserHome(const Environment& env) {
  if (auto home = NonEmpty(env("HOME"))) return *home;
  // getpwuid_r with a fixed buffer: enough for any sane passwd entry.
  passwd entry{};
  passwd* result = nullptr;
  char buffer[4096];
  if (::getpwuid_r(::getuid(), &entry, buffer, sizeof buffer, &result) == 0 && result != nullptr &&
      result->pw_dir != nullptr && result->pw_dir[0] != '\0') {
    return result->pw_dir;
  }
  return "/";
}

}  // namespace

Environment ProcessEnvironment() {
  return [](std::string_view name) -> std::optional<std::string> {
    const char* value = ::getenv(std::string(name).c_str());
    if (value == nullptr) return std::nullopt;
    return std::string(value);
  };
}

std::string ResolveHome(const std::optional<std::string>& home_flag, const Environment& env) {
  if (auto flag = NonEmpty(home_flag)) return *flag;
  if (auto home = NonEmpty(env(kEnvHome))) return *home;
  return (std::filesystem::path(UserHome(env)) / ".agentmesh").string();
}

std::string ResolveSocketPath(const std::optional<std::string>& socket_flag,
                              const std::optional<std::string>& home_flag, const Environment& env) {
  if (auto flag = NonEmpty(socket_flag)) return *flag;
  if (auto socket = NonEmpty(env(kEnvSocket))) return *socket;
  // A chosen home owns its socket, so two daemons with different homes never share one.
  if (NonEmpty(home_flag) || NonEmpty(env(kEnvHome))) {
    return (std::filesystem::path(ResolveHome(home_flag, env)) / kSocketFileName).string();
  }
  if (auto runtime = NonEmpty(env(kEnvRuntimeDir))) {
    return (std::filesystem::path(*runtime) / "agentmesh" / kSocketFileName).string();
  }
  return (std::filesystem::path(ResolveHome(home_flag, env)) / kSocketFileName).string();
}

std::size_t MaxSocketPathLength() noexcept { return sizeof(sockaddr_un::sun_path) - 1; }

}  // namespace agentmesh::rpc
