// Unit checks of the daemon's method table and error mapping (no processes).
#include <catch2/catch.hpp>
#include <fstream>
#include <set>
#include <string>

#include "methods.hpp"
#include "rpc_server.hpp"

using namespace agentmesh;
using namespace agentmesh::daemon;

TEST_CASE("daemon method table is sorted and unique and complete", "[daemon][unit]") {
  auto table = MethodTable();
  REQUIRE(table.size() >= 30);
  for (std::size_t i = 1; i < table.size(); ++i) CHECK(table[i - 1].name < table[i].name);
  for (const char* name : {"ack",         "allow",          "audit",    "block",       "close",
                           "daemon.stop", "emergency_stop", "init",     "kill",        "knock",
                           "lookup",      "pause",          "ping",     "policy.get",  "policy.set",
                           "policy.test", "recv",           "register", "reply",       "resume",
                           "search",      "send",           "sessions", "shutdown",    "status",
                           "subscribe",   "transcript",     "unblock",  "unsubscribe", "whoami"}) {
    INFO(name);
    CHECK(FindMethod(name) != nullptr);
  }
  CHECK(FindMethod("nope") == nullptr);
  CHECK(FindMethod("") == nullptr);
}

TEST_CASE("docs/RPC.md documents exactly the methods of the table", "[daemon][unit]") {
  // The first column of the method table in section 3: `name`, or `a` / `b` for a pair.
  std::ifstream in(std::string(AMESH_SOURCE_DIR) + "/docs/RPC.md");
  REQUIRE(in.good());
  std::set<std::string> documented;
  bool in_methods = false;
  for (std::string line; std::getline(in, line);) {
    if (line.starts_with("## ")) in_methods = line.starts_with("## 3. Methods");
    if (!in_methods || !line.starts_with("| `")) continue;
    const std::string cell = line.substr(2, line.find(" |", 2) - 2);
    for (std::size_t at = cell.find('`'); at != std::string::npos;) {
      const auto end = cell.find('`', at + 1);
      if (end == std::string::npos) break;
      documented.insert(cell.substr(at + 1, end - at - 1));
      at = cell.find('`', end + 1);
    }
  }
  std::set<std::string> implemented;
  for (const auto& m : MethodTable()) implemented.insert(std::string(m.name));
  CHECK(documented == implemented);
}

TEST_CASE("daemon maps every core error code to its RPC code", "[daemon][unit]") {
  const std::pair<Code, int> cases[] = {{Code::kInvalidArgument, -32602},
                                        {Code::kNotFound, -32001},
                                        {Code::kConflict, -32002},
                                        {Code::kAuthFailed, -32003},
                                        {Code::kReplay, -32004},
                                        {Code::kLimitExceeded, -32005},
                                        {Code::kPermissionDenied, -32006},
                                        {Code::kUnavailable, -32007},
                                        {Code::kTimeout, -32008},
                                        {Code::kCorrupt, -32009},
                                        {Code::kIo, -32010},
                                        {Code::kInternal, -32603}};
  for (auto [code, rpc] : cases) {
    const RpcError e = ToRpcError(Error{code, "m", "f"});
    CHECK(e.code == rpc);
    CHECK(e.name == CodeName(code));
    CHECK(e.data["field"] == "f");
  }
}
