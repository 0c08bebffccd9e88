#include "pg_store.hpp"

namespace agentmesh::registry {

Result<std::unique_ptr<RegistryStore>> OpenPostgresStore(const std::string& /*uri*/) {
  return Fail(Code::kUnavailable, "the PostgreSQL backend is not built into this program yet",
              "db");
}

}  // namespace agentmesh::registry
