#include <fmt/format.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <set>
#include <sstream>

#include "agentmesh/core/policy.hpp"
#include "agentmesh/core/rate_limit.hpp"
#include "vectors.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

constexpr std::string_view kAlice = "cRo2vgWSS8SWSUEo1qCRfKF4JQP";
constexpr std::string_view kBob = "2op6XfTNTdLrkGnnP2LNLKYZN2K5";
constexpr std::string_view kMallory = "3gfSNP3EjhpZT6UJBPLdd6tGZSMq";

constexpr std::string_view kAllRules[] = {"paused",    "signature",  "blocklist",
                                          "tier",      "rate_limit", "intent",
                                          "allowlist", "reputation", "capacity"};

Amid A(std::string_view text) {
  auto amid = Amid::Parse(text);
  REQUIRE(amid);
  return *amid;
}

using agentmesh::test_vectors::LoadVectors;

Policy MustParse(const json& j) {
  auto p = ParsePolicy(j);
  INFO((p ? std::string() : p.error().ToString()));
  REQUIRE(p);
  return *p;
}

// A valid KNOCK from alice for travel/flights, 300 s.
KnockFacts Facts(std::string_view sender = kAlice) {
  KnockFacts f(A(sender));
  f.signature_valid = true;
  f.intent_category = "travel";
  f.intent_subcategory = "flights";
  f.session_type = "conversation";
  f.ttl_seconds = 300;
  return f;
}

PolicyContext Ctx() {
  PolicyContext ctx;
  ctx.registry_tier = Tier::kVerified;
  ctx.registry_reputation = 0.8;
  return ctx;
}

std::vector<std::string_view> Rules(const Decision& d) {
  std::vector<std::string_view> out;
  for (const auto& s : d.trace) out.push_back(s.rule);
  return out;
}

// Vector-file facts/context: the json must outlive the returned views.
KnockFacts FactsFromJson(const json& f) {
  KnockFacts facts(A(f.at("sender").get_ref<const std::string&>()));
  facts.signature_valid = f.at("signature_valid").get<bool>();
  facts.intent_category = f.at("category").get_ref<const std::string&>();
  facts.intent_subcategory = f.at("subcategory").get_ref<const std::string&>();
  facts.session_type = f.at("session_type").get_ref<const std::string&>();
  facts.ttl_seconds = f.at("ttl_seconds").get<std::uint32_t>();
  if (f.contains("signed_messages")) facts.signed_messages = f.at("signed_messages").get<bool>();
  return facts;
}

PolicyContext ContextFromJson(const json& c) {
  PolicyContext ctx;
  ctx.paused = c.at("paused").get<bool>();
  if (!c.at("registry_tier").is_null()) {
    auto tier = TierFromJson(c.at("registry_tier"));
    REQUIRE(tier);
    ctx.registry_tier = *tier;
  }
  if (!c.at("registry_reputation").is_null()) {
    ctx.registry_reputation = c.at("registry_reputation").get<double>();
  }
  ctx.knock_rate_exceeded = c.at("knock_rate_exceeded").get<bool>();
  ctx.retry_after = c.at("retry_after_ns").get<UnixNanos>();
  ctx.active_sessions = c.at("active_sessions").get<std::uint32_t>();
  return ctx;
}

template <typename T>
concept HasClaimedTier = requires(T t) {
  t.tier;
}
|| requires(T t) { t.sender_tier; }
|| requires(T t) { t.claimed_tier; };
template <typename T>
concept HasClaimedReputation = requires(T t) {
  t.reputation;
}
|| requires(T t) { t.reputation_score; }
|| requires(T t) { t.sender_reputation; };

}  // namespace

TEST_CASE("policy vectors: (policy, facts, context) -> decision", "[policy]") {
  const json vectors = LoadVectors("policy.json");
  const json& cases = vectors.at("cases");
  REQUIRE(cases.size() >= 40);
  std::set<std::string> reasons_seen;
  for (const json& c : cases) {
    const std::string name = c.at("name").get<std::string>();
    INFO(name);
    const Policy policy = MustParse(c.at("policy"));
    const KnockFacts facts = FactsFromJson(c.at("facts"));
    const PolicyContext ctx = ContextFromJson(c.at("context"));
    const json& expect = c.at("expect");

    const Decision d = EvaluateKnock(policy, facts, ctx);
    CHECK(d.accepted == expect.at("accepted").get<bool>());
    if (expect.at("reason").is_null()) {
      CHECK_FALSE(d.reason.has_value());
      CHECK(d.human_readable.empty());
    } else {
      REQUIRE(d.reason.has_value());
      CHECK(std::string(RejectReasonName(*d.reason)) == expect.at("reason").get<std::string>());
      CHECK_FALSE(d.human_readable.empty());
      reasons_seen.insert(std::string(RejectReasonName(*d.reason)));
    }
    if (expect.at("retry_after_seconds").is_null()) {
      CHECK_FALSE(d.retry_after_seconds.has_value());
    } else {
      REQUIRE(d.retry_after_seconds.has_value());
      CHECK(*d.retry_after_seconds == expect.at("retry_after_seconds").get<std::uint32_t>());
    }
    CHECK(DecisionToJson(d).at("constraints") == expect.at("constraints"));

    // The trace lists the rules in order; all pass except the deciding one of a rejection.
    std::vector<std::string> want_rules = expect.at("trace").get<std::vector<std::string>>();
    REQUIRE(d.trace.size() == want_rules.size());
    for (std::size_t i = 0; i < want_rules.size(); ++i) {
      CHECK(std::string(d.trace[i].rule) == want_rules[i]);
      CHECK(std::string(d.trace[i].rule) == std::string(kAllRules[i]));
      const bool last = i + 1 == want_rules.size();
      CHECK(d.trace[i].passed == (!last || d.accepted));
      CHECK_FALSE(d.trace[i].detail.empty());
    }

    // Without the trace the decision is identical.
    const Decision quiet = EvaluateKnock(policy, facts, ctx, /*with_trace=*/false);
    CHECK(quiet.trace.empty());
    CHECK(quiet.accepted == d.accepted);
    CHECK(quiet.reason == d.reason);
    CHECK(quiet.human_readable == d.human_readable);
    CHECK(quiet.retry_after_seconds == d.retry_after_seconds);
    CHECK(DecisionToJson(quiet).at("constraints") == DecisionToJson(d).at("constraints"));
  }
  // Every reject reason of the spec is reachable.
  CHECK(reasons_seen == std::set<std::string>{"paused", "invalid_signature", "blocked",
                                              "insufficient_trust", "rate_limited",
                                              "intent_not_accepted", "not_in_allowlist",
                                              "low_reputation", "at_capacity"});
}

TEST_CASE("the sender's claimed tier and reputation are not inputs", "[policy]") {
  STATIC_REQUIRE_FALSE(HasClaimedTier<KnockFacts>);
  STATIC_REQUIRE_FALSE(HasClaimedReputation<KnockFacts>);
  // Only the registry's view counts; unknown means anonymous and 0.5.
  Policy p;
  p.accept_tiers = TierSet();
  p.accept_tiers.Insert(Tier::kOrganization);
  PolicyContext ctx;  // registry knows nothing
  Decision d = EvaluateKnock(p, Facts(), ctx);
  CHECK(d.reason == RejectReason::kInsufficientTrust);
  CHECK_THAT(d.trace.back().detail, Catch::Contains("taken as anonymous"));
  ctx.registry_tier = Tier::kOrganization;
  p.min_reputation = 0.5;
  d = EvaluateKnock(p, Facts(), ctx);
  CHECK(d.accepted);
  CHECK_THAT(d.trace[7].detail, Catch::Contains("unrated, taken as 0.5"));
}

TEST_CASE("paused beats everything, and the trace stops at the first failure", "[policy]") {
  Policy p;
  p.blocklist.Insert(A(kAlice));
  p.strict_mode = true;
  p.max_concurrent_sessions = 0;
  p.accepted_intents = {"commerce"};
  KnockFacts f = Facts();
  f.signature_valid = false;
  PolicyContext ctx;
  ctx.paused = true;
  ctx.knock_rate_exceeded = true;
  ctx.active_sessions = 10;
  Decision d = EvaluateKnock(p, f, ctx);
  CHECK(d.reason == RejectReason::kPaused);
  CHECK(Rules(d) == std::vector<std::string_view>{"paused"});
  CHECK_FALSE(d.trace[0].passed);

  // Remove the failures one at a time: each reveals the next rule in spec order.
  ctx.paused = false;
  CHECK(EvaluateKnock(p, f, ctx).reason == RejectReason::kInvalidSignature);
  f.signature_valid = true;
  CHECK(EvaluateKnock(p, f, ctx).reason == RejectReason::kBlocked);
  p.blocklist = AmidSet();
  p.accept_tiers = TierSet();
  p.accept_tiers.Insert(Tier::kOrganization);
  ctx.registry_tier = Tier::kVerified;
  CHECK(EvaluateKnock(p, f, ctx).reason == RejectReason::kInsufficientTrust);
  p.accept_tiers = TierSet::All();
  CHECK(EvaluateKnock(p, f, ctx).reason == RejectReason::kRateLimited);
  ctx.knock_rate_exceeded = false;
  CHECK(EvaluateKnock(p, f, ctx).reason == RejectReason::kIntentNotAccepted);
  p.accepted_intents = {"travel"};
  CHECK(EvaluateKnock(p, f, ctx).reason == RejectReason::kNotInAllowlist);
  p.allowlist.Insert(A(kAlice));
  p.min_reputation = 0.9;
  ctx.registry_reputation = 0.3;
  CHECK(EvaluateKnock(p, f, ctx).reason == RejectReason::kLowReputation);
  ctx.registry_reputation = 0.95;
  Decision cap = EvaluateKnock(p, f, ctx);
  CHECK(cap.reason == RejectReason::kAtCapacity);
  CHECK(Rules(cap) == std::vector<std::string_view>(std::begin(kAllRules), std::end(kAllRules)));
  p.max_concurrent_sessions = 11;
  Decision ok = EvaluateKnock(p, f, ctx);
  CHECK(ok.accepted);
  CHECK(ok.trace.size() == 9);
}

TEST_CASE("NaN registry reputation never passes a threshold", "[policy]") {
  Policy p;
  p.min_reputation = 0.1;
  PolicyContext ctx = Ctx();
  ctx.registry_reputation = std::numeric_limits<double>::quiet_NaN();
  CHECK(EvaluateKnock(p, Facts(), ctx).reason == RejectReason::kLowReputation);
  p.min_reputation = 0;
  CHECK(EvaluateKnock(p, Facts(), ctx).accepted);
}

TEST_CASE("rate limit: the caller's bucket drives rate_limited", "[policy][ratelimit]") {
  const Policy p = DefaultPolicy();
  const UnixNanos t0 = 1'770'000'000 * kNanosPerSecond;
  TokenBucket bucket = TokenBucket::PerMinute(p.rate_limit.knocks_per_minute, t0);
  int accepted = 0;
  Decision last;
  for (int i = 0; i < 31; ++i) {
    PolicyContext ctx = Ctx();
    ctx.knock_rate_exceeded = !bucket.TryTake(t0);
    ctx.retry_after = bucket.RetryAfter(t0);
    last = EvaluateKnock(p, Facts(), ctx);
    accepted += last.accepted ? 1 : 0;
  }
  CHECK(accepted == 30);
  CHECK(last.reason == RejectReason::kRateLimited);
  CHECK(last.retry_after_seconds == 2u);  // 30/min = one token per 2 s
  CHECK_THAT(last.human_readable, Catch::Contains("2 seconds"));
  // Evaluation itself has no side effects on the bucket.
  const TokenBucket before = bucket;
  (void)EvaluateKnock(p, Facts(), Ctx());
  CHECK(bucket == before);
}

TEST_CASE("intent pattern matching", "[policy]") {
  CHECK(IntentPatternMatches("*", "anything", ""));
  CHECK(IntentPatternMatches("*", "travel", "flights"));
  CHECK(IntentPatternMatches("travel", "travel", ""));
  CHECK(IntentPatternMatches("travel", "travel", "flights"));
  CHECK_FALSE(IntentPatternMatches("travel", "travelling", ""));
  CHECK_FALSE(IntentPatternMatches("travel", "trave", ""));
  CHECK(IntentPatternMatches("travel/flights", "travel", "flights"));
  CHECK_FALSE(IntentPatternMatches("travel/flights", "travel", ""));
  CHECK_FALSE(IntentPatternMatches("travel/flights", "travel", "hotels"));
  CHECK_FALSE(IntentPatternMatches("travel/flights", "commerce", "flights"));
  CHECK_FALSE(IntentPatternMatches("travel/flights", "travel", "flights2"));

  for (std::string_view ok : {"*", "travel", "travel/flights", "x-acme_1", "a/b", "0"}) {
    INFO(ok);
    CHECK(ValidateIntentPattern(ok));
  }
  for (std::string_view bad : {"", "Travel", "travel/", "/flights", "travel/*", "travel/a/b",
                               "trav el", "**", "*/x", "travel.flights", "caf\xc3\xa9"}) {
    INFO(bad);
    CHECK_FALSE(ValidateIntentPattern(bad));
  }
  CHECK(ValidateIntentPattern(std::string(64, 'a')));
  CHECK_FALSE(ValidateIntentPattern(std::string(65, 'a')));
  CHECK_THAT(ValidateIntentPattern("travel/*").error().message,
             Catch::Contains("\"travel\" already matches"));
}

TEST_CASE("policy parse errors name the key", "[policy]") {
  struct Case {
    const char* text;
    const char* field;
    const char* message;  // substring
  };
  const std::string bad_amid = std::string(kAlice).substr(0, 20) + "0";  // '0' is not base58
  const Case cases[] = {
      {R"([])", "", "must be a JSON object"},
      {R"("policy")", "", "must be a JSON object"},
      {R"({"accept_tier": [1]})", "accept_tier", "unknown key"},
      {R"({"rate_limit": {"knocks_per_minut": 3}})", "rate_limit.knocks_per_minut", "unknown key"},
      {R"({"notify_owner": {"email": true}})", "notify_owner.email", "unknown key"},
      {R"({"default_constraints": {"ttl": 3}})", "default_constraints.ttl", "unknown key"},
      {R"({"accept_tiers": 1})", "accept_tiers", "expected an array of tiers"},
      {R"({"accept_tiers": []})", "accept_tiers", "at least one tier"},
      {R"({"accept_tiers": [1, 3]})", "accept_tiers[1]", "expected a tier"},
      {R"({"accept_tiers": ["Verified"]})", "accept_tiers[0]", "expected a tier"},
      {R"({"accept_tiers": [true]})", "accept_tiers[0]", "got boolean"},
      {R"({"min_reputation": "0.5"})", "min_reputation", "expected a number from 0 to 1"},
      {R"({"min_reputation": 1.01})", "min_reputation", "expected a number from 0 to 1"},
      {R"({"min_reputation": -0.1})", "min_reputation", "expected a number from 0 to 1"},
      {R"({"accepted_intents": "travel"})", "accepted_intents", "expected an array"},
      {R"({"accepted_intents": ["travel", 7]})", "accepted_intents[1]", "expected an intent"},
      {R"({"rejected_intents": ["Travel"]})", "rejected_intents[0]", "a-z"},
      {R"({"rejected_intents": ["travel/*"]})", "rejected_intents[0]", "already matches"},
      {R"({"blocklist": {}})", "blocklist", "expected an array of AMIDs"},
      {R"({"blocklist": [42]})", "blocklist[0]", "expected an AMID string"},
      {R"({"allowlist": ["nope"]})", "allowlist[0]", "invalid AMID"},
      {R"({"strict_mode": 1})", "strict_mode", "expected true or false"},
      {R"({"strict_mode": "true"})", "strict_mode", "expected true or false"},
      {R"({"max_concurrent_sessions": -1})", "max_concurrent_sessions", "expected an integer"},
      {R"({"max_concurrent_sessions": 1.5})", "max_concurrent_sessions", "expected an integer"},
      {R"({"max_concurrent_sessions": 10.0})", "max_concurrent_sessions", "expected an integer"},
      {R"({"max_concurrent_sessions": "10"})", "max_concurrent_sessions", "expected an integer"},
      {R"({"max_concurrent_sessions": 4294967296})", "max_concurrent_sessions",
       "expected an integer from 0 to 4294967295"},
      {R"({"rate_limit": 30})", "rate_limit", "expected an object"},
      {R"({"rate_limit": {"knocks_per_minute": -5}})", "rate_limit.knocks_per_minute",
       "expected an integer from 1"},
      {R"({"rate_limit": {"knocks_per_minute": 0}})", "rate_limit.knocks_per_minute",
       "expected an integer from 1"},
      {R"({"rate_limit": {"messages_per_minute": null}})", "rate_limit.messages_per_minute",
       "got null"},
      {R"({"store_transcripts": null})", "store_transcripts", "expected true or false"},
      {R"({"auto_reject_when_offline": 0})", "auto_reject_when_offline", "expected true or false"},
      {R"({"notify_owner": []})", "notify_owner", "expected an object"},
      {R"({"notify_owner": {"on_error": "yes"}})", "notify_owner.on_error", "expected true"},
      {R"({"notify_owner": {"threshold_usd": -1}})", "notify_owner.threshold_usd",
       "expected a number >= 0"},
      {R"({"notify_owner": {"threshold_usd": "50"}})", "notify_owner.threshold_usd",
       "expected a number"},
      {R"({"max_session_ttl_seconds": 0})", "max_session_ttl_seconds",
       "expected an integer from 1"},
      {R"({"default_constraints": {"max_messages": -20}})", "default_constraints.max_messages",
       "expected an integer from 1"},
      {R"({"default_constraints": {"max_message_size_bytes": 0}})",
       "default_constraints.max_message_size_bytes", "expected an integer from 256 to 1048576"},
      {R"({"default_constraints": {"max_message_size_bytes": 1048577}})",
       "default_constraints.max_message_size_bytes", "expected an integer from 256 to 1048576"},
      {R"({"default_constraints": {"max_messages": 1000001}})", "default_constraints.max_messages",
       "expected an integer from 1 to 1000000"},
      {R"({"default_constraints": {"ttl_seconds": 86401}})", "default_constraints.ttl_seconds",
       "expected an integer from 1 to 86400"},
      {R"({"max_session_ttl_seconds": 86401})", "max_session_ttl_seconds",
       "expected an integer from 1 to 86400"},
      {R"({"default_constraints": {"signed_messages": "no"}})",
       "default_constraints.signed_messages", "expected true or false"},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    auto p = ParsePolicyText(c.text);
    REQUIRE_FALSE(p);
    CHECK(p.error().code == Code::kInvalidArgument);
    CHECK(p.error().field == c.field);
    CHECK_THAT(p.error().message, Catch::Contains(c.message));
  }

  // A bad AMID deep in a list names its index and Amid::Parse's reason.
  json j = {{"blocklist", {std::string(kBob), std::string(kMallory), bad_amid}}};
  auto p = ParsePolicy(j);
  REQUIRE_FALSE(p);
  CHECK(p.error().field == "blocklist[2]");
  CHECK_THAT(p.error().message, Catch::StartsWith("invalid AMID: "));

  // Non-canonical AMID spelling (an extra leading '1') is rejected too.
  j = {{"allowlist", {"1" + std::string(kAlice)}}};
  p = ParsePolicy(j);
  REQUIRE_FALSE(p);
  CHECK(p.error().field == "allowlist[0]");
}

TEST_CASE("policy text that is not JSON reports where", "[policy]") {
  auto p = ParsePolicyText(R"({"strict_mode": tru})");
  REQUIRE_FALSE(p);
  CHECK(p.error().code == Code::kInvalidArgument);
  CHECK(p.error().field.empty());
  CHECK_THAT(p.error().message, Catch::Contains("not valid JSON (byte "));
  CHECK_FALSE(ParsePolicyText(""));
  CHECK_FALSE(ParsePolicyText(R"({} {})"));
  CHECK_FALSE(ParsePolicyText("{\"a\":1,}"));
}

TEST_CASE("policy defaults", "[policy]") {
  auto p = ParsePolicyText("{}");
  REQUIRE(p);
  CHECK(*p == DefaultPolicy());
  const Policy d = DefaultPolicy();
  CHECK(d.accept_tiers == TierSet::All());
  CHECK(d.min_reputation == 0);
  CHECK(d.accepted_intents.empty());
  CHECK(d.max_concurrent_sessions == 100);
  CHECK(d.rate_limit.knocks_per_minute == 30);
  CHECK(d.rate_limit.messages_per_minute == 100);
  CHECK(d.max_session_ttl_seconds == 86400);
  CHECK(d.default_constraints == PolicyConstraints{65536, 1000, 300, true});
  CHECK_FALSE(d.store_transcripts);
  CHECK(d.notify_owner.on_error);
  CHECK(d.notify_owner.threshold_usd == 50);
}

TEST_CASE("policy round trip", "[policy]") {
  const std::string spec_example = fmt::format(R"({{
    "accept_tiers": [1, 1.5],
    "min_reputation": 0.5,
    "accepted_intents": ["travel", "commerce", "productivity"],
    "rejected_intents": ["marketplace"],
    "blocklist": ["{}", "{}"],
    "allowlist": [],
    "strict_mode": false,
    "max_concurrent_sessions": 10,
    "rate_limit": {{"knocks_per_minute": 30, "messages_per_minute": 100}},
    "store_transcripts": true,
    "auto_reject_when_offline": false,
    "notify_owner": {{"on_knock_from_unknown": false, "on_high_value_transaction": true,
                      "on_error": true, "threshold_usd": 50}}
  }})",
                                               kMallory, kBob);
  auto p = ParsePolicyText(spec_example);
  REQUIRE(p);
  CHECK(p->accept_tiers.ToVector() == std::vector<Tier>{Tier::kVerified, Tier::kOrganization});
  CHECK(p->blocklist.Contains(A(kBob)));
  CHECK(p->blocklist.Contains(A(kMallory)));
  CHECK_FALSE(p->blocklist.Contains(A(kAlice)));
  CHECK(p->max_concurrent_sessions == 10);
  CHECK(p->store_transcripts);

  const json out = PolicyToJson(*p);
  CHECK(out.at("accept_tiers") == json::array({1, 1.5}));
  // Sorted AMID lists.
  CHECK(out.at("blocklist") == json::array({std::string(kBob), std::string(kMallory)}));
  auto again = ParsePolicy(out);
  REQUIRE(again);
  CHECK(*again == *p);
  CHECK(PolicyToJson(*again) == out);

  // Names, duplicates and every optional block.
  Policy q = MustParse(json::parse(fmt::format(R"({{
    "accept_tiers": ["anonymous", 2, "organization"],
    "min_reputation": 1,
    "accepted_intents": ["*"],
    "allowlist": ["{0}", "{0}"],
    "strict_mode": true,
    "max_concurrent_sessions": 0,
    "max_session_ttl_seconds": 3600,
    "notify_owner": {{"threshold_usd": 12.5}},
    "default_constraints": {{"max_message_size_bytes": 1024, "max_messages": 5,
                             "ttl_seconds": 60, "signed_messages": false}}
  }})",
                                               kAlice)));
  CHECK(q.allowlist.size() == 1);
  CHECK(q.accept_tiers.ToVector() == std::vector<Tier>{Tier::kAnonymous, Tier::kOrganization});
  auto q2 = ParsePolicy(PolicyToJson(q));
  REQUIRE(q2);
  CHECK(*q2 == q);
  auto d2 = ParsePolicy(PolicyToJson(DefaultPolicy()));
  REQUIRE(d2);
  CHECK(*d2 == DefaultPolicy());
}

TEST_CASE("tier spellings", "[policy]") {
  CHECK(TierFromJson(json(2)) == Tier::kAnonymous);
  CHECK(TierFromJson(json(2.0)) == Tier::kAnonymous);
  CHECK(TierFromJson(json(1)) == Tier::kVerified);
  CHECK(TierFromJson(json(1.5)) == Tier::kOrganization);
  CHECK(TierFromJson(json("anonymous")) == Tier::kAnonymous);
  CHECK(TierFromJson(json("verified")) == Tier::kVerified);
  CHECK(TierFromJson(json("organization")) == Tier::kOrganization);
  for (const json& bad : {json(0), json(3), json(1.25), json("1"), json("Verified"), json(nullptr),
                          json::array({1}), json(true)}) {
    INFO(bad.dump());
    CHECK_FALSE(TierFromJson(bad));
  }
  for (Tier t : {Tier::kAnonymous, Tier::kVerified, Tier::kOrganization}) {
    CHECK(TierFromJson(TierToJson(t)) == t);
    CHECK(TierFromName(ToString(t)) == t);
  }
  CHECK(TierToJson(Tier::kOrganization).dump() == "1.5");
  CHECK(TierToJson(Tier::kAnonymous).dump() == "2");
  CHECK(TierRank(Tier::kAnonymous) < TierRank(Tier::kVerified));
  CHECK(TierRank(Tier::kVerified) < TierRank(Tier::kOrganization));
}

TEST_CASE("AmidSet keeps one sorted copy", "[policy]") {
  AmidSet s;
  CHECK(s.Insert(A(kMallory)));
  CHECK(s.Insert(A(kAlice)));
  CHECK_FALSE(s.Insert(A(kAlice)));
  CHECK(s.Insert(A(kBob)));
  REQUIRE(s.size() == 3);
  CHECK(std::is_sorted(s.items().begin(), s.items().end()));
  CHECK(s.Contains(A(kBob)));
  CHECK(s.Erase(A(kBob)));
  CHECK_FALSE(s.Erase(A(kBob)));
  CHECK_FALSE(s.Contains(A(kBob)));
  CHECK(s.size() == 2);
}

TEST_CASE("DecisionToJson shape", "[policy]") {
  PolicyContext ctx = Ctx();
  ctx.knock_rate_exceeded = true;
  ctx.retry_after = 3 * kNanosPerSecond;
  const json rejected = DecisionToJson(EvaluateKnock(DefaultPolicy(), Facts(), ctx));
  CHECK(rejected.at("accepted") == false);
  CHECK(rejected.at("reason") == "rate_limited");
  CHECK(rejected.at("retry_after_seconds") == 3);
  CHECK(rejected.at("constraints").is_null());
  REQUIRE(rejected.at("trace").size() == 5);
  CHECK(rejected.at("trace")[4] ==
        json{{"rule", "rate_limit"},
             {"passed", false},
             {"detail", "more than 30 KNOCKs per minute from this sender; retry after 3 s"}});

  const json accepted = DecisionToJson(EvaluateKnock(DefaultPolicy(), Facts(), Ctx()));
  CHECK(accepted.at("accepted") == true);
  CHECK(accepted.at("reason").is_null());
  CHECK(accepted.at("retry_after_seconds").is_null());
  CHECK(accepted.at("constraints") == json{{"max_message_size_bytes", 65536},
                                           {"max_messages", 1000},
                                           {"ttl_seconds", 300},
                                           {"signed_messages", true}});
  CHECK(accepted.at("trace").size() == 9);
}

TEST_CASE("trace details explain each rule", "[policy]") {
  Policy p;
  p.accepted_intents = {"commerce", "travel"};
  p.rejected_intents = {"travel/hotels"};
  p.strict_mode = true;
  p.allowlist.Insert(A(kAlice));
  p.min_reputation = 0.4;
  p.max_concurrent_sessions = 7;
  PolicyContext ctx = Ctx();
  ctx.active_sessions = 3;
  const Decision d = EvaluateKnock(p, Facts(), ctx);
  REQUIRE(d.accepted);
  CHECK(d.trace[2].detail == std::string(kAlice) + " is not in the blocklist");
  CHECK(d.trace[3].detail ==
        "registry tier verified is in accept_tiers [anonymous, verified, organization]");
  CHECK(d.trace[5].detail == "intent travel/flights matches accepted_intents entry \"travel\"");
  CHECK_THAT(d.trace[6].detail, Catch::Contains("strict_mode is on"));
  CHECK(d.trace[7].detail == "registry reputation 0.8 >= min_reputation 0.4");
  CHECK(d.trace[8].detail == "3 active sessions, max_concurrent_sessions 7");

  KnockFacts hotels = Facts();
  hotels.intent_subcategory = "hotels";
  const Decision r = EvaluateKnock(p, hotels, ctx);
  CHECK(r.trace.back().detail ==
        "intent travel/hotels matches rejected_intents entry \"travel/hotels\"");
  CHECK(r.human_readable == "This agent does not handle \"travel/hotels\" requests.");
}

TEST_CASE("a real KNOCK through the engine into a valid ACCEPT", "[policy]") {
  DeterministicRng rng(42);
  const Ed25519KeyPair alice = Ed25519KeyPair::Generate(rng);
  const X25519KeyPair alice_x = X25519KeyPair::Generate(rng);
  const Ed25519KeyPair bob = Ed25519KeyPair::Generate(rng);
  const Amid bob_amid = Amid::FromPublicKey(bob.public_key);
  const UnixNanos now = 1'770'000'000 * kNanosPerSecond;

  KnockParams kp{.session_id = "3b241101-e2bb-4255-8caf-4136c566a962", .to = bob_amid};
  kp.intent.category = "travel";
  kp.intent.subcategory = "flights";
  kp.session_request.type = SessionType::kConversation;
  kp.session_request.ttl_seconds = 7200;
  kp.session_request.signed_messages = true;
  kp.tier = Tier::kOrganization;  // claimed; must not matter
  kp.reputation_score = 1.0;      // claimed; must not matter
  kp.timestamp = now;
  auto knock = BuildKnock(kp, alice, alice_x.public_key);
  REQUIRE(knock);
  const bool valid = VerifyKnock(*knock, bob_amid, now).has_value();
  REQUIRE(valid);

  Policy policy;
  policy.accept_tiers = TierSet();
  policy.accept_tiers.Insert(Tier::kOrganization);
  policy.max_session_ttl_seconds = 3600;
  policy.default_constraints.signed_messages = false;
  const KnockFacts facts = KnockFactsFrom(*knock, valid);
  CHECK(facts.sender == Amid::FromPublicKey(alice.public_key));
  CHECK(facts.intent_category == "travel");
  CHECK(facts.intent_subcategory == "flights");
  CHECK(facts.session_type == "conversation");
  CHECK(facts.ttl_seconds == 7200);

  // The registry does not know alice: her claimed organization tier does not help.
  Decision d = EvaluateKnock(policy, facts, PolicyContext{});
  CHECK(d.reason == RejectReason::kInsufficientTrust);

  PolicyContext ctx;
  ctx.registry_tier = Tier::kOrganization;
  d = EvaluateKnock(policy, facts, ctx);
  REQUIRE(d.accepted);
  REQUIRE(d.constraints);
  CHECK(d.constraints->ttl_seconds == 3600);
  CHECK(d.constraints->signed_messages);  // the KNOCK asked for signatures

  // The granted constraints build an ACCEPT that answers this KNOCK.
  AcceptParams ap{.session_id = knock->session_id, .to = knock->from.amid};
  ap.constraints = *d.constraints;
  ap.timestamp = now;
  auto accept = BuildAccept(ap, bob);
  REQUIRE(accept);
  CHECK(CheckAnswersKnock(*accept, *knock));

  // Extreme policy values from ParsePolicy still build a valid ACCEPT.
  auto extreme = ParsePolicyText(R"({"max_session_ttl_seconds": 86400, "default_constraints":
      {"max_message_size_bytes": 1048576, "max_messages": 1000000, "ttl_seconds": 86400}})");
  REQUIRE(extreme);
  KnockFacts wants_max = facts;
  wants_max.ttl_seconds = 0;
  d = EvaluateKnock(*extreme, wants_max, ctx);
  REQUIRE(d.constraints);
  ap.constraints = *d.constraints;
  CHECK(BuildAccept(ap, bob));
  auto minimal = ParsePolicyText(R"({"max_session_ttl_seconds": 1, "default_constraints":
      {"max_message_size_bytes": 256, "max_messages": 1, "ttl_seconds": 1}})");
  REQUIRE(minimal);
  d = EvaluateKnock(*minimal, facts, ctx);
  REQUIRE(d.constraints);
  ap.constraints = *d.constraints;
  CHECK(BuildAccept(ap, bob));
}
