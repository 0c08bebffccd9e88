// The embedded SQLite backend of RegistryStore (the default).
//
// One writer connection, guarded by a mutex, runs every write (SQLite admits one writer at a
// time anyway). Reads run on a small pool of reader connections, which WAL lets proceed while
// the writer commits. An in-memory database (":memory:") cannot be shared between connections,
// so it uses the writer for everything.
//
// Thread-safety: all methods, from any thread (see store.hpp).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "store.hpp"

namespace agentmesh::registry {

// The versioned schema, entry i taking user_version i to i + 1 (for tests that build a database
// at an older version and migrate it).
std::span<const std::string_view> SqliteMigrations();

struct SqliteStoreOptions {
  std::string path;  // file path or ":memory:"
  int reader_connections = 4;
  bool fsync_full = false;  // synchronous=FULL (survives power loss) instead of NORMAL
};

Result<std::unique_ptr<RegistryStore>> OpenSqliteStore(const SqliteStoreOptions& options);

}  // namespace agentmesh::registry
