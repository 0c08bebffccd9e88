#include "agentmesh/storage/postgres.hpp"

#include <fmt/format.h>
#include <libpq-fe.h>

#include <charconv>
#include <cstring>
#include <vector>

#include "agentmesh/core/encoding.hpp"

namespace agentmesh::storage::pg {

namespace {

// Arbitrary constant key for pg_advisory_xact_lock: serialises concurrent Migrate() calls.
constexpr std::int64_t kMigrationLockKey = 0x616d657368'6d6967;  // "amesh" "mig"

std::string Trim(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  return std::string(text);
}

void IgnoreNotice(void*, const char*) {}

bool ConnectionLost(pg_conn* conn) { return conn == nullptr || PQstatus(conn) != CONNECTION_OK; }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Errors

Code CodeForSqlState(std::string_view s) noexcept {
  if (s.size() != 5) return Code::kIo;
  const std::string_view cls = s.substr(0, 2);
  if (cls == "23") return Code::kConflict;
  if (cls == "08" || cls == "53" || cls == "57") {
    if (s == "57014") return Code::kTimeout;
    return Code::kUnavailable;
  }
  if (s == "40001" || s == "40P01" || s == "55P03") return Code::kUnavailable;
  if (cls == "22") return Code::kInvalidArgument;
  if (cls == "54") return Code::kLimitExceeded;
  if (cls == "42") return Code::kInternal;
  if (s == "XX001" || s == "XX002") return Code::kCorrupt;
  return Code::kIo;
}

Error PgError(pg_conn* conn, const pg_result* result, std::string_view what) {
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  std::string message;
  if (result != nullptr && *PQresultErrorMessage(result) != '\0') {
    message = Trim(PQresultErrorMessage(result));
  } else if (conn != nullptr) {
    message = Trim(PQerrorMessage(conn));
  }
  if (message.empty()) message = "no result from server";
  Code code = Code::kIo;
  if (state != nullptr) {
    code = CodeForSqlState(state);
    message += fmt::format(" [{}]", state);
  } else if (ConnectionLost(conn)) {
    code = Code::kUnavailable;
  }
  // A statement that fails because the session died reports an SQLSTATE-less error; a failure
  // with the connection gone is always kUnavailable whatever the text says.
  if (ConnectionLost(conn)) code = Code::kUnavailable;
  return Error{code, fmt::format("{}: {}", what, message), {}};
}

// ---------------------------------------------------------------------------------------------
// Param

Param::Param(double value) {
  char buf[64];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, value);
  value_ = ec == std::errc() ? std::string(buf, end) : std::string("NaN");
}

Param Param::Bytea(ByteView bytes) { return Param("\\x" + HexEncode(bytes)); }

// ---------------------------------------------------------------------------------------------
// Rows

void Rows::Clear::operator()(pg_result* result) const noexcept { PQclear(result); }

int Rows::size() const noexcept { return result_ ? PQntuples(result_.get()) : 0; }

int Rows::columns() const noexcept { return result_ ? PQnfields(result_.get()) : 0; }

int Rows::ColumnIndex(std::string_view name) const noexcept {
  for (int i = 0; i < columns(); ++i) {
    if (name == PQfname(result_.get(), i)) return i;
  }
  return -1;
}

std::int64_t Rows::affected() const noexcept {
  if (!result_) return 0;
  const char* text = PQcmdTuples(result_.get());
  std::int64_t n = 0;
  std::from_chars(text, text + std::strlen(text), n);
  return n;
}

bool Rows::IsNull(int row, int column) const noexcept {
  if (row < 0 || row >= size() || column < 0 || column >= columns()) return true;
  return PQgetisnull(result_.get(), row, column) != 0;
}

std::string_view Rows::Text(int row, int column) const noexcept {
  if (IsNull(row, column)) return {};
  return std::string_view(PQgetvalue(result_.get(), row, column),
                          static_cast<std::size_t>(PQgetlength(result_.get(), row, column)));
}

namespace {
std::string ColumnLabel(const Rows& rows, pg_result* result, int row, int column) {
  const char* name = column >= 0 && column < rows.columns() ? PQfname(result, column) : "?";
  return fmt::format("row {} column {} ({})", row, column, name);
}
}  // namespace

Result<std::int64_t> Rows::Int(int row, int column) const {
  if (IsNull(row, column)) {
    return Fail(Code::kCorrupt, ColumnLabel(*this, result_.get(), row, column) + " is NULL");
  }
  const std::string_view text = Text(row, column);
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) {
    return Fail(Code::kCorrupt,
                ColumnLabel(*this, result_.get(), row, column) + " is not a 64-bit integer");
  }
  return value;
}

Result<bool> Rows::Bool(int row, int column) const {
  const std::string_view text = Text(row, column);
  if (!IsNull(row, column) && text == "t") return true;
  if (!IsNull(row, column) && text == "f") return false;
  return Fail(Code::kCorrupt, ColumnLabel(*this, result_.get(), row, column) + " is not a boolean");
}

Result<double> Rows::Double(int row, int column) const {
  const std::string_view text = Text(row, column);
  double value = 0;
  if (!IsNull(row, column)) {
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec == std::errc() && end == text.data() + text.size()) return value;
  }
  return Fail(Code::kCorrupt, ColumnLabel(*this, result_.get(), row, column) + " is not a number");
}

Result<Bytes> Rows::Bytea(int row, int column) const {
  const std::string_view text = Text(row, column);
  if (IsNull(row, column) || !text.starts_with("\\x")) {
    return Fail(Code::kCorrupt,
                ColumnLabel(*this, result_.get(), row, column) + " is not a hex bytea value");
  }
  auto bytes = HexDecode(text.substr(2));
  if (!bytes) {
    return Fail(Code::kCorrupt,
                ColumnLabel(*this, result_.get(), row, column) + ": " + bytes.error().message);
  }
  return std::move(*bytes);
}

// ---------------------------------------------------------------------------------------------
// Connection

Result<Connection> Connection::Connect(const std::string& conninfo, const ConnectOptions& options) {
  char* parse_error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(conninfo.c_str(), &parse_error);
  if (parsed == nullptr) {
    std::string message = parse_error != nullptr ? Trim(parse_error) : "out of memory";
    PQfreemem(parse_error);
    return Fail(Code::kInvalidArgument, "invalid connection string: " + message);
  }
  PQconninfoFree(parsed);

  // Defaults first; the caller's string (expanded from "dbname") comes last and overrides them.
  const std::string timeout = std::to_string(options.connect_timeout_s);
  const char* keywords[] = {"connect_timeout", "application_name", "client_encoding", "dbname",
                            nullptr};
  const char* values[] = {timeout.c_str(), options.application_name.c_str(), "UTF8",
                          conninfo.c_str(), nullptr};
  pg_conn* conn = PQconnectdbParams(keywords, values, /*expand_dbname=*/1);
  if (conn == nullptr) return Fail(Code::kUnavailable, "connect: out of memory");
  Connection connection(conn);
  if (PQstatus(conn) != CONNECTION_OK) {
    return Fail(Code::kUnavailable, "connect: " + Trim(PQerrorMessage(conn)));
  }
  PQsetNoticeProcessor(conn, IgnoreNotice, nullptr);
  return connection;
}

Connection::Connection(Connection&& other) noexcept
    : conn_(other.conn_),
      prepared_(std::move(other.prepared_)),
      next_statement_(other.next_statement_) {
  other.conn_ = nullptr;
  other.prepared_.clear();
}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    if (conn_ != nullptr) PQfinish(conn_);
    conn_ = other.conn_;
    other.conn_ = nullptr;
    prepared_ = std::move(other.prepared_);
    other.prepared_.clear();
    next_statement_ = other.next_statement_;
  }
  return *this;
}

Connection::~Connection() {
  if (conn_ != nullptr) PQfinish(conn_);
}

bool Connection::ok() const noexcept { return !ConnectionLost(conn_); }

int Connection::backend_pid() const noexcept { return conn_ != nullptr ? PQbackendPID(conn_) : 0; }

Result<void> Connection::Reset() {
  if (conn_ == nullptr) return Fail(Code::kInternal, "reset: moved-from connection");
  PQreset(conn_);
  prepared_.clear();  // a new session has none of them
  if (PQstatus(conn_) != CONNECTION_OK) {
    return Fail(Code::kUnavailable, "reset: " + Trim(PQerrorMessage(conn_)));
  }
  PQsetNoticeProcessor(conn_, IgnoreNotice, nullptr);
  return {};
}

namespace {

// The parameter values as libpq wants them; kInvalidArgument for a value with a NUL byte.
Result<std::vector<const char*>> ParamValues(std::span<const Param> params) {
  std::vector<const char*> values;
  values.reserve(params.size());
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (params[i].is_null()) {
      values.push_back(nullptr);
      continue;
    }
    if (params[i].text().find('\0') != std::string::npos) {
      return Fail(
          Code::kInvalidArgument,
          fmt::format("parameter ${} contains a NUL byte (not representable as text)", i + 1));
    }
    values.push_back(params[i].text().c_str());
  }
  return values;
}

bool IsOk(const pg_result* raw) {
  const ExecStatusType status = raw != nullptr ? PQresultStatus(raw) : PGRES_FATAL_ERROR;
  return status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK;
}

}  // namespace

Result<Rows> Connection::Exec(std::string_view sql, std::span<const Param> params) {
  if (conn_ == nullptr) return Fail(Code::kInternal, "exec: moved-from connection");
  if (sql.find('\0') != std::string_view::npos) {
    return Fail(Code::kInvalidArgument, "SQL text contains a NUL byte");
  }
  auto values = ParamValues(params);
  if (!values) return std::unexpected(values.error());
  const std::string text(sql);
  pg_result* raw = PQexecParams(conn_, text.c_str(), static_cast<int>(values->size()), nullptr,
                                values->data(), nullptr, nullptr, /*resultFormat=*/0);
  Rows rows(raw);
  if (IsOk(raw)) return rows;
  return std::unexpected(PgError(conn_, raw, "exec"));
}

Result<Rows> Connection::ExecPrepared(std::string_view sql, std::span<const Param> params) {
  if (conn_ == nullptr) return Fail(Code::kInternal, "exec: moved-from connection");
  if (sql.find('\0') != std::string_view::npos) {
    return Fail(Code::kInvalidArgument, "SQL text contains a NUL byte");
  }
  auto values = ParamValues(params);
  if (!values) return std::unexpected(values.error());
  const std::string text(sql);
  for (int attempt = 0;; ++attempt) {
    auto it = prepared_.find(text);
    if (it == prepared_.end()) {
      std::string name = "amesh_stmt_" + std::to_string(++next_statement_);
      Rows prepared(
          PQprepare(conn_, name.c_str(), text.c_str(), static_cast<int>(values->size()), nullptr));
      if (!IsOk(prepared.result_.get())) {
        return std::unexpected(PgError(conn_, prepared.result_.get(), "prepare"));
      }
      it = prepared_.emplace(text, std::move(name)).first;
    }
    pg_result* raw = PQexecPrepared(conn_, it->second.c_str(), static_cast<int>(values->size()),
                                    values->data(), nullptr, nullptr, /*resultFormat=*/0);
    Rows rows(raw);
    if (IsOk(raw)) return rows;
    const char* state = raw != nullptr ? PQresultErrorField(raw, PG_DIAG_SQLSTATE) : nullptr;
    // Outside a transaction only: inside one, the failure has aborted it.
    if (attempt == 0 && state != nullptr && std::string_view(state) == "26000" &&
        PQtransactionStatus(conn_) == PQTRANS_IDLE) {
      prepared_.erase(it);  // the server dropped it: prepare again
      continue;
    }
    return std::unexpected(PgError(conn_, raw, "exec"));
  }
}

Result<void> Connection::ExecScript(std::string_view sql) {
  if (conn_ == nullptr) return Fail(Code::kInternal, "exec: moved-from connection");
  const std::string text(sql);
  Rows rows(PQexec(conn_, text.c_str()));  // keeps only the last statement's result
  const pg_result* raw = rows.result_.get();
  const ExecStatusType status = raw != nullptr ? PQresultStatus(raw) : PGRES_FATAL_ERROR;
  if (status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK || status == PGRES_EMPTY_QUERY) {
    return {};
  }
  return std::unexpected(PgError(conn_, raw, "exec"));
}

Result<int> Connection::SchemaVersion() {
  // to_regclass avoids an error (and an aborted transaction) when the table does not exist yet.
  auto exists = Exec("SELECT to_regclass('agentmesh_schema_version') IS NOT NULL");
  if (!exists) return std::unexpected(exists.error());
  auto present = exists->Bool(0, 0);
  if (!present) return std::unexpected(present.error());
  if (!*present) return 0;
  auto rows = Exec("SELECT COALESCE(MAX(version), 0) FROM agentmesh_schema_version");
  if (!rows) return std::unexpected(rows.error());
  auto version = rows->Int(0, 0);
  if (!version) return std::unexpected(version.error());
  return static_cast<int>(*version);
}

Result<void> Connection::Migrate(std::span<const std::string_view> migrations) {
  // The version table itself; IF NOT EXISTS under the lock keeps concurrent first runs safe.
  {
    Transaction tx(*this);
    if (!tx.status()) return std::unexpected(tx.status().error());
    if (auto r = Exec("SELECT pg_advisory_xact_lock($1::bigint)", {kMigrationLockKey}); !r) {
      return std::unexpected(r.error());
    }
    if (auto r = ExecScript("CREATE TABLE IF NOT EXISTS agentmesh_schema_version ("
                            " version integer PRIMARY KEY,"
                            " applied_at timestamptz NOT NULL DEFAULT now())");
        !r) {
      return std::unexpected(r.error());
    }
    if (auto r = tx.Commit(); !r) return std::unexpected(r.error());
  }
  while (true) {
    Transaction tx(*this);
    if (!tx.status()) return std::unexpected(tx.status().error());
    if (auto r = Exec("SELECT pg_advisory_xact_lock($1::bigint)", {kMigrationLockKey}); !r) {
      return std::unexpected(r.error());
    }
    auto version = SchemaVersion();
    if (!version) return std::unexpected(version.error());
    const auto current = static_cast<std::size_t>(*version);
    if (current > migrations.size()) {
      return Fail(Code::kCorrupt,
                  fmt::format("database schema version {} is newer than this program knows ({})",
                              current, migrations.size()));
    }
    if (current == migrations.size()) return tx.Commit();
    // Another process may have advanced the version meanwhile: apply the one after what is
    // stored under the lock.
    if (auto r = ExecScript(migrations[current]); !r) {
      return Fail(r.error().code, fmt::format("migration {}: {}", current + 1, r.error().message));
    }
    if (auto r = Exec("INSERT INTO agentmesh_schema_version (version) VALUES ($1::integer)",
                      {static_cast<std::int64_t>(current + 1)});
        !r) {
      return std::unexpected(r.error());
    }
    if (auto r = tx.Commit(); !r) return std::unexpected(r.error());
  }
}

// ---------------------------------------------------------------------------------------------
// Transaction

namespace {
const char* BeginStatement(Isolation isolation) {
  switch (isolation) {
    case Isolation::kRepeatableRead:
      return "BEGIN ISOLATION LEVEL REPEATABLE READ";
    case Isolation::kSerializable:
      return "BEGIN ISOLATION LEVEL SERIALIZABLE";
    case Isolation::kReadCommitted:
      break;
  }
  return "BEGIN ISOLATION LEVEL READ COMMITTED";
}
}  // namespace

Transaction::Transaction(Connection& conn, Isolation isolation)
    : conn_(conn), begin_(conn.ExecScript(BeginStatement(isolation))) {}

Transaction::~Transaction() {
  if (begin_ && !done_) (void)Rollback();
}

Result<void> Transaction::Commit() {
  if (!begin_) return std::unexpected(begin_.error());
  if (done_) return Fail(Code::kInternal, "transaction already finished");
  if (conn_.raw() != nullptr && PQtransactionStatus(conn_.raw()) == PQTRANS_INERROR) {
    (void)Rollback();
    return Fail(Code::kConflict, "transaction aborted by an earlier error; rolled back");
  }
  auto rows = conn_.Exec("COMMIT");
  done_ = true;  // after COMMIT the transaction is over whatever the outcome
  if (!rows) return std::unexpected(rows.error());
  return {};
}

Result<void> Transaction::Rollback() {
  if (!begin_) return std::unexpected(begin_.error());
  if (done_) return {};
  done_ = true;
  return conn_.ExecScript("ROLLBACK");
}

}  // namespace agentmesh::storage::pg
