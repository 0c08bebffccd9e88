// amesh without a daemon: every bad input fails with exit status 2 and a precise message before
// anything is contacted; an unreachable daemon is exit 3; --help works for every command; the
// committed completion scripts are current.
#include <catch2/catch.hpp>
#include <fstream>
#include <functional>
#include <sstream>

#include "cli.hpp"
#include "harness.hpp"

using amesh::test::Amesh;
using amesh::test::RunOptions;
using amesh::test::RunResult;
using amesh::test::ScratchDir;

namespace {

constexpr const char* kAmid = "jZ6CK1dpcZD4oPYScUJvifP7BtJ";
constexpr const char* kSession = "0f8e1c2a-4b7d-4e21-9a3b-5c6d7e8f9a0b";

// An environment whose socket does not exist and whose daemon binary cannot run: a command
// that gets past validation fails with exit 3, never with a stray daemon.
RunOptions NoDaemon(const ScratchDir& dir) {
  RunOptions o;
  o.env = {{"AGENTMESH_SOCKET", (dir.path() / "none.sock").string()},
           {"AGENTMESH_HOME", (dir.path() / "home").string()},
           {"AGENTMESHD", (dir.path() / "no-such-agentmeshd").string()},
           {"HOME", dir.path().string()}};
  return o;
}

RunResult Run(const std::vector<std::string>& args, const std::string& stdin_text = "",
              bool tty = true) {
  static ScratchDir dir;
  RunOptions o = NoDaemon(dir);
  o.stdin_text = stdin_text;
  o.stdin_is_tty = tty;
  return Amesh(args, o);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct BadInput {
  std::vector<std::string> args;
  std::string stdin_text;
  bool tty;
  std::string expected;  // a substring of stderr
};

}  // namespace

TEST_CASE("usage errors exit 2 with a message and a hint", "[cli]") {
  const std::vector<BadInput> cases = {
      {{}, "", true, "missing command"},
      {{"frobnicate"}, "", true, "unknown command 'frobnicate'"},
      {{"serch", "x"}, "", true, "did you mean `amesh search`?"},
      {{"--bogus-flag", "status"}, "", true, "--bogus-flag"},
      {{"lookup"}, "", true, "AMID is required"},
      {{"lookup", "not-an-amid"}, "", true, "not an AMID"},
      {{"lookup", "0OIl0OIl0OIl0OIl0OIl0OIl0OI"}, "", true, "not a base58 character"},
      {{"lookup", "jZ6CK1dpcZD4oPYScUJvifP7Bt"}, "", true, "does not decode to 20 bytes"},
      {{"block", "abc"}, "", true, "not an AMID"},
      {{"unblock", ""}, "", true, "AMID"},
      {{"allow", "x"}, "", true, "not an AMID"},
      {{"knock", kAmid}, "", true, "--intent is required"},
      {{"knock", kAmid, "--intent", "Travel"}, "", true, "may contain only a-z"},
      {{"knock", kAmid, "--intent", "travel/"}, "", true, "must be 1 to 64 characters"},
      {{"knock", kAmid, "--intent", "travel", "--type", "chat"}, "", true, "chat"},
      {{"knock", kAmid, "--intent", "travel", "--ttl", "0"}, "", true, "--ttl"},
      {{"knock", kAmid, "--intent", "travel", "--action", "Book!"}, "", true, "--action"},
      {{"knock", "bad", "--intent", "travel"}, "", true, "not an AMID"},
      {{"send"}, "", true, "TARGET is required"},
      {{"send", "someone", "{}"}, "", true, "neither a session id nor an AMID"},
      {{"send", kSession}, "", true, "missing PAYLOAD"},
      {{"send", kSession, "{bad json"}, "", true, "PAYLOAD is not valid JSON"},
      {{"send", kSession, "{\"a\":1,}"}, "", true, "line 1, column"},
      {{"send", kSession, "[1,2]"}, "", true, "must be a JSON object"},
      {{"send", kSession, "\"text\""}, "", true, "not a string"},
      {{"send", kSession, "-"}, "{oops", false, "PAYLOAD (from stdin) is not valid JSON"},
      {{"send", kSession}, "", false, "empty"},
      {{"send", kSession, "{}", "--wait", "{}"}, "", true, "--wait takes a number"},
      {{"send", kAmid, "{}", "--intent", "BAD"}, "", true, "--intent"},
      {{"send", kSession, "{}", "--type", "shout"}, "", true, "shout"},
      {{"send", kSession, "{}", "--idempotency-key", "a b"}, "", true, "--idempotency-key"},
      {{"send", kSession, "{}", "-k", std::string(129, 'k')}, "", true, "1 to 128 characters"},
      {{"reply", kSession, "{}", "--idempotency-key", "x/y"}, "", true, "--idempotency-key"},
      {{"reply", "not-a-session", "{}"}, "", true, "not a session id"},
      {{"reply", kSession, "[]"}, "", true, "must be a JSON object"},
      {{"reply", kSession, "{}", "--type", "nonsense"}, "", true, "nonsense"},
      {{"close", "123"}, "", true, "not a session id"},
      {{"kill", "123"}, "", true, "not a session id"},
      {{"recv", "--timeout", "soon"}, "", true, "--timeout must be a number of seconds"},
      {{"recv", "--session", "x"}, "", true, "not a session id"},
      {{"recv", "--from", "x"}, "", true, "not an AMID"},
      {{"recv", "--limit", "0"}, "", true, "--limit"},
      {{"search"}, "", true, "CAPABILITY is required"},
      {{"search", "trav*el"}, "", true, "only allowed alone or as a trailing '/*'"},
      {{"search", std::string(131, 'c')}, "", true, "must be 1 to 130 bytes"},
      {{"register", "-c", std::string(129, 'c')}, "", true, "must be 1 to 128 bytes"},
      {{"send", kSession, "{}", "-k", ""}, "", true, "--idempotency-key ''"},
      {{"search", "tab\there"}, "", true, "control character"},
      {{"register", "--capability", "travel/*"}, "", true, "must not contain '*'"},
      {{"register", "--capability", ""}, "", true, "must be 1 to 128 bytes"},
      {{"search", "travel", "--tier-min", "gold"}, "", true, "unknown tier 'gold'"},
      {{"search", "travel", "--reputation-min", "2"}, "", true, "--reputation-min"},
      {{"search", "travel", "--limit", "1000"}, "", true, "--limit"},
      {{"audit", "--since", "yesterday"}, "", true, "is neither an RFC 3339 time"},
      {{"policy"}, "", true, "missing subcommand of `amesh policy`"},
      {{"policy", "set"}, "", true, "FILE is required"},
      {{"policy", "set", "/nonexistent/policy.json"}, "", true, "cannot read"},
      {{"policy", "set", "-"}, "{\"strict_mode\": tru}", false, "not valid JSON"},
      {{"policy", "set", "-"}, "[]", false, "must be a JSON object"},
      {{"policy", "test"}, "", true, "missing KNOCK_JSON"},
      {{"policy", "test", "{nope"}, "", true, "KNOCK_JSON is not valid JSON"},
      {{"policy", "test", "--intent", "UPPER"}, "", true, "--intent"},
      {{"policy", "test", "--intent", "travel", "--from", "zz"}, "", true, "--from"},
      {{"policy", "frobnicate"}, "", true, "unknown subcommand 'frobnicate' of `amesh policy`"},
      {{"daemon", "strat"}, "", true, "did you mean `amesh daemon start`?"},
      {{"daemon"}, "", true, "missing subcommand of `amesh daemon`"},
      {{"rpc"}, "", true, "METHOD is required"},
      {{"rpc", "ping", "{"}, "", true, "PARAMS_JSON is not valid JSON"},
      {{"rpc", "ping", "[]"}, "", true, "must be a JSON object"},
      {{"init", "--registry", "ftp://x"}, "", true, "--registry must be an http://"},
      {{"init", "--relay", "http://x"}, "", true, "--relay must be a ws://"},
      {{"serve", "--intent", "x"}, "", true, "COMMAND"},
      {{"serve", "--", "cat"}, "", true, "--intent is required"},
      {{"serve", "--intent", "Bad", "--", "cat"}, "", true, "--intent"},
      {{"completion", "tcsh"}, "", true, "tcsh"},
      {{"recv", "--peek", "--follow"}, "", true, "--peek cannot be combined with --follow"},
      {{"ack"}, "", true, "ID is required"},
      {{"ack", "a b"}, "", true, "not a message id: 'a b'"},
      {{"ack", "-"}, "", false, "no message id given"},
      {{"ack", "-"}, "", true, "which is a terminal"},
      {{"ack", "-"}, "{\"messages\":[{\"type\":\"request\"}]}", false, "needs a string \"id\""},
      {{"ack", "-"},
       "abc\n{\"type\":\"request\"}\n",
       false,
       "line 2: a JSON line must be a message"},
      {{"whoami", "extra"}, "", true, "extra"},
  };
  for (const auto& c : cases) {
    std::string joined;
    for (const auto& a : c.args) joined += " '" + a + "'";
    INFO("amesh" << joined);
    const RunResult r = Run(c.args, c.stdin_text, c.tty);
    INFO("stderr: " << r.err);
    CHECK(r.status == amesh::kExitUsage);
    CHECK(r.err.find(c.expected) != std::string::npos);
    CHECK(r.err.starts_with("amesh: "));
    CHECK(r.out.empty());
  }
}

TEST_CASE("the daemon unreachable with --no-autostart is exit 3 with a hint", "[cli]") {
  ScratchDir dir;
  RunOptions o = NoDaemon(dir);
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--no-autostart", "status"},
                                             {"whoami", "--no-autostart"},
                                             {"--no-autostart", "sessions"},
                                             {"--no-autostart", "lookup", kAmid},
                                             {"--no-autostart", "send", kSession, "{}"},
                                             {"--no-autostart", "rpc", "ping"}}) {
    const RunResult r = Amesh(args, o);
    INFO(r.err);
    CHECK(r.status == amesh::kExitUnreachable);
    CHECK(r.err.find("amesh: cannot connect to " + o.env["AGENTMESH_SOCKET"]) == 0);
    CHECK(r.err.find("hint: is agentmeshd running? start it with `amesh daemon start`") !=
          std::string::npos);
  }
  SECTION("--json also prints the error object on stdout") {
    const RunResult r = Amesh({"--json", "--no-autostart", "whoami"}, o);
    CHECK(r.status == amesh::kExitUnreachable);
    const auto j = nlohmann::json::parse(r.out, nullptr, false);
    REQUIRE(j.is_object());
    CHECK(j["error"]["data"]["code"] == "daemon_unreachable");
  }
  SECTION("--socket overrides the environment") {
    const std::string other = (dir.path() / "other.sock").string();
    const RunResult r = Amesh({"--no-autostart", "--socket", other, "status"}, o);
    CHECK(r.status == amesh::kExitUnreachable);
    CHECK(r.err.find(other) != std::string::npos);
  }
}

TEST_CASE("daemon status and stop without a daemon", "[cli]") {
  ScratchDir dir;
  RunOptions o = NoDaemon(dir);
  RunResult r = Amesh({"daemon", "status"}, o);
  CHECK(r.status == amesh::kExitUnreachable);
  CHECK(r.out.find("agentmeshd is not running") != std::string::npos);
  r = Amesh({"daemon", "stop"}, o);
  CHECK(r.status == amesh::kExitOk);
  CHECK(r.out.find("not running") != std::string::npos);
  r = Amesh({"--json", "daemon", "status"}, o);
  CHECK(r.status == amesh::kExitUnreachable);
  CHECK(nlohmann::json::parse(r.out, nullptr, false)["running"] == false);
}

TEST_CASE("autostart that cannot run agentmeshd is exit 3 and says why", "[cli]") {
  ScratchDir dir;
  RunOptions o = NoDaemon(dir);
  const RunResult r = Amesh({"status"}, o);
  INFO(r.err);
  CHECK(r.status == amesh::kExitUnreachable);
  CHECK(r.err.find("agentmeshd exited with status 127") != std::string::npos);
  CHECK(r.err.find("no-such-agentmeshd") != std::string::npos);
}

TEST_CASE("--help works for every command and --version prints the version", "[cli]") {
  ScratchDir dir;
  amesh::Io io;
  std::istringstream in;
  std::ostringstream out, err;
  io.in = &in;
  io.out = &out;
  io.err = &err;
  io.env = [](std::string_view) { return std::optional<std::string>(); };
  amesh::Context ctx(io);
  auto app = amesh::BuildApp(ctx);
  std::vector<std::vector<std::string>> paths = {{}};
  std::function<void(const CLI::App&, std::vector<std::string>)> walk =
      [&](const CLI::App& a, std::vector<std::string> path) {
        for (const CLI::App* sub : a.get_subcommands([](const CLI::App*) { return true; })) {
          auto p = path;
          p.push_back(sub->get_name());
          paths.push_back(p);
          walk(*sub, p);
        }
      };
  walk(*app, {});
  CHECK(paths.size() > 30);
  for (auto path : paths) {
    path.push_back("--help");
    std::string joined;
    for (const auto& a : path) joined += " " + a;
    INFO("amesh" << joined);
    const RunResult r = Amesh(path, NoDaemon(dir));
    CHECK(r.status == 0);
    CHECK(r.out.find("Usage:") != std::string::npos);
    CHECK(r.err.empty());
  }
  const RunResult v = Amesh({"--version"}, NoDaemon(dir));
  CHECK(v.status == 0);
  CHECK(v.out.starts_with("amesh "));
}

TEST_CASE("the committed completion scripts are current", "[cli]") {
  ScratchDir dir;
  const std::vector<std::pair<std::string, std::string>> shells = {
      {"bash", "amesh.bash"}, {"zsh", "_amesh"}, {"fish", "amesh.fish"}};
  for (const auto& [shell, file] : shells) {
    const RunResult r = Amesh({"completion", shell}, NoDaemon(dir));
    REQUIRE(r.status == 0);
    const std::string committed = ReadFile(std::string(AMESH_SOURCE_DIR) + "/completions/" + file);
    INFO("completions/" << file << " is stale: regenerate it with `amesh completion " << shell
                        << " > completions/" << file
                        << "` (or `cmake --build build --target amesh_completions`)");
    CHECK(r.out == committed);
  }
}

TEST_CASE("generated completions cover every visible command", "[cli]") {
  ScratchDir dir;
  const std::string bash = Amesh({"completion", "bash"}, NoDaemon(dir)).out;
  const std::string zsh = Amesh({"completion", "zsh"}, NoDaemon(dir)).out;
  const std::string fish = Amesh({"completion", "fish"}, NoDaemon(dir)).out;
  for (const char* command :
       {"init",   "whoami", "register", "lookup",   "search",   "knock",          "send",
        "recv",   "reply",  "close",    "sessions", "policy",   "block",          "unblock",
        "allow",  "pause",  "resume",   "kill",     "shutdown", "emergency-stop", "audit",
        "status", "daemon", "rpc",      "serve",    "ack"}) {
    INFO(command);
    CHECK(bash.find(std::string(" ") + command) != std::string::npos);
    CHECK(zsh.find(std::string("'") + command + ":") != std::string::npos);
    CHECK(fish.find(std::string("-a ") + command + " ") != std::string::npos);
  }
  CHECK(bash.find("\"completion\")") == std::string::npos);  // hidden
  CHECK(bash.find("rpc serve'") != std::string::npos);
  CHECK(bash.find("request_response conversation stream") != std::string::npos);
  CHECK(zsh.starts_with("#compdef amesh"));
}
