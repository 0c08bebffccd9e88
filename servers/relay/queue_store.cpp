#include "queue_store.hpp"

#include <array>

namespace agentmesh::relay {
namespace {

constexpr std::array<std::string_view, 1> kMigrations = {
    R"sql(
CREATE TABLE messages(
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  message_id   TEXT NOT NULL UNIQUE,
  recipient    TEXT NOT NULL,
  sender       TEXT NOT NULL,
  message_type TEXT NOT NULL,
  payload      TEXT NOT NULL,
  client_id    TEXT NOT NULL DEFAULT '',
  created_at   INTEGER NOT NULL,
  expires_at   INTEGER NOT NULL
);
CREATE INDEX messages_by_recipient ON messages(recipient, seq);
CREATE INDEX messages_by_expiry ON messages(expires_at);
)sql"};

constexpr std::string_view kColumns =
    "message_id, recipient, sender, message_type, payload, client_id, created_at, expires_at";

// Reads a row selected as "seq, <kColumns>".
QueuedMessage ReadRow(const storage::Statement& stmt) {
  QueuedMessage m;
  m.seq = stmt.ColumnInt(0);
  m.message_id = stmt.ColumnText(1);
  m.recipient = stmt.ColumnText(2);
  m.sender = stmt.ColumnText(3);
  m.message_type = stmt.ColumnText(4);
  m.payload_token = stmt.ColumnText(5);
  m.client_id = stmt.ColumnText(6);
  m.created_at = stmt.ColumnInt(7);
  m.expires_at = stmt.ColumnInt(8);
  return m;
}

template <typename T>
Result<std::unique_ptr<storage::Statement>> PrepareOwned(storage::Database& db, T&& sql) {
  auto stmt = db.Prepare(sql);
  if (!stmt) return std::unexpected(stmt.error());
  return std::make_unique<storage::Statement>(std::move(*stmt));
}

}  // namespace

Result<std::unique_ptr<QueueStore>> QueueStore::Open(const std::string& path,
                                                     storage::Synchronous synchronous) {
  auto db = storage::Database::Open(path, storage::OpenOptions{.synchronous = synchronous});
  if (!db) return std::unexpected(db.error());
  if (auto r = db->Migrate(kMigrations); !r) return std::unexpected(r.error());
  std::unique_ptr<QueueStore> store(new QueueStore(std::move(*db)));
  if (auto r = store->Prepare(); !r) return std::unexpected(r.error());
  return store;
}

Result<void> QueueStore::Prepare() {
  auto insert = PrepareOwned(db_, std::string("INSERT INTO messages(") + std::string(kColumns) +
                                      ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)");
  if (!insert) return std::unexpected(insert.error());
  insert_ = std::move(*insert);
  auto load = PrepareOwned(db_, std::string("SELECT seq, ") + std::string(kColumns) +
                                    " FROM messages WHERE recipient = ?1 AND seq > ?4"
                                    " AND expires_at > ?2 ORDER BY seq LIMIT ?3");
  if (!load) return std::unexpected(load.error());
  load_ = std::move(*load);
  auto one = PrepareOwned(db_, std::string("SELECT seq, ") + std::string(kColumns) +
                                   " FROM messages WHERE message_id = ?1 AND recipient = ?2");
  if (!one) return std::unexpected(one.error());
  select_one_ = std::move(*one);
  auto del = PrepareOwned(db_, std::string_view("DELETE FROM messages WHERE message_id = ?1"));
  if (!del) return std::unexpected(del.error());
  delete_one_ = std::move(*del);
  return {};
}

Result<void> QueueStore::Insert(std::span<const QueuedMessage> messages) {
  if (messages.empty()) return {};
  storage::Transaction tx(db_);
  if (!tx.status()) return std::unexpected(tx.status().error());
  for (const auto& m : messages) {
    insert_->Reset();
    insert_->Bind(1, std::string_view(m.message_id))
        .Bind(2, std::string_view(m.recipient))
        .Bind(3, std::string_view(m.sender))
        .Bind(4, std::string_view(m.message_type))
        .Bind(5, std::string_view(m.payload_token))
        .Bind(6, std::string_view(m.client_id))
        .Bind(7, static_cast<std::int64_t>(m.created_at))
        .Bind(8, static_cast<std::int64_t>(m.expires_at));
    if (auto r = insert_->Run(); !r) {
      insert_->Reset();
      return std::unexpected(r.error());
    }
  }
  insert_->Reset();
  return tx.Commit();
}

Result<std::vector<QueuedMessage>> QueueStore::LoadFor(const std::string& recipient, UnixNanos now,
                                                       std::size_t limit, std::int64_t after_seq) {
  load_->Reset();
  load_->Bind(1, std::string_view(recipient))
      .Bind(2, static_cast<std::int64_t>(now))
      .Bind(3, static_cast<std::int64_t>(limit))
      .Bind(4, after_seq);
  std::vector<QueuedMessage> out;
  while (true) {
    auto row = load_->Step();
    if (!row) {
      load_->Reset();
      return std::unexpected(row.error());
    }
    if (!*row) break;
    out.push_back(ReadRow(*load_));
  }
  load_->Reset();
  return out;
}

Result<std::vector<QueuedMessage>> QueueStore::Take(const std::string& recipient,
                                                    std::span<const std::string_view> message_ids) {
  std::vector<QueuedMessage> taken;
  if (message_ids.empty()) return taken;
  storage::Transaction tx(db_);
  if (!tx.status()) return std::unexpected(tx.status().error());
  for (const std::string_view id : message_ids) {
    select_one_->Reset();
    select_one_->Bind(1, id).Bind(2, std::string_view(recipient));
    auto row = select_one_->Step();
    if (!row) {
      select_one_->Reset();
      return std::unexpected(row.error());
    }
    if (!*row) continue;
    taken.push_back(ReadRow(*select_one_));
    select_one_->Reset();
    delete_one_->Reset();
    delete_one_->Bind(1, id);
    if (auto r = delete_one_->Run(); !r) {
      delete_one_->Reset();
      return std::unexpected(r.error());
    }
  }
  select_one_->Reset();
  delete_one_->Reset();
  if (auto r = tx.Commit(); !r) return std::unexpected(r.error());
  return taken;
}

Result<std::unordered_map<std::string, std::uint32_t>> QueueStore::DeleteExpired(UnixNanos now) {
  std::unordered_map<std::string, std::uint32_t> counts;
  storage::Transaction tx(db_);
  if (!tx.status()) return std::unexpected(tx.status().error());
  auto select = db_.Prepare(
      "SELECT recipient, count(*) FROM messages WHERE expires_at <= ?1 GROUP BY recipient");
  if (!select) return std::unexpected(select.error());
  select->Bind(1, static_cast<std::int64_t>(now));
  while (true) {
    auto row = select->Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    counts[std::string(select->ColumnText(0))] = static_cast<std::uint32_t>(select->ColumnInt(1));
  }
  auto del = db_.Prepare("DELETE FROM messages WHERE expires_at <= ?1");
  if (!del) return std::unexpected(del.error());
  del->Bind(1, static_cast<std::int64_t>(now));
  if (auto r = del->Run(); !r) return std::unexpected(r.error());
  if (auto r = tx.Commit(); !r) return std::unexpected(r.error());
  return counts;
}

Result<std::unordered_map<std::string, std::uint32_t>> QueueStore::CountsByRecipient() {
  std::unordered_map<std::string, std::uint32_t> counts;
  auto select = db_.Prepare("SELECT recipient, count(*) FROM messages GROUP BY recipient");
  if (!select) return std::unexpected(select.error());
  while (true) {
    auto row = select->Step();
    if (!row) return std::unexpected(row.error());
    if (!*row) break;
    counts[std::string(select->ColumnText(0))] = static_cast<std::uint32_t>(select->ColumnInt(1));
  }
  return counts;
}

Result<std::uint64_t> QueueStore::Count() {
  auto select = db_.Prepare("SELECT count(*) FROM messages");
  if (!select) return std::unexpected(select.error());
  auto row = select->Step();
  if (!row) return std::unexpected(row.error());
  return static_cast<std::uint64_t>(select->ColumnInt(0));
}

}  // namespace agentmesh::relay
