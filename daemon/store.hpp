// The daemon's durable state: <home>/agentmesh.db (SQLite, WAL, versioned migrations, 0600).
//
// WAL checkpoints run on a storage::Checkpointer thread (see Open).
//
// Tables (schema version 1):
//   meta(key, value)                         small settings: seal check blob, paused, registered,
//                                            next one-time prekey id
//   identity(id = 1, amid, signing_public_key, exchange_public_key, sealed, created_at)
//   signed_prekeys(id, public_key, signature, sealed, created_at, retired_at)
//   one_time_prekeys(id, public_key, sealed, uploaded)
//   sessions(session_id, ..., ratchet)      one row per session; `ratchet` is sealed state
//   inbox(seq, relay_id, session_id, ...)   received envelopes; `held` rows wait for a missing
//                                            sequence number, `consumed` rows were handed out
//   outbox(message_id, ...)                  ciphertext accepted by us, not yet stored by the
//                                            relay nor acked/nacked by the recipient
//   seen(relay_id)                           relay message ids already committed (dedupe)
//   consumed_sessions(session_id)            session ids whose prekey message was answered
//   transcripts(session_id, direction, …)    (version 2) sealed envelopes, in and out, kept
//                                            when store_transcripts is on
//
// Every secret column ("sealed", "ratchet", inbox payloads) holds a sealed blob (the core's
// AMSK form); the Store never sees plaintext secrets, the Daemon seals and opens them.
//
// Transactions: the Daemon groups all writes of one loop turn in one transaction
// (Begin()/Commit(); Begin is idempotent). Reads see the uncommitted writes of the batch.
// Errors: as agentmesh_storage (kIo, kConflict, kCorrupt, kUnavailable).
// Thread-safety: loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"
#include "agentmesh/storage/checkpointer.hpp"
#include "agentmesh/storage/sqlite.hpp"

namespace agentmesh::daemon {

struct IdentityRow {
  std::string amid;
  std::string signing_public_key;
  std::string exchange_public_key;
  Bytes sealed;  // seed(32) || x25519 secret(32)
  std::int64_t created_at = 0;
};

struct SignedPrekeyRow {
  std::uint32_t id = 0;
  Bytes sealed;  // x25519 secret(32)
  std::string signature;
  std::int64_t created_at = 0;
  std::optional<std::int64_t> retired_at;
};

struct OneTimePrekeyRow {
  std::uint32_t id = 0;
  Bytes sealed;
  bool uploaded = false;
};

struct SessionRow {
  std::string session_id;
  std::string peer;
  std::string role;  // initiator | receiver
  std::string intent_category, intent_subcategory, intent_action;
  std::string type;   // request_response | conversation | stream
  std::string state;  // pending | active | closed | killed | rejected | expired
  std::string close_reason;
  bool signed_messages = true;
  std::uint64_t max_message_size = 65536;
  std::uint32_t max_messages = 1000;
  std::uint32_t ttl_seconds = 300;
  std::string capabilities = "[]";  // JSON array text
  std::string peer_signing_key;     // "ed25519:…"
  std::string knock;                // the KNOCK JSON (sent or received)
  std::int64_t created_at = 0, expires_at = 0, updated_at = 0;
  std::uint64_t last_sent_seq = 0;  // sequence of our last envelope
  std::uint64_t next_recv_seq = 1;  // sequence expected next from the peer
  std::uint64_t messages_sent = 0, messages_received = 0;
  Bytes ratchet;  // sealed RatchetSession::Serialize(); empty once terminal
};

struct InboxRow {
  std::int64_t seq = 0;  // local order
  std::string relay_id;
  std::string session_id, from, to;
  std::uint64_t sequence = 0;
  std::string type;
  std::string timestamp;
  Bytes payload_sealed;
  std::int64_t received_at = 0;
  bool held = false;
};

struct SentKey {
  std::string session_id;
  std::uint64_t sequence = 0;
};

struct OutboxRow {
  std::string message_id;
  std::string to;
  std::string message_type;
  std::string payload_b64;
  std::string session_id;
  std::uint64_t sequence = 0;
  std::int64_t created_at = 0;
};

struct TranscriptRow {
  std::string session_id;
  std::string direction;  // in | out
  std::uint64_t sequence = 0;
  std::string type;
  std::int64_t at = 0;
  Bytes sealed;  // the envelope JSON as sent/received (signature included)
};

class Store {
 public:
  static Result<Store> Open(const std::string& path);

  Result<void> Begin();  // no-op when a batch is open
  Result<void> Commit();
  void Rollback() noexcept;
  bool in_batch() const noexcept { return in_batch_; }

  Result<std::optional<Bytes>> GetMeta(std::string_view key);
  Result<void> SetMeta(std::string_view key, ByteView value);
  Result<void> SetMetaText(std::string_view key, std::string_view value);

  Result<std::optional<IdentityRow>> LoadIdentity();
  Result<void> SaveIdentity(const IdentityRow& row);

  Result<std::vector<SignedPrekeyRow>> LoadSignedPrekeys();
  Result<void> InsertSignedPrekey(const SignedPrekeyRow& row);
  Result<void> RetireSignedPrekey(std::uint32_t id, std::int64_t at);
  Result<void> DeleteSignedPrekey(std::uint32_t id);

  Result<void> InsertOneTimePrekey(const OneTimePrekeyRow& row);
  Result<std::optional<OneTimePrekeyRow>> GetOneTimePrekey(std::uint32_t id);
  Result<void> DeleteOneTimePrekey(std::uint32_t id);
  Result<std::int64_t> CountOneTimePrekeys();
  Result<std::vector<OneTimePrekeyRow>> PendingUploadPrekeys();
  Result<void> MarkUploaded(const std::vector<std::uint32_t>& ids);

  Result<void> UpsertSession(const SessionRow& row);
  Result<std::vector<SessionRow>> LoadLiveSessions();  // pending and active
  Result<std::vector<SessionRow>> ListSessions(std::optional<std::string> state, int limit);

  Result<std::int64_t> InsertInbox(const InboxRow& row);
  // Visible (not held), unconsumed rows, oldest first, optionally filtered.
  Result<std::vector<InboxRow>> SelectInbox(std::optional<std::string> session_id,
                                            std::optional<std::string> from,
                                            std::optional<std::string> type, int limit);
  Result<void> ConsumeInbox(std::int64_t seq);
  // ConsumeInbox of the visible, unconsumed row with this relay message id; false if there is
  // none (unknown, held, or consumed already).
  Result<bool> ConsumeInboxByRelayId(std::string_view relay_id);
  Result<std::optional<InboxRow>> TakeHeld(std::string_view session_id, std::uint64_t sequence);
  Result<bool> HeldExists(std::string_view session_id, std::uint64_t sequence);
  Result<std::int64_t> CountHeld(std::string_view session_id);
  Result<std::int64_t> CountPendingInbox();
  Result<std::int64_t> CountOutbox();
  // Deletes consumed rows received before `before` (order and dedupe do not need them).
  Result<void> PruneConsumedInbox(std::int64_t before);

  Result<void> InsertOutbox(const OutboxRow& row);
  Result<void> DeleteOutbox(std::string_view message_id);
  Result<std::vector<OutboxRow>> LoadOutbox();

  // Relay ids of messages handled outside a session ratchet (whose committed state is the record
  // for the messages it accepted), kept 7 days so a copy delivered again is only acked.
  Result<bool> Seen(std::string_view relay_id);
  Result<void> MarkSeen(std::string_view relay_id, std::int64_t at);
  Result<void> PruneSeen(std::int64_t before);
  // Idempotency keys of sent messages (send/reply `idempotency_key`), kept 24 h: a retried call
  // with the same key is answered with the first call's session and sequence, not sent again.
  Result<std::optional<SentKey>> FindSentKey(std::string_view key);
  Result<void> InsertSentKey(std::string_view key, std::string_view session_id,
                             std::uint64_t sequence, std::int64_t at);
  Result<void> DeleteSentKey(std::string_view key);
  Result<void> PruneSentKeys(std::int64_t before);
  Result<bool> SessionConsumed(std::string_view session_id);
  Result<void> MarkSessionConsumed(std::string_view session_id, std::int64_t at);

  Result<void> InsertTranscript(const TranscriptRow& row);
  Result<std::vector<TranscriptRow>> LoadTranscript(std::string_view session_id);

  // init --force: forget keys, prekeys, sessions and queues.
  Result<void> WipeForNewIdentity();

 private:
  explicit Store(storage::Database db) : db_(std::move(db)) {}
  Result<storage::Statement*> Stmt(std::string_view sql);

  storage::Database db_;
  std::unique_ptr<storage::Checkpointer> checkpointer_;  // after db_: destroyed before it
  bool in_batch_ = false;
  // Prepared statements, kept for the life of the Store (prepared once per SQL text), and an
  // index by the address of the caller's SQL text (see Stmt()).
  std::vector<std::pair<std::string, std::unique_ptr<storage::Statement>>> cache_;
  std::unordered_map<const char*, std::size_t> by_address_;
};

}  // namespace agentmesh::daemon
