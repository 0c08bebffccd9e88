#include "agentmesh/core/registry_auth.hpp"

#include "agentmesh/core/canonical_json.hpp"
#include "agentmesh/core/crypto.hpp"
#include "agentmesh/core/encoding.hpp"

namespace agentmesh {

Result<std::string> RegistryRequestSigningInput(std::string_view method, std::string_view path,
                                                const nlohmann::json& body) {
  if (!body.is_object()) return Fail(Code::kInvalidArgument, "request body must be an object");
  auto ts = body.find("timestamp");
  if (ts == body.end() || !ts->is_string()) {
    return Fail(Code::kInvalidArgument, "must be an RFC 3339 string", "timestamp");
  }
  auto canonical = CanonicalJsonWithout(body, "signature");
  if (!canonical) return std::unexpected(canonical.error());
  auto digest = Sha256(AsBytes(*canonical));
  std::string input;
  input.reserve(kRegistryRequestDomain.size() + method.size() + path.size() + 128);
  input += kRegistryRequestDomain;
  input += method;
  input += '\n';
  input += path;
  input += '\n';
  input += ts->get_ref<const std::string&>();
  input += '\n';
  input += HexEncode(digest);
  return input;
}

Result<void> SignRegistryRequest(std::string_view method, std::string_view path,
                                 nlohmann::json& body, const Ed25519SecretKey& secret,
                                 UnixNanos now, bool keep_timestamp) {
  if (!body.is_object()) return Fail(Code::kInvalidArgument, "request body must be an object");
  if (!keep_timestamp || !body.contains("timestamp")) body["timestamp"] = FormatRfc3339Z(now);
  auto input = RegistryRequestSigningInput(method, path, body);
  if (!input) return std::unexpected(input.error());
  body["signature"] = FormatSignature(Sign(secret, AsBytes(*input)));
  return {};
}

Result<void> VerifyRegistryRequest(std::string_view method, std::string_view path,
                                   const nlohmann::json& body, const Ed25519PublicKey& key,
                                   UnixNanos now, FreshnessWindow window) {
  auto input = RegistryRequestSigningInput(method, path, body);
  if (!input) return std::unexpected(input.error());
  auto ts = ParseRfc3339(body["timestamp"].get_ref<const std::string&>());
  if (!ts) return Fail(Code::kInvalidArgument, ts.error().message, "timestamp");
  if (auto fresh = CheckFreshness(*ts, now, window.max_past, window.max_future); !fresh) {
    return std::unexpected(fresh.error());
  }
  auto sig_it = body.find("signature");
  if (sig_it == body.end() || !sig_it->is_string()) {
    return Fail(Code::kInvalidArgument, "missing or not a string", "signature");
  }
  auto sig = ParseSignature(sig_it->get_ref<const std::string&>());
  if (!sig) return Fail(Code::kInvalidArgument, sig.error().message, "signature");
  if (!Verify(key, AsBytes(*input), *sig)) {
    return Fail(Code::kAuthFailed, "does not verify", "signature");
  }
  return {};
}

}  // namespace agentmesh
