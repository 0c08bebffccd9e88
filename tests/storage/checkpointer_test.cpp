#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <thread>

#include "agentmesh/storage/checkpointer.hpp"
#include "agentmesh/storage/sqlite.hpp"

using namespace agentmesh;
using namespace agentmesh::storage;

namespace {

struct TempDir {
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "amesh-ckpt-XXXXXX").string();
    REQUIRE(::mkdtemp(pattern.data()) != nullptr);
    path = pattern;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
  std::filesystem::path path;
};

// One transaction per row, each row about a page, so every commit appends a few WAL frames.
void WriteRows(Database& db, int from, int count) {
  auto insert = db.Prepare("INSERT INTO items (id, body) VALUES (?1, ?2)");
  REQUIRE(insert);
  for (int i = from; i < from + count; ++i) {
    insert->Bind(1, i).Bind(2, std::string(3000, static_cast<char>('a' + i % 26)));
    REQUIRE(insert->Run());
    insert->Reset();
  }
}

std::int64_t CountRows(const std::string& path) {
  auto reader = Database::Open(path);
  REQUIRE(reader);
  auto count = reader->Prepare("SELECT count(*) FROM items");
  REQUIRE(count);
  REQUIRE(count->Step().value_or(false));
  return count->ColumnInt(0);
}

// The main database file only grows when a checkpoint copies pages into it.
std::uintmax_t MainFileSize(const std::string& path) { return std::filesystem::file_size(path); }

// A database with an empty `items` table, its WAL copied back and truncated.
Database EmptyDatabase(const std::string& path) {
  auto writer = Database::Open(path);
  REQUIRE(writer);
  REQUIRE(writer->Exec("CREATE TABLE items (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"));
  REQUIRE(writer->Exec("PRAGMA wal_checkpoint(TRUNCATE)"));
  return std::move(*writer);
}

}  // namespace

TEST_CASE("the checkpointer thread copies the WAL into the database off the writer's commits",
          "[sqlite][checkpointer]") {
  TempDir dir;
  const std::string path = (dir.path / "c.db").string();
  Database writer = EmptyDatabase(path);
  const auto empty_size = MainFileSize(path);

  CheckpointerOptions options;
  options.background_pages = 50;
  options.inline_pages = 1'000'000;  // never: every checkpoint here is the thread's
  auto checkpointer = Checkpointer::Start(writer, path, OpenOptions{}, options);
  REQUIRE(checkpointer);
  WriteRows(writer, 0, 200);
  // Only the thread can grow the main file here (no inline bound, no automatic checkpoint). How
  // much a PASSIVE checkpoint copies depends on where the writer was when it ran, so wait for
  // the thread to have copied something.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (((*checkpointer)->background_runs() == 0 || MainFileSize(path) <= empty_size) &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK((*checkpointer)->background_runs() > 0);
  CHECK(MainFileSize(path) > empty_size);
  WriteRows(writer, 200, 100);  // the writer goes on while the thread may be checkpointing
  checkpointer->reset();        // stops and joins the thread, removes the hook
  WriteRows(writer, 300, 10);   // commits after it is gone do not touch it
  CHECK(CountRows(path) == 310);
}

TEST_CASE("a commit checkpoints inline when the WAL reaches the bound", "[sqlite][checkpointer]") {
  TempDir dir;
  const std::string path = (dir.path / "c.db").string();
  Database writer = EmptyDatabase(path);
  const auto empty_size = MainFileSize(path);

  CheckpointerOptions options;
  options.background_pages = 1'000'000;  // the thread is never woken
  options.inline_pages = 50;
  auto checkpointer = Checkpointer::Start(writer, path, OpenOptions{}, options);
  REQUIRE(checkpointer);
  WriteRows(writer, 0, 200);
  CHECK((*checkpointer)->background_runs() == 0);
  CHECK(MainFileSize(path) > empty_size + 50 * 4096);
  // The WAL was restarted after an inline checkpoint: it holds far fewer than 200 rows' frames.
  CHECK(std::filesystem::file_size(path + "-wal") < 120 * 4096);
  CHECK(CountRows(path) == 200);
}
