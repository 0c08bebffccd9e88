// agentmeshd configuration: <home>/config.json (or --config FILE), one declared table of keys.
//
// Every key is optional; unknown keys and wrong types are errors naming the key. `init` writes the
// file (name, registry, relay); `register` records capabilities and display name in it. SIGHUP
// re-reads it: an invalid file keeps the running configuration. URL changes take effect at once
// (the registry client and the relay link are replaced); everything else is read where used.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "agentmesh/core/error.hpp"

namespace agentmesh::daemon {

struct DaemonConfig {
  std::string registry_url = "http://127.0.0.1:8080";
  std::string relay_url = "ws://127.0.0.1:8765/v1/connect";
  std::string registry_ca_file;  // PEM trust anchors for https:// (empty = system store)
  std::string relay_ca_file;     // PEM trust anchors for wss:// (empty = system store)
  std::string display_name;
  std::vector<std::string> capabilities;
  // argv of the owner's "stop my agent" command for emergency_stop (a string is run by /bin/sh -c).
  std::vector<std::string> stop_command;
  bool store_transcripts = false;
  std::string schema_validation = "warn";  // off | warn | strict
  std::string log_level = "info";
  std::uint32_t relay_max_frame_bytes = 65536;  // the relay's frame limit (checked before sending)
  std::uint32_t session_cache_seconds = 86400;  // reuse of an active session by `send AMID`
  std::uint32_t registry_cache_seconds = 120;   // tier/reputation cache for KNOCK policy
  // After reading a request the loop polls without sleeping for this long (0: never).
  std::uint32_t rpc_busy_poll_us = 50;
};

struct ConfigKeyInfo {
  const char* name;
  const char* type;
  const char* default_text;
  const char* description;
};
const std::vector<ConfigKeyInfo>& ConfigKeys();

// Applies a JSON document onto `config` (absent keys keep their value). Errors name the key.
Result<void> ApplyConfigJson(const nlohmann::json& doc, DaemonConfig& config);
Result<void> ApplyConfigText(std::string_view text, DaemonConfig& config);
// Every key, for writing config.json.
nlohmann::json ConfigToJson(const DaemonConfig& config);
// Human-readable table of the keys (for --help-config and the man page).
std::string DescribeConfig();

}  // namespace agentmesh::daemon
