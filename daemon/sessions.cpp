// The session layer (docs/PROTOCOL.md §11-§12) on top of the relay link: KNOCK out and in,
// ACCEPT/REJECT, envelopes with constraints, in-order delivery to the inbox, the outbox.
#include <fmt/format.h>

#include <variant>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/json_scan.hpp"
#include "daemon.hpp"
#include "util.hpp"

namespace agentmesh::daemon {

namespace {

// Messages of a session held while its KNOCK is evaluated (see HandleIncoming), and of all such
// sessions together (many KNOCKs, from many identities, cannot multiply the first bound).
constexpr std::size_t kMaxHeldBeforeAnswer = 64;
constexpr std::size_t kMaxHeldBeforeAnswers = 1024;

bool IsLive(const LiveSession& s) { return s.row.state == "pending" || s.row.state == "active"; }

std::string InboxAd(const std::string& session_id, std::uint64_t sequence) {
  return fmt::format("agentmeshd:inbox:{}:{}", session_id, sequence);
}

// Base64 size of a ratchet message carrying `plaintext_size` bytes, plus the frame's JSON.
std::size_t EstimatedFrameBytes(std::size_t plaintext_size) {
  const std::size_t binary = plaintext_size + kPrekeyMessageOverhead;
  return (binary + 2) / 3 * 4 + 256;
}

std::optional<Tier> TierOf(const nlohmann::json& lookup) {
  if (!lookup.is_object() || !lookup.contains("tier")) return std::nullopt;
  auto tier = TierFromJson(lookup["tier"]);
  if (!tier) return std::nullopt;
  return *tier;
}

std::optional<double> ReputationOf(const nlohmann::json& lookup) {
  if (!lookup.is_object()) return std::nullopt;
  for (const char* key : {"reputation_score", "reputation"}) {
    auto it = lookup.find(key);
    if (it != lookup.end() && it->is_number()) return it->get<double>();
  }
  return std::nullopt;
}

}  // namespace

void Daemon::RecordTranscript(const std::string& session_id, std::string_view direction,
                              const Envelope& envelope) {
  if (!config_.store_transcripts && !policy_.store_transcripts) return;
  TranscriptRow row;
  row.session_id = session_id;
  row.direction = std::string(direction);
  row.sequence = envelope.sequence;
  row.type = std::string(EnvelopeTypeName(envelope.type));
  row.at = Now();
  row.sealed = SealBlob("agentmeshd:transcript:" + session_id, AsBytes(envelope.Serialize()));
  Batch();
  if (auto r = store_->InsertTranscript(row); !r) LogError("storage: " + r.error().ToString());
}

bool Daemon::SchemaAllows(const std::string& session_id, std::string_view direction,
                          const nlohmann::json& payload, Error* error) {
  if (config_.schema_validation == "off") return true;
  auto r = schemas_.Check(payload);
  if (r) return true;
  LogWarn(fmt::format("session {}: {} payload violates its schema: {}", session_id, direction,
                      r.error().ToString()));
  Audit("schema.invalid", {{"session_id", session_id},
                           {"direction", std::string(direction)},
                           {"field", r.error().field},
                           {"detail", r.error().message},
                           {"mode", config_.schema_validation}});
  if (error != nullptr) *error = r.error();
  return config_.schema_validation != "strict";
}

LiveSession* Daemon::FindSession(const std::string& session_id) {
  auto it = sessions_.find(session_id);
  return it == sessions_.end() ? nullptr : it->second.get();
}

std::size_t Daemon::ActiveSessionCount() const {
  std::size_t n = 0;
  for (const auto& [sid, s] : sessions_) n += s->row.state == "active" ? 1 : 0;
  return n;
}

nlohmann::json Daemon::SessionToJson(const SessionRow& r) const {
  nlohmann::json intent = {{"category", r.intent_category}};
  if (!r.intent_subcategory.empty()) intent["subcategory"] = r.intent_subcategory;
  if (!r.intent_action.empty()) intent["action"] = r.intent_action;
  auto caps = nlohmann::json::parse(r.capabilities, nullptr, false);
  if (caps.is_discarded()) caps = nlohmann::json::array();
  nlohmann::json out = {
      {"session_id", r.session_id},
      {"peer", r.peer},
      {"role", r.role},
      {"intent", intent},
      {"type", r.type},
      {"state", r.state},
      {"created_at", FormatRfc3339Z(r.created_at / kNanosPerMilli * kNanosPerMilli)},
      {"expires_at", FormatRfc3339Z(r.expires_at / kNanosPerMilli * kNanosPerMilli)},
      {"messages_sent", r.messages_sent},
      {"messages_received", r.messages_received},
      {"capabilities", caps},
      {"constraints",
       {{"max_message_size_bytes", r.max_message_size},
        {"max_messages", r.max_messages},
        {"ttl_seconds", r.ttl_seconds},
        {"signed_messages", r.signed_messages}}}};
  if (!r.close_reason.empty()) out["reason"] = r.close_reason;
  return out;
}

Result<nlohmann::json> Daemon::MessageToJson(const InboxRow& row) {
  auto plain = OpenBlob(InboxAd(row.session_id, row.sequence), row.payload_sealed);
  if (!plain) return std::unexpected(plain.error());
  auto payload =
      nlohmann::json::parse(plain->Expose().begin(), plain->Expose().end(), nullptr, false);
  if (payload.is_discarded()) return Fail(Code::kCorrupt, "stored payload is not JSON");
  return nlohmann::json{
      {"id", row.relay_id},
      {"session_id", row.session_id},
      {"from", row.from},
      {"to", row.to},
      {"sequence", row.sequence},
      {"type", row.type},
      {"timestamp", row.timestamp},
      {"payload", std::move(payload)},
      {"received_at", FormatRfc3339Z(row.received_at / kNanosPerMilli * kNanosPerMilli)}};
}

std::string Daemon::TakeMessages(const std::vector<InboxRow>& rows, bool consume) {
  std::string out = R"({"messages":[)";
  if (!rows.empty()) Batch();
  bool first = true;
  for (const auto& row : rows) {
    auto plain = OpenBlob(InboxAd(row.session_id, row.sequence), row.payload_sealed);
    if (consume || !plain || plain->size() == 0) (void)store_->ConsumeInbox(row.seq);
    if (!plain || plain->size() == 0) continue;
    // Members in nlohmann's (sorted) order: the same bytes MessageToJson + DumpJson give.
    out += first ? "{" : ",{";
    first = false;
    out += R"("from":)";
    AppendJsonText(out, row.from);
    out += R"(,"id":)";
    AppendJsonText(out, row.relay_id);
    out += R"(,"payload":)";
    out.append(reinterpret_cast<const char*>(plain->Expose().data()), plain->size());
    out += R"(,"received_at":)";
    AppendJsonText(out, FormatRfc3339Z(row.received_at / kNanosPerMilli * kNanosPerMilli));
    out += R"(,"sequence":)";
    out += std::to_string(row.sequence);
    out += R"(,"session_id":)";
    AppendJsonText(out, row.session_id);
    out += R"(,"timestamp":)";
    AppendJsonText(out, row.timestamp);
    out += R"(,"to":)";
    AppendJsonText(out, row.to);
    out += R"(,"type":)";
    AppendJsonText(out, row.type);
    out += '}';
  }
  out += "]}";
  return out;
}

Result<std::vector<InboxRow>> Daemon::SelectForRecv(const std::optional<std::string>& session_id,
                                                    const std::optional<std::string>& from,
                                                    int limit) {
  const UnixNanos now = Now();
  std::erase_if(leases_, [now](const auto& lease) { return lease.second.until <= now; });
  auto rows =
      store_->SelectInbox(session_id, from, std::nullopt, limit + static_cast<int>(leases_.size()));
  if (!rows || leases_.empty()) return rows;
  std::erase_if(*rows, [this](const InboxRow& row) { return leases_.contains(row.relay_id); });
  if (rows->size() > static_cast<std::size_t>(limit)) rows->resize(static_cast<std::size_t>(limit));
  return rows;
}

void Daemon::Lease(const std::vector<InboxRow>& rows, std::uint64_t lease_ms, ConnId owner) {
  if (rows.empty() || lease_ms == 0) return;
  const UnixNanos until = Now() + static_cast<UnixNanos>(lease_ms) * kNanosPerMilli;
  for (const auto& row : rows) leases_[row.relay_id] = InboxLease{until, owner};
  timers_.Start(lease_ms + 1, [this] { ServeWaiters(); });
}

// ---- Outbox -----------------------------------------------------------------------------------

void Daemon::QueueRelaySend(OutboxRow row, std::function<void(std::string)> on_delivery) {
  Batch();
  if (auto r = store_->InsertOutbox(row); !r) {
    LogError("storage: " + r.error().ToString());
    ::_exit(70);
  }
  if (on_delivery) {
    delivery_waits_[row.message_id].push_back(std::move(on_delivery));
    // No relay answer within 5 s: the message stays in the outbox; report it as pending.
    timers_.Start(5000, [this, id = row.message_id] {
      auto it = delivery_waits_.find(id);
      if (it == delivery_waits_.end()) return;
      auto waits = std::move(it->second);
      delivery_waits_.erase(it);
      for (auto& w : waits) w("pending");
    });
  }
  AfterCommit([this, row = std::move(row)] { SendOutboxRow(row); });
}

void Daemon::SendOutboxRow(const OutboxRow& row) {
  bool sent = false;
  if (relay_ && relay_->connected() && !sent_on_link_.contains(row.message_id)) {
    auto to = Amid::Parse(row.to);
    if (to) {
      auto r = relay_->Send(*to, row.message_type, row.payload_b64, row.message_id);
      if (r) {
        sent_on_link_.insert(row.message_id);
        sent = true;
      } else if (r.error().code == Code::kLimitExceeded) {
        // Local backpressure: try the whole outbox again shortly (order is restored by the
        // receiver's sequence check, which holds early envelopes).
        if (!outbox_retry_scheduled_) {
          outbox_retry_scheduled_ = true;
          timers_.Start(50, [this] {
            outbox_retry_scheduled_ = false;
            ResendOutbox();
          });
        }
      } else if (r.error().code != Code::kUnavailable) {
        LogWarn(fmt::format("relay send {}: {}", row.message_id, r.error().ToString()));
      }
    }
  } else if (sent_on_link_.contains(row.message_id)) {
    sent = true;
  }
  if (!sent) {
    auto it = delivery_waits_.find(row.message_id);
    if (it != delivery_waits_.end()) {
      auto waits = std::move(it->second);
      delivery_waits_.erase(it);
      for (auto& w : waits) w("pending");
    }
  }
}

void Daemon::ResendOutbox() {
  if (!relay_ || !relay_->connected()) return;
  auto rows = store_->LoadOutbox();
  if (!rows) {
    LogError("storage: " + rows.error().ToString());
    return;
  }
  for (const auto& row : *rows) {
    if (!sent_on_link_.contains(row.message_id)) SendOutboxRow(row);
  }
}

void Daemon::OnSendResult(const SendResult& r) {
  std::string delivery;
  bool remove = true;
  switch (r.outcome) {
    case SendOutcome::kDelivered:
      delivery = "delivered";
      remove = false;  // until the receipt
      break;
    case SendOutcome::kQueued:
      delivery = "queued";
      break;
    case SendOutcome::kRefused:
      sent_on_link_.erase(r.message_id);
      if (r.reason == "RATE_LIMITED" || r.reason == "QUEUE_FULL" || r.reason.empty() ||
          r.reason == "INTERNAL_ERROR") {
        remove = false;
        delivery = "pending";
        const std::uint64_t wait_ms =
            r.retry_after_seconds ? std::max<std::uint64_t>(*r.retry_after_seconds, 1) * 1000
                                  : 1000;
        timers_.Start(wait_ms, [this] { ResendOutbox(); });
      } else {
        delivery = "refused:" + r.reason;
        LogWarn(fmt::format("relay refused {}: {}", r.message_id, r.reason));
      }
      break;
  }
  if (remove) {
    Batch();
    (void)store_->DeleteOutbox(r.message_id);
    sent_on_link_.erase(r.message_id);
  }
  auto it = delivery_waits_.find(r.message_id);
  if (it != delivery_waits_.end()) {
    auto waits = std::move(it->second);
    delivery_waits_.erase(it);
    for (auto& w : waits) w(delivery);
  }
}

void Daemon::OnReceipt(const Receipt& r) {
  if (!r.acked) {
    LogWarn(fmt::format("the recipient refused message {} (relay id {})", r.message_id,
                        r.relay_message_id));
  }
  Batch();
  (void)store_->DeleteOutbox(r.message_id);
  sent_on_link_.erase(r.message_id);
}

void Daemon::OnRelayState(bool connected, std::string_view detail) {
  sent_on_link_.clear();
  if (connected) {
    LogInfo(fmt::format("relay connected ({})", config_.relay_url));
    Emit("relay.connected", "relay", {{"url", config_.relay_url}});
    AfterCommit([this] { ResendOutbox(); });
    if (!stopping_) ReportPresence("online");
  } else {
    LogInfo(fmt::format("relay disconnected: {}", detail));
    Emit("relay.disconnected", "relay",
         {{"url", config_.relay_url}, {"error", std::string(detail)}});
    auto waits = std::move(delivery_waits_);
    delivery_waits_.clear();
    for (auto& [id, list] : waits) {
      for (auto& w : list) w("pending");
    }
  }
}

// ---- Incoming ---------------------------------------------------------------------------------

void Daemon::OnRelayMessage(const IncomingMessage& m) {
  HandleIncoming(m);
  ServeWaiters();
}

namespace {

void AckAfterCommit(Daemon& d, const std::string& relay_id) {
  d.Batch();
  (void)d.store_->MarkSeen(relay_id, Now());
  d.AfterCommit([&d, relay_id] {
    if (d.relay_) d.relay_->Ack(relay_id);
  });
}

// For a message the session's ratchet has accepted: no seen mark. The ratchet state committed
// in the same transaction answers any later copy with kReplay (acked, dropped); a seen mark
// would add an insert at a random place in its index for every message. A copy from a chain
// older than the ratchet remembers (kMaxPreviousRatchetKeys) fails authentication and is nacked,
// which drops it too; the relay sends unacked messages first on reconnect, so it does not occur.
void AckAfterRatchetCommit(Daemon& d, const std::string& relay_id) {
  d.Batch();
  if (WithholdRatchetAcks()) return;
  d.AfterCommit([&d, relay_id] {
    if (d.relay_) d.relay_->Ack(relay_id);
  });
}

void Nack(Daemon& d, const IncomingMessage& m, std::string_view reason) {
  LogWarn(fmt::format("dropping relay message {} from {}: {}", m.id, m.from, reason));
  if (d.relay_) d.relay_->Nack(m.id, reason);
}

void Deliver(Daemon& d, LiveSession& s, const Envelope& env, const std::string& relay_id);

// Verifies and applies one envelope of an active session (ratchet already advanced).
void HandleEnvelope(Daemon& d, LiveSession& s, const Envelope& env, const std::string& relay_id) {
  const UnixNanos now = Now();
  auto peer_key = ParseEd25519Key(s.row.peer_signing_key);
  if (!peer_key) return;
  const EnvelopeCheck check{.session_id = s.row.session_id,
                            .sender = *Amid::Parse(s.row.peer),
                            .receiver = d.identity_->amid,
                            .sender_key = *peer_key,
                            .signed_messages = s.row.signed_messages,
                            .max_message_size_bytes = s.row.max_message_size};
  if (auto r = VerifyEnvelope(env, check, now); !r) {
    const bool size = r.error().code == Code::kLimitExceeded;
    d.Audit("constraint.violated", {{"session_id", s.row.session_id},
                                    {"peer", s.row.peer},
                                    {"reason", size ? "max_message_size" : "invalid_envelope"},
                                    {"detail", r.error().ToString()}});
    d.EndSession(s, "closed", size ? "max_message_size_exceeded" : "protocol_violation", true);
    return;
  }
  if (env.sequence < s.row.next_recv_seq) return;  // replay
  if (auto held = d.store_->HeldExists(s.row.session_id, env.sequence); held && *held) return;
  if (now > s.row.expires_at) {
    d.EndSession(s, "expired", "ttl", false);
    return;
  }
  if (env.type != EnvelopeType::kClose &&
      s.row.messages_sent + s.row.messages_received + 1 > s.row.max_messages) {
    d.Audit("constraint.violated",
            {{"session_id", s.row.session_id}, {"peer", s.row.peer}, {"reason", "max_messages"}});
    d.EndSession(s, "closed", "max_messages_exceeded", true);
    return;
  }
  if (env.type != EnvelopeType::kClose && s.messages_per_minute > 0) {
    // The peer's rate, measured on its signed envelope timestamps (what its own bucket saw).
    if (!s.recv_bucket)
      s.recv_bucket = TokenBucket::PerMinute(s.messages_per_minute, env.timestamp);
    if (!s.recv_bucket->TryTake(env.timestamp)) {
      d.Audit("constraint.violated", {{"session_id", s.row.session_id},
                                      {"peer", s.row.peer},
                                      {"reason", "messages_per_minute"},
                                      {"limit", s.messages_per_minute}});
      d.EndSession(s, "closed", "rate_limit_exceeded", true);
      return;
    }
  }
  if (env.type != EnvelopeType::kClose) ++s.row.messages_received;
  s.dirty = true;
  if (env.sequence > s.row.next_recv_seq) {
    // Early: hold it until the gap is filled (the relay may reorder after a refusal/resend).
    auto count = d.store_->CountHeld(s.row.session_id);
    if (count && *count >= 2000) {
      d.EndSession(s, "closed", "sequence_gap", true);
      return;
    }
    InboxRow row;
    row.relay_id = relay_id;
    row.session_id = s.row.session_id;
    row.from = s.row.peer;
    row.to = d.identity_->amid.str();
    row.sequence = env.sequence;
    row.type = std::string(EnvelopeTypeName(env.type));
    row.timestamp = FormatRfc3339Z(env.timestamp);
    const std::string text = env.Serialize();
    row.payload_sealed = d.SealBlob(InboxAd(row.session_id, row.sequence), AsBytes(text));
    row.received_at = now;
    row.held = true;
    (void)d.store_->InsertInbox(row);
    return;
  }
  Deliver(d, s, env, relay_id);
  while (IsLive(s)) {
    auto held = d.store_->TakeHeld(s.row.session_id, s.row.next_recv_seq);
    if (!held || !*held) break;
    auto text =
        d.OpenBlob(InboxAd((*held)->session_id, (*held)->sequence), (*held)->payload_sealed);
    if (!text) break;
    auto parsed = ParseEnvelope(
        std::string_view(reinterpret_cast<const char*>(text->Expose().data()), text->size()));
    if (!parsed) break;
    Deliver(d, s, *parsed, (*held)->relay_id);
  }
}

void Deliver(Daemon& d, LiveSession& s, const Envelope& env, const std::string& relay_id) {
  ++s.row.next_recv_seq;
  s.dirty = true;
  d.RecordTranscript(s.row.session_id, "in", env);
  const std::string type(EnvelopeTypeName(env.type));
  if (env.type != EnvelopeType::kClose &&
      !d.SchemaAllows(s.row.session_id, "in", env.payload, nullptr)) {
    d.SendEnvelope(s.row.session_id, EnvelopeType::kError,
                   MakeErrorPayload("SCHEMA_VALIDATION_FAILED",
                                    "the payload does not match the schema it names"),
                   nullptr);
    return;
  }
  if (env.type == EnvelopeType::kClose) {
    std::string reason = "closed_by_peer";
    if (auto it = env.payload.find("reason"); it != env.payload.end() && it->is_string()) {
      reason = it->get<std::string>();
    }
    d.EndSession(s, "closed", reason, false);
    return;
  }
  const UnixNanos now = Now();
  InboxRow row;
  row.relay_id = relay_id;
  row.session_id = s.row.session_id;
  row.from = s.row.peer;
  row.to = d.identity_->amid.str();
  row.sequence = env.sequence;
  row.type = type;
  row.timestamp = FormatRfc3339Z(env.timestamp);
  const std::string payload = DumpJson(env.payload);
  row.payload_sealed = d.SealBlob(InboxAd(row.session_id, row.sequence), AsBytes(payload));
  row.received_at = now;
  auto inserted = d.store_->InsertInbox(row);
  if (!inserted) {
    LogError("storage: " + inserted.error().ToString());
    ::_exit(70);
  }
  d.Audit("message.received", {{"session_id", row.session_id},
                               {"peer", row.from},
                               {"sequence", row.sequence},
                               {"type", type}});
  if (d.has_subscribers()) {
    d.Emit("message.received", "message",
           {{"id", row.relay_id},
            {"session_id", row.session_id},
            {"from", row.from},
            {"to", row.to},
            {"sequence", row.sequence},
            {"type", type},
            {"timestamp", row.timestamp},
            {"payload", env.payload},
            {"received_at", FormatRfc3339Z(now / kNanosPerMilli * kNanosPerMilli)}});
  }
  if (s.row.type == "request_response" && s.row.role == "initiator" &&
      (env.type == EnvelopeType::kResponse || env.type == EnvelopeType::kError)) {
    d.EndSession(s, "closed", "completed", false);
  }
}

void HandleAnswer(Daemon& d, LiveSession& s, const SessionMessage& msg) {
  const UnixNanos now = Now();
  auto peer_key = ParseEd25519Key(s.row.peer_signing_key);
  auto knock = ParseKnock(s.row.knock);
  auto wait_it = d.knock_waits_.find(s.row.session_id);
  auto finish = [&](RpcResult result) {
    if (wait_it == d.knock_waits_.end()) return;
    auto w = std::move(wait_it->second);
    d.knock_waits_.erase(wait_it);
    d.timers_.Cancel(w.timer);
    w.done(std::move(result));
  };
  if (!peer_key || !knock) return;
  if (const auto* accept = std::get_if<Accept>(&msg)) {
    auto ok = VerifyAccept(*accept, *peer_key, d.identity_->amid, now);
    if (ok) ok = CheckAnswersKnock(*accept, *knock);
    if (!ok) {
      d.EndSession(s, "killed", "invalid_accept", false);
      finish(RpcFail(ok.error()));
      return;
    }
    s.row.state = "active";
    s.row.max_message_size = accept->constraints.max_message_size_bytes;
    s.row.max_messages = accept->constraints.max_messages;
    s.row.ttl_seconds = accept->constraints.ttl_seconds;
    s.row.signed_messages = accept->constraints.signed_messages;
    s.row.capabilities = DumpJson(accept->capabilities);
    if (auto c = accept->object.find("constraints"); c != accept->object.end() && c->is_object()) {
      if (auto m = c->find("messages_per_minute"); m != c->end() && m->is_number_unsigned()) {
        d.SetSessionRate(s, static_cast<std::uint32_t>(
                                std::min<std::uint64_t>(m->get<std::uint64_t>(), 1'000'000'000)));
      }
    }
    s.row.expires_at = now + static_cast<UnixNanos>(s.row.ttl_seconds) * kNanosPerSecond;
    s.row.updated_at = now;
    s.dirty = true;
    d.Audit("session.opened", {{"session_id", s.row.session_id},
                               {"peer", s.row.peer},
                               {"role", "initiator"},
                               {"intent", s.row.intent_category}});
    d.Emit("session.opened", "session", d.SessionToJson(s.row));
    finish(d.SessionToJson(s.row));
  } else if (const auto* reject = std::get_if<Reject>(&msg)) {
    auto ok = VerifyReject(*reject, *peer_key, d.identity_->amid, now);
    if (ok) ok = CheckAnswersKnock(*reject, *knock);
    if (!ok) {
      d.EndSession(s, "killed", "invalid_reject", false);
      finish(RpcFail(ok.error()));
      return;
    }
    const std::string reason(RejectReasonName(reject->reason));
    s.row.state = "rejected";
    s.row.close_reason = reason;
    s.row.updated_at = now;
    s.dirty = true;
    d.Audit("knock.rejected_by_peer",
            {{"session_id", s.row.session_id}, {"peer", s.row.peer}, {"reason", reason}});
    d.Emit("session.closed", "session",
           {{"session_id", s.row.session_id},
            {"peer", s.row.peer},
            {"state", "rejected"},
            {"reason", reason}});
    nlohmann::json data = {{"reason", reason}};
    if (reject->human_readable) data["human_readable"] = *reject->human_readable;
    if (reject->retry_after_seconds) data["retry_after_seconds"] = *reject->retry_after_seconds;
    finish(RpcFail(-32011, "knock_rejected", fmt::format("the peer rejected the KNOCK: {}", reason),
                   std::move(data)));
  }
}

}  // namespace

void Daemon::HandleIncoming(const IncomingMessage& m) {
  if (!identity_ || processing_.contains(m.id)) return;
  auto seen = store_->Seen(m.id);
  if (seen && *seen) {
    AfterCommit([this, id = m.id] {
      if (relay_) relay_->Ack(id);
    });
    return;
  }
  auto bytes = Base64Decode(m.encrypted_payload);
  if (!bytes) return Nack(*this, m, "payload is not base64");
  auto header = ParseMessageHeader(*bytes);
  if (!header) return Nack(*this, m, "not a ratchet message");
  const std::string sid = UuidFromSessionId(header->session_id);
  if (auto ev = knocks_in_evaluation_.find(sid); ev != knocks_in_evaluation_.end()) {
    // The session's KNOCK is still being evaluated: hold this (optimistic) message, unacked.
    for (const auto& held : ev->second) {
      if (held.id == m.id) return;
    }
    // A daemon sends one optimistic message before the answer; a peer that sends a flood is not
    // given the memory to hold it.
    std::size_t held_in_all = 0;
    for (const auto& [evaluated, held] : knocks_in_evaluation_) held_in_all += held.size();
    if (ev->second.size() >= kMaxHeldBeforeAnswer || held_in_all >= kMaxHeldBeforeAnswers) {
      return Nack(*this, m, "too many messages before its session's KNOCK was answered");
    }
    ev->second.push_back(m);
    return;
  }
  if (rejected_sessions_.contains(sid) && !FindSession(sid)) {
    Audit("message.dropped", {{"session_id", sid}, {"peer", m.from}, {"reason", "knock_rejected"}});
    AckAfterCommit(*this, m.id);
    return;
  }
  if (LiveSession* s = FindSession(sid); s != nullptr && s->ratchet && IsLive(*s)) {
    if (s->row.peer != m.from) return Nack(*this, m, "session belongs to another peer");
    auto plain = s->ratchet->Decrypt(*bytes);
    if (!plain) {
      if (plain.error().code == Code::kReplay) {
        LogDebug(fmt::format("relay message {}: already received (or its key was evicted), acked",
                             m.id));
        AckAfterCommit(*this, m.id);
        return;
      }
      return Nack(*this, m, plain.error().ToString());
    }
    s->dirty = true;
    Batch();
    const std::string_view text(reinterpret_cast<const char*>(plain->Expose().data()),
                                plain->size());
    auto parsed = ParseSessionPlaintext(text, std::max<std::size_t>(s->row.max_message_size, 1));
    if (!parsed) {
      if (parsed.error().code == Code::kLimitExceeded && s->row.state == "active") {
        Audit("constraint.violated",
              {{"session_id", sid}, {"peer", s->row.peer}, {"reason", "max_message_size"}});
        EndSession(*s, "closed", "max_message_size_exceeded", true);
      } else {
        LogWarn(
            fmt::format("session {}: undecodable plaintext: {}", sid, parsed.error().ToString()));
      }
    } else if (std::holds_alternative<Envelope>(*parsed)) {
      if (s->row.state == "active") {
        HandleEnvelope(*this, *s, std::get<Envelope>(*parsed), m.id);
      }
    } else if (std::holds_alternative<Accept>(*parsed) || std::holds_alternative<Reject>(*parsed)) {
      if (s->row.role == "initiator" && s->row.state == "pending") {
        HandleAnswer(*this, *s, *parsed);
      }
    }
    AckAfterRatchetCommit(*this, m.id);
    return;
  }
  if (header->kind != MessageKind::kPrekeyMessage) {
    // A late message of a session that has ended here: nothing to do with it.
    AckAfterCommit(*this, m.id);
    return;
  }
  if (auto consumed = store_->SessionConsumed(sid); consumed && *consumed) {
    AckAfterCommit(*this, m.id);
    return;
  }
  if (sessions_.contains(sid)) {  // ended in this loop turn
    AckAfterCommit(*this, m.id);
    return;
  }
  HandleKnockMessage(*this, m, std::move(*bytes), *header->prekey);
}

// ---- Receiving a KNOCK --------------------------------------------------------------------------

void HandleKnockMessage(Daemon& d, const IncomingMessage& m, Bytes bytes,
                        const PrekeyMessageInfo& info) {
  const std::string sid = UuidFromSessionId(info.session_id);
  const SignedPrekey* spk = nullptr;
  for (const auto& k : d.signed_prekeys_) {
    if (k.id == info.signed_prekey_id) spk = &k;
  }
  if (spk == nullptr) return Nack(d, m, "unknown signed prekey");
  std::optional<OneTimePrekey> opk;
  if (info.one_time_prekey_id) {
    auto row = d.store_->GetOneTimePrekey(*info.one_time_prekey_id);
    if (!row || !*row) return Nack(d, m, "one-time prekey already used");
    auto secret =
        d.OpenBlob(fmt::format("agentmeshd:opk:{}", *info.one_time_prekey_id), (*row)->sealed);
    if (!secret) return Nack(d, m, "one-time prekey does not open");
    X25519SecretKey sk;
    X25519SecretKey::FromBytes(secret->Expose(), sk);
    opk.emplace(OneTimePrekey{*info.one_time_prekey_id, X25519KeyPair::FromSecret(std::move(sk))});
  }
  auto responded =
      RatchetSession::Respond(d.identity_->exchange, *spk, opk ? &*opk : nullptr, bytes);
  if (!responded) return Nack(d, m, "prekey message: " + responded.error().ToString());
  const std::string_view text(reinterpret_cast<const char*>(responded->plaintext.Expose().data()),
                              responded->plaintext.size());
  auto parsed = ParseSessionPlaintext(text);
  if (!parsed || !std::holds_alternative<Knock>(*parsed)) {
    return Nack(d, m, "the first message of a session is not a KNOCK");
  }
  auto knock = std::make_shared<Knock>(std::get<Knock>(std::move(*parsed)));
  const UnixNanos received_at = Now();
  bool signature_ok = static_cast<bool>(VerifyKnock(*knock, d.identity_->amid, received_at));
  signature_ok = signature_ok && knock->from.exchange_public_key == info.initiator_identity_key &&
                 knock->from.amid.str() == m.from && knock->session_id == sid;
  nlohmann::json intent = {{"category", knock->intent.category}};
  if (knock->intent.subcategory) intent["subcategory"] = *knock->intent.subcategory;
  if (knock->intent.action) intent["action"] = *knock->intent.action;
  d.Emit("knock.received", "knock", {{"session_id", sid}, {"from", m.from}, {"intent", intent}});
  d.Audit("knock.received", {{"session_id", sid}, {"peer", m.from}, {"intent", intent}});

  auto session = std::make_shared<RatchetSession>(std::move(responded->session));
  const std::optional<std::uint32_t> opk_id = info.one_time_prekey_id;
  d.processing_.insert(m.id);
  d.knocks_in_evaluation_.try_emplace(sid);
  const IncomingMessage msg = m;
  d.LookupPeer(
      m.from, false,
      [&d, msg, sid, knock, session, opk_id, signature_ok, intent](Result<nlohmann::json> lookup) {
        d.processing_.erase(msg.id);
        std::vector<IncomingMessage> held;
        if (auto ev = d.knocks_in_evaluation_.find(sid); ev != d.knocks_in_evaluation_.end()) {
          held = std::move(ev->second);
          d.knocks_in_evaluation_.erase(ev);
        }
        if (d.stopping_ || !d.identity_) return;  // held messages stay unacked: redelivered
        if (auto consumed = d.store_->SessionConsumed(sid);
            d.sessions_.contains(sid) || (consumed && *consumed)) {
          AckAfterCommit(d, msg.id);  // a resent copy of a KNOCK answered meanwhile
          for (const auto& h : held) d.HandleIncoming(h);
          d.ServeWaiters();
          return;
        }
        const UnixNanos now = Now();
        PolicyContext ctx;
        ctx.paused = d.paused_;
        if (lookup) {
          ctx.registry_tier = TierOf(*lookup);
          ctx.registry_reputation = ReputationOf(*lookup);
        }
        auto bucket = d.knock_buckets_.find(msg.from);
        if (bucket != d.knock_buckets_.end() &&
            bucket->second.capacity != d.policy_.rate_limit.knocks_per_minute) {
          d.knock_buckets_.erase(bucket);  // the policy's rate changed
          bucket = d.knock_buckets_.end();
        }
        if (bucket == d.knock_buckets_.end()) {
          bucket = d.knock_buckets_
                       .emplace(msg.from,
                                TokenBucket::PerMinute(d.policy_.rate_limit.knocks_per_minute, now))
                       .first;
        }
        if (!bucket->second.TryTake(now)) {
          ctx.knock_rate_exceeded = true;
          ctx.retry_after = bucket->second.RetryAfter(now);
        }
        ctx.active_sessions = static_cast<std::uint32_t>(d.ActiveSessionCount());
        const Decision decision =
            EvaluateKnock(d.policy_, KnockFactsFrom(*knock, signature_ok), ctx, true);
        SystemRng rng;
        auto live = std::make_unique<LiveSession>();
        SessionRow& row = live->row;
        row.session_id = sid;
        row.peer = msg.from;
        row.role = "receiver";
        row.intent_category = knock->intent.category;
        row.intent_subcategory = knock->intent.subcategory.value_or("");
        row.intent_action = knock->intent.action.value_or("");
        row.type = std::string(SessionTypeName(knock->session_request.type));
        row.knock = knock->Serialize();
        row.peer_signing_key = FormatEd25519Key(knock->from.signing_public_key);
        row.created_at = row.updated_at = now;
        Result<Bytes> ciphertext = Fail(Code::kInternal, "unset");
        std::string message_type;
        if (decision.accepted && decision.constraints) {
          const SessionConstraints c = *decision.constraints;
          const AcceptParams params{.session_id = sid,
                                    .to = knock->from.amid,
                                    .capabilities = d.config_.capabilities,
                                    .constraints = c,
                                    .timestamp = now};
          auto accept = BuildAccept(params, d.identity_->signing);
          const std::uint32_t mpm = d.policy_.rate_limit.messages_per_minute;
          if (accept && mpm > 0) {
            // constraints.messages_per_minute: the policy's per-session rate, granted in the
            // signed ACCEPT (an extension member; peers that do not know it ignore it).
            nlohmann::json object = accept->object;
            object["constraints"]["messages_per_minute"] = mpm;
            if (auto r = SignObject(object, d.identity_->signing.secret); !r) {
              accept = std::unexpected(r.error());
            } else {
              accept = ParseAccept(object);
            }
          }
          if (!accept) {
            LogError("cannot build an ACCEPT: " + accept.error().ToString());
            return;
          }
          live->messages_per_minute = mpm;
          ciphertext = session->Encrypt(AsBytes(accept->Serialize()), rng);
          message_type = "accept";
          row.state = "active";
          row.max_message_size = c.max_message_size_bytes;
          row.max_messages = c.max_messages;
          row.ttl_seconds = c.ttl_seconds;
          row.signed_messages = c.signed_messages;
          row.capabilities = DumpJson(d.config_.capabilities);
          row.expires_at = now + static_cast<UnixNanos>(c.ttl_seconds) * kNanosPerSecond;
        } else {
          RejectParams params{.session_id = sid,
                              .to = knock->from.amid,
                              .reason = decision.reason.value_or(RejectReason::kIntentNotAccepted),
                              .human_readable = std::nullopt,
                              .retry_after_seconds = decision.retry_after_seconds,
                              .timestamp = now};
          if (!decision.human_readable.empty()) params.human_readable = decision.human_readable;
          auto reject = BuildReject(params, d.identity_->signing);
          if (!reject) {
            LogError("cannot build a REJECT: " + reject.error().ToString());
            return;
          }
          ciphertext = session->Encrypt(AsBytes(reject->Serialize()), rng);
          message_type = "reject";
          row.state = "rejected";
          row.close_reason = std::string(RejectReasonName(params.reason));
          row.expires_at = now;
        }
        if (!ciphertext) {
          LogError("cannot encrypt the KNOCK answer: " + ciphertext.error().ToString());
          return;
        }
        d.Batch();
        if (row.state == "active") live->ratchet.emplace(std::move(*session));
        live->dirty = true;
        if (row.state != "active") (void)d.store_->UpsertSession(row);
        (void)d.store_->MarkSessionConsumed(sid, now);
        if (opk_id) (void)d.store_->DeleteOneTimePrekey(*opk_id);
        OutboxRow out;
        out.message_id = NewMessageId();
        out.to = msg.from;
        out.message_type = message_type;
        out.payload_b64 = Base64Encode(*ciphertext);
        out.session_id = sid;
        out.created_at = now;
        const std::string relay_id = msg.id;
        AckAfterCommit(d, relay_id);
        d.QueueRelaySend(std::move(out), nullptr);
        nlohmann::json decided = {{"session_id", sid},
                                  {"from", msg.from},
                                  {"decision", decision.accepted ? "accept" : "reject"}};
        if (decision.reason) decided["reason"] = std::string(RejectReasonName(*decision.reason));
        d.Emit("knock.decided", "decision", decided);
        nlohmann::json audit = {{"session_id", sid},
                                {"peer", msg.from},
                                {"intent", intent},
                                {"decision", decision.accepted ? "accept" : "reject"}};
        if (decision.reason) audit["reason"] = std::string(RejectReasonName(*decision.reason));
        d.Audit("knock.decided", audit);
        const bool accepted = row.state == "active";
        nlohmann::json opened = d.SessionToJson(row);
        if (accepted) {
          LiveSession& stored = *live;
          d.sessions_[sid] = std::move(live);
          d.SetSessionRate(stored, stored.messages_per_minute);
          d.Audit(
              "session.opened",
              {{"session_id", sid}, {"peer", msg.from}, {"role", "receiver"}, {"intent", intent}});
          d.Emit("session.opened", "session", opened);
        }
        if (accepted) {
          // Envelopes that came with the KNOCK (optimistic send): delivered now, in order.
          for (const auto& h : held) d.HandleIncoming(h);
          d.ServeWaiters();
        } else {
          d.rejected_sessions_[sid] = now;
          for (const auto& h : held) {
            d.Audit("message.dropped",
                    {{"session_id", sid}, {"peer", h.from}, {"reason", "knock_rejected"}});
            AckAfterCommit(d, h.id);
          }
        }
        if (opk_id) d.MaintainPrekeys();
      });
}

// ---- Sending ----------------------------------------------------------------------------------

void Daemon::StartKnock(KnockRequest request, std::function<void(RpcResult)> done) {
  if (!identity_) {
    done(RpcFail(-32012, "not_initialized", "no identity yet: run `amesh init`"));
    return;
  }
  auto peer = Amid::Parse(request.peer);
  if (!peer) {
    done(RpcFail(MakeError(Code::kInvalidArgument, "not an AMID", "amid")));
    return;
  }
  if (*peer == identity_->amid) {
    done(RpcFail(MakeError(Code::kInvalidArgument, "cannot knock on yourself", "amid")));
    return;
  }
  if (policy_.blocklist.Contains(*peer)) {
    done(RpcFail(MakeError(Code::kPermissionDenied, "the peer is in your blocklist", "amid")));
    return;
  }
  auto shared = std::make_shared<KnockRequest>(std::move(request));
  LookupPeer(
      shared->peer, true,
      [this, shared, peer = *peer, done = std::move(done)](Result<nlohmann::json> lookup) mutable {
        if (!lookup) {
          Error e = lookup.error();
          if (e.code == Code::kNotFound) e.message = "unknown AMID: " + shared->peer;
          done(RpcFail(e));
          return;
        }
        auto signing_text = lookup->value("signing_public_key", std::string());
        auto exchange_text = lookup->value("exchange_public_key", std::string());
        auto peer_signing = ParseEd25519Key(signing_text);
        auto peer_exchange = ParseX25519Key(exchange_text);
        if (!peer_signing || !peer_exchange || Amid::FromPublicKey(*peer_signing) != peer) {
          done(RpcFail(
              MakeError(Code::kAuthFailed, "the registry's keys for this AMID do not match")));
          return;
        }
        registry_->FetchBundle(peer, [this, shared, peer, peer_signing = *peer_signing,
                                      peer_exchange = *peer_exchange,
                                      done = std::move(done)](Result<PrekeyBundle> bundle) mutable {
          if (stopping_ || !identity_) return;
          if (!bundle) {
            done(RpcFail(bundle.error()));
            return;
          }
          if (bundle->identity_key != peer_exchange) {
            done(RpcFail(MakeError(Code::kAuthFailed,
                                   "the prekey bundle's identity key is not the registered one")));
            return;
          }
          SystemRng rng;
          const std::string sid = NewSessionId(rng);
          auto sid_bytes = SessionIdFromUuid(sid);
          auto ratchet =
              RatchetSession::Initiate(identity_->exchange, *bundle, peer_signing, *sid_bytes, rng);
          if (!ratchet) {
            done(RpcFail(ratchet.error()));
            return;
          }
          const UnixNanos now = Now();
          KnockParams params{.session_id = sid,
                             .to = peer,
                             .intent = shared->intent,
                             .session_request = shared->session_request,
                             .timestamp = now};
          if (!config_.display_name.empty()) params.display_name = config_.display_name;
          auto knock = BuildKnock(params, identity_->signing, identity_->exchange.public_key);
          if (!knock) {
            done(RpcFail(knock.error()));
            return;
          }
          const std::string knock_text = knock->Serialize();
          auto ciphertext = ratchet->Encrypt(AsBytes(knock_text), rng);
          if (!ciphertext) {
            done(RpcFail(ciphertext.error()));
            return;
          }
          Batch();
          auto live = std::make_unique<LiveSession>();
          SessionRow& row = live->row;
          row.session_id = sid;
          row.peer = peer.str();
          row.role = "initiator";
          row.intent_category = shared->intent.category;
          row.intent_subcategory = shared->intent.subcategory.value_or("");
          row.intent_action = shared->intent.action.value_or("");
          row.type = std::string(SessionTypeName(shared->session_request.type));
          row.state = "pending";
          row.signed_messages = shared->session_request.signed_messages;
          row.ttl_seconds = shared->session_request.ttl_seconds;
          row.peer_signing_key = FormatEd25519Key(peer_signing);
          row.knock = knock_text;
          row.created_at = row.updated_at = now;
          row.expires_at =
              now + static_cast<UnixNanos>(shared->timeout_ms) * kNanosPerMilli + kNanosPerSecond;
          live->ratchet.emplace(std::move(*ratchet));
          live->dirty = true;
          sessions_[sid] = std::move(live);
          OutboxRow out;
          out.message_id = NewMessageId();
          out.to = peer.str();
          out.message_type = "knock";
          out.payload_b64 = Base64Encode(*ciphertext);
          out.session_id = sid;
          out.created_at = now;
          QueueRelaySend(std::move(out), nullptr);
          nlohmann::json intent = {{"category", shared->intent.category}};
          if (shared->intent.subcategory) intent["subcategory"] = *shared->intent.subcategory;
          if (shared->intent.action) intent["action"] = *shared->intent.action;
          Audit("knock.sent", {{"session_id", sid}, {"peer", peer.str()}, {"intent", intent}});
          if (shared->first_message) {
            // Optimistic send: the first envelope right behind the KNOCK (same outbox order).
            auto first = std::move(*shared->first_message);
            shared->first_message.reset();
            if (LiveSession* s = FindSession(sid)) s->optimistic = true;
            SendEnvelope(sid, first.type, std::move(first.payload), std::move(first.done),
                         first.idempotency_key);
          }
          const std::uint64_t timer = timers_.Start(shared->timeout_ms, [this, sid] {
            auto it = knock_waits_.find(sid);
            if (it == knock_waits_.end()) return;
            auto w = std::move(it->second);
            knock_waits_.erase(it);
            if (LiveSession* s = FindSession(sid); s != nullptr && s->row.state == "pending") {
              Batch();
              EndSession(*s, "expired", "knock_timeout", false);
            }
            w.done(RpcFail(MakeError(Code::kTimeout, "no answer to the KNOCK in time")));
          });
          knock_waits_[sid] = KnockWait{std::move(done), timer};
        });
      });
}

std::optional<RpcResult> Daemon::EarlierSend(const std::string& idempotency_key,
                                             const std::string& session_id) {
  if (idempotency_key.empty()) return std::nullopt;
  auto earlier = store_->FindSentKey(idempotency_key);
  if (!earlier) return RpcFail(earlier.error());
  if (!*earlier) return std::nullopt;
  if (!session_id.empty() && (*earlier)->session_id != session_id) {
    return RpcFail(MakeError(
        Code::kConflict,
        fmt::format("idempotency_key was used for a message in session {}", (*earlier)->session_id),
        "idempotency_key"));
  }
  return nlohmann::json{{"session_id", (*earlier)->session_id},
                        {"sequence", (*earlier)->sequence},
                        {"delivery", "duplicate"}};
}

void Daemon::SendEnvelope(const std::string& session_id, EnvelopeType type, nlohmann::json payload,
                          std::function<void(RpcResult)> done, const std::string& idempotency_key) {
  const bool want_reply = static_cast<bool>(done);
  if (!done) done = [](RpcResult) {};
  if (auto earlier = EarlierSend(idempotency_key, session_id)) {
    done(std::move(*earlier));
    return;
  }
  LiveSession* s = FindSession(session_id);
  if (s == nullptr) {
    auto rows = store_->ListSessions(std::nullopt, 100000);
    if (rows) {
      for (const auto& r : *rows) {
        if (r.session_id == session_id) {
          done(RpcFail(
              MakeError(Code::kConflict, fmt::format("the session is {}", r.state), "session_id")));
          return;
        }
      }
    }
    done(RpcFail(MakeError(Code::kNotFound, "no such session", "session_id")));
    return;
  }
  // Before the ACCEPT only the optimistic first message goes out: a receiver holds just a few
  // messages ahead of its answer (PROTOCOL.md §11.4) and drops the rest.
  const bool optimistic = s->row.state == "pending" && s->optimistic && s->row.last_sent_seq == 0;
  if (s->row.state == "pending" && s->optimistic && !optimistic) {
    done(RpcFail(MakeError(Code::kConflict,
                           "the session is pending: its KNOCK is not answered yet; send again "
                           "once it is active",
                           "session_id")));
    return;
  }
  if ((s->row.state != "active" && !optimistic) || !s->ratchet) {
    done(RpcFail(
        MakeError(Code::kConflict, fmt::format("the session is {}", s->row.state), "session_id")));
    return;
  }
  if (type != EnvelopeType::kClose) {
    Error schema_error;
    if (!SchemaAllows(session_id, "out", payload, &schema_error)) {
      done(RpcFail(schema_error));
      return;
    }
  }
  const UnixNanos now = Now();
  if (now > s->row.expires_at) {
    Batch();
    EndSession(*s, "expired", "ttl", false);
    done(RpcFail(MakeError(Code::kConflict, "the session has expired", "session_id")));
    return;
  }
  if (type != EnvelopeType::kClose &&
      s->row.messages_sent + s->row.messages_received + 1 > s->row.max_messages) {
    Batch();
    Audit("constraint.violated",
          {{"session_id", session_id}, {"peer", s->row.peer}, {"reason", "max_messages"}});
    EndSession(*s, "closed", "max_messages_reached", true);
    done(RpcFail(MakeError(
        Code::kLimitExceeded,
        fmt::format("the session allows {} messages; it is now closed", s->row.max_messages),
        "payload")));
    return;
  }
  if (type != EnvelopeType::kClose && s->messages_per_minute > 0) {
    if (!s->send_bucket) s->send_bucket = TokenBucket::PerMinute(s->messages_per_minute, now);
    if (!s->send_bucket->TryTake(now)) {
      const UnixNanos wait = s->send_bucket->RetryAfter(now);
      RpcError e = ToRpcError(MakeError(
          Code::kLimitExceeded,
          fmt::format("the session allows {} messages per minute (ACCEPT constraint); try again "
                      "later",
                      s->messages_per_minute),
          "payload"));
      e.data["retry_after_seconds"] = (wait + kNanosPerSecond - 1) / kNanosPerSecond;
      e.data["messages_per_minute"] = s->messages_per_minute;
      done(std::unexpected(std::move(e)));
      return;
    }
  }
  const EnvelopeParams params{.session_id = session_id,
                              .sequence = s->row.last_sent_seq + 1,
                              .from = identity_->amid,
                              .to = *Amid::Parse(s->row.peer),
                              .type = type,
                              .timestamp = now,
                              .payload = std::move(payload),
                              .max_message_size_bytes = s->row.max_message_size};
  auto env = s->row.signed_messages ? BuildSignedEnvelope(params, identity_->signing)
                                    : BuildUnsignedEnvelope(params);
  if (!env) {
    Error e = env.error();
    if (e.code == Code::kLimitExceeded) {
      e.message = fmt::format("the message exceeds the session's max_message_size_bytes ({})",
                              s->row.max_message_size);
      e.field = "payload";
    }
    done(RpcFail(e));
    return;
  }
  const std::string text = env->Serialize();
  if (EstimatedFrameBytes(text.size()) > config_.relay_max_frame_bytes) {
    done(RpcFail(MakeError(Code::kLimitExceeded,
                           fmt::format("the message is too large for the relay ({} bytes max)",
                                       config_.relay_max_frame_bytes),
                           "payload")));
    return;
  }
  SystemRng rng;
  auto ciphertext = s->ratchet->Encrypt(AsBytes(text), rng);
  if (!ciphertext) {
    done(RpcFail(ciphertext.error()));
    return;
  }
  Batch();
  if (!idempotency_key.empty()) {
    if (auto r = store_->InsertSentKey(idempotency_key, session_id, params.sequence, now); !r) {
      LogError("storage: " + r.error().ToString());
      ::_exit(70);
    }
  }
  RecordTranscript(session_id, "out", *env);
  s->row.last_sent_seq = params.sequence;
  if (type != EnvelopeType::kClose) ++s->row.messages_sent;
  s->row.updated_at = now;
  s->dirty = true;
  OutboxRow out;
  out.message_id = NewMessageId();
  out.to = s->row.peer;
  out.message_type = type == EnvelopeType::kClose ? "close" : "message";
  out.payload_b64 = Base64Encode(*ciphertext);
  out.session_id = session_id;
  out.sequence = params.sequence;
  out.created_at = now;
  const std::uint64_t sequence = params.sequence;
  Audit("message.sent", {{"session_id", session_id},
                         {"peer", s->row.peer},
                         {"sequence", sequence},
                         {"type", std::string(EnvelopeTypeName(type))}});
  std::function<void(std::string)> on_delivery;
  if (want_reply) {
    on_delivery = [this, session_id, sequence, idempotency_key,
                   done = std::move(done)](std::string delivery) {
      if (delivery.starts_with("refused:")) {
        if (!idempotency_key.empty()) {  // not sent: a retry with the key must try again
          Batch();
          (void)store_->DeleteSentKey(idempotency_key);
        }
        done(RpcFail(MakeError(
            Code::kLimitExceeded,
            fmt::format("the relay refused the message ({})", delivery.substr(8)), "payload")));
        return;
      }
      if (has_subscribers()) {
        Emit("delivery.status", "delivery",
             {{"session_id", session_id}, {"sequence", sequence}, {"delivery", delivery}});
      }
      done(nlohmann::json{
          {"session_id", session_id}, {"sequence", sequence}, {"delivery", delivery}});
    };
  }
  QueueRelaySend(std::move(out), std::move(on_delivery));
  if (s->row.role == "receiver" && s->row.type == "request_response" &&
      (type == EnvelopeType::kResponse || type == EnvelopeType::kError)) {
    EndSession(*s, "closed", "completed", false);
  }
}

void Daemon::SetSessionRate(LiveSession& s, std::uint32_t messages_per_minute) {
  s.messages_per_minute = messages_per_minute;
  s.send_bucket.reset();
  s.recv_bucket.reset();
  if (messages_per_minute == 0) return;
  Batch();
  (void)store_->SetMetaText("session_mpm:" + s.row.session_id, std::to_string(messages_per_minute));
}

void Daemon::EndSession(LiveSession& s, std::string_view state, std::string_view reason,
                        bool notify_peer, std::optional<std::string> summary) {
  if (!IsLive(s)) return;
  Batch();
  if (notify_peer && s.row.state == "active" && s.ratchet) {
    std::optional<std::string_view> sum;
    if (summary) sum = *summary;
    SendEnvelope(s.row.session_id, EnvelopeType::kClose, MakeClosePayload(reason, sum), nullptr);
  }
  s.row.state = std::string(state);
  s.row.close_reason = std::string(reason);
  s.row.updated_at = Now();
  s.dirty = true;
  Audit("session.closed", {{"session_id", s.row.session_id},
                           {"peer", s.row.peer},
                           {"state", s.row.state},
                           {"reason", s.row.close_reason}});
  Emit("session.closed", "session",
       {{"session_id", s.row.session_id},
        {"peer", s.row.peer},
        {"state", s.row.state},
        {"reason", s.row.close_reason}});
}

void Daemon::ExpireSessions() {
  const UnixNanos now = Now();
  for (auto& [sid, s] : sessions_) {
    if (s->row.state == "active" && now > s->row.expires_at) {
      EndSession(*s, "expired", "ttl", false);
    } else if (s->row.state == "pending" && now > s->row.expires_at &&
               !knock_waits_.contains(sid)) {
      EndSession(*s, "expired", "knock_timeout", false);  // e.g. pending across a restart
    }
  }
  ServeWaiters();
}

void Daemon::ServeWaiters() {
  serve_waiters_ = true;
  WakeCheck();
}

void Daemon::ServeWaitersNow() {
  for (auto it = response_waits_.begin(); it != response_waits_.end();) {
    const std::string sid = it->first;
    auto rows = store_->SelectInbox(sid, std::nullopt, std::nullopt, 1000);
    std::optional<InboxRow> hit;
    if (rows) {
      for (auto& r : *rows) {
        if (r.type == "response" || r.type == "error") {
          hit = std::move(r);
          break;
        }
      }
    }
    if (hit) {
      auto message = MessageToJson(*hit);
      Batch();
      (void)store_->ConsumeInbox(hit->seq);
      auto w = std::move(it->second);
      it = response_waits_.erase(it);
      timers_.Cancel(w.timer);
      w.done(message ? RpcResult(std::move(*message)) : RpcFail(message.error()));
      continue;
    }
    LiveSession* s = FindSession(sid);
    if (s == nullptr || !IsLive(*s)) {
      auto w = std::move(it->second);
      it = response_waits_.erase(it);
      timers_.Cancel(w.timer);
      w.done(RpcFail(
          MakeError(Code::kConflict, "the session ended before a response arrived", "session_id")));
      continue;
    }
    ++it;
  }
  for (auto it = recv_waits_.begin(); it != recv_waits_.end();) {
    RecvWait& w = it->second;
    auto rows = SelectForRecv(w.session_id, w.from, w.limit);
    if (!rows || rows->empty()) {
      ++it;
      continue;
    }
    timers_.Cancel(w.timer);
    w.reply.Text(TakeMessages(*rows, !w.peek));
    Lease(*rows, w.lease_ms, w.reply.conn());
    it = recv_waits_.erase(it);
  }
}

}  // namespace agentmesh::daemon
