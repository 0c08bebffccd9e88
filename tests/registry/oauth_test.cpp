// Integration tests of OAuth (Tier 1): the real amesh-registry binary, signed authorize requests
// (PROTOCOL.md §7), and a stand-in OAuth provider in this process.
//
// The stand-in is the one fake in the registry tests, and only because the real providers
// (github.com, oauth2.googleapis.com) are on the internet: a small HTTP/1.1 server on a free
// loopback port that answers the two calls the registry makes — the token exchange (form POST)
// and the user API (GET with a bearer token) — the way GitHub and Google shape them.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agentmesh/core/certificate.hpp"
#include "registry_fixture.hpp"

using namespace agentmesh;
using namespace agentmesh::testing;
using namespace agentmesh::testing::registry_fixture;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

constexpr const char* kClientId = "test-client-id";
constexpr const char* kClientSecret = "test-client-secret";

std::string FormValue(const std::string& form, const std::string& name) {
  std::size_t pos = 0;
  while (pos <= form.size()) {
    std::size_t amp = form.find('&', pos);
    if (amp == std::string::npos) amp = form.size();
    const std::string part = form.substr(pos, amp - pos);
    const auto eq = part.find('=');
    if (part.substr(0, eq) == name) {
      std::string raw = eq == std::string::npos ? "" : part.substr(eq + 1);
      std::string out;
      for (std::size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '%' && i + 2 < raw.size()) {
          out += static_cast<char>(std::stoi(raw.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          out += raw[i] == '+' ? ' ' : raw[i];
        }
      }
      return out;
    }
    pos = amp + 1;
  }
  return {};
}

// The stand-in provider (see the file comment). Codes steer it:
//   "good-<x>"     token "tok-<x>"; the user is id 4242 / sub "g-<x>", login "octo-<x>"
//   "refused"      the token endpoint answers {"error":"bad_verification_code"}
//   "token-500"    the token endpoint answers 500
//   "good-u500"    the user endpoint answers 500
//   "good-unverified"  (Google) email_verified false
// Paths: /github/{authorize,token,user} and /google/{authorize,token,user}.
class StandInProvider {
 public:
  struct Seen {
    std::string method;
    std::string path;
    std::string authorization;
    std::string body;
  };

  StandInProvider() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { Serve(); });
  }
  ~StandInProvider() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }

  std::string Url(const std::string& path) const {
    return "http://127.0.0.1:" + std::to_string(port_) + path;
  }
  std::vector<Seen> seen() const {
    std::lock_guard lock(mu_);
    return seen_;
  }

 private:
  void Serve() {
    while (!stop_) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, 50) <= 0) continue;
      const int client = ::accept(fd_, nullptr, nullptr);
      if (client < 0) continue;
      timeval tv{2, 0};
      ::setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      Handle(client);
      ::close(client);
    }
  }

  void Handle(int client) {
    std::string data;
    char buf[4096];
    std::size_t header_end = std::string::npos;
    while ((header_end = data.find("\r\n\r\n")) == std::string::npos) {
      const ssize_t n = ::recv(client, buf, sizeof buf, 0);
      if (n <= 0) return;
      data.append(buf, static_cast<std::size_t>(n));
    }
    Seen req;
    const std::string head = data.substr(0, header_end);
    std::istringstream lines(head);
    std::string line;
    std::getline(lines, line);
    std::istringstream first(line);
    std::string target;
    first >> req.method >> target;
    req.path = target.substr(0, target.find('?'));
    std::size_t length = 0;
    while (std::getline(lines, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      const auto colon = line.find(':');
      if (colon == std::string::npos) continue;
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(colon + 1);
      while (!value.empty() && value.front() == ' ') value.erase(value.begin());
      if (name == "content-length") length = std::stoul(value);
      if (name == "authorization") req.authorization = value;
    }
    req.body = data.substr(header_end + 4);
    while (req.body.size() < length) {
      const ssize_t n = ::recv(client, buf, sizeof buf, 0);
      if (n <= 0) return;
      req.body.append(buf, static_cast<std::size_t>(n));
    }
    {
      std::lock_guard lock(mu_);
      seen_.push_back(req);
    }
    auto [status, body] = Answer(req);
    const std::string response =
        "HTTP/1.1 " + std::to_string(status) +
        " X\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
        "\r\nConnection: close\r\n\r\n" + body;
    (void)!::send(client, response.data(), response.size(), MSG_NOSIGNAL);
  }

  std::pair<int, std::string> Answer(const Seen& req) const {
    const bool google = req.path.starts_with("/google/");
    if (req.method == "POST" && req.path.ends_with("/token")) {
      if (FormValue(req.body, "client_id") != kClientId ||
          FormValue(req.body, "client_secret") != kClientSecret) {
        return {401, R"({"error":"invalid_client"})"};
      }
      if (google && FormValue(req.body, "grant_type") != "authorization_code") {
        return {400, R"({"error":"unsupported_grant_type"})"};
      }
      const std::string code = FormValue(req.body, "code");
      if (code == "token-500") return {500, "oops"};
      if (code.starts_with("good-")) {
        return {200,
                json{{"access_token", "tok-" + code.substr(5)}, {"token_type", "bearer"}}.dump()};
      }
      if (google) return {400, R"({"error":"invalid_grant"})"};
      return {200, R"({"error":"bad_verification_code","error_description":"bad code"})"};
    }
    if (req.method == "GET" && req.path.ends_with("/user")) {
      if (!req.authorization.starts_with("Bearer tok-")) return {401, R"({"message":"no"})"};
      const std::string who = req.authorization.substr(11);
      if (who == "u500") return {500, R"({"message":"down"})"};
      if (google) {
        return {200, json{{"sub", "g-" + who},
                          {"email", who + "@example.com"},
                          {"email_verified", who != "unverified"},
                          {"name", "G " + who}}
                         .dump()};
      }
      return {200, json{{"id", 4242}, {"login", "octo-" + who}, {"name", "Octo " + who}}.dump()};
    }
    return {404, R"({"message":"Not Found"})"};
  }

  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<Seen> seen_;
};

// A registry whose GitHub provider (and, with `google`, Google provider) points at `provider`.
struct OAuthRegistry {
  TempDir dir;
  std::unique_ptr<Registry> reg;

  OAuthRegistry(const StandInProvider& provider, bool google, json extra = json::object()) {
    json config = {{"github_client_id", kClientId},
                   {"github_client_secret", kClientSecret},
                   {"github_authorize_url", provider.Url("/github/authorize")},
                   {"github_token_url", provider.Url("/github/token")},
                   {"github_user_url", provider.Url("/github/user")},
                   // Empty values override GOOGLE_CLIENT_* from the environment.
                   {"google_client_id", google ? kClientId : ""},
                   {"google_client_secret", google ? kClientSecret : ""},
                   {"google_authorize_url", provider.Url("/google/authorize")},
                   {"google_token_url", provider.Url("/google/token")},
                   {"google_user_url", provider.Url("/google/user")},
                   {"oauth_callback_base_url", "https://registry.example/"},
                   {"oauth_timeout_ms", 3000}};
    config.update(extra);
    const auto path = dir.path() / "registry.json";
    {
      std::ofstream out(path);
      out << config.dump();
    }
    reg = StartRegistry({"--config", path.string()});
  }
};

json AuthorizeBody(const TestAgent& signer, const std::string& amid, const std::string& provider,
                   UnixNanos now = Now()) {
  return signer.Sign("/v1/auth/oauth/authorize", {{"amid", amid}, {"provider", provider}}, now);
}

std::string Authorize(Registry& reg, const TestAgent& agent, const std::string& provider) {
  auto r = reg.Post("/v1/auth/oauth/authorize", AuthorizeBody(agent, agent.amid, provider));
  INFO(r.body << reg.log());
  REQUIRE(r.status == 200);
  return r.Json()["state"].get<std::string>();
}

HttpResult Callback(Registry& reg, const std::string& code, const std::string& state) {
  return reg.Get("/v1/auth/oauth/callback?code=" + UrlEncode(code) + "&state=" + UrlEncode(state));
}

std::string TierOf(Registry& reg, const std::string& amid) {
  return reg.Lookup(amid).Json()["tier"].get<std::string>();
}

Ed25519PublicKey RootKeyOf(Registry& reg) {
  auto r = reg.Get("/v1/registry/root-key");
  REQUIRE(r.status == 200);
  auto key = ParseEd25519Key(r.Json()["public_key"].get<std::string>());
  REQUIRE(key);
  return *key;
}

}  // namespace

TEST_CASE("registry: OAuth GitHub flow makes the agent verified with a root-signed certificate",
          "[registry][oauth]") {
  StandInProvider provider;
  OAuthRegistry o(provider, false);
  Registry& reg = *o.reg;
  TestAgent agent(5001);
  REQUIRE(reg.Register(agent).status == 201);

  auto providers = reg.Get("/v1/auth/oauth/providers");
  REQUIRE(providers.status == 200);
  const json list = providers.Json()["providers"];
  REQUIRE(list.size() == 2);
  CHECK(list[0] == json{{"name", "github"}, {"display_name", "GitHub"}, {"enabled", true}});
  CHECK(list[1] == json{{"name", "google"}, {"display_name", "Google"}, {"enabled", false}});

  auto authorize = reg.Post("/v1/auth/oauth/authorize", AuthorizeBody(agent, agent.amid, "github"));
  INFO(authorize.body << reg.log());
  REQUIRE(authorize.status == 200);
  const json aj = authorize.Json();
  const std::string state = aj["state"];
  CHECK(state.size() >= 40);
  CHECK(aj["expires_in"] == 600);
  const std::string url = aj["authorization_url"];
  CHECK(url.starts_with(provider.Url("/github/authorize") + "?client_id=test-client-id&"));
  CHECK(url.find("&redirect_uri=https%3A%2F%2Fregistry.example%2Fv1%2Fauth%2Foauth%2Fcallback&") !=
        std::string::npos);
  CHECK(url.find("&state=" + UrlEncode(state)) != std::string::npos);
  CHECK(url.find(kClientSecret) == std::string::npos);
  CHECK(TierOf(reg, agent.amid) == "anonymous");

  auto done = Callback(reg, "good-alice", state);
  INFO(done.body << reg.log());
  REQUIRE(done.status == 200);
  const json dj = done.Json();
  CHECK(dj["success"] == true);
  CHECK(dj["amid"] == agent.amid);
  CHECK(dj["tier"] == "verified");
  CHECK(dj["verified_identity"]["provider"] == "github");
  CHECK(dj["verified_identity"]["provider_id"] == "4242");
  CHECK(dj["verified_identity"]["username"] == "octo-alice");
  CHECK(TierOf(reg, agent.amid) == "verified");

  // What the registry sent the provider: the secret and redirect URI in the form, the token as a
  // bearer header.
  const auto seen = provider.seen();
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].method == "POST");
  CHECK(seen[0].path == "/github/token");
  CHECK(FormValue(seen[0].body, "code") == "good-alice");
  CHECK(FormValue(seen[0].body, "redirect_uri") ==
        "https://registry.example/v1/auth/oauth/callback");
  CHECK(seen[1].path == "/github/user");
  CHECK(seen[1].authorization == "Bearer tok-alice");

  // The certificate: an agent certificate signed by the root key, tier verified, offline.
  const json cert = dj["certificate"];
  REQUIRE(cert.is_object());
  CHECK(cert["type"] == "agent_certificate");
  CHECK(cert["subject"] == agent.amid);
  auto verified = VerifyChain(RootKeyOf(reg), std::vector<json>{cert}, Now());
  INFO((verified ? std::string() : verified.error().ToString()));
  REQUIRE(verified);
  CHECK(verified->tier == Tier::kVerified);
  CHECK(verified->amid.str() == agent.amid);
  CHECK_FALSE(verified->organization.has_value());

  // The state is single-use.
  auto replay = Callback(reg, "good-alice", state);
  CHECK(replay.status == 409);
  CHECK(ErrorOf(replay) == "OAuth state already used");
  CHECK(provider.seen().size() == 2);  // the provider was not asked again

  // Secrets, codes and tokens are not in the log.
  const std::string log = reg.log();
  CHECK(log.find(kClientSecret) == std::string::npos);
  CHECK(log.find("good-alice") == std::string::npos);
  CHECK(log.find("tok-alice") == std::string::npos);
}

TEST_CASE("registry: OAuth callback refuses bad states and provider errors without changes",
          "[registry][oauth]") {
  StandInProvider provider;
  OAuthRegistry o(provider, false);
  Registry& reg = *o.reg;
  TestAgent agent(5101);
  REQUIRE(reg.Register(agent).status == 201);

  CHECK(Callback(reg, "good-x", "no-such-state").status == 400);
  CHECK(ErrorOf(Callback(reg, "good-x", "no-such-state")) == "unknown OAuth state");
  CHECK(reg.Get("/v1/auth/oauth/callback?code=good-x").status == 400);
  CHECK(Callback(reg, "good-x", "x'; DELETE FROM oauth_states; --").status == 400);

  const std::string state = Authorize(reg, agent, "github");
  CHECK(reg.Get("/v1/auth/oauth/callback?state=" + UrlEncode(state)).status == 400);  // no code

  auto refused = Callback(reg, "refused", state);
  CHECK(refused.status == 400);
  CHECK(ErrorOf(refused) ==
        "OAuth verification failed: token exchange: the provider refused the code "
        "(bad_verification_code)");
  CHECK(TierOf(reg, agent.amid) == "anonymous");

  auto token_down = Callback(reg, "token-500", state);
  CHECK(token_down.status == 502);
  CHECK(TierOf(reg, agent.amid) == "anonymous");

  auto user_down = Callback(reg, "good-u500", state);
  CHECK(user_down.status == 502);
  CHECK(ErrorOf(user_down).find("user lookup") != std::string::npos);
  CHECK(TierOf(reg, agent.amid) == "anonymous");

  auto denied = reg.Get("/v1/auth/oauth/callback?error=access_denied&state=" + UrlEncode(state));
  CHECK(denied.status == 400);
  CHECK(ErrorOf(denied) == "the provider reported an error: access_denied");
  CHECK(TierOf(reg, agent.amid) == "anonymous");

  // Failures consumed nothing: the state still completes once.
  auto ok = Callback(reg, "good-bob", state);
  INFO(ok.body);
  CHECK(ok.status == 200);
  CHECK(TierOf(reg, agent.amid) == "verified");
  CHECK(Callback(reg, "good-bob", state).status == 409);
}

TEST_CASE("registry: OAuth state is consumed exactly once under concurrent callbacks",
          "[registry][oauth]") {
  StandInProvider provider;
  OAuthRegistry o(provider, false);
  Registry& reg = *o.reg;
  TestAgent agent(5201);
  REQUIRE(reg.Register(agent).status == 201);
  for (int round = 0; round < 3; ++round) {
    const std::string state = Authorize(reg, agent, "github");
    constexpr int kCallers = 4;
    std::vector<int> statuses(kCallers, 0);
    std::vector<std::thread> threads;
    for (int i = 0; i < kCallers; ++i) {
      threads.emplace_back([&, i] {
        statuses[static_cast<std::size_t>(i)] =
            HttpRequest(reg.port(), "GET",
                        "/v1/auth/oauth/callback?code=good-c" + std::to_string(i) +
                            "&state=" + UrlEncode(state))
                .status;
      });
    }
    for (auto& t : threads) t.join();
    INFO("round " << round);
    CHECK(std::count(statuses.begin(), statuses.end(), 200) == 1);
    CHECK(std::count(statuses.begin(), statuses.end(), 409) == kCallers - 1);
  }
  CHECK(TierOf(reg, agent.amid) == "verified");
}

TEST_CASE("registry: OAuth authorize is signed and needs a live agent and an enabled provider",
          "[registry][oauth]") {
  StandInProvider provider;
  OAuthRegistry o(provider, false);
  Registry& reg = *o.reg;
  TestAgent agent(5301);
  TestAgent other(5302);
  TestAgent stranger(5303);
  REQUIRE(reg.Register(agent).status == 201);
  REQUIRE(reg.Register(other).status == 201);

  auto disabled = reg.Post("/v1/auth/oauth/authorize", AuthorizeBody(agent, agent.amid, "google"));
  CHECK(disabled.status == 400);
  CHECK(ErrorOf(disabled) == "provider: google is not enabled on this registry");
  auto unknown = reg.Post("/v1/auth/oauth/authorize", AuthorizeBody(agent, agent.amid, "gitlab"));
  CHECK(unknown.status == 400);
  CHECK(ErrorOf(unknown) == "provider: unknown (github or google)");

  CHECK(reg.Post("/v1/auth/oauth/authorize", json{{"amid", agent.amid}, {"provider", "github"}})
            .status == 400);  // unsigned
  auto forged = reg.Post("/v1/auth/oauth/authorize", AuthorizeBody(other, agent.amid, "github"));
  CHECK(forged.status == 401);
  auto stale = reg.Post("/v1/auth/oauth/authorize",
                        AuthorizeBody(agent, agent.amid, "github", Now() - 3600'000'000'000LL));
  CHECK(stale.status == 401);
  const json body = AuthorizeBody(agent, agent.amid, "github");
  CHECK(reg.Post("/v1/auth/oauth/authorize", body).status == 200);
  CHECK(reg.Post("/v1/auth/oauth/authorize", body).status == 409);  // replay
  auto nobody =
      reg.Post("/v1/auth/oauth/authorize", AuthorizeBody(stranger, stranger.amid, "github"));
  CHECK(nobody.status == 404);
  CHECK(reg.PostRaw("/v1/auth/oauth/authorize", "{\"amid\":").status == 400);

  // A state issued before the agent was revoked no longer completes.
  const std::string state = Authorize(reg, other, "github");
  REQUIRE(reg.Post("/v1/registry/revoke",
                   other.Sign("/v1/registry/revoke", {{"amid", other.amid},
                                                      {"revoker_amid", other.amid},
                                                      {"reason", "superseded"}}))
              .status == 200);
  auto revoked_cb = Callback(reg, "good-z", state);
  CHECK(revoked_cb.status == 403);
  auto revoked_auth =
      reg.Post("/v1/auth/oauth/authorize", AuthorizeBody(other, other.amid, "github"));
  CHECK(revoked_auth.status == 403);
  CHECK(TierOf(reg, other.amid) == "anonymous");
}

TEST_CASE("registry: OAuth state expires", "[registry][oauth]") {
  StandInProvider provider;
  OAuthRegistry o(provider, false, {{"oauth_state_ttl_seconds", 1}});
  Registry& reg = *o.reg;
  TestAgent agent(5401);
  REQUIRE(reg.Register(agent).status == 201);
  const std::string state = Authorize(reg, agent, "github");
  std::this_thread::sleep_for(1200ms);
  auto expired = Callback(reg, "good-late", state);
  CHECK(expired.status == 400);
  CHECK(ErrorOf(expired).starts_with("OAuth state expired"));
  CHECK(TierOf(reg, agent.amid) == "anonymous");
  CHECK(provider.seen().empty());
}

TEST_CASE("registry: OAuth Google flow requires a verified email", "[registry][oauth]") {
  StandInProvider provider;
  OAuthRegistry o(provider, true);
  Registry& reg = *o.reg;
  TestAgent agent(5501);
  REQUIRE(reg.Register(agent).status == 201);

  auto authorize = reg.Post("/v1/auth/oauth/authorize", AuthorizeBody(agent, agent.amid, "google"));
  REQUIRE(authorize.status == 200);
  const std::string url = authorize.Json()["authorization_url"];
  CHECK(url.starts_with(provider.Url("/google/authorize") + "?"));
  CHECK(url.find("&response_type=code") != std::string::npos);
  CHECK(url.find("&scope=openid%20email%20profile") != std::string::npos);

  const std::string state = authorize.Json()["state"];
  auto unverified = Callback(reg, "good-unverified", state);
  CHECK(unverified.status == 400);
  CHECK(ErrorOf(unverified).find("email is not verified") != std::string::npos);
  CHECK(TierOf(reg, agent.amid) == "anonymous");
  auto refused = Callback(reg, "nope", state);
  CHECK(refused.status == 400);
  CHECK(ErrorOf(refused).find("invalid_grant") != std::string::npos);

  auto ok = Callback(reg, "good-carol", state);
  INFO(ok.body << reg.log());
  REQUIRE(ok.status == 200);
  CHECK(ok.Json()["verified_identity"]["provider_id"] == "g-carol");
  CHECK(ok.Json()["verified_identity"]["email"] == "carol@example.com");
  CHECK(TierOf(reg, agent.amid) == "verified");
}
