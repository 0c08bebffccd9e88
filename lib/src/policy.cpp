#include "agentmesh/core/policy.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

namespace agentmesh {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxIntentSegment = 64;

std::string Path(std::string_view parent, std::string_view key) {
  if (parent.empty()) return std::string(key);
  return fmt::format("{}.{}", parent, key);
}

std::string Index(std::string_view parent, std::size_t i) {
  return fmt::format("{}[{}]", parent, i);
}

std::unexpected<Error> Invalid(std::string field, std::string message) {
  return Fail(Code::kInvalidArgument, std::move(message), std::move(field));
}

// Short description of a JSON value for error messages: its type, and the value for scalars.
std::string Describe(const json& v) {
  if (v.is_number() || v.is_boolean()) return fmt::format("{} {}", v.type_name(), v.dump());
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s.size() > 40) return "a string";
    return fmt::format("string {}", v.dump(-1, ' ', true, json::error_handler_t::replace));
  }
  return std::string(v.type_name());
}

Result<bool> GetBool(const json& v, const std::string& field) {
  if (!v.is_boolean())
    return Invalid(field, fmt::format("expected true or false, got {}", Describe(v)));
  return v.get<bool>();
}

Result<std::uint32_t> GetUint32(const json& v, const std::string& field, std::uint32_t min,
                                std::uint32_t max = std::numeric_limits<std::uint32_t>::max()) {
  const auto expected = [&] {
    return fmt::format("expected an integer from {} to {}, got {}", min, max, Describe(v));
  };
  if (!v.is_number_integer()) return Invalid(field, expected());
  if (!v.is_number_unsigned()) return Invalid(field, expected());  // negative
  const std::uint64_t n = v.get<std::uint64_t>();
  if (n < min || n > max) return Invalid(field, expected());
  return static_cast<std::uint32_t>(n);
}

Result<double> GetNumber(const json& v, const std::string& field, double min,
                         std::optional<double> max) {
  const auto expected = [&] {
    if (max) return fmt::format("expected a number from {} to {}, got {}", min, *max, Describe(v));
    return fmt::format("expected a number >= {}, got {}", min, Describe(v));
  };
  if (!v.is_number()) return Invalid(field, expected());
  const double x = v.get<double>();
  if (!std::isfinite(x) || x < min || (max && x > *max)) return Invalid(field, expected());
  return x;
}

Result<const json*> GetArray(const json& v, const std::string& field, std::string_view of) {
  if (!v.is_array())
    return Invalid(field, fmt::format("expected an array of {}, got {}", of, Describe(v)));
  return &v;
}

Result<const json*> GetObject(const json& v, const std::string& field) {
  if (!v.is_object()) return Invalid(field, fmt::format("expected an object, got {}", Describe(v)));
  return &v;
}

std::unexpected<Error> UnknownKey(std::string_view parent, std::string_view key,
                                  std::string_view known) {
  return Invalid(Path(parent, key), fmt::format("unknown key; expected one of: {}", known));
}

Result<std::vector<std::string>> ParseIntentList(const json& v, const std::string& field) {
  auto arr = GetArray(v, field, "intent patterns");
  if (!arr) return std::unexpected(arr.error());
  std::vector<std::string> out;
  out.reserve(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const json& item = v[i];
    if (!item.is_string()) {
      return Invalid(Index(field, i),
                     fmt::format("expected an intent pattern string, got {}", Describe(item)));
    }
    const auto& s = item.get_ref<const std::string&>();
    if (auto ok = ValidateIntentPattern(s); !ok)
      return Invalid(Index(field, i), ok.error().message);
    out.push_back(s);
  }
  return out;
}

Result<AmidSet> ParseAmidList(const json& v, const std::string& field) {
  auto arr = GetArray(v, field, "AMIDs");
  if (!arr) return std::unexpected(arr.error());
  AmidSet out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const json& item = v[i];
    if (!item.is_string()) {
      return Invalid(Index(field, i),
                     fmt::format("expected an AMID string, got {}", Describe(item)));
    }
    auto amid = Amid::Parse(item.get_ref<const std::string&>());
    if (!amid) return Invalid(Index(field, i), "invalid AMID: " + amid.error().message);
    out.Insert(std::move(*amid));
  }
  return out;
}

Result<TierSet> ParseTiers(const json& v, const std::string& field) {
  auto arr = GetArray(v, field, "tiers");
  if (!arr) return std::unexpected(arr.error());
  if (v.empty()) {
    return Invalid(field, "expected at least one tier (an empty list would reject every KNOCK)");
  }
  TierSet out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    auto tier = TierFromJson(v[i]);
    if (!tier) {
      return Invalid(Index(field, i),
                     fmt::format("{}, got {}", tier.error().message, Describe(v[i])));
    }
    out.Insert(*tier);
  }
  return out;
}

// Applies `fn(key, value, path)` to each member of the object `v` (at `parent`); stops at the first
// error.
template <typename Fn>
Result<void> ForEachMember(const json& v, const std::string& parent, Fn&& fn) {
  auto obj = GetObject(v, parent);
  if (!obj) return std::unexpected(obj.error());
  for (auto it = v.begin(); it != v.end(); ++it) {
    if (auto r = fn(it.key(), it.value(), Path(parent, it.key())); !r) return r;
  }
  return {};
}

// Assigns a parsed value to `out` or propagates the error.
template <typename T, typename U>
Result<void> Set(T& out, Result<U> parsed) {
  if (!parsed) return std::unexpected(std::move(parsed.error()));
  out = std::move(*parsed);
  return {};
}

Result<void> ParseRateLimit(const json& v, const std::string& field, PolicyRateLimit& out) {
  return ForEachMember(
      v, field,
      [&](const std::string& key, const json& value, const std::string& path) -> Result<void> {
        if (key == "knocks_per_minute")
          return Set(out.knocks_per_minute, GetUint32(value, path, 1));
        if (key == "messages_per_minute")
          return Set(out.messages_per_minute, GetUint32(value, path, 1));
        return UnknownKey(field, key, "knocks_per_minute, messages_per_minute");
      });
}

Result<void> ParseNotifyOwner(const json& v, const std::string& field, PolicyNotifyOwner& out) {
  return ForEachMember(
      v, field,
      [&](const std::string& key, const json& value, const std::string& path) -> Result<void> {
        if (key == "on_knock_from_unknown")
          return Set(out.on_knock_from_unknown, GetBool(value, path));
        if (key == "on_high_value_transaction") {
          return Set(out.on_high_value_transaction, GetBool(value, path));
        }
        if (key == "on_error") return Set(out.on_error, GetBool(value, path));
        if (key == "threshold_usd") return Set(out.threshold_usd, GetNumber(value, path, 0, {}));
        return UnknownKey(
            field, key,
            "on_knock_from_unknown, on_high_value_transaction, on_error, threshold_usd");
      });
}

Result<void> ParseConstraints(const json& v, const std::string& field, PolicyConstraints& out) {
  return ForEachMember(
      v, field,
      [&](const std::string& key, const json& value, const std::string& path) -> Result<void> {
        if (key == "max_message_size_bytes") {
          return Set(out.max_message_size_bytes,
                     GetUint32(value, path, kMinMessageSizeBytes, kMaxEnvelopeBytesCap));
        }
        if (key == "max_messages") {
          return Set(out.max_messages, GetUint32(value, path, 1, kPolicyMaxMessages));
        }
        if (key == "ttl_seconds") {
          return Set(out.ttl_seconds, GetUint32(value, path, 1, kPolicyMaxTtlSeconds));
        }
        if (key == "signed_messages") return Set(out.signed_messages, GetBool(value, path));
        return UnknownKey(field, key,
                          "max_message_size_bytes, max_messages, ttl_seconds, signed_messages");
      });
}

constexpr std::string_view kTopLevelKeys =
    "accept_tiers, min_reputation, accepted_intents, rejected_intents, blocklist, allowlist, "
    "strict_mode, max_concurrent_sessions, rate_limit, store_transcripts, "
    "auto_reject_when_offline, notify_owner, max_session_ttl_seconds, default_constraints";

template <typename Constraints>
json ConstraintsToJson(const Constraints& c) {
  return json{{"max_message_size_bytes", c.max_message_size_bytes},
              {"max_messages", c.max_messages},
              {"ttl_seconds", c.ttl_seconds},
              {"signed_messages", c.signed_messages}};
}

json AmidsToJson(const AmidSet& set) {
  json out = json::array();
  for (const Amid& amid : set.items()) out.push_back(amid.str());
  return out;
}

bool IsIntentChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

Result<void> ValidateSegment(std::string_view segment, std::string_view what) {
  if (segment.empty()) return Fail(Code::kInvalidArgument, fmt::format("{} is empty", what));
  if (segment.size() > kMaxIntentSegment) {
    return Fail(Code::kInvalidArgument,
                fmt::format("{} is longer than {} characters", what, kMaxIntentSegment));
  }
  if (!std::all_of(segment.begin(), segment.end(), IsIntentChar)) {
    return Fail(Code::kInvalidArgument,
                fmt::format("{} may only contain a-z, 0-9, '_' and '-'", what));
  }
  return {};
}

// Builds the trace (when requested) and the rejection.
class Evaluation {
 public:
  explicit Evaluation(bool with_trace) : with_trace_(with_trace) {
    if (with_trace_) decision_.trace.reserve(9);
  }

  // Records a rule; `detail` is only invoked when tracing.
  template <typename DetailFn>
  void Step(std::string_view rule, bool passed, DetailFn&& detail) {
    if (with_trace_) decision_.trace.push_back(TraceStep{rule, passed, detail()});
  }

  Decision Reject(RejectReason reason, std::string human_readable) {
    decision_.accepted = false;
    decision_.reason = reason;
    decision_.human_readable = std::move(human_readable);
    return std::move(decision_);
  }

  Decision Accept(const SessionConstraints& constraints) {
    decision_.accepted = true;
    decision_.constraints = constraints;
    return std::move(decision_);
  }

  Decision& decision() { return decision_; }

 private:
  bool with_trace_;
  Decision decision_;
};

std::string IntentText(const KnockFacts& facts) {
  if (facts.intent_subcategory.empty()) return std::string(facts.intent_category);
  return fmt::format("{}/{}", facts.intent_category, facts.intent_subcategory);
}

std::string TierList(TierSet tiers) {
  std::string out;
  for (Tier t : tiers.ToVector()) {
    if (!out.empty()) out += ", ";
    out += ToString(t);
  }
  return out;
}

const std::string* FindMatch(const std::vector<std::string>& patterns, const KnockFacts& facts) {
  for (const std::string& p : patterns) {
    if (IntentPatternMatches(p, facts.intent_category, facts.intent_subcategory)) return &p;
  }
  return nullptr;
}

}  // namespace

// ── TierSet / AmidSet ───────────────────────────────────────────────────────────────────────────

std::vector<Tier> TierSet::ToVector() const {
  std::vector<Tier> out;
  for (Tier t : {Tier::kAnonymous, Tier::kVerified, Tier::kOrganization}) {
    if (Contains(t)) out.push_back(t);
  }
  return out;
}

bool AmidSet::Contains(const Amid& amid) const noexcept {
  return std::binary_search(sorted_.begin(), sorted_.end(), amid);
}

bool AmidSet::Insert(Amid amid) {
  auto it = std::lower_bound(sorted_.begin(), sorted_.end(), amid);
  if (it != sorted_.end() && *it == amid) return false;
  sorted_.insert(it, std::move(amid));
  return true;
}

bool AmidSet::Erase(const Amid& amid) {
  auto it = std::lower_bound(sorted_.begin(), sorted_.end(), amid);
  if (it == sorted_.end() || *it != amid) return false;
  sorted_.erase(it);
  return true;
}

// ── Intents ─────────────────────────────────────────────────────────────────────────────────────

Result<void> ValidateIntentPattern(std::string_view pattern) {
  if (pattern == "*") return {};
  const auto slash = pattern.find('/');
  if (slash == std::string_view::npos) return ValidateSegment(pattern, "intent category");
  const std::string_view category = pattern.substr(0, slash);
  const std::string_view sub = pattern.substr(slash + 1);
  if (auto r = ValidateSegment(category, "intent category"); !r) return r;
  if (sub == "*") {
    return Fail(Code::kInvalidArgument,
                fmt::format("\"{}/*\" is not a pattern; \"{}\" already matches every subcategory",
                            category, category));
  }
  if (sub.find('/') != std::string_view::npos) {
    return Fail(Code::kInvalidArgument, "an intent pattern has at most one '/'");
  }
  return ValidateSegment(sub, "intent subcategory");
}

bool IntentPatternMatches(std::string_view pattern, std::string_view category,
                          std::string_view subcategory) noexcept {
  if (pattern == "*") return true;
  const auto slash = pattern.find('/');
  if (slash == std::string_view::npos) return pattern == category;
  return !subcategory.empty() && pattern.substr(0, slash) == category &&
         pattern.substr(slash + 1) == subcategory;
}

// ── Parsing ─────────────────────────────────────────────────────────────────────────────────────

Policy DefaultPolicy() { return Policy{}; }

Result<Policy> ParsePolicy(const json& v) {
  if (!v.is_object()) {
    return Invalid("", fmt::format("policy must be a JSON object, got {}", Describe(v)));
  }
  Policy p;
  const std::string root;
  auto result = ForEachMember(
      v, root,
      [&](const std::string& key, const json& value, const std::string& path) -> Result<void> {
        if (key == "accept_tiers") return Set(p.accept_tiers, ParseTiers(value, path));
        if (key == "min_reputation") return Set(p.min_reputation, GetNumber(value, path, 0, 1.0));
        if (key == "accepted_intents") return Set(p.accepted_intents, ParseIntentList(value, path));
        if (key == "rejected_intents") return Set(p.rejected_intents, ParseIntentList(value, path));
        if (key == "blocklist") return Set(p.blocklist, ParseAmidList(value, path));
        if (key == "allowlist") return Set(p.allowlist, ParseAmidList(value, path));
        if (key == "strict_mode") return Set(p.strict_mode, GetBool(value, path));
        if (key == "max_concurrent_sessions") {
          return Set(p.max_concurrent_sessions, GetUint32(value, path, 0));
        }
        if (key == "rate_limit") return ParseRateLimit(value, path, p.rate_limit);
        if (key == "store_transcripts") return Set(p.store_transcripts, GetBool(value, path));
        if (key == "auto_reject_when_offline") {
          return Set(p.auto_reject_when_offline, GetBool(value, path));
        }
        if (key == "notify_owner") return ParseNotifyOwner(value, path, p.notify_owner);
        if (key == "max_session_ttl_seconds") {
          return Set(p.max_session_ttl_seconds, GetUint32(value, path, 1, kPolicyMaxTtlSeconds));
        }
        if (key == "default_constraints")
          return ParseConstraints(value, path, p.default_constraints);
        return UnknownKey(root, key, kTopLevelKeys);
      });
  if (!result) return std::unexpected(std::move(result.error()));
  return p;
}

namespace {

// SAX consumer that accepts everything and records where the syntax error is.
struct SyntaxErrorFinder {
  std::size_t position = 0;
  std::string what;

  bool null() { return true; }
  bool boolean(bool) { return true; }
  bool number_integer(json::number_integer_t) { return true; }
  bool number_unsigned(json::number_unsigned_t) { return true; }
  bool number_float(json::number_float_t, const json::string_t&) { return true; }
  bool string(json::string_t&) { return true; }
  bool binary(json::binary_t&) { return true; }
  bool start_object(std::size_t) { return true; }
  bool key(json::string_t&) { return true; }
  bool end_object() { return true; }
  bool start_array(std::size_t) { return true; }
  bool end_array() { return true; }
  bool parse_error(std::size_t pos, const std::string&, const nlohmann::detail::exception& ex) {
    position = pos;
    what = ex.what();
    return false;
  }
};

}  // namespace

Result<Policy> ParsePolicyText(std::string_view text) {
  json v = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (v.is_discarded()) {
    SyntaxErrorFinder finder;
    json::sax_parse(text, &finder, json::input_format_t::json, /*strict=*/true);
    return Invalid(
        "", fmt::format("policy is not valid JSON (byte {}): {}", finder.position, finder.what));
  }
  return ParsePolicy(v);
}

json PolicyToJson(const Policy& p) {
  json tiers = json::array();
  for (Tier t : p.accept_tiers.ToVector()) tiers.push_back(TierToJson(t));
  return json{
      {"accept_tiers", std::move(tiers)},
      {"min_reputation", p.min_reputation},
      {"accepted_intents", p.accepted_intents},
      {"rejected_intents", p.rejected_intents},
      {"blocklist", AmidsToJson(p.blocklist)},
      {"allowlist", AmidsToJson(p.allowlist)},
      {"strict_mode", p.strict_mode},
      {"max_concurrent_sessions", p.max_concurrent_sessions},
      {"rate_limit",
       {{"knocks_per_minute", p.rate_limit.knocks_per_minute},
        {"messages_per_minute", p.rate_limit.messages_per_minute}}},
      {"store_transcripts", p.store_transcripts},
      {"auto_reject_when_offline", p.auto_reject_when_offline},
      {"notify_owner",
       {{"on_knock_from_unknown", p.notify_owner.on_knock_from_unknown},
        {"on_high_value_transaction", p.notify_owner.on_high_value_transaction},
        {"on_error", p.notify_owner.on_error},
        {"threshold_usd", p.notify_owner.threshold_usd}}},
      {"max_session_ttl_seconds", p.max_session_ttl_seconds},
      {"default_constraints", ConstraintsToJson(p.default_constraints)},
  };
}

// ── Evaluation ──────────────────────────────────────────────────────────────────────────────────

Decision EvaluateKnock(const Policy& policy, const KnockFacts& facts, const PolicyContext& ctx,
                       bool with_trace) {
  using RR = RejectReason;
  Evaluation e(with_trace);

  // 1. Circuit breaker.
  e.Step("paused", !ctx.paused, [&] {
    return std::string(ctx.paused ? "pause_new is engaged: every new KNOCK is rejected"
                                  : "not paused");
  });
  if (ctx.paused) {
    return e.Reject(RR::kPaused, "This agent is not accepting new sessions right now.");
  }

  // 2. Signature (verified by the caller; cannot be bypassed by any policy setting).
  e.Step("signature", facts.signature_valid, [&] {
    return std::string(facts.signature_valid ? "KNOCK signature verified"
                                             : "KNOCK signature did not verify");
  });
  if (!facts.signature_valid) {
    return e.Reject(RR::kInvalidSignature, "The KNOCK signature did not verify.");
  }

  // 3. Blocklist.
  const bool blocked = policy.blocklist.Contains(facts.sender);
  e.Step("blocklist", !blocked, [&] {
    return fmt::format("{} is {}in the blocklist", facts.sender.str(), blocked ? "" : "not ");
  });
  if (blocked) return e.Reject(RR::kBlocked, "This agent does not accept sessions from you.");

  // 4. Tier, as the registry knows it.
  const Tier tier = ctx.registry_tier.value_or(Tier::kAnonymous);
  const bool tier_ok = policy.accept_tiers.Contains(tier);
  e.Step("tier", tier_ok, [&] {
    return fmt::format("registry tier {}{} is {}in accept_tiers [{}]", ToString(tier),
                       ctx.registry_tier ? "" : " (unknown to the registry, taken as anonymous)",
                       tier_ok ? "" : "not ", TierList(policy.accept_tiers));
  });
  if (!tier_ok) {
    return e.Reject(RR::kInsufficientTrust,
                    "This agent requires a higher trust tier than the registry lists for you.");
  }

  // 5. Rate limit (the caller's token bucket).
  if (ctx.knock_rate_exceeded) {
    const double seconds = std::ceil(static_cast<double>(ctx.retry_after) / 1e9);
    const std::uint32_t retry = static_cast<std::uint32_t>(
        std::clamp(seconds, 1.0, static_cast<double>(std::numeric_limits<std::uint32_t>::max())));
    e.Step("rate_limit", false, [&] {
      return fmt::format("more than {} KNOCKs per minute from this sender; retry after {} s",
                         policy.rate_limit.knocks_per_minute, retry);
    });
    e.decision().retry_after_seconds = retry;
    return e.Reject(RR::kRateLimited,
                    fmt::format("Too many KNOCKs; retry after {} seconds.", retry));
  }
  e.Step("rate_limit", true, [&] {
    return fmt::format("within {} KNOCKs per minute", policy.rate_limit.knocks_per_minute);
  });

  // 6. Intent: rejected_intents wins over accepted_intents.
  if (const std::string* hit = FindMatch(policy.rejected_intents, facts)) {
    e.Step("intent", false, [&] {
      return fmt::format("intent {} matches rejected_intents entry \"{}\"", IntentText(facts),
                         *hit);
    });
    return e.Reject(RR::kIntentNotAccepted,
                    fmt::format("This agent does not handle \"{}\" requests.", IntentText(facts)));
  }
  if (!policy.accepted_intents.empty()) {
    const std::string* hit = FindMatch(policy.accepted_intents, facts);
    e.Step("intent", hit != nullptr, [&] {
      if (hit)
        return fmt::format("intent {} matches accepted_intents entry \"{}\"", IntentText(facts),
                           *hit);
      return fmt::format("intent {} matches no accepted_intents entry", IntentText(facts));
    });
    if (!hit) {
      return e.Reject(
          RR::kIntentNotAccepted,
          fmt::format("This agent does not handle \"{}\" requests.", IntentText(facts)));
    }
  } else {
    e.Step("intent", true, [&] {
      return fmt::format("intent {} is not rejected and accepted_intents is empty (all accepted)",
                         IntentText(facts));
    });
  }

  // 7. Allowlist (strict mode only).
  const bool allow_ok = !policy.strict_mode || policy.allowlist.Contains(facts.sender);
  e.Step("allowlist", allow_ok, [&] {
    if (!policy.strict_mode) return std::string("strict_mode is off");
    return fmt::format("strict_mode is on and {} is {}in the allowlist ({} entries)",
                       facts.sender.str(), allow_ok ? "" : "not ", policy.allowlist.size());
  });
  if (!allow_ok) {
    return e.Reject(RR::kNotInAllowlist, "This agent only accepts sessions from known contacts.");
  }

  // 8. Reputation, as the registry knows it.
  double reputation = ctx.registry_reputation.value_or(kUnratedReputation);
  if (std::isnan(reputation)) reputation = 0;
  const bool reputation_ok = !(reputation < policy.min_reputation);
  e.Step("reputation", reputation_ok, [&] {
    return fmt::format("registry reputation {}{} {} min_reputation {}", reputation,
                       ctx.registry_reputation ? "" : " (unrated, taken as 0.5)",
                       reputation_ok ? ">=" : "<", policy.min_reputation);
  });
  if (!reputation_ok) {
    return e.Reject(RR::kLowReputation, "This agent requires a higher reputation score.");
  }

  // 9. Capacity.
  const bool capacity_ok = ctx.active_sessions < policy.max_concurrent_sessions;
  e.Step("capacity", capacity_ok, [&] {
    return fmt::format("{} active sessions, max_concurrent_sessions {}", ctx.active_sessions,
                       policy.max_concurrent_sessions);
  });
  if (!capacity_ok) {
    return e.Reject(RR::kAtCapacity, "This agent is at capacity; try again later.");
  }

  const PolicyConstraints& defaults = policy.default_constraints;
  SessionConstraints granted;
  granted.max_message_size_bytes = defaults.max_message_size_bytes;
  granted.max_messages = defaults.max_messages;
  const std::uint32_t requested =
      facts.ttl_seconds == 0 ? policy.default_constraints.ttl_seconds : facts.ttl_seconds;
  granted.ttl_seconds = std::max(1u, std::min(requested, policy.max_session_ttl_seconds));
  granted.signed_messages =
      policy.default_constraints.signed_messages || facts.signed_messages.value_or(false);
  return e.Accept(granted);
}

KnockFacts KnockFactsFrom(const Knock& knock, bool signature_valid) {
  KnockFacts facts(knock.from.amid);
  facts.signature_valid = signature_valid;
  facts.intent_category = knock.intent.category;
  if (knock.intent.subcategory) facts.intent_subcategory = *knock.intent.subcategory;
  facts.session_type = SessionTypeName(knock.session_request.type);
  facts.ttl_seconds = knock.session_request.ttl_seconds;
  facts.signed_messages = knock.session_request.signed_messages;
  return facts;
}

json DecisionToJson(const Decision& d) {
  json trace = json::array();
  for (const TraceStep& s : d.trace) {
    trace.push_back({{"rule", s.rule}, {"passed", s.passed}, {"detail", s.detail}});
  }
  return json{
      {"accepted", d.accepted},
      {"reason", d.reason ? json(RejectReasonName(*d.reason)) : json(nullptr)},
      {"human_readable", d.human_readable},
      {"retry_after_seconds", d.retry_after_seconds ? json(*d.retry_after_seconds) : json(nullptr)},
      {"constraints", d.constraints ? ConstraintsToJson(*d.constraints) : json(nullptr)},
      {"trace", std::move(trace)},
  };
}

}  // namespace agentmesh
