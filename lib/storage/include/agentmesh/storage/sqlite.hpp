// A thin RAII layer over SQLite for the daemon, the relay queue and the registry.
//
// Database owns one sqlite3 connection. Open() configures it for our durability contract:
// WAL journal, foreign keys on, a busy timeout, and `synchronous` = NORMAL (a committed transaction
// survives a process crash such as kill -9; FULL also survives power loss at the cost of an fsync
// per commit). New database files are created with mode 0600.
//
// Statement is a prepared statement bound to its Database; it must not outlive it. Step() returns
// true while a row is available. Column accessors read the current row; views returned by
// ColumnText/ColumnBlob are valid until the next Step/Reset/destruction.
//
// Migrations: an ordered list of SQL scripts; Migrate() applies those whose 1-based index exceeds
// PRAGMA user_version, each in its own transaction, and bumps user_version. The version is
// re-read under each transaction's write lock, so processes migrating one file at once apply each
// migration exactly once.
//
// Thread-safety: a Database and its Statements belong to one thread at a time.
// Errors: kIo for SQLite failures (message includes sqlite3_errmsg), kConflict for constraint
// violations, kUnavailable for SQLITE_BUSY after the timeout, kCorrupt for SQLITE_CORRUPT/NOTADB.
#pragma once

#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace agentmesh::storage {

enum class Synchronous { kOff, kNormal, kFull };

struct OpenOptions {
  bool create = true;
  bool read_only = false;
  Synchronous synchronous = Synchronous::kNormal;
  int busy_timeout_ms = 5000;
};

class Database;

class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  // Parameter indexes are 1-based, as in SQLite.
  Statement& Bind(int index, std::int64_t value);
  template <std::integral T>
  requires(!std::same_as<T, std::int64_t>) Statement& Bind(int index, T value) {
    return Bind(index, static_cast<std::int64_t>(value));
  }
  Statement& Bind(int index, double value);
  Statement& Bind(int index, std::string_view text);
  Statement& BindBlob(int index, ByteView blob);
  Statement& BindNull(int index);
  template <typename T>
  Statement& Bind(int index, const std::optional<T>& value) {
    return value ? Bind(index, *value) : BindNull(index);
  }

  // Runs one step: true when a row is available, false when done.
  Result<bool> Step();
  // Step() until done, for statements that return no rows.
  Result<void> Run();
  void Reset() noexcept;  // also clears bindings

  std::int64_t ColumnInt(int index) const noexcept;
  double ColumnDouble(int index) const noexcept;
  std::string_view ColumnText(int index) const noexcept;
  ByteView ColumnBlob(int index) const noexcept;
  bool ColumnIsNull(int index) const noexcept;

 private:
  friend class Database;
  Statement(sqlite3* db, sqlite3_stmt* stmt) noexcept : db_(db), stmt_(stmt) {}
  sqlite3* db_ = nullptr;
  sqlite3_stmt* stmt_ = nullptr;
  int bind_error_ = 0;
};

class Database {
 public:
  static Result<Database> Open(const std::string& path, const OpenOptions& options = {});

  Database(Database&& other) noexcept;
  Database& operator=(Database&& other) noexcept;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database();

  Result<void> Exec(std::string_view sql);
  Result<Statement> Prepare(std::string_view sql);
  Result<void> Migrate(std::span<const std::string_view> migrations);
  Result<int> UserVersion();

  std::int64_t LastInsertRowId() const noexcept;
  int Changes() const noexcept;
  sqlite3* raw() const noexcept { return db_; }

 private:
  explicit Database(sqlite3* db) noexcept : db_(db) {}
  sqlite3* db_ = nullptr;
};

// BEGIN IMMEDIATE on construction (check status()), ROLLBACK on destruction unless Commit()
// succeeded. Inside a transaction already open on `db` (a caller grouping several operations into
// one commit) it is a SAVEPOINT instead: Commit() releases it into the outer transaction, and
// destruction without Commit() rolls back only what was done since the savepoint.
class Transaction {
 public:
  explicit Transaction(Database& db);
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  const Result<void>& status() const noexcept { return begin_; }
  Result<void> Commit();

 private:
  Database& db_;
  bool nested_ = false;
  Result<void> begin_;
  bool done_ = false;
};

// Maps a SQLite result code + message to our Error.
Error SqliteError(sqlite3* db, int rc, std::string_view what);

}  // namespace agentmesh::storage
