// agentmesh_rpc_client against a scripted server: ids and pipelining, interleaved events, server
// errors mapped field by field, client timeouts, a daemon that hangs up, and the socket path
// rules of RPC.md §1.
#include <sys/un.h>

#include <catch2/catch.hpp>
#include <map>

#include "agentmesh/rpc/client.hpp"
#include "agentmesh/rpc/paths.hpp"
#include "cli.hpp"
#include "harness.hpp"

using agentmesh::rpc::Client;
using agentmesh::rpc::ErrorOrigin;
using amesh::test::FakeDaemon;
using amesh::test::RpcErrorObject;
using amesh::test::ScratchDir;
using nlohmann::json;
using namespace std::chrono_literals;

namespace {

json Echo(const std::string& method, const json& params) {
  if (method == "echo") return json{{"result", params}};
  if (method == "slow") return json{{"delay_ms", 300}, {"result", {{"slow", true}}}};
  if (method == "hangup") return json{{"close", true}};
  if (method == "subscribe") {
    return json{{"result", {{"subscription", 1}}},
                {"then_event", {{"subscription", 1}, {"type", "audit"}, {"n", 1}}}};
  }
  if (method == "fail") {
    return RpcErrorObject(-32011, "knock_rejected", "rejected",
                          {{"reason", "blocked"}, {"field", "amid"}});
  }
  return RpcErrorObject(-32601, "method_not_found", "unknown method " + method);
}

agentmesh::rpc::Environment Env(std::map<std::string, std::string> vars) {
  return [vars](std::string_view name) -> std::optional<std::string> {
    auto it = vars.find(std::string(name));
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
}

}  // namespace

TEST_CASE("rpc client: calls, pipelining and ids", "[rpc]") {
  ScratchDir dir;
  FakeDaemon daemon(dir.path() / "d.sock", Echo);
  auto client = Client::Connect((dir.path() / "d.sock").string());
  REQUIRE(client.has_value());

  auto r = client->Call("echo", json{{"x", 1}}, 2s);
  REQUIRE(r.has_value());
  CHECK((*r)["x"] == 1);

  // Three requests out before any answer is read; awaited out of order.
  auto a = client->SendRequest("echo", json{{"n", "a"}});
  auto b = client->SendRequest("echo", json{{"n", "b"}});
  auto c = client->SendRequest("echo", json{{"n", "c"}});
  REQUIRE((a && b && c));
  CHECK(*b == *a + 1);
  CHECK((*client->Await(*c, 2s))["n"] == "c");
  CHECK((*client->Await(*a, 2s))["n"] == "a");
  CHECK((*client->Await(*b, 2s))["n"] == "b");

  const auto requests = daemon.Requests();
  REQUIRE(requests.size() == 4);
  CHECK(requests[0]["jsonrpc"] == "2.0");
  CHECK(requests[0]["method"] == "echo");
  CHECK(requests[1]["id"].is_number_integer());
}

TEST_CASE("rpc client: server errors keep every field", "[rpc]") {
  ScratchDir dir;
  FakeDaemon daemon(dir.path() / "d.sock", Echo);
  auto client = Client::Connect((dir.path() / "d.sock").string());
  REQUIRE(client.has_value());
  auto r = client->Call("fail", json::object(), 2s);
  REQUIRE_FALSE(r.has_value());
  const auto& e = r.error();
  CHECK(e.origin == ErrorOrigin::kServer);
  CHECK(e.code == -32011);
  CHECK(e.data_code == "knock_rejected");
  CHECK(e.message == "rejected");
  CHECK(e.field == "amid");
  CHECK(e.data["reason"] == "blocked");
  CHECK(amesh::ExitStatusFor(e) == amesh::kExitRejected);
  // The connection stays usable after a server error.
  CHECK(client->Call("echo", json::object(), 2s).has_value());
  // An unknown method.
  auto m = client->Call("nope", json::object(), 2s);
  REQUIRE_FALSE(m.has_value());
  CHECK(m.error().data_code == "method_not_found");
  CHECK(amesh::ExitStatusFor(m.error()) == amesh::kExitUsage);
}

TEST_CASE("rpc client: events interleaved with responses are queued", "[rpc]") {
  ScratchDir dir;
  FakeDaemon daemon(dir.path() / "d.sock", Echo);
  auto client = Client::Connect((dir.path() / "d.sock").string());
  REQUIRE(client.has_value());
  REQUIRE(client->Call("subscribe", json::object(), 2s).has_value());
  // The event that followed the subscribe response arrives while the next call waits.
  REQUIRE(client->Call("echo", json::object(), 2s).has_value());
  CHECK(client->queued_events() == 1);
  daemon.Push(json{{"subscription", 1}, {"type", "audit"}, {"n", 2}});
  auto first = client->NextEvent(2s);
  REQUIRE(first.has_value());
  REQUIRE(first->has_value());
  CHECK((**first)["n"] == 1);
  auto second = client->NextEvent(2s);
  REQUIRE((second && second->has_value()));
  CHECK((**second)["n"] == 2);
  auto none = client->NextEvent(50ms);
  REQUIRE(none.has_value());
  CHECK_FALSE(none->has_value());
}

TEST_CASE("rpc client: timeouts and a daemon that hangs up", "[rpc]") {
  ScratchDir dir;
  FakeDaemon daemon(dir.path() / "d.sock", Echo);
  auto client = Client::Connect((dir.path() / "d.sock").string());
  REQUIRE(client.has_value());
  auto slow = client->Call("slow", json::object(), 50ms);
  REQUIRE_FALSE(slow.has_value());
  CHECK(slow.error().origin == ErrorOrigin::kClientTimeout);
  CHECK(amesh::ExitStatusFor(slow.error()) == amesh::kExitTimeout);
  // The late answer is filed and dropped; the next call gets its own answer.
  auto next = client->Call("echo", json{{"after", true}}, 2s);
  REQUIRE(next.has_value());
  CHECK((*next)["after"] == true);

  auto gone = client->Call("hangup", json::object(), 2s);
  REQUIRE_FALSE(gone.has_value());
  CHECK(gone.error().origin == ErrorOrigin::kDisconnected);
  auto after = client->Call("echo", json::object(), 2s);
  REQUIRE_FALSE(after.has_value());
  CHECK(after.error().origin == ErrorOrigin::kDisconnected);
}

TEST_CASE("rpc client: a non-JSON line is a protocol error", "[rpc]") {
  ScratchDir dir;
  FakeDaemon daemon(dir.path() / "d.sock", [](const std::string&, const json&) {
    return json{{"delay_ms", 200}, {"result", json::object()}};
  });
  auto client = Client::Connect((dir.path() / "d.sock").string());
  REQUIRE(client.has_value());
  auto id = client->SendRequest("x", json::object());
  REQUIRE(id.has_value());
  std::this_thread::sleep_for(50ms);
  daemon.SendRaw("this is not json\n");
  auto r = client->Await(*id, 2s);
  REQUIRE_FALSE(r.has_value());
  CHECK(r.error().origin == ErrorOrigin::kProtocol);
}

TEST_CASE("rpc client: connecting to nothing", "[rpc]") {
  ScratchDir dir;
  auto absent = Client::Connect((dir.path() / "absent.sock").string());
  REQUIRE_FALSE(absent.has_value());
  CHECK(absent.error().origin == ErrorOrigin::kUnreachable);
  CHECK(absent.error().os_error == ENOENT);
  CHECK(amesh::ExitStatusFor(absent.error()) == amesh::kExitUnreachable);
  const std::string too_long = "/tmp/" + std::string(200, 'x');
  auto bad = Client::Connect(too_long);
  REQUIRE_FALSE(bad.has_value());
  CHECK(bad.error().origin == ErrorOrigin::kLocal);
}

TEST_CASE("socket and home resolution follow RPC.md section 1", "[rpc]") {
  using agentmesh::rpc::ResolveHome;
  using agentmesh::rpc::ResolveSocketPath;
  const auto none = std::optional<std::string>();
  const auto all = Env({{"AGENTMESH_SOCKET", "/env/sock"},
                        {"XDG_RUNTIME_DIR", "/run/user/7"},
                        {"AGENTMESH_HOME", "/env/home"},
                        {"HOME", "/home/u"}});
  CHECK(ResolveSocketPath(std::string("/flag/sock"), std::string("/flag/home"), all) ==
        "/flag/sock");
  CHECK(ResolveSocketPath(none, std::string("/flag/home"), all) == "/env/sock");
  const auto no_socket =
      Env({{"XDG_RUNTIME_DIR", "/run/user/7"}, {"AGENTMESH_HOME", "/env/home"}, {"HOME", "/h"}});
  CHECK(ResolveSocketPath(none, none, no_socket) == "/env/home/agentmeshd.sock");
  const auto runtime_only = Env({{"XDG_RUNTIME_DIR", "/run/user/7"}, {"HOME", "/h"}});
  CHECK(ResolveSocketPath(none, none, runtime_only) == "/run/user/7/agentmesh/agentmeshd.sock");
  CHECK(ResolveSocketPath(none, std::string("/flag/home"), runtime_only) ==
        "/flag/home/agentmeshd.sock");
  const auto home_only = Env({{"AGENTMESH_HOME", "/env/home"}, {"HOME", "/h"}});
  CHECK(ResolveSocketPath(none, none, home_only) == "/env/home/agentmeshd.sock");
  CHECK(ResolveSocketPath(none, std::string("/flag/home"), home_only) ==
        "/flag/home/agentmeshd.sock");
  const auto bare = Env({{"HOME", "/h"}});
  CHECK(ResolveSocketPath(none, none, bare) == "/h/.agentmesh/agentmeshd.sock");
  CHECK(ResolveHome(none, bare) == "/h/.agentmesh");
  CHECK(ResolveHome(std::string("/x"), home_only) == "/x");
  CHECK(ResolveHome(none, home_only) == "/env/home");
  // Empty values count as absent.
  const auto empty = Env({{"AGENTMESH_SOCKET", ""}, {"XDG_RUNTIME_DIR", ""}, {"HOME", "/h"}});
  CHECK(ResolveSocketPath(std::string(""), none, empty) == "/h/.agentmesh/agentmeshd.sock");
  CHECK(agentmesh::rpc::MaxSocketPathLength() == sizeof(sockaddr_un::sun_path) - 1);
}

TEST_CASE("exit statuses follow RPC.md section 2", "[rpc]") {
  const std::vector<std::pair<int, int>> table = {
      {-32700, 2}, {-32600, 2}, {-32601, 2}, {-32602, 2}, {-32603, 1}, {-32001, 6},
      {-32002, 1}, {-32003, 1}, {-32004, 1}, {-32005, 1}, {-32006, 1}, {-32007, 8},
      {-32008, 5}, {-32009, 1}, {-32010, 1}, {-32011, 4}, {-32012, 7}};
  for (const auto& [code, status] : table) {
    INFO(code);
    const auto e = agentmesh::rpc::ErrorFromJson(json{{"code", code}, {"message", "m"}});
    CHECK(amesh::ExitStatusFor(e) == status);
    CHECK_FALSE(e.data_code.empty());
  }
}
