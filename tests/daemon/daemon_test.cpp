// Integration tests: real amesh-relay, amesh-registry and agentmeshd processes on loopback, each
// test in its own temp dir, talking JSON-RPC to the daemons over their sockets.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>

#include <atomic>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/rng.hpp"
#include "harness.hpp"
#include "mesh.hpp"
#include "store.hpp"
#include "ws_test_client.hpp"

using namespace agentmesh::testing;

TEST_CASE("daemon: init and whoami and status", "[daemon]") {
  TempDir dir;
  DaemonProcess d(dir.path() / "home", "http://127.0.0.1:9", "ws://127.0.0.1:9/v1/connect");
  d.Start();
  json status = d.rpc.Call("status");
  CHECK(status["initialized"] == false);
  CHECK(status["socket"] == d.socket());
  json err = d.rpc.CallError("whoami");
  CHECK(err["code"] == -32012);
  CHECK(err["data"]["code"] == "not_initialized");

  json init = d.Init("alice");
  CHECK(init["created"] == true);
  const std::string amid = init["amid"];
  CHECK(amid.size() >= 27);
  json again = d.rpc.Call("init", json::object());
  CHECK(again["created"] == false);
  CHECK(again["amid"] == amid);

  json who = d.rpc.Call("whoami");
  CHECK(who["amid"] == amid);
  CHECK(who["display_name"] == "alice");
  CHECK(who["signing_public_key"].get<std::string>().starts_with("ed25519:"));
  CHECK(who["exchange_public_key"].get<std::string>().starts_with("x25519:"));
  status = d.rpc.Call("status");
  CHECK(status["initialized"] == true);
  CHECK(status["amid"] == amid);
  CHECK(status["inbox"]["pending"] == 0);
  json ping = d.rpc.Call("ping");
  CHECK(ping["pong"] == true);

  // State files: 0600 key file, 0700 home, 0600 socket, config written by init.
  namespace fs = std::filesystem;
  CHECK((fs::status(d.home() / "master.key").permissions() & fs::perms::all) ==
        (fs::perms::owner_read | fs::perms::owner_write));
  CHECK((fs::status(d.home()).permissions() & fs::perms::all) == fs::perms::owner_all);
  CHECK((fs::status(d.socket()).permissions() & fs::perms::all) ==
        (fs::perms::owner_read | fs::perms::owner_write));
  CHECK(json::parse(ReadAll(d.home() / "config.json"))["display_name"] == "alice");

  // The identity survives a restart (sealed in the database), and a second daemon on the same
  // home refuses to start.
  ChildProcess second;
  REQUIRE(second.Start(
      {AGENTMESHD_BIN, "--foreground", "--home", d.home().string(), "--socket", d.socket()},
      dir.path() / "second.log"));
  CHECK(second.Signal(0, true, 10s) != -1);  // it exits by itself
  CHECK(ReadAll(dir.path() / "second.log").find("another agentmeshd") != std::string::npos);
  CHECK(d.Terminate() == 0);
  d.Start();
  CHECK(d.rpc.Call("whoami")["amid"] == amid);
  CHECK(CountLines(d.home() / "logs" / "audit.jsonl", "identity.created") == 1);
}

TEST_CASE("daemon: passphrase-sealed state opens only with the passphrase", "[daemon]") {
  TempDir dir;
  ::setenv("AGENTMESH_PASSPHRASE", "correct horse battery staple", 1);
  DaemonProcess d(dir.path() / "home", "http://127.0.0.1:9", "ws://127.0.0.1:9/v1/connect");
  d.Start();
  const std::string amid = d.Init("sealed")["amid"];
  CHECK_FALSE(std::filesystem::exists(d.home() / "master.key"));
  CHECK(std::filesystem::exists(d.home() / "master.salt"));
  CHECK(d.Terminate() == 0);

  auto refused = [&](const char* passphrase, const std::string& why) {
    if (passphrase != nullptr) {
      ::setenv("AGENTMESH_PASSPHRASE", passphrase, 1);
    } else {
      ::unsetenv("AGENTMESH_PASSPHRASE");
    }
    ChildProcess c;
    const auto log = dir.path() / "refused.log";
    std::filesystem::remove(log);
    REQUIRE(c.Start(
        {AGENTMESHD_BIN, "--foreground", "--home", d.home().string(), "--socket", d.socket()},
        log));
    CHECK_FALSE(c.WaitForLine("listening", 30s).has_value());
    const int status = c.Signal(0, true, 10s);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
    INFO(ReadAll(log));
    CHECK(ReadAll(log).find(why) != std::string::npos);
  };
  refused("wrong passphrase", "does not open the sealed state");
  refused(nullptr, "AGENTMESH_PASSPHRASE");
  ::setenv("AGENTMESH_PASSPHRASE", "correct horse battery staple", 1);
  d.Start();
  CHECK(d.rpc.Call("whoami")["amid"] == amid);
  ::unsetenv("AGENTMESH_PASSPHRASE");
}

TEST_CASE("daemon: without --foreground it detaches and answers on the socket", "[daemon]") {
  TempDir dir;
  const auto home = dir.path() / "home";
  const std::string socket = (dir.path() / "d.sock").string();
  ChildProcess starter;
  REQUIRE(starter.Start({AGENTMESHD_BIN, "--home", home.string(), "--socket", socket},
                        dir.path() / "starter.log"));
  auto line = starter.WaitForLine("agentmeshd started", 30s);
  INFO(ReadAll(dir.path() / "starter.log"));
  REQUIRE(line.has_value());
  CHECK(starter.Signal(0, true, 10s) == 0);
  RpcClient rpc;
  REQUIRE(rpc.Connect(socket));
  json ping = rpc.Call("ping");
  const pid_t pid = ping["pid"].get<int>();
  struct Reaper {
    pid_t pid;
    ~Reaper() { ::kill(pid, SIGKILL); }
  } reaper{pid};
  CHECK(pid != starter.pid());
  // A second start is refused while it runs.
  ChildProcess second;
  REQUIRE(second.Start({AGENTMESHD_BIN, "--home", home.string(), "--socket", socket},
                       dir.path() / "second.log"));
  CHECK(second.Signal(0, true, 10s) != 0);
  CHECK(rpc.Call("daemon.stop")["stopping"] == true);
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (::kill(pid, 0) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  CHECK(::kill(pid, 0) != 0);
  CHECK_FALSE(std::filesystem::exists(socket));
  CHECK(ReadAll(home / "logs" / "agentmeshd.log").find("stopped") != std::string::npos);
}

TEST_CASE("daemon: bad RPC input gets the documented errors and the daemon keeps answering",
          "[daemon]") {
  TempDir dir;
  DaemonProcess d(dir.path() / "home", "http://127.0.0.1:9", "ws://127.0.0.1:9/v1/connect");
  d.Start();
  auto& rpc = d.rpc;
  auto raw = [&](const std::string& text) {
    REQUIRE(rpc.WriteRaw(text));
    auto line = rpc.ReadLine();
    REQUIRE(line.has_value());
    return json::parse(*line);
  };
  json r = raw("this is not json\n");
  CHECK(r["error"]["code"] == -32700);
  CHECK(r["error"]["data"]["code"] == "parse_error");
  CHECK(r["id"].is_null());
  r = raw("[1,2]\n");
  CHECK(r["error"]["code"] == -32600);
  r = raw(R"({"id":7,"method":"ping"})"
          "\n");
  CHECK(r["error"]["code"] == -32600);
  CHECK(r["id"] == 7);
  r = raw(R"({"jsonrpc":"2.0","id":8,"method":"no.such"})"
          "\n");
  CHECK(r["error"]["code"] == -32601);
  CHECK(r["error"]["data"]["code"] == "method_not_found");
  r = raw(R"({"jsonrpc":"2.0","id":9,"method":"ping","params":[1]})"
          "\n");
  CHECK(r["error"]["code"] == -32602);
  CHECK(r["error"]["data"]["field"] == "params");
  r = raw(R"({"jsonrpc":"2.0","id":"s","method":"block","params":{"amid":42}})"
          "\n");
  CHECK(r["id"] == "s");
  CHECK(r["error"]["code"] == -32602);
  CHECK(r["error"]["data"]["field"] == "amid");
  r = raw(R"({"jsonrpc":"2.0","id":10,"method":"recv","params":{"timeout_ms":"x"}})"
          "\n");
  CHECK(r["error"]["data"]["field"] == "timeout_ms");
  r = raw(
      R"({"jsonrpc":"2.0","id":11,"method":"policy.set","params":{"policy":{"rate_limit":{"knocks_per_minute":"fast"}}}})"
      "\n");
  CHECK(r["error"]["code"] == -32602);
  CHECK(r["error"]["data"]["field"] == "policy.rate_limit.knocks_per_minute");

  // Pipelined requests are answered in order; a notification gets no answer.
  REQUIRE(rpc.WriteRaw(R"({"jsonrpc":"2.0","method":"ping"})"
                       "\n"
                       R"({"jsonrpc":"2.0","id":1,"method":"ping"})"
                       "\n"
                       R"({"jsonrpc":"2.0","id":2,"method":"status"})"
                       "\n"
                       R"({"jsonrpc":"2.0","id":3,"method":"recv","params":{"timeout_ms":300}})"
                       "\n"
                       R"({"jsonrpc":"2.0","id":4,"method":"ping"})"
                       "\n"));
  for (int id = 1; id <= 4; ++id) {
    auto line = rpc.ReadLine();
    REQUIRE(line.has_value());
    CHECK(json::parse(*line)["id"] == id);
  }

  // A line over 1 MiB: -32600, then the connection is closed; the daemon still answers others.
  std::string big = R"({"jsonrpc":"2.0","id":5,"method":"ping","params":{"x":")" +
                    std::string(1100000, 'a') + "\"}}\n";
  rpc.WriteRaw(big);
  auto line = rpc.ReadLine();
  REQUIRE(line.has_value());
  CHECK(json::parse(*line)["error"]["code"] == -32600);
  CHECK_FALSE(rpc.ReadLine(2s).has_value());
  REQUIRE(rpc.Connect(d.socket()));
  CHECK(rpc.Call("ping")["pong"] == true);
}

#ifdef AMESH_REGISTRY_BIN

TEST_CASE("daemon: register and search", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice", json::array({"travel/flights", "weather"}));
  const std::string amid = Amid(a);
  json found = a.rpc.Call("search", {{"capability", "weather"}});
  INFO(found.dump());
  REQUIRE(found["results"].is_array());
  bool seen = false;
  for (auto& r : found["results"]) seen = seen || r["amid"] == amid;
  CHECK(seen);
  json looked = a.rpc.Call("lookup", {{"amid", amid}});
  CHECK(looked["amid"] == amid);
  // Registering again updates the capabilities (409 → capabilities).
  a.rpc.Call("register", {{"capabilities", json::array({"chess"})}});
  found = a.rpc.Call("search", {{"capability", "chess"}});
  REQUIRE(found["results"].size() == 1);
  CHECK(a.rpc.CallError("lookup", {{"amid", "1111111111111111111111111111"}})["code"] == -32602);
}

TEST_CASE("daemon: registry.status events follow whether the registry answers", "[daemon]") {
  Mesh mesh;
  const std::string registry = "http://127.0.0.1:" + std::to_string(mesh.registry_port());
  DaemonProcess d(mesh.dir() / "dave", registry, mesh.relay_url());
  d.Start();
  REQUIRE(d.Init("dave")["created"] == true);
  d.rpc.Call("subscribe", {{"events", json::array({"registry.status"})}});
  d.rpc.Call("register", {{"capabilities", json::array({"chess"})}});
  auto up = d.rpc.WaitEvent("registry.status", 10s);
  INFO(d.log());
  REQUIRE(up.has_value());
  CHECK((*up)["registry"] == json{{"url", registry}, {"reachable", true}});
  CHECK(d.rpc.Call("status")["registry"]["reachable"] == true);
  // Pointed at a port where nothing listens (config + SIGHUP): the next call reports it.
  std::ofstream(d.home() / "config.json")
      << json{{"registry_url", "http://127.0.0.1:9"}, {"relay_url", mesh.relay_url()}}.dump();
  d.Hup();
  std::this_thread::sleep_for(300ms);
  CHECK(d.rpc.CallError("search", {{"capability", "chess"}})["code"].is_number());
  auto down = d.rpc.WaitEvent("registry.status", 15s);
  REQUIRE(down.has_value());
  CHECK((*down)["registry"]["reachable"] == false);
  CHECK((*down)["registry"]["url"] == "http://127.0.0.1:9");
  CHECK_FALSE((*down)["registry"]["error"].get<std::string>().empty());
  json status = d.rpc.Call("status")["registry"];
  CHECK(status["reachable"] == false);
  CHECK(status["error"] == (*down)["registry"]["error"]);
}

TEST_CASE("daemon: knock accepted then request and response", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel/flights"}));
  a.rpc.Call("subscribe", json::object());
  b.rpc.Call("subscribe",
             {{"events", json::array({"knock.received", "knock.decided", "message.received"})}});
  const std::string sid = OpenSession(a, b, "request_response");
  INFO(mesh.log());
  auto received = b.rpc.WaitEvent("knock.received");
  REQUIRE(received.has_value());
  CHECK((*received)["knock"]["session_id"] == sid);
  auto decided = b.rpc.WaitEvent("knock.decided");
  REQUIRE(decided.has_value());
  CHECK((*decided)["decision"]["decision"] == "accept");

  json sent = a.rpc.Call("send", {{"to", sid}, {"payload", {{"question", "TLV to LHR?"}}}});
  CHECK(sent["sequence"] == 1);
  CHECK((sent["delivery"] == "delivered" || sent["delivery"] == "queued"));
  auto event = b.rpc.WaitEvent("message.received");
  REQUIRE(event.has_value());
  CHECK((*event)["type"] == "message.received");
  CHECK((*event)["message"]["session_id"] == sid);
  CHECK((*event)["message"]["type"] == "request");
  CHECK((*event)["message"]["payload"]["question"] == "TLV to LHR?");
  json got = b.rpc.Call("recv", {{"timeout_ms", 10000}});
  REQUIRE(got["messages"].size() == 1);
  json m = got["messages"][0];
  CHECK(m["session_id"] == sid);
  CHECK(m["type"] == "request");
  CHECK(m["sequence"] == 1);
  CHECK(m["payload"]["question"] == "TLV to LHR?");
  CHECK(m["from"] == Amid(a));
  // recv writes its messages as text; the event built them as JSON: the same object.
  CHECK(m == (*event)["message"]);
  // recv removed it from the inbox.
  CHECK(b.rpc.Call("recv", json::object())["messages"].empty());

  b.rpc.Call("reply", {{"session_id", sid}, {"payload", {{"answer", "BA 164"}}}});
  json resp = a.rpc.Call("recv", {{"session_id", sid}, {"timeout_ms", 10000}});
  REQUIRE(resp["messages"].size() == 1);
  CHECK(resp["messages"][0]["type"] == "response");
  CHECK(resp["messages"][0]["payload"]["answer"] == "BA 164");
  // request_response: closed on both sides after the response.
  json sessions = a.rpc.Call("sessions", {{"state", "closed"}});
  bool closed = false;
  for (auto& s : sessions["sessions"]) closed = closed || s["session_id"] == sid;
  CHECK(closed);
  closed = false;
  sessions = b.rpc.Call("sessions", {{"state", "closed"}});
  for (auto& s : sessions["sessions"]) closed = closed || s["session_id"] == sid;
  CHECK(closed);  // the responder closed it when it sent the response
  CHECK(a.rpc.CallError("send", {{"to", sid}, {"payload", json::object()}})["code"] == -32002);
  CHECK(b.rpc.CallError("reply", {{"session_id", sid}, {"payload", json::object()}})["code"] ==
        -32002);

  // send AMID --intent … with wait_ms: knocks, sends, returns the response.
  REQUIRE(a.rpc.WriteRaw(json({{"jsonrpc", "2.0"},
                               {"id", 900},
                               {"method", "send"},
                               {"params",
                                {{"to", Amid(b)},
                                 {"intent", "travel/hotels"},
                                 {"payload", {{"q", 2}}},
                                 {"wait_ms", 20000}}}})
                             .dump() +
                         "\n"));
  json req = b.rpc.Call("recv", {{"timeout_ms", 10000}});
  REQUIRE(req["messages"].size() == 1);
  b.rpc.Call("reply", {{"session_id", req["messages"][0]["session_id"]}, {"payload", {{"a", 2}}}});
  json waited = a.rpc.ReadResponse(900);
  INFO(waited.dump());
  REQUIRE(waited.contains("result"));
  CHECK(waited["result"]["response"]["payload"]["a"] == 2);
  // The conversation session is cached: the next send to the AMID reuses it.
  json again = a.rpc.Call("send", {{"to", Amid(b)}, {"intent", "travel"}, {"payload", {{"q", 3}}}});
  CHECK(again["session_id"] == waited["result"]["session_id"]);
  CHECK(again["sequence"] == 2);
  // Another intent category is another session: the cache is keyed by it too.
  json other =
      a.rpc.Call("send", {{"to", Amid(b)}, {"intent", "weather"}, {"payload", {{"q", 4}}}});
  CHECK(other["session_id"] != again["session_id"]);
  CHECK(other["sequence"] == 1);

  // audit: the last events, oldest first, never a payload.
  json events = b.rpc.Call("audit", {{"limit", 3}})["events"];
  CHECK(events.size() == 3);
  CHECK(b.rpc.Call("audit", {{"since", "2000-01-01T00:00:00Z"},
                             {"limit", 1}})["events"][0]["event"] == "identity.created");
  CHECK(ReadAll(mesh.dir() / "bob" / "logs" / "audit.jsonl").find("TLV to LHR") ==
        std::string::npos);
  // No transcripts unless store_transcripts is on.
  CHECK(b.rpc.Call("transcript", {{"session_id", sid}})["messages"].empty());

  const auto audit = mesh.dir() / "bob" / "logs" / "audit.jsonl";
  CHECK(CountLines(audit, "\"knock.decided\"") == 3);
  CHECK(CountLines(audit, "\"message.received\"") >= 4);
}

TEST_CASE("daemon: knock rejected - blocked or intent_not_accepted or not_in_allowlist or paused",
          "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string a_amid = Amid(a);
  auto knock_error = [&](const std::string& intent) {
    json e = a.rpc.CallError("knock", {{"amid", Amid(b)}, {"intent", intent}});
    INFO(e.dump() << mesh.log());
    CHECK(e["code"] == -32011);
    return e["data"]["reason"].get<std::string>();
  };
  json blocked = b.rpc.Call("block", {{"amid", a_amid}});
  CHECK(blocked["blocklist"] == json::array({a_amid}));
  CHECK(knock_error("travel") == "blocked");
  b.rpc.Call("unblock", {{"amid", a_amid}});

  b.rpc.Call("policy.set", {{"policy", {{"accepted_intents", json::array({"weather"})}}}});
  CHECK(knock_error("travel") == "intent_not_accepted");
  b.rpc.Call("policy.set", {{"policy", {{"strict_mode", true}}}});
  CHECK(knock_error("travel") == "not_in_allowlist");
  b.rpc.Call("allow", {{"amid", a_amid}});
  b.rpc.Call("pause");
  CHECK(knock_error("travel") == "paused");
  b.rpc.Call("resume");
  CHECK(a.rpc.Call("knock", {{"amid", Amid(b)}, {"intent", "travel"}})["state"] == "active");
  // The initiator audits each refusal with the peer's reason.
  const std::string a_audit = ReadAll(a.home() / "logs" / "audit.jsonl");
  CHECK(CountLines(a.home() / "logs" / "audit.jsonl", "\"knock.rejected_by_peer\"") == 4);
  for (const char* reason : {"blocked", "intent_not_accepted", "not_in_allowlist", "paused"}) {
    INFO(reason);
    CHECK(a_audit.find(std::string("\"reason\":\"") + reason + "\"") != std::string::npos);
  }

  // policy.test is a dry run with a trace.
  json t = b.rpc.Call("policy.test", {{"knock", {{"from", a_amid}, {"intent", "travel"}}},
                                      {"context", {{"paused", true}}}});
  // The core's DecisionToJson shape, exactly.
  CHECK(t["accepted"] == false);
  CHECK(t["reason"] == "paused");
  CHECK(t.contains("human_readable"));
  CHECK(t["retry_after_seconds"].is_null());
  CHECK(t["constraints"].is_null());
  CHECK(t["trace"][0]["rule"] == "paused");
  CHECK(t["trace"][0]["passed"] == false);
  CHECK_FALSE(t.contains("decision"));
  json ok = b.rpc.Call("policy.test", {{"knock", {{"from", a_amid}, {"intent", "travel"}}}});
  CHECK(ok["accepted"] == true);
  CHECK(ok["reason"].is_null());
  CHECK(ok["constraints"]["max_messages"].is_number());

  // The registry's tier (anonymous) and reputation (unrated = 0.5) decide, not the KNOCK's hints.
  b.rpc.Call("policy.set", {{"policy", {{"accept_tiers", json::array({"verified"})}}}});
  CHECK(knock_error("travel") == "insufficient_trust");
  b.rpc.Call("policy.set", {{"policy", {{"min_reputation", 0.9}}}});
  CHECK(knock_error("travel") == "low_reputation");
  b.rpc.Call("policy.set", {{"policy", {{"max_concurrent_sessions", 1}}}});
  CHECK(knock_error("travel") == "at_capacity");
  b.rpc.Call("policy.set", {{"policy", {{"rate_limit", {{"knocks_per_minute", 1}}}}}});
  CHECK(a.rpc.Call("knock", {{"amid", Amid(b)}, {"intent", "travel"}})["state"] == "active");
  json limited = a.rpc.CallError("knock", {{"amid", Amid(b)}, {"intent", "travel"}});
  INFO(limited.dump());
  CHECK(limited["data"]["reason"] == "rate_limited");
  CHECK(limited["data"]["retry_after_seconds"].get<int>() >= 1);

  auto rejected = b.rpc.Call("sessions", {{"state", "rejected"}});
  CHECK(rejected["sessions"].size() == 8);
  CHECK(CountLines(mesh.dir() / "bob" / "logs" / "audit.jsonl", "\"decision\":\"reject\"") == 8);
}

TEST_CASE("daemon: recv with peek leaves messages in the inbox until ack", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string sid = OpenSession(a, b, "conversation");
  // A peek that waits is answered by the arrival, and the message stays. The waiting call is
  // written on its own connection before anything is sent.
  RpcClient waiter;
  REQUIRE(waiter.Connect(b.socket()));
  REQUIRE(waiter.WriteRaw(json{{"jsonrpc", "2.0"},
                               {"id", 1},
                               {"method", "recv"},
                               {"params", {{"peek", true}, {"limit", 1}, {"timeout_ms", 20000}}}}
                              .dump() +
                          "\n"));
  CHECK_FALSE(waiter.ReadLine(300ms).has_value());  // the inbox is empty: it waits
  for (int i = 1; i <= 2; ++i) a.rpc.Call("send", {{"to", sid}, {"payload", {{"n", i}}}});
  json first = waiter.ReadResponse(1)["result"];
  REQUIRE(first["messages"].size() == 1);
  const std::string id1 = first["messages"][0]["id"];
  CHECK(first["messages"][0]["payload"]["n"] == 1);
  json again = b.rpc.Call("recv", {{"peek", true}, {"limit", 1}});
  REQUIRE(again["messages"].size() == 1);
  CHECK(again["messages"][0]["id"] == id1);
  // It survives a kill -9 of the daemon.
  b.Kill9();
  b.Start();
  const json both = PeekUntil(b, 2);
  REQUIRE(both["messages"].size() == 2);
  CHECK(both["messages"][0]["id"] == id1);
  CHECK(b.rpc.Call("ack", {{"ids", {id1}}})["removed"] == 1);
  CHECK(b.rpc.Call("ack", {{"ids", {id1, "no-such-id"}}})["removed"] == 0);
  json rest = b.rpc.Call("recv", {{"peek", true}});
  REQUIRE(rest["messages"].size() == 1);
  CHECK(rest["messages"][0]["payload"]["n"] == 2);
  // A plain recv takes it out; then the inbox is empty.
  CHECK(b.rpc.Call("recv")["messages"].size() == 1);
  CHECK(b.rpc.Call("recv", {{"peek", true}})["messages"].empty());
  for (const json& bad : {json::object(), json{{"ids", json::array()}}, json{{"ids", "x"}},
                          json{{"ids", {1}}}, json{{"ids", {""}}}}) {
    INFO(bad.dump());
    json e = b.rpc.CallError("ack", bad);
    CHECK(e["code"] == -32602);
  }
  CHECK(b.rpc.CallError("recv", {{"peek", "yes"}})["data"]["field"] == "peek");
  // Oversized: more ids than one call takes, a lease longer than a day.
  CHECK(b.rpc.CallError("ack",
                        {{"ids", json(std::vector<std::string>(10001, "x"))}})["data"]["field"] ==
        "ids");
  CHECK(b.rpc.CallError("recv", {{"peek", true}, {"lease_ms", 86'400'001}})["data"]["field"] ==
        "lease_ms");
}

TEST_CASE("daemon: a lease gives each peeked message to one taker until ack, expiry or close",
          "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string sid = OpenSession(a, b, "conversation");
  for (int i = 1; i <= 2; ++i) a.rpc.Call("send", {{"to", sid}, {"payload", {{"n", i}}}});
  const json both = PeekUntil(b, 2);
  REQUIRE(both["messages"].size() == 2);
  const std::string id1 = both["messages"][0]["id"], id2 = both["messages"][1]["id"];
  const json lease = {{"peek", true}, {"limit", 1}, {"lease_ms", 60000}};

  auto taker1 = std::make_unique<RpcClient>();
  RpcClient taker2, other;
  REQUIRE(taker1->Connect(b.socket()));
  REQUIRE(taker2.Connect(b.socket()));
  REQUIRE(other.Connect(b.socket()));
  json got1 = taker1->Call("recv", lease);
  json got2 = taker2.Call("recv", lease);
  REQUIRE(got1["messages"].size() == 1);
  REQUIRE(got2["messages"].size() == 1);
  CHECK(got1["messages"][0]["id"] == id1);
  CHECK(got2["messages"][0]["id"] == id2);  // not id1: that one is leased
  // Leased messages are returned to nobody else, by peek or by a consuming recv.
  CHECK(other.Call("recv", {{"peek", true}})["messages"].empty());
  CHECK(other.Call("recv")["messages"].empty());

  // The first taker goes away: its message is free at once, and a waiting recv gets it.
  REQUIRE(other.WriteRaw(json{{"jsonrpc", "2.0"},
                              {"id", 77},
                              {"method", "recv"},
                              {"params", {{"peek", true}, {"timeout_ms", 10000}}}}
                             .dump() +
                         "\n"));
  CHECK_FALSE(other.ReadLine(300ms).has_value());  // everything is leased: it waits
  taker1.reset();
  json freed = other.ReadResponse(77)["result"];
  REQUIRE(freed["messages"].size() == 1);
  CHECK(freed["messages"][0]["id"] == id1);

  // A lease that runs out frees its message too (and wakes a waiting recv).
  json short_lease = other.Call("recv", {{"peek", true}, {"lease_ms", 300}});
  REQUIRE(short_lease["messages"].size() == 1);
  CHECK(other.Call("recv", {{"peek", true}})["messages"].empty());
  json again = other.Call("recv", {{"peek", true}, {"timeout_ms", 10000}});
  REQUIRE(again["messages"].size() == 1);
  CHECK(again["messages"][0]["id"] == id1);

  // ack ends a lease; the taker that acked is done with the message.
  CHECK(taker2.Call("ack", {{"ids", {id2}}})["removed"] == 1);
  CHECK(other.Call("recv", {{"peek", true}})["messages"].size() == 1);
  CHECK(other.CallError("recv", {{"lease_ms", 1000}})["data"]["field"] == "lease_ms");
}

TEST_CASE("daemon: a subscriber that stops reading loses its subscription, not its answers",
          "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  b.rpc.Call("policy.set", {{"policy",
                             {{"rate_limit", {{"messages_per_minute", 100000}}},
                              {"default_constraints", {{"max_messages", 100000}}}}}});
  const std::string sid = OpenSession(a, b, "conversation");
  const json events = {{"events", json::array({"message.received"})}};
  RpcClient sleeper;  // subscribes, then reads nothing until the end
  REQUIRE(sleeper.Connect(b.socket()));
  REQUIRE(sleeper.Call("subscribe", events).contains("subscription"));
  RpcClient reader;  // subscribes and keeps reading (on a thread without Catch)
  REQUIRE(reader.Connect(b.socket()));
  REQUIRE(reader.Call("subscribe", events).contains("subscription"));
  std::atomic<int> reader_events{0};
  std::atomic<bool> reader_dropped{false};
  std::thread reading([&] {
    const auto deadline = std::chrono::steady_clock::now() + 120s;
    while (reader_events < 1000 && std::chrono::steady_clock::now() < deadline) {
      auto line = reader.ReadLine(1s);
      if (!line) continue;
      if (line->find("\"message.received\"") != std::string::npos) ++reader_events;
      if (line->find("\"subscription.dropped\"") != std::string::npos) reader_dropped = true;
    }
  });
  struct Joiner {
    std::thread& t;
    ~Joiner() {
      if (t.joinable()) t.join();
    }
  } joiner{reading};

  // 1000 events of 40 kB each: more than the 32 MiB of events a connection may leave unread.
  const std::string pad(40000, 'x');
  for (int i = 0; i < 1000; ++i) {
    a.rpc.Call("send", {{"to", sid}, {"payload", {{"i", i}, {"pad", pad}}}});
  }
  const bool dropped = WaitLog(b, "(slow consumer)", 60s);
  INFO(mesh.log());
  REQUIRE(dropped);
  // The sleeper's connection stays: it reads what was queued, ending with the drop notice, and
  // its calls are still answered.
  int sleeper_events = 0;
  std::optional<json> notice;
  while (auto line = sleeper.ReadLine(5s)) {
    const json e = json::parse(*line, nullptr, false);
    if (e.value("method", "") != "event") continue;
    if (e["params"]["type"] == "message.received") ++sleeper_events;
    if (e["params"]["type"] == "subscription.dropped") {
      notice = e["params"];
      break;
    }
  }
  REQUIRE(notice.has_value());
  CHECK((*notice)["dropped"]["reason"] == "slow_consumer");
  CHECK((*notice)["dropped"]["unread_bytes"].get<std::size_t>() > (32u << 20));
  CHECK(sleeper_events > 0);
  CHECK(sleeper_events < 1000);
  CHECK(sleeper.Call("ping")["pong"] == true);
  CHECK(b.rpc.Call("status")["rpc"]["connections"] == 3);
  // The subscriber that kept reading got every event and kept its subscription.
  reading.join();
  CHECK(reader_events == 1000);
  CHECK_FALSE(reader_dropped);
  // Nothing is lost to the application: the messages wait in the inbox, and one large answer on
  // the reading connection is not mistaken for unread events.
  json all = reader.Call("recv", {{"limit", 10000}}, 60s);
  CHECK(all["messages"].size() == 1000);
}

TEST_CASE("daemon: offline delivery - receiver down then up", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string sid = OpenSession(a, b, "conversation");
  CHECK(b.Terminate() == 0);
  for (int i = 1; i <= 5; ++i) {
    json r = a.rpc.Call("send", {{"to", sid}, {"payload", {{"n", i}}}});
    CHECK(r["delivery"] == "queued");
  }
  b.Start();
  json got = RecvAll(b, 5, 20s);
  INFO(mesh.log());
  REQUIRE(got.size() == 5);
  for (int i = 0; i < 5; ++i) CHECK(got[i]["payload"]["n"] == i + 1);
  // And a's messages sent while the relay link of a is down wait in a's outbox.
  CHECK(a.Terminate() == 0);
  a.Start();
  a.rpc.Call("send", {{"to", sid}, {"payload", {{"n", 6}}}});
  got = RecvAll(b, 1, 20s);
  REQUIRE(got.size() == 1);
  CHECK(got[0]["sequence"] == 6);
}

// A "stream" session from a to b with limits that let a 1000-message stream through.
std::string OpenStreamSession(DaemonProcess& a, DaemonProcess& b) {
  b.rpc.Call("policy.set", {{"policy",
                             {{"default_constraints", {{"max_messages", 100000}}},
                              {"rate_limit", {{"messages_per_minute", 1000000}}}}}});
  return OpenSession(a, b, "stream", "x-test");
}

// A mesh with alice and bob, and a stream session from alice to bob.
struct StreamMesh {
  Mesh mesh;
  DaemonProcess& a = mesh.Agent("alice");
  DaemonProcess& b = mesh.Agent("bob", json::array({"stream"}));
  const std::string sid = OpenStreamSession(a, b);
};

// Pipelined `send` requests (ids 10000 + i) for messages first..last, `chunk` per string.
std::vector<std::string> StreamSends(const std::string& sid, int first, int last, int chunk) {
  std::vector<std::string> out;
  for (int from = first; from <= last; from += chunk) {
    std::string batch;
    for (int i = from; i <= std::min(last, from + chunk - 1); ++i) {
      batch +=
          json({{"jsonrpc", "2.0"},
                {"id", 10000 + i},
                {"method", "send"},
                {"params", {{"to", sid}, {"payload", {{"i", i}, {"pad", std::string(64, 'p')}}}}}})
              .dump() +
          "\n";
    }
    out.push_back(std::move(batch));
  }
  return out;
}

// Writes the chunks 2 ms apart, so the stream is under way for a while.
std::thread PacedWriter(DaemonProcess& a, const std::vector<std::string>& chunks) {
  return std::thread([&a, &chunks] {
    for (const std::string& chunk : chunks) {
      a.rpc.WriteRaw(chunk);
      std::this_thread::sleep_for(2ms);
    }
  });
}

// Waits until b's audit log records `count` received messages; returns how many it records.
std::size_t WaitReceived(DaemonProcess& b, std::size_t count) {
  const auto audit = b.home() / "logs" / "audit.jsonl";
  const auto deadline = std::chrono::steady_clock::now() + 60s;
  while (CountLines(audit, "message.received") < count &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(1ms);
  }
  return CountLines(audit, "message.received");
}

// Every send of the stream was answered, and b's application gets messages 1..count exactly
// once, in order. `context` describes the state when they are not all there.
void CheckStreamDelivered(Mesh& mesh, DaemonProcess& a, DaemonProcess& b, int count) {
  for (int i = 1; i <= count; ++i) {
    json r = a.rpc.ReadResponse(10000 + i, 60s);
    INFO(r.dump());
    REQUIRE(r.contains("result"));
  }
  json got = RecvAll(b, static_cast<std::size_t>(count), 120s);
  INFO((got.size() == static_cast<std::size_t>(count)
            ? std::string()
            : "alice: " + a.rpc.Call("status").dump() + "\nbob: " + b.rpc.Call("status").dump() +
                  "\nrelay metrics: " + HttpGetText(mesh.relay_port(), "/metrics")));
  INFO(mesh.log().substr(0, 20000));
  REQUIRE(got.size() == static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) {
    REQUIRE(got[i]["sequence"] == i + 1);
    REQUIRE(got[i]["payload"]["i"] == i + 1);
  }
  std::this_thread::sleep_for(500ms);
  CHECK(b.rpc.Call("recv", {{"limit", 10000}})["messages"].empty());
}

TEST_CASE(
    "daemon: kill -9 of the receiver during a 1000-message stream loses and duplicates "
    "nothing",
    "[daemon]") {
  StreamMesh m;
  auto& [mesh, a, b, sid] = m;
  // The first half is written in paced chunks while the receiver is killed, the second after
  // the kill: a fast receiver takes a whole pipelined burst in one loop turn, so one batch may
  // be gone before any kill.
  const auto first_half = StreamSends(sid, 1, 500, 10);
  const auto second_half = StreamSends(sid, 501, 1000, 500);
  std::thread writer = PacedWriter(a, first_half);
  const std::size_t at_kill = WaitReceived(b, 150);
  b.Kill9();
  writer.join();
  INFO("received before the kill: " << at_kill);
  CHECK(at_kill >= 150);
  a.rpc.WriteRaw(second_half[0]);
  b.Start();
  CheckStreamDelivered(mesh, a, b, 1000);
}

TEST_CASE("daemon: kill -9 of the relay during a 1000-message stream loses and duplicates nothing",
          "[daemon]") {
  StreamMesh m;
  auto& [mesh, a, b, sid] = m;
  const auto chunks = StreamSends(sid, 1, 1000, 50);
  RpcClient watcher;
  REQUIRE(watcher.Connect(a.socket()));
  std::thread writer = PacedWriter(a, chunks);
  const std::size_t at_kill = WaitReceived(b, 150);
  const int unconfirmed = watcher.Call("status")["outbox"]["pending"];
  mesh.Kill9AndRestartRelay();
  writer.join();
  INFO("received before the kill: " << at_kill << ", unconfirmed: " << unconfirmed);
  CHECK(at_kill >= 150);
  CHECK(unconfirmed > 0);  // messages were in flight
  CheckStreamDelivered(mesh, a, b, 1000);
}

// How many relay messages `d` acked as copies of messages it already had (its debug log).
std::size_t ReplayAcks(DaemonProcess& d) {
  const std::string log = d.log();
  const std::string needle = "already received (or its key was evicted), acked";
  std::size_t n = 0;
  for (auto at = log.find(needle); at != std::string::npos; at = log.find(needle, at + 1)) ++n;
  return n;
}

TEST_CASE(
    "daemon: a relay message delivered again after its ack was lost is acked and not delivered",
    "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  // Bob's daemon withholds its acks for session messages (a test flag), as if each ack were lost.
  auto& b = mesh.Agent("bob", json::array({"travel"}), std::nullopt, {"--test-withhold-acks"});
  const std::string sid = OpenSession(a, b, "conversation");
  for (int i = 1; i <= 5; ++i) a.rpc.Call("send", {{"to", sid}, {"payload", {{"i", i}}}});
  json got = RecvAll(b, 5, 20s);
  REQUIRE(got.size() == 5);
  auto relay_queued = [&] {
    const std::string metrics = HttpGetText(mesh.relay_port(), "/metrics");
    const std::string name = "\namesh_relay_queued_messages ";
    const auto at = metrics.find(name);
    return at == std::string::npos ? -1 : std::stoll(metrics.substr(at + name.size()));
  };
  auto relay_queue_empty = [&] {
    for (int tries = 0; tries < 200 && relay_queued() != 0; ++tries) {
      std::this_thread::sleep_for(50ms);
    }
    return relay_queued() == 0;
  };
  auto copies = [&] { return ReplayAcks(b); };

  SECTION("the session goes on") {
    // Restarted with acks, bob is handed the five again by the relay: each is a ratchet replay.
    CHECK(b.Terminate() == 0);
    CHECK(relay_queued() == 5);
    b.extra_args.clear();
    b.Start();
    REQUIRE(b.WaitRelay());
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (copies() < 5 && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    INFO(mesh.log());
    CHECK(copies() >= 5);
    CHECK(b.rpc.Call("recv", {{"timeout_ms", 300}})["messages"].empty());
    CHECK(relay_queue_empty());
    a.rpc.Call("send", {{"to", sid}, {"payload", {{"i", 6}}}});
    got = RecvAll(b, 1, 10s);
    REQUIRE(got.size() == 1);
    CHECK(got[0]["sequence"] == 6);
    CHECK(got[0]["payload"]["i"] == 6);
  }
  SECTION("the session has ended meanwhile") {
    a.rpc.Call("close", {{"session_id", sid}});
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (!b.rpc.Call("sessions", {{"state", "active"}})["sessions"].empty() &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    REQUIRE(b.rpc.Call("sessions", {{"state", "active"}})["sessions"].empty());
    // Restarted, bob is handed the five and the close again: late messages of an ended session.
    CHECK(b.Terminate() == 0);
    CHECK(relay_queued() == 6);
    b.extra_args.clear();
    b.Start();
    REQUIRE(b.WaitRelay());
    INFO(mesh.log());
    CHECK(relay_queue_empty());
    CHECK(b.rpc.Call("recv", {{"timeout_ms", 300}})["messages"].empty());
    CHECK(b.rpc.Call("sessions", {{"state", "active"}})["sessions"].empty());
  }
}

TEST_CASE("daemon: a message the relay only handed over stays in the outbox until its receipt",
          "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  // Bob withholds his acks for session messages (a test flag): no receipt reaches alice for them.
  // A copy he already has is still acked (as a ratchet replay), and that ack yields a receipt.
  auto& b = mesh.Agent("bob", json::array({"travel"}), std::nullopt, {"--test-withhold-acks"});
  const std::string sid = OpenSession(a, b, "conversation");
  RpcClient watcher;
  REQUIRE(watcher.Connect(a.socket()));
  auto outbox = [&] { return watcher.Call("status")["outbox"]["pending"].get<int>(); };
  const auto settle = [&](int want) {
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    while (outbox() != want && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(20ms);
    }
    return outbox();
  };
  CHECK(settle(0) == 0);  // the KNOCK and its answer are settled
  for (int i = 1; i <= 3; ++i) {
    json sent = a.rpc.Call("send", {{"to", sid}, {"payload", {{"i", i}}}});
    CHECK(sent["delivery"] == "delivered");
  }
  json got = RecvAll(b, 3, 20s);
  REQUIRE(got.size() == 3);
  INFO(mesh.log());
  CHECK(outbox() == 3);

  // The relay dies with the three in its memory only. Alice sends them again after she
  // reconnects; bob acks each copy; the receipts (or the relay's store) empty her outbox.
  a.rpc.Call("subscribe", {{"events", {"relay.disconnected", "relay.connected"}}});
  mesh.Kill9AndRestartRelay();
  CHECK(a.rpc.WaitEvent("relay.disconnected", 20s).has_value());
  CHECK(a.rpc.WaitEvent("relay.connected", 20s).has_value());
  CHECK(settle(0) == 0);
  auto copies = [&] { return ReplayAcks(b); };
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (copies() < 3 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
  }
  CHECK(copies() >= 3);
  CHECK(b.rpc.Call("recv", {{"timeout_ms", 300}})["messages"].empty());
}

TEST_CASE("daemon: kill -9 of the sender during a 1000-message stream loses and duplicates nothing",
          "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"stream"}));
  // Unsigned envelopes (negotiated off on both sides): the AEAD alone authenticates.
  b.rpc.Call("policy.set",
             {{"policy",
               {{"default_constraints", {{"max_messages", 100000}, {"signed_messages", false}}},
                {"rate_limit", {{"messages_per_minute", 1000000}}}}}});
  const std::string sid = OpenSession(a, b, "stream", "x-test", {{"signed_messages", false}});
  CHECK(a.rpc.Call("sessions",
                   {{"state", "active"}})["sessions"][0]["constraints"]["signed_messages"] ==
        false);
  constexpr int kCount = 1000;
  // Each send carries an idempotency key, as a client that retries after a crash does.
  auto sends = [&](int first, int last) {
    std::string batch;
    for (int i = first; i <= last; ++i) {
      batch += json({{"jsonrpc", "2.0"},
                     {"id", i},
                     {"method", "send"},
                     {"params",
                      {{"to", sid},
                       {"idempotency_key", "m" + std::to_string(i)},
                       {"payload", {{"i", i}}}}}})
                   .dump() +
               "\n";
    }
    return batch;
  };
  // 1..300 in chunks of 10, 2 ms apart, then 301..400 at once. After 320 answers the daemon is
  // stopped, 401..1000 are written, and it is killed: some sends are committed but unanswered
  // (an answer waits for the relay's send_result), 401..1000 were never read.
  std::thread writer;
  std::thread rewriter;
  struct KillThenJoin {  // on a failed REQUIRE, too: no joinable thread may be destroyed
    DaemonProcess& d;
    std::thread& t1;
    std::thread& t2;
    ~KillThenJoin() {
      if (t1.joinable() || t2.joinable()) d.process().Kill();
      if (t1.joinable()) t1.join();
      if (t2.joinable()) t2.join();
    }
  } guard{a, writer, rewriter};
  writer = std::thread([&] {
    for (int i = 1; i <= 300; i += 10) {
      a.rpc.WriteRaw(sends(i, i + 9));
      std::this_thread::sleep_for(2ms);
    }
    a.rpc.WriteRaw(sends(301, 400));
  });
  int acknowledged = 0;
  while (acknowledged < 320) {
    json r = a.rpc.ReadResponse(acknowledged + 1, 30s);
    REQUIRE(r.contains("result"));
    CHECK(r["result"]["sequence"] == acknowledged + 1);
    ++acknowledged;
  }
  writer.join();
  REQUIRE(a.process().Stop());
  // 401..1000 reach the socket and stay unread (the write blocks only if its buffers fill).
  rewriter = std::thread([&] { a.rpc.WriteRaw(sends(401, kCount)); });
  std::this_thread::sleep_for(200ms);
  a.process().Kill();  // first, so that a blocked write returns before its socket is closed
  rewriter.join();
  a.Kill9();
  a.Start();
  REQUIRE(a.WaitRelay());
  // The client sends again everything it has no answer for, with the same keys: what the daemon
  // had committed before the kill is answered as a duplicate with its first sequence, the rest
  // is sent now, and every message keeps its place in the stream.
  const std::string again = sends(acknowledged + 1, kCount);
  rewriter = std::thread([&] { a.rpc.WriteRaw(again); });
  int duplicates = 0;
  for (int i = acknowledged + 1; i <= kCount; ++i) {
    json r = a.rpc.ReadResponse(i, 30s);
    INFO(r.dump());
    REQUIRE(r.contains("result"));
    CHECK(r["result"]["sequence"] == i);
    if (r["result"]["delivery"] == "duplicate") ++duplicates;
  }
  rewriter.join();
  CHECK(duplicates <= 400 - acknowledged);  // 401..1000 went out after the restart, not before
  INFO("acknowledged before the kill: " << acknowledged
                                        << ", committed but unanswered: " << duplicates);
  json got = RecvAll(b, kCount, 60s);
  INFO(mesh.log().substr(0, 20000));
  REQUIRE(got.size() == kCount);
  for (std::size_t i = 0; i < got.size(); ++i) {
    REQUIRE(got[i]["sequence"] == i + 1);
    REQUIRE(got[i]["payload"]["i"] == i + 1);
  }
  std::this_thread::sleep_for(500ms);
  CHECK(b.rpc.Call("recv", {{"limit", 10000}})["messages"].empty());
  // The session goes on after the restart.
  json next = a.rpc.Call("send", {{"to", sid}, {"payload", {{"i", -1}}}});
  CHECK(next["sequence"] == kCount + 1);
  json last = RecvAll(b, 1, 10s);
  REQUIRE(last.size() == 1);
  CHECK(last[0]["payload"]["i"] == -1);
}

TEST_CASE("daemon: an idempotency key sends a message at most once", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string sid = OpenSession(a, b, "conversation");
  const json first =
      a.rpc.Call("send", {{"to", sid}, {"idempotency_key", "order-17"}, {"payload", {{"n", 1}}}});
  CHECK(first["sequence"] == 1);
  CHECK(first["delivery"] != "duplicate");
  // Retried, also by AMID and with wait_ms: nothing is sent, the first answer comes back.
  json retry =
      a.rpc.Call("send", {{"to", sid}, {"idempotency_key", "order-17"}, {"payload", {{"n", 1}}}});
  CHECK(retry == json{{"session_id", sid}, {"sequence", 1}, {"delivery", "duplicate"}});
  retry = a.rpc.Call("send", {{"to", Amid(b)},
                              {"intent", "travel"},
                              {"idempotency_key", "order-17"},
                              {"wait_ms", 60000},
                              {"payload", {{"n", 1}}}});
  CHECK(retry["delivery"] == "duplicate");
  CHECK(retry["sequence"] == 1);
  a.rpc.Call("send", {{"to", sid}, {"idempotency_key", "order-18"}, {"payload", {{"n", 2}}}});
  json got = RecvAll(b, 3, 5s);
  REQUIRE(got.size() == 2);
  CHECK(got[0]["payload"]["n"] == 1);
  CHECK(got[1]["payload"]["n"] == 2);
  // reply takes keys too; a key survives a restart of the daemon.
  b.rpc.Call("reply", {{"session_id", sid}, {"idempotency_key", "r1"}, {"payload", {{"ok", 1}}}});
  CHECK(b.Terminate() == 0);
  b.Start();
  json dup = b.rpc.Call("reply",
                        {{"session_id", sid}, {"idempotency_key", "r1"}, {"payload", {{"ok", 1}}}});
  CHECK(dup["delivery"] == "duplicate");
  CHECK(RecvAll(a, 2, 5s).size() == 1);
  // A key names one message: given with another session, it is refused.
  const std::string other = OpenSession(a, b, "conversation");
  json e = a.rpc.CallError(
      "send", {{"to", other}, {"idempotency_key", "order-17"}, {"payload", json::object()}});
  CHECK(e["code"] == -32002);
  CHECK(e["data"]["field"] == "idempotency_key");
  // A second call with a key whose first call is still waiting (here for a KNOCK's answer) is
  // refused: it cannot know yet whether the message goes out.
  auto& c = mesh.Agent("carol", json::array({"travel"}));
  const std::string c_amid = Amid(c);
  REQUIRE(c.process().Stop());  // the KNOCK waits for carol's answer
  const json via_knock = {{"jsonrpc", "2.0"},
                          {"id", 77},
                          {"method", "send"},
                          {"params",
                           {{"to", c_amid},
                            {"intent", "travel"},
                            {"idempotency_key", "k-carol"},
                            {"payload", {{"n", 1}}}}}};
  REQUIRE(a.rpc.WriteRaw(via_knock.dump() + "\n"));
  REQUIRE(WaitAudit(a, {"knock.sent", c_amid}));  // the first call is waiting for the answer
  RpcClient second;
  REQUIRE(second.Connect(a.socket()));
  e = second.CallError("send", {{"to", c_amid},
                                {"intent", "travel"},
                                {"idempotency_key", "k-carol"},
                                {"payload", {{"n", 1}}}});
  CHECK(e["code"] == -32002);
  CHECK(e["message"].get<std::string>().find("in progress") != std::string::npos);
  REQUIRE(c.process().Signal(SIGCONT, false) == 0);
  json first_call = a.rpc.ReadResponse(77);
  INFO(first_call.dump());
  REQUIRE(first_call.contains("result"));
  CHECK(first_call["result"]["sequence"] == 1);
  CHECK(RecvAll(c, 2, 3s).size() == 1);
  // Bad keys are refused with the member named, and nothing is sent.
  for (const json& bad : {json(""), json(std::string(129, 'k')), json("a b"), json(7)}) {
    INFO(bad.dump());
    json refused =
        a.rpc.CallError("send", {{"to", sid}, {"idempotency_key", bad}, {"payload", {{"n", 9}}}});
    CHECK(refused["code"] == -32602);
    CHECK(refused["data"]["field"] == "idempotency_key");
  }
  CHECK(RecvAll(b, 1, 1s).empty());
}

TEST_CASE("daemon: one-time prekeys are replenished below 20", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  b.rpc.Call("policy.set", {{"policy", {{"rate_limit", {{"knocks_per_minute", 10000}}}}}});
  auto remaining = [&] {
    return a.rpc.Call("lookup", {{"amid", Amid(b)}})["one_time_prekeys_remaining"].get<int>();
  };
  CHECK(remaining() == 100);
  for (int i = 0; i < 90; ++i) {
    json r = a.rpc.CallRaw("knock", {{"amid", Amid(b)}, {"intent", "travel"}});
    INFO(r.dump());
    REQUIRE(r.contains("result"));
  }
  std::this_thread::sleep_for(500ms);
  const int left = remaining();
  INFO(mesh.log().substr(0, 5000));
  CHECK(left >= 80);
  CHECK(left <= 100);
}

TEST_CASE("daemon: payload schemas are checked per schema_validation mode", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");  // default mode: warn
  auto& b = mesh.Agent("bob", json::array({"travel"}), json{{"schema_validation", "strict"}});
  const std::string sid = OpenSession(a, b, "conversation");
  const json bad = {
      {"schema", "agentmesh/travel/flight-results/v1"},
      {"status", "success"},
      {"results", json::array({{{"flight", "LH1"}, {"price", -5}, {"currency", "USD"}}})}};
  const json good = {
      {"schema", "agentmesh/travel/flight-results/v1"},
      {"status", "success"},
      {"results", json::array({{{"flight", "LH1"}, {"price", 5}, {"currency", "USD"}}})}};
  // warn (a): sent anyway and audited; strict (b): not delivered, the sender gets an error.
  a.rpc.Call("send", {{"to", sid}, {"payload", bad}});
  json err = a.rpc.Call("recv", {{"session_id", sid}, {"timeout_ms", 10000}});
  INFO(mesh.log().substr(0, 5000));
  REQUIRE(err["messages"].size() == 1);
  CHECK(err["messages"][0]["type"] == "error");
  CHECK(err["messages"][0]["payload"]["code"] == "SCHEMA_VALIDATION_FAILED");
  CHECK(CountLines(a.home() / "logs" / "audit.jsonl", "schema.invalid") == 1);
  CHECK(CountLines(b.home() / "logs" / "audit.jsonl", "schema.invalid") == 1);
  a.rpc.Call("send", {{"to", sid}, {"payload", good}});
  json in = b.rpc.Call("recv", {{"timeout_ms", 10000}});
  REQUIRE(in["messages"].size() == 1);
  CHECK(in["messages"][0]["payload"] == good);
  // strict (b) refuses to send a violating payload, naming the field.
  json refused = b.rpc.CallError("reply", {{"session_id", sid}, {"payload", bad}});
  CHECK(refused["code"] == -32602);
  CHECK(refused["data"]["field"].get<std::string>().starts_with("payload.results"));
  // Payloads naming no schema, or a custom one, are not checked.
  a.rpc.Call("send", {{"to", sid}, {"payload", {{"schema", "x-acme/thing/v1"}, {"n", 1}}}});
  CHECK(RecvAll(b, 1, 10s).size() == 1);
  // off (c): neither sent nor received payloads are checked or audited.
  auto& c = mesh.Agent("carol", json::array({"travel"}), json{{"schema_validation", "off"}});
  const std::string to_c = OpenSession(a, c, "conversation");
  a.rpc.Call("send", {{"to", to_c}, {"payload", bad}});
  json got = RecvAll(c, 1, 10s);
  REQUIRE(got.size() == 1);
  CHECK(got[0]["payload"] == bad);
  c.rpc.Call("reply", {{"session_id", to_c}, {"payload", bad}});  // not refused
  got = RecvAll(a, 1, 10s, {{"session_id", to_c}});
  REQUIRE(got.size() == 1);
  CHECK(got[0]["payload"] == bad);
  CHECK(CountLines(c.home() / "logs" / "audit.jsonl", "schema.invalid") == 0);
}

TEST_CASE("daemon: status and capability negotiation messages keep their types", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel/flights"}));
  const std::string sid = OpenSession(a, b, "request_response");
  const json need = {{"i_need", json::array({"flight_search"})},
                     {"i_offer", json::array({"structured_parameters"})},
                     {"languages", json::array({"en"})}};
  a.rpc.Call("send", {{"to", sid}, {"type", "capability_negotiation"}, {"payload", need}});
  json got = RecvAll(b, 1, 10s);
  REQUIRE(got.size() == 1);
  CHECK(got[0]["type"] == "capability_negotiation");
  CHECK(got[0]["payload"] == need);
  const json match = {{"matched", json::array({"flight_search"})}, {"agreed_language", "en"}};
  b.rpc.Call(
      "reply",
      {{"session_id", sid}, {"type", "capability_negotiation_response"}, {"payload", match}});
  a.rpc.Call("send", {{"to", sid}, {"payload", {{"q", "TLV-LHR"}}}});
  // A status before the response leaves a request_response session open; the response ends it.
  const json status = {{"status", "processing"}, {"progress", 0.6}, {"message", "searching"}};
  REQUIRE(RecvAll(b, 1, 10s).size() == 1);
  b.rpc.Call("reply", {{"session_id", sid}, {"type", "status"}, {"payload", status}});
  got = RecvAll(a, 2, 10s);
  REQUIRE(got.size() == 2);
  CHECK(got[0]["type"] == "capability_negotiation_response");
  CHECK(got[0]["payload"] == match);
  CHECK(got[1]["type"] == "status");
  CHECK(got[1]["payload"] == status);
  CHECK(a.rpc.Call("sessions", {{"state", "active"}})["sessions"].size() == 1);
  b.rpc.Call("reply", {{"session_id", sid}, {"payload", {{"flight", "LH1"}}}});
  got = RecvAll(a, 1, 10s);
  REQUIRE(got.size() == 1);
  CHECK(got[0]["type"] == "response");
  CHECK(a.rpc.Call("sessions", {{"state", "active"}})["sessions"].empty());
  CHECK(b.rpc.Call("sessions", {{"state", "active"}})["sessions"].empty());
}

TEST_CASE("daemon: a session expires on both sides when its TTL passes", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string sid = OpenSession(a, b, "conversation", "travel", {{"ttl_seconds", 2}});
  a.rpc.Call("send", {{"to", sid}, {"payload", {{"n", 1}}}});
  CHECK(RecvAll(b, 1, 5s).size() == 1);
  auto state_of = [&](DaemonProcess& d) {
    json sessions = d.rpc.Call("sessions");
    for (auto& s : sessions["sessions"]) {
      if (s["session_id"] == sid) return s["state"].get<std::string>();
    }
    return std::string("missing");
  };
  // Both sides end it by themselves (housekeeping), without a message or a close.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((state_of(a) != "expired" || state_of(b) != "expired") &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
  }
  CHECK(state_of(a) == "expired");
  CHECK(state_of(b) == "expired");
  json e = a.rpc.CallError("send", {{"to", sid}, {"payload", {{"n", 2}}}});
  CHECK(e["code"] == -32002);
  CHECK(b.rpc.CallError("reply", {{"session_id", sid}, {"payload", {{"n", 3}}}})["code"] == -32002);
  CHECK(CountLines(a.home() / "logs" / "audit.jsonl", "\"reason\":\"ttl\"") >= 1);
}

TEST_CASE("daemon: constraint breach closes the session", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  b.rpc.Call("policy.set",
             {{"policy",
               {{"default_constraints", {{"max_messages", 3}, {"max_message_size_bytes", 600}}}}}});
  b.rpc.Call("subscribe", {{"events", json::array({"session.closed"})}});
  const std::string sid = OpenSession(a, b, "conversation");
  json big = a.rpc.CallError("send", {{"to", sid}, {"payload", {{"x", std::string(1000, 'x')}}}});
  CHECK(big["code"] == -32005);
  for (int i = 0; i < 3; ++i) a.rpc.Call("send", {{"to", sid}, {"payload", {{"i", i}}}});
  json over = a.rpc.CallError("send", {{"to", sid}, {"payload", {{"i", 4}}}});
  CHECK(over["code"] == -32005);
  auto closed = b.rpc.WaitEvent("session.closed", 10s);
  INFO(mesh.log());
  REQUIRE(closed.has_value());
  CHECK((*closed)["session"]["session_id"] == sid);
  CHECK(RecvAll(b, 3, 10s).size() == 3);
}

TEST_CASE("daemon: circuit breakers - kill shutdown block emergency_stop", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  const auto marker = mesh.dir() / "stopped.txt";
  auto& b = mesh.Agent(
      "bob", json::array({"travel"}),
      json{{"stop_command", json::array({"/bin/sh", "-c", "echo stopped > " + marker.string()})}});
  std::string s1 = OpenSession(a, b, "conversation");
  json killed = b.rpc.Call("kill", {{"session_id", s1}});
  CHECK(killed["state"] == "killed");
  CHECK(b.rpc.CallError("kill", {{"session_id", s1}})["code"] == -32002);
  CHECK(b.rpc.CallError("kill", {{"session_id", "3b241101-e2bb-4255-8caf-4136c566a962"}})["code"] ==
        -32001);

  std::string s2 = OpenSession(a, b, "conversation");
  json shut = b.rpc.Call("shutdown");
  CHECK(shut["sessions_closed"] == 1);
  CHECK(shut["paused"] == true);
  CHECK(a.rpc.CallError("knock", {{"amid", Amid(b)}, {"intent", "travel"}})["data"]["reason"] ==
        "paused");
  b.rpc.Call("resume");

  std::string s3 = OpenSession(a, b, "conversation");
  json blocked = b.rpc.Call("block", {{"amid", Amid(a)}});
  CHECK(blocked["sessions_killed"] == 1);
  b.rpc.Call("unblock", {{"amid", Amid(a)}});

  std::string s4 = OpenSession(a, b, "conversation");
  json es = b.rpc.Call("emergency_stop");
  CHECK(es["sessions_killed"] == 1);
  CHECK(es["stop_command"]["ran"] == true);
  CHECK(es["stop_command"]["exit_status"] == 0);
  CHECK(ReadAll(marker) == "stopped\n");
  CHECK(b.rpc.Call("status")["paused"] == true);
  const auto audit = mesh.dir() / "bob" / "logs" / "audit.jsonl";
  CHECK(CountLines(audit, "\"circuit_breaker\"") >= 4);
}

TEST_CASE("daemon: policy reload on SIGHUP and on file change", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  WritePolicy(b, {{"blocklist", json::array({Amid(a)})}});
  b.Hup();
  std::this_thread::sleep_for(300ms);
  json e = a.rpc.CallError("knock", {{"amid", Amid(b)}, {"intent", "travel"}});
  CHECK(e["data"]["reason"] == "blocked");
  CHECK(b.rpc.Call("policy.get")["policy"]["blocklist"] == json::array({Amid(a)}));
  // An invalid file keeps the running policy.
  std::ofstream(b.home() / "policy.json") << R"({"min_reputation": "high"})";
  b.Hup();
  std::this_thread::sleep_for(300ms);
  CHECK(b.rpc.Call("policy.get")["policy"]["blocklist"] == json::array({Amid(a)}));
  CHECK(b.log().find("min_reputation") != std::string::npos);  // the error names the key
  // Edited without a signal: picked up within a couple of seconds.
  WritePolicy(b, json::object());
  std::this_thread::sleep_for(2500ms);
  CHECK(b.rpc.Call("policy.get")["policy"]["blocklist"].empty());
  CHECK(a.rpc.Call("knock", {{"amid", Amid(b)}, {"intent", "travel"}})["state"] == "active");
  // Audited: the reload on SIGHUP and the one on change.
  const auto audit = b.home() / "logs" / "audit.jsonl";
  CHECK(CountLines(audit, "\"trigger\":\"sighup\"") >= 1);
  CHECK(CountLines(audit, "\"trigger\":\"file_changed\"") >= 1);
}

TEST_CASE("daemon: payload plaintext never reaches the relay store or the daemon database",
          "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string sid = OpenSession(a, b, "conversation");
  const std::string marker = "MARKER-7c1e0f-PLAINTEXT";
  CHECK(b.Terminate() == 0);
  for (int i = 0; i < 3; ++i) {
    CHECK(a.rpc.Call("send", {{"to", sid}, {"payload", {{"secret", marker}}}})["delivery"] ==
          "queued");
  }
  // Queued in the relay's store now.
  for (const char* f : {"relay.db", "relay.db-wal"}) {
    INFO(f);
    CHECK(ReadAll(mesh.dir() / f).find(marker) == std::string::npos);
  }
  WritePolicy(b, {{"store_transcripts", true}});
  b.Start();
  json got = RecvAll(b, 3, 20s);
  REQUIRE(got.size() == 3);
  CHECK(got[0]["payload"]["secret"] == marker);
  // Transcripts are sealed too: readable through the daemon only.
  json transcript = b.rpc.Call("transcript", {{"session_id", sid}})["messages"];
  REQUIRE(transcript.size() == 3);
  CHECK(transcript[0]["direction"] == "in");
  CHECK(transcript[0]["envelope"]["payload"]["secret"] == marker);
  CHECK(transcript[0]["envelope"]["signature"].is_string());
  for (const auto* home : {"alice", "bob"}) {
    for (const char* f : {"agentmesh.db", "agentmesh.db-wal"}) {
      INFO(home << "/" << f);
      CHECK(ReadAll(mesh.dir() / home / f).find(marker) == std::string::npos);
    }
  }
}

#endif  // AMESH_REGISTRY_BIN

// ---- issue 5 follow-ups: events, socket path, child processes, rates, optimistic send, prekey
// rotation, presence, sd_notify.

TEST_CASE("daemon: events nest their payload - an audit record keeps its own type", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string sid = OpenSession(a, b, "conversation");
  a.rpc.Call("subscribe", {{"events", json::array({"audit", "delivery.status"})}});
  a.rpc.Call("send", {{"to", sid}, {"payload", {{"q", 1}}}});
  std::optional<json> sent;
  for (int i = 0; i < 20 && !sent; ++i) {
    auto ev = a.rpc.WaitEvent("audit", 5s);
    REQUIRE(ev.has_value());
    CHECK((*ev)["type"] == "audit");
    CHECK((*ev)["subscription"].is_number());
    if ((*ev)["record"]["event"] == "message.sent") sent = *ev;
  }
  INFO(mesh.log());
  REQUIRE(sent.has_value());
  // The record's own "type" (the envelope type) is intact, nested under "record".
  CHECK((*sent)["record"]["type"] == "request");
  CHECK((*sent)["record"]["session_id"] == sid);
  auto delivery = a.rpc.WaitEvent("delivery.status", 5s);
  REQUIRE(delivery.has_value());
  CHECK((*delivery)["delivery"]["session_id"] == sid);
  CHECK((*delivery)["delivery"]["sequence"] == 1);
}

TEST_CASE("daemon: an explicit home beats XDG_RUNTIME_DIR for the socket", "[daemon]") {
  TempDir dir;
  const auto run = dir.path() / "run";
  std::filesystem::create_directories(run);
  ::setenv("XDG_RUNTIME_DIR", run.c_str(), 1);
  ::unsetenv("AGENTMESH_SOCKET");
  ChildProcess one, two;
  const auto h1 = dir.path() / "h1", h2 = dir.path() / "h2";
  REQUIRE(one.Start({AGENTMESHD_BIN, "--foreground", "--home", h1.string()}, dir.path() / "1.log"));
  ::setenv("AGENTMESH_HOME", h2.c_str(), 1);
  REQUIRE(two.Start({AGENTMESHD_BIN, "--foreground"}, dir.path() / "2.log"));
  ::unsetenv("AGENTMESH_HOME");
  ::unsetenv("XDG_RUNTIME_DIR");
  INFO(one.StderrLog() << two.StderrLog());
  REQUIRE(one.WaitForLine("listening on", 30s).has_value());
  REQUIRE(two.WaitForLine("listening on", 30s).has_value());
  RpcClient c1, c2;
  REQUIRE(c1.Connect((h1 / "agentmeshd.sock").string()));
  REQUIRE(c2.Connect((h2 / "agentmeshd.sock").string()));
  CHECK(c1.Call("status")["home"] == h1.string());
  CHECK(c2.Call("status")["home"] == h2.string());
  CHECK_FALSE(std::filesystem::exists(run / "agentmesh" / "agentmeshd.sock"));
}

TEST_CASE("daemon: $XDG_RUNTIME_DIR/agentmesh is made private, and refused if not ours",
          "[daemon]") {
  TempDir dir;
  const auto run = dir.path() / "run";
  const auto socket_dir = run / "agentmesh";
  std::filesystem::create_directories(socket_dir);
  ::chmod(socket_dir.c_str(), 0755);  // left open by someone, before the daemon's first start
  const std::string saved_home = std::getenv("HOME") != nullptr ? std::getenv("HOME") : "";
  auto start = [&](ChildProcess& d, const std::string& log) {
    ::setenv("XDG_RUNTIME_DIR", run.c_str(), 1);
    ::setenv("HOME", (dir.path() / "user").c_str(), 1);
    ::unsetenv("AGENTMESH_SOCKET");
    ::unsetenv("AGENTMESH_HOME");
    const bool started = d.Start({AGENTMESHD_BIN, "--foreground"}, dir.path() / log);
    ::unsetenv("XDG_RUNTIME_DIR");
    ::setenv("HOME", saved_home.c_str(), 1);
    return started;
  };
  {
    ChildProcess d;
    REQUIRE(start(d, "1.log"));
    INFO(d.StderrLog());
    REQUIRE(d.WaitForLine("listening on", 30s).has_value());
    struct stat st {};
    REQUIRE(::stat(socket_dir.c_str(), &st) == 0);
    CHECK((st.st_mode & 07777) == 0700);
    REQUIRE(::stat((socket_dir / "agentmeshd.sock").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(d.Signal(SIGTERM, true) == 0);
  }
  // The daemon exits 1 by itself, saying `why`.
  auto refused = [&](const std::string& log, const std::string& why) {
    ChildProcess d;
    REQUIRE(start(d, log));
    const int status = d.Signal(0, true, 20s);
    INFO(d.StderrLog());
    REQUIRE(status != -1);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 1);
    CHECK(d.StderrLog().find(why) != std::string::npos);
  };
  // A symlink in its place is refused (it could point anywhere).
  const auto moved = run / "elsewhere";
  std::filesystem::rename(socket_dir, moved);
  std::filesystem::create_directory_symlink(moved, socket_dir);
  refused("symlink.log", "not a directory");
  std::filesystem::remove(socket_dir);
  std::filesystem::rename(moved, socket_dir);
  if (::getuid() != 0) {
    WARN("not root: the foreign-owner case needs chown");
    return;
  }
  REQUIRE(::chown(socket_dir.c_str(), 65534, 65534) == 0);
  refused("2.log", "belongs to uid 65534");
}

TEST_CASE("daemon: a connection from another uid is closed before it is read", "[daemon]") {
  if (::getuid() != 0) {
    WARN("not root: cannot connect as another uid");
    return;
  }
  TempDir dir;
  // A socket another uid can reach: the parent directories searchable, the socket 0666.
  ::chmod(dir.path().c_str(), 0711);
  DaemonProcess d(dir.path() / "home", "http://127.0.0.1:9", "ws://127.0.0.1:9/v1/connect");
  d.Start();
  ::chmod(d.home().c_str(), 0711);
  REQUIRE(::chmod(d.socket().c_str(), 0666) == 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, d.socket().c_str(), sizeof addr.sun_path - 1);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // Exit status: 0 closed unanswered, 1 answered, 2 setup failed, 3 could not connect.
    if (::setgid(65534) != 0 || ::setuid(65534) != 0) ::_exit(2);
    const int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) ::_exit(2);
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) ::_exit(3);
    const char ping[] = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\n";
    // The daemon may close before this write; MSG_NOSIGNAL keeps that from raising SIGPIPE.
    (void)!::send(fd, ping, sizeof ping - 1, MSG_NOSIGNAL);
    char buf[256];
    const ssize_t n = ::read(fd, buf, sizeof buf);
    ::_exit(n > 0 ? 1 : 0);
  }
  int status = 0;
  REQUIRE(::waitpid(child, &status, 0) == child);
  INFO(d.log());
  INFO("child wait status " << status);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(d.log().find("refused a connection from uid 65534") != std::string::npos);
  // The daemon's own user still gets answers.
  CHECK(d.rpc.Call("ping").is_object());
}

// CPU time a process has used so far (user + system), in clock ticks, from /proc/PID/stat.
long CpuTicks(pid_t pid) {
  const std::string stat = ReadAll("/proc/" + std::to_string(pid) + "/stat");
  // Fields after the command name in parentheses, from field 3 (state); utime is 14, stime 15.
  std::istringstream in(stat.substr(stat.rfind(')') + 2));
  std::string field;
  long ticks = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14 || i == 15) ticks += std::stol(field);
  }
  return ticks;
}

TEST_CASE("daemon: rpc_busy_poll_us polls after each request and an idle daemon sleeps",
          "[daemon]") {
  TempDir dir;
  const std::string registry = "http://127.0.0.1:9", relay = "ws://127.0.0.1:9/v1/connect";
  for (const json& bad : {json(10001), json(-1), json("50")}) {
    DaemonProcess d(dir.path() / "bad", registry, relay);
    std::ofstream(d.home() / "config.json") << json{{"rpc_busy_poll_us", bad}}.dump();
    d.Start(false);
    const int status = d.process().Signal(0, true, 10s);  // it exits by itself
    INFO(bad.dump() << ": " << d.log());
    REQUIRE(status != -1);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) != 0);
    CHECK(d.log().find("rpc_busy_poll_us") != std::string::npos);
  }

  DaemonProcess d(dir.path() / "home", registry, relay);
  std::ofstream(d.home() / "config.json") << json{{"rpc_busy_poll_us", 10000}}.dump();
  d.Start();
  const pid_t pid = d.process().pid();
  // Back-to-back calls: each arrives within 10 ms of the last read, while the daemon polls. Even
  // when it yields the CPU to other tasks, it has not slept: the read counts as a busy-poll read.
  auto pings = [&] {
    const json before = d.rpc.Call("status")["rpc"];
    for (int i = 0; i < 40; ++i) d.rpc.Call("ping");
    const json after = d.rpc.Call("status")["rpc"];
    CHECK(after["reads"].get<int>() - before["reads"].get<int>() >= 41);
    return after["busy_poll_reads"].get<int>() - before["busy_poll_reads"].get<int>();
  };
  const json status = d.rpc.Call("status")["rpc"];
  CHECK(status["busy_poll_us"] == 10000);
  CHECK(status["connections"] == 1);
  const int polled = pings();
  CHECK(polled >= 20);
  // Idle: no CPU burnt once the window after the last read has passed.
  std::this_thread::sleep_for(100ms);
  const long idle_before = CpuTicks(pid);
  std::this_thread::sleep_for(1s);
  const long idle = CpuTicks(pid) - idle_before;
  const long ticks_per_second = ::sysconf(_SC_CLK_TCK);
  INFO("polled " << polled << ", idle ticks " << idle << " of " << ticks_per_second << "/s");
  CHECK(idle * 20 <= ticks_per_second);  // at most 50 ms in that second

  // A request answered later (recv waiting) also starts a window, and the window ends: a call
  // 200 ms after it is read by a sleeping loop.
  RpcClient waiter;
  REQUIRE(waiter.Connect(d.socket()));
  const int before_wait = d.rpc.Call("status")["rpc"]["busy_poll_reads"];
  std::this_thread::sleep_for(50ms);
  REQUIRE(waiter.WriteRaw(R"({"jsonrpc":"2.0","id":1,"method":"recv","params":{"timeout_ms":600}})"
                          "\n"));
  std::this_thread::sleep_for(200ms);
  CHECK(d.rpc.Call("status")["rpc"]["busy_poll_reads"] == before_wait);
  CHECK(waiter.ReadResponse(1, 10s).contains("result"));

  // 0 turns it off, on a reload.
  std::ofstream(d.home() / "config.json") << json{{"rpc_busy_poll_us", 0}}.dump();
  d.Hup();
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (d.rpc.Call("status")["rpc"]["busy_poll_us"] != 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(10ms);
  }
  CHECK(pings() == 0);
  CHECK(d.Terminate() == 0);
}

TEST_CASE("daemon: stopping while the emergency_stop command still runs exits cleanly",
          "[daemon]") {
  TempDir dir;
  DaemonProcess d(dir.path() / "home", "http://127.0.0.1:9", "ws://127.0.0.1:9/v1/connect");
  const auto pid_file = dir.path() / "stop.pid";
  std::ofstream(d.home() / "config.json")
      << json{{"stop_command", json::array({"/bin/sh", "-c",
                                            "echo $$ > " + pid_file.string() + "; exec sleep 30"})}}
             .dump();
  d.Start();
  REQUIRE(d.rpc.WriteRaw(R"({"jsonrpc":"2.0","id":77,"method":"emergency_stop"})"
                         "\n"));
  std::this_thread::sleep_for(300ms);  // the child is running now
  // (No other call on this connection: answers come back in request order.)
  CHECK(WaitAudit(d, {"circuit_breaker", "emergency_stop"}));
  const auto started = std::chrono::steady_clock::now();
  const int status = d.Terminate();  // waits up to 10 s
  INFO(d.log());
  REQUIRE(status != -1);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(std::chrono::steady_clock::now() - started < 5s);
  CHECK(d.log().find("AddressSanitizer") == std::string::npos);
  // The command outlived the daemon (unwatched); end it here.
  const std::string pid_text = ReadAll(pid_file);
  REQUIRE_FALSE(pid_text.empty());
  const pid_t pid = static_cast<pid_t>(std::stol(pid_text));
  CHECK(::kill(pid, 0) == 0);
  ::kill(pid, SIGKILL);
}

TEST_CASE("daemon: messages_per_minute from the ACCEPT is enforced by both sides", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  b.rpc.Call("policy.set", {{"policy", {{"rate_limit", {{"messages_per_minute", 3}}}}}});
  const std::string sid = OpenSession(a, b, "conversation");
  for (int i = 0; i < 3; ++i) a.rpc.Call("send", {{"to", sid}, {"payload", {{"i", i}}}});
  // The sender refuses the 4th within the minute; the session stays open.
  json over = a.rpc.CallError("send", {{"to", sid}, {"payload", {{"i", 3}}}});
  INFO(mesh.log());
  CHECK(over["code"] == -32005);
  CHECK(over["data"]["messages_per_minute"] == 3);
  CHECK(over["data"]["retry_after_seconds"].get<int>() >= 1);
  CHECK(RecvAll(b, 3, 10s).size() == 3);
  json sessions = a.rpc.Call("sessions", {{"state", "active"}});
  REQUIRE(sessions["sessions"].size() == 1);

  // A sender that forgets its bucket (here: restarted) and keeps going is cut off by the receiver.
  b.rpc.Call("subscribe", {{"events", json::array({"session.closed"})}});
  a.Terminate();
  a.Start();
  REQUIRE(a.WaitRelay());
  // The first one is already over bob's limit; bob's close may reach alice before the others.
  a.rpc.Call("send", {{"to", sid}, {"payload", {{"j", 0}}}});
  for (int i = 1; i < 3; ++i) a.rpc.CallRaw("send", {{"to", sid}, {"payload", {{"j", i}}}});
  auto closed = b.rpc.WaitEvent("session.closed", 10s);
  REQUIRE(closed.has_value());
  CHECK((*closed)["session"]["session_id"] == sid);
  CHECK((*closed)["session"]["reason"] == "rate_limit_exceeded");
  CHECK(WaitAudit(b, {"constraint.violated", "messages_per_minute", sid}));
}

TEST_CASE("daemon: optimistic send to an allowlisted peer - accepted and rejected", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string b_amid = Amid(b);
  a.rpc.Call("allow", {{"amid", b_amid}});

  // Accepted: the message sent with the KNOCK is delivered once the KNOCK is accepted.
  json sent = a.rpc.Call("send", {{"to", b_amid},
                                  {"intent", "travel"},
                                  {"payload", {{"q", "optimistic"}}},
                                  {"session_type", "conversation"}});
  INFO(mesh.log());
  CHECK(sent["optimistic"] == true);
  CHECK(sent["sequence"] == 1);
  json got = RecvAll(b, 1, 10s);
  REQUIRE(got.size() == 1);
  CHECK(got[0]["payload"]["q"] == "optimistic");
  CHECK(got[0]["session_id"] == sent["session_id"]);
  // The KNOCK and the message left together: knock.sent and message.sent of that session
  // follow each other in alice's audit log, before the session opened.
  {
    std::ifstream in(a.home() / "logs" / "audit.jsonl");
    std::string line;
    std::vector<std::string> order;
    const std::string sid = sent["session_id"];
    while (std::getline(in, line)) {
      if (line.find(sid) == std::string::npos) continue;
      for (const char* e : {"knock.sent", "message.sent", "session.opened"}) {
        if (line.find(std::string("\"event\":\"") + e + "\"") != std::string::npos) {
          order.push_back(e);
        }
      }
    }
    CHECK(order == std::vector<std::string>{"knock.sent", "message.sent", "session.opened"});
  }

  // Rejected: bob refuses commerce; the early message is dropped unread and audited.
  b.rpc.Call("policy.set", {{"policy", {{"rejected_intents", json::array({"commerce"})}}}});
  const json dropped = {{"to", b_amid},
                        {"intent", "commerce"},
                        {"payload", {{"q", "dropped"}}},
                        {"session_type", "conversation"},
                        {"idempotency_key", "dropped-1"}};
  json err = a.rpc.CallError("send", dropped);
  CHECK(err["code"] == -32011);
  CHECK(err["data"]["reason"] == "intent_not_accepted");
  CHECK(err["data"]["message_dropped"] == true);
  CHECK(WaitAudit(b, {"message.dropped", "knock_rejected"}));
  CHECK(b.rpc.Call("recv", {{"timeout_ms", 500}})["messages"].empty());
  // The dropped message did not use up its key: a retry knocks again (and is rejected again).
  err = a.rpc.CallError("send", dropped);
  CHECK(err["code"] == -32011);
  CHECK(err["data"]["message_dropped"] == true);

  // Only the first message goes ahead of the answer: another send to the pending session waits
  // for nothing and is refused (the receiver would hold only a few).
  REQUIRE(b.process().Stop());
  REQUIRE(a.rpc.WriteRaw(json{{"jsonrpc", "2.0"},
                              {"id", 9001},
                              {"method", "send"},
                              {"params",
                               {{"to", b_amid},
                                {"intent", "weather"},
                                {"payload", {{"q", "first"}}},
                                {"session_type", "conversation"}}}}
                             .dump() +
                         "\n"));
  RpcClient other;
  REQUIRE(other.Connect(a.socket()));
  std::string pending;
  for (int i = 0; i < 200 && pending.empty(); ++i) {
    const json listed = other.Call("sessions", {{"state", "pending"}});
    if (!listed["sessions"].empty()) pending = listed["sessions"][0]["session_id"];
    if (pending.empty()) std::this_thread::sleep_for(10ms);
  }
  REQUIRE_FALSE(pending.empty());
  json second = other.CallError("send", {{"to", pending}, {"payload", {{"q", "second"}}}});
  CHECK(second["code"] == -32002);
  CHECK(second["message"].get<std::string>().find("pending") != std::string::npos);
  b.process().Signal(SIGCONT, false);
  json first = a.rpc.ReadResponse(9001);
  INFO(first.dump());
  CHECK(first["result"]["optimistic"] == true);
  got = RecvAll(b, 1, 10s);
  REQUIRE(got.size() == 1);
  CHECK(got[0]["payload"]["q"] == "first");
}

TEST_CASE("daemon: the signed prekey rotates after 7 days and the old one works for 24 h",
          "[daemon]") {
  Mesh mesh;
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string b_amid = Amid(b);
  const std::string bundle_path = "/v1/registry/prekeys/" + b_amid;
  json bundle = HttpGetJson(mesh.registry_port(), bundle_path);
  INFO(bundle.dump());
  REQUIRE(bundle.is_object());
  const auto old_id = bundle["signed_prekey_id"].get<std::uint32_t>();

  // Bob goes offline; alice (7 days and an hour later) knocks with the bundle holding the old key.
  b.Terminate();
  const std::string later = std::to_string(7 * 86400 + 3600);
  auto& a = mesh.Agent("alice", json::array(), std::nullopt, {"--test-clock-offset", later});
  REQUIRE(a.rpc.WriteRaw(json{{"jsonrpc", "2.0"},
                              {"id", 900},
                              {"method", "knock"},
                              {"params",
                               {{"amid", b_amid},
                                {"intent", "travel"},
                                {"type", "conversation"},
                                {"timeout_ms", 30000}}}}
                             .dump() +
                         "\n"));
  // The KNOCK is queued at the relay (encrypted to the old signed prekey) before bob is back.
  REQUIRE(WaitAudit(a, {"knock.sent"}));
  std::this_thread::sleep_for(300ms);

  // Bob restarts 7 days later: it rotates at once, uploads the new key, and still answers the
  // KNOCK made with the old one (kept 24 h).
  b.extra_args = {"--test-clock-offset", later};
  b.Start();
  json knocked = a.rpc.ReadResponse(900, 30s);
  INFO(mesh.log());
  REQUIRE(knocked.contains("result"));
  CHECK(knocked["result"]["state"] == "active");
  const std::string sid = knocked["result"]["session_id"];
  a.rpc.Call("send", {{"to", sid}, {"payload", {{"after", "rotation"}}}});
  CHECK(RecvAll(b, 1, 10s).size() == 1);

  std::uint32_t new_id = old_id;
  const auto deadline = std::chrono::steady_clock::now() + 15s;
  while (new_id == old_id && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(200ms);
    json now = HttpGetJson(mesh.registry_port(), bundle_path);
    if (now.is_object() && now.contains("signed_prekey_id")) {
      new_id = now["signed_prekey_id"].get<std::uint32_t>();
    }
  }
  CHECK(new_id != old_id);

  // 25 hours after the rotation the old key is gone: a KNOCK made with it no longer opens.
  CHECK(b.Terminate() == 0);
  b.extra_args = {"--test-clock-offset", std::to_string(7 * 86400 + 3600 + 25 * 3600)};
  b.Start();
  const std::string deleted = "signed prekey " + std::to_string(old_id) + " deleted";
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (b.log().find(deleted) == std::string::npos && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(50ms);
  }
  CHECK(b.log().find(deleted) != std::string::npos);
  CHECK(b.Terminate() == 0);
  auto store = agentmesh::daemon::Store::Open((b.home() / "agentmesh.db").string());
  REQUIRE(store.has_value());
  auto keys = store->LoadSignedPrekeys();
  REQUIRE(keys.has_value());
  REQUIRE(keys->size() == 1);
  CHECK((*keys)[0].id == new_id);
}

TEST_CASE("daemon: presence is online while connected and offline after a clean stop", "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob", json::array({"travel"}));
  const std::string b_amid = Amid(b);
  auto presence = [&] { return a.rpc.Call("lookup", {{"amid", b_amid}})["status"]; };
  const auto wait_for = [&](const std::string& want) {
    const auto deadline = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < deadline) {
      if (presence() == want) return true;
      std::this_thread::sleep_for(100ms);
    }
    return false;
  };
  INFO(mesh.log());
  CHECK(wait_for("online"));
  // Bob records it when the registry's answer reaches him, which may come after alice's lookup.
  json status = b.rpc.Call("status");
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (status["registry"]["presence"] != "online" &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    status = b.rpc.Call("status");
  }
  CHECK(status["registry"]["presence"] == "online");
  CHECK(status["registry"]["registered"] == true);
  const int code = b.Terminate();
  CHECK(WIFEXITED(code));
  CHECK(wait_for("offline"));
}

TEST_CASE("daemon: sd_notify READY=1 once listening and STOPPING=1 on shutdown", "[daemon]") {
  TempDir dir;
  const auto path = dir.path() / "notify.sock";
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  auto receive = [fd](std::chrono::milliseconds timeout) -> std::string {
    pollfd pfd{fd, POLLIN, 0};
    if (::poll(&pfd, 1, static_cast<int>(timeout.count())) <= 0) return {};
    char buf[512];
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : std::string();
  };
  DaemonProcess d(dir.path() / "home", "http://127.0.0.1:9", "ws://127.0.0.1:9/v1/connect");
  ::setenv("NOTIFY_SOCKET", path.c_str(), 1);
  d.Start();
  ::unsetenv("NOTIFY_SOCKET");
  const std::string ready = receive(10s);
  INFO(d.log());
  CHECK(ready.find("READY=1") != std::string::npos);
  CHECK(ready.find("MAINPID=" + std::to_string(d.process().pid())) != std::string::npos);
  // Ready means the socket answers.
  CHECK(d.rpc.Call("ping")["pong"] == true);
  d.Terminate();
  CHECK(receive(10s) == "STOPPING=1");
  ::close(fd);
}

// A rogue relay client (not a daemon, so nothing stops it from sending garbage) sends bob's
// daemon frames no honest sender produces. Each is dropped, none reaches bob's application, and
// bob keeps serving: a real session afterwards works end to end.
TEST_CASE("daemon: hostile relay messages from a rogue client are dropped and change nothing",
          "[daemon]") {
  Mesh mesh;
  auto& a = mesh.Agent("alice");
  auto& b = mesh.Agent("bob");
  const std::string bob = Amid(b);
  INFO(mesh.log());

  agentmesh::DeterministicRng rng(77);
  const auto rogue_id = agentmesh::Ed25519KeyPair::Generate(rng);
  WsTestClient rogue;
  REQUIRE(rogue.ConnectAs(mesh.relay_url(), rogue_id));
  auto random_b64 = [&](std::size_t n) {
    agentmesh::Bytes bytes(n);
    rng.Fill(agentmesh::MutableByteView(bytes.data(), bytes.size()));
    return agentmesh::Base64Encode(bytes);
  };
  const std::vector<std::pair<std::string, std::string>> hostile = {
      {"message", "not base64 at all !!!"}, {"message", ""},
      {"message", random_b64(40)},          {"message", random_b64(600)},
      {"message", random_b64(45'000)},  // near the relay's 64 KiB frame limit
      {"knock", random_b64(300)},           {"knock", random_b64(4)},
      {"close", random_b64(120)},           {"no_such_type", random_b64(64)},
  };
  int i = 0;
  for (const auto& [type, payload] : hostile) {
    REQUIRE(rogue.Send(json{{"type", "send"},
                            {"to", bob},
                            {"id", "rogue-" + std::to_string(i++)},
                            {"encrypted_payload", payload},
                            {"message_type", type}}));
  }
  // The relay answers each send (delivered, queued or refused); bob's daemon gets the delivered
  // ones while this waits.
  int answers = 0;
  int delivered = 0;
  json answered = json::array();
  while (answers < static_cast<int>(hostile.size())) {
    auto frame = rogue.Recv(10s);
    if (!frame) break;
    answered.push_back(*frame);
    if ((*frame)["type"] == "send_result" || (*frame)["type"] == "error") ++answers;
    if ((*frame)["status"] == "delivered") ++delivered;
  }
  INFO(answered.dump());
  CHECK(answers == static_cast<int>(hostile.size()));

  // Bob is alive, still connected, and nothing reached his inbox.
  CHECK(b.rpc.Call("ping").is_object());
  CHECK(b.rpc.Call("recv", {{"timeout_ms", 500}})["messages"].empty());
  CHECK(b.rpc.Call("status")["relay"]["connected"] == true);
  CHECK(b.rpc.Call("sessions", json::object())["sessions"].empty());
  // Bob answered every delivered one (acked or nacked), so the relay holds none of them for a
  // later redelivery.
  auto metric = [&](const std::string& text, const std::string& name) {
    const auto at = text.find("\n" + name + " ");
    return at == std::string::npos ? -1 : std::stoll(text.substr(at + name.size() + 2));
  };
  std::string metrics;
  for (int tries = 0; tries < 100; ++tries) {
    metrics = HttpGetText(mesh.relay_port(), "/metrics");
    if (metric(metrics, "amesh_relay_acked_total") + metric(metrics, "amesh_relay_nacked_total") >=
        delivered) {
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  INFO(metrics);
  CHECK(delivered > 0);
  CHECK(metric(metrics, "amesh_relay_acked_total") + metric(metrics, "amesh_relay_nacked_total") ==
        delivered);
  CHECK(metric(metrics, "amesh_relay_queued_messages") == 0);

  // And an honest session still works in both directions.
  const std::string sid = OpenSession(a, b, "conversation");
  a.rpc.Call("send", {{"to", sid}, {"payload", {{"after", "rogue"}}}});
  json got = b.rpc.Call("recv", {{"timeout_ms", 10000}});
  REQUIRE(got["messages"].size() == 1);
  CHECK(got["messages"][0]["payload"]["after"] == "rogue");
  CHECK(got["messages"][0]["from"] == Amid(a));
}
