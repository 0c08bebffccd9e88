// The JSON-RPC method table (docs/RPC.md §3): one handler per method, in ONE array sorted by
// name (checked at compile time), looked up by binary search. Every handler validates its params
// (errors name the offending field), calls into the Daemon and answers through its Responder,
// synchronously or later (knock, send with wait_ms, recv with timeout_ms, register, lookup,
// search, emergency_stop).
#pragma once

#include <span>
#include <string_view>

#include <nlohmann/json.hpp>

#include "rpc_server.hpp"

namespace agentmesh::daemon {

class Daemon;

using MethodHandler = void (*)(Daemon& d, const nlohmann::json& params, Responder reply);

struct MethodEntry {
  std::string_view name;
  MethodHandler handler;
};

// The table, sorted by name, no duplicates.
std::span<const MethodEntry> MethodTable();
// nullptr when `name` is not a method.
MethodHandler FindMethod(std::string_view name);

}  // namespace agentmesh::daemon
