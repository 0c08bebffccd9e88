// The daemon's connection to amesh-relay (docs/PROTOCOL.md §6): one authenticated WebSocket
// (ws:// or wss://, certificate and host name always verified), kept up with jittered exponential
// backoff, carrying `send` frames out and `receive` / `pending_messages` frames in.
//
// Connection cycle: Start() connects (from the loop, never inside the call); after the upgrade the
// link sends a CONNECT frame signed with the identity (core BuildConnectFrame, timestamp = wall
// clock truncated to ms) and waits for `connected`; only then does on_state(true, session_id) fire
// and Send() work. Every attempt that does not end with Stop() ends with exactly one
// on_state(false, detail): a failed attempt (refused connection, TLS verification failure, relay
// auth error, no `connected` within connect_timeout_ms) or the loss of an established connection
// (close, `REPLACED`, missed pong). A reconnect is then scheduled after
// min(max_backoff, min_backoff·2^failures) scaled by a random factor in [0.5, 1.0]. The failure
// count resets when a connection that stayed up for at least 10 s is lost (except after
// `REPLACED`, so two daemons sharing one identity do not fight at full speed). Stop() ends the
// cycle without any callback.
//
// Delivery contract (at-least-once, §6.2): every routed message — a live `receive`, an entry of
// `pending_messages`, or a stored message pushed after `connected` — is passed to on_message. The
// daemon commits it durably and then calls Ack(id); an un-acked message comes back on a later
// connection. The same id may arrive more than once; the daemon de-duplicates by id. Acks made in
// one loop turn are sent as one `ack` frame. A `pending_messages` answer with `remaining` > 0 is
// followed by another get_pending_messages automatically.
//
// Outgoing: Send() writes one `send` frame carrying a client id (the returned message id). The
// relay answers with `send_result` → on_send_result (delivered / queued / refused + relay code).
// A send whose relay answer was only an `error` frame carrying that id is also reported as
// kRefused. When the connection drops before the answer, no result arrives: the caller keeps the
// message in its outbox and resends (with the same message id) after on_state(true).
//
// Lifetime: the loop must outlive the link. Destroying the link aborts the connection and all
// timers without any further callback; run the loop afterwards so the handles are freed.
// Callbacks may call any method of the link, including destroying it.
// Threading: the loop thread only; every callback runs on the loop thread, never from inside a
// method call of the link. Exceptions thrown by handlers are caught and logged to stderr.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh::daemon {

struct RelayLinkOptions {
  std::string url{};      // ws://127.0.0.1:8765/v1/connect or wss://…
  std::string ca_file{};  // wss: PEM trust anchors used instead of the system store (tests);
                          // empty = system store. Verification is always on.
  std::uint64_t min_backoff_ms = 250, max_backoff_ms = 30'000;  // jittered exponential backoff
  std::uint64_t ping_interval_ms = 25'000;  // WebSocket ping; no pong within 10 s → reconnect
  // Additions to the agreed interface (defaults keep existing initialisations valid):
  std::uint64_t connect_timeout_ms = 10'000;    // upgrade + CONNECT → `connected`
  std::size_t max_output_bytes = 1024 * 1024;   // local send buffer bound (→ kLimitExceeded)
  std::size_t max_message_bytes = 1024 * 1024;  // largest relay frame accepted (pending batches)
  std::size_t max_frame_bytes = 64 * 1024;      // largest `send` frame (the relay's limit)
  std::function<UnixNanos()> now{};  // wall clock for CONNECT timestamps; empty = system clock
};

// One routed message. `id` is the relay's message id (what Ack/Nack take).
struct IncomingMessage {
  std::string id{};
  std::string from{};               // the sender's authenticated AMID
  std::string message_type{};       // knock, accept, reject, message, close, status, …
  std::string encrypted_payload{};  // decoded JSON string (opaque to the link)
  std::string timestamp{};          // relay time, as sent
};

enum class SendOutcome { kDelivered, kQueued, kRefused };

struct SendResult {
  std::string message_id{};  // the id returned by Send() (the frame's client id)
  SendOutcome outcome = SendOutcome::kRefused;
  std::string reason{};  // relay code when refused ("RATE_LIMITED", "QUEUE_FULL", …), else empty
  // Additions: the relay's own id for the stored/delivered message (empty when refused), and the
  // relay's retry hint for RATE_LIMITED.
  std::string relay_message_id{};
  std::optional<std::uint32_t> retry_after_seconds{};
};

// Addition: the relay's `receipt` (the recipient acked or nacked a message we sent).
struct Receipt {
  std::string message_id{};        // our client id (as returned by Send)
  std::string relay_message_id{};  // the relay's id
  bool acked = false;              // false = nacked
};

class RelayLink {
 public:
  struct Handlers {
    // Connectivity changes (see "Connection cycle"). connected=true carries the relay session id
    // as detail; false carries a human-readable reason (relay error code and message, close code,
    // connect failure).
    std::function<void(bool connected, std::string_view detail)> on_state{};
    // A routed message (live or from the relay's store). The daemon commits it durably, then calls
    // Ack(id). The same id may arrive again (at-least-once); the daemon de-duplicates.
    std::function<void(const IncomingMessage&)> on_message{};
    std::function<void(const SendResult&)> on_send_result{};
    // Addition (optional): receipts for our sends.
    std::function<void(const Receipt&)> on_receipt{};
  };

  // Does no I/O until Start(). `identity` is moved in and wiped on destruction.
  RelayLink(uv_loop_t* loop, RelayLinkOptions options, Ed25519KeyPair identity, Handlers handlers);
  ~RelayLink();
  RelayLink(const RelayLink&) = delete;
  RelayLink& operator=(const RelayLink&) = delete;

  void Start();  // connect now, then keep reconnecting until Stop(); no-op when started
  void Stop();   // close cleanly (disconnect frame, close 1000); no reconnect; Start() may follow
  bool connected() const noexcept;  // true between on_state(true) and on_state(false)

  // Sends a `send` frame with a fresh message id (returned), or with `message_id` when given (a
  // resend from the outbox; ≤ 64 bytes of [A-Za-z0-9_-], else kInvalidArgument).
  // Errors: kUnavailable when not connected (caller keeps it in its outbox and resends after
  // on_state(true)); kLimitExceeded on local backpressure (output buffer full) or a frame larger
  // than max_frame_bytes; kInvalidArgument for an unknown message_type, a bad message_id or a
  // payload that is not UTF-8. On success the frame is queued (written within the loop turn).
  Result<std::string> Send(const Amid& to, std::string_view message_type,
                           std::string_view encrypted_payload_b64, std::string message_id = {});
  // `ack` for a relay message id. Dropped silently when not connected (the relay redelivers).
  void Ack(std::string_view message_id);
  // Addition: `nack` (the message is undecryptable/unwanted; the relay deletes it and tells the
  // sender). Dropped silently when not connected.
  void Nack(std::string_view message_id, std::string_view reason);
  void RequestPending();  // get_pending_messages; no-op when not connected

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentmesh::daemon
