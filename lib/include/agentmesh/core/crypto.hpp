// Symmetric primitives over libsodium, as the protocol uses them.
//
//   Sha256           SHA-256.
//   HmacSha256       HMAC-SHA256 (any key length).
//   Hkdf             RFC 5869 HKDF-SHA256; empty salt means 32 zero bytes; L <= 255*32.
//   Aead*            XChaCha20-Poly1305-IETF (24-byte nonce, 16-byte tag appended to ciphertext).
//
// Pure functions, thread-safe. Sizes are checked; misuse returns kInvalidArgument, a failed tag
// check returns kAuthFailed and never yields partial plaintext.
#pragma once

#include <array>
#include <cstdint>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"

namespace agentmesh {

inline constexpr std::size_t kSha256Size = 32;
inline constexpr std::size_t kAeadKeySize = 32;
inline constexpr std::size_t kAeadNonceSize = 24;
inline constexpr std::size_t kAeadTagSize = 16;

using Sha256Digest = std::array<std::uint8_t, kSha256Size>;

Sha256Digest Sha256(ByteView data) noexcept;
Sha256Digest HmacSha256(ByteView key, ByteView message) noexcept;

// Writes out.size() bytes of HKDF-SHA256 output. Fails only if out.size() > 255*32.
Result<void> Hkdf(ByteView salt, ByteView ikm, ByteView info, MutableByteView out) noexcept;

// Appends ciphertext||tag (plaintext.size()+16 bytes) to `out`.
Result<void> AeadSeal(ByteView key, ByteView nonce, ByteView ad, ByteView plaintext, Bytes& out);
// Appends plaintext to `out` only when the tag verifies.
Result<void> AeadOpen(ByteView key, ByteView nonce, ByteView ad, ByteView ciphertext, Bytes& out);

}  // namespace agentmesh
