#include "config.hpp"

#include <fmt/format.h>

#include <limits>

namespace agentmesh::daemon {
namespace {

Result<std::vector<std::string>> StringList(const nlohmann::json& value, std::string_view key) {
  if (!value.is_array())
    return Fail(Code::kInvalidArgument, "must be an array of strings", std::string(key));
  std::vector<std::string> out;
  for (std::size_t i = 0; i < value.size(); ++i) {
    if (!value[i].is_string()) {
      return Fail(Code::kInvalidArgument, "must be a string", fmt::format("{}[{}]", key, i));
    }
    out.push_back(value[i].get<std::string>());
  }
  return out;
}

constexpr std::uint32_t kMaxBusyPollMicros = 10000;

}  // namespace

const std::vector<ConfigKeyInfo>& ConfigKeys() {
  static const std::vector<ConfigKeyInfo> keys = {
      {"registry_url", "string", "http://127.0.0.1:8080", "amesh-registry base URL"},
      {"relay_url", "string", "ws://127.0.0.1:8765/v1/connect", "amesh-relay WebSocket URL"},
      {"registry_ca_file", "string", "", "PEM trust anchors for an https registry"},
      {"relay_ca_file", "string", "", "PEM trust anchors for a wss relay"},
      {"display_name", "string", "", "name published in the registry and sent in KNOCKs"},
      {"capabilities", "[string]", "[]", "capabilities published in the registry"},
      {"stop_command", "[string] | string", "[]",
       "command emergency_stop runs to stop the agent framework (a string runs under /bin/sh -c)"},
      {"store_transcripts", "bool", "false", "keep sealed per-session transcripts"},
      {"schema_validation", "string", "warn", "payload schema checks: off, warn or strict"},
      {"log_level", "string", "info", "debug, info, warn or error"},
      {"relay_max_frame_bytes", "uint", "65536", "the relay's frame limit, checked before sending"},
      {"session_cache_seconds", "uint", "86400",
       "how long `send AMID` reuses an active session for the same intent category"},
      {"registry_cache_seconds", "uint", "120",
       "how long registry tier/reputation answers are cached for KNOCK policy"},
      {"rpc_busy_poll_us", "uint", "50",
       "microseconds the daemon keeps polling after a socket request before it sleeps (0: off)"},
  };
  return keys;
}

Result<void> ApplyConfigJson(const nlohmann::json& doc, DaemonConfig& config) {
  if (!doc.is_object()) return Fail(Code::kInvalidArgument, "config must be a JSON object");
  DaemonConfig next = config;
  for (const auto& [key, value] : doc.items()) {
    auto need_string = [&](std::string& out) -> Result<void> {
      if (!value.is_string()) return Fail(Code::kInvalidArgument, "must be a string", key);
      out = value.get<std::string>();
      return {};
    };
    auto need_uint = [&](std::uint32_t& out) -> Result<void> {
      if (!value.is_number_unsigned() ||
          value.get<std::uint64_t>() > std::numeric_limits<std::uint32_t>::max()) {
        return Fail(Code::kInvalidArgument, "must be a non-negative integer", key);
      }
      out = static_cast<std::uint32_t>(value.get<std::uint64_t>());
      return {};
    };
    Result<void> r;
    if (key == "registry_url") {
      r = need_string(next.registry_url);
    } else if (key == "relay_url") {
      r = need_string(next.relay_url);
    } else if (key == "registry_ca_file") {
      r = need_string(next.registry_ca_file);
    } else if (key == "relay_ca_file") {
      r = need_string(next.relay_ca_file);
    } else if (key == "display_name") {
      r = need_string(next.display_name);
    } else if (key == "capabilities") {
      auto list = StringList(value, key);
      if (!list) return std::unexpected(list.error());
      next.capabilities = std::move(*list);
    } else if (key == "stop_command") {
      if (value.is_string()) {
        next.stop_command =
            value.get<std::string>().empty()
                ? std::vector<std::string>{}
                : std::vector<std::string>{"/bin/sh", "-c", value.get<std::string>()};
      } else {
        auto list = StringList(value, key);
        if (!list) return std::unexpected(list.error());
        next.stop_command = std::move(*list);
      }
    } else if (key == "store_transcripts") {
      if (!value.is_boolean()) return Fail(Code::kInvalidArgument, "must be true or false", key);
      next.store_transcripts = value.get<bool>();
    } else if (key == "schema_validation") {
      r = need_string(next.schema_validation);
      if (r && next.schema_validation != "off" && next.schema_validation != "warn" &&
          next.schema_validation != "strict") {
        return Fail(Code::kInvalidArgument, "must be off, warn or strict", key);
      }
    } else if (key == "log_level") {
      r = need_string(next.log_level);
      if (r && next.log_level != "debug" && next.log_level != "info" && next.log_level != "warn" &&
          next.log_level != "error") {
        return Fail(Code::kInvalidArgument, "must be debug, info, warn or error", key);
      }
    } else if (key == "relay_max_frame_bytes") {
      r = need_uint(next.relay_max_frame_bytes);
      if (r && next.relay_max_frame_bytes < 1024) {
        return Fail(Code::kInvalidArgument, "must be at least 1024", key);
      }
    } else if (key == "session_cache_seconds") {
      r = need_uint(next.session_cache_seconds);
    } else if (key == "registry_cache_seconds") {
      r = need_uint(next.registry_cache_seconds);
    } else if (key == "rpc_busy_poll_us") {
      r = need_uint(next.rpc_busy_poll_us);
      if (r && next.rpc_busy_poll_us > kMaxBusyPollMicros) {
        return Fail(Code::kInvalidArgument, fmt::format("must be at most {}", kMaxBusyPollMicros),
                    key);
      }
    } else {
      return Fail(Code::kInvalidArgument, "unknown config key", key);
    }
    if (!r) return r;
  }
  if (next.registry_url.empty()) {
    return Fail(Code::kInvalidArgument, "must not be empty", "registry_url");
  }
  if (next.relay_url.empty()) return Fail(Code::kInvalidArgument, "must not be empty", "relay_url");
  config = std::move(next);
  return {};
}

Result<void> ApplyConfigText(std::string_view text, DaemonConfig& config) {
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded()) return Fail(Code::kInvalidArgument, "config is not valid JSON");
  return ApplyConfigJson(doc, config);
}

nlohmann::json ConfigToJson(const DaemonConfig& c) {
  return {{"registry_url", c.registry_url},
          {"relay_url", c.relay_url},
          {"registry_ca_file", c.registry_ca_file},
          {"relay_ca_file", c.relay_ca_file},
          {"display_name", c.display_name},
          {"capabilities", c.capabilities},
          {"stop_command", c.stop_command},
          {"store_transcripts", c.store_transcripts},
          {"schema_validation", c.schema_validation},
          {"log_level", c.log_level},
          {"relay_max_frame_bytes", c.relay_max_frame_bytes},
          {"session_cache_seconds", c.session_cache_seconds},
          {"registry_cache_seconds", c.registry_cache_seconds},
          {"rpc_busy_poll_us", c.rpc_busy_poll_us}};
}

std::string DescribeConfig() {
  std::string out = "config.json keys (JSON object; every key optional):\n";
  for (const auto& k : ConfigKeys()) {
    out += fmt::format("  {:<24} {:<18} default {}\n      {}\n", k.name, k.type,
                       k.default_text[0] ? k.default_text : "(empty)", k.description);
  }
  return out;
}

}  // namespace agentmesh::daemon
