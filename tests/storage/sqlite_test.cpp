#include <sys/stat.h>
#include <unistd.h>

#include <sqlite3.h>
#include <array>
#include <catch2/catch.hpp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include "agentmesh/storage/sqlite.hpp"

using namespace agentmesh;
using namespace agentmesh::storage;

namespace {

struct TempDir {
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "amesh-sqlite-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::filesystem::path path;
};

constexpr std::array<std::string_view, 2> kMigrations = {
    "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, blob BLOB)",
    "ALTER TABLE items ADD COLUMN score REAL",
};

}  // namespace

TEST_CASE("database files are created 0600 in WAL mode and migrate once", "[sqlite]") {
  TempDir dir;
  const std::string path = (dir.path / "t.db").string();
  {
    auto db = Database::Open(path);
    REQUIRE(db);
    REQUIRE(db->Migrate(kMigrations));
    CHECK(*db->UserVersion() == 2);
    auto mode = db->Prepare("PRAGMA journal_mode");
    REQUIRE(mode);
    REQUIRE(*mode->Step());
    CHECK(mode->ColumnText(0) == "wal");
  }
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  // Re-opening and migrating again is a no-op.
  auto db = Database::Open(path);
  REQUIRE(db);
  REQUIRE(db->Migrate(kMigrations));
  CHECK(*db->UserVersion() == 2);
  // A newer schema than the program knows is refused.
  REQUIRE(db->Exec("PRAGMA user_version=7"));
  auto r = db->Migrate(kMigrations);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Code::kCorrupt);
}

TEST_CASE("statements bind, step and map constraint errors", "[sqlite]") {
  auto db = Database::Open(":memory:");
  REQUIRE(db);
  REQUIRE(db->Migrate(kMigrations));
  auto insert = db->Prepare("INSERT INTO items(name, blob, score) VALUES (?1, ?2, ?3)");
  REQUIRE(insert);
  const Bytes blob = {1, 2, 0, 3};
  REQUIRE(insert->Bind(1, std::string_view("a")).BindBlob(2, blob).Bind(3, 0.5).Run());
  insert->Reset();
  auto dup = insert->Bind(1, std::string_view("a")).BindNull(2).BindNull(3).Run();
  REQUIRE_FALSE(dup);
  CHECK(dup.error().code == Code::kConflict);
  insert->Reset();
  REQUIRE(
      insert->Bind(1, std::string_view("it's; DROP TABLE items; --")).BindNull(2).Bind(3, 1).Run());

  auto select = db->Prepare("SELECT name, blob, score FROM items ORDER BY id");
  REQUIRE(select);
  REQUIRE(*select->Step());
  CHECK(select->ColumnText(0) == "a");
  CHECK(Bytes(select->ColumnBlob(1).begin(), select->ColumnBlob(1).end()) == blob);
  CHECK(select->ColumnDouble(2) == 0.5);
  REQUIRE(*select->Step());
  CHECK(select->ColumnText(0) == "it's; DROP TABLE items; --");
  CHECK(select->ColumnIsNull(1));
  CHECK_FALSE(*select->Step());
  CHECK_FALSE(db->Prepare("SELEC nonsense"));
}

TEST_CASE("transactions roll back unless committed", "[sqlite]") {
  auto db = Database::Open(":memory:");
  REQUIRE(db);
  REQUIRE(db->Migrate(kMigrations));
  {
    Transaction tx(*db);
    REQUIRE(tx.status());
    REQUIRE(db->Exec("INSERT INTO items(name) VALUES ('rolled back')"));
  }
  {
    Transaction tx(*db);
    REQUIRE(db->Exec("INSERT INTO items(name) VALUES ('kept')"));
    REQUIRE(tx.Commit());
    CHECK_FALSE(tx.Commit());
  }
  auto count = db->Prepare("SELECT count(*), min(name) FROM items");
  REQUIRE(*count->Step());
  CHECK(count->ColumnInt(0) == 1);
  CHECK(count->ColumnText(1) == "kept");
}

TEST_CASE("a transaction inside an open one is a savepoint of it", "[sqlite]") {
  auto db = Database::Open(":memory:");
  REQUIRE(db);
  REQUIRE(db->Migrate(kMigrations));
  const auto names = [&] {
    std::string out;
    auto q = db->Prepare("SELECT name FROM items ORDER BY id");
    REQUIRE(q);
    while (*q->Step()) out += std::string(q->ColumnText(0)) + ",";
    return out;
  };
  REQUIRE(db->Exec("BEGIN IMMEDIATE"));
  {
    Transaction inner(*db);
    REQUIRE(inner.status());
    REQUIRE(db->Exec("INSERT INTO items(name) VALUES ('a')"));
    REQUIRE(inner.Commit());
  }
  {
    Transaction inner(*db);  // dropped: only its own insert goes
    REQUIRE(inner.status());
    REQUIRE(db->Exec("INSERT INTO items(name) VALUES ('b')"));
  }
  {
    Transaction inner(*db);
    REQUIRE(db->Exec("INSERT INTO items(name) VALUES ('c')"));
    // A constraint error inside the savepoint leaves the outer transaction usable.
    CHECK_FALSE(db->Exec("INSERT INTO items(name) VALUES ('a')"));
    REQUIRE(inner.Commit());
  }
  CHECK(names() == "a,c,");
  CHECK(sqlite3_get_autocommit(db->raw()) == 0);  // still inside the outer transaction
  REQUIRE(db->Exec("ROLLBACK"));
  CHECK(names().empty());  // the outer rollback takes the released savepoints with it

  REQUIRE(db->Exec("BEGIN IMMEDIATE"));
  {
    Transaction inner(*db);
    REQUIRE(db->Exec("INSERT INTO items(name) VALUES ('d')"));
    REQUIRE(inner.Commit());
  }
  REQUIRE(db->Exec("COMMIT"));
  CHECK(names() == "d,");
}

TEST_CASE("a file that is not a database is reported as corrupt", "[sqlite]") {
  TempDir dir;
  const std::string path = (dir.path / "junk.db").string();
  std::ofstream(path) << std::string(8192, 'x');
  auto db = Database::Open(path);
  REQUIRE_FALSE(db);
  CHECK(db.error().code == Code::kCorrupt);
  auto missing = Database::Open((dir.path / "no" / "such" / "dir.db").string());
  REQUIRE_FALSE(missing);
  CHECK(missing.error().code == Code::kIo);
}
