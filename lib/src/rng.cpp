#include "agentmesh/core/rng.hpp"

#include <sodium.h>

#include <algorithm>

namespace agentmesh {

void SystemRng::Fill(MutableByteView out) { randombytes_buf(out.data(), out.size()); }

DeterministicRng::DeterministicRng(const std::array<std::uint8_t, 32>& seed) noexcept : key_(seed) {}

DeterministicRng::DeterministicRng(std::uint64_t seed) noexcept : key_{} {
  for (int i = 0; i < 8; ++i) key_[i] = static_cast<std::uint8_t>(seed >> (8 * i));
}

void DeterministicRng::Fill(MutableByteView out) {
  std::size_t written = 0;
  while (written < out.size()) {
    if (buffered_ == 0) {
      // 64-byte blocks of ChaCha20 keystream: nonce = 0, initial counter = block_.
      std::array<std::uint8_t, 8> nonce{};
      std::array<std::uint8_t, 64> zeros{};
      crypto_stream_chacha20_xor_ic(buffer_.data(), zeros.data(), zeros.size(), nonce.data(),
                                    block_, key_.data());
      ++block_;
      buffered_ = buffer_.size();
    }
    const std::size_t take = std::min(buffered_, out.size() - written);
    std::copy_n(buffer_.data() + (buffer_.size() - buffered_), take, out.data() + written);
    buffered_ -= take;
    written += take;
  }
}

}  // namespace agentmesh
