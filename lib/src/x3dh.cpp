#include "agentmesh/core/x3dh.hpp"

#include <array>
#include <string_view>

#include "agentmesh/core/crypto.hpp"

namespace agentmesh {
namespace {

constexpr std::string_view kX3dhInfo = "X3DH";

// Accumulates DH outputs for the HKDF input and wipes them when done.
class DhConcat {
 public:
  ~DhConcat() { detail::SecureZero(buffer_.data(), buffer_.size()); }

  Result<void> Add(const X25519SecretKey& secret, const X25519PublicKey& public_key) {
    auto dh = X25519(secret, public_key);
    if (!dh) return std::unexpected(dh.error());
    for (std::size_t i = 0; i < DhOutput::kSize; ++i) buffer_[size_ + i] = dh->data()[i];
    size_ += DhOutput::kSize;
    return {};
  }

  Result<X3dhSecret> Derive() const {
    static constexpr std::uint8_t kZeroSalt[32] = {};
    X3dhSecret sk;
    const ByteView info(reinterpret_cast<const std::uint8_t*>(kX3dhInfo.data()), kX3dhInfo.size());
    auto ok = Hkdf(ByteView(kZeroSalt, sizeof kZeroSalt), ByteView(buffer_.data(), size_), info,
                   sk.ExposeMutable());
    if (!ok) return std::unexpected(ok.error());
    return sk;
  }

 private:
  std::array<std::uint8_t, 4 * DhOutput::kSize> buffer_{};
  std::size_t size_ = 0;
};

// Initiator computation without the signature check (callers verify first).
Result<X3dhInitiation> Derive(const X25519KeyPair& own_identity, const PrekeyBundle& bundle,
                              const X25519KeyPair& ephemeral) {
  DhConcat dh;
  if (auto r = dh.Add(own_identity.secret, bundle.signed_prekey); !r)
    return std::unexpected(r.error());
  if (auto r = dh.Add(ephemeral.secret, bundle.identity_key); !r) return std::unexpected(r.error());
  if (auto r = dh.Add(ephemeral.secret, bundle.signed_prekey); !r)
    return std::unexpected(r.error());
  if (bundle.one_time_prekey) {
    if (auto r = dh.Add(ephemeral.secret, bundle.one_time_prekey->key); !r) {
      return std::unexpected(r.error());
    }
  }
  auto sk = dh.Derive();
  if (!sk) return std::unexpected(sk.error());
  X3dhInitiation out;
  out.shared_secret = std::move(*sk);
  out.identity_key = own_identity.public_key;
  out.ephemeral_key = ephemeral.public_key;
  out.signed_prekey_id = bundle.signed_prekey_id;
  if (bundle.one_time_prekey) out.one_time_prekey_id = bundle.one_time_prekey->id;
  return out;
}

}  // namespace

Result<X3dhInitiation> X3dhInitiate(const X25519KeyPair& own_identity, const PrekeyBundle& bundle,
                                    const Ed25519PublicKey& peer_signing_key, Rng& rng) {
  if (auto ok = VerifyBundle(bundle, peer_signing_key); !ok) return std::unexpected(ok.error());
  const X25519KeyPair ephemeral = X25519KeyPair::Generate(rng);
  return Derive(own_identity, bundle, ephemeral);
}

Result<X3dhInitiation> X3dhInitiateWithEphemeral(const X25519KeyPair& own_identity,
                                                 const PrekeyBundle& bundle,
                                                 const Ed25519PublicKey& peer_signing_key,
                                                 const X25519KeyPair& ephemeral) {
  if (auto ok = VerifyBundle(bundle, peer_signing_key); !ok) return std::unexpected(ok.error());
  return Derive(own_identity, bundle, ephemeral);
}

Result<X3dhSecret> X3dhRespond(const X25519KeyPair& own_identity,
                               const X25519KeyPair& signed_prekey,
                               const X25519KeyPair* one_time_prekey,
                               const X25519PublicKey& initiator_identity,
                               const X25519PublicKey& initiator_ephemeral) {
  DhConcat dh;
  if (auto r = dh.Add(signed_prekey.secret, initiator_identity); !r) {
    return std::unexpected(r.error());
  }
  if (auto r = dh.Add(own_identity.secret, initiator_ephemeral); !r) {
    return std::unexpected(r.error());
  }
  if (auto r = dh.Add(signed_prekey.secret, initiator_ephemeral); !r) {
    return std::unexpected(r.error());
  }
  if (one_time_prekey != nullptr) {
    if (auto r = dh.Add(one_time_prekey->secret, initiator_ephemeral); !r) {
      return std::unexpected(r.error());
    }
  }
  return dh.Derive();
}

}  // namespace agentmesh
