#include "input.hpp"

#include <time.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include "cli.hpp"

namespace amesh {
namespace {

constexpr std::string_view kBase58Alphabet =
    "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

std::optional<std::vector<unsigned char>> Base58Decode(std::string_view text) {
  std::vector<unsigned char> bytes;  // little-endian big number
  std::size_t leading_ones = 0;
  while (leading_ones < text.size() && text[leading_ones] == '1') ++leading_ones;
  for (char c : text) {
    const auto pos = kBase58Alphabet.find(c);
    if (pos == std::string_view::npos) return std::nullopt;
    unsigned carry = static_cast<unsigned>(pos);
    for (auto& b : bytes) {
      carry += static_cast<unsigned>(b) * 58u;
      b = static_cast<unsigned char>(carry & 0xff);
      carry >>= 8;
    }
    while (carry > 0) {
      bytes.push_back(static_cast<unsigned char>(carry & 0xff));
      carry >>= 8;
    }
  }
  // Strip the zero high bytes the loop never creates, then add one zero byte per leading '1'.
  std::vector<unsigned char> out(leading_ones, 0);
  out.insert(out.end(), bytes.rbegin(), bytes.rend());
  return out;
}

std::string Base58Encode(const std::vector<unsigned char>& data) {
  std::size_t zeros = 0;
  while (zeros < data.size() && data[zeros] == 0) ++zeros;
  std::vector<unsigned char> digits;  // little-endian base-58 digits
  for (std::size_t i = zeros; i < data.size(); ++i) {
    unsigned carry = data[i];
    for (auto& d : digits) {
      carry += static_cast<unsigned>(d) << 8;
      d = static_cast<unsigned char>(carry % 58);
      carry /= 58;
    }
    while (carry > 0) {
      digits.push_back(static_cast<unsigned char>(carry % 58));
      carry /= 58;
    }
  }
  std::string out(zeros, '1');
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) out.push_back(kBase58Alphabet[*it]);
  return out;
}

bool IsHex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// Collects the first syntax error of a SAX parse without building anything or throwing.
class SyntaxErrorFinder : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::string error;
  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override { return true; }
  bool key(string_t&) override { return true; }
  bool end_object() override { return true; }
  bool start_array(std::size_t) override { return true; }
  bool end_array() override { return true; }
  bool parse_error(std::size_t, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    error = ex.what();
    // Drop the "[json.exception.parse_error.101] " prefix: users need the position and reason.
    if (auto pos = error.find("] "); error.starts_with("[json.exception") && pos != error.npos) {
      error.erase(0, pos + 2);
    }
    return false;
  }
};

std::string ReadAll(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string_view TypeName(const nlohmann::json& value) {
  if (value.is_array()) return "an array";
  if (value.is_string()) return "a string";
  if (value.is_number()) return "a number";
  if (value.is_boolean()) return "a boolean";
  if (value.is_null()) return "null";
  return "an object";
}

bool ParseRfc3339(std::string_view s) {
  // YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|±HH:MM)
  auto digits = [&](std::size_t pos, std::size_t n) {
    if (pos + n > s.size()) return false;
    for (std::size_t i = pos; i < pos + n; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
    }
    return true;
  };
  if (!digits(0, 4) || s.size() < 20 || s[4] != '-' || !digits(5, 2) || s[7] != '-' ||
      !digits(8, 2) || (s[10] != 'T' && s[10] != 't') || !digits(11, 2) || s[13] != ':' ||
      !digits(14, 2) || s[16] != ':' || !digits(17, 2)) {
    return false;
  }
  std::size_t pos = 19;
  if (pos < s.size() && s[pos] == '.') {
    std::size_t n = 0;
    ++pos;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') ++pos, ++n;
    if (n == 0 || n > 9) return false;
  }
  if (pos < s.size() && (s[pos] == 'Z' || s[pos] == 'z')) return pos + 1 == s.size();
  if (pos < s.size() && (s[pos] == '+' || s[pos] == '-')) {
    return pos + 6 == s.size() && digits(pos + 1, 2) && s[pos + 3] == ':' && digits(pos + 4, 2);
  }
  return false;
}

}  // namespace

Check CheckAmid(std::string_view text) {
  const std::string hint =
      "an AMID is 27 or 28 base58 characters, e.g. jZ6CK1dpcZD4oPYScUJvifP7BtJ";
  if (text.empty()) return "empty AMID (" + hint + ")";
  if (text.size() > 64) return "not an AMID: too long (" + hint + ")";
  const auto decoded = Base58Decode(text);
  if (!decoded) {
    for (char c : text) {
      if (kBase58Alphabet.find(c) == std::string_view::npos) {
        return "not an AMID: '" + std::string(text) + "' contains '" + std::string(1, c) +
               "', which is not a base58 character (" + hint + ")";
      }
    }
  }
  if (!decoded || decoded->size() != 20 || Base58Encode(*decoded) != text) {
    return "not an AMID: '" + std::string(text) + "' does not decode to 20 bytes (" + hint + ")";
  }
  return std::nullopt;
}

bool LooksLikeSessionId(std::string_view text) {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? text[i] != '-' : !IsHex(text[i])) return false;
  }
  return true;
}

Check CheckSessionId(std::string_view text) {
  if (LooksLikeSessionId(text)) return std::nullopt;
  return "not a session id: '" + std::string(text) +
         "' (expected a UUID such as 0f8e1c2a-4b7d-4e21-9a3b-5c6d7e8f9a0b; list them with "
         "`amesh sessions`)";
}

std::string NormalizeSessionId(std::string_view text) {
  std::string out(text);
  for (char& c : out) {
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

Check CheckIntentSegment(std::string_view text, std::string_view what) {
  if (text.empty() || text.size() > 64) {
    return std::string(what) + " '" + std::string(text) + "' must be 1 to 64 characters";
  }
  for (char c : text) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) {
      return std::string(what) + " '" + std::string(text) +
             "' may contain only a-z, 0-9, '_' and '-'";
    }
  }
  return std::nullopt;
}

Check CheckIntent(std::string_view text) {
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return CheckIntentSegment(text, "intent category");
  if (auto bad = CheckIntentSegment(text.substr(0, slash), "intent category")) return bad;
  return CheckIntentSegment(text.substr(slash + 1), "intent subcategory");
}

Check CheckCapability(std::string_view text, bool pattern) {
  const std::string quoted = "'" + std::string(text) + "'";
  const std::size_t max = pattern ? 130 : 128;  // a pattern may add "/*" to a capability
  if (text.empty() || text.size() > max) {
    return "capability " + quoted + " must be 1 to " + std::to_string(max) + " bytes";
  }
  for (const char c : text) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return "capability " + quoted + " contains a control character";
    }
  }
  const auto star = text.find('*');
  if (star == std::string_view::npos) return std::nullopt;
  if (!pattern) return "capability " + quoted + " must not contain '*'";
  if (star + 1 != text.size() || (star > 0 && text[star - 1] != '/')) {
    return "capability " + quoted + ": '*' is only allowed alone or as a trailing '/*'";
  }
  return std::nullopt;
}

Check CheckIdempotencyKey(std::string_view text) {
  const bool ok =
      !text.empty() && text.size() <= 128 && std::all_of(text.begin(), text.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               c == '_' || c == '.' || c == ':' || c == '-';
      });
  if (ok) return std::nullopt;
  return "--idempotency-key '" + std::string(text) +
         "' must be 1 to 128 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'";
}

std::expected<nlohmann::json, std::string> ParseJsonText(std::string_view text,
                                                         std::string_view what) {
  nlohmann::json value = nlohmann::json::parse(text, nullptr, false);
  if (!value.is_discarded()) return value;
  SyntaxErrorFinder finder;
  nlohmann::json::sax_parse(text, &finder, nlohmann::json::input_format_t::json, true);
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return std::unexpected(std::string(what) + " is empty (expected JSON)");
  }
  return std::unexpected(std::string(what) + " is not valid JSON: " +
                         (finder.error.empty() ? "syntax error" : finder.error));
}

std::expected<nlohmann::json, std::string> ReadJsonArgument(Context& ctx,
                                                            const std::optional<std::string>& arg,
                                                            std::string_view what,
                                                            bool require_object) {
  std::string text;
  std::string source(what);
  if (arg && *arg != "-") {
    text = *arg;
  } else {
    if (!arg && ctx.io().stdin_is_tty) {
      return std::unexpected("missing " + std::string(what) +
                             ": give it as an argument, or pipe it on stdin (or pass '-')");
    }
    text = ReadAll(ctx.in());
    source += " (from stdin)";
  }
  auto value = ParseJsonText(text, source);
  if (!value) return value;
  if (require_object && !value->is_object()) {
    return std::unexpected(std::string(what) + " must be a JSON object ({…}), not " +
                           std::string(TypeName(*value)));
  }
  return value;
}

std::expected<nlohmann::json, std::string> ReadJsonFile(Context& ctx, const std::string& path,
                                                        std::string_view what) {
  if (path == "-") return ReadJsonArgument(ctx, std::string("-"), what, true);
  std::ifstream file(path, std::ios::binary);
  if (!file) return std::unexpected("cannot read " + path);
  const std::string text = ReadAll(file);
  auto value = ParseJsonText(text, path);
  if (!value) return value;
  if (!value->is_object()) {
    return std::unexpected(path + " must hold a JSON object, not " + std::string(TypeName(*value)));
  }
  return value;
}

std::expected<std::string, std::string> ParseSince(std::string_view text) {
  if (ParseRfc3339(text)) return std::string(text);
  if (text.size() >= 2) {
    const char unit = text.back();
    long long n = 0;
    const auto digits = text.substr(0, text.size() - 1);
    const auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    long long scale = 0;
    switch (unit) {
      case 's':
        scale = 1;
        break;
      case 'm':
        scale = 60;
        break;
      case 'h':
        scale = 3600;
        break;
      case 'd':
        scale = 86400;
        break;
      default:
        break;
    }
    if (ec == std::errc() && ptr == digits.data() + digits.size() && scale != 0 && n >= 0 &&
        n < 3650LL * 86400) {
      const auto now = std::chrono::system_clock::now();
      const std::time_t t = std::chrono::system_clock::to_time_t(now) - n * scale;
      std::tm tm{};
      ::gmtime_r(&t, &tm);
      char buffer[32];
      std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
      return std::string(buffer);
    }
  }
  return std::unexpected("--since '" + std::string(text) +
                         "' is neither an RFC 3339 time (2026-02-01T12:00:00Z) nor a duration "
                         "(90s, 15m, 2h, 7d)");
}

std::expected<long long, std::string> SecondsToMillis(std::string_view text,
                                                      std::string_view what) {
  double seconds = 0;
  const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), seconds);
  if (ec != std::errc() || ptr != text.data() + text.size() || !std::isfinite(seconds) ||
      seconds < 0 || seconds > 7 * 86400) {
    return std::unexpected(std::string(what) + " must be a number of seconds (0 to 604800), not '" +
                           std::string(text) + "'");
  }
  return static_cast<long long>(std::llround(seconds * 1000));
}

std::expected<std::string, std::string> ParseTier(std::string_view text) {
  if (text == "anonymous" || text == "2") return std::string("anonymous");
  if (text == "verified" || text == "1") return std::string("verified");
  if (text == "organization" || text == "1.5") return std::string("organization");
  return std::unexpected("unknown tier '" + std::string(text) +
                         "' (expected anonymous, verified or organization)");
}

}  // namespace amesh
