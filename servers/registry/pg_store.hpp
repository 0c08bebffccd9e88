// The PostgreSQL backend of RegistryStore (store.hpp): the same schema, migrations and behaviour
// as the SQLite backend, over libpq (agentmesh_pg), for operators who run several registry
// replicas on one database.
//
// Schema: the tables and column names of the SQLite backend (sqlite_store.cpp) with PostgreSQL
// types (int8 nanosecond times, 0/1 smallint flags, "C"-collated text so that ordering and
// capability prefix ranges are byte-wise as in SQLite). Versions are recorded in
// agentmesh_schema_version; Migrate() applies each missing version in its own transaction under
// a transaction-scoped advisory lock, so replicas that start together migrate once.
//
// Concurrency: the store keeps a pool of up to `connections` libpq connections (one per
// concurrent call; callers beyond that wait for one to come back). Every operation is one
// statement or one short READ COMMITTED transaction. TakeBundle consumes a one-time prekey with
// SELECT … FOR UPDATE SKIP LOCKED, so concurrent fetches, from one replica or several, never get
// the same one. Fixed statements are prepared once per connection (pg::Connection::ExecPrepared);
// searches are planned per call with their values. A call on a pooled connection that had gone
// stale (server restart) is retried once on a fresh connection.
//
// Errors: unique and other constraint violations (SQLSTATE class 23) are kConflict, a server
// that cannot be reached or drops the connection is kUnavailable (HTTP 503), other failures as
// documented in agentmesh/storage/postgres.hpp.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "store.hpp"

namespace agentmesh::registry {

struct PostgresStoreOptions {
  // Most connections open at once; match the number of threads that call the store (libuv's
  // worker pool: UV_THREADPOOL_SIZE, 4 by default).
  std::size_t connections = 4;
};

// Connects to `uri` ("postgresql://…" or "postgres://…", or a libpq keyword string) and keeps
// the connection for the pool. Does not migrate. kUnavailable when the server cannot be reached,
// kInvalidArgument when libpq cannot parse `uri`.
Result<std::unique_ptr<RegistryStore>> OpenPostgresStore(const std::string& uri,
                                                         const PostgresStoreOptions& options);
// As above with `connections` = $UV_THREADPOOL_SIZE when set (1..128), else 4.
Result<std::unique_ptr<RegistryStore>> OpenPostgresStore(const std::string& uri);

// The versioned schema, entry i taking version i to i + 1 (for tests that build a database at an
// older version and migrate it). Empty when built without libpq.
std::span<const std::string_view> PostgresMigrations();

// `url` fit for logs: the password of a postgresql:// URL ("user:secret@host") and any
// "password=" parameter value are replaced by "***"; other URLs come back unchanged.
std::string RedactDatabaseUrl(std::string_view url);

}  // namespace agentmesh::registry
