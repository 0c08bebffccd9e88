#include "store.hpp"

#include <array>
#include <string_view>

namespace agentmesh::daemon {
namespace {

constexpr std::string_view kMigration1 = R"sql(
CREATE TABLE meta(key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE identity(
  id INTEGER PRIMARY KEY CHECK (id = 1),
  amid TEXT NOT NULL, signing_public_key TEXT NOT NULL, exchange_public_key TEXT NOT NULL,
  sealed BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE signed_prekeys(
  id INTEGER PRIMARY KEY, sealed BLOB NOT NULL, signature TEXT NOT NULL,
  created_at INTEGER NOT NULL, retired_at INTEGER);
CREATE TABLE one_time_prekeys(
  id INTEGER PRIMARY KEY, sealed BLOB NOT NULL, uploaded INTEGER NOT NULL DEFAULT 0);
CREATE TABLE sessions(
  session_id TEXT PRIMARY KEY, peer TEXT NOT NULL, role TEXT NOT NULL,
  intent_category TEXT NOT NULL, intent_subcategory TEXT NOT NULL, intent_action TEXT NOT NULL,
  type TEXT NOT NULL, state TEXT NOT NULL, close_reason TEXT NOT NULL,
  signed_messages INTEGER NOT NULL, max_message_size INTEGER NOT NULL,
  max_messages INTEGER NOT NULL, ttl_seconds INTEGER NOT NULL, capabilities TEXT NOT NULL,
  peer_signing_key TEXT NOT NULL, knock TEXT NOT NULL,
  created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
  last_sent_seq INTEGER NOT NULL, next_recv_seq INTEGER NOT NULL,
  messages_sent INTEGER NOT NULL, messages_received INTEGER NOT NULL, ratchet BLOB);
CREATE INDEX sessions_state ON sessions(state);
CREATE TABLE inbox(
  seq INTEGER PRIMARY KEY AUTOINCREMENT, relay_id TEXT NOT NULL, session_id TEXT NOT NULL,
  sender TEXT NOT NULL, recipient TEXT NOT NULL, sequence INTEGER NOT NULL, type TEXT NOT NULL,
  timestamp TEXT NOT NULL, payload BLOB NOT NULL, received_at INTEGER NOT NULL,
  held INTEGER NOT NULL DEFAULT 0, consumed INTEGER NOT NULL DEFAULT 0,
  UNIQUE(session_id, sequence));
CREATE INDEX inbox_pending ON inbox(consumed, held);
CREATE TABLE outbox(
  message_id TEXT PRIMARY KEY, recipient TEXT NOT NULL, message_type TEXT NOT NULL,
  payload TEXT NOT NULL, session_id TEXT NOT NULL, sequence INTEGER NOT NULL,
  created_at INTEGER NOT NULL, ord INTEGER NOT NULL);
CREATE INDEX outbox_order ON outbox(ord);
CREATE TABLE seen(relay_id TEXT PRIMARY KEY, at INTEGER NOT NULL);
CREATE INDEX seen_at ON seen(at);
CREATE TABLE consumed_sessions(session_id TEXT PRIMARY KEY, at INTEGER NOT NULL);
)sql";

// Resets a cached statement when a read is done with it, so no statement stays mid-step.
struct ResetOnExit {
  storage::Statement* s;
  ~ResetOnExit() { s->Reset(); }
};

SessionRow ReadSession(const storage::Statement& s) {
  SessionRow r;
  int i = 0;
  r.session_id = s.ColumnText(i++);
  r.peer = s.ColumnText(i++);
  r.role = s.ColumnText(i++);
  r.intent_category = s.ColumnText(i++);
  r.intent_subcategory = s.ColumnText(i++);
  r.intent_action = s.ColumnText(i++);
  r.type = s.ColumnText(i++);
  r.state = s.ColumnText(i++);
  r.close_reason = s.ColumnText(i++);
  r.signed_messages = s.ColumnInt(i++) != 0;
  r.max_message_size = static_cast<std::uint64_t>(s.ColumnInt(i++));
  r.max_messages = static_cast<std::uint32_t>(s.ColumnInt(i++));
  r.ttl_seconds = static_cast<std::uint32_t>(s.ColumnInt(i++));
  r.capabilities = s.ColumnText(i++);
  r.peer_signing_key = s.ColumnText(i++);
  r.knock = s.ColumnText(i++);
  r.created_at = s.ColumnInt(i++);
  r.expires_at = s.ColumnInt(i++);
  r.updated_at = s.ColumnInt(i++);
  r.last_sent_seq = static_cast<std::uint64_t>(s.ColumnInt(i++));
  r.next_recv_seq = static_cast<std::uint64_t>(s.ColumnInt(i++));
  r.messages_sent = static_cast<std::uint64_t>(s.ColumnInt(i++));
  r.messages_received = static_cast<std::uint64_t>(s.ColumnInt(i++));
  const ByteView blob = s.ColumnBlob(i++);
  r.ratchet.assign(blob.begin(), blob.end());
  return r;
}

constexpr std::string_view kSessionColumns =
    "session_id, peer, role, intent_category, intent_subcategory, intent_action, type, state, "
    "close_reason, signed_messages, max_message_size, max_messages, ttl_seconds, capabilities, "
    "peer_signing_key, knock, created_at, expires_at, updated_at, last_sent_seq, next_recv_seq, "
    "messages_sent, messages_received, ratchet";

InboxRow ReadInbox(const storage::Statement& s) {
  InboxRow r;
  r.seq = s.ColumnInt(0);
  r.relay_id = s.ColumnText(1);
  r.session_id = s.ColumnText(2);
  r.from = s.ColumnText(3);
  r.to = s.ColumnText(4);
  r.sequence = static_cast<std::uint64_t>(s.ColumnInt(5));
  r.type = s.ColumnText(6);
  r.timestamp = s.ColumnText(7);
  const ByteView blob = s.ColumnBlob(8);
  r.payload_sealed.assign(blob.begin(), blob.end());
  r.received_at = s.ColumnInt(9);
  r.held = s.ColumnInt(10) != 0;
  return r;
}

constexpr std::string_view kInboxColumns =
    "seq, relay_id, session_id, sender, recipient, sequence, type, timestamp, payload, "
    "received_at, held";

constexpr std::string_view kMigration2 = R"sql(
CREATE TABLE transcripts(
  id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL, direction TEXT NOT NULL,
  sequence INTEGER NOT NULL, type TEXT NOT NULL, at INTEGER NOT NULL, sealed BLOB NOT NULL);
CREATE INDEX transcripts_session ON transcripts(session_id, id);
)sql";

constexpr std::string_view kMigration3 = R"sql(
CREATE TABLE sent_keys(
  key TEXT PRIMARY KEY, session_id TEXT NOT NULL, sequence INTEGER NOT NULL, at INTEGER NOT NULL);
)sql";

// `ack` finds a waiting message by its relay id.
constexpr std::string_view kMigration4 = R"sql(
CREATE INDEX inbox_waiting_relay_id ON inbox(relay_id) WHERE consumed = 0;
)sql";

}  // namespace

Result<Store> Store::Open(const std::string& path) {
  auto db = storage::Database::Open(path);
  if (!db) return std::unexpected(db.error());
  const std::array<std::string_view, 4> migrations = {kMigration1, kMigration2, kMigration3,
                                                      kMigration4};
  if (auto r = db->Migrate(migrations); !r) return std::unexpected(r.error());
  // A 16 MB page cache (SQLite's default is 2 MB): a message stream re-read index pages of the
  // growing inbox. Checkpoints run on the Checkpointer's thread, never inside a commit on the
  // loop (an in-memory database has no WAL).
  if (auto r = db->Exec("PRAGMA cache_size=-16384"); !r) return std::unexpected(r.error());
  Store store(std::move(*db));
  if (path != ":memory:" && !path.starts_with("file::memory:")) {
    storage::CheckpointerOptions options;
    options.background_pages = 2000;
    options.inline_pages = 40000;
    auto checkpointer = storage::Checkpointer::Start(store.db_, path, {}, options);
    if (!checkpointer) return std::unexpected(checkpointer.error());
    store.checkpointer_ = std::move(*checkpointer);
  }
  return store;
}

Result<storage::Statement*> Store::Stmt(std::string_view sql) {
  // Fast path: the SQL of a call site is a literal or a function-local static, so its address is
  // stable; the text is still compared (an address can in principle be reused by other text).
  if (auto hit = by_address_.find(sql.data()); hit != by_address_.end()) {
    auto& [text, stmt] = cache_[hit->second];
    if (text == sql) {
      stmt->Reset();
      return stmt.get();
    }
  }
  for (std::size_t i = 0; i < cache_.size(); ++i) {
    auto& [text, stmt] = cache_[i];
    if (text == sql) {
      by_address_[sql.data()] = i;
      stmt->Reset();
      return stmt.get();
    }
  }
  auto prepared = db_.Prepare(sql);
  if (!prepared) return std::unexpected(prepared.error());
  cache_.emplace_back(std::string(sql), std::make_unique<storage::Statement>(std::move(*prepared)));
  by_address_[sql.data()] = cache_.size() - 1;
  return cache_.back().second.get();
}

Result<void> Store::Begin() {
  if (in_batch_) return {};
  if (auto r = db_.Exec("BEGIN IMMEDIATE"); !r) return r;
  in_batch_ = true;
  return {};
}

Result<void> Store::Commit() {
  if (!in_batch_) return {};
  for (auto& [text, stmt] : cache_) stmt->Reset();
  auto r = db_.Exec("COMMIT");
  if (!r) {
    Rollback();
    return r;
  }
  in_batch_ = false;
  return {};
}

void Store::Rollback() noexcept {
  if (!in_batch_) return;
  for (auto& [text, stmt] : cache_) stmt->Reset();
  (void)db_.Exec("ROLLBACK");
  in_batch_ = false;
}

#define AM_STMT(var, sql)                                \
  auto var##_r = Stmt(sql);                              \
  if (!var##_r) return std::unexpected(var##_r.error()); \
  storage::Statement& var = **var##_r;                   \
  ResetOnExit var##_reset { &var }

Result<std::optional<Bytes>> Store::GetMeta(std::string_view key) {
  AM_STMT(s, "SELECT value FROM meta WHERE key = ?");
  s.Bind(1, key);
  auto row = s.Step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return std::optional<Bytes>();
  const ByteView v = s.ColumnBlob(0);
  return std::optional<Bytes>(Bytes(v.begin(), v.end()));
}

Result<void> Store::SetMeta(std::string_view key, ByteView value) {
  AM_STMT(s,
          "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value = "
          "excluded.value");
  s.Bind(1, key).BindBlob(2, value);
  return s.Run();
}

Result<void> Store::SetMetaText(std::string_view key, std::string_view value) {
  return SetMeta(key, AsBytes(value));
}

Result<std::optional<IdentityRow>> Store::LoadIdentity() {
  AM_STMT(s,
          "SELECT amid, signing_public_key, exchange_public_key, sealed, created_at FROM "
          "identity WHERE id = 1");
  auto row = s.Step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return std::optional<IdentityRow>();
  IdentityRow r;
  r.amid = s.ColumnText(0);
  r.signing_public_key = s.ColumnText(1);
  r.exchange_public_key = s.ColumnText(2);
  const ByteView blob = s.ColumnBlob(3);
  r.sealed.assign(blob.begin(), blob.end());
  r.created_at = s.ColumnInt(4);
  return std::optional<IdentityRow>(std::move(r));
}

Result<void> Store::SaveIdentity(const IdentityRow& row) {
  AM_STMT(s,
          "INSERT OR REPLACE INTO identity(id, amid, signing_public_key, exchange_public_key, "
          "sealed, created_at) VALUES(1, ?, ?, ?, ?, ?)");
  s.Bind(1, row.amid)
      .Bind(2, row.signing_public_key)
      .Bind(3, row.exchange_public_key)
      .BindBlob(4, row.sealed)
      .Bind(5, row.created_at);
  return s.Run();
}

Result<std::vector<SignedPrekeyRow>> Store::LoadSignedPrekeys() {
  AM_STMT(s,
          "SELECT id, sealed, signature, created_at, retired_at FROM signed_prekeys ORDER BY id");
  std::vector<SignedPrekeyRow> out;
  while (true) {
    auto row = s.Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    SignedPrekeyRow r;
    r.id = static_cast<std::uint32_t>(s.ColumnInt(0));
    const ByteView blob = s.ColumnBlob(1);
    r.sealed.assign(blob.begin(), blob.end());
    r.signature = s.ColumnText(2);
    r.created_at = s.ColumnInt(3);
    if (!s.ColumnIsNull(4)) r.retired_at = s.ColumnInt(4);
    out.push_back(std::move(r));
  }
  return out;
}

Result<void> Store::InsertSignedPrekey(const SignedPrekeyRow& row) {
  AM_STMT(s,
          "INSERT INTO signed_prekeys(id, sealed, signature, created_at, retired_at) "
          "VALUES(?, ?, ?, ?, ?)");
  s.Bind(1, row.id).BindBlob(2, row.sealed).Bind(3, row.signature).Bind(4, row.created_at);
  s.Bind(5, row.retired_at);
  return s.Run();
}

Result<void> Store::RetireSignedPrekey(std::uint32_t id, std::int64_t at) {
  AM_STMT(s, "UPDATE signed_prekeys SET retired_at = ? WHERE id = ?");
  s.Bind(1, at).Bind(2, id);
  return s.Run();
}

Result<void> Store::DeleteSignedPrekey(std::uint32_t id) {
  AM_STMT(s, "DELETE FROM signed_prekeys WHERE id = ?");
  s.Bind(1, id);
  return s.Run();
}

Result<void> Store::InsertOneTimePrekey(const OneTimePrekeyRow& row) {
  AM_STMT(s, "INSERT INTO one_time_prekeys(id, sealed, uploaded) VALUES(?, ?, ?)");
  s.Bind(1, row.id).BindBlob(2, row.sealed).Bind(3, row.uploaded ? 1 : 0);
  return s.Run();
}

Result<std::optional<OneTimePrekeyRow>> Store::GetOneTimePrekey(std::uint32_t id) {
  AM_STMT(s, "SELECT id, sealed, uploaded FROM one_time_prekeys WHERE id = ?");
  s.Bind(1, id);
  auto row = s.Step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return std::optional<OneTimePrekeyRow>();
  OneTimePrekeyRow r;
  r.id = static_cast<std::uint32_t>(s.ColumnInt(0));
  const ByteView blob = s.ColumnBlob(1);
  r.sealed.assign(blob.begin(), blob.end());
  r.uploaded = s.ColumnInt(2) != 0;
  return std::optional<OneTimePrekeyRow>(std::move(r));
}

Result<void> Store::DeleteOneTimePrekey(std::uint32_t id) {
  AM_STMT(s, "DELETE FROM one_time_prekeys WHERE id = ?");
  s.Bind(1, id);
  return s.Run();
}

Result<std::int64_t> Store::CountOneTimePrekeys() {
  AM_STMT(s, "SELECT COUNT(*) FROM one_time_prekeys");
  auto row = s.Step();
  if (!row) return std::unexpected(row.error());
  return s.ColumnInt(0);
}

Result<std::vector<OneTimePrekeyRow>> Store::PendingUploadPrekeys() {
  AM_STMT(s, "SELECT id, sealed FROM one_time_prekeys WHERE uploaded = 0 ORDER BY id");
  std::vector<OneTimePrekeyRow> out;
  while (true) {
    auto row = s.Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    OneTimePrekeyRow r;
    r.id = static_cast<std::uint32_t>(s.ColumnInt(0));
    const ByteView blob = s.ColumnBlob(1);
    r.sealed.assign(blob.begin(), blob.end());
    out.push_back(std::move(r));
  }
  return out;
}

Result<void> Store::MarkUploaded(const std::vector<std::uint32_t>& ids) {
  AM_STMT(s, "UPDATE one_time_prekeys SET uploaded = 1 WHERE id = ?");
  for (auto id : ids) {
    s.Reset();
    s.Bind(1, id);
    if (auto r = s.Run(); !r) return r;
  }
  return {};
}

Result<void> Store::UpsertSession(const SessionRow& r) {
  AM_STMT(s,
          "INSERT OR REPLACE INTO sessions(session_id, peer, role, intent_category, "
          "intent_subcategory, intent_action, type, state, close_reason, signed_messages, "
          "max_message_size, max_messages, ttl_seconds, capabilities, peer_signing_key, knock, "
          "created_at, expires_at, updated_at, last_sent_seq, next_recv_seq, messages_sent, "
          "messages_received, ratchet) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
          "?, ?, ?, ?, ?, ?, ?, ?)");
  s.Bind(1, r.session_id).Bind(2, r.peer).Bind(3, r.role).Bind(4, r.intent_category);
  s.Bind(5, r.intent_subcategory).Bind(6, r.intent_action).Bind(7, r.type);
  s.Bind(8, r.state).Bind(9, r.close_reason).Bind(10, r.signed_messages ? 1 : 0);
  s.Bind(11, static_cast<std::int64_t>(r.max_message_size)).Bind(12, r.max_messages);
  s.Bind(13, r.ttl_seconds).Bind(14, r.capabilities).Bind(15, r.peer_signing_key);
  s.Bind(16, r.knock).Bind(17, r.created_at).Bind(18, r.expires_at).Bind(19, r.updated_at);
  s.Bind(20, static_cast<std::int64_t>(r.last_sent_seq));
  s.Bind(21, static_cast<std::int64_t>(r.next_recv_seq));
  s.Bind(22, static_cast<std::int64_t>(r.messages_sent));
  s.Bind(23, static_cast<std::int64_t>(r.messages_received));
  if (r.ratchet.empty()) {
    s.BindNull(24);
  } else {
    s.BindBlob(24, r.ratchet);
  }
  return s.Run();
}

Result<std::vector<SessionRow>> Store::LoadLiveSessions() {
  static const std::string sql = std::string("SELECT ") + std::string(kSessionColumns) +
                                 " FROM sessions WHERE state IN ('pending', 'active')";
  AM_STMT(s, sql);
  std::vector<SessionRow> out;
  while (true) {
    auto row = s.Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    out.push_back(ReadSession(s));
  }
  return out;
}

Result<std::vector<SessionRow>> Store::ListSessions(std::optional<std::string> state, int limit) {
  static const std::string sql =
      std::string("SELECT ") + std::string(kSessionColumns) +
      " FROM sessions WHERE (?1 IS NULL OR state = ?1) ORDER BY created_at DESC LIMIT ?2";
  AM_STMT(s, sql);
  s.Bind(1, state).Bind(2, limit);
  std::vector<SessionRow> out;
  while (true) {
    auto row = s.Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    out.push_back(ReadSession(s));
  }
  return out;
}

Result<std::int64_t> Store::InsertInbox(const InboxRow& r) {
  AM_STMT(s,
          "INSERT INTO inbox(relay_id, session_id, sender, recipient, sequence, type, "
          "timestamp, payload, received_at, held) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  s.Bind(1, r.relay_id).Bind(2, r.session_id).Bind(3, r.from).Bind(4, r.to);
  s.Bind(5, static_cast<std::int64_t>(r.sequence)).Bind(6, r.type).Bind(7, r.timestamp);
  s.BindBlob(8, r.payload_sealed).Bind(9, r.received_at).Bind(10, r.held ? 1 : 0);
  if (auto run = s.Run(); !run) return std::unexpected(run.error());
  return db_.LastInsertRowId();
}

Result<std::vector<InboxRow>> Store::SelectInbox(std::optional<std::string> session_id,
                                                 std::optional<std::string> from,
                                                 std::optional<std::string> type, int limit) {
  static const std::string sql =
      std::string("SELECT ") + std::string(kInboxColumns) +
      " FROM inbox WHERE consumed = 0 AND held = 0 AND (?1 IS NULL OR session_id = ?1) AND "
      "(?2 IS NULL OR sender = ?2) AND (?3 IS NULL OR type = ?3) ORDER BY seq LIMIT ?4";
  AM_STMT(s, sql);
  s.Bind(1, session_id).Bind(2, from).Bind(3, type).Bind(4, limit);
  std::vector<InboxRow> out;
  while (true) {
    auto row = s.Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    out.push_back(ReadInbox(s));
  }
  return out;
}

Result<void> Store::ConsumeInbox(std::int64_t seq) {
  // The payload is no longer needed once handed out; keep the row (sequence dedupe) only.
  AM_STMT(s, "UPDATE inbox SET consumed = 1, payload = x'' WHERE seq = ?");
  s.Bind(1, seq);
  return s.Run();
}

Result<bool> Store::ConsumeInboxByRelayId(std::string_view relay_id) {
  // One row: the relay's ids are unique, and `seen` keeps a second copy out of the inbox.
  AM_STMT(s,
          "UPDATE inbox SET consumed = 1, payload = x'' WHERE seq = (SELECT seq FROM inbox "
          "WHERE relay_id = ? AND consumed = 0 AND held = 0 ORDER BY seq LIMIT 1)");
  s.Bind(1, relay_id);
  if (auto r = s.Run(); !r) return std::unexpected(r.error());
  return db_.Changes() > 0;
}

Result<std::optional<InboxRow>> Store::TakeHeld(std::string_view session_id,
                                                std::uint64_t sequence) {
  static const std::string sql = std::string("SELECT ") + std::string(kInboxColumns) +
                                 " FROM inbox WHERE session_id = ? AND sequence = ? AND held = 1";
  std::optional<InboxRow> found;
  {
    AM_STMT(s, sql);
    s.Bind(1, session_id).Bind(2, static_cast<std::int64_t>(sequence));
    auto row = s.Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) return found;
    found = ReadInbox(s);
  }
  AM_STMT(d, "DELETE FROM inbox WHERE seq = ?");
  d.Bind(1, found->seq);
  if (auto r = d.Run(); !r) return std::unexpected(r.error());
  return found;
}

Result<bool> Store::HeldExists(std::string_view session_id, std::uint64_t sequence) {
  AM_STMT(s, "SELECT 1 FROM inbox WHERE session_id = ? AND sequence = ?");
  s.Bind(1, session_id).Bind(2, static_cast<std::int64_t>(sequence));
  return s.Step();
}

Result<std::int64_t> Store::CountHeld(std::string_view session_id) {
  AM_STMT(s, "SELECT COUNT(*) FROM inbox WHERE session_id = ? AND held = 1");
  s.Bind(1, session_id);
  auto row = s.Step();
  if (!row) return std::unexpected(row.error());
  return s.ColumnInt(0);
}

Result<std::int64_t> Store::CountPendingInbox() {
  AM_STMT(s, "SELECT COUNT(*) FROM inbox WHERE consumed = 0 AND held = 0");
  auto row = s.Step();
  if (!row) return std::unexpected(row.error());
  return s.ColumnInt(0);
}

Result<std::int64_t> Store::CountOutbox() {
  AM_STMT(s, "SELECT COUNT(*) FROM outbox");
  auto row = s.Step();
  if (!row) return std::unexpected(row.error());
  return s.ColumnInt(0);
}

Result<void> Store::PruneConsumedInbox(std::int64_t before) {
  AM_STMT(s, "DELETE FROM inbox WHERE consumed = 1 AND received_at < ?");
  s.Bind(1, before);
  return s.Run();
}

Result<void> Store::InsertOutbox(const OutboxRow& r) {
  AM_STMT(s,
          "INSERT INTO outbox(message_id, recipient, message_type, payload, session_id, "
          "sequence, created_at, ord) VALUES(?, ?, ?, ?, ?, ?, ?, (SELECT COALESCE(MAX(ord), "
          "0) + 1 FROM outbox))");
  s.Bind(1, r.message_id).Bind(2, r.to).Bind(3, r.message_type).Bind(4, r.payload_b64);
  s.Bind(5, r.session_id).Bind(6, static_cast<std::int64_t>(r.sequence)).Bind(7, r.created_at);
  return s.Run();
}

Result<void> Store::DeleteOutbox(std::string_view message_id) {
  AM_STMT(s, "DELETE FROM outbox WHERE message_id = ?");
  s.Bind(1, message_id);
  return s.Run();
}

Result<std::vector<OutboxRow>> Store::LoadOutbox() {
  AM_STMT(s,
          "SELECT message_id, recipient, message_type, payload, session_id, sequence, "
          "created_at FROM outbox ORDER BY ord");
  std::vector<OutboxRow> out;
  while (true) {
    auto row = s.Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    OutboxRow r;
    r.message_id = s.ColumnText(0);
    r.to = s.ColumnText(1);
    r.message_type = s.ColumnText(2);
    r.payload_b64 = s.ColumnText(3);
    r.session_id = s.ColumnText(4);
    r.sequence = static_cast<std::uint64_t>(s.ColumnInt(5));
    r.created_at = s.ColumnInt(6);
    out.push_back(std::move(r));
  }
  return out;
}

Result<bool> Store::Seen(std::string_view relay_id) {
  AM_STMT(s, "SELECT 1 FROM seen WHERE relay_id = ?");
  s.Bind(1, relay_id);
  return s.Step();
}

Result<void> Store::MarkSeen(std::string_view relay_id, std::int64_t at) {
  AM_STMT(s, "INSERT OR IGNORE INTO seen(relay_id, at) VALUES(?, ?)");
  s.Bind(1, relay_id).Bind(2, at);
  return s.Run();
}

Result<void> Store::PruneSeen(std::int64_t before) {
  AM_STMT(s, "DELETE FROM seen WHERE at < ?");
  s.Bind(1, before);
  return s.Run();
}

Result<std::optional<SentKey>> Store::FindSentKey(std::string_view key) {
  AM_STMT(s, "SELECT session_id, sequence FROM sent_keys WHERE key = ?");
  s.Bind(1, key);
  auto row = s.Step();
  if (!row) return std::unexpected(row.error());
  if (!*row) return std::nullopt;
  return SentKey{std::string(s.ColumnText(0)), static_cast<std::uint64_t>(s.ColumnInt(1))};
}

Result<void> Store::InsertSentKey(std::string_view key, std::string_view session_id,
                                  std::uint64_t sequence, std::int64_t at) {
  AM_STMT(s, "INSERT INTO sent_keys(key, session_id, sequence, at) VALUES(?, ?, ?, ?)");
  s.Bind(1, key).Bind(2, session_id).Bind(3, static_cast<std::int64_t>(sequence)).Bind(4, at);
  return s.Run();
}

Result<void> Store::DeleteSentKey(std::string_view key) {
  AM_STMT(s, "DELETE FROM sent_keys WHERE key = ?");
  s.Bind(1, key);
  return s.Run();
}

Result<void> Store::PruneSentKeys(std::int64_t before) {
  AM_STMT(s, "DELETE FROM sent_keys WHERE at < ?");
  s.Bind(1, before);
  return s.Run();
}

Result<bool> Store::SessionConsumed(std::string_view session_id) {
  AM_STMT(s, "SELECT 1 FROM consumed_sessions WHERE session_id = ?");
  s.Bind(1, session_id);
  return s.Step();
}

Result<void> Store::MarkSessionConsumed(std::string_view session_id, std::int64_t at) {
  AM_STMT(s, "INSERT OR IGNORE INTO consumed_sessions(session_id, at) VALUES(?, ?)");
  s.Bind(1, session_id).Bind(2, at);
  return s.Run();
}

Result<void> Store::InsertTranscript(const TranscriptRow& r) {
  AM_STMT(s,
          "INSERT INTO transcripts(session_id, direction, sequence, type, at, sealed) "
          "VALUES(?, ?, ?, ?, ?, ?)");
  s.Bind(1, r.session_id).Bind(2, r.direction).Bind(3, static_cast<std::int64_t>(r.sequence));
  s.Bind(4, r.type).Bind(5, r.at).BindBlob(6, r.sealed);
  return s.Run();
}

Result<std::vector<TranscriptRow>> Store::LoadTranscript(std::string_view session_id) {
  AM_STMT(s,
          "SELECT session_id, direction, sequence, type, at, sealed FROM transcripts WHERE "
          "session_id = ? ORDER BY id");
  s.Bind(1, session_id);
  std::vector<TranscriptRow> out;
  while (true) {
    auto row = s.Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    TranscriptRow r;
    r.session_id = s.ColumnText(0);
    r.direction = s.ColumnText(1);
    r.sequence = static_cast<std::uint64_t>(s.ColumnInt(2));
    r.type = s.ColumnText(3);
    r.at = s.ColumnInt(4);
    const ByteView blob = s.ColumnBlob(5);
    r.sealed.assign(blob.begin(), blob.end());
    out.push_back(std::move(r));
  }
  return out;
}

Result<void> Store::WipeForNewIdentity() {
  for (auto& [text, stmt] : cache_) stmt->Reset();
  return db_.Exec(
      "DELETE FROM signed_prekeys; DELETE FROM one_time_prekeys; DELETE FROM outbox; "
      "DELETE FROM sent_keys; "
      "UPDATE sessions SET state = 'killed', close_reason = 'identity_replaced', ratchet = NULL "
      "WHERE state IN ('pending', 'active'); DELETE FROM meta WHERE key IN ('registered', "
      "'next_opk_id');");
}

#undef AM_STMT

}  // namespace agentmesh::daemon
