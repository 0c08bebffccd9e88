// registry_bench: the registry under load (issue 4, "Benchmark"). Loads N agents straight into the
// backend (OpenStore + Migrate + InsertAgent, prekeys with StorePrekeys), starts the real
// amesh-registry binary on that database and drives it from a single-threaded libuv load generator
// over keep-alive HTTP/1.1 on loopback: C connections, closed loop (each connection sends its next
// request when the previous answer is complete).
//
//   registry_bench [--quick] [--agents N] [--connections C] [--seconds S] [--runs R]
//                  [--backend sqlite|postgresql|both] [--scenario NAME] [--data-dir DIR]
//                  [--prekey-agents P] [--registry-bin PATH]
//
// Figures, measured run by run in this order (every run of every figure in the same process and
// against the same server):
//   health     GET /health: the ceiling of the HTTP layer (route match, worker hop, JSON reply).
//   lookup     GET /v1/registry/lookup?amid=… over random loaded agents.
//   register   POST /v1/registry/register of new agents; the bodies are signed before the timed
//              phase (fresh keys, §7 signature), so the generator spends no time on crypto.
//   prekeys    GET /v1/registry/prekeys/{amid} over the agents loaded with prekeys; each fetch
//              consumes one one-time prekey (a write).
//   search     GET /v1/registry/search?capability=… exact (a category drawn with the same skew as
//              the data) and prefix (`domain/*`), with p50/p99 latency. Last, because a slow
//              search leaves a queue behind; every measurement drains its requests in flight
//              before the next one starts.
// A rate counts the good responses completed inside the window; latencies are from the write of
// the request to the end of its response.
//
// Data set (deterministic: agent i's keys come from DeterministicRng(seed + i), so the bench can
// regenerate any AMID instead of reading it back): 200 capability categories (20 domains x 10,
// e.g. travel/flights), 1-4 per agent drawn with a Zipf-like skew; tiers 80/15/5 % anonymous /
// verified / organization; reputations spread over 0.05-0.98; statuses 20/10/65/5 % online / away /
// offline / dnd; last_seen over the last 30 days; 0.1 % revoked. P agents get a signed prekey and
// --otpks one-time prekeys (random 32-byte public keys: they are served, never used for DH).
//
// SQLite: the loaded database is cached as DATA_DIR/registry-sqlite-<N>-v<format>.db (default
// DATA_DIR /tmp/registry_bench) and copied into a temp dir for each bench session, so repeated
// runs start from the same state without reloading. PostgreSQL: a throw-away server
// (tests/support/postgres_server, with shared_buffers=1GB as a production server would be sized,
// and durable commits, unlike the tests' server) is loaded every time, unless --postgres-url
// names a database to use (and load once).
//
// Every figure is the median of --runs runs, printed with its ratio to the /health ceiling of the
// same run set. Responses are checked (status 200/201 and the shape of the body); a figure with
// errors is reported as such. The generator and the registry share the machine.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sodium.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include <fmt/format.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/registry_auth.hpp"
#include "agentmesh/core/rng.hpp"
#include "process.hpp"
#include "store.hpp"
#if AMESH_BENCH_POSTGRES
#include "agentmesh/storage/postgres.hpp"
#include "bench_stats.hpp"
#include "postgres_server.hpp"
#endif

#ifndef AMESH_REGISTRY_BIN
#define AMESH_REGISTRY_BIN "amesh-registry"
#endif

using namespace agentmesh;
using agentmesh::registry::AgentRecord;
using agentmesh::registry::OneTimePrekeyRecord;
using agentmesh::registry::Presence;
using agentmesh::registry::RegistryStore;
using agentmesh::registry::RevocationRecord;
using agentmesh::registry::SignedPrekeyRecord;

namespace {

using agentmesh::bench::Human;
using agentmesh::bench::Median;
using agentmesh::bench::Percentile;
UnixNanos WallNow() { return agentmesh::bench::WallNowNs(); }

// Bump when the generated data set changes, so stale caches are not reused.
constexpr int kDataFormat = 2;
constexpr std::uint64_t kSeedBase = 0x7265676265000000ULL;  // "regbe"

struct Options {
  std::uint64_t agents = 100'000;
  int connections = 32;
  double seconds = 3.0;
  double warmup = 0.5;
  int runs = 3;
  std::uint64_t prekey_agents = 2'000;
  std::uint32_t otpks = 50;
  std::string backend = "sqlite";
  std::string scenario = "all";
  std::string data_dir = "/tmp/registry_bench";
  std::string registry_bin = AMESH_REGISTRY_BIN;
  std::string postgres_url;        // an operator's server instead of a throw-away one
  double register_budget = 8'000;  // pre-signed registrations per second of a run
  bool quick = false;
};

std::uint64_t NowNs() { return uv_hrtime(); }

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "registry_bench: %s\n", what.c_str());
  std::fflush(stderr);
  std::exit(1);
}

// CPU seconds (user + system) used so far by a process (a /proc/PID/stat path).
double StatCpu(const std::string& stat_path) {
  std::ifstream in(stat_path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(text.substr(paren + 2));
  std::string skip;
  for (int i = 0; i < 11; ++i) fields >> skip;
  double utime = 0;
  double stime = 0;
  fields >> utime >> stime;
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double SelfCpu() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// ---------------------------------------------------------------------------------------------
// The data set.

// 20 domains x 10 subcategories, listed by popularity rank; draws follow a Zipf-like law
// (weight 1 / (rank + 1)^0.9), so the first categories are common and the tail is rare.
class Vocabulary {
 public:
  Vocabulary() {
    static const char* const kDomains[20][11] = {
        {"travel", "flights", "hotels", "trains", "car-rental", "visas", "itineraries", "cruises",
         "insurance", "tours", "loyalty"},
        {"finance", "payments", "invoicing", "accounting", "tax", "fx", "credit", "payroll",
         "audit", "budgeting", "trading"},
        {"code", "review", "generation", "testing", "refactoring", "debugging", "ci", "security",
         "docs", "migration", "profiling"},
        {"data", "etl", "cleaning", "labeling", "sql", "visualization", "forecasting", "scraping",
         "warehousing", "quality", "streaming"},
        {"language", "translation", "summarization", "proofreading", "transcription", "sentiment",
         "classification", "extraction", "rewriting", "qa", "tts"},
        {"commerce", "catalog", "pricing", "orders", "returns", "inventory", "shipping", "reviews",
         "recommendations", "fraud", "checkout"},
        {"health", "scheduling", "triage", "records", "pharmacy", "nutrition", "fitness",
         "insurance", "imaging", "trials", "coding"},
        {"legal", "contracts", "compliance", "research", "filing", "ip", "privacy", "disputes",
         "notary", "immigration", "employment"},
        {"support", "tickets", "chat", "email", "voice", "escalation", "faq", "onboarding",
         "feedback", "refunds", "warranty"},
        {"marketing", "copywriting", "seo", "ads", "social", "newsletters", "analytics", "branding",
         "events", "pr", "affiliates"},
        {"hr", "recruiting", "screening", "interviews", "benefits", "training", "reviews",
         "offboarding", "scheduling", "policies", "surveys"},
        {"research", "literature", "patents", "experiments", "statistics", "citations", "grants",
         "peer-review", "datasets", "surveys", "replication"},
        {"media", "images", "video", "audio", "music", "podcasts", "subtitles", "thumbnails",
         "editing", "animation", "stock"},
        {"devops", "deploy", "monitoring", "incidents", "backups", "dns", "certificates", "costs",
         "scaling", "logs", "kubernetes"},
        {"security", "scanning", "pentest", "threat-intel", "identity", "secrets", "forensics",
         "phishing", "compliance", "keys", "waf"},
        {"education", "tutoring", "grading", "curriculum", "quizzes", "languages", "math",
         "science", "writing", "exam-prep", "coding"},
        {"realestate", "listings", "valuation", "mortgages", "leases", "inspections",
         "property-management", "zoning", "staging", "rentals", "auctions"},
        {"logistics", "routing", "tracking", "customs", "warehousing", "fleet", "freight",
         "last-mile", "returns", "packaging", "cold-chain"},
        {"energy", "metering", "trading", "forecasting", "solar", "grid", "ev-charging",
         "efficiency", "billing", "carbon", "storage"},
        {"food", "recipes", "delivery", "reservations", "catering", "menus", "allergens",
         "groceries", "wine", "reviews", "nutrition"},
    };
    // Interleave so that popularity is spread over domains: rank r = sub * 20 + domain.
    for (int sub = 1; sub <= 10; ++sub) {
      for (int d = 0; d < 20; ++d) {
        caps_.push_back(std::string(kDomains[d][0]) + "/" + kDomains[d][sub]);
      }
    }
    for (const auto& d : kDomains) domains_.emplace_back(d[0]);
    double sum = 0;
    for (std::size_t r = 0; r < caps_.size(); ++r) {
      sum += 1.0 / std::pow(static_cast<double>(r + 1), 0.9);
      cdf_.push_back(sum);
    }
    for (auto& c : cdf_) c /= sum;
  }

  const std::string& Draw(std::mt19937_64& g) const {
    const double u = std::uniform_real_distribution<double>(0, 1)(g);
    const auto it = std::lower_bound(cdf_.begin(), cdf_.end(), u);
    return caps_[std::min<std::size_t>(static_cast<std::size_t>(it - cdf_.begin()),
                                       caps_.size() - 1)];
  }
  const std::vector<std::string>& domains() const { return domains_; }

  std::vector<std::string> DrawSet(std::mt19937_64& g) const {
    const double u = std::uniform_real_distribution<double>(0, 1)(g);
    const int count = u < 0.4 ? 1 : u < 0.7 ? 2 : u < 0.9 ? 3 : 4;
    std::vector<std::string> out;
    for (int tries = 0; static_cast<int>(out.size()) < count && tries < 20; ++tries) {
      const std::string& c = Draw(g);
      if (std::find(out.begin(), out.end(), c) == out.end()) out.push_back(c);
    }
    return out;
  }

 private:
  std::vector<std::string> caps_;
  std::vector<std::string> domains_;
  std::vector<double> cdf_;
};

const Vocabulary& Vocab() {
  static const Vocabulary v;
  return v;
}

bool IsRevoked(std::uint64_t index) { return index % 1000 == 999; }

struct AgentKeys {
  Ed25519KeyPair signing;
  X25519KeyPair exchange;
  std::string amid;
};

AgentKeys KeysOf(std::uint64_t index) {
  DeterministicRng rng(kSeedBase + index);
  AgentKeys k{Ed25519KeyPair::Generate(rng), X25519KeyPair::Generate(rng), {}};
  k.amid = Amid::FromPublicKey(k.signing.public_key).str();
  return k;
}

AgentRecord MakeAgent(std::uint64_t index, const AgentKeys& keys, UnixNanos now) {
  std::mt19937_64 g(kSeedBase ^ (index * 0x9e3779b97f4a7c15ULL));
  std::uniform_real_distribution<double> u(0, 1);
  AgentRecord a;
  a.amid = keys.amid;
  a.signing_public_key = FormatEd25519Key(keys.signing.public_key);
  a.exchange_public_key = FormatX25519Key(keys.exchange.public_key);
  const double t = u(g);
  a.tier = t < 0.80 ? Tier::kAnonymous : t < 0.95 ? Tier::kVerified : Tier::kOrganization;
  a.display_name = "agent " + std::to_string(index);
  if (a.tier == Tier::kOrganization) {
    a.organization = "org-" + std::to_string(index % 997) + ".example";
  }
  a.capabilities = Vocab().DrawSet(g);
  a.relay_endpoint = "wss://relay" + std::to_string(index % 8) + ".example/v1/connect";
  const double s = u(g);
  a.status = s < 0.20   ? Presence::kOnline
             : s < 0.30 ? Presence::kAway
             : s < 0.95 ? Presence::kOffline
                        : Presence::kDnd;
  // Reputation: most agents near the middle, a few excellent or poor ones.
  const double r = (u(g) + u(g) + u(g)) / 3.0;
  a.reputation_score = std::clamp(0.05 + 0.93 * r, 0.0, 1.0);
  const auto day = 86400 * kNanosPerSecond;
  a.last_seen = now - static_cast<UnixNanos>(u(g) * 30.0 * static_cast<double>(day));
  a.created_at = a.last_seen - static_cast<UnixNanos>(u(g) * 180.0 * static_cast<double>(day));
  a.updated_at = a.last_seen;
  return a;
}

// The agents that carry prekeys: P of them spread over the whole range, never a revoked one.
std::vector<std::uint64_t> PrekeyAgentIndices(std::uint64_t n, std::uint64_t p) {
  std::vector<std::uint64_t> out;
  p = std::min(p, n / 2);
  if (p == 0) return out;
  const std::uint64_t stride = n / p;
  for (std::uint64_t j = 0; j < p; ++j) {
    std::uint64_t i = j * stride;
    if (IsRevoked(i)) ++i;
    if (i < n) out.push_back(i);
  }
  return out;
}

// Loads agents [0, n) into `store`: key generation on a helper thread, inserts on this one.
Result<void> LoadAgents(RegistryStore& store, const Options& opt, std::uint64_t n) {
  const UnixNanos now = WallNow();
  constexpr std::uint64_t kBatch = 2000;
  auto make_batch = [now, n](std::uint64_t first) {
    std::vector<AgentRecord> out;
    for (std::uint64_t i = first; i < std::min(n, first + kBatch); ++i) {
      out.push_back(MakeAgent(i, KeysOf(i), now));
    }
    return out;
  };
  const auto t0 = NowNs();
  std::future<std::vector<AgentRecord>> next = std::async(std::launch::async, make_batch, 0);
  for (std::uint64_t first = 0; first < n; first += kBatch) {
    std::vector<AgentRecord> batch = next.get();
    if (first + kBatch < n) next = std::async(std::launch::async, make_batch, first + kBatch);
    for (const auto& a : batch) {
      if (auto r = store.InsertAgent(a); !r) return r;
    }
    const std::uint64_t done = std::min(n, first + kBatch);
    if (done % 50'000 == 0 || done == n) {
      const double secs = static_cast<double>(NowNs() - t0) / 1e9;
      std::fprintf(stderr, "\r  loading agents: %llu / %llu (%.0f /s)   ",
                   static_cast<unsigned long long>(done), static_cast<unsigned long long>(n),
                   static_cast<double>(done) / std::max(secs, 1e-3));
    }
  }
  std::fprintf(stderr, "\n");
  // Revocations (0.1 %).
  for (std::uint64_t i = 999; i < n; i += 1000) {
    const AgentKeys k = KeysOf(i);
    RevocationRecord rev;
    rev.id = fmt::format("00000000-0000-4000-8000-{:012x}", i);
    rev.amid = k.amid;
    rev.reason = "key_compromise";
    rev.revoked_by = k.amid;
    rev.revoked_at = now;
    if (auto r = store.InsertRevocation(rev); !r) return r;
  }
  // Prekeys.
  SystemRng rng;
  for (const std::uint64_t i : PrekeyAgentIndices(n, opt.prekey_agents)) {
    const AgentKeys k = KeysOf(i);
    SignedPrekey spk = SignedPrekey::Generate(1, k.signing.secret, now, rng);
    SignedPrekeyRecord record{1, Base64Encode(spk.pair.public_key.view()),
                              FormatSignature(spk.signature), now};
    std::vector<OneTimePrekeyRecord> otpks;
    for (std::uint32_t id = 1; id <= opt.otpks; ++id) {
      otpks.push_back({id, Base64Encode(rng.Array<32>())});
    }
    if (auto r = store.StorePrekeys(k.amid, record, otpks); !r) return std::unexpected(r.error());
  }
  std::fprintf(stderr, "  loaded %llu agents in %.1f s\n", static_cast<unsigned long long>(n),
               static_cast<double>(NowNs() - t0) / 1e9);
  return {};
}

// ---------------------------------------------------------------------------------------------
// The load generator: one libuv loop, C keep-alive connections, closed loop.

struct Request {
  std::string text;  // the whole HTTP/1.1 request
  int tag = 0;       // scenario-specific (e.g. exact vs prefix search)
};

struct Response {
  int status = 0;
  std::string_view body;
  int tag = 0;
};

struct Measurement {
  double rate = 0;                             // responses completed inside the window, per second
  std::vector<std::uint64_t> latencies_ns[2];  // by tag (0, 1)
  std::uint64_t completed = 0;
  std::uint64_t errors = 0;
  std::string first_error;
  bool exhausted = false;  // the request source ran dry before the window ended
  double server_cpu = 0;   // cores used by the server during the window
  double gen_cpu = 0;      // cores used by this process
};

class Gen;

struct Conn {
  uv_tcp_t tcp{};
  uv_connect_t connect_req{};
  uv_write_t write_req{};
  Gen* gen = nullptr;
  std::string in;
  std::string out;  // the request being written (kept alive for uv_write)
  int tag = 0;
  std::uint64_t sent_at = 0;
  bool busy = false;
  bool closing = false;
};

class Gen {
 public:
  // Builds the next request; false when the source is exhausted.
  using Source = std::function<bool(Request&)>;
  // Checks a response; returns an error text (empty when it is good).
  using Check = std::function<std::string(const Response&)>;

  Gen() { uv_loop_init(&loop_); }
  ~Gen() {
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }

  Measurement Run(std::uint16_t port, int connections, double warmup, double seconds, Source source,
                  Check check, pid_t server_pid) {
    source_ = std::move(source);
    check_ = std::move(check);
    m_ = Measurement{};
    port_ = port;
    measuring_ = false;
    stopping_ = false;
    open_ = 0;
    connected_ = 0;
    for (int i = 0; i < connections; ++i) Open();
    // Connect everyone first.
    const auto deadline = NowNs() + 10'000'000'000ULL;
    while (connected_ < connections && NowNs() < deadline) uv_run(&loop_, UV_RUN_ONCE);
    if (connected_ < connections) Die("cannot connect to the registry");
    for (auto& c : conns_) Next(c.get());
    RunFor(warmup);
    const std::string stat = "/proc/" + std::to_string(server_pid) + "/stat";
    const double cpu0 = StatCpu(stat);
    const double self0 = SelfCpu();
    window_start_ = NowNs();
    measuring_ = true;
    const auto end = window_start_ + static_cast<std::uint64_t>(seconds * 1e9);
    while (NowNs() < end && !exhausted_at_) RunFor(std::min(0.05, seconds));
    const std::uint64_t window_end = exhausted_at_ ? exhausted_at_ : NowNs();
    measuring_ = false;
    const double span = static_cast<double>(window_end - window_start_) / 1e9;
    m_.server_cpu = (StatCpu(stat) - cpu0) / span;
    m_.gen_cpu = (SelfCpu() - self0) / span;
    m_.rate = static_cast<double>(m_.completed) / span;
    m_.exhausted = exhausted_at_ != 0;
    exhausted_at_ = 0;
    // Drain: let requests in flight finish (the server's queue empties with them, so the next
    // measurement starts clean), then close.
    stopping_ = true;
    const auto drain_start = NowNs();
    const auto drain_deadline = drain_start + 600'000'000'000ULL;
    while (NowNs() < drain_deadline &&
           std::any_of(conns_.begin(), conns_.end(), [](const auto& c) { return c->busy; })) {
      uv_run(&loop_, UV_RUN_ONCE);
    }
    if (NowNs() - drain_start > 1'000'000'000ULL) {
      std::fprintf(stderr, "    (drained the requests in flight in %.1f s)\n",
                   static_cast<double>(NowNs() - drain_start) / 1e9);
    }
    for (auto& c : conns_) Close(c.get());
    uv_run(&loop_, UV_RUN_DEFAULT);
    conns_.clear();
    return std::move(m_);
  }

 private:
  void RunFor(double seconds) {
    uv_timer_t timer;
    uv_timer_init(&loop_, &timer);
    uv_timer_start(
        &timer, [](uv_timer_t* t) { uv_stop(t->loop); },
        static_cast<std::uint64_t>(std::max(1.0, seconds * 1000)), 0);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_close(reinterpret_cast<uv_handle_t*>(&timer), nullptr);
    uv_run(&loop_, UV_RUN_NOWAIT);
  }

  void Open() {
    auto conn = std::make_unique<Conn>();
    Conn* c = conn.get();
    c->gen = this;
    uv_tcp_init(&loop_, &c->tcp);
    c->tcp.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    sockaddr_in addr{};
    uv_ip4_addr("127.0.0.1", port_, &addr);
    c->connect_req.data = c;
    ++open_;
    conns_.push_back(std::move(conn));
    const int rc = uv_tcp_connect(&c->connect_req, &c->tcp, reinterpret_cast<sockaddr*>(&addr),
                                  [](uv_connect_t* req, int status) {
                                    auto* cc = static_cast<Conn*>(req->data);
                                    if (status == UV_ECANCELED) return;
                                    if (status != 0) Die("connect failed");
                                    ++cc->gen->connected_;
                                    uv_read_start(reinterpret_cast<uv_stream_t*>(&cc->tcp),
                                                  &Gen::Alloc, &Gen::OnRead);
                                  });
    if (rc != 0) Die(std::string("uv_tcp_connect: ") + uv_strerror(rc));
  }

  void Close(Conn* c) {
    if (c->closing) return;
    c->closing = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), [](uv_handle_t* h) {
      auto* cc = static_cast<Conn*>(h->data);
      --cc->gen->open_;
    });
  }

  void Next(Conn* c) {
    if (stopping_ || c->closing) return;
    Request r;
    if (!source_(r)) {
      if (measuring_ && !exhausted_at_) exhausted_at_ = NowNs();
      return;
    }
    c->out = std::move(r.text);
    c->tag = r.tag;
    c->busy = true;
    c->sent_at = NowNs();
    uv_buf_t buf = uv_buf_init(c->out.data(), static_cast<unsigned>(c->out.size()));
    const int n = uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1);
    if (n == static_cast<int>(c->out.size())) return;
    const std::size_t done = n > 0 ? static_cast<std::size_t>(n) : 0;
    c->out.erase(0, done);
    buf = uv_buf_init(c->out.data(), static_cast<unsigned>(c->out.size()));
    c->write_req.data = c;
    uv_write(&c->write_req, reinterpret_cast<uv_stream_t*>(&c->tcp), &buf, 1,
             [](uv_write_t* req, int status) {
               if (status != 0 && status != UV_ECANCELED) {
                 auto* cc = static_cast<Conn*>(req->data);
                 cc->gen->Fail(cc, std::string("write: ") + uv_strerror(status));
               }
             });
  }

  static void Alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
    auto* c = static_cast<Conn*>(h->data);
    *buf = uv_buf_init(c->gen->read_buf_, sizeof c->gen->read_buf_);
  }

  static void OnRead(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* c = static_cast<Conn*>(s->data);
    Gen* g = c->gen;
    if (n < 0) {
      g->Fail(c, n == UV_EOF ? "server closed the connection" : uv_strerror(static_cast<int>(n)));
      return;
    }
    c->in.append(buf->base, static_cast<std::size_t>(n));
    while (true) {
      const auto head_end = c->in.find("\r\n\r\n");
      if (head_end == std::string::npos) return;
      std::size_t length = 0;
      bool close_after = false;
      const std::string_view head(c->in.data(), head_end);
      for (std::size_t pos = head.find("\r\n"); pos != std::string_view::npos;) {
        const auto eol = head.find("\r\n", pos + 2);
        const std::string_view line =
            head.substr(pos + 2, (eol == std::string_view::npos ? head.size() : eol) - pos - 2);
        if (line.size() > 15 && strncasecmp(line.data(), "content-length:", 15) == 0) {
          length = std::strtoul(std::string(line.substr(15)).c_str(), nullptr, 10);
        } else if (line.size() > 11 && strncasecmp(line.data(), "connection:", 11) == 0 &&
                   line.find("close") != std::string_view::npos) {
          close_after = true;
        }
        pos = eol;
      }
      if (c->in.size() < head_end + 4 + length) return;
      Response r;
      r.status = head.size() > 12 ? std::atoi(std::string(head.substr(9, 3)).c_str()) : 0;
      r.body = std::string_view(c->in).substr(head_end + 4, length);
      r.tag = c->tag;
      const std::uint64_t now = NowNs();
      c->busy = false;
      if (g->measuring_) {
        std::string error = g->check_(r);
        if (!error.empty()) {
          ++g->m_.errors;
          if (g->m_.first_error.empty()) {
            g->m_.first_error = error + " (HTTP " + std::to_string(r.status) + ": " +
                                std::string(r.body.substr(0, 200)) + ")";
          }
        } else {
          ++g->m_.completed;
          g->m_.latencies_ns[c->tag == 1 ? 1 : 0].push_back(now - c->sent_at);
        }
      }
      c->in.erase(0, head_end + 4 + length);
      if (close_after) {
        g->Fail(c, "server sent Connection: close");
        return;
      }
      g->Next(c);
    }
  }

  // A connection broke: count it and replace it (while running).
  void Fail(Conn* c, const std::string& why) {
    if (c->closing) return;
    if (measuring_) {
      ++m_.errors;
      if (m_.first_error.empty()) m_.first_error = why;
    }
    c->busy = false;
    Close(c);
    if (!stopping_) {
      Open();
      Conn* fresh = conns_.back().get();
      // Start it once connected: poll from a check on the next turns is overkill; the connect
      // callback only counts, so send from an idle timer.
      auto* t = new uv_timer_t;
      uv_timer_init(&loop_, t);
      t->data = fresh;
      uv_timer_start(
          t,
          [](uv_timer_t* timer) {
            auto* cc = static_cast<Conn*>(timer->data);
            cc->gen->Next(cc);
            uv_close(reinterpret_cast<uv_handle_t*>(timer),
                     [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
          },
          5, 0);
    }
  }

  uv_loop_t loop_{};
  std::vector<std::unique_ptr<Conn>> conns_;
  Source source_;
  Check check_;
  Measurement m_;
  std::uint16_t port_ = 0;
  bool measuring_ = false;
  bool stopping_ = false;
  int open_ = 0;
  int connected_ = 0;
  std::uint64_t window_start_ = 0;
  std::uint64_t exhausted_at_ = 0;
  char read_buf_[64 * 1024];
};

std::string Get(const std::string& target) {
  return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
}

std::string Post(const std::string& target, const std::string& body) {
  return "POST " + target +
         " HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: " +
         std::to_string(body.size()) + "\r\n\r\n" + body;
}

// ---------------------------------------------------------------------------------------------
// The server under test.

class RegistryChild {
 public:
  RegistryChild(const Options& opt, const std::filesystem::path& state_dir, const std::string& db) {
    std::vector<std::string> argv = {opt.registry_bin,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--state-dir",
                                     state_dir.string(),
                                     "--db",
                                     db,
                                     "--log-level",
                                     "warn",
                                     "--register-per-minute",
                                     "1000000000",
                                     "--search-per-minute",
                                     "1000000000"};
    log_path_ = state_dir / "registry.log";
    if (!process_.Start(argv, log_path_)) Die("cannot start " + opt.registry_bin);
    auto line = process_.WaitForLine("listening on port", std::chrono::seconds(600));
    if (!line) Die("registry did not start:\n" + process_.StderrLog());
    port_ = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(' ') + 1)));
  }
  ~RegistryChild() {
    if (process_.Signal(SIGTERM, true, std::chrono::seconds(20)) == -1) process_.Kill();
  }
  std::uint16_t port() const { return port_; }
  pid_t pid() const { return process_.pid(); }
  std::string log() const { return process_.StderrLog(); }

 private:
  testing::ChildProcess process_;
  std::filesystem::path log_path_;
  std::uint16_t port_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Scenarios.

struct Figure {
  Figure(std::string n, std::string t) : name(std::move(n)), target(std::move(t)) {}
  std::string name;
  std::string target;
  std::vector<double> rates;
  std::vector<double> p50_us[2];
  std::vector<double> p99_us[2];
  std::vector<double> server_us_per_req;
  std::uint64_t errors = 0;
  std::string first_error;
  bool exhausted = false;
  bool latency = false;
  std::string note;
};

void Record(Figure& f, Measurement& m) {
  f.rates.push_back(m.rate);
  for (int t = 0; t < 2; ++t) {
    if (m.latencies_ns[t].empty()) continue;
    f.p50_us[t].push_back(Percentile(m.latencies_ns[t], 0.50) / 1e3);
    f.p99_us[t].push_back(Percentile(m.latencies_ns[t], 0.99) / 1e3);
  }
  f.server_us_per_req.push_back(m.rate > 0 ? m.server_cpu / m.rate * 1e6 : 0);
  f.errors += m.errors;
  if (f.first_error.empty()) f.first_error = m.first_error;
  f.exhausted = f.exhausted || m.exhausted;
  std::fprintf(stderr, "    %-22s %10s  server %.2f cores (%.1f us/req), generator %.2f%s\n",
               f.name.c_str(), Human(m.rate).c_str(), m.server_cpu,
               m.rate > 0 ? m.server_cpu / m.rate * 1e6 : 0.0, m.gen_cpu,
               m.errors ? "  ERRORS" : "");
}

std::string Expect(const Response& r, int status, std::string_view needle) {
  if (r.status != status) return "unexpected status";
  if (!needle.empty() && r.body.find(needle) == std::string_view::npos) {
    return "body lacks " + std::string(needle);
  }
  return {};
}

// Pre-signed registrations of fresh agents (generated on two threads, not timed).
std::vector<std::string> RegisterBodies(std::size_t count) {
  auto make = [](std::size_t n, std::uint64_t seed) {
    std::vector<std::string> out;
    out.reserve(n);
    SystemRng rng;
    std::mt19937_64 g(seed);
    const UnixNanos now = WallNow();
    for (std::size_t i = 0; i < n; ++i) {
      const Ed25519KeyPair signing = Ed25519KeyPair::Generate(rng);
      const X25519KeyPair exchange = X25519KeyPair::Generate(rng);
      const std::string amid = Amid::FromPublicKey(signing.public_key).str();
      nlohmann::json body = {{"amid", amid},
                             {"signing_public_key", FormatEd25519Key(signing.public_key)},
                             {"exchange_public_key", FormatX25519Key(exchange.public_key)},
                             {"display_name", "bench " + amid.substr(0, 8)},
                             {"capabilities", Vocab().DrawSet(g)},
                             {"relay_endpoint", "wss://relay.example/v1/connect"}};
      if (!SignRegistryRequest("POST", "/v1/registry/register", body, signing.secret, now)) {
        Die("cannot sign a registration");
      }
      out.push_back(Post("/v1/registry/register", body.dump()));
    }
    return out;
  };
  auto half = std::async(std::launch::async, make, count / 2, std::random_device{}());
  std::vector<std::string> out = make(count - count / 2, std::random_device{}());
  auto other = half.get();
  out.insert(out.end(), std::make_move_iterator(other.begin()),
             std::make_move_iterator(other.end()));
  return out;
}

struct Backend {
  std::string name;  // "sqlite" | "postgresql"
  std::string db;    // --db URL for the registry
  std::filesystem::path state_dir;
};

void RunScenarios(const Options& opt, const Backend& be, std::uint64_t n) {
  RegistryChild server(opt, be.state_dir, be.db);
  std::printf("%s: amesh-registry pid %d on port %u, %llu agents loaded\n", be.name.c_str(),
              static_cast<int>(server.pid()), server.port(), static_cast<unsigned long long>(n));
  std::fflush(stdout);

  // Sample agents for lookups (regenerated from their seeds), and the prekey agents.
  std::mt19937_64 g(std::random_device{}());
  std::vector<std::string> sample;
  const std::size_t sample_size = static_cast<std::size_t>(std::min<std::uint64_t>(n, 20'000));
  for (std::size_t i = 0; i < sample_size; ++i) {
    sample.push_back(KeysOf(std::uniform_int_distribution<std::uint64_t>(0, n - 1)(g)).amid);
  }
  std::vector<std::string> prekey_amids;
  for (const auto i : PrekeyAgentIndices(n, opt.prekey_agents)) {
    prekey_amids.push_back(KeysOf(i).amid);
  }

  auto want = [&](const char* s) { return opt.scenario == "all" || opt.scenario == s; };
  Figure health{"health (ceiling)", "= ceiling"};
  Figure lookup{"lookup", ">= 30 k/s @1M (SQLite)"};
  Figure search_exact{"search exact", "p99 < 10 ms @1M"};
  Figure search_prefix{"search prefix (x/*)", "p99 < 10 ms @1M"};
  Figure reg{"register", ">= 3 k/s"};
  Figure prekeys{"prekey fetch", "-"};
  search_exact.latency = search_prefix.latency = lookup.latency = true;
  std::uint64_t search_totals = 0;
  std::uint64_t search_answers = 0;
  std::uint64_t with_otpk = 0;
  std::uint64_t fetches = 0;

  Gen gen;
  const pid_t pid = server.pid();
  for (int run = 0; run < opt.runs; ++run) {
    std::fprintf(stderr, "  run %d/%d\n", run + 1, opt.runs);
    {  // the ceiling is measured in every run, whatever the scenario
      auto m = gen.Run(
          server.port(), opt.connections, opt.warmup, opt.seconds,
          [](Request& r) {
            r.text = Get("/health");
            return true;
          },
          [](const Response& r) { return Expect(r, 200, "\"ok\""); }, pid);
      Record(health, m);
    }
    if (want("lookup")) {
      auto m = gen.Run(
          server.port(), opt.connections, opt.warmup, opt.seconds,
          [&](Request& r) {
            const auto& amid =
                sample[std::uniform_int_distribution<std::size_t>(0, sample.size() - 1)(g)];
            r.text = Get("/v1/registry/lookup?amid=" + amid);
            return true;
          },
          [](const Response& r) { return Expect(r, 200, "\"signing_public_key\""); }, pid);
      Record(lookup, m);
    }
    if (want("register")) {
      const auto count =
          static_cast<std::size_t>((opt.seconds + opt.warmup) * opt.register_budget) +
          static_cast<std::size_t>(opt.connections);
      std::vector<std::string> bodies = RegisterBodies(count);
      std::size_t next = 0;
      auto m = gen.Run(
          server.port(), opt.connections, opt.warmup, opt.seconds,
          [&](Request& r) {
            if (next >= bodies.size()) return false;
            r.text = std::move(bodies[next++]);
            return true;
          },
          [](const Response& r) { return Expect(r, 201, "\"success\":true"); }, pid);
      Record(reg, m);
    }
    if (want("prekeys") && !prekey_amids.empty()) {
      auto m = gen.Run(
          server.port(), opt.connections, opt.warmup, opt.seconds,
          [&](Request& r) {
            r.text = Get("/v1/registry/prekeys/" +
                         prekey_amids[std::uniform_int_distribution<std::size_t>(
                             0, prekey_amids.size() - 1)(g)]);
            return true;
          },
          [&](const Response& r) {
            std::string e = Expect(r, 200, "\"signed_prekey\"");
            if (e.empty()) {
              ++fetches;
              if (r.body.find("\"one_time_prekey\"") != std::string_view::npos) ++with_otpk;
            }
            return e;
          },
          pid);
      Record(prekeys, m);
    }
    if (want("search")) {
      auto check = [&](const Response& r) {
        std::string e = Expect(r, 200, "\"results\"");
        if (e.empty()) {
          const auto at = r.body.find("\"total\":");
          if (at == std::string_view::npos) return std::string("body lacks total");
          search_totals += std::strtoull(r.body.data() + at + 8, nullptr, 10);
          ++search_answers;
        }
        return e;
      };
      auto m = gen.Run(
          server.port(), opt.connections, opt.warmup, opt.seconds,
          [&](Request& r) {
            r.text = Get("/v1/registry/search?capability=" + Vocab().Draw(g));
            r.tag = 1;
            return true;
          },
          check, pid);
      Record(search_exact, m);
      m = gen.Run(
          server.port(), opt.connections, opt.warmup, opt.seconds,
          [&](Request& r) {
            const auto& d = Vocab().domains();
            r.text = Get("/v1/registry/search?capability=" +
                         d[std::uniform_int_distribution<std::size_t>(0, d.size() - 1)(g)] + "/*");
            r.tag = 1;
            return true;
          },
          check, pid);
      Record(search_prefix, m);
    }
  }
  if (search_answers > 0) {
    search_exact.note =
        fmt::format("mean total {:.0f} matches",
                    static_cast<double>(search_totals) / static_cast<double>(search_answers));
  }
  if (fetches > 0) {
    prekeys.note =
        fmt::format("{:.0f} % with a one-time prekey",
                    100.0 * static_cast<double>(with_otpk) / static_cast<double>(fetches));
  }
  if (reg.exhausted) reg.note = "pre-signed bodies ran out: rate over the time they lasted";

  const double ceiling = Median(health.rates);
  std::printf("\n%-22s %12s %10s %10s %10s %9s  %-24s %s\n", "figure", "median", "p50 ms", "p99 ms",
              "srv us/req", "/health", "target", "notes");
  for (Figure* f : {&health, &lookup, &search_exact, &search_prefix, &reg, &prekeys}) {
    if (f->rates.empty()) continue;
    const int t = f->p50_us[1].empty() ? 0 : 1;
    char p50[16] = "-";
    char p99[16] = "-";
    if (!f->p50_us[t].empty()) {
      std::snprintf(p50, sizeof p50, "%.2f", Median(f->p50_us[t]) / 1e3);
      std::snprintf(p99, sizeof p99, "%.2f", Median(f->p99_us[t]) / 1e3);
    }
    std::string note = f->note;
    if (f->errors > 0) {
      note = fmt::format("WITH {} ERRORS: {} {}", f->errors, f->first_error, note);
    }
    std::printf("%-22s %12s %10s %10s %10.1f %9.2f  %-24s %s\n", f->name.c_str(),
                Human(Median(f->rates)).c_str(), p50, p99, Median(f->server_us_per_req),
                ceiling > 0 ? Median(f->rates) / ceiling : 0.0, f->target.c_str(), note.c_str());
  }
  std::printf("\n");
  std::fflush(stdout);
  bool errors = false;
  for (Figure* f : {&health, &lookup, &search_exact, &search_prefix, &reg, &prekeys}) {
    errors = errors || f->errors > 0;
  }
  if (errors) std::fprintf(stderr, "registry log:\n%s\n", server.log().substr(0, 4000).c_str());
}

// ---------------------------------------------------------------------------------------------

void RunSqlite(const Options& opt) {
  std::error_code ec;
  std::filesystem::create_directories(opt.data_dir, ec);
  const std::filesystem::path cache = std::filesystem::path(opt.data_dir) /
                                      fmt::format("registry-sqlite-{}-p{}x{}-v{}.db", opt.agents,
                                                  opt.prekey_agents, opt.otpks, kDataFormat);
  if (!std::filesystem::exists(cache)) {
    std::fprintf(stderr, "sqlite: loading %llu agents into %s (cached for later runs)\n",
                 static_cast<unsigned long long>(opt.agents), cache.c_str());
    const std::filesystem::path tmp = cache.string() + ".loading";
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::filesystem::remove(tmp.string() + suffix, ec);
    }
    {
      auto store = registry::OpenStore("sqlite:" + tmp.string());
      if (!store) Die("sqlite: " + store.error().ToString());
      if (auto r = (*store)->Migrate(); !r) Die("sqlite migrate: " + r.error().ToString());
      if (auto r = LoadAgents(**store, opt, opt.agents); !r) {
        Die("sqlite load: " + r.error().ToString());
      }
    }  // closing the last connection checkpoints the WAL into the main file
    std::filesystem::rename(tmp, cache, ec);
    if (ec) Die("cannot rename the loaded database: " + ec.message());
  } else {
    std::fprintf(stderr, "sqlite: using the cached data set %s\n", cache.c_str());
  }
  testing::TempDir dir;
  const auto db = dir.path() / "registry.db";
  const auto t0 = NowNs();
  std::filesystem::copy_file(cache, db, ec);
  if (ec) Die("cannot copy the cached database: " + ec.message());
  std::fprintf(stderr, "  copied the data set in %.1f s (%.0f MB)\n",
               static_cast<double>(NowNs() - t0) / 1e9,
               static_cast<double>(std::filesystem::file_size(db)) / 1e6);
  RunScenarios(opt, Backend{"sqlite", "sqlite:" + db.string(), dir.path()}, opt.agents);
}

#if AMESH_BENCH_POSTGRES
// Migrates `url`, loads opt.agents agents into it unless it already holds that many (a database
// given with --postgres-url, kept between bench sessions), folds the search counts and runs the
// scenarios. False (after printing why) when the database cannot be used.
bool LoadAndRunPostgres(const Options& opt, const std::string& url) {
  {
    auto store = registry::OpenStore(url);
    if (!store) {
      std::printf("postgresql: unavailable (%s)\n", store.error().ToString().c_str());
      return false;
    }
    if (auto r = (*store)->Migrate(); !r) {
      std::printf("postgresql: unavailable (migrate: %s)\n", r.error().ToString().c_str());
      return false;
    }
    auto counts = (*store)->Counts();
    if (!counts) {
      std::printf("postgresql: cannot count the agents (%s)\n", counts.error().ToString().c_str());
      return false;
    }
    if (counts->total_agents + counts->revoked_agents >= opt.agents) {
      std::fprintf(stderr, "postgresql: %s already holds %llu agents; not loading\n", url.c_str(),
                   static_cast<unsigned long long>(counts->total_agents));
    } else {
      std::fprintf(stderr, "postgresql: loading %llu agents into %s\n",
                   static_cast<unsigned long long>(opt.agents), url.c_str());
      // The loader inserts one agent per commit on one connection: without waiting for each
      // flush (synchronous_commit off for the loader's own connections, which a crash could
      // only cut short), or a durable server would take ten minutes for it.
      auto loader = registry::OpenStore(url + (url.find('?') == std::string::npos ? "?" : "&") +
                                        "options=-csynchronous_commit%3Doff");
      if (!loader) {
        std::printf("postgresql: unavailable (%s)\n", loader.error().ToString().c_str());
        return false;
      }
      if (auto r = LoadAgents(**loader, opt, opt.agents); !r) {
        std::printf("postgresql: load failed (%s)\n", r.error().ToString().c_str());
        return false;
      }
      // As after any bulk load or restore: until autovacuum gets to the tables (a minute or
      // more) the planner has no statistics, and counts cannot use index-only scans (no
      // visibility map).
      if (auto conn = storage::pg::Connection::Connect(url);
          !conn || !conn->ExecScript("VACUUM ANALYZE")) {
        std::printf("postgresql: VACUUM ANALYZE after the load failed\n");
        return false;
      }
    }
  }
  testing::TempDir dir;
  RunScenarios(opt, Backend{"postgresql", url, dir.path()}, opt.agents);
  return true;
}
#endif

void RunPostgres(const Options& opt) {
#if AMESH_BENCH_POSTGRES
  if (!opt.postgres_url.empty()) {
    LoadAndRunPostgres(opt, opt.postgres_url);
    return;
  }
  testing::TestPostgres pg;
  if (!pg.Available()) {
    std::printf("postgresql: unavailable (%s)\n", pg.reason().c_str());
    return;
  }
  // The tests' server keeps 16 MB of shared buffers and skips every flush (fsync=off); a
  // registry's PostgreSQL is sized like any production one (shared_buffers about a quarter of
  // memory, here 1 GB: at 1 M agents the tables and indexes are over 1 GB and would otherwise be
  // read through the OS page cache) and durable: a registration is acknowledged after its
  // commit is flushed, with full-page writes, as on SQLite.
  if (!pg.Start(
          {"shared_buffers=1GB", "fsync=on", "synchronous_commit=on", "full_page_writes=on"})) {
    std::printf("postgresql: unavailable (server did not start: %s)\n", pg.reason().c_str());
    return;
  }
  // Over TCP, as a registry reaches a database server on another host.
  const std::string conninfo = pg.NewDatabase();
  const auto at = conninfo.find("dbname=");
  if (conninfo.empty() || at == std::string::npos) {
    std::printf("postgresql: unavailable (%s)\n", pg.reason().c_str());
    return;
  }
  LoadAndRunPostgres(opt, pg.uri(conninfo.substr(at + 7, conninfo.find(' ', at) - at - 7)));
#else
  (void)opt;
  std::printf("postgresql: unavailable (built without agentmesh_pg / libpq)\n");
#endif
}

void Usage(FILE* f) {
  std::fprintf(
      f,
      "usage: registry_bench [--quick] [--agents N] [--connections C] [--seconds S] [--runs R]\n"
      "                      [--backend sqlite|postgresql|both] [--scenario "
      "all|health|lookup|search|register|prekeys]\n"
      "                      [--data-dir DIR] [--prekey-agents P] [--otpks K] "
      "[--registry-bin PATH]\n"
      "                      [--postgres-url URL]\n"
      "  loads N agents (default 100000; cached per N in DIR, default /tmp/registry_bench),\n"
      "  starts amesh-registry (default %s) and prints medians of R runs of S seconds;\n"
      "  --postgres-url: an existing database instead of a throw-away server, loaded only when\n"
      "  it holds fewer than N agents (later runs see earlier runs' registrations)\n",
      AMESH_REGISTRY_BIN);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    Options opt;
    std::optional<double> seconds;
    std::optional<int> runs;
    std::optional<std::uint64_t> agents, prekey_agents;
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      const bool has_value = i + 1 < argc;
      if (arg == "--quick") {
        opt.quick = true;
      } else if (arg == "--agents" && has_value) {
        agents = std::max<std::uint64_t>(10, std::strtoull(argv[++i], nullptr, 10));
      } else if (arg == "--connections" && has_value) {
        opt.connections = std::max(1, std::atoi(argv[++i]));
      } else if (arg == "--seconds" && has_value) {
        seconds = std::max(0.05, std::atof(argv[++i]));
      } else if (arg == "--runs" && has_value) {
        runs = std::max(1, std::atoi(argv[++i]));
      } else if (arg == "--backend" && has_value) {
        opt.backend = argv[++i];
      } else if (arg == "--scenario" && has_value) {
        opt.scenario = argv[++i];
      } else if (arg == "--data-dir" && has_value) {
        opt.data_dir = argv[++i];
      } else if (arg == "--prekey-agents" && has_value) {
        prekey_agents = std::strtoull(argv[++i], nullptr, 10);
      } else if (arg == "--otpks" && has_value) {
        opt.otpks = static_cast<std::uint32_t>(std::max(1, std::atoi(argv[++i])));
      } else if (arg == "--registry-bin" && has_value) {
        opt.registry_bin = argv[++i];
      } else if (arg == "--postgres-url" && has_value) {
        opt.postgres_url = argv[++i];
      } else {
        Usage(arg == "--help" ? stdout : stderr);
        return arg == "--help" ? 0 : 2;
      }
    }
    if (opt.quick) {
      opt.agents = 2'000;
      opt.runs = 3;
      opt.seconds = 0.3;
      opt.warmup = 0.1;
      opt.prekey_agents = 200;
      opt.connections = 16;
    }
    if (agents) opt.agents = *agents;
    if (seconds) opt.seconds = *seconds;
    if (runs) opt.runs = *runs;
    if (prekey_agents) opt.prekey_agents = *prekey_agents;
    const std::vector<std::string> scenarios = {"all",    "health",   "lookup",
                                                "search", "register", "prekeys"};
    if (std::find(scenarios.begin(), scenarios.end(), opt.scenario) == scenarios.end() ||
        (opt.backend != "sqlite" && opt.backend != "postgresql" && opt.backend != "both")) {
      Usage(stderr);
      return 2;
    }
    rlimit rl{};
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }
    std::signal(SIGPIPE, SIG_IGN);
    if (sodium_init() < 0) return 1;
    std::printf(
        "registry_bench: medians of %d runs x %.2f s (warm-up %.2f s); %llu agents, %d "
        "keep-alive connections, closed loop; registry %s\n(generator: one thread on this "
        "machine, beside the registry)\n\n",
        opt.runs, opt.seconds, opt.warmup, static_cast<unsigned long long>(opt.agents),
        opt.connections, opt.registry_bin.c_str());
    std::fflush(stdout);
    if (opt.backend == "sqlite" || opt.backend == "both") RunSqlite(opt);
    if (opt.backend == "postgresql" || opt.backend == "both") RunPostgres(opt);
    std::printf(
        "Targets (issue 4, 2 cores, generator on the same machine): lookups >= 30 k/s on SQLite "
        "with 1 M agents;\nsearch p99 < 10 ms at 1 M agents; registrations >= 3 k/s; /health is "
        "the ceiling of the HTTP layer.\n");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "registry_bench: fatal: %s\n", e.what());
    return 1;
  }
}
