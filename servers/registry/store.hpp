// Storage interface of amesh-registry: one abstract class, two backends (SQLite, PostgreSQL), the
// same behaviour. Every operation maps onto one statement or one short transaction of
// SQL that both engines speak, so a backend is a table of SQL strings plus type conversions.
//
// ── Data model (one table per block, columns as in the SQLite schema, sqlite_store.cpp) ──────────
//   agents             amid PK, signing_public_key, exchange_public_key, tier_rank (0 anonymous,
//                      1 verified, 2 organization), display_name?, organization?, capabilities
//                      (JSON array text, the order given), relay_endpoint?, direct_endpoint?,
//                      status
//                      ('online'|'away'|'offline'|'dnd'), reputation_score, last_seen, created_at,
//                      updated_at (UnixNanos integers), revoked (0/1)
//   agent_capabilities (amid, capability) PK, index on capability: what search matches on
//                      (PostgreSQL; SQLite dropped it in migration 4, its search_terms "=" rows
//                      hold the same pairs)
//   signed_prekeys     (amid, prekey_id) PK, public_key, signature, created_at
//   one_time_prekeys   (amid, prekey_id) PK, public_key, consumed (0/1), consumed_at?
//                      Rows are never deleted, so an id can never be reused for an agent.
//   revocations        amid PK, id, reason, revoked_by, revoked_at, notes?
//   reputation_feedback id PK, target_amid, from_amid, session_id, score, tags (JSON array text),
//                      ip_key, created_at, UNIQUE (from_amid, session_id)
//   completed_sessions session_id PK, id, initiator_amid, receiver_amid, intent, outcome,
//                      started_at?, reporter_amid, created_at
//   organizations      id PK (UUID text), name, domain UNIQUE (lower case), admin_amid,
//                      admin_signing_key, dns_challenge, verified (0/1), verified_at?,
//                      root_certificate? (the org certificate JSON, set on verification),
//                      created_at
//   organization_agents amid PK, organization_id, certificate (agent certificate JSON), added_at
//                      An agent belongs to at most one organisation.
//   oauth_states       state PK, amid, provider, created_at, expires_at, consumed (0/1)
//   agent_verifications (amid, provider) PK, provider_id, verified_at, certificate
//
// Key strings are stored in the canonical prefixed form ("ed25519:<b64>", "x25519:<b64>"); the
// HTTP layer normalises them. Times are UnixNanos (signed 64-bit nanoseconds since the epoch).
//
// Contract for every backend:
//   - Thread-safety: every method may be called from any thread, concurrently; each call is
//     atomic on its own (a backend serialises with a mutex or uses one transaction per call).
//   - Inputs are always passed as bound parameters, never spliced into SQL text.
//   - Errors: kConflict for the uniqueness violations named below, kNotFound where named,
//     kUnavailable when the database is busy or unreachable, kIo / kCorrupt for storage failures.
//     "Not there" is a value (std::nullopt, false), not an error, unless stated.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/tier.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh::registry {

enum class Presence { kOnline, kAway, kOffline, kDnd };

// "online", "away", "offline", "dnd".
std::string_view ToString(Presence presence) noexcept;
// Parses the names above (case-sensitive); kInvalidArgument otherwise.
Result<Presence> PresenceFromName(std::string_view name);

struct AgentRecord {
  std::string amid;
  std::string signing_public_key;   // "ed25519:<b64>"
  std::string exchange_public_key;  // "x25519:<b64>"
  Tier tier = Tier::kAnonymous;
  std::optional<std::string> display_name;
  std::optional<std::string> organization;
  std::vector<std::string> capabilities;  // unique, in the order the agent gave them
  std::optional<std::string> relay_endpoint;
  std::optional<std::string> direct_endpoint;
  Presence status = Presence::kOffline;
  double reputation_score = 0.5;
  UnixNanos last_seen = 0;
  UnixNanos created_at = 0;
  UnixNanos updated_at = 0;
  bool revoked = false;  // read-only here: set by InsertRevocation
};

struct AgentSummary {
  AgentRecord agent;
  std::uint64_t one_time_prekeys = 0;
  std::uint64_t ratings = 0;
};

struct SearchFilter {
  // Exact match of one capability, or, with `prefix`, every capability that starts with it
  // ("travel/" for the query "travel/*"; the empty prefix matches any capability).
  std::string capability;
  bool prefix = false;
  int min_tier_rank = 0;  // TierRank(agent.tier) >= min_tier_rank
  std::optional<double> min_reputation;
  std::optional<Presence> status;
  std::uint32_t limit = 20;  // the caller bounds it (1..100)
  std::uint64_t offset = 0;
};

// Revoked agents are never part of a page nor of `total`. Order: reputation_score DESC,
// last_seen DESC, amid ASC (the last key makes paging stable).
struct SearchPage {
  std::vector<AgentRecord> agents;
  std::uint64_t total = 0;  // matches before paging
};

// Aggregates over agents that are not revoked.
struct RegistryCounts {
  std::uint64_t total_agents = 0;
  std::uint64_t online_agents = 0;
  std::uint64_t revoked_agents = 0;
  std::map<Tier, std::uint64_t> by_tier;         // only tiers that occur
  std::map<Presence, std::uint64_t> by_status;   // only statuses that occur
  double average_reputation = 0;                 // 0 when there are no agents
  std::uint64_t one_time_prekeys_available = 0;  // unconsumed, all agents
};

struct SignedPrekeyRecord {
  std::uint32_t id = 0;
  std::string public_key;  // unprefixed base64 of the X25519 key
  std::string signature;   // base64 of the Ed25519 signature over the raw key
  UnixNanos created_at = 0;
};

struct OneTimePrekeyRecord {
  std::uint32_t id = 0;    // >= 1
  std::string public_key;  // unprefixed base64
};

struct PrekeyStoreResult {
  std::uint64_t stored = 0;     // one-time prekeys inserted
  std::uint64_t ignored = 0;    // one-time prekeys whose id this agent has used before
  std::uint64_t remaining = 0;  // unconsumed one-time prekeys after the call
};

struct BundleRecord {
  SignedPrekeyRecord signed_prekey;                    // the one with the highest id
  std::optional<OneTimePrekeyRecord> one_time_prekey;  // consumed by this call
};

struct RevocationRecord {
  std::string id;  // UUID text
  std::string amid;
  std::string reason;
  std::string revoked_by;  // AMID of the revoker
  UnixNanos revoked_at = 0;
  std::optional<std::string> notes;
};

struct FeedbackRecord {
  std::string id;  // UUID text
  std::string target_amid;
  std::string from_amid;
  std::string session_id;
  double score = 0;
  std::vector<std::string> tags;
  std::string ip_key;  // opaque per-IP-per-day key; empty when unknown
  UnixNanos created_at = 0;
};

// A feedback row joined with the rater's current agent row (what the reputation formula needs).
struct FeedbackRow {
  FeedbackRecord feedback;
  Tier rater_tier = Tier::kAnonymous;
  UnixNanos rater_created_at = 0;
};

struct SessionRecord {
  std::string id;  // UUID text
  std::string session_id;
  std::string initiator_amid;
  std::string receiver_amid;
  std::string intent;
  std::string outcome;  // success | failed | timeout | rejected | cancelled
  std::optional<UnixNanos> started_at;
  std::string reporter_amid;
  UnixNanos created_at = 0;
};

struct SessionCounts {
  std::uint64_t total = 0;
  std::uint64_t successful = 0;  // outcome = 'success'
};

// An organisation (DNS domain) registered by an admin agent.
struct OrganizationRecord {
  std::string id;  // UUID text
  std::string name;
  std::string domain;  // lower-case LDH labels, at least two
  std::string admin_amid;
  std::string admin_signing_key;  // "ed25519:<b64>", the admin's key when it registered
  std::string dns_challenge;      // the random token; the TXT value is "agentmesh-verify=<token>"
  bool verified = false;
  std::optional<UnixNanos> verified_at;
  std::optional<std::string> root_certificate;  // org certificate JSON text, once verified
  UnixNanos created_at = 0;
};

// An OAuth authorization in progress: `state` is the random value sent to the provider.
struct OAuthStateRecord {
  std::string state;
  std::string amid;
  std::string provider;  // "github" | "google"
  UnixNanos created_at = 0;
  UnixNanos expires_at = 0;
  bool consumed = false;
};

// A completed OAuth verification of an agent by one provider.
struct AgentVerificationRecord {
  std::string amid;
  std::string provider;
  std::string provider_id;  // the provider's stable user id (GitHub id, Google sub)
  UnixNanos verified_at = 0;
  std::string certificate;  // the root-signed agent certificate JSON text (tier verified)
};

class RegistryStore {
 public:
  virtual ~RegistryStore() = default;

  // ── Schema ──
  // Applies the versioned migrations not applied yet (each in its own transaction). Idempotent.
  virtual Result<void> Migrate() = 0;
  // The schema version now in the database (0 before any migration).
  virtual Result<int> SchemaVersion() = 0;
  // A short name for logs and /metrics: "sqlite" or "postgresql".
  virtual std::string_view backend() const noexcept = 0;

  // ── Group commit ──
  // Runs `body` on the calling thread with every call this thread makes on the store meanwhile
  // inside one transaction, committed when `body` returns: many small writes pay for one commit.
  // Each call stays atomic on its own (a failed call rolls back to where it began and the batch
  // goes on) and sees the writes made before it in the batch. Other threads' writes wait until
  // the batch ends, so `body` must not block on anything but this store. An error means the
  // batch's commit failed and none of its writes may be taken as durable. The default (a backend
  // whose engine groups commits itself, PostgreSQL) just runs `body`.
  virtual Result<void> RunBatch(const std::function<void()>& body) {
    body();
    return {};
  }
  // Folds the per-connection search counts of server backends that have ended into one row per
  // term (PostgreSQL, migration 5; a no-op elsewhere). Totals are exact with or without it;
  // folding keeps the rows a total sums few. RunBatch folds now and then by itself. Any thread.
  virtual Result<void> FoldCounts() { return {}; }
  // True when the backend has one writer (SQLite): the caller then runs one batch of writes at a
  // time and gathers the writes that arrive meanwhile into the next, instead of queueing batches
  // that would only wait for each other's lock.
  virtual bool single_writer() const noexcept { return false; }

  // ── Agents ──
  // Inserts the agent and its capability (search) rows in one transaction. kConflict when the
  // AMID exists (revoked or not).
  virtual Result<void> InsertAgent(const AgentRecord& agent) = 0;
  virtual Result<std::optional<AgentRecord>> GetAgent(std::string_view amid) = 0;
  // The agent and the counts a lookup shows beside it (one-time prekeys not consumed, feedback
  // rows about it), read in one statement: one snapshot, one round trip.
  virtual Result<std::optional<AgentSummary>> LookupAgent(std::string_view amid) = 0;
  // Sets status and last_seen = updated_at = now. False when the AMID is unknown.
  virtual Result<bool> UpdatePresence(std::string_view amid, Presence status, UnixNanos now) = 0;
  // Replaces the capability list (agents.capabilities and the search rows) in one
  // transaction and sets last_seen = updated_at = now. False when the AMID is unknown.
  virtual Result<bool> ReplaceCapabilities(std::string_view amid,
                                           std::span<const std::string> capabilities,
                                           UnixNanos now) = 0;
  // Sets reputation_score (and updated_at). False when the AMID is unknown.
  virtual Result<bool> SetReputation(std::string_view amid, double score, UnixNanos now) = 0;
  virtual Result<SearchPage> Search(const SearchFilter& filter) = 0;
  virtual Result<RegistryCounts> Counts() = 0;

  // ── Prekeys ──
  // In one transaction: upserts the signed prekey on (amid, id), inserts the one-time prekeys
  // whose (amid, id) does not exist yet (consumed or not; the others are counted as ignored),
  // and counts what remains. The caller has checked that the agent exists.
  virtual Result<PrekeyStoreResult> StorePrekeys(
      std::string_view amid, const SignedPrekeyRecord& signed_prekey,
      std::span<const OneTimePrekeyRecord> one_time_prekeys) = 0;
  // Atomically marks the unconsumed one-time prekey with the lowest id as consumed (at `now`) and
  // returns it with the newest signed prekey. Two concurrent calls never return the same one-time
  // prekey (PostgreSQL: UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING).
  // nullopt when the agent has no signed prekey (nothing is consumed then).
  virtual Result<std::optional<BundleRecord>> TakeBundle(std::string_view amid, UnixNanos now) = 0;
  virtual Result<std::uint64_t> CountOneTimePrekeys(std::string_view amid) = 0;

  // ── Revocation ──
  // Inserts the revocation and sets agents.revoked = 1 in one transaction. kNotFound when the
  // agent is unknown, kConflict when it is already revoked.
  virtual Result<void> InsertRevocation(const RevocationRecord& revocation) = 0;
  virtual Result<std::optional<RevocationRecord>> GetRevocation(std::string_view amid) = 0;
  // Ordered by revoked_at, then amid.
  virtual Result<std::vector<RevocationRecord>> ListRevocations(std::uint32_t limit,
                                                                std::uint64_t offset) = 0;
  virtual Result<std::uint64_t> CountRevocations() = 0;
  // The latest revoked_at, or nullopt when nothing is revoked.
  virtual Result<std::optional<UnixNanos>> LastRevocationAt() = 0;

  // ── Reputation ──
  // kConflict when (from_amid, session_id) exists.
  virtual Result<void> InsertFeedback(const FeedbackRecord& feedback) = 0;
  // Feedback about `target` created at or after `since`, joined with each rater's agent row
  // (raters that are no longer registered are left out). Ordered by created_at, then id.
  virtual Result<std::vector<FeedbackRow>> FeedbackForTarget(std::string_view target,
                                                             UnixNanos since) = 0;
  virtual Result<std::uint64_t> CountFeedback(std::string_view target) = 0;
  // The distinct AMIDs `rater` has given feedback to.
  virtual Result<std::vector<std::string>> RatedTargets(std::string_view rater) = 0;
  // False (and nothing written) when session_id exists.
  virtual Result<bool> InsertSession(const SessionRecord& session) = 0;
  // Sessions in which `amid` is the initiator or the receiver.
  virtual Result<SessionCounts> SessionCountsFor(std::string_view amid) = 0;
  // Non-revoked agents with at least `min_feedback` feedback rows about them, ordered by
  // reputation_score DESC, amid ASC.
  virtual Result<std::vector<std::string>> LeaderboardCandidates(std::uint64_t min_feedback,
                                                                 std::uint32_t limit) = 0;

  // ── Organisations / OAuth ──
  // Not pure: a backend that lacks them answers kUnavailable "not supported by this backend"
  // (the HTTP layer turns that into 503). The SQL of the SQLite backend is plain SQL both
  // engines speak; a backend ports it as it is.
  //
  // Inserts the organisation (verified = 0, no certificate). kConflict when the domain is taken
  // (or the id exists).
  virtual Result<void> InsertOrganization(const OrganizationRecord& /*org*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
  virtual Result<std::optional<OrganizationRecord>> GetOrganization(std::string_view /*id*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
  virtual Result<std::optional<OrganizationRecord>> GetOrganizationByDomain(
      std::string_view /*domain*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
  // Sets verified = 1, verified_at and root_certificate, only while verified = 0 (one statement:
  // UPDATE ... WHERE id = ? AND verified = 0). False when the organisation is unknown or was
  // verified already (the stored certificate then stays).
  virtual Result<bool> MarkOrganizationVerified(std::string_view /*id*/, UnixNanos /*verified_at*/,
                                                std::string_view /*root_certificate*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
  // In one transaction: upserts organization_agents (amid, organization_id, certificate,
  // added_at) and sets the agent's tier_rank = 2, organization = `domain`, updated_at = added_at.
  // kConflict when the agent belongs to another organisation already (nothing written);
  // kNotFound when the agent is unknown or revoked (nothing written).
  virtual Result<void> AddOrganizationAgent(std::string_view /*organization_id*/,
                                            std::string_view /*domain*/, std::string_view /*amid*/,
                                            std::string_view /*certificate*/,
                                            UnixNanos /*added_at*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
  // The agent certificate stored for `amid` by AddOrganizationAgent, or nullopt.
  virtual Result<std::optional<std::string>> GetOrganizationAgentCertificate(
      std::string_view /*amid*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
  virtual Result<std::uint64_t> CountOrganizationAgents(std::string_view /*organization_id*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }

  // Inserts a new state (consumed = 0). kConflict when the state exists.
  virtual Result<void> InsertOAuthState(const OAuthStateRecord& /*state*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
  // The state row whatever its expiry or consumption (for error messages), or nullopt.
  virtual Result<std::optional<OAuthStateRecord>> GetOAuthState(std::string_view /*state*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
  // Deletes states whose expires_at <= now; returns how many.
  virtual Result<std::uint64_t> DeleteExpiredOAuthStates(UnixNanos /*now*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
  // In one transaction:
  //   1. consumes the state: UPDATE oauth_states SET consumed = 1 WHERE state = ? AND amid = ?
  //      AND provider = ? AND consumed = 0 AND expires_at > now — atomically, so of two
  //      concurrent calls with one state exactly one gets past this step;
  //   2. upserts agent_verifications on (amid, provider);
  //   3. raises the agent's tier_rank to at least 1 (an organisation agent stays 2) and sets
  //      updated_at = now, only when it is not revoked.
  // False (nothing written) when step 1 matched no row; kNotFound (rolled back, the state stays
  // unconsumed) when the agent is unknown or revoked.
  virtual Result<bool> CompleteOAuthVerification(std::string_view /*state*/, UnixNanos /*now*/,
                                                 const AgentVerificationRecord& /*verification*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
  // The agent's verifications, ordered by provider.
  virtual Result<std::vector<AgentVerificationRecord>> ListAgentVerifications(
      std::string_view /*amid*/) {
    return Fail(Code::kUnavailable, "not supported by this backend");
  }
};

// Opens the backend named by a database URL: "sqlite:PATH" (created 0600 when absent) or
// "sqlite::memory:", or "postgresql://…" / "postgres://…" (the PostgreSQL backend, pg_store.hpp;
// kUnavailable when the server cannot be reached). Does not migrate. kInvalidArgument for an
// unknown scheme.
Result<std::unique_ptr<RegistryStore>> OpenStore(const std::string& url);

}  // namespace agentmesh::registry
