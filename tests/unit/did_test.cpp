#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agentmesh/core/did.hpp"
#include "agentmesh/core/encoding.hpp"
#include "vectors.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

Ed25519KeyPair SigningFromHex(const std::string& hex) {
  auto bytes = HexDecode(hex);
  REQUIRE(bytes);
  Ed25519Seed seed;
  REQUIRE(Ed25519Seed::FromBytes(*bytes, seed));
  return Ed25519KeyPair::FromSeed(seed);
}

X25519KeyPair ExchangeFromHex(const std::string& hex) {
  auto bytes = HexDecode(hex);
  REQUIRE(bytes);
  X25519SecretKey secret;
  REQUIRE(X25519SecretKey::FromBytes(*bytes, secret));
  return X25519KeyPair::FromSecret(std::move(secret));
}

UnixNanos At(const std::string& text) {
  auto t = ParseRfc3339(text);
  REQUIRE(t);
  return *t;
}

DidDocumentInput InputFromVector(const json& inputs) {
  const auto signing = SigningFromHex(inputs["party"]["ed25519_seed_hex"]);
  const auto exchange = ExchangeFromHex(inputs["party"]["x25519_secret_hex"]);
  return DidDocumentInput{
      Amid::FromPublicKey(signing.public_key),     signing.public_key,    exchange.public_key,
      inputs["relay_endpoint"].get<std::string>(), At(inputs["created"]), At(inputs["updated"])};
}

}  // namespace

TEST_CASE("multibase key vectors encode and parse", "[did]") {
  auto doc = test_vectors::LoadVectors("did.json");
  REQUIRE(doc["multibase"].size() >= 2);
  for (const auto& v : doc["multibase"]) {
    auto raw = HexDecode(v["public_key_hex"].get<std::string>());
    REQUIRE(raw);
    const std::string expected = v["multibase"];
    INFO(v["source"].get<std::string>());
    CHECK(expected.size() == 48);
    if (v["key_type"] == "ed25519") {
      Ed25519PublicKey key;
      REQUIRE(Ed25519PublicKey::FromBytes(*raw, key));
      CHECK(EncodeMultibaseEd25519(key) == expected);
      CHECK(expected.starts_with("z6Mk"));
      auto parsed = ParseMultibaseEd25519(expected);
      REQUIRE(parsed);
      CHECK(*parsed == key);
      CHECK_FALSE(ParseMultibaseX25519(expected));  // never taken for the other key type
    } else {
      X25519PublicKey key;
      REQUIRE(X25519PublicKey::FromBytes(*raw, key));
      CHECK(EncodeMultibaseX25519(key) == expected);
      CHECK(expected.starts_with("z6LS"));
      auto parsed = ParseMultibaseX25519(expected);
      REQUIRE(parsed);
      CHECK(*parsed == key);
      CHECK_FALSE(ParseMultibaseEd25519(expected));
    }
  }
}

TEST_CASE("multibase parsers reject bad prefixes, headers, lengths and characters", "[did]") {
  Ed25519PublicKey key;
  const std::string good = EncodeMultibaseEd25519(key);
  const Bytes short_key = {0xed, 0x01, 1, 2, 3};
  Bytes long_key = {0xed, 0x01};
  long_key.resize(2 + 33, 7);
  const Bytes bare(32, 9);
  const std::vector<std::string> bad = {
      "",
      good.substr(1),                 // no multibase prefix
      "f" + good.substr(1),           // another multibase base
      "z" + Base58Encode(short_key),  // too short
      "z" + Base58Encode(long_key),   // too long
      "z" + Base58Encode(bare),       // no multicodec header
      "z6Mk0OIl",                     // not base58
      "z",
  };
  for (const auto& text : bad) {
    INFO(text);
    auto r = ParseMultibaseEd25519(text);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
}

TEST_CASE("agent DIDs name one AMID in its canonical spelling", "[did]") {
  const auto signing = SigningFromHex(std::string(64, '1'));
  const Amid amid = Amid::FromPublicKey(signing.public_key);
  const std::string did = DidForAmid(amid);
  CHECK(did == "did:agentmesh:" + amid.str());
  auto parsed = ParseAgentDid(did);
  REQUIRE(parsed);
  CHECK(*parsed == amid);
  for (const std::string& bad :
       {std::string("did:key:") + amid.str(), std::string("did:agentmesh:"),
        std::string("did:agentmesh:1") + amid.str(), std::string("DID:agentmesh:") + amid.str(),
        amid.str()}) {
    INFO(bad);
    auto r = ParseAgentDid(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
}

TEST_CASE("DID document vectors rebuild byte for byte and parse back", "[did]") {
  auto doc = test_vectors::LoadVectors("did.json");
  REQUIRE(doc["documents"].size() == 2);
  for (const auto& v : doc["documents"]) {
    INFO(v["name"].get<std::string>());
    const DidDocumentInput input = InputFromVector(v["inputs"]);
    CHECK(input.amid.str() == v["inputs"]["party"]["amid"].get<std::string>());
    auto built = BuildDidDocument(input);
    REQUIRE(built);
    CHECK(*built == v["document"]);
    CHECK(built->dump() == v["serialized"].get<std::string>());
    CHECK((*built)["verificationMethod"][0]["publicKeyMultibase"].get<std::string>().starts_with(
        "z6Mk"));
    CHECK((*built)["verificationMethod"][1]["publicKeyMultibase"].get<std::string>().starts_with(
        "z6LS"));
    CHECK((*built)["service"].size() == (input.relay_endpoint.empty() ? 0u : 1u));

    auto parsed = ParseDidDocument(v["document"]);
    INFO((parsed ? std::string() : parsed.error().ToString()));
    REQUIRE(parsed);
    CHECK(parsed->amid == input.amid);
    CHECK(parsed->signing_key == input.signing_key);
    CHECK(parsed->exchange_key == input.exchange_key);
    CHECK(parsed->relay_endpoint == input.relay_endpoint);
    CHECK(parsed->created == input.created);
    CHECK(parsed->updated == input.updated);
    CHECK(*BuildDidDocument(*parsed) == v["document"]);
  }
}

TEST_CASE("BuildDidDocument refuses an AMID of another key and time going backwards", "[did]") {
  auto doc = test_vectors::LoadVectors("did.json");
  DidDocumentInput input = InputFromVector(doc["documents"][0]["inputs"]);
  DidDocumentInput other = InputFromVector(doc["documents"][1]["inputs"]);

  DidDocumentInput mismatched{other.amid,           input.signing_key, input.exchange_key,
                              input.relay_endpoint, input.created,     input.updated};
  auto r = BuildDidDocument(mismatched);
  REQUIRE_FALSE(r);
  CHECK(r.error().field == "amid");

  DidDocumentInput backwards{input.amid,           input.signing_key, input.exchange_key,
                             input.relay_endpoint, input.updated + 1, input.updated};
  auto b = BuildDidDocument(backwards);
  REQUIRE_FALSE(b);
  CHECK(b.error().field == "updated");
}

TEST_CASE("ParseDidDocument is strict and names the offending member", "[did]") {
  auto vectors = test_vectors::LoadVectors("did.json");
  const json good = vectors["documents"][0]["document"];
  const json other = vectors["documents"][1]["document"];
  REQUIRE(ParseDidDocument(good));

  struct Case {
    std::string name;
    json document;
    std::string field;
  };
  std::vector<Case> cases;
  const auto mutate = [&](std::string name, auto edit, std::string field) {
    json d = good;
    edit(d);
    cases.push_back({std::move(name), std::move(d), std::move(field)});
  };
  mutate(
      "no id", [](json& d) { d.erase("id"); }, "id");
  mutate(
      "extra member", [](json& d) { d["proof"] = json::object(); }, "proof");
  mutate(
      "another DID method", [](json& d) { d["id"] = "did:key:z6Mkabc"; }, "id");
  mutate(
      "controller of someone else", [&](json& d) { d["controller"] = other["id"]; }, "controller");
  mutate(
      "missing context", [](json& d) { d["@context"].erase(2); }, "@context");
  mutate(
      "wrong key type", [](json& d) { d["verificationMethod"][0]["type"] = "JsonWebKey2020"; },
      "verificationMethod[0].type");
  mutate(
      "keys swapped",
      [](json& d) {
        std::swap(d["verificationMethod"][0]["publicKeyMultibase"],
                  d["verificationMethod"][1]["publicKeyMultibase"]);
      },
      "verificationMethod[0].publicKeyMultibase");
  mutate(
      "signing key of another agent",
      [&](json& d) {
        d["verificationMethod"][0]["publicKeyMultibase"] =
            other["verificationMethod"][0]["publicKeyMultibase"];
      },
      "id");
  mutate(
      "reference stored base64 key form",
      [](json& d) {
        d["verificationMethod"][1]["publicKeyMultibase"] =
            "zx25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
      },
      "verificationMethod[1].publicKeyMultibase");
  mutate(
      "extra verification method member",
      [](json& d) { d["verificationMethod"][1]["publicKeyBase58"] = "x"; },
      "verificationMethod[1].publicKeyBase58");
  mutate(
      "authentication by the exchange key",
      [](json& d) { d["authentication"][0] = d["keyAgreement"][0]; }, "authentication[0]");
  mutate(
      "service of another type", [](json& d) { d["service"][0]["type"] = "DIDCommMessaging"; },
      "service[0].type");
  mutate(
      "empty relay URL", [](json& d) { d["service"][0]["serviceEndpoint"] = ""; },
      "service[0].serviceEndpoint");
  mutate(
      "created not RFC 3339", [](json& d) { d["created"] = "yesterday"; }, "created");
  mutate(
      "updated before created", [](json& d) { d["updated"] = "2000-01-01T00:00:00Z"; }, "updated");
  mutate(
      "no service member", [](json& d) { d.erase("service"); }, "service");
  mutate(
      "two services", [](json& d) { d["service"].push_back(d["service"][0]); }, "service");
  mutate(
      "reference relay service id",
      [](json& d) { d["service"][0]["id"] = d["id"].get<std::string>() + "#relay"; },
      "service[0].id");
  cases.push_back({"not an object", json::array(), "document"});

  for (const auto& c : cases) {
    INFO(c.name);
    auto r = ParseDidDocument(c.document);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
    CHECK(r.error().field == c.field);
  }
}
