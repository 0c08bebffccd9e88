#include "agentmesh/core/did.hpp"

#include <fmt/format.h>

#include <array>

#include "agentmesh/core/encoding.hpp"

namespace agentmesh {

namespace {

using nlohmann::json;

constexpr std::array<std::uint8_t, 2> kEd25519Header = {0xed, 0x01};
constexpr std::array<std::uint8_t, 2> kX25519Header = {0xec, 0x01};

constexpr std::array<std::string_view, 3> kContexts = {
    "https://www.w3.org/ns/did/v1",
    "https://w3id.org/security/suites/ed25519-2020/v1",
    "https://w3id.org/security/suites/x25519-2020/v1",
};

std::string EncodeMultibase(const std::array<std::uint8_t, 2>& header, ByteView key) {
  Bytes data(header.begin(), header.end());
  data.insert(data.end(), key.begin(), key.end());
  return "z" + Base58Encode(data);
}

Result<Bytes> DecodeMultibase(std::string_view text, const std::array<std::uint8_t, 2>& header,
                              std::string_view what) {
  if (!text.starts_with('z')) {
    return Fail(Code::kInvalidArgument,
                fmt::format("{} key must be multibase base58btc (start with 'z')", what));
  }
  auto raw = Base58Decode(text.substr(1));
  if (!raw) {
    return Fail(Code::kInvalidArgument, fmt::format("{} key: {}", what, raw.error().message));
  }
  if (raw->size() < 2 || (*raw)[0] != header[0] || (*raw)[1] != header[1]) {
    return Fail(Code::kInvalidArgument,
                fmt::format("{} key has the wrong multicodec header (want 0x{:02x} 0x{:02x})", what,
                            header[0], header[1]));
  }
  if (raw->size() != 2 + 32) {
    return Fail(Code::kInvalidArgument,
                fmt::format("{} key must hold 32 bytes, not {}", what, raw->size() - 2));
  }
  return Bytes(raw->begin() + 2, raw->end());
}

std::string Fragment(const std::string& did, std::string_view fragment) {
  return did + std::string(fragment);
}

// Strict readers for ParseDidDocument: `path` names the member in errors.
Result<const json*> Member(const json& object, std::string_view key, const std::string& path) {
  auto it = object.find(key);
  if (it == object.end()) return Fail(Code::kInvalidArgument, "is required", path);
  return &*it;
}

Result<std::string> StringMember(const json& object, std::string_view key,
                                 const std::string& path) {
  auto member = Member(object, key, path);
  if (!member) return std::unexpected(member.error());
  if (!(*member)->is_string()) return Fail(Code::kInvalidArgument, "must be a string", path);
  return (*member)->get<std::string>();
}

Result<void> ExpectString(const json& object, std::string_view key, const std::string& path,
                          std::string_view expected) {
  auto value = StringMember(object, key, path);
  if (!value) return std::unexpected(value.error());
  if (*value != expected) {
    return Fail(Code::kInvalidArgument, fmt::format("must be \"{}\"", expected), path);
  }
  return {};
}

Result<void> ExpectMembers(const json& object, std::initializer_list<std::string_view> allowed,
                           const std::string& prefix) {
  if (!object.is_object()) {
    return Fail(Code::kInvalidArgument, "must be an object", prefix.empty() ? "document" : prefix);
  }
  for (const auto& [key, value] : object.items()) {
    bool known = false;
    for (auto name : allowed) known = known || key == name;
    if (!known) {
      return Fail(Code::kInvalidArgument, "is not a member of an agent DID document",
                  prefix.empty() ? key : prefix + "." + key);
    }
  }
  return {};
}

Result<void> ExpectStringArray(const json& object, std::string_view key,
                               const std::vector<std::string>& expected) {
  const std::string path(key);
  auto member = Member(object, key, path);
  if (!member) return std::unexpected(member.error());
  if (!(*member)->is_array() || (*member)->size() != expected.size()) {
    return Fail(Code::kInvalidArgument,
                fmt::format("must be an array of {} string(s)", expected.size()), path);
  }
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const json& item = (**member)[i];
    if (!item.is_string() || item.get<std::string>() != expected[i]) {
      return Fail(Code::kInvalidArgument, fmt::format("must be \"{}\"", expected[i]),
                  fmt::format("{}[{}]", key, i));
    }
  }
  return {};
}

Result<UnixNanos> TimeMember(const json& object, std::string_view key) {
  auto text = StringMember(object, key, std::string(key));
  if (!text) return std::unexpected(text.error());
  auto t = ParseRfc3339(*text);
  if (!t) return Fail(Code::kInvalidArgument, t.error().message, std::string(key));
  return *t;
}

}  // namespace

std::string EncodeMultibaseEd25519(const Ed25519PublicKey& key) {
  return EncodeMultibase(kEd25519Header, key.view());
}

std::string EncodeMultibaseX25519(const X25519PublicKey& key) {
  return EncodeMultibase(kX25519Header, key.view());
}

Result<Ed25519PublicKey> ParseMultibaseEd25519(std::string_view text) {
  auto raw = DecodeMultibase(text, kEd25519Header, "Ed25519");
  if (!raw) return std::unexpected(raw.error());
  Ed25519PublicKey key;
  Ed25519PublicKey::FromBytes(*raw, key);
  return key;
}

Result<X25519PublicKey> ParseMultibaseX25519(std::string_view text) {
  auto raw = DecodeMultibase(text, kX25519Header, "X25519");
  if (!raw) return std::unexpected(raw.error());
  X25519PublicKey key;
  X25519PublicKey::FromBytes(*raw, key);
  return key;
}

std::string DidForAmid(const Amid& amid) { return std::string(kDidPrefix) + amid.str(); }

Result<Amid> ParseAgentDid(std::string_view did) {
  if (!did.starts_with(kDidPrefix)) {
    return Fail(Code::kInvalidArgument, fmt::format("a DID must start with \"{}\"", kDidPrefix));
  }
  auto amid = Amid::Parse(did.substr(kDidPrefix.size()));
  if (!amid) return Fail(Code::kInvalidArgument, "DID: " + amid.error().message);
  return std::move(*amid);
}

Result<json> BuildDidDocument(const DidDocumentInput& input) {
  if (Amid::FromPublicKey(input.signing_key) != input.amid) {
    return Fail(Code::kInvalidArgument, "is not the AMID of the signing key", "amid");
  }
  if (input.updated < input.created) {
    return Fail(Code::kInvalidArgument, "is earlier than created", "updated");
  }
  const std::string did = DidForAmid(input.amid);
  const std::string signing = Fragment(did, kDidSigningKeyFragment);
  const std::string agreement = Fragment(did, kDidKeyAgreementFragment);
  json doc = {
      {"@context", json(std::vector<std::string>(kContexts.begin(), kContexts.end()))},
      {"id", did},
      {"controller", did},
      {"verificationMethod",
       json::array({
           {{"id", signing},
            {"type", "Ed25519VerificationKey2020"},
            {"controller", did},
            {"publicKeyMultibase", EncodeMultibaseEd25519(input.signing_key)}},
           {{"id", agreement},
            {"type", "X25519KeyAgreementKey2020"},
            {"controller", did},
            {"publicKeyMultibase", EncodeMultibaseX25519(input.exchange_key)}},
       })},
      {"authentication", json::array({signing})},
      {"assertionMethod", json::array({signing})},
      {"keyAgreement", json::array({agreement})},
      {"service", json::array()},
      {"created", FormatRfc3339Z(input.created)},
      {"updated", FormatRfc3339Z(input.updated)},
  };
  if (!input.relay_endpoint.empty()) {
    doc["service"].push_back({{"id", Fragment(did, kDidRelayFragment)},
                              {"type", kDidRelayServiceType},
                              {"serviceEndpoint", input.relay_endpoint}});
  }
  return doc;
}

Result<DidDocumentInput> ParseDidDocument(const json& doc) {
  if (auto r =
          ExpectMembers(doc,
                        {"@context", "id", "controller", "verificationMethod", "authentication",
                         "assertionMethod", "keyAgreement", "service", "created", "updated"},
                        "");
      !r) {
    return std::unexpected(r.error());
  }
  auto contexts = ExpectStringArray(doc, "@context",
                                    std::vector<std::string>(kContexts.begin(), kContexts.end()));
  if (!contexts) return std::unexpected(contexts.error());
  auto did = StringMember(doc, "id", "id");
  if (!did) return std::unexpected(did.error());
  auto amid = ParseAgentDid(*did);
  if (!amid) return Fail(Code::kInvalidArgument, amid.error().message, "id");
  if (auto r = ExpectString(doc, "controller", "controller", *did); !r) {
    return std::unexpected(r.error());
  }
  const std::string signing = Fragment(*did, kDidSigningKeyFragment);
  const std::string agreement = Fragment(*did, kDidKeyAgreementFragment);

  auto methods = Member(doc, "verificationMethod", "verificationMethod");
  if (!methods) return std::unexpected(methods.error());
  if (!(*methods)->is_array() || (*methods)->size() != 2) {
    return Fail(Code::kInvalidArgument, "must be an array of 2 verification methods",
                "verificationMethod");
  }
  struct Expected {
    std::string id;
    std::string_view type;
  };
  const std::array<Expected, 2> expected = {Expected{signing, "Ed25519VerificationKey2020"},
                                            Expected{agreement, "X25519KeyAgreementKey2020"}};
  std::array<std::string, 2> multibase;
  for (std::size_t i = 0; i < 2; ++i) {
    const json& method = (**methods)[i];
    const std::string prefix = fmt::format("verificationMethod[{}]", i);
    if (auto r = ExpectMembers(method, {"id", "type", "controller", "publicKeyMultibase"}, prefix);
        !r) {
      return std::unexpected(r.error());
    }
    if (auto r = ExpectString(method, "id", prefix + ".id", expected[i].id); !r) {
      return std::unexpected(r.error());
    }
    if (auto r = ExpectString(method, "type", prefix + ".type", expected[i].type); !r) {
      return std::unexpected(r.error());
    }
    if (auto r = ExpectString(method, "controller", prefix + ".controller", *did); !r) {
      return std::unexpected(r.error());
    }
    auto text = StringMember(method, "publicKeyMultibase", prefix + ".publicKeyMultibase");
    if (!text) return std::unexpected(text.error());
    multibase[i] = std::move(*text);
  }
  auto signing_key = ParseMultibaseEd25519(multibase[0]);
  if (!signing_key) {
    return Fail(Code::kInvalidArgument, signing_key.error().message,
                "verificationMethod[0].publicKeyMultibase");
  }
  auto exchange_key = ParseMultibaseX25519(multibase[1]);
  if (!exchange_key) {
    return Fail(Code::kInvalidArgument, exchange_key.error().message,
                "verificationMethod[1].publicKeyMultibase");
  }
  if (Amid::FromPublicKey(*signing_key) != *amid) {
    return Fail(Code::kInvalidArgument, "the DID's AMID is not that of the signing key", "id");
  }
  const std::array<std::pair<std::string_view, std::string>, 3> references = {
      {{"authentication", signing}, {"assertionMethod", signing}, {"keyAgreement", agreement}}};
  for (const auto& [key, value] : references) {
    if (auto r = ExpectStringArray(doc, key, {value}); !r) return std::unexpected(r.error());
  }

  std::string relay;
  auto services = Member(doc, "service", "service");
  if (!services) return std::unexpected(services.error());
  if (!(*services)->is_array() || (*services)->size() > 1) {
    return Fail(Code::kInvalidArgument, "must be an array of at most 1 service", "service");
  }
  if (!(*services)->empty()) {
    const json& service = (**services)[0];
    if (auto r = ExpectMembers(service, {"id", "type", "serviceEndpoint"}, "service[0]"); !r) {
      return std::unexpected(r.error());
    }
    if (auto r = ExpectString(service, "id", "service[0].id", Fragment(*did, kDidRelayFragment));
        !r) {
      return std::unexpected(r.error());
    }
    if (auto r = ExpectString(service, "type", "service[0].type", kDidRelayServiceType); !r) {
      return std::unexpected(r.error());
    }
    auto endpoint = StringMember(service, "serviceEndpoint", "service[0].serviceEndpoint");
    if (!endpoint) return std::unexpected(endpoint.error());
    if (endpoint->empty()) {
      return Fail(Code::kInvalidArgument, "must not be empty", "service[0].serviceEndpoint");
    }
    relay = std::move(*endpoint);
  }
  auto created = TimeMember(doc, "created");
  if (!created) return std::unexpected(created.error());
  auto updated = TimeMember(doc, "updated");
  if (!updated) return std::unexpected(updated.error());
  if (*updated < *created) {
    return Fail(Code::kInvalidArgument, "is earlier than created", "updated");
  }
  return DidDocumentInput{std::move(*amid), *signing_key, *exchange_key,
                          std::move(relay), *created,     *updated};
}

}  // namespace agentmesh
