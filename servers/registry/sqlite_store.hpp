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
#include <string>

#include "store.hpp"

namespace agentmesh::registry {

struct SqliteStoreOptions {
  std::string path;  // file path or ":memory:"
  int reader_connections = 4;
  bool fsync_full = false;  // synchronous=FULL (survives power loss) instead of NORMAL
};

Result<std::unique_ptr<RegistryStore>> OpenSqliteStore(const SqliteStoreOptions& options);

}  // namespace agentmesh::registry
