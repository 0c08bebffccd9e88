#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <string>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/core/sealed.hpp"

using namespace agentmesh;

namespace {

Bytes B(std::string_view s) { return Bytes(s.begin(), s.end()); }

SealKey KeyFrom(std::uint8_t fill) {
  SealKey key;
  for (auto& b : key.ExposeMutable()) b = fill;
  return key;
}

void ExpectError(const Result<SecretBuffer>& r, Code code) {
  REQUIRE_FALSE(r);
  CHECK(r.error().code == code);
}

// Byte offsets of the passphrase-form header (see sealed.hpp).
constexpr std::size_t kOpsOffset = 6;
constexpr std::size_t kMemOffset = 14;
constexpr std::size_t kSaltOffset = 22;

void PutU64At(Bytes& blob, std::size_t offset, std::uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) blob[offset + static_cast<std::size_t>(i)] = v & 0xff;
}

}  // namespace

TEST_CASE("Seal/Open round trip and layout", "[sealed]") {
  DeterministicRng rng(11);
  const SealKey key = KeyFrom(0x5a);
  const Bytes plaintext = B("ratchet state: {\"root\":\"...\"}");
  const Bytes ad = B("sessions/alice");

  const Bytes sealed = Seal(key, plaintext, ad, rng);
  REQUIRE(sealed.size() == plaintext.size() + kSealKeyOverhead);
  CHECK(Bytes(sealed.begin(), sealed.begin() + 5) == (Bytes{'A', 'M', 'S', 'K', 0x01}));

  auto opened = Open(key, sealed, ad);
  REQUIRE(opened);
  CHECK(Bytes(opened->Expose().begin(), opened->Expose().end()) == plaintext);

  // A fresh nonce each time: sealing twice never repeats ciphertext.
  const Bytes again = Seal(key, plaintext, ad, rng);
  CHECK(again != sealed);
  CHECK(Bytes(again.begin() + 5, again.begin() + 29) !=
        Bytes(sealed.begin() + 5, sealed.begin() + 29));

  // Empty plaintext and empty AD are fine.
  const Bytes empty = Seal(key, {}, {}, rng);
  CHECK(empty.size() == kSealKeyOverhead);
  auto opened_empty = Open(key, empty, {});
  REQUIRE(opened_empty);
  CHECK(opened_empty->empty());
}

TEST_CASE("Open rejects the wrong key, wrong AD and any modification", "[sealed]") {
  DeterministicRng rng(12);
  const SealKey key = KeyFrom(0x01);
  const Bytes ad = B("keys/identity");
  const Bytes sealed = Seal(key, B("secret seed bytes"), ad, rng);

  ExpectError(Open(KeyFrom(0x02), sealed, ad), Code::kAuthFailed);
  ExpectError(Open(key, sealed, B("keys/other")), Code::kAuthFailed);
  ExpectError(Open(key, sealed, {}), Code::kAuthFailed);

  // Every byte after the magic: the version byte is a format error, the rest fail authentication.
  for (std::size_t i = 4; i < sealed.size(); ++i) {
    INFO("byte " << i);
    Bytes bad = sealed;
    bad[i] ^= 0x01;
    ExpectError(Open(key, bad, ad), i == 4 ? Code::kCorrupt : Code::kAuthFailed);
  }
  Bytes extended = sealed;
  extended.push_back(0);
  ExpectError(Open(key, extended, ad), Code::kAuthFailed);
}

TEST_CASE("Open rejects bad magic and truncation at every length", "[sealed]") {
  DeterministicRng rng(13);
  const SealKey key = KeyFrom(0x03);
  const Bytes sealed = Seal(key, B("0123"), {}, rng);
  REQUIRE(sealed.size() == 4 + kSealKeyOverhead);

  for (std::size_t n = 0; n < sealed.size(); ++n) {
    INFO("length " << n);
    const auto r = Open(key, ByteView(sealed).first(n), {});
    ExpectError(r, n < kSealKeyOverhead ? Code::kCorrupt : Code::kAuthFailed);
  }
  for (std::size_t i = 0; i < 4; ++i) {
    Bytes bad = sealed;
    bad[i] ^= 0x20;
    ExpectError(Open(key, bad, {}), Code::kCorrupt);
  }
  // A passphrase-form blob is not a key-form blob, and vice versa.
  auto passphrase_blob = SealWithPassphrase("pw", B("0123"), {}, Argon2Params::ForTests(), rng);
  REQUIRE(passphrase_blob);
  ExpectError(Open(key, *passphrase_blob, {}), Code::kCorrupt);
  ExpectError(OpenWithPassphrase("pw", sealed, {}), Code::kCorrupt);
}

TEST_CASE("DeriveSealKey: Argon2id, deterministic, parameter checks", "[sealed]") {
  const std::array<std::uint8_t, kSealSaltSize> salt = {1, 2,  3,  4,  5,  6,  7,  8,
                                                        9, 10, 11, 12, 13, 14, 15, 16};
  const Argon2Params params = Argon2Params::ForTests();
  auto a = DeriveSealKey("correct horse", salt, params);
  auto b = DeriveSealKey("correct horse", salt, params);
  auto c = DeriveSealKey("correct horsf", salt, params);
  REQUIRE(a);
  REQUIRE(b);
  REQUIRE(c);
  CHECK(ConstantTimeEqual(*a, *b));
  CHECK_FALSE(ConstantTimeEqual(*a, *c));
  auto d = DeriveSealKey("correct horse", salt, Argon2Params{2, params.mem_limit_bytes});
  REQUIRE(d);
  CHECK_FALSE(ConstantTimeEqual(*a, *d));

  CHECK(DeriveSealKey("pw", ByteView(salt).first(15), params).error().code ==
        Code::kInvalidArgument);
  const Argon2Params bad_params[] = {
      {0, 8192},                                    // ops below libsodium's minimum
      {1, 8191},                                    // memory below the minimum
      {Argon2Params::kMaxOpsLimit + 1, 8192},       // absurd work factor
      {1, Argon2Params::kMaxMemLimitBytes + 1024},  // over 1 GiB
  };
  for (const Argon2Params& p : bad_params) {
    INFO(p.ops_limit << " / " << p.mem_limit_bytes);
    auto r = DeriveSealKey("pw", salt, p);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
  CHECK(Argon2Params::Interactive().mem_limit_bytes == 64u << 20);
  CHECK(Argon2Params::Moderate().ops_limit == 3);
}

TEST_CASE("passphrase form round trip with ForTests() parameters", "[sealed]") {
  DeterministicRng rng(14);
  const Bytes plaintext = B("identity seed + exchange key");
  const Bytes ad = B("agentmesh keystore v1");
  auto sealed = SealWithPassphrase("hunter2", plaintext, ad, Argon2Params::ForTests(), rng);
  REQUIRE(sealed);
  REQUIRE(sealed->size() == plaintext.size() + kSealPassphraseOverhead);
  CHECK(Bytes(sealed->begin(), sealed->begin() + 6) == (Bytes{'A', 'M', 'S', 'P', 0x01, 0x01}));

  auto opened = OpenWithPassphrase("hunter2", *sealed, ad);
  REQUIRE(opened);
  CHECK(Bytes(opened->Expose().begin(), opened->Expose().end()) == plaintext);

  ExpectError(OpenWithPassphrase("hunter3", *sealed, ad), Code::kAuthFailed);
  ExpectError(OpenWithPassphrase("hunter2", *sealed, {}), Code::kAuthFailed);

  // The salt and parameters are authenticated: changing them (within bounds) fails the tag.
  Bytes salt_changed = *sealed;
  salt_changed[kSaltOffset] ^= 0x01;
  ExpectError(OpenWithPassphrase("hunter2", salt_changed, ad), Code::kAuthFailed);
  Bytes ops_changed = *sealed;
  PutU64At(ops_changed, kOpsOffset, 2);
  ExpectError(OpenWithPassphrase("hunter2", ops_changed, ad), Code::kAuthFailed);
  Bytes kdf_changed = *sealed;
  kdf_changed[5] = 0x02;
  ExpectError(OpenWithPassphrase("hunter2", kdf_changed, ad), Code::kCorrupt);

  for (std::size_t n = 0; n < kSealPassphraseOverhead; n += 7) {
    ExpectError(OpenWithPassphrase("hunter2", ByteView(*sealed).first(n), ad), Code::kCorrupt);
  }

  auto empty_pw = SealWithPassphrase("", plaintext, ad, Argon2Params::ForTests(), rng);
  REQUIRE_FALSE(empty_pw);
  CHECK(empty_pw.error().code == Code::kInvalidArgument);
  auto bad_params = SealWithPassphrase("pw", plaintext, ad, Argon2Params{0, 0}, rng);
  REQUIRE_FALSE(bad_params);
  CHECK(bad_params.error().code == Code::kInvalidArgument);
}

TEST_CASE("hostile Argon2 parameters in a header are refused before deriving", "[sealed]") {
  DeterministicRng rng(15);
  auto sealed = SealWithPassphrase("pw", B("x"), {}, Argon2Params::ForTests(), rng);
  REQUIRE(sealed);
  const std::pair<std::uint64_t, std::uint64_t> hostile[] = {
      {1, std::uint64_t{1} << 40},        // 1 TiB of memory
      {1, (std::uint64_t{1} << 30) + 1},  // just over 1 GiB
      {1, ~std::uint64_t{0}},             // 2^64-1 bytes
      {~std::uint64_t{0}, 8192},          // 2^64-1 passes
      {Argon2Params::kMaxOpsLimit + 1, 8192},
      {0, 8192},
      {1, 0},
  };
  for (const auto& [ops, mem] : hostile) {
    INFO(ops << " / " << mem);
    Bytes bad = *sealed;
    PutU64At(bad, kOpsOffset, ops);
    PutU64At(bad, kMemOffset, mem);
    ExpectError(OpenWithPassphrase("pw", bad, {}), Code::kCorrupt);
  }
}
