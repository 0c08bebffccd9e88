// DID documents for agents (docs/PROTOCOL.md §5.3, §18.1): did:agentmesh:<AMID>, with the agent's
// two public keys in multibase/multicodec form and its relay as a service. Fragment and service
// names are §5.3's.
//
// Multibase keys: "z" (base58btc) followed by the base58 encoding of a multicodec header and
// the raw 32-byte key:
//
//   key      header      text starts with   example length
//   Ed25519  0xed 0x01   "z6Mk"             48 characters
//   X25519   0xec 0x01   "z6LS"             48 characters
//
// (the same strings did:key uses). Parsers require the "z" prefix, the right header for the key
// type (an X25519 key never parses as an Ed25519 key) and exactly 32 key bytes.
//
// Document layout (nlohmann::json orders members by name; the serialized form is compact
// dump()):
//   {"@context": [DID v1, Ed25519 2020 suite, X25519 2020 suite],
//    "id": "did:agentmesh:<amid>", "controller": "<id>",
//    "verificationMethod": [
//      {"id": "<id>#signing-key", "type": "Ed25519VerificationKey2020",
//       "controller": "<id>", "publicKeyMultibase": "z6Mk…"},
//      {"id": "<id>#exchange-key", "type": "X25519KeyAgreementKey2020",
//       "controller": "<id>", "publicKeyMultibase": "z6LS…"}],
//    "authentication": ["<id>#signing-key"], "assertionMethod": ["<id>#signing-key"],
//    "keyAgreement": ["<id>#exchange-key"],
//    "service": [{"id": "<id>#agentmesh", "type": "AgentMeshEndpoint",
//                 "serviceEndpoint": "<relay url>"}],      (empty array without a relay)
//    "created": RFC 3339 Z, "updated": RFC 3339 Z}
//
// Pure functions of their inputs (no clock: created/updated are passed in). Thread-safety: values.
// Errors: kInvalidArgument, with Error::field naming the offending member where there is one.
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh {

inline constexpr std::string_view kDidPrefix = "did:agentmesh:";
inline constexpr std::string_view kDidSigningKeyFragment = "#signing-key";
inline constexpr std::string_view kDidKeyAgreementFragment = "#exchange-key";
inline constexpr std::string_view kDidRelayFragment = "#agentmesh";
inline constexpr std::string_view kDidRelayServiceType = "AgentMeshEndpoint";
inline constexpr std::string_view kDidContentType = "application/did+ld+json";

// "z" + base58btc(0xed 0x01 || key): "z6Mk…".
std::string EncodeMultibaseEd25519(const Ed25519PublicKey& key);
// "z" + base58btc(0xec 0x01 || key): "z6LS…".
std::string EncodeMultibaseX25519(const X25519PublicKey& key);
// kInvalidArgument: no "z" prefix, not base58, another multicodec header, not 32 key bytes.
Result<Ed25519PublicKey> ParseMultibaseEd25519(std::string_view text);
Result<X25519PublicKey> ParseMultibaseX25519(std::string_view text);

// "did:agentmesh:<amid>".
std::string DidForAmid(const Amid& amid);
// The AMID of a did:agentmesh DID. kInvalidArgument for another method or a malformed AMID.
Result<Amid> ParseAgentDid(std::string_view did);

struct DidDocumentInput {
  Amid amid;
  Ed25519PublicKey signing_key;
  X25519PublicKey exchange_key;
  std::string relay_endpoint;  // empty: "service" is an empty array
  UnixNanos created = 0;
  UnixNanos updated = 0;
};

// The DID document of an agent. kInvalidArgument (field "amid") when `amid` is not the AMID of
// `signing_key`, (field "updated") when updated < created.
Result<nlohmann::json> BuildDidDocument(const DidDocumentInput& input);

// Strict reading of a document produced by BuildDidDocument (e.g. fetched from a registry):
// every member above must be present with exactly that shape (no other members), the ids must
// belong to the document's DID, the keys must parse, and the AMID must be that of the signing
// key. Returns the inputs that rebuild the same document. kInvalidArgument naming the member
// ("verificationMethod[1].publicKeyMultibase").
Result<DidDocumentInput> ParseDidDocument(const nlohmann::json& document);

}  // namespace agentmesh
