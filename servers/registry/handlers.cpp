#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_set>

#include "agentmesh/core/canonical_json.hpp"
#include "agentmesh/core/certificate.hpp"
#include "agentmesh/core/crypto.hpp"
#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/json_scan.hpp"
#include "agentmesh/core/knock.hpp"
#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/registry_auth.hpp"
#include "agentmesh/core/reputation.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/dns/txt_resolver.hpp"
#include "api.hpp"
#include "log.hpp"
#include "oauth.hpp"
#include "org.hpp"

// The core's DID helpers (lib/src/did.cpp) are being added concurrently; until they are in the
// tree, the DID route uses the local fallback below.
#if __has_include("agentmesh/core/did.hpp")
#include "agentmesh/core/did.hpp"
#define AMESH_REGISTRY_CORE_DID 1
#else
#define AMESH_REGISTRY_CORE_DID 0
#endif

namespace agentmesh::registry {
namespace {

using json = nlohmann::json;
template <typename T>
using Http = std::expected<T, net::HttpResponse>;

// An early return that converts to whatever the function returns: a response (handlers) or an
// Http<T> error (helpers).
struct Bail {
  net::HttpResponse response;
  operator net::HttpResponse() && { return std::move(response); }
  template <typename T>
  operator std::expected<T, net::HttpResponse>() && {
    return std::unexpected(std::move(response));
  }
};

#define HTTP_TRY(var, expr)                                        \
  auto var##_result = (expr);                                      \
  if (!var##_result) return Bail{std::move(var##_result.error())}; \
  auto& var = *var##_result

#define HTTP_CHECK(expr)                                           \
  do {                                                             \
    if (auto r_ = (expr); !r_) return Bail{std::move(r_.error())}; \
  } while (false)

constexpr std::size_t kMaxCapabilities = 64;
constexpr std::size_t kMaxCapabilityLength = 128;
constexpr std::size_t kMaxNameLength = 255;
constexpr std::size_t kMaxEndpointLength = 512;
constexpr std::size_t kMaxSessionIdLength = 128;
constexpr std::size_t kMaxTags = 10;
constexpr std::size_t kMaxTagLength = 64;
constexpr std::size_t kMaxNotesLength = 1024;
constexpr std::size_t kMaxBulk = 100;
constexpr std::uint32_t kMaxRevocationPage = 10000;
constexpr UnixNanos kFeedbackWindow = 30LL * 86400 * kNanosPerSecond;
constexpr std::uint64_t kLeaderboardMinFeedback = 5;

#if !AMESH_REGISTRY_CORE_DID
// TODO(did): remove once lib/src/did.cpp is committed: "z" + base58btc(multicodec || key).
std::string EncodeMultibase(std::uint8_t codec, ByteView key) {
  Bytes data = {codec, 0x01};
  data.insert(data.end(), key.begin(), key.end());
  return "z" + Base58Encode(data);
}
std::string EncodeMultibaseEd25519(const Ed25519PublicKey& key) {
  return EncodeMultibase(0xed, key.view());
}
#endif

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

net::HttpResponse Reply(int status, const json& body) {
  return net::HttpResponse::Json(status, Dump(body));
}

std::unexpected<net::HttpResponse> Err(int status, std::string_view message) {
  return std::unexpected(JsonError(status, message));
}

// A storage failure: logged with its detail, answered without it.
net::HttpResponse StorageFailure(Context& ctx, const Error& error) {
  ++ctx.metrics->storage_errors;
  Log(LogLevel::kError, "storage: " + error.ToString());
  if (error.code == Code::kUnavailable) return JsonError(503, "database busy, retry");
  return JsonError(500, "internal storage error");
}

template <typename T>
Http<T> Stored(Context& ctx, Result<T> result) {
  if (!result) return std::unexpected(StorageFailure(ctx, result.error()));
  return std::move(*result);
}

std::string NewUuid() {
  SystemRng rng;
  auto b = rng.Array<16>();
  b[6] = static_cast<std::uint8_t>((b[6] & 0x0f) | 0x40);
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3f) | 0x80);
  const std::string hex = HexEncode(b);
  return fmt::format("{}-{}-{}-{}-{}", hex.substr(0, 8), hex.substr(8, 4), hex.substr(12, 4),
                     hex.substr(16, 4), hex.substr(20));
}

json OptJson(const std::optional<std::string>& v) { return v ? json(*v) : json(nullptr); }

// ---- input parsing ----------------------------------------------------------------------------

Http<json> ParseObject(const Request& r) {
  auto doc = json::parse(r.http->body, nullptr, false);
  if (doc.is_discarded()) return Err(400, "request body is not valid JSON");
  if (!doc.is_object()) return Err(400, "request body must be a JSON object");
  return doc;
}

bool HasControl(std::string_view s) {
  return std::any_of(s.begin(), s.end(),
                     [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; });
}

Http<std::string> RequireString(const json& body, const char* field, std::size_t max_len) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return Err(400, fmt::format("{}: is required", field));
  if (!it->is_string()) return Err(400, fmt::format("{}: must be a string", field));
  const auto& s = it->get_ref<const std::string&>();
  if (s.empty()) return Err(400, fmt::format("{}: must not be empty", field));
  if (s.size() > max_len) {
    return Err(400, fmt::format("{}: longer than {} bytes", field, max_len));
  }
  return s;
}

Http<std::optional<std::string>> OptionalString(const json& body, const char* field,
                                                std::size_t max_len) {
  auto it = body.find(field);
  if (it == body.end() || it->is_null()) return std::optional<std::string>{};
  if (!it->is_string()) return Err(400, fmt::format("{}: must be a string or null", field));
  const auto& s = it->get_ref<const std::string&>();
  if (s.size() > max_len) {
    return Err(400, fmt::format("{}: longer than {} bytes", field, max_len));
  }
  return std::optional<std::string>(s);
}

Http<Amid> ParseAmidText(std::string_view text, std::string_view field) {
  auto amid = Amid::Parse(text);
  if (!amid) return Err(400, fmt::format("{}: not a valid AMID ({})", field, amid.error().message));
  return *amid;
}

Http<Amid> RequireAmid(const json& body, const char* field) {
  HTTP_TRY(text, RequireString(body, field, 64));
  return ParseAmidText(text, field);
}

// Capabilities: strings of 1..128 bytes without control characters or '*' (reserved for search
// wildcards); duplicates are dropped, order kept.
Http<std::vector<std::string>> ParseCapabilities(const json& body, bool required) {
  auto it = body.find("capabilities");
  if (it == body.end() || it->is_null()) {
    if (required) return Err(400, "capabilities: is required");
    return std::vector<std::string>{};
  }
  if (!it->is_array()) return Err(400, "capabilities: must be an array of strings");
  if (it->size() > kMaxCapabilities) {
    return Err(400, fmt::format("capabilities: at most {} entries", kMaxCapabilities));
  }
  std::vector<std::string> out;
  std::unordered_set<std::string> seen;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const auto& v = (*it)[i];
    if (!v.is_string()) return Err(400, fmt::format("capabilities[{}]: must be a string", i));
    const auto& s = v.get_ref<const std::string&>();
    if (s.empty() || s.size() > kMaxCapabilityLength) {
      return Err(400,
                 fmt::format("capabilities[{}]: must be 1 to {} bytes", i, kMaxCapabilityLength));
    }
    if (HasControl(s) || s.find('*') != std::string::npos) {
      return Err(400,
                 fmt::format("capabilities[{}]: must not contain control characters or '*'", i));
    }
    if (seen.insert(s).second) out.push_back(s);
  }
  return out;
}

// Query strings: application/x-www-form-urlencoded pairs; the first occurrence of a name wins.
struct Query {
  std::vector<std::pair<std::string, std::string>> pairs;
  std::optional<std::string> Get(std::string_view name) const {
    for (const auto& [k, v] : pairs) {
      if (k == name) return v;
    }
    return std::nullopt;
  }
};

std::optional<std::string> PercentDecode(std::string_view in) {
  std::string out;
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c == '+') {
      out += ' ';
    } else if (c == '%') {
      if (i + 2 >= in.size()) return std::nullopt;
      unsigned value = 0;
      auto [p, ec] = std::from_chars(in.data() + i + 1, in.data() + i + 3, value, 16);
      if (ec != std::errc() || p != in.data() + i + 3) return std::nullopt;
      out += static_cast<char>(value);
      i += 2;
    } else {
      out += c;
    }
  }
  return out;
}

Http<Query> ParseQuery(std::string_view text) {
  Query q;
  if (text.size() > 4096) return Err(400, "query string too long");
  while (!text.empty()) {
    const auto amp = text.find('&');
    const std::string_view part = text.substr(0, amp);
    text = amp == std::string_view::npos ? std::string_view{} : text.substr(amp + 1);
    if (part.empty()) continue;
    const auto eq = part.find('=');
    auto key = PercentDecode(part.substr(0, eq));
    auto value = PercentDecode(eq == std::string_view::npos ? "" : part.substr(eq + 1));
    if (!key || !value) return Err(400, "query string: malformed percent-encoding");
    q.pairs.emplace_back(std::move(*key), std::move(*value));
  }
  return q;
}

// An unsigned decimal integer in [min, max]; `what` names the parameter in the error.
Http<std::uint64_t> ParseBoundedUint(const std::string& text, std::uint64_t min, std::uint64_t max,
                                     std::string_view what) {
  std::uint64_t value = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 10);
  if (text.empty() || ec != std::errc() || p != text.data() + text.size() || value < min ||
      value > max) {
    return Err(400, fmt::format("{}: must be an integer from {} to {}", what, min, max));
  }
  return value;
}

Http<std::uint32_t> PageLimit(const Query& q, std::uint32_t fallback, std::uint32_t max) {
  auto v = q.Get("limit");
  if (!v) return fallback;
  HTTP_TRY(n, ParseBoundedUint(*v, 1, max, "limit"));
  return static_cast<std::uint32_t>(n);
}

Http<std::uint64_t> PageOffset(const Query& q) {
  auto v = q.Get("offset");
  if (!v) return std::uint64_t{0};
  return ParseBoundedUint(*v, 0, 1'000'000'000, "offset");
}

Http<Amid> QueryAmid(const Query& q) {
  auto v = q.Get("amid");
  if (!v || v->empty()) return Err(400, "amid: query parameter is required");
  return ParseAmidText(*v, "amid");
}

// ---- authentication ----------------------------------------------------------------------------

FreshnessWindow WindowOf(const RegistryConfig& config) {
  return {std::int64_t{config.signature_max_age_seconds} * kNanosPerSecond,
          std::int64_t{config.signature_max_future_seconds} * kNanosPerSecond};
}

// PROTOCOL.md §7: signature over method, path, timestamp and the canonical body; then the
// (key, signature) pair must not have been seen inside the window.
Http<void> Authenticate(Context& ctx, const Request& r, const json& body,
                        const Ed25519PublicKey& key) {
  auto ts = body.find("timestamp");
  if (ts == body.end() || !ts->is_string()) {
    return Err(400, "timestamp: is required (an RFC 3339 string)");
  }
  auto sig = body.find("signature");
  if (sig == body.end() || !sig->is_string()) {
    return Err(400, "signature: is required (base64 Ed25519 signature, PROTOCOL.md section 7)");
  }
  const UnixNanos now = ctx.now();
  const FreshnessWindow window = WindowOf(*r.config);
  auto verified = VerifyRegistryRequest(r.http->method, r.http->path, body, key, now, window);
  if (!verified) {
    const Error& e = verified.error();
    if (e.code != Code::kAuthFailed && e.code != Code::kReplay && e.field != "timestamp" &&
        e.field != "signature") {
      return Err(400, fmt::format("request body cannot be signed canonically: {}{}{}", e.field,
                                  e.field.empty() ? "" : ": ", e.message));
    }
    ++ctx.metrics->auth_failures;
    return Err(401, fmt::format("signature verification failed: {}{}{}", e.field,
                                e.field.empty() ? "" : ": ", e.message));
  }
  const UnixNanos expires = now + window.max_past + window.max_future;
  switch (ctx.replay->Remember(key, sig->get_ref<const std::string&>(), now, expires,
                               r.config->replay_cache_entries)) {
    case ReplayCache::Outcome::kFresh:
      return {};
    case ReplayCache::Outcome::kReplay:
      ++ctx.metrics->replays;
      return Err(409, "replayed request: this signature has been used already");
    case ReplayCache::Outcome::kFull:
      return Err(503, "too many signed requests in flight; retry later");
  }
  return {};
}

// The registered, non-revoked agent named by body[field], and its signing key.
struct Actor {
  AgentRecord agent;
  Ed25519PublicKey key;
};

Http<Actor> LoadActor(Context& ctx, const Amid& amid, std::string_view field) {
  HTTP_TRY(found, Stored(ctx, ctx.store->GetAgent(amid.str())));
  if (!found) return Err(404, fmt::format("Agent not found ({})", field));
  if (found->revoked) return Err(403, fmt::format("agent has been revoked ({})", field));
  auto key = ParseEd25519Key(found->signing_public_key);
  if (!key) {
    return std::unexpected(StorageFailure(ctx, Error{Code::kCorrupt, "stored signing key", {}}));
  }
  return Actor{std::move(*found), *key};
}

// ---- JSON views -------------------------------------------------------------------------------

// The members of an agent in lookup and search answers, written as text: a search page holds up
// to 100 agents, and building a JSON DOM for each was a large part of a search's cost.
void AppendOptText(std::string& out, const std::optional<std::string>& text) {
  if (text) {
    AppendJsonText(out, *text);
  } else {
    out += "null";
  }
}

void AppendAgentMembers(std::string& out, const AgentRecord& a) {
  out += "\"amid\":";
  AppendJsonText(out, a.amid);
  out += ",\"tier\":";
  AppendJsonText(out, ToString(a.tier));
  out += ",\"display_name\":";
  AppendOptText(out, a.display_name);
  out += ",\"organization\":";
  AppendOptText(out, a.organization);
  out += ",\"signing_public_key\":";
  AppendJsonText(out, a.signing_public_key);
  out += ",\"exchange_public_key\":";
  AppendJsonText(out, a.exchange_public_key);
  out += ",\"capabilities\":[";
  for (std::size_t i = 0; i < a.capabilities.size(); ++i) {
    if (i > 0) out += ',';
    AppendJsonText(out, a.capabilities[i]);
  }
  out += "],\"relay_endpoint\":";
  AppendOptText(out, a.relay_endpoint);
  out += ",\"direct_endpoint\":";
  AppendOptText(out, a.direct_endpoint);
  out += ",\"status\":";
  AppendJsonText(out, ToString(a.status));
  out += ",\"reputation_score\":";
  out += Dump(json(a.reputation_score));  // nlohmann's shortest round-trip form, "1.0" kept
  out += ",\"last_seen\":";
  AppendJsonText(out, FormatRfc3339Z(a.last_seen));
  out += ",\"created_at\":";
  AppendJsonText(out, FormatRfc3339Z(a.created_at));
  out += ",\"revoked\":";
  out += a.revoked ? "true" : "false";
}

json RevocationJson(const RevocationRecord& r) {
  return json{{"id", r.id},
              {"amid", r.amid},
              {"reason", r.reason},
              {"revoked_by", r.revoked_by},
              {"revoked_at", FormatRfc3339Z(r.revoked_at)},
              {"notes", OptJson(r.notes)}};
}

// Signs `doc` (an object) with the registry root key: adds "signature" = base64 Ed25519 over
// JCS(doc without "signature"), the rule of PROTOCOL.md §5.
Http<void> SignWithRoot(Context& ctx, json& doc) {
  auto canonical = CanonicalJsonWithout(doc, "signature");
  if (!canonical) return std::unexpected(StorageFailure(ctx, canonical.error()));
  doc["signature"] = FormatSignature(Sign(ctx.root_key->secret, AsBytes(*canonical)));
  return {};
}

// ---- reputation -------------------------------------------------------------------------------

struct ScoreView {
  AgentRecord agent;
  ReputationResult result;
  SessionCounts sessions;
  std::uint64_t feedback_count = 0;
  double average_feedback = 0;
  std::vector<std::pair<std::string, std::uint64_t>> tags;
};

// Gathers the inputs of the core's reputation formula for `amid` (anti-gaming flags included) and
// computes the score. Does not store it.
Http<ScoreView> ComputeScore(Context& ctx, const AgentRecord& agent, UnixNanos now) {
  ScoreView view;
  view.agent = agent;
  HTTP_TRY(rows, Stored(ctx, ctx.store->FeedbackForTarget(agent.amid, now - kFeedbackWindow)));
  HTTP_TRY(sessions, Stored(ctx, ctx.store->SessionCountsFor(agent.amid)));
  HTTP_TRY(count, Stored(ctx, ctx.store->CountFeedback(agent.amid)));
  view.sessions = sessions;
  view.feedback_count = count;

  // Rating edges of every rater and of the target, for the mutual-only rule.
  std::vector<std::pair<std::string, std::string>> edge_store;
  std::set<std::string> raters;
  for (const auto& row : rows) raters.insert(row.feedback.from_amid);
  raters.insert(agent.amid);
  for (const auto& rater : raters) {
    HTTP_TRY(targets, Stored(ctx, ctx.store->RatedTargets(rater)));
    for (auto& t : targets) edge_store.emplace_back(rater, std::move(t));
  }
  std::vector<RatingEdge> edges;
  edges.reserve(edge_store.size());
  for (const auto& [from, to] : edge_store) edges.push_back({from, to});

  ReputationInputs inputs;
  inputs.tier = agent.tier;
  inputs.account_created = agent.created_at;
  inputs.sessions_total = sessions.total;
  inputs.sessions_successful = sessions.successful;
  inputs.previous_score = agent.reputation_score;
  std::map<std::string, std::uint64_t> tag_counts;
  double sum = 0;
  for (const auto& row : rows) {
    Rating rating;
    rating.rater = row.feedback.from_amid;
    rating.rater_tier = row.rater_tier;
    rating.score = row.feedback.score;
    rating.at = row.feedback.created_at;
    rating.ip_key = row.feedback.ip_key;
    rating.rater_account_created = row.rater_created_at;
    rating.mutual_only = IsMutualOnly(rating.rater, agent.amid, edges);
    inputs.ratings.push_back(std::move(rating));
    sum += row.feedback.score;
    for (const auto& tag : row.feedback.tags) ++tag_counts[tag];
  }
  view.average_feedback = rows.empty() ? 0 : sum / static_cast<double>(rows.size());
  view.result = ComputeReputation(inputs, now);
  view.tags.assign(tag_counts.begin(), tag_counts.end());
  std::stable_sort(view.tags.begin(), view.tags.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (view.tags.size() > 10) view.tags.resize(10);
  return view;
}

// Recomputes and stores the score of `amid` after a rating or a session report.
Http<double> Rescore(Context& ctx, const std::string& amid) {
  const UnixNanos now = ctx.now();
  HTTP_TRY(agent, Stored(ctx, ctx.store->GetAgent(amid)));
  if (!agent) return 0.0;
  HTTP_TRY(view, ComputeScore(ctx, *agent, now));
  HTTP_TRY(stored, Stored(ctx, ctx.store->SetReputation(amid, view.result.score, now)));
  (void)stored;
  if (view.result.flag != ReputationFlag::kNone) {
    ++ctx.metrics->reputation_flags;
    Log(LogLevel::kWarn,
        fmt::format("reputation review: {} {} ({:.3f} -> {:.3f})", amid, ToString(view.result.flag),
                    agent->reputation_score, view.result.score));
  }
  return view.result.score;
}

json ScoreJson(const ScoreView& v, UnixNanos now) {
  json tags = json::array();
  for (const auto& [tag, count] : v.tags) tags.push_back({{"tag", tag}, {"count", count}});
  const double age_days =
      std::max<double>(0, static_cast<double>(now - v.agent.created_at) / (86400.0 * 1e9));
  return json{{"amid", v.agent.amid},
              {"score", v.result.score},
              {"stored_score", v.agent.reputation_score},
              {"completion_rate", v.result.completion_rate},
              {"total_sessions", v.sessions.total},
              {"successful_sessions", v.sessions.successful},
              {"feedback_count", v.feedback_count},
              {"average_feedback", v.average_feedback},
              {"weighted_feedback", v.result.weighted_feedback},
              {"effective_ratings", v.result.effective_ratings},
              {"confidence", v.result.confidence},
              {"tier", ToString(v.agent.tier)},
              {"age_days", age_days},
              {"tags", tags},
              {"last_updated", FormatRfc3339Z(v.agent.updated_at)}};
}

// ================================ handlers ======================================================

net::HttpResponse HandleRegister(Context& ctx, const Request& r) {
  HTTP_TRY(body, ParseObject(r));
  HTTP_TRY(amid, RequireAmid(body, "amid"));
  HTTP_TRY(signing_text, RequireString(body, "signing_public_key", 128));
  auto signing = ParseEd25519Key(signing_text);
  if (!signing) return JsonError(400, "signing_public_key: " + signing.error().message);
  HTTP_TRY(exchange_text, RequireString(body, "exchange_public_key", 128));
  auto exchange = ParseX25519Key(exchange_text);
  if (!exchange) return JsonError(400, "exchange_public_key: " + exchange.error().message);
  HTTP_TRY(display_name, OptionalString(body, "display_name", kMaxNameLength));
  HTTP_TRY(capabilities, ParseCapabilities(body, false));
  HTTP_TRY(relay_endpoint, OptionalString(body, "relay_endpoint", kMaxEndpointLength));
  HTTP_TRY(direct_endpoint, OptionalString(body, "direct_endpoint", kMaxEndpointLength));
  HTTP_TRY(token, OptionalString(body, "verification_token", 4096));
  (void)token;  // OAuth verification (tier "verified") is not implemented yet.
  if (Amid::FromPublicKey(*signing) != amid) {
    ++ctx.metrics->auth_failures;
    return JsonError(401, "signature verification failed: amid: does not match signing_public_key");
  }
  HTTP_CHECK(Authenticate(ctx, r, body, *signing));
  HTTP_TRY(revocation, Stored(ctx, ctx.store->GetRevocation(amid.str())));
  if (revocation) {
    return JsonError(403, "AMID has been revoked and cannot register again; create a new identity");
  }
  const UnixNanos now = ctx.now();
  AgentRecord agent;
  agent.amid = amid.str();
  agent.signing_public_key = FormatEd25519Key(*signing);
  agent.exchange_public_key = FormatX25519Key(*exchange);
  agent.tier = Tier::kAnonymous;
  agent.display_name = display_name;
  agent.capabilities = capabilities;
  agent.relay_endpoint = relay_endpoint;
  agent.direct_endpoint = direct_endpoint;
  agent.status = Presence::kOffline;
  agent.reputation_score = StartingReputation(Tier::kAnonymous);
  agent.last_seen = now;
  agent.created_at = now;
  agent.updated_at = now;
  if (auto inserted = ctx.store->InsertAgent(agent); !inserted) {
    if (inserted.error().code == Code::kConflict) {
      return Reply(
          409, {{"success", false}, {"amid", agent.amid}, {"error", "AMID already registered"}});
    }
    return StorageFailure(ctx, inserted.error());
  }
  Log(LogLevel::kDebug, "registered " + agent.amid);
  return Reply(201, {{"success", true}, {"amid", agent.amid}, {"tier", ToString(agent.tier)}});
}

net::HttpResponse HandleLookup(Context& ctx, const Request& r) {
  HTTP_TRY(query, ParseQuery(r.http->query));
  HTTP_TRY(amid, QueryAmid(query));
  HTTP_TRY(summary, Stored(ctx, ctx.store->LookupAgent(amid.str())));
  if (!summary) return JsonError(404, "Agent not found");
  const AgentRecord& agent = summary->agent;
  std::string body = "{";
  AppendAgentMembers(body, agent);
  body += fmt::format(
      ",\"ratings_count\":{},\"reputation_status\":\"{}\",\"one_time_prekeys_remaining\":{},"
      "\"revocation\":",
      summary->ratings, summary->ratings >= kLeaderboardMinFeedback ? "rated" : "unrated",
      summary->one_time_prekeys);
  std::optional<RevocationRecord> revocation;
  if (agent.revoked) {
    HTTP_TRY(found, Stored(ctx, ctx.store->GetRevocation(agent.amid)));
    revocation = std::move(found);
  }
  body += revocation ? Dump(RevocationJson(*revocation)) : "null";
  body += '}';
  return net::HttpResponse::Json(200, std::move(body));
}

net::HttpResponse HandleSearch(Context& ctx, const Request& r) {
  HTTP_TRY(query, ParseQuery(r.http->query));
  SearchFilter filter;
  auto capability = query.Get("capability");
  if (!capability || capability->empty()) {
    return JsonError(400,
                     "capability: query parameter is required (exact, or a prefix like travel/*)");
  }
  if (capability->size() > kMaxCapabilityLength + 2 || HasControl(*capability)) {
    return JsonError(400, "capability: too long or contains control characters");
  }
  const auto star = capability->find('*');
  if (star != std::string::npos) {
    const bool trailing =
        star + 1 == capability->size() && (star == 0 || (*capability)[star - 1] == '/');
    if (!trailing) {
      return JsonError(400, "capability: '*' is only allowed as a trailing '/*' (or alone)");
    }
    filter.prefix = true;
    filter.capability = capability->substr(0, star);
  } else {
    filter.capability = *capability;
  }
  if (auto tier_min = query.Get("tier_min")) {
    Result<Tier> tier = TierFromName(*tier_min);
    if (!tier) {
      auto number = json::parse(*tier_min, nullptr, false);
      tier = number.is_number() ? TierFromJson(number) : tier;
    }
    if (!tier) {
      return JsonError(400, "tier_min: must be anonymous, verified, organization, 2, 1 or 1.5");
    }
    filter.min_tier_rank = TierRank(*tier);
  }
  if (auto rep = query.Get("reputation_min")) {
    double value = 0;
    auto [p, ec] = std::from_chars(rep->data(), rep->data() + rep->size(), value);
    if (rep->empty() || ec != std::errc() || p != rep->data() + rep->size() ||
        !std::isfinite(value) || value < 0 || value > 1) {
      return JsonError(400, "reputation_min: must be a number from 0 to 1");
    }
    filter.min_reputation = value;
  }
  if (auto status = query.Get("status")) {
    auto presence = PresenceFromName(*status);
    if (!presence) return JsonError(400, "status: must be online, away, offline or dnd");
    filter.status = *presence;
  }
  HTTP_TRY(limit, PageLimit(query, 20, kMaxPageSize));
  HTTP_TRY(offset, PageOffset(query));
  filter.limit = limit;
  filter.offset = offset;
  HTTP_TRY(page, Stored(ctx, ctx.store->Search(filter)));
  std::string body = "{\"results\":[";
  body.reserve(64 + page.agents.size() * 512);
  for (std::size_t i = 0; i < page.agents.size(); ++i) {
    body += i == 0 ? "{" : ",{";
    AppendAgentMembers(body, page.agents[i]);
    body += '}';
  }
  body += fmt::format("],\"total\":{},\"limit\":{},\"offset\":{}}}", page.total, limit, offset);
  return net::HttpResponse::Json(200, std::move(body));
}

net::HttpResponse HandleStatus(Context& ctx, const Request& r) {
  HTTP_TRY(body, ParseObject(r));
  HTTP_TRY(amid, RequireAmid(body, "amid"));
  HTTP_TRY(status_text, RequireString(body, "status", 16));
  auto status = PresenceFromName(status_text);
  if (!status) return JsonError(400, "status: must be online, away, offline or dnd");
  HTTP_TRY(actor, LoadActor(ctx, amid, "amid"));
  HTTP_CHECK(Authenticate(ctx, r, body, actor.key));
  HTTP_TRY(updated, Stored(ctx, ctx.store->UpdatePresence(amid.str(), *status, ctx.now())));
  if (!updated) return JsonError(404, "Agent not found");
  return Reply(200, {{"success", true}});
}

net::HttpResponse HandleCapabilities(Context& ctx, const Request& r) {
  HTTP_TRY(body, ParseObject(r));
  HTTP_TRY(amid, RequireAmid(body, "amid"));
  HTTP_TRY(capabilities, ParseCapabilities(body, true));
  HTTP_TRY(actor, LoadActor(ctx, amid, "amid"));
  HTTP_CHECK(Authenticate(ctx, r, body, actor.key));
  HTTP_TRY(updated,
           Stored(ctx, ctx.store->ReplaceCapabilities(amid.str(), capabilities, ctx.now())));
  if (!updated) return JsonError(404, "Agent not found");
  return Reply(200, {{"success", true}, {"capabilities", capabilities}});
}

net::HttpResponse HandleStats(Context& ctx, const Request&) {
  HTTP_TRY(counts, Stored(ctx, ctx.store->Counts()));
  json by_tier = json::object();
  for (const auto& [tier, n] : counts.by_tier) by_tier[std::string(ToString(tier))] = n;
  json by_status = json::object();
  for (const auto& [status, n] : counts.by_status) by_status[std::string(ToString(status))] = n;
  return Reply(200, {{"total_agents", counts.total_agents},
                     {"online_agents", counts.online_agents},
                     {"revoked_agents", counts.revoked_agents},
                     {"by_tier", by_tier},
                     {"by_status", by_status},
                     {"average_reputation", counts.average_reputation},
                     {"one_time_prekeys_available", counts.one_time_prekeys_available}});
}

net::HttpResponse HandleHealthV1(Context& ctx, const Request&) {
  if (!ctx.ready->load()) {
    net::HttpResponse starting = Reply(503, {{"status", "starting"},
                                             {"error", "Service is starting up"},
                                             {"message", "database migrations are running"}});
    return starting;
  }
  HTTP_TRY(counts, Stored(ctx, ctx.store->Counts()));
  HTTP_TRY(version, Stored(ctx, ctx.store->SchemaVersion()));
  return Reply(200, {{"status", "healthy"},
                     {"version", kProtocolVersion},
                     {"backend", ctx.store->backend()},
                     {"schema_version", version},
                     {"agents_registered", counts.total_agents},
                     {"agents_online", counts.online_agents},
                     {"agents_revoked", counts.revoked_agents},
                     {"one_time_prekeys_available", counts.one_time_prekeys_available},
                     {"replay_cache_entries", ctx.replay->size()}});
}

net::HttpResponse HandleMetrics(Context& ctx, const Request& r) {
  std::string out = r.transport_metrics;
  const auto& m = *ctx.metrics;
  out += ctx.metrics->RequestsText();
  out += fmt::format(
      "# HELP amesh_registry_auth_failures_total Signed requests refused (401).\n"
      "# TYPE amesh_registry_auth_failures_total counter\n"
      "amesh_registry_auth_failures_total {}\n"
      "# HELP amesh_registry_replays_total Signed requests refused as replays (409).\n"
      "# TYPE amesh_registry_replays_total counter\n"
      "amesh_registry_replays_total {}\n"
      "# HELP amesh_registry_rate_limited_total Requests refused by a per-address limit (429).\n"
      "# TYPE amesh_registry_rate_limited_total counter\n"
      "amesh_registry_rate_limited_total{{class=\"register\"}} {}\n"
      "amesh_registry_rate_limited_total{{class=\"search\"}} {}\n"
      "# HELP amesh_registry_prekey_bundles_total Prekey bundles served.\n"
      "# TYPE amesh_registry_prekey_bundles_total counter\n"
      "amesh_registry_prekey_bundles_total{{one_time_prekey=\"yes\"}} {}\n"
      "amesh_registry_prekey_bundles_total{{one_time_prekey=\"no\"}} {}\n"
      "# HELP amesh_registry_storage_errors_total Storage operations that failed.\n"
      "# TYPE amesh_registry_storage_errors_total counter\n"
      "amesh_registry_storage_errors_total {}\n"
      "# HELP amesh_registry_reputation_flags_total Rapid reputation changes queued for review.\n"
      "# TYPE amesh_registry_reputation_flags_total counter\n"
      "amesh_registry_reputation_flags_total {}\n"
      "# HELP amesh_registry_replay_cache_entries Signatures remembered for replay detection.\n"
      "# TYPE amesh_registry_replay_cache_entries gauge\n"
      "amesh_registry_replay_cache_entries {}\n"
      "# HELP amesh_registry_ready 1 once migrations are done.\n"
      "# TYPE amesh_registry_ready gauge\n"
      "amesh_registry_ready {}\n",
      m.auth_failures.load(), m.replays.load(), m.rate_limited_register.load(),
      m.rate_limited_search.load(), m.one_time_prekeys_consumed.load(),
      m.bundles_without_one_time_prekey.load(), m.storage_errors.load(), m.reputation_flags.load(),
      ctx.replay->size(), ctx.ready->load() ? 1 : 0);
  if (ctx.ready->load()) {
    if (auto counts = ctx.store->Counts()) {
      out += fmt::format(
          "# HELP amesh_registry_agents Registered agents (not revoked).\n"
          "# TYPE amesh_registry_agents gauge\n"
          "amesh_registry_agents {}\n"
          "# HELP amesh_registry_agents_online Agents whose presence is online.\n"
          "# TYPE amesh_registry_agents_online gauge\n"
          "amesh_registry_agents_online {}\n"
          "# HELP amesh_registry_agents_revoked Revoked agents.\n"
          "# TYPE amesh_registry_agents_revoked gauge\n"
          "amesh_registry_agents_revoked {}\n"
          "# HELP amesh_registry_one_time_prekeys_available Unconsumed one-time prekeys.\n"
          "# TYPE amesh_registry_one_time_prekeys_available gauge\n"
          "amesh_registry_one_time_prekeys_available {}\n",
          counts->total_agents, counts->online_agents, counts->revoked_agents,
          counts->one_time_prekeys_available);
    }
  }
  net::HttpResponse response = net::HttpResponse::Text(200, std::move(out));
  response.content_type = "text/plain; version=0.0.4; charset=utf-8";
  return response;
}

net::HttpResponse HandlePrekeyUpload(Context& ctx, const Request& r) {
  HTTP_TRY(body, ParseObject(r));
  auto upload = ParsePrekeyUploadJson(body);
  if (!upload) {
    const Error& e = upload.error();
    return JsonError(400, fmt::format("{}{}{}", e.field, e.field.empty() ? "" : ": ", e.message));
  }
  HTTP_TRY(actor, LoadActor(ctx, upload->amid, "amid"));
  HTTP_CHECK(Authenticate(ctx, r, body, actor.key));
  if (!VerifyPrekeySignature(actor.key, upload->signed_prekey, upload->signed_prekey_signature)) {
    return JsonError(400,
                     "signed_prekey_signature: does not verify with the agent's registered "
                     "signing key");
  }
  const std::uint32_t max_keys = r.config->max_one_time_prekeys;
  if (upload->one_time_prekeys.size() > max_keys) {
    return JsonError(400, fmt::format("one_time_prekeys: at most {} per agent", max_keys));
  }
  HTTP_TRY(remaining, Stored(ctx, ctx.store->CountOneTimePrekeys(actor.agent.amid)));
  if (remaining + upload->one_time_prekeys.size() > max_keys) {
    return JsonError(400, fmt::format("one_time_prekeys: the agent would hold more than {} "
                                      "unconsumed one-time prekeys ({} stored)",
                                      max_keys, remaining));
  }
  SignedPrekeyRecord spk{upload->signed_prekey_id, Base64Encode(upload->signed_prekey.view()),
                         FormatSignature(upload->signed_prekey_signature), ctx.now()};
  std::vector<OneTimePrekeyRecord> otpks;
  otpks.reserve(upload->one_time_prekeys.size());
  for (const auto& k : upload->one_time_prekeys) {
    otpks.push_back({k.id, Base64Encode(k.key.view())});
  }
  HTTP_TRY(stored, Stored(ctx, ctx.store->StorePrekeys(actor.agent.amid, spk, otpks)));
  return Reply(200, {{"success", true},
                     {"signed_prekey_id", spk.id},
                     {"one_time_prekeys_stored", stored.stored},
                     {"one_time_prekeys_ignored", stored.ignored},
                     {"one_time_prekeys_remaining", stored.remaining}});
}

net::HttpResponse HandlePrekeyFetch(Context& ctx, const Request& r) {
  HTTP_TRY(amid, ParseAmidText(r.param, "amid"));
  HTTP_TRY(agent, Stored(ctx, ctx.store->GetAgent(amid.str())));
  if (!agent) return JsonError(404, "Agent not found");
  if (agent->revoked) return JsonError(410, "agent has been revoked: no prekeys are served");
  HTTP_TRY(bundle, Stored(ctx, ctx.store->TakeBundle(amid.str(), ctx.now())));
  if (!bundle) return JsonError(404, "No prekeys available for this agent");
  json out = {{"identity_key", agent->exchange_public_key},
              {"signed_prekey", bundle->signed_prekey.public_key},
              {"signed_prekey_signature", bundle->signed_prekey.signature},
              {"signed_prekey_id", bundle->signed_prekey.id}};
  ++ctx.metrics->prekeys_served;
  if (bundle->one_time_prekey) {
    ++ctx.metrics->one_time_prekeys_consumed;
    json otpk = {{"id", bundle->one_time_prekey->id}, {"key", bundle->one_time_prekey->public_key}};
    out["one_time_prekey"] = otpk;
    out["one_time_prekeys"] = json::array({otpk});
  } else {
    ++ctx.metrics->bundles_without_one_time_prekey;
  }
  return Reply(200, out);
}

net::HttpResponse HandleFeedback(Context& ctx, const Request& r) {
  HTTP_TRY(body, ParseObject(r));
  HTTP_TRY(from, RequireAmid(body, "from_amid"));
  HTTP_TRY(target, RequireAmid(body, "target_amid"));
  HTTP_TRY(session_id, RequireString(body, "session_id", kMaxSessionIdLength));
  auto score_it = body.find("score");
  if (score_it == body.end() || !score_it->is_number()) {
    return JsonError(400, "score: is required (a number from 0 to 1)");
  }
  const double score = score_it->get<double>();
  if (!std::isfinite(score) || score < 0 || score > 1) {
    return JsonError(400, "score: must be a number from 0 to 1");
  }
  std::vector<std::string> tags;
  if (auto it = body.find("tags"); it != body.end() && !it->is_null()) {
    if (!it->is_array() || it->size() > kMaxTags) {
      return JsonError(400, fmt::format("tags: must be an array of at most {} strings", kMaxTags));
    }
    for (std::size_t i = 0; i < it->size(); ++i) {
      const auto& t = (*it)[i];
      if (!t.is_string() || t.get_ref<const std::string&>().empty() ||
          t.get_ref<const std::string&>().size() > kMaxTagLength ||
          HasControl(t.get_ref<const std::string&>())) {
        return JsonError(
            400, fmt::format("tags[{}]: must be a string of 1 to {} bytes", i, kMaxTagLength));
      }
      tags.push_back(t.get<std::string>());
    }
  }
  if (from == target) return JsonError(400, "target_amid: an agent cannot rate itself");
  HTTP_TRY(actor, LoadActor(ctx, from, "from_amid"));
  HTTP_TRY(target_agent, Stored(ctx, ctx.store->GetAgent(target.str())));
  if (!target_agent) return JsonError(404, "Agent not found (target_amid)");
  if (target_agent->revoked) return JsonError(403, "agent has been revoked (target_amid)");
  HTTP_CHECK(Authenticate(ctx, r, body, actor.key));
  const UnixNanos now = ctx.now();
  FeedbackRecord feedback;
  feedback.id = NewUuid();
  feedback.target_amid = target.str();
  feedback.from_amid = from.str();
  feedback.session_id = session_id;
  feedback.score = score;
  feedback.tags = std::move(tags);
  // The reference's IP key: SHA-256("<ip>:<UTC date>"), first 16 hex digits.
  const std::string day = FormatRfc3339Z(now).substr(0, 10);
  feedback.ip_key = HexEncode(Sha256(AsBytes(r.http->peer.ip + ":" + day))).substr(0, 16);
  feedback.created_at = now;
  if (auto inserted = ctx.store->InsertFeedback(feedback); !inserted) {
    if (inserted.error().code == Code::kConflict) {
      return JsonError(409, "feedback for this session was already given by this agent");
    }
    return StorageFailure(ctx, inserted.error());
  }
  HTTP_TRY(new_score, Rescore(ctx, feedback.target_amid));
  return Reply(200, {{"success", true}, {"feedback_id", feedback.id}, {"score", new_score}});
}

net::HttpResponse HandleSessionReport(Context& ctx, const Request& r) {
  static constexpr std::array<std::string_view, 5> kOutcomes = {"success", "failed", "timeout",
                                                                "rejected", "cancelled"};
  HTTP_TRY(body, ParseObject(r));
  HTTP_TRY(reporter, RequireAmid(body, "reporter_amid"));
  HTTP_TRY(initiator, RequireAmid(body, "initiator_amid"));
  HTTP_TRY(receiver, RequireAmid(body, "receiver_amid"));
  HTTP_TRY(session_id, RequireString(body, "session_id", kMaxSessionIdLength));
  HTTP_TRY(outcome, RequireString(body, "outcome", 16));
  if (std::find(kOutcomes.begin(), kOutcomes.end(), outcome) == kOutcomes.end()) {
    return JsonError(400, "outcome: must be success, failed, timeout, rejected or cancelled");
  }
  HTTP_TRY(intent, OptionalString(body, "intent", 256));
  HTTP_TRY(started_text, OptionalString(body, "started_at", 64));
  std::optional<UnixNanos> started_at;
  if (started_text) {
    auto t = ParseRfc3339(*started_text);
    if (!t) return JsonError(400, "started_at: " + t.error().message);
    started_at = *t;
  }
  if (initiator == receiver) {
    return JsonError(400, "receiver_amid: must differ from initiator_amid");
  }
  HTTP_TRY(actor, LoadActor(ctx, reporter, "reporter_amid"));
  HTTP_CHECK(Authenticate(ctx, r, body, actor.key));
  if (reporter != initiator && reporter != receiver) {
    return JsonError(403, "only a participant (initiator or receiver) may report a session");
  }
  const Amid& other = reporter == initiator ? receiver : initiator;
  HTTP_TRY(other_agent, Stored(ctx, ctx.store->GetAgent(other.str())));
  if (!other_agent) return JsonError(404, "Agent not found (the other participant)");
  SessionRecord session;
  session.id = NewUuid();
  session.session_id = session_id;
  session.initiator_amid = initiator.str();
  session.receiver_amid = receiver.str();
  session.intent = intent.value_or("");
  session.outcome = outcome;
  session.started_at = started_at;
  session.reporter_amid = reporter.str();
  session.created_at = ctx.now();
  HTTP_TRY(inserted, Stored(ctx, ctx.store->InsertSession(session)));
  if (!inserted) return JsonError(409, "this session has been reported already");
  HTTP_TRY(s1, Rescore(ctx, session.initiator_amid));
  HTTP_TRY(s2, Rescore(ctx, session.receiver_amid));
  (void)s1;
  (void)s2;
  return Reply(200, {{"success", true}, {"session_record_id", session.id}});
}

net::HttpResponse HandleScore(Context& ctx, const Request& r) {
  HTTP_TRY(query, ParseQuery(r.http->query));
  HTTP_TRY(amid, QueryAmid(query));
  HTTP_TRY(agent, Stored(ctx, ctx.store->GetAgent(amid.str())));
  if (!agent) return JsonError(404, "Agent not found");
  const UnixNanos now = ctx.now();
  HTTP_TRY(view, ComputeScore(ctx, *agent, now));
  return Reply(200, ScoreJson(view, now));
}

net::HttpResponse HandleLeaderboard(Context& ctx, const Request& r) {
  HTTP_TRY(query, ParseQuery(r.http->query));
  HTTP_TRY(limit, PageLimit(query, 20, kMaxPageSize));
  auto intent = query.Get("intent");
  if (intent && intent->size() > 256) return JsonError(400, "intent: too long");
  HTTP_TRY(amids, Stored(ctx, ctx.store->LeaderboardCandidates(kLeaderboardMinFeedback, limit)));
  const UnixNanos now = ctx.now();
  json board = json::array();
  for (const auto& amid : amids) {
    HTTP_TRY(agent, Stored(ctx, ctx.store->GetAgent(amid)));
    if (!agent) continue;
    HTTP_TRY(view, ComputeScore(ctx, *agent, now));
    board.push_back(ScoreJson(view, now));
  }
  return Reply(200, {{"leaderboard", std::move(board)},
                     {"limit", limit},
                     {"intent_filter", intent ? json(*intent) : json(nullptr)}});
}

net::HttpResponse HandleRevoke(Context& ctx, const Request& r) {
  static constexpr std::array<std::string_view, 7> kReasons = {
      "key_compromise",      "policy_violation", "superseded", "cessation_of_operation",
      "privilege_withdrawn", "admin_request",    "other"};
  HTTP_TRY(body, ParseObject(r));
  HTTP_TRY(amid, RequireAmid(body, "amid"));
  HTTP_TRY(revoker, RequireAmid(body, "revoker_amid"));
  HTTP_TRY(reason, RequireString(body, "reason", 32));
  if (std::find(kReasons.begin(), kReasons.end(), reason) == kReasons.end()) {
    return JsonError(400,
                     "reason: must be key_compromise, policy_violation, superseded, "
                     "cessation_of_operation, privilege_withdrawn, admin_request or other");
  }
  HTTP_TRY(notes, OptionalString(body, "notes", kMaxNotesLength));
  HTTP_TRY(found, Stored(ctx, ctx.store->GetAgent(revoker.str())));
  if (!found) return JsonError(404, "Agent not found (revoker_amid)");
  auto key = ParseEd25519Key(found->signing_public_key);
  if (!key) return StorageFailure(ctx, Error{Code::kCorrupt, "stored signing key", {}});
  HTTP_CHECK(Authenticate(ctx, r, body, *key));
  if (revoker != amid) {
    return JsonError(403, "only the agent itself may revoke its AMID");
  }
  RevocationRecord revocation;
  revocation.id = NewUuid();
  revocation.amid = amid.str();
  revocation.reason = reason;
  revocation.revoked_by = revoker.str();
  revocation.revoked_at = ctx.now();
  revocation.notes = notes;
  if (auto inserted = ctx.store->InsertRevocation(revocation); !inserted) {
    if (inserted.error().code == Code::kConflict) return JsonError(409, "Agent already revoked");
    if (inserted.error().code == Code::kNotFound) return JsonError(404, "Agent not found");
    return StorageFailure(ctx, inserted.error());
  }
  Log(LogLevel::kInfo, fmt::format("revoked {} ({})", revocation.amid, revocation.reason));
  return Reply(200, {{"success", true}, {"revocation_id", revocation.id}, {"error", nullptr}});
}

json RevocationStatus(const std::string& amid, const std::optional<RevocationRecord>& rev) {
  return json{{"amid", amid},
              {"revoked", rev.has_value()},
              {"revocation", rev ? RevocationJson(*rev) : json(nullptr)}};
}

net::HttpResponse HandleRevocation(Context& ctx, const Request& r) {
  HTTP_TRY(query, ParseQuery(r.http->query));
  HTTP_TRY(amid, QueryAmid(query));
  HTTP_TRY(rev, Stored(ctx, ctx.store->GetRevocation(amid.str())));
  return Reply(200, RevocationStatus(amid.str(), rev));
}

net::HttpResponse HandleRevocationsBulk(Context& ctx, const Request& r) {
  HTTP_TRY(body, ParseObject(r));
  auto it = body.find("amids");
  if (it == body.end() || !it->is_array()) return JsonError(400, "amids: must be an array");
  if (it->size() > kMaxBulk) {
    return JsonError(400, fmt::format("amids: at most {} per request", kMaxBulk));
  }
  std::vector<Amid> amids;
  for (std::size_t i = 0; i < it->size(); ++i) {
    const auto& v = (*it)[i];
    if (!v.is_string()) return JsonError(400, fmt::format("amids[{}]: must be a string", i));
    HTTP_TRY(amid, ParseAmidText(v.get_ref<const std::string&>(), fmt::format("amids[{}]", i)));
    amids.push_back(amid);
  }
  json list = json::array();
  std::uint64_t revoked = 0;
  for (const auto& amid : amids) {
    HTTP_TRY(rev, Stored(ctx, ctx.store->GetRevocation(amid.str())));
    if (rev) ++revoked;
    list.push_back(RevocationStatus(amid.str(), rev));
  }
  return Reply(200, {{"revocations", std::move(list)},
                     {"total_checked", amids.size()},
                     {"total_revoked", revoked}});
}

net::HttpResponse HandleRevocationList(Context& ctx, const Request& r) {
  HTTP_TRY(query, ParseQuery(r.http->query));
  HTTP_TRY(limit, PageLimit(query, 1000, kMaxRevocationPage));
  HTTP_TRY(offset, PageOffset(query));
  HTTP_TRY(list, Stored(ctx, ctx.store->ListRevocations(limit, offset)));
  HTTP_TRY(total, Stored(ctx, ctx.store->CountRevocations()));
  HTTP_TRY(last, Stored(ctx, ctx.store->LastRevocationAt()));
  const UnixNanos now = ctx.now();
  json entries = json::array();
  for (const auto& rev : list) entries.push_back(RevocationJson(rev));
  json doc = {{"type", "agentmesh-revocation-list"},
              {"version", 1},
              {"issuer", FormatEd25519Key(ctx.root_key->public_key)},
              {"issuer_amid", Amid::FromPublicKey(ctx.root_key->public_key).str()},
              {"revocations", std::move(entries)},
              {"total", total},
              {"limit", limit},
              {"offset", offset},
              {"issued_at", FormatRfc3339Z(now)},
              {"last_updated", last ? json(FormatRfc3339Z(*last)) : json(nullptr)},
              {"next_update", FormatRfc3339Z(now + 3600 * kNanosPerSecond)}};
  HTTP_CHECK(SignWithRoot(ctx, doc));
  return Reply(200, doc);
}

net::HttpResponse HandleRootKey(Context& ctx, const Request&) {
  return Reply(200, {{"public_key", FormatEd25519Key(ctx.root_key->public_key)},
                     {"amid", Amid::FromPublicKey(ctx.root_key->public_key).str()},
                     {"public_key_multibase", EncodeMultibaseEd25519(ctx.root_key->public_key)}});
}

#if AMESH_REGISTRY_CORE_DID
net::HttpResponse HandleDid(Context& ctx, const Request& r) {
  HTTP_TRY(amid, ParseAmidText(r.param, "amid"));
  HTTP_TRY(agent, Stored(ctx, ctx.store->GetAgent(amid.str())));
  if (!agent) return JsonError(404, "DID not found");
  if (agent->revoked) return JsonError(410, "DID deactivated: the agent has been revoked");
  auto signing = ParseEd25519Key(agent->signing_public_key);
  auto exchange = ParseX25519Key(agent->exchange_public_key);
  if (!signing || !exchange) {
    return StorageFailure(ctx, Error{Code::kCorrupt, "stored key of " + agent->amid, {}});
  }
  auto doc = BuildDidDocument(
      DidDocumentInput{amid, *signing, *exchange, agent->relay_endpoint.value_or(""),
                       agent->created_at, std::max(agent->created_at, agent->updated_at)});
  if (!doc) return StorageFailure(ctx, doc.error());
  net::HttpResponse response = Reply(200, *doc);
  response.content_type = std::string(kDidContentType);
  return response;
}

#else
// TODO(did): the fallback while the core's BuildDidDocument is not in the tree.
net::HttpResponse HandleDid(Context& ctx, const Request& r) {
  HTTP_TRY(amid, ParseAmidText(r.param, "amid"));
  HTTP_TRY(agent, Stored(ctx, ctx.store->GetAgent(amid.str())));
  if (!agent) return JsonError(404, "DID not found");
  if (agent->revoked) return JsonError(410, "DID deactivated: the agent has been revoked");
  auto signing = ParseEd25519Key(agent->signing_public_key);
  auto exchange = ParseX25519Key(agent->exchange_public_key);
  if (!signing || !exchange) {
    return StorageFailure(ctx, Error{Code::kCorrupt, "stored key of " + agent->amid, {}});
  }
  const std::string did = "did:agentmesh:" + agent->amid;
  json doc = {{"@context",
               {"https://www.w3.org/ns/did/v1", "https://w3id.org/security/suites/ed25519-2020/v1",
                "https://w3id.org/security/suites/x25519-2020/v1"}},
              {"id", did},
              {"controller", did},
              {"verificationMethod",
               {{{"id", did + "#signing-key"},
                 {"type", "Ed25519VerificationKey2020"},
                 {"controller", did},
                 {"publicKeyMultibase", EncodeMultibaseEd25519(*signing)}},
                {{"id", did + "#key-agreement-key"},
                 {"type", "X25519KeyAgreementKey2020"},
                 {"controller", did},
                 {"publicKeyMultibase", EncodeMultibase(0xec, exchange->view())}}}},
              {"authentication", {did + "#signing-key"}},
              {"assertionMethod", {did + "#signing-key"}},
              {"keyAgreement", {did + "#key-agreement-key"}},
              {"created", FormatRfc3339Z(agent->created_at)},
              {"updated", FormatRfc3339Z(std::max(agent->created_at, agent->updated_at))}};
  if (agent->relay_endpoint) {
    doc["service"] = json::array({{{"id", did + "#relay"},
                                   {"type", "AgentMeshRelay"},
                                   {"serviceEndpoint", *agent->relay_endpoint}}});
  }
  net::HttpResponse response = Reply(200, doc);
  response.content_type = "application/did+ld+json";
  return response;
}
#endif

// ================================ organisations =================================================

// A JSON certificate text stored by this registry, as an object (null when absent or unreadable).
json CertificateObject(const std::optional<std::string>& text) {
  if (!text) return nullptr;
  auto doc = json::parse(*text, nullptr, false);
  return doc.is_object() ? doc : json(nullptr);
}

// Issues a certificate; a refusal is a bug (the inputs were validated), answered 500.
Http<Certificate> Issue(const CertificateParams& params, const Ed25519SecretKey& issuer) {
  auto cert = IssueCertificate(params, issuer);
  if (!cert) {
    Log(LogLevel::kError, "certificate: " + cert.error().ToString());
    return Err(500, "cannot issue the certificate");
  }
  return std::move(*cert);
}

UnixNanos CertificateLifetime(const RegistryConfig& config) {
  return std::int64_t{config.certificate_days} * 86400 * kNanosPerSecond;
}

Http<std::string> RequireId(const json& body, const char* field) {
  HTTP_TRY(id, RequireString(body, field, 64));
  if (HasControl(id))
    return Err(400, fmt::format("{}: must not contain control characters", field));
  return id;
}

// The organisation named by body["organization_id"], which `admin` must administer.
Http<OrganizationRecord> LoadAdministeredOrg(Context& ctx, const std::string& id,
                                             const Amid& admin) {
  HTTP_TRY(org, Stored(ctx, ctx.store->GetOrganization(id)));
  if (!org) return Err(404, "Organization not found");
  if (org->admin_amid != admin.str()) {
    return Err(403, "only the organization's admin (admin_amid) may do this");
  }
  return std::move(*org);
}

json OrganizationJson(const OrganizationRecord& org, std::uint64_t agent_count) {
  return json{{"id", org.id},
              {"name", org.name},
              {"domain", org.domain},
              {"admin_amid", org.admin_amid},
              {"verified", org.verified},
              {"verified_at", org.verified_at ? json(FormatRfc3339Z(*org.verified_at)) : json()},
              {"agent_count", agent_count},
              {"root_certificate", CertificateObject(org.root_certificate)},
              {"created_at", FormatRfc3339Z(org.created_at)}};
}

net::HttpResponse HandleOrgRegister(Context& ctx, const Request& r) {
  HTTP_TRY(body, ParseObject(r));
  HTTP_TRY(name, RequireString(body, "name", kMaxNameLength));
  if (HasControl(name)) return JsonError(400, "name: must not contain control characters");
  HTTP_TRY(domain_text, RequireString(body, "domain", 253));
  auto domain = NormalizeDomain(domain_text);
  if (!domain) return JsonError(400, "domain: " + domain.error().message);
  HTTP_TRY(admin, RequireAmid(body, "admin_amid"));
  HTTP_TRY(key_text, OptionalString(body, "admin_signing_public_key", 128));
  HTTP_TRY(actor, LoadActor(ctx, admin, "admin_amid"));
  if (key_text) {
    auto key = ParseEd25519Key(*key_text);
    if (!key) return JsonError(400, "admin_signing_public_key: " + key.error().message);
    if (*key != actor.key) {
      ++ctx.metrics->auth_failures;
      return JsonError(401,
                       "signature verification failed: admin_signing_public_key: is not the "
                       "admin's registered signing key");
    }
  }
  HTTP_CHECK(Authenticate(ctx, r, body, actor.key));
  SystemRng rng;
  OrganizationRecord org;
  org.id = NewUuid();
  org.name = name;
  org.domain = *domain;
  org.admin_amid = admin.str();
  org.admin_signing_key = FormatEd25519Key(actor.key);
  org.dns_challenge = Base64UrlEncode(rng.Array<32>());
  org.created_at = ctx.now();
  if (auto inserted = ctx.store->InsertOrganization(org); !inserted) {
    if (inserted.error().code == Code::kConflict) {
      return Reply(409, {{"success", false},
                         {"organization_id", nullptr},
                         {"error", "domain already registered"}});
    }
    return StorageFailure(ctx, inserted.error());
  }
  Log(LogLevel::kInfo,
      fmt::format("organization {} registered for {} by {}", org.id, org.domain, org.admin_amid));
  return Reply(201, {{"success", true},
                     {"organization_id", org.id},
                     {"domain", org.domain},
                     {"dns_challenge",
                      {{"record_type", "TXT"},
                       {"record_name", dns::OrgChallengeName(org.domain)},
                       {"record_value", dns::OrgChallengeValue(org.dns_challenge)}}},
                     {"error", nullptr}});
}

net::HttpResponse VerifiedReply(const OrganizationRecord& org) {
  return Reply(200, {{"success", true},
                     {"verified", true},
                     {"organization_id", org.id},
                     {"domain", org.domain},
                     {"root_certificate", CertificateObject(org.root_certificate)},
                     {"error", nullptr}});
}

net::HttpResponse NotVerified(int status, const std::string& message) {
  return Reply(status, {{"success", false}, {"verified", false}, {"error", message}});
}

net::HttpResponse HandleOrgVerify(Context& ctx, const Request& r) {
  HTTP_TRY(body, ParseObject(r));
  HTTP_TRY(org_id, RequireId(body, "organization_id"));
  HTTP_TRY(admin, RequireAmid(body, "admin_amid"));
  HTTP_TRY(actor, LoadActor(ctx, admin, "admin_amid"));
  HTTP_CHECK(Authenticate(ctx, r, body, actor.key));
  HTTP_TRY(org, LoadAdministeredOrg(ctx, org_id, admin));
  if (org.verified) return VerifiedReply(org);

  const std::string record_name = dns::OrgChallengeName(org.domain);
  const std::string expected = dns::OrgChallengeValue(org.dns_challenge);
  const auto servers = ResolverList(r.config->dns_resolver);
  if (servers.empty()) {
    Log(LogLevel::kError, "org verify: no DNS resolver (set dns_resolver)");
    return NotVerified(503, "no DNS resolver is configured on this registry");
  }
  auto records =
      LookupTxt(servers, record_name, std::chrono::milliseconds(r.config->dns_timeout_ms));
  if (!records) {
    const Error& e = records.error();
    Log(LogLevel::kInfo, fmt::format("org verify {}: {}", org.domain, e.ToString()));
    switch (e.code) {
      case Code::kNotFound:
        return NotVerified(400, fmt::format("DNS verification failed: no TXT record {}; publish "
                                            "\"{}\" there and retry",
                                            record_name, expected));
      case Code::kTimeout:
        return NotVerified(504, "DNS verification failed: the resolver did not answer in time");
      case Code::kInvalidArgument:
        return NotVerified(400, "DNS verification failed: the domain cannot be looked up");
      default:
        return NotVerified(502, "DNS verification failed: the resolver failed (" + e.message + ")");
    }
  }
  const bool found = std::any_of(records->begin(), records->end(), [&](std::string v) {
    while (!v.empty() && (v.back() == ' ' || v.back() == '"')) v.pop_back();
    while (!v.empty() && (v.front() == ' ' || v.front() == '"')) v.erase(v.begin());
    return v == expected;
  });
  if (!found) {
    return NotVerified(400, fmt::format("DNS verification failed: the TXT records of {} do not "
                                        "contain \"{}\"",
                                        record_name, expected));
  }
  const UnixNanos now = ctx.now();
  CertificateParams params;
  params.type = CertificateType::kOrganization;
  params.serial = NewCertificateSerial();
  params.subject = org.domain;
  params.subject_key = DeriveOrganizationKey(*ctx.root_key, org.id).public_key;
  params.issuer = std::string(kRegistryIssuerName);
  params.tier = Tier::kOrganization;
  params.issued_at = now;
  params.expires_at = now + CertificateLifetime(*r.config);
  HTTP_TRY(cert, Issue(params, ctx.root_key->secret));
  const std::string text = cert.Serialize();
  HTTP_TRY(marked, Stored(ctx, ctx.store->MarkOrganizationVerified(org.id, now, text)));
  if (!marked) {
    // Verified concurrently: answer with the certificate that was stored.
    HTTP_TRY(again, Stored(ctx, ctx.store->GetOrganization(org.id)));
    if (!again) return JsonError(404, "Organization not found");
    return VerifiedReply(*again);
  }
  org.verified = true;
  org.verified_at = now;
  org.root_certificate = text;
  Log(LogLevel::kInfo, fmt::format("organization {} verified ({})", org.domain, org.id));
  return VerifiedReply(org);
}

net::HttpResponse HandleOrgAgents(Context& ctx, const Request& r) {
  HTTP_TRY(body, ParseObject(r));
  HTTP_TRY(org_id, RequireId(body, "organization_id"));
  HTTP_TRY(agent_amid, RequireAmid(body, "agent_amid"));
  HTTP_TRY(key_text, OptionalString(body, "agent_signing_public_key", 128));
  HTTP_TRY(admin, RequireAmid(body, "admin_amid"));
  HTTP_TRY(actor, LoadActor(ctx, admin, "admin_amid"));
  HTTP_CHECK(Authenticate(ctx, r, body, actor.key));
  HTTP_TRY(org, LoadAdministeredOrg(ctx, org_id, admin));
  if (!org.verified || !org.root_certificate) {
    return JsonError(403, "organization is not DNS-verified yet (POST /v1/org/verify)");
  }
  HTTP_TRY(agent, LoadActor(ctx, agent_amid, "agent_amid"));
  if (key_text) {
    auto key = ParseEd25519Key(*key_text);
    if (!key) return JsonError(400, "agent_signing_public_key: " + key.error().message);
    if (*key != agent.key) {
      return JsonError(400, "agent_signing_public_key: is not the agent's registered key");
    }
  }
  auto org_cert = ParseCertificateText(*org.root_certificate);
  if (!org_cert) return StorageFailure(ctx, org_cert.error());
  const UnixNanos now = ctx.now();
  if (now >= org_cert->params.expires_at) {
    return JsonError(403, "the organization's certificate has expired");
  }
  const Ed25519KeyPair org_key = DeriveOrganizationKey(*ctx.root_key, org.id);
  CertificateParams params;
  params.type = CertificateType::kAgent;
  params.serial = NewCertificateSerial();
  params.subject = agent_amid.str();
  params.subject_key = agent.key;
  params.issuer = org.domain;
  params.tier = Tier::kOrganization;
  params.issued_at = now;
  params.expires_at = std::min(now + CertificateLifetime(*r.config), org_cert->params.expires_at);
  HTTP_TRY(cert, Issue(params, org_key.secret));
  if (auto added = ctx.store->AddOrganizationAgent(org.id, org.domain, agent_amid.str(),
                                                   cert.Serialize(), now);
      !added) {
    if (added.error().code == Code::kConflict) {
      return JsonError(409, "agent already belongs to another organization");
    }
    if (added.error().code == Code::kNotFound)
      return JsonError(404, "Agent not found (agent_amid)");
    return StorageFailure(ctx, added.error());
  }
  Log(LogLevel::kInfo, fmt::format("{} joined organization {}", agent_amid.str(), org.domain));
  return Reply(201, {{"success", true},
                     {"organization_id", org.id},
                     {"organization", org.domain},
                     {"agent_amid", agent_amid.str()},
                     {"tier", "organization"},
                     {"agent_certificate", cert.object},
                     {"certificate_chain", json::array({org_cert->object, cert.object})},
                     {"error", nullptr}});
}

net::HttpResponse HandleOrgLookup(Context& ctx, const Request& r) {
  HTTP_TRY(query, ParseQuery(r.http->query));
  auto domain_text = query.Get("domain");
  if (!domain_text || domain_text->empty()) {
    return JsonError(400, "domain: query parameter is required");
  }
  auto domain = NormalizeDomain(*domain_text);
  if (!domain) return JsonError(400, "domain: " + domain.error().message);
  HTTP_TRY(org, Stored(ctx, ctx.store->GetOrganizationByDomain(*domain)));
  if (!org) return JsonError(404, "Organization not found");
  HTTP_TRY(count, Stored(ctx, ctx.store->CountOrganizationAgents(org->id)));
  return Reply(200, OrganizationJson(*org, count));
}

// ================================ OAuth =========================================================

net::HttpResponse HandleOAuthProviders(Context&, const Request& r) {
  json list = json::array();
  for (const auto& p : OAuthProviders(*r.config)) {
    list.push_back({{"name", p.name}, {"display_name", p.display_name}, {"enabled", p.enabled()}});
  }
  return Reply(200, {{"providers", std::move(list)}});
}

Http<OAuthProvider> EnabledProvider(const RegistryConfig& config, std::string_view name) {
  auto provider = FindOAuthProvider(config, name);
  if (!provider) return Err(400, "provider: unknown (github or google)");
  if (!provider->enabled()) {
    return Err(400, fmt::format("provider: {} is not enabled on this registry", name));
  }
  return std::move(*provider);
}

net::HttpResponse HandleOAuthAuthorize(Context& ctx, const Request& r) {
  HTTP_TRY(body, ParseObject(r));
  HTTP_TRY(amid, RequireAmid(body, "amid"));
  HTTP_TRY(provider_name, RequireString(body, "provider", 32));
  HTTP_TRY(provider, EnabledProvider(*r.config, provider_name));
  HTTP_TRY(actor, LoadActor(ctx, amid, "amid"));
  HTTP_CHECK(Authenticate(ctx, r, body, actor.key));
  const UnixNanos now = ctx.now();
  HTTP_TRY(purged, Stored(ctx, ctx.store->DeleteExpiredOAuthStates(now)));
  (void)purged;
  SystemRng rng;
  OAuthStateRecord state;
  state.state = Base64UrlEncode(rng.Array<32>());
  state.amid = amid.str();
  state.provider = provider.name;
  state.created_at = now;
  state.expires_at = now + std::int64_t{r.config->oauth_state_ttl_seconds} * kNanosPerSecond;
  if (auto inserted = ctx.store->InsertOAuthState(state); !inserted) {
    return StorageFailure(ctx, inserted.error());
  }
  return Reply(200, {{"success", true},
                     {"provider", provider.name},
                     {"authorization_url",
                      AuthorizationUrl(provider, OAuthCallbackUrl(*r.config), state.state)},
                     {"state", state.state},
                     {"expires_in", r.config->oauth_state_ttl_seconds}});
}

net::HttpResponse CallbackError(int status, const std::string& message) {
  return Reply(status, {{"success", false}, {"error", message}});
}

net::HttpResponse HandleOAuthCallback(Context& ctx, const Request& r) {
  HTTP_TRY(query, ParseQuery(r.http->query));
  auto state_text = query.Get("state");
  if (!state_text || state_text->empty() || state_text->size() > 256) {
    return CallbackError(400, "state: query parameter is required");
  }
  HTTP_TRY(state, Stored(ctx, ctx.store->GetOAuthState(*state_text)));
  if (!state) return CallbackError(400, "unknown OAuth state");
  const UnixNanos now = ctx.now();
  if (state->consumed) return CallbackError(409, "OAuth state already used");
  if (state->expires_at <= now) {
    return CallbackError(400, "OAuth state expired; start again with /v1/auth/oauth/authorize");
  }
  if (auto error = query.Get("error")) {
    std::string shown;
    for (char c : *error) {
      if (shown.size() < 64 && c >= 0x20 && c < 0x7f) shown += c;
    }
    return CallbackError(400, "the provider reported an error: " + shown);
  }
  auto code = query.Get("code");
  if (!code || code->empty() || code->size() > 2048) {
    return CallbackError(400, "code: query parameter is required");
  }
  HTTP_TRY(provider, EnabledProvider(*r.config, state->provider));
  auto parsed_amid = Amid::Parse(state->amid);
  if (!parsed_amid) return StorageFailure(ctx, parsed_amid.error());
  HTTP_TRY(actor, LoadActor(ctx, *parsed_amid, "amid"));
  const std::string redirect_uri = OAuthCallbackUrl(*r.config);
  auto identity = ExchangeCode(provider, *code, redirect_uri,
                               std::chrono::milliseconds(r.config->oauth_timeout_ms));
  if (!identity) {
    const Error& e = identity.error();
    Log(LogLevel::kInfo,
        fmt::format("oauth {} for {}: {}", provider.name, state->amid, e.ToString()));
    if (e.code == Code::kAuthFailed) {
      return CallbackError(400, "OAuth verification failed: " + e.message);
    }
    if (e.code == Code::kTimeout) {
      return CallbackError(504, "OAuth verification failed: " + e.message);
    }
    return CallbackError(502, "OAuth verification failed: " + e.message);
  }
  const UnixNanos verified_at = ctx.now();
  CertificateParams params;
  params.type = CertificateType::kAgent;
  params.serial = NewCertificateSerial();
  params.subject = state->amid;
  params.subject_key = actor.key;
  params.issuer = std::string(kRegistryIssuerName);
  params.tier = Tier::kVerified;
  params.issued_at = verified_at;
  params.expires_at = verified_at + CertificateLifetime(*r.config);
  HTTP_TRY(cert, Issue(params, ctx.root_key->secret));
  AgentVerificationRecord verification;
  verification.amid = state->amid;
  verification.provider = provider.name;
  verification.provider_id = identity->provider_id;
  verification.verified_at = verified_at;
  verification.certificate = cert.Serialize();
  auto completed = ctx.store->CompleteOAuthVerification(state->state, verified_at, verification);
  if (!completed) {
    if (completed.error().code == Code::kNotFound) {
      return CallbackError(404, "Agent not found or revoked");
    }
    return StorageFailure(ctx, completed.error());
  }
  if (!*completed) return CallbackError(409, "OAuth state already used or expired");
  HTTP_TRY(agent, Stored(ctx, ctx.store->GetAgent(state->amid)));
  Log(LogLevel::kInfo, fmt::format("{} verified by {}", state->amid, provider.name));
  return Reply(200, {{"success", true},
                     {"amid", state->amid},
                     {"provider", provider.name},
                     {"tier", agent ? json(ToString(agent->tier)) : json("verified")},
                     {"verified_identity",
                      {{"provider", provider.name},
                       {"provider_id", identity->provider_id},
                       {"username", identity->username},
                       {"email", identity->email},
                       {"display_name", identity->display_name},
                       {"verified_at", FormatRfc3339Z(verified_at)}}},
                     {"certificate", cert.object},
                     {"error", nullptr}});
}

net::HttpResponse HandleHealth(Context&, const Request&) { return Reply(200, {{"status", "ok"}}); }

// Sorted by (path, method); MatchRoute relies on nothing but the listing, the order is for
// readers and for the table test.
constexpr Route kRoutes[] = {
    {"GET", "/health", false, "health", false, RateClass::kNone, HandleHealth},
    {"GET", "/metrics", false, "metrics", false, RateClass::kNone, HandleMetrics},
    {"GET", "/v1/auth/oauth/callback", false, "oauth_callback", true, RateClass::kNone,
     HandleOAuthCallback, Work::kExternal},
    {"POST", "/v1/auth/oauth/authorize", false, "oauth_authorize", true, RateClass::kNone,
     HandleOAuthAuthorize, Work::kWrite},
    {"GET", "/v1/auth/oauth/providers", false, "oauth_providers", false, RateClass::kNone,
     HandleOAuthProviders},
    {"GET", "/v1/health", false, "v1_health", false, RateClass::kNone, HandleHealthV1},
    {"POST", "/v1/org/agents", false, "org_agents", true, RateClass::kNone, HandleOrgAgents,
     Work::kWrite},
    {"GET", "/v1/org/lookup", false, "org_lookup", true, RateClass::kNone, HandleOrgLookup},
    {"POST", "/v1/org/register", false, "org_register", true, RateClass::kRegister,
     HandleOrgRegister, Work::kWrite},
    {"POST", "/v1/org/verify", false, "org_verify", true, RateClass::kNone, HandleOrgVerify,
     Work::kExternal},
    {"POST", "/v1/registry/capabilities", false, "capabilities", true, RateClass::kNone,
     HandleCapabilities, Work::kWrite},
    {"GET", "/v1/registry/did/", true, "did", true, RateClass::kNone, HandleDid},
    {"GET", "/v1/registry/lookup", false, "lookup", true, RateClass::kNone, HandleLookup},
    {"POST", "/v1/registry/prekeys", false, "prekeys_upload", true, RateClass::kNone,
     HandlePrekeyUpload, Work::kWrite},
    {"GET", "/v1/registry/prekeys/", true, "prekeys_fetch", true, RateClass::kNone,
     HandlePrekeyFetch, Work::kWrite},
    {"POST", "/v1/registry/register", false, "register", true, RateClass::kRegister, HandleRegister,
     Work::kWrite},
    {"GET", "/v1/registry/reputation/leaderboard", false, "leaderboard", true, RateClass::kNone,
     HandleLeaderboard},
    {"GET", "/v1/registry/reputation/score", false, "score", true, RateClass::kNone, HandleScore},
    {"POST", "/v1/registry/reputation/feedback", false, "feedback", true, RateClass::kNone,
     HandleFeedback, Work::kWrite},
    {"POST", "/v1/registry/reputation/session", false, "session", true, RateClass::kNone,
     HandleSessionReport, Work::kWrite},
    {"POST", "/v1/registry/revoke", false, "revoke", true, RateClass::kNone, HandleRevoke,
     Work::kWrite},
    {"GET", "/v1/registry/revocation", false, "revocation", true, RateClass::kNone,
     HandleRevocation},
    {"GET", "/v1/registry/revocations", false, "revocations", true, RateClass::kNone,
     HandleRevocationList},
    {"POST", "/v1/registry/revocations/bulk", false, "revocations_bulk", true, RateClass::kNone,
     HandleRevocationsBulk},
    {"GET", "/v1/registry/root-key", false, "root_key", false, RateClass::kNone, HandleRootKey},
    {"GET", "/v1/registry/search", false, "search", true, RateClass::kSearch, HandleSearch},
    {"GET", "/v1/registry/stats", false, "stats", true, RateClass::kNone, HandleStats},
    {"POST", "/v1/registry/status", false, "status", true, RateClass::kNone, HandleStatus,
     Work::kWrite},
};

}  // namespace

std::span<const Route> Routes() { return kRoutes; }

RouteMatch MatchRoute(std::string_view method, std::string_view path) {
  RouteMatch match;
  for (const Route& route : kRoutes) {
    std::string param;
    if (route.has_param) {
      if (!path.starts_with(route.path) || path.size() == route.path.size()) continue;
      const std::string_view rest = path.substr(route.path.size());
      if (rest.find('/') != std::string_view::npos) continue;
      param = std::string(rest);
    } else if (path != route.path) {
      continue;
    }
    if (route.method == method) {
      match.kind = RouteMatch::Kind::kFound;
      match.route = &route;
      match.param = std::move(param);
      return match;
    }
    match.kind = RouteMatch::Kind::kMethodNotAllowed;
    if (!match.allow.empty()) match.allow += ", ";
    match.allow += route.method;
  }
  return match;
}

net::HttpResponse JsonError(int status, std::string_view message) {
  return net::HttpResponse::Json(status, Dump(json{{"error", message}}));
}

net::HttpResponse StartingResponse() {
  return net::HttpResponse::Json(
      503, Dump(json{{"error", "Service is starting up"}, {"status", "starting"}}));
}

ReplayCache::Outcome ReplayCache::Remember(const Ed25519PublicKey& key,
                                           std::string_view signature_b64, UnixNanos now,
                                           UnixNanos expires_at, std::size_t capacity) {
  std::string entry(reinterpret_cast<const char*>(key.data()), key.size());
  entry += signature_b64;
  std::lock_guard lock(mu_);
  while (!order_.empty() && order_.front().first <= now) {
    entries_.erase(order_.front().second);
    order_.pop_front();
  }
  if (entries_.contains(entry)) return Outcome::kReplay;
  if (entries_.size() >= capacity) return Outcome::kFull;
  entries_.insert(entry);
  order_.emplace_back(expires_at, std::move(entry));
  return Outcome::kFresh;
}

std::size_t ReplayCache::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

void Metrics::CountRequest(std::string_view route, int status) {
  std::lock_guard lock(mu_);
  ++requests_[{std::string(route), status}];
}

std::string Metrics::RequestsText() const {
  std::string out =
      "# HELP amesh_registry_requests_total HTTP requests answered, by route and status.\n"
      "# TYPE amesh_registry_requests_total counter\n";
  std::lock_guard lock(mu_);
  for (const auto& [key, n] : requests_) {
    out += fmt::format("amesh_registry_requests_total{{route=\"{}\",status=\"{}\"}} {}\n",
                       key.first, key.second, n);
  }
  return out;
}

}  // namespace agentmesh::registry
