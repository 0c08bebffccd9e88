// amesh-registry configuration: one declared table (key, type, default, reloadable, description)
// from which the JSON config file parser, `--help-config` and the man page section come.
//
// Precedence: command-line flag > config file > default. SIGHUP re-reads the file; an invalid file
// keeps the running configuration. Keys that are not reloadable keep their running value on
// reload (a warning names them). Unknown keys and wrong types are errors naming the key.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agentmesh/core/error.hpp"

namespace agentmesh::registry {

struct RegistryConfig {
  std::string listen = "127.0.0.1:8080";
  // "sqlite:PATH" (relative paths are taken inside state_dir); empty = sqlite:registry.db.
  std::string db;
  // Where the database (by default) and the registry root key live. Empty = $STATE_DIRECTORY,
  // else the working directory.
  std::string state_dir;
  std::string fsync = "normal";  // "normal" | "full"
  std::string tls_cert;
  std::string tls_key;
  std::uint32_t max_body_bytes = 64 * 1024;
  std::uint32_t register_per_minute = 30;  // per client IP
  std::uint32_t search_per_minute = 600;   // per client IP
  std::uint32_t max_connections = 0;       // 0 = unlimited
  std::uint32_t signature_max_age_seconds = 300;
  std::uint32_t signature_max_future_seconds = 60;
  std::uint32_t max_one_time_prekeys = 1000;  // unconsumed per agent
  std::uint32_t replay_cache_entries = 1'000'000;
  std::uint32_t startup_delay_ms = 0;  // testing aid: hold migrations back this long
  std::string log_level = "info";      // debug | info | warn | error
};

struct ConfigKey {
  const char* name;
  const char* type;  // "string" | "uint"
  const char* default_text;
  bool reloadable;
  const char* description;
};

// The declared table, in documentation order.
const std::vector<ConfigKey>& RegistryConfigKeys();

// Applies the members of a JSON config document onto `config` (absent keys stay as they are);
// validates the result; leaves `config` untouched on error.
Result<void> ApplyConfigJson(std::string_view json_text, RegistryConfig& config);
Result<void> ApplyConfigFile(const std::string& path, RegistryConfig& config);

// Cross-field rules (TLS pair, enumerations, non-zero limits, HOST:PORT form, db scheme).
Result<void> ValidateConfig(const RegistryConfig& config);

// Copies the reloadable keys of `next` onto `running`; returns the names of non-reloadable keys
// whose value differs (they are not applied).
std::vector<std::string> ApplyReloadable(const RegistryConfig& next, RegistryConfig& running);

// Human-readable description of every key (for --help-config).
std::string DescribeConfig();

}  // namespace agentmesh::registry
