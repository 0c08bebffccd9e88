#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "agentmesh/core/crypto.hpp"
#include "agentmesh/core/encoding.hpp"
#include "vectors.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

using agentmesh::test_vectors::LoadVectors;

Bytes Hex(const json& value) {
  auto bytes = HexDecode(value.get<std::string>());
  REQUIRE(bytes);
  return *bytes;
}

std::string HexOf(ByteView bytes) { return HexEncode(bytes); }

Bytes B(std::string_view s) { return Bytes(s.begin(), s.end()); }

}  // namespace

TEST_CASE("HKDF-SHA256 matches RFC 5869 test cases 1-3", "[crypto]") {
  const json doc = LoadVectors("rfc5869.json");
  REQUIRE(doc["cases"].size() == 3);
  for (const json& c : doc["cases"]) {
    INFO(c["name"].get<std::string>());
    Bytes okm(c["length"].get<std::size_t>());
    REQUIRE(Hkdf(Hex(c["salt"]), Hex(c["ikm"]), Hex(c["info"]), okm));
    CHECK(HexOf(okm) == c["okm"].get<std::string>());
    // PRK = HMAC(salt, IKM), with the RFC's 32-zero-byte default salt for the empty case.
    Bytes salt = Hex(c["salt"]);
    if (salt.empty()) salt.assign(kSha256Size, 0);
    CHECK(HexOf(HmacSha256(salt, Hex(c["ikm"]))) == c["prk"].get<std::string>());
  }
}

TEST_CASE("HKDF output length limits", "[crypto]") {
  Bytes max(255 * kSha256Size);
  CHECK(Hkdf({}, B("ikm"), {}, max));
  Bytes too_long(255 * kSha256Size + 1);
  auto r = Hkdf({}, B("ikm"), {}, too_long);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Code::kInvalidArgument);
  CHECK(Hkdf({}, B("ikm"), {}, MutableByteView()));
}

TEST_CASE("HMAC-SHA256 matches RFC 4231 test cases 1-2", "[crypto]") {
  const json doc = LoadVectors("rfc4231.json");
  REQUIRE(doc["cases"].size() == 2);
  for (const json& c : doc["cases"]) {
    INFO(c["name"].get<std::string>());
    CHECK(HexOf(HmacSha256(Hex(c["key"]), Hex(c["data"]))) == c["hmac_sha256"].get<std::string>());
  }
}

TEST_CASE("SHA-256 of \"abc\"", "[crypto]") {
  const json doc = LoadVectors("rfc4231.json");
  for (const json& c : doc["sha256"]) {
    CHECK(HexOf(Sha256(Hex(c["data"]))) == c["digest"].get<std::string>());
  }
  CHECK(HexOf(Sha256(B("abc"))) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_CASE("AEAD round trip, tamper detection and size checks", "[crypto]") {
  const Bytes key(kAeadKeySize, 0x42);
  const Bytes nonce(kAeadNonceSize, 0x07);
  const Bytes ad = B("associated data");
  const Bytes plaintext = B("attack at dawn");

  Bytes sealed;
  REQUIRE(AeadSeal(key, nonce, ad, plaintext, sealed));
  REQUIRE(sealed.size() == plaintext.size() + kAeadTagSize);

  SECTION("round trip") {
    Bytes opened;
    REQUIRE(AeadOpen(key, nonce, ad, sealed, opened));
    CHECK(opened == plaintext);
  }

  SECTION("appends to existing output") {
    Bytes out = {0xAA};
    REQUIRE(AeadSeal(key, nonce, ad, plaintext, out));
    CHECK(out.size() == 1 + sealed.size());
    CHECK(Bytes(out.begin() + 1, out.end()) == sealed);
  }

  SECTION("empty plaintext") {
    Bytes empty_sealed;
    REQUIRE(AeadSeal(key, nonce, ad, {}, empty_sealed));
    CHECK(empty_sealed.size() == kAeadTagSize);
    Bytes opened;
    REQUIRE(AeadOpen(key, nonce, ad, empty_sealed, opened));
    CHECK(opened.empty());
  }

  SECTION("any flipped bit fails with kAuthFailed and leaves the output untouched") {
    const Bytes sentinel = {1, 2, 3};
    const auto expect_auth_failure = [&](ByteView k, ByteView n, ByteView a, ByteView ct) {
      Bytes out = sentinel;
      auto r = AeadOpen(k, n, a, ct, out);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Code::kAuthFailed);
      CHECK(out == sentinel);
    };
    for (std::size_t i = 0; i < sealed.size(); ++i) {  // ciphertext bytes, then tag bytes
      INFO("byte " << i);
      Bytes bad = sealed;
      bad[i] ^= 0x01;
      expect_auth_failure(key, nonce, ad, bad);
    }
    Bytes bad_ad = ad;
    bad_ad[0] ^= 0x80;
    expect_auth_failure(key, nonce, bad_ad, sealed);
    expect_auth_failure(key, nonce, {}, sealed);
    Bytes bad_nonce = nonce;
    bad_nonce[23] ^= 0x01;
    expect_auth_failure(key, bad_nonce, ad, sealed);
    Bytes bad_key = key;
    bad_key[0] ^= 0x01;
    expect_auth_failure(bad_key, nonce, ad, sealed);
    expect_auth_failure(key, nonce, ad, ByteView(sealed).first(sealed.size() - 1));
  }

  SECTION("short ciphertext and wrong sizes are kInvalidArgument") {
    Bytes out;
    for (std::size_t n = 0; n < kAeadTagSize; ++n) {
      auto r = AeadOpen(key, nonce, ad, ByteView(sealed).first(n), out);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Code::kInvalidArgument);
    }
    CHECK(out.empty());
    CHECK(AeadSeal(ByteView(key).first(31), nonce, ad, plaintext, out).error().code ==
          Code::kInvalidArgument);
    CHECK(AeadSeal(key, ByteView(nonce).first(12), ad, plaintext, out).error().code ==
          Code::kInvalidArgument);
    CHECK(AeadOpen(ByteView(key).first(31), nonce, ad, sealed, out).error().code ==
          Code::kInvalidArgument);
    CHECK(AeadOpen(key, ByteView(nonce).first(12), ad, sealed, out).error().code ==
          Code::kInvalidArgument);
    CHECK(out.empty());
  }
}
