#include "agentmesh/rpc/error.hpp"

namespace agentmesh::rpc {

std::string_view DataCodeForCode(int code) noexcept {
  switch (code) {
    case kParseError:
      return "parse_error";
    case kInvalidRequest:
      return "invalid_request";
    case kMethodNotFound:
      return "method_not_found";
    case kInvalidParams:
      return "invalid_argument";
    case kInternalError:
      return "internal";
    case kNotFound:
      return "not_found";
    case kConflict:
      return "conflict";
    case kAuthFailed:
      return "auth_failed";
    case kReplay:
      return "replay";
    case kLimitExceeded:
      return "limit_exceeded";
    case kPermissionDenied:
      return "permission_denied";
    case kUnavailable:
      return "unavailable";
    case kTimeout:
      return "timeout";
    case kCorrupt:
      return "corrupt";
    case kIo:
      return "io";
    case kKnockRejected:
      return "knock_rejected";
    case kNotInitialized:
      return "not_initialized";
    default:
      return "";
  }
}

RpcError ErrorFromJson(const nlohmann::json& error) {
  RpcError out;
  out.origin = ErrorOrigin::kServer;
  if (!error.is_object()) {
    out.code = kInternalError;
    out.data_code = "internal";
    out.message = "malformed error object from the daemon";
    return out;
  }
  if (auto it = error.find("code"); it != error.end() && it->is_number_integer()) {
    out.code = it->get<int>();
  }
  if (auto it = error.find("message"); it != error.end() && it->is_string()) {
    out.message = it->get<std::string>();
  }
  if (auto it = error.find("data"); it != error.end()) {
    out.data = *it;
    if (it->is_object()) {
      if (auto c = it->find("code"); c != it->end() && c->is_string()) {
        out.data_code = c->get<std::string>();
      }
      if (auto f = it->find("field"); f != it->end() && f->is_string()) {
        out.field = f->get<std::string>();
      }
    }
  }
  if (out.data_code.empty()) out.data_code = std::string(DataCodeForCode(out.code));
  if (out.message.empty()) out.message = out.data_code.empty() ? "error" : out.data_code;
  return out;
}

nlohmann::json RpcError::ToJson() const {
  nlohmann::json data_out = data.is_object() ? data : nlohmann::json::object();
  if (!data_code.empty()) data_out["code"] = data_code;
  if (!field.empty()) data_out["field"] = field;
  return nlohmann::json{{"code", code}, {"message", message}, {"data", std::move(data_out)}};
}

}  // namespace agentmesh::rpc
