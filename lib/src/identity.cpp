#include "agentmesh/core/identity.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include "agentmesh/core/crypto.hpp"
#include "agentmesh/core/encoding.hpp"

namespace agentmesh {
namespace {

constexpr std::string_view kEd25519Prefix = "ed25519:";
constexpr std::string_view kX25519Prefix = "x25519:";

// Strips `expected` if present; rejects any other "<word>:" prefix.
Result<std::string_view> StripKeyPrefix(std::string_view text, std::string_view expected,
                                        std::string_view other) {
  if (text.starts_with(expected)) return text.substr(expected.size());
  if (text.starts_with(other)) {
    return Fail(Code::kInvalidArgument,
                fmt::format("wrong key type: expected {}… key, got {}…", expected, other));
  }
  if (text.find(':') != std::string_view::npos) {
    return Fail(Code::kInvalidArgument, "unknown key prefix");
  }
  return text;
}

template <typename Key>
Result<Key> ParseKey(std::string_view text, std::string_view expected, std::string_view other,
                     std::string_view what) {
  auto body = StripKeyPrefix(text, expected, other);
  if (!body) return std::unexpected(body.error());
  auto raw = Base64Decode(*body);
  if (!raw) return Fail(Code::kInvalidArgument, fmt::format("{}: {}", what, raw.error().message));
  Key key;
  if (!Key::FromBytes(*raw, key)) {
    return Fail(Code::kInvalidArgument,
                fmt::format("{} must be {} bytes, got {}", what, Key::kSize, raw->size()));
  }
  return key;
}

}  // namespace

Ed25519KeyPair Ed25519KeyPair::Generate(Rng& rng) {
  Ed25519Seed seed;
  rng.Fill(seed.ExposeMutable());
  return FromSeed(seed);
}

Ed25519KeyPair Ed25519KeyPair::FromSeed(const Ed25519Seed& seed) {
  Ed25519KeyPair pair;
  crypto_sign_seed_keypair(pair.public_key.data(), pair.secret.data(), seed.data());
  return pair;
}

Ed25519Seed Ed25519KeyPair::Seed() const {
  Ed25519Seed seed;
  crypto_sign_ed25519_sk_to_seed(seed.data(), secret.data());
  return seed;
}

X25519KeyPair X25519KeyPair::Generate(Rng& rng) {
  X25519SecretKey secret;
  rng.Fill(secret.ExposeMutable());
  return FromSecret(std::move(secret));
}

X25519KeyPair X25519KeyPair::FromSecret(X25519SecretKey secret) {
  X25519KeyPair pair;
  crypto_scalarmult_base(pair.public_key.data(), secret.data());
  pair.secret = std::move(secret);
  return pair;
}

Signature Sign(const Ed25519SecretKey& secret, ByteView message) noexcept {
  Signature sig;
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), secret.data());
  return sig;
}

bool Verify(const Ed25519PublicKey& public_key, ByteView message, const Signature& sig) noexcept {
  return crypto_sign_verify_detached(sig.data(), message.data(), message.size(),
                                     public_key.data()) == 0;
}

Result<DhOutput> X25519(const X25519SecretKey& secret, const X25519PublicKey& public_key) noexcept {
  DhOutput out;
  if (crypto_scalarmult(out.data(), secret.data(), public_key.data()) != 0) {
    return Fail(Code::kAuthFailed, "X25519 produced the all-zero output (low-order public key)");
  }
  return out;
}

Amid Amid::FromPublicKey(const Ed25519PublicKey& public_key) {
  const Sha256Digest digest = Sha256(public_key.view());
  return Amid(Base58Encode(ByteView(digest.data(), kRawSize)));
}

Result<Amid> Amid::Parse(std::string_view text) {
  if (text.empty()) return Fail(Code::kInvalidArgument, "AMID is empty");
  if (text.size() > 40) return Fail(Code::kInvalidArgument, "AMID is too long");
  auto raw = Base58Decode(text);
  if (!raw) return Fail(Code::kInvalidArgument, "AMID is not base58: " + raw.error().message);
  if (raw->size() != kRawSize) {
    return Fail(Code::kInvalidArgument,
                fmt::format("AMID must encode 20 bytes, got {}", raw->size()));
  }
  // One AMID has one text form without re-encoding: each leading '1' decodes to one zero byte and
  // the remaining digits (first one non-zero) to a minimal big-endian number, so Base58Decode is
  // injective and an extra leading '1' already changes the decoded length.
  return Amid(std::string(text));
}

std::string FormatEd25519Key(const Ed25519PublicKey& key, bool with_prefix) {
  return (with_prefix ? std::string(kEd25519Prefix) : std::string()) + Base64Encode(key.view());
}

std::string FormatX25519Key(const X25519PublicKey& key, bool with_prefix) {
  return (with_prefix ? std::string(kX25519Prefix) : std::string()) + Base64Encode(key.view());
}

Result<Ed25519PublicKey> ParseEd25519Key(std::string_view text) {
  return ParseKey<Ed25519PublicKey>(text, kEd25519Prefix, kX25519Prefix, "ed25519 public key");
}

Result<X25519PublicKey> ParseX25519Key(std::string_view text) {
  return ParseKey<X25519PublicKey>(text, kX25519Prefix, kEd25519Prefix, "x25519 public key");
}

std::string FormatSignature(const Signature& sig) { return Base64Encode(sig.view()); }

Result<Signature> ParseSignature(std::string_view text) {
  auto raw = Base64Decode(text);
  if (!raw) return Fail(Code::kInvalidArgument, "signature: " + raw.error().message);
  Signature sig;
  if (!Signature::FromBytes(*raw, sig)) {
    return Fail(Code::kInvalidArgument,
                fmt::format("signature must be 64 bytes, got {}", raw->size()));
  }
  return sig;
}

}  // namespace agentmesh
