// Tests of the libpq wrapper (agentmesh_pg) against a real PostgreSQL server started in a temp dir
// once per test process, with a fresh database per test run (tests/support/postgres_server.hpp).
// Without the server binaries every case warns "SKIPPED: …" and passes.
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agentmesh/storage/postgres.hpp"
#include "postgres_server.hpp"

using namespace agentmesh;
using namespace agentmesh::storage;
using agentmesh::testing::TestPostgres;

// Gives the current test an empty database on this process's PostgreSQL server (started on first
// use), or skips the test when PostgreSQL is not installed.
#define POSTGRES_DATABASE_OR_SKIP(conninfo)                               \
  if (!TestPostgres::Shared().Available()) {                              \
    WARN("SKIPPED (no PostgreSQL): " << TestPostgres::Shared().reason()); \
    return;                                                               \
  }                                                                       \
  const std::string conninfo = TestPostgres::Shared().NewDatabase();      \
  {                                                                       \
    INFO(TestPostgres::Shared().reason());                                \
    REQUIRE_FALSE(conninfo.empty());                                      \
  }

namespace {

pg::Connection MustConnect(const std::string& conninfo) {
  auto conn = pg::Connection::Connect(conninfo);
  INFO((conn ? std::string() : conn.error().ToString()));
  REQUIRE(conn);
  return std::move(*conn);
}

pg::Rows MustExec(pg::Connection& conn, std::string_view sql,
                  std::initializer_list<pg::Param> params = {}) {
  auto rows = conn.Exec(sql, params);
  INFO(sql);
  INFO((rows ? std::string() : rows.error().ToString()));
  REQUIRE(rows);
  return std::move(*rows);
}

constexpr std::array<std::string_view, 2> kMigrations = {
    "CREATE TABLE items (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE, data bytea);"
    "CREATE INDEX items_data ON items (data)",
    "ALTER TABLE items ADD COLUMN score double precision",
};

}  // namespace

TEST_CASE("connecting to nothing is kUnavailable and a bad conninfo is kInvalidArgument", "[pg]") {
  const int port = agentmesh::testing::FreeLoopbackPort();
  auto refused = pg::Connection::Connect("host=127.0.0.1 port=" + std::to_string(port) +
                                         " user=postgres dbname=postgres connect_timeout=2");
  REQUIRE_FALSE(refused);
  CHECK(refused.error().code == Code::kUnavailable);

  auto no_socket = pg::Connection::Connect("host=/nonexistent-amesh-dir port=5 user=x");
  REQUIRE_FALSE(no_socket);
  CHECK(no_socket.error().code == Code::kUnavailable);

  auto bad = pg::Connection::Connect("host=127.0.0.1 no_such_option=1");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().code == Code::kInvalidArgument);
  auto bad_uri = pg::Connection::Connect("postgresql://[::1");
  REQUIRE_FALSE(bad_uri);
  CHECK(bad_uri.error().code == Code::kInvalidArgument);
}

TEST_CASE("bound parameters carry SQL metacharacters verbatim", "[pg]") {
  POSTGRES_DATABASE_OR_SKIP(db);
  auto conn = MustConnect(db);
  REQUIRE(conn.Migrate(kMigrations));

  const std::vector<std::string> nasty = {
      "Robert'); DROP TABLE items; --",
      "' OR '1'='1",
      "\"quoted\" \\backslash\\ $1 $$dollar$$ E'\\x00'",
      "semi;colon\nnew line\ttab",
      "percent % underscore _ star *",
      "unicode: é ü 日本 🚀",
      "$2",
      "",
  };
  for (const auto& name : nasty) {
    auto rows = MustExec(conn, "INSERT INTO items (name) VALUES ($1) RETURNING id, name", {name});
    REQUIRE(rows.size() == 1);
    CHECK(rows.Text(0, 1) == name);
  }
  // The table survived, every value is stored exactly once and is found by equality.
  auto count = MustExec(conn, "SELECT count(*) FROM items");
  CHECK(*count.Int(0, 0) == static_cast<std::int64_t>(nasty.size()));
  for (const auto& name : nasty) {
    auto rows = MustExec(conn, "SELECT name FROM items WHERE name = $1", {name});
    REQUIRE(rows.size() == 1);
    CHECK(rows.Text(0, 0) == name);
  }
  // Quoting characters did not end the literal: a classic injection matches nothing.
  auto injected = MustExec(conn, "SELECT count(*) FROM items WHERE name = $1", {"x' OR 'a'='a"});
  CHECK(*injected.Int(0, 0) == 0);

  SECTION("a NUL byte cannot travel as a text parameter") {
    auto r = conn.Exec("SELECT $1::text", {std::string_view("a\0b", 3)});
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
  SECTION("two statements in Exec are refused, not run") {
    auto r = conn.Exec("SELECT 1; DROP TABLE items");
    REQUIRE_FALSE(r);
    auto still = MustExec(conn, "SELECT count(*) FROM items");
    CHECK(*still.Int(0, 0) == static_cast<std::int64_t>(nasty.size()));
  }
}

TEST_CASE("NULL, integers, booleans, doubles and bytea round-trip", "[pg]") {
  POSTGRES_DATABASE_OR_SKIP(db);
  auto conn = MustConnect(db);
  const Bytes blob = {0x00, 0x01, 0x27, 0x5c, 0xff, 0x00};
  auto rows = MustExec(conn,
                       "SELECT $1::bigint AS big, $2::integer AS small, $3::boolean AS yes, "
                       "$4::double precision AS d, $5::bytea AS blob, $6::text AS nothing, "
                       "$7::text AS maybe",
                       {std::int64_t{-9007199254740993}, 42, true, 0.1, pg::Param::Bytea(blob),
                        nullptr, std::optional<std::string>("set")});
  REQUIRE(rows.size() == 1);
  CHECK(rows.columns() == 7);
  CHECK(*rows.Int(0, rows.ColumnIndex("big")) == -9007199254740993);
  CHECK(*rows.Int(0, rows.ColumnIndex("small")) == 42);
  CHECK(*rows.Bool(0, rows.ColumnIndex("yes")) == true);
  CHECK(rows.Text(0, rows.ColumnIndex("d")) == "0.1");
  CHECK(*rows.Bytea(0, rows.ColumnIndex("blob")) == blob);
  CHECK(rows.IsNull(0, rows.ColumnIndex("nothing")));
  CHECK(rows.Text(0, rows.ColumnIndex("maybe")) == "set");
  CHECK(rows.ColumnIndex("absent") == -1);
  CHECK(rows.IsNull(5, 0));  // out of range reads as NULL

  auto not_int = rows.Int(0, rows.ColumnIndex("maybe"));
  REQUIRE_FALSE(not_int);
  CHECK(not_int.error().code == Code::kCorrupt);
  auto null_int = rows.Int(0, rows.ColumnIndex("nothing"));
  REQUIRE_FALSE(null_int);
  CHECK(null_int.error().code == Code::kCorrupt);

  auto bad_input = conn.Exec("SELECT $1::integer", {"12abc"});
  REQUIRE_FALSE(bad_input);
  CHECK(bad_input.error().code == Code::kInvalidArgument);
  CHECK(bad_input.error().message.find("22P02") != std::string::npos);
}

TEST_CASE("transactions roll back unless committed", "[pg]") {
  POSTGRES_DATABASE_OR_SKIP(db);
  auto conn = MustConnect(db);
  auto other = MustConnect(db);
  REQUIRE(conn.Migrate(kMigrations));

  {
    pg::Transaction tx(conn);
    REQUIRE(tx.status());
    MustExec(conn, "INSERT INTO items (name) VALUES ($1)", {"rolled back"});
    // Not visible to another session before commit.
    CHECK(*MustExec(other, "SELECT count(*) FROM items").Int(0, 0) == 0);
  }  // destructor rolls back
  CHECK(*MustExec(conn, "SELECT count(*) FROM items").Int(0, 0) == 0);

  {
    pg::Transaction tx(conn);
    REQUIRE(tx.status());
    MustExec(conn, "INSERT INTO items (name) VALUES ($1)", {"kept"});
    REQUIRE(tx.Commit());
    auto again = tx.Commit();
    REQUIRE_FALSE(again);
    CHECK(again.error().code == Code::kInternal);
  }
  CHECK(*MustExec(other, "SELECT count(*) FROM items").Int(0, 0) == 1);

  {
    pg::Transaction tx(conn);
    MustExec(conn, "INSERT INTO items (name) VALUES ($1)", {"explicit rollback"});
    REQUIRE(tx.Rollback());
  }
  CHECK(*MustExec(conn, "SELECT count(*) FROM items").Int(0, 0) == 1);

  SECTION("a failed statement aborts the transaction and Commit reports it") {
    pg::Transaction tx(conn);
    MustExec(conn, "INSERT INTO items (name) VALUES ($1)", {"before the error"});
    auto dup = conn.Exec("INSERT INTO items (name) VALUES ($1)", {"kept"});
    REQUIRE_FALSE(dup);
    CHECK(dup.error().code == Code::kConflict);
    auto after = conn.Exec("SELECT 1");
    REQUIRE_FALSE(after);  // 25P02: in failed transaction
    auto commit = tx.Commit();
    REQUIRE_FALSE(commit);
    CHECK(commit.error().code == Code::kConflict);
    // Rolled back: the first insert is gone and the connection is usable again.
    CHECK(*MustExec(conn, "SELECT count(*) FROM items").Int(0, 0) == 1);
  }
  SECTION("serializable isolation reports a write skew as kUnavailable (retry)") {
    pg::Transaction a(conn, pg::Isolation::kSerializable);
    pg::Transaction b(other, pg::Isolation::kSerializable);
    REQUIRE(a.status());
    REQUIRE(b.status());
    CHECK(*MustExec(conn, "SELECT count(*) FROM items").Int(0, 0) == 1);
    CHECK(*MustExec(other, "SELECT count(*) FROM items").Int(0, 0) == 1);
    MustExec(conn, "INSERT INTO items (name) VALUES ('from a')");
    MustExec(other, "INSERT INTO items (name) VALUES ('from b')");
    REQUIRE(a.Commit());
    auto r = b.Commit();
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kUnavailable);
    CHECK(r.error().message.find("40001") != std::string::npos);
  }
}

TEST_CASE("migrations apply once, are idempotent and refuse a newer schema", "[pg]") {
  POSTGRES_DATABASE_OR_SKIP(db);
  auto conn = MustConnect(db);
  CHECK(*conn.SchemaVersion() == 0);
  REQUIRE(conn.Migrate(std::span(kMigrations).first(1)));
  CHECK(*conn.SchemaVersion() == 1);
  REQUIRE(conn.Migrate(kMigrations));
  CHECK(*conn.SchemaVersion() == 2);
  REQUIRE(conn.Migrate(kMigrations));  // no-op
  CHECK(*conn.SchemaVersion() == 2);
  MustExec(conn, "INSERT INTO items (name, score) VALUES ('x', 1.5)");

  SECTION("a failing migration leaves the previous version and no partial change") {
    const std::array<std::string_view, 4> broken = {
        kMigrations[0], kMigrations[1],
        "CREATE TABLE half_done (id integer); INSERT INTO no_such_table VALUES (1)",
        "CREATE TABLE never (id integer)"};
    auto r = conn.Migrate(broken);
    REQUIRE_FALSE(r);
    CHECK(r.error().message.find("migration 3") != std::string::npos);
    CHECK(*conn.SchemaVersion() == 2);
    auto table = MustExec(conn, "SELECT to_regclass('half_done') IS NULL");
    CHECK(*table.Bool(0, 0));
  }
  SECTION("a schema newer than the program is kCorrupt") {
    auto r = conn.Migrate(std::span(kMigrations).first(1));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kCorrupt);
  }
}

TEST_CASE("concurrent migrations from several connections apply each step once", "[pg]") {
  POSTGRES_DATABASE_OR_SKIP(db);
  constexpr int kThreads = 4;
  const std::array<std::string_view, 3> migrations = {
      "CREATE TABLE counter (n integer NOT NULL); INSERT INTO counter VALUES (0)",
      "UPDATE counter SET n = n + 1",
      "UPDATE counter SET n = n + 10",
  };
  std::vector<pg::Connection> conns;
  for (int i = 0; i < kThreads; ++i) conns.push_back(MustConnect(db));
  std::vector<Result<void>> results(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] { results[i] = conns[i].Migrate(migrations); });
  }
  for (auto& t : threads) t.join();
  for (const auto& r : results) {
    INFO((r ? std::string() : r.error().ToString()));
    CHECK(r);
  }
  CHECK(*MustExec(conns[0], "SELECT n FROM counter").Int(0, 0) == 11);
  CHECK(*conns[0].SchemaVersion() == 3);
}

TEST_CASE("constraint violations map to kConflict and program errors to kInternal", "[pg]") {
  POSTGRES_DATABASE_OR_SKIP(db);
  auto conn = MustConnect(db);
  REQUIRE(conn.Migrate(kMigrations));
  MustExec(conn, "INSERT INTO items (name) VALUES ($1)", {"unique"});

  auto dup = conn.Exec("INSERT INTO items (name) VALUES ($1)", {"unique"});
  REQUIRE_FALSE(dup);
  CHECK(dup.error().code == Code::kConflict);
  CHECK(dup.error().message.find("23505") != std::string::npos);

  auto not_null = conn.Exec("INSERT INTO items (name) VALUES ($1)", {nullptr});
  REQUIRE_FALSE(not_null);
  CHECK(not_null.error().code == Code::kConflict);

  auto syntax = conn.Exec("SELEC 1");
  REQUIRE_FALSE(syntax);
  CHECK(syntax.error().code == Code::kInternal);
  auto missing = conn.Exec("SELECT * FROM no_such_table");
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Code::kInternal);

  // ON CONFLICT is the non-error way to express "insert if absent".
  auto upsert = MustExec(conn, "INSERT INTO items (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                         {"unique"});
  CHECK(upsert.affected() == 0);
}

TEST_CASE("consuming one row at a time from 4 threads never hands out a row twice", "[pg]") {
  POSTGRES_DATABASE_OR_SKIP(db);
  constexpr int kThreads = 4;
  constexpr int kRows = 400;
  auto setup = MustConnect(db);
  const std::array<std::string_view, 1> schema = {
      "CREATE TABLE one_time_prekeys (id bigserial PRIMARY KEY, amid text NOT NULL,"
      " prekey_id integer NOT NULL, consumed boolean NOT NULL DEFAULT false,"
      " UNIQUE (amid, prekey_id))"};
  REQUIRE(setup.Migrate(schema));
  MustExec(setup,
           "INSERT INTO one_time_prekeys (amid, prekey_id)"
           " SELECT $1, g FROM generate_series(1, $2::integer) AS g",
           {"agent'1", kRows});

  // The pattern the registry uses for one-time prekeys: lock one unconsumed row, skipping rows
  // other sessions hold, and mark it consumed in the same statement.
  constexpr std::string_view kConsume =
      "UPDATE one_time_prekeys SET consumed = true WHERE id = ("
      " SELECT id FROM one_time_prekeys WHERE amid = $1 AND NOT consumed"
      " ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)"
      " RETURNING prekey_id";

  std::mutex mu;
  std::vector<std::int64_t> taken;
  std::atomic<int> errors{0};
  std::atomic<int> empty_answers{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      auto conn = pg::Connection::Connect(db);
      if (!conn) {
        ++errors;
        return;
      }
      std::vector<std::int64_t> mine;
      while (true) {
        auto rows = conn->Exec(kConsume, {"agent'1"});
        if (!rows) {
          ++errors;
          return;
        }
        if (rows->empty()) {
          ++empty_answers;
          break;
        }
        auto id = rows->Int(0, 0);
        if (!id) {
          ++errors;
          return;
        }
        mine.push_back(*id);
      }
      std::lock_guard lock(mu);
      taken.insert(taken.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : threads) t.join();
  CHECK(errors == 0);
  CHECK(empty_answers == kThreads);
  CHECK(taken.size() == static_cast<std::size_t>(kRows));
  const std::set<std::int64_t> unique(taken.begin(), taken.end());
  CHECK(unique.size() == taken.size());
  CHECK(*MustExec(setup, "SELECT count(*) FROM one_time_prekeys WHERE NOT consumed").Int(0, 0) ==
        0);
}

TEST_CASE("a connection killed by the server reports kUnavailable and can be reset", "[pg]") {
  // Its own server, because this test stops it.
  TestPostgres server;
  if (!server.Available()) {
    WARN("SKIPPED (no PostgreSQL): " << server.reason());
    return;
  }
  {
    const bool started = server.Start();
    INFO(server.reason());
    REQUIRE(started);
  }
  auto conn = MustConnect(server.conninfo());
  auto admin = MustConnect(server.uri());  // TCP this time
  CHECK(conn.ok());
  const int pid = conn.backend_pid();
  REQUIRE(pid > 0);
  MustExec(admin, "SELECT pg_terminate_backend($1::integer)", {pid});
  auto r = conn.Exec("SELECT 1");
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Code::kUnavailable);
  CHECK_FALSE(conn.ok());
  REQUIRE(conn.Reset());
  CHECK(conn.ok());
  CHECK(*MustExec(conn, "SELECT 7").Int(0, 0) == 7);

  server.Stop();
  auto down = conn.Exec("SELECT 1");
  REQUIRE_FALSE(down);
  CHECK(down.error().code == Code::kUnavailable);
}

TEST_CASE("prepared statements are reused, survive a rollback and are re-prepared when dropped",
          "[pg]") {
  POSTGRES_DATABASE_OR_SKIP(db);
  auto conn = MustConnect(db);
  MustExec(conn, "CREATE TABLE kv (k text PRIMARY KEY, v bigint NOT NULL)");
  constexpr std::string_view kPut =
      "INSERT INTO kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v";
  constexpr std::string_view kGet = "SELECT v FROM kv WHERE k = $1";
  auto prepared_count = [&] {
    return *MustExec(conn, "SELECT count(*) FROM pg_prepared_statements").Int(0, 0);
  };
  for (int i = 0; i < 10; ++i) REQUIRE(conn.ExecPrepared(kPut, {"a'; --", i}));
  auto got = conn.ExecPrepared(kGet, {"a'; --"});
  REQUIRE(got);
  CHECK(*got->Int(0, 0) == 9);
  CHECK(prepared_count() == 2);  // one per SQL text, however often it ran

  {
    pg::Transaction tx(conn);
    REQUIRE(tx.status());
    REQUIRE(conn.ExecPrepared(kPut, {"b", 1}));
    // A failing prepared statement aborts the transaction like any other.
    auto bad = conn.ExecPrepared("SELECT 1 / $1::integer", {0});
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == Code::kInvalidArgument);
  }  // rolled back
  CHECK(conn.ExecPrepared(kGet, {"b"})->empty());
  CHECK(prepared_count() == 3);  // statements are not transactional

  // A pooler's DISCARD ALL (or DEALLOCATE) drops them on the server: prepared again once.
  MustExec(conn, "DEALLOCATE ALL");
  CHECK(prepared_count() == 0);
  auto again = conn.ExecPrepared(kGet, {"a'; --"});
  INFO((again ? std::string() : again.error().ToString()));
  REQUIRE(again);
  CHECK(*again->Int(0, 0) == 9);

  // Parameters are still checked.
  auto nul = conn.ExecPrepared(kGet, {std::string_view("x\0y", 3)});
  REQUIRE_FALSE(nul);
  CHECK(nul.error().code == Code::kInvalidArgument);

  // After a reset (a new session), statements are prepared again.
  REQUIRE(conn.Reset());
  auto after = conn.ExecPrepared(kGet, {"a'; --"});
  REQUIRE(after);
  CHECK(*after->Int(0, 0) == 9);
}
