// X3DH key agreement as agentmesh/1 defines it (Signal's X3DH with the reference SDK's KDF).
//
// Keys: IK = each agent's long-term X25519 exchange key; SPK/OPK = the responder's signed and
// one-time prekeys (prekey.hpp); EK = the initiator's fresh ephemeral X25519 key.
//
//   DH1 = X25519(IK_A, SPK_B)
//   DH2 = X25519(EK_A, IK_B)
//   DH3 = X25519(EK_A, SPK_B)
//   DH4 = X25519(EK_A, OPK_B)              only when a one-time prekey is used
//   SK  = HKDF-SHA256(salt = 32 zero bytes, ikm = DH1 || DH2 || DH3 [|| DH4], info = "X3DH", L =
//   32)
//
// Unlike Signal there is no 0xFF x 32 prefix in the ikm: agentmesh/1 keeps the reference
// constants so the published cross-SDK vectors stay valid. Every DH whose output is all zero
// (a low-order public key) fails the whole agreement with kAuthFailed.
//
// The initiator verifies the signed prekey signature before doing any DH (kAuthFailed). Nothing
// in X3DH authenticates that IK_B belongs to the peer: the caller checks the bundle's identity key
// against the registry entry of the peer, and the responder checks IK_A against the claimed
// sender. The shared secret is normally consumed by RatchetSession (ratchet.hpp); these functions
// are public for tests, vectors and other transports.
//
// Thread-safety: pure. Randomness only through the Rng passed in.
#pragma once

#include <cstdint>
#include <optional>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/rng.hpp"

namespace agentmesh {

struct X3dhSecretTag;
using X3dhSecret = Secret<32, X3dhSecretTag>;  // SK

// The initiator's result: SK plus what the responder needs to repeat the computation.
struct X3dhInitiation {
  X3dhSecret shared_secret;
  X25519PublicKey identity_key;   // IK_A (the initiator's own exchange key)
  X25519PublicKey ephemeral_key;  // EK_A public; the secret is wiped before returning
  std::uint32_t signed_prekey_id = 0;
  std::optional<std::uint32_t> one_time_prekey_id;  // set iff DH4 was used
};

// Initiator side. Verifies `bundle` with VerifyBundle(bundle, peer_signing_key), then draws EK_A
// from `rng` (32 bytes) and derives SK. Uses the bundle's one-time prekey when present.
// Errors: kAuthFailed (bad signature, low-order key), kInvalidArgument (OPK id 0).
Result<X3dhInitiation> X3dhInitiate(const X25519KeyPair& own_identity, const PrekeyBundle& bundle,
                                    const Ed25519PublicKey& peer_signing_key, Rng& rng);

// Same with a caller-chosen ephemeral key pair (test vectors). Never reuse an ephemeral key.
Result<X3dhInitiation> X3dhInitiateWithEphemeral(const X25519KeyPair& own_identity,
                                                 const PrekeyBundle& bundle,
                                                 const Ed25519PublicKey& peer_signing_key,
                                                 const X25519KeyPair& ephemeral);

// Responder side. `signed_prekey` and `one_time_prekey` are the pairs the initiator named by id
// (the caller looks them up; nullptr when the initiator used no one-time prekey; the caller
// deletes the one-time prekey only after the first message decrypted). kAuthFailed when a DH
// output is all-zero.
Result<X3dhSecret> X3dhRespond(const X25519KeyPair& own_identity,
                               const X25519KeyPair& signed_prekey,
                               const X25519KeyPair* one_time_prekey,
                               const X25519PublicKey& initiator_identity,
                               const X25519PublicKey& initiator_ephemeral);

}  // namespace agentmesh
