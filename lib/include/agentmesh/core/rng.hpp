// Randomness is an input of the core, never ambient.
//
// Every core function that needs random bytes takes an Rng&. Production passes SystemRng
// (libsodium's randombytes_buf, i.e. getrandom(2)); tests and vector generation pass
// DeterministicRng, which expands a 32-byte seed with ChaCha20 so outputs are reproducible.
//
// Thread-safety: SystemRng may be shared across threads; DeterministicRng may not.
#pragma once

#include <array>
#include <cstdint>

#include "agentmesh/core/bytes.hpp"

namespace agentmesh {

class Rng {
 public:
  virtual ~Rng() = default;
  virtual void Fill(MutableByteView out) = 0;

  template <std::size_t N>
  std::array<std::uint8_t, N> Array() {
    std::array<std::uint8_t, N> out{};
    Fill(MutableByteView(out.data(), N));
    return out;
  }
};

class SystemRng final : public Rng {
 public:
  void Fill(MutableByteView out) override;
};

// Reproducible stream: ChaCha20(key = seed, nonce = 0) keystream, consumed in order.
class DeterministicRng final : public Rng {
 public:
  explicit DeterministicRng(const std::array<std::uint8_t, 32>& seed) noexcept;
  // Seed from a small integer (seed bytes = little-endian value, rest zero); handy in tests.
  explicit DeterministicRng(std::uint64_t seed) noexcept;
  void Fill(MutableByteView out) override;

 private:
  std::array<std::uint8_t, 32> key_;
  std::uint64_t block_ = 0;
  std::array<std::uint8_t, 64> buffer_{};
  std::size_t buffered_ = 0;
};

}  // namespace agentmesh
