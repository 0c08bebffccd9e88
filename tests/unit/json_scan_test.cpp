#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "agentmesh/core/json_scan.hpp"

using namespace agentmesh;

TEST_CASE("ScanObject records raw member slices", "[jsonscan]") {
  const std::string text =
      R"({"type":"send","to":"abc","encrypted_payload":"QUJD\/+==","n":12,"f":false,)"
      R"("o":{"a":[1,2,{"b":null}]},"e":"x\u00e9\n"})";
  auto scanned = ScanObject(text);
  REQUIRE(scanned);
  CHECK(scanned->members().size() == 7);
  const ScannedMember* payload = scanned->Find("encrypted_payload");
  REQUIRE(payload != nullptr);
  CHECK(payload->raw == R"("QUJD\/+==")");
  CHECK(payload->kind == JsonKind::kString);
  CHECK(scanned->Find("o")->raw == R"({"a":[1,2,{"b":null}]})");
  CHECK(**scanned->GetString("to") == "abc");
  CHECK(**scanned->GetString("encrypted_payload") == "QUJD/+==");
  CHECK(**scanned->GetString("e") == "x\xc3\xa9\n");
  CHECK(**scanned->GetUint("n") == 12);
  CHECK(**scanned->GetBool("f") == false);
  CHECK_FALSE(scanned->GetString("missing")->has_value());
}

TEST_CASE("ScanObject type accessors name the member on mismatch", "[jsonscan]") {
  auto scanned = ScanObject(R"({"to":5,"n":"x","b":1,"neg":-1,"frac":1.5,"big":9007199254740993})");
  REQUIRE(scanned);
  auto s = scanned->GetString("to");
  REQUIRE_FALSE(s);
  CHECK(s.error().field == "to");
  CHECK_FALSE(scanned->GetUint("n"));
  CHECK_FALSE(scanned->GetBool("b"));
  CHECK_FALSE(scanned->GetUint("neg"));
  CHECK_FALSE(scanned->GetUint("frac"));
  CHECK_FALSE(scanned->GetUint("big"));
}

TEST_CASE("ScanObject agrees with nlohmann on valid documents", "[jsonscan]") {
  const char* docs[] = {R"({})", R"( { "a" : 1 } )",
                        R"({"a":-0.5e-3,"b":[],"c":{},"d":"\ud83d\ude00"})",
                        R"({"a":"\"\\\/\b\f\n\r\t"})", R"({"a":true,"a":false})"};
  for (const char* doc : docs) {
    INFO(doc);
    auto scanned = ScanObject(doc);
    REQUIRE(scanned);
    auto parsed = nlohmann::json::parse(doc, nullptr, false);
    REQUIRE_FALSE(parsed.is_discarded());
    for (const auto& member : scanned->members()) {
      auto value = nlohmann::json::parse(member.raw, nullptr, false);
      REQUIRE_FALSE(value.is_discarded());
    }
  }
  // Duplicate names: last one wins, as in nlohmann.
  auto dup = ScanObject(R"({"a":true,"a":false})");
  CHECK(**dup->GetBool("a") == false);
}

TEST_CASE("ScanObject rejects malformed and hostile input", "[jsonscan]") {
  const std::string bad[] = {
      "",
      "[]",
      "\"str\"",
      "{",
      "{\"a\"}",
      "{\"a\":}",
      "{\"a\":1,}",
      "{\"a\":01}",
      "{\"a\":1.}",
      "{\"a\":.5}",
      "{\"a\":1e}",
      "{\"a\":tru}",
      "{\"a\":nul}",
      "{\"a\":\"x}",
      "{\"a\":\"\x01\"}",
      "{\"a\":\"\\x\"}",
      "{\"a\":\"\\u12\"}",
      "{\"a\":\"\\ud800\"}",
      "{\"a\":\"\\udc00\"}",
      "{\"a\":\"\\ud800\\u0041\"}",
      "{\"a\":\"\xff\"}",
      "{\"a\":\"\xc0\xaf\"}",
      "{\"a\":\"\xed\xa0\x80\"}",
      "{\"a\":\"\xe2\x82\"}",
      "{\"a\":1} x",
      "{\"a\":1}{}",
      "{'a':1}",
      "{\"a\":[1 2]}",
      "{\"a\":{\"b\" 1}}",
  };
  for (const auto& doc : bad) {
    INFO(doc);
    auto scanned = ScanObject(doc);
    REQUIRE_FALSE(scanned);
    CHECK(scanned.error().code == Code::kInvalidArgument);
    CHECK(nlohmann::json::parse(doc, nullptr, false).is_discarded() ==
          (doc != "[]" && doc != "\"str\""));
  }
}

TEST_CASE("ScanObject enforces depth and member limits", "[jsonscan]") {
  std::string deep = "{\"a\":";
  for (int i = 0; i < 100; ++i) deep += "[";
  for (int i = 0; i < 100; ++i) deep += "]";
  deep += "}";
  auto r = ScanObject(deep);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Code::kLimitExceeded);

  std::string many = "{";
  for (int i = 0; i < 100; ++i) many += (i ? ",\"k" : "\"k") + std::to_string(i) + "\":1";
  many += "}";
  auto m = ScanObject(many);
  REQUIRE_FALSE(m);
  CHECK(m.error().code == Code::kLimitExceeded);
  CHECK(ScanObject(many, ScanLimits{.max_depth = 16, .max_members = 200}));
}

TEST_CASE("AppendJsonString output round trips through the scanner", "[jsonscan]") {
  const std::string samples[] = {"plain", "quote\"back\\slash", std::string("ctl\x01\x1f\n\t", 7),
                                 "utf8 \xc3\xa9 \xf0\x9f\x98\x80"};
  for (const auto& s : samples) {
    std::string doc = "{\"v\":";
    AppendJsonString(doc, s);
    doc += "}";
    auto scanned = ScanObject(doc);
    REQUIRE(scanned);
    CHECK(**scanned->GetString("v") == s);
    CHECK(nlohmann::json::parse(doc)["v"] == s);
  }
}

TEST_CASE("json_scan finds every special byte whatever its offset in a long string", "[jsonscan]") {
  for (std::size_t at = 0; at < 24; ++at) {
    INFO("offset " << at);
    std::string body(24, 'a');
    std::string text;  // the scanned object's views point into it
    const auto scan = [&](const std::string& b) {
      text = "{\"k\":\"" + b + "\",\"n\":1}";
      return ScanObject(text);
    };
    CHECK(scan(body));
    std::string control = body;
    control[at] = '\x01';
    CHECK_FALSE(scan(control));
    std::string quote = body;
    quote[at] = '"';  // ends the string early: what follows is not valid JSON
    CHECK_FALSE(scan(quote));
    std::string escaped = body;
    escaped.replace(at, 1, "\\n");
    auto with_escape = scan(escaped);
    REQUIRE(with_escape);
    CHECK(with_escape->Find("k")->value_has_escapes);
    std::string bad_utf8 = body;
    bad_utf8[at] = '\xff';
    CHECK_FALSE(scan(bad_utf8));
    std::string good_utf8 = body;
    good_utf8.replace(at, 1, "\xc3\xa9");
    CHECK(scan(good_utf8));
  }
}

TEST_CASE("AppendJsonString escapes at any offset and copies the rest", "[jsonscan]") {
  std::string out;
  AppendJsonString(out, "plain text, then \"quote\\ and\ttab\x01 end \xc3\xa9");
  CHECK(out == "\"plain text, then \\\"quote\\\\ and\\ttab\\u0001 end \xc3\xa9\"");
  out.clear();
  AppendJsonString(out, "");
  CHECK(out == "\"\"");
}

TEST_CASE("AppendJsonText keeps valid UTF-8 and replaces each byte that starts no sequence",
          "[jsonscan]") {
  std::string out;
  AppendJsonText(out, "caf\xc3\xa9 \"q\" \xf0\x9f\x98\x80");  // valid: as AppendJsonString
  std::string same;
  AppendJsonString(same, "caf\xc3\xa9 \"q\" \xf0\x9f\x98\x80");
  CHECK(out == same);
  // A stray continuation byte, a truncated sequence at the end, an overlong '/', a surrogate.
  const std::string bad[] = {std::string("a\x80"
                                         "b"),
                             std::string("end \xc3"), std::string("\xc0\xaf"),
                             std::string("\xed\xa0\x80")};
  const std::string want[] = {
      "a\xef\xbf\xbd"
      "b",
      "end \xef\xbf\xbd", "\xef\xbf\xbd\xef\xbf\xbd", "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"};
  for (std::size_t i = 0; i < std::size(bad); ++i) {
    out = "{\"v\":";
    AppendJsonText(out, bad[i]);
    out += "}";
    INFO(i);
    auto scanned = ScanObject(out);  // strict: rejects invalid UTF-8
    REQUIRE(scanned);
    CHECK(**scanned->GetString("v") == want[i]);
  }
}
