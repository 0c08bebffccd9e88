#include "agentmesh/core/crypto.hpp"

#include <sodium.h>

#include <algorithm>

namespace agentmesh {

Sha256Digest Sha256(ByteView data) noexcept {
  Sha256Digest out{};
  crypto_hash_sha256(out.data(), data.data(), data.size());
  return out;
}

Sha256Digest HmacSha256(ByteView key, ByteView message) noexcept {
  Sha256Digest out{};
  crypto_auth_hmacsha256_state state;
  crypto_auth_hmacsha256_init(&state, key.data(), key.size());
  crypto_auth_hmacsha256_update(&state, message.data(), message.size());
  crypto_auth_hmacsha256_final(&state, out.data());
  sodium_memzero(&state, sizeof state);
  return out;
}

Result<void> Hkdf(ByteView salt, ByteView ikm, ByteView info, MutableByteView out) noexcept {
  if (out.size() > 255 * kSha256Size) {
    return Fail(Code::kInvalidArgument, "HKDF output longer than 255*32 bytes");
  }
  static constexpr std::uint8_t kZeroSalt[kSha256Size] = {};
  const ByteView effective_salt = salt.empty() ? ByteView(kZeroSalt, sizeof kZeroSalt) : salt;
  Sha256Digest prk = HmacSha256(effective_salt, ikm);

  Sha256Digest block{};
  std::size_t written = 0;
  for (std::uint8_t counter = 1; written < out.size(); ++counter) {
    crypto_auth_hmacsha256_state state;
    crypto_auth_hmacsha256_init(&state, prk.data(), prk.size());
    if (counter > 1) crypto_auth_hmacsha256_update(&state, block.data(), block.size());
    crypto_auth_hmacsha256_update(&state, info.data(), info.size());
    crypto_auth_hmacsha256_update(&state, &counter, 1);
    crypto_auth_hmacsha256_final(&state, block.data());
    const std::size_t take = std::min(block.size(), out.size() - written);
    std::copy_n(block.data(), take, out.data() + written);
    written += take;
  }
  sodium_memzero(prk.data(), prk.size());
  sodium_memzero(block.data(), block.size());
  return {};
}

Result<void> AeadSeal(ByteView key, ByteView nonce, ByteView ad, ByteView plaintext, Bytes& out) {
  if (key.size() != kAeadKeySize) return Fail(Code::kInvalidArgument, "AEAD key must be 32 bytes");
  if (nonce.size() != kAeadNonceSize) {
    return Fail(Code::kInvalidArgument, "AEAD nonce must be 24 bytes");
  }
  const std::size_t offset = out.size();
  out.resize(offset + plaintext.size() + kAeadTagSize);
  unsigned long long written = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(out.data() + offset, &written, plaintext.data(),
                                             plaintext.size(), ad.data(), ad.size(), nullptr,
                                             nonce.data(), key.data());
  out.resize(offset + written);
  return {};
}

Result<void> AeadOpen(ByteView key, ByteView nonce, ByteView ad, ByteView ciphertext, Bytes& out) {
  if (key.size() != kAeadKeySize) return Fail(Code::kInvalidArgument, "AEAD key must be 32 bytes");
  if (nonce.size() != kAeadNonceSize) {
    return Fail(Code::kInvalidArgument, "AEAD nonce must be 24 bytes");
  }
  if (ciphertext.size() < kAeadTagSize) {
    return Fail(Code::kInvalidArgument, "AEAD ciphertext shorter than its tag");
  }
  const std::size_t offset = out.size();
  out.resize(offset + ciphertext.size() - kAeadTagSize);
  unsigned long long written = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(out.data() + offset, &written, nullptr,
                                                 ciphertext.data(), ciphertext.size(), ad.data(),
                                                 ad.size(), nonce.data(), key.data()) != 0) {
    sodium_memzero(out.data() + offset, out.size() - offset);
    out.resize(offset);
    return Fail(Code::kAuthFailed, "AEAD authentication failed");
  }
  out.resize(offset + written);
  return {};
}

}  // namespace agentmesh
