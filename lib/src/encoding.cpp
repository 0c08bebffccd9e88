#include "agentmesh/core/encoding.hpp"

#include <fmt/format.h>
#include <array>

namespace agentmesh {
namespace {

constexpr std::string_view kBase58Alphabet =
    "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
constexpr std::string_view kBase64Alphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view kBase64UrlAlphabet =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

constexpr std::array<std::int8_t, 256> MakeReverse(std::string_view alphabet) {
  std::array<std::int8_t, 256> table{};
  for (auto& v : table) v = -1;
  for (std::size_t i = 0; i < alphabet.size(); ++i) {
    table[static_cast<unsigned char>(alphabet[i])] = static_cast<std::int8_t>(i);
  }
  return table;
}

constexpr auto kBase58Reverse = MakeReverse(kBase58Alphabet);
constexpr auto kBase64Reverse = MakeReverse(kBase64Alphabet);

std::string Base64EncodeWith(ByteView data, std::string_view alphabet, bool pad) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) |
                            std::uint32_t{data[i + 2]};
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    out += alphabet[v & 63];
  }
  const std::size_t rest = data.size() - i;
  if (rest == 1) {
    const std::uint32_t v = std::uint32_t{data[i]} << 16;
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    if (pad) out += "==";
  } else if (rest == 2) {
    const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8);
    out += alphabet[(v >> 18) & 63];
    out += alphabet[(v >> 12) & 63];
    out += alphabet[(v >> 6) & 63];
    if (pad) out += '=';
  }
  return out;
}

}  // namespace

// Base58 is a change of radix of one big number. Both directions work on wide limbs rather than
// single digits: 58^5 < 2^32 and 58^5 * 2^32 < 2^64, so a limb of five base-58 digits absorbs 32
// input bits per step (encode), and a 32-bit limb absorbs five base-58 digits per step (decode).
constexpr std::uint64_t kBase58Pow5 = 58ULL * 58 * 58 * 58 * 58;  // 656'356'768

std::string Base58Encode(ByteView data) {
  std::size_t zeros = 0;
  while (zeros < data.size() && data[zeros] == 0) ++zeros;
  const ByteView value = data.subspan(zeros);
  // Little-endian limbs of five base-58 digits each; 8 bits need at most 1.37 digits.
  std::vector<std::uint32_t> limbs(value.size() * 138 / 500 + 2, 0);
  std::size_t used = 0;
  std::size_t i = 0;
  const auto absorb = [&](std::uint64_t chunk, unsigned bits) {
    std::uint64_t carry = chunk;
    std::size_t j = 0;
    for (; j < used || carry != 0; ++j) {
      const std::uint64_t x = (std::uint64_t{limbs[j]} << bits) + carry;
      limbs[j] = static_cast<std::uint32_t>(x % kBase58Pow5);
      carry = x / kBase58Pow5;
    }
    used = j;
  };
  const std::size_t head = value.size() % 4;  // leading bytes that do not fill a 32-bit chunk
  if (head != 0) {
    std::uint64_t chunk = 0;
    for (; i < head; ++i) chunk = (chunk << 8) | value[i];
    absorb(chunk, static_cast<unsigned>(8 * head));
  }
  for (; i < value.size(); i += 4) {
    const std::uint64_t chunk = (std::uint64_t{value[i]} << 24) |
                                (std::uint64_t{value[i + 1]} << 16) |
                                (std::uint64_t{value[i + 2]} << 8) | std::uint64_t{value[i + 3]};
    absorb(chunk, 32);
  }
  char digits[5];
  std::string out(zeros, '1');
  out.reserve(zeros + used * 5);
  bool leading = true;  // skip the top limb's leading zero digits
  for (std::size_t j = used; j-- > 0;) {
    std::uint32_t limb = limbs[j];
    for (int d = 4; d >= 0; --d) {
      digits[d] = kBase58Alphabet[limb % 58];
      limb /= 58;
    }
    for (char c : digits) {
      if (leading && c == kBase58Alphabet[0]) continue;
      leading = false;
      out += c;
    }
  }
  return out;
}

Result<Bytes> Base58Decode(std::string_view text) {
  if (text.empty()) return Fail(Code::kInvalidArgument, "empty base58 string");
  std::size_t ones = 0;
  while (ones < text.size() && text[ones] == '1') ++ones;
  const std::string_view value = text.substr(ones);
  // Little-endian 32-bit limbs; 5 base-58 digits need at most 29.3 bits.
  std::vector<std::uint32_t> limbs(value.size() * 733 / 4000 + 2, 0);
  std::size_t used = 0;
  const auto absorb = [&](std::uint64_t chunk, std::uint64_t scale) {
    std::uint64_t carry = chunk;
    std::size_t j = 0;
    for (; j < used || carry != 0; ++j) {
      const std::uint64_t x = std::uint64_t{limbs[j]} * scale + carry;
      limbs[j] = static_cast<std::uint32_t>(x);
      carry = x >> 32;
    }
    used = j;
  };
  std::size_t i = 0;
  const std::size_t head = value.size() % 5;
  for (std::size_t group = head == 0 ? 5 : head; i < value.size(); group = 5) {
    std::uint64_t chunk = 0;
    std::uint64_t scale = 1;
    for (std::size_t k = 0; k < group; ++k, ++i) {
      const std::int8_t digit = kBase58Reverse[static_cast<unsigned char>(value[i])];
      if (digit < 0) {
        return Fail(Code::kInvalidArgument,
                    fmt::format("invalid base58 character at position {}", ones + i));
      }
      chunk = chunk * 58 + static_cast<std::uint64_t>(digit);
      scale *= 58;
    }
    absorb(chunk, scale);
  }
  Bytes out(ones, 0);
  out.reserve(ones + used * 4);
  bool leading = true;  // the value's own leading zero bytes are not part of its encoding
  for (std::size_t j = used; j-- > 0;) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      const auto byte = static_cast<std::uint8_t>(limbs[j] >> shift);
      if (leading && byte == 0) continue;
      leading = false;
      out.push_back(byte);
    }
  }
  return out;
}

std::string Base64Encode(ByteView data) { return Base64EncodeWith(data, kBase64Alphabet, true); }

std::string Base64UrlEncode(ByteView data) {
  return Base64EncodeWith(data, kBase64UrlAlphabet, false);
}

Result<Bytes> Base64Decode(std::string_view text) {
  if (text.size() % 4 != 0) {
    return Fail(Code::kInvalidArgument, "base64 length is not a multiple of 4 (padding required)");
  }
  std::size_t padding = 0;
  if (!text.empty() && text.back() == '=') ++padding;
  if (text.size() >= 2 && text[text.size() - 2] == '=') ++padding;
  Bytes out;
  out.reserve(text.size() / 4 * 3);
  const std::size_t data_chars = text.size() - padding;
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::size_t i = 0; i < data_chars; ++i) {
    const std::int8_t v = kBase64Reverse[static_cast<unsigned char>(text[i])];
    if (v < 0) {
      return Fail(Code::kInvalidArgument,
                  fmt::format("invalid base64 character at position {}", i));
    }
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>((acc >> bits) & 0xff));
    }
  }
  // Leftover bits must be zero, otherwise two different strings would decode to the same bytes.
  if (bits > 0 && (acc & ((1u << bits) - 1)) != 0) {
    return Fail(Code::kInvalidArgument, "non-canonical base64 (trailing bits set)");
  }
  return out;
}

std::string HexEncode(ByteView data) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(data.size() * 2);
  for (std::uint8_t b : data) {
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

Result<Bytes> HexDecode(std::string_view text) {
  if (text.size() % 2 != 0) return Fail(Code::kInvalidArgument, "hex string has odd length");
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  Bytes out;
  out.reserve(text.size() / 2);
  for (std::size_t i = 0; i < text.size(); i += 2) {
    const int hi = nibble(text[i]);
    const int lo = nibble(text[i + 1]);
    if (hi < 0 || lo < 0) {
      return Fail(Code::kInvalidArgument,
                  fmt::format("invalid hex character at position {}", hi < 0 ? i : i + 1));
    }
    out.push_back(static_cast<std::uint8_t>((hi << 4) | lo));
  }
  return out;
}

}  // namespace agentmesh
