// Certificates (docs/PROTOCOL.md §18.2): signed JSON documents forming the chain
//
//   registry root key  --signs-->  org_certificate  --signs-->  agent_certificate
//
// verifiable offline by anyone who knows the registry's root public key. A registry may also
// sign an agent_certificate directly with its root key (a chain of one), e.g. for an agent whose
// owner it verified itself.
//
// One certificate is one JSON object with exactly these members:
//
//   member       type     meaning
//   version      integer  1
//   type         string   "org_certificate" | "agent_certificate"
//   serial       string   1-64 lower-case hex digits chosen by the issuer
//   subject      string   org: its DNS domain (lower case, e.g. "example.org");
//                         agent: its AMID
//   subject_key  string   "ed25519:<base64>": org: the key that signs its agent certificates;
//                         agent: the agent's signing key (its AMID must be `subject`)
//   issuer       string   root-issued: the registry's name (1-256 printable ASCII);
//                         org-issued: the org certificate's `subject`
//   issuer_key   string   "ed25519:<base64>" of the key that made `signature`
//   tier         string   "anonymous" | "verified" | "organization"; an org certificate and an
//                         agent certificate under one are "organization"
//   issued_at    string   RFC 3339; valid from this instant (inclusive)
//   expires_at   string   RFC 3339, after issued_at; valid until this instant (exclusive)
//   signature    string   base64 Ed25519 by issuer_key over the RFC 8785 canonical JSON of the
//                         object without "signature" (SignObject / VerifyObjectSignature)
//
// Key strings must carry their "ed25519:" prefix here. Members not in the table are rejected
// (a new member needs a new version), so nothing unsigned-but-meaningful can ride along.
//
// Pure functions: "now" is passed in. Thread-safety: values.
// Errors: kInvalidArgument for a malformed certificate (Error::field names the member, prefixed
// "chain[i]." inside VerifyChain); kAuthFailed for a signature that does not verify, a broken
// issuer/subject link, a certificate outside its validity window at `now`, or an AMID that is
// not that of the subject key; kLimitExceeded for text over kMaxCertificateBytes.
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/tier.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh {

inline constexpr int kCertificateVersion = 1;
inline constexpr std::size_t kMaxCertificateBytes = 4096;
// Longest chain VerifyChain accepts: organisation, then agent.
inline constexpr std::size_t kMaxChainLength = 2;

enum class CertificateType { kOrganization, kAgent };
// "org_certificate" | "agent_certificate"
std::string_view CertificateTypeName(CertificateType type) noexcept;

// What the issuer decides; IssueCertificate adds version, issuer_key and signature.
struct CertificateParams {
  CertificateType type = CertificateType::kAgent;
  std::string serial;
  std::string subject;
  Ed25519PublicKey subject_key;
  std::string issuer;
  Tier tier = Tier::kOrganization;
  UnixNanos issued_at = 0;
  UnixNanos expires_at = 0;
};

// A parsed certificate: the typed members and the object they came from (which the signature
// covers). Edit neither without re-parsing.
struct Certificate {
  nlohmann::json object;
  CertificateParams params;
  Ed25519PublicKey issuer_key;
  Signature signature;

  // Compact JSON text of `object`.
  std::string Serialize() const;
};

// Builds and signs a certificate. The issuer key is the public half of `issuer_secret`.
// kInvalidArgument (field named) for parameters a parser would reject: a bad serial, subject or
// issuer, expires_at <= issued_at, an agent subject that is not the AMID of subject_key.
Result<Certificate> IssueCertificate(const CertificateParams& params,
                                     const Ed25519SecretKey& issuer_secret);

// Strict parse of one certificate object (see the table). Does not check the signature.
Result<Certificate> ParseCertificate(const nlohmann::json& object);
// Size check (kLimitExceeded), JSON parse (duplicate member names rejected), ParseCertificate.
Result<Certificate> ParseCertificateText(std::string_view text);

// The result of a verified chain: who the agent is and what vouches for it.
struct VerifiedAgent {
  Amid amid;
  Ed25519PublicKey signing_key;
  Tier tier = Tier::kAnonymous;
  std::optional<std::string> organization;  // the org certificate's subject, when present
  std::string serial;                       // the agent certificate's serial
  UnixNanos expires_at = 0;                 // earliest expiry in the chain
};

// Verifies a chain [org_certificate, agent_certificate] or [agent_certificate], root first:
//   - chain[0].issuer_key is `root_key`; each later issuer_key is the previous subject_key and
//     its issuer the previous subject;
//   - every signature verifies with its issuer_key;
//   - types: the last is an agent certificate, any before it org certificates; tiers as above;
//   - every certificate satisfies issued_at <= now < expires_at;
//   - the agent certificate's subject is the AMID of its subject_key.
// Errors as in the file comment, the field prefixed with "chain[i]."; an empty or too long chain
// is kInvalidArgument (field "chain").
Result<VerifiedAgent> VerifyChain(const Ed25519PublicKey& root_key,
                                  std::span<const Certificate> chain, UnixNanos now);
// The same over JSON objects, parsed strictly first.
Result<VerifiedAgent> VerifyChain(const Ed25519PublicKey& root_key,
                                  std::span<const nlohmann::json> chain, UnixNanos now);

}  // namespace agentmesh
