#include "schemas.hpp"

#include <fmt/format.h>

#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

#include "util.hpp"

namespace agentmesh::daemon {
namespace {

// The v1 standard schemas. Each constrains what the spec's examples show and leaves everything
// else open (additional members are allowed), so they can grow without a version bump.
constexpr const char* kSchemas[][2] = {
    {"agentmesh/travel/flight-search/v1", R"({
      "type": "object", "required": ["parameters"],
      "properties": {"parameters": {"type": "object",
        "required": ["origin", "destination", "departure_date"],
        "properties": {
          "origin": {"type": "string", "pattern": "^[A-Z]{3}$"},
          "destination": {"type": "string", "pattern": "^[A-Z]{3}$"},
          "departure_date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
          "return_date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
          "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
          "class": {"enum": ["economy", "premium_economy", "business", "first"]}}}}})"},
    {"agentmesh/travel/flight-results/v1", R"({
      "type": "object", "required": ["status", "results"],
      "properties": {
        "status": {"enum": ["success", "partial", "failure"]},
        "result_count": {"type": "integer", "minimum": 0},
        "results": {"type": "array", "items": {"type": "object",
          "required": ["flight", "price", "currency"],
          "properties": {"flight": {"type": "string", "minLength": 1},
                         "price": {"type": "number", "minimum": 0},
                         "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
                         "stops": {"type": "integer", "minimum": 0}}}}}})"},
    {"agentmesh/travel/hotel-search/v1", R"({
      "type": "object", "required": ["parameters"],
      "properties": {"parameters": {"type": "object",
        "required": ["location", "check_in", "check_out"],
        "properties": {"location": {"type": "string", "minLength": 1},
          "check_in": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
          "check_out": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
          "guests": {"type": "integer", "minimum": 1}}}}})"},
    {"agentmesh/commerce/product-search/v1", R"({
      "type": "object", "required": ["parameters"],
      "properties": {"parameters": {"type": "object", "required": ["query"],
        "properties": {"query": {"type": "string", "minLength": 1},
                       "max_results": {"type": "integer", "minimum": 1}}}}})"},
    {"agentmesh/commerce/order/v1", R"({
      "type": "object", "required": ["items"],
      "properties": {"items": {"type": "array", "minItems": 1, "items": {"type": "object",
        "required": ["sku", "quantity"],
        "properties": {"sku": {"type": "string", "minLength": 1},
                       "quantity": {"type": "integer", "minimum": 1}}}}}})"},
    {"agentmesh/finance/payment/v1", R"({
      "type": "object", "required": ["amount", "currency"],
      "properties": {"amount": {"type": "number", "minimum": 0},
                     "currency": {"type": "string", "pattern": "^[A-Z]{3}$"}}})"},
    {"agentmesh/productivity/calendar-query/v1", R"({
      "type": "object", "required": ["parameters"],
      "properties": {"parameters": {"type": "object", "required": ["start", "end"],
        "properties": {"start": {"type": "string"}, "end": {"type": "string"}}}}})"},
    {"agentmesh/marketplace/skill-bid/v1", R"({
      "type": "object", "required": ["task_id", "price"],
      "properties": {"task_id": {"type": "string", "minLength": 1},
                     "price": {"type": "number", "minimum": 0}}})"},
    {"agentmesh/marketplace/task-delegation/v1", R"({
      "type": "object", "required": ["task_id", "description"],
      "properties": {"task_id": {"type": "string", "minLength": 1},
                     "description": {"type": "string", "minLength": 1}}})"},
};

}  // namespace

PayloadSchemas::PayloadSchemas() {
  for (const auto& [name, text] : kSchemas) {
    auto doc = nlohmann::json::parse(text, nullptr, false);
    if (doc.is_discarded()) {
      LogError(fmt::format("built-in schema {} is not JSON", name));
      std::abort();
    }
    doc["$schema"] = "http://json-schema.org/draft-07/schema#";
    auto schema = std::make_unique<valijson::Schema>();
    try {
      valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
      valijson::adapters::NlohmannJsonAdapter adapter(doc);
      parser.populateSchema(adapter, *schema);
    } catch (const std::exception& e) {
      LogError(fmt::format("built-in schema {}: {}", name, e.what()));
      std::abort();
    }
    schemas_.emplace(name, std::move(schema));
  }
}

PayloadSchemas::~PayloadSchemas() = default;

std::vector<std::string> PayloadSchemas::Names() const {
  std::vector<std::string> out;
  for (const auto& [name, schema] : schemas_) out.push_back(name);
  return out;
}

Result<void> PayloadSchemas::Check(const nlohmann::json& payload) const {
  if (!payload.is_object()) return {};
  auto it = payload.find("schema");
  if (it == payload.end() || !it->is_string()) return {};
  auto schema = schemas_.find(it->get<std::string>());
  if (schema == schemas_.end()) return {};
  try {
    valijson::Validator validator;
    valijson::ValidationResults results;
    valijson::adapters::NlohmannJsonAdapter target(payload);
    if (validator.validate(*schema->second, target, &results)) return {};
    // The deepest error is the most specific one.
    std::string field = "payload", message = "does not match " + schema->first;
    std::size_t depth = 0;
    for (const auto& error : results) {
      if (error.context.size() < depth) continue;
      depth = error.context.size();
      field = "payload";
      for (const auto& part : error.context) {
        if (part == "<root>") continue;
        std::string inner = part;
        if (inner.size() >= 2 && inner.front() == '[' && inner.back() == ']') {
          inner = inner.substr(1, inner.size() - 2);
        }
        if (inner.size() >= 2 && inner.front() == '"' && inner.back() == '"') {
          inner = inner.substr(1, inner.size() - 2);
        }
        const bool index =
            !inner.empty() && inner.find_first_not_of("0123456789") == std::string::npos;
        field += index ? "[" + inner + "]" : "." + inner;
      }
      message = fmt::format("{} ({})", error.description, schema->first);
    }
    return Fail(Code::kInvalidArgument, message, field);
  } catch (const std::exception& e) {
    return Fail(Code::kInvalidArgument, fmt::format("schema check failed: {}", e.what()),
                "payload");
  }
}

}  // namespace agentmesh::daemon
