#include "agentmesh/core/encoding.hpp"

#include <array>
#include <fmt/format.h>

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

std::string Base58Encode(ByteView data) {
  std::size_t zeros = 0;
  while (zeros < data.size() && data[zeros] == 0) ++zeros;
  // log(256)/log(58) ~= 1.366; digits are stored little-endian while converting.
  std::vector<std::uint8_t> digits((data.size() - zeros) * 138 / 100 + 1, 0);
  std::size_t length = 0;
  for (std::size_t i = zeros; i < data.size(); ++i) {
    std::uint32_t carry = data[i];
    std::size_t j = 0;
    for (; j < length || carry != 0; ++j) {
      carry += std::uint32_t{digits[j]} << 8;
      digits[j] = static_cast<std::uint8_t>(carry % 58);
      carry /= 58;
    }
    length = j;
  }
  std::string out(zeros, '1');
  out.reserve(zeros + length);
  for (std::size_t i = 0; i < length; ++i) out += kBase58Alphabet[digits[length - 1 - i]];
  return out;
}

Result<Bytes> Base58Decode(std::string_view text) {
  if (text.empty()) return Fail(Code::kInvalidArgument, "empty base58 string");
  std::size_t ones = 0;
  while (ones < text.size() && text[ones] == '1') ++ones;
  std::vector<std::uint8_t> bytes((text.size() - ones) * 733 / 1000 + 1, 0);  // log(58)/log(256)
  std::size_t length = 0;
  for (std::size_t i = ones; i < text.size(); ++i) {
    const std::int8_t digit = kBase58Reverse[static_cast<unsigned char>(text[i])];
    if (digit < 0) {
      return Fail(Code::kInvalidArgument,
                  fmt::format("invalid base58 character at position {}", i));
    }
    std::uint32_t carry = static_cast<std::uint32_t>(digit);
    std::size_t j = 0;
    for (; j < length || carry != 0; ++j) {
      carry += std::uint32_t{bytes[j]} * 58;
      bytes[j] = static_cast<std::uint8_t>(carry & 0xff);
      carry >>= 8;
    }
    length = j;
  }
  Bytes out(ones, 0);
  out.reserve(ones + length);
  for (std::size_t i = 0; i < length; ++i) out.push_back(bytes[length - 1 - i]);
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
