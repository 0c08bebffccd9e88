#include "agentmesh/core/canonical_json.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace agentmesh {
namespace {

using nlohmann::json;

// 2^53: the largest magnitude at which every integer is still an exact IEEE-754 double.
constexpr std::uint64_t kMaxExactInteger = std::uint64_t{1} << 53;
// Bounds the recursion so a hostile, deeply nested document cannot exhaust the stack.
constexpr int kMaxDepth = 512;

// Decodes one UTF-8 sequence starting at s[i]; advances i. Rejects overlong forms, surrogates and
// code points above U+10FFFF. Returns false on any malformed input.
bool DecodeUtf8(std::string_view s, std::size_t& i, char32_t& cp) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  std::size_t len = 0;
  char32_t min = 0;
  if (b0 < 0x80) {
    cp = b0;
    ++i;
    return true;
  } else if ((b0 & 0xE0) == 0xC0) {
    len = 2;
    cp = b0 & 0x1F;
    min = 0x80;
  } else if ((b0 & 0xF0) == 0xE0) {
    len = 3;
    cp = b0 & 0x0F;
    min = 0x800;
  } else if ((b0 & 0xF8) == 0xF0) {
    len = 4;
    cp = b0 & 0x07;
    min = 0x10000;
  } else {
    return false;
  }
  if (s.size() - i < len) return false;
  for (std::size_t k = 1; k < len; ++k) {
    const unsigned char b = byte(i + k);
    if ((b & 0xC0) != 0x80) return false;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
  i += len;
  return true;
}

// UTF-16 code units of a UTF-8 string: the sort key RFC 8785 §3.2.3 prescribes.
bool ToUtf16(std::string_view s, std::u16string& out) {
  out.clear();
  out.reserve(s.size());
  std::size_t i = 0;
  while (i < s.size()) {
    char32_t cp = 0;
    if (!DecodeUtf8(s, i, cp)) return false;
    if (cp >= 0x10000) {
      cp -= 0x10000;
      out.push_back(static_cast<char16_t>(0xD800 + (cp >> 10)));
      out.push_back(static_cast<char16_t>(0xDC00 + (cp & 0x3FF)));
    } else {
      out.push_back(static_cast<char16_t>(cp));
    }
  }
  return true;
}

Result<void> AppendString(std::string_view s, std::string& out) {
  static constexpr char kHex[] = "0123456789abcdef";
  out.push_back('"');
  std::size_t i = 0;
  while (i < s.size()) {
    // Printable ASCII other than '"' and '\\' is copied as a run: the common case.
    std::size_t run = i;
    while (run < s.size()) {
      const auto c = static_cast<unsigned char>(s[run]);
      if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\') break;
      ++run;
    }
    if (run != i) {
      out.append(s.data() + i, run - i);
      i = run;
      continue;
    }
    const std::size_t start = i;
    char32_t cp = 0;
    if (!DecodeUtf8(s, i, cp)) {
      return Fail(Code::kInvalidArgument,
                  "string is not valid UTF-8 at byte " + std::to_string(start));
    }
    switch (cp) {
      case U'"':
        out += "\\\"";
        break;
      case U'\\':
        out += "\\\\";
        break;
      case U'\b':
        out += "\\b";
        break;
      case U'\f':
        out += "\\f";
        break;
      case U'\n':
        out += "\\n";
        break;
      case U'\r':
        out += "\\r";
        break;
      case U'\t':
        out += "\\t";
        break;
      default:
        if (cp < 0x20) {
          out += "\\u00";
          out.push_back(kHex[cp >> 4]);
          out.push_back(kHex[cp & 0xF]);
        } else {
          out.append(s.substr(start, i - start));
        }
    }
  }
  out.push_back('"');
  return {};
}

// ECMAScript Number.prototype.toString (ECMA-262 §6.1.6.1.20) for a finite double.
void AppendDouble(double x, std::string& out) {
  if (x == 0) {  // Both +0 and -0.
    out.push_back('0');
    return;
  }
  if (x < 0) {
    out.push_back('-');
    x = -x;
  }
  // Shortest round-trip digits, as "d[.ddd]e±XX"; the ES algorithm also uses the shortest s.
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof(buf), x, std::chars_format::scientific);
  const std::string_view sci(buf, static_cast<std::size_t>(res.ptr - buf));
  const std::size_t e_pos = sci.find('e');
  std::string digits;
  for (char c : sci.substr(0, e_pos)) {
    if (c != '.') digits.push_back(c);
  }
  int exp10 = 0;
  const std::string_view exp_text = sci.substr(e_pos + 1);
  const char* exp_begin = exp_text.data() + (exp_text.front() == '+' ? 1 : 0);
  std::from_chars(exp_begin, exp_text.data() + exp_text.size(), exp10);

  // In ES terms: value = 0.digits × 10^n with k digits.
  const int k = static_cast<int>(digits.size());
  const int n = exp10 + 1;
  if (k <= n && n <= 21) {
    out += digits;
    out.append(static_cast<std::size_t>(n - k), '0');
  } else if (0 < n && n <= 21) {
    out.append(digits, 0, static_cast<std::size_t>(n));
    out.push_back('.');
    out.append(digits, static_cast<std::size_t>(n));
  } else if (-6 < n && n <= 0) {
    out += "0.";
    out.append(static_cast<std::size_t>(-n), '0');
    out += digits;
  } else {
    out.push_back(digits[0]);
    if (k > 1) {
      out.push_back('.');
      out.append(digits, 1);
    }
    out.push_back('e');
    out.push_back(n - 1 < 0 ? '-' : '+');
    out += std::to_string(n - 1 < 0 ? 1 - n : n - 1);
  }
}

Result<void> Append(const json& value, std::string& out, int depth);

// Prefixes the path of a nested error with the member name or array index that led to it.
void PrefixField(Error& error, std::string segment) {
  if (error.field.empty()) {
    error.field = std::move(segment);
  } else if (error.field.front() == '[') {
    error.field = std::move(segment) + error.field;
  } else {
    error.field = std::move(segment) + "." + error.field;
  }
}

// Members are emitted in UTF-16 code-unit order; `omit`, when set, names a member to leave out.
Result<void> AppendObject(const json::object_t& object, std::string& out, int depth,
                          const std::string_view* omit) {
  std::vector<std::pair<std::u16string, const json::object_t::value_type*>> members;
  members.reserve(object.size());
  for (const auto& member : object) {
    if (omit != nullptr && member.first == *omit) continue;
    std::u16string key;
    if (!ToUtf16(member.first, key)) {
      return Fail(Code::kInvalidArgument, "object member name is not valid UTF-8");
    }
    members.emplace_back(std::move(key), &member);
  }
  std::sort(members.begin(), members.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  out.push_back('{');
  bool first = true;
  for (const auto& [key, member] : members) {
    if (!first) out.push_back(',');
    first = false;
    if (auto r = AppendString(member->first, out); !r) return r;
    out.push_back(':');
    if (auto r = Append(member->second, out, depth + 1); !r) {
      PrefixField(r.error(), member->first);
      return r;
    }
  }
  out.push_back('}');
  return {};
}

Result<void> Append(const json& value, std::string& out, int depth) {
  if (depth > kMaxDepth) {
    return Fail(Code::kLimitExceeded, "JSON nesting deeper than " + std::to_string(kMaxDepth));
  }
  switch (value.type()) {
    case json::value_t::null:
      out += "null";
      return {};
    case json::value_t::boolean:
      out += value.get_ref<const json::boolean_t&>() ? "true" : "false";
      return {};
    case json::value_t::number_integer: {
      const std::int64_t v = value.get_ref<const json::number_integer_t&>();
      const std::uint64_t magnitude =
          v < 0 ? std::uint64_t{0} - static_cast<std::uint64_t>(v) : static_cast<std::uint64_t>(v);
      if (magnitude > kMaxExactInteger) {
        return Fail(Code::kInvalidArgument, "integer outside the exact IEEE-754 range (2^53)");
      }
      out += std::to_string(v);
      return {};
    }
    case json::value_t::number_unsigned: {
      const std::uint64_t v = value.get_ref<const json::number_unsigned_t&>();
      if (v > kMaxExactInteger) {
        return Fail(Code::kInvalidArgument, "integer outside the exact IEEE-754 range (2^53)");
      }
      out += std::to_string(v);
      return {};
    }
    case json::value_t::number_float: {
      const double v = value.get_ref<const json::number_float_t&>();
      if (!std::isfinite(v)) {
        return Fail(Code::kInvalidArgument, "NaN and Infinity have no JSON representation");
      }
      AppendDouble(v, out);
      return {};
    }
    case json::value_t::string:
      return AppendString(value.get_ref<const json::string_t&>(), out);
    case json::value_t::array: {
      out.push_back('[');
      std::size_t index = 0;
      for (const json& element : value) {
        if (index != 0) out.push_back(',');
        if (auto r = Append(element, out, depth + 1); !r) {
          PrefixField(r.error(), "[" + std::to_string(index) + "]");
          return r;
        }
        ++index;
      }
      out.push_back(']');
      return {};
    }
    case json::value_t::object:
      return AppendObject(value.get_ref<const json::object_t&>(), out, depth, nullptr);
    case json::value_t::binary:
      return Fail(Code::kInvalidArgument, "binary values have no JSON representation");
    case json::value_t::discarded:
      return Fail(Code::kInvalidArgument, "value is a discarded (unparsable) document");
  }
  return Fail(Code::kInternal, "unknown JSON value type");
}

}  // namespace

Result<std::string> CanonicalJson(const nlohmann::json& value) {
  std::string out;
  if (auto r = Append(value, out, 0); !r) return std::unexpected(std::move(r.error()));
  return out;
}

Result<std::string> CanonicalJsonWithout(const nlohmann::json& object, std::string_view omit) {
  if (!object.is_object()) {
    return Fail(Code::kInvalidArgument, "expected a JSON object");
  }
  std::string out;
  if (auto r = AppendObject(object.get_ref<const nlohmann::json::object_t&>(), out, 0, &omit); !r) {
    return std::unexpected(std::move(r.error()));
  }
  return out;
}

}  // namespace agentmesh
