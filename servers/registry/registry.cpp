#include "registry.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <thread>
#include <unordered_map>

#include "agentmesh/core/rate_limit.hpp"
#include "agentmesh/net/server.hpp"
#include "agentmesh/net/tls.hpp"
#include "api.hpp"
#include "log.hpp"
#include "pg_store.hpp"
#include "root_key.hpp"
#include "sqlite_store.hpp"

namespace agentmesh::registry {
namespace {

UnixNanos WallNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<std::pair<std::string, std::uint16_t>> SplitListen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  std::string host = listen.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  unsigned long port = 70000;
  const std::string digits = listen.substr(colon + 1);
  if (!digits.empty() && digits.size() <= 5 &&
      digits.find_first_not_of("0123456789") == std::string::npos) {
    port = std::strtoul(digits.c_str(), nullptr, 10);
  }
  if (port > 65535) return Fail(Code::kInvalidArgument, "invalid port", "listen");
  return std::pair{host, static_cast<std::uint16_t>(port)};
}

// $STATE_DIRECTORY may list several directories separated by ':'; the first is ours.
std::filesystem::path StateDir(const RegistryConfig& config) {
  if (!config.state_dir.empty()) return config.state_dir;
  if (const char* env = std::getenv("STATE_DIRECTORY"); env != nullptr && *env != '\0') {
    std::string dirs(env);
    return dirs.substr(0, dirs.find(':'));
  }
  return std::filesystem::current_path();
}

struct PerIpBuckets {
  std::unordered_map<std::string, TokenBucket> buckets;

  // Takes one token for `ip`; on refusal returns the seconds to wait (>= 1).
  std::optional<std::uint64_t> Take(const std::string& ip, std::uint32_t per_minute,
                                    UnixNanos now) {
    if (buckets.size() > 100'000) Sweep(now);
    auto [it, inserted] = buckets.try_emplace(ip, TokenBucket::PerMinute(per_minute, now));
    if (it->second.TryTake(now)) return std::nullopt;
    const UnixNanos wait = it->second.RetryAfter(now);
    if (wait == TokenBucket::kNever) return 60;
    return std::max<std::uint64_t>(
        1, static_cast<std::uint64_t>((wait + kNanosPerSecond - 1) / kNanosPerSecond));
  }

  // Forgets buckets that are full again (their owners have been quiet for a while).
  void Sweep(UnixNanos now) {
    std::erase_if(buckets,
                  [&](const auto& kv) { return kv.second.Available(now) >= kv.second.capacity; });
    if (buckets.size() > 100'000) buckets.clear();
  }
};

}  // namespace

class Registry::Impl {
 public:
  Impl(uv_loop_t* loop, RegistryConfig config, std::unique_ptr<RegistryStore> store, RootKey root)
      : loop_(loop),
        config_(std::make_shared<const RegistryConfig>(std::move(config))),
        store_(std::move(store)),
        root_(std::move(root)) {
    ctx_.store = store_.get();
    ctx_.root_key = &root_.pair;
    ctx_.replay = &replay_;
    ctx_.metrics = &metrics_;
    ctx_.ready = &ready_;
    ctx_.now = &WallNow;
  }

  Result<void> Init() {
    net::ServerOptions options;
    auto hp = SplitListen(config_->listen);
    if (!hp) return std::unexpected(hp.error());
    options.host = hp->first;
    options.port = hp->second;
    options.enable_websocket = false;
    options.max_connections = config_->max_connections;
    // The transport refuses bodies over twice the limit with its own JSON 413 (and closes);
    // bodies between the limit and that bound get OnRequest's JSON 413 on a connection kept open.
    options.http_limits.max_body_bytes = std::size_t{config_->max_body_bytes} * 2;
    if (!config_->tls_cert.empty()) {
      auto tls = net::TlsContext::CreateServer(config_->tls_cert, config_->tls_key);
      if (!tls) return std::unexpected(tls.error());
      options.tls = *tls;
    }
    net::HttpServer::Handlers h;
    h.on_http_async = [this](net::ConnId id, const net::HttpRequest& request) {
      OnRequest(id, request);
    };
    h.on_log = [](std::string_view message) { Log(LogLevel::kWarn, message); };
    server_ = std::make_unique<net::HttpServer>(loop_, options, std::move(h));
    dispatch_ = new uv_check_t;
    uv_check_init(loop_, dispatch_);
    uv_unref(reinterpret_cast<uv_handle_t*>(dispatch_));
    dispatch_->data = this;
    return {};
  }

  ~Impl() { CloseDispatch(); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  Result<void> Listen() {
    if (auto r = server_->Listen(); !r) return r;
    Log(LogLevel::kInfo,
        fmt::format("listening on {}{}:{} (database {}, root key {})",
                    config_->tls_cert.empty() ? "http://" : "https://",
                    config_->listen.substr(0, config_->listen.rfind(':')), server_->port(), db_url_,
                    FormatEd25519Key(root_.pair.public_key)));
    return {};
  }

  std::uint16_t port() const noexcept { return server_ ? server_->port() : 0; }

  void StartMigrations(std::function<void(Result<void>)> on_done) {
    struct MigrationJob {
      uv_work_t req;
      Impl* impl;
      std::uint32_t delay_ms;
      Result<void> result;
      std::function<void(Result<void>)> on_done;
    };
    auto* job = new MigrationJob{{}, this, config_->startup_delay_ms, {}, std::move(on_done)};
    job->req.data = job;
    ++jobs_in_flight_;
    uv_queue_work(
        loop_, &job->req,
        [](uv_work_t* req) {
          auto* j = static_cast<MigrationJob*>(req->data);
          try {
            if (j->delay_ms > 0)
              std::this_thread::sleep_for(std::chrono::milliseconds(j->delay_ms));
            j->result = j->impl->store_->Migrate();
          } catch (const std::exception& e) {
            j->result = Fail(Code::kInternal, std::string("migration threw: ") + e.what());
          }
        },
        [](uv_work_t* req, int) {
          std::unique_ptr<MigrationJob> j(static_cast<MigrationJob*>(req->data));
          --j->impl->jobs_in_flight_;
          if (j->result) {
            auto version = j->impl->store_->SchemaVersion();
            Log(LogLevel::kInfo,
                fmt::format("database ready (schema version {})", version ? *version : -1));
            j->impl->ready_ = true;
          } else {
            Log(LogLevel::kError, "migrations failed: " + j->result.error().ToString());
          }
          if (j->on_done) j->on_done(j->result);
        });
  }

  void Stop() {
    if (stopping_) return;
    stopping_ = true;
    Log(LogLevel::kInfo,
        fmt::format("stopping: finishing {} request(s) in flight", jobs_in_flight_));
    Dispatch();
    CloseDispatch();
    server_->Stop();
  }

  void Reload(const RegistryConfig& next) {
    RegistryConfig applied = *config_;
    for (const auto& name : ApplyReloadable(next, applied)) {
      Log(LogLevel::kWarn, fmt::format("reload: '{}' changes only on restart", name));
    }
    config_ = std::make_shared<const RegistryConfig>(std::move(applied));
    register_limits_.buckets.clear();
    search_limits_.buckets.clear();
    SetLogLevel(ParseLogLevel(config_->log_level));
    Log(LogLevel::kInfo, "configuration reloaded");
  }

  std::string db_url_;

 private:
  struct Job {
    net::ConnId conn = 0;
    const Route* route = nullptr;
    net::HttpRequest http;
    Request request;
    net::HttpResponse response;
    UnixNanos started = 0;
  };

  // Jobs handed to one worker together (api.hpp, Work): all reads, all writes (one commit), or
  // one external job.
  struct Group {
    uv_work_t req;
    Impl* impl = nullptr;
    Work work = Work::kRead;
    std::vector<std::unique_ptr<Job>> jobs;
  };

  // Reads per group: enough to pay one thread hop for several requests, few enough that a turn
  // with many reads still spreads them over the workers.
  static constexpr std::size_t kReadsPerGroup = 8;
  // Writes per group: one commit covers them all, and the answers wait for it.
  static constexpr std::size_t kWritesPerGroup = 64;

  void Respond(net::ConnId id, std::string_view route, net::HttpResponse response) {
    metrics_.CountRequest(route, response.status);
    (void)server_->Respond(id, std::move(response));
  }

  void OnRequest(net::ConnId id, const net::HttpRequest& http) {
    RouteMatch match = MatchRoute(http.method, http.path);
    if (match.kind == RouteMatch::Kind::kNotFound) {
      Respond(id, "unknown", JsonError(404, fmt::format("no route {}", http.path.substr(0, 200))));
      return;
    }
    if (match.kind == RouteMatch::Kind::kMethodNotAllowed) {
      net::HttpResponse r = JsonError(405, fmt::format("method {} not allowed here; use {}",
                                                       http.method.substr(0, 16), match.allow));
      r.headers.push_back({"Allow", match.allow});
      Respond(id, match.route ? match.route->name : "unknown", std::move(r));
      return;
    }
    const Route& route = *match.route;
    if (http.body.size() > config_->max_body_bytes) {
      Respond(id, route.name,
              JsonError(413,
                        fmt::format("request body larger than {} bytes", config_->max_body_bytes)));
      return;
    }
    if (route.needs_store && !ready_) {
      Respond(id, route.name, StartingResponse());
      return;
    }
    if (route.rate != RateClass::kNone) {
      const bool reg = route.rate == RateClass::kRegister;
      auto& limits = reg ? register_limits_ : search_limits_;
      const auto wait = limits.Take(
          http.peer.ip, reg ? config_->register_per_minute : config_->search_per_minute, WallNow());
      if (wait) {
        ++(reg ? metrics_.rate_limited_register : metrics_.rate_limited_search);
        net::HttpResponse r = JsonError(
            429, fmt::format("rate limit exceeded for {}; retry in {} s", route.name, *wait));
        r.headers.push_back({"Retry-After", std::to_string(*wait)});
        Respond(id, route.name, std::move(r));
        return;
      }
    }
    if (route.name == "health") {
      // The static liveness check runs here, not on a worker: it touches no store, and it must
      // answer at once when every worker is busy with slow queries (a load balancer probing it
      // should not see the database's queue). It is also the ceiling of the HTTP layer that
      // registry_bench compares every other route with.
      Request request;
      request.http = &http;
      request.config = config_;
      Respond(id, route.name, route.handler(ctx_, request));
      return;
    }
    auto job = std::make_unique<Job>();
    job->conn = id;
    job->route = &route;
    job->http = http;
    job->request.param = std::move(match.param);
    job->request.config = config_;
    job->started = WallNow();
    if (route.name == "metrics") job->request.transport_metrics = TransportMetrics();
    ++jobs_in_flight_;
    if (route.work == Work::kExternal) {
      std::vector<std::unique_ptr<Job>> one;
      one.push_back(std::move(job));
      QueueGroup(Work::kExternal, std::move(one));
      return;
    }
    (route.work == Work::kWrite ? pending_writes_ : pending_reads_).push_back(std::move(job));
    if (dispatch_ == nullptr) {  // stopping: no more turns to gather in
      Dispatch();
    } else if (!dispatch_armed_) {
      // After this turn's reads have all been parsed (the check phase follows the poll phase).
      uv_check_start(dispatch_, [](uv_check_t* h) { static_cast<Impl*>(h->data)->Dispatch(); });
      dispatch_armed_ = true;
    }
  }

  // Hands the requests gathered in this loop turn to the workers.
  void Dispatch() {
    if (dispatch_armed_) {
      uv_check_stop(dispatch_);
      dispatch_armed_ = false;
    }
    if (!store_->single_writer()) {
      while (!pending_writes_.empty()) {
        QueueGroup(Work::kWrite, TakeFront(pending_writes_, kWritesPerGroup));
      }
    } else if (!write_group_running_ && !pending_writes_.empty()) {
      // One group at a time: the writes that arrive while it commits form the next one.
      write_group_running_ = true;
      QueueGroup(Work::kWrite, TakeFront(pending_writes_, kWritesPerGroup));
    }
    while (!pending_reads_.empty()) {
      QueueGroup(Work::kRead, TakeFront(pending_reads_, kReadsPerGroup));
    }
  }

  // Moves the first `n` jobs (or all, when fewer) out of `pending`.
  static std::vector<std::unique_ptr<Job>> TakeFront(std::vector<std::unique_ptr<Job>>& pending,
                                                     std::size_t n) {
    const auto end = pending.begin() + static_cast<std::ptrdiff_t>(std::min(n, pending.size()));
    std::vector<std::unique_ptr<Job>> taken(std::make_move_iterator(pending.begin()),
                                            std::make_move_iterator(end));
    pending.erase(pending.begin(), end);
    return taken;
  }

  void QueueGroup(Work work, std::vector<std::unique_ptr<Job>> jobs) {
    auto* group = new Group;
    group->req.data = group;
    group->impl = this;
    group->work = work;
    group->jobs = std::move(jobs);
    uv_queue_work(loop_, &group->req, &Impl::RunGroup, &Impl::FinishGroup);
  }

  void CloseDispatch() {
    if (dispatch_ == nullptr) return;
    uv_close(reinterpret_cast<uv_handle_t*>(dispatch_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
    dispatch_ = nullptr;
    dispatch_armed_ = false;
  }

  void RunJob(Job& job) {
    job.request.http = &job.http;
    try {
      job.response = job.route->handler(ctx_, job.request);
    } catch (const std::exception& e) {
      Log(LogLevel::kError, fmt::format("{} threw: {}", job.route->name, e.what()));
      job.response = JsonError(500, "internal error");
    }
  }

  static void RunGroup(uv_work_t* req) {
    auto* group = static_cast<Group*>(req->data);
    Impl* impl = group->impl;
    const auto run_all = [&] {
      for (auto& job : group->jobs) impl->RunJob(*job);
    };
    if (group->work != Work::kWrite) {
      run_all();
      return;
    }
    Result<void> committed = Fail(Code::kInternal, "batch did not run");
    try {
      committed = impl->store_->RunBatch(run_all);
    } catch (const std::exception& e) {
      committed = Fail(Code::kInternal, e.what());
    }
    if (committed) return;
    // None of the group's writes may be taken as done: every answer that said so becomes a
    // 503; refusals (4xx) stay, they wrote nothing.
    Log(LogLevel::kError, "storage: a group commit failed: " + committed.error().ToString());
    ++impl->metrics_.storage_errors;
    for (auto& job : group->jobs) {
      if (job->response.status < 400) {
        job->response = JsonError(503, "storage unavailable: the change was not saved; retry");
      }
    }
  }

  static void FinishGroup(uv_work_t* req, int status) {
    std::unique_ptr<Group> group(static_cast<Group*>(req->data));
    Impl* impl = group->impl;
    if (group->work == Work::kWrite && impl->store_->single_writer()) {
      impl->write_group_running_ = false;
      if (!impl->pending_writes_.empty()) impl->Dispatch();
    }
    for (auto& job : group->jobs) {
      --impl->jobs_in_flight_;
      if (status == UV_ECANCELED) job->response = JsonError(503, "shutting down");
      if (LogEnabled(LogLevel::kDebug)) {
        Log(LogLevel::kDebug, fmt::format("{} {} {} -> {} ({} us)", job->http.peer.ip,
                                          job->http.method, job->http.path.substr(0, 200),
                                          job->response.status, (WallNow() - job->started) / 1000));
      }
      impl->Respond(job->conn, job->route->name, std::move(job->response));
    }
  }

  std::string TransportMetrics() const {
    const auto& s = server_->stats();
    return fmt::format(
        "# HELP amesh_registry_connections Open HTTP connections.\n"
        "# TYPE amesh_registry_connections gauge\n"
        "amesh_registry_connections {}\n"
        "# HELP amesh_registry_connections_accepted_total TCP connections accepted.\n"
        "# TYPE amesh_registry_connections_accepted_total counter\n"
        "amesh_registry_connections_accepted_total {}\n"
        "# HELP amesh_registry_http_errors_total Malformed or oversized requests (400/413/431).\n"
        "# TYPE amesh_registry_http_errors_total counter\n"
        "amesh_registry_http_errors_total {}\n"
        "# HELP amesh_registry_requests_in_flight Requests being handled by worker threads.\n"
        "# TYPE amesh_registry_requests_in_flight gauge\n"
        "amesh_registry_requests_in_flight {}\n",
        s.connections_current, s.connections_accepted, s.http_errors, jobs_in_flight_);
  }

  uv_loop_t* loop_;
  std::shared_ptr<const RegistryConfig> config_;
  std::unique_ptr<RegistryStore> store_;
  RootKey root_;
  ReplayCache replay_;
  Metrics metrics_;
  std::atomic<bool> ready_{false};
  Context ctx_;
  std::unique_ptr<net::HttpServer> server_;
  PerIpBuckets register_limits_;
  PerIpBuckets search_limits_;
  std::size_t jobs_in_flight_ = 0;
  std::vector<std::unique_ptr<Job>> pending_reads_;
  std::vector<std::unique_ptr<Job>> pending_writes_;
  uv_check_t* dispatch_ = nullptr;  // owned; freed in its close callback
  bool dispatch_armed_ = false;
  bool write_group_running_ = false;  // single-writer backends: a write group is on a worker
  bool stopping_ = false;
};

Registry::Registry(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Registry::~Registry() = default;

Result<std::unique_ptr<Registry>> Registry::Create(uv_loop_t* loop, const RegistryConfig& config) {
  const std::filesystem::path state_dir = StateDir(config);
  std::error_code ec;
  std::filesystem::create_directories(state_dir, ec);
  if (ec) {
    return Fail(Code::kIo, fmt::format("cannot create state directory {}: {}", state_dir.string(),
                                       ec.message()));
  }
  std::string url = config.db.empty() ? "sqlite:registry.db" : config.db;
  if (url.starts_with("sqlite:")) {
    std::string path = url.substr(7);
    if (path != ":memory:" && !path.starts_with("file:") &&
        std::filesystem::path(path).is_relative()) {
      path = (state_dir / path).string();
    }
    url = "sqlite:" + path;
  }
  std::unique_ptr<RegistryStore> store;
  if (url.starts_with("sqlite:")) {
    SqliteStoreOptions options;
    options.path = url.substr(7);
    options.fsync_full = config.fsync == "full";
    auto opened = OpenSqliteStore(options);
    if (!opened) return std::unexpected(opened.error());
    store = std::move(*opened);
  } else {
    auto opened = OpenStore(url);
    if (!opened) return std::unexpected(opened.error());
    store = std::move(*opened);
  }
  auto root = LoadOrCreateRootKey(state_dir);
  if (!root) return std::unexpected(root.error());
  if (root->created) Log(LogLevel::kInfo, "created registry root key " + root->path.string());
  auto impl = std::make_unique<Impl>(loop, config, std::move(store), std::move(*root));
  impl->db_url_ = RedactDatabaseUrl(url);  // the log line must not show a password
  if (auto r = impl->Init(); !r) return std::unexpected(r.error());
  return std::unique_ptr<Registry>(new Registry(std::move(impl)));
}

Result<void> Registry::Listen() { return impl_->Listen(); }
std::uint16_t Registry::port() const noexcept { return impl_->port(); }
void Registry::StartMigrations(std::function<void(Result<void>)> on_done) {
  impl_->StartMigrations(std::move(on_done));
}
void Registry::Stop() { impl_->Stop(); }
void Registry::Reload(const RegistryConfig& config) { impl_->Reload(config); }

}  // namespace agentmesh::registry
