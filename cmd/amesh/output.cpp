#include "output.hpp"

#include <algorithm>

namespace amesh {
namespace {

std::size_t DisplayWidth(std::string_view s) {
  std::size_t n = 0;
  for (unsigned char c : s) {
    if ((c & 0xC0) != 0x80) ++n;  // count code points: skip continuation bytes
  }
  return n;
}

void PrintRow(std::ostream& out, const std::vector<std::string>& cells,
              const std::vector<std::size_t>& widths) {
  std::string line;
  for (std::size_t i = 0; i < cells.size(); ++i) {
    line += cells[i];
    if (i + 1 < cells.size()) {
      line.append(widths[i] - DisplayWidth(cells[i]) + 2, ' ');
    }
  }
  while (!line.empty() && line.back() == ' ') line.pop_back();
  out << line << '\n';
}

}  // namespace

void Table::Print(std::ostream& out) const {
  std::vector<std::size_t> widths(headers_.size(), 0);
  for (std::size_t i = 0; i < headers_.size(); ++i) widths[i] = DisplayWidth(headers_[i]);
  for (const auto& row : rows_) {
    for (std::size_t i = 0; i < row.size() && i < widths.size(); ++i) {
      widths[i] = std::max(widths[i], DisplayWidth(row[i]));
    }
  }
  PrintRow(out, headers_, widths);
  for (auto row : rows_) {
    row.resize(headers_.size());
    PrintRow(out, row, widths);
  }
}

void PrintFields(std::ostream& out,
                 const std::vector<std::pair<std::string, std::string>>& fields) {
  std::size_t width = 0;
  for (const auto& [key, value] : fields) width = std::max(width, DisplayWidth(key));
  for (const auto& [key, value] : fields) {
    out << key << std::string(width - DisplayWidth(key) + 2, ' ') << value << '\n';
  }
}

std::string Compact(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string Pretty(const nlohmann::json& value) {
  return value.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string CellText(const nlohmann::json& value) {
  if (value.is_null()) return "-";
  if (value.is_string()) {
    const auto& s = value.get_ref<const std::string&>();
    return s.empty() ? "-" : s;
  }
  if (value.is_array()) {
    if (value.empty()) return "-";
    std::string out;
    for (const auto& item : value) {
      if (!out.empty()) out += ",";
      out += item.is_string() ? item.get<std::string>() : Compact(item);
    }
    return out;
  }
  return Compact(value);
}

std::string Field(const nlohmann::json& object, std::string_view key) {
  if (!object.is_object()) return "-";
  auto it = object.find(key);
  return it == object.end() ? "-" : CellText(*it);
}

std::string StringField(const nlohmann::json& object, std::string_view key,
                        std::string_view fallback) {
  if (object.is_object()) {
    if (auto it = object.find(key); it != object.end() && it->is_string()) {
      return it->get<std::string>();
    }
  }
  return std::string(fallback);
}

long long IntField(const nlohmann::json& object, std::string_view key, long long fallback) {
  if (object.is_object()) {
    if (auto it = object.find(key); it != object.end() && it->is_number()) {
      return it->get<long long>();
    }
  }
  return fallback;
}

std::string HumanDuration(long long seconds) {
  if (seconds < 0) seconds = 0;
  const long long d = seconds / 86400, h = seconds / 3600 % 24, m = seconds / 60 % 60,
                  s = seconds % 60;
  std::string out;
  if (d > 0) out += std::to_string(d) + "d";
  if (h > 0 || (d > 0 && m > 0)) out += std::to_string(h) + "h";
  if (d == 0 && m > 0) out += std::to_string(m) + "m";
  if (d == 0 && h == 0) out += std::to_string(s) + "s";
  return out;
}

}  // namespace amesh
