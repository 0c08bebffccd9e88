// HTTP parsing and the WebSocket handshake pieces, without sockets.
#include <catch2/catch.hpp>

#include "agentmesh/net/client.hpp"
#include "agentmesh/net/http.hpp"

using namespace agentmesh;
using namespace agentmesh::net;

TEST_CASE("http: Sec-WebSocket-Accept matches RFC 6455 §1.3", "[http]") {
  CHECK(WebSocketAcceptKey("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

TEST_CASE("http: pipelined requests are returned one at a time", "[http]") {
  HttpRequestParser parser({});
  std::string input =
      "GET /health?verbose=1 HTTP/1.1\r\nHost: x\r\nX-Test: a\r\n\r\n"
      "POST /v1/items HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
  auto r1 = parser.Feed(input);
  REQUIRE(r1.status == HttpRequestParser::Status::kRequest);
  CHECK(parser.request().method == "GET");
  CHECK(parser.request().path == "/health");
  CHECK(parser.request().query == "verbose=1");
  CHECK(parser.request().Header("x-test") == "a");
  CHECK(parser.request().keep_alive);
  input.erase(0, r1.consumed);
  auto r2 = parser.Feed(input);
  REQUIRE(r2.status == HttpRequestParser::Status::kRequest);
  CHECK(r2.consumed == input.size());
  CHECK(parser.request().method == "POST");
  CHECK(parser.request().body == "hello");
  CHECK_FALSE(parser.request().keep_alive);
}

TEST_CASE("http: a request split across reads", "[http]") {
  HttpRequestParser parser({});
  const std::string input = "GET /a HTTP/1.1\r\nHost: x\r\nLong-Header: 0123456789\r\n\r\n";
  for (std::size_t i = 0; i + 1 < input.size(); ++i) {
    auto r = parser.Feed(std::string_view(input).substr(i, 1));
    REQUIRE(r.status == HttpRequestParser::Status::kNeedMore);
  }
  auto r = parser.Feed(std::string_view(input).substr(input.size() - 1));
  REQUIRE(r.status == HttpRequestParser::Status::kRequest);
  CHECK(parser.request().Header("long-header") == "0123456789");
}

TEST_CASE("http: limits and malformed input map to status codes", "[http]") {
  HttpLimits limits;
  limits.max_header_bytes = 256;
  limits.max_body_bytes = 10;
  SECTION("declared body too large → 413") {
    HttpRequestParser parser(limits);
    auto r = parser.Feed("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n");
    CHECK(r.status == HttpRequestParser::Status::kError);
    CHECK(parser.error_status() == 413);
  }
  SECTION("chunked body too large → 413") {
    HttpRequestParser parser(limits);
    auto r = parser.Feed(
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n01234567\r\n8\r\n01234567\r\n");
    CHECK(r.status == HttpRequestParser::Status::kError);
    CHECK(parser.error_status() == 413);
  }
  SECTION("head too large → 431") {
    HttpRequestParser parser(limits);
    auto r = parser.Feed("GET / HTTP/1.1\r\nX: " + std::string(300, 'a') + "\r\n\r\n");
    CHECK(r.status == HttpRequestParser::Status::kError);
    CHECK(parser.error_status() == 431);
  }
  SECTION("garbage → 400") {
    HttpRequestParser parser(limits);
    auto r = parser.Feed("\x16\x03\x01\x02\x00garbage\r\n\r\n");
    CHECK(r.status == HttpRequestParser::Status::kError);
    CHECK(parser.error_status() == 400);
  }
}

TEST_CASE("http: upgrade requests stop the parser and leave the rest", "[http]") {
  HttpRequestParser parser({});
  const std::string input =
      "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n\x81\x80";
  auto r = parser.Feed(input);
  REQUIRE(r.status == HttpRequestParser::Status::kUpgrade);
  CHECK(input.substr(r.consumed) == "\x81\x80");
  auto key = ValidateUpgradeRequest(parser.request());
  REQUIRE(key);
  CHECK(*key == "dGhlIHNhbXBsZSBub25jZQ==");
}

TEST_CASE("http: upgrade validation names the faulty field", "[http]") {
  HttpRequest req;
  req.method = "GET";
  req.headers = {{"Upgrade", "websocket"},
                 {"Connection", "keep-alive, Upgrade"},
                 {"Sec-WebSocket-Version", "13"},
                 {"Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="}};
  REQUIRE(ValidateUpgradeRequest(req));
  auto bad_version = req;
  bad_version.headers[2].value = "8";
  CHECK(ValidateUpgradeRequest(bad_version).error().field == "sec-websocket-version");
  auto no_key = req;
  no_key.headers.pop_back();
  CHECK(ValidateUpgradeRequest(no_key).error().field == "sec-websocket-key");
  auto short_key = req;
  short_key.headers[3].value = "c2hvcnQ=";
  CHECK(ValidateUpgradeRequest(short_key).error().field == "sec-websocket-key");
  auto post = req;
  post.method = "POST";
  CHECK(ValidateUpgradeRequest(post).error().field == "method");
}

TEST_CASE("http: responses are serialised with framing headers", "[http]") {
  HttpResponse resp = HttpResponse::Json(201, "{}");
  resp.headers.push_back({"X-Id", "7"});
  resp.headers.push_back({"Content-Length", "999"});      // ignored: ours wins
  resp.headers.push_back({"X-Bad", "a\r\nInjected: 1"});  // dropped
  std::string out;
  SerializeResponse(resp, true, out);
  CHECK(out ==
        "HTTP/1.1 201 Created\r\nX-Id: 7\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\nConnection: keep-alive\r\n\r\n{}");
}

TEST_CASE("http: the response parser reads a 101 head and leaves the frames", "[http]") {
  HttpResponseParser parser;
  const std::string input =
      "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
      "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
  auto r = parser.Feed(input);
  REQUIRE(r.status == HttpResponseParser::Status::kComplete);
  CHECK(parser.status_code() == 101);
  CHECK(parser.Header("sec-websocket-accept") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
  CHECK(input.substr(r.consumed) == "\x81\x02hi");

  HttpResponseParser refused;
  auto r2 = refused.Feed("HTTP/1.1 403 Forbidden\r\nContent-Length: 5\r\n\r\nnope!");
  REQUIRE(r2.status == HttpResponseParser::Status::kComplete);
  CHECK(refused.status_code() == 403);
}

TEST_CASE("http: ws:// and wss:// URLs", "[http]") {
  auto a = ParseWsUrl("ws://127.0.0.1:8080/relay?x=1");
  REQUIRE(a);
  CHECK_FALSE(a->secure);
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == 8080);
  CHECK(a->target == "/relay?x=1");
  CHECK(a->HostHeader() == "127.0.0.1:8080");
  auto b = ParseWsUrl("wss://relay.example.org");
  REQUIRE(b);
  CHECK(b->secure);
  CHECK(b->port == 443);
  CHECK(b->target == "/");
  CHECK(b->HostHeader() == "relay.example.org");
  auto c = ParseWsUrl("ws://[::1]:9000?q");
  REQUIRE(c);
  CHECK(c->host == "::1");
  CHECK(c->target == "/?q");
  CHECK(c->HostHeader() == "[::1]:9000");
  for (const char* bad : {"http://x/", "ws://", "ws://:80/", "ws://x:0/", "ws://x:70000/",
                          "ws://user@x/", "ws://x/#frag", "ws://[::1/", "ws://x:/"}) {
    INFO(bad);
    CHECK_FALSE(ParseWsUrl(bad));
  }
}
