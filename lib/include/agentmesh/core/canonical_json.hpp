// RFC 8785 JSON Canonicalization Scheme (JCS), the byte string every JSON signature covers.
//
//   - object members sorted by their names compared as UTF-16 code-unit sequences;
//   - no insignificant whitespace;
//   - strings escaped minimally: \" \\ \b \f \n \r \t, other controls as \u00xx (lower-case hex),
//     everything else (including non-ASCII) as raw UTF-8;
//   - numbers in ECMAScript Number.prototype.toString form (shortest round-trip; exponent form
//     for |x| >= 1e21 or < 1e-6; -0 as 0); integers beyond 2^53 and NaN/Inf are rejected.
//
// Thread-safety: pure. Errors: kInvalidArgument for values JCS cannot represent
// (non-finite numbers, integers outside the IEEE-754 exact range, invalid UTF-8 in strings), with
// Error.field holding the path to the bad value (e.g. "intent.tags[1]"); kLimitExceeded for
// nesting deeper than 512 levels.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "agentmesh/core/error.hpp"

namespace agentmesh {

Result<std::string> CanonicalJson(const nlohmann::json& value);

// Canonical form of `object` with its top-level member `omit` removed (e.g. "signature").
// Fails if `object` is not a JSON object.
Result<std::string> CanonicalJsonWithout(const nlohmann::json& object, std::string_view omit);

}  // namespace agentmesh
