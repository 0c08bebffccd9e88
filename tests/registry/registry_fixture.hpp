// Fixture of the registry integration tests: test agents that sign requests per PROTOCOL.md §7,
// and the real amesh-registry binary started on a free port with a temp state directory.
// Header-only, included by each test file of registry_tests; everything is inline.
#pragma once

#include <sys/wait.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <fstream>
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

class Registry {
 public:
  explicit Registry(std::vector<std::string> extra = {}, bool wait_ready = true)
      : extra_(std::move(extra)) {
    std::vector<std::string> argv = {AMESH_REGISTRY_BIN,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--state-dir",
                                     dir_.path().string(),
                                     "--log-level",
                                     "debug",
                                     "--register-per-minute",
                                     "100000",
                                     "--search-per-minute",
                                     "100000"};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    REQUIRE(process_.Start(argv, dir_.path() / "registry.log"));
    auto line = process_.WaitForLine("starting on port", 10s);
    INFO(process_.StderrLog());
    REQUIRE(line.has_value());
    port_ = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(' ') + 1)));
    if (wait_ready) WaitReady();
  }

  void WaitReady() {
    auto line = process_.WaitForLine("listening on port", 20s);
    INFO(process_.StderrLog());
    REQUIRE(line.has_value());
    REQUIRE(std::stoi(line->substr(line->rfind(' ') + 1)) == port_);
  }

  std::uint16_t port() const { return port_; }
  const std::filesystem::path& dir() const { return dir_.path(); }
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
  TempDir dir_;
  ChildProcess process_;
  std::vector<std::string> extra_;
  std::uint16_t port_ = 0;
  std::unique_ptr<HttpConnection> conn_;

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
