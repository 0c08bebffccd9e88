// RegistryClient against the real amesh-registry binary (compiled only when the build has the
// amesh-registry target): the daemon's registration, discovery and prekey flow end to end.
#ifdef AMESH_REGISTRY_BIN

#include <catch2/catch.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agentmesh/core/prekey.hpp"
#include "loop_helpers.hpp"
#include "process.hpp"
#include "registry_client.hpp"

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

class RegistryProcess {
 public:
  RegistryProcess() {
    std::vector<std::string> argv = {AMESH_REGISTRY_BIN,
                                     "--listen",
                                     "127.0.0.1:0",
                                     "--db",
                                     "sqlite:" + (dir_.path() / "registry.db").string(),
                                     "--state-dir",
                                     dir_.path().string()};
    REQUIRE(process_.Start(argv, dir_.path() / "registry.log"));
    auto line = process_.WaitForLine("listening on port", 10s);
    INFO(process_.StderrLog());
    REQUIRE(line.has_value());
    port_ = static_cast<std::uint16_t>(std::stoi(line->substr(line->rfind(' ') + 1)));
  }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  std::string log() const { return process_.StderrLog(); }

 private:
  TempDir dir_;
  ChildProcess process_;
  std::uint16_t port_ = 0;
};

struct Outcome {
  std::optional<Result<json>> result;
  RegistryClient::JsonCallback cb() {
    return [this](Result<json> r) { result = std::move(r); };
  }
  bool done() const { return result.has_value(); }
  std::string text() const {
    return !result               ? "(pending)"
           : result->has_value() ? (*result)->dump()
                                 : result->error().ToString();
  }
};

}  // namespace

TEST_CASE("registry client against amesh-registry: register, discover, prekeys",
          "[registry_client][integration]") {
  RegistryProcess registry;
  TestLoop loop;
  {
    RegistryClient client(loop.get(), {.base_url = registry.url()});
    const auto alice = Identity(101);
    const auto alice_x = Exchange(101);
    const Amid alice_amid = Amid::FromPublicKey(alice.public_key);
    INFO(registry.log());

    Outcome reg;
    client.Register(alice, alice_x.public_key,
                    {{"display_name", "Alice"},
                     {"capabilities", {"travel/flights"}},
                     {"relay_endpoint", "ws://127.0.0.1:8765/v1/connect"}},
                    reg.cb());
    REQUIRE(loop.RunUntil([&] { return reg.done(); }));
    INFO(reg.text());
    REQUIRE(reg.result->has_value());

    Outcome again;
    client.Register(alice, alice_x.public_key, json::object(), again.cb());
    REQUIRE(loop.RunUntil([&] { return again.done(); }));
    INFO(again.text());
    REQUIRE_FALSE(again.result->has_value());
    CHECK(again.result->error().code == Code::kConflict);

    Outcome look;
    client.Lookup(alice_amid, look.cb());
    REQUIRE(loop.RunUntil([&] { return look.done(); }));
    INFO(look.text());
    REQUIRE(look.result->has_value());
    CHECK((**look.result)["amid"] == alice_amid.str());
    CHECK((**look.result)["display_name"] == "Alice");

    Outcome missing;
    client.Lookup(Amid::FromPublicKey(Identity(102).public_key), missing.cb());
    REQUIRE(loop.RunUntil([&] { return missing.done(); }));
    INFO(missing.text());
    REQUIRE_FALSE(missing.result->has_value());
    CHECK(missing.result->error().code == Code::kNotFound);

    Outcome caps, status;
    client.UpdateCapabilities(alice, {"travel/flights", "weather/forecast"}, caps.cb());
    REQUIRE(loop.RunUntil([&] { return caps.done(); }));
    INFO(caps.text());
    REQUIRE(caps.result->has_value());
    client.SetStatus(alice, "online", status.cb());
    REQUIRE(loop.RunUntil([&] { return status.done(); }));
    INFO(status.text());
    REQUIRE(status.result->has_value());

    Outcome found;
    client.Search({.capability = "weather/forecast", .limit = 5}, found.cb());
    REQUIRE(loop.RunUntil([&] { return found.done(); }));
    INFO(found.text());
    REQUIRE(found.result->has_value());
    REQUIRE((**found.result)["results"].is_array());
    REQUIRE((**found.result)["results"].size() == 1);
    CHECK((**found.result)["results"][0]["amid"] == alice_amid.str());

    // A request signed by another key is refused.
    const auto mallory = Identity(103);
    json body = {{"amid", alice_amid.str()}, {"status", "away"}};
    Outcome forged;
    client.Request("POST", "/v1/registry/status", &body, &mallory, forged.cb());
    REQUIRE(loop.RunUntil([&] { return forged.done(); }));
    INFO(forged.text());
    REQUIRE_FALSE(forged.result->has_value());
    CHECK(forged.result->error().code == Code::kAuthFailed);

    DeterministicRng rng(7);
    auto spk = SignedPrekey::Generate(1, alice.secret, WallNow(), rng);
    auto opks = GenerateOneTimePrekeys(1, 2, rng);
    REQUIRE(opks);
    Outcome up;
    client.UploadPrekeys(alice, BuildPrekeyUploadBody(alice_amid, spk, *opks), up.cb());
    REQUIRE(loop.RunUntil([&] { return up.done(); }));
    INFO(up.text());
    REQUIRE(up.result->has_value());

    std::vector<std::uint32_t> opk_ids;
    for (int i = 0; i < 3; ++i) {
      std::optional<Result<PrekeyBundle>> bundle;
      client.FetchBundle(alice_amid, [&](Result<PrekeyBundle> b) { bundle = std::move(b); });
      REQUIRE(loop.RunUntil([&] { return bundle.has_value(); }));
      INFO((bundle->has_value() ? "" : bundle->error().ToString()));
      REQUIRE(bundle->has_value());
      CHECK((*bundle)->identity_key == alice_x.public_key);
      CHECK((*bundle)->signed_prekey == spk.pair.public_key);
      CHECK(VerifyPrekeySignature(alice.public_key, (*bundle)->signed_prekey,
                                  (*bundle)->signed_prekey_signature));
      if ((*bundle)->one_time_prekey) opk_ids.push_back((*bundle)->one_time_prekey->id);
    }
    CHECK(opk_ids == std::vector<std::uint32_t>{1, 2});  // consumed once each, then none left
  }
}

#endif  // AMESH_REGISTRY_BIN
