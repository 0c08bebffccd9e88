// A thin RAII layer over libpq for the registry's PostgreSQL backend (several registry replicas
// sharing one database). It mirrors the SQLite wrapper (sqlite.hpp) where the two can agree:
// Result<T> errors with the core Code set, a Transaction that rolls back unless committed, and
// versioned migrations with the same Migrate(span<string_view>) contract.
//
// Connection owns one PGconn. Every query goes through Exec(sql, params): parameters are sent
// separately from the SQL text as text-format values ($1, $2, …), so no value is ever spliced into
// SQL and SQL metacharacters in data are harmless. Rows owns the PGresult of one query.
//
// Blocking: every call blocks the calling thread until the server answers (or the connection
// fails). In a libuv program run them on a worker (uv_queue_work), never on the loop thread.
//
// Thread-safety: a Connection, its Transactions and its Rows belong to one thread at a time.
// Distinct Connections may be used concurrently from different threads (libpq is thread-safe
// for distinct PGconn objects). Rows is independent of its Connection once returned and may
// outlive it.
//
// Errors (Error.message carries the libpq message and the SQLSTATE in brackets):
//   kUnavailable      connection refused/lost/closed, server shutting down, too many
//                     connections, serialization failure or deadlock (40001, 40P01; retrying the
//                     whole transaction may succeed), lock not available (55P03).
//   kConflict         integrity constraint violation (SQLSTATE class 23: unique 23505, foreign
//                     key 23503, not-null 23502, check 23514, exclusion 23P01), like SQLite's
//                     SQLITE_CONSTRAINT.
//   kInvalidArgument  bad connection string; a parameter containing a NUL byte (text-format
//                     parameters cannot carry one); data exceptions (SQLSTATE class 22, e.g. a
//                     parameter that is not a valid integer for an integer column).
//   kTimeout          statement_timeout / query cancelled (57014).
//   kLimitExceeded    program limit exceeded (class 54).
//   kCorrupt          data or index corrupted (XX001, XX002); a schema newer than the program;
//                     a column read with the wrong accessor (Rows::Int on "abc").
//   kInternal         SQL the server rejects as a program error (class 42: syntax error,
//                     undefined table or column, …), a misuse such as committing twice.
//   kIo               anything else.
#pragma once

#include <concepts>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"

struct pg_conn;
struct pg_result;

namespace agentmesh::storage::pg {

// One bound parameter, always sent in text format; the server converts it to the type the
// statement expects ($1 compared with an integer column is parsed as an integer). Add an explicit
// cast ($1::bigint) where the SQL gives the server no type to infer.
class Param {
 public:
  Param(std::nullptr_t) noexcept {}  // SQL NULL
  Param(std::string_view text) : value_(std::string(text)) {}
  Param(const std::string& text) : value_(text) {}
  Param(const char* text)
      : value_(text == nullptr ? std::optional<std::string>() : std::optional<std::string>(text)) {}
  Param(bool value) : value_(value ? "true" : "false") {}
  template <std::integral T>
  requires(!std::same_as<T, bool>) Param(T value) : value_(std::to_string(value)) {}
  Param(double value);  // shortest round-trip text form
  template <typename T>
  Param(const std::optional<T>& value) : Param(value ? Param(*value) : Param(nullptr)) {}

  // A bytea value (sent in PostgreSQL's hex text form "\x…").
  static Param Bytea(ByteView bytes);

  bool is_null() const noexcept { return !value_.has_value(); }
  // The text sent to the server; empty for NULL.
  const std::string& text() const noexcept { return value_ ? *value_ : kEmpty; }

 private:
  static inline const std::string kEmpty;
  std::optional<std::string> value_;
};

// The result of one successful query. Rows and columns are 0-based. Text views point into the
// PGresult and stay valid as long as this Rows object (moving it keeps them valid).
class Rows {
 public:
  Rows() = default;

  int size() const noexcept;  // number of rows returned (0 for commands without RETURNING)
  bool empty() const noexcept { return size() == 0; }
  int columns() const noexcept;  // number of columns
  // Index of the column named `name`, or -1.
  int ColumnIndex(std::string_view name) const noexcept;
  // Rows affected by INSERT/UPDATE/DELETE/MERGE/SELECT/… (PQcmdTuples), 0 when not reported.
  std::int64_t affected() const noexcept;

  // Out-of-range row/column indexes read as NULL.
  bool IsNull(int row, int column) const noexcept;
  // The value's text form; empty for NULL.
  std::string_view Text(int row, int column) const noexcept;
  // Typed readers for the text forms of integer, boolean and bytea columns. NULL or a value in
  // another form is kCorrupt naming the column.
  Result<std::int64_t> Int(int row, int column) const;
  Result<bool> Bool(int row, int column) const;
  // The text form of a float8/real/numeric column ("0.5", "NaN", "Infinity").
  Result<double> Double(int row, int column) const;
  Result<Bytes> Bytea(int row, int column) const;

 private:
  friend class Connection;
  struct Clear {
    void operator()(pg_result* result) const noexcept;
  };
  explicit Rows(pg_result* result) noexcept : result_(result) {}
  std::unique_ptr<pg_result, Clear> result_;
};

struct ConnectOptions {
  // Seconds libpq waits for the server to accept (connect_timeout); 0 waits forever.
  int connect_timeout_s = 10;
  // Reported in pg_stat_activity.
  std::string application_name = "agentmesh";
};

class Connection {
 public:
  // Connects with a libpq connection string, keyword form ("host=/run/pg port=5432 dbname=x") or
  // URI ("postgresql://user@host:port/db"); its values override `options`. The client encoding is
  // UTF8. Errors: kInvalidArgument for a string libpq cannot parse, kUnavailable when the server
  // cannot be reached or refuses the connection (including authentication failures).
  static Result<Connection> Connect(const std::string& conninfo,
                                    const ConnectOptions& options = {});

  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Runs one SQL statement with bound parameters ($1 = params[0], …) through the extended query
  // protocol (one statement only; no parameter is ever interpolated into the SQL text).
  Result<Rows> Exec(std::string_view sql, std::span<const Param> params);
  Result<Rows> Exec(std::string_view sql, std::initializer_list<Param> params = {}) {
    return Exec(sql, std::span<const Param>(params.begin(), params.size()));
  }
  // As Exec, through a server-side prepared statement that this connection creates on first use
  // of `sql` and reuses (keyed by the SQL text), which saves parsing on every call, and planning
  // once the server settles on the statement's generic plan (after 5 calls, and only when that
  // plan's estimate is no worse than the custom plans': a LIMIT or OFFSET parameter, for one,
  // keeps it re-planning): for the fixed statements of a program, never for SQL text built per
  // call. A statement the server no longer knows (DEALLOCATE, a pooler's DISCARD ALL; SQLSTATE
  // 26000) is prepared again once. Reset() forgets them all.
  Result<Rows> ExecPrepared(std::string_view sql, std::span<const Param> params);
  Result<Rows> ExecPrepared(std::string_view sql, std::initializer_list<Param> params = {}) {
    return ExecPrepared(sql, std::span<const Param>(params.begin(), params.size()));
  }
  // Runs a script of several ';'-separated statements without parameters (simple query protocol):
  // schema migrations and fixed administrative SQL only, never anything built from data.
  Result<void> ExecScript(std::string_view sql);

  // Applies the migrations whose 1-based index exceeds the stored schema version, each in its own
  // transaction together with the version bump, so a failed migration leaves the schema at the
  // previous version. The version lives in table agentmesh_schema_version (created on first use).
  // Safe to run from several processes at once (replicas starting together): a transaction-scoped
  // advisory lock serialises them and each re-reads the version under the lock. Running it again
  // is a no-op. A migration is a script for ExecScript and must not contain BEGIN/COMMIT (it
  // already runs inside the transaction). Errors: kCorrupt if the stored version is newer than
  // migrations.size(); the failing migration's error (message prefixed "migration N:") otherwise.
  Result<void> Migrate(std::span<const std::string_view> migrations);
  // The stored schema version (0 when never migrated).
  Result<int> SchemaVersion();

  // True while the connection is usable (PQstatus is CONNECTION_OK).
  bool ok() const noexcept;
  // Re-establishes a broken connection with the same parameters. kUnavailable on failure.
  Result<void> Reset();
  // The server's process id for this session (pg_backend_pid), for logs and tests.
  int backend_pid() const noexcept;
  pg_conn* raw() const noexcept { return conn_; }

 private:
  explicit Connection(pg_conn* conn) noexcept : conn_(conn) {}
  pg_conn* conn_ = nullptr;
  std::unordered_map<std::string, std::string> prepared_;  // SQL text -> statement name
  std::uint64_t next_statement_ = 0;
};

enum class Isolation { kReadCommitted, kRepeatableRead, kSerializable };

// BEGIN on construction (check status()), ROLLBACK on destruction unless Commit() succeeded.
// A statement that fails inside the transaction aborts it on the server: every later statement
// fails and Commit() returns an error (kConflict "transaction aborted") after rolling back.
class Transaction {
 public:
  explicit Transaction(Connection& conn, Isolation isolation = Isolation::kReadCommitted);
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  const Result<void>& status() const noexcept { return begin_; }
  // COMMIT. A serialization failure at commit is kUnavailable (retry the transaction).
  Result<void> Commit();
  // Explicit ROLLBACK (the destructor does the same when needed).
  Result<void> Rollback();

 private:
  Connection& conn_;
  Result<void> begin_;
  bool done_ = false;
};

// Maps a failed PGresult (may be null) on `conn` to an Error; `what` prefixes the message.
Error PgError(pg_conn* conn, const pg_result* result, std::string_view what);
// The Code for a five-character SQLSTATE.
Code CodeForSqlState(std::string_view sqlstate) noexcept;

}  // namespace agentmesh::storage::pg
