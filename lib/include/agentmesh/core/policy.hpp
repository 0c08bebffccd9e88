// The KNOCK policy engine: the owner's policy.json and the deterministic accept/reject decision
// for an incoming KNOCK (TECHNICAL_SPEC §5.3, §7.3, §7.4). No LLM, no I/O, no clock, no state:
// the same (policy, facts, context) always gives the same decision, which is what makes
// `amesh policy test` a faithful dry run.
//
// ── policy.json ─────────────────────────────────────────────────────────────────────────────────
// Every key is optional; a missing key takes the default below. Unknown keys, wrong JSON types and
// out-of-range values are errors (kInvalidArgument) whose Error.field is the key path, e.g.
// "rate_limit.knocks_per_minute" or "blocklist[2]", and whose message says what was expected.
//
//   key                          type / range                                   default
//   accept_tiers                 non-empty array of tiers: 2, 1, 1.5 or         all three tiers
//                                "anonymous" | "verified" | "organization"
//   min_reputation               number in [0, 1]                               0
//   accepted_intents             array of intent patterns (below); [] = all      []
//   rejected_intents             array of intent patterns; wins over accepted   []
//   blocklist                    array of AMIDs (validated, canonical base58)   []
//   allowlist                    array of AMIDs; consulted only in strict_mode  []
//   strict_mode                  bool: only allowlisted senders may KNOCK       false
//   max_concurrent_sessions      integer >= 0 (0 = accept no new sessions)     100
//   rate_limit.knocks_per_minute integer >= 1, per sender AMID                  30
//   rate_limit.messages_per_minute
//                                integer >= 1, per session                      100
//   store_transcripts            bool                                           false
//   auto_reject_when_offline     bool                                           false
//   notify_owner.on_knock_from_unknown     bool                                 false
//   notify_owner.on_high_value_transaction bool                                 true
//   notify_owner.on_error                  bool                                 true
//   notify_owner.threshold_usd             number >= 0                          50
//   max_session_ttl_seconds      integer 1..86400 (our addition)                86400
//   default_constraints.max_message_size_bytes  integer 256..1048576            65536
//   default_constraints.max_messages            integer 1..1000000              1000
//   default_constraints.ttl_seconds             integer 1..86400                300
//   default_constraints.signed_messages         bool                            true
//
// Defaults are permissive on who may KNOCK (all tiers, any intent, no reputation floor) and
// conservative on retention (store_transcripts false). max_concurrent_sessions defaults to 100,
// not the spec example's 10: cached sessions stay active for up to 24 h (§5.5), so 10 would lock
// out new peers after a handful of conversations. Integers are JSON integers (30, not 30.0 or
// "30"). The constraint ranges are those an ACCEPT may carry (knock.hpp), so every granted set of
// constraints builds a valid ACCEPT.
//
// Intent patterns: "*" (every intent), "<category>" (that category with any or no subcategory) or
// "<category>/<subcategory>" (exactly that subcategory). Each segment is 1..64 characters of
// [a-z0-9_-]. Matching is exact and case-sensitive.
//
// ── Accepted constraints ────────────────────────────────────────────────────────────────────────
// On accept, the Decision carries the constraints for the ACCEPT message (knock.hpp's
// SessionConstraints, ready for AcceptParams):
//   max_message_size_bytes, max_messages  = default_constraints values;
//   ttl_seconds     = min(requested ttl, max_session_ttl_seconds), where a requested ttl of 0 means
//                     "no preference" and takes default_constraints.ttl_seconds instead. A KNOCK
//                     asking for more than the maximum is not rejected: it is granted the maximum.
//   signed_messages = default_constraints.signed_messages || the KNOCK asked for signed messages
//                     (session_request.signed_messages). With the default (true) every message is
//                     signed; an owner who sets it false lets each KNOCK choose (absent =
//                     unsigned). Either way a KNOCK asking for signatures gets them
//                     (CheckAnswersKnock).
//
// ── Evaluation order ────────────────────────────────────────────────────────────────────────────
// The first failing rule decides; its reason code is what the REJECT carries.
//
//   #  rule (TraceStep.rule)  rejects with           fails when
//   1  paused                 paused                 ctx.paused (circuit breaker pause_new, §7.4)
//   2  signature              invalid_signature      !facts.signature_valid
//   3  blocklist              blocked                sender in policy.blocklist
//   4  tier                   insufficient_trust     registry tier (absent = anonymous) not in
//                                                    accept_tiers
//   5  rate_limit             rate_limited           ctx.knock_rate_exceeded
//   6  intent                 intent_not_accepted    intent matches rejected_intents, or
//                                                    accepted_intents is non-empty and no entry
//                                                    matches
//   7  allowlist              not_in_allowlist       strict_mode and sender not in allowlist
//                                                    (strict mode with an empty allowlist rejects
//                                                    everyone); passes when strict_mode is off
//   8  reputation             low_reputation         registry reputation (absent = 0.5, NaN = 0)
//                                                    < min_reputation
//   9  capacity               at_capacity            ctx.active_sessions >= max_concurrent_sessions
//
// This is the spec's §5.3 order with two deliberate differences: `paused` comes first (a paused
// agent answers every KNOCK the same way), and the tier and reputation are the REGISTRY's values
// carried in PolicyContext. The KNOCK's self-declared `from.tier` / `from.reputation_score` are
// hints only and deliberately are not fields of KnockFacts.
//
// Reject reasons are knock.hpp's RejectReason (wire names via RejectReasonName).
//
// Thread-safety: Policy is a value; EvaluateKnock only reads its arguments and may run on any
// thread concurrently with other readers of the same Policy.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/knock.hpp"
#include "agentmesh/core/tier.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh {

// A set of tiers (for accept_tiers). Iteration order is the trust order.
class TierSet {
 public:
  constexpr TierSet() = default;
  static constexpr TierSet All() { return TierSet(0b111); }

  constexpr bool Contains(Tier tier) const { return (bits_ & Bit(tier)) != 0; }
  constexpr void Insert(Tier tier) { bits_ = static_cast<std::uint8_t>(bits_ | Bit(tier)); }
  constexpr void Erase(Tier tier) { bits_ = static_cast<std::uint8_t>(bits_ & ~Bit(tier)); }
  constexpr bool empty() const { return bits_ == 0; }

  // The members in trust order (anonymous, verified, organization).
  std::vector<Tier> ToVector() const;

  friend constexpr bool operator==(TierSet, TierSet) = default;

 private:
  constexpr explicit TierSet(std::uint8_t bits) : bits_(bits) {}
  static constexpr std::uint8_t Bit(Tier tier) {
    return static_cast<std::uint8_t>(1u << static_cast<unsigned>(tier));
  }
  std::uint8_t bits_ = 0;
};

// A set of AMIDs kept sorted, so membership is a binary search with no allocation.
// Used for blocklist/allowlist; the daemon's `block <amid>` breaker calls Insert.
class AmidSet {
 public:
  AmidSet() = default;

  bool Contains(const Amid& amid) const noexcept;
  // Returns false if `amid` was already present.
  bool Insert(Amid amid);
  // Returns false if `amid` was not present.
  bool Erase(const Amid& amid);

  std::size_t size() const noexcept { return sorted_.size(); }
  bool empty() const noexcept { return sorted_.empty(); }
  // Members in ascending text order; invalidated by Insert/Erase.
  std::span<const Amid> items() const noexcept { return sorted_; }

  friend bool operator==(const AmidSet&, const AmidSet&) = default;

 private:
  std::vector<Amid> sorted_;
};

struct PolicyRateLimit {
  std::uint32_t knocks_per_minute = 30;     // per sender AMID; see rate_limit.hpp
  std::uint32_t messages_per_minute = 100;  // per session
  friend bool operator==(const PolicyRateLimit&, const PolicyRateLimit&) = default;
};

// When the daemon should notify the owner (not used by EvaluateKnock).
struct PolicyNotifyOwner {
  bool on_knock_from_unknown = false;
  bool on_high_value_transaction = true;
  bool on_error = true;
  double threshold_usd = 50;
  friend bool operator==(const PolicyNotifyOwner&, const PolicyNotifyOwner&) = default;
};

// policy.json `default_constraints`; EvaluateKnock turns them into the ACCEPT's
// SessionConstraints (knock.hpp). A separate type so that Policy has equality.
struct PolicyConstraints {
  std::uint32_t max_message_size_bytes = 65536;
  std::uint32_t max_messages = 1000;
  std::uint32_t ttl_seconds = 300;
  bool signed_messages = true;
  friend bool operator==(const PolicyConstraints&, const PolicyConstraints&) = default;
};

// Upper limits of the policy's TTLs and message counts: what an ACCEPT may carry (knock.hpp).
inline constexpr std::uint32_t kPolicyMaxTtlSeconds = 86400;
inline constexpr std::uint32_t kPolicyMaxMessages = 1'000'000;

struct Policy {
  TierSet accept_tiers = TierSet::All();
  double min_reputation = 0.0;
  std::vector<std::string> accepted_intents;  // patterns; empty = all
  std::vector<std::string> rejected_intents;  // patterns
  AmidSet blocklist;
  AmidSet allowlist;
  bool strict_mode = false;
  std::uint32_t max_concurrent_sessions = 100;
  PolicyRateLimit rate_limit;
  bool store_transcripts = false;
  bool auto_reject_when_offline = false;
  PolicyNotifyOwner notify_owner;
  std::uint32_t max_session_ttl_seconds = 86400;
  PolicyConstraints default_constraints;

  friend bool operator==(const Policy&, const Policy&) = default;
};

// The policy with every default from the table above.
Policy DefaultPolicy();

// Validates and converts a policy.json value. Errors: kInvalidArgument with Error.field = the key
// path ("" when the top level is not an object). Never throws.
Result<Policy> ParsePolicy(const nlohmann::json& json);

// Parses policy.json text, then ParsePolicy. Invalid JSON fails with kInvalidArgument whose
// message gives the byte offset of the syntax error.
Result<Policy> ParsePolicyText(std::string_view text);

// Every key, defaults included, in the policy.json format (tiers as spec numbers, AMID lists
// sorted). ParsePolicy(PolicyToJson(p)) == p for every policy that ParsePolicy can return.
nlohmann::json PolicyToJson(const Policy& policy);

// True when intent pattern `pattern` matches the intent (category, subcategory). See the pattern
// rules above; an empty `subcategory` means "none". `pattern` should be valid
// (ValidateIntentPattern); an invalid one is compared literally. Never allocates.
bool IntentPatternMatches(std::string_view pattern, std::string_view category,
                          std::string_view subcategory) noexcept;

// Whether `pattern` is a valid intent pattern; on failure, the message says why.
Result<void> ValidateIntentPattern(std::string_view pattern);

// What the engine needs from a KNOCK (verified or not). The engine does not parse KNOCKs: the
// daemon fills this from a parsed Knock (KnockFactsFrom) or, for `amesh policy test`, from user
// input. The string_views must stay valid while the facts are in use; a Decision never refers to
// them. There is deliberately no tier or reputation here: see PolicyContext.
struct KnockFacts {
  explicit KnockFacts(Amid sender_amid) : sender(std::move(sender_amid)) {}

  Amid sender;                          // from.amid
  bool signature_valid = false;         // the caller verified the Ed25519 signature
  std::string_view intent_category;     // intent.category
  std::string_view intent_subcategory;  // intent.subcategory; empty = none
  std::string_view session_type;        // session_request.type (informational; no rule uses it)
  std::uint32_t ttl_seconds = 0;        // session_request.ttl_seconds; 0 = no preference
  std::optional<bool> signed_messages;  // session_request.signed_messages; absent = no preference
};

// Facts from a parsed KNOCK. The views point into `knock`, which must outlive the facts.
// `signature_valid` is the caller's VerifyKnock result.
KnockFacts KnockFactsFrom(const Knock& knock, bool signature_valid);

// What the engine needs from the receiving daemon's state at the time of the KNOCK.
//
// Rate limiting: the daemon keeps one TokenBucket per sender AMID (rate_limit.hpp, capacity and
// refill from policy.rate_limit.knocks_per_minute), calls TryTake(now) for each KNOCK before
// evaluating it, and passes the answer here with RetryAfter(now). The engine never touches the
// buckets, so a dry run (`amesh policy test`) can pass Available(now) < 1 without side effects.
struct PolicyContext {
  // The pause_new circuit breaker is engaged (spec §7.4).
  bool paused = false;
  // The sender's tier as the REGISTRY reports it (cached). Absent = unknown: treated as anonymous.
  std::optional<Tier> registry_tier;
  // The sender's score as the registry reports it. Absent = unrated: taken as kUnratedReputation.
  std::optional<double> registry_reputation;
  // The sender's KNOCK bucket had no token; retry_after is the wait until it has one (a duration
  // in nanoseconds, rounded up to whole seconds in the REJECT, minimum 1 s).
  bool knock_rate_exceeded = false;
  UnixNanos retry_after = 0;
  // Sessions currently active on this agent (compared with max_concurrent_sessions).
  std::uint32_t active_sessions = 0;
};

// Reputation assumed for a sender the registry has not rated.
inline constexpr double kUnratedReputation = 0.5;

// One rule checked, in order. `rule` points at a static string; `detail` is for the owner (it may
// mention policy contents and must not be sent to the peer).
struct TraceStep {
  std::string_view rule;
  bool passed = false;
  std::string detail;
  friend bool operator==(const TraceStep&, const TraceStep&) = default;
};

struct Decision {
  bool accepted = false;
  std::optional<RejectReason> reason;                // set exactly when rejected
  std::string human_readable;                        // for the REJECT; safe to send to the peer;
                                                     // empty when accepted
  std::optional<std::uint32_t> retry_after_seconds;  // rate_limited only; >= 1, rounded up
  std::optional<SessionConstraints> constraints;     // accepted only
  std::vector<TraceStep> trace;                      // rules checked, in order (if requested)
};

// Evaluates a KNOCK. Pure and deterministic. With with_trace, `trace` lists every rule checked,
// in the order above, ending at the first failure (or all nine on accept). With
// with_trace == false the trace stays empty and an accept allocates nothing (the daemon's hot
// path; a rejection allocates only its human_readable text).
Decision EvaluateKnock(const Policy& policy, const KnockFacts& facts, const PolicyContext& ctx,
                       bool with_trace = true);

// The `amesh policy test` output:
//   {"accepted": bool, "reason": RejectReasonName | null, "human_readable": string,
//    "retry_after_seconds": int | null,
//    "constraints": {max_message_size_bytes, max_messages, ttl_seconds, signed_messages} | null,
//    "trace": [{"rule": string, "passed": bool, "detail": string}, ...]}
nlohmann::json DecisionToJson(const Decision& decision);

}  // namespace agentmesh
