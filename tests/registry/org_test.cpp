// Integration tests of organisations: the real amesh-registry binary, signed requests
// (PROTOCOL.md §7), DNS verification against a real dnsmasq on loopback, and the certificate
// chain Root -> Organisation -> Agent checked offline with the core's VerifyChain.
// Tests that need dnsmasq warn "SKIPPED" and pass when it is not installed (CI installs it).
#include "agentmesh/core/certificate.hpp"
#include "dns_server.hpp"
#include "registry_fixture.hpp"

using namespace agentmesh;
using namespace agentmesh::testing;
using namespace agentmesh::testing::registry_fixture;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

#define DNSMASQ_OR_SKIP()                                                                \
  if (!DnsServer::Installed()) {                                                         \
    WARN("SKIPPED: " << DnsServer::kBinary                                               \
                     << " not found; install it with `apt-get install "                  \
                        "--no-install-recommends dnsmasq-base` (scripts/deps.sh does)"); \
    return;                                                                              \
  }

json OrgRegisterBody(const TestAgent& admin, const std::string& domain,
                     const std::string& name = "Example Org", UnixNanos now = Now()) {
  return admin.Sign("/v1/org/register",
                    {{"name", name},
                     {"domain", domain},
                     {"admin_amid", admin.amid},
                     {"admin_signing_public_key", FormatEd25519Key(admin.signing.public_key)}},
                    now);
}

json OrgVerifyBody(const TestAgent& signer, const std::string& org_id,
                   const std::string& admin_amid) {
  return signer.Sign("/v1/org/verify", {{"organization_id", org_id}, {"admin_amid", admin_amid}});
}

json OrgAgentsBody(const TestAgent& signer, const std::string& org_id,
                   const std::string& admin_amid, const std::string& agent_amid) {
  return signer.Sign(
      "/v1/org/agents",
      {{"organization_id", org_id}, {"admin_amid", admin_amid}, {"agent_amid", agent_amid}});
}

Ed25519PublicKey RootKeyOf(Registry& reg) {
  auto r = reg.Get("/v1/registry/root-key");
  REQUIRE(r.status == 200);
  auto key = ParseEd25519Key(r.Json()["public_key"].get<std::string>());
  REQUIRE(key);
  return *key;
}

struct Registered {
  std::string id;
  std::string record_name;
  std::string record_value;
};

Registered RegisterOrg(Registry& reg, const TestAgent& admin, const std::string& domain) {
  auto r = reg.Post("/v1/org/register", OrgRegisterBody(admin, domain));
  INFO(r.body << reg.log());
  REQUIRE(r.status == 201);
  auto j = r.Json();
  REQUIRE(j["success"] == true);
  REQUIRE(j["dns_challenge"]["record_type"] == "TXT");
  return {j["organization_id"].get<std::string>(),
          j["dns_challenge"]["record_name"].get<std::string>(),
          j["dns_challenge"]["record_value"].get<std::string>()};
}

json LookupOrg(Registry& reg, const std::string& domain) {
  auto r = reg.Get("/v1/org/lookup?domain=" + UrlEncode(domain));
  INFO(r.body);
  REQUIRE(r.status == 200);
  return r.Json();
}

}  // namespace

TEST_CASE("registry: org register, DNS verify, add agent, lookup and certificate chain",
          "[registry][org]") {
  DNSMASQ_OR_SKIP();
  // dnsmasq first (with no records yet) so the registry can be pointed at its port.
  DnsServer dns;
  REQUIRE(dns.Start({"example.org", "wrong.example", "missing.example"}, {}));
  auto reg = StartRegistry({"--dns-resolver", dns.address()});
  TestAgent admin(4001);
  TestAgent member(4002);
  TestAgent outsider(4003);
  REQUIRE(reg->Register(admin).status == 201);
  REQUIRE(reg->Register(member).status == 201);
  REQUIRE(reg->Register(outsider).status == 201);

  const Registered good = RegisterOrg(*reg, admin, "Example.ORG");  // stored lower-case
  CHECK(good.record_name == "_agentmesh.example.org");
  CHECK(good.record_value.starts_with("agentmesh-verify="));
  const Registered wrong = RegisterOrg(*reg, admin, "wrong.example");
  const Registered missing = RegisterOrg(*reg, admin, "missing.example");

  auto before = LookupOrg(*reg, "example.org");
  CHECK(before["id"] == good.id);
  CHECK(before["name"] == "Example Org");
  CHECK(before["verified"] == false);
  CHECK(before["root_certificate"].is_null());
  CHECK(before["agent_count"] == 0);

  // An unverified organisation cannot take agents.
  auto early = reg->Post("/v1/org/agents", OrgAgentsBody(admin, good.id, admin.amid, member.amid));
  CHECK(early.status == 403);
  CHECK(ErrorOf(early).find("not DNS-verified") != std::string::npos);

  // Publish the right value for example.org, a wrong one for wrong.example, none for
  // missing.example.
  REQUIRE(dns.Restart({{good.record_name, good.record_value},
                       {wrong.record_name, "agentmesh-verify=not-the-challenge"}}));

  auto bad_value = reg->Post("/v1/org/verify", OrgVerifyBody(admin, wrong.id, admin.amid));
  INFO(bad_value.body << dns.Log());
  CHECK(bad_value.status == 400);
  CHECK(bad_value.Json()["verified"] == false);
  CHECK(ErrorOf(bad_value).find("do not contain") != std::string::npos);
  CHECK(LookupOrg(*reg, "wrong.example")["verified"] == false);

  auto no_record = reg->Post("/v1/org/verify", OrgVerifyBody(admin, missing.id, admin.amid));
  CHECK(no_record.status == 400);
  CHECK(ErrorOf(no_record).find("no TXT record _agentmesh.missing.example") != std::string::npos);
  CHECK(LookupOrg(*reg, "missing.example")["verified"] == false);

  // Only the admin may verify: another registered agent signing for itself is refused.
  auto not_admin = reg->Post("/v1/org/verify", OrgVerifyBody(outsider, good.id, outsider.amid));
  CHECK(not_admin.status == 403);
  CHECK(LookupOrg(*reg, "example.org")["verified"] == false);

  auto verified = reg->Post("/v1/org/verify", OrgVerifyBody(admin, good.id, admin.amid));
  INFO(verified.body << reg->log());
  REQUIRE(verified.status == 200);
  auto vj = verified.Json();
  CHECK(vj["success"] == true);
  CHECK(vj["verified"] == true);
  const json org_cert = vj["root_certificate"];
  REQUIRE(org_cert.is_object());
  CHECK(org_cert["type"] == "org_certificate");
  CHECK(org_cert["subject"] == "example.org");
  CHECK(org_cert["tier"] == "organization");
  const Ed25519PublicKey root = RootKeyOf(*reg);
  CHECK(org_cert["issuer_key"] == FormatEd25519Key(root));

  // Verifying again is idempotent: the same certificate.
  auto again = reg->Post("/v1/org/verify", OrgVerifyBody(admin, good.id, admin.amid));
  CHECK(again.status == 200);
  CHECK(again.Json()["root_certificate"] == org_cert);

  auto after = LookupOrg(*reg, "example.org");
  CHECK(after["verified"] == true);
  CHECK(after["verified_at"].is_string());
  CHECK(after["root_certificate"] == org_cert);

  // A non-admin cannot add agents; the admin can.
  auto intruder =
      reg->Post("/v1/org/agents", OrgAgentsBody(outsider, good.id, outsider.amid, member.amid));
  CHECK(intruder.status == 403);
  CHECK(reg->Lookup(member.amid).Json()["tier"] == "anonymous");

  auto added = reg->Post("/v1/org/agents", OrgAgentsBody(admin, good.id, admin.amid, member.amid));
  INFO(added.body << reg->log());
  REQUIRE(added.status == 201);
  auto aj = added.Json();
  CHECK(aj["tier"] == "organization");
  const json chain = aj["certificate_chain"];
  REQUIRE(chain.is_array());
  REQUIRE(chain.size() == 2);
  CHECK(chain[0] == org_cert);
  CHECK(chain[1] == aj["agent_certificate"]);
  CHECK(chain[1]["issuer"] == "example.org");
  CHECK(chain[1]["subject"] == member.amid);

  // Offline verification with the core library and the registry's root public key.
  const std::vector<json> links = {chain[0], chain[1]};
  auto verified_agent = VerifyChain(root, links, Now());
  INFO((verified_agent ? std::string() : verified_agent.error().ToString()));
  REQUIRE(verified_agent);
  CHECK(verified_agent->amid.str() == member.amid);
  CHECK(verified_agent->tier == Tier::kOrganization);
  REQUIRE(verified_agent->organization.has_value());
  CHECK(*verified_agent->organization == "example.org");
  CHECK(verified_agent->signing_key == member.signing.public_key);
  // The chain does not verify against another root key, nor with the org link left out.
  CHECK_FALSE(VerifyChain(outsider.signing.public_key, links, Now()));
  CHECK_FALSE(VerifyChain(root, std::vector<json>{chain[1]}, Now()));

  auto lookup = reg->Lookup(member.amid).Json();
  CHECK(lookup["tier"] == "organization");
  CHECK(lookup["organization"] == "example.org");
  CHECK(LookupOrg(*reg, "example.org")["agent_count"] == 1);
  CHECK(reg->Search("capability=*&tier_min=organization").Json()["total"] == 0);

  // wrong.example publishes its right value and is verified; example.org's agent cannot join
  // it, but re-joining its own organisation re-issues its certificate.
  REQUIRE(dns.Restart(
      {{good.record_name, good.record_value}, {wrong.record_name, wrong.record_value}}));
  auto second = reg->Post("/v1/org/verify", OrgVerifyBody(admin, wrong.id, admin.amid));
  INFO(second.body << dns.Log());
  REQUIRE(second.status == 200);
  auto taken = reg->Post("/v1/org/agents", OrgAgentsBody(admin, wrong.id, admin.amid, member.amid));
  CHECK(taken.status == 409);
  CHECK(ErrorOf(taken) == "agent already belongs to another organization");
  CHECK(reg->Lookup(member.amid).Json()["organization"] == "example.org");
  CHECK(LookupOrg(*reg, "wrong.example")["agent_count"] == 0);
  auto rejoin = reg->Post("/v1/org/agents", OrgAgentsBody(admin, good.id, admin.amid, member.amid));
  CHECK(rejoin.status == 201);
  CHECK(rejoin.Json()["agent_certificate"]["serial"] != chain[1]["serial"]);
  CHECK(LookupOrg(*reg, "example.org")["agent_count"] == 1);

  // The body may name the agent's key; it must be the registered one.
  auto wrong_key = reg->Post(
      "/v1/org/agents",
      admin.Sign("/v1/org/agents",
                 {{"organization_id", good.id},
                  {"admin_amid", admin.amid},
                  {"agent_amid", outsider.amid},
                  {"agent_signing_public_key", FormatEd25519Key(member.signing.public_key)}}));
  CHECK(wrong_key.status == 400);
  CHECK(reg->Lookup(outsider.amid).Json()["tier"] == "anonymous");

  // Unknown and revoked agents cannot be added.
  auto ghost =
      reg->Post("/v1/org/agents", OrgAgentsBody(admin, good.id, admin.amid, TestAgent(4099).amid));
  CHECK(ghost.status == 404);
  REQUIRE(reg->Post("/v1/registry/revoke",
                    outsider.Sign("/v1/registry/revoke", {{"amid", outsider.amid},
                                                          {"revoker_amid", outsider.amid},
                                                          {"reason", "superseded"}}))
              .status == 200);
  auto revoked =
      reg->Post("/v1/org/agents", OrgAgentsBody(admin, good.id, admin.amid, outsider.amid));
  CHECK(revoked.status == 403);
  CHECK(reg->Lookup(outsider.amid).Json()["tier"] == "anonymous");

  // SQL metacharacters in the organisation id are just an unknown id.
  auto sql =
      reg->Post("/v1/org/agents", OrgAgentsBody(admin, "x' OR '1'='1", admin.amid, member.amid));
  CHECK(sql.status == 404);

  // Unknown organisation and malformed lookups.
  CHECK(reg->Get("/v1/org/lookup?domain=nothing.example").status == 404);
  CHECK(reg->Get("/v1/org/lookup").status == 400);
  CHECK(reg->Get("/v1/org/lookup?domain=bad_domain!").status == 400);
  auto unknown_org = reg->Post(
      "/v1/org/verify", OrgVerifyBody(admin, "00000000-0000-4000-8000-000000000000", admin.amid));
  CHECK(unknown_org.status == 404);
}

TEST_CASE("registry: org verify when the DNS resolver fails changes nothing", "[registry][org]") {
  // A UDP port with nothing listening: c-ares sees ICMP port unreachable or times out.
  TempDir dir;
  const auto config = dir.path() / "registry.json";
  {
    std::ofstream out(config);
    out << R"({"dns_timeout_ms": 200})";
  }
  auto reg = StartRegistry({"--dns-resolver", "127.0.0.1:" + std::to_string(FreeUdpPort()),
                            "--config", config.string()});
  TestAgent admin(4301);
  REQUIRE(reg->Register(admin).status == 201);
  const Registered org = RegisterOrg(*reg, admin, "unreachable.example");
  const auto start = std::chrono::steady_clock::now();
  auto r = reg->Post("/v1/org/verify", OrgVerifyBody(admin, org.id, admin.amid));
  INFO(r.body);
  CHECK((r.status == 502 || r.status == 504));
  CHECK(r.Json()["verified"] == false);
  CHECK(ErrorOf(r).starts_with("DNS verification failed"));
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK(LookupOrg(*reg, "unreachable.example")["verified"] == false);
}

TEST_CASE("registry: org routes refuse forged, stale and replayed signatures", "[registry][org]") {
  auto reg = StartRegistry();
  TestAgent admin(4101);
  TestAgent other(4102);
  REQUIRE(reg->Register(admin).status == 201);
  REQUIRE(reg->Register(other).status == 201);

  // Forged: admin_amid names the admin, the signature is another agent's.
  json forged =
      other.Sign("/v1/org/register",
                 {{"name", "Forged"}, {"domain", "forged.example"}, {"admin_amid", admin.amid}});
  auto r = reg->Post("/v1/org/register", forged);
  CHECK(r.status == 401);
  CHECK(ErrorOf(r).find("signature verification failed") != std::string::npos);

  // The body's admin key must be the admin's registered key.
  json wrong_key =
      other.Sign("/v1/org/register",
                 {{"name", "Wrong key"},
                  {"domain", "wrongkey.example"},
                  {"admin_amid", admin.amid},
                  {"admin_signing_public_key", FormatEd25519Key(other.signing.public_key)}});
  CHECK(reg->Post("/v1/org/register", wrong_key).status == 401);

  // Stale: signed an hour ago.
  auto stale = reg->Post("/v1/org/register", OrgRegisterBody(admin, "stale.example", "Stale",
                                                             Now() - 3600 * 1'000'000'000LL));
  CHECK(stale.status == 401);
  CHECK(ErrorOf(stale).find("timestamp") != std::string::npos);

  // A body edited after signing.
  json tampered = OrgRegisterBody(admin, "tamper.example");
  tampered["domain"] = "evil.example";
  CHECK(reg->Post("/v1/org/register", tampered).status == 401);

  // Missing signature and timestamp.
  CHECK(reg->Post("/v1/org/register",
                  json{{"name", "x"}, {"domain", "nosig.example"}, {"admin_amid", admin.amid}})
            .status == 400);

  // None of these created anything.
  for (const char* domain : {"forged.example", "wrongkey.example", "stale.example",
                             "tamper.example", "evil.example", "nosig.example"}) {
    INFO(domain);
    CHECK(reg->Get(std::string("/v1/org/lookup?domain=") + domain).status == 404);
  }

  // Replay: the same signed body twice.
  const json body = OrgRegisterBody(admin, "replay.example");
  CHECK(reg->Post("/v1/org/register", body).status == 201);
  auto replay = reg->Post("/v1/org/register", body);
  CHECK(replay.status == 409);
  CHECK(ErrorOf(replay).find("replayed") != std::string::npos);

  // Duplicate domain (a fresh signature) is a conflict, even in other letter case.
  auto dup = reg->Post("/v1/org/register", OrgRegisterBody(other, "REPLAY.example", "Other"));
  CHECK(dup.status == 409);
  CHECK(ErrorOf(dup) == "domain already registered");
  CHECK(LookupOrg(*reg, "replay.example")["admin_amid"] == admin.amid);

  // Verify and agents: replay and forgery too.
  const std::string org_id = LookupOrg(*reg, "replay.example")["id"];
  json forged_verify =
      other.Sign("/v1/org/verify", {{"organization_id", org_id}, {"admin_amid", admin.amid}});
  CHECK(reg->Post("/v1/org/verify", forged_verify).status == 401);
  json forged_agents = other.Sign(
      "/v1/org/agents",
      {{"organization_id", org_id}, {"admin_amid", admin.amid}, {"agent_amid", other.amid}});
  CHECK(reg->Post("/v1/org/agents", forged_agents).status == 401);
  const json agents_body = OrgAgentsBody(admin, org_id, admin.amid, other.amid);
  CHECK(reg->Post("/v1/org/agents", agents_body).status == 403);  // not verified
  CHECK(reg->Post("/v1/org/agents", agents_body).status == 409);  // replay
  CHECK(reg->Lookup(other.amid).Json()["tier"] == "anonymous");
}

TEST_CASE("registry: org register validates input and refuses revoked or unknown admins",
          "[registry][org]") {
  auto reg = StartRegistry();
  TestAgent admin(4201);
  TestAgent unknown(4202);
  REQUIRE(reg->Register(admin).status == 201);

  for (const char* domain :
       {"localhost", "-bad.example", "bad-.example", "a..example", "under_score.example",
        "sp ace.example", "example.org.", "x'; DROP TABLE organizations; --.example"}) {
    INFO(domain);
    auto r = reg->Post("/v1/org/register", OrgRegisterBody(admin, domain));
    CHECK(r.status == 400);
    CHECK(ErrorOf(r).starts_with("domain:"));
  }
  auto long_label =
      reg->Post("/v1/org/register", OrgRegisterBody(admin, std::string(64, 'a') + ".example"));
  CHECK(long_label.status == 400);
  auto no_name =
      admin.Sign("/v1/org/register", {{"domain", "noname.example"}, {"admin_amid", admin.amid}});
  CHECK(reg->Post("/v1/org/register", no_name).status == 400);
  auto typed = admin.Sign("/v1/org/register",
                          {{"name", 7}, {"domain", "typed.example"}, {"admin_amid", admin.amid}});
  CHECK(reg->Post("/v1/org/register", typed).status == 400);
  CHECK(reg->PostRaw("/v1/org/register", "{not json").status == 400);
  CHECK(reg->PostRaw("/v1/org/register", "[]").status == 400);

  // SQL metacharacters in the name are stored as they are.
  auto quoted = reg->Post("/v1/org/register",
                          OrgRegisterBody(admin, "quoted.example", "O'Brien\"; DROP TABLE x; --"));
  CHECK(quoted.status == 201);
  CHECK(LookupOrg(*reg, "quoted.example")["name"] == "O'Brien\"; DROP TABLE x; --");

  auto stranger = reg->Post("/v1/org/register", OrgRegisterBody(unknown, "stranger.example"));
  CHECK(stranger.status == 404);

  // Revoke the admin: it can no longer register an organisation.
  auto revoke = reg->Post("/v1/registry/revoke",
                          admin.Sign("/v1/registry/revoke", {{"amid", admin.amid},
                                                             {"revoker_amid", admin.amid},
                                                             {"reason", "key_compromise"}}));
  REQUIRE(revoke.status == 200);
  auto revoked = reg->Post("/v1/org/register", OrgRegisterBody(admin, "revoked.example"));
  CHECK(revoked.status == 403);
  CHECK(ErrorOf(revoked).find("revoked") != std::string::npos);
  CHECK(reg->Get("/v1/org/lookup?domain=revoked.example").status == 404);
}
