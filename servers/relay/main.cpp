// amesh-relay: the AgentMesh WebSocket relay (see amesh-relay(8)).
#include <sys/resource.h>
#include <uv.h>

#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>

#include "config.hpp"
#include "relay.hpp"

namespace {

constexpr const char* kVersion = "0.1.0";

}  // namespace

int main(int argc, char** argv) {
  using namespace agentmesh::relay;
  try {
    CLI::App app{
        "amesh-relay: AgentMesh WebSocket relay. Routes end-to-end encrypted messages between\n"
        "authenticated agents, stores them durably for offline recipients, never reads them."};
    app.set_version_flag("--version", std::string("amesh-relay ") + kVersion + " (agentmesh/1)");
    RelayConfig config;
    std::string config_path;
    bool help_config = false;
    app.add_option("--config", config_path, "JSON config file (see --help-config)");
    app.add_flag("--help-config", help_config, "Describe every config key and exit");

    // Flags are parsed into optionals so they can be layered over the file.
    std::optional<std::string> listen, store, tls_cert, tls_key, fsync, log_level;
    std::optional<std::uint32_t> ttl, max_queue, mpm, kpm, max_frame, ping, per_ip, expiry;
    std::optional<std::uint32_t> max_output, auth_timeout, max_conns, max_invalid;
    app.add_option("--listen", listen, "HOST:PORT to listen on (default 127.0.0.1:8765)");
    app.add_option("--store", store,
                   "SQLite queue file (default $STATE_DIRECTORY/relay.db or ./relay.db)");
    app.add_option("--tls-cert", tls_cert, "PEM certificate chain (serve wss://)");
    app.add_option("--tls-key", tls_key, "PEM private key");
    app.add_option("--fsync", fsync, "normal | full (default normal)");
    app.add_option("--store-ttl", ttl, "seconds a queued message is kept (default 259200 = 72 h)");
    app.add_option("--max-queue", max_queue, "queued messages per recipient (default 100)");
    app.add_option("--messages-per-minute", mpm, "sends per sender per minute (default 100)");
    app.add_option("--knocks-per-minute", kpm, "KNOCKs per sender per minute (default 30)");
    app.add_option("--max-frame", max_frame, "largest frame in bytes (default 65536)");
    app.add_option("--ping-interval", ping, "WebSocket ping interval in seconds (default 25)");
    app.add_option("--max-connections-per-ip", per_ip,
                   "concurrent connections per address (default 4096)");
    app.add_option("--max-output-bytes", max_output,
                   "queued output per connection before a reader is too slow (default 1048576)");
    app.add_option("--auth-timeout", auth_timeout,
                   "seconds a new connection has to send CONNECT (default 10)");
    app.add_option("--max-connections", max_conns, "open connections in all (default 0 = no cap)");
    app.add_option("--max-invalid-frames", max_invalid,
                   "invalid frames a connection may send before it is closed (default 100)");
    app.add_option("--expiry-interval-ms", expiry,
                   "how often expired messages are purged (default 60000)");
    app.add_option("--log-level", log_level, "debug | info | warn | error (default info)");
    CLI11_PARSE(app, argc, argv);

    if (help_config) {
      std::fputs(DescribeConfig().c_str(), stdout);
      return 0;
    }
    auto apply_flags = [&](RelayConfig& c) {
      if (listen) c.listen = *listen;
      if (store) c.store = *store;
      if (tls_cert) c.tls_cert = *tls_cert;
      if (tls_key) c.tls_key = *tls_key;
      if (fsync) c.fsync = *fsync;
      if (log_level) c.log_level = *log_level;
      if (ttl) c.store_ttl_seconds = *ttl;
      if (max_queue) c.max_queue_per_recipient = *max_queue;
      if (mpm) c.messages_per_minute = *mpm;
      if (kpm) c.knocks_per_minute = *kpm;
      if (max_frame) c.max_frame_bytes = *max_frame;
      if (ping) c.ping_interval_seconds = *ping;
      if (per_ip) c.max_connections_per_ip = *per_ip;
      if (expiry) c.expiry_interval_ms = *expiry;
      if (max_output) c.max_output_bytes = *max_output;
      if (auth_timeout) c.auth_timeout_seconds = *auth_timeout;
      if (max_conns) c.max_connections = *max_conns;
      if (max_invalid) c.max_invalid_frames = *max_invalid;
    };
    if (!config_path.empty()) {
      if (auto r = ApplyConfigFile(config_path, config); !r) {
        std::fprintf(stderr, "amesh-relay: %s\n", r.error().ToString().c_str());
        return 2;
      }
    }
    apply_flags(config);
    if (auto r = ValidateConfig(config); !r) {
      std::fprintf(stderr, "amesh-relay: invalid configuration: %s\n",
                   r.error().ToString().c_str());
      return 2;
    }
    SetLogLevel(ParseLogLevel(config.log_level));
    std::signal(SIGPIPE, SIG_IGN);
    // One descriptor per connection: take the whole hard limit (the soft default is often 1024).
    if (rlimit rl{}; getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
      rl.rlim_cur = rl.rlim_max;
      setrlimit(RLIMIT_NOFILE, &rl);
    }

    uv_loop_t loop;
    uv_loop_init(&loop);
    auto relay = Relay::Create(&loop, config);
    if (!relay) {
      std::fprintf(stderr, "amesh-relay: %s\n", relay.error().ToString().c_str());
      uv_loop_close(&loop);
      return 1;
    }
    if (auto r = (*relay)->Listen(); !r) {
      std::fprintf(stderr, "amesh-relay: cannot listen on %s: %s\n", config.listen.c_str(),
                   r.error().message.c_str());
      relay->reset();
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_loop_close(&loop);
      return 1;
    }
    struct SignalContext {
      Relay* relay;
      std::string config_path;
      std::function<void(RelayConfig&)> apply_flags;
      uv_signal_t term, intr, hup;
    };
    auto* ctx = new SignalContext{relay->get(), config_path, apply_flags, {}, {}, {}};
    auto on_stop = [](uv_signal_t* s, int signum) {
      auto* c = static_cast<SignalContext*>(s->data);
      Log(LogLevel::kInfo, signum == SIGTERM ? "SIGTERM: shutting down" : "SIGINT: shutting down");
      c->relay->Stop();
      uv_close(reinterpret_cast<uv_handle_t*>(&c->term), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&c->intr), nullptr);
      uv_close(reinterpret_cast<uv_handle_t*>(&c->hup), nullptr);
    };
    for (uv_signal_t* s : {&ctx->term, &ctx->intr, &ctx->hup}) {
      uv_signal_init(&loop, s);
      s->data = ctx;
    }
    uv_signal_start(&ctx->term, on_stop, SIGTERM);
    uv_signal_start(&ctx->intr, on_stop, SIGINT);
    uv_signal_start(
        &ctx->hup,
        [](uv_signal_t* s, int) {
          auto* c = static_cast<SignalContext*>(s->data);
          RelayConfig next;
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
          c->relay->Reload(next);
        },
        SIGHUP);

    // Signal handlers are in place: announce readiness. Tests read the bound port from this line
    // when --listen uses port 0.
    std::printf("amesh-relay listening on port %u\n", (*relay)->port());
    std::fflush(stdout);

    uv_run(&loop, UV_RUN_DEFAULT);
    relay->reset();
    uv_run(&loop, UV_RUN_DEFAULT);
    delete ctx;
    uv_loop_close(&loop);
    Log(LogLevel::kInfo, "stopped");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "amesh-relay: fatal: %s\n", e.what());
    return 1;
  }
}
