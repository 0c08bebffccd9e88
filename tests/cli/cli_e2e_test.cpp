// amesh end to end against the real agentmeshd (started by amesh itself), and, when amesh-relay
// and amesh-registry are built, two agents that find each other, knock and exchange encrypted
// messages through them.
#include <sys/wait.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <iterator>
#include <set>
#include <sstream>
#include <thread>

#include "cli.hpp"
#include "harness.hpp"
#include "input.hpp"
#include "process.hpp"

using agentmesh::testing::ChildProcess;
using amesh::test::Amesh;
using amesh::test::RunOptions;
using amesh::test::RunResult;
using amesh::test::ScratchDir;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

// One agent: its home and socket inside `dir`, amesh run in-process with that environment.
class Agent {
 public:
  Agent(const ScratchDir& dir, const std::string& name)
      : home_(dir.path() / name), socket_(dir.path() / (name + ".sock")) {
    options_.env = {{"AGENTMESH_HOME", home_.string()},
                    {"AGENTMESH_SOCKET", socket_.string()},
                    {"AGENTMESHD", AGENTMESHD_BIN},
                    {"HOME", dir.path().string()},
                    {"PATH", "/usr/bin:/bin"}};
  }
  ~Agent() {
    // Whatever the test did, leave no daemon behind.
    Amesh({"--no-autostart", "daemon", "stop"}, options_);
  }
  RunResult operator()(const std::vector<std::string>& args, const std::string& stdin_text = "",
                       bool tty = true) {
    RunOptions o = options_;
    o.stdin_text = stdin_text;
    o.stdin_is_tty = tty;
    return Amesh(args, o);
  }
  json Json(const std::vector<std::string>& args) {
    std::vector<std::string> with = {"--json"};
    with.insert(with.end(), args.begin(), args.end());
    const RunResult r = (*this)(with);
    INFO("amesh " << args.front() << ": " << r.err);
    REQUIRE(r.status == 0);
    return json::parse(r.out, nullptr, false);
  }
  // argv for running the amesh binary as this agent (env(1) sets the environment).
  std::vector<std::string> Command(const std::vector<std::string>& args) const {
    std::vector<std::string> argv = {"/usr/bin/env", "AGENTMESH_HOME=" + home_.string(),
                                     "AGENTMESH_SOCKET=" + socket_.string(),
                                     std::string("AGENTMESHD=") + AGENTMESHD_BIN, AMESH_BIN};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }
  const std::filesystem::path& home() const { return home_; }

 private:
  std::filesystem::path home_;
  std::filesystem::path socket_;
  RunOptions options_;
};

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

}  // namespace

TEST_CASE("e2e: daemon lifecycle, init, whoami, status, policy and breakers", "[cli][e2e]") {
  ScratchDir dir;
  Agent agent(dir, "solo");

  RunResult r = agent({"daemon", "status"});
  CHECK(r.status == amesh::kExitUnreachable);
  r = agent({"daemon", "start"});
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(Contains(r.out, "agentmeshd started"));
  r = agent({"daemon", "start"});
  CHECK(r.status == 0);
  CHECK(Contains(r.out, "already running"));
  r = agent({"daemon", "status"});
  CHECK(r.status == 0);
  CHECK(Contains(r.out, "agentmeshd is running"));

  json status = agent.Json({"status"});
  CHECK(status["initialized"] == false);

  r = agent({"whoami"});
  CHECK(r.status == amesh::kExitNotInitialized);
  CHECK(Contains(r.err, "amesh init"));

  r = agent({"init", "--name", "Solo"});
  INFO(r.err);
  REQUIRE(r.status == 0);
  CHECK(Contains(r.out, "Initialized agent "));
  r = agent({"init"});
  CHECK(r.status == 0);
  CHECK(Contains(r.out, "Already initialized"));

  const json who = agent.Json({"whoami"});
  const std::string amid = who.value("amid", "");
  CHECK_FALSE(amesh::CheckAmid(amid).has_value());
  CHECK(Contains(who.value("signing_public_key", ""), "ed25519:"));
  status = agent.Json({"status"});
  CHECK(status["initialized"] == true);
  CHECK(status["amid"] == amid);
  r = agent({"status"});
  CHECK(r.status == 0);
  CHECK(Contains(r.out, amid));

  SECTION("policy: set, field errors, dry runs with a trace") {
    r = agent({"policy", "set", "-"},
              R"({"accepted_intents":["travel"],"rejected_intents":["creative"]})", false);
    INFO(r.err);
    CHECK(r.status == 0);
    r = agent({"policy", "set", "-"}, R"({"rate_limit":{"knocks_per_minute":0}})", false);
    CHECK(r.status == amesh::kExitUsage);
    CHECK(Contains(r.err, "rate_limit.knocks_per_minute"));
    const json shown = agent.Json({"policy", "show"});
    CHECK(shown["policy"]["rejected_intents"] == json::array({"creative"}));

    r = agent({"policy", "test", "--intent", "creative/poems"});
    CHECK(r.status == amesh::kExitRejected);
    CHECK(Contains(r.out, "intent"));
    CHECK(Contains(r.out, "fail"));
    CHECK(Contains(r.out, "decision: reject (intent_not_accepted)"));
    r = agent({"policy", "test", "--intent", "travel/flights", "--tier", "verified"});
    CHECK(r.status == 0);
    CHECK(Contains(r.out, "capacity"));
    CHECK(Contains(r.out, "decision: accept"));
    const json knock = {{"from", {{"amid", amid}}}, {"intent", {{"category", "travel"}}}};
    r = agent({"policy", "test", "-"}, knock.dump(), false);
    CHECK(r.status == 0);
  }

  SECTION("circuit breakers and lists") {
    r = agent({"pause"});
    CHECK(r.status == 0);
    CHECK(agent.Json({"status"})["paused"] == true);
    r = agent({"policy", "test", "--intent", "travel"});
    CHECK(r.status == amesh::kExitRejected);
    CHECK(Contains(r.out, "paused"));
    CHECK(agent({"resume"}).status == 0);
    CHECK(agent.Json({"status"})["paused"] == false);

    const std::string peer = "jZ6CK1dpcZD4oPYScUJvifP7BtJ";
    r = agent({"block", peer});
    CHECK(r.status == 0);
    CHECK(Contains(r.out, "Blocked " + peer));
    r = agent({"policy", "test", "--intent", "travel", "--from", peer});
    CHECK(r.status == amesh::kExitRejected);
    CHECK(Contains(r.out, "blocked"));
    CHECK(agent({"unblock", peer}).status == 0);
    CHECK(agent({"allow", peer}).status == 0);
    CHECK(agent.Json({"policy", "show"})["policy"]["allowlist"] == json::array({peer}));

    r = agent({"shutdown"});
    CHECK(r.status == 0);
    CHECK(agent({"resume"}).status == 0);
    r = agent({"emergency-stop"});
    CHECK(r.status == 0);
    CHECK(Contains(r.out, "Emergency stop"));
    CHECK(agent({"resume"}).status == 0);

    r = agent({"sessions"});
    CHECK(r.status == 0);
    r = agent({"kill", "0f8e1c2a-4b7d-4e21-9a3b-5c6d7e8f9a0b"});
    CHECK(r.status == amesh::kExitNotFound);

    r = agent({"audit"});
    CHECK(r.status == 0);
    CHECK(Contains(r.out, "circuit_breaker"));
    const json audit = agent.Json({"audit", "--since", "1h", "--limit", "5"});
    CHECK(audit["events"].size() <= 5);
  }

  SECTION("rpc and recv on an empty inbox") {
    const json pong = agent.Json({"rpc", "ping"});
    CHECK(pong["pong"] == true);
    r = agent({"rpc", "no.such.method"});
    CHECK(r.status == amesh::kExitUsage);
    r = agent({"recv"});
    CHECK(r.status == 0);
    CHECK(r.out.empty());
    r = agent({"recv", "--timeout", "0.2"});
    CHECK(r.status == amesh::kExitTimeout);
  }

  r = agent({"daemon", "stop"});
  CHECK(r.status == 0);
  CHECK(Contains(r.out, "agentmeshd stopped"));
  CHECK(agent({"daemon", "status"}).status == amesh::kExitUnreachable);
  CHECK(agent({"--no-autostart", "status"}).status == amesh::kExitUnreachable);

  // Autostart: any command brings the daemon back, with the identity kept.
  r = agent({"whoami", "--json"});
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(Contains(r.err, "started agentmeshd"));
  CHECK(json::parse(r.out, nullptr, false)["amid"] == amid);
}

#if defined(AMESH_RELAY_BIN) && defined(AMESH_REGISTRY_BIN)

namespace {

// Starts a server on a free port; returns the port.
int StartServer(ChildProcess& process, std::vector<std::string> argv,
                const std::filesystem::path& log) {
  REQUIRE(process.Start(argv, log));
  auto line = process.WaitForLine("listening on port", 20s);
  INFO(process.StderrLog());
  REQUIRE(line.has_value());
  return std::stoi(line->substr(line->rfind(' ') + 1));
}

void WaitConnected(Agent& agent) {
  for (int i = 0; i < 200; ++i) {
    const RunResult r = agent({"--json", "status"});
    const json s = json::parse(r.out, nullptr, false);
    if (s.is_object() && s["relay"].value("connected", false)) return;
    std::this_thread::sleep_for(25ms);
  }
  FAIL("agent never connected to the relay");
}

}  // namespace

TEST_CASE("e2e: two agents search, knock, talk through the relay", "[cli][e2e]") {
  ScratchDir dir;
  ChildProcess registry, relay;
  const int registry_port = StartServer(registry,
                                        {AMESH_REGISTRY_BIN, "--listen", "127.0.0.1:0", "--db",
                                         "sqlite:" + (dir.path() / "registry.db").string(),
                                         "--state-dir", (dir.path() / "registry").string()},
                                        dir.path() / "registry.log");
  const int relay_port = StartServer(
      relay,
      {AMESH_RELAY_BIN, "--listen", "127.0.0.1:0", "--store", (dir.path() / "relay.db").string()},
      dir.path() / "relay.log");
  const std::string registry_url = "http://127.0.0.1:" + std::to_string(registry_port);
  const std::string relay_url = "ws://127.0.0.1:" + std::to_string(relay_port);

  Agent alice(dir, "alice"), bob(dir, "bob");
  for (Agent* a : {&alice, &bob}) {
    const RunResult r = (*a)({"init", "--registry", registry_url, "--relay", relay_url});
    INFO(r.err);
    REQUIRE(r.status == 0);
  }
  RunResult r = bob({"register", "--capability", "weather/forecast", "--display-name", "Bob"});
  INFO(r.err);
  REQUIRE(r.status == 0);
  REQUIRE(alice({"register"}).status == 0);
  r = bob({"policy", "set", "-"},
          R"({"accepted_intents":["weather","chat"],"rejected_intents":["creative"]})", false);
  REQUIRE(r.status == 0);
  const std::string bob_amid = bob.Json({"whoami"})["amid"];
  WaitConnected(alice);
  WaitConnected(bob);

  r = alice({"search", "weather/forecast"});
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(Contains(r.out, bob_amid));
  CHECK(alice({"lookup", bob_amid}).status == 0);
  CHECK(alice({"lookup", "11111111111111111111"}).status == amesh::kExitNotFound);

  // Accepted KNOCK.
  r = alice({"knock", bob_amid, "--intent", "weather/forecast", "--timeout", "10"});
  INFO(r.err);
  CHECK(r.status == 0);
  CHECK(Contains(r.out, "KNOCK accepted by " + bob_amid));

  // Rejected KNOCK, with its reason.
  r = alice({"knock", bob_amid, "--intent", "creative/poems", "--timeout", "10"});
  CHECK(r.status == amesh::kExitRejected);
  CHECK(Contains(r.err, "intent_not_accepted"));

  SECTION("send --wait answered by amesh serve") {
    ChildProcess serve;
    REQUIRE(serve.Start(bob.Command({"serve", "--intent", "weather", "--max-requests", "1", "--",
                                     "/bin/sh", "-c", "cat"}),
                        dir.path() / "serve.log"));
    r = alice(
        {"send", bob_amid, "--intent", "weather/forecast", R"({"city":"Lisbon"})", "--wait", "15"});
    INFO(r.err << serve.StderrLog());
    CHECK(r.status == 0);
    CHECK(json::parse(r.out, nullptr, false) == json{{"city", "Lisbon"}});
    const int status = serve.Signal(0, true, 10s);
    CHECK(WIFEXITED(status));
  }

  SECTION("a request survives a kill -9 of amesh serve and is answered once") {
    // The command's first run records its pid and hangs; later runs echo the request.
    const std::string marker = (dir.path() / "first-run.pid").string();
    const std::string script = "if [ -e " + marker + " ]; then cat; else echo $$ > " + marker +
                               ".tmp && mv " + marker + ".tmp " + marker + " && exec sleep 60; fi";
    ChildProcess first;
    REQUIRE(
        first.Start(bob.Command({"serve", "--intent", "weather", "--", "/bin/sh", "-c", script}),
                    dir.path() / "serve1.log"));
    const json sent =
        alice.Json({"send", bob_amid, "--intent", "weather/forecast", R"({"city":"Porto"})"});
    const std::string sid = sent.value("session_id", "");
    REQUIRE_FALSE(sid.empty());
    for (int i = 0; i < 1000 && !std::filesystem::exists(marker); ++i)
      std::this_thread::sleep_for(10ms);
    INFO(first.StderrLog());
    REQUIRE(std::filesystem::exists(marker));
    first.Kill();
    pid_t command_pid = 0;
    std::ifstream(marker) >> command_pid;
    if (command_pid > 0) ::kill(command_pid, SIGKILL);

    ChildProcess second;
    REQUIRE(second.Start(bob.Command({"serve", "--intent", "weather", "--max-requests", "1", "--",
                                      "/bin/sh", "-c", script}),
                         dir.path() / "serve2.log"));
    const int status = second.Signal(0, true, 20s);
    INFO(second.StderrLog());
    CHECK(WIFEXITED(status));
    r = alice({"recv", "--session", sid, "--timeout", "10"});
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
    CHECK(json::parse(r.out.substr(0, r.out.find('\n')), nullptr, false)["payload"] ==
          json{{"city", "Porto"}});
    CHECK(alice({"recv", "--session", sid, "--timeout", "1"}).status == amesh::kExitTimeout);
  }

  SECTION("two amesh serve processes share the requests, each handled once") {
    const std::string handled = (dir.path() / "handled.txt").string();
    const std::string script =
        "read line; echo \"$line\" >> " + handled + "; sleep 1; echo \"$line\"";
    ChildProcess first, second;
    REQUIRE(first.Start(bob.Command({"serve", "--intent", "weather", "--max-requests", "1", "--",
                                     "/bin/sh", "-c", script}),
                        dir.path() / "share1.log"));
    REQUIRE(second.Start(bob.Command({"serve", "--intent", "weather", "--max-requests", "1", "--",
                                      "/bin/sh", "-c", script}),
                         dir.path() / "share2.log"));
    for (ChildProcess* serve : {&first, &second}) {  // both subscribed before any request
      bool serving = false;
      for (int i = 0; i < 500 && !serving; ++i) {
        serving = Contains(serve->StderrLog(), "serving intent");
        if (!serving) std::this_thread::sleep_for(20ms);
      }
      REQUIRE(serving);
    }
    std::string sid;
    for (const char* city : {"Braga", "Evora"}) {
      const json sent = alice.Json(
          {"send", bob_amid, "--intent", "weather/forecast", json{{"city", city}}.dump()});
      sid = sent.value("session_id", "");
    }
    for (ChildProcess* serve : {&first, &second}) {
      const int status = serve->Signal(0, true, 20s);
      INFO(serve->StderrLog());
      CHECK(WIFEXITED(status));
    }
    std::ifstream in(handled);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::sort(lines.begin(), lines.end());
    CHECK(lines == std::vector<std::string>{R"({"city":"Braga"})", R"({"city":"Evora"})"});
    std::set<std::string> answers;
    for (int i = 0; i < 20 && answers.size() < 2; ++i) {
      r = alice({"recv", "--session", sid, "--timeout", "5"});
      std::istringstream out(r.out);
      for (std::string line; std::getline(out, line);) {
        answers.insert(json::parse(line, nullptr, false)["payload"].value("city", ""));
      }
    }
    CHECK(answers == std::set<std::string>{"Braga", "Evora"});
  }

  SECTION("a request replied to but not acked before a crash is not answered twice") {
    const json sent =
        alice.Json({"send", bob_amid, "--intent", "weather/forecast", R"({"city":"Faro"})"});
    const std::string sid = sent.value("session_id", "");
    REQUIRE_FALSE(sid.empty());
    // What a serve killed between its reply and its ack leaves behind.
    const json peeked = bob.Json(
        {"rpc", "recv", json{{"session_id", sid}, {"timeout_ms", 10000}, {"peek", true}}.dump()});
    REQUIRE(peeked["messages"].size() == 1);
    const std::string id = peeked["messages"][0]["id"];
    r = bob({"reply", sid, R"({"city":"Faro","first":true})", "--idempotency-key", "serve:" + id});
    INFO(r.err);
    REQUIRE(r.status == 0);

    ChildProcess serve;
    REQUIRE(serve.Start(bob.Command({"serve", "--intent", "weather", "--max-requests", "1", "--",
                                     "/bin/sh", "-c", "cat"}),
                        dir.path() / "serve.log"));
    const int status = serve.Signal(0, true, 20s);
    INFO(serve.StderrLog());
    CHECK(WIFEXITED(status));
    CHECK(Contains(serve.StderrLog(), "(duplicate)"));
    r = alice({"recv", "--session", sid, "--timeout", "10"});
    REQUIRE(r.status == 0);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
    CHECK(json::parse(r.out.substr(0, r.out.find('\n')), nullptr, false)["payload"]["first"] ==
          true);
    CHECK(alice({"recv", "--session", sid, "--timeout", "1"}).status == amesh::kExitTimeout);
    // The request left bob's inbox with the ack.
    CHECK(bob.Json({"rpc", "recv", json{{"session_id", sid}, {"peek", true}}.dump()})["messages"]
              .empty());
  }

  SECTION("no answer in time: knock and send --wait exit 5") {
    // Nobody serves bob's requests: the KNOCK is accepted, the request stays unanswered.
    r = alice(
        {"send", bob_amid, "--intent", "weather/forecast", R"({"city":"Oslo"})", "--wait", "1"});
    INFO(r.err);
    CHECK(r.status == amesh::kExitTimeout);
    CHECK(Contains(r.err, "no response"));
    CHECK(r.out.empty());  // nothing for a pipe to take as the response
    // Bob's daemon stopped: the KNOCK gets neither ACCEPT nor REJECT.
    const json pong = bob.Json({"rpc", "ping"});
    const pid_t pid = pong.value("pid", 0);
    REQUIRE(pid > 0);
    REQUIRE(::kill(pid, SIGSTOP) == 0);
    for (int i = 0; i < 5000 && !agentmesh::testing::IsStopped(pid); ++i)
      std::this_thread::sleep_for(1ms);
    CHECK(agentmesh::testing::IsStopped(pid));
    r = alice({"knock", bob_amid, "--intent", "chat", "--timeout", "1"});
    ::kill(pid, SIGCONT);
    INFO(r.err);
    CHECK(r.status == amesh::kExitTimeout);
    CHECK(Contains(r.err, "no answer"));
  }

  SECTION("a conversation by recv and reply") {
    const json session = alice.Json(
        {"knock", bob_amid, "--intent", "chat", "--type", "conversation", "--timeout", "10"});
    const std::string sid = session.value("session_id", "");
    REQUIRE_FALSE(sid.empty());
    r = alice({"send", sid, R"({"text":"hello"})", "--idempotency-key", "hello-1"});
    INFO(r.err);
    CHECK(r.status == 0);
    // Retried with the same key: not sent again (bob gets one message below).
    r = alice({"send", sid, R"({"text":"hello"})", "--idempotency-key", "hello-1"});
    CHECK(r.status == 0);
    CHECK(Contains(r.out, "sequence 1, duplicate"));
    r = bob({"recv", "--session", sid, "--timeout", "10"});
    INFO(r.err);
    REQUIRE(r.status == 0);
    CHECK(std::count(r.out.begin(), r.out.end(), '\n') == 1);
    const json message = json::parse(r.out.substr(0, r.out.find('\n')), nullptr, false);
    CHECK(message["payload"] == json{{"text", "hello"}});
    CHECK(message["type"] == "request");
    r = bob({"reply", sid, "-"}, R"({"text":"hi alice"})", false);
    INFO(r.err);
    CHECK(r.status == 0);
    r = alice({"recv", "--session", sid, "--timeout", "10"});
    REQUIRE(r.status == 0);
    CHECK(json::parse(r.out.substr(0, r.out.find('\n')), nullptr, false)["payload"] ==
          json{{"text", "hi alice"}});
    // recv --peek prints and leaves; ack (fed what recv printed) removes.
    for (int i = 1; i <= 2; ++i) {
      REQUIRE(alice({"send", sid, json{{"peek", i}}.dump()}).status == 0);
    }
    std::string peeked;
    for (int i = 0; i < 100 && std::count(peeked.begin(), peeked.end(), '\n') < 2; ++i) {
      r = bob({"recv", "--peek", "--session", sid, "--timeout", "10"});
      REQUIRE(r.status == 0);
      peeked = r.out;
    }
    REQUIRE(std::count(peeked.begin(), peeked.end(), '\n') == 2);
    CHECK(bob({"recv", "--peek", "--session", sid}).out == peeked);  // still there
    r = bob({"ack", "-"}, peeked, false);
    INFO(r.err);
    CHECK(r.status == 0);
    CHECK(Contains(r.out, "Removed 2 of 2 messages from the inbox"));
    const std::string first_id = json::parse(peeked.substr(0, peeked.find('\n')))["id"];
    r = bob({"ack", first_id, first_id});  // the same id twice counts once
    CHECK(r.status == 0);
    CHECK(Contains(r.out, "Removed 0 of 1 message from the inbox (1 was not there)"));
    CHECK(bob({"recv", "--session", sid}).out.empty());
    // `amesh --json recv --peek` (one pretty-printed document) feeds ack as well.
    REQUIRE(alice({"send", sid, R"({"peek":3})"}).status == 0);
    r = bob({"--json", "recv", "--peek", "--session", sid, "--timeout", "10"});
    REQUIRE(r.status == 0);
    REQUIRE(json::parse(r.out)["messages"].size() == 1);
    r = bob({"--json", "ack", "-"}, r.out, false);
    INFO(r.err);
    CHECK(r.status == 0);
    CHECK(json::parse(r.out, nullptr, false) == json{{"removed", 1}});

    // recv --follow prints messages as they come and, with --timeout, stops when idle that long;
    // rpc subscribe --follow prints the result, then every event.
    ChildProcess follow, events;
    REQUIRE(follow.Start(bob.Command({"recv", "--follow", "--session", sid, "--timeout", "3"}),
                         dir.path() / "follow.log"));
    REQUIRE(events.Start(
        bob.Command({"rpc", "subscribe", R"({"events":["message.received"]})", "--follow"}),
        dir.path() / "events.log"));
    REQUIRE(events.WaitForLine("subscription", 10s).has_value());
    for (int i = 1; i <= 2; ++i) {
      REQUIRE(alice({"send", sid, json{{"n", i}}.dump()}).status == 0);
      auto line = follow.WaitForLine("\"n\":" + std::to_string(i), 10s);
      INFO(follow.StderrLog());
      REQUIRE(line.has_value());
      CHECK(json::parse(*line, nullptr, false)["payload"]["n"] == i);
      auto event = events.WaitForLine("message.received", 10s);
      REQUIRE(event.has_value());
      const json ev = json::parse(*event, nullptr, false);  // the notification's params
      CHECK(ev["type"] == "message.received");
      CHECK(ev["message"]["payload"]["n"] == i);
      std::this_thread::sleep_for(1s);  // shorter than --timeout: the follow goes on
    }
    const int follow_status = follow.Signal(0, true, 10s);  // idle for 3 s: it ends by itself
    CHECK(WIFEXITED(follow_status));
    CHECK(WEXITSTATUS(follow_status) == 0);
    CHECK(events.running());  // follows until interrupted
    events.Signal(SIGTERM, true);
    CHECK(alice({"close", sid}).status == 0);
    const json sessions = alice.Json({"sessions"});
    bool closed = false;
    for (const auto& s : sessions["sessions"]) {
      if (s["session_id"] == sid) closed = s["state"] == "closed";
    }
    CHECK(closed);
  }
}

#endif

#if defined(AMESH_RELAY_BIN) && defined(AMESH_REGISTRY_BIN)
TEST_CASE("e2e: cmake --install lays out programs, man pages, completions and units",
          "[cli][e2e]") {
  ScratchDir dir;
  const auto prefix = dir.path() / "prefix";
  ChildProcess install;
  REQUIRE(install.Start({AMESH_CMAKE, "--install", AMESH_BINARY_DIR, "--prefix", prefix.string()},
                        dir.path() / "install.log"));
  const int status = install.Signal(0, true, 60s);
  INFO(install.StderrLog());
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  for (const char* file :
       {"bin/agentmeshd", "bin/amesh", "bin/amesh-relay", "bin/amesh-registry",
        "share/man/man1/amesh.1", "share/man/man5/agentmesh-policy.5", "share/man/man7/agentmesh.7",
        "share/man/man8/agentmeshd.8", "share/man/man8/amesh-relay.8",
        "share/man/man8/amesh-registry.8", "share/bash-completion/completions/amesh",
        "share/zsh/vendor-completions/_amesh", "share/fish/vendor_completions.d/amesh.fish"}) {
    INFO(file);
    CHECK(std::filesystem::is_regular_file(prefix / file));
  }
  // The units start the installed programs.
  const std::pair<const char*, const char*> units[] = {
      {"lib/systemd/user/agentmeshd.service", "agentmeshd --foreground"},
      {"lib/systemd/system/amesh-relay.service", "amesh-relay --listen"},
      {"lib/systemd/system/amesh-registry.service", "amesh-registry --listen"}};
  for (const auto& [unit, command] : units) {
    INFO(unit);
    std::ifstream in(prefix / unit);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    CHECK(Contains(text, "ExecStart=" + (prefix / "bin").string() + "/" + command));
    CHECK_FALSE(Contains(text, "/usr/local/bin"));
  }
  // The installed amesh runs.
  ChildProcess version;
  REQUIRE(version.Start({(prefix / "bin" / "amesh").string(), "--version"},
                        dir.path() / "version.log"));
  CHECK(version.WaitForLine("amesh ", 10s).has_value());
}
#endif
