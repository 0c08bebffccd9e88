#include "methods.hpp"

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>

#include <fmt/format.h>

#include "daemon.hpp"
#include "util.hpp"

namespace agentmesh::daemon {
namespace {

using nlohmann::json;

std::unexpected<RpcError> BadParam(std::string field, std::string message) {
  return RpcFail(MakeError(Code::kInvalidArgument, std::move(message), std::move(field)));
}

std::unexpected<RpcError> NotInitialized() {
  return RpcFail(-32012, "not_initialized", "no identity yet: run `amesh init` (method init)");
}

// Typed parameter readers: absent or null optional members yield nullopt.
std::expected<std::optional<std::string>, RpcError> OptString(const json& p, const char* key) {
  auto it = p.find(key);
  if (it == p.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) return BadParam(key, "must be a string");
  return std::optional<std::string>(it->get<std::string>());
}

std::expected<std::string, RpcError> ReqString(const json& p, const char* key) {
  auto v = OptString(p, key);
  if (!v) return std::unexpected(v.error());
  if (!*v) return BadParam(key, "is required");
  if ((*v)->empty()) return BadParam(key, "must not be empty");
  return **v;
}

std::expected<std::optional<std::uint64_t>, RpcError> OptUint(const json& p, const char* key,
                                                              std::uint64_t max) {
  auto it = p.find(key);
  if (it == p.end() || it->is_null()) return std::optional<std::uint64_t>();
  if (!it->is_number_unsigned() && !(it->is_number_integer() && it->get<std::int64_t>() >= 0)) {
    return BadParam(key, "must be a non-negative integer");
  }
  const auto v = it->get<std::uint64_t>();
  if (v > max) return BadParam(key, fmt::format("must be at most {}", max));
  return std::optional<std::uint64_t>(v);
}

std::expected<std::optional<bool>, RpcError> OptBool(const json& p, const char* key) {
  auto it = p.find(key);
  if (it == p.end() || it->is_null()) return std::optional<bool>();
  if (!it->is_boolean()) return BadParam(key, "must be true or false");
  return std::optional<bool>(it->get<bool>());
}

std::expected<Amid, RpcError> ReqAmid(const json& p, const char* key) {
  auto text = ReqString(p, key);
  if (!text) return std::unexpected(text.error());
  auto amid = Amid::Parse(*text);
  if (!amid) return BadParam(key, "is not an AMID (27-28 base58 characters)");
  return *amid;
}

// "travel", "travel/flights" or {"category", "subcategory"?, "action"?}.
std::expected<Intent, RpcError> ParseIntentParam(const json& value, const char* field) {
  Intent intent;
  if (value.is_string()) {
    const std::string text = value.get<std::string>();
    const auto slash = text.find('/');
    intent.category = text.substr(0, slash);
    if (slash != std::string::npos) intent.subcategory = text.substr(slash + 1);
  } else if (value.is_object()) {
    auto cat = value.find("category");
    if (cat == value.end() || !cat->is_string()) {
      return BadParam(std::string(field) + ".category", "is required (a string)");
    }
    intent.category = cat->get<std::string>();
    for (const char* key : {"subcategory", "action"}) {
      auto it = value.find(key);
      if (it == value.end() || it->is_null()) continue;
      if (!it->is_string()) return BadParam(fmt::format("{}.{}", field, key), "must be a string");
      (std::string_view(key) == "action" ? intent.action : intent.subcategory) =
          it->get<std::string>();
    }
    if (auto u = value.find("urgency"); u != value.end() && u->is_string()) {
      auto urgency = ParseUrgency(u->get<std::string>());
      if (!urgency) return BadParam(std::string(field) + ".urgency", urgency.error().message);
      intent.urgency = *urgency;
    }
  } else {
    return BadParam(field, "must be \"category[/subcategory]\" or an object");
  }
  if (intent.category.empty()) return BadParam(field, "the category must not be empty");
  for (const auto& seg :
       {std::optional<std::string>(intent.category), intent.subcategory, intent.action}) {
    if (!seg) continue;
    if (seg->empty() || seg->size() > 64 ||
        seg->find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos) {
      return BadParam(field, "each part must be 1-64 characters of [a-z0-9_-]");
    }
  }
  return intent;
}

// Collects the KNOCK parameters shared by `knock` and `send` (when it has to knock).
std::expected<Daemon::KnockRequest, RpcError> KnockRequestFrom(const json& p, const char* amid_key,
                                                               const char* default_type) {
  Daemon::KnockRequest req;
  auto amid = ReqAmid(p, amid_key);
  if (!amid) return std::unexpected(amid.error());
  req.peer = amid->str();
  auto intent_it = p.find("intent");
  if (intent_it == p.end() || intent_it->is_null()) return BadParam("intent", "is required");
  auto intent = ParseIntentParam(*intent_it, "intent");
  if (!intent) return std::unexpected(intent.error());
  req.intent = std::move(*intent);
  auto action = OptString(p, "action");
  if (!action) return std::unexpected(action.error());
  if (*action) req.intent.action = **action;
  const char* type_key = std::string_view(amid_key) == "to" ? "session_type" : "type";
  auto type = OptString(p, type_key);
  if (!type) return std::unexpected(type.error());
  auto session_type = ParseSessionType(type->value_or(default_type));
  if (!session_type) return BadParam(type_key, "must be request_response, conversation or stream");
  req.session_request.type = *session_type;
  auto ttl = OptUint(p, "ttl_seconds", 86400);
  if (!ttl) return std::unexpected(ttl.error());
  req.session_request.ttl_seconds = static_cast<std::uint32_t>(ttl->value_or(300));
  if (req.session_request.ttl_seconds == 0) return BadParam("ttl_seconds", "must be at least 1");
  auto expected = OptUint(p, "expected_messages", 1'000'000);
  if (!expected) return std::unexpected(expected.error());
  if (*expected) {
    if (**expected == 0) return BadParam("expected_messages", "must be at least 1");
    req.session_request.expected_messages = static_cast<std::uint32_t>(**expected);
  }
  auto signed_messages = OptBool(p, "signed_messages");
  if (!signed_messages) return std::unexpected(signed_messages.error());
  req.session_request.signed_messages = signed_messages->value_or(true);
  auto timeout = OptUint(p, "timeout_ms", 600'000);
  if (!timeout) return std::unexpected(timeout.error());
  req.timeout_ms = timeout->value_or(30'000);
  return req;
}

bool LooksLikeSessionId(std::string_view text) {
  return text.size() == 36 && text[8] == '-' && text[13] == '-';
}

json AmidList(const AmidSet& set) {
  json out = json::array();
  for (const auto& a : set.items()) out.push_back(a.str());
  return out;
}

// ---- Handlers, in table order -------------------------------------------------------------------

void Allow(Daemon& d, const json& p, Responder reply) {
  auto amid = ReqAmid(p, "amid");
  if (!amid) return reply(std::unexpected(amid.error()));
  Policy next = d.policy_;
  next.allowlist.Insert(*amid);
  next.blocklist.Erase(*amid);
  if (auto r = d.SavePolicy(next); !r) return reply(RpcFail(r.error()));
  d.Audit("policy.changed", {{"change", "allow"}, {"peer", amid->str()}});
  reply(json{{"allowlist", AmidList(d.policy_.allowlist)}});
}

void AuditMethod(Daemon& d, const json& p, Responder reply) {
  auto since = OptString(p, "since");
  if (!since) return reply(std::unexpected(since.error()));
  std::optional<UnixNanos> since_t;
  if (*since) {
    auto t = ParseRfc3339(**since);
    if (!t) return reply(BadParam("since", "must be an RFC 3339 timestamp"));
    since_t = *t;
  }
  auto limit = OptUint(p, "limit", 10000);
  if (!limit) return reply(std::unexpected(limit.error()));
  const std::size_t max = limit->value_or(100);
  d.FlushAudit();  // this turn's records too
  std::ifstream in(d.options_.home / "logs" / "audit.jsonl");
  std::deque<json> events;
  std::string line;
  while (std::getline(in, line)) {
    auto ev = json::parse(line, nullptr, false);
    if (ev.is_discarded() || !ev.is_object()) continue;
    if (since_t) {
      auto t = ParseRfc3339(ev.value("time", std::string()));
      if (!t || *t < *since_t) continue;
      if (events.size() >= max) break;  // with `since`: the first `limit` events after it
    }
    events.push_back(std::move(ev));
    if (!since_t && events.size() > max) events.pop_front();  // else: the last `limit`
  }
  json out = json::array();
  for (auto& e : events) out.push_back(std::move(e));
  reply(json{{"events", std::move(out)}});
}

void Block(Daemon& d, const json& p, Responder reply) {
  auto amid = ReqAmid(p, "amid");
  if (!amid) return reply(std::unexpected(amid.error()));
  Policy next = d.policy_;
  next.blocklist.Insert(*amid);
  next.allowlist.Erase(*amid);
  if (auto r = d.SavePolicy(next); !r) return reply(RpcFail(r.error()));
  int killed = 0;
  for (auto& [sid, s] : d.sessions_) {
    if (s->row.peer == amid->str() && (s->row.state == "active" || s->row.state == "pending")) {
      d.EndSession(*s, "killed", "blocked", false);
      ++killed;
    }
  }
  d.Audit("circuit_breaker",
          {{"breaker", "block"}, {"peer", amid->str()}, {"sessions_killed", killed}});
  reply(json{{"blocklist", AmidList(d.policy_.blocklist)}, {"sessions_killed", killed}});
}

// Finds a session for close/kill, answering not_found / conflict itself.
LiveSession* LiveSessionParam(Daemon& d, const json& p, Responder& reply) {
  auto sid = ReqString(p, "session_id");
  if (!sid) {
    reply(std::unexpected(sid.error()));
    return nullptr;
  }
  LiveSession* s = d.FindSession(*sid);
  if (s != nullptr && (s->row.state == "active" || s->row.state == "pending")) return s;
  auto rows = d.store_->ListSessions(std::nullopt, 100000);
  if (rows) {
    for (const auto& r : *rows) {
      if (r.session_id == *sid) {
        reply(RpcFail(MakeError(Code::kConflict, fmt::format("the session is already {}", r.state),
                                "session_id")));
        return nullptr;
      }
    }
  }
  reply(RpcFail(MakeError(Code::kNotFound, "no such session", "session_id")));
  return nullptr;
}

void Close(Daemon& d, const json& p, Responder reply) {
  LiveSession* s = LiveSessionParam(d, p, reply);
  if (s == nullptr) return;
  auto reason = OptString(p, "reason");
  if (!reason) return reply(std::unexpected(reason.error()));
  auto summary = OptString(p, "summary");
  if (!summary) return reply(std::unexpected(summary.error()));
  const std::string sid = s->row.session_id;
  if (s->row.state == "pending") {
    d.EndSession(*s, "killed", reason->value_or("completed"), false);
    return reply(json{{"session_id", sid}, {"state", "killed"}});
  }
  d.EndSession(*s, "closed", reason->value_or("completed"), true, *summary);
  reply(json{{"session_id", sid}, {"state", "closed"}});
}

void DaemonStop(Daemon& d, const json&, Responder reply) {
  reply(json{{"stopping", true}});
  d.AfterCommit([&d] { d.timers_.Start(20, [&d] { d.Stop(); }); });
}

int KillAll(Daemon& d, std::string_view reason) {
  int killed = 0;
  for (auto& [sid, s] : d.sessions_) {
    if (s->row.state == "active" || s->row.state == "pending") {
      d.EndSession(*s, "killed", reason, false);
      ++killed;
    }
  }
  return killed;
}

void SetPaused(Daemon& d, bool paused) {
  d.paused_ = paused;
  d.Batch();
  (void)d.store_->SetMetaText("paused", paused ? "1" : "0");
}

void EmergencyStop(Daemon& d, const json&, Responder reply) {
  const int killed = KillAll(d, "emergency_stop");
  SetPaused(d, true);
  d.Audit("circuit_breaker", {{"breaker", "emergency_stop"}, {"sessions_killed", killed}});
  if (d.config_.stop_command.empty()) {
    return reply(json{{"sessions_killed", killed}, {"stop_command", {{"ran", false}}}});
  }
  struct State {
    bool answered = false;
    std::uint64_t timer = 0;
  };
  auto state = std::make_shared<State>();
  auto pid = d.SpawnChild(
      d.config_.stop_command, [&d, state, reply, killed](std::int64_t status, int signal) {
        d.Audit("emergency_stop.command", {{"exit_status", status}, {"signal", signal}});
        if (state->answered) return;
        state->answered = true;
        d.timers_.Cancel(state->timer);
        json sc = {{"ran", true}, {"exit_status", signal != 0 ? 128 + signal : status}};
        reply(json{{"sessions_killed", killed}, {"stop_command", sc}});
      });
  if (!pid) {
    LogError("emergency_stop: cannot run the stop command: " + pid.error().message);
    return reply(json{{"sessions_killed", killed},
                      {"stop_command", {{"ran", false}, {"error", pid.error().message}}}});
  }
  // A command still running after 30 s is reported as started; it keeps running.
  state->timer = d.timers_.Start(30'000, [state, reply, killed, child_pid = *pid] {
    if (state->answered) return;
    state->answered = true;
    reply(json{{"sessions_killed", killed}, {"stop_command", {{"ran", true}, {"pid", child_pid}}}});
  });
}

void Init(Daemon& d, const json& p, Responder reply) {
  auto name = OptString(p, "name");
  if (!name) return reply(std::unexpected(name.error()));
  auto registry = OptString(p, "registry");
  if (!registry) return reply(std::unexpected(registry.error()));
  auto relay = OptString(p, "relay");
  if (!relay) return reply(std::unexpected(relay.error()));
  auto force = OptBool(p, "force");
  if (!force) return reply(std::unexpected(force.error()));
  for (auto [key, value] : {std::pair{"registry", &*registry}, {"relay", &*relay}}) {
    if (*value && !(*value)->starts_with("http://") && !(*value)->starts_with("https://") &&
        !(*value)->starts_with("ws://") && !(*value)->starts_with("wss://")) {
      return reply(BadParam(key, "must be a URL"));
    }
  }
  if (*name) d.config_.display_name = **name;
  if (*registry) d.config_.registry_url = **registry;
  if (*relay) d.config_.relay_url = **relay;
  bool created = false;
  auto r = d.InitIdentity(force->value_or(false), created);
  if (!r) return reply(RpcFail(r.error()));
  if (auto s = d.SaveConfig(); !s) return reply(RpcFail(s.error()));
  d.ApplyNetworkConfig();
  if (!std::filesystem::exists(d.policy_path_)) (void)d.SavePolicy(d.policy_);
  reply(json{
      {"amid", d.identity_->amid.str()}, {"created", created}, {"home", d.options_.home.string()}});
}

void Kill(Daemon& d, const json& p, Responder reply) {
  LiveSession* s = LiveSessionParam(d, p, reply);
  if (s == nullptr) return;
  const std::string sid = s->row.session_id;
  d.EndSession(*s, "killed", "killed_by_owner", false);
  d.Audit("circuit_breaker", {{"breaker", "kill_session"}, {"session_id", sid}});
  reply(json{{"session_id", sid}, {"state", "killed"}});
}

void KnockMethod(Daemon& d, const json& p, Responder reply) {
  if (!d.identity_) return reply(NotInitialized());
  auto req = KnockRequestFrom(p, "amid", "request_response");
  if (!req) return reply(std::unexpected(req.error()));
  d.StartKnock(std::move(*req), [reply](RpcResult r) { reply(std::move(r)); });
}

void Lookup(Daemon& d, const json& p, Responder reply) {
  auto amid = ReqAmid(p, "amid");
  if (!amid) return reply(std::unexpected(amid.error()));
  d.LookupPeer(amid->str(), true, [reply, amid = amid->str()](Result<json> r) {
    if (!r && r.error().code == Code::kNotFound) {
      return reply(RpcFail(MakeError(Code::kNotFound, "unknown AMID: " + amid, "amid")));
    }
    reply(r ? RpcResult(std::move(*r)) : RpcFail(r.error()));
  });
}

void Pause(Daemon& d, const json&, Responder reply) {
  SetPaused(d, true);
  d.Audit("circuit_breaker", {{"breaker", "pause_new"}, {"paused", true}});
  reply(json{{"paused", true}});
}

void Ping(Daemon& d, const json&, Responder reply) {
  reply(json{{"pong", true},
             {"version", kVersion},
             {"pid", static_cast<int>(::getpid())},
             {"uptime_seconds", (Now() - d.started_at_) / kNanosPerSecond}});
}

void PolicyGet(Daemon& d, const json&, Responder reply) {
  reply(json{{"policy", PolicyToJson(d.policy_)}, {"path", d.policy_path_.string()}});
}

void PolicySet(Daemon& d, const json& p, Responder reply) {
  auto it = p.find("policy");
  if (it == p.end() || !it->is_object()) return reply(BadParam("policy", "must be an object"));
  auto policy = ParsePolicy(*it);
  if (!policy) {
    Error e = policy.error();
    e.field = e.field.empty() ? "policy" : "policy." + e.field;
    return reply(RpcFail(e));
  }
  if (auto r = d.SavePolicy(*policy); !r) return reply(RpcFail(r.error()));
  d.Audit("policy.changed", {{"change", "set"}});
  reply(json{{"policy", PolicyToJson(d.policy_)}});
}

void PolicyTest(Daemon& d, const json& p, Responder reply) {
  auto kit = p.find("knock");
  if (kit == p.end() || !kit->is_object()) return reply(BadParam("knock", "must be an object"));
  const json& k = *kit;
  // Either a full KNOCK or just the members the engine reads.
  std::string from_text;
  if (auto f = k.find("from"); f != k.end()) {
    if (f->is_string()) {
      from_text = f->get<std::string>();
    } else if (f->is_object() && f->contains("amid") && (*f)["amid"].is_string()) {
      from_text = (*f)["amid"].get<std::string>();
    }
  }
  auto from = Amid::Parse(from_text);
  if (!from) return reply(BadParam("knock.from.amid", "is required (an AMID)"));
  auto intent_it = k.find("intent");
  if (intent_it == k.end()) return reply(BadParam("knock.intent", "is required"));
  auto intent = ParseIntentParam(*intent_it, "knock.intent");
  if (!intent) return reply(std::unexpected(intent.error()));
  std::string session_type = "request_response";
  std::uint32_t ttl = 0;
  std::optional<bool> signed_messages;
  if (auto sr = k.find("session_request"); sr != k.end() && sr->is_object()) {
    if (sr->contains("type") && (*sr)["type"].is_string()) session_type = (*sr)["type"];
    if (sr->contains("ttl_seconds") && (*sr)["ttl_seconds"].is_number_unsigned()) {
      ttl = (*sr)["ttl_seconds"].get<std::uint32_t>();
    }
    if (sr->contains("signed_messages") && (*sr)["signed_messages"].is_boolean()) {
      signed_messages = (*sr)["signed_messages"].get<bool>();
    }
  }
  PolicyContext ctx;
  ctx.paused = d.paused_;
  ctx.active_sessions = static_cast<std::uint32_t>(d.ActiveSessionCount());
  bool signature_valid = true;
  if (auto c = p.find("context"); c != p.end() && !c->is_null()) {
    if (!c->is_object()) return reply(BadParam("context", "must be an object"));
    if (c->contains("tier") && !(*c)["tier"].is_null()) {
      auto tier = TierFromJson((*c)["tier"]);
      if (!tier) return reply(BadParam("context.tier", tier.error().message));
      ctx.registry_tier = *tier;
    }
    if (c->contains("reputation") && !(*c)["reputation"].is_null()) {
      if (!(*c)["reputation"].is_number()) {
        return reply(BadParam("context.reputation", "must be a number"));
      }
      ctx.registry_reputation = (*c)["reputation"].get<double>();
    }
    auto active = OptUint(*c, "active_sessions", 1'000'000'000);
    if (!active) return reply(std::unexpected(active.error()));
    if (*active) ctx.active_sessions = static_cast<std::uint32_t>(**active);
    auto paused = OptBool(*c, "paused");
    if (!paused) return reply(std::unexpected(paused.error()));
    if (*paused) ctx.paused = **paused;
    auto rate = OptBool(*c, "rate_limited");
    if (!rate) return reply(std::unexpected(rate.error()));
    if (*rate && **rate) {
      ctx.knock_rate_exceeded = true;
      ctx.retry_after = 60 * kNanosPerSecond;
    }
    auto sig = OptBool(*c, "signature_valid");
    if (!sig) return reply(std::unexpected(sig.error()));
    if (*sig) signature_valid = **sig;
  }
  KnockFacts facts(*from);
  facts.signature_valid = signature_valid;
  facts.intent_category = intent->category;
  const std::string sub = intent->subcategory.value_or("");
  facts.intent_subcategory = sub;
  facts.session_type = session_type;
  facts.ttl_seconds = ttl;
  facts.signed_messages = signed_messages;
  const Decision decision = EvaluateKnock(d.policy_, facts, ctx, true);
  // One shape everywhere: the core's DecisionToJson (RPC.md §3, policy.test).
  reply(DecisionToJson(decision));
}

void Recv(Daemon& d, const json& p, Responder reply) {
  auto sid = OptString(p, "session_id");
  if (!sid) return reply(std::unexpected(sid.error()));
  auto from = OptString(p, "from");
  if (!from) return reply(std::unexpected(from.error()));
  if (*from && !Amid::Parse(**from)) return reply(BadParam("from", "is not an AMID"));
  auto timeout = OptUint(p, "timeout_ms", 86'400'000);
  if (!timeout) return reply(std::unexpected(timeout.error()));
  auto limit = OptUint(p, "limit", 10000);
  if (!limit) return reply(std::unexpected(limit.error()));
  const int max = static_cast<int>(limit->value_or(100));
  if (max == 0) return reply(BadParam("limit", "must be at least 1"));
  auto peek = OptBool(p, "peek");
  if (!peek) return reply(std::unexpected(peek.error()));
  const bool consume = !peek->value_or(false);
  auto lease = OptUint(p, "lease_ms", 86'400'000);
  if (!lease) return reply(std::unexpected(lease.error()));
  const std::uint64_t lease_ms = lease->value_or(0);
  if (lease_ms > 0 && consume) return reply(BadParam("lease_ms", "needs peek: true"));
  auto rows = d.SelectForRecv(*sid, *from, max);
  if (!rows) return reply(RpcFail(rows.error()));
  if (!rows->empty() || timeout->value_or(0) == 0) {
    reply.Text(d.TakeMessages(*rows, consume));
    d.Lease(*rows, lease_ms, reply.conn());
    return;
  }
  const std::uint64_t id = d.next_wait_id_++;
  Daemon::RecvWait w;
  w.reply = reply;
  w.session_id = *sid;
  w.from = *from;
  w.limit = max;
  w.peek = !consume;
  w.lease_ms = lease_ms;
  w.timer = d.timers_.Start(**timeout, [&d, id] {
    auto it = d.recv_waits_.find(id);
    if (it == d.recv_waits_.end()) return;
    auto r = it->second.reply;
    d.recv_waits_.erase(it);
    r(json{{"messages", json::array()}});
  });
  d.recv_waits_[id] = std::move(w);
}

// Removes messages that `recv` with `peek` returned, once the application has dealt with them.
void Ack(Daemon& d, const json& p, Responder reply) {
  auto it = p.find("ids");
  if (it == p.end() || !it->is_array() || it->empty() || it->size() > 10000) {
    return reply(BadParam("ids", "must be an array of 1 to 10000 message ids"));
  }
  for (std::size_t i = 0; i < it->size(); ++i) {
    if (!(*it)[i].is_string() || (*it)[i].get_ref<const std::string&>().empty()) {
      return reply(BadParam(fmt::format("ids[{}]", i), "must be a non-empty string"));
    }
  }
  d.Batch();
  std::size_t removed = 0;
  for (const auto& id : *it) {
    auto r = d.store_->ConsumeInboxByRelayId(id.get_ref<const std::string&>());
    if (!r) return reply(RpcFail(r.error()));
    removed += *r ? 1 : 0;
    d.leases_.erase(id.get_ref<const std::string&>());
  }
  reply(json{{"removed", removed}});
}

void Register(Daemon& d, const json& p, Responder reply) {
  if (!d.identity_) return reply(NotInitialized());
  std::optional<std::vector<std::string>> caps;
  if (auto it = p.find("capabilities"); it != p.end() && !it->is_null()) {
    if (!it->is_array()) return reply(BadParam("capabilities", "must be an array of strings"));
    caps.emplace();
    for (std::size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_string() || (*it)[i].get<std::string>().empty()) {
        return reply(BadParam(fmt::format("capabilities[{}]", i), "must be a non-empty string"));
      }
      caps->push_back((*it)[i].get<std::string>());
    }
  }
  auto name = OptString(p, "display_name");
  if (!name) return reply(std::unexpected(name.error()));
  if (caps) d.config_.capabilities = *caps;
  if (*name) d.config_.display_name = **name;
  if (caps || *name) (void)d.SaveConfig();
  json extra = {{"capabilities", d.config_.capabilities}, {"relay_endpoint", d.config_.relay_url}};
  if (!d.config_.display_name.empty()) extra["display_name"] = d.config_.display_name;
  auto finish = [&d, reply](std::string tier) {
    d.registered_ = true;
    d.Batch();
    (void)d.store_->SetMetaText("registered", "1");
    d.UploadPrekeys([&d, reply, tier](Result<void> up) {
      if (!up) return reply(RpcFail(up.error()));
      d.Audit("registered", {{"registry", d.config_.registry_url}});
      if (d.relay_ && d.relay_->connected()) d.ReportPresence("online");
      reply(json{
          {"amid", d.identity_->amid.str()}, {"tier", tier}, {"registry", d.config_.registry_url}});
    });
  };
  d.registry_->Register(
      d.identity_->signing, d.identity_->exchange.public_key, extra,
      [&d, reply, finish](Result<json> r) {
        if (r) {
          std::string tier = "anonymous";
          if (r->is_object() && r->contains("tier")) {
            if (auto t = TierFromJson((*r)["tier"])) tier = std::string(ToString(*t));
          }
          return finish(tier);
        }
        if (r.error().code != Code::kConflict) return reply(RpcFail(r.error()));
        // Already registered: refresh the capabilities instead.
        d.registry_->UpdateCapabilities(
            d.identity_->signing, d.config_.capabilities, [&d, reply, finish](Result<json> u) {
              if (!u) return reply(RpcFail(u.error()));
              d.LookupPeer(d.identity_->amid.str(), true, [finish](Result<json> l) {
                std::string tier = "anonymous";
                if (l && l->is_object() && l->contains("tier")) {
                  if (auto t = TierFromJson((*l)["tier"])) tier = std::string(ToString(*t));
                }
                finish(tier);
              });
            });
      });
}

// `idempotency_key`: 1-128 characters of [A-Za-z0-9_.:-], or absent.
std::expected<std::string, RpcError> IdempotencyKey(const json& p) {
  auto key = OptString(p, "idempotency_key");
  if (!key) return std::unexpected(key.error());
  if (!*key) return std::string();
  const std::string& k = **key;
  const bool ok = !k.empty() && k.size() <= 128 && std::all_of(k.begin(), k.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == ':' ||
           c == '-';
  });
  if (!ok) {
    return std::unexpected(
        BadParam("idempotency_key", "must be 1-128 characters of [A-Za-z0-9_.:-]").error());
  }
  return k;
}

// Idempotency of send/reply: answers at once and returns true for a key already used (the first
// call's result, or a conflict when it named another session) or one whose call is still in
// progress; otherwise marks the key in progress until `reply` answers, and returns false.
bool AnsweredByKey(Daemon& d, const std::string& key, const std::string& session_id,
                   Responder& reply) {
  if (key.empty()) return false;
  if (auto earlier = d.EarlierSend(key, session_id)) {
    reply(std::move(*earlier));
    return true;
  }
  if (!d.idempotency_in_flight_.insert(key).second) {
    reply(RpcFail(MakeError(Code::kConflict,
                            "a call with this idempotency_key is still in progress; retry when it "
                            "has answered",
                            "idempotency_key")));
    return true;
  }
  reply.OnAnswer([&d, key] { d.idempotency_in_flight_.erase(key); });
  return false;
}

void Reply(Daemon& d, const json& p, Responder reply) {
  if (!d.identity_) return reply(NotInitialized());
  auto sid = ReqString(p, "session_id");
  if (!sid) return reply(std::unexpected(sid.error()));
  auto payload = p.find("payload");
  if (payload == p.end() || !payload->is_object()) {
    return reply(BadParam("payload", "must be a JSON object"));
  }
  auto type_text = OptString(p, "type");
  if (!type_text) return reply(std::unexpected(type_text.error()));
  auto type = ParseEnvelopeType(type_text->value_or("response"));
  if (!type || *type == EnvelopeType::kClose) {
    return reply(BadParam("type",
                          "must be response, request, status, error or "
                          "capability_negotiation(_response); use close to close"));
  }
  if (auto v = ValidatePayload(*type, *payload); !v) return reply(RpcFail(v.error()));
  auto key = IdempotencyKey(p);
  if (!key) return reply(std::unexpected(key.error()));
  if (AnsweredByKey(d, *key, *sid, reply)) return;
  d.SendEnvelope(
      *sid, *type, *payload, [reply](RpcResult r) { reply(std::move(r)); }, *key);
}

void Resume(Daemon& d, const json&, Responder reply) {
  SetPaused(d, false);
  d.Audit("circuit_breaker", {{"breaker", "pause_new"}, {"paused", false}});
  reply(json{{"paused", false}});
}

void Search(Daemon& d, const json& p, Responder reply) {
  SearchQuery q;
  auto cap = ReqString(p, "capability");
  if (!cap) return reply(std::unexpected(cap.error()));
  q.capability = *cap;
  if (auto it = p.find("tier_min"); it != p.end() && !it->is_null()) {
    auto tier = TierFromJson(*it);
    if (!tier) return reply(BadParam("tier_min", tier.error().message));
    q.tier_min = it->is_string() ? it->get<std::string>() : it->dump();
  }
  if (auto it = p.find("reputation_min"); it != p.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() < 0 || it->get<double>() > 1) {
      return reply(BadParam("reputation_min", "must be a number in [0, 1]"));
    }
    q.reputation_min = it->get<double>();
  }
  auto status = OptString(p, "status");
  if (!status) return reply(std::unexpected(status.error()));
  q.status = *status;
  auto limit = OptUint(p, "limit", 1000);
  if (!limit) return reply(std::unexpected(limit.error()));
  q.limit = static_cast<std::uint32_t>(limit->value_or(20));
  auto offset = OptUint(p, "offset", 1'000'000'000);
  if (!offset) return reply(std::unexpected(offset.error()));
  q.offset = static_cast<std::uint32_t>(offset->value_or(0));
  d.registry_->Search(
      q, [reply](Result<json> r) { reply(r ? RpcResult(std::move(*r)) : RpcFail(r.error())); });
}

// State shared by the two halves of `send … wait_ms`: the delivery answer and the response.
struct SendWait {
  Responder reply;
  std::optional<json> result;
  std::optional<json> response;
  bool done = false;
  void Finish() {
    if (done || !result || !response) return;
    done = true;
    json out = *result;
    out["response"] = *response;
    reply(std::move(out));
  }
  void Fail(RpcError e) {
    if (done) return;
    done = true;
    reply(std::unexpected(std::move(e)));
  }
};

void AwaitResponse(Daemon& d, const std::string& sid, const std::shared_ptr<SendWait>& wait,
                   std::uint64_t wait_ms);

void SendOnSession(Daemon& d, const std::string& sid, EnvelopeType type, json payload,
                   std::optional<std::uint64_t> wait_ms, const std::string& key, Responder reply) {
  if (!wait_ms) {
    d.SendEnvelope(
        sid, type, std::move(payload), [reply](RpcResult r) { reply(std::move(r)); }, key);
    return;
  }
  if (d.response_waits_.contains(sid)) {
    return reply(RpcFail(MakeError(
        Code::kConflict, "another call is already waiting for this session's response", "to")));
  }
  auto wait = std::make_shared<SendWait>();
  wait->reply = reply;
  d.SendEnvelope(
      sid, type, std::move(payload),
      [&d, wait, sid](RpcResult r) {
        if (!r) {
          auto it = d.response_waits_.find(sid);
          if (it != d.response_waits_.end()) {
            d.timers_.Cancel(it->second.timer);
            d.response_waits_.erase(it);
          }
          return wait->Fail(r.error());
        }
        wait->result = std::move(*r);
        wait->Finish();
      },
      key);
  if (wait->done) return;
  AwaitResponse(d, sid, wait, *wait_ms);
}

// Registers `wait` for the session's next response (or error) envelope, for `wait_ms`.
void AwaitResponse(Daemon& d, const std::string& sid, const std::shared_ptr<SendWait>& wait,
                   std::uint64_t wait_ms) {
  Daemon::ResponseWait rw;
  rw.done = [wait](RpcResult r) {
    if (!r) return wait->Fail(r.error());
    wait->response = std::move(*r);
    if (!wait->result) {
      wait->result =
          json{{"session_id", (*wait->response)["session_id"]}, {"delivery", "delivered"}};
    }
    wait->Finish();
  };
  rw.timer = d.timers_.Start(wait_ms, [&d, sid, wait] {
    auto it = d.response_waits_.find(sid);
    if (it == d.response_waits_.end()) return;
    d.response_waits_.erase(it);
    RpcError e = ToRpcError(MakeError(Code::kTimeout, "no response within wait_ms", "wait_ms"));
    e.data["session_id"] = sid;  // the caller can `recv` the late response from this session
    wait->Fail(std::move(e));
  });
  d.response_waits_[sid] = std::move(rw);
  d.ServeWaiters();
}

// Optimistic send (RPC.md §3, `send`): the peer is in our allowlist, so the first envelope goes
// out right behind the KNOCK. The call answers once the KNOCK is answered: ACCEPT → the send
// result (plus `optimistic:true`; with wait_ms, after the response), REJECT → -32011 (the peer
// dropped the envelope unread: data.message_dropped).
void SendOptimistic(Daemon& d, Daemon::KnockRequest req, EnvelopeType type, json payload,
                    std::optional<std::uint64_t> wait_ms, const std::string& key, Responder reply) {
  struct State {
    std::optional<RpcResult> first, knock;
    bool done = false;
  };
  auto st = std::make_shared<State>();
  auto finish = [&d, st, reply, wait_ms, key] {
    if (st->done || !st->first || !st->knock) return;
    st->done = true;
    if (!*st->knock) {
      if (!key.empty()) {  // the message was dropped: a retry with the key must try again
        d.Batch();
        (void)d.store_->DeleteSentKey(key);
      }
      RpcError e = st->knock->error();
      if (e.code == -32011) e.data["message_dropped"] = true;
      return reply(std::unexpected(std::move(e)));
    }
    if (!*st->first) return reply(std::move(*st->first));
    json result = std::move(**st->first);
    result["optimistic"] = true;
    if (!wait_ms) return reply(std::move(result));
    const std::string sid = result["session_id"].get<std::string>();
    if (d.response_waits_.contains(sid)) {
      return reply(RpcFail(MakeError(
          Code::kConflict, "another call is already waiting for this session's response", "to")));
    }
    auto wait = std::make_shared<SendWait>();
    wait->reply = reply;
    wait->result = std::move(result);
    AwaitResponse(d, sid, wait, *wait_ms);
  };
  req.first_message = Daemon::KnockRequest::FirstMessage{type, std::move(payload),
                                                         [st, finish](RpcResult r) {
                                                           st->first = std::move(r);
                                                           finish();
                                                         },
                                                         key};
  d.StartKnock(std::move(req), [st, finish](RpcResult r) {
    st->knock = std::move(r);
    // A KNOCK that failed before anything was sent never runs the first message's callback.
    if (!st->first && !*st->knock) st->first = RpcResult(json::object());
    finish();
  });
}

void Send(Daemon& d, const json& p, Responder reply) {
  if (!d.identity_) return reply(NotInitialized());
  auto to = ReqString(p, "to");
  if (!to) return reply(std::unexpected(to.error()));
  auto payload_it = p.find("payload");
  if (payload_it == p.end() || !payload_it->is_object()) {
    return reply(BadParam("payload", "must be a JSON object"));
  }
  auto type_text = OptString(p, "type");
  if (!type_text) return reply(std::unexpected(type_text.error()));
  auto type = ParseEnvelopeType(type_text->value_or("request"));
  if (!type || *type == EnvelopeType::kClose) {
    return reply(BadParam("type",
                          "must be request, response, status, error or "
                          "capability_negotiation(_response)"));
  }
  if (auto v = ValidatePayload(*type, *payload_it); !v) return reply(RpcFail(v.error()));
  auto wait_ms = OptUint(p, "wait_ms", 86'400'000);
  if (!wait_ms) return reply(std::unexpected(wait_ms.error()));
  auto key = IdempotencyKey(p);
  if (!key) return reply(std::unexpected(key.error()));
  // A retry of a send that went out: answered before any session lookup or KNOCK.
  if (AnsweredByKey(d, *key, LooksLikeSessionId(*to) ? *to : std::string(), reply)) return;
  json payload = *payload_it;
  if (LooksLikeSessionId(*to)) {
    return SendOnSession(d, *to, *type, std::move(payload), *wait_ms, *key, reply);
  }
  auto amid = Amid::Parse(*to);
  if (!amid) return reply(BadParam("to", "must be a session id or an AMID"));
  std::optional<Intent> intent;
  if (auto it = p.find("intent"); it != p.end() && !it->is_null()) {
    auto parsed = ParseIntentParam(*it, "intent");
    if (!parsed) return reply(std::unexpected(parsed.error()));
    intent = std::move(*parsed);
  }
  // Reuse an active session we opened with this peer for the same intent category.
  const UnixNanos now = Now();
  const UnixNanos cache = static_cast<UnixNanos>(d.config_.session_cache_seconds) * kNanosPerSecond;
  LiveSession* best = nullptr;
  for (auto& [sid, s] : d.sessions_) {
    const SessionRow& r = s->row;
    if (r.state != "active" || r.role != "initiator" || r.peer != amid->str()) continue;
    if (r.type == "request_response" || now > r.expires_at || now - r.created_at > cache) continue;
    if (intent && r.intent_category != intent->category) continue;
    if (best == nullptr || r.created_at > best->row.created_at) best = s.get();
  }
  if (best != nullptr) {
    return SendOnSession(d, best->row.session_id, *type, std::move(payload), *wait_ms, *key, reply);
  }
  if (!intent) {
    return reply(BadParam("intent", "is required: there is no active session with this peer"));
  }
  json knock_params = p;
  knock_params["intent"] = json{{"category", intent->category}};
  if (intent->subcategory) knock_params["intent"]["subcategory"] = *intent->subcategory;
  auto req = KnockRequestFrom(knock_params, "to", "conversation");
  if (!req) return reply(std::unexpected(req.error()));
  req->intent.urgency = intent->urgency;
  if (d.policy_.allowlist.Contains(*amid) && req->session_request.signed_messages) {
    return SendOptimistic(d, std::move(*req), *type, std::move(payload), *wait_ms, *key, reply);
  }
  d.StartKnock(std::move(*req), [&d, reply, type = *type, payload = std::move(payload),
                                 wait_ms = *wait_ms, key = *key](RpcResult r) mutable {
    if (!r) return reply(std::move(r));
    const std::string sid = (*r)["session_id"].get<std::string>();
    SendOnSession(d, sid, type, std::move(payload), wait_ms, key, reply);
  });
}

void Sessions(Daemon& d, const json& p, Responder reply) {
  auto state = OptString(p, "state");
  if (!state) return reply(std::unexpected(state.error()));
  static const std::set<std::string> kStates = {"pending", "active",   "closed",
                                                "killed",  "rejected", "expired"};
  if (*state && !kStates.contains(**state)) {
    return reply(BadParam("state", "must be pending, active, closed, killed, rejected or expired"));
  }
  auto rows = d.store_->ListSessions(*state, 1000);
  if (!rows) return reply(RpcFail(rows.error()));
  json out = json::array();
  std::set<std::string> listed;
  for (const auto& [sid, s] : d.sessions_) {
    if (*state && s->row.state != **state) continue;
    out.push_back(d.SessionToJson(s->row));
    listed.insert(sid);
  }
  for (const auto& r : *rows) {
    if (listed.contains(r.session_id)) continue;
    if (d.sessions_.contains(r.session_id)) continue;  // newer state in memory
    out.push_back(d.SessionToJson(r));
  }
  reply(json{{"sessions", std::move(out)}});
}

void Shutdown(Daemon& d, const json&, Responder reply) {
  int closed = 0;
  for (auto& [sid, s] : d.sessions_) {
    if (s->row.state == "active") {
      d.EndSession(*s, "closed", "shutdown", true);
      ++closed;
    } else if (s->row.state == "pending") {
      d.EndSession(*s, "killed", "shutdown", false);
      ++closed;
    }
  }
  SetPaused(d, true);
  d.Audit("circuit_breaker", {{"breaker", "shutdown"}, {"sessions_closed", closed}});
  reply(json{{"sessions_closed", closed}, {"paused", true}});
}

void Status(Daemon& d, const json&, Responder reply) {
  json out = {
      {"initialized", d.identity_.has_value()},
      {"version", kVersion},
      {"home", d.options_.home.string()},
      {"socket", d.options_.socket_path},
      {"paused", d.paused_},
      {"relay", {{"url", d.config_.relay_url}, {"connected", d.relay_ && d.relay_->connected()}}},
      {"registry",
       {{"url", d.config_.registry_url},
        {"reachable", d.registry_reachable_},
        {"registered", d.registered_},
        {"presence", d.presence_.empty() ? json(nullptr) : json(d.presence_)}}},
      {"sessions", {{"active", d.ActiveSessionCount()}}}};
  if (!d.registry_error_.empty()) out["registry"]["error"] = d.registry_error_;
  if (d.identity_) out["amid"] = d.identity_->amid.str();
  auto pending = d.store_->CountPendingInbox();
  out["inbox"] = {{"pending", pending ? *pending : 0}};
  auto unconfirmed = d.store_->CountOutbox();
  out["outbox"] = {{"pending", unconfirmed ? *unconfirmed : 0}};
  if (d.rpc_) {
    out["rpc"] = {{"connections", d.rpc_->connections()},
                  {"busy_poll_us", d.config_.rpc_busy_poll_us},
                  {"reads", d.rpc_->reads()},
                  {"busy_poll_reads", d.rpc_->busy_poll_reads()}};
  }
  reply(std::move(out));
}

void Subscribe(Daemon& d, const json& p, Responder reply) {
  Daemon::Subscription sub;
  sub.conn = reply.conn();
  if (auto it = p.find("events"); it != p.end() && !it->is_null()) {
    if (!it->is_array()) return reply(BadParam("events", "must be an array of event types"));
    for (std::size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_string()) {
        return reply(BadParam(fmt::format("events[{}]", i), "must be a string"));
      }
      sub.events.insert((*it)[i].get<std::string>());
    }
  }
  const std::uint64_t id = d.next_subscription_++;
  d.subscriptions_[id] = std::move(sub);
  reply(json{{"subscription", id}});
}

void Transcript(Daemon& d, const json& p, Responder reply) {
  auto sid = ReqString(p, "session_id");
  if (!sid) return reply(std::unexpected(sid.error()));
  auto rows = d.store_->LoadTranscript(*sid);
  if (!rows) return reply(RpcFail(rows.error()));
  json messages = json::array();
  for (const auto& r : *rows) {
    auto plain = d.OpenBlob("agentmeshd:transcript:" + r.session_id, r.sealed);
    if (!plain) return reply(RpcFail(plain.error()));
    auto envelope = json::parse(plain->Expose().begin(), plain->Expose().end(), nullptr, false);
    messages.push_back({{"direction", r.direction},
                        {"sequence", r.sequence},
                        {"type", r.type},
                        {"recorded_at", FormatRfc3339Z(r.at / kNanosPerMilli * kNanosPerMilli)},
                        {"envelope", envelope.is_discarded() ? json(nullptr) : envelope}});
  }
  reply(json{{"session_id", *sid}, {"messages", std::move(messages)}});
}

void Unblock(Daemon& d, const json& p, Responder reply) {
  auto amid = ReqAmid(p, "amid");
  if (!amid) return reply(std::unexpected(amid.error()));
  Policy next = d.policy_;
  next.blocklist.Erase(*amid);
  if (auto r = d.SavePolicy(next); !r) return reply(RpcFail(r.error()));
  d.Audit("policy.changed", {{"change", "unblock"}, {"peer", amid->str()}});
  reply(json{{"blocklist", AmidList(d.policy_.blocklist)}});
}

void Unsubscribe(Daemon& d, const json& p, Responder reply) {
  auto id = OptUint(p, "subscription", UINT64_MAX);
  if (!id) return reply(std::unexpected(id.error()));
  if (!*id) return reply(BadParam("subscription", "is required"));
  auto it = d.subscriptions_.find(**id);
  if (it == d.subscriptions_.end() || it->second.conn != reply.conn()) {
    return reply(RpcFail(MakeError(Code::kNotFound, "no such subscription", "subscription")));
  }
  d.subscriptions_.erase(it);
  reply(json{{"unsubscribed", true}});
}

void Whoami(Daemon& d, const json&, Responder reply) {
  if (!d.identity_) return reply(NotInitialized());
  reply(json{{"amid", d.identity_->amid.str()},
             {"signing_public_key", FormatEd25519Key(d.identity_->signing.public_key)},
             {"exchange_public_key", FormatX25519Key(d.identity_->exchange.public_key)},
             {"display_name", d.config_.display_name},
             {"registry", d.config_.registry_url},
             {"relay", d.config_.relay_url}});
}

constexpr std::array kMethods = {
    MethodEntry{"ack", Ack},
    MethodEntry{"allow", Allow},
    MethodEntry{"audit", AuditMethod},
    MethodEntry{"block", Block},
    MethodEntry{"close", Close},
    MethodEntry{"daemon.stop", DaemonStop},
    MethodEntry{"emergency_stop", EmergencyStop},
    MethodEntry{"init", Init},
    MethodEntry{"kill", Kill},
    MethodEntry{"knock", KnockMethod},
    MethodEntry{"lookup", Lookup},
    MethodEntry{"pause", Pause},
    MethodEntry{"ping", Ping},
    MethodEntry{"policy.get", PolicyGet},
    MethodEntry{"policy.set", PolicySet},
    MethodEntry{"policy.test", PolicyTest},
    MethodEntry{"recv", Recv},
    MethodEntry{"register", Register},
    MethodEntry{"reply", Reply},
    MethodEntry{"resume", Resume},
    MethodEntry{"search", Search},
    MethodEntry{"send", Send},
    MethodEntry{"sessions", Sessions},
    MethodEntry{"shutdown", Shutdown},
    MethodEntry{"status", Status},
    MethodEntry{"subscribe", Subscribe},
    MethodEntry{"transcript", Transcript},
    MethodEntry{"unblock", Unblock},
    MethodEntry{"unsubscribe", Unsubscribe},
    MethodEntry{"whoami", Whoami},
};

constexpr bool SortedUnique() {
  for (std::size_t i = 1; i < kMethods.size(); ++i) {
    if (!(kMethods[i - 1].name < kMethods[i].name)) return false;
  }
  return true;
}
static_assert(SortedUnique(), "kMethods must be sorted by name without duplicates");

}  // namespace

std::span<const MethodEntry> MethodTable() { return kMethods; }

MethodHandler FindMethod(std::string_view name) {
  auto it = std::lower_bound(kMethods.begin(), kMethods.end(), name,
                             [](const MethodEntry& e, std::string_view n) { return e.name < n; });
  return it != kMethods.end() && it->name == name ? it->handler : nullptr;
}

void Daemon::Dispatch(Responder reply, const std::string& method, const json& params) {
  MethodHandler handler = FindMethod(method);
  if (handler == nullptr) {
    return reply(RpcFail(-32601, "method_not_found", fmt::format("unknown method '{}'", method)));
  }
  handler(*this, params, reply);
}

}  // namespace agentmesh::daemon
