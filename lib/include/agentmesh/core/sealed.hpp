// Sealed storage: secret keys and session state encrypted at rest.
//
// Two forms, both XChaCha20-Poly1305-IETF (crypto.hpp Aead*) with a fresh random 24-byte nonce:
//
// Key form (Seal / Open), for a 32-byte SealKey from the OS keyring, a key file or DeriveSealKey:
//
//   offset  size  field
//   0       4     magic "AMSK" (0x41 0x4D 0x53 0x4B)
//   4       1     version, 0x01
//   5       24    nonce
//   29      n+16  ciphertext || Poly1305 tag (n = plaintext length)
//   total   45+n
//
//   AEAD associated data = bytes [0, 5) || caller's associated_data.
//
// Passphrase form (SealWithPassphrase / OpenWithPassphrase), self-describing so that a file can
// be opened with nothing but the passphrase:
//
//   offset  size  field
//   0       4     magic "AMSP" (0x41 0x4D 0x53 0x50)
//   4       1     version, 0x01
//   5       1     KDF id, 0x01 = Argon2id v1.3 (libsodium crypto_pwhash_ALG_ARGON2ID13)
//   6       8     Argon2 ops limit (iterations), unsigned big-endian
//   14      8     Argon2 memory limit in bytes, unsigned big-endian
//   22      16    Argon2 salt
//   38      24    nonce
//   62      n+16  ciphertext || Poly1305 tag
//   total   78+n
//
//   AEAD associated data = bytes [0, 38) || caller's associated_data, so the KDF parameters and
//   salt are authenticated: editing them yields kAuthFailed (or kCorrupt if out of bounds).
//
// The caller's associated_data is not stored; the opener must supply the same bytes (e.g. the
// record's table and key name), which binds a blob to its place and stops blobs being swapped.
//
// Thread-safety: all functions are pure apart from the Rng they are given. DeriveSealKey and the
// passphrase functions run Argon2id, which takes tens to hundreds of milliseconds and up to
// mem_limit_bytes of memory: never call them on the event-loop thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"
#include "agentmesh/core/rng.hpp"

namespace agentmesh {

struct SealKeyTag;
using SealKey = Secret<32, SealKeyTag>;

inline constexpr std::size_t kSealSaltSize = 16;
inline constexpr std::size_t kSealKeyOverhead = 45;         // key-form bytes beyond the plaintext
inline constexpr std::size_t kSealPassphraseOverhead = 78;  // passphrase-form bytes beyond it

// Argon2id cost parameters (libsodium crypto_pwhash units: ops = passes, memory in bytes).
struct Argon2Params {
  std::uint64_t ops_limit = 0;
  std::size_t mem_limit_bytes = 0;

  // Accepted bounds, for DeriveSealKey and for headers read back by OpenWithPassphrase. The upper
  // bounds keep a hostile file from making us allocate or compute without limit.
  static constexpr std::uint64_t kMinOpsLimit = 1;
  static constexpr std::uint64_t kMaxOpsLimit = 16;
  static constexpr std::size_t kMinMemLimitBytes = 8192;
  static constexpr std::size_t kMaxMemLimitBytes = std::size_t{1} << 30;  // 1 GiB

  // libsodium's INTERACTIVE preset: 2 passes, 64 MiB.
  static constexpr Argon2Params Interactive() noexcept { return {2, std::size_t{64} << 20}; }
  // libsodium's MODERATE preset: 3 passes, 256 MiB. The default for key stores.
  static constexpr Argon2Params Moderate() noexcept { return {3, std::size_t{256} << 20}; }
  // The minimum libsodium allows (1 pass, 8 KiB): fast and weak. Tests only.
  static constexpr Argon2Params ForTests() noexcept { return {1, 8192}; }

  friend bool operator==(const Argon2Params&, const Argon2Params&) = default;
};

// Argon2id(passphrase, salt) -> 32-byte key. `salt` must be kSealSaltSize bytes.
// Errors: kInvalidArgument for a wrong salt length or parameters outside the bounds above;
// kUnavailable if Argon2 could not allocate its memory.
Result<SealKey> DeriveSealKey(std::string_view passphrase, ByteView salt,
                              const Argon2Params& params);

// Key form. Draws the nonce from `rng`. Never fails.
Bytes Seal(const SealKey& key, ByteView plaintext, ByteView associated_data, Rng& rng);

// Opens a key-form blob. Errors: kCorrupt if the input is shorter than kSealKeyOverhead or has a
// wrong magic/version; kAuthFailed for a wrong key, wrong associated_data or any modification.
// No plaintext is returned unless the tag verifies.
Result<SecretBuffer> Open(const SealKey& key, ByteView sealed, ByteView associated_data);

// Passphrase form: draws a fresh salt and nonce from `rng` and derives the key with `params`.
// Errors: as DeriveSealKey; kInvalidArgument for an empty passphrase.
Result<Bytes> SealWithPassphrase(std::string_view passphrase, ByteView plaintext,
                                 ByteView associated_data, const Argon2Params& params, Rng& rng);

// Opens a passphrase-form blob with the parameters stored in its header.
// Errors: kCorrupt for short input, a wrong magic/version/KDF id, or Argon2 parameters outside
// Argon2Params' bounds (checked before any memory is allocated); kAuthFailed for a wrong
// passphrase, wrong associated_data or any modification; kUnavailable as DeriveSealKey.
Result<SecretBuffer> OpenWithPassphrase(std::string_view passphrase, ByteView sealed,
                                        ByteView associated_data);

}  // namespace agentmesh
