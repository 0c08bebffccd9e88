#include "agentmesh/core/bytes.hpp"

#include <sodium.h>

namespace agentmesh {
namespace detail {

void SecureZero(void* data, std::size_t size) noexcept { sodium_memzero(data, size); }

bool ConstantTimeEqualRaw(const void* a, const void* b, std::size_t size) noexcept {
  return sodium_memcmp(a, b, size) == 0;
}

}  // namespace detail

bool ConstantTimeEqual(ByteView a, ByteView b) noexcept {
  if (a.size() != b.size()) return false;
  return detail::ConstantTimeEqualRaw(a.data(), b.data(), a.size());
}

}  // namespace agentmesh

namespace {
// libsodium must be initialised before any primitive runs; sodium_init() is idempotent and
// thread-safe, and running it during static initialisation means no caller can forget it.
[[maybe_unused]] const int kSodiumInit = sodium_init();
}  // namespace
