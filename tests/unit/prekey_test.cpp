#include <catch2/catch.hpp>

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/prekey.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

json LoadVectors() {
  std::ifstream in(std::string(AGENTMESH_VECTORS_DIR) + "/prekey.json");
  REQUIRE(in.good());
  json j = json::parse(in, nullptr, false);
  REQUIRE_FALSE(j.is_discarded());
  return j;
}

template <typename T>
T FromHex(const std::string& hex) {
  auto raw = HexDecode(hex);
  REQUIRE(raw);
  T out;
  REQUIRE(T::FromBytes(*raw, out));
  return out;
}

}  // namespace

TEST_CASE("signed prekeys are signed over the raw public key", "[prekey]") {
  DeterministicRng rng(201);
  Ed25519KeyPair signing = Ed25519KeyPair::Generate(rng);
  SignedPrekey spk = SignedPrekey::Generate(9, signing.secret, 1234567890123, rng);
  CHECK(spk.id == 9);
  CHECK(spk.created_at == 1234567890123);
  CHECK(Verify(signing.public_key, spk.pair.public_key.view(), spk.signature));
  CHECK(VerifyPrekeySignature(signing.public_key, spk.pair.public_key, spk.signature));
  CHECK(spk.signature == SignPrekey(signing.secret, spk.pair.public_key));

  X25519PublicKey other = X25519KeyPair::Generate(rng).public_key;
  CHECK_FALSE(VerifyPrekeySignature(signing.public_key, other, spk.signature));
  CHECK_FALSE(VerifyPrekeySignature(Ed25519KeyPair::Generate(rng).public_key, spk.pair.public_key,
                                    spk.signature));
  SignedPrekey copy = spk.Clone();
  CHECK(copy.pair.public_key == spk.pair.public_key);
  CHECK(ConstantTimeEqual(copy.pair.secret, spk.pair.secret));
}

TEST_CASE("one-time prekeys get consecutive ids starting at >= 1", "[prekey]") {
  DeterministicRng rng(202);
  auto keys = GenerateOneTimePrekeys(1, 100, rng);
  REQUIRE(keys);
  REQUIRE(keys->size() == 100);
  std::set<X25519PublicKey> distinct;
  for (std::size_t i = 0; i < keys->size(); ++i) {
    CHECK((*keys)[i].id == i + 1);
    distinct.insert((*keys)[i].pair.public_key);
  }
  CHECK(distinct.size() == 100);

  auto zero = GenerateOneTimePrekeys(0, 1, rng);
  REQUIRE_FALSE(zero);
  CHECK(zero.error().code == Code::kInvalidArgument);

  const std::uint32_t max = std::numeric_limits<std::uint32_t>::max();
  auto last = GenerateOneTimePrekeys(max, 1, rng);
  REQUIRE(last);
  CHECK(last->at(0).id == max);
  auto overflow = GenerateOneTimePrekeys(max, 2, rng);
  REQUIRE_FALSE(overflow);
  CHECK(overflow.error().code == Code::kInvalidArgument);
  auto none = GenerateOneTimePrekeys(5, 0, rng);
  REQUIRE(none);
  CHECK(none->empty());
}

TEST_CASE("VerifyBundle checks the signature and the one-time prekey id", "[prekey]") {
  DeterministicRng rng(203);
  Ed25519KeyPair signing = Ed25519KeyPair::Generate(rng);
  X25519KeyPair identity = X25519KeyPair::Generate(rng);
  SignedPrekey spk = SignedPrekey::Generate(1, signing.secret, 0, rng);
  auto otks = GenerateOneTimePrekeys(1, 1, rng);
  PrekeyBundle bundle = MakeBundle(identity.public_key, spk, &otks->at(0));
  CHECK(VerifyBundle(bundle, signing.public_key));

  auto wrong = VerifyBundle(bundle, Ed25519KeyPair::Generate(rng).public_key);
  REQUIRE_FALSE(wrong);
  CHECK(wrong.error().code == Code::kAuthFailed);

  PrekeyBundle zero_id = bundle;
  zero_id.one_time_prekey->id = 0;
  auto zero = VerifyBundle(zero_id, signing.public_key);
  REQUIRE_FALSE(zero);
  CHECK(zero.error().code == Code::kInvalidArgument);
  CHECK(zero.error().field == "one_time_prekey.id");
}

TEST_CASE("prekey bundle JSON vectors", "[prekey]") {
  const json v = LoadVectors();
  const auto signing = Ed25519KeyPair::FromSeed(FromHex<Ed25519Seed>(v.at("signing_seed")));
  auto signer = ParseEd25519Key(v.at("signing_public").get<std::string>());
  REQUIRE(signer);
  CHECK(*signer == signing.public_key);

  // The generator's bundle, rebuilt from the published secrets.
  X25519KeyPair identity =
      X25519KeyPair::FromSecret(FromHex<X25519SecretKey>(v.at("identity_secret")));
  SignedPrekey spk{
      3,
      X25519KeyPair::FromSecret(FromHex<X25519SecretKey>(v.at("signed_prekey_secret"))),
      {},
      1'769'962'510'000'000'000};
  spk.signature = SignPrekey(signing.secret, spk.pair.public_key);
  std::vector<OneTimePrekey> otks;
  std::uint32_t id = 17;
  for (const json& secret : v.at("one_time_prekey_secrets")) {
    otks.push_back(OneTimePrekey{
        id++, X25519KeyPair::FromSecret(FromHex<X25519SecretKey>(secret.get<std::string>()))});
  }
  const PrekeyBundle expected = MakeBundle(identity.public_key, spk, &otks[0]);
  CHECK(BundleToJson(expected) == v.at("bundle"));

  SECTION("BundleToJson output parses back") {
    auto parsed = ParseBundleJson(v.at("bundle"));
    REQUIRE(parsed);
    CHECK(*parsed == expected);
    auto from_text = ParseBundleJson(std::string_view(v.at("bundle").dump()));
    REQUIRE(from_text);
    CHECK(*from_text == expected);
  }

  SECTION("valid fetch responses") {
    for (const json& c : v.at("valid")) {
      INFO(c.at("name").get<std::string>());
      auto parsed = ParseBundleJson(c.at("json"));
      REQUIRE(parsed);
      CHECK(parsed->identity_key == expected.identity_key);
      CHECK(parsed->signed_prekey_id == 3);
      CHECK(parsed->signed_prekey == expected.signed_prekey);
      CHECK(parsed->signed_prekey_signature == expected.signed_prekey_signature);
      if (c.at("one_time_prekey_id").is_null()) {
        CHECK_FALSE(parsed->one_time_prekey.has_value());
      } else {
        REQUIRE(parsed->one_time_prekey.has_value());
        CHECK(*parsed->one_time_prekey == *expected.one_time_prekey);
      }
      CHECK(VerifyBundle(*parsed, *signer));
    }
  }

  SECTION("invalid fetch responses name the offending field") {
    for (const json& c : v.at("invalid")) {
      INFO(c.at("name").get<std::string>());
      auto parsed = ParseBundleJson(c.at("json"));
      REQUIRE_FALSE(parsed);
      CHECK(parsed.error().code == Code::kInvalidArgument);
      CHECK(parsed.error().field == c.at("field").get<std::string>());
    }
  }

  SECTION("malformed JSON text") {
    for (std::string_view text : {"", "{", "nul", "{\"identity_key\":}", "[1,2"}) {
      INFO(text);
      auto parsed = ParseBundleJson(text);
      REQUIRE_FALSE(parsed);
      CHECK(parsed.error().code == Code::kInvalidArgument);
    }
  }

  SECTION("upload body") {
    const Amid amid = Amid::FromPublicKey(signing.public_key);
    const json body = BuildPrekeyUploadBody(amid, spk, otks);
    CHECK(body == v.at("upload_body"));
    CHECK(body.at("amid") == amid.str());
    CHECK(body.at("one_time_prekeys").size() == 2);

    auto upload = ParsePrekeyUploadJson(body);
    REQUIRE(upload);
    CHECK(upload->amid == amid);
    CHECK(upload->signed_prekey_id == 3);
    CHECK(upload->signed_prekey == spk.pair.public_key);
    CHECK(VerifyPrekeySignature(signing.public_key, upload->signed_prekey,
                                upload->signed_prekey_signature));
    REQUIRE(upload->one_time_prekeys.size() == 2);
    CHECK(upload->one_time_prekeys[1] == OneTimePublic{18, otks[1].pair.public_key});

    json with_auth = body;
    with_auth["timestamp"] = "2026-02-01T16:25:10+00:00";
    with_auth["signature"] = "ignored-here";
    CHECK(ParsePrekeyUploadJson(with_auth));
    json no_otks = body;
    no_otks.erase("one_time_prekeys");
    auto empty = ParsePrekeyUploadJson(no_otks);
    REQUIRE(empty);
    CHECK(empty->one_time_prekeys.empty());

    json dup = body;
    dup["one_time_prekeys"][1]["id"] = 17;
    auto r = ParsePrekeyUploadJson(dup);
    REQUIRE_FALSE(r);
    CHECK(r.error().field == "one_time_prekeys[1].id");
    json bad_amid = body;
    bad_amid["amid"] = "0OIl";
    r = ParsePrekeyUploadJson(bad_amid);
    REQUIRE_FALSE(r);
    CHECK(r.error().field == "amid");
    json empty_sig = body;
    empty_sig["signed_prekey_signature"] = "";
    r = ParsePrekeyUploadJson(empty_sig);
    REQUIRE_FALSE(r);
    CHECK(r.error().field == "signed_prekey_signature");
  }
}
