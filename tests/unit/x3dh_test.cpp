#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/ratchet.hpp"
#include "agentmesh/core/x3dh.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

json LoadJson(const std::string& path) {
  std::ifstream in(path);
  REQUIRE(in.good());
  json j = json::parse(in, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

template <typename T>
T FromHex(const json& j, const char* name) {
  INFO(name);
  auto raw = HexDecode(j.at(name).get<std::string>());
  REQUIRE(raw);
  T out;
  REQUIRE(T::FromBytes(*raw, out));
  return out;
}

template <typename T>
T FromB64(const json& j, const char* name) {
  INFO(name);
  auto raw = Base64Decode(j.at(name).get<std::string>());
  REQUIRE(raw);
  T out;
  REQUIRE(T::FromBytes(*raw, out));
  return out;
}

struct Responder {
  X25519KeyPair identity;
  Ed25519KeyPair signing;
  SignedPrekey spk;
  OneTimePrekey opk;
};

Responder MakeResponder(Rng& rng) {
  Responder r{X25519KeyPair::Generate(rng), Ed25519KeyPair::Generate(rng), {}, {}};
  r.spk = SignedPrekey::Generate(1, r.signing.secret, 0, rng);
  r.opk = OneTimePrekey{5, X25519KeyPair::Generate(rng)};
  return r;
}

// Public keys of small order on Curve25519 (and non-canonical encodings of them): X25519 with
// any of these yields the all-zero output.
const char* const kLowOrderPoints[] = {
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
};

X25519PublicKey LowOrder(const char* hex) {
  auto raw = HexDecode(hex);
  X25519PublicKey key;
  X25519PublicKey::FromBytes(*raw, key);
  return key;
}

// Checks SK against a reference group in the reference SDK's naming (base64 members).
void CheckReferenceX3dh(const json& x) {
  X25519KeyPair alice =
      X25519KeyPair::FromSecret(FromB64<X25519SecretKey>(x, "aliceIdentityPrivate"));
  X25519KeyPair ephemeral =
      X25519KeyPair::FromSecret(FromB64<X25519SecretKey>(x, "aliceEphemeralPrivate"));
  X25519KeyPair bob = X25519KeyPair::FromSecret(FromB64<X25519SecretKey>(x, "bobIdentityPrivate"));
  X25519KeyPair spk =
      X25519KeyPair::FromSecret(FromB64<X25519SecretKey>(x, "bobSignedPrekeyPrivate"));
  X25519KeyPair opk =
      X25519KeyPair::FromSecret(FromB64<X25519SecretKey>(x, "bobOneTimePrekeyPrivate"));
  CHECK(alice.public_key == FromB64<X25519PublicKey>(x, "aliceIdentityPublic"));
  CHECK(ephemeral.public_key == FromB64<X25519PublicKey>(x, "aliceEphemeralPublic"));
  CHECK(bob.public_key == FromB64<X25519PublicKey>(x, "bobIdentityPublic"));
  CHECK(spk.public_key == FromB64<X25519PublicKey>(x, "bobSignedPrekeyPublic"));
  CHECK(opk.public_key == FromB64<X25519PublicKey>(x, "bobOneTimePrekeyPublic"));

  PrekeyBundle bundle;
  bundle.identity_key = bob.public_key;
  bundle.signed_prekey_id = 1;
  bundle.signed_prekey = spk.public_key;
  bundle.signed_prekey_signature = FromB64<Signature>(x, "bobSignedPrekeySignature");
  bundle.one_time_prekey = OneTimePublic{1, opk.public_key};
  const auto signer = FromB64<Ed25519PublicKey>(x, "bobSigningPublicKey");
  const auto expected = FromB64<X3dhSecret>(x, "expectedSharedSecret");

  auto init = X3dhInitiateWithEphemeral(alice, bundle, signer, ephemeral);
  REQUIRE(init);
  CHECK(ConstantTimeEqual(init->shared_secret, expected));
  auto resp = X3dhRespond(bob, spk, &opk, alice.public_key, ephemeral.public_key);
  REQUIRE(resp);
  CHECK(ConstantTimeEqual(*resp, expected));
}

void CheckReferenceKdfs(const json& ck, const json& rk) {
  const auto chain = FromB64<ChainKey>(ck, "chainKey");
  ChainKdfOutput step = KdfCk(chain);
  CHECK(ConstantTimeEqual(step.message_key, FromB64<MessageKey>(ck, "expectedMessageKey")));
  CHECK(ConstantTimeEqual(step.chain_key, FromB64<ChainKey>(ck, "expectedNextChainKey")));

  const auto root = FromB64<RootKey>(rk, "rootKey");
  const auto dh = FromB64<DhOutput>(rk, "dhOutput");
  RootKdfOutput out = KdfRk(root, dh);
  CHECK(ConstantTimeEqual(out.root_key, FromB64<RootKey>(rk, "expectedNewRoot")));
  CHECK(ConstantTimeEqual(out.chain_key, FromB64<ChainKey>(rk, "expectedChainKey")));
}

// The reference file may nest a group's values under "vector1" (as test-vectors.ts does).
const json& Group(const json& file, const char* name) {
  const json& g = file.at(name);
  return g.contains("vector1") ? g.at("vector1") : g;
}

}  // namespace

TEST_CASE("X3DH: both sides derive the same secret, with and without a one-time prekey", "[x3dh]") {
  DeterministicRng rng(101);
  for (int i = 0; i < 8; ++i) {
    const bool with_opk = i % 2 == 0;
    INFO("round " << i << " with_opk=" << with_opk);
    Responder bob = MakeResponder(rng);
    X25519KeyPair alice = X25519KeyPair::Generate(rng);
    PrekeyBundle bundle =
        MakeBundle(bob.identity.public_key, bob.spk, with_opk ? &bob.opk : nullptr);
    auto init = X3dhInitiate(alice, bundle, bob.signing.public_key, rng);
    REQUIRE(init);
    CHECK(init->identity_key == alice.public_key);
    CHECK(init->signed_prekey_id == 1);
    CHECK(init->one_time_prekey_id == (with_opk ? std::optional<std::uint32_t>(5) : std::nullopt));
    auto resp = X3dhRespond(bob.identity, bob.spk.pair, with_opk ? &bob.opk.pair : nullptr,
                            alice.public_key, init->ephemeral_key);
    REQUIRE(resp);
    CHECK(ConstantTimeEqual(init->shared_secret, *resp));

    // Using (or omitting) the one-time prekey on one side only gives a different secret.
    auto mismatched = X3dhRespond(bob.identity, bob.spk.pair, with_opk ? nullptr : &bob.opk.pair,
                                  alice.public_key, init->ephemeral_key);
    REQUIRE(mismatched);
    CHECK_FALSE(ConstantTimeEqual(init->shared_secret, *mismatched));
  }
}

TEST_CASE("X3DH: a bad signed prekey signature is rejected before any DH", "[x3dh]") {
  DeterministicRng rng(102);
  Responder bob = MakeResponder(rng);
  X25519KeyPair alice = X25519KeyPair::Generate(rng);
  PrekeyBundle good = MakeBundle(bob.identity.public_key, bob.spk, &bob.opk);
  REQUIRE(X3dhInitiate(alice, good, bob.signing.public_key, rng));

  SECTION("flipped signature bit") {
    PrekeyBundle bad = good;
    bad.signed_prekey_signature.data()[10] ^= 0x01;
    auto r = X3dhInitiate(alice, bad, bob.signing.public_key, rng);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kAuthFailed);
  }
  SECTION("signed prekey swapped") {
    PrekeyBundle bad = good;
    bad.signed_prekey = X25519KeyPair::Generate(rng).public_key;
    auto r = X3dhInitiate(alice, bad, bob.signing.public_key, rng);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kAuthFailed);
  }
  SECTION("wrong signer") {
    auto r = X3dhInitiate(alice, good, Ed25519KeyPair::Generate(rng).public_key, rng);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kAuthFailed);
    CHECK(r.error().field == "signed_prekey_signature");
  }
  SECTION("empty (all-zero) signature as the reference SDK uploads it") {
    PrekeyBundle bad = good;
    bad.signed_prekey_signature = Signature();
    auto r =
        X3dhInitiateWithEphemeral(alice, bad, bob.signing.public_key, X25519KeyPair::Generate(rng));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kAuthFailed);
  }
  SECTION("one-time prekey id 0 is reserved") {
    PrekeyBundle bad = good;
    bad.one_time_prekey->id = 0;
    auto r = X3dhInitiate(alice, bad, bob.signing.public_key, rng);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
}

TEST_CASE("X3DH: low-order public keys are rejected on both sides", "[x3dh]") {
  DeterministicRng rng(103);
  Responder bob = MakeResponder(rng);
  X25519KeyPair alice = X25519KeyPair::Generate(rng);
  for (const char* hex : kLowOrderPoints) {
    INFO(hex);
    const X25519PublicKey bad = LowOrder(hex);
    {
      PrekeyBundle bundle = MakeBundle(bob.identity.public_key, bob.spk, &bob.opk);
      bundle.identity_key = bad;
      auto r = X3dhInitiate(alice, bundle, bob.signing.public_key, rng);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Code::kAuthFailed);
    }
    {
      // A low-order signed prekey with a valid signature over it.
      PrekeyBundle bundle = MakeBundle(bob.identity.public_key, bob.spk, &bob.opk);
      bundle.signed_prekey = bad;
      bundle.signed_prekey_signature = SignPrekey(bob.signing.secret, bad);
      auto r = X3dhInitiate(alice, bundle, bob.signing.public_key, rng);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Code::kAuthFailed);
    }
    {
      PrekeyBundle bundle = MakeBundle(bob.identity.public_key, bob.spk, &bob.opk);
      bundle.one_time_prekey->key = bad;
      auto r = X3dhInitiate(alice, bundle, bob.signing.public_key, rng);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Code::kAuthFailed);
    }
    const X25519PublicKey ek = X25519KeyPair::Generate(rng).public_key;
    auto r1 = X3dhRespond(bob.identity, bob.spk.pair, &bob.opk.pair, bad, ek);
    REQUIRE_FALSE(r1);
    CHECK(r1.error().code == Code::kAuthFailed);
    auto r2 = X3dhRespond(bob.identity, bob.spk.pair, nullptr, alice.public_key, bad);
    REQUIRE_FALSE(r2);
    CHECK(r2.error().code == Code::kAuthFailed);
  }
}

TEST_CASE("X3DH: published agentmesh/1 vectors", "[x3dh]") {
  const json file = LoadJson(std::string(AGENTMESH_VECTORS_DIR) + "/x3dh.json");
  REQUIRE(file.at("vectors").size() == 2);
  for (const json& v : file.at("vectors")) {
    INFO(v.at("name").get<std::string>());
    X25519KeyPair alice =
        X25519KeyPair::FromSecret(FromHex<X25519SecretKey>(v, "alice_identity_secret"));
    X25519KeyPair ephemeral =
        X25519KeyPair::FromSecret(FromHex<X25519SecretKey>(v, "alice_ephemeral_secret"));
    X25519KeyPair bob =
        X25519KeyPair::FromSecret(FromHex<X25519SecretKey>(v, "bob_identity_secret"));
    Ed25519KeyPair signing = Ed25519KeyPair::FromSeed(FromHex<Ed25519Seed>(v, "bob_signing_seed"));
    SignedPrekey spk{
        v.at("signed_prekey_id").get<std::uint32_t>(),
        X25519KeyPair::FromSecret(FromHex<X25519SecretKey>(v, "bob_signed_prekey_secret")),
        {},
        0};
    spk.signature = SignPrekey(signing.secret, spk.pair.public_key);
    CHECK(alice.public_key == FromHex<X25519PublicKey>(v, "alice_identity_public"));
    CHECK(ephemeral.public_key == FromHex<X25519PublicKey>(v, "alice_ephemeral_public"));
    CHECK(bob.public_key == FromHex<X25519PublicKey>(v, "bob_identity_public"));
    CHECK(signing.public_key == FromHex<Ed25519PublicKey>(v, "bob_signing_public"));
    CHECK(spk.pair.public_key == FromHex<X25519PublicKey>(v, "bob_signed_prekey_public"));
    CHECK(spk.signature == FromHex<Signature>(v, "signed_prekey_signature"));  // deterministic

    std::optional<OneTimePrekey> opk;
    if (v.contains("one_time_prekey_id")) {
      opk = OneTimePrekey{
          v.at("one_time_prekey_id").get<std::uint32_t>(),
          X25519KeyPair::FromSecret(FromHex<X25519SecretKey>(v, "bob_one_time_prekey_secret"))};
      CHECK(opk->pair.public_key == FromHex<X25519PublicKey>(v, "bob_one_time_prekey_public"));
    }
    const auto expected = FromHex<X3dhSecret>(v, "shared_secret");
    PrekeyBundle bundle = MakeBundle(bob.public_key, spk, opk ? &*opk : nullptr);
    auto init = X3dhInitiateWithEphemeral(alice, bundle, signing.public_key, ephemeral);
    REQUIRE(init);
    CHECK(ConstantTimeEqual(init->shared_secret, expected));
    auto resp = X3dhRespond(bob, spk.pair, opk ? &opk->pair : nullptr, alice.public_key,
                            ephemeral.public_key);
    REQUIRE(resp);
    CHECK(ConstantTimeEqual(*resp, expected));
  }
}

TEST_CASE("X3DH and KDFs: reference SDK cross-SDK values (copied into x3dh.json)",
          "[x3dh][ratchet]") {
  const json file = LoadJson(std::string(AGENTMESH_VECTORS_DIR) + "/x3dh.json");
  const json& ref = file.at("reference_cross_sdk");
  CheckReferenceX3dh(ref.at("x3dh"));
  CheckReferenceKdfs(ref.at("chainKeyDerivation"), ref.at("rootKeyDerivation"));
}

TEST_CASE("X3DH and KDFs: reference_cross_sdk.json, when present", "[x3dh][ratchet]") {
  const std::string path = std::string(AGENTMESH_VECTORS_DIR) + "/reference_cross_sdk.json";
  if (!std::filesystem::exists(path)) {
    WARN("tests/vectors/reference_cross_sdk.json not present; covered by x3dh.json");
    return;
  }
  const json file = LoadJson(path);
  CheckReferenceX3dh(Group(file, "x3dh"));
  CheckReferenceKdfs(Group(file, "chainKeyDerivation"), Group(file, "rootKeyDerivation"));
}
