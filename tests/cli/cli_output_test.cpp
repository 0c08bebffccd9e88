// amesh against a scripted daemon: what each command sends (method and params), what it prints
// in both modes, and which exit status each daemon error becomes.
#include <catch2/catch.hpp>
#include <chrono>
#include <mutex>
#include <thread>

#include "cli.hpp"
#include "harness.hpp"

using amesh::test::Amesh;
using amesh::test::FakeDaemon;
using amesh::test::RpcErrorObject;
using amesh::test::RunOptions;
using amesh::test::RunResult;
using amesh::test::ScratchDir;
using nlohmann::json;

namespace {

constexpr const char* kAmid = "jZ6CK1dpcZD4oPYScUJvifP7BtJ";
constexpr const char* kSession = "0f8e1c2a-4b7d-4e21-9a3b-5c6d7e8f9a0b";

struct Fixture {
  ScratchDir dir;
  std::mutex mutex;
  std::map<std::string, json> answers;  // method → {"result"|"error"…}
  // Consulted first when set: the answer to (method, params), or null for `answers`.
  std::function<json(const std::string&, const json&)> script;
  std::unique_ptr<FakeDaemon> daemon;

  Fixture() {
    daemon = std::make_unique<FakeDaemon>(
        dir.path() / "d.sock", [this](const std::string& m, const json& params) {
          std::lock_guard lock(mutex);
          if (script) {
            json scripted = script(m, params);
            if (!scripted.is_null()) return scripted;
          }
          auto it = answers.find(m);
          if (it != answers.end()) return it->second;
          return RpcErrorObject(-32601, "method_not_found", "unknown method " + m);
        });
  }
  void Answer(const std::string& method, json reply) {
    std::lock_guard lock(mutex);
    answers[method] = std::move(reply);
  }
  RunResult Run(const std::vector<std::string>& args, const std::string& stdin_text = "",
                bool tty = true) {
    RunOptions o;
    o.env = {{"AGENTMESH_SOCKET", (dir.path() / "d.sock").string()},
             {"AGENTMESH_HOME", (dir.path() / "home").string()},
             {"AGENTMESHD", "/nonexistent"}};
    o.stdin_text = stdin_text;
    o.stdin_is_tty = tty;
    return Amesh(args, o);
  }
  // The params of the last request for `method`.
  json LastParams(const std::string& method) {
    json last;
    for (const auto& r : daemon->Requests()) {
      if (r.value("method", "") == method) last = r.value("params", json::object());
    }
    return last;
  }
};

json Ok(json result) { return json{{"result", std::move(result)}}; }

// A message of kSession from kAmid, as `recv` returns it.
json InboxMessage(const std::string& id, const std::string& type, json payload) {
  return json{{"id", id},
              {"session_id", kSession},
              {"from", kAmid},
              {"type", type},
              {"payload", std::move(payload)}};
}

// What `serve --intent echo` needs before its first recv: the subscription, and kSession as an
// active session where this agent receives the intent "echo" (plus `extra` sessions).
void AnswerEchoSession(Fixture& f, json extra = json::array()) {
  f.Answer("subscribe", Ok({{"subscription", 1}}));
  json sessions = json::array({{{"session_id", kSession},
                                {"role", "receiver"},
                                {"intent", {{"category", "echo"}}},
                                {"state", "active"}}});
  for (auto& s : extra) sessions.push_back(std::move(s));
  f.Answer("sessions", Ok({{"sessions", std::move(sessions)}}));
}

}  // namespace

TEST_CASE("whoami prints fields, --json the result verbatim", "[cli]") {
  Fixture f;
  const json who = {{"amid", kAmid},
                    {"signing_public_key", "ed25519:AAAA"},
                    {"exchange_public_key", "x25519:BBBB"},
                    {"display_name", "Bob"},
                    {"registry", "http://127.0.0.1:1"},
                    {"relay", "ws://127.0.0.1:2"}};
  f.Answer("whoami", Ok(who));
  RunResult r = f.Run({"whoami"});
  CHECK(r.status == 0);
  CHECK(r.out.find(std::string("amid          ") + kAmid) != std::string::npos);
  CHECK(r.out.find("signing key   ed25519:AAAA") != std::string::npos);
  r = f.Run({"whoami", "--json"});
  CHECK(r.status == 0);
  CHECK(json::parse(r.out) == who);
}

TEST_CASE("daemon errors map to exit statuses with hints", "[cli]") {
  Fixture f;
  struct Case {
    json error;
    int status;
    std::string message;
    std::string hint;
  };
  const std::vector<Case> cases = {
      {RpcErrorObject(-32012, "not_initialized", "no identity yet"), 7, "no identity yet",
       "run `amesh init`"},
      {RpcErrorObject(-32007, "unavailable", "registry unreachable"), 8, "registry unreachable",
       "retrying may help"},
      {RpcErrorObject(-32001, "not_found", "unknown AMID"), 6, "unknown AMID", "amesh register"},
      {RpcErrorObject(-32008, "timeout", "no answer"), 5, "no answer", "retry"},
      {RpcErrorObject(-32602, "invalid_argument", "must be a string", {{"field", "amid"}}), 2,
       "amid: must be a string", ""},
      {RpcErrorObject(-32603, "internal", "oops"), 1, "oops", "bug in agentmeshd"},
      {RpcErrorObject(-32006, "permission_denied", "paused"), 1, "paused", "amesh status"},
  };
  for (const auto& c : cases) {
    INFO(c.error.dump());
    f.Answer("lookup", c.error);
    const RunResult r = f.Run({"lookup", kAmid});
    CHECK(r.status == c.status);
    CHECK(r.err.find("amesh: " + c.message) == 0);
    if (!c.hint.empty()) CHECK(r.err.find(c.hint) != std::string::npos);
  }
}

TEST_CASE("knock: accepted prints the session, rejected exits 4 with the reason", "[cli]") {
  Fixture f;
  f.Answer("knock", Ok({{"session_id", kSession},
                        {"peer", kAmid},
                        {"state", "active"},
                        {"type", "request_response"},
                        {"capabilities", {"search", "book"}},
                        {"constraints", {{"max_messages", 20}, {"ttl_seconds", 300}}}}));
  RunResult r = f.Run({"knock", kAmid, "--intent", "travel/flights", "--action", "search", "--ttl",
                       "60", "--timeout", "5"});
  CHECK(r.status == 0);
  CHECK(r.out.find(std::string("KNOCK accepted by ") + kAmid) != std::string::npos);
  CHECK(r.out.find(std::string("session       ") + kSession) != std::string::npos);
  CHECK(r.out.find("search,book") != std::string::npos);
  const json p = f.LastParams("knock");
  CHECK(p["amid"] == kAmid);
  CHECK(p["intent"] == "travel/flights");
  CHECK(p["action"] == "search");
  CHECK(p["ttl_seconds"] == 60);
  CHECK(p["timeout_ms"] == 5000);
  CHECK(p["type"] == "request_response");

  f.Answer("knock", RpcErrorObject(-32011, "knock_rejected", "rejected",
                                   {{"reason", "intent_not_accepted"},
                                    {"human_readable", "I only do travel."},
                                    {"retry_after_seconds", 30}}));
  r = f.Run({"knock", kAmid, "--intent", "creative"});
  CHECK(r.status == amesh::kExitRejected);
  CHECK(r.err.find("amesh: KNOCK rejected: intent_not_accepted (\"I only do travel.\")") == 0);
  CHECK(r.err.find("retry in 30 s") != std::string::npos);
}

TEST_CASE("send: payloads from args and stdin, --wait prints the response payload", "[cli]") {
  Fixture f;
  f.Answer("send", Ok({{"session_id", kSession},
                       {"sequence", 1},
                       {"delivery", "delivered"},
                       {"response",
                        {{"id", "m1"},
                         {"type", "response"},
                         {"payload", {{"flights", json::array({"LH1", "BA2"})}}}}}}));
  RunResult r = f.Run({"send", kAmid, "--intent", "travel", "{\"from\":\"BER\"}", "--wait", "5"});
  CHECK(r.status == 0);
  CHECK(r.out == "{\"flights\":[\"LH1\",\"BA2\"]}\n");
  json p = f.LastParams("send");
  CHECK(p["to"] == kAmid);
  CHECK(p["intent"] == "travel");
  CHECK(p["payload"] == json{{"from", "BER"}});
  CHECK(p["wait_ms"] == 5000);
  CHECK(p["type"] == "request");

  SECTION("--wait without a value, payload after it") {
    r = f.Run({"send", kSession, "--wait", "{\"q\":1}"});
    CHECK(r.status == 0);
    p = f.LastParams("send");
    CHECK(p["payload"] == json{{"q", 1}});
    CHECK(p["wait_ms"] == 30000);
    CHECK(p["to"] == kSession);
  }
  SECTION("payload on stdin") {
    r = f.Run({"send", kSession}, "{\"from_stdin\":true}\n", false);
    CHECK(r.status == 0);
    CHECK(f.LastParams("send")["payload"] == json{{"from_stdin", true}});
    r = f.Run({"send", kSession, "-"}, "{\"dash\":1}", true);
    CHECK(r.status == 0);
    CHECK(f.LastParams("send")["payload"] == json{{"dash", 1}});
  }
  SECTION("an upper-case session id is normalised") {
    r = f.Run({"send", "0F8E1C2A-4B7D-4E21-9A3B-5C6D7E8F9A0B", "{}"});
    CHECK(f.LastParams("send")["to"] == kSession);
  }
  SECTION("without --wait: a confirmation") {
    r = f.Run({"send", kSession, "{}"});
    CHECK(r.status == 0);
    CHECK(r.out ==
          std::string("Sent request in session ") + kSession + " (sequence 1, delivered)\n");
    CHECK_FALSE(f.LastParams("send").contains("wait_ms"));
  }
  SECTION("an error envelope: payload printed, exit 1") {
    f.Answer(
        "send",
        Ok({{"session_id", kSession},
            {"sequence", 1},
            {"delivery", "queued"},
            {"response",
             {{"type", "error"}, {"payload", {{"code", "bad"}, {"message", "no such city"}}}}}}));
    r = f.Run({"send", kSession, "{}", "--wait"});
    CHECK(r.status == 1);
    CHECK(json::parse(r.out)["code"] == "bad");
    CHECK(r.err.find("no such city") != std::string::npos);
  }
  SECTION("--json prints the whole result") {
    r = f.Run({"--json", "send", kSession, "{}", "--wait=2"});
    CHECK(r.status == 0);
    CHECK(json::parse(r.out)["delivery"] == "delivered");
  }
}

TEST_CASE("sessions and search print aligned tables", "[cli]") {
  Fixture f;
  f.Answer("sessions", Ok({{"sessions",
                            {{{"session_id", kSession},
                              {"peer", kAmid},
                              {"role", "initiator"},
                              {"intent", {{"category", "travel"}, {"subcategory", "flights"}}},
                              {"type", "request_response"},
                              {"state", "active"},
                              {"messages_sent", 1},
                              {"messages_received", 0},
                              {"expires_at", "2026-02-01T12:05:00Z"}}}}}));
  RunResult r = f.Run({"sessions"});
  CHECK(r.status == 0);
  const auto header_end = r.out.find('\n');
  const std::string header = r.out.substr(0, header_end);
  const std::string row = r.out.substr(header_end + 1);
  CHECK(header.starts_with("SESSION"));
  CHECK(header.find("PEER") == row.find(kAmid));
  CHECK(row.find("travel/flights") == header.find("INTENT"));
  CHECK(row.find("1/0") != std::string::npos);

  f.Answer("sessions", Ok({{"sessions", json::array()}}));
  CHECK(f.Run({"sessions"}).out == "No sessions.\n");

  f.Answer("search", Ok({{"results",
                          {{{"amid", kAmid},
                            {"display_name", "Bob"},
                            {"tier", "anonymous"},
                            {"reputation_score", 0.5},
                            {"status", "online"},
                            {"capabilities", {"travel/flights"}}}}},
                         {"total", 3},
                         {"limit", 1},
                         {"offset", 0}}));
  r = f.Run({"search", "travel/*", "--limit", "1", "--tier-min", "1"});
  CHECK(r.status == 0);
  CHECK(r.out.find("0.50") != std::string::npos);
  CHECK(r.out.find("(1-1 of 3; --offset for more)") != std::string::npos);
  const json p = f.LastParams("search");
  CHECK(p["capability"] == "travel/*");
  CHECK(p["tier_min"] == "verified");
  CHECK(p["limit"] == 1);
}

TEST_CASE("status pipelines ping and status", "[cli]") {
  Fixture f;
  f.Answer("ping", Ok({{"pong", true}, {"version", "0.1.0"}, {"pid", 42}, {"uptime_seconds", 75}}));
  f.Answer("status", Ok({{"initialized", false},
                         {"version", "0.1.0"},
                         {"home", "/h"},
                         {"socket", "/s"},
                         {"paused", true},
                         {"relay", {{"url", "ws://r"}, {"connected", false}}},
                         {"registry",
                          {{"url", "http://g"},
                           {"reachable", true},
                           {"registered", true},
                           {"presence", "online"}}},
                         {"sessions", {{"active", 2}}},
                         {"inbox", {{"pending", 5}}},
                         {"outbox", {{"pending", 3}}}}));
  const RunResult r = f.Run({"status"});
  CHECK(r.out.find("3 not yet confirmed by the relay or the recipient") != std::string::npos);
  CHECK(r.out.find("online (in the registry)") != std::string::npos);
  CHECK(r.status == 0);
  CHECK(r.out.find("not initialized (run `amesh init`)") != std::string::npos);
  CHECK(r.out.find("pid 42, up 1m") != std::string::npos);
  CHECK(r.out.find("ws://r (not connected)") != std::string::npos);
  CHECK(r.out.find("2 active") != std::string::npos);
  CHECK(r.out.find("paused") != std::string::npos);
}

TEST_CASE("policy test prints the trace and exits 4 on reject", "[cli]") {
  Fixture f;
  f.Answer("policy.test",
           Ok({{"accepted", false},
               {"reason", "intent_not_accepted"},
               {"human_readable", ""},
               {"retry_after_seconds", nullptr},
               {"constraints", nullptr},
               {"trace",
                {{{"rule", "paused"}, {"passed", true}, {"detail", "not paused"}},
                 {{"rule", "intent"}, {"passed", false}, {"detail", "creative is rejected"}}}}}));
  RunResult r = f.Run({"policy", "test", "--intent", "creative/poems", "--tier", "verified"});
  CHECK(r.status == amesh::kExitRejected);
  CHECK(r.out.find("2  intent  fail    creative is rejected") != std::string::npos);
  CHECK(r.out.find("decision: reject (intent_not_accepted)") != std::string::npos);
  const json p = f.LastParams("policy.test");
  CHECK(p["knock"]["intent"] == json{{"category", "creative"}, {"subcategory", "poems"}});
  CHECK(p["context"]["tier"] == "verified");

  // An accept prints the granted constraints.
  f.Answer("policy.test", Ok({{"accepted", true},
                              {"reason", nullptr},
                              {"trace", {{{"rule", "paused"}, {"passed", true}, {"detail", "ok"}}}},
                              {"constraints", {{"ttl_seconds", 300}}}}));
  r = f.Run({"policy", "test", "{\"from\":{\"amid\":\"x\"},\"intent\":{\"category\":\"travel\"}}"});
  CHECK(r.status == 0);
  CHECK(r.out.find("1  paused  pass") != std::string::npos);
  CHECK(r.out.find("decision: accept") != std::string::npos);
}

TEST_CASE("policy set sends the file and shows field errors", "[cli]") {
  Fixture f;
  f.Answer("policy.set", RpcErrorObject(-32602, "invalid_argument", "must be an integer >= 1",
                                        {{"field", "rate_limit.knocks_per_minute"}}));
  const RunResult r =
      f.Run({"policy", "set", "-"}, "{\"rate_limit\":{\"knocks_per_minute\":0}}", false);
  CHECK(r.status == 2);
  CHECK(r.err.find("amesh: rate_limit.knocks_per_minute: must be an integer >= 1") == 0);
  CHECK(r.err.find("agentmesh-policy(5)") != std::string::npos);
  CHECK(f.LastParams("policy.set")["policy"]["rate_limit"]["knocks_per_minute"] == 0);
}

TEST_CASE("recv prints NDJSON and times out with exit 5", "[cli]") {
  Fixture f;
  f.Answer("recv", Ok({{"messages",
                        {{{"id", "a"}, {"session_id", kSession}, {"payload", {{"n", 1}}}},
                         {{"id", "b"}, {"session_id", kSession}, {"payload", {{"n", 2}}}}}}}));
  RunResult r = f.Run({"recv", "--session", kSession, "--from", kAmid});
  CHECK(r.status == 0);
  CHECK(r.out == "{\"id\":\"a\",\"payload\":{\"n\":1},\"session_id\":\"" + std::string(kSession) +
                     "\"}\n{\"id\":\"b\",\"payload\":{\"n\":2},\"session_id\":\"" + kSession +
                     "\"}\n");
  json p = f.LastParams("recv");
  CHECK(p["session_id"] == kSession);
  CHECK(p["from"] == kAmid);
  CHECK(p["timeout_ms"] == 0);

  f.Answer("recv", Ok({{"messages", json::array()}}));
  r = f.Run({"recv", "--timeout", "0.2"});
  CHECK(r.status == amesh::kExitTimeout);
  CHECK(f.LastParams("recv")["timeout_ms"] == 200);
}

TEST_CASE("rpc calls any method and prints the result", "[cli]") {
  Fixture f;
  f.Answer("ping", Ok({{"pong", true}}));
  RunResult r = f.Run({"rpc", "ping"});
  CHECK(r.status == 0);
  CHECK(json::parse(r.out) == json{{"pong", true}});
  r = f.Run({"rpc", "nosuch", "{}"});
  CHECK(r.status == 2);
  CHECK(r.err.find("unknown method nosuch") != std::string::npos);
}

TEST_CASE("serve runs the command per request and replies with its output", "[cli]") {
  Fixture f;
  std::atomic<int> recv_calls{0};
  AnswerEchoSession(f, json::array({{{"session_id", "11111111-2222-3333-4444-555555555555"},
                                     {"role", "receiver"},
                                     {"intent", {{"category", "other"}}},
                                     {"state", "active"}}}));
  f.Answer("recv", Ok({{"messages", {InboxMessage("m1", "request", {{"text", "hi"}})}}}));
  f.Answer("reply", Ok({{"session_id", kSession}, {"sequence", 1}, {"delivery", "delivered"}}));
  f.Answer("ack", Ok({{"removed", 1}}));
  RunResult r = f.Run({"serve", "--intent", "echo", "--max-requests", "1", "--", "/bin/sh", "-c",
                       "read line; echo \"{\\\"got\\\":$line,\\\"from\\\":\\\"$AMESH_FROM\\\"}\""});
  INFO(r.err);
  CHECK(r.status == 0);
  json p = f.LastParams("reply");
  CHECK(p["session_id"] == kSession);
  CHECK(p["type"] == "response");
  CHECK(p["payload"] == json{{"got", {{"text", "hi"}}}, {"from", kAmid}});
  // One reply per request, whatever happens to serve: the key is derived from the message id.
  CHECK(p["idempotency_key"] == "serve:m1");
  // The request leaves the inbox only after the reply.
  CHECK(f.LastParams("ack") == json{{"ids", {"m1"}}});
  std::vector<std::string> order;
  for (const auto& req : f.daemon->Requests()) {
    const std::string method = req.value("method", "");
    if (method == "reply" || method == "ack") order.push_back(method);
  }
  CHECK(order == std::vector<std::string>{"reply", "ack"});
  // Only the matching session was drained, and without taking the message out.
  for (const auto& req : f.daemon->Requests()) {
    if (req.value("method", "") != "recv") continue;
    CHECK(req["params"]["session_id"] == kSession);
    CHECK(req["params"]["peek"] == true);
  }
  (void)recv_calls;

  SECTION("a failing command becomes an error envelope") {
    r = f.Run(
        {"serve", "--intent", "echo", "--max-requests", "1", "--", "/bin/sh", "-c", "exit 3"});
    CHECK(r.status == 0);
    p = f.LastParams("reply");
    CHECK(p["type"] == "error");
    CHECK(p["payload"]["code"] == "service_failed");
    CHECK(p["payload"]["message"] == "the service exited with status 3");
  }
  SECTION("non-JSON output becomes an error envelope") {
    r = f.Run({"serve", "--intent", "echo", "--max-requests", "1", "--", "/bin/echo", "hello"});
    CHECK(r.status == 0);
    p = f.LastParams("reply");
    CHECK(p["type"] == "error");
    CHECK(p["payload"]["code"] == "invalid_response");
  }
  SECTION("a scalar is wrapped as {result}") {
    r = f.Run({"serve", "--intent", "echo", "--max-requests", "1", "--", "/bin/echo", "42"});
    CHECK(r.status == 0);
    CHECK(f.LastParams("reply")["payload"] == json{{"result", 42}});
  }
}

TEST_CASE("serve acks what it cannot or need not answer, and retries a rate-limited reply",
          "[cli]") {
  Fixture f;
  AnswerEchoSession(f);
  auto message = [](const std::string& id, const std::string& type) {
    return InboxMessage(id, type, {{"id", id}});
  };
  // The inbox: a status (nothing to answer), a request whose reply the daemon refuses for good
  // (the session ended), and a request whose reply is first held back by the message rate.
  std::vector<json> inbox = {message("s1", "status"), message("m2", "request"),
                             message("m3", "request")};
  std::vector<std::string> acked;
  int m3_replies = 0;
  f.script = [&](const std::string& method, const json& params) -> json {
    if (method == "recv") {
      return inbox.empty() ? Ok({{"messages", json::array()}})
                           : Ok({{"messages", {inbox.front()}}});
    }
    if (method == "ack") {
      for (const auto& id : params["ids"]) {
        acked.push_back(id);
        if (!inbox.empty() && inbox.front()["id"] == id) inbox.erase(inbox.begin());
      }
      return Ok({{"removed", params["ids"].size()}});
    }
    if (method == "reply" && params["idempotency_key"] == "serve:m2") {
      return RpcErrorObject(-32002, "conflict", "the session has ended");
    }
    if (method == "reply" && params["idempotency_key"] == "serve:m3" && m3_replies++ == 0) {
      json e = RpcErrorObject(-32005, "limit_exceeded", "the session allows 1 message per minute");
      e["error"]["data"]["retry_after_seconds"] = 0.2;
      e["error"]["data"]["field"] = "payload";
      return e;
    }
    if (method == "reply") return Ok({{"session_id", kSession}, {"delivery", "delivered"}});
    return nullptr;
  };
  RunResult r =
      f.Run({"serve", "--intent", "echo", "--max-requests", "2", "--", "/bin/sh", "-c", "cat"});
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(acked == std::vector<std::string>{"s1", "m2", "m3"});
  CHECK(m3_replies == 2);
  CHECK(r.err.find("ignoring a 'status' message") != std::string::npos);
  CHECK(r.err.find("could not reply: the session has ended") != std::string::npos);
  CHECK(r.err.find("message rate holds the reply back") != std::string::npos);
}

TEST_CASE("serve answers output too large for the session with response_too_large", "[cli]") {
  Fixture f;
  AnswerEchoSession(f);
  f.Answer("recv", Ok({{"messages", {InboxMessage("m1", "request", {{"text", "hi"}})}}}));
  f.Answer("ack", Ok({{"removed", 1}}));
  f.script = [](const std::string& method, const json& params) -> json {
    if (method == "reply" && params["type"] == "response") {
      json e = RpcErrorObject(-32005, "limit_exceeded",
                              "the message exceeds the session's max_message_size_bytes (600)");
      e["error"]["data"]["field"] = "payload";
      return e;
    }
    return nullptr;
  };
  f.Answer("reply", Ok({{"session_id", kSession}, {"delivery", "delivered"}}));
  RunResult r =
      f.Run({"serve", "--intent", "echo", "--max-requests", "1", "--", "/bin/sh", "-c", "cat"});
  INFO(r.err);
  CHECK(r.status == 0);
  const json p = f.LastParams("reply");
  CHECK(p["type"] == "error");
  CHECK(p["payload"]["code"] == "response_too_large");
  CHECK(p["payload"]["message"] ==
        "the message exceeds the session's max_message_size_bytes (600)");
  CHECK(p["idempotency_key"] == "serve:m1");
  CHECK(f.LastParams("ack") == json{{"ids", {"m1"}}});
}

TEST_CASE("an explicit home beats XDG_RUNTIME_DIR for the socket, as in agentmeshd", "[cli]") {
  ScratchDir dir;
  std::filesystem::create_directories(dir.path() / "h1");
  std::filesystem::create_directories(dir.path() / "h2");
  std::filesystem::create_directories(dir.path() / "run" / "agentmesh");
  auto answer = [](const std::string& name) {
    return [name](const std::string& m, const json&) {
      if (m == "whoami") return Ok({{"amid", kAmid}, {"display_name", name}});
      return RpcErrorObject(-32601, "method_not_found", "unknown method " + m);
    };
  };
  FakeDaemon h1(dir.path() / "h1" / "agentmeshd.sock", answer("home-one"));
  FakeDaemon h2(dir.path() / "h2" / "agentmeshd.sock", answer("home-two"));
  FakeDaemon xdg(dir.path() / "run" / "agentmesh" / "agentmeshd.sock", answer("runtime-dir"));
  const std::map<std::string, std::string> base = {
      {"XDG_RUNTIME_DIR", (dir.path() / "run").string()},
      {"HOME", dir.path().string()},
      {"AGENTMESHD", "/nonexistent"}};
  auto whoami = [&](std::vector<std::string> args, std::map<std::string, std::string> extra) {
    RunOptions o;
    o.env = base;
    for (auto& [k, v] : extra) o.env[k] = v;
    args.insert(args.begin(), "--no-autostart");
    args.insert(args.begin(), "--json");
    args.push_back("whoami");
    RunResult r = Amesh(args, o);
    INFO(r.err);
    REQUIRE(r.status == 0);
    return json::parse(r.out)["display_name"].get<std::string>();
  };
  // $AGENTMESH_HOME and --home each select <home>/agentmeshd.sock over the runtime dir.
  CHECK(whoami({}, {{"AGENTMESH_HOME", (dir.path() / "h1").string()}}) == "home-one");
  CHECK(whoami({"--home", (dir.path() / "h2").string()},
               {{"AGENTMESH_HOME", (dir.path() / "h1").string()}}) == "home-two");
  // No home given: the runtime dir.
  CHECK(whoami({}, {}) == "runtime-dir");
  // --socket and $AGENTMESH_SOCKET still come first.
  CHECK(whoami({"--socket", (dir.path() / "h2" / "agentmeshd.sock").string()},
               {{"AGENTMESH_HOME", (dir.path() / "h1").string()}}) == "home-two");
  CHECK(whoami({}, {{"AGENTMESH_SOCKET", (dir.path() / "h1" / "agentmeshd.sock").string()},
                    {"AGENTMESH_HOME", (dir.path() / "h2").string()}}) == "home-one");
}

// Requests `f`'s daemon has received for `method` so far.
int CountRequests(Fixture& f, const std::string& method) {
  int n = 0;
  for (const auto& r : f.daemon->Requests()) n += r.value("method", "") == method ? 1 : 0;
  return n;
}

// Waits (up to 2 s) until `f`'s daemon has received `count` requests for `method`.
void WaitRequests(Fixture& f, const std::string& method, int count) {
  for (int i = 0; i < 200 && CountRequests(f, method) < count; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

TEST_CASE("audit --follow catches up from the log when its subscription is dropped", "[cli]") {
  Fixture f;
  f.Answer("subscribe", Ok({{"subscription", 1}}));
  auto record = [](const std::string& time, const std::string& event) {
    return json{{"time", time}, {"event", event}};
  };
  const json e1 = record("2026-11-24T10:00:01.000Z", "one");
  const json e2 = record("2026-11-24T10:00:02.000Z", "two");
  const json e3 = record("2026-11-24T10:00:03.000Z", "three");
  const json e4 = record("2026-11-24T10:00:04.000Z", "four");
  std::string catch_up_since;
  f.script = [&](const std::string& method, const json& params) -> json {
    if (method != "audit") return nullptr;
    if (!params.contains("since")) return Ok({{"events", {e1}}});
    catch_up_since = params["since"];
    return Ok({{"events", {e1, e2, e3}}});  // from e1's time on: e1 again
  };
  std::thread pusher([&] {
    WaitRequests(f, "audit", 1);
    f.daemon->Push({{"subscription", 1},
                    {"type", "subscription.dropped"},
                    {"dropped", {{"reason", "slow_consumer"}}}});
    WaitRequests(f, "audit", 2);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    for (const json& e : {e3, e4}) {  // e3 came with the catch-up already
      f.daemon->Push({{"subscription", 2}, {"type", "audit"}, {"record", e}});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    f.daemon.reset();  // hang up: amesh exits
  });
  RunResult r = f.Run({"--json", "audit", "--follow"});
  pusher.join();
  INFO(r.err);
  INFO(r.out);
  std::vector<std::string> events;
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const json e = json::parse(line, nullptr, false);
    if (!e.is_object() || !e.contains("event")) break;  // the hang-up's error object follows
    events.push_back(e["event"].get<std::string>());
  }
  CHECK(events == std::vector<std::string>{"one", "two", "three", "four"});
  CHECK(catch_up_since == "2026-11-24T10:00:01.000Z");
}

TEST_CASE("serve subscribes again when the daemon drops its subscription", "[cli]") {
  Fixture f;
  AnswerEchoSession(f);
  f.Answer("reply", Ok({{"session_id", kSession}, {"delivery", "delivered"}}));
  f.Answer("ack", Ok({{"removed", 1}}));
  int subscribes = 0;  // the script runs under the fixture's lock
  f.script = [&](const std::string& method, const json&) -> json {
    if (method == "subscribe") ++subscribes;
    const bool resubscribed = subscribes >= 2;
    if (method != "recv") return nullptr;
    // The request is there only once serve subscribed again and looked.
    return Ok({{"messages", resubscribed ? json::array({InboxMessage("m1", "request", {{"n", 1}})})
                                         : json::array()}});
  };
  std::thread pusher([&] {
    WaitRequests(f, "recv", 1);
    f.daemon->Push({{"subscription", 1},
                    {"type", "subscription.dropped"},
                    {"dropped", {{"reason", "slow_consumer"}}}});
  });
  RunResult r =
      f.Run({"serve", "--intent", "echo", "--max-requests", "1", "--", "/bin/sh", "-c", "cat"});
  pusher.join();
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(CountRequests(f, "subscribe") == 2);
  CHECK(f.LastParams("reply")["payload"] == json{{"n", 1}});
  CHECK(r.err.find("subscribing again") != std::string::npos);
}

TEST_CASE("audit --follow prints the nested record with its own type", "[cli]") {
  Fixture f;
  f.Answer("subscribe", Ok({{"subscription", 1}}));
  f.Answer("audit", Ok({{"events", json::array()}}));
  std::thread pusher([&] {
    // Wait until amesh subscribed and read the backlog, then push one audit event.
    for (int i = 0; i < 200; ++i) {
      bool ready = false;
      for (const auto& r : f.daemon->Requests()) ready = ready || r.value("method", "") == "audit";
      if (ready) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    f.daemon->Push({{"subscription", 1},
                    {"type", "audit"},
                    {"time", "2026-11-24T10:00:01.000Z"},
                    {"record",
                     {{"time", "2026-11-24T10:00:00.000Z"},
                      {"event", "message.sent"},
                      {"type", "request"},
                      {"session_id", kSession}}}});
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    f.daemon.reset();  // hang up: amesh exits
  });
  RunResult r = f.Run({"--json", "audit", "--follow"});
  pusher.join();
  INFO(r.err);
  const auto nl = r.out.find('\n');
  REQUIRE(nl != std::string::npos);
  const json line = json::parse(r.out.substr(0, nl));
  CHECK(line["event"] == "message.sent");
  CHECK(line["type"] == "request");
  CHECK(line["session_id"] == kSession);
}
