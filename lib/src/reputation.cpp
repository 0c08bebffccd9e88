#include "agentmesh/core/reputation.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>

namespace agentmesh {
namespace {

// to - from, saturated to the int64 range (inputs are caller data; no overflow UB).
UnixNanos Elapsed(UnixNanos from, UnixNanos to) {
  UnixNanos d = 0;
  if (!__builtin_sub_overflow(to, from, &d)) return d;
  return to > from ? std::numeric_limits<UnixNanos>::max() : std::numeric_limits<UnixNanos>::min();
}

}  // namespace

std::string_view ToString(ReputationFlag flag) noexcept {
  switch (flag) {
    case ReputationFlag::kNone:
      return "none";
    case ReputationFlag::kRapidIncrease:
      return "rapid_increase";
    case ReputationFlag::kRapidDecrease:
      return "rapid_decrease";
  }
  return "none";
}

double TierBonus(Tier tier) noexcept {
  switch (tier) {
    case Tier::kAnonymous:
      return 0.0;
    case Tier::kVerified:
      return 0.5;
    case Tier::kOrganization:
      return 1.0;
  }
  return 0.0;
}

double StartingReputation(Tier tier) noexcept {
  return 0.5 + kReputationTierWeight * TierBonus(tier);
}

double RaterTierWeight(Tier tier) noexcept { return tier == Tier::kAnonymous ? 0.5 : 1.0; }

ReputationResult ComputeReputation(const ReputationInputs& in, UnixNanos now) {
  ReputationResult r;
  r.tier_bonus = TierBonus(in.tier);

  if (in.sessions_total > 0) {
    const auto ok = std::min(in.sessions_successful, in.sessions_total);
    r.completion_rate = static_cast<double>(ok) / static_cast<double>(in.sessions_total);
  } else {
    r.completion_rate = 0.5;
  }

  const double age_days =
      static_cast<double>(std::max<UnixNanos>(0, Elapsed(in.account_created, now))) /
      (86400.0 * kNanosPerSecond);
  r.age_factor = std::min(1.0, age_days / kAgeFactorFullDays);

  // Same-IP rule needs chronological order; ties keep input order.
  const auto& ratings = in.ratings;
  std::vector<std::size_t> order(ratings.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return ratings[a].at < ratings[b].at; });

  r.rating_weights.assign(ratings.size(), 0.0);
  std::unordered_map<std::string_view, UnixNanos> last_by_ip;
  double weight_sum = 0;
  double weighted_scores = 0;
  for (std::size_t i : order) {
    const Rating& rating = ratings[i];
    double w = RaterTierWeight(rating.rater_tier);
    if (rating.mutual_only) w *= kMutualOnlyFactor;
    if (Elapsed(rating.rater_account_created, rating.at) < kYoungRaterAge) w *= kYoungRaterFactor;
    if (!rating.ip_key.empty()) {
      auto [it, first] = last_by_ip.try_emplace(rating.ip_key, rating.at);
      if (!first) {
        if (Elapsed(it->second, rating.at) < kSameIpWindow) w = 0;
        it->second = rating.at;
      }
    }
    if (!std::isfinite(rating.score)) w = 0;
    r.rating_weights[i] = w;
    if (w > 0) {
      weight_sum += w;
      weighted_scores += w * std::clamp(rating.score, 0.0, 1.0);
    }
  }
  r.effective_ratings = weight_sum;
  r.weighted_feedback = weight_sum > 0 ? weighted_scores / weight_sum : 0.5;
  r.confidence = std::min(1.0, weight_sum / kRatingsForFullConfidence);

  r.formula = kReputationCompletionWeight * r.completion_rate +
              kReputationFeedbackWeight * r.weighted_feedback +
              kReputationAgeWeight * r.age_factor + kReputationTierWeight * r.tier_bonus;
  const double start = StartingReputation(in.tier);
  r.score = std::clamp(start + r.confidence * (r.formula - start), 0.0, 1.0);

  if (in.previous_score && std::isfinite(*in.previous_score)) {
    const double delta = r.score - *in.previous_score;
    if (delta > kRapidChangeThreshold) r.flag = ReputationFlag::kRapidIncrease;
    if (delta < -kRapidChangeThreshold) r.flag = ReputationFlag::kRapidDecrease;
  }
  return r;
}

bool IsMutualOnly(std::string_view rater, std::string_view target,
                  std::span<const RatingEdge> edges) noexcept {
  bool rater_rated_target = false;
  bool target_rated_rater = false;
  for (const RatingEdge& e : edges) {
    if (e.from == rater) {
      if (e.to != target) return false;
      rater_rated_target = true;
    } else if (e.from == target && e.to == rater) {
      target_rated_rater = true;
    }
  }
  return rater_rated_target && target_rated_rater;
}

}  // namespace agentmesh
