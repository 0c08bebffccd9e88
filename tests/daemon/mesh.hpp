// A local mesh for daemon integration tests (a relay, a registry and any number of initialized
// daemons, all in one temp dir and stopped with it), and helpers over it: plain HTTP GETs,
// audit-log polling, opening a session, draining an inbox.
#pragma once

#include <fstream>
#include <memory>
#include <sstream>

#include "harness.hpp"
#include "loopback_http.hpp"

namespace agentmesh::testing {

inline std::string ReadAll(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::size_t CountLines(const std::filesystem::path& path, const std::string& needle) {
  std::ifstream in(path);
  std::string line;
  std::size_t n = 0;
  while (std::getline(in, line)) n += line.find(needle) != std::string::npos ? 1 : 0;
  return n;
}

inline void WritePolicy(DaemonProcess& d, const json& policy) {
  std::ofstream(d.home() / "policy.json") << policy.dump(2);
}

class Mesh {
 public:
  Mesh() {
    StartRelay("127.0.0.1:0");
#ifdef AMESH_REGISTRY_BIN
    std::filesystem::create_directories(dir_.path() / "registry");
    REQUIRE(registry_.Start({AMESH_REGISTRY_BIN, "--listen", "127.0.0.1:0", "--db",
                             "sqlite:" + (dir_.path() / "registry" / "registry.db").string(),
                             "--state-dir", (dir_.path() / "registry").string(),
                             "--register-per-minute", "10000", "--search-per-minute", "100000"},
                            dir_.path() / "registry.log"));
    registry_url_ = "http://127.0.0.1:" + std::to_string(registry_.port());
#else
    registry_url_ = "http://127.0.0.1:9";  // nothing listens: registry calls are unavailable
#endif
    relay_url_ = "ws://127.0.0.1:" + std::to_string(relay_.port()) + "/v1/connect";
  }

  // A started, initialized daemon (registered when `capabilities` is given).
  DaemonProcess& Agent(const std::string& name, std::optional<json> capabilities = json::array(),
                       std::optional<json> config = std::nullopt,
                       std::vector<std::string> extra_args = {}) {
    auto d = std::make_unique<DaemonProcess>(dir_.path() / name, registry_url_, relay_url_);
    d->extra_args = std::move(extra_args);
    if (config) std::ofstream(d->home() / "config.json") << config->dump();
    d->Start();
    json init = d->Init(name);
    REQUIRE(init["created"] == true);
    if (capabilities) {
      json reg = d->rpc.Call("register", {{"capabilities", *capabilities}});
      REQUIRE(reg["amid"] == init["amid"]);
    }
    REQUIRE(d->WaitRelay());
    agents_.push_back(std::move(d));
    return *agents_.back();
  }

  // kill -9 of the relay, then a new one on the same port and store.
  void Kill9AndRestartRelay() {
    const std::uint16_t port = relay_.port();
    relay_.process().Kill();
    StartRelay("127.0.0.1:" + std::to_string(port));
  }

  const std::filesystem::path& dir() const { return dir_.path(); }
  std::uint16_t registry_port() { return registry_.port(); }
  ServerProcess& registry() { return registry_; }
  std::uint16_t relay_port() { return relay_.port(); }
  const std::string& relay_url() const { return relay_url_; }

  std::string log() const {
    std::string out = "relay:\n" + relay_.log() + "\nregistry:\n" + registry_.log();
    for (const auto& a : agents_) out += "\n" + a->home().filename().string() + ":\n" + a->log();
    return out;
  }

 private:
  void StartRelay(const std::string& listen) {
    REQUIRE(relay_.Start({AMESH_RELAY_BIN, "--listen", listen, "--store",
                          (dir_.path() / "relay.db").string(), "--messages-per-minute", "1000000",
                          "--knocks-per-minute", "100000", "--max-queue", "100000"},
                         dir_.path() / "relay.log"));
  }

  TempDir dir_;
  ServerProcess relay_;
  ServerProcess registry_;
  std::string registry_url_, relay_url_;
  std::vector<std::unique_ptr<DaemonProcess>> agents_;
};

inline std::string Amid(DaemonProcess& d) { return d.rpc.Call("whoami")["amid"]; }

// GET http://127.0.0.1:port/path → the body ("" on any failure).
inline std::string HttpGetText(std::uint16_t port, const std::string& path) {
  return HttpResponseBody(LoopbackHttpGet(port, path));
}

// The JSON body of GET http://127.0.0.1:port/path (null on any failure).
inline json HttpGetJson(std::uint16_t port, const std::string& path) {
  auto doc = json::parse(HttpGetText(port, path), nullptr, false);
  return doc.is_discarded() ? json(nullptr) : doc;
}

// Polls the audit log of `d` until a line contains every needle.
inline bool WaitAudit(DaemonProcess& d, const std::vector<std::string>& needles,
                      std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    std::ifstream in(d.home() / "logs" / "audit.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      bool all = true;
      for (const auto& n : needles) all = all && line.find(n) != std::string::npos;
      if (all) return true;
    }
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

// An active session from `a` to `b` of `type`.
inline std::string OpenSession(DaemonProcess& a, DaemonProcess& b, const std::string& type,
                               const std::string& intent = "travel/flights",
                               const json& extra = json::object()) {
  json params = {{"amid", Amid(b)}, {"intent", intent}, {"type", type}, {"ttl_seconds", 3600}};
  for (auto& [key, value] : extra.items()) params[key] = value;
  json k = a.rpc.Call("knock", params);
  REQUIRE(k["state"] == "active");
  return k["session_id"];
}

// Polls `d`'s stderr log until it contains `needle`; false after `timeout`.
inline bool WaitLog(DaemonProcess& d, const std::string& needle,
                    std::chrono::milliseconds timeout = 10s) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (d.log().find(needle) == std::string::npos) {
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(50ms);
  }
  return true;
}

// Peeks at `d`'s inbox (recv with peek) until it holds `want` messages or 10 s pass; returns the
// last peek's result.
inline json PeekUntil(DaemonProcess& d, std::size_t want) {
  json peeked;
  for (int i = 0; i < 200; ++i) {
    peeked = d.rpc.Call("recv", {{"peek", true}});
    if (peeked["messages"].size() >= want) break;
    std::this_thread::sleep_for(50ms);
  }
  return peeked;
}

inline json RecvAll(DaemonProcess& d, std::size_t want, std::chrono::seconds timeout,
                    const json& filter = json::object()) {
  json all = json::array();
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (all.size() < want && std::chrono::steady_clock::now() < deadline) {
    json params = filter;
    params["timeout_ms"] = 1000;
    params["limit"] = 10000;
    json r = d.rpc.CallRaw("recv", params);
    if (!r.contains("result")) break;
    for (auto& m : r["result"]["messages"]) all.push_back(m);
  }
  return all;
}

}  // namespace agentmesh::testing
