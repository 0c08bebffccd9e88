// agentmeshd's core: the state one agent's daemon holds and the loop-thread logic around it.
//
// One Daemon per process, on one libuv loop; every member function runs on the loop thread.
// Services it owns: the Store (SQLite), the RpcServer (Unix socket), the RegistryClient and the
// RelayLink (agentmeshd_net), the audit log, timers. Sessions, pending RPC calls, relay messages
// and timers refer to each other by id (session id, relay message id, timer id), never by pointer.
//
// Durability (docs/RPC.md, "Delivery"): every durable change of a loop turn goes into one SQLite
// transaction (Batch()); a uv_check handle commits it once per loop turn, then runs the actions
// that make the change visible to the outside (relay Ack, relay Send, RPC replies, which the
// RpcServer flushes last). So a ratchet step and its inbox row are committed before the relay's
// Ack, an outbox row before the RPC reply and before the ciphertext leaves, and a kill -9 at any
// point loses and duplicates nothing: unacked relay messages come back and are de-duplicated by
// relay message id, by the ratchet (replay) and by the envelope sequence. A failed commit is
// fatal (the process exits and restarts from the last committed state).
//
// Secrets at rest are sealed (core sealed.hpp, key form) under the master key: Argon2id of
// $AGENTMESH_PASSPHRASE with a salt in <home>/master.salt, or else the 32 random bytes of the
// 0600 file <home>/master.key created by `init`.
#pragma once

#include <uv.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

#include "agentmesh/core/envelope.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/knock.hpp"
#include "agentmesh/core/policy.hpp"
#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/ratchet.hpp"
#include "agentmesh/core/rate_limit.hpp"
#include "agentmesh/core/sealed.hpp"
#include "config.hpp"
#include "daemon/registry_client.hpp"
#include "daemon/relay_link.hpp"
#include "rpc_server.hpp"
#include "schemas.hpp"
#include "store.hpp"

namespace agentmesh::daemon {

struct DaemonOptions {
  std::filesystem::path home;
  std::string socket_path;
  std::filesystem::path config_path;  // default <home>/config.json
  std::optional<std::string> log_level;
};

struct Identity {
  Ed25519KeyPair signing;
  X25519KeyPair exchange;
  Amid amid;
};

// A pending or active session, with its ratchet in memory.
struct LiveSession {
  SessionRow row;
  std::optional<RatchetSession> ratchet;
  bool dirty = false;
  // ACCEPT constraint `messages_per_minute` (0 = none): each side's own envelopes per minute.
  // The sender refuses beyond it (send_bucket, at send time); the receiver closes the session
  // when the peer exceeds it (recv_bucket, fed with the envelopes' signed timestamps, so an
  // honest sender's own bucket never disagrees with it). Kept in meta "session_mpm:<id>".
  std::uint32_t messages_per_minute = 0;
  std::optional<TokenBucket> send_bucket, recv_bucket;
  // Initiator: the first envelope went out with the KNOCK (optimistic send, RPC.md §3).
  bool optimistic = false;
};

// One-shot timers by id; cancelling a fired or unknown id is a no-op.
class Timers {
 public:
  explicit Timers(uv_loop_t* loop) : loop_(loop) {}
  ~Timers();
  std::uint64_t Start(std::uint64_t ms, std::function<void()> fn);
  void Cancel(std::uint64_t id);
  void CancelAll();  // none of the pending callbacks will run

 private:
  struct Entry;
  uv_loop_t* loop_;
  std::unordered_map<std::uint64_t, Entry*> entries_;
  std::uint64_t next_ = 1;
};

class Daemon {
 public:
  static Result<std::unique_ptr<Daemon>> Create(uv_loop_t* loop, DaemonOptions options);
  ~Daemon();

  // Listens on the socket and starts the network clients. Errors leave nothing running.
  Result<void> Start();
  // Graceful stop: sends STOPPING=1 (sd_notify), closes the socket, reports presence "offline"
  // to the registry when registered (waiting at most 2 s for its answer), then closes the relay
  // link and every handle; uv_run then returns.
  void Stop();
  // SIGHUP: re-reads config.json and policy.json (invalid files keep the running values).
  void Reload();
  bool stopping() const noexcept { return stopping_; }

  // ---- Shared with the method handlers (methods.cpp) and the session logic (sessions.cpp).

  // Opens the storage batch of this loop turn (idempotent).
  void Batch();
  // Runs `fn` after this loop turn's batch committed (at once-ish if no batch is open).
  void AfterCommit(std::function<void()> fn);
  void WakeCheck();

  Bytes SealBlob(std::string_view ad, ByteView plaintext);
  Result<SecretBuffer> OpenBlob(std::string_view ad, ByteView sealed);

  // Events (RPC.md §4) to subscribers: params {subscription, type, time, <key>: payload}. The
  // payload is always nested under its named key (`message`, `session`, `record`, …), so a
  // payload's own members (a message's or audit record's `type`) never collide with the event's.
  void Emit(std::string_view type, std::string_view key, nlohmann::json payload);
  // False when no event would go anywhere: callers on hot paths skip building the payload.
  bool has_subscribers() const noexcept { return !subscriptions_.empty() && rpc_ != nullptr; }
  // The audit log (one JSON object per line), also emitted as an `audit` event {record}. The
  // line is written at the end of the loop turn (after the turn's commit, before its RPC answers
  // go out, one write for the turn).
  void Audit(std::string_view event, nlohmann::json fields);
  // Writes the audit records not written yet (end of a turn, shutdown, the `audit` method).
  void FlushAudit();

  // Method dispatch (the sorted method table lives in methods.cpp).
  void Dispatch(Responder reply, const std::string& method, const nlohmann::json& params);

  // Identity and prekeys.
  Result<nlohmann::json> InitIdentity(bool force, bool& created);
  Result<void> EnsurePrekeys();
  void UploadPrekeys(std::function<void(Result<void>)> done);
  void MaintainPrekeys();

  // Registry presence (POST /v1/registry/status, signed): "online" when the relay link comes up
  // (and after `register`), "offline" on a clean stop. No-op unless registered. `done` (optional)
  // runs when the registry answered or failed.
  void ReportPresence(std::string status, std::function<void()> done = nullptr);

  // Registry lookups cached for policy (tier, reputation) and for keys.
  void LookupPeer(const std::string& amid, bool fresh,
                  std::function<void(Result<nlohmann::json>)> done);

  // Sessions (sessions.cpp).
  struct KnockRequest {
    std::string peer;
    Intent intent;
    SessionRequest session_request;
    std::uint64_t timeout_ms = 30000;
    // Optimistic send: this envelope leaves right after the KNOCK, without waiting for the
    // ACCEPT. `first_done` gets SendEnvelope's result ({session_id, sequence, delivery}).
    struct FirstMessage {
      EnvelopeType type = EnvelopeType::kRequest;
      nlohmann::json payload;
      std::function<void(RpcResult)> done;
      std::string idempotency_key;
    };
    std::optional<FirstMessage> first_message;
  };
  void StartKnock(KnockRequest request, std::function<void(RpcResult)> done);
  // Sends one envelope on an active session. `done` gets {session_id, sequence, delivery}.
  // With an `idempotency_key` already used (kept 24 h), nothing is sent and `done` gets the first
  // send's {session_id, sequence, delivery:"duplicate"}; else the key is recorded with the send.
  void SendEnvelope(const std::string& session_id, EnvelopeType type, nlohmann::json payload,
                    std::function<void(RpcResult)> done, const std::string& idempotency_key = {});
  // For a call with an idempotency key: the first call's {session_id, sequence, delivery:
  // "duplicate"} when the key names a sent message (a conflict error when `session_id` is given
  // and differs), or a conflict error while another call with the key is still in progress.
  std::optional<RpcResult> EarlierSend(const std::string& idempotency_key,
                                       const std::string& session_id = {});
  // Keys of send/reply calls not answered yet (a second call with one is refused, not sent).
  std::unordered_set<std::string> idempotency_in_flight_;
  // Records a session's messages_per_minute (memory and meta "session_mpm:<id>").
  void SetSessionRate(LiveSession& session, std::uint32_t messages_per_minute);
  // Ends a session: "closed" (sends a close envelope when `notify_peer`), "killed", "expired".
  void EndSession(LiveSession& session, std::string_view state, std::string_view reason,
                  bool notify_peer, std::optional<std::string> summary = std::nullopt);
  LiveSession* FindSession(const std::string& session_id);
  std::size_t ActiveSessionCount() const;
  nlohmann::json SessionToJson(const SessionRow& row) const;
  Result<nlohmann::json> MessageToJson(const InboxRow& row);
  // The `recv` result {"messages":[…]} for `rows` as JSON text (the members MessageToJson has,
  // the stored payload text inserted as it is: it was written by Deliver and is authenticated by
  // its seal). With `consume`, marks the rows consumed in the current batch (`recv`); without,
  // leaves them in the inbox for `ack` (`recv` with `peek`). A row that cannot be opened is
  // consumed and left out either way.
  std::string TakeMessages(const std::vector<InboxRow>& rows, bool consume = true);
  // Up to `limit` inbox rows a `recv` may return, oldest first: visible, unconsumed, and not
  // leased to an earlier `recv` with `lease_ms` whose lease is still running.
  Result<std::vector<InboxRow>> SelectForRecv(const std::optional<std::string>& session_id,
                                              const std::optional<std::string>& from, int limit);
  // Hides `rows` from other `recv` calls for `lease_ms`: until `ack`, the end of the lease or the
  // close of `owner` (the connection that took them), whichever comes first; then serves waiting
  // `recv` calls. Leases are not kept across a restart.
  void Lease(const std::vector<InboxRow>& rows, std::uint64_t lease_ms, ConnId owner);
  void OnRelayMessage(const IncomingMessage& message);
  // One relay message, without serving waiters afterwards (OnRelayMessage does both).
  void HandleIncoming(const IncomingMessage& message);
  // An outbox row leaves when the relay has stored the message (queued), refused it for good,
  // or the recipient has acked or nacked it (receipt). "delivered" only means the relay wrote
  // it to the recipient's connection, from its memory: the row stays, and is sent again after a
  // reconnect until a receipt arrives (the recipient's ratchet turns a copy into an ack).
  void OnSendResult(const SendResult& result);
  void OnReceipt(const Receipt& receipt);
  void OnRelayState(bool connected, std::string_view detail);
  void QueueRelaySend(OutboxRow row, std::function<void(std::string)> on_delivery);
  // Writes the row to the relay link unless it was written on this connection already. When
  // the link pushes back (its send queue is full), one retry of the whole outbox is scheduled,
  // however many rows were pushed back.
  void SendOutboxRow(const OutboxRow& row);
  void ResendOutbox();
  void ExpireSessions();
  // Hands messages to waiting recv / send-wait calls after new inbox rows became visible. Runs
  // once, at the end of this loop turn (before its commit), so that a burst of relay messages
  // read in one turn answers a waiting `recv` with all of them rather than with the first.
  void ServeWaiters();

  // Transcripts (store_transcripts in config.json or policy.json): one sealed row per envelope.
  void RecordTranscript(const std::string& session_id, std::string_view direction,
                        const Envelope& envelope);

  // Runs argv as a child process (stdio ignored). `on_exit(exit_status, signal)` runs on the loop
  // when it exits, unless the daemon stops first: Stop() closes the handles of children still
  // running (they keep running, unwatched) and their on_exit never runs. Returns the pid.
  Result<int> SpawnChild(const std::vector<std::string>& argv,
                         std::function<void(std::int64_t, int)> on_exit);

  // Policy file.
  Result<void> LoadPolicy();
  Result<void> SavePolicy(const Policy& policy);

  // Configuration.
  Result<void> SaveConfig();
  void ApplyNetworkConfig();

  // Payload schema check per config_.schema_validation; returns false when the payload must not
  // go through (strict mode). Audits violations in warn and strict mode.
  bool SchemaAllows(const std::string& session_id, std::string_view direction,
                    const nlohmann::json& payload, Error* error);

  uv_loop_t* loop_;
  DaemonOptions options_;
  PayloadSchemas schemas_;
  DaemonConfig config_;
  std::filesystem::path policy_path_;
  Policy policy_ = DefaultPolicy();
  std::int64_t policy_mtime_ = 0;
  std::optional<Store> store_;
  std::optional<SealKey> seal_key_;
  bool passphrase_mode_ = false;
  std::optional<Identity> identity_;
  std::vector<SignedPrekey> signed_prekeys_;               // newest last
  std::map<std::uint32_t, std::int64_t> retired_prekeys_;  // id -> retired_at
  bool prekeys_uploading_ = false;
  bool registered_ = false;
  bool paused_ = false;
  bool stopping_ = false;
  bool stopped_ = false;  // FinishStop ran
  std::string presence_;  // last presence the registry accepted ("" = none yet)
  UnixNanos started_at_ = 0;

  std::unique_ptr<RpcServer> rpc_;
  std::unique_ptr<RegistryClient> registry_;
  std::vector<std::unique_ptr<RegistryClient>> retired_registries_;
  std::unique_ptr<RelayLink> relay_;
  std::vector<std::unique_ptr<RelayLink>> retired_relays_;
  std::string registry_in_use_, relay_in_use_;  // "url|ca_file" of the live clients
  std::uint64_t housekeeping_ticks_ = 0;
  bool registry_reachable_ = false;
  std::string registry_error_;
  Timers timers_;

  struct Child;
  std::unordered_set<Child*> children_;  // running child processes (emergency_stop)

  uv_check_t* check_ = nullptr;
  // Active while this turn left work for the check phase, or while rpc_ is busy-polling.
  uv_idle_t* idle_ = nullptr;
  uv_timer_t* housekeeping_ = nullptr;
  std::vector<std::function<void()>> after_commit_;
  bool serve_waiters_ = false;  // ServeWaiters() was called this turn
  int audit_fd_ = -1;
  std::string audit_pending_;  // records of this turn, not yet written

  std::unordered_map<std::string, std::unique_ptr<LiveSession>> sessions_;

  struct KnockWait {
    std::function<void(RpcResult)> done;
    std::uint64_t timer = 0;
  };
  std::unordered_map<std::string, KnockWait> knock_waits_;

  struct RecvWait {
    Responder reply;
    std::optional<std::string> session_id, from;
    int limit = 100;
    bool peek = false;
    std::uint64_t lease_ms = 0;
    std::uint64_t timer = 0;
  };
  std::map<std::uint64_t, RecvWait> recv_waits_;
  struct InboxLease {
    UnixNanos until = 0;
    ConnId owner = 0;
  };
  std::unordered_map<std::string, InboxLease> leases_;  // by relay message id
  std::uint64_t next_wait_id_ = 1;

  struct ResponseWait {
    std::function<void(RpcResult)> done;  // gets the message object
    std::uint64_t timer = 0;
  };
  std::unordered_map<std::string, ResponseWait> response_waits_;  // by session id

  // Relay delivery: outbox message id -> callbacks waiting for the relay's answer.
  std::unordered_map<std::string, std::vector<std::function<void(std::string)>>> delivery_waits_;
  std::unordered_set<std::string> sent_on_link_;  // outbox ids written on this connection
  bool outbox_retry_scheduled_ = false;           // after the link pushed back
  std::unordered_set<std::string> processing_;    // relay ids being handled (async KNOCKs)
  // Session ids whose KNOCK is being evaluated, with the relay messages of that session that
  // arrived meanwhile (an optimistic first envelope): held unacked until the decision, then
  // handled (ACCEPT) or dropped and audited (REJECT).
  std::unordered_map<std::string, std::vector<IncomingMessage>> knocks_in_evaluation_;
  // Sessions this daemon rejected recently: later messages of them are dropped and audited.
  std::unordered_map<std::string, UnixNanos> rejected_sessions_;
  std::unordered_map<std::string, TokenBucket> knock_buckets_;

  struct CachedLookup {
    nlohmann::json value;
    UnixNanos at = 0;
  };
  std::unordered_map<std::string, CachedLookup> lookup_cache_;

  // Ends subscription `id` whose connection stopped reading its events, telling it so with a
  // final `subscription.dropped` event (sent whatever the subscription's filter).
  void DropSlowSubscription(std::uint64_t id);
  struct Subscription {
    ConnId conn = 0;
    std::set<std::string> events;  // empty = all
  };
  std::map<std::uint64_t, Subscription> subscriptions_;
  std::uint64_t next_subscription_ = 1;

 private:
  Daemon(uv_loop_t* loop, DaemonOptions options);
  Result<void> OpenState();
  Result<void> LoadSealKey();
  Result<void> LoadIdentity();
  void OnCheck();
  void ServeWaitersNow();
  void FinishStop();
  void Housekeeping();
};

// Session-layer helpers (sessions.cpp).
void HandleKnockMessage(Daemon& d, const IncomingMessage& message, Bytes bytes,
                        const PrekeyMessageInfo& info);

}  // namespace agentmesh::daemon
