// Fixture of the registry integration tests: test agents that sign requests per PROTOCOL.md §7,
// and the real amesh-registry binary started on a free port with a temp state directory.
// Header-only, included by each test file of registry_tests; everything is inline.
//
// Backends: the same test binary runs against SQLite and PostgreSQL. The environment variable
// AMESH_TEST_REGISTRY_BACKEND picks one: unset or "sqlite" is the registry's default database
// (sqlite:registry.db in the state directory); "postgresql" gives every RegistryState a fresh
// database on the process's shared throw-away server (TestPostgres::Shared(), one initdb per test
// process) and passes it as `--db <uri>`. ctest registers every case twice, as "registry:…"
// (SQLite) and "registry-pg:…" (PostgreSQL). When the PostgreSQL server binaries are missing, a
// PostgreSQL run prints WARN("SKIPPED: …") and ends the test process with exit code 77, which
// ctest reports as skipped (SKIP_RETURN_CODE); CI installs them (scripts/deps.sh).
//
// Restarts: a RegistryState (state directory + database) outlives the processes started on it;
// Registry::Restart() or a second Registry built from registry.state() runs a new process on the
// same data, on either backend.
#pragma once

#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "agentmesh/core/canonical_json.hpp"
#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/registry_auth.hpp"
#include "http_client.hpp"
#include "process.hpp"
#if AMESH_TEST_HAVE_PG
#include "postgres_server.hpp"
#endif
#if __has_include("agentmesh/core/did.hpp")
#include "agentmesh/core/did.hpp"
#define AMESH_TEST_CORE_DID 1
#endif

namespace agentmesh::testing::registry_fixture {

using nlohmann::json;
using namespace std::chrono_literals;

inline UnixNanos Now() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct TestAgent {
  DeterministicRng rng;
  Ed25519KeyPair signing;
  X25519KeyPair exchange;
  std::string amid;

  explicit TestAgent(std::uint64_t seed)
      : rng(seed),
        signing(Ed25519KeyPair::Generate(rng)),
        exchange(X25519KeyPair::Generate(rng)),
        amid(Amid::FromPublicKey(signing.public_key).str()) {}

  // Signs `body` per PROTOCOL.md §7 for POST `path`.
  json Sign(const std::string& path, json body, UnixNanos now = Now(),
            const std::string& method = "POST") const {
    auto r = SignRegistryRequest(method, path, body, signing.secret, now);
    REQUIRE(r);
    return body;
  }

  json RegisterBody(const std::vector<std::string>& capabilities = {}) const {
    json body = {{"amid", amid},
                 {"signing_public_key", FormatEd25519Key(signing.public_key)},
                 {"exchange_public_key", FormatX25519Key(exchange.public_key)},
                 {"display_name", "agent " + amid.substr(0, 6)},
                 {"capabilities", capabilities},
                 {"relay_endpoint", "wss://relay.example/v1/connect"}};
    return Sign("/v1/registry/register", body);
  }

  // A prekey upload with `count` one-time prekeys starting at `first_id`.
  json PrekeyBody(std::uint32_t spk_id, std::uint32_t first_id, std::size_t count,
                  const Ed25519SecretKey* spk_signer = nullptr) {
    SignedPrekey spk =
        SignedPrekey::Generate(spk_id, spk_signer ? *spk_signer : signing.secret, Now(), rng);
    auto otpks = GenerateOneTimePrekeys(first_id, count, rng);
    REQUIRE(otpks);
    auto parsed = Amid::Parse(amid);
    REQUIRE(parsed);
    return Sign("/v1/registry/prekeys", BuildPrekeyUploadBody(*parsed, spk, *otpks));
  }
};

enum class Backend { kSqlite, kPostgres };

// The backend named by AMESH_TEST_REGISTRY_BACKEND; an unknown name fails the test.
inline Backend TestBackend() {
  const char* env = std::getenv("AMESH_TEST_REGISTRY_BACKEND");
  const std::string name = env != nullptr ? env : "";
  if (name.empty() || name == "sqlite") return Backend::kSqlite;
  INFO("AMESH_TEST_REGISTRY_BACKEND=" << name);
  REQUIRE((name == "postgresql" || name == "postgres"));
  return Backend::kPostgres;
}

inline bool OnPostgres() { return TestBackend() == Backend::kPostgres; }

// Ends the test process as skipped (ctest SKIP_RETURN_CODE 77) after a visible warning. Catch2 v2
// has no skip, and a passing test that tested nothing would hide a missing server in CI.
[[noreturn]] inline void SkipTestProcess(const std::string& reason) {
  WARN("SKIPPED: " << reason);
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
  std::_Exit(77);
}

// The `--db` arguments for a registry on a fresh database of the selected backend: none on
// SQLite (the registry's default file in its state directory), {"--db", "postgresql:///…"} on
// PostgreSQL (a URI over the test server's Unix socket). Skips the test process when the PostgreSQL
// server is not installed; fails the test when it is installed but does not work.
inline std::vector<std::string> FreshDatabaseArgs() {
  if (!OnPostgres()) return {};
#if AMESH_TEST_HAVE_PG
  auto& pg = TestPostgres::Shared();
  if (!pg.Available()) SkipTestProcess("PostgreSQL backend: " + pg.reason());
  INFO(pg.reason());
  REQUIRE(pg.running());
  const std::string db = pg.NewDatabaseUri();
  INFO(pg.reason());
  REQUIRE_FALSE(db.empty());
  return {"--db", db};
#else
  SkipTestProcess("PostgreSQL backend: this build has no libpq (libpq-dev), so no agentmesh_pg");
#endif
}

// What a registry keeps between runs: its state directory (root key, SQLite file) and, on
// PostgreSQL, its database. Shared by every Registry started on it.
class RegistryState {
 public:
  RegistryState() : db_args_(FreshDatabaseArgs()) {}
  RegistryState(const RegistryState&) = delete;
  RegistryState& operator=(const RegistryState&) = delete;

  const std::filesystem::path& dir() const { return dir_.path(); }
  // {} on SQLite, {"--db", "postgresql:///…"} on PostgreSQL.
  const std::vector<std::string>& db_args() const { return db_args_; }
  Backend backend() const { return db_args_.empty() ? Backend::kSqlite : Backend::kPostgres; }
  // The SQLite database file (meaningful on the SQLite backend only).
  std::filesystem::path sqlite_path() const { return dir_.path() / "registry.db"; }

 private:
  std::vector<std::string> db_args_;  // first: a skipped process must not leave a temp dir
  TempDir dir_;
};

class Registry {
 public:
  explicit Registry(std::vector<std::string> extra = {}, bool wait_ready = true)
      : Registry(std::make_shared<RegistryState>(), std::move(extra), wait_ready) {}

  // A registry on existing state (e.g. another Registry's state(), after that one stopped).
  // `wrapper`: a command line the registry's is appended to (e.g. a shell that sets limits and
  // then runs exec "$0" "$@").
  Registry(std::shared_ptr<RegistryState> state, std::vector<std::string> extra = {},
           bool wait_ready = true, std::vector<std::string> wrapper = {})
      : state_(std::move(state)), extra_(std::move(extra)), wrapper_(std::move(wrapper)) {
    Launch(wait_ready);
  }

  void WaitReady() {
    auto line = process_.WaitForLine("listening on port", 20s);
    INFO(process_.StderrLog());
    REQUIRE(line.has_value());
    REQUIRE(std::stoi(line->substr(line->rfind(' ') + 1)) == port_);
  }

  // Stops the process (SIGKILL when `kill`, else SIGTERM and a clean exit) and starts a new one
  // with the same arguments on the same state directory and database. The port changes.
  void Restart(bool kill = true, bool wait_ready = true) {
    conn_.reset();
    if (kill) {
      process_.Kill();
    } else {
      const int status = process_.Signal(SIGTERM, true);
      INFO(process_.StderrLog());
      REQUIRE(status != -1);
      CHECK(WIFEXITED(status));
    }
    ++runs_;
    Launch(wait_ready);
  }

  std::uint16_t port() const { return port_; }
  const std::filesystem::path& dir() const { return state_->dir(); }
  const std::shared_ptr<RegistryState>& state() const { return state_; }
  Backend backend() const { return state_->backend(); }
  ChildProcess& process() { return process_; }
  std::string log() const { return process_.StderrLog(); }

  HttpResult Get(const std::string& target) { return conn().Request("GET", target); }
  HttpResult Post(const std::string& path, const json& body) {
    return conn().Request("POST", path, body.dump());
  }
  HttpResult PostRaw(const std::string& path, const std::string& body) {
    return conn().Request("POST", path, body);
  }
  HttpResult Register(const TestAgent& agent, const std::vector<std::string>& caps = {}) {
    return Post("/v1/registry/register", agent.RegisterBody(caps));
  }
  HttpResult Lookup(const std::string& amid) { return Get("/v1/registry/lookup?amid=" + amid); }
  HttpResult Search(const std::string& query) { return Get("/v1/registry/search?" + query); }

 private:
  std::shared_ptr<RegistryState> state_;
  ChildProcess process_;
  std::vector<std::string> extra_;
  std::vector<std::string> wrapper_;
  std::uint16_t port_ = 0;
  int runs_ = 0;
  std::unique_ptr<HttpConnection> conn_;

  void Launch(bool wait_ready) {
    std::vector<std::string> argv = {AMESH_REGISTRY_BIN,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--state-dir",
                                     state_->dir().string(),
                                     "--log-level",
                                     "debug",
                                     "--register-per-minute",
                                     "100000",
                                     "--search-per-minute",
                                     "100000"};
    // A test that names its own database keeps it.
    if (std::find(extra_.begin(), extra_.end(), "--db") == extra_.end()) {
      argv.insert(argv.end(), state_->db_args().begin(), state_->db_args().end());
    }
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    argv.insert(argv.begin(), wrapper_.begin(), wrapper_.end());
    const auto log = state_->dir() / (runs_ == 0 ? std::string("registry.log")
                                                 : "registry-" + std::to_string(runs_) + ".log");
    REQUIRE(process_.Start(argv, log));
    auto line = process_.WaitForLine("starting on port", 10s);
    INFO(process_.StderrLog());
    REQUIRE(line.has_value());
    port_ = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(' ') + 1)));
    if (wait_ready) WaitReady();
  }

  HttpConnection& conn() {
    if (!conn_) conn_ = std::make_unique<HttpConnection>(port_);
    return *conn_;
  }

 public:
  // Drops the keep-alive connection (e.g. after the server closed it); the next request opens
  // a new one.
  void Reconnect() { conn_.reset(); }
};

inline std::unique_ptr<Registry> StartRegistry(std::vector<std::string> extra = {}) {
  return std::make_unique<Registry>(std::move(extra));
}

inline std::string ErrorOf(const HttpResult& r) {
  auto j = r.Json();
  return j.is_object() && j.contains("error") && j["error"].is_string()
             ? j["error"].get<std::string>()
             : std::string("<no JSON error: ") + r.body + ">";
}

inline std::set<std::string> AmidsOf(const json& results) {
  std::set<std::string> out;
  for (const auto& r : results) out.insert(r["amid"].get<std::string>());
  return out;
}

}  // namespace agentmesh::testing::registry_fixture
