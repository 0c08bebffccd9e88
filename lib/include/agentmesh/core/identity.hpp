// Identity keys and the AMID.
//
// An agent has two long-term key pairs:
//   - Ed25519 signing keys (libsodium: 32-byte seed, 64-byte secret = seed||public);
//   - X25519 exchange keys (32-byte secret scalar, 32-byte public), used as the X3DH identity key.
// AMID = base58btc(SHA-256(raw Ed25519 public key)[0..20)).
//
// Text forms: "ed25519:<base64>" and "x25519:<base64>" (standard base64, padded). Parsers accept
// the matching prefix or no prefix, and reject the other key type's prefix (an X25519 key never
// parses as an Ed25519 key). Secret key types have no text form and no equality operator.
//
// Thread-safety: values; no shared state. Key generation takes the Rng explicitly.
#pragma once

#include <string>
#include <string_view>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"
#include "agentmesh/core/rng.hpp"

namespace agentmesh {

struct Ed25519PublicTag;
struct Ed25519SecretTag;
struct Ed25519SeedTag;
struct X25519PublicTag;
struct X25519SecretTag;
struct SignatureTag;
struct DhOutputTag;

using Ed25519PublicKey = PublicBytes<32, Ed25519PublicTag>;
using Ed25519Seed = Secret<32, Ed25519SeedTag>;
using Ed25519SecretKey = Secret<64, Ed25519SecretTag>;  // libsodium layout: seed || public
using X25519PublicKey = PublicBytes<32, X25519PublicTag>;
using X25519SecretKey = Secret<32, X25519SecretTag>;
using Signature = PublicBytes<64, SignatureTag>;
using DhOutput = Secret<32, DhOutputTag>;

struct Ed25519KeyPair {
  Ed25519SecretKey secret;
  Ed25519PublicKey public_key;

  static Ed25519KeyPair Generate(Rng& rng);
  static Ed25519KeyPair FromSeed(const Ed25519Seed& seed);
  Ed25519Seed Seed() const;
  Ed25519KeyPair Clone() const { return {secret.Clone(), public_key}; }
};

struct X25519KeyPair {
  X25519SecretKey secret;
  X25519PublicKey public_key;

  static X25519KeyPair Generate(Rng& rng);
  static X25519KeyPair FromSecret(X25519SecretKey secret);
  X25519KeyPair Clone() const { return {secret.Clone(), public_key}; }
};

// Ed25519 detached signature (deterministic, RFC 8032).
Signature Sign(const Ed25519SecretKey& secret, ByteView message) noexcept;
// True only for a valid signature by `public_key` over `message`.
bool Verify(const Ed25519PublicKey& public_key, ByteView message, const Signature& sig) noexcept;

// X25519(secret, public). Fails with kAuthFailed when the result is all-zero (low-order point).
Result<DhOutput> X25519(const X25519SecretKey& secret, const X25519PublicKey& public_key) noexcept;

// The agent's 20-byte id, held in its base58 text form.
class Amid {
 public:
  static constexpr std::size_t kRawSize = 20;

  static Amid FromPublicKey(const Ed25519PublicKey& public_key);
  // Accepts only base58 text that decodes to exactly 20 bytes.
  static Result<Amid> Parse(std::string_view text);

  const std::string& str() const noexcept { return text_; }
  friend bool operator==(const Amid&, const Amid&) = default;
  friend auto operator<=>(const Amid&, const Amid&) = default;

 private:
  explicit Amid(std::string text) : text_(std::move(text)) {}
  std::string text_;
};

// Text forms of public keys and signatures.
std::string FormatEd25519Key(const Ed25519PublicKey& key, bool with_prefix = true);
std::string FormatX25519Key(const X25519PublicKey& key, bool with_prefix = true);
Result<Ed25519PublicKey> ParseEd25519Key(std::string_view text);
Result<X25519PublicKey> ParseX25519Key(std::string_view text);
std::string FormatSignature(const Signature& sig);  // base64
Result<Signature> ParseSignature(std::string_view text);

// Ed25519 public key -> X25519 is deliberately not offered: the two identity keys are independent.

}  // namespace agentmesh
