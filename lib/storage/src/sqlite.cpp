#include "agentmesh/storage/sqlite.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>

namespace agentmesh::storage {

Error SqliteError(sqlite3* db, int rc, std::string_view what) {
  Code code = Code::kIo;
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
      code = Code::kConflict;
      break;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      code = Code::kUnavailable;
      break;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      code = Code::kCorrupt;
      break;
    case SQLITE_TOOBIG:
      code = Code::kLimitExceeded;
      break;
    default:
      break;
  }
  const char* detail = db != nullptr ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  return Error{code, fmt::format("{}: {}", what, detail), {}};
}

Statement::Statement(Statement&& other) noexcept
    : db_(other.db_), stmt_(other.stmt_), bind_error_(other.bind_error_) {
  other.stmt_ = nullptr;
}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    sqlite3_finalize(stmt_);
    db_ = other.db_;
    stmt_ = other.stmt_;
    bind_error_ = other.bind_error_;
    other.stmt_ = nullptr;
  }
  return *this;
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::Bind(int index, std::int64_t value) {
  const int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
  return *this;
}

Statement& Statement::Bind(int index, double value) {
  const int rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
  return *this;
}

Statement& Statement::Bind(int index, std::string_view text) {
  const int rc =
      sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
  return *this;
}

Statement& Statement::BindBlob(int index, ByteView blob) {
  const int rc = sqlite3_bind_blob64(stmt_, index, blob.data(), blob.size(), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
  return *this;
}

Statement& Statement::BindNull(int index) {
  const int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK && bind_error_ == 0) bind_error_ = rc;
  return *this;
}

Result<bool> Statement::Step() {
  if (bind_error_ != 0) {
    const int rc = bind_error_;
    bind_error_ = 0;
    return std::unexpected(SqliteError(db_, rc, "bind"));
  }
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  Error error = SqliteError(db_, rc, "step");
  sqlite3_reset(stmt_);
  return std::unexpected(std::move(error));
}

Result<void> Statement::Run() {
  while (true) {
    auto row = Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) return {};
  }
}

void Statement::Reset() noexcept {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  bind_error_ = 0;
}

std::int64_t Statement::ColumnInt(int index) const noexcept {
  return sqlite3_column_int64(stmt_, index);
}

double Statement::ColumnDouble(int index) const noexcept {
  return sqlite3_column_double(stmt_, index);
}

std::string_view Statement::ColumnText(int index) const noexcept {
  const auto* text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, index));
  if (text == nullptr) return {};
  return std::string_view(text, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, index)));
}

ByteView Statement::ColumnBlob(int index) const noexcept {
  const auto* blob = static_cast<const std::uint8_t*>(sqlite3_column_blob(stmt_, index));
  if (blob == nullptr) return {};
  return ByteView(blob, static_cast<std::size_t>(sqlite3_column_bytes(stmt_, index)));
}

bool Statement::ColumnIsNull(int index) const noexcept {
  return sqlite3_column_type(stmt_, index) == SQLITE_NULL;
}

Result<Database> Database::Open(const std::string& path, const OpenOptions& options) {
  const bool in_memory = path == ":memory:" || path.starts_with("file::memory:");
  if (!in_memory && options.create && !options.read_only) {
    // Create the file ourselves so it is 0600 from the first byte (SQLite would use the umask).
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
      return Fail(Code::kIo,
                  fmt::format("cannot create database {}: {}", path, std::strerror(errno)));
    }
    ::close(fd);
  }
  int flags = options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE;
  if (options.create && !options.read_only) flags |= SQLITE_OPEN_CREATE;
  flags |= SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI;
  sqlite3* raw = nullptr;
  const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  if (rc != SQLITE_OK) {
    Error error = SqliteError(raw, rc, fmt::format("open {}", path));
    sqlite3_close_v2(raw);
    return std::unexpected(std::move(error));
  }
  Database db(raw);
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, options.busy_timeout_ms);
  const char* sync = options.synchronous == Synchronous::kFull     ? "FULL"
                     : options.synchronous == Synchronous::kNormal ? "NORMAL"
                                                                   : "OFF";
  if (!options.read_only && !in_memory) {
    if (auto r = db.Exec("PRAGMA journal_mode=WAL"); !r) return std::unexpected(r.error());
  }
  if (auto r = db.Exec(fmt::format("PRAGMA synchronous={}", sync)); !r) {
    return std::unexpected(r.error());
  }
  if (auto r = db.Exec("PRAGMA foreign_keys=ON"); !r) return std::unexpected(r.error());
  // Detect a file that is not a database now rather than on first use.
  if (auto r = db.Exec("SELECT count(*) FROM sqlite_master"); !r) return std::unexpected(r.error());
  return db;
}

Database::Database(Database&& other) noexcept : db_(other.db_) { other.db_ = nullptr; }

Database& Database::operator=(Database&& other) noexcept {
  if (this != &other) {
    sqlite3_close_v2(db_);
    db_ = other.db_;
    other.db_ = nullptr;
  }
  return *this;
}

Database::~Database() { sqlite3_close_v2(db_); }

Result<void> Database::Exec(std::string_view sql) {
  const std::string text(sql);
  char* message = nullptr;
  const int rc = sqlite3_exec(db_, text.c_str(), nullptr, nullptr, &message);
  sqlite3_free(message);
  if (rc != SQLITE_OK) return std::unexpected(SqliteError(db_, rc, "exec"));
  return {};
}

Result<Statement> Database::Prepare(std::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  const int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                                    SQLITE_PREPARE_PERSISTENT, &stmt, nullptr);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(stmt);
    return std::unexpected(SqliteError(db_, rc, "prepare"));
  }
  return Statement(db_, stmt);
}

Result<int> Database::UserVersion() {
  auto stmt = Prepare("PRAGMA user_version");
  if (!stmt) return std::unexpected(stmt.error());
  auto row = stmt->Step();
  if (!row) return std::unexpected(row.error());
  return static_cast<int>(stmt->ColumnInt(0));
}

Result<void> Database::Migrate(std::span<const std::string_view> migrations) {
  // Each step re-reads the version inside its BEGIN IMMEDIATE transaction (which holds the write
  // lock), so two processes migrating one file at once apply every migration exactly once.
  while (true) {
    Transaction tx(*this);
    if (!tx.status()) return std::unexpected(tx.status().error());
    auto version = UserVersion();
    if (!version) return std::unexpected(version.error());
    if (*version > static_cast<int>(migrations.size())) {
      return Fail(Code::kCorrupt,
                  fmt::format("database schema version {} is newer than this program knows ({})",
                              *version, migrations.size()));
    }
    const auto i = static_cast<std::size_t>(*version);
    if (i == migrations.size()) return tx.Commit();
    if (auto r = Exec(migrations[i]); !r) {
      return Fail(r.error().code, fmt::format("migration {}: {}", i + 1, r.error().message));
    }
    if (auto r = Exec(fmt::format("PRAGMA user_version={}", i + 1)); !r) {
      return std::unexpected(r.error());
    }
    if (auto r = tx.Commit(); !r) return std::unexpected(r.error());
  }
}

std::int64_t Database::LastInsertRowId() const noexcept { return sqlite3_last_insert_rowid(db_); }

int Database::Changes() const noexcept { return sqlite3_changes(db_); }

Transaction::Transaction(Database& db)
    : db_(db),
      nested_(sqlite3_get_autocommit(db.raw()) == 0),
      begin_(db.Exec(nested_ ? "SAVEPOINT amesh_tx" : "BEGIN IMMEDIATE")) {}

Transaction::~Transaction() {
  if (!begin_ || done_) return;
  if (nested_) {
    (void)db_.Exec("ROLLBACK TO amesh_tx");
    (void)db_.Exec("RELEASE amesh_tx");
  } else {
    (void)db_.Exec("ROLLBACK");
  }
}

Result<void> Transaction::Commit() {
  if (!begin_) return std::unexpected(begin_.error());
  if (done_) return Fail(Code::kInternal, "transaction already finished");
  auto r = db_.Exec(nested_ ? "RELEASE amesh_tx" : "COMMIT");
  if (r) done_ = true;
  return r;
}

}  // namespace agentmesh::storage
