// Trust tiers (TECHNICAL_SPEC §2.2) and their JSON spellings.
//
// The spec numbers tiers oddly: 2 = anonymous (keypair only), 1 = verified (human-backed),
// 1.5 = organization (business-verified). A smaller number is NOT always more trusted, so code
// never compares the numbers: use TierRank() for the trust order
// anonymous (0) < verified (1) < organization (2).
//
// JSON input (policy.json `accept_tiers`, KNOCK `from.tier`, registry answers) may spell a tier as
// the spec's number (2, 1, 1.5; 2.0 and 1.0 are the same numbers) or as its lower-case name
// ("anonymous", "verified", "organization"). Output uses the spec's number (TierToJson), which is
// what policy.json in the spec and the reference registry use.
//
// Thread-safety: pure functions over values.
#pragma once

#include <nlohmann/json_fwd.hpp>
#include <string_view>

#include "agentmesh/core/error.hpp"

namespace agentmesh {

enum class Tier {
  kAnonymous,     // spec tier 2
  kVerified,      // spec tier 1
  kOrganization,  // spec tier 1.5
};

// "anonymous", "verified" or "organization".
std::string_view ToString(Tier tier) noexcept;

// The spec's number: 2, 1 or 1.5.
double TierNumber(Tier tier) noexcept;

// Trust order: anonymous 0, verified 1, organization 2.
int TierRank(Tier tier) noexcept;

// Parses a tier name ("anonymous" | "verified" | "organization"; case-sensitive).
// Errors: kInvalidArgument naming the accepted spellings.
Result<Tier> TierFromName(std::string_view name);

// Parses a JSON tier: the number 2, 1 or 1.5, or a tier name. Any other number, string or JSON
// type fails with kInvalidArgument (Error.field is left empty for the caller to fill in).
Result<Tier> TierFromJson(const nlohmann::json& value);

// The spec's JSON number for `tier` (2, 1 or 1.5).
nlohmann::json TierToJson(Tier tier);

}  // namespace agentmesh
