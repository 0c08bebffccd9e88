// Store-level tests of RegistryStore (store.hpp) on the backend the fixture selects
// (AMESH_TEST_REGISTRY_BACKEND): the contract points that matter most for a second backend —
// concurrent migrations, byte-wise prefix search and ordering, atomic one-time prekey consumption
// from several store instances (registry replicas), and the error codes.
#include <fmt/format.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>

#include "agentmesh/storage/sqlite.hpp"
#include "pg_store.hpp"
#include "registry_fixture.hpp"
#include "sqlite_store.hpp"
#include "store.hpp"
#if AMESH_TEST_HAVE_PG
#include "agentmesh/storage/postgres.hpp"
#endif

using namespace agentmesh;
using namespace agentmesh::registry;
using namespace agentmesh::testing;
using namespace agentmesh::testing::registry_fixture;

namespace {

// A database of the selected backend that several store instances can open.
struct StoreDb {
  std::shared_ptr<RegistryState> state = std::make_shared<RegistryState>();

  std::string url() const {
    if (state->backend() == Backend::kPostgres) return state->db_args()[1];
    return "sqlite:" + state->sqlite_path().string();
  }

  std::unique_ptr<RegistryStore> Open() const {
    auto store = OpenStore(url());
    INFO(url() << ": " << (store ? std::string() : store.error().ToString()));
    REQUIRE(store);
    return std::move(*store);
  }

  std::unique_ptr<RegistryStore> OpenMigrated() const {
    auto store = Open();
    auto r = store->Migrate();
    INFO((r ? std::string() : r.error().ToString()));
    REQUIRE(r);
    return store;
  }
};

AgentRecord Agent(const std::string& amid, std::vector<std::string> caps, double reputation = 0.5,
                  UnixNanos last_seen = 1000) {
  AgentRecord a;
  a.amid = amid;
  a.signing_public_key = "ed25519:" + amid;
  a.exchange_public_key = "x25519:" + amid;
  a.capabilities = std::move(caps);
  a.reputation_score = reputation;
  a.last_seen = last_seen;
  a.created_at = 1;
  a.updated_at = 1;
  return a;
}

std::vector<std::string> Amids(const SearchPage& page) {
  std::vector<std::string> out;
  for (const auto& a : page.agents) out.push_back(a.amid);
  return out;
}

SearchPage MustSearch(RegistryStore& store, const std::string& capability, bool prefix,
                      std::uint32_t limit = 100, std::uint64_t offset = 0) {
  SearchFilter f;
  f.capability = capability;
  f.prefix = prefix;
  f.limit = limit;
  f.offset = offset;
  auto page = store.Search(f);
  INFO((page ? std::string() : page.error().ToString()));
  REQUIRE(page);
  return std::move(*page);
}

}  // namespace

TEST_CASE("store: concurrent migrations apply each version once and are idempotent",
          "[registry][store]") {
  StoreDb db;
  auto a = db.Open();
  auto b = db.Open();
  auto before = a->SchemaVersion();
  REQUIRE(before);
  CHECK(*before == 0);
  Result<void> ra, rb;
  std::thread ta([&] { ra = a->Migrate(); });
  std::thread tb([&] { rb = b->Migrate(); });
  ta.join();
  tb.join();
  INFO((ra ? std::string() : ra.error().ToString())
       << (rb ? std::string() : rb.error().ToString()));
  REQUIRE(ra);
  REQUIRE(rb);
  auto va = a->SchemaVersion();
  auto vb = b->SchemaVersion();
  REQUIRE(va);
  REQUIRE(vb);
  CHECK(*va >= 1);
  CHECK(*va == *vb);
  REQUIRE(a->Migrate());
  CHECK(a->SchemaVersion().value_or(-1) == *va);
  // The schema works after the race.
  REQUIRE(a->InsertAgent(Agent("A1", {"x"})));
  auto got = b->GetAgent("A1");
  REQUIRE(got);
  REQUIRE(got->has_value());
  CHECK((*got)->capabilities == std::vector<std::string>{"x"});
}

TEST_CASE("store: prefix search is byte-wise and the order is stable", "[registry][store]") {
  StoreDb db;
  auto store = db.OpenMigrated();
  const std::string max_cp = "\xF4\x8F\xBF\xBF";  // U+10FFFF
  REQUIRE(store->InsertAgent(Agent("a-slash-b", {"a/b"}, 0.5, 10)));
  REQUIRE(store->InsertAgent(Agent("a-slash-e-acute", {"a/\xC3\xA9"}, 0.5, 10)));
  REQUIRE(store->InsertAgent(Agent("a-slash-max", {"a/" + max_cp}, 0.5, 10)));
  REQUIRE(store->InsertAgent(Agent("a-slash-max-max", {"a/" + max_cp + max_cp + "z"}, 0.5, 10)));
  REQUIRE(store->InsertAgent(Agent("a-zero", {"a0"}, 0.5, 10)));
  REQUIRE(store->InsertAgent(Agent("upper", {"A/b"}, 0.5, 10)));
  REQUIRE(store->InsertAgent(Agent("quote", {"a/'; DROP TABLE agents; --"}, 0.5, 10)));
  REQUIRE(store->InsertAgent(Agent("percent", {"a%"}, 0.5, 10)));
  REQUIRE(store->InsertAgent(Agent("underscore", {"a_"}, 0.5, 10)));

  auto slash = MustSearch(*store, "a/", true);
  CHECK(slash.total == 5);
  const auto slash_amids = Amids(slash);
  CHECK(std::set<std::string>(slash_amids.begin(), slash_amids.end()) ==
        std::set<std::string>{"a-slash-b", "a-slash-e-acute", "a-slash-max", "a-slash-max-max",
                              "quote"});
  // LIKE metacharacters are data.
  CHECK(Amids(MustSearch(*store, "a%", true)) == std::vector<std::string>{"percent"});
  CHECK(Amids(MustSearch(*store, "a_", true)) == std::vector<std::string>{"underscore"});
  // A prefix ending in the last code point (no "next" code point to bound it).
  CHECK(MustSearch(*store, "a/" + max_cp, true).total == 2);
  CHECK(Amids(MustSearch(*store, "a/" + max_cp + max_cp, true)) ==
        std::vector<std::string>{"a-slash-max-max"});
  // Not UTF-8 (a truncated sequence): still byte-wise, as SQLite compares.
  CHECK(Amids(MustSearch(*store, "a/\xC3", true)) == std::vector<std::string>{"a-slash-e-acute"});
  CHECK(MustSearch(*store, "a/\xFF", true).total == 0);
  CHECK(MustSearch(*store, "a/\xC3", false).total == 0);
  CHECK(Amids(MustSearch(*store, "a/\xC3\xA9", true)) ==
        std::vector<std::string>{"a-slash-e-acute"});
  CHECK(MustSearch(*store, "", true).total == 9);
  CHECK(MustSearch(*store, "A", true).total == 1);  // case-sensitive
  CHECK(Amids(MustSearch(*store, "a/b", false)) == std::vector<std::string>{"a-slash-b"});
  CHECK(MustSearch(*store, "a/", false).total == 0);

  // Order: reputation DESC, last_seen DESC, then amid in byte order ("B" < "a" < "b").
  REQUIRE(store->InsertAgent(Agent("b", {"order"}, 0.5, 5)));
  REQUIRE(store->InsertAgent(Agent("a", {"order"}, 0.5, 5)));
  REQUIRE(store->InsertAgent(Agent("B", {"order"}, 0.5, 5)));
  REQUIRE(store->InsertAgent(Agent("newer", {"order"}, 0.5, 6)));
  REQUIRE(store->InsertAgent(Agent("best", {"order"}, 0.9, 1)));
  CHECK(Amids(MustSearch(*store, "order", false)) ==
        std::vector<std::string>{"best", "newer", "B", "a", "b"});
  CHECK(Amids(MustSearch(*store, "order", false, 2, 2)) == std::vector<std::string>{"B", "a"});
  auto past_end = MustSearch(*store, "order", false, 2, 10);
  CHECK(past_end.total == 5);
  CHECK(past_end.agents.empty());

  // Revoked agents leave the results and the total.
  RevocationRecord rev{"rev-1", "B", "key_compromise", "B", 7, std::nullopt};
  REQUIRE(store->InsertRevocation(rev));
  CHECK(Amids(MustSearch(*store, "order", false)) ==
        std::vector<std::string>{"best", "newer", "a", "b"});

  // Replacing capabilities replaces what search matches on.
  auto replaced = store->ReplaceCapabilities("a", std::vector<std::string>{"other", "order2"}, 9);
  REQUIRE(replaced);
  CHECK(*replaced);
  CHECK(Amids(MustSearch(*store, "order", false)) ==
        std::vector<std::string>{"best", "newer", "b"});
  CHECK(Amids(MustSearch(*store, "order", true)).size() == 4);
  auto missing = store->ReplaceCapabilities("nobody", std::vector<std::string>{"x"}, 9);
  REQUIRE(missing);
  CHECK_FALSE(*missing);
}

TEST_CASE("store: conflicts, not found and prekey id reuse", "[registry][store]") {
  StoreDb db;
  auto store = db.OpenMigrated();
  REQUIRE(store->InsertAgent(Agent("A1", {"x"})));
  auto dup = store->InsertAgent(Agent("A1", {"y"}));
  REQUIRE_FALSE(dup);
  CHECK(dup.error().code == Code::kConflict);
  // The failed insert changed nothing.
  CHECK(MustSearch(*store, "y", false).total == 0);

  RevocationRecord rev{"rev-1", "nobody", "r", "nobody", 5, std::nullopt};
  auto unknown = store->InsertRevocation(rev);
  REQUIRE_FALSE(unknown);
  CHECK(unknown.error().code == Code::kNotFound);
  rev.amid = "A1";
  REQUIRE(store->InsertRevocation(rev));
  rev.id = "rev-2";
  auto again = store->InsertRevocation(rev);
  REQUIRE_FALSE(again);
  CHECK(again.error().code == Code::kConflict);
  auto got = store->GetRevocation("A1");
  REQUIRE(got);
  REQUIRE(got->has_value());
  CHECK((*got)->id == "rev-1");
  CHECK(store->LastRevocationAt().value_or(std::nullopt) == std::optional<UnixNanos>(5));

  REQUIRE(store->InsertAgent(Agent("A2", {"x"})));
  FeedbackRecord f{"fb-1", "A2", "A1", "s1", 0.8, {"fast"}, "", 10};
  REQUIRE(store->InsertFeedback(f));
  f.id = "fb-2";
  auto fdup = store->InsertFeedback(f);
  REQUIRE_FALSE(fdup);
  CHECK(fdup.error().code == Code::kConflict);
  CHECK(store->CountFeedback("A2").value_or(0) == 1);

  SessionRecord s{"id-1", "sess", "A1", "A2", "chat", "success", std::nullopt, "A1", 3};
  CHECK(store->InsertSession(s).value_or(false));
  CHECK_FALSE(store->InsertSession(s).value_or(true));
  auto counts = store->SessionCountsFor("A2");
  REQUIRE(counts);
  CHECK(counts->total == 1);
  CHECK(counts->successful == 1);

  // One-time prekey ids are never reused; duplicates inside one upload count once.
  SignedPrekeyRecord spk{1, "spk", "sig", 1};
  std::vector<OneTimePrekeyRecord> keys = {{1, "k1"}, {2, "k2"}, {2, "k2bis"}};
  auto stored = store->StorePrekeys("A2", spk, keys);
  REQUIRE(stored);
  CHECK(stored->stored == 2);
  CHECK(stored->ignored == 1);
  CHECK(stored->remaining == 2);
  auto b1 = store->TakeBundle("A2", 20);
  REQUIRE(b1);
  REQUIRE(b1->has_value());
  REQUIRE((*b1)->one_time_prekey.has_value());
  CHECK((*b1)->one_time_prekey->id == 1);
  auto b2 = store->TakeBundle("A2", 21);
  REQUIRE(b2);
  REQUIRE((*b2)->one_time_prekey.has_value());
  CHECK((*b2)->one_time_prekey->public_key == "k2");
  auto b3 = store->TakeBundle("A2", 22);
  REQUIRE(b3);
  REQUIRE(b3->has_value());
  CHECK_FALSE((*b3)->one_time_prekey.has_value());
  auto reupload = store->StorePrekeys("A2", SignedPrekeyRecord{2, "spk2", "sig2", 2},
                                      std::vector<OneTimePrekeyRecord>{{1, "k1"}, {3, "k3"}});
  REQUIRE(reupload);
  CHECK(reupload->stored == 1);
  CHECK(reupload->ignored == 1);
  CHECK(reupload->remaining == 1);
  auto b4 = store->TakeBundle("A2", 23);
  REQUIRE(b4);
  CHECK((*b4)->signed_prekey.id == 2);
  CHECK((*b4)->one_time_prekey.value_or(OneTimePrekeyRecord{}).id == 3);
  // No signed prekey: nothing is served and nothing consumed.
  auto none = store->TakeBundle("A1", 24);
  REQUIRE(none);
  CHECK_FALSE(none->has_value());
}

TEST_CASE("store: a batch commits its writes together, each write atomic and visible to the next",
          "[registry][store]") {
  StoreDb db;
  auto store = db.OpenMigrated();
  REQUIRE(store->InsertAgent(Agent("B0", {"x"})));
  std::vector<Result<void>> inserted;
  bool saw_own_write = false;
  auto batch = store->RunBatch([&] {
    inserted.push_back(store->InsertAgent(Agent("B1", {"x"})));
    inserted.push_back(store->InsertAgent(Agent("B0", {"y"})));  // a conflict in mid-batch
    inserted.push_back(store->InsertAgent(Agent("B2", {"x"})));
    auto got = store->GetAgent("B1");
    saw_own_write = got && got->has_value();
  });
  REQUIRE(batch);
  REQUIRE(inserted.size() == 3);
  CHECK(inserted[0]);
  REQUIRE_FALSE(inserted[1]);
  CHECK(inserted[1].error().code == Code::kConflict);
  CHECK(inserted[2]);
  CHECK(saw_own_write);
  CHECK(MustSearch(*store, "x", false).total == 3);
  CHECK(MustSearch(*store, "y", false).total == 0);  // the failed write left nothing behind
  // Committed: another store instance (another process, a replica) sees it.
  auto other = db.Open();
  auto b2 = other->GetAgent("B2");
  REQUIRE(b2);
  CHECK(b2->has_value());

  if (store->single_writer()) {
    // Until the batch commits, other threads read the state before it, and their writes wait.
    std::atomic<bool> other_wrote{false};
    bool other_saw_b3 = true;
    std::thread writer;
    auto second = store->RunBatch([&] {
      REQUIRE(store->InsertAgent(Agent("B3", {"z"})));
      std::thread([&] {
        auto got = store->GetAgent("B3");
        other_saw_b3 = !got || got->has_value();
      }).join();
      writer = std::thread([&] {
        (void)store->InsertAgent(Agent("B4", {"z"}));
        other_wrote = true;
      });
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      CHECK_FALSE(other_wrote.load());
    });
    writer.join();
    REQUIRE(second);
    CHECK_FALSE(other_saw_b3);
    CHECK(other_wrote.load());
    CHECK(MustSearch(*store, "z", false).total == 2);
  }
}

TEST_CASE("store: the search index of migration 3 is built from the agents already stored",
          "[registry][store]") {
  // A database at schema version 2 (before search_terms), with agents written there, as an
  // upgraded deployment has it; then the store migrates it to the current version.
  StoreDb db;
  constexpr std::string_view kRows = R"sql(
INSERT INTO agents (amid, signing_public_key, exchange_public_key, tier_rank, capabilities,
                    status, reputation_score, last_seen, created_at, updated_at, revoked) VALUES
  ('M1', 's', 'x', 0, '["travel/flights","math"]', 'online', 0.9, 30, 1, 1, 0),
  ('M2', 's', 'x', 1, '["travel/air/cargo"]', 'offline', 0.8, 20, 1, 1, 0),
  ('M3', 's', 'x', 0, '["travel/flights"]', 'online', 0.7, 10, 1, 1, 1);
INSERT INTO agent_capabilities (amid, capability) VALUES
  ('M1', 'travel/flights'), ('M1', 'math'), ('M2', 'travel/air/cargo'), ('M3', 'travel/flights');
)sql";
  if (db.state->backend() == Backend::kPostgres) {
#if AMESH_TEST_HAVE_PG
    auto conn = storage::pg::Connection::Connect(db.url());
    REQUIRE(conn);
    REQUIRE(PostgresMigrations().size() >= 3);
    REQUIRE(conn->Migrate(PostgresMigrations().first(2)));
    REQUIRE(conn->ExecScript(kRows));
#endif
  } else {
    auto conn = storage::Database::Open(db.state->sqlite_path().string());
    REQUIRE(conn);
    REQUIRE(SqliteMigrations().size() >= 3);
    REQUIRE(conn->Migrate(SqliteMigrations().first(2)));
    REQUIRE(conn->Exec(kRows));
  }
  auto store = db.OpenMigrated();
  CHECK(store->SchemaVersion().value_or(0) >= 3);
  if (db.state->backend() == Backend::kSqlite) {
    // Migration 4 dropped agent_capabilities once search_terms held its pairs.
    auto conn = storage::Database::Open(db.state->sqlite_path().string());
    REQUIRE(conn);
    auto table =
        conn->Prepare("SELECT count(*) FROM sqlite_master WHERE name = 'agent_capabilities'");
    REQUIRE(table);
    REQUIRE(table->Step().value_or(false));
    CHECK(table->ColumnInt(0) == 0);
    CHECK(store->SchemaVersion().value_or(0) == static_cast<int>(SqliteMigrations().size()));
  }
  const auto exact = MustSearch(*store, "travel/flights", false);
  CHECK(exact.total == 1);  // M3 is revoked
  CHECK(Amids(exact) == std::vector<std::string>{"M1"});
  const auto travel = MustSearch(*store, "travel/", true);
  CHECK(travel.total == 2);
  CHECK(Amids(travel) == std::vector<std::string>{"M1", "M2"});
  CHECK(Amids(MustSearch(*store, "travel/air/", true)) == std::vector<std::string>{"M2"});
  CHECK(MustSearch(*store, "", true).total == 2);
  CHECK(MustSearch(*store, "math", false).total == 1);
  CHECK(Amids(MustSearch(*store, "trav", true)) == std::vector<std::string>{"M1", "M2"});

  // The migrated rows follow later changes like rows written after the migration.
  REQUIRE(store->ReplaceCapabilities("M1", std::vector<std::string>{"math"}, 40).value_or(false));
  CHECK(MustSearch(*store, "travel/flights", false).total == 0);
  CHECK(Amids(MustSearch(*store, "travel/", true)) == std::vector<std::string>{"M2"});
  RevocationRecord rev{"rev-m2", "M2", "r", "M2", 50, std::nullopt};
  REQUIRE(store->InsertRevocation(rev));
  CHECK(MustSearch(*store, "travel/", true).total == 0);
  CHECK(MustSearch(*store, "", true).total == 1);
}

TEST_CASE("store: PostgreSQL migration 5 keeps the folded counts and pending deltas of 4",
          "[registry][store][postgresql-only]") {
  StoreDb db;
  REQUIRE(db.state->backend() == Backend::kPostgres);
#if AMESH_TEST_HAVE_PG
  auto agent_sql = [](std::string_view amid, std::string_view caps_json, int revoked) {
    return fmt::format(
        "INSERT INTO agents (amid, signing_public_key, exchange_public_key, tier_rank, "
        "capabilities, status, reputation_score, last_seen, created_at, updated_at, revoked) "
        "VALUES ('{0}', 's', 'x', 0, '{1}', 'online', 0.5, 1, 1, 1, {2}); "
        "INSERT INTO agent_capabilities (amid, capability) "
        "SELECT '{0}', x FROM json_array_elements_text('{1}'::json) AS x;",
        amid, caps_json, revoked);
  };
  auto conn = storage::pg::Connection::Connect(db.url());
  REQUIRE(conn);
  REQUIRE(PostgresMigrations().size() >= 5);
  // Agents stored before migration 3 are counted by migration 4 itself; the ones after it are
  // pending deltas until a fold.
  REQUIRE(conn->Migrate(PostgresMigrations().first(2)));
  REQUIRE(
      conn->ExecScript(agent_sql("M1", R"(["x/a","y"])", 0) + agent_sql("M2", R"(["x/a"])", 1)));
  REQUIRE(conn->Migrate(PostgresMigrations().first(4)));
  REQUIRE(conn->ExecScript(agent_sql("M3", R"(["x/a","x/b"])", 0) + agent_sql("M4", R"(["y"])", 0) +
                           "DELETE FROM agents WHERE amid = 'M4';"));
  auto deltas = conn->Exec("SELECT count(*) FROM search_term_deltas");
  REQUIRE(deltas);
  CHECK(deltas->Int(0, 0).value_or(0) > 0);

  auto store = db.OpenMigrated();
  CHECK(store->SchemaVersion().value_or(0) == static_cast<int>(PostgresMigrations().size()));
  CHECK(MustSearch(*store, "x/a", false).total == 2);  // M2 is revoked
  CHECK(MustSearch(*store, "x/", true).total == 2);
  CHECK(MustSearch(*store, "y", false).total == 1);  // M4 is gone
  CHECK(MustSearch(*store, "", true).total == 2);
  auto table = conn->Exec("SELECT to_regclass('search_term_deltas') IS NULL");
  REQUIRE(table);
  CHECK(table->Text(0, 0) == "t");
  // Writes after the migration go on counting.
  REQUIRE(store->InsertAgent(Agent("A5", {"x/b"})));
  CHECK(MustSearch(*store, "x/", true).total == 3);
  CHECK(MustSearch(*store, "", true).total == 3);
#endif
}

TEST_CASE("store: concurrent bundle fetches from several store instances share no prekey",
          "[registry][store]") {
  StoreDb db;
  // On PostgreSQL two instances act as two registry replicas on one database.
  const int instances = db.state->backend() == Backend::kPostgres ? 2 : 1;
  std::vector<std::unique_ptr<RegistryStore>> stores;
  for (int i = 0; i < instances; ++i) stores.push_back(db.OpenMigrated());
  REQUIRE(stores[0]->InsertAgent(Agent("A1", {})));
  constexpr std::uint32_t kKeys = 200;
  std::vector<OneTimePrekeyRecord> keys;
  for (std::uint32_t id = 1; id <= kKeys; ++id) keys.push_back({id, "k" + std::to_string(id)});
  REQUIRE(stores[0]->StorePrekeys("A1", SignedPrekeyRecord{1, "spk", "sig", 1}, keys));

  constexpr int kThreads = 8;
  constexpr int kPerThread = 30;  // 240 fetches for 200 keys
  std::mutex mu;
  std::vector<std::uint32_t> ids;
  std::atomic<int> errors{0};
  std::atomic<int> without{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      RegistryStore& store = *stores[static_cast<std::size_t>(t % instances)];
      for (int i = 0; i < kPerThread; ++i) {
        auto bundle = store.TakeBundle("A1", 100 + i);
        if (!bundle || !bundle->has_value()) {
          ++errors;
          continue;
        }
        if (!(*bundle)->one_time_prekey) {
          ++without;
          continue;
        }
        std::lock_guard lock(mu);
        ids.push_back((*bundle)->one_time_prekey->id);
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors == 0);
  CHECK(ids.size() == kKeys);
  CHECK(without == kThreads * kPerThread - static_cast<int>(kKeys));
  const std::set<std::uint32_t> unique(ids.begin(), ids.end());
  CHECK(unique.size() == ids.size());
  CHECK(stores[0]->CountOneTimePrekeys("A1").value_or(99) == 0);
}

TEST_CASE("store: an unreachable PostgreSQL server is kUnavailable, a bad URL kInvalidArgument",
          "[registry][store]") {
  // Port 1 on loopback: nothing listens there (connection refused).
  auto store = OpenStore("postgresql://postgres@127.0.0.1:1/x?connect_timeout=5");
  REQUIRE_FALSE(store);
  INFO(store.error().ToString());
  CHECK(store.error().code == Code::kUnavailable);
  auto bad = OpenStore("postgresql://[::1");
  REQUIRE_FALSE(bad);
  INFO(bad.error().ToString());
  CHECK((bad.error().code == Code::kInvalidArgument || bad.error().code == Code::kUnavailable));
}

TEST_CASE("registry: a registry killed with SIGKILL restarts on the same database and state",
          "[registry][store]") {
  Registry reg;
  TestAgent a(1);
  TestAgent b(2);
  REQUIRE(reg.Register(a, {"travel/flights"}).status == 201);
  REQUIRE(reg.Post("/v1/registry/prekeys", a.PrekeyBody(1, 1, 3)).status == 200);
  auto first = reg.Get("/v1/registry/prekeys/" + a.amid);
  REQUIRE(first.status == 200);
  CHECK(first.Json()["one_time_prekey"]["id"] == 1);
  const std::string root_key = reg.Get("/v1/registry/root-key").Json()["public_key"];

  reg.Restart(/*kill=*/true);
  // Everything committed before the kill is there: the agent, its capability index, the
  // consumed prekey stays consumed, and the root key is the same.
  auto lookup = reg.Lookup(a.amid);
  INFO(reg.log());
  REQUIRE(lookup.status == 200);
  CHECK(lookup.Json()["one_time_prekeys_remaining"] == 2);
  CHECK(AmidsOf(reg.Search("capability=travel/*").Json()["results"]) ==
        std::set<std::string>{a.amid});
  CHECK(reg.Get("/v1/registry/prekeys/" + a.amid).Json()["one_time_prekey"]["id"] == 2);
  CHECK(reg.Get("/v1/registry/root-key").Json()["public_key"] == root_key);
  CHECK(reg.Register(a).status == 409);
  REQUIRE(reg.Register(b).status == 201);

  // A clean stop and a second registry process built from the same state see it all too.
  auto state = reg.state();
  reg.Restart(/*kill=*/false);
  CHECK(reg.Lookup(b.amid).status == 200);
  if (state->backend() == Backend::kSqlite) {
    CHECK(std::filesystem::exists(state->sqlite_path()));
  } else {
    // PostgreSQL keeps the data in the database, not in the state directory.
    CHECK_FALSE(std::filesystem::exists(state->sqlite_path()));
  }
}

TEST_CASE("store: database URLs are redacted for logs", "[registry][store]") {
  CHECK(RedactDatabaseUrl("postgresql://reg:s3cr%40t@db.example:5432/amesh") ==
        "postgresql://reg:***@db.example:5432/amesh");
  CHECK(RedactDatabaseUrl("postgres://reg@db/amesh?password=x&sslmode=require") ==
        "postgres://reg@db/amesh?password=***&sslmode=require");
  CHECK(RedactDatabaseUrl("postgresql://db.example/amesh") == "postgresql://db.example/amesh");
  CHECK(RedactDatabaseUrl("postgresql:///amesh?host=/run/postgresql") ==
        "postgresql:///amesh?host=/run/postgresql");
  CHECK(RedactDatabaseUrl("host=db password=secret dbname=x") == "host=db password=*** dbname=x");
  CHECK(RedactDatabaseUrl("sqlite:/var/lib/amesh-registry/registry.db") ==
        "sqlite:/var/lib/amesh-registry/registry.db");
}

TEST_CASE("store: search totals are exact before and after the counts are folded",
          "[registry][store]") {
  StoreDb db;
  auto store = db.OpenMigrated();
  // PostgreSQL (migration 5): count rows kept by server backends other than the fold's shard 0,
  // and those of backends that have ended; 0 on SQLite, whose counts are kept in one row.
  auto shard_rows = [&](bool ended_only) -> std::int64_t {
#if AMESH_TEST_HAVE_PG
    if (db.state->backend() == Backend::kPostgres) {
      auto conn = storage::pg::Connection::Connect(db.url());
      REQUIRE(conn);
      auto rows = conn->Exec(
          ended_only ? "SELECT count(*) FROM search_term_counts WHERE shard <> 0 AND shard NOT IN "
                       "(SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)"
                     : "SELECT count(*) FROM search_term_counts WHERE shard <> 0");
      REQUIRE(rows);
      return rows->Int(0, 0).value_or(-1);
    }
#endif
    (void)ended_only;
    return 0;
  };
  auto totals = [&] {
    return std::vector<std::uint64_t>{
        MustSearch(*store, "x/a", false).total, MustSearch(*store, "x/", true).total,
        MustSearch(*store, "", true).total,     MustSearch(*store, "y", false).total,
        MustSearch(*store, "z", false).total,   MustSearch(*store, "x", true).total};
  };
  REQUIRE(store->InsertAgent(Agent("A1", {"x/a", "y"})));
  {
    // Another store (its own connections, as another replica) writes, then goes away.
    auto other = db.Open();
    REQUIRE(other->InsertAgent(Agent("A2", {"x/a"})));
  }
  REQUIRE(store->InsertAgent(Agent("A3", {"x/b"})));
  const std::vector<std::uint64_t> three = {2, 3, 3, 1, 0, 3};
  CHECK(totals() == three);
  const bool pg = db.state->backend() == Backend::kPostgres;
  if (pg) CHECK(shard_rows(false) > 0);
  // The other store's backend ends shortly after its connection closes: its rows are then the
  // ended ones, which a fold moves, and never the rows of live backends (this store's).
  if (pg) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (shard_rows(true) == 0 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    CHECK(shard_rows(true) > 0);
  }
  REQUIRE(store->FoldCounts());
  CHECK(shard_rows(true) == 0);
  if (pg) CHECK(shard_rows(false) > 0);  // this store's own rows stay
  CHECK(totals() == three);

  // Revocation, a capability change and a presence update, each before and after a fold.
  REQUIRE(store->InsertRevocation(RevocationRecord{"rev-a2", "A2", "r", "A2", 50, std::nullopt}));
  const std::vector<std::uint64_t> revoked = {1, 2, 2, 1, 0, 2};
  CHECK(totals() == revoked);
  REQUIRE(store->ReplaceCapabilities("A1", std::vector<std::string>{"z"}, 60).value_or(false));
  REQUIRE(store->UpdatePresence("A3", Presence::kOnline, 70).value_or(false));
  const std::vector<std::uint64_t> replaced = {0, 1, 2, 0, 1, 1};
  CHECK(totals() == replaced);
  REQUIRE(store->FoldCounts());
  REQUIRE(store->FoldCounts());  // nothing left to fold: no change
  CHECK(totals() == replaced);

  // A filtered search counts its matches; it agrees with the unfiltered total where it must.
  SearchFilter online;
  online.capability = "";
  online.prefix = true;
  online.status = Presence::kOnline;
  auto page = store->Search(online);
  REQUIRE(page);
  CHECK(page->total == 1);
  CHECK(Amids(*page) == std::vector<std::string>{"A3"});
}
