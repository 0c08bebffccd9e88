// Errors of the JSON-RPC client (docs/RPC.md §2).
//
// An RpcError is either an error object the daemon sent back (origin kServer) or a failure of the
// client itself: the socket could not be reached, the call timed out, the connection broke or the
// daemon sent something that is not JSON-RPC. Both kinds carry the same fields, so a caller has
// one thing to map onto an exit status and a message.
//
// Server errors look like this on the wire:
//
//   {"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"payload must be an object",
//                                   "data":{"code":"invalid_argument","field":"payload"}}}
//
// and become RpcError{kServer, -32602, "invalid_argument", "payload must be an object",
// "payload", data}. Client-side failures use the codes below (outside the JSON-RPC range, so they
// can never be confused with a daemon's answer) and a data_code naming the failure.
//
// Thread-safety: plain values.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace agentmesh::rpc {

// Error codes of docs/RPC.md §2.
inline constexpr int kParseError = -32700;
inline constexpr int kInvalidRequest = -32600;
inline constexpr int kMethodNotFound = -32601;
inline constexpr int kInvalidParams = -32602;
inline constexpr int kInternalError = -32603;
inline constexpr int kNotFound = -32001;
inline constexpr int kConflict = -32002;
inline constexpr int kAuthFailed = -32003;
inline constexpr int kReplay = -32004;
inline constexpr int kLimitExceeded = -32005;
inline constexpr int kPermissionDenied = -32006;
inline constexpr int kUnavailable = -32007;
inline constexpr int kTimeout = -32008;
inline constexpr int kCorrupt = -32009;
inline constexpr int kIo = -32010;
inline constexpr int kKnockRejected = -32011;
inline constexpr int kNotInitialized = -32012;

// Where an error came from.
enum class ErrorOrigin {
  kServer,         // an `error` object in the daemon's response
  kUnreachable,    // nothing answers on the socket (absent, refused, permission denied)
  kClientTimeout,  // the client's own deadline passed before the response arrived
  kDisconnected,   // the daemon closed the connection (or it broke) before answering
  kProtocol,       // the daemon sent a line that is not a JSON-RPC 2.0 message, or too long a line
  kLocal,          // a local OS failure (socket(), bad socket path…)
};

// data_code values of client-side errors (the codes of server errors are the RPC.md names).
inline constexpr std::string_view kDataCodeUnreachable = "daemon_unreachable";
inline constexpr std::string_view kDataCodeClientTimeout = "client_timeout";
inline constexpr std::string_view kDataCodeDisconnected = "disconnected";
inline constexpr std::string_view kDataCodeProtocol = "protocol_error";
inline constexpr std::string_view kDataCodeLocal = "local_error";

struct RpcError {
  ErrorOrigin origin = ErrorOrigin::kServer;
  // JSON-RPC error.code for kServer. Client-side errors use 0.
  int code = 0;
  // data.code (stable lower_snake_case), or one of the kDataCode* names above.
  std::string data_code;
  // error.message, or a description of the client-side failure (it names the socket path).
  std::string message;
  // data.field when present: the offending parameter ("payload", "policy.strict_mode"…).
  std::string field;
  // The whole data object (null when absent); e.g. data.reason for knock_rejected.
  nlohmann::json data;
  // errno of a kUnreachable/kDisconnected/kLocal failure (ENOENT, ECONNREFUSED…), else 0.
  int os_error = 0;

  // The error as the JSON-RPC error object {code, message, data}; client-side errors get
  // data = {code: data_code} so a script can still dispatch on data.code.
  nlohmann::json ToJson() const;
};

// Converts a response's `error` member. Tolerates daemons that omit `data` or put a non-object
// there: data_code then falls back to the RPC.md name of `code` ("" for an unknown code).
RpcError ErrorFromJson(const nlohmann::json& error);

// The RPC.md §2 data.code name for a JSON-RPC error code ("invalid_argument" for -32602…), or ""
// when the code is not in the table.
std::string_view DataCodeForCode(int code) noexcept;

}  // namespace agentmesh::rpc
