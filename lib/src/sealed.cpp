#include "agentmesh/core/sealed.hpp"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <utility>

#include "agentmesh/core/crypto.hpp"

namespace agentmesh {
namespace {

constexpr std::array<std::uint8_t, 4> kKeyMagic = {'A', 'M', 'S', 'K'};
constexpr std::array<std::uint8_t, 4> kPassphraseMagic = {'A', 'M', 'S', 'P'};
constexpr std::uint8_t kVersion = 0x01;
constexpr std::uint8_t kKdfArgon2id13 = 0x01;

constexpr std::size_t kKeyHeaderSize = 5;          // magic + version
constexpr std::size_t kPassphraseHeaderSize = 38;  // magic .. salt
constexpr std::size_t kPassphraseOpsOffset = 6;
constexpr std::size_t kPassphraseMemOffset = 14;
constexpr std::size_t kPassphraseSaltOffset = 22;

static_assert(kKeyHeaderSize + kAeadNonceSize + kAeadTagSize == kSealKeyOverhead);
static_assert(kPassphraseHeaderSize + kAeadNonceSize + kAeadTagSize == kSealPassphraseOverhead);
static_assert(kSealSaltSize == crypto_pwhash_argon2id_SALTBYTES);
static_assert(SealKey::kSize == kAeadKeySize);
static_assert(Argon2Params::kMinOpsLimit == crypto_pwhash_argon2id_OPSLIMIT_MIN);
static_assert(Argon2Params::kMinMemLimitBytes == crypto_pwhash_argon2id_MEMLIMIT_MIN);
static_assert(Argon2Params::Interactive().ops_limit == crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE);
static_assert(Argon2Params::Interactive().mem_limit_bytes ==
              crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE);
static_assert(Argon2Params::Moderate().ops_limit == crypto_pwhash_argon2id_OPSLIMIT_MODERATE);
static_assert(Argon2Params::Moderate().mem_limit_bytes == crypto_pwhash_argon2id_MEMLIMIT_MODERATE);

bool InBounds(std::uint64_t ops_limit, std::uint64_t mem_limit_bytes) noexcept {
  return ops_limit >= Argon2Params::kMinOpsLimit && ops_limit <= Argon2Params::kMaxOpsLimit &&
         mem_limit_bytes >= Argon2Params::kMinMemLimitBytes &&
         mem_limit_bytes <= Argon2Params::kMaxMemLimitBytes;
}

// AEAD associated data: the stored header followed by the caller's bytes. The header has a fixed
// length per form, so the concatenation is unambiguous.
Bytes JoinAd(ByteView header, ByteView associated_data) {
  Bytes ad;
  ad.reserve(header.size() + associated_data.size());
  ad.insert(ad.end(), header.begin(), header.end());
  ad.insert(ad.end(), associated_data.begin(), associated_data.end());
  return ad;
}

// Encrypts under `key` and appends nonce || ciphertext || tag to `out`, whose current contents
// are the header.
void SealInto(ByteView key, ByteView plaintext, ByteView associated_data, Rng& rng, Bytes& out) {
  const Bytes ad = JoinAd(out, associated_data);
  std::array<std::uint8_t, kAeadNonceSize> nonce{};
  rng.Fill(nonce);
  out.insert(out.end(), nonce.begin(), nonce.end());
  // Sizes are fixed by construction, so AeadSeal cannot fail here.
  (void)AeadSeal(key, nonce, ad, plaintext, out);
}

Result<SecretBuffer> OpenAfterHeader(ByteView key, ByteView sealed, std::size_t header_size,
                                     ByteView associated_data) {
  const Bytes ad = JoinAd(sealed.first(header_size), associated_data);
  const ByteView nonce = sealed.subspan(header_size, kAeadNonceSize);
  const ByteView ciphertext = sealed.subspan(header_size + kAeadNonceSize);
  SecretBuffer plaintext;
  plaintext.ExposeMutable().reserve(ciphertext.size() - kAeadTagSize);
  if (auto r = AeadOpen(key, nonce, ad, ciphertext, plaintext.ExposeMutable()); !r) {
    return Fail(Code::kAuthFailed, "sealed data failed authentication (wrong key or modified)");
  }
  return plaintext;
}

}  // namespace

Result<SealKey> DeriveSealKey(std::string_view passphrase, ByteView salt,
                              const Argon2Params& params) {
  if (salt.size() != kSealSaltSize) {
    return Fail(Code::kInvalidArgument, "Argon2 salt must be 16 bytes", "salt");
  }
  if (!InBounds(params.ops_limit, params.mem_limit_bytes)) {
    return Fail(Code::kInvalidArgument, "Argon2 parameters outside the accepted bounds", "params");
  }
  SealKey key;
  if (crypto_pwhash(key.data(), key.size(), passphrase.data(), passphrase.size(), salt.data(),
                    params.ops_limit, params.mem_limit_bytes, crypto_pwhash_ALG_ARGON2ID13) != 0) {
    return Fail(Code::kUnavailable, "Argon2id could not allocate its memory");
  }
  return key;
}

Bytes Seal(const SealKey& key, ByteView plaintext, ByteView associated_data, Rng& rng) {
  Bytes out;
  out.reserve(kSealKeyOverhead + plaintext.size());
  out.insert(out.end(), kKeyMagic.begin(), kKeyMagic.end());
  out.push_back(kVersion);
  SealInto(key.Expose(), plaintext, associated_data, rng, out);
  return out;
}

Result<SecretBuffer> Open(const SealKey& key, ByteView sealed, ByteView associated_data) {
  if (sealed.size() < kSealKeyOverhead) {
    return Fail(Code::kCorrupt, "sealed data is truncated");
  }
  if (!std::equal(kKeyMagic.begin(), kKeyMagic.end(), sealed.begin())) {
    return Fail(Code::kCorrupt, "not key-sealed data (bad magic)");
  }
  if (sealed[4] != kVersion) {
    return Fail(Code::kCorrupt, "unsupported sealed-data version");
  }
  return OpenAfterHeader(key.Expose(), sealed, kKeyHeaderSize, associated_data);
}

Result<Bytes> SealWithPassphrase(std::string_view passphrase, ByteView plaintext,
                                 ByteView associated_data, const Argon2Params& params, Rng& rng) {
  if (passphrase.empty()) {
    return Fail(Code::kInvalidArgument, "passphrase is empty", "passphrase");
  }
  std::array<std::uint8_t, kSealSaltSize> salt{};
  rng.Fill(salt);
  Result<SealKey> key = DeriveSealKey(passphrase, salt, params);
  if (!key) return std::unexpected(std::move(key.error()));

  Bytes out;
  out.reserve(kSealPassphraseOverhead + plaintext.size());
  out.insert(out.end(), kPassphraseMagic.begin(), kPassphraseMagic.end());
  out.push_back(kVersion);
  out.push_back(kKdfArgon2id13);
  PutU64Be(out, params.ops_limit);
  PutU64Be(out, params.mem_limit_bytes);
  out.insert(out.end(), salt.begin(), salt.end());
  SealInto(key->Expose(), plaintext, associated_data, rng, out);
  return out;
}

Result<SecretBuffer> OpenWithPassphrase(std::string_view passphrase, ByteView sealed,
                                        ByteView associated_data) {
  if (sealed.size() < kSealPassphraseOverhead) {
    return Fail(Code::kCorrupt, "sealed data is truncated");
  }
  if (!std::equal(kPassphraseMagic.begin(), kPassphraseMagic.end(), sealed.begin())) {
    return Fail(Code::kCorrupt, "not passphrase-sealed data (bad magic)");
  }
  if (sealed[4] != kVersion) {
    return Fail(Code::kCorrupt, "unsupported sealed-data version");
  }
  if (sealed[5] != kKdfArgon2id13) {
    return Fail(Code::kCorrupt, "unsupported key-derivation function");
  }
  const std::uint64_t ops_limit = GetU64Be(sealed.data() + kPassphraseOpsOffset);
  const std::uint64_t mem_limit = GetU64Be(sealed.data() + kPassphraseMemOffset);
  if (!InBounds(ops_limit, mem_limit)) {
    return Fail(Code::kCorrupt, "stored Argon2 parameters outside the accepted bounds");
  }
  const Argon2Params params{ops_limit, static_cast<std::size_t>(mem_limit)};
  Result<SealKey> key =
      DeriveSealKey(passphrase, sealed.subspan(kPassphraseSaltOffset, kSealSaltSize), params);
  if (!key) return std::unexpected(std::move(key.error()));
  return OpenAfterHeader(key->Expose(), sealed, kPassphraseHeaderSize, associated_data);
}

}  // namespace agentmesh
