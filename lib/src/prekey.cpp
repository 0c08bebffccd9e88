#include "agentmesh/core/prekey.hpp"

#include <fmt/format.h>

#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

namespace agentmesh {
namespace {

using nlohmann::json;

std::unexpected<Error> FieldError(const std::string& field, std::string_view what) {
  return Fail(Code::kInvalidArgument, fmt::format("{}: {}", field, what), field);
}

const json* Member(const json& object, const char* name) {
  auto it = object.find(name);
  return it == object.end() ? nullptr : &*it;
}

Result<std::uint32_t> ReadU32(const json& object, const char* name, const std::string& field) {
  const json* value = Member(object, name);
  if (value == nullptr) return FieldError(field, "missing");
  if (!value->is_number_unsigned()) {
    if (value->is_number_integer()) return FieldError(field, "must not be negative");
    return FieldError(field, "must be an unsigned integer");
  }
  const auto raw = value->get<std::uint64_t>();
  if (raw > std::numeric_limits<std::uint32_t>::max()) {
    return FieldError(field, "does not fit in 32 bits");
  }
  return static_cast<std::uint32_t>(raw);
}

Result<const std::string*> ReadString(const json& object, const char* name,
                                      const std::string& field) {
  const json* value = Member(object, name);
  if (value == nullptr) return FieldError(field, "missing");
  if (!value->is_string()) return FieldError(field, "must be a string");
  return &value->get_ref<const std::string&>();
}

Result<X25519PublicKey> ReadX25519(const json& object, const char* name, const std::string& field) {
  auto text = ReadString(object, name, field);
  if (!text) return std::unexpected(text.error());
  auto key = ParseX25519Key(**text);
  if (!key) return FieldError(field, key.error().message);
  return *key;
}

Result<OneTimePublic> ReadOneTime(const json& value, const std::string& field) {
  if (!value.is_object()) return FieldError(field, "must be an object");
  auto id = ReadU32(value, "id", field + ".id");
  if (!id) return std::unexpected(id.error());
  if (*id == 0) return FieldError(field + ".id", "one-time prekey ids start at 1");
  auto key = ReadX25519(value, "key", field + ".key");
  if (!key) return std::unexpected(key.error());
  return OneTimePublic{*id, *key};
}

Result<Signature> ReadSignature(const json& object, const char* name, const std::string& field) {
  auto text = ReadString(object, name, field);
  if (!text) return std::unexpected(text.error());
  auto sig = ParseSignature(**text);
  if (!sig) return FieldError(field, sig.error().message);
  return *sig;
}

json OneTimeToJson(const OneTimePublic& otk) {
  return json{{"id", otk.id}, {"key", FormatX25519Key(otk.key, false)}};
}

}  // namespace

SignedPrekey SignedPrekey::Generate(std::uint32_t id, const Ed25519SecretKey& signing_key,
                                    UnixNanos created_at, Rng& rng) {
  SignedPrekey spk;
  spk.id = id;
  spk.pair = X25519KeyPair::Generate(rng);
  spk.signature = SignPrekey(signing_key, spk.pair.public_key);
  spk.created_at = created_at;
  return spk;
}

Result<std::vector<OneTimePrekey>> GenerateOneTimePrekeys(std::uint32_t first_id, std::size_t count,
                                                          Rng& rng) {
  if (first_id == 0) return Fail(Code::kInvalidArgument, "one-time prekey ids start at 1");
  if (count > std::size_t{std::numeric_limits<std::uint32_t>::max() - first_id} + 1) {
    return Fail(Code::kInvalidArgument, "one-time prekey ids would overflow 32 bits");
  }
  std::vector<OneTimePrekey> out;
  out.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    out.push_back(
        OneTimePrekey{static_cast<std::uint32_t>(first_id + i), X25519KeyPair::Generate(rng)});
  }
  return out;
}

Signature SignPrekey(const Ed25519SecretKey& signing_key, const X25519PublicKey& prekey) noexcept {
  return Sign(signing_key, prekey.view());
}

bool VerifyPrekeySignature(const Ed25519PublicKey& signer, const X25519PublicKey& prekey,
                           const Signature& signature) noexcept {
  return Verify(signer, prekey.view(), signature);
}

PrekeyBundle MakeBundle(const X25519PublicKey& identity_key, const SignedPrekey& signed_prekey,
                        const OneTimePrekey* one_time_prekey) {
  PrekeyBundle bundle;
  bundle.identity_key = identity_key;
  bundle.signed_prekey_id = signed_prekey.id;
  bundle.signed_prekey = signed_prekey.pair.public_key;
  bundle.signed_prekey_signature = signed_prekey.signature;
  if (one_time_prekey != nullptr) {
    bundle.one_time_prekey = OneTimePublic{one_time_prekey->id, one_time_prekey->pair.public_key};
  }
  return bundle;
}

Result<void> VerifyBundle(const PrekeyBundle& bundle, const Ed25519PublicKey& signer) {
  if (bundle.one_time_prekey && bundle.one_time_prekey->id == 0) {
    return Fail(Code::kInvalidArgument, "one-time prekey ids start at 1", "one_time_prekey.id");
  }
  if (!VerifyPrekeySignature(signer, bundle.signed_prekey, bundle.signed_prekey_signature)) {
    return Fail(Code::kAuthFailed, "signed prekey signature does not verify",
                "signed_prekey_signature");
  }
  return {};
}

Result<PrekeyBundle> ParseBundleJson(const json& j) {
  if (!j.is_object()) return Fail(Code::kInvalidArgument, "prekey bundle must be a JSON object");
  PrekeyBundle bundle;

  auto identity = ReadX25519(j, "identity_key", "identity_key");
  if (!identity) return std::unexpected(identity.error());
  bundle.identity_key = *identity;

  auto spk_id = ReadU32(j, "signed_prekey_id", "signed_prekey_id");
  if (!spk_id) return std::unexpected(spk_id.error());
  bundle.signed_prekey_id = *spk_id;

  auto spk = ReadX25519(j, "signed_prekey", "signed_prekey");
  if (!spk) return std::unexpected(spk.error());
  bundle.signed_prekey = *spk;

  auto sig = ReadSignature(j, "signed_prekey_signature", "signed_prekey_signature");
  if (!sig) return std::unexpected(sig.error());
  bundle.signed_prekey_signature = *sig;

  std::optional<OneTimePublic> singular;
  if (const json* one = Member(j, "one_time_prekey"); one != nullptr && !one->is_null()) {
    auto otk = ReadOneTime(*one, "one_time_prekey");
    if (!otk) return std::unexpected(otk.error());
    singular = *otk;
  }
  std::optional<OneTimePublic> listed;
  if (const json* list = Member(j, "one_time_prekeys"); list != nullptr && !list->is_null()) {
    if (!list->is_array()) return FieldError("one_time_prekeys", "must be an array");
    if (list->size() > 1) {
      return FieldError("one_time_prekeys", "a fetched bundle carries at most one one-time prekey");
    }
    if (list->size() == 1) {
      auto otk = ReadOneTime((*list)[0], "one_time_prekeys[0]");
      if (!otk) return std::unexpected(otk.error());
      listed = *otk;
    }
  }
  if (singular && listed && *singular != *listed) {
    return FieldError("one_time_prekeys",
                      "disagrees with one_time_prekey (both forms must name the same key)");
  }
  bundle.one_time_prekey = singular ? singular : listed;
  return bundle;
}

Result<PrekeyBundle> ParseBundleJson(std::string_view text) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Fail(Code::kInvalidArgument, "prekey bundle is not valid JSON");
  return ParseBundleJson(j);
}

json BundleToJson(const PrekeyBundle& bundle) {
  json j = {
      {"identity_key", FormatX25519Key(bundle.identity_key, true)},
      {"signed_prekey", FormatX25519Key(bundle.signed_prekey, false)},
      {"signed_prekey_signature", FormatSignature(bundle.signed_prekey_signature)},
      {"signed_prekey_id", bundle.signed_prekey_id},
  };
  if (bundle.one_time_prekey) {
    j["one_time_prekey"] = OneTimeToJson(*bundle.one_time_prekey);
    j["one_time_prekeys"] = json::array({OneTimeToJson(*bundle.one_time_prekey)});
  } else {
    j["one_time_prekey"] = nullptr;
    j["one_time_prekeys"] = json::array();
  }
  return j;
}

json BuildPrekeyUploadBody(const Amid& amid, const SignedPrekey& signed_prekey,
                           std::span<const OneTimePrekey> one_time_prekeys) {
  json list = json::array();
  for (const OneTimePrekey& otk : one_time_prekeys) {
    list.push_back(OneTimeToJson(OneTimePublic{otk.id, otk.pair.public_key}));
  }
  return json{
      {"amid", amid.str()},
      {"signed_prekey", FormatX25519Key(signed_prekey.pair.public_key, false)},
      {"signed_prekey_signature", FormatSignature(signed_prekey.signature)},
      {"signed_prekey_id", signed_prekey.id},
      {"one_time_prekeys", std::move(list)},
  };
}

Result<PrekeyUpload> ParsePrekeyUploadJson(const json& j) {
  if (!j.is_object()) return Fail(Code::kInvalidArgument, "prekey upload must be a JSON object");
  auto amid_text = ReadString(j, "amid", "amid");
  if (!amid_text) return std::unexpected(amid_text.error());
  auto amid = Amid::Parse(**amid_text);
  if (!amid) return FieldError("amid", amid.error().message);

  auto spk_id = ReadU32(j, "signed_prekey_id", "signed_prekey_id");
  if (!spk_id) return std::unexpected(spk_id.error());
  auto spk = ReadX25519(j, "signed_prekey", "signed_prekey");
  if (!spk) return std::unexpected(spk.error());
  auto sig = ReadSignature(j, "signed_prekey_signature", "signed_prekey_signature");
  if (!sig) return std::unexpected(sig.error());

  PrekeyUpload upload{*amid, *spk_id, *spk, *sig, {}};
  if (const json* list = Member(j, "one_time_prekeys"); list != nullptr && !list->is_null()) {
    if (!list->is_array()) return FieldError("one_time_prekeys", "must be an array");
    std::set<std::uint32_t> seen;
    upload.one_time_prekeys.reserve(list->size());
    for (std::size_t i = 0; i < list->size(); ++i) {
      const std::string field = fmt::format("one_time_prekeys[{}]", i);
      auto otk = ReadOneTime((*list)[i], field);
      if (!otk) return std::unexpected(otk.error());
      if (!seen.insert(otk->id).second) return FieldError(field + ".id", "duplicate id");
      upload.one_time_prekeys.push_back(*otk);
    }
  }
  return upload;
}

}  // namespace agentmesh
