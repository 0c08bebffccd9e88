// The PostgreSQL backend of RegistryStore (store.hpp): the same schema, migrations and behaviour
// as the SQLite backend, over libpq (agentmesh_pg), for operators who run several registry
// replicas on one database.
#pragma once

#include <memory>
#include <string>

#include "store.hpp"

namespace agentmesh::registry {

// Connects to `uri` ("postgresql://…" or "postgres://…", libpq syntax). Does not migrate.
// kUnavailable when the server cannot be reached.
Result<std::unique_ptr<RegistryStore>> OpenPostgresStore(const std::string& uri);

}  // namespace agentmesh::registry
