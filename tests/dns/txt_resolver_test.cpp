// Loop tests of TxtResolver (agentmesh_dns): a real dnsmasq on 127.0.0.1:<free port> answers the
// queries; a bound-but-silent UDP socket stands in for a resolver that never answers. Every test
// ends with uv_loop_close() == 0, so a leaked handle fails it. Tests that need dnsmasq warn
// "SKIPPED" and pass when it is not installed.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agentmesh/dns/txt_resolver.hpp"
#include "process.hpp"

using namespace agentmesh;
using agentmesh::dns::TxtResolver;
using agentmesh::dns::TxtResolverOptions;
using agentmesh::testing::ChildProcess;
using agentmesh::testing::TempDir;
using Records = Result<std::vector<std::string>>;

namespace {

constexpr const char* kDnsmasq = "/usr/sbin/dnsmasq";

// A UDP socket bound to 127.0.0.1:<ephemeral> that never answers; closed on destruction.
class SilentUdp {
 public:
  SilentUdp() {
    fd_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
  }
  ~SilentUdp() { ::close(fd_); }
  int port() const { return port_; }

 private:
  int fd_ = -1;
  int port_ = 0;
};

int FreeUdpPort() {
  SilentUdp probe;
  return probe.port();
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// dnsmasq serving a few records for example.org (authoritative for it: unknown names get
// NXDOMAIN, not REFUSED) on 127.0.0.1:port(), UDP and TCP.
class Dnsmasq {
 public:
  static bool Installed() { return ::access(kDnsmasq, X_OK) == 0; }

  bool Start() {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = FreeUdpPort();
      log_ = dir_.path() / ("dnsmasq-" + std::to_string(attempt) + ".log");
      std::vector<std::string> argv = {kDnsmasq,
                                       "--no-daemon",
                                       "--conf-file=/dev/null",
                                       "--pid-file",
                                       "--no-resolv",
                                       "--no-hosts",
                                       "--port=" + std::to_string(port_),
                                       "--listen-address=127.0.0.1",
                                       "--bind-interfaces",
                                       "--local=/example.org/",
                                       "--txt-record=_agentmesh.example.org,agentmesh-verify=abc",
                                       "--txt-record=multi.example.org,first",
                                       "--txt-record=multi.example.org,second",
                                       "--txt-record=split.example.org,part one ,part two",
                                       "--host-record=host.example.org,127.0.0.9"};
      if (::geteuid() == 0) {
        argv.insert(argv.end(), {"--user=nobody", "--group=nogroup"});
      }
      if (!process_.Start(argv, log_)) return false;
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (std::chrono::steady_clock::now() < deadline) {
        const std::string text = ReadFile(log_);
        if (text.find("started, version") != std::string::npos) return true;
        if (text.find("failed to create listening socket") != std::string::npos) break;
        if (text.find("dnsmasq: ") != std::string::npos && text.find("FAILED") != std::string::npos)
          break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      process_.Kill();
    }
    return false;
  }

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Log() const { return ReadFile(log_); }

 private:
  TempDir dir_;
  ChildProcess process_;
  std::filesystem::path log_;
  int port_ = 0;
};

#define START_DNSMASQ_OR_SKIP(server)                                                    \
  if (!Dnsmasq::Installed()) {                                                           \
    WARN("SKIPPED: " << kDnsmasq                                                         \
                     << " not found; install it with `apt-get install "                  \
                        "--no-install-recommends dnsmasq-base` (scripts/deps.sh does)"); \
    return;                                                                              \
  }                                                                                      \
  Dnsmasq server;                                                                        \
  {                                                                                      \
    const bool started = server.Start();                                                 \
    INFO(server.Log());                                                                  \
    REQUIRE(started);                                                                    \
  }

// Runs the loop until `done` or 10 s of loop time pass.
template <typename Pred>
void RunUntil(uv_loop_t* loop, Pred done) {
  uv_update_time(loop);
  const auto deadline = uv_now(loop) + 10'000;
  while (!done() && uv_now(loop) < deadline) uv_run(loop, UV_RUN_ONCE);
}

struct Loop {
  Loop() { REQUIRE(uv_loop_init(&loop) == 0); }
  uv_loop_t loop;
};

std::unique_ptr<TxtResolver> MakeResolver(
    uv_loop_t* loop, const std::string& server,
    std::chrono::milliseconds timeout = std::chrono::milliseconds(2000), int tries = 2) {
  TxtResolverOptions options;
  options.servers = {server};
  options.timeout = timeout;
  options.tries = tries;
  auto resolver = TxtResolver::Create(loop, options);
  INFO((resolver ? std::string() : resolver.error().ToString()));
  REQUIRE(resolver);
  return std::move(*resolver);
}

// Resolves one name and returns the result, running the loop.
Records ResolveOnce(uv_loop_t* loop, TxtResolver& resolver, const std::string& name) {
  std::optional<Records> out;
  resolver.Resolve(name, [&](Records r) { out = std::move(r); });
  CHECK_FALSE(out.has_value());  // never called from inside Resolve()
  RunUntil(loop, [&] { return out.has_value(); });
  REQUIRE(out.has_value());
  return std::move(*out);
}

void CloseLoop(Loop& l) {
  uv_run(&l.loop, UV_RUN_DEFAULT);  // let closed handles finish
  REQUIRE(uv_loop_close(&l.loop) == 0);
}

}  // namespace

TEST_CASE("TXT records come back from a real dnsmasq on loopback", "[dns]") {
  START_DNSMASQ_OR_SKIP(server);
  Loop l;
  {
    auto resolver = MakeResolver(&l.loop, server.address());
    const std::string name = dns::OrgChallengeName("example.org");
    CHECK(name == "_agentmesh.example.org");

    auto challenge = ResolveOnce(&l.loop, *resolver, name);
    INFO((challenge ? std::string() : challenge.error().ToString()));
    REQUIRE(challenge);
    CHECK(*challenge == std::vector<std::string>{dns::OrgChallengeValue("abc")});

    auto multi = ResolveOnce(&l.loop, *resolver, "multi.example.org");
    REQUIRE(multi);
    std::vector<std::string> sorted = *multi;
    std::sort(sorted.begin(), sorted.end());
    CHECK(sorted == std::vector<std::string>{"first", "second"});

    // One record of two character-strings reads as their concatenation.
    auto split = ResolveOnce(&l.loop, *resolver, "split.example.org");
    REQUIRE(split);
    CHECK(*split == std::vector<std::string>{"part one part two"});

    // Case-insensitive names, trailing dot accepted.
    auto upper = ResolveOnce(&l.loop, *resolver, "_AGENTMESH.Example.ORG.");
    REQUIRE(upper);
    CHECK(upper->size() == 1);
    CHECK(resolver->pending() == 0);
  }
  CloseLoop(l);
}

TEST_CASE("NXDOMAIN and a name without TXT records are kNotFound", "[dns]") {
  START_DNSMASQ_OR_SKIP(server);
  Loop l;
  {
    auto resolver = MakeResolver(&l.loop, server.address());
    auto nxdomain = ResolveOnce(&l.loop, *resolver, "_agentmesh.missing.example.org");
    REQUIRE_FALSE(nxdomain);
    CHECK(nxdomain.error().code == Code::kNotFound);

    auto nodata = ResolveOnce(&l.loop, *resolver, "host.example.org");
    REQUIRE_FALSE(nodata);
    CHECK(nodata.error().code == Code::kNotFound);

    auto bad = ResolveOnce(&l.loop, *resolver, "");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == Code::kInvalidArgument);
  }
  CloseLoop(l);
}

TEST_CASE("many lookups in flight at once each get their own answer", "[dns]") {
  START_DNSMASQ_OR_SKIP(server);
  Loop l;
  {
    auto resolver = MakeResolver(&l.loop, server.address());
    constexpr int kLookups = 50;
    int ok = 0;
    int not_found = 0;
    int other = 0;
    for (int i = 0; i < kLookups; ++i) {
      const bool exists = i % 2 == 0;
      resolver->Resolve(
          exists ? "_agentmesh.example.org" : "n" + std::to_string(i) + ".example.org",
          [&, exists](Records r) {
            if (exists && r && r->size() == 1 && (*r)[0] == "agentmesh-verify=abc") {
              ++ok;
            } else if (!exists && !r && r.error().code == Code::kNotFound) {
              ++not_found;
            } else {
              ++other;
            }
          });
    }
    CHECK(resolver->pending() == kLookups);
    RunUntil(&l.loop, [&] { return ok + not_found + other == kLookups; });
    CHECK(ok == kLookups / 2);
    CHECK(not_found == kLookups / 2);
    CHECK(other == 0);
  }
  CloseLoop(l);
}

TEST_CASE("a resolver that never answers is kTimeout", "[dns]") {
  SilentUdp silent;
  Loop l;
  {
    auto resolver = MakeResolver(&l.loop, "127.0.0.1:" + std::to_string(silent.port()),
                                 std::chrono::milliseconds(100), 2);
    const auto start = std::chrono::steady_clock::now();
    auto r = ResolveOnce(&l.loop, *resolver, "_agentmesh.example.org");
    const auto elapsed = std::chrono::steady_clock::now() - start;
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kTimeout);
    // 100 ms, then 200 ms: well under the 10 s guard, and not instantaneous.
    CHECK(elapsed >= std::chrono::milliseconds(250));
    CHECK(elapsed < std::chrono::seconds(3));
  }
  CloseLoop(l);
}

TEST_CASE("a port with nothing listening is kUnavailable or kTimeout, quickly", "[dns]") {
  Loop l;
  {
    // Loopback answers with ICMP port unreachable, which c-ares reports as a refused connection.
    auto resolver = MakeResolver(&l.loop, "127.0.0.1:" + std::to_string(FreeUdpPort()),
                                 std::chrono::milliseconds(200), 1);
    auto r = ResolveOnce(&l.loop, *resolver, "_agentmesh.example.org");
    REQUIRE_FALSE(r);
    INFO(r.error().ToString());
    CHECK((r.error().code == Code::kUnavailable || r.error().code == Code::kTimeout));
  }
  CloseLoop(l);
}

TEST_CASE("Cancel ends pending lookups with kUnavailable", "[dns]") {
  SilentUdp silent;
  Loop l;
  {
    auto resolver = MakeResolver(&l.loop, "127.0.0.1:" + std::to_string(silent.port()),
                                 std::chrono::milliseconds(5000), 3);
    std::vector<Records> results;
    for (int i = 0; i < 3; ++i) {
      resolver->Resolve("x.example.org", [&](Records r) { results.push_back(std::move(r)); });
    }
    uv_run(&l.loop, UV_RUN_NOWAIT);
    resolver->Cancel();
    CHECK(resolver->pending() == 0);
    CHECK(results.empty());  // delivered on the loop, not inside Cancel()
    RunUntil(&l.loop, [&] { return results.size() == 3; });
    REQUIRE(results.size() == 3);
    for (const auto& r : results) {
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Code::kUnavailable);
    }
  }
  CloseLoop(l);
}

TEST_CASE("destroying a resolver with lookups pending calls nothing and leaks no handle", "[dns]") {
  SilentUdp silent;
  Loop l;
  int calls = 0;
  {
    auto resolver = MakeResolver(&l.loop, "127.0.0.1:" + std::to_string(silent.port()));
    resolver->Resolve("a.example.org", [&](Records) { ++calls; });
    resolver->Resolve("b.example.org", [&](Records) { ++calls; });
    uv_run(&l.loop, UV_RUN_NOWAIT);  // the query is on the wire, a uv_poll is active
  }
  CloseLoop(l);
  CHECK(calls == 0);
}

TEST_CASE("a callback may destroy the resolver", "[dns]") {
  SilentUdp silent;
  Loop l;
  auto resolver = MakeResolver(&l.loop, "127.0.0.1:" + std::to_string(silent.port()),
                               std::chrono::milliseconds(50), 1);
  int calls = 0;
  for (int i = 0; i < 2; ++i) {
    resolver->Resolve("a.example.org", [&](Records) {
      ++calls;
      resolver.reset();
    });
  }
  RunUntil(&l.loop, [&] { return resolver == nullptr; });
  CloseLoop(l);
  CHECK(calls == 1);  // the second answer was dropped with the resolver
}

TEST_CASE("resolver options are validated", "[dns]") {
  Loop l;
  const std::vector<std::vector<std::string>> bad = {
      {},
      {"resolver.example.org"},
      {"127.0.0.1:0"},
      {"127.0.0.1:65536"},
      {"127.0.0.1:x"},
      {"[::1"},
      {"1.2.3.4.5"},
  };
  for (const auto& servers : bad) {
    TxtResolverOptions options;
    options.servers = servers;
    auto r = TxtResolver::Create(&l.loop, options);
    INFO((servers.empty() ? std::string("(none)") : servers[0]));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
  const std::vector<std::string> good = {"127.0.0.1", "127.0.0.1:5353", "[::1]:53", "::1", "[::1]"};
  for (const auto& server : good) {
    TxtResolverOptions options;
    options.servers = {server};
    auto r = TxtResolver::Create(&l.loop, options);
    INFO(server);
    CHECK(r);
  }
  CloseLoop(l);
}
