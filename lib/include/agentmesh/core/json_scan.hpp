// A strict, allocation-light JSON scanner for hot paths (the relay routes ~10^5 frames/s and must
// not build a DOM per frame).
//
// ScanObject validates an entire JSON text (RFC 8259: strings with valid escapes and valid UTF-8,
// numbers, literals, nesting up to a depth limit, nothing but whitespace after the value) whose
// top-level value must be an object, and records each top-level member as a name and a *raw slice*
// of the input: for a string member the slice includes the quotes, exactly as it appeared. A
// router can therefore copy a string value into an outgoing frame byte-for-byte, still validly
// escaped, without decoding it.
//
// Lifetime: every string_view in a ScannedObject points into the text passed to ScanObject; the
// text must outlive the result. Thread-safety: pure.
// Errors: kInvalidArgument with the byte offset of the first problem; kLimitExceeded when the
// nesting depth or member count limit is hit.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <forward_list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "agentmesh/core/error.hpp"

namespace agentmesh {

enum class JsonKind { kString, kNumber, kObject, kArray, kTrue, kFalse, kNull };

struct ScannedMember {
  std::string_view name;  // raw name between the quotes (escapes not decoded)
  bool name_has_escapes = false;
  JsonKind kind = JsonKind::kNull;
  std::string_view raw;            // the value exactly as written (strings include their quotes)
  bool value_has_escapes = false;  // for strings: whether `raw` contains a backslash
};

struct ScanLimits {
  std::size_t max_depth = 16;
  std::size_t max_members = 64;  // top-level members
};

class ScannedObject {
 public:
  // First member with this (unescaped) name, or nullptr. Duplicate names: the last one wins,
  // matching nlohmann/json and JavaScript.
  const ScannedMember* Find(std::string_view name) const noexcept;

  // The decoded value of a string member: nullopt when absent; kInvalidArgument (naming the
  // member) when present with another type.
  Result<std::optional<std::string>> GetString(std::string_view name) const;
  // Like GetString but returns a view into the input when the string has no escapes (the common
  // case for AMIDs, base64 and enum values); escaped strings are decoded into `scratch`.
  Result<std::optional<std::string_view>> GetStringView(std::string_view name,
                                                        std::string& scratch) const;
  Result<std::optional<bool>> GetBool(std::string_view name) const;
  // Integral JSON number in [0, 2^53]; kInvalidArgument otherwise.
  Result<std::optional<std::uint64_t>> GetUint(std::string_view name) const;

  // The top-level members in document order.
  std::span<const ScannedMember> members() const noexcept {
    return {size_ <= kInlineMembers ? inline_.data() : overflow_.data(), size_};
  }

 private:
  friend Result<ScannedObject> ScanObject(std::string_view text, const ScanLimits& limits);
  // Objects of up to kInlineMembers members (every relay frame) are scanned without allocating.
  static constexpr std::size_t kInlineMembers = 8;
  void Add(const ScannedMember& member);

  std::array<ScannedMember, kInlineMembers> inline_{};
  std::vector<ScannedMember> overflow_;  // all members, once there are more than kInlineMembers
  std::size_t size_ = 0;
};

Result<ScannedObject> ScanObject(std::string_view text, const ScanLimits& limits = {});

// Decodes the body of a JSON string token (`raw` including its quotes). Input must come from the
// scanner (already validated); returns false on malformed input instead of asserting.
bool UnescapeJsonString(std::string_view raw, std::string& out);

// Decodes a JSON array of strings given as raw text (e.g. ScannedMember::raw of an array member),
// validating it fully (strings, escapes, UTF-8, commas; nothing but whitespace around it).
// kInvalidArgument if it is not an array of strings; kLimitExceeded beyond `max_items`.
Result<std::vector<std::string>> ParseStringArray(std::string_view raw, std::size_t max_items);

// The same without copying: appends each item's content (between its quotes) to `items` as a view
// into `raw`. An item written with escapes is decoded into a new string pushed to the front of
// `decoded`, and its view points there (forward_list nodes never move, so the views stay valid as
// long as `decoded` lives, including after it is moved). Allocates only when `items` grows or an
// item has escapes. On error `items` and `decoded` may hold the items before the bad one.
Result<void> ParseStringArrayViews(std::string_view raw, std::size_t max_items,
                                   std::vector<std::string_view>& items,
                                   std::forward_list<std::string>& decoded);

// Appends `value` as a JSON string token (with quotes), escaping as RFC 8785 does. `value` must
// be valid UTF-8 (bytes are copied as they are).
void AppendJsonString(std::string& out, std::string_view value);
// The same for text that may not be valid UTF-8 (stored or peer-supplied strings): each byte that
// starts no well-formed sequence becomes U+FFFD, so the output is always valid JSON.
void AppendJsonText(std::string& out, std::string_view value);

}  // namespace agentmesh
