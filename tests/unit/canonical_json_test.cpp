#include <catch2/catch.hpp>

#include <bit>
#include <cstdint>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include <nlohmann/json.hpp>

#include "agentmesh/core/canonical_json.hpp"
#include "vectors.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

using agentmesh::test_vectors::LoadVectors;

json Parse(const std::string& text) {
  json value = json::parse(text, nullptr, false);
  REQUIRE_FALSE(value.is_discarded());
  return value;
}

std::string Canonical(const json& value) {
  auto r = CanonicalJson(value);
  INFO((r ? std::string() : r.error().ToString()));
  REQUIRE(r);
  return *r;
}

void ExpectRejected(const json& value) {
  auto r = CanonicalJson(value);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Code::kInvalidArgument);
}

double FromBits(const std::string& hex) {
  return std::bit_cast<double>(static_cast<std::uint64_t>(std::stoull(hex, nullptr, 16)));
}

constexpr std::int64_t kTwo53 = std::int64_t{1} << 53;

}  // namespace

TEST_CASE("RFC 8785 3.2.2 example", "[jcs]") {
  const json v = LoadVectors("rfc8785.json")["example_3_2_2"];
  CHECK(Canonical(Parse(v["input"].get<std::string>())) == v["expected"].get<std::string>());
}

TEST_CASE("RFC 8785 3.2.3 sorts members by UTF-16 code units", "[jcs]") {
  const json v = LoadVectors("rfc8785.json")["sorting_3_2_3"];
  const std::string out = Canonical(Parse(v["input"].get<std::string>()));
  CHECK(out == v["expected"].get<std::string>());
  // The emitted member names, in order, are the RFC's list.
  const json reparsed = Parse(out);
  std::size_t previous = 0;
  for (const json& key : v["expected_key_order"]) {
    const std::string quoted = json(key.get<std::string>()).dump();
    const std::size_t at = out.find(quoted + ":");
    REQUIRE(at != std::string::npos);
    CHECK(at >= previous);
    previous = at;
  }
  CHECK(reparsed.size() == 7);
}

TEST_CASE("RFC 8785 Appendix B number serialization", "[jcs]") {
  const json doc = LoadVectors("rfc8785.json");
  REQUIRE(doc["numbers"].size() >= 15);
  for (const json& row : doc["numbers"]) {
    const std::string bits = row["ieee754"].get<std::string>();
    INFO(bits << " -> " << row["expected"].get<std::string>());
    CHECK(Canonical(json(FromBits(bits))) == row["expected"].get<std::string>());
  }
  for (const json& row : doc["non_finite"]) {
    INFO(row.get<std::string>());
    ExpectRejected(json(FromBits(row.get<std::string>())));
  }
}

TEST_CASE("JCS numbers: ES exponent thresholds", "[jcs]") {
  CHECK(Canonical(json(-0.0)) == "0");
  CHECK(Canonical(json(1e21)) == "1e+21");
  CHECK(Canonical(json(1e20)) == "100000000000000000000");
  CHECK(Canonical(json(1e-7)) == "1e-7");
  CHECK(Canonical(json(1e-6)) == "0.000001");
  CHECK(Canonical(json(123456789012345680000.0)) == "123456789012345680000");
  CHECK(Canonical(json(-1.5e-7)) == "-1.5e-7");
  CHECK(Canonical(json(9007199254740992.0)) == "9007199254740992");
  CHECK(Canonical(Parse("[1.0, -2.50, 1E2, 0.1]")) == "[1,-2.5,100,0.1]");
}

TEST_CASE("JCS integers are limited to the exact IEEE-754 range", "[jcs]") {
  CHECK(Canonical(json(kTwo53)) == "9007199254740992");
  CHECK(Canonical(json(-kTwo53)) == "-9007199254740992");
  CHECK(Canonical(json(static_cast<std::uint64_t>(kTwo53))) == "9007199254740992");
  CHECK(Canonical(json(std::int64_t{-42})) == "-42");
  CHECK(Canonical(json(std::uint64_t{0})) == "0");
  ExpectRejected(json(kTwo53 + 1));
  ExpectRejected(json(-kTwo53 - 1));
  ExpectRejected(json(static_cast<std::uint64_t>(kTwo53) + 1));
  ExpectRejected(json(std::numeric_limits<std::uint64_t>::max()));
  ExpectRejected(json(std::numeric_limits<std::int64_t>::min()));
  ExpectRejected(Parse("9007199254740993"));
  ExpectRejected(Parse("{\"a\":[1,-9007199254740993]}"));
}

TEST_CASE("JCS rejects NaN and Infinity", "[jcs]") {
  ExpectRejected(json(std::numeric_limits<double>::quiet_NaN()));
  ExpectRejected(json(std::numeric_limits<double>::infinity()));
  ExpectRejected(json(-std::numeric_limits<double>::infinity()));
  ExpectRejected(json::array({1, std::numeric_limits<double>::infinity()}));
}

TEST_CASE("JCS rejects invalid UTF-8 in values and names", "[jcs]") {
  const std::string bad[] = {
      "\xff",              // never valid
      "\x80",              // lone continuation byte
      "\xc0\xaf",          // overlong '/'
      "\xe0\x80\xaf",      // overlong, 3 bytes
      "\xed\xa0\x80",      // UTF-16 surrogate D800
      "\xf4\x90\x80\x80",  // above U+10FFFF
      "\xe2\x82",          // truncated
      "ok\xe2\x82",        // truncated at the end
  };
  for (std::size_t i = 0; i < std::size(bad); ++i) {
    INFO("case " << i);
    const std::string& s = bad[i];
    ExpectRejected(json(s));
    ExpectRejected(json::object({{s, 1}}));
    ExpectRejected(json::array({"fine", s}));
  }
  CHECK(Canonical(json("\xf0\x9f\x98\x80")) == "\"\xf0\x9f\x98\x80\"");  // U+1F600 is fine
  CHECK(Canonical(json("\xf4\x8f\xbf\xbf")) == "\"\xf4\x8f\xbf\xbf\"");  // U+10FFFF is fine
}

TEST_CASE("JCS string escaping", "[jcs]") {
  CHECK(Canonical(json(std::string("\x00\x01\x1f\x7f", 4))) == "\"\\u0000\\u0001\\u001f\x7f\"");
  CHECK(Canonical(json("\b\f\n\r\t\"\\/")) == "\"\\b\\f\\n\\r\\t\\\"\\\\/\"");
  CHECK(Canonical(json("\xe2\x82\xac")) == "\"\xe2\x82\xac\"");
}

TEST_CASE("JCS structure: whitespace, nesting, empty containers", "[jcs]") {
  CHECK(Canonical(Parse(
            " { \"b\" : [ ] , \"a\" : { } , \"c\" : [ { \"z\" : null , \"y\" : true } ] } ")) ==
        R"({"a":{},"b":[],"c":[{"y":true,"z":null}]})");
  CHECK(Canonical(json()) == "null");
  CHECK(Canonical(json("")) == "\"\"");
  ExpectRejected(json::binary({1, 2, 3}));
}

TEST_CASE("JCS errors name the offending field", "[jcs]") {
  auto r = CanonicalJson(Parse(R"({"intent":{"tags":["a", 18446744073709551615]}})"));
  REQUIRE_FALSE(r);
  CHECK(r.error().field == "intent.tags[1]");
}

TEST_CASE("CanonicalJsonWithout drops one top-level member", "[jcs]") {
  const json signed_object =
      Parse(R"({"b":2,"signature":"abc","a":{"signature":"nested stays"},"c":[3]})");
  auto r = CanonicalJsonWithout(signed_object, "signature");
  REQUIRE(r);
  CHECK(*r == R"({"a":{"signature":"nested stays"},"b":2,"c":[3]})");
  CHECK(*CanonicalJsonWithout(signed_object, "absent") == Canonical(signed_object));
  CHECK(*CanonicalJsonWithout(Parse(R"({"signature":1})"), "signature") == "{}");
  CHECK(signed_object.contains("signature"));  // input untouched

  for (const json& not_object : {json::array({1}), json("x"), json(), json(1)}) {
    auto bad = CanonicalJsonWithout(not_object, "signature");
    REQUIRE_FALSE(bad);
    CHECK(bad.error().code == Code::kInvalidArgument);
  }
  const json with_nan = {{"signature", 1}, {"n", std::numeric_limits<double>::quiet_NaN()}};
  auto nested_bad = CanonicalJsonWithout(with_nan, "signature");
  REQUIRE_FALSE(nested_bad);
  CHECK(nested_bad.error().field == "n");
}

TEST_CASE("JCS output is a fixed point", "[jcs]") {
  const json doc = LoadVectors("rfc8785.json");
  for (const char* key : {"example_3_2_2", "sorting_3_2_3"}) {
    const std::string once = Canonical(Parse(doc[key]["input"].get<std::string>()));
    CHECK(Canonical(Parse(once)) == once);
  }
}
