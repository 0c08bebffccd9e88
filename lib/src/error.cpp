#include "agentmesh/core/error.hpp"

namespace agentmesh {

std::string_view CodeName(Code code) noexcept {
  switch (code) {
    case Code::kInvalidArgument: return "invalid_argument";
    case Code::kAuthFailed: return "auth_failed";
    case Code::kReplay: return "replay";
    case Code::kNotFound: return "not_found";
    case Code::kConflict: return "conflict";
    case Code::kLimitExceeded: return "limit_exceeded";
    case Code::kPermissionDenied: return "permission_denied";
    case Code::kUnavailable: return "unavailable";
    case Code::kTimeout: return "timeout";
    case Code::kCorrupt: return "corrupt";
    case Code::kIo: return "io";
    case Code::kInternal: return "internal";
  }
  return "internal";
}

std::string Error::ToString() const {
  std::string out(CodeName(code));
  out += ": ";
  if (!field.empty()) {
    out += field;
    out += ": ";
  }
  out += message;
  return out;
}

}  // namespace agentmesh
