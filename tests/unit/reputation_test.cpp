#include <catch2/catch.hpp>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agentmesh/core/reputation.hpp"
#include "vectors.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

constexpr UnixNanos kNow = 1'770'000'000 * kNanosPerSecond;
constexpr UnixNanos kHour = 3600 * kNanosPerSecond;
constexpr UnixNanos kDay = 24 * kHour;

using agentmesh::test_vectors::LoadVectors;

Tier TierOf(const json& j) {
  auto t = TierFromJson(j);
  REQUIRE(t);
  return *t;
}

// A verified rater with an old account, from a distinct IP, `hours_ago` before kNow.
Rating R(double score, int ip, double hours_ago = 48, Tier tier = Tier::kVerified) {
  return Rating{.rater = "rater" + std::to_string(ip),
                .rater_tier = tier,
                .score = score,
                .at = kNow - static_cast<UnixNanos>(hours_ago * static_cast<double>(kHour)),
                .ip_key = "ip" + std::to_string(ip),
                .rater_account_created = kNow - 100 * kDay,
                .mutual_only = false};
}

ReputationInputs Established(Tier tier = Tier::kVerified) {
  ReputationInputs in;
  in.tier = tier;
  in.account_created = kNow - 60 * kDay;
  in.sessions_total = 10;
  in.sessions_successful = 10;
  for (int i = 0; i < 5; ++i) in.ratings.push_back(R(1.0, i, 48.0 * (i + 1)));
  return in;
}

}  // namespace

TEST_CASE("reputation vectors", "[reputation]") {
  const json vectors = LoadVectors("reputation.json");
  for (const json& c : vectors.at("cases")) {
    INFO(c.at("name").get<std::string>());
    const json& i = c.at("inputs");
    ReputationInputs in;
    in.tier = TierOf(i.at("tier"));
    in.account_created =
        kNow - static_cast<UnixNanos>(i.at("account_created_days_ago").get<double>() * kDay);
    in.sessions_total = i.value("sessions_total", std::uint64_t{0});
    in.sessions_successful = i.value("sessions_successful", std::uint64_t{0});
    if (i.contains("previous_score")) in.previous_score = i.at("previous_score").get<double>();
    for (const json& r : i.value("ratings", json::array())) {
      in.ratings.push_back(Rating{
          .rater = r.at("rater").get<std::string>(),
          .rater_tier = TierOf(r.at("rater_tier")),
          .score = r.at("score").get<double>(),
          .at = kNow - static_cast<UnixNanos>(r.at("hours_ago").get<double>() * kHour),
          .ip_key = r.value("ip_key", std::string()),
          .rater_account_created =
              kNow - static_cast<UnixNanos>(r.at("rater_created_days_ago").get<double>() * kDay),
          .mutual_only = r.value("mutual_only", false)});
    }
    const ReputationResult got = ComputeReputation(in, kNow);
    const json& e = c.at("expect");
    const auto near = [](double want) { return Approx(want).margin(1e-9).epsilon(0); };
    CHECK(got.score == near(e.at("score").get<double>()));
    CHECK(got.completion_rate == near(e.at("completion_rate").get<double>()));
    CHECK(got.weighted_feedback == near(e.at("weighted_feedback").get<double>()));
    CHECK(got.age_factor == near(e.at("age_factor").get<double>()));
    CHECK(got.tier_bonus == near(e.at("tier_bonus").get<double>()));
    CHECK(got.effective_ratings == near(e.at("effective_ratings").get<double>()));
    CHECK(got.confidence == near(e.at("confidence").get<double>()));
    CHECK(got.formula == near(e.at("formula").get<double>()));
    CHECK(std::string(ToString(got.flag)) == e.at("flag").get<std::string>());
    const auto weights = e.at("rating_weights").get<std::vector<double>>();
    REQUIRE(got.rating_weights.size() == weights.size());
    for (std::size_t k = 0; k < weights.size(); ++k)
      CHECK(got.rating_weights[k] == near(weights[k]));
  }
}

TEST_CASE("new agents start at 0.5 / 0.6 / 0.7", "[reputation]") {
  for (auto [tier, start] : {std::pair{Tier::kAnonymous, 0.5}, std::pair{Tier::kVerified, 0.6},
                             std::pair{Tier::kOrganization, 0.7}}) {
    INFO(ToString(tier));
    ReputationInputs in;
    in.tier = tier;
    in.account_created = kNow;
    const ReputationResult r = ComputeReputation(in, kNow);
    CHECK(r.score == start);  // exact, not approximate
    CHECK(StartingReputation(tier) == start);
    CHECK(r.confidence == 0);
    CHECK(r.flag == ReputationFlag::kNone);
  }
}

TEST_CASE("each anti-gaming rule lowers a hostile rating's weight as documented", "[reputation]") {
  const ReputationInputs base = Established();
  const double clean = ComputeReputation(base, kNow).score;
  REQUIRE(clean == Approx(0.9));

  // A zero-score rating at full weight: 6 effective ratings, average 5/6.
  ReputationInputs plain = base;
  plain.ratings.push_back(R(0.0, 99, 24));
  const ReputationResult full = ComputeReputation(plain, kNow);
  CHECK(full.rating_weights.back() == 1.0);
  CHECK(full.weighted_feedback == Approx(5.0 / 6));

  SECTION("anonymous rater counts 0.5") {
    plain.ratings.back().rater_tier = Tier::kAnonymous;
    const ReputationResult r = ComputeReputation(plain, kNow);
    CHECK(r.rating_weights.back() == 0.5);
    CHECK(r.weighted_feedback == Approx(5.0 / 5.5));
    CHECK(r.score > full.score);
  }
  SECTION("organization rater counts 1.0") {
    plain.ratings.back().rater_tier = Tier::kOrganization;
    CHECK(ComputeReputation(plain, kNow).rating_weights.back() == 1.0);
  }
  SECTION("mutual-only rating counts 0.2") {
    plain.ratings.back().mutual_only = true;
    const ReputationResult r = ComputeReputation(plain, kNow);
    CHECK(r.rating_weights.back() == Approx(0.2));
    CHECK(r.weighted_feedback == Approx(5.0 / 5.2));
    CHECK(r.score > full.score);
  }
  SECTION("rater younger than 7 days counts 0.25") {
    plain.ratings.back().rater_account_created = plain.ratings.back().at - 6 * kDay;
    const ReputationResult r = ComputeReputation(plain, kNow);
    CHECK(r.rating_weights.back() == 0.25);
    CHECK(r.score > full.score);
    plain.ratings.back().rater_account_created = plain.ratings.back().at - 7 * kDay;
    CHECK(ComputeReputation(plain, kNow).rating_weights.back() == 1.0);
  }
  SECTION("same IP within 24 h counts 0") {
    plain.ratings.back().ip_key = base.ratings[0].ip_key;  // rated 48 h ago: outside the window
    CHECK(ComputeReputation(plain, kNow).rating_weights.back() == 1.0);
    plain.ratings.back().at = base.ratings[0].at + 23 * kHour;
    const ReputationResult r = ComputeReputation(plain, kNow);
    CHECK(r.rating_weights.back() == 0.0);
    CHECK(r.score == Approx(clean));
    plain.ratings.back().at = base.ratings[0].at + 24 * kHour;  // exactly 24 h: counts
    CHECK(ComputeReputation(plain, kNow).rating_weights.back() == 1.0);
  }
  SECTION("rules multiply") {
    Rating& r = plain.ratings.back();
    r.rater_tier = Tier::kAnonymous;
    r.mutual_only = true;
    r.rater_account_created = r.at - kDay;
    CHECK(ComputeReputation(plain, kNow).rating_weights.back() == Approx(0.5 * 0.2 * 0.25));
  }
}

TEST_CASE("discounted ratings also count less toward confidence", "[reputation]") {
  ReputationInputs in = Established();
  for (Rating& r : in.ratings) r.rater_tier = Tier::kAnonymous;
  const ReputationResult r = ComputeReputation(in, kNow);
  CHECK(r.effective_ratings == Approx(2.5));
  CHECK(r.confidence == Approx(0.5));
  CHECK(r.score == Approx(0.6 + 0.5 * (0.9 - 0.6)));
  // Same-IP stuffing cannot buy confidence.
  ReputationInputs stuffed;
  stuffed.tier = Tier::kAnonymous;
  stuffed.account_created = kNow - 60 * kDay;
  for (int i = 0; i < 100; ++i) {
    Rating x = R(1.0, 0, 1.0 + i * 0.1);
    x.rater = "sock" + std::to_string(i);
    stuffed.ratings.push_back(x);
  }
  const ReputationResult s = ComputeReputation(stuffed, kNow);
  CHECK(s.effective_ratings == 1.0);
  CHECK(s.confidence == Approx(0.2));
}

TEST_CASE("rapid change flags", "[reputation]") {
  ReputationInputs in = Established();
  in.previous_score = 0.6;
  CHECK(ComputeReputation(in, kNow).flag == ReputationFlag::kRapidIncrease);
  in.previous_score = 0.75;
  CHECK(ComputeReputation(in, kNow).flag == ReputationFlag::kNone);
  in.previous_score = 0.69;
  CHECK(ComputeReputation(in, kNow).flag == ReputationFlag::kRapidIncrease);
  in.previous_score = 1.0;  // 0.9 - 1.0 = -0.1
  CHECK(ComputeReputation(in, kNow).flag == ReputationFlag::kNone);
  for (Rating& r : in.ratings) r.score = 0;
  in.sessions_successful = 0;  // score 0.2
  in.previous_score = 0.6;
  const ReputationResult r = ComputeReputation(in, kNow);
  CHECK(r.score == Approx(0.2));
  CHECK(r.flag == ReputationFlag::kRapidDecrease);
  in.previous_score = std::nullopt;
  CHECK(ComputeReputation(in, kNow).flag == ReputationFlag::kNone);
  CHECK(ToString(ReputationFlag::kRapidIncrease) == "rapid_increase");
  CHECK(ToString(ReputationFlag::kRapidDecrease) == "rapid_decrease");
}

TEST_CASE("robust to bad inputs", "[reputation]") {
  ReputationInputs in = Established();
  in.ratings.push_back(R(std::numeric_limits<double>::quiet_NaN(), 50, 1));
  in.ratings.push_back(R(-4, 51, 1));
  const ReputationResult r = ComputeReputation(in, kNow);
  CHECK(r.rating_weights[5] == 0);  // NaN ignored
  CHECK(r.rating_weights[6] == 1);  // clamped to 0
  CHECK(r.weighted_feedback == Approx(5.0 / 6));
  CHECK(r.score >= 0);
  CHECK(r.score <= 1);
  ReputationInputs extreme;
  extreme.account_created = std::numeric_limits<UnixNanos>::min();
  constexpr UnixNanos kMin = std::numeric_limits<UnixNanos>::min();
  constexpr UnixNanos kMax = std::numeric_limits<UnixNanos>::max();
  Rating young;
  young.at = kMax;
  young.rater_account_created = kMin;  // age overflows: saturates, counts as old
  Rating first;
  first.at = kMin;
  first.ip_key = "x";
  Rating second = first;
  second.at = kMax;
  extreme.ratings = {young, first, second};
  const ReputationResult e = ComputeReputation(extreme, std::numeric_limits<UnixNanos>::max());
  CHECK(e.age_factor == 1);
  CHECK(e.rating_weights[0] == 0.5);         // anonymous, old
  CHECK(e.rating_weights[1] == 0.5 * 0.25);  // created after rating: young
  CHECK(e.rating_weights[2] == 0.5);         // same IP but far apart: counts
}

TEST_CASE("IsMutualOnly", "[reputation]") {
  const std::vector<RatingEdge> pair_only = {{"a", "t"}, {"t", "a"}, {"t", "b"}, {"a", "t"}};
  CHECK(IsMutualOnly("a", "t", pair_only));
  CHECK_FALSE(IsMutualOnly("t", "a", pair_only));  // t also rated b
  CHECK_FALSE(IsMutualOnly("b", "t", pair_only));  // b never rated t
  const std::vector<RatingEdge> wider = {{"a", "t"}, {"t", "a"}, {"a", "c"}};
  CHECK_FALSE(IsMutualOnly("a", "t", wider));  // a rated someone else
  const std::vector<RatingEdge> one_way = {{"a", "t"}};
  CHECK_FALSE(IsMutualOnly("a", "t", one_way));  // not mutual
  CHECK_FALSE(IsMutualOnly("a", "t", {}));
}
