// Double Ratchet sessions for agentmesh/1 (Signal's Double Ratchet bootstrapped by X3DH).
//
// KDFs (the reference SDK's constants, so published vectors apply):
//   KDF_RK(rk, dh) = HKDF-SHA256(salt = rk, ikm = dh, info = "agentmesh_rk", L = 64)
//                    -> rk' = bytes [0,32), ck = bytes [32,64)
//   KDF_CK(ck)     : mk = HMAC-SHA256(ck, 0x01), ck' = HMAC-SHA256(ck, 0x02)
//   AEAD           : XChaCha20-Poly1305-IETF, key = mk, random 24-byte nonce carried in the
//   message.
//
// Initialisation (Signal style; the responder may speak as soon as it holds the first message):
//   initiator A: SK from X3DH; DHs = fresh pair; DHr = SPK_B; (RK, CKs) = KDF_RK(SK, DH(DHs,
//   SPK_B)). responder B: DHs = the SPK_B pair; RK = SK. B's first received message performs a DH
//   ratchet
//                step with A's ratchet key. B's session is created from that message (Respond).
//
// Until the initiator has received (and authenticated) anything from the responder, every
// message it sends is a "prekey message" carrying the X3DH data, like Signal's
// PreKeySignalMessage; so the first message may be lost or reordered without breaking the session.
//
// Wire layout of one message (binary; transports base64 it). Integers are big-endian.
//
//   off  size  field
//   0    1     version = 0x01
//   1    1     kind: 0x01 = message, 0x02 = prekey message
//   2    16    session id (random, chosen by the initiator; fixed for the session's life)
//   -- kind 0x02 only (72 bytes):
//   18   32    IK_A  initiator identity (X25519 exchange) public key
//   50   32    EK_A  initiator ephemeral public key
//   82   4     signed prekey id (u32)
//   86   4     one-time prekey id (u32; 0 = none, so one-time prekey ids start at 1)
//   -- ratchet header, at H = 18 (kind 0x01) or H = 90 (kind 0x02):
//   H+0  32    sender's current ratchet public key
//   H+32 4     pn  length of the sender's previous sending chain
//   H+36 4     n   message number in the current sending chain
//   H+40 24    nonce (random per message)
//   H+64 ...   ciphertext || 16-byte Poly1305 tag
//
//   AD = IK_initiator(32) || IK_responder(32) || message bytes [0, H+64)
//   The initiator's identity key comes first in both directions.
//
// Receiving rules:
//   - State changes only after the AEAD tag verifies: candidate chain keys, skipped keys and the
//     DH ratchet step are computed in temporaries and committed afterwards. Any error leaves the
//     session byte-for-byte unchanged (Serialize() is identical before and after).
//   - Skipped message keys are kept per (ratchet key, n), used at most once, at most
//     kMaxSkip = 1000 skipped in one chain per message (more: kLimitExceeded) and at most
//     kMaxSkippedKeys = 2000 in total (the oldest are evicted first). When a new ratchet key
//     arrives, keys of the old chain are stored only up to the message's pn.
//   - A message whose (ratchet key, n) was already consumed returns kReplay. Already-used ratchet
//     keys are remembered for the last kMaxPreviousRatchetKeys chains; a replay from an older
//     chain is indistinguishable from a forgery and returns kAuthFailed (still no state change).
//   - Errors: kInvalidArgument (truncated, unknown version/kind, other session id, a prekey
//     message sent to the initiator), kAuthFailed (tag mismatch, forged/unexpected ratchet key,
//     low-order key, prekey section that differs from the one that opened the session),
//     kReplay, kLimitExceeded (skip too large, counter exhausted).
//
// Lazy sending step: after a receiving DH step the new own ratchet key pair is drawn on the next
// Encrypt (not during Decrypt, which therefore needs no Rng). The key schedule and the bytes on
// the wire are those of the Signal specification; the fresh private key just lives shorter.
//
// Randomness consumed, in order (this makes DeterministicRng transcripts reproducible):
//   Initiate: 32 bytes EK_A, 32 bytes initial ratchet key.
//   Encrypt:  32 bytes new ratchet key when a sending DH step is due, then 24 bytes nonce.
//   Respond / Decrypt: none.
//
// Thread-safety: a RatchetSession is a plain value; use it from one thread at a time.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"
#include "agentmesh/core/identity.hpp"
#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/core/x3dh.hpp"

namespace agentmesh {

struct SessionIdTag;
struct RootKeyTag;
struct ChainKeyTag;
struct MessageKeyTag;

using SessionId = PublicBytes<16, SessionIdTag>;
using RootKey = Secret<32, RootKeyTag>;
using ChainKey = Secret<32, ChainKeyTag>;
using MessageKey = Secret<32, MessageKeyTag>;

inline constexpr std::uint8_t kRatchetVersion = 0x01;
inline constexpr std::size_t kSessionIdOffset = 2;
inline constexpr std::size_t kPrekeySectionSize = 72;
inline constexpr std::size_t kRatchetHeaderSize = 64;  // key + pn + n + nonce
inline constexpr std::size_t kMessageOverhead = 18 + kRatchetHeaderSize + 16;  // kind 0x01
inline constexpr std::size_t kPrekeyMessageOverhead = kMessageOverhead + kPrekeySectionSize;
inline constexpr std::uint32_t kMaxSkip = 1000;
inline constexpr std::size_t kMaxSkippedKeys = 2000;
inline constexpr std::size_t kMaxPreviousRatchetKeys = 128;

enum class MessageKind : std::uint8_t {
  kMessage = 0x01,
  kPrekeyMessage = 0x02,
};

// ---- KDFs (documented above; public for vectors and cross-SDK tests) --------------------------

struct RootKdfOutput {
  RootKey root_key;
  ChainKey chain_key;
};
RootKdfOutput KdfRk(const RootKey& root_key, const DhOutput& dh_output) noexcept;

struct ChainKdfOutput {
  MessageKey message_key;
  ChainKey chain_key;  // the next chain key
};
ChainKdfOutput KdfCk(const ChainKey& chain_key) noexcept;

// ---- Message inspection -----------------------------------------------------------------------

// The X3DH data of a prekey message (bytes 2..90).
struct PrekeyMessageInfo {
  SessionId session_id;
  X25519PublicKey initiator_identity_key;   // IK_A
  X25519PublicKey initiator_ephemeral_key;  // EK_A
  std::uint32_t signed_prekey_id = 0;
  std::optional<std::uint32_t> one_time_prekey_id;  // nullopt when the wire field is 0
};

struct MessageHeader {
  MessageKind kind = MessageKind::kMessage;
  SessionId session_id;
  std::optional<PrekeyMessageInfo> prekey;  // kind 0x02 only
  X25519PublicKey ratchet_key;
  std::uint32_t previous_chain_length = 0;  // pn
  std::uint32_t message_number = 0;         // n
  std::array<std::uint8_t, 24> nonce{};
  std::size_t header_size = 0;      // bytes before the ciphertext (= H + 64)
  std::size_t ciphertext_size = 0;  // ciphertext + tag, >= 16
};

// Parses the unauthenticated header. kInvalidArgument if truncated (shorter than header + tag),
// of an unknown version or kind. Nothing here is authentic until Decrypt succeeds.
Result<MessageHeader> ParseMessageHeader(ByteView message);

// For a receiver without a session: the session id and X3DH data of a prekey message, so the
// daemon can find the sender (IK_A), its signed/one-time prekeys and any existing session before
// calling Respond. kInvalidArgument for a kind 0x01 message or a malformed one.
Result<PrekeyMessageInfo> PeekPrekeyMessage(ByteView message);

// ---- Sessions -------------------------------------------------------------------------------

class RatchetSession {
 public:
  struct Responded;

  // Starts a session as initiator: X3DH with `bundle` (signature checked against
  // `peer_signing_key`, one-time prekey used when present) and the first sending chain. The
  // caller must check that bundle.identity_key is the peer's registered exchange key.
  // Errors: kAuthFailed (bad signature, low-order key), kInvalidArgument (OPK id 0).
  static Result<RatchetSession> Initiate(const X25519KeyPair& own_identity,
                                         const PrekeyBundle& bundle,
                                         const Ed25519PublicKey& peer_signing_key,
                                         const SessionId& session_id, Rng& rng);

  // Creates the responder's session from a prekey message and decrypts it. `signed_prekey` and
  // `one_time_prekey` must be the keys the message names (PeekPrekeyMessage); nullptr when it
  // names none. Their ids are checked (kInvalidArgument on mismatch). On success the caller
  // deletes the one-time prekey and stores the session; on any error nothing was created.
  // The caller must check that the message's IK_A is the claimed sender's exchange key.
  // Respond is stateless: given the same prekey message twice it builds the same session twice.
  // So a daemon that already holds a session with this session id must call Decrypt on it
  // instead (which answers kReplay for a duplicate), and should remember consumed session ids
  // of closed sessions: without a one-time prekey nothing else stops a replayed first message.
  static Result<Responded> Respond(const X25519KeyPair& own_identity,
                                   const SignedPrekey& signed_prekey,
                                   const OneTimePrekey* one_time_prekey, ByteView message);

  RatchetSession(RatchetSession&&) noexcept = default;
  RatchetSession& operator=(RatchetSession&&) noexcept = default;
  RatchetSession(const RatchetSession&) = delete;
  RatchetSession& operator=(const RatchetSession&) = delete;
  ~RatchetSession() = default;

  // Encrypts one message (any size, including empty). Errors: kLimitExceeded when the sending
  // counter is exhausted (2^32-1 messages in one chain); kAuthFailed if a DH step hits a
  // low-order key (cannot happen with a key that authenticated). State is unchanged on error.
  Result<Bytes> Encrypt(ByteView plaintext, Rng& rng);

  // Authenticates and decrypts one message of this session; see "Receiving rules" above.
  Result<SecretBuffer> Decrypt(ByteView message);

  const SessionId& session_id() const noexcept { return session_id_; }
  bool is_initiator() const noexcept { return initiator_; }
  const X25519PublicKey& local_identity_key() const noexcept { return local_identity_; }
  const X25519PublicKey& peer_identity_key() const noexcept { return peer_identity_; }
  // Initiator: whether a message from the responder has authenticated (after that the initiator
  // sends kind 0x01). Always true for a responder.
  bool has_received() const noexcept { return received_any_; }
  std::uint32_t sending_message_number() const noexcept { return ns_; }    // Ns
  std::uint32_t previous_chain_length() const noexcept { return pn_; }     // PN
  std::uint32_t receiving_message_number() const noexcept { return nr_; }  // Nr
  std::size_t skipped_key_count() const noexcept { return skipped_total_; }

  // Versioned binary state, secrets included: encrypt it at rest. Layout:
  //
  //   off  size  field
  //   0    4     magic "AMRS"
  //   4    1     format version = 0x01
  //   5    1     flags: bit0 initiator, bit1 has received, bit2 sending chain present,
  //                     bit3 receiving chain present; other bits zero
  //   6    16    session id
  //   22   32    local identity key
  //   54   32    peer identity key
  //   86   72    prekey section (IK_A, EK_A, spk id, opk id; as in kind 0x02 messages)
  //   158  32    root key
  //   190  32    remote ratchet public key (DHr)
  //   222  4     Ns          226  4  PN          230  4  Nr
  //   234  ...   if bit2: own ratchet secret (32), own ratchet public (32), sending chain key (32)
  //              if bit3: receiving chain key (32)
  //              u16 P (<= kMaxPreviousRatchetKeys), then P previous remote ratchet keys (32 each)
  //              u16 C, then C skipped chains, oldest first:
  //                ratchet key (32), u16 K >= 1, then K x (n u32, message key 32), n increasing
  //   Total skipped keys <= kMaxSkippedKeys; no trailing bytes.
  Bytes Serialize() const;

  // Strict inverse of Serialize: kCorrupt on any truncation, unknown magic/version/flag, count
  // out of range, unordered or duplicate entries, own ratchet public key not matching its
  // secret, or role/flag combinations a session can never reach. Never crashes on garbage.
  static Result<RatchetSession> Deserialize(ByteView data);

 private:
  struct SkippedKey {
    std::uint32_t n = 0;
    MessageKey key;
  };
  struct SkippedChain {
    X25519PublicKey ratchet_key;
    std::vector<SkippedKey> keys;  // increasing n
  };

  RatchetSession() = default;

  Result<SecretBuffer> DecryptParsed(const MessageHeader& header, ByteView message);
  Result<SecretBuffer> DecryptSkipped(const MessageHeader& header, ByteView message,
                                      SkippedChain& chain);
  // Derives the keys of messages [from, to) into `out` and leaves `chain` at message `to`.
  static void AdvanceChain(ChainKey& chain, std::uint32_t from, std::uint32_t to,
                           std::vector<SkippedKey>& out);
  void StoreSkipped(const X25519PublicKey& ratchet_key, std::vector<SkippedKey>&& keys);
  void RememberRemoteKey(const X25519PublicKey& ratchet_key);
  SkippedChain* FindSkippedChain(const X25519PublicKey& ratchet_key) noexcept;
  void BuildAdPrefix() noexcept;

  bool initiator_ = false;
  bool received_any_ = false;
  bool has_send_chain_ = false;
  bool has_recv_chain_ = false;
  bool has_ratchet_secret_ = false;  // == has_send_chain_ except transiently inside Respond
  SessionId session_id_;
  X25519PublicKey local_identity_;
  X25519PublicKey peer_identity_;
  std::array<std::uint8_t, kPrekeySectionSize> prekey_section_{};
  std::array<std::uint8_t, 64> ad_prefix_{};  // IK_initiator || IK_responder
  RootKey root_;
  X25519KeyPair self_ratchet_;
  X25519PublicKey remote_ratchet_;
  ChainKey send_chain_;
  ChainKey recv_chain_;
  std::uint32_t ns_ = 0;
  std::uint32_t pn_ = 0;
  std::uint32_t nr_ = 0;
  std::vector<X25519PublicKey> previous_remote_;  // oldest first
  std::vector<SkippedChain> skipped_;             // oldest first
  std::size_t skipped_total_ = 0;
};

struct RatchetSession::Responded {
  RatchetSession session;
  SecretBuffer plaintext;
};

}  // namespace agentmesh
