// Error model shared by every library and RPC boundary.
//
// A fallible function returns Result<T> = std::expected<T, Error>. Error carries one code from a
// small closed set, a human-readable message (never containing secret material), and optionally the
// name of the input field that was wrong, so callers can point users at the exact JSON key.
//
// Thread-safety: plain values; no shared state.
#pragma once

#include <expected>
#include <string>
#include <string_view>
#include <utility>

namespace agentmesh {

// The closed set of error codes. Adding a code is a protocol-visible change (RPC maps them).
enum class Code {
  kInvalidArgument,   // input is malformed, of the wrong type or length, or out of range
  kAuthFailed,        // a signature, MAC or credential did not verify
  kReplay,            // input was valid once but has been seen/consumed already
  kNotFound,          // the named thing does not exist
  kConflict,          // the thing exists already / state forbids the operation
  kLimitExceeded,     // a size, count or rate limit was hit
  kPermissionDenied,  // the caller is not allowed to do this
  kUnavailable,       // a dependency is unreachable or not ready; retrying may help
  kTimeout,           // a deadline passed
  kCorrupt,           // stored data failed an integrity or format check
  kIo,                // an operating-system or storage operation failed
  kInternal,          // a bug: an invariant did not hold
};

// Stable lower_snake_case name of a code ("invalid_argument", "auth_failed", ...).
std::string_view CodeName(Code code) noexcept;

struct Error {
  Code code = Code::kInternal;
  std::string message;
  std::string field;  // offending input field (e.g. "intent.category"), or empty

  // "<code_name>: <message>" or "<code_name>: <field>: <message>".
  std::string ToString() const;
};

template <typename T>
using Result = std::expected<T, Error>;

// Shorthand for building an error return: `return Fail(Code::kInvalidArgument, "bad length");`
inline std::unexpected<Error> Fail(Code code, std::string message, std::string field = {}) {
  return std::unexpected<Error>(Error{code, std::move(message), std::move(field)});
}

}  // namespace agentmesh
