// Integration tests: the real amesh-registry binary on loopback, a temp SQLite file, real HTTP.
#include "registry_fixture.hpp"

using namespace agentmesh;
using namespace agentmesh::testing;
using namespace agentmesh::testing::registry_fixture;
using nlohmann::json;
using namespace std::chrono_literals;

TEST_CASE("registry: register, lookup, duplicate, health and stats", "[registry]") {
  auto reg = StartRegistry();
  TestAgent a(1);
  auto r = reg->Register(a, {"travel/flights", "weather"});
  INFO(r.body << reg->log());
  REQUIRE(r.status == 201);
  CHECK(r.Json()["success"] == true);
  CHECK(r.Json()["amid"] == a.amid);
  CHECK(r.Json()["tier"] == "anonymous");

  auto again = reg->Register(a);
  CHECK(again.status == 409);
  CHECK(ErrorOf(again) == "AMID already registered");

  auto lookup = reg->Lookup(a.amid);
  REQUIRE(lookup.status == 200);
  auto j = lookup.Json();
  CHECK(j["amid"] == a.amid);
  CHECK(j["signing_public_key"] == FormatEd25519Key(a.signing.public_key));
  CHECK(j["exchange_public_key"] == FormatX25519Key(a.exchange.public_key));
  CHECK(j["capabilities"] == json::array({"travel/flights", "weather"}));
  CHECK(j["status"] == "offline");
  CHECK(j["reputation_score"] == 0.5);
  CHECK(j["ratings_count"] == 0);
  CHECK(j["reputation_status"] == "unrated");
  CHECK(j["one_time_prekeys_remaining"] == 0);
  CHECK(j["revoked"] == false);
  CHECK(j["relay_endpoint"] == "wss://relay.example/v1/connect");

  CHECK(reg->Lookup(TestAgent(2).amid).status == 404);
  CHECK(reg->Lookup("not-an-amid").status == 400);
  CHECK(reg->Get("/v1/registry/lookup").status == 400);

  auto health = reg->Get("/health");
  CHECK(health.status == 200);
  CHECK(health.Json()["status"] == "ok");
  auto v1 = reg->Get("/v1/health");
  CHECK(v1.status == 200);
  CHECK(v1.Json()["agents_registered"] == 1);
  CHECK(v1.Json()["status"] == "healthy");
  auto stats = reg->Get("/v1/registry/stats");
  CHECK(stats.status == 200);
  CHECK(stats.Json()["total_agents"] == 1);
  CHECK(stats.Json()["by_tier"]["anonymous"] == 1);

  // Status and capabilities updates, signed by the agent.
  auto status = reg->Post("/v1/registry/status",
                          a.Sign("/v1/registry/status", {{"amid", a.amid}, {"status", "online"}}));
  INFO(status.body);
  CHECK(status.status == 200);
  CHECK(reg->Lookup(a.amid).Json()["status"] == "online");
  auto caps = reg->Post(
      "/v1/registry/capabilities",
      a.Sign("/v1/registry/capabilities", {{"amid", a.amid}, {"capabilities", {"math/algebra"}}}));
  CHECK(caps.status == 200);
  CHECK(reg->Lookup(a.amid).Json()["capabilities"] == json::array({"math/algebra"}));
  CHECK(reg->Search("capability=weather").Json()["total"] == 0);
  CHECK(reg->Search("capability=math/algebra").Json()["total"] == 1);

  auto metrics = reg->Get("/metrics");
  CHECK(metrics.status == 200);
  CHECK(metrics.body.find("amesh_registry_requests_total{route=\"register\",status=\"201\"} 1") !=
        std::string::npos);
  CHECK(metrics.body.find("amesh_registry_agents 1") != std::string::npos);
}

TEST_CASE("registry: search by exact and prefix capability, filters and paging", "[registry]") {
  auto reg = StartRegistry();
  std::vector<std::unique_ptr<TestAgent>> agents;
  for (int i = 0; i < 25; ++i) {
    agents.push_back(std::make_unique<TestAgent>(100 + i));
    std::vector<std::string> caps = {i % 2 == 0 ? "travel/flights" : "travel/hotels"};
    if (i < 3) caps.push_back("weather");
    REQUIRE(reg->Register(*agents.back(), caps).status == 201);
  }
  TestAgent other(99);
  REQUIRE(reg->Register(other, {"travelling", "travel"}).status == 201);

  auto exact = reg->Search("capability=weather");
  REQUIRE(exact.status == 200);
  CHECK(exact.Json()["total"] == 3);
  CHECK(exact.Json()["results"].size() == 3);

  auto flights = reg->Search("capability=travel/flights");
  CHECK(flights.Json()["total"] == 13);

  // The prefix never matches "travelling" nor bare "travel".
  auto prefix = reg->Search("capability=" + UrlEncode("travel/*") + "&limit=100");
  REQUIRE(prefix.status == 200);
  CHECK(prefix.Json()["total"] == 25);
  CHECK(prefix.Json()["results"].size() == 25);
  CHECK(AmidsOf(prefix.Json()["results"]).count(other.amid) == 0);
  auto raw_prefix = reg->Search("capability=travel/*&limit=5");
  CHECK(raw_prefix.Json()["total"] == 25);
  CHECK(reg->Search("capability=*").Json()["total"] == 26);

  // Paging: 3 pages of 10 cover every match exactly once, in a stable order.
  std::vector<std::string> seen;
  for (int offset = 0; offset < 30; offset += 10) {
    auto page = reg->Search("capability=travel/*&limit=10&offset=" + std::to_string(offset));
    REQUIRE(page.status == 200);
    CHECK(page.Json()["limit"] == 10);
    CHECK(page.Json()["offset"] == offset);
    const json results = page.Json()["results"];
    for (const auto& r : results) seen.push_back(r["amid"]);
  }
  CHECK(seen.size() == 25);
  CHECK(std::set<std::string>(seen.begin(), seen.end()).size() == 25);
  // ... in the order of the one-page answer. The first page is asked for more often than a
  // prepared statement's custom plans last (PostgreSQL switches to its generic plan after 5).
  std::vector<std::string> whole;
  const json all_results = prefix.Json()["results"];
  for (const auto& r : all_results) whole.push_back(r["amid"]);
  CHECK(seen == whole);
  for (int i = 0; i < 8; ++i) {
    std::vector<std::string> first;
    const json results = reg->Search("capability=travel/*&limit=10").Json()["results"];
    for (const auto& r : results) first.push_back(r["amid"]);
    CHECK(first == std::vector<std::string>(whole.begin(), whole.begin() + 10));
  }
  CHECK(reg->Search("capability=travel/*&offset=25").Json()["results"].empty());

  // Page size bound and bad numbers.
  CHECK(reg->Search("capability=weather&limit=100").status == 200);
  CHECK(reg->Search("capability=weather&limit=101").status == 400);
  CHECK(reg->Search("capability=weather&limit=99999999999999999999999").status == 400);
  CHECK(reg->Search("capability=weather&limit=0").status == 400);
  CHECK(reg->Search("capability=weather&limit=-1").status == 400);
  CHECK(reg->Search("capability=weather&offset=abc").status == 400);
  CHECK(reg->Search("capability=weather&offset=99999999999999").status == 400);
  CHECK(reg->Search("").status == 400);
  CHECK(reg->Search("capability=tr*vel").status == 400);

  // tier_min: everyone is anonymous.
  CHECK(reg->Search("capability=weather&tier_min=anonymous").Json()["total"] == 3);
  CHECK(reg->Search("capability=weather&tier_min=2").Json()["total"] == 3);
  CHECK(reg->Search("capability=weather&tier_min=verified").Json()["total"] == 0);
  CHECK(reg->Search("capability=weather&tier_min=1").Json()["total"] == 0);
  CHECK(reg->Search("capability=weather&tier_min=1.5").Json()["total"] == 0);
  CHECK(reg->Search("capability=weather&tier_min=7").status == 400);

  // reputation_min: new agents start at 0.5.
  CHECK(reg->Search("capability=weather&reputation_min=0.5").Json()["total"] == 3);
  CHECK(reg->Search("capability=weather&reputation_min=0.51").Json()["total"] == 0);
  CHECK(reg->Search("capability=weather&reputation_min=2").status == 400);
  CHECK(reg->Search("capability=weather&reputation_min=nan").status == 400);

  // status filter.
  TestAgent& online = *agents[0];
  REQUIRE(
      reg->Post("/v1/registry/status",
                online.Sign("/v1/registry/status", {{"amid", online.amid}, {"status", "online"}}))
          .status == 200);
  auto on = reg->Search("capability=weather&status=online");
  CHECK(on.Json()["total"] == 1);
  CHECK(on.Json()["results"][0]["amid"] == online.amid);
  CHECK(reg->Search("capability=weather&status=sleeping").status == 400);

  // Order: equal reputation, so the most recently seen comes first.
  auto ordered = reg->Search("capability=weather");
  CHECK(ordered.Json()["results"][0]["amid"] == online.amid);
}

TEST_CASE("registry: signature failures are refused without a state change", "[registry]") {
  auto reg = StartRegistry();
  TestAgent a(1);
  TestAgent b(2);
  REQUIRE(reg->Register(a).status == 201);
  const std::string path = "/v1/registry/status";
  const json body = {{"amid", a.amid}, {"status", "online"}};

  SECTION("bad signature") {
    json signed_body = b.Sign(path, body);  // signed by another key
    auto r = reg->Post(path, signed_body);
    CHECK(r.status == 401);
    CHECK(ErrorOf(r).starts_with("signature verification failed"));
  }
  SECTION("stale timestamp") {
    auto r = reg->Post(path, a.Sign(path, body, Now() - 600 * kNanosPerSecond));
    CHECK(r.status == 401);
    CHECK(ErrorOf(r).find("timestamp") != std::string::npos);
    auto future = reg->Post(path, a.Sign(path, body, Now() + 600 * kNanosPerSecond));
    CHECK(future.status == 401);
  }
  SECTION("signed for another path") {
    auto r = reg->Post(path, a.Sign("/v1/registry/capabilities", body));
    CHECK(r.status == 401);
  }
  SECTION("signed for another method") {
    auto r = reg->Post(path, a.Sign(path, body, Now(), "PUT"));
    CHECK(r.status == 401);
  }
  SECTION("body tampered after signing") {
    json signed_body = a.Sign(path, body);
    signed_body["status"] = "dnd";
    CHECK(reg->Post(path, signed_body).status == 401);
    json extra = a.Sign(path, body);
    extra["note"] = "added by a proxy";
    CHECK(reg->Post(path, extra).status == 401);
  }
  SECTION("reference-style signature over the timestamp only") {
    json old = body;
    old["timestamp"] = FormatRfc3339Seconds(Now());
    const std::string ts = old["timestamp"];
    old["signature"] = FormatSignature(agentmesh::Sign(a.signing.secret, AsBytes(ts)));
    CHECK(reg->Post(path, old).status == 401);
  }
  SECTION("missing or malformed signature fields") {
    CHECK(reg->Post(path, body).status == 400);
    json no_sig = body;
    no_sig["timestamp"] = FormatRfc3339Z(Now());
    CHECK(reg->Post(path, no_sig).status == 400);
    json bad_sig = a.Sign(path, body);
    bad_sig["signature"] = "not base64!";
    CHECK(reg->Post(path, bad_sig).status == 401);
    json bad_ts = a.Sign(path, body);
    bad_ts["timestamp"] = "yesterday";
    CHECK(reg->Post(path, bad_ts).status == 401);
  }
  SECTION("replay") {
    json signed_body = a.Sign(path, body);
    CHECK(reg->Post(path, signed_body).status == 200);
    auto replay = reg->Post(path, signed_body);
    CHECK(replay.status == 409);
    CHECK(ErrorOf(replay).find("replay") != std::string::npos);
    // A fresh signature of the same request is fine.
    CHECK(reg->Post(path, a.Sign(path, {{"amid", a.amid}, {"status", "away"}})).status == 200);
  }
  SECTION("registration: AMID of another key, key from the body") {
    json reg_body = a.RegisterBody();
    reg_body["amid"] = b.amid;
    CHECK(reg->Post("/v1/registry/register", reg_body).status == 401);
    json b_body = b.RegisterBody();
    b_body["display_name"] = "changed";
    CHECK(reg->Post("/v1/registry/register", b_body).status == 401);
    CHECK(reg->Lookup(b.amid).status == 404);
  }
  SECTION("unknown acting agent") {
    auto r = reg->Post(path, b.Sign(path, {{"amid", b.amid}, {"status", "online"}}));
    CHECK(r.status == 404);
  }
  // Whatever happened above, a's status changed only through accepted requests.
  auto status = reg->Lookup(a.amid).Json()["status"];
  CHECK((status == "offline" || status == "online" || status == "away"));
  CHECK(status != "dnd");
}

TEST_CASE("registry: prekey upload and fetch consume one one-time prekey each", "[registry]") {
  auto reg = StartRegistry();
  TestAgent a(1);
  TestAgent b(2);
  REQUIRE(reg->Register(a).status == 201);

  // No prekeys yet.
  CHECK(reg->Get("/v1/registry/prekeys/" + a.amid).status == 404);

  // A signed prekey signed by another key is refused, and nothing is stored.
  auto bad = reg->Post("/v1/registry/prekeys", a.PrekeyBody(1, 1, 3, &b.signing.secret));
  CHECK(bad.status == 400);
  CHECK(ErrorOf(bad).find("signed_prekey_signature") != std::string::npos);
  CHECK(reg->Lookup(a.amid).Json()["one_time_prekeys_remaining"] == 0);

  auto up = reg->Post("/v1/registry/prekeys", a.PrekeyBody(1, 1, 3));
  INFO(up.body);
  REQUIRE(up.status == 200);
  CHECK(up.Json()["one_time_prekeys_stored"] == 3);
  CHECK(reg->Lookup(a.amid).Json()["one_time_prekeys_remaining"] == 3);

  for (std::uint32_t expected = 1; expected <= 3; ++expected) {
    auto got = reg->Get("/v1/registry/prekeys/" + a.amid);
    REQUIRE(got.status == 200);
    auto j = got.Json();
    CHECK(j["one_time_prekey"]["id"] == expected);
    REQUIRE(j["one_time_prekeys"].size() == 1);
    CHECK(j["one_time_prekeys"][0] == j["one_time_prekey"]);
    CHECK(j["identity_key"] == FormatX25519Key(a.exchange.public_key));
    CHECK(j["signed_prekey_id"] == 1);
    // The daemon's parser accepts the bundle and the signature verifies with a's key.
    auto bundle = ParseBundleJson(j);
    REQUIRE(bundle);
    CHECK(VerifyBundle(*bundle, a.signing.public_key));
  }
  auto empty = reg->Get("/v1/registry/prekeys/" + a.amid);
  REQUIRE(empty.status == 200);
  CHECK_FALSE(empty.Json().contains("one_time_prekey"));
  CHECK_FALSE(empty.Json().contains("one_time_prekeys"));
  CHECK(reg->Lookup(a.amid).Json()["one_time_prekeys_remaining"] == 0);

  // Ids are never reused: re-uploading 1..3 stores nothing, 4..5 are new; a newer SPK wins.
  auto reup = reg->Post("/v1/registry/prekeys", a.PrekeyBody(2, 1, 5));
  REQUIRE(reup.status == 200);
  CHECK(reup.Json()["one_time_prekeys_stored"] == 2);
  CHECK(reup.Json()["one_time_prekeys_ignored"] == 3);
  auto next = reg->Get("/v1/registry/prekeys/" + a.amid).Json();
  CHECK(next["one_time_prekey"]["id"] == 4);
  CHECK(next["signed_prekey_id"] == 2);

  // Bad uploads.
  CHECK(reg->Post("/v1/registry/prekeys", b.PrekeyBody(1, 1, 1)).status == 404);  // unknown
  json zero_id = a.PrekeyBody(3, 1, 1);
  zero_id["one_time_prekeys"][0]["id"] = 0;
  CHECK(reg->Post("/v1/registry/prekeys", a.Sign("/v1/registry/prekeys", zero_id)).status == 400);
  json short_key = a.PrekeyBody(3, 1, 1);
  short_key["signed_prekey"] = "AAAA";
  CHECK(reg->Post("/v1/registry/prekeys", a.Sign("/v1/registry/prekeys", short_key)).status == 400);
  CHECK(reg->Get("/v1/registry/prekeys/" + b.amid).status == 404);
  CHECK(reg->Get("/v1/registry/prekeys/nonsense").status == 400);
  CHECK(reg->Get("/v1/registry/prekeys/").status == 404);
}

TEST_CASE("registry: concurrent prekey fetches never get the same one-time prekey", "[registry]") {
  auto reg = StartRegistry();
  TestAgent a(1);
  REQUIRE(reg->Register(a).status == 201);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 30;
  constexpr int kKeys = 100;
  REQUIRE(reg->Post("/v1/registry/prekeys", a.PrekeyBody(1, 1, kKeys)).status == 200);

  std::mutex mu;
  std::vector<int> ids;
  std::atomic<int> without{0};
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      HttpConnection conn(reg->port());
      for (int i = 0; i < kPerThread; ++i) {
        auto r = conn.Request("GET", "/v1/registry/prekeys/" + a.amid);
        if (r.status != 200) {
          ++failures;
          continue;
        }
        auto j = r.Json();
        if (!j.contains("one_time_prekey")) {
          ++without;
          continue;
        }
        std::lock_guard lock(mu);
        ids.push_back(j["one_time_prekey"]["id"].get<int>());
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(failures == 0);
  CHECK(ids.size() == kKeys);
  CHECK(without == kThreads * kPerThread - kKeys);
  std::set<int> unique(ids.begin(), ids.end());
  CHECK(unique.size() == ids.size());
  CHECK(*unique.begin() == 1);
  CHECK(*unique.rbegin() == kKeys);
}

TEST_CASE("registry: registrations from many connections commit together and survive SIGKILL",
          "[registry]") {
  // Writes that arrive together share one commit (a group); every 201 must still mean stored.
  auto reg = StartRegistry();
  constexpr int kThreads = 8;
  constexpr int kPerThread = 12;
  std::vector<std::vector<TestAgent>> agents(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kPerThread; ++i) agents[t].emplace_back(1000 + t * kPerThread + i);
  }
  const TestAgent contested(999);  // registered by every thread at once: one 201, the rest 409
  std::atomic<int> created{0};
  std::atomic<int> contested_created{0};
  std::atomic<int> contested_conflicts{0};
  std::atomic<int> unexpected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      HttpConnection conn(reg->port());
      for (int i = 0; i < kPerThread; ++i) {
        auto r = conn.Request("POST", "/v1/registry/register",
                              agents[t][i].RegisterBody({"group/commit"}).dump());
        (r.status == 201 ? created : unexpected)++;
        if (i == kPerThread / 2) {
          auto c = conn.Request("POST", "/v1/registry/register", contested.RegisterBody().dump());
          if (c.status == 201) {
            ++contested_created;
          } else if (c.status == 409) {
            ++contested_conflicts;
          } else {
            ++unexpected;
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  INFO(reg->log());
  CHECK(unexpected == 0);
  CHECK(created == kThreads * kPerThread);
  CHECK(contested_created == 1);
  CHECK(contested_conflicts == kThreads - 1);

  reg->Restart(/*kill=*/true);
  CHECK(reg->Search("capability=group/commit&limit=1").Json()["total"] == kThreads * kPerThread);
  for (const auto& row : agents) {
    for (const auto& a : row) CHECK(reg->Lookup(a.amid).status == 200);
  }
  CHECK(reg->Lookup(contested.amid).status == 200);
}

TEST_CASE("registry: a failed group commit answers 503 and stores nothing of it while reads go on",
          "[registry][sqlite-only]") {
  // The registry may not grow a file past ~2-4 MB (RLIMIT_FSIZE; SIGXFSZ ignored, so a write past
  // the limit fails with EFBIG instead of killing the process). Once the WAL reaches the limit,
  // every commit fails as it would on a full disk.
  auto state = std::make_shared<RegistryState>();
  auto reg = std::make_unique<Registry>(
      state, std::vector<std::string>{}, true,
      std::vector<std::string>{"/bin/sh", "-c",
                               "trap '' XFSZ; ulimit -f 4096; exec \"$0\" \"$@\""});
  const std::string padding(100, 'p');  // capabilities are at most 128 bytes
  std::vector<TestAgent> stored;
  std::vector<TestAgent> refused;
  std::vector<std::string> other;
  for (int i = 0; i < 4000 && refused.size() < 5; ++i) {
    TestAgent agent(5000 + i);
    auto r = reg->Register(agent, {"disk/full/" + std::to_string(i) + padding, "disk/" + padding});
    if (r.status == 201) {
      stored.push_back(std::move(agent));
    } else if (r.status == 503) {
      CHECK(r.Json()["error"].get<std::string>().find("not saved") != std::string::npos);
      refused.push_back(std::move(agent));
    } else {
      other.push_back(std::to_string(r.status) + " " + r.body);
    }
  }
  INFO(reg->log());
  CHECK(other.empty());
  REQUIRE(refused.size() == 5);
  REQUIRE(stored.size() > 10);
  // Reads are still served while writes fail.
  CHECK(reg->Lookup(stored.front().amid).status == 200);
  CHECK(reg->Lookup(refused.front().amid).status == 404);
  CHECK(reg->log().find("storage: a group commit failed") != std::string::npos);
  auto metrics = reg->Get("/metrics");
  CHECK(metrics.body.find("amesh_registry_storage_errors_total 0") == std::string::npos);

  // Without the limit, on the same files: every 201 is there, no 503 is.
  reg.reset();
  Registry again(state);
  CHECK(again.Search("capability=" + UrlEncode("disk/" + padding) + "&limit=1").Json()["total"] ==
        stored.size());
  for (const auto& a : stored) CHECK(again.Lookup(a.amid).status == 200);
  for (const auto& a : refused) CHECK(again.Lookup(a.amid).status == 404);
  TestAgent after(4999);
  CHECK(again.Register(after, {"disk/after"}).status == 201);
}

TEST_CASE("registry: revocation hides, marks, stops prekeys and refuses re-registration",
          "[registry]") {
  auto reg = StartRegistry();
  TestAgent a(1);
  TestAgent b(2);
  REQUIRE(reg->Register(a, {"weather"}).status == 201);
  REQUIRE(reg->Register(b, {"weather"}).status == 201);
  REQUIRE(reg->Post("/v1/registry/prekeys", a.PrekeyBody(1, 1, 5)).status == 200);
  const std::string path = "/v1/registry/revoke";

  // Only the agent itself may revoke (b cannot revoke a); bad reasons are refused.
  auto other = reg->Post(
      path,
      b.Sign(path, {{"amid", a.amid}, {"revoker_amid", b.amid}, {"reason", "key_compromise"}}));
  CHECK(other.status == 403);
  CHECK(reg->Post(path,
                  a.Sign(path, {{"amid", a.amid}, {"revoker_amid", a.amid}, {"reason", "bored"}}))
            .status == 400);
  CHECK(reg->Lookup(a.amid).Json()["revoked"] == false);

  auto revoke = reg->Post(path, a.Sign(path, {{"amid", a.amid},
                                              {"revoker_amid", a.amid},
                                              {"reason", "key_compromise"},
                                              {"notes", "laptop stolen"}}));
  INFO(revoke.body);
  REQUIRE(revoke.status == 200);
  CHECK(revoke.Json()["success"] == true);

  auto again = reg->Post(
      path,
      a.Sign(path, {{"amid", a.amid}, {"revoker_amid", a.amid}, {"reason", "key_compromise"}}));
  CHECK(again.status == 409);

  auto lookup = reg->Lookup(a.amid).Json();
  CHECK(lookup["revoked"] == true);
  CHECK(lookup["revocation"]["reason"] == "key_compromise");
  CHECK(AmidsOf(reg->Search("capability=weather").Json()["results"]) ==
        std::set<std::string>{b.amid});
  CHECK(reg->Search("capability=weather").Json()["total"] == 1);
  CHECK(reg->Get("/v1/registry/prekeys/" + a.amid).status == 410);
  CHECK(reg->Get("/v1/registry/did/" + a.amid).status == 410);
  auto rereg = reg->Register(a);
  CHECK(rereg.status == 403);
  // A revoked agent can no longer act.
  CHECK(reg->Post("/v1/registry/status",
                  a.Sign("/v1/registry/status", {{"amid", a.amid}, {"status", "online"}}))
            .status == 403);

  auto status = reg->Get("/v1/registry/revocation?amid=" + a.amid).Json();
  CHECK(status["revoked"] == true);
  CHECK(status["revocation"]["notes"] == "laptop stolen");
  CHECK(reg->Get("/v1/registry/revocation?amid=" + b.amid).Json()["revoked"] == false);

  auto bulk = reg->Post("/v1/registry/revocations/bulk", {{"amids", {a.amid, b.amid}}});
  REQUIRE(bulk.status == 200);
  CHECK(bulk.Json()["total_checked"] == 2);
  CHECK(bulk.Json()["total_revoked"] == 1);
  json too_many = json::array();
  for (int i = 0; i < 101; ++i) too_many.push_back(a.amid);
  CHECK(reg->Post("/v1/registry/revocations/bulk", {{"amids", too_many}}).status == 400);

  // The list is signed by the registry root key, which is the key in keys/root.key.
  auto list = reg->Get("/v1/registry/revocations");
  REQUIRE(list.status == 200);
  auto doc = list.Json();
  CHECK(doc["total"] == 1);
  REQUIRE(doc["revocations"].size() == 1);
  CHECK(doc["revocations"][0]["amid"] == a.amid);
  auto root = ParseEd25519Key(doc["issuer"].get<std::string>());
  REQUIRE(root);
  auto canonical = CanonicalJsonWithout(doc, "signature");
  REQUIRE(canonical);
  auto sig = ParseSignature(doc["signature"].get<std::string>());
  REQUIRE(sig);
  CHECK(Verify(*root, AsBytes(*canonical), *sig));
  doc["total"] = 0;
  CHECK_FALSE(Verify(*root, AsBytes(*CanonicalJsonWithout(doc, "signature")), *sig));
  CHECK(reg->Get("/v1/registry/root-key").Json()["public_key"] == FormatEd25519Key(*root));
  CHECK(reg->Get("/v1/registry/revocations?limit=10001").status == 400);

  const auto key_file = reg->dir() / "keys" / "root.key";
  CHECK((std::filesystem::status(key_file).permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
  CHECK((std::filesystem::status(reg->dir() / "keys").permissions() &
         std::filesystem::perms::all) == std::filesystem::perms::owner_all);
}

TEST_CASE("registry: reputation feedback, session reports, score and leaderboard", "[registry]") {
  auto reg = StartRegistry();
  TestAgent target(1);
  REQUIRE(reg->Register(target).status == 201);
  std::vector<std::unique_ptr<TestAgent>> raters;
  for (int i = 0; i < 6; ++i) {
    raters.push_back(std::make_unique<TestAgent>(10 + i));
    REQUIRE(reg->Register(*raters.back()).status == 201);
  }
  const std::string fpath = "/v1/registry/reputation/feedback";
  auto feedback = [&](TestAgent& from, const std::string& session, double score) {
    return reg->Post(fpath, from.Sign(fpath, {{"target_amid", target.amid},
                                              {"from_amid", from.amid},
                                              {"session_id", session},
                                              {"score", score},
                                              {"tags", {"helpful"}}}));
  };
  auto first = feedback(*raters[0], "s-0", 1.0);
  INFO(first.body);
  REQUIRE(first.status == 200);
  CHECK(feedback(*raters[0], "s-0", 0.0).status == 409);  // once per (rater, session)
  CHECK(feedback(*raters[0], "s-1", 1.0).status == 200);  // another session is fine
  CHECK(feedback(target, "s-2", 1.0).status == 400);      // nobody rates itself
  CHECK(feedback(*raters[1], "s-3", 1.5).status == 400);  // out of range
  for (int i = 1; i < 6; ++i) {
    REQUIRE(feedback(*raters[i], "t-" + std::to_string(i), 1.0).status == 200);
  }

  // Session outcomes: only participants may report; each session once.
  const std::string spath = "/v1/registry/reputation/session";
  json session = {{"session_id", "sess-1"},       {"initiator_amid", raters[0]->amid},
                  {"receiver_amid", target.amid}, {"intent", "travel/flights"},
                  {"outcome", "success"},         {"reporter_amid", raters[1]->amid}};
  CHECK(reg->Post(spath, raters[1]->Sign(spath, session)).status == 403);
  session["reporter_amid"] = target.amid;
  auto ok = reg->Post(spath, target.Sign(spath, session));
  INFO(ok.body);
  CHECK(ok.status == 200);
  CHECK(reg->Post(spath, target.Sign(spath, session)).status == 409);
  session["outcome"] = "exploded";
  session["session_id"] = "sess-2";
  CHECK(reg->Post(spath, target.Sign(spath, session)).status == 400);

  auto score = reg->Get("/v1/registry/reputation/score?amid=" + target.amid);
  REQUIRE(score.status == 200);
  auto s = score.Json();
  CHECK(s["feedback_count"] == 7);
  CHECK(s["total_sessions"] == 1);
  CHECK(s["successful_sessions"] == 1);
  CHECK(s["score"].get<double>() > 0.5);
  CHECK(s["tags"][0]["tag"] == "helpful");
  CHECK(reg->Lookup(target.amid).Json()["reputation_score"].get<double>() > 0.5);
  CHECK(reg->Lookup(target.amid).Json()["reputation_status"] == "rated");
  CHECK(reg->Get("/v1/registry/reputation/score?amid=" + TestAgent(77).amid).status == 404);

  auto board = reg->Get("/v1/registry/reputation/leaderboard?limit=5");
  REQUIRE(board.status == 200);
  REQUIRE(board.Json()["leaderboard"].size() == 1);
  CHECK(board.Json()["leaderboard"][0]["amid"] == target.amid);
  CHECK(reg->Get("/v1/registry/reputation/leaderboard?limit=1000").status == 400);
}

TEST_CASE("registry: bad input gets a JSON error and changes nothing", "[registry]") {
  auto reg = StartRegistry({"--max-body", "8192"});
  TestAgent a(1);
  REQUIRE(reg->Register(a, {"weather"}).status == 201);
  const std::string path = "/v1/registry/register";

  auto expect_json_error = [&](const HttpResult& r, int status) {
    INFO(r.status << " " << r.body);
    CHECK(r.status == status);
    CHECK(r.Header("Content-Type").value_or("") == "application/json");
    CHECK(r.Json().is_object());
    CHECK(r.Json().contains("error"));
  };

  // Malformed JSON and wrong top-level types.
  expect_json_error(reg->PostRaw(path, "{\"amid\":"), 400);
  expect_json_error(reg->PostRaw(path, "[1,2,3]"), 400);
  expect_json_error(reg->PostRaw(path, "\"just a string\""), 400);
  expect_json_error(reg->PostRaw(path, ""), 400);
  expect_json_error(reg->PostRaw(path, "{\"a\":1}{\"b\":2}"), 400);
  expect_json_error(reg->PostRaw("/v1/registry/status", std::string(2000, '[')), 400);

  // Missing fields and wrong types, each named.
  TestAgent b(2);
  for (const char* field : {"amid", "signing_public_key", "exchange_public_key"}) {
    json body = b.RegisterBody();
    body.erase(field);
    auto r = reg->Post(path, b.Sign(path, body));
    expect_json_error(r, 400);
    CHECK(ErrorOf(r).find(field) != std::string::npos);
  }
  for (auto [field, value] : std::vector<std::pair<std::string, json>>{
           {"amid", 42},
           {"display_name", json::array()},
           {"capabilities", "weather"},
           {"capabilities", json::array({1})},
           {"capabilities", json::array({"bad*cap"})},
           {"relay_endpoint", 3.5},
           {"exchange_public_key", "x25519:AAAA"},
           {"exchange_public_key", FormatEd25519Key(b.signing.public_key)},
           {"signing_public_key", "ed25519:not base64"}}) {
    json body = b.RegisterBody();
    body[field] = value;
    auto r = reg->Post(path, b.Sign(path, body));
    expect_json_error(r, 400);
  }
  // Deep nesting inside a valid object: refused, no crash.
  const std::string deep = "{\"amid\":\"" + a.amid + "\",\"status\":\"online\",\"timestamp\":\"" +
                           FormatRfc3339Z(Now()) +
                           "\",\"signature\":\"AAAA\",\"x\":" + std::string(3000, '[') +
                           std::string(3000, ']') + "}";
  expect_json_error(reg->PostRaw("/v1/registry/status", deep), 400);
  json huge_int = b.RegisterBody();
  huge_int["extra"] = 9007199254740993ULL;
  expect_json_error(reg->Post(path, huge_int), 400);
  CHECK(reg->Lookup(b.amid).status == 404);

  // Oversized body: 413.
  json big = b.RegisterBody();
  big["display_name"] = std::string(10000, 'x');
  auto too_big = reg->Post(path, big);
  expect_json_error(too_big, 413);
  big["display_name"] = std::string(40000, 'x');
  CHECK(reg->Post(path, big).status == 413);
  // Reconnect: the server closes the connection after a 413.
  reg->Reconnect();

  // SQL metacharacters in every string field are data, not SQL.
  const std::string evil = "'; DROP TABLE agents; -- \" OR 1=1 /*";
  TestAgent c(3);
  json cbody = {{"amid", c.amid},
                {"signing_public_key", FormatEd25519Key(c.signing.public_key)},
                {"exchange_public_key", FormatX25519Key(c.exchange.public_key)},
                {"display_name", evil},
                {"capabilities", {"x/" + evil.substr(0, 20), evil.substr(0, 16)}},
                {"relay_endpoint", evil},
                {"direct_endpoint", evil}};
  auto created = reg->Post(path, c.Sign(path, cbody));
  INFO(created.body);
  REQUIRE(created.status == 201);
  auto cl = reg->Lookup(c.amid).Json();
  CHECK(cl["display_name"] == evil);
  CHECK(cl["relay_endpoint"] == evil);
  // Lookup and search answers are written as text: quotes, backslashes and non-ASCII text come
  // back exactly, and a search result is the lookup answer without its lookup-only members.
  const std::string mixed = "caf\u00e9 \\ \"q\" \xF0\x9F\x98\x80 /end";
  TestAgent d(4);
  json dbody = {{"amid", d.amid},
                {"signing_public_key", FormatEd25519Key(d.signing.public_key)},
                {"exchange_public_key", FormatX25519Key(d.exchange.public_key)},
                {"display_name", mixed},
                {"capabilities", {"text/escapes", "text/caf\u00e9"}}};
  REQUIRE(reg->Post(path, d.Sign(path, dbody)).status == 201);
  json dl = reg->Lookup(d.amid).Json();
  CHECK(dl["display_name"] == mixed);
  CHECK(dl["capabilities"] == json::array({"text/escapes", "text/caf\u00e9"}));
  CHECK(dl["relay_endpoint"].is_null());
  CHECK(dl["revocation"].is_null());
  CHECK(dl["one_time_prekeys_remaining"] == 0);
  json found = reg->Search("capability=" + UrlEncode("text/caf\u00e9")).Json();
  REQUIRE(found["results"].size() == 1);
  for (const char* lookup_only :
       {"ratings_count", "reputation_status", "one_time_prekeys_remaining", "revocation"}) {
    CHECK(dl.erase(lookup_only) == 1);
  }
  CHECK(found["results"][0] == dl);
  CHECK(reg->Search("capability=" + UrlEncode(evil.substr(0, 16))).Json()["total"] == 1);
  CHECK(reg->Search("capability=" + UrlEncode(evil)).Json()["total"] == 0);
  CHECK(reg->Search("capability=" + UrlEncode("x/*")).Json()["total"] == 1);
  CHECK(reg->Lookup(UrlEncode(evil)).status == 400);
  CHECK(reg->Get("/v1/registry/prekeys/" + UrlEncode(evil)).status == 400);
  const std::string fpath = "/v1/registry/reputation/feedback";
  auto fb = reg->Post(fpath, c.Sign(fpath, {{"target_amid", a.amid},
                                            {"from_amid", c.amid},
                                            {"session_id", evil},
                                            {"score", 0.9},
                                            {"tags", {evil.substr(0, 30)}}}));
  CHECK(fb.status == 200);
  CHECK(reg->Post(fpath, c.Sign(fpath, {{"target_amid", a.amid},
                                        {"from_amid", c.amid},
                                        {"session_id", evil},
                                        {"score", 0.1}}))
            .status == 409);
  CHECK(reg->Get("/v1/registry/stats").Json()["total_agents"] == 3);

  // Wrong types in other routes.
  CHECK(reg->Post("/v1/registry/status",
                  a.Sign("/v1/registry/status", {{"amid", a.amid}, {"status", 1}}))
            .status == 400);
  CHECK(reg->Post(fpath, c.Sign(fpath, {{"target_amid", a.amid},
                                        {"from_amid", c.amid},
                                        {"session_id", "s"},
                                        {"score", "high"}}))
            .status == 400);
  CHECK(reg->Post("/v1/registry/revocations/bulk", {{"amids", "x"}}).status == 400);
  CHECK(reg->Post("/v1/registry/revocations/bulk", {{"amids", {"x"}}}).status == 400);
  CHECK(reg->Get("/v1/registry/lookup?amid=%zz").status == 400);

  // Unknown route and wrong method: JSON too.
  expect_json_error(reg->Get("/v1/registry/nothing"), 404);
  expect_json_error(reg->Get("/"), 404);
  auto wrong = reg->Get("/v1/registry/register");
  expect_json_error(wrong, 405);
  CHECK(wrong.Header("Allow") == "POST");
  expect_json_error(reg->PostRaw("/v1/registry/lookup", "{}"), 405);

  // The registry is still healthy.
  CHECK(reg->Get("/health").status == 200);
  CHECK(reg->Lookup(a.amid).status == 200);
}

TEST_CASE("registry: per-address rate limits answer 429 with Retry-After", "[registry]") {
  // The Registry helper passes generous limits; this registry gets small ones from its file.
  TempDir dir;
  const auto cfg = dir.path() / "registry.json";
  std::ofstream(cfg) << R"({"register_per_minute": 2, "search_per_minute": 3})";
  ChildProcess p;
  std::vector<std::string> argv = {AMESH_REGISTRY_BIN,  "--listen", "127.0.0.1:0", "--state-dir",
                                   dir.path().string(), "--config", cfg.string()};
  const auto db = FreshDatabaseArgs();
  argv.insert(argv.end(), db.begin(), db.end());
  REQUIRE(p.Start(argv, dir.path() / "log"));
  auto line = p.WaitForLine("listening on port", 20s);
  REQUIRE(line);
  const auto port = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(' ') + 1)));
  HttpConnection conn(port);
  for (int i = 0; i < 3; ++i) {
    CHECK(conn.Request("GET", "/v1/registry/search?capability=x").status == 200);
  }
  auto limited = conn.Request("GET", "/v1/registry/search?capability=x");
  CHECK(limited.status == 429);
  CHECK(limited.Header("Retry-After").has_value());
  CHECK(std::stoi(limited.Header("Retry-After").value_or("0")) >= 1);
  CHECK(limited.Json().contains("error"));
  // Lookups are not limited.
  CHECK(conn.Request("GET", "/v1/registry/lookup?amid=" + TestAgent(5).amid).status == 404);

  TestAgent a(1), b(2), c(3);
  CHECK(conn.Request("POST", "/v1/registry/register", a.RegisterBody().dump()).status == 201);
  CHECK(conn.Request("POST", "/v1/registry/register", b.RegisterBody().dump()).status == 201);
  auto reg_limited = conn.Request("POST", "/v1/registry/register", c.RegisterBody().dump());
  CHECK(reg_limited.status == 429);
  CHECK(reg_limited.Header("Retry-After").has_value());
  CHECK(conn.Request("GET", "/v1/registry/lookup?amid=" + c.amid).status == 404);
}

TEST_CASE("registry: data routes answer 503 while migrations run", "[registry]") {
  Registry reg({"--startup-delay-ms", "1500"}, /*wait_ready=*/false);
  HttpConnection conn(reg.port());
  auto starting = conn.Request("GET", "/v1/registry/search?capability=x");
  CHECK(starting.status == 503);
  CHECK(starting.Json()["status"] == "starting");
  CHECK(starting.Json().contains("error"));
  CHECK(conn.Request("GET", "/v1/health").status == 503);
  CHECK(conn.Request("GET", "/health").status == 200);
  TestAgent a(1);
  CHECK(conn.Request("POST", "/v1/registry/register", a.RegisterBody().dump()).status == 503);
  reg.WaitReady();
  CHECK(conn.Request("GET", "/v1/registry/search?capability=x").status == 200);
  CHECK(conn.Request("GET", "/v1/health").status == 200);
}

TEST_CASE("registry: SIGHUP reloads the config file, a bad file keeps the old one, SIGTERM stops",
          "[registry]") {
  TempDir dir;
  const auto cfg = dir.path() / "registry.json";
  std::ofstream(cfg) << R"({"search_per_minute": 1})";
  ChildProcess p;
  std::vector<std::string> argv = {AMESH_REGISTRY_BIN,  "--listen", "127.0.0.1:0", "--state-dir",
                                   dir.path().string(), "--config", cfg.string()};
  const auto db = FreshDatabaseArgs();
  argv.insert(argv.end(), db.begin(), db.end());
  REQUIRE(p.Start(argv, dir.path() / "log"));
  auto line = p.WaitForLine("listening on port", 20s);
  REQUIRE(line);
  const auto port = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(' ') + 1)));
  HttpConnection conn(port);
  CHECK(conn.Request("GET", "/v1/registry/search?capability=x").status == 200);
  CHECK(conn.Request("GET", "/v1/registry/search?capability=x").status == 429);

  auto reloads = [&] {
    const std::string log = p.StderrLog();
    std::size_t n = 0;
    for (auto pos = log.find("configuration reloaded"); pos != std::string::npos;
         pos = log.find("configuration reloaded", pos + 1)) {
      ++n;
    }
    return n;
  };
  auto wait_for_log = [&](const std::string& needle, std::size_t count) {
    for (int i = 0; i < 200; ++i) {
      const std::string log = p.StderrLog();
      std::size_t n = 0;
      for (auto pos = log.find(needle); pos != std::string::npos; pos = log.find(needle, pos + 1)) {
        ++n;
      }
      if (n >= count) return true;
      std::this_thread::sleep_for(20ms);
    }
    return false;
  };

  std::ofstream(cfg, std::ios::trunc) << R"({"search_per_minute": 1000})";
  p.Signal(SIGHUP, false);
  REQUIRE(wait_for_log("configuration reloaded", 1));
  for (int i = 0; i < 5; ++i) {
    CHECK(conn.Request("GET", "/v1/registry/search?capability=x").status == 200);
  }

  // A broken file: the running configuration stays.
  std::ofstream(cfg, std::ios::trunc) << R"({"search_per_minute": "lots"})";
  p.Signal(SIGHUP, false);
  REQUIRE(wait_for_log("keeping the running configuration", 1));
  CHECK(reloads() == 1);
  CHECK(conn.Request("GET", "/v1/registry/search?capability=x").status == 200);

  // A non-reloadable key is reported and not applied.
  std::ofstream(cfg, std::ios::trunc) << R"({"search_per_minute": 1000, "max_body_bytes": 4096})";
  p.Signal(SIGHUP, false);
  REQUIRE(wait_for_log("changes only on restart", 1));
  CHECK(conn.Request("GET", "/health").status == 200);

  const int status = p.Signal(SIGTERM, true);
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("registry: DID document with multibase keys", "[registry]") {
  auto reg = StartRegistry();
  TestAgent a(1);
  REQUIRE(reg->Register(a).status == 201);
  auto r = reg->Get("/v1/registry/did/" + a.amid);
  REQUIRE(r.status == 200);
  CHECK(r.Header("Content-Type") == "application/did+ld+json");
  auto doc = r.Json();
  CHECK(doc["id"] == "did:agentmesh:" + a.amid);
  const std::string ed = doc["verificationMethod"][0]["publicKeyMultibase"];
  const std::string x = doc["verificationMethod"][1]["publicKeyMultibase"];
  CHECK(ed.starts_with("z6Mk"));
  CHECK(x.starts_with("z6LS"));
  auto raw = Base58Decode(ed.substr(1));
  REQUIRE(raw);
  REQUIRE(raw->size() == 34);
  CHECK(std::equal(raw->begin() + 2, raw->end(), a.signing.public_key.data()));
  CHECK(doc["service"][0]["serviceEndpoint"] == "wss://relay.example/v1/connect");
#ifdef AMESH_TEST_CORE_DID
  // The daemon's strict parser reads it back to the registered keys.
  auto parsed = ParseDidDocument(doc);
  INFO(doc.dump());
  REQUIRE(parsed);
  CHECK(parsed->amid.str() == a.amid);
  CHECK(parsed->exchange_key == a.exchange.public_key);
#endif
  CHECK(reg->Get("/v1/registry/did/" + TestAgent(2).amid).status == 404);
}

TEST_CASE("registry: the root key survives a restart and a bad key file is refused", "[registry]") {
  TempDir dir;
  std::string first_key;
  std::vector<std::string> argv = {AMESH_REGISTRY_BIN, "--listen", "127.0.0.1:0", "--state-dir",
                                   dir.path().string()};
  const auto db = FreshDatabaseArgs();  // the same database for every run
  argv.insert(argv.end(), db.begin(), db.end());
  for (int run = 0; run < 2; ++run) {
    ChildProcess p;
    REQUIRE(p.Start(argv, dir.path() / "log"));
    auto line = p.WaitForLine("listening on port", 20s);
    REQUIRE(line);
    const auto port = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(' ') + 1)));
    const std::string key = HttpRequest(port, "GET", "/v1/registry/root-key").Json()["public_key"];
    if (run == 0) first_key = key;
    CHECK(key == first_key);
    CHECK(p.Signal(SIGTERM, true) == 0);
  }
  if (!OnPostgres()) CHECK(std::filesystem::exists(dir.path() / "registry.db"));
  std::filesystem::permissions(dir.path() / "keys" / "root.key", std::filesystem::perms::group_read,
                               std::filesystem::perm_options::add);
  ChildProcess bad;
  REQUIRE(bad.Start(argv, dir.path() / "log2"));
  const int status = bad.Signal(0, true, 10s);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 1);
  CHECK(bad.StderrLog().find("chmod 600") != std::string::npos);
}

TEST_CASE("registry: --help and --help-config describe the program", "[registry]") {
  TempDir dir;
  for (const char* flag : {"--help", "--help-config"}) {
    ChildProcess p;
    REQUIRE(p.Start({AMESH_REGISTRY_BIN, flag}, dir.path() / "log"));
    auto line =
        p.WaitForLine(flag == std::string("--help") ? "--listen" : "search_per_minute", 10s);
    CHECK(line.has_value());
    CHECK(p.Signal(0, true) == 0);
  }
}
