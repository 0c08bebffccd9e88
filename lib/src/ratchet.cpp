#include "agentmesh/core/ratchet.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <string_view>

#include "agentmesh/core/crypto.hpp"

namespace agentmesh {
namespace {

constexpr std::string_view kRootInfo = "agentmesh_rk";
constexpr std::size_t kBaseHeaderSize = 18;  // version, kind, session id
constexpr std::size_t kMaxHeaderSize = kBaseHeaderSize + kPrekeySectionSize + kRatchetHeaderSize;
constexpr std::uint32_t kMaxCounter = std::numeric_limits<std::uint32_t>::max();

constexpr std::uint8_t kStateMagic[4] = {'A', 'M', 'R', 'S'};
constexpr std::uint8_t kStateVersion = 0x01;
constexpr std::uint8_t kFlagInitiator = 0x01;
constexpr std::uint8_t kFlagReceived = 0x02;
constexpr std::uint8_t kFlagSendChain = 0x04;
constexpr std::uint8_t kFlagRecvChain = 0x08;
constexpr std::size_t kStateFixedSize = 234;

void PutU32At(std::uint8_t* p, std::uint32_t v) noexcept {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

void Append(Bytes& out, ByteView bytes) { out.insert(out.end(), bytes.begin(), bytes.end()); }

void PutU16Be(Bytes& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}

// Bounds-checked cursor over untrusted state bytes.
class Reader {
 public:
  explicit Reader(ByteView data) noexcept : data_(data) {}

  const std::uint8_t* Take(std::size_t n) noexcept {
    if (data_.size() - pos_ < n) return nullptr;
    const std::uint8_t* p = data_.data() + pos_;
    pos_ += n;
    return p;
  }
  bool U16(std::uint16_t& v) noexcept {
    const std::uint8_t* p = Take(2);
    if (p == nullptr) return false;
    v = static_cast<std::uint16_t>((p[0] << 8) | p[1]);
    return true;
  }
  bool U32(std::uint32_t& v) noexcept {
    const std::uint8_t* p = Take(4);
    if (p == nullptr) return false;
    v = GetU32Be(p);
    return true;
  }
  template <typename T>  // PublicBytes or Secret of a fixed size
  bool Fixed(T& out) noexcept {
    const std::uint8_t* p = Take(T::kSize);
    return p != nullptr && T::FromBytes(ByteView(p, T::kSize), out);
  }
  bool done() const noexcept { return pos_ == data_.size(); }

 private:
  ByteView data_;
  std::size_t pos_ = 0;
};

std::unexpected<Error> Corrupt(std::string_view what) {
  return Fail(Code::kCorrupt, fmt::format("ratchet state: {}", what));
}

}  // namespace

// ---- KDFs -------------------------------------------------------------------------------------

RootKdfOutput KdfRk(const RootKey& root_key, const DhOutput& dh_output) noexcept {
  std::array<std::uint8_t, 64> okm{};
  const ByteView info(reinterpret_cast<const std::uint8_t*>(kRootInfo.data()), kRootInfo.size());
  // Cannot fail: 64 bytes is far below HKDF's 255*32 limit and the salt is never empty.
  (void)Hkdf(root_key.Expose(), dh_output.Expose(), info, MutableByteView(okm));
  RootKdfOutput out;
  std::memcpy(out.root_key.data(), okm.data(), 32);
  std::memcpy(out.chain_key.data(), okm.data() + 32, 32);
  sodium_memzero(okm.data(), okm.size());
  return out;
}

ChainKdfOutput KdfCk(const ChainKey& chain_key) noexcept {
  // Both HMACs share the keyed inner/outer state, so it is computed once.
  crypto_auth_hmacsha256_state keyed;
  crypto_auth_hmacsha256_init(&keyed, chain_key.data(), chain_key.size());
  ChainKdfOutput out;
  static constexpr std::uint8_t kMessageByte = 0x01;
  static constexpr std::uint8_t kChainByte = 0x02;
  crypto_auth_hmacsha256_state state = keyed;
  crypto_auth_hmacsha256_update(&state, &kMessageByte, 1);
  crypto_auth_hmacsha256_final(&state, out.message_key.data());
  state = keyed;
  crypto_auth_hmacsha256_update(&state, &kChainByte, 1);
  crypto_auth_hmacsha256_final(&state, out.chain_key.data());
  sodium_memzero(&keyed, sizeof keyed);
  sodium_memzero(&state, sizeof state);
  return out;
}

// ---- Message inspection -----------------------------------------------------------------------

Result<MessageHeader> ParseMessageHeader(ByteView message) {
  if (message.size() < 2) {
    return Fail(Code::kInvalidArgument, "ratchet message shorter than its version and kind");
  }
  if (message[0] != kRatchetVersion) {
    return Fail(Code::kInvalidArgument,
                fmt::format("unsupported ratchet message version {}", message[0]));
  }
  if (message[1] != static_cast<std::uint8_t>(MessageKind::kMessage) &&
      message[1] != static_cast<std::uint8_t>(MessageKind::kPrekeyMessage)) {
    return Fail(Code::kInvalidArgument, fmt::format("unknown ratchet message kind {}", message[1]));
  }
  MessageHeader out;
  out.kind = static_cast<MessageKind>(message[1]);
  const bool prekey = out.kind == MessageKind::kPrekeyMessage;
  const std::size_t ratchet_at = kBaseHeaderSize + (prekey ? kPrekeySectionSize : 0);
  out.header_size = ratchet_at + kRatchetHeaderSize;
  if (message.size() < out.header_size + kAeadTagSize) {
    return Fail(Code::kInvalidArgument,
                fmt::format("ratchet message truncated: {} bytes, need at least {}", message.size(),
                            out.header_size + kAeadTagSize));
  }
  const std::uint8_t* p = message.data();
  SessionId::FromBytes(ByteView(p + kSessionIdOffset, 16), out.session_id);
  if (prekey) {
    PrekeyMessageInfo info;
    info.session_id = out.session_id;
    X25519PublicKey::FromBytes(ByteView(p + 18, 32), info.initiator_identity_key);
    X25519PublicKey::FromBytes(ByteView(p + 50, 32), info.initiator_ephemeral_key);
    info.signed_prekey_id = GetU32Be(p + 82);
    if (const std::uint32_t opk = GetU32Be(p + 86); opk != 0) info.one_time_prekey_id = opk;
    out.prekey = info;
  }
  X25519PublicKey::FromBytes(ByteView(p + ratchet_at, 32), out.ratchet_key);
  out.previous_chain_length = GetU32Be(p + ratchet_at + 32);
  out.message_number = GetU32Be(p + ratchet_at + 36);
  std::memcpy(out.nonce.data(), p + ratchet_at + 40, out.nonce.size());
  out.ciphertext_size = message.size() - out.header_size;
  return out;
}

Result<PrekeyMessageInfo> PeekPrekeyMessage(ByteView message) {
  auto header = ParseMessageHeader(message);
  if (!header) return std::unexpected(header.error());
  if (!header->prekey) return Fail(Code::kInvalidArgument, "not a prekey message (kind 0x01)");
  return *header->prekey;
}

// ---- Session setup ----------------------------------------------------------------------------

void RatchetSession::BuildAdPrefix() noexcept {
  const X25519PublicKey& first = initiator_ ? local_identity_ : peer_identity_;
  const X25519PublicKey& second = initiator_ ? peer_identity_ : local_identity_;
  std::memcpy(ad_prefix_.data(), first.data(), 32);
  std::memcpy(ad_prefix_.data() + 32, second.data(), 32);
}

Result<RatchetSession> RatchetSession::Initiate(const X25519KeyPair& own_identity,
                                                const PrekeyBundle& bundle,
                                                const Ed25519PublicKey& peer_signing_key,
                                                const SessionId& session_id, Rng& rng) {
  auto x3dh = X3dhInitiate(own_identity, bundle, peer_signing_key, rng);
  if (!x3dh) return std::unexpected(x3dh.error());
  X25519KeyPair ratchet = X25519KeyPair::Generate(rng);
  auto dh = X25519(ratchet.secret, bundle.signed_prekey);
  if (!dh) return std::unexpected(dh.error());
  RootKey sk;
  RootKey::FromBytes(x3dh->shared_secret.Expose(), sk);
  RootKdfOutput step = KdfRk(sk, *dh);

  RatchetSession s;
  s.initiator_ = true;
  s.session_id_ = session_id;
  s.local_identity_ = own_identity.public_key;
  s.peer_identity_ = bundle.identity_key;
  std::uint8_t* section = s.prekey_section_.data();
  std::memcpy(section, own_identity.public_key.data(), 32);
  std::memcpy(section + 32, x3dh->ephemeral_key.data(), 32);
  PutU32At(section + 64, x3dh->signed_prekey_id);
  PutU32At(section + 68, x3dh->one_time_prekey_id.value_or(0));
  s.root_ = std::move(step.root_key);
  s.send_chain_ = std::move(step.chain_key);
  s.has_send_chain_ = true;
  s.self_ratchet_ = std::move(ratchet);
  s.has_ratchet_secret_ = true;
  s.remote_ratchet_ = bundle.signed_prekey;
  s.BuildAdPrefix();
  return s;
}

Result<RatchetSession::Responded> RatchetSession::Respond(const X25519KeyPair& own_identity,
                                                          const SignedPrekey& signed_prekey,
                                                          const OneTimePrekey* one_time_prekey,
                                                          ByteView message) {
  auto header = ParseMessageHeader(message);
  if (!header) return std::unexpected(header.error());
  if (!header->prekey) {
    return Fail(Code::kInvalidArgument, "a session can only be created from a prekey message");
  }
  const PrekeyMessageInfo& info = *header->prekey;
  if (info.signed_prekey_id != signed_prekey.id) {
    return Fail(Code::kInvalidArgument, fmt::format("message names signed prekey {}, got {}",
                                                    info.signed_prekey_id, signed_prekey.id));
  }
  if (info.one_time_prekey_id.has_value() != (one_time_prekey != nullptr) ||
      (one_time_prekey != nullptr && one_time_prekey->id != *info.one_time_prekey_id)) {
    return Fail(
        Code::kInvalidArgument,
        fmt::format("message names one-time prekey {}, got {}", info.one_time_prekey_id.value_or(0),
                    one_time_prekey != nullptr ? one_time_prekey->id : 0));
  }
  auto sk = X3dhRespond(own_identity, signed_prekey.pair,
                        one_time_prekey != nullptr ? &one_time_prekey->pair : nullptr,
                        info.initiator_identity_key, info.initiator_ephemeral_key);
  if (!sk) return std::unexpected(sk.error());

  // Transient state: DHs = SPK_B with no sending chain; DecryptParsed performs the first
  // receiving DH step, after which the SPK secret is dropped from the session.
  RatchetSession s;
  s.initiator_ = false;
  s.session_id_ = header->session_id;
  s.local_identity_ = own_identity.public_key;
  s.peer_identity_ = info.initiator_identity_key;
  std::memcpy(s.prekey_section_.data(), message.data() + kBaseHeaderSize, kPrekeySectionSize);
  RootKey::FromBytes(sk->Expose(), s.root_);
  s.self_ratchet_ = signed_prekey.pair.Clone();
  s.has_ratchet_secret_ = true;
  s.BuildAdPrefix();
  auto plaintext = s.DecryptParsed(*header, message);
  if (!plaintext) return std::unexpected(plaintext.error());
  return Responded{std::move(s), std::move(*plaintext)};
}

// ---- Encrypt ----------------------------------------------------------------------------------

Result<Bytes> RatchetSession::Encrypt(ByteView plaintext, Rng& rng) {
  if (has_send_chain_ && ns_ == kMaxCounter) {
    return Fail(Code::kLimitExceeded, "sending chain exhausted (2^32-1 messages)");
  }
  if (!has_send_chain_) {
    if (!has_recv_chain_) return Fail(Code::kInternal, "session has no chain to ratchet from");
    // Deferred sending half of the DH ratchet step (see "Lazy sending step" in the header).
    X25519KeyPair fresh = X25519KeyPair::Generate(rng);
    auto dh = X25519(fresh.secret, remote_ratchet_);
    if (!dh) return std::unexpected(dh.error());
    RootKdfOutput step = KdfRk(root_, *dh);
    root_ = std::move(step.root_key);
    send_chain_ = std::move(step.chain_key);
    self_ratchet_ = std::move(fresh);
    has_send_chain_ = true;
    has_ratchet_secret_ = true;
  }
  ChainKdfOutput keys = KdfCk(send_chain_);
  const auto nonce = rng.Array<kAeadNonceSize>();

  const bool prekey = initiator_ && !received_any_;
  const std::size_t ratchet_at = kBaseHeaderSize + (prekey ? kPrekeySectionSize : 0);
  const std::size_t header_size = ratchet_at + kRatchetHeaderSize;
  Bytes out;
  out.reserve(header_size + plaintext.size() + kAeadTagSize);
  out.resize(header_size);
  std::uint8_t* p = out.data();
  p[0] = kRatchetVersion;
  p[1] = static_cast<std::uint8_t>(prekey ? MessageKind::kPrekeyMessage : MessageKind::kMessage);
  std::memcpy(p + kSessionIdOffset, session_id_.data(), 16);
  if (prekey) std::memcpy(p + kBaseHeaderSize, prekey_section_.data(), kPrekeySectionSize);
  std::memcpy(p + ratchet_at, self_ratchet_.public_key.data(), 32);
  PutU32At(p + ratchet_at + 32, pn_);
  PutU32At(p + ratchet_at + 36, ns_);
  std::memcpy(p + ratchet_at + 40, nonce.data(), nonce.size());

  std::array<std::uint8_t, 64 + kMaxHeaderSize> ad;
  std::memcpy(ad.data(), ad_prefix_.data(), 64);
  std::memcpy(ad.data() + 64, p, header_size);
  auto sealed = AeadSeal(keys.message_key.Expose(), nonce, ByteView(ad.data(), 64 + header_size),
                         plaintext, out);
  if (!sealed) return std::unexpected(sealed.error());
  send_chain_ = std::move(keys.chain_key);
  ++ns_;
  return out;
}

// ---- Decrypt ----------------------------------------------------------------------------------

namespace {

Result<SecretBuffer> Open(const MessageKey& key, const std::array<std::uint8_t, 64>& ad_prefix,
                          const MessageHeader& header, ByteView message) {
  std::array<std::uint8_t, 64 + kMaxHeaderSize> ad;
  std::memcpy(ad.data(), ad_prefix.data(), 64);
  std::memcpy(ad.data() + 64, message.data(), header.header_size);
  Bytes plaintext;
  plaintext.reserve(header.ciphertext_size - kAeadTagSize);
  auto opened = AeadOpen(key.Expose(), header.nonce, ByteView(ad.data(), 64 + header.header_size),
                         message.subspan(header.header_size), plaintext);
  if (!opened) return Fail(Code::kAuthFailed, "ratchet message failed authentication");
  return SecretBuffer(std::move(plaintext));
}

}  // namespace

Result<SecretBuffer> RatchetSession::Decrypt(ByteView message) {
  auto header = ParseMessageHeader(message);
  if (!header) return std::unexpected(header.error());
  return DecryptParsed(*header, message);
}

RatchetSession::SkippedChain* RatchetSession::FindSkippedChain(
    const X25519PublicKey& ratchet_key) noexcept {
  // Newest first: recent chains are the likely ones.
  for (auto it = skipped_.rbegin(); it != skipped_.rend(); ++it) {
    if (it->ratchet_key == ratchet_key) return &*it;
  }
  return nullptr;
}

Result<SecretBuffer> RatchetSession::DecryptSkipped(const MessageHeader& header, ByteView message,
                                                    SkippedChain& chain) {
  auto it = std::lower_bound(chain.keys.begin(), chain.keys.end(), header.message_number,
                             [](const SkippedKey& entry, std::uint32_t n) { return entry.n < n; });
  if (it == chain.keys.end() || it->n != header.message_number) {
    return Fail(Code::kReplay, "ratchet message was already received");
  }
  auto plaintext = Open(it->key, ad_prefix_, header, message);
  if (!plaintext) return plaintext;
  chain.keys.erase(it);
  --skipped_total_;
  if (chain.keys.empty()) {
    skipped_.erase(skipped_.begin() + (&chain - skipped_.data()));
  }
  received_any_ = true;
  return plaintext;
}

void RatchetSession::StoreSkipped(const X25519PublicKey& ratchet_key,
                                  std::vector<SkippedKey>&& keys) {
  if (keys.empty()) return;
  skipped_total_ += keys.size();
  if (!skipped_.empty() && skipped_.back().ratchet_key == ratchet_key) {
    auto& dest = skipped_.back().keys;
    dest.insert(dest.end(), std::make_move_iterator(keys.begin()),
                std::make_move_iterator(keys.end()));
  } else {
    skipped_.push_back(SkippedChain{ratchet_key, std::move(keys)});
  }
  // Insertion order equals (chain, n) order, so the oldest keys sit at the front.
  while (skipped_total_ > kMaxSkippedKeys) {
    auto& front = skipped_.front().keys;
    const std::size_t excess = skipped_total_ - kMaxSkippedKeys;
    if (excess >= front.size()) {
      skipped_total_ -= front.size();
      skipped_.erase(skipped_.begin());
    } else {
      front.erase(front.begin(), front.begin() + static_cast<std::ptrdiff_t>(excess));
      skipped_total_ -= excess;
    }
  }
}

void RatchetSession::AdvanceChain(ChainKey& chain, std::uint32_t from, std::uint32_t to,
                                  std::vector<SkippedKey>& out) {
  out.reserve(out.size() + (to - from));
  for (std::uint32_t i = from; i < to; ++i) {
    ChainKdfOutput step = KdfCk(chain);
    out.push_back(SkippedKey{i, std::move(step.message_key)});
    chain = std::move(step.chain_key);
  }
}

void RatchetSession::RememberRemoteKey(const X25519PublicKey& ratchet_key) {
  previous_remote_.push_back(ratchet_key);
  if (previous_remote_.size() > kMaxPreviousRatchetKeys) {
    previous_remote_.erase(previous_remote_.begin());
  }
}

Result<SecretBuffer> RatchetSession::DecryptParsed(const MessageHeader& header, ByteView message) {
  if (header.session_id != session_id_) {
    return Fail(Code::kInvalidArgument, "ratchet message belongs to another session");
  }
  if (header.kind == MessageKind::kPrekeyMessage) {
    if (initiator_) {
      return Fail(Code::kInvalidArgument, "the initiator never receives prekey messages");
    }
    if (std::memcmp(message.data() + kBaseHeaderSize, prekey_section_.data(), kPrekeySectionSize) !=
        0) {
      return Fail(Code::kAuthFailed, "prekey section differs from the one that opened the session");
    }
  }
  const X25519PublicKey& dh = header.ratchet_key;
  const std::uint32_t n = header.message_number;

  using KeyList = std::vector<SkippedKey>;

  // 1. The current receiving chain: the hot path.
  if (has_recv_chain_ && dh == remote_ratchet_) {
    if (n < nr_) {
      SkippedChain* chain = FindSkippedChain(dh);
      if (chain == nullptr) return Fail(Code::kReplay, "ratchet message was already received");
      return DecryptSkipped(header, message, *chain);
    }
    if (n - nr_ > kMaxSkip) {
      return Fail(Code::kLimitExceeded,
                  fmt::format("message skips {} keys in one chain (max {})", n - nr_, kMaxSkip));
    }
    if (n == kMaxCounter) return Fail(Code::kLimitExceeded, "receiving chain exhausted");
    ChainKey chain = recv_chain_.Clone();
    KeyList skipped;
    if (n > nr_) AdvanceChain(chain, nr_, n, skipped);
    ChainKdfOutput keys = KdfCk(chain);
    auto plaintext = Open(keys.message_key, ad_prefix_, header, message);
    if (!plaintext) return plaintext;
    StoreSkipped(dh, std::move(skipped));
    recv_chain_ = std::move(keys.chain_key);
    nr_ = n + 1;
    received_any_ = true;
    return plaintext;
  }

  // 2. An older chain with stored keys; 3. a chain we have left or cannot receive on.
  if (SkippedChain* chain = FindSkippedChain(dh); chain != nullptr) {
    return DecryptSkipped(header, message, *chain);
  }
  if (dh == remote_ratchet_) {
    return Fail(Code::kAuthFailed, "no receiving chain exists for this ratchet key");
  }
  if (std::find(previous_remote_.begin(), previous_remote_.end(), dh) != previous_remote_.end()) {
    return Fail(Code::kReplay, "ratchet message was already received");
  }

  // 4. A new ratchet key: receiving half of a DH ratchet step.
  if (!has_ratchet_secret_) {
    // The peer cannot have seen a new key of ours yet, so it cannot legitimately step.
    return Fail(Code::kAuthFailed, "unexpected new ratchet key");
  }
  const std::uint32_t old_skip = has_recv_chain_ && header.previous_chain_length > nr_
                                     ? header.previous_chain_length - nr_
                                     : 0;
  if (old_skip > kMaxSkip) {
    return Fail(
        Code::kLimitExceeded,
        fmt::format("message skips {} keys of the previous chain (max {})", old_skip, kMaxSkip));
  }
  if (n > kMaxSkip) {
    return Fail(Code::kLimitExceeded,
                fmt::format("message skips {} keys in a new chain (max {})", n, kMaxSkip));
  }
  auto shared = X25519(self_ratchet_.secret, dh);
  if (!shared) return std::unexpected(shared.error());
  KeyList old_keys;
  if (old_skip > 0) {
    ChainKey old_chain = recv_chain_.Clone();
    AdvanceChain(old_chain, nr_, nr_ + old_skip, old_keys);
  }
  RootKdfOutput step = KdfRk(root_, *shared);
  KeyList new_keys;
  if (n > 0) AdvanceChain(step.chain_key, 0, n, new_keys);
  ChainKdfOutput keys = KdfCk(step.chain_key);
  auto plaintext = Open(keys.message_key, ad_prefix_, header, message);
  if (!plaintext) return plaintext;

  if (has_recv_chain_) {
    StoreSkipped(remote_ratchet_, std::move(old_keys));
    RememberRemoteKey(remote_ratchet_);
  }
  StoreSkipped(dh, std::move(new_keys));
  root_ = std::move(step.root_key);
  remote_ratchet_ = dh;
  recv_chain_ = std::move(keys.chain_key);
  has_recv_chain_ = true;
  nr_ = n + 1;
  pn_ = ns_;
  ns_ = 0;
  send_chain_ = ChainKey();
  has_send_chain_ = false;
  self_ratchet_ = X25519KeyPair();
  has_ratchet_secret_ = false;
  received_any_ = true;
  return plaintext;
}

// ---- Serialization ----------------------------------------------------------------------------

Bytes RatchetSession::Serialize() const {
  Bytes out;
  out.reserve(kStateFixedSize + 4 * 32 + 4 + previous_remote_.size() * 32 + skipped_.size() * 34 +
              skipped_total_ * 36);
  Append(out, ByteView(kStateMagic, 4));
  out.push_back(kStateVersion);
  std::uint8_t flags = 0;
  if (initiator_) flags |= kFlagInitiator;
  if (received_any_) flags |= kFlagReceived;
  if (has_send_chain_) flags |= kFlagSendChain;
  if (has_recv_chain_) flags |= kFlagRecvChain;
  out.push_back(flags);
  Append(out, session_id_.view());
  Append(out, local_identity_.view());
  Append(out, peer_identity_.view());
  Append(out, prekey_section_);
  Append(out, root_.Expose());
  Append(out, remote_ratchet_.view());
  PutU32Be(out, ns_);
  PutU32Be(out, pn_);
  PutU32Be(out, nr_);
  if (has_send_chain_) {
    Append(out, self_ratchet_.secret.Expose());
    Append(out, self_ratchet_.public_key.view());
    Append(out, send_chain_.Expose());
  }
  if (has_recv_chain_) Append(out, recv_chain_.Expose());
  PutU16Be(out, static_cast<std::uint16_t>(previous_remote_.size()));
  for (const X25519PublicKey& key : previous_remote_) Append(out, key.view());
  PutU16Be(out, static_cast<std::uint16_t>(skipped_.size()));
  for (const SkippedChain& chain : skipped_) {
    Append(out, chain.ratchet_key.view());
    PutU16Be(out, static_cast<std::uint16_t>(chain.keys.size()));
    for (const SkippedKey& entry : chain.keys) {
      PutU32Be(out, entry.n);
      Append(out, entry.key.Expose());
    }
  }
  return out;
}

Result<RatchetSession> RatchetSession::Deserialize(ByteView data) {
  Reader in(data);
  const std::uint8_t* magic = in.Take(4);
  if (magic == nullptr || std::memcmp(magic, kStateMagic, 4) != 0) return Corrupt("bad magic");
  const std::uint8_t* head = in.Take(2);
  if (head == nullptr) return Corrupt("truncated");
  if (head[0] != kStateVersion) return Corrupt(fmt::format("unknown format version {}", head[0]));
  const std::uint8_t flags = head[1];
  if ((flags & ~(kFlagInitiator | kFlagReceived | kFlagSendChain | kFlagRecvChain)) != 0) {
    return Corrupt("unknown flags");
  }
  RatchetSession s;
  s.initiator_ = (flags & kFlagInitiator) != 0;
  s.received_any_ = (flags & kFlagReceived) != 0;
  s.has_send_chain_ = (flags & kFlagSendChain) != 0;
  s.has_ratchet_secret_ = s.has_send_chain_;
  s.has_recv_chain_ = (flags & kFlagRecvChain) != 0;
  // Reachable states: a receiving chain exists iff something was received; only an initiator
  // may not have received yet, and then it has a sending chain.
  if (s.has_recv_chain_ != s.received_any_) return Corrupt("inconsistent receive flags");
  if (!s.received_any_ && (!s.initiator_ || !s.has_send_chain_)) {
    return Corrupt("impossible flag combination");
  }

  const std::uint8_t* section = nullptr;
  if (!in.Fixed(s.session_id_) || !in.Fixed(s.local_identity_) || !in.Fixed(s.peer_identity_) ||
      (section = in.Take(kPrekeySectionSize)) == nullptr || !in.Fixed(s.root_) ||
      !in.Fixed(s.remote_ratchet_) || !in.U32(s.ns_) || !in.U32(s.pn_) || !in.U32(s.nr_)) {
    return Corrupt("truncated");
  }
  std::memcpy(s.prekey_section_.data(), section, kPrekeySectionSize);
  const X25519PublicKey& initiator_key = s.initiator_ ? s.local_identity_ : s.peer_identity_;
  if (std::memcmp(section, initiator_key.data(), 32) != 0) {
    return Corrupt("prekey section does not name the initiator's identity key");
  }
  if (!s.has_send_chain_ && s.ns_ != 0) return Corrupt("message count without a sending chain");
  if (!s.has_recv_chain_ && s.nr_ != 0) return Corrupt("message count without a receiving chain");

  if (s.has_send_chain_) {
    if (!in.Fixed(s.self_ratchet_.secret) || !in.Fixed(s.self_ratchet_.public_key) ||
        !in.Fixed(s.send_chain_)) {
      return Corrupt("truncated");
    }
    X25519PublicKey derived;
    crypto_scalarmult_base(derived.data(), s.self_ratchet_.secret.data());
    if (derived != s.self_ratchet_.public_key) {
      return Corrupt("own ratchet public key does not match its secret");
    }
  }
  if (s.has_recv_chain_ && !in.Fixed(s.recv_chain_)) return Corrupt("truncated");

  std::uint16_t previous = 0;
  if (!in.U16(previous)) return Corrupt("truncated");
  if (previous > kMaxPreviousRatchetKeys) return Corrupt("too many previous ratchet keys");
  s.previous_remote_.resize(previous);
  for (X25519PublicKey& key : s.previous_remote_) {
    if (!in.Fixed(key)) return Corrupt("truncated");
  }

  std::uint16_t chains = 0;
  if (!in.U16(chains)) return Corrupt("truncated");
  if (chains > kMaxSkippedKeys) return Corrupt("too many skipped chains");
  std::set<std::array<std::uint8_t, 32>> seen;
  s.skipped_.reserve(chains);
  for (std::uint16_t c = 0; c < chains; ++c) {
    SkippedChain chain;
    std::uint16_t count = 0;
    if (!in.Fixed(chain.ratchet_key) || !in.U16(count)) return Corrupt("truncated");
    if (count == 0) return Corrupt("empty skipped chain");
    if (s.skipped_total_ + count > kMaxSkippedKeys) return Corrupt("too many skipped keys");
    if (!seen.insert(chain.ratchet_key.array()).second) return Corrupt("duplicate skipped chain");
    const bool current = s.has_recv_chain_ && chain.ratchet_key == s.remote_ratchet_;
    chain.keys.resize(count);
    for (std::uint16_t i = 0; i < count; ++i) {
      SkippedKey& entry = chain.keys[i];
      if (!in.U32(entry.n) || !in.Fixed(entry.key)) return Corrupt("truncated");
      if (i > 0 && entry.n <= chain.keys[i - 1].n) return Corrupt("skipped keys out of order");
      if (current && entry.n >= s.nr_) return Corrupt("skipped key ahead of its chain");
    }
    s.skipped_total_ += count;
    s.skipped_.push_back(std::move(chain));
  }
  if (!in.done()) return Corrupt("trailing bytes");
  s.BuildAdPrefix();
  return s;
}

}  // namespace agentmesh
