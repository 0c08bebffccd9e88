#include "agentmesh/core/json_scan.hpp"

#include <cstring>

#include <fmt/format.h>

namespace agentmesh {
namespace {

// The length of the well-formed UTF-8 sequence (of a code point >= 0x80) starting at `pos`, or 0
// when the bytes there are not one (overlong, surrogate, above U+10FFFF, truncated).
std::size_t Utf8SequenceLength(std::string_view text, std::size_t pos) {
  const auto b0 = static_cast<unsigned char>(text[pos]);
  std::size_t len = 0;
  unsigned min = 0;
  unsigned cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2, min = 0x80, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3, min = 0x800, cp = b0 & 0x0F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4, min = 0x10000, cp = b0 & 0x07;
  } else {
    return 0;
  }
  if (pos + len > text.size()) return 0;
  for (std::size_t i = 1; i < len; ++i) {
    const auto b = static_cast<unsigned char>(text[pos + i]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

class Scanner {
 public:
  Scanner(std::string_view text, const ScanLimits& limits) : text_(text), limits_(limits) {}

  // Calls add(member) for each top-level member.
  template <typename Add>
  Result<void> Run(Add&& add) {
    std::size_t count = 0;
    SkipWs();
    if (pos_ >= text_.size() || text_[pos_] != '{')
      return Error("top-level value must be an object");
    ++pos_;
    SkipWs();
    if (Peek() == '}') {
      ++pos_;
    } else {
      while (true) {
        SkipWs();
        if (Peek() != '"') return Error("expected a member name");
        ScannedMember member;
        const std::size_t name_start = pos_;
        if (!String(member.name_has_escapes)) return Failure();
        member.name = text_.substr(name_start + 1, pos_ - name_start - 2);
        SkipWs();
        if (Peek() != ':') return Error("expected ':'");
        ++pos_;
        SkipWs();
        const std::size_t value_start = pos_;
        if (!Value(1, member.kind, member.value_has_escapes)) return Failure();
        member.raw = text_.substr(value_start, pos_ - value_start);
        if (count++ >= limits_.max_members) {
          return Fail(Code::kLimitExceeded, "too many members in object");
        }
        add(member);
        SkipWs();
        if (Peek() == ',') {
          ++pos_;
          continue;
        }
        if (Peek() == '}') {
          ++pos_;
          break;
        }
        return Error("expected ',' or '}'");
      }
    }
    SkipWs();
    if (pos_ != text_.size()) return Error("unexpected data after the JSON value");
    return {};
  }

 private:
  char Peek() const noexcept { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void SkipWs() noexcept {
    while (pos_ < text_.size()) {
      const char c = text_[pos_];
      if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
      ++pos_;
    }
  }

  std::unexpected<agentmesh::Error> Error(std::string_view what) {
    if (!failed_) {
      error_ = agentmesh::Error{
          Code::kInvalidArgument, fmt::format("invalid JSON at byte {}: {}", pos_, what), {}};
      failed_ = true;
    }
    return std::unexpected(error_);
  }
  std::unexpected<agentmesh::Error> Failure() { return std::unexpected(error_); }
  bool SetError(Code code, std::string_view what) {
    if (!failed_) {
      error_ = agentmesh::Error{code, fmt::format("invalid JSON at byte {}: {}", pos_, what), {}};
      failed_ = true;
    }
    return false;
  }

  bool Value(std::size_t depth, JsonKind& kind, bool& has_escapes) {
    if (depth > limits_.max_depth) return SetError(Code::kLimitExceeded, "nesting too deep");
    switch (Peek()) {
      case '"':
        kind = JsonKind::kString;
        return String(has_escapes);
      case '{':
        kind = JsonKind::kObject;
        return Object(depth);
      case '[':
        kind = JsonKind::kArray;
        return Array(depth);
      case 't':
        kind = JsonKind::kTrue;
        return Literal("true");
      case 'f':
        kind = JsonKind::kFalse;
        return Literal("false");
      case 'n':
        kind = JsonKind::kNull;
        return Literal("null");
      default:
        kind = JsonKind::kNumber;
        return Number();
    }
  }

  bool Literal(std::string_view word) {
    if (text_.substr(pos_, word.size()) != word)
      return SetError(Code::kInvalidArgument, "bad literal");
    pos_ += word.size();
    return true;
  }

  bool Number() {
    const std::size_t start = pos_;
    if (Peek() == '-') ++pos_;
    if (Peek() == '0') {
      ++pos_;
    } else if (Peek() >= '1' && Peek() <= '9') {
      while (Peek() >= '0' && Peek() <= '9') ++pos_;
    } else {
      pos_ = start;
      return SetError(Code::kInvalidArgument, "expected a value");
    }
    if (Peek() == '.') {
      ++pos_;
      if (!(Peek() >= '0' && Peek() <= '9')) return SetError(Code::kInvalidArgument, "bad number");
      while (Peek() >= '0' && Peek() <= '9') ++pos_;
    }
    if (Peek() == 'e' || Peek() == 'E') {
      ++pos_;
      if (Peek() == '+' || Peek() == '-') ++pos_;
      if (!(Peek() >= '0' && Peek() <= '9')) return SetError(Code::kInvalidArgument, "bad number");
      while (Peek() >= '0' && Peek() <= '9') ++pos_;
    }
    return true;
  }

  static int HexValue(char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }

  bool Hex4(unsigned& out) {
    if (pos_ + 4 > text_.size()) return SetError(Code::kInvalidArgument, "truncated \\u escape");
    out = 0;
    for (int i = 0; i < 4; ++i) {
      const int v = HexValue(text_[pos_ + i]);
      if (v < 0) return SetError(Code::kInvalidArgument, "bad \\u escape");
      out = (out << 4) | static_cast<unsigned>(v);
    }
    pos_ += 4;
    return true;
  }

  // Validates one UTF-8 sequence starting at pos_ (a byte >= 0x80).
  bool Utf8() {
    const std::size_t len = Utf8SequenceLength(text_, pos_);
    if (len == 0) return SetError(Code::kInvalidArgument, "invalid UTF-8");
    pos_ += len;
    return true;
  }

  // True when none of the 8 bytes is '"', '\\', a control character or non-ASCII (SWAR tests
  // from "Bit Twiddling Hacks": haszero / hasless).
  static bool PlainAscii8(std::uint64_t v) noexcept {
    constexpr std::uint64_t kOnes = 0x0101010101010101ULL;
    constexpr std::uint64_t kHigh = 0x8080808080808080ULL;
    const auto has_zero = [](std::uint64_t x) { return (x - kOnes) & ~x & kHigh; };
    const std::uint64_t special = has_zero(v ^ (kOnes * '"')) | has_zero(v ^ (kOnes * '\\')) |
                                  ((v - kOnes * 0x20) & ~v & kHigh) | (v & kHigh);
    return special == 0;
  }

  bool String(bool& has_escapes) {
    has_escapes = false;
    ++pos_;  // opening quote
    while (true) {
      while (pos_ + 8 <= text_.size()) {
        std::uint64_t v = 0;
        std::memcpy(&v, text_.data() + pos_, 8);
        if (!PlainAscii8(v)) break;
        pos_ += 8;
      }
      if (pos_ >= text_.size()) return SetError(Code::kInvalidArgument, "unterminated string");
      const auto c = static_cast<unsigned char>(text_[pos_]);
      if (c == '"') {
        ++pos_;
        return true;
      }
      if (c < 0x20) return SetError(Code::kInvalidArgument, "control character in string");
      if (c == '\\') {
        has_escapes = true;
        ++pos_;
        const char e = Peek();
        ++pos_;
        switch (e) {
          case '"':
          case '\\':
          case '/':
          case 'b':
          case 'f':
          case 'n':
          case 'r':
          case 't':
            break;
          case 'u': {
            unsigned unit = 0;
            if (!Hex4(unit)) return false;
            if (unit >= 0xDC00 && unit <= 0xDFFF) {
              return SetError(Code::kInvalidArgument, "lone low surrogate");
            }
            if (unit >= 0xD800 && unit <= 0xDBFF) {
              if (text_.substr(pos_, 2) != "\\u") {
                return SetError(Code::kInvalidArgument, "lone high surrogate");
              }
              pos_ += 2;
              unsigned low = 0;
              if (!Hex4(low)) return false;
              if (low < 0xDC00 || low > 0xDFFF) {
                return SetError(Code::kInvalidArgument, "bad surrogate pair");
              }
            }
            break;
          }
          default:
            return SetError(Code::kInvalidArgument, "bad escape");
        }
        continue;
      }
      if (c >= 0x80) {
        if (!Utf8()) return false;
        continue;
      }
      ++pos_;
    }
  }

  bool Object(std::size_t depth) {
    ++pos_;
    SkipWs();
    if (Peek() == '}') {
      ++pos_;
      return true;
    }
    while (true) {
      SkipWs();
      if (Peek() != '"') return SetError(Code::kInvalidArgument, "expected a member name");
      bool escapes = false;
      if (!String(escapes)) return false;
      SkipWs();
      if (Peek() != ':') return SetError(Code::kInvalidArgument, "expected ':'");
      ++pos_;
      SkipWs();
      JsonKind kind;
      if (!Value(depth + 1, kind, escapes)) return false;
      SkipWs();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() == '}') {
        ++pos_;
        return true;
      }
      return SetError(Code::kInvalidArgument, "expected ',' or '}'");
    }
  }

  bool Array(std::size_t depth) {
    ++pos_;
    SkipWs();
    if (Peek() == ']') {
      ++pos_;
      return true;
    }
    while (true) {
      SkipWs();
      JsonKind kind;
      bool escapes = false;
      if (!Value(depth + 1, kind, escapes)) return false;
      SkipWs();
      if (Peek() == ',') {
        ++pos_;
        continue;
      }
      if (Peek() == ']') {
        ++pos_;
        return true;
      }
      return SetError(Code::kInvalidArgument, "expected ',' or ']'");
    }
  }

  std::string_view text_;
  const ScanLimits& limits_;

 public:
  // The whole text must be `[` string (`,` string)* `]` (whitespace allowed). Calls
  // item(raw_token, has_escapes) for each string in order. Errors like Run().
  template <typename Item>
  Result<void> RunStringArray(std::size_t max_items, Item&& item) {
    SkipWs();
    if (Peek() != '[') return Error("must be an array");
    ++pos_;
    SkipWs();
    std::size_t count = 0;
    if (Peek() == ']') {
      ++pos_;
    } else {
      while (true) {
        SkipWs();
        if (Peek() != '"') return Error("must be an array of strings");
        const std::size_t start = pos_;
        bool escapes = false;
        if (!String(escapes)) return Failure();
        if (count++ >= max_items) return Fail(Code::kLimitExceeded, "too many array items");
        if (!item(text_.substr(start, pos_ - start), escapes)) {
          return Fail(Code::kInvalidArgument, "bad string escape");
        }
        SkipWs();
        if (Peek() == ',') {
          ++pos_;
          continue;
        }
        if (Peek() == ']') {
          ++pos_;
          break;
        }
        return Error("expected ',' or ']'");
      }
    }
    SkipWs();
    if (pos_ != text_.size()) return Error("unexpected data after the JSON value");
    return {};
  }

 private:
  std::size_t pos_ = 0;
  bool failed_ = false;
  agentmesh::Error error_;
};

void AppendUtf8(std::string& out, unsigned cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

bool ParseHex4(std::string_view s, std::size_t i, unsigned& out) {
  if (i + 4 > s.size()) return false;
  out = 0;
  for (std::size_t k = 0; k < 4; ++k) {
    const char c = s[i + k];
    int v = -1;
    if (c >= '0' && c <= '9') v = c - '0';
    if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    if (c >= 'A' && c <= 'F') v = c - 'A' + 10;
    if (v < 0) return false;
    out = (out << 4) | static_cast<unsigned>(v);
  }
  return true;
}

std::unexpected<Error> WrongType(std::string_view name, std::string_view expected) {
  return Fail(Code::kInvalidArgument, fmt::format("must be {}", expected), std::string(name));
}

}  // namespace

Result<ScannedObject> ScanObject(std::string_view text, const ScanLimits& limits) {
  ScannedObject object;
  Scanner scanner(text, limits);
  auto result = scanner.Run([&](const ScannedMember& member) { object.Add(member); });
  if (!result) return std::unexpected(result.error());
  return object;
}

void ScannedObject::Add(const ScannedMember& member) {
  if (size_ < kInlineMembers) {
    inline_[size_++] = member;
    return;
  }
  if (overflow_.empty()) {
    overflow_.reserve(2 * kInlineMembers);
    overflow_.assign(inline_.begin(), inline_.end());
  }
  overflow_.push_back(member);
  ++size_;
}

const ScannedMember* ScannedObject::Find(std::string_view name) const noexcept {
  const ScannedMember* found = nullptr;
  std::string decoded;
  for (const auto& member : members()) {
    if (!member.name_has_escapes) {
      if (member.name == name) found = &member;
      continue;
    }
    decoded.clear();
    std::string quoted;
    quoted.reserve(member.name.size() + 2);
    quoted += '"';
    quoted += member.name;
    quoted += '"';
    if (UnescapeJsonString(quoted, decoded) && decoded == name) found = &member;
  }
  return found;
}

Result<std::optional<std::string>> ScannedObject::GetString(std::string_view name) const {
  std::string scratch;
  auto view = GetStringView(name, scratch);
  if (!view) return std::unexpected(view.error());
  if (!*view) return std::optional<std::string>();
  return std::optional<std::string>(std::string(**view));
}

Result<std::optional<std::string_view>> ScannedObject::GetStringView(std::string_view name,
                                                                     std::string& scratch) const {
  const ScannedMember* member = Find(name);
  if (member == nullptr) return std::optional<std::string_view>();
  if (member->kind != JsonKind::kString) return WrongType(name, "a string");
  if (!member->value_has_escapes) {
    return std::optional<std::string_view>(member->raw.substr(1, member->raw.size() - 2));
  }
  scratch.clear();
  if (!UnescapeJsonString(member->raw, scratch)) {
    return Fail(Code::kInvalidArgument, "bad string escape", std::string(name));
  }
  return std::optional<std::string_view>(scratch);
}

Result<std::optional<bool>> ScannedObject::GetBool(std::string_view name) const {
  const ScannedMember* member = Find(name);
  if (member == nullptr) return std::optional<bool>();
  if (member->kind == JsonKind::kTrue) return std::optional<bool>(true);
  if (member->kind == JsonKind::kFalse) return std::optional<bool>(false);
  return WrongType(name, "a boolean");
}

Result<std::optional<std::uint64_t>> ScannedObject::GetUint(std::string_view name) const {
  const ScannedMember* member = Find(name);
  if (member == nullptr) return std::optional<std::uint64_t>();
  if (member->kind != JsonKind::kNumber) return WrongType(name, "a non-negative integer");
  std::uint64_t value = 0;
  for (char c : member->raw) {
    if (c < '0' || c > '9') return WrongType(name, "a non-negative integer");
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
    if (value > (std::uint64_t{1} << 53)) return WrongType(name, "an integer no larger than 2^53");
  }
  return std::optional<std::uint64_t>(value);
}

bool UnescapeJsonString(std::string_view raw, std::string& out) {
  if (raw.size() < 2 || raw.front() != '"' || raw.back() != '"') return false;
  const std::string_view body = raw.substr(1, raw.size() - 2);
  out.reserve(out.size() + body.size());
  for (std::size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i >= body.size()) return false;
    switch (body[i]) {
      case '"':
        out += '"';
        break;
      case '\\':
        out += '\\';
        break;
      case '/':
        out += '/';
        break;
      case 'b':
        out += '\b';
        break;
      case 'f':
        out += '\f';
        break;
      case 'n':
        out += '\n';
        break;
      case 'r':
        out += '\r';
        break;
      case 't':
        out += '\t';
        break;
      case 'u': {
        unsigned unit = 0;
        if (!ParseHex4(body, i + 1, unit)) return false;
        i += 4;
        if (unit >= 0xD800 && unit <= 0xDBFF) {
          unsigned low = 0;
          if (i + 2 >= body.size() || body[i + 1] != '\\' || body[i + 2] != 'u') return false;
          if (!ParseHex4(body, i + 3, low) || low < 0xDC00 || low > 0xDFFF) return false;
          i += 6;
          unit = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
        } else if (unit >= 0xDC00 && unit <= 0xDFFF) {
          return false;
        }
        AppendUtf8(out, unit);
        break;
      }
      default:
        return false;
    }
  }
  return true;
}

Result<std::vector<std::string>> ParseStringArray(std::string_view raw, std::size_t max_items) {
  std::vector<std::string> items;
  const ScanLimits limits;
  Scanner scanner(raw, limits);
  auto r = scanner.RunStringArray(max_items, [&](std::string_view token, bool escapes) {
    if (!escapes) {
      items.emplace_back(token.substr(1, token.size() - 2));
      return true;
    }
    return UnescapeJsonString(token, items.emplace_back());
  });
  if (!r) return std::unexpected(r.error());
  return items;
}

Result<void> ParseStringArrayViews(std::string_view raw, std::size_t max_items,
                                   std::vector<std::string_view>& items,
                                   std::forward_list<std::string>& decoded) {
  const ScanLimits limits;
  Scanner scanner(raw, limits);
  return scanner.RunStringArray(max_items, [&](std::string_view token, bool escapes) {
    if (!escapes) {
      items.push_back(token.substr(1, token.size() - 2));
      return true;
    }
    std::string& text = decoded.emplace_front();
    if (!UnescapeJsonString(token, text)) return false;
    items.push_back(text);
    return true;
  });
}

void AppendJsonString(std::string& out, std::string_view value) {
  static constexpr char kHex[] = "0123456789abcdef";
  out += '"';
  std::size_t plain_from = 0;  // start of the current run that needs no escaping
  for (std::size_t i = 0; i < value.size(); ++i) {
    const char ch = value[i];
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    out.append(value.data() + plain_from, i - plain_from);
    plain_from = i + 1;
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 15];
        }
    }
  }
  out.append(value.data() + plain_from, value.size() - plain_from);
  out += '"';
}

void AppendJsonText(std::string& out, std::string_view value) {
  std::size_t i = 0;
  while (i < value.size()) {
    if (static_cast<unsigned char>(value[i]) < 0x80) {
      ++i;
    } else if (const std::size_t len = Utf8SequenceLength(value, i); len > 0) {
      i += len;
    } else {
      break;
    }
  }
  if (i == value.size()) return AppendJsonString(out, value);
  std::string repaired;
  repaired.reserve(value.size() + 8);
  for (i = 0; i < value.size();) {
    if (static_cast<unsigned char>(value[i]) < 0x80) {
      repaired += value[i++];
    } else if (const std::size_t len = Utf8SequenceLength(value, i); len > 0) {
      repaired.append(value.substr(i, len));
      i += len;
    } else {
      repaired += "\xEF\xBF\xBD";  // U+FFFD for the byte that starts no valid sequence
      ++i;
    }
  }
  AppendJsonString(out, repaired);
}

}  // namespace agentmesh
