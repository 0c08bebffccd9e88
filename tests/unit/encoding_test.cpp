#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "agentmesh/core/encoding.hpp"

using namespace agentmesh;

namespace {
Bytes B(std::string_view s) { return Bytes(s.begin(), s.end()); }

// Digit-at-a-time base58, the textbook algorithm: the reference the limb-wise codec must match.
std::string NaiveBase58(const Bytes& data) {
  static constexpr std::string_view kAlphabet =
      "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
  std::size_t zeros = 0;
  while (zeros < data.size() && data[zeros] == 0) ++zeros;
  std::vector<int> digits;  // little-endian
  for (std::size_t i = zeros; i < data.size(); ++i) {
    int carry = data[i];
    for (int& d : digits) {
      carry += d * 256;
      d = carry % 58;
      carry /= 58;
    }
    while (carry != 0) {
      digits.push_back(carry % 58);
      carry /= 58;
    }
  }
  std::string out(zeros, '1');
  for (auto it = digits.rbegin(); it != digits.rend(); ++it) out += kAlphabet[*it];
  return out;
}
}  // namespace

TEST_CASE("base58 matches the digit-at-a-time algorithm for every length", "[encoding]") {
  std::uint32_t state = 12345;
  const auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<std::uint8_t>(state >> 24);
  };
  for (std::size_t length = 0; length <= 72; ++length) {
    for (int round = 0; round < 20; ++round) {
      Bytes data(length);
      for (auto& b : data) b = next();
      // Leading zero bytes, and values with zero bytes right after them, are the edge cases.
      if (round % 4 == 1 && length > 0) data[0] = 0;
      if (round % 4 == 2 && length > 2) data[0] = data[1] = 0;
      if (round % 4 == 3) std::fill(data.begin(), data.end(), 0xff);
      if (round == 4) std::fill(data.begin(), data.end(), 0);
      const std::string expected = NaiveBase58(data);
      INFO("length " << length << " round " << round << " " << expected);
      CHECK(Base58Encode(data) == expected);
      if (!expected.empty()) {
        auto decoded = Base58Decode(expected);
        REQUIRE(decoded);
        CHECK(*decoded == data);
      }
    }
  }
}

TEST_CASE("base58 round trips and keeps leading zeros", "[encoding]") {
  // Vector from the reference cross-SDK fixtures.
  const Bytes leading = {0, 0, 0, 1, 2, 3, 4, 5};
  CHECK(Base58Encode(leading) == "1117bWpTW");
  CHECK(*Base58Decode("1117bWpTW") == leading);
  CHECK(Base58Encode(B("hello world")) == "StV1DL6CwTryKyV");
  CHECK(Base58Encode({}) == "");
  CHECK(Base58Encode(Bytes{0}) == "1");
  CHECK(*Base58Decode("1") == Bytes{0});
}

TEST_CASE("base58 rejects characters outside the alphabet", "[encoding]") {
  for (std::string_view bad : {"0", "O", "I", "l", "abc+", "", "ab c"}) {
    INFO(bad);
    auto r = Base58Decode(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
}

TEST_CASE("base64 follows RFC 4648 test vectors", "[encoding]") {
  const std::pair<std::string_view, std::string_view> vectors[] = {{"", ""},
                                                                   {"f", "Zg=="},
                                                                   {"fo", "Zm8="},
                                                                   {"foo", "Zm9v"},
                                                                   {"foob", "Zm9vYg=="},
                                                                   {"fooba", "Zm9vYmE="},
                                                                   {"foobar", "Zm9vYmFy"}};
  for (auto [plain, encoded] : vectors) {
    CHECK(Base64Encode(B(plain)) == encoded);
    auto decoded = Base64Decode(encoded);
    REQUIRE(decoded);
    CHECK(*decoded == B(plain));
  }
}

TEST_CASE("base64 is strict", "[encoding]") {
  for (std::string_view bad : {"Zg", "Zg=", "Zm9", "Zh==", "Zm9=", "Z===", "====", "Zm9v\n", "Zm-v",
                               "Zm_v", "Zg==Zg==", " Zm9v", "Zm=v"}) {
    INFO(bad);
    auto r = Base64Decode(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
}

TEST_CASE("hex round trip and rejection", "[encoding]") {
  CHECK(HexEncode(Bytes{0x00, 0xab, 0xff}) == "00abff");
  CHECK(*HexDecode("00ABff") == (Bytes{0x00, 0xab, 0xff}));
  CHECK_FALSE(HexDecode("abc"));
  CHECK_FALSE(HexDecode("zz"));
}
