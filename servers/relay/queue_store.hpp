// Durable store-and-forward queue of the relay (SQLite, WAL).
//
// Every message the relay reports as "queued" is in this store, committed, before the sender is
// told. Entries leave the store only when the recipient acks/nacks them or they expire. Payloads
// are stored exactly as the raw JSON string token the sender sent (the relay never decodes them).
//
// Durability: synchronous=NORMAL by default — a committed batch survives kill -9 of the relay;
// --fsync=full also survives power loss (one fsync per batch).
//
// Thread-safety: one thread (the relay's loop thread) owns a QueueStore.
// Errors: storage errors as returned by agentmesh::storage (kIo, kCorrupt, kUnavailable...).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/timefmt.hpp"
#include "agentmesh/storage/sqlite.hpp"

namespace agentmesh::relay {

struct QueuedMessage {
  std::string message_id;
  std::string recipient;
  std::string sender;
  std::string message_type;
  std::string payload_token;  // raw JSON string token, quotes included
  std::string client_id;      // sender's `id`, empty when none
  UnixNanos created_at = 0;
  UnixNanos expires_at = 0;
  std::int64_t seq = 0;  // store order, set when read from the store (0 = not stored yet)
};

class QueueStore {
 public:
  static Result<std::unique_ptr<QueueStore>> Open(const std::string& path,
                                                  storage::Synchronous synchronous);

  // Inserts all messages in one transaction (group commit). All or nothing.
  Result<void> Insert(std::span<const QueuedMessage> messages);
  // Up to `limit` unexpired messages for `recipient` stored after `after_seq`, oldest first
  // (`after_seq` = the last seq a connection was given, so a drain never re-reads what it has).
  Result<std::vector<QueuedMessage>> LoadFor(const std::string& recipient, UnixNanos now,
                                             std::size_t limit, std::int64_t after_seq = 0);
  // Deletes the messages with these ids addressed to `recipient` (an agent can only remove its
  // own messages); returns the deleted rows so the caller can send receipts and fix counts.
  Result<std::vector<QueuedMessage>> Take(const std::string& recipient,
                                          std::span<const std::string_view> message_ids);
  // Deletes expired rows; returns (recipient -> number deleted).
  Result<std::unordered_map<std::string, std::uint32_t>> DeleteExpired(UnixNanos now);
  // Number of queued messages per recipient (for the in-memory counters at start-up).
  Result<std::unordered_map<std::string, std::uint32_t>> CountsByRecipient();
  Result<std::uint64_t> Count();

 private:
  explicit QueueStore(storage::Database db) : db_(std::move(db)) {}
  Result<void> Prepare();

  storage::Database db_;
  std::unique_ptr<storage::Statement> insert_;
  std::unique_ptr<storage::Statement> load_;
  std::unique_ptr<storage::Statement> select_one_;
  std::unique_ptr<storage::Statement> delete_one_;
};

}  // namespace agentmesh::relay
