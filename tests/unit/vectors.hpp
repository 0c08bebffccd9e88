// Test support: loads a JSON vector file from tests/vectors/ (AGENTMESH_VECTORS_DIR), failing the
// current test when it is missing or not valid JSON.
#pragma once

#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <string_view>

namespace agentmesh::test_vectors {

inline nlohmann::json LoadVectors(std::string_view name) {
  std::ifstream in(std::string(AGENTMESH_VECTORS_DIR) + "/" + std::string(name));
  REQUIRE(in.good());
  std::stringstream text;
  text << in.rdbuf();
  nlohmann::json doc = nlohmann::json::parse(text.str(), nullptr, false);
  REQUIRE_FALSE(doc.is_discarded());
  return doc;
}

}  // namespace agentmesh::test_vectors
