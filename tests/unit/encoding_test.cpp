#include <catch2/catch.hpp>

#include "agentmesh/core/encoding.hpp"

using namespace agentmesh;

namespace {
Bytes B(std::string_view s) { return Bytes(s.begin(), s.end()); }
}  // namespace

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
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"", ""},         {"f", "Zg=="},         {"fo", "Zm8="},         {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}, {"foobar", "Zm9vYmFy"}};
  for (auto [plain, encoded] : vectors) {
    CHECK(Base64Encode(B(plain)) == encoded);
    auto decoded = Base64Decode(encoded);
    REQUIRE(decoded);
    CHECK(*decoded == B(plain));
  }
}

TEST_CASE("base64 is strict", "[encoding]") {
  for (std::string_view bad : {"Zg", "Zg=", "Zm9", "Zh==", "Zm9=", "Z===", "====", "Zm9v\n",
                               "Zm-v", "Zm_v", "Zg==Zg==", " Zm9v", "Zm=v"}) {
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
