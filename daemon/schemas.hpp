// Payload schema validation: the standard payload schemas of TECHNICAL_SPEC §6.4 as built-in
// JSON Schema Draft-07 documents, checked with valijson.
//
// A payload names its schema in a top-level "schema" string member
// ({"schema": "agentmesh/travel/flight-results/v1", …}). Payloads without one, or naming a
// custom ("x-<namespace>/…") or unknown schema, are not checked. config.json `schema_validation`:
//   off     nothing is checked;
//   warn    violations are logged and audited ("schema.invalid"); messages still go through;
//   strict  an outgoing payload that violates its schema is refused (-32602, field "payload…");
//           an incoming one is not delivered: the sender gets an `error` envelope with code
//           SCHEMA_VALIDATION_FAILED, and the event is audited.
// Thread-safety: immutable after construction; Check may run concurrently.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "agentmesh/core/error.hpp"

namespace valijson {
class Schema;
}

namespace agentmesh::daemon {

class PayloadSchemas {
 public:
  // Parses the built-in schemas (a malformed built-in is a bug and aborts at startup).
  PayloadSchemas();
  ~PayloadSchemas();
  PayloadSchemas(const PayloadSchemas&) = delete;
  PayloadSchemas& operator=(const PayloadSchemas&) = delete;

  // OK unless the payload names a built-in schema and violates it: kInvalidArgument with field
  // "payload" or "payload.<path>" and the first violation as message.
  Result<void> Check(const nlohmann::json& payload) const;
  std::vector<std::string> Names() const;

 private:
  std::map<std::string, std::unique_ptr<valijson::Schema>> schemas_;
};

}  // namespace agentmesh::daemon
