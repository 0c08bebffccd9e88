// amesh-relay configuration: one declared table (key, type, default, reloadable, description)
// from which the JSON config file parser, `--help-config` text and the man page section come.
//
// Precedence: command-line flag > config file > default. SIGHUP re-reads the file; an invalid file
// keeps the running configuration. Keys marked "restart" are not applied on reload (a warning says
// so). Unknown keys and wrong types are errors naming the key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agentmesh/core/error.hpp"

namespace agentmesh::relay {

struct RelayConfig {
  std::string listen = "127.0.0.1:8765";
  std::string store;             // SQLite path; empty = $STATE_DIRECTORY/relay.db or ./relay.db
  std::string fsync = "normal";  // "normal" (survives kill -9) | "full" (survives power loss)
  std::string tls_cert;
  std::string tls_key;
  std::uint32_t store_ttl_seconds = 72 * 3600;
  std::uint32_t max_queue_per_recipient = 100;
  std::uint32_t messages_per_minute = 100;
  std::uint32_t knocks_per_minute = 30;
  std::uint32_t max_frame_bytes = 64 * 1024;
  std::uint32_t max_output_bytes = 1024 * 1024;
  std::uint32_t ping_interval_seconds = 25;
  std::uint32_t auth_timeout_seconds = 10;
  std::uint32_t max_connections = 0;  // 0 = unlimited
  std::uint32_t max_connections_per_ip = 4096;
  std::uint32_t max_invalid_frames = 100;  // per connection, then it is closed
  std::uint32_t expiry_interval_ms = 60'000;
  std::string log_level = "info";  // debug | info | warn | error
};

struct ConfigKey {
  const char* name;
  const char* type;  // "string" | "uint"
  const char* default_text;
  bool reloadable;
  const char* description;
};

// The declared table, in documentation order.
const std::vector<ConfigKey>& RelayConfigKeys();

// Applies the members of a JSON config document onto `config` (keys absent stay as they are).
Result<void> ApplyConfigJson(std::string_view json_text, RelayConfig& config);
Result<void> ApplyConfigFile(const std::string& path, RelayConfig& config);

// Checks cross-field rules (TLS pair, fsync value, non-zero limits, listen address form).
Result<void> ValidateConfig(const RelayConfig& config);

// Human-readable description of every key (for --help-config).
std::string DescribeConfig();

}  // namespace agentmesh::relay
