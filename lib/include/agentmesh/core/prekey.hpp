// Prekeys for X3DH (agentmesh/1): the signed prekey, one-time prekeys, the public prekey bundle a
// registry hands out, and their JSON forms.
//
// Key roles (fixed by agentmesh/1, same as the reference SDK):
//   - The X3DH identity key IK is the agent's long-term X25519 *exchange* key.
//   - The agent's Ed25519 *signing* key signs the signed prekey. The signed message is exactly the
//     raw 32-byte X25519 public key of the signed prekey (no prefix, no id, no timestamp).
//   - One-time prekey ids start at 1: id 0 means "no one-time prekey" in the ratchet wire format
//     (see ratchet.hpp), so an id of 0 is rejected everywhere a one-time prekey id is accepted.
//
// JSON (nlohmann::json; keys are standard padded base64, see identity.hpp):
//
//   Fetch response of the registry (GET .../prekeys/<amid>), as the reference registry emits it
//   plus the array form the reference SDK expects:
//     {"identity_key": "x25519:<b64>",          prefix optional on input
//      "signed_prekey": "<b64>",                 prefix "x25519:" optional on input
//      "signed_prekey_signature": "<b64 of 64 bytes>",
//      "signed_prekey_id": 3,                    unsigned 32-bit integer
//      "one_time_prekey": {"id": 17, "key": "<b64>"}      optional, may be null
//      "one_time_prekeys": [{"id": 17, "key": "<b64>"}]}  optional, zero or one element
//   When both one-time prekey forms are present they must name the same key. Unknown members are
//   ignored; every member that is read is type- and length-checked.
//
//   Upload body (POST .../prekeys), built by BuildPrekeyUploadBody; the caller adds "timestamp"
//   and "signature" (request authentication is not this module's business):
//     {"amid": "<base58>", "signed_prekey": "<b64>", "signed_prekey_signature": "<b64>",
//      "signed_prekey_id": 3, "one_time_prekeys": [{"id": 1, "key": "<b64>"}, ...]}
//
// Errors: kInvalidArgument with Error.field naming the offending JSON member (for example
// "one_time_prekeys[0].key"); kAuthFailed when a signed prekey signature does not verify.
// Thread-safety: pure functions over values. Randomness only through the Rng passed in.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/core/timefmt.hpp"

namespace agentmesh {

// A signed prekey with its secret. Move-only (holds an X25519 secret).
struct SignedPrekey {
  std::uint32_t id = 0;
  X25519KeyPair pair;
  Signature signature;       // Ed25519 over the raw 32-byte pair.public_key
  UnixNanos created_at = 0;  // supplied by the caller (the core reads no clock)

  // Draws a fresh X25519 pair from `rng` (32 bytes) and signs its public key with `signing_key`.
  static SignedPrekey Generate(std::uint32_t id, const Ed25519SecretKey& signing_key,
                               UnixNanos created_at, Rng& rng);
  SignedPrekey Clone() const { return {id, pair.Clone(), signature, created_at}; }
};

// A one-time prekey with its secret. Move-only. Ids are >= 1.
struct OneTimePrekey {
  std::uint32_t id = 0;
  X25519KeyPair pair;

  OneTimePrekey Clone() const { return {id, pair.Clone()}; }
};

// `count` one-time prekeys with ids first_id, first_id+1, ... drawn from `rng` in that order
// (32 bytes each). kInvalidArgument if first_id is 0 or the last id would exceed 2^32-1.
Result<std::vector<OneTimePrekey>> GenerateOneTimePrekeys(std::uint32_t first_id, std::size_t count,
                                                          Rng& rng);

// The signature over a signed prekey: Ed25519(signing_key, raw 32-byte prekey public key).
Signature SignPrekey(const Ed25519SecretKey& signing_key, const X25519PublicKey& prekey) noexcept;
// True iff `signature` is `signer`'s signature over the raw prekey public key.
bool VerifyPrekeySignature(const Ed25519PublicKey& signer, const X25519PublicKey& prekey,
                           const Signature& signature) noexcept;

// Public half of a one-time prekey, as published.
struct OneTimePublic {
  std::uint32_t id = 0;
  X25519PublicKey key;

  friend bool operator==(const OneTimePublic&, const OneTimePublic&) = default;
};

// What an initiator needs to start X3DH with a responder. Public data only.
struct PrekeyBundle {
  X25519PublicKey identity_key;  // responder's X25519 exchange key (IK_B)
  std::uint32_t signed_prekey_id = 0;
  X25519PublicKey signed_prekey;  // SPK_B
  Signature signed_prekey_signature;
  std::optional<OneTimePublic> one_time_prekey;  // OPK_B, if the registry had one left

  friend bool operator==(const PrekeyBundle&, const PrekeyBundle&) = default;
};

// Assembles the public bundle for an identity, a signed prekey and optionally a one-time prekey.
PrekeyBundle MakeBundle(const X25519PublicKey& identity_key, const SignedPrekey& signed_prekey,
                        const OneTimePrekey* one_time_prekey = nullptr);

// Checks the signed prekey signature against the responder's Ed25519 key (kAuthFailed) and that a
// one-time prekey, if present, has a non-zero id (kInvalidArgument). The caller must separately
// make sure that bundle.identity_key is the exchange key the registry lists for the same agent as
// `signer`: nothing inside the bundle binds IK_B to the signing key.
Result<void> VerifyBundle(const PrekeyBundle& bundle, const Ed25519PublicKey& signer);

// Parses a registry fetch response (see the JSON section above). Does not verify the signature.
Result<PrekeyBundle> ParseBundleJson(const nlohmann::json& json);
// Same, from text; malformed JSON is kInvalidArgument. Never throws.
Result<PrekeyBundle> ParseBundleJson(std::string_view text);
// Fetch-response form of a bundle: prefixed identity key, unprefixed signed prekey, and the
// one-time prekey in both the singular and the one-element array form (when present).
nlohmann::json BundleToJson(const PrekeyBundle& bundle);

// The prekey upload body (without "timestamp"/"signature"). Keys are unprefixed base64.
nlohmann::json BuildPrekeyUploadBody(const Amid& amid, const SignedPrekey& signed_prekey,
                                     std::span<const OneTimePrekey> one_time_prekeys);

// A parsed upload body, for the registry side.
struct PrekeyUpload {
  Amid amid;
  std::uint32_t signed_prekey_id = 0;
  X25519PublicKey signed_prekey;
  Signature signed_prekey_signature;
  std::vector<OneTimePublic> one_time_prekeys;  // ids non-zero and unique
};

// Strictly parses an upload body; "one_time_prekeys" may be absent (= empty). Extra members such
// as "timestamp" and "signature" are ignored (request authentication is checked elsewhere). The
// signed prekey signature is NOT verified here: call VerifyPrekeySignature with the agent's
// registered signing key.
Result<PrekeyUpload> ParsePrekeyUploadJson(const nlohmann::json& json);

}  // namespace agentmesh
