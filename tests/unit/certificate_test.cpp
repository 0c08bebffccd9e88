#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agentmesh/core/certificate.hpp"
#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/knock.hpp"
#include "vectors.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

Ed25519KeyPair PartyKey(const json& party) {
  auto bytes = HexDecode(party["ed25519_seed_hex"].get<std::string>());
  REQUIRE(bytes);
  Ed25519Seed seed;
  REQUIRE(Ed25519Seed::FromBytes(*bytes, seed));
  return Ed25519KeyPair::FromSeed(seed);
}

UnixNanos At(const std::string& text) {
  auto t = ParseRfc3339(text);
  REQUIRE(t);
  return *t;
}

Ed25519PublicKey Key(const std::string& text) {
  auto key = ParseEd25519Key(text);
  REQUIRE(key);
  return *key;
}

std::vector<json> Objects(const json& array) { return array.get<std::vector<json>>(); }

}  // namespace

TEST_CASE("certificate vectors re-issue byte for byte", "[certificate]") {
  auto doc = test_vectors::LoadVectors("certificates.json");
  const auto root = PartyKey(doc["parties"]["root"]);
  const auto org = PartyKey(doc["parties"]["org"]);
  const std::vector<std::pair<std::string, const Ed25519KeyPair*>> issued = {
      {"org", &root}, {"agent", &org}, {"root_agent", &root}};
  for (const auto& [name, issuer] : issued) {
    INFO(name);
    const json& v = doc["certificates"][name];
    auto parsed = ParseCertificate(v["object"]);
    INFO((parsed ? std::string() : parsed.error().ToString()));
    REQUIRE(parsed);
    CHECK(parsed->issuer_key == issuer->public_key);
    CHECK(SigningInput(v["object"]).value() == v["signing_input"].get<std::string>());

    auto again = IssueCertificate(parsed->params, issuer->secret);
    REQUIRE(again);
    CHECK(again->object == v["object"]);
    CHECK(again->Serialize() == v["serialized"].get<std::string>());
    CHECK(again->signature == parsed->signature);

    auto from_text = ParseCertificateText(v["serialized"].get<std::string>());
    REQUIRE(from_text);
    CHECK(from_text->object == v["object"]);
  }
  CHECK(doc["certificates"]["org"]["object"]["type"] == "org_certificate");
  CHECK(doc["certificates"]["agent"]["object"]["type"] == "agent_certificate");
}

TEST_CASE("valid chain vectors verify offline with the root key", "[certificate]") {
  auto doc = test_vectors::LoadVectors("certificates.json");
  const Ed25519PublicKey root = Key(doc["parties"]["root"]["signing_public_key"]);
  REQUIRE(doc["valid"].size() >= 2);
  for (const auto& v : doc["valid"]) {
    INFO(v["name"].get<std::string>());
    const std::vector<json> chain = Objects(v["chain"]);
    auto r = VerifyChain(root, std::span<const json>(chain), At(v["now"]));
    INFO((r ? std::string() : r.error().ToString()));
    REQUIRE(r);
    const json& e = v["expected"];
    CHECK(r->amid.str() == e["amid"].get<std::string>());
    CHECK(FormatEd25519Key(r->signing_key) == e["signing_key"].get<std::string>());
    CHECK(ToString(r->tier) == e["tier"].get<std::string>());
    CHECK((r->organization ? json(*r->organization) : json(nullptr)) == e["organization"]);
    CHECK(r->serial == e["serial"].get<std::string>());
    CHECK(FormatRfc3339Z(r->expires_at) == e["expires_at"].get<std::string>());
    CHECK(r->amid.str() == doc["parties"]["agent"]["amid"].get<std::string>());

    // The overload over parsed certificates agrees.
    std::vector<Certificate> parsed;
    for (const auto& object : chain) parsed.push_back(ParseCertificate(object).value());
    auto same = VerifyChain(root, std::span<const Certificate>(parsed), At(v["now"]));
    REQUIRE(same);
    CHECK(same->amid == r->amid);
  }
}

TEST_CASE("invalid chain vectors fail with the recorded code and field", "[certificate]") {
  auto doc = test_vectors::LoadVectors("certificates.json");
  REQUIRE(doc["invalid"].size() >= 10);
  for (const auto& v : doc["invalid"]) {
    INFO(v["name"].get<std::string>());
    const std::vector<json> chain = Objects(v["chain"]);
    auto r = VerifyChain(Key(v["root_key"]), std::span<const json>(chain), At(v["now"]));
    REQUIRE_FALSE(r);
    INFO(r.error().ToString());
    CHECK(CodeName(r.error().code) == v["code"].get<std::string>());
    CHECK(r.error().field == v["field"].get<std::string>());
  }
}

TEST_CASE("IssueCertificate refuses parameters a verifier would reject", "[certificate]") {
  auto doc = test_vectors::LoadVectors("certificates.json");
  const auto root = PartyKey(doc["parties"]["root"]);
  const auto agent = PartyKey(doc["parties"]["agent"]);
  const CertificateParams base{CertificateType::kAgent,
                               "01",
                               Amid::FromPublicKey(agent.public_key).str(),
                               agent.public_key,
                               "registry",
                               Tier::kVerified,
                               At("2026-01-01T00:00:00Z"),
                               At("2026-06-01T00:00:00Z")};
  REQUIRE(IssueCertificate(base, root.secret));

  struct Case {
    std::string name;
    CertificateParams params;
    std::string field;
  };
  std::vector<Case> cases;
  const auto with = [&](std::string name, auto edit, std::string field) {
    CertificateParams p = base;
    edit(p);
    cases.push_back({std::move(name), std::move(p), std::move(field)});
  };
  with(
      "empty serial", [](CertificateParams& p) { p.serial = ""; }, "serial");
  with(
      "upper-case serial", [](CertificateParams& p) { p.serial = "AB"; }, "serial");
  with(
      "serial too long", [](CertificateParams& p) { p.serial = std::string(65, 'a'); }, "serial");
  with(
      "subject of another key", [&](CertificateParams& p) { p.subject_key = root.public_key; },
      "subject");
  with(
      "subject not an AMID", [](CertificateParams& p) { p.subject = "not-an-amid"; }, "subject");
  with(
      "expiry before issue", [](CertificateParams& p) { p.expires_at = p.issued_at; },
      "expires_at");
  with(
      "issuer with a newline", [](CertificateParams& p) { p.issuer = "a\nb"; }, "issuer");
  with(
      "empty issuer", [](CertificateParams& p) { p.issuer = ""; }, "issuer");
  with(
      "org without a dot",
      [](CertificateParams& p) {
        p.type = CertificateType::kOrganization;
        p.tier = Tier::kOrganization;
        p.subject = "localhost";
      },
      "subject");
  with(
      "org label starting with a hyphen",
      [](CertificateParams& p) {
        p.type = CertificateType::kOrganization;
        p.tier = Tier::kOrganization;
        p.subject = "-bad.example";
      },
      "subject");
  with(
      "org of another tier",
      [](CertificateParams& p) {
        p.type = CertificateType::kOrganization;
        p.subject = "example.org";
        p.tier = Tier::kVerified;
      },
      "tier");
  for (const auto& c : cases) {
    INFO(c.name);
    auto r = IssueCertificate(c.params, root.secret);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
    CHECK(r.error().field == c.field);
  }
}

TEST_CASE("certificate text is size-limited and strictly parsed", "[certificate]") {
  auto doc = test_vectors::LoadVectors("certificates.json");
  const std::string good = doc["certificates"]["agent"]["serialized"];
  REQUIRE(ParseCertificateText(good));

  auto big = ParseCertificateText(std::string(kMaxCertificateBytes + 1, ' '));
  REQUIRE_FALSE(big);
  CHECK(big.error().code == Code::kLimitExceeded);

  // A duplicate member could make two parsers see two different certificates.
  std::string duplicated = good;
  duplicated.insert(1, "\"tier\":\"anonymous\",");
  auto dup = ParseCertificateText(duplicated);
  REQUIRE_FALSE(dup);
  CHECK(dup.error().code == Code::kInvalidArgument);

  for (const std::string& bad :
       {std::string("not json"), std::string("[1,2]"), std::string("{\"version\":1}")}) {
    INFO(bad);
    auto r = ParseCertificateText(bad);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
  // Each required member, when missing, is named.
  const json object = doc["certificates"]["agent"]["object"];
  for (const auto& [key, value] : object.items()) {
    json missing = object;
    missing.erase(key);
    auto r = ParseCertificate(missing);
    INFO(key);
    REQUIRE_FALSE(r);
    CHECK(r.error().field == key);
  }
}
