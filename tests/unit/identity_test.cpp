#include <catch2/catch.hpp>

#include <algorithm>
#include <concepts>
#include <fstream>
#include <sstream>
#include <string>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "agentmesh/core/crypto.hpp"
#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/rng.hpp"
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

Bytes B64(const json& value) {
  auto bytes = Base64Decode(value.get<std::string>());
  REQUIRE(bytes);
  return *bytes;
}

Bytes B(std::string_view s) { return Bytes(s.begin(), s.end()); }

template <typename T>
T FromBytes(ByteView bytes) {
  T out;
  REQUIRE(T::FromBytes(bytes, out));
  return out;
}

bool AllZero(ByteView bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](std::uint8_t b) { return b == 0; });
}

}  // namespace

// Secrets are move-only, have no ==, and are distinct types per role.
static_assert(!std::is_copy_constructible_v<Ed25519Seed>);
static_assert(!std::is_copy_assignable_v<Ed25519Seed>);
static_assert(!std::is_copy_constructible_v<Ed25519SecretKey>);
static_assert(!std::is_copy_constructible_v<X25519SecretKey>);
static_assert(!std::is_copy_constructible_v<DhOutput>);
static_assert(!std::is_copy_constructible_v<SecretBuffer>);
static_assert(!std::is_copy_constructible_v<Ed25519KeyPair>);
static_assert(!std::is_copy_constructible_v<X25519KeyPair>);
static_assert(std::is_nothrow_move_constructible_v<Ed25519SecretKey>);
static_assert(std::is_nothrow_move_assignable_v<X25519SecretKey>);
static_assert(!std::equality_comparable<Ed25519Seed>);
static_assert(!std::equality_comparable<X25519SecretKey>);
static_assert(!std::is_same_v<Ed25519Seed, X25519SecretKey>);
static_assert(!std::is_convertible_v<X25519PublicKey, Ed25519PublicKey>);
static_assert(std::equality_comparable<Ed25519PublicKey>);

TEST_CASE("Ed25519 matches RFC 8032 section 7.1", "[identity]") {
  const json doc = LoadVectors("rfc8032.json");
  REQUIRE(doc["cases"].size() == 4);
  for (const json& c : doc["cases"]) {
    INFO(c["name"].get<std::string>());
    const auto seed = FromBytes<Ed25519Seed>(Hex(c["secret_key"]));
    const Ed25519KeyPair pair = Ed25519KeyPair::FromSeed(seed);
    const auto expected_public = FromBytes<Ed25519PublicKey>(Hex(c["public_key"]));
    CHECK(pair.public_key == expected_public);
    CHECK(ConstantTimeEqual(pair.Seed(), seed));

    const Bytes message = Hex(c["message"]);
    const Signature sig = Sign(pair.secret, message);
    CHECK(HexEncode(sig.view()) == c["signature"].get<std::string>());
    CHECK(Verify(expected_public, message, sig));

    Bytes longer = message;
    longer.push_back(0x00);
    CHECK_FALSE(Verify(expected_public, longer, sig));
    if (!message.empty()) {
      Bytes changed = message;
      changed[0] ^= 0x01;
      CHECK_FALSE(Verify(expected_public, changed, sig));
    }
    for (std::size_t i : {std::size_t{0}, std::size_t{31}, std::size_t{32}, std::size_t{63}}) {
      Signature bad_sig = sig;
      bad_sig.data()[i] ^= 0x01;
      CHECK_FALSE(Verify(expected_public, message, bad_sig));
    }
    Ed25519PublicKey other_key = expected_public;
    other_key.data()[0] ^= 0x01;
    CHECK_FALSE(Verify(other_key, message, sig));
  }
}

TEST_CASE("X25519 matches RFC 7748 section 5.2", "[identity]") {
  const json doc = LoadVectors("rfc7748.json");
  REQUIRE(doc["x25519"].size() == 2);
  for (const json& c : doc["x25519"]) {
    INFO(c["name"].get<std::string>());
    const auto scalar = FromBytes<X25519SecretKey>(Hex(c["scalar"]));
    const auto u = FromBytes<X25519PublicKey>(Hex(c["u"]));
    auto out = X25519(scalar, u);
    REQUIRE(out);
    CHECK(HexEncode(out->Expose()) == c["output"].get<std::string>());
  }
}

TEST_CASE("X25519 Diffie-Hellman matches RFC 7748 section 6.1", "[identity]") {
  const json c = LoadVectors("rfc7748.json")["diffie_hellman"];
  const X25519KeyPair alice =
      X25519KeyPair::FromSecret(FromBytes<X25519SecretKey>(Hex(c["alice_private"])));
  const X25519KeyPair bob =
      X25519KeyPair::FromSecret(FromBytes<X25519SecretKey>(Hex(c["bob_private"])));
  CHECK(HexEncode(alice.public_key.view()) == c["alice_public"].get<std::string>());
  CHECK(HexEncode(bob.public_key.view()) == c["bob_public"].get<std::string>());
  auto k_alice = X25519(alice.secret, bob.public_key);
  auto k_bob = X25519(bob.secret, alice.public_key);
  REQUIRE(k_alice);
  REQUIRE(k_bob);
  CHECK(HexEncode(k_alice->Expose()) == c["shared"].get<std::string>());
  CHECK(ConstantTimeEqual(*k_alice, *k_bob));
}

TEST_CASE("X25519 rejects low-order public keys", "[identity]") {
  DeterministicRng rng(7);
  const X25519KeyPair pair = X25519KeyPair::Generate(rng);
  // Points of order 1, 2, 4 and 8 (the all-zero output cases listed by Bernstein/libsodium).
  const char* low_order[] = {
      "0000000000000000000000000000000000000000000000000000000000000000",
      "0100000000000000000000000000000000000000000000000000000000000000",
      "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
      "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
      "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  };
  for (const char* hex : low_order) {
    INFO(hex);
    const auto pub = FromBytes<X25519PublicKey>(*HexDecode(hex));
    auto r = X25519(pair.secret, pub);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kAuthFailed);
  }
}

TEST_CASE("AMID is base58 of the first 20 bytes of SHA-256(public key)", "[identity]") {
  DeterministicRng rng(1);
  const Ed25519KeyPair pair = Ed25519KeyPair::Generate(rng);
  const Amid amid = Amid::FromPublicKey(pair.public_key);
  const Sha256Digest digest = Sha256(pair.public_key.view());
  CHECK(amid.str() == Base58Encode(ByteView(digest.data(), Amid::kRawSize)));
  auto parsed = Amid::Parse(amid.str());
  REQUIRE(parsed);
  CHECK(*parsed == amid);
}

TEST_CASE("Amid::Parse rejects malformed text", "[identity]") {
  DeterministicRng rng(2);
  const Amid amid = Amid::FromPublicKey(Ed25519KeyPair::Generate(rng).public_key);
  const std::string good = amid.str();
  const Bytes raw19(19, 0x5a);
  const Bytes raw21(21, 0x5a);
  const std::string bad[] = {
      "",
      Base58Encode(raw19),   // 19 bytes
      Base58Encode(raw21),   // 21 bytes
      "1" + good,            // an extra leading '1' is an extra zero byte
      "0" + good.substr(1),  // '0', 'O', 'I', 'l' are not base58
      "O" + good.substr(1),
      "I" + good.substr(1),
      "l" + good.substr(1),
      good + " ",
      good.substr(0, good.size() - 1) + "+",
      std::string(41, '2'),  // over the length cap
  };
  for (const std::string& text : bad) {
    INFO("'" << text << "'");
    auto r = Amid::Parse(text);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
}

TEST_CASE("Public key strings: prefixes, base64 and lengths", "[identity]") {
  DeterministicRng rng(3);
  const Ed25519KeyPair ed = Ed25519KeyPair::Generate(rng);
  const X25519KeyPair x = X25519KeyPair::Generate(rng);
  const std::string ed_b64 = FormatEd25519Key(ed.public_key, false);
  const std::string x_b64 = FormatX25519Key(x.public_key, false);
  CHECK(FormatEd25519Key(ed.public_key) == "ed25519:" + ed_b64);
  CHECK(FormatX25519Key(x.public_key) == "x25519:" + x_b64);
  CHECK(ed_b64 == Base64Encode(ed.public_key.view()));

  SECTION("prefix is optional") {
    CHECK(*ParseEd25519Key("ed25519:" + ed_b64) == ed.public_key);
    CHECK(*ParseEd25519Key(ed_b64) == ed.public_key);
    CHECK(*ParseX25519Key("x25519:" + x_b64) == x.public_key);
    CHECK(*ParseX25519Key(x_b64) == x.public_key);
  }

  SECTION("rejections") {
    const auto reject_ed = [](const std::string& text) {
      INFO("'" << text << "'");
      auto r = ParseEd25519Key(text);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Code::kInvalidArgument);
    };
    const auto reject_x = [](const std::string& text) {
      INFO("'" << text << "'");
      auto r = ParseX25519Key(text);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Code::kInvalidArgument);
    };
    reject_ed("x25519:" + ed_b64);  // the other key type's prefix
    reject_x("ed25519:" + x_b64);
    reject_ed("rsa:" + ed_b64);  // unknown prefix
    reject_x("curve25519:" + x_b64);
    reject_ed("ED25519:" + ed_b64);
    reject_ed("ed25519:" + ed_b64.substr(0, ed_b64.size() - 1));  // bad base64 (length)
    reject_ed("ed25519:!" + ed_b64.substr(1));                    // bad base64 (character)
    reject_x(x_b64 + "\n");
    reject_ed("");
    reject_ed("ed25519:");
    reject_ed(Base64Encode(Bytes(31, 0x11)));  // wrong lengths
    reject_ed(Base64Encode(Bytes(33, 0x11)));
    reject_x("x25519:" + Base64Encode(Bytes(31, 0x11)));
    reject_x("x25519:" + Base64Encode(Bytes(33, 0x11)));
  }

  SECTION("signatures") {
    const Signature sig = Sign(ed.secret, B("hello"));
    auto parsed = ParseSignature(FormatSignature(sig));
    REQUIRE(parsed);
    CHECK(*parsed == sig);
    CHECK_FALSE(ParseSignature(Base64Encode(Bytes(63, 1))));
    CHECK_FALSE(ParseSignature(Base64Encode(Bytes(65, 1))));
    CHECK_FALSE(ParseSignature("not base64"));
  }
}

TEST_CASE("Secrets are zeroed when moved from", "[identity]") {
  DeterministicRng rng(4);
  Ed25519KeyPair pair = Ed25519KeyPair::Generate(rng);
  REQUIRE_FALSE(AllZero(pair.secret.Expose()));
  const Ed25519SecretKey reference = pair.secret.Clone();

  Ed25519SecretKey moved(std::move(pair.secret));
  CHECK(ConstantTimeEqual(moved, reference));
  CHECK(AllZero(pair.secret.Expose()));  // NOLINT(bugprone-use-after-move): the property tested

  X25519SecretKey a;
  rng.Fill(a.ExposeMutable());
  X25519SecretKey b;
  b = std::move(a);
  CHECK(AllZero(a.Expose()));  // NOLINT(bugprone-use-after-move)
  CHECK_FALSE(AllZero(b.Expose()));

  SecretBuffer buffer(Bytes(16, 0x33));
  SecretBuffer taken(std::move(buffer));
  CHECK(buffer.empty());  // NOLINT(bugprone-use-after-move)
  CHECK(taken.size() == 16);
}

TEST_CASE("Reference cross-SDK vectors: amid, hkdf, signature, base58", "[identity]") {
  const json doc = LoadVectors("reference_cross_sdk.json");

  SECTION("amid") {
    const json& v = doc["amid"];
    const Ed25519KeyPair pair =
        Ed25519KeyPair::FromSeed(FromBytes<Ed25519Seed>(B64(v["signingPrivateKey"])));
    CHECK(pair.public_key == FromBytes<Ed25519PublicKey>(B64(v["signingPublicKey"])));
    CHECK(Amid::FromPublicKey(pair.public_key).str() == "jZ6CK1dpcZD4oPYScUJvifP7BtJ");
    CHECK(Amid::FromPublicKey(pair.public_key).str() == v["expectedAmid"].get<std::string>());
    const X25519KeyPair exchange =
        X25519KeyPair::FromSecret(FromBytes<X25519SecretKey>(B64(v["exchangePrivateKey"])));
    CHECK(exchange.public_key == FromBytes<X25519PublicKey>(B64(v["exchangePublicKey"])));
    CHECK(*ParseEd25519Key("ed25519:" + v["signingPublicKey"].get<std::string>()) ==
          pair.public_key);
  }

  SECTION("hkdf") {
    const json& v = doc["hkdf"];
    Bytes out(v["length"].get<std::size_t>());
    REQUIRE(Hkdf(B64(v["salt"]), B64(v["ikm"]), B(v["info"].get<std::string>()), out));
    CHECK(out == B64(v["expectedOutput"]));
  }

  SECTION("signature") {
    const json& v = doc["signature"];
    const Ed25519KeyPair pair =
        Ed25519KeyPair::FromSeed(FromBytes<Ed25519Seed>(B64(v["privateKey"])));
    CHECK(pair.public_key == FromBytes<Ed25519PublicKey>(B64(v["publicKey"])));
    const Bytes message = B(v["message"].get<std::string>());
    const Signature sig = Sign(pair.secret, message);
    CHECK(FormatSignature(sig) == v["expectedSignature"].get<std::string>());
    auto parsed = ParseSignature(v["expectedSignature"].get<std::string>());
    REQUIRE(parsed);
    CHECK(Verify(pair.public_key, message, *parsed));
  }

  SECTION("base58") {
    const json& v = doc["base58"];
    CHECK(Base58Encode(Hex(v["input"])) == v["expectedBase58"].get<std::string>());
    CHECK(*Base58Decode(v["expectedBase58"].get<std::string>()) == Hex(v["input"]));
  }
}
