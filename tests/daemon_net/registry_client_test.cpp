// RegistryClient (libcurl multi on the libuv loop) against an in-test registry built on
// net::HttpServer that checks every signature with the core's VerifyRegistryRequest, and keeps
// agents and prekeys in memory. The in-test server runs on the same loop as the client.
#include "registry_client.hpp"

#include <catch2/catch.hpp>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/registry_auth.hpp"
#include "agentmesh/net/server.hpp"
#include "agentmesh/net/tls.hpp"
#include "loop_helpers.hpp"
#include "process.hpp"

using namespace agentmesh;
using namespace agentmesh::daemon;
using namespace agentmesh::testing;
using namespace std::chrono_literals;
using nlohmann::json;

namespace {

Ed25519KeyPair Identity(std::uint64_t seed) {
  DeterministicRng rng(seed);
  return Ed25519KeyPair::Generate(rng);
}

X25519KeyPair Exchange(std::uint64_t seed) {
  DeterministicRng rng(seed + 1000);
  return X25519KeyPair::Generate(rng);
}

net::HttpResponse JsonReply(int status, const json& body) {
  return net::HttpResponse::Json(status, body.dump());
}

std::string QueryParam(const std::string& query, const std::string& name) {
  std::size_t pos = 0;
  while (pos <= query.size()) {
    const std::size_t end = std::min(query.find('&', pos), query.size());
    const std::string part = query.substr(pos, end - pos);
    if (part.rfind(name + "=", 0) == 0) return part.substr(name.size() + 1);
    pos = end + 1;
  }
  return {};
}

// The registry's routes, reduced to what the client needs, with real signature checks.
class FakeRegistry {
 public:
  explicit FakeRegistry(uv_loop_t* loop, std::shared_ptr<net::TlsContext> tls = nullptr)
      : scheme_(tls ? "https" : "http") {
    net::HttpServer::Handlers h;
    h.on_accept = [this](const net::PeerAddress&) {
      ++accepts;
      return true;
    };
    h.on_http_async = [this](net::ConnId id, const net::HttpRequest& req) {
      ++requests;
      last_query = req.query;
      last_content_type = std::string(req.Header("content-type").value_or(""));
      if (req.path == "/slow") return;  // never answered: the client times out
      (void)server_->Respond(id, Handle(req));
    };
    net::ServerOptions options;
    options.tls = std::move(tls);
    server_ = std::make_unique<net::HttpServer>(loop, std::move(options), std::move(h));
    REQUIRE(server_->Listen());
  }

  std::string url() const { return scheme_ + "://127.0.0.1:" + std::to_string(server_->port()); }

  int accepts = 0;
  int requests = 0;
  std::string garbage_amid;  // a prekey fetch for this AMID gets a malformed bundle
  std::string last_query;
  std::string last_content_type;

 private:
  struct Agent {
    Ed25519PublicKey signing;
    json record;
    std::optional<PrekeyUpload> prekeys;
  };

  // Checks the signature with `key`; returns the 401 response on failure.
  static std::optional<net::HttpResponse> CheckSig(const net::HttpRequest& req, const json& body,
                                                   const Ed25519PublicKey& key) {
    auto ok = VerifyRegistryRequest(req.method, req.path, body, key, WallNow());
    if (ok) return std::nullopt;
    return JsonReply(401, {{"error", "signature verification failed: " + ok.error().message}});
  }

  Agent* Find(const std::string& amid) {
    auto it = agents_.find(amid);
    return it == agents_.end() ? nullptr : &it->second;
  }

  net::HttpResponse Handle(const net::HttpRequest& req) {
    if (req.path.rfind("/fail/", 0) == 0) {
      const int status = std::stoi(req.path.substr(6));
      if (status == 502) return net::HttpResponse::Text(502, "bad gateway");
      return JsonReply(status, {{"error", "failing with " + std::to_string(status)}});
    }
    if (req.path == "/notjson") return net::HttpResponse::Text(200, "hello");
    if (req.path == "/empty") return net::HttpResponse::Text(204, "");
    if (req.method == "GET") return HandleGet(req);
    json body = json::parse(req.body, nullptr, false);
    if (body.is_discarded() || !body.is_object()) {
      return JsonReply(400, {{"error", "body is not a JSON object"}});
    }
    if (req.path == "/v1/registry/register") {
      auto key = ParseEd25519Key(body.value("signing_public_key", ""));
      if (!key) return JsonReply(400, {{"error", "bad signing_public_key"}});
      if (body.value("amid", "") != Amid::FromPublicKey(*key).str()) {
        return JsonReply(401, {{"error", "signature verification failed: AMID mismatch"}});
      }
      if (auto fail = CheckSig(req, body, *key)) return *fail;
      const std::string amid = body["amid"];
      if (agents_.contains(amid)) return JsonReply(409, {{"error", "AMID already registered"}});
      json record = body;
      record.erase("signature");
      record.erase("timestamp");
      record["tier"] = "anonymous";
      record["status"] = "offline";
      record["reputation_score"] = 0.5;
      if (!record.contains("capabilities")) record["capabilities"] = json::array();
      agents_[amid] = Agent{*key, record, std::nullopt};
      return JsonReply(201, {{"success", true}, {"amid", amid}, {"tier", "anonymous"}});
    }
    Agent* agent = Find(body.value("amid", ""));
    if (agent == nullptr) return JsonReply(404, {{"error", "Agent not found"}});
    if (auto fail = CheckSig(req, body, agent->signing)) return *fail;
    if (req.path == "/v1/registry/capabilities") {
      agent->record["capabilities"] = body["capabilities"];
      return JsonReply(200, {{"success", true}});
    }
    if (req.path == "/v1/registry/status") {
      agent->record["status"] = body["status"];
      return JsonReply(200, {{"success", true}});
    }
    if (req.path == "/v1/registry/prekeys") {
      auto upload = ParsePrekeyUploadJson(body);
      if (!upload) return JsonReply(400, {{"error", upload.error().ToString()}});
      if (!VerifyPrekeySignature(agent->signing, upload->signed_prekey,
                                 upload->signed_prekey_signature)) {
        return JsonReply(400, {{"error", "signed prekey signature does not verify"}});
      }
      const auto stored = upload->one_time_prekeys.size();
      const auto spk_id = upload->signed_prekey_id;
      agent->prekeys = std::move(*upload);
      return JsonReply(
          200,
          {{"success", true}, {"signed_prekey_id", spk_id}, {"one_time_prekeys_stored", stored}});
    }
    return JsonReply(404, {{"error", "no such route"}});
  }

  net::HttpResponse HandleGet(const net::HttpRequest& req) {
    if (req.path == "/v1/registry/lookup") {
      Agent* agent = Find(QueryParam(req.query, "amid"));
      if (agent == nullptr) return JsonReply(404, {{"error", "Agent not found"}});
      return JsonReply(200, agent->record);
    }
    if (req.path == "/v1/registry/search") {
      const std::string capability = QueryParam(req.query, "capability");
      json results = json::array();
      for (const auto& [amid, agent] : agents_) {
        for (const auto& c : agent.record["capabilities"]) {
          if (c == capability) results.push_back(agent.record);
        }
      }
      return JsonReply(200, {{"results", results},
                             {"total", results.size()},
                             {"limit", std::stoi(QueryParam(req.query, "limit"))},
                             {"offset", std::stoi(QueryParam(req.query, "offset"))}});
    }
    const std::string prefix = "/v1/registry/prekeys/";
    if (req.path.rfind(prefix, 0) == 0) {
      if (req.path.substr(prefix.size()) == garbage_amid) {
        return JsonReply(200, {{"identity_key", 5}});
      }
      Agent* agent = Find(req.path.substr(prefix.size()));
      if (agent == nullptr) return JsonReply(404, {{"error", "Agent not found"}});
      if (!agent->prekeys) {
        return JsonReply(404, {{"error", "No prekeys available for this agent"}});
      }
      auto& p = *agent->prekeys;
      PrekeyBundle bundle;
      bundle.identity_key =
          *ParseX25519Key(agent->record["exchange_public_key"].get<std::string>());
      bundle.signed_prekey_id = p.signed_prekey_id;
      bundle.signed_prekey = p.signed_prekey;
      bundle.signed_prekey_signature = p.signed_prekey_signature;
      if (!p.one_time_prekeys.empty()) {
        bundle.one_time_prekey = p.one_time_prekeys.front();
        p.one_time_prekeys.erase(p.one_time_prekeys.begin());
      }
      return JsonReply(200, BundleToJson(bundle));
    }
    return JsonReply(404, {{"error", "no such route"}});
  }

  std::string scheme_;
  std::unique_ptr<net::HttpServer> server_;
  std::map<std::string, Agent> agents_;
};

// Collects one callback's result.
struct Outcome {
  std::optional<Result<json>> result;
  int calls = 0;
  RegistryClient::JsonCallback cb() {
    return [this](Result<json> r) {
      ++calls;
      result = std::move(r);
    };
  }
  bool done() const { return calls > 0; }
  Code code() const { return result->error().code; }
};

}  // namespace

TEST_CASE("registry client: register, lookup, search, capabilities, status, prekeys",
          "[registry_client]") {
  TestLoop loop;
  {
    FakeRegistry registry(loop.get());
    RegistryClient client(loop.get(), {.base_url = registry.url() + "/"});
    const auto alice = Identity(1);
    const auto alice_x = Exchange(1);
    const Amid alice_amid = Amid::FromPublicKey(alice.public_key);

    Outcome reg;
    client.Register(alice, alice_x.public_key,
                    {{"display_name", "Alice"}, {"capabilities", {"travel/flights"}}}, reg.cb());
    CHECK_FALSE(reg.done());
    CHECK(client.in_flight() == 1);
    REQUIRE(loop.RunUntil([&] { return reg.done(); }));
    INFO((reg.result->has_value() ? "" : reg.result->error().ToString()));
    REQUIRE(reg.result->has_value());
    CHECK((**reg.result)["amid"] == alice_amid.str());
    CHECK(registry.last_content_type == "application/json");
    CHECK(client.in_flight() == 0);

    Outcome again;
    client.Register(alice, alice_x.public_key, json::object(), again.cb());
    REQUIRE(loop.RunUntil([&] { return again.done(); }));
    REQUIRE_FALSE(again.result->has_value());
    CHECK(again.code() == Code::kConflict);
    CHECK(again.result->error().message == "AMID already registered");

    Outcome look;
    client.Lookup(alice_amid, look.cb());
    REQUIRE(loop.RunUntil([&] { return look.done(); }));
    REQUIRE(look.result->has_value());
    CHECK((**look.result)["display_name"] == "Alice");
    CHECK((**look.result)["signing_public_key"] == FormatEd25519Key(alice.public_key));
    CHECK((**look.result)["exchange_public_key"] == FormatX25519Key(alice_x.public_key));

    Outcome caps, status;
    client.UpdateCapabilities(alice, {"travel/flights", "weather"}, caps.cb());
    client.SetStatus(alice, "online", status.cb());
    CHECK(client.in_flight() == 2);
    REQUIRE(loop.RunUntil([&] { return caps.done() && status.done(); }));
    REQUIRE(caps.result->has_value());
    REQUIRE(status.result->has_value());

    Outcome found;
    client.Search({.capability = "weather",
                   .tier_min = "anonymous",
                   .reputation_min = 0.25,
                   .status = "online",
                   .limit = 5,
                   .offset = 0},
                  found.cb());
    REQUIRE(loop.RunUntil([&] { return found.done(); }));
    REQUIRE(found.result->has_value());
    REQUIRE((**found.result)["results"].size() == 1);
    CHECK((**found.result)["results"][0]["amid"] == alice_amid.str());
    CHECK((**found.result)["results"][0]["status"] == "online");
    CHECK(registry.last_query ==
          "capability=weather&tier_min=anonymous&reputation_min=0.25&status=online&limit=5&"
          "offset=0");

    // Prekeys: upload a signed prekey and two one-time prekeys, fetch bundles until none left.
    DeterministicRng rng(99);
    auto spk = SignedPrekey::Generate(3, alice.secret, WallNow(), rng);
    auto opks = GenerateOneTimePrekeys(1, 2, rng);
    REQUIRE(opks);
    Outcome up;
    client.UploadPrekeys(alice, BuildPrekeyUploadBody(alice_amid, spk, *opks), up.cb());
    REQUIRE(loop.RunUntil([&] { return up.done(); }));
    INFO((up.result->has_value() ? "" : up.result->error().ToString()));
    REQUIRE(up.result->has_value());
    CHECK((**up.result)["one_time_prekeys_stored"] == 2);

    for (int i = 0; i < 3; ++i) {
      std::optional<Result<PrekeyBundle>> bundle;
      client.FetchBundle(alice_amid, [&](Result<PrekeyBundle> b) { bundle = std::move(b); });
      REQUIRE(loop.RunUntil([&] { return bundle.has_value(); }));
      REQUIRE(bundle->has_value());
      CHECK((*bundle)->identity_key == alice_x.public_key);
      CHECK((*bundle)->signed_prekey_id == 3);
      CHECK(VerifyPrekeySignature(alice.public_key, (*bundle)->signed_prekey,
                                  (*bundle)->signed_prekey_signature));
      if (i < 2) {
        REQUIRE((*bundle)->one_time_prekey.has_value());
        CHECK((*bundle)->one_time_prekey->id == static_cast<std::uint32_t>(i + 1));
      } else {
        CHECK_FALSE((*bundle)->one_time_prekey.has_value());
      }
    }

    // Keep-alive: sequential requests reuse one connection; only the two concurrent ones
    // (capabilities + status) needed a second.
    CHECK(registry.accepts == 2);
    CHECK(registry.requests == 10);
  }
}

TEST_CASE("registry client maps HTTP errors to error codes", "[registry_client]") {
  TestLoop loop;
  {
    FakeRegistry registry(loop.get());
    RegistryClient client(loop.get(), {.base_url = registry.url()});
    const std::vector<std::pair<int, Code>> table = {
        {400, Code::kInvalidArgument}, {403, Code::kPermissionDenied}, {404, Code::kNotFound},
        {409, Code::kConflict},        {413, Code::kLimitExceeded},    {429, Code::kLimitExceeded},
        {500, Code::kUnavailable},     {503, Code::kUnavailable},      {418, Code::kInternal}};
    for (const auto& [status, code] : table) {
      Outcome o;
      client.Request("GET", "/fail/" + std::to_string(status), nullptr, nullptr, o.cb());
      REQUIRE(loop.RunUntil([&] { return o.done(); }));
      INFO(status);
      REQUIRE_FALSE(o.result->has_value());
      CHECK(o.code() == code);
      CHECK(o.result->error().message == "failing with " + std::to_string(status));
    }
    // No JSON error text: the message names the status.
    Outcome bad_gateway;
    client.Request("GET", "/fail/502", nullptr, nullptr, bad_gateway.cb());
    REQUIRE(loop.RunUntil([&] { return bad_gateway.done(); }));
    CHECK(bad_gateway.code() == Code::kUnavailable);
    CHECK(bad_gateway.result->error().message == "HTTP 502");

    // Lookup of an unknown agent.
    Outcome missing;
    client.Lookup(Amid::FromPublicKey(Identity(5).public_key), missing.cb());
    REQUIRE(loop.RunUntil([&] { return missing.done(); }));
    CHECK(missing.code() == Code::kNotFound);
    CHECK(missing.result->error().message == "Agent not found");

    // A 2xx that is not JSON is corrupt; an empty 2xx body is an empty object.
    Outcome not_json, empty;
    client.Request("GET", "/notjson", nullptr, nullptr, not_json.cb());
    client.Request("GET", "/empty", nullptr, nullptr, empty.cb());
    REQUIRE(loop.RunUntil([&] { return not_json.done() && empty.done(); }));
    CHECK(not_json.code() == Code::kCorrupt);
    REQUIRE(empty.result->has_value());
    CHECK(**empty.result == json::object());

    // Bundles: unknown agent, and one the core cannot parse.
    std::optional<Result<PrekeyBundle>> unknown, garbage;
    client.FetchBundle(Amid::FromPublicKey(Identity(5).public_key),
                       [&](Result<PrekeyBundle> b) { unknown = std::move(b); });
    registry.garbage_amid = Amid::FromPublicKey(Identity(6).public_key).str();
    client.FetchBundle(Amid::FromPublicKey(Identity(6).public_key),
                       [&](Result<PrekeyBundle> b) { garbage = std::move(b); });
    REQUIRE(loop.RunUntil([&] { return unknown.has_value() && garbage.has_value(); }));
    CHECK(unknown->error().code == Code::kNotFound);
    CHECK(garbage->error().code == Code::kCorrupt);
  }
}

TEST_CASE("registry client: a stale signature is refused with auth_failed", "[registry_client]") {
  TestLoop loop;
  {
    FakeRegistry registry(loop.get());
    RegistryClient skewed(loop.get(), {.base_url = registry.url(),
                                       .now = [] { return WallNow() - 3600 * kNanosPerSecond; }});
    Outcome reg;
    skewed.Register(Identity(7), Exchange(7).public_key, json::object(), reg.cb());
    REQUIRE(loop.RunUntil([&] { return reg.done(); }));
    REQUIRE_FALSE(reg.result->has_value());
    CHECK(reg.code() == Code::kAuthFailed);
    CHECK(reg.result->error().message.rfind("signature verification failed", 0) == 0);

    // Signed by a key that is not the registered one.
    RegistryClient client(loop.get(), {.base_url = registry.url()});
    Outcome ok;
    client.Register(Identity(8), Exchange(8).public_key, json::object(), ok.cb());
    REQUIRE(loop.RunUntil([&] { return ok.done(); }));
    REQUIRE(ok.result->has_value());
    json body = {{"amid", Amid::FromPublicKey(Identity(8).public_key).str()}, {"status", "away"}};
    const auto mallory = Identity(9);
    Outcome forged;
    client.Request("POST", "/v1/registry/status", &body, &mallory, forged.cb());
    REQUIRE(loop.RunUntil([&] { return forged.done(); }));
    CHECK(forged.code() == Code::kAuthFailed);
  }
}

TEST_CASE("registry client: connection refused is unavailable, a silent server times out",
          "[registry_client]") {
  TestLoop loop;
  {
    std::string dead_url;
    {
      FakeRegistry gone(loop.get());
      dead_url = gone.url();
    }
    loop.RunFor(20ms);
    RegistryClient dead(loop.get(), {.base_url = dead_url});
    Outcome refused;
    dead.Lookup(Amid::FromPublicKey(Identity(1).public_key), refused.cb());
    REQUIRE(loop.RunUntil([&] { return refused.done(); }));
    CHECK(refused.code() == Code::kUnavailable);

    FakeRegistry registry(loop.get());
    RegistryClient client(loop.get(), {.base_url = registry.url(), .timeout_ms = 300});
    Outcome slow;
    client.Request("GET", "/slow", nullptr, nullptr, slow.cb());
    REQUIRE(loop.RunUntil([&] { return slow.done(); }, 5s));
    CHECK(slow.code() == Code::kTimeout);
    CHECK(slow.calls == 1);
  }
}

TEST_CASE("registry client: argument errors are answered from the loop, exactly once",
          "[registry_client]") {
  TestLoop loop;
  {
    RegistryClient client(loop.get(), {.base_url = "http://127.0.0.1:1"});
    Outcome no_slash, get_with_body, not_object, no_scheme;
    json body = {{"x", 1}};
    json array = json::array();
    client.Request("GET", "v1/registry/search", nullptr, nullptr, no_slash.cb());
    client.Request("GET", "/v1/x", &body, nullptr, get_with_body.cb());
    client.Request("POST", "/v1/x", &array, nullptr, not_object.cb());
    CHECK_FALSE(no_slash.done());
    CHECK(client.in_flight() == 3);
    REQUIRE(loop.RunUntil(
        [&] { return no_slash.done() && get_with_body.done() && not_object.done(); }));
    CHECK(no_slash.code() == Code::kInvalidArgument);
    CHECK(get_with_body.code() == Code::kInvalidArgument);
    CHECK(not_object.code() == Code::kInvalidArgument);

    RegistryClient ftp(loop.get(), {.base_url = "ftp://127.0.0.1:1"});
    ftp.Request("GET", "/x", nullptr, nullptr, no_scheme.cb());
    REQUIRE(loop.RunUntil([&] { return no_scheme.done(); }));
    CHECK(no_scheme.code() == Code::kInvalidArgument);
    loop.RunFor(50ms);
    CHECK(no_slash.calls == 1);
    CHECK(no_scheme.calls == 1);
  }
}

TEST_CASE("registry client: destroying the client cancels callbacks, also from a callback",
          "[registry_client]") {
  TestLoop loop;
  {
    FakeRegistry registry(loop.get());
    Outcome never;
    {
      RegistryClient client(loop.get(), {.base_url = registry.url()});
      client.Request("GET", "/slow", nullptr, nullptr, never.cb());
      loop.RunUntil([&] { return registry.requests == 1; });
      client.Request("GET", "v1/bad", nullptr, nullptr, never.cb());  // deferred error
      CHECK(client.in_flight() == 2);
    }
    loop.RunFor(100ms);
    CHECK(never.calls == 0);

    auto client = std::make_unique<RegistryClient>(
        loop.get(), RegistryClientOptions{.base_url = registry.url()});
    int first = 0;
    Outcome second;
    client->Request("GET", "/fail/404", nullptr, nullptr, [&](Result<json>) {
      ++first;
      client.reset();
    });
    client->Request("GET", "/fail/404", nullptr, nullptr, second.cb());
    REQUIRE(loop.RunUntil([&] { return first == 1; }));
    loop.RunFor(100ms);
    CHECK(first == 1);
    CHECK(second.calls <= 1);  // either answered before the first, or never
  }
}

TEST_CASE("registry client over https verifies the server certificate", "[registry_client]") {
  TempDir certs;
  const auto cert = certs.path() / "cert.pem";
  const auto key = certs.path() / "key.pem";
  const auto other_cert = certs.path() / "other.pem";
  const auto other_key = certs.path() / "other-key.pem";
  auto make = [](const std::filesystem::path& c, const std::filesystem::path& k) {
    const std::string cmd =
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
        "-days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout " +
        k.string() + " -out " + c.string() + " 2>/dev/null";
    return std::system(cmd.c_str()) == 0;
  };
  REQUIRE(make(cert, key));
  REQUIRE(make(other_cert, other_key));
  auto tls = net::TlsContext::CreateServer(cert.string(), key.string());
  REQUIRE(tls);
  TestLoop loop;
  {
    FakeRegistry registry(loop.get(), *tls);
    RegistryClient good(loop.get(), {.base_url = registry.url(), .ca_file = cert.string()});
    Outcome reg;
    good.Register(Identity(20), Exchange(20).public_key, json::object(), reg.cb());
    REQUIRE(loop.RunUntil([&] { return reg.done(); }));
    INFO((reg.result->has_value() ? "" : reg.result->error().ToString()));
    REQUIRE(reg.result->has_value());

    RegistryClient wrong(loop.get(), {.base_url = registry.url(), .ca_file = other_cert.string()});
    Outcome refused;
    wrong.Lookup(Amid::FromPublicKey(Identity(20).public_key), refused.cb());
    REQUIRE(loop.RunUntil([&] { return refused.done(); }));
    REQUIRE_FALSE(refused.result->has_value());
    INFO(refused.result->error().ToString());
    CHECK(refused.code() == Code::kAuthFailed);

    RegistryClient system_store(loop.get(), {.base_url = registry.url()});
    Outcome untrusted;
    system_store.Lookup(Amid::FromPublicKey(Identity(20).public_key), untrusted.cb());
    REQUIRE(loop.RunUntil([&] { return untrusted.done(); }));
    REQUIRE_FALSE(untrusted.result->has_value());
    CHECK(untrusted.code() == Code::kAuthFailed);
  }
}
