#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/registry_auth.hpp"
#include "vectors.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

Ed25519KeyPair KeyFromSeed(const std::string& b64) {
  auto bytes = Base64Decode(b64);
  REQUIRE(bytes);
  Ed25519Seed seed;
  REQUIRE(Ed25519Seed::FromBytes(*bytes, seed));
  return Ed25519KeyPair::FromSeed(seed);
}

UnixNanos At(const std::string& text) {
  auto t = ParseRfc3339(text);
  REQUIRE(t);
  return *t;
}

}  // namespace

TEST_CASE("registry request vectors: signing input and signature", "[registry_auth]") {
  auto doc = test_vectors::LoadVectors("registry_request.json");
  for (const auto& v : doc["vectors"]) {
    auto key = KeyFromSeed(v["seed"]);
    json body = v["body"];
    auto input = RegistryRequestSigningInput(v["method"].get<std::string>(),
                                             v["path"].get<std::string>(), body);
    REQUIRE(input);
    CHECK(*input == v["signing_input"].get<std::string>());

    REQUIRE(SignRegistryRequest(v["method"].get<std::string>(), v["path"].get<std::string>(), body,
                                key.secret, 0, /*keep_timestamp=*/true));
    CHECK(body["signature"] == v["signature"]);
    const UnixNanos now = At(body["timestamp"].get<std::string>());
    CHECK(VerifyRegistryRequest(v["method"].get<std::string>(), v["path"].get<std::string>(), body,
                                key.public_key, now));
  }
}

TEST_CASE("registry request signatures cover method, path, body and time", "[registry_auth]") {
  auto key = KeyFromSeed("pjHmygmU0ZQD3QWvkb0yJRvPDh8x2z5OW3h1Ibm0/vM=");
  const UnixNanos now = At("2026-11-24T10:00:00Z");
  json body = {{"amid", "jZ6CK1dpcZD4oPYScUJvifP7BtJ"}, {"capabilities", {"travel/flights"}}};
  REQUIRE(SignRegistryRequest("POST", "/v1/registry/capabilities", body, key.secret, now));
  REQUIRE(VerifyRegistryRequest("POST", "/v1/registry/capabilities", body, key.public_key, now));

  SECTION("another path") {
    auto r = VerifyRegistryRequest("POST", "/v1/registry/status", body, key.public_key, now);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kAuthFailed);
  }
  SECTION("another method") {
    auto r = VerifyRegistryRequest("PUT", "/v1/registry/capabilities", body, key.public_key, now);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kAuthFailed);
  }
  SECTION("a changed body member") {
    body["capabilities"].push_back("admin/*");
    auto r = VerifyRegistryRequest("POST", "/v1/registry/capabilities", body, key.public_key, now);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kAuthFailed);
  }
  SECTION("another key") {
    auto other = KeyFromSeed("VBgE2WW33wRZAPykVqR2eCV9T77YRCZEM2oOtYWiNiA=");
    auto r =
        VerifyRegistryRequest("POST", "/v1/registry/capabilities", body, other.public_key, now);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kAuthFailed);
  }
  SECTION("stale and future timestamps") {
    auto stale = VerifyRegistryRequest("POST", "/v1/registry/capabilities", body, key.public_key,
                                       now + 301 * kNanosPerSecond);
    REQUIRE_FALSE(stale);
    CHECK(stale.error().code == Code::kReplay);
    auto future = VerifyRegistryRequest("POST", "/v1/registry/capabilities", body, key.public_key,
                                        now - 61 * kNanosPerSecond);
    REQUIRE_FALSE(future);
    CHECK(future.error().code == Code::kReplay);
  }
  SECTION("missing or malformed members") {
    json no_sig = body;
    no_sig.erase("signature");
    auto r1 = VerifyRegistryRequest("POST", "/x", no_sig, key.public_key, now);
    REQUIRE_FALSE(r1);
    CHECK(r1.error().field == "signature");
    json no_ts = body;
    no_ts.erase("timestamp");
    auto r2 = VerifyRegistryRequest("POST", "/x", no_ts, key.public_key, now);
    REQUIRE_FALSE(r2);
    CHECK(r2.error().field == "timestamp");
    json bad_ts = body;
    bad_ts["timestamp"] = "yesterday";
    auto r3 = VerifyRegistryRequest("POST", "/x", bad_ts, key.public_key, now);
    REQUIRE_FALSE(r3);
    CHECK(r3.error().field == "timestamp");
    json bad_sig = body;
    bad_sig["signature"] = "not base64!";
    auto r4 = VerifyRegistryRequest("POST", "/x", bad_sig, key.public_key, now);
    REQUIRE_FALSE(r4);
    CHECK(r4.error().code == Code::kInvalidArgument);
    auto r5 = VerifyRegistryRequest("POST", "/x", json::array(), key.public_key, now);
    REQUIRE_FALSE(r5);
  }
}
