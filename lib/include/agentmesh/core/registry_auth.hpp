// Registry request authentication (docs/PROTOCOL.md §7): every mutating registry request body
// carries "timestamp" and "signature", and the signature covers method, path, timestamp and the
// hash of the canonical body:
//
//   "agentmesh/1 request\n" METHOD "\n" PATH "\n" timestamp "\n" hex(SHA-256(JCS(body
//   \ signature)))
//
// METHOD is upper case, PATH the request path without the query string. The signing key is the
// one in the body for register / org/register, otherwise the acting agent's registered key.
//
// Used by the daemon (SignRegistryRequest) and the registry (VerifyRegistryRequest). Pure: the
// caller passes `now`. Replay memory of (key, signature) pairs is the registry's job.
// Thread-safety: values.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/knock.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh {

inline constexpr std::string_view kRegistryRequestDomain = "agentmesh/1 request\n";

// The exact bytes signed. kInvalidArgument (field "timestamp") if the body has no string
// "timestamp"; kInvalidArgument if the body is not an object or JCS cannot represent it.
Result<std::string> RegistryRequestSigningInput(std::string_view method, std::string_view path,
                                                const nlohmann::json& body);

// Sets body["timestamp"] = FormatRfc3339Z(now) (unless `keep_timestamp` and one is present) and
// body["signature"] = base64(Ed25519 over RegistryRequestSigningInput).
Result<void> SignRegistryRequest(std::string_view method, std::string_view path,
                                 nlohmann::json& body, const Ed25519SecretKey& secret,
                                 UnixNanos now, bool keep_timestamp = false);

// Checks body["timestamp"] is RFC 3339 inside `window` around `now` (kReplay "timestamp") and
// body["signature"] verifies with `key` (kInvalidArgument "signature" when absent or malformed,
// kAuthFailed "signature" when wrong).
Result<void> VerifyRegistryRequest(std::string_view method, std::string_view path,
                                   const nlohmann::json& body, const Ed25519PublicKey& key,
                                   UnixNanos now, FreshnessWindow window = {});

}  // namespace agentmesh
