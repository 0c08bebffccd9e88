// Writes tests/vectors/did.json and tests/vectors/certificates.json (docs/PROTOCOL.md §18):
// multibase/multicodec key strings, agent DID documents, and a Root -> Organisation -> Agent
// certificate chain with valid and invalid chains. Keys come from DeterministicRng seeds and all
// times are fixed, so the output is reproducible. tests/unit/{did,certificate}_test.cpp rebuild
// every value from the recorded inputs and compare.
//
// Usage: gen_identity_doc_vectors [output_dir]   (default: tests/vectors, relative to the cwd)
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>

#include <nlohmann/json.hpp>

#include "agentmesh/core/certificate.hpp"
#include "agentmesh/core/did.hpp"
#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/knock.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/core/timefmt.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

[[noreturn]] void Die(const std::string& what, const Error& error) {
  std::cerr << "gen_identity_doc_vectors: " << what << ": " << error.ToString() << "\n";
  std::exit(1);
}

template <typename T>
T Must(Result<T> r, const std::string& what) {
  if (!r) Die(what, r.error());
  return std::move(*r);
}

void MustOk(const Result<void>& r, const std::string& what) {
  if (!r) Die(what, r.error());
}

UnixNanos Ts(std::string_view text) { return Must(ParseRfc3339(text), std::string(text)); }

struct Party {
  std::uint64_t rng_seed;
  Ed25519KeyPair signing;
  X25519KeyPair exchange;
};

Party MakeParty(std::uint64_t seed) {
  DeterministicRng rng(seed);
  Ed25519KeyPair signing = Ed25519KeyPair::Generate(rng);
  X25519KeyPair exchange = X25519KeyPair::Generate(rng);
  return Party{seed, std::move(signing), std::move(exchange)};
}

json PartyJson(const Party& p) {
  return {{"rng_seed", p.rng_seed},
          {"ed25519_seed_hex", HexEncode(p.signing.Seed().Expose())},
          {"x25519_secret_hex", HexEncode(p.exchange.secret.Expose())},
          {"amid", Amid::FromPublicKey(p.signing.public_key).str()},
          {"signing_public_key", FormatEd25519Key(p.signing.public_key)},
          {"exchange_public_key", FormatX25519Key(p.exchange.public_key)}};
}

void Write(const std::string& path, const json& doc) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << doc.dump(1) << "\n";
  if (!out) {
    std::cerr << "gen_identity_doc_vectors: cannot write " << path << "\n";
    std::exit(1);
  }
  std::cout << "wrote " << path << "\n";
}

// ---------------------------------------------------------------------------------------------
// DID

json DidVectors() {
  json multibase = json::array();
  // RFC 8032 §7.1 TEST 1 public key, and RFC 7748 §6.1 Alice's public key: well-known inputs.
  const std::string ed_hex = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a";
  const std::string x_hex = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
  Ed25519PublicKey ed;
  Ed25519PublicKey::FromBytes(Must(HexDecode(ed_hex), "hex"), ed);
  X25519PublicKey x;
  X25519PublicKey::FromBytes(Must(HexDecode(x_hex), "hex"), x);
  multibase.push_back({{"key_type", "ed25519"},
                       {"source", "RFC 8032 section 7.1 TEST 1 public key"},
                       {"public_key_hex", ed_hex},
                       {"multibase", EncodeMultibaseEd25519(ed)}});
  multibase.push_back({{"key_type", "x25519"},
                       {"source", "RFC 7748 section 6.1 Alice's public key"},
                       {"public_key_hex", x_hex},
                       {"multibase", EncodeMultibaseX25519(x)}});
  for (std::uint64_t seed : {11, 12}) {
    const Party p = MakeParty(seed);
    multibase.push_back({{"key_type", "ed25519"},
                         {"source", "DeterministicRng(" + std::to_string(seed) + ")"},
                         {"public_key_hex", HexEncode(p.signing.public_key.view())},
                         {"multibase", EncodeMultibaseEd25519(p.signing.public_key)}});
    multibase.push_back({{"key_type", "x25519"},
                         {"source", "DeterministicRng(" + std::to_string(seed) + ")"},
                         {"public_key_hex", HexEncode(p.exchange.public_key.view())},
                         {"multibase", EncodeMultibaseX25519(p.exchange.public_key)}});
  }

  json documents = json::array();
  struct Case {
    std::string name;
    std::uint64_t seed;
    std::string relay;
    std::string created;
    std::string updated;
  };
  const Case cases[] = {
      {"with relay", 11, "wss://relay.example.org/v1/connect", "2026-01-15T09:30:00Z",
       "2026-03-01T12:00:00.250Z"},
      {"without relay", 12, "", "2026-02-01T00:00:00Z", "2026-02-01T00:00:00Z"},
  };
  for (const auto& c : cases) {
    const Party p = MakeParty(c.seed);
    DidDocumentInput input{Amid::FromPublicKey(p.signing.public_key),
                           p.signing.public_key,
                           p.exchange.public_key,
                           c.relay,
                           Ts(c.created),
                           Ts(c.updated)};
    const json doc = Must(BuildDidDocument(input), "DID document " + c.name);
    documents.push_back({{"name", c.name},
                         {"inputs",
                          {{"party", PartyJson(p)},
                           {"relay_endpoint", c.relay},
                           {"created", c.created},
                           {"updated", c.updated}}},
                         {"document", doc},
                         {"serialized", doc.dump()}});
  }
  return {{"description",
           "agentmesh/1 DID documents (docs/PROTOCOL.md section 18.1). `multibase`: "
           "publicKeyMultibase = \"z\" + base58btc(multicodec header || 32-byte key), header "
           "0xed 0x01 for Ed25519 and 0xec 0x01 for X25519; the two RFC inputs were cross-checked "
           "with an independent Python base58 implementation. `documents`: BuildDidDocument of "
           "the inputs (party keys from DeterministicRng(rng_seed)); `serialized` is the compact "
           "nlohmann::json dump (members sorted by name)."},
          {"multibase", multibase},
          {"documents", documents}};
}

// ---------------------------------------------------------------------------------------------
// Certificates

// Signs `object` (after edits) with `secret`, as a misbehaving issuer could.
json Resigned(json object, const Ed25519SecretKey& secret) {
  object.erase("signature");
  MustOk(SignObject(object, secret), "sign");
  return object;
}

json CertificateVectors() {
  const Party root = MakeParty(21);
  const Party org = MakeParty(22);
  const Party agent = MakeParty(23);
  const Party stranger = MakeParty(24);
  const std::string domain = "example.org";
  const std::string agent_amid = Amid::FromPublicKey(agent.signing.public_key).str();
  const std::string now = "2026-03-01T12:00:00Z";

  CertificateParams org_params{CertificateType::kOrganization,
                               "0f1e2d3c4b5a6978",
                               domain,
                               org.signing.public_key,
                               "amesh-registry registry.example.net",
                               Tier::kOrganization,
                               Ts("2026-01-01T00:00:00Z"),
                               Ts("2027-01-01T00:00:00Z")};
  CertificateParams agent_params{CertificateType::kAgent,
                                 "a1",
                                 agent_amid,
                                 agent.signing.public_key,
                                 domain,
                                 Tier::kOrganization,
                                 Ts("2026-02-01T00:00:00Z"),
                                 Ts("2026-08-01T00:00:00.500Z")};
  CertificateParams root_agent_params{CertificateType::kAgent,
                                      "00ff",
                                      agent_amid,
                                      agent.signing.public_key,
                                      "amesh-registry registry.example.net",
                                      Tier::kVerified,
                                      Ts("2026-02-15T00:00:00Z"),
                                      Ts("2027-02-15T00:00:00Z")};
  const Certificate org_cert = Must(IssueCertificate(org_params, root.signing.secret), "org");
  const Certificate agent_cert = Must(IssueCertificate(agent_params, org.signing.secret), "agent");
  const Certificate root_agent_cert =
      Must(IssueCertificate(root_agent_params, root.signing.secret), "root agent");

  const auto record = [](const Certificate& c) {
    return json{{"signing_input", Must(SigningInput(c.object), "signing input")},
                {"object", c.object},
                {"serialized", c.Serialize()}};
  };
  json certificates = {{"org", record(org_cert)},
                       {"agent", record(agent_cert)},
                       {"root_agent", record(root_agent_cert)}};

  json valid = json::array();
  const auto add_valid = [&](std::string name, json chain, const std::string& at) {
    std::vector<json> objects = chain.get<std::vector<json>>();
    const VerifiedAgent v =
        Must(VerifyChain(root.signing.public_key, std::span<const json>(objects), Ts(at)), name);
    json expected = {{"amid", v.amid.str()},
                     {"signing_key", FormatEd25519Key(v.signing_key)},
                     {"tier", ToString(v.tier)},
                     {"organization", v.organization ? json(*v.organization) : json(nullptr)},
                     {"serial", v.serial},
                     {"expires_at", FormatRfc3339Z(v.expires_at)}};
    valid.push_back(
        {{"name", std::move(name)}, {"chain", chain}, {"now", at}, {"expected", expected}});
  };
  add_valid("org then agent", json::array({org_cert.object, agent_cert.object}), now);
  add_valid("root-issued agent", json::array({root_agent_cert.object}), now);
  add_valid("first valid instant", json::array({org_cert.object, agent_cert.object}),
            "2026-02-01T00:00:00Z");
  add_valid("last valid instant", json::array({org_cert.object, agent_cert.object}),
            "2026-08-01T00:00:00.499999999Z");

  json invalid = json::array();
  const auto add_invalid = [&](std::string name, json chain, const std::string& at,
                               const Ed25519PublicKey& trusted, Code code, std::string field) {
    std::vector<json> objects = chain.get<std::vector<json>>();
    auto r = VerifyChain(trusted, std::span<const json>(objects), Ts(at));
    if (r || r.error().code != code || r.error().field != field) {
      std::cerr << "gen_identity_doc_vectors: case '" << name << "' gave "
                << (r ? std::string("success") : r.error().ToString()) << "\n";
      std::exit(1);
    }
    invalid.push_back({{"name", std::move(name)},
                       {"chain", chain},
                       {"now", at},
                       {"root_key", FormatEd25519Key(trusted)},
                       {"code", CodeName(code)},
                       {"field", field},
                       {"message", r.error().message}});
  };
  const Ed25519PublicKey& trusted = root.signing.public_key;
  const json o = org_cert.object;
  const json a = agent_cert.object;

  add_invalid("agent certificate expired", json::array({o, a}), "2026-08-01T00:00:00.5Z", trusted,
              Code::kAuthFailed, "chain[1].expires_at");
  add_invalid("org certificate expired", json::array({o, a}), "2027-01-01T00:00:00Z", trusted,
              Code::kAuthFailed, "chain[0].expires_at");
  add_invalid("not valid yet", json::array({o, a}), "2025-12-31T23:59:59Z", trusted,
              Code::kAuthFailed, "chain[0].issued_at");
  add_invalid("another root", json::array({o, a}), now, stranger.signing.public_key,
              Code::kAuthFailed, "chain[0].issuer_key");
  {
    json tampered = a;
    tampered["subject"] = Amid::FromPublicKey(stranger.signing.public_key).str();
    tampered["subject_key"] = FormatEd25519Key(stranger.signing.public_key);
    add_invalid("agent subject swapped after signing", json::array({o, tampered}), now, trusted,
                Code::kAuthFailed, "chain[1].signature");
  }
  {
    json tampered = o;
    tampered["expires_at"] = "2030-01-01T00:00:00Z";
    add_invalid("org validity extended after signing", json::array({tampered, a}), now, trusted,
                Code::kAuthFailed, "chain[0].signature");
  }
  {
    json forged = a;
    forged["issuer_key"] = FormatEd25519Key(stranger.signing.public_key);
    forged = Resigned(forged, stranger.signing.secret);
    add_invalid("agent certificate signed by a key the org did not certify",
                json::array({o, forged}), now, trusted, Code::kAuthFailed, "chain[1].issuer_key");
  }
  {
    json renamed = Resigned(
        [&] {
          json x = a;
          x["issuer"] = "other.example";
          return x;
        }(),
        org.signing.secret);
    add_invalid("agent issuer is not the org's subject", json::array({o, renamed}), now, trusted,
                Code::kAuthFailed, "chain[1].issuer");
  }
  {
    json wrong_amid = a;
    wrong_amid["subject"] = Amid::FromPublicKey(stranger.signing.public_key).str();
    wrong_amid = Resigned(wrong_amid, org.signing.secret);
    add_invalid("agent subject is not the AMID of its key", json::array({o, wrong_amid}), now,
                trusted, Code::kAuthFailed, "chain[1].subject");
  }
  {
    json tier = a;
    tier["tier"] = "verified";
    tier = Resigned(tier, org.signing.secret);
    add_invalid("an organisation vouching for another tier", json::array({o, tier}), now, trusted,
                Code::kAuthFailed, "chain[1].tier");
  }
  add_invalid("agent then org", json::array({a, o}), now, trusted, Code::kInvalidArgument,
              "chain[0].type");
  add_invalid("org certificate alone", json::array({o}), now, trusted, Code::kInvalidArgument,
              "chain[0].type");
  add_invalid("empty chain", json::array(), now, trusted, Code::kInvalidArgument, "chain");
  add_invalid("three certificates", json::array({o, o, a}), now, trusted, Code::kInvalidArgument,
              "chain");
  {
    json extra = Resigned(
        [&] {
          json x = o;
          x["critical_extension"] = true;
          return x;
        }(),
        root.signing.secret);
    add_invalid("unknown member, even if signed", json::array({extra, a}), now, trusted,
                Code::kInvalidArgument, "chain[0].critical_extension");
  }
  {
    json org_tier = Resigned(
        [&] {
          json x = o;
          x["tier"] = "verified";
          return x;
        }(),
        root.signing.secret);
    add_invalid("org certificate with another tier", json::array({org_tier, a}), now, trusted,
                Code::kInvalidArgument, "chain[0].tier");
  }
  {
    json bare = Resigned(
        [&] {
          json x = o;
          x["subject_key"] = FormatEd25519Key(org.signing.public_key, /*with_prefix=*/false);
          return x;
        }(),
        root.signing.secret);
    add_invalid("key without its ed25519: prefix", json::array({bare, a}), now, trusted,
                Code::kInvalidArgument, "chain[0].subject_key");
  }
  {
    json unsigned_cert = a;
    unsigned_cert.erase("signature");
    add_invalid("missing signature", json::array({o, unsigned_cert}), now, trusted,
                Code::kInvalidArgument, "chain[1].signature");
  }
  {
    json version = Resigned(
        [&] {
          json x = a;
          x["version"] = 2;
          return x;
        }(),
        org.signing.secret);
    add_invalid("version 2", json::array({o, version}), now, trusted, Code::kInvalidArgument,
                "chain[1].version");
  }
  {
    json upper = Resigned(
        [&] {
          json x = o;
          x["subject"] = "Example.org";
          return x;
        }(),
        root.signing.secret);
    add_invalid("domain not in lower case", json::array({upper, a}), now, trusted,
                Code::kInvalidArgument, "chain[0].subject");
  }

  return {{"description",
           "agentmesh/1 certificates (docs/PROTOCOL.md section 18.2): root, org and agent keys "
           "from DeterministicRng(rng_seed). `certificates`: IssueCertificate outputs (org by the "
           "root key, agent by the org key, root_agent by the root key) with their signing input "
           "(RFC 8785 canonical JSON without signature). `valid`: chains VerifyChain accepts at "
           "`now` with the root key, and what it returns. `invalid`: chains it rejects at `now` "
           "with `root_key`, with the error code and field (messages are informative only)."},
          {"parties",
           {{"root", PartyJson(root)},
            {"org", PartyJson(org)},
            {"agent", PartyJson(agent)},
            {"stranger", PartyJson(stranger)}}},
          {"org_domain", domain},
          {"certificates", certificates},
          {"valid", valid},
          {"invalid", invalid}};
}

}  // namespace

int main(int argc, char** argv) {
  const std::string dir = argc > 1 ? argv[1] : "tests/vectors";
  Write(dir + "/did.json", DidVectors());
  Write(dir + "/certificates.json", CertificateVectors());
  return 0;
}
