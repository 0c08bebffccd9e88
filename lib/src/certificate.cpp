#include "agentmesh/core/certificate.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "agentmesh/core/knock.hpp"

namespace agentmesh {

namespace {

using nlohmann::json;

constexpr std::string_view kEd25519Prefix = "ed25519:";
constexpr std::size_t kMaxSerialChars = 64;
constexpr std::size_t kMaxIssuerChars = 256;

constexpr std::array<std::string_view, 11> kMembers = {
    "version",    "type", "serial",    "subject",    "subject_key", "issuer",
    "issuer_key", "tier", "issued_at", "expires_at", "signature"};

std::unexpected<Error> Invalid(std::string field, std::string message) {
  return Fail(Code::kInvalidArgument, std::move(message), std::move(field));
}

std::unexpected<Error> WithPrefix(Error error, std::string_view prefix) {
  error.field = error.field.empty() ? std::string(prefix.substr(0, prefix.size() - 1))
                                    : std::string(prefix) + error.field;
  return std::unexpected(std::move(error));
}

Result<void> CheckSerial(std::string_view serial) {
  if (serial.empty() || serial.size() > kMaxSerialChars) {
    return Invalid("serial", "must be 1-64 lower-case hex digits");
  }
  for (char c : serial) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return Invalid("serial", "must be 1-64 lower-case hex digits");
    }
  }
  return {};
}

// A lower-case DNS name of at least two labels, no trailing dot.
Result<void> CheckDomain(std::string_view domain) {
  const auto bad = [] { return Invalid("subject", "must be a lower-case DNS domain name"); };
  if (domain.empty() || domain.size() > 253 || domain.find('.') == std::string_view::npos) {
    return bad();
  }
  std::size_t start = 0;
  while (start <= domain.size()) {
    std::size_t end = domain.find('.', start);
    if (end == std::string_view::npos) end = domain.size();
    const std::string_view label = domain.substr(start, end - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return bad();
    }
    for (char c : label) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')) {
        return bad();
      }
    }
    start = end + 1;
  }
  return {};
}

Result<void> CheckIssuerName(std::string_view issuer) {
  if (issuer.empty() || issuer.size() > kMaxIssuerChars) {
    return Invalid("issuer", "must be 1-256 printable ASCII characters");
  }
  for (char c : issuer) {
    if (c < 0x20 || c > 0x7e) return Invalid("issuer", "must be 1-256 printable ASCII characters");
  }
  return {};
}

Result<void> CheckParams(const CertificateParams& p) {
  if (auto r = CheckSerial(p.serial); !r) return r;
  if (p.type == CertificateType::kOrganization) {
    if (auto r = CheckDomain(p.subject); !r) return r;
    if (p.tier != Tier::kOrganization) {
      return Invalid("tier", "an org_certificate has tier \"organization\"");
    }
  } else {
    auto amid = Amid::Parse(p.subject);
    if (!amid || amid->str() != p.subject) {
      return Invalid("subject", "an agent_certificate's subject must be a canonical AMID");
    }
  }
  if (auto r = CheckIssuerName(p.issuer); !r) return r;
  if (p.expires_at <= p.issued_at) return Invalid("expires_at", "must be after issued_at");
  return {};
}

Result<Ed25519PublicKey> GetKey(const json& object, std::string_view key) {
  auto text = detail::GetString(object, key, "");
  if (!text) return std::unexpected(text.error());
  if (!text->starts_with(kEd25519Prefix)) {
    return Invalid(std::string(key), "must be \"ed25519:<base64>\"");
  }
  auto parsed = ParseEd25519Key(*text);
  if (!parsed) return Invalid(std::string(key), parsed.error().message);
  return *parsed;
}

Result<UnixNanos> GetTime(const json& object, std::string_view key) {
  auto text = detail::GetString(object, key, "");
  if (!text) return std::unexpected(text.error());
  auto t = ParseRfc3339(*text);
  if (!t) return Invalid(std::string(key), t.error().message);
  return *t;
}

}  // namespace

std::string_view CertificateTypeName(CertificateType type) noexcept {
  return type == CertificateType::kOrganization ? "org_certificate" : "agent_certificate";
}

std::string Certificate::Serialize() const { return detail::Dump(object); }

Result<Certificate> IssueCertificate(const CertificateParams& params,
                                     const Ed25519SecretKey& issuer_secret) {
  if (auto r = CheckParams(params); !r) return std::unexpected(r.error());
  if (params.type == CertificateType::kAgent &&
      Amid::FromPublicKey(params.subject_key).str() != params.subject) {
    return Invalid("subject", "is not the AMID of subject_key");
  }
  Ed25519PublicKey issuer_key;
  Ed25519PublicKey::FromBytes(issuer_secret.Expose().subspan(32), issuer_key);
  json object = {
      {"version", kCertificateVersion},
      {"type", CertificateTypeName(params.type)},
      {"serial", params.serial},
      {"subject", params.subject},
      {"subject_key", FormatEd25519Key(params.subject_key)},
      {"issuer", params.issuer},
      {"issuer_key", FormatEd25519Key(issuer_key)},
      {"tier", ToString(params.tier)},
      {"issued_at", FormatRfc3339Z(params.issued_at)},
      {"expires_at", FormatRfc3339Z(params.expires_at)},
  };
  if (auto r = SignObject(object, issuer_secret); !r) return std::unexpected(r.error());
  return ParseCertificate(object);
}

Result<Certificate> ParseCertificate(const json& object) {
  if (!object.is_object()) return Invalid("", "a certificate must be a JSON object");
  for (const auto& [key, value] : object.items()) {
    bool known = false;
    for (auto name : kMembers) known = known || key == name;
    if (!known) return Invalid(key, "is not a certificate member (version 1)");
  }
  auto version = detail::GetInteger(object, "version", "", true, 0, 1'000'000);
  if (!version) return std::unexpected(version.error());
  if (**version != kCertificateVersion) {
    return Invalid("version", fmt::format("must be {}", kCertificateVersion));
  }
  auto type = detail::GetString(object, "type", "");
  if (!type) return std::unexpected(type.error());
  CertificateParams params;
  if (*type == CertificateTypeName(CertificateType::kOrganization)) {
    params.type = CertificateType::kOrganization;
  } else if (*type == CertificateTypeName(CertificateType::kAgent)) {
    params.type = CertificateType::kAgent;
  } else {
    return Invalid("type", "must be \"org_certificate\" or \"agent_certificate\"");
  }
  auto serial = detail::GetString(object, "serial", "");
  if (!serial) return std::unexpected(serial.error());
  params.serial = std::move(*serial);
  auto subject = detail::GetString(object, "subject", "");
  if (!subject) return std::unexpected(subject.error());
  params.subject = std::move(*subject);
  auto subject_key = GetKey(object, "subject_key");
  if (!subject_key) return std::unexpected(subject_key.error());
  params.subject_key = *subject_key;
  auto issuer = detail::GetString(object, "issuer", "");
  if (!issuer) return std::unexpected(issuer.error());
  params.issuer = std::move(*issuer);
  auto issuer_key = GetKey(object, "issuer_key");
  if (!issuer_key) return std::unexpected(issuer_key.error());
  auto tier_text = detail::GetString(object, "tier", "");
  if (!tier_text) return std::unexpected(tier_text.error());
  auto tier = TierFromName(*tier_text);
  if (!tier) return Invalid("tier", tier.error().message);
  params.tier = *tier;
  auto issued_at = GetTime(object, "issued_at");
  if (!issued_at) return std::unexpected(issued_at.error());
  params.issued_at = *issued_at;
  auto expires_at = GetTime(object, "expires_at");
  if (!expires_at) return std::unexpected(expires_at.error());
  params.expires_at = *expires_at;
  if (auto r = CheckParams(params); !r) return std::unexpected(r.error());
  auto signature = detail::GetSignatureMember(object, /*required=*/true);
  if (!signature) return std::unexpected(signature.error());
  return Certificate{object, std::move(params), *issuer_key, **signature};
}

Result<Certificate> ParseCertificateText(std::string_view text) {
  auto object = detail::ParseObjectText(text, kMaxCertificateBytes, "certificate");
  if (!object) return std::unexpected(object.error());
  return ParseCertificate(*object);
}

Result<VerifiedAgent> VerifyChain(const Ed25519PublicKey& root_key,
                                  std::span<const Certificate> chain, UnixNanos now) {
  if (chain.empty() || chain.size() > kMaxChainLength) {
    return Invalid("chain", fmt::format("must hold 1 to {} certificates", kMaxChainLength));
  }
  UnixNanos earliest_expiry = chain[0].params.expires_at;
  for (std::size_t i = 0; i < chain.size(); ++i) {
    const Certificate& cert = chain[i];
    const CertificateParams& p = cert.params;
    const std::string prefix = fmt::format("chain[{}].", i);
    const bool last = i + 1 == chain.size();
    const CertificateType want = last ? CertificateType::kAgent : CertificateType::kOrganization;
    if (p.type != want) {
      return Fail(Code::kInvalidArgument,
                  fmt::format("must be an {} here", CertificateTypeName(want)), prefix + "type");
    }
    const Ed25519PublicKey& expected_issuer = i == 0 ? root_key : chain[i - 1].params.subject_key;
    if (cert.issuer_key != expected_issuer) {
      return Fail(Code::kAuthFailed,
                  i == 0 ? "is not the trusted root key"
                         : "is not the subject_key of chain[" + std::to_string(i - 1) + "]",
                  prefix + "issuer_key");
    }
    if (i > 0 && p.issuer != chain[i - 1].params.subject) {
      return Fail(Code::kAuthFailed,
                  fmt::format("is not the subject of chain[{}] (\"{}\")", i - 1,
                              chain[i - 1].params.subject),
                  prefix + "issuer");
    }
    if (i > 0 && p.tier != Tier::kOrganization) {
      return Fail(Code::kAuthFailed, "an organisation can only vouch for tier \"organization\"",
                  prefix + "tier");
    }
    if (auto r = VerifyObjectSignature(cert.object, cert.issuer_key); !r) {
      Error error = r.error();
      error.code = Code::kAuthFailed;  // a signature the parser accepted but that is wrong
      return WithPrefix(std::move(error), prefix);
    }
    if (now < p.issued_at) {
      return Fail(Code::kAuthFailed,
                  fmt::format("is not valid before {}", FormatRfc3339Z(p.issued_at)),
                  prefix + "issued_at");
    }
    if (now >= p.expires_at) {
      return Fail(Code::kAuthFailed, fmt::format("expired at {}", FormatRfc3339Z(p.expires_at)),
                  prefix + "expires_at");
    }
    earliest_expiry = std::min(earliest_expiry, p.expires_at);
  }
  const Certificate& agent = chain.back();
  const Amid amid = Amid::FromPublicKey(agent.params.subject_key);
  if (amid.str() != agent.params.subject) {
    return Fail(Code::kAuthFailed, "is not the AMID of subject_key",
                fmt::format("chain[{}].subject", chain.size() - 1));
  }
  std::optional<std::string> organization;
  if (chain.size() > 1) organization = chain[chain.size() - 2].params.subject;
  return VerifiedAgent{amid,         agent.params.subject_key, agent.params.tier,
                       organization, agent.params.serial,      earliest_expiry};
}

Result<VerifiedAgent> VerifyChain(const Ed25519PublicKey& root_key, std::span<const json> chain,
                                  UnixNanos now) {
  if (chain.empty() || chain.size() > kMaxChainLength) {
    return Invalid("chain", fmt::format("must hold 1 to {} certificates", kMaxChainLength));
  }
  std::vector<Certificate> parsed;
  parsed.reserve(chain.size());
  for (std::size_t i = 0; i < chain.size(); ++i) {
    auto cert = ParseCertificate(chain[i]);
    if (!cert) return WithPrefix(cert.error(), fmt::format("chain[{}].", i));
    parsed.push_back(std::move(*cert));
  }
  return VerifyChain(root_key, std::span<const Certificate>(parsed), now);
}

}  // namespace agentmesh
