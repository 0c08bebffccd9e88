#include "root_key.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/rng.hpp"

namespace agentmesh::registry {
namespace {

constexpr const char* kType = "agentmesh-registry-root-key";

Result<RootKey> Load(const std::filesystem::path& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) {
    return Fail(Code::kIo, fmt::format("cannot stat {}: {}", path.string(), std::strerror(errno)));
  }
  if ((st.st_mode & 077) != 0) {
    return Fail(Code::kPermissionDenied,
                fmt::format("{} is accessible by group or others (mode {:o}); chmod 600 it",
                            path.string(), st.st_mode & 0777));
  }
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  const auto doc = nlohmann::json::parse(text.str(), nullptr, false);
  const auto bad = [&](std::string_view why) {
    return Fail(Code::kCorrupt, fmt::format("{}: {}", path.string(), why));
  };
  if (!doc.is_object() || doc.value("type", "") != kType) return bad("not a registry root key");
  if (!doc.contains("seed") || !doc["seed"].is_string()) return bad("no seed");
  auto seed_bytes = Base64Decode(doc["seed"].get<std::string>());
  Ed25519Seed seed;
  if (!seed_bytes || !Ed25519Seed::FromBytes(*seed_bytes, seed)) return bad("malformed seed");
  RootKey key{Ed25519KeyPair::FromSeed(seed), path, false};
  if (doc.contains("public_key") &&
      (!doc["public_key"].is_string() ||
       doc["public_key"].get<std::string>() != FormatEd25519Key(key.pair.public_key))) {
    return bad("public_key does not match the seed");
  }
  return key;
}

}  // namespace

Result<RootKey> LoadOrCreateRootKey(const std::filesystem::path& state_dir) {
  const std::filesystem::path dir = state_dir / "keys";
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Fail(Code::kIo, fmt::format("cannot create {}: {}", dir.string(), std::strerror(errno)));
  }
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Fail(Code::kIo, fmt::format("{} is not a directory", dir.string()));
  }
  if ((st.st_mode & 077) != 0 && ::chmod(dir.c_str(), 0700) != 0) {
    return Fail(Code::kIo,
                fmt::format("cannot chmod 700 {}: {}", dir.string(), std::strerror(errno)));
  }
  const std::filesystem::path path = dir / "root.key";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) return Load(path);
    return Fail(Code::kIo,
                fmt::format("cannot create {}: {}", path.string(), std::strerror(errno)));
  }
  SystemRng rng;
  RootKey key{Ed25519KeyPair::Generate(rng), path, true};
  const Ed25519Seed seed = key.pair.Seed();
  const nlohmann::json doc = {{"type", kType},
                              {"version", 1},
                              {"seed", Base64Encode(seed.Expose())},
                              {"public_key", FormatEd25519Key(key.pair.public_key)}};
  const std::string text = doc.dump(2) + "\n";
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) &&
                  ::fsync(fd) == 0;
  ::close(fd);
  if (!ok) {
    ::unlink(path.c_str());
    return Fail(Code::kIo, fmt::format("cannot write {}", path.string()));
  }
  return key;
}

}  // namespace agentmesh::registry
