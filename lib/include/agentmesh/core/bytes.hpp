// Byte containers and secret-holding types.
//
// Bytes / ByteView are for public data. Secret<N, Tag> holds N bytes of key material:
//   - move-only (no accidental copies), zeroed with sodium_memzero on destruction and after a move;
//   - no operator== (use ConstantTimeEqual), no formatter, no implicit conversion to a view:
//     reading the bytes needs an explicit .Expose() so grep finds every use.
// PublicBytes<N, Tag> is a comparable fixed-size value for public keys and signatures.
// Distinct Tag types make, e.g., an X25519 secret and an Ed25519 seed different C++ types.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace agentmesh {

using Bytes = std::vector<std::uint8_t>;
using ByteView = std::span<const std::uint8_t>;
using MutableByteView = std::span<std::uint8_t>;

// The bytes of a string (no copy; valid while the string is).
inline ByteView AsBytes(std::string_view text) noexcept {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

namespace detail {
void SecureZero(void* data, std::size_t size) noexcept;
bool ConstantTimeEqualRaw(const void* a, const void* b, std::size_t size) noexcept;
}  // namespace detail

// Constant-time comparison of two views of equal length; false when lengths differ.
bool ConstantTimeEqual(ByteView a, ByteView b) noexcept;

template <std::size_t N, typename Tag>
class Secret {
 public:
  static constexpr std::size_t kSize = N;

  Secret() noexcept { bytes_.fill(0); }
  ~Secret() { detail::SecureZero(bytes_.data(), N); }
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
  Secret(Secret&& other) noexcept : bytes_(other.bytes_) {
    detail::SecureZero(other.bytes_.data(), N);
  }
  Secret& operator=(Secret&& other) noexcept {
    if (this != &other) {
      bytes_ = other.bytes_;
      detail::SecureZero(other.bytes_.data(), N);
    }
    return *this;
  }

  // Copies `src` (must be exactly N bytes; shorter/longer input yields an all-zero secret and
  // returns false so callers can reject it).
  static bool FromBytes(ByteView src, Secret& out) noexcept {
    if (src.size() != N) return false;
    for (std::size_t i = 0; i < N; ++i) out.bytes_[i] = src[i];
    return true;
  }

  // Explicit duplicate, for the few places that must keep two owners (e.g. state snapshots).
  Secret Clone() const noexcept {
    Secret copy;
    copy.bytes_ = bytes_;
    return copy;
  }

  ByteView Expose() const noexcept { return ByteView(bytes_.data(), N); }
  MutableByteView ExposeMutable() noexcept { return MutableByteView(bytes_.data(), N); }
  const std::uint8_t* data() const noexcept { return bytes_.data(); }
  std::uint8_t* data() noexcept { return bytes_.data(); }
  static constexpr std::size_t size() noexcept { return N; }

  friend bool ConstantTimeEqual(const Secret& a, const Secret& b) noexcept {
    return detail::ConstantTimeEqualRaw(a.bytes_.data(), b.bytes_.data(), N);
  }

 private:
  std::array<std::uint8_t, N> bytes_;
};

template <std::size_t N, typename Tag>
class PublicBytes {
 public:
  static constexpr std::size_t kSize = N;

  PublicBytes() noexcept { bytes_.fill(0); }
  explicit PublicBytes(const std::array<std::uint8_t, N>& bytes) noexcept : bytes_(bytes) {}

  static bool FromBytes(ByteView src, PublicBytes& out) noexcept {
    if (src.size() != N) return false;
    for (std::size_t i = 0; i < N; ++i) out.bytes_[i] = src[i];
    return true;
  }

  ByteView view() const noexcept { return ByteView(bytes_.data(), N); }
  const std::uint8_t* data() const noexcept { return bytes_.data(); }
  std::uint8_t* data() noexcept { return bytes_.data(); }
  static constexpr std::size_t size() noexcept { return N; }
  const std::array<std::uint8_t, N>& array() const noexcept { return bytes_; }

  friend bool operator==(const PublicBytes&, const PublicBytes&) = default;
  friend auto operator<=>(const PublicBytes&, const PublicBytes&) = default;

 private:
  std::array<std::uint8_t, N> bytes_;
};

// A growable secret buffer (plaintexts, sealed-state contents). Zeroed on destruction.
class SecretBuffer {
 public:
  SecretBuffer() = default;
  explicit SecretBuffer(Bytes bytes) noexcept : bytes_(std::move(bytes)) {}
  ~SecretBuffer() { Wipe(); }
  SecretBuffer(const SecretBuffer&) = delete;
  SecretBuffer& operator=(const SecretBuffer&) = delete;
  SecretBuffer(SecretBuffer&& other) noexcept : bytes_(std::move(other.bytes_)) {
    other.bytes_.clear();
  }
  SecretBuffer& operator=(SecretBuffer&& other) noexcept {
    if (this != &other) {
      Wipe();
      bytes_ = std::move(other.bytes_);
      other.bytes_.clear();
    }
    return *this;
  }
  ByteView Expose() const noexcept { return bytes_; }
  Bytes& ExposeMutable() noexcept { return bytes_; }
  std::size_t size() const noexcept { return bytes_.size(); }
  bool empty() const noexcept { return bytes_.empty(); }

 private:
  void Wipe() noexcept {
    if (!bytes_.empty()) detail::SecureZero(bytes_.data(), bytes_.size());
  }
  Bytes bytes_;
};

// Big-endian helpers for wire layouts.
inline void PutU32Be(Bytes& out, std::uint32_t v) {
  out.push_back(static_cast<std::uint8_t>(v >> 24));
  out.push_back(static_cast<std::uint8_t>(v >> 16));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
  out.push_back(static_cast<std::uint8_t>(v));
}
inline std::uint32_t GetU32Be(const std::uint8_t* p) noexcept {
  return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
         std::uint32_t{p[3]};
}
inline void PutU64Be(Bytes& out, std::uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>(v >> shift));
}
inline std::uint64_t GetU64Be(const std::uint8_t* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | p[i];
  return v;
}

}  // namespace agentmesh
