// Organisation helpers of amesh-registry: domain names, the DNS TXT check of POST /v1/org/verify
// and the organisation signing keys.
//
// Organisation keys: the org certificate's subject_key (the key that signs the certificates of
// the organisation's agents, docs/PROTOCOL.md §18.2) is derived from the registry root key:
//   seed = HKDF-SHA256(salt = "agentmesh/1 organization key", ikm = root seed,
//                      info = organization id), key = Ed25519 from seed.
// So the registry can issue agent certificates under an organisation without storing another
// secret, and nothing in the database is enough to forge one.
//
// Thread-safety: free functions on values; LookupTxt runs its own libuv loop on the calling
// thread (meant for a worker thread: it blocks up to about 3 x timeout).
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"

namespace agentmesh::registry {

// The issuer name of every certificate the registry signs with its root key.
inline constexpr std::string_view kRegistryIssuerName = "agentmesh-registry";

// ASCII-lower-cases `text` and checks it is a DNS domain of at least two labels: each 1-63
// letters, digits or '-' (not first or last), 253 bytes at most, no trailing dot.
// kInvalidArgument (field "domain") otherwise.
Result<std::string> NormalizeDomain(std::string_view text);

// The resolvers of a `dns_resolver` setting ("IP[:PORT],..."); when it is empty, the
// `nameserver` lines of `resolv_conf` (scoped IPv6 addresses are skipped). Possibly empty.
std::vector<std::string> ResolverList(std::string_view setting,
                                      const std::string& resolv_conf = "/etc/resolv.conf");

// TXT records of `name` from `servers` (see agentmesh::dns::TxtResolver for the codes:
// kNotFound, kTimeout, kUnavailable, kInvalidArgument for a malformed name); a server address
// c-ares refuses is kUnavailable. Blocks the calling thread on a private
// libuv loop; two tries, the first waiting `timeout`.
Result<std::vector<std::string>> LookupTxt(const std::vector<std::string>& servers,
                                           std::string_view name,
                                           std::chrono::milliseconds timeout);

// The organisation signing key (see the file comment).
Ed25519KeyPair DeriveOrganizationKey(const Ed25519KeyPair& root, std::string_view organization_id);

// A random certificate serial: 32 lower-case hex digits.
std::string NewCertificateSerial();

}  // namespace agentmesh::registry
