// The registry's HTTP API, I/O-free apart from the store: route table, request context and the
// handlers (handlers.cpp). The server plumbing (registry.cpp) matches a route on the loop thread,
// answers the cheap cases there (404, 405, 503 while migrating, 429) and runs the handler on a
// libuv worker thread.
//
// Every handler: parse and type-check the input (400 naming the field), authenticate mutating
// requests (PROTOCOL.md §7: 401, replay 409), do one or a few store calls, encode the answer.
// Errors are always JSON {"error": "..."}; storage failures are 500 (503 when the database is
// busy) and never leak SQL. Two handlers wait on the network from their worker thread: POST
// /v1/org/verify (a DNS TXT lookup, org.hpp, bounded by about 3 x dns_timeout_ms) and GET
// /v1/auth/oauth/callback (two provider HTTP calls, oauth.hpp, each bounded by oauth_timeout_ms).
//
// Thread-safety: handlers run concurrently on worker threads; everything they touch through
// Context is thread-safe (the store, the replay cache, the metrics) or immutable (root key,
// config snapshot).
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/timefmt.hpp"
#include "agentmesh/net/types.hpp"
#include "config.hpp"
#include "store.hpp"

namespace agentmesh::registry {

inline constexpr std::string_view kProtocolVersion = "agentmesh/1";
inline constexpr std::uint32_t kMaxPageSize = 100;

// Remembers (key, signature) pairs of accepted signed requests until their timestamp can no
// longer be fresh. Bounded: when `capacity` live entries are held, Remember refuses.
class ReplayCache {
 public:
  enum class Outcome { kFresh, kReplay, kFull };
  // `expires_at`: when the entry may be forgotten. Expired entries are dropped on the way.
  Outcome Remember(const Ed25519PublicKey& key, std::string_view signature_b64, UnixNanos now,
                   UnixNanos expires_at, std::size_t capacity);
  std::size_t size() const;

 private:
  mutable std::mutex mu_;
  std::unordered_set<std::string> entries_;
  std::deque<std::pair<UnixNanos, std::string>> order_;  // by insertion; expiry is monotone
};

// Counters for /metrics. Thread-safe.
class Metrics {
 public:
  void CountRequest(std::string_view route, int status);
  std::atomic<std::uint64_t> auth_failures{0};
  std::atomic<std::uint64_t> replays{0};
  std::atomic<std::uint64_t> rate_limited_register{0};
  std::atomic<std::uint64_t> rate_limited_search{0};
  std::atomic<std::uint64_t> prekeys_served{0};
  std::atomic<std::uint64_t> one_time_prekeys_consumed{0};
  std::atomic<std::uint64_t> bundles_without_one_time_prekey{0};
  std::atomic<std::uint64_t> storage_errors{0};
  std::atomic<std::uint64_t> reputation_flags{0};
  // Prometheus text of the per-route counters.
  std::string RequestsText() const;

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, std::uint64_t> requests_;
};

// What a handler may use. Owned by the server; outlives every job.
struct Context {
  RegistryStore* store = nullptr;
  const Ed25519KeyPair* root_key = nullptr;  // the registry's own signing key
  ReplayCache* replay = nullptr;
  Metrics* metrics = nullptr;
  std::atomic<bool>* ready = nullptr;  // migrations finished
  UnixNanos (*now)() = nullptr;
};

// One request as a handler sees it.
struct Request {
  const net::HttpRequest* http = nullptr;
  std::string param;  // the {amid} of /prekeys/{amid} and /did/{amid}, still percent-encoded
  std::shared_ptr<const RegistryConfig> config;  // snapshot taken when the request arrived
  std::string transport_metrics;                 // Prometheus text of the transport (for /metrics)
};

using Handler = net::HttpResponse (*)(Context&, const Request&);

// Per-IP token buckets that guard a route.
enum class RateClass { kNone, kRegister, kSearch };

// How a route's handler is scheduled on the worker threads. Requests that arrive in one loop
// turn are handed to the workers in groups: reads in groups of a few, writes all in one group
// whose store calls share one commit (RegistryStore::RunBatch; the answers go out after it).
// kExternal handlers wait on the network (DNS, an OAuth provider) and run alone, outside any
// group, so they never hold a group's commit or the store's write lock while they wait.
enum class Work { kRead, kWrite, kExternal };

struct Route {
  std::string_view method;
  std::string_view path;  // with has_param: the prefix before {amid} (ending in '/')
  bool has_param = false;
  std::string_view name;    // label in /metrics and logs
  bool needs_store = true;  // answered 503 until migrations are done
  RateClass rate = RateClass::kNone;
  Handler handler = nullptr;
  Work work = Work::kRead;
};

// The route table, sorted by (path, method); a route with a parameter follows its prefix.
std::span<const Route> Routes();

// Route lookup. kNotFound: no such path; kMethodNotAllowed: the path exists with other methods
// (listed in `allow`).
struct RouteMatch {
  enum class Kind { kFound, kNotFound, kMethodNotAllowed } kind = Kind::kNotFound;
  const Route* route = nullptr;
  std::string param;
  std::string allow;  // "GET, POST"
};
RouteMatch MatchRoute(std::string_view method, std::string_view path);

// {"error": message} with `status`.
net::HttpResponse JsonError(int status, std::string_view message);

// The 503 body while migrations run: {"error": ..., "status": "starting"}.
net::HttpResponse StartingResponse();

}  // namespace agentmesh::registry
