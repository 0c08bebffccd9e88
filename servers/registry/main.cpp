// amesh-registry: the AgentMesh HTTP registry (see amesh-registry(8)).
#include <uv.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "config.hpp"
#include "log.hpp"
#include "registry.hpp"

namespace {

constexpr const char* kVersion = "0.1.0";

}  // namespace

int main(int argc, char** argv) {
  using namespace agentmesh::registry;
  try {
    CLI::App app{
        "amesh-registry: AgentMesh registry. Signed registration, lookup and capability search,\n"
        "prekey bundles, presence, reputation, revocation, organisations (DNS-verified) and\n"
        "OAuth verification over HTTP (docs/PROTOCOL.md)."};
    app.set_version_flag("--version", std::string("amesh-registry ") + kVersion + " (agentmesh/1)");
    RegistryConfig config;
    std::string config_path;
    bool help_config = false;
    app.add_option("--config", config_path, "JSON config file (see --help-config)");
    app.add_flag("--help-config", help_config, "Describe every config key and exit");

    // Flags are parsed into optionals so they can be layered over the file.
    std::optional<std::string> listen, db, state_dir, tls_cert, tls_key, fsync, log_level,
        dns_resolver, oauth_callback_base_url;
    std::optional<std::uint32_t> max_body, reg_pm, search_pm, max_conn, startup_delay;
    app.add_option("--listen", listen, "HOST:PORT to listen on (default 127.0.0.1:8080)");
    app.add_option("--db", db,
                   "database URL: sqlite:PATH (default sqlite:registry.db in the state "
                   "directory)");
    app.add_option("--state-dir", state_dir,
                   "directory for the default database and keys/root.key (default "
                   "$STATE_DIRECTORY, else the working directory)");
    app.add_option("--tls-cert", tls_cert, "PEM certificate chain (serve https://)");
    app.add_option("--tls-key", tls_key, "PEM private key");
    app.add_option("--fsync", fsync, "normal | full (default normal)");
    app.add_option("--max-body", max_body, "largest request body in bytes (default 65536)");
    app.add_option("--register-per-minute", reg_pm,
                   "registrations per client address per minute (default 30)");
    app.add_option("--search-per-minute", search_pm,
                   "searches per client address per minute (default 600)");
    app.add_option("--max-connections", max_conn, "concurrent connections (default 0 = unlimited)");
    app.add_option("--log-level", log_level, "debug | info | warn | error (default info)");
    app.add_option("--dns-resolver", dns_resolver,
                   "resolvers for organisation DNS verification, IP[:PORT],... (default: the "
                   "nameservers of /etc/resolv.conf)");
    app.add_option("--oauth-callback-base-url", oauth_callback_base_url,
                   "public base URL for the OAuth redirect URI (default http(s)://<listen>)");
    app.add_option("--startup-delay-ms", startup_delay,
                   "testing aid: delay migrations (data routes answer 503 meanwhile)")
        ->group("");
    CLI11_PARSE(app, argc, argv);

    if (help_config) {
      std::fputs(DescribeConfig().c_str(), stdout);
      return 0;
    }
    auto apply_flags = [&](RegistryConfig& c) {
      if (listen) c.listen = *listen;
      if (db) c.db = *db;
      if (state_dir) c.state_dir = *state_dir;
      if (tls_cert) c.tls_cert = *tls_cert;
      if (tls_key) c.tls_key = *tls_key;
      if (fsync) c.fsync = *fsync;
      if (log_level) c.log_level = *log_level;
      if (max_body) c.max_body_bytes = *max_body;
      if (reg_pm) c.register_per_minute = *reg_pm;
      if (search_pm) c.search_per_minute = *search_pm;
      if (max_conn) c.max_connections = *max_conn;
      if (startup_delay) c.startup_delay_ms = *startup_delay;
      if (dns_resolver) c.dns_resolver = *dns_resolver;
      if (oauth_callback_base_url) c.oauth_callback_base_url = *oauth_callback_base_url;
    };
    // Client secrets come from the environment or the config file, never from flags (they
    // would show in ps).
    ApplyEnvironment(config);
    if (!config_path.empty()) {
      if (auto r = ApplyConfigFile(config_path, config); !r) {
        std::fprintf(stderr, "amesh-registry: %s\n", r.error().ToString().c_str());
        return 2;
      }
    }
    apply_flags(config);
    if (auto r = ValidateConfig(config); !r) {
      std::fprintf(stderr, "amesh-registry: invalid configuration: %s\n",
                   r.error().ToString().c_str());
      return 2;
    }
    SetLogLevel(ParseLogLevel(config.log_level));
    std::signal(SIGPIPE, SIG_IGN);
    // libuv sizes its worker pool from UV_THREADPOOL_SIZE at the pool's first use. SQLite work is
    // CPU and page-cache bound: one worker per core, as more only take turns on the cores
    // (lookups at 100 k agents on 2 cores: 24 k/s with libuv's default of 4, 32 k/s with 2).
    // PostgreSQL workers mostly wait on the server, a write on its commit's WAL flush, which
    // concurrent commits share: 8 (registrations at 1 M agents, durable commits, 2 cores:
    // 2.6-2.8 k/s with 4, 3.1-3.2 k/s with 8; reads unchanged).
    if (std::getenv("UV_THREADPOOL_SIZE") == nullptr) {
      const bool sqlite = config.db.empty() || config.db.starts_with("sqlite:");
      const unsigned cores = std::clamp(std::thread::hardware_concurrency(), 2U, 128U);
      ::setenv("UV_THREADPOOL_SIZE", std::to_string(sqlite ? cores : 8U).c_str(), 0);
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    auto registry = Registry::Create(&loop, config);
    if (!registry) {
      std::fprintf(stderr, "amesh-registry: %s\n", registry.error().ToString().c_str());
      uv_loop_close(&loop);
      return 1;
    }
    if (auto r = (*registry)->Listen(); !r) {
      std::fprintf(stderr, "amesh-registry: cannot listen on %s: %s\n", config.listen.c_str(),
                   r.error().message.c_str());
      registry->reset();
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_loop_close(&loop);
      return 1;
    }
    struct SignalContext {
      Registry* registry;
      std::string config_path;
      std::function<void(RegistryConfig&)> apply_flags;
      uv_signal_t term, intr, hup;
      int exit_code = 0;
      void CloseSignals() {
        for (uv_signal_t* s : {&term, &intr, &hup}) {
          if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(s))) {
            uv_close(reinterpret_cast<uv_handle_t*>(s), nullptr);
          }
        }
      }
    };
    auto ctx = std::make_unique<SignalContext>(
        SignalContext{registry->get(), config_path, apply_flags, {}, {}, {}, 0});
    auto on_stop = [](uv_signal_t* s, int signum) {
      auto* c = static_cast<SignalContext*>(s->data);
      Log(LogLevel::kInfo, signum == SIGTERM ? "SIGTERM: shutting down" : "SIGINT: shutting down");
      c->registry->Stop();
      c->CloseSignals();
    };
    for (uv_signal_t* s : {&ctx->term, &ctx->intr, &ctx->hup}) {
      uv_signal_init(&loop, s);
      s->data = ctx.get();
    }
    uv_signal_start(&ctx->term, on_stop, SIGTERM);
    uv_signal_start(&ctx->intr, on_stop, SIGINT);
    uv_signal_start(
        &ctx->hup,
        [](uv_signal_t* s, int) {
          auto* c = static_cast<SignalContext*>(s->data);
          RegistryConfig next;
          ApplyEnvironment(next);
          if (!c->config_path.empty()) {
            if (auto r = ApplyConfigFile(c->config_path, next); !r) {
              Log(LogLevel::kError,
                  "SIGHUP: keeping the running configuration: " + r.error().ToString());
              return;
            }
          }
          c->apply_flags(next);
          if (auto r = ValidateConfig(next); !r) {
            Log(LogLevel::kError,
                "SIGHUP: keeping the running configuration: " + r.error().ToString());
            return;
          }
          c->registry->Reload(next);
        },
        SIGHUP);

    // The port is bound: say so (tests read the port from this line when --listen uses port 0),
    // then announce readiness once the schema is current. Both lines go to stdout and stderr.
    const unsigned port = (*registry)->port();
    std::printf("amesh-registry starting on port %u\n", port);
    std::fflush(stdout);
    SignalContext* c = ctx.get();
    (*registry)->StartMigrations([c, port](agentmesh::Result<void> result) {
      if (!result) {
        c->exit_code = 1;
        c->registry->Stop();
        c->CloseSignals();
        return;
      }
      std::printf("amesh-registry listening on port %u\n", port);
      std::fflush(stdout);
      std::fprintf(stderr, "amesh-registry listening on port %u\n", port);
    });

    uv_run(&loop, UV_RUN_DEFAULT);
    const int exit_code = ctx->exit_code;
    registry->reset();
    uv_run(&loop, UV_RUN_DEFAULT);
    ctx.reset();
    uv_loop_close(&loop);
    Log(LogLevel::kInfo, "stopped");
    return exit_code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "amesh-registry: fatal: %s\n", e.what());
    return 1;
  }
}
