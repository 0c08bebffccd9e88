#include "agentmesh/core/tier.hpp"

#include <nlohmann/json.hpp>

namespace agentmesh {

std::string_view ToString(Tier tier) noexcept {
  switch (tier) {
    case Tier::kAnonymous:
      return "anonymous";
    case Tier::kVerified:
      return "verified";
    case Tier::kOrganization:
      return "organization";
  }
  return "anonymous";
}

double TierNumber(Tier tier) noexcept {
  switch (tier) {
    case Tier::kAnonymous:
      return 2;
    case Tier::kVerified:
      return 1;
    case Tier::kOrganization:
      return 1.5;
  }
  return 2;
}

int TierRank(Tier tier) noexcept { return static_cast<int>(tier); }

Result<Tier> TierFromName(std::string_view name) {
  if (name == "anonymous") return Tier::kAnonymous;
  if (name == "verified") return Tier::kVerified;
  if (name == "organization") return Tier::kOrganization;
  return Fail(Code::kInvalidArgument,
              "expected a tier: 2, 1, 1.5, \"anonymous\", \"verified\" or \"organization\"");
}

Result<Tier> TierFromJson(const nlohmann::json& value) {
  if (value.is_string()) return TierFromName(value.get_ref<const std::string&>());
  if (value.is_number()) {
    const double n = value.get<double>();
    if (n == 2) return Tier::kAnonymous;
    if (n == 1) return Tier::kVerified;
    if (n == 1.5) return Tier::kOrganization;
  }
  return Fail(Code::kInvalidArgument,
              "expected a tier: 2, 1, 1.5, \"anonymous\", \"verified\" or \"organization\"");
}

nlohmann::json TierToJson(Tier tier) {
  if (tier == Tier::kOrganization) return 1.5;
  return static_cast<int>(TierNumber(tier));
}

}  // namespace agentmesh
