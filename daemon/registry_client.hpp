// The daemon's HTTP client for amesh-registry (docs/PROTOCOL.md §7, §8).
//
// Transport: libcurl's multi interface driven by the caller's libuv loop
// (curl_multi_socket_action + uv_poll_t per socket + one uv_timer_t), so a request never blocks the
// loop. Connections are kept alive and reused between requests to the same registry. https://
// always verifies the server certificate and host name (against `ca_file`, or the system trust
// store when it is empty); there is no switch to turn verification off.
//
// Request signing: every mutating request (POST) made with a key pair carries "timestamp" and
// "signature" members computed by the core's SignRegistryRequest over METHOD, PATH (without query)
// and the canonical body, with the time taken from RegistryClientOptions::now.
//
// Callback contract: every callback runs on the loop thread, exactly once per call, never from
// inside the call that started the request (even a request that fails immediately, for example
// for a bad argument, is answered from the loop), unless the client is destroyed first — then it
// never runs. A callback may start new requests or destroy the client.
//
// Error mapping (Result error codes):
//   400 → kInvalidArgument   401 → kAuthFailed     403 → kPermissionDenied   404 → kNotFound
//   409 → kConflict          413, 429 → kLimitExceeded
//   5xx, refused/reset connections, DNS failures, TLS failures → kUnavailable
//   (a TLS certificate verification failure is kAuthFailed)
//   transfer exceeding timeout_ms → kTimeout
//   a 2xx response whose body is not JSON → kCorrupt; signing failures → kInvalidArgument.
//   Other statuses → kInternal. The Error message is the server's JSON "error" text when present,
//   else a description of the failure ("HTTP 502", curl's error text, ...).
// A 2xx response with an empty body yields an empty JSON object.
//
// Lifetime: the loop must outlive the client. The destructor cancels every request in flight
// without calling its callback and closes the client's uv handles; run the loop afterwards (for at
// least one turn) so the handles are freed before uv_loop_close.
// Threading: the loop thread only. Not copyable or movable.
#pragma once

#include <uv.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh::daemon {

struct RegistryClientOptions {
  std::string base_url{};  // "http://127.0.0.1:8080" or https://… (no trailing slash needed)
  std::string ca_file{};   // PEM trust anchors; empty = system trust store (verification always on)
  std::uint64_t timeout_ms = 10'000;  // whole transfer, connect included
  // Wall clock used for request timestamps. Empty = the system clock (std::chrono::system_clock).
  // (Addition to the agreed interface; existing aggregate initialisations are unaffected.)
  std::function<UnixNanos()> now{};
  // Called on the loop after every finished request, before its own callback: whether the
  // registry answered at all (any HTTP answer but a gateway's 502/503/504), and if not, why.
  std::function<void(bool reachable, const std::string& error)> on_reachability{};
};

// GET /v1/registry/search?capability=…&tier_min=…&reputation_min=…&status=…&limit=…&offset=…
// (absent optionals are not sent).
struct SearchQuery {
  std::string capability{};
  std::optional<std::string> tier_min{};
  std::optional<double> reputation_min{};
  std::optional<std::string> status{};
  std::uint32_t limit = 20;
  std::uint32_t offset = 0;
};

class RegistryClient {
 public:
  using JsonCallback = std::function<void(Result<nlohmann::json>)>;

  // Does no I/O. A malformed base_url is reported by each request (kInvalidArgument).
  RegistryClient(uv_loop_t* loop, RegistryClientOptions options);
  ~RegistryClient();
  RegistryClient(const RegistryClient&) = delete;
  RegistryClient& operator=(const RegistryClient&) = delete;

  // POST /v1/registry/register, signed per PROTOCOL.md §7 with `signing`. The body is `extra`
  // (an object; may hold display_name, capabilities, relay_endpoint, …) plus amid,
  // signing_public_key ("ed25519:…") and exchange_public_key ("x25519:…"), which the client sets
  // (overriding any such member of `extra`). A non-object `extra` is kInvalidArgument. 409 "already
  // registered" is returned as kConflict (callers decide).
  void Register(const Ed25519KeyPair& signing, const X25519PublicKey& exchange,
                const nlohmann::json& extra, JsonCallback done);
  // POST /v1/registry/capabilities {amid, capabilities}, signed.
  void UpdateCapabilities(const Ed25519KeyPair& signing,
                          const std::vector<std::string>& capabilities, JsonCallback done);
  // POST /v1/registry/status {amid, status}, signed.
  void SetStatus(const Ed25519KeyPair& signing, std::string_view status, JsonCallback done);
  // GET /v1/registry/lookup?amid={amid}.
  void Lookup(const Amid& amid, JsonCallback done);
  // GET /v1/registry/search?… (see SearchQuery).
  void Search(const SearchQuery& query, JsonCallback done);
  // POST /v1/registry/prekeys with BuildPrekeyUploadBody(...) (core prekey.hpp), signed.
  void UploadPrekeys(const Ed25519KeyPair& signing, nlohmann::json upload_body, JsonCallback done);
  // GET /v1/registry/prekeys/{amid}, parsed with ParseBundleJson (core). A body that does not parse
  // as a bundle is kCorrupt. The signed-prekey signature is NOT verified here (the caller holds the
  // peer's registered Ed25519 key and must verify it before use, §8).
  void FetchBundle(const Amid& amid, std::function<void(Result<PrekeyBundle>)> done);
  // Generic: GET when body is null, else POST of *body (an object) signed with `signing` when
  // non-null (unsigned otherwise). `path_and_query` starts with '/'; the signature covers the path
  // without the query. `method` overrides the verb ("GET", "POST", "DELETE", "PUT"); a body with
  // GET is an error (kInvalidArgument). The pointed-to values are copied before return.
  void Request(std::string_view method, std::string_view path_and_query, const nlohmann::json* body,
               const Ed25519KeyPair* signing, JsonCallback done);

  // Requests started and not yet answered.
  std::size_t in_flight() const noexcept;

  class Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentmesh::daemon
