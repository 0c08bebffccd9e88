#include "store.hpp"

#include "pg_store.hpp"
#include "sqlite_store.hpp"

namespace agentmesh::registry {

std::string_view ToString(Presence presence) noexcept {
  switch (presence) {
    case Presence::kOnline:
      return "online";
    case Presence::kAway:
      return "away";
    case Presence::kOffline:
      return "offline";
    case Presence::kDnd:
      return "dnd";
  }
  return "offline";
}

Result<Presence> PresenceFromName(std::string_view name) {
  if (name == "online") return Presence::kOnline;
  if (name == "away") return Presence::kAway;
  if (name == "offline") return Presence::kOffline;
  if (name == "dnd") return Presence::kDnd;
  return Fail(Code::kInvalidArgument, "must be online, away, offline or dnd");
}

Result<std::unique_ptr<RegistryStore>> OpenStore(const std::string& url) {
  if (url.starts_with("sqlite:")) {
    SqliteStoreOptions options;
    options.path = url.substr(7);
    if (options.path.starts_with("//")) options.path = options.path.substr(2);
    if (options.path.empty()) return Fail(Code::kInvalidArgument, "sqlite: needs a path", "db");
    return OpenSqliteStore(options);
  }
  if (url.starts_with("postgresql://") || url.starts_with("postgres://")) {
    return OpenPostgresStore(url);
  }
  return Fail(Code::kInvalidArgument, "must be sqlite:PATH or postgresql://...", "db");
}

}  // namespace agentmesh::registry
