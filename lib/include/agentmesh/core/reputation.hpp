// The one reputation formula (TECHNICAL_SPEC §8.3), as a pure function the registry calls after
// each rating or session report. It replaces the reference registry's two conflicting
// implementations (wire-reference §3.6): it keeps the seed's anti-gaming rules (route A) and the
// real completion rate (route B), and it gives brand-new agents exactly the spec's starting scores.
//
// ── Components ──────────────────────────────────────────────────────────────────────────────────
//   completion_rate   = sessions_successful / sessions_total; 0.5 when there are no sessions.
//   weighted_feedback = Σ wᵢ·scoreᵢ / Σ wᵢ over the ratings (weights below); 0.5 when Σ wᵢ = 0.
//   age_factor        = min(1, account age in days / 30). Thirty days, as in the seed formula: the
//                       term is only 10 % of the score, and a year-long ramp would mostly punish
//                       honest new agents.
//   tier_bonus        = anonymous 0, verified 0.5, organization 1.
//   formula           = 0.3·completion_rate + 0.4·weighted_feedback + 0.1·age_factor
//                       + 0.2·tier_bonus                                   (the spec's weights)
//
// ── Starting score and the few-ratings rule ─────────────────────────────────────────────────────
//   start(tier)       = 0.5 + 0.2·tier_bonus = 0.5 (anonymous), 0.6 (verified), 0.7 (organization)
//   effective_ratings = Σ wᵢ (so anti-gaming discounts also slow down how fast a score can move)
//   confidence        = min(1, effective_ratings / 5)
//   score             = clamp(start + confidence·(formula − start), 0, 1)
//
// Derivation: the spec wants a new agent at 0.5/0.6/0.7, i.e. a tier offset of +0.1 per step,
// while the formula's tier term 0.2·tier_bonus must stay within its 20 % share; bonus 0, 0.5, 1
// gives 0, +0.1, +0.2 for both. A new agent has no ratings, so confidence = 0 and the score is
// exactly start(tier) whatever its sessions or age. From 5 effective ratings on (e.g. five
// verified raters, or ten anonymous ones) the score is the spec's formula. In between it moves
// linearly from the start toward the formula. Session reports alone therefore do not move the
// score until someone has rated the agent. The best reachable score is 0.8 (anonymous),
// 0.9 (verified) and 1.0 (organization).
//
// ── Rating weights (anti-gaming) ────────────────────────────────────────────────────────────────
// Each rating's weight is the product of:
//   rater tier       anonymous 0.5, verified 1.0, organization 1.0 (Sybil accounts are cheap only
//                    in the anonymous tier; verified humans and organisations count fully);
//   mutual-only      × 0.2 when Rating::mutual_only (the "80 % mutual-only discount": the target
//                    also rated the rater, and the target is the only agent the rater has ever
//                    rated). The caller computes the flag, e.g. with IsMutualOnly() below, because
//                    it needs every rating in the registry, not only this target's;
//   young rater      × 0.25 when the rater's account was less than 7 days old at the rating time
//                    (at − rater_account_created < 7 days);
//   same IP          × 0 when an earlier rating of this target carried the same non-empty ip_key
//                    less than 24 h before this one (earlier = smaller `at`, ties broken by input
//                    order). Every such later rating counts, whoever the rater, so one host
//                    cannot stack ratings. A zero-weight rating still starts a new 24 h window.
// A rating whose score is not finite has weight 0; other scores are clamped to [0, 1].
// The caller chooses which ratings to pass (e.g. the last 30 days, as the seed did).
//
// ── Rapid change ────────────────────────────────────────────────────────────────────────────────
// With previous_score set, new − previous > 0.2 flags kRapidIncrease and < −0.2 flags
// kRapidDecrease, for the registry to queue a review (spec: "rapid score changes trigger
// review"). The flag does not alter the score.
//
// Thread-safety: pure functions; no clock — `now` is passed in.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agentmesh/core/tier.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh {

inline constexpr double kReputationCompletionWeight = 0.3;
inline constexpr double kReputationFeedbackWeight = 0.4;
inline constexpr double kReputationAgeWeight = 0.1;
inline constexpr double kReputationTierWeight = 0.2;
inline constexpr double kRatingsForFullConfidence = 5;
inline constexpr double kAgeFactorFullDays = 30;
inline constexpr double kMutualOnlyFactor = 0.2;
inline constexpr double kYoungRaterFactor = 0.25;
inline constexpr UnixNanos kYoungRaterAge = 7 * 86400 * kNanosPerSecond;
inline constexpr UnixNanos kSameIpWindow = 24 * 3600 * kNanosPerSecond;
inline constexpr double kRapidChangeThreshold = 0.2;

// One peer rating of the target agent.
struct Rating {
  std::string rater;                    // rater AMID (informational; weights do not use it)
  Tier rater_tier = Tier::kAnonymous;   // the rater's tier per the registry, at compute time
  double score = 0.5;                   // 0..1
  UnixNanos at = 0;                     // when the rating was submitted
  std::string ip_key;                   // opaque key of the submitting IP; empty = unknown
  UnixNanos rater_account_created = 0;  // when the rater registered
  bool mutual_only = false;             // see "mutual-only" above
};

struct ReputationInputs {
  Tier tier = Tier::kAnonymous;           // the target's tier
  UnixNanos account_created = 0;          // when the target registered
  std::uint64_t sessions_total = 0;       // sessions reported for the target
  std::uint64_t sessions_successful = 0;  // ... that completed (values above total count as total)
  std::vector<Rating> ratings;            // any order
  std::optional<double> previous_score;   // the stored score before this computation
};

enum class ReputationFlag { kNone, kRapidIncrease, kRapidDecrease };

// "none", "rapid_increase" or "rapid_decrease".
std::string_view ToString(ReputationFlag flag) noexcept;

struct ReputationResult {
  double score = 0;
  double completion_rate = 0;
  double weighted_feedback = 0;
  double age_factor = 0;
  double tier_bonus = 0;
  double effective_ratings = 0;  // Σ weights
  double confidence = 0;         // min(1, effective_ratings / 5)
  double formula = 0;            // the unblended spec formula
  ReputationFlag flag = ReputationFlag::kNone;
  std::vector<double> rating_weights;  // weight of each input rating, in input order
};

// tier_bonus: 0, 0.5, 1.
double TierBonus(Tier tier) noexcept;
// The score of a brand-new agent: 0.5, 0.6, 0.7.
double StartingReputation(Tier tier) noexcept;
// How much a rater's tier counts: 0.5, 1, 1.
double RaterTierWeight(Tier tier) noexcept;

// Computes the score as documented above. Never fails; allocates only rating_weights and a
// scratch index.
ReputationResult ComputeReputation(const ReputationInputs& inputs, UnixNanos now);

// A directed rating relationship: `from` has rated `to` at least once.
struct RatingEdge {
  std::string_view from;
  std::string_view to;
};

// True when `rater` has rated `target`, `target` has rated `rater`, and every edge from `rater`
// goes to `target` (the rater has rated no one else). `edges` may contain duplicates and unrelated
// edges. O(edges).
bool IsMutualOnly(std::string_view rater, std::string_view target,
                  std::span<const RatingEdge> edges) noexcept;

}  // namespace agentmesh
