// Text encodings used on the wire.
//
//   base58btc  Bitcoin alphabet 123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz, big-endian,
//              each leading 0x00 byte <-> one leading '1'. No checksum, no version byte.
//   base64     RFC 4648 standard alphabet (+/), '=' padding required, no whitespace, and
//              non-canonical trailing bits rejected (strict, like Rust's STANDARD engine).
//   hex        lower-case on output, either case on input.
//
// Decoders return kInvalidArgument with a message naming the first bad character/position.
// All functions are pure and thread-safe.
#pragma once

#include <string>
#include <string_view>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"

namespace agentmesh {

std::string Base58Encode(ByteView data);
Result<Bytes> Base58Decode(std::string_view text);

std::string Base64Encode(ByteView data);
Result<Bytes> Base64Decode(std::string_view text);

std::string HexEncode(ByteView data);
Result<Bytes> HexDecode(std::string_view text);

// Base64url without padding (RFC 4648 §5); used only for compact ids, never for keys.
std::string Base64UrlEncode(ByteView data);

}  // namespace agentmesh
