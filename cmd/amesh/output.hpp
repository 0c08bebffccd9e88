// Human-readable output helpers: aligned tables and key/value blocks, and tolerant accessors for
// JSON results (a missing or mistyped member prints as "-" instead of failing).
#pragma once

#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace amesh {

// Columns separated by two spaces, each as wide as its widest cell (counted in UTF-8 code
// points); the last column is not padded. Headers are printed as given (upper case by
// convention).
class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void AddRow(std::vector<std::string> cells) { rows_.push_back(std::move(cells)); }
  bool empty() const { return rows_.empty(); }
  void Print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

// "key   value" lines with the values aligned.
void PrintFields(std::ostream& out, const std::vector<std::pair<std::string, std::string>>& fields);

// The text of a JSON value for a table cell: strings unquoted, null/absent "-", numbers as JSON,
// arrays of scalars joined with ",", anything else as compact JSON.
std::string CellText(const nlohmann::json& value);

// CellText(object[key]) with "-" when `object` is not an object or lacks the key.
std::string Field(const nlohmann::json& object, std::string_view key);

// The member as a string, or `fallback`.
std::string StringField(const nlohmann::json& object, std::string_view key,
                        std::string_view fallback = "");

// The member as an integer, or `fallback`.
long long IntField(const nlohmann::json& object, std::string_view key, long long fallback = 0);

// "3d4h", "5m10s", "42s".
std::string HumanDuration(long long seconds);

// Compact JSON that never throws on invalid UTF-8 (replaced by U+FFFD).
std::string Compact(const nlohmann::json& value);
// 2-space indented JSON, same guarantee.
std::string Pretty(const nlohmann::json& value);

}  // namespace amesh
