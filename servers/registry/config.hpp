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

  // Organisation DNS verification: resolvers "IP[:PORT]" separated by commas; empty = the
  // nameservers of /etc/resolv.conf.
  std::string dns_resolver;
  std::uint32_t dns_timeout_ms = 2000;   // first try; c-ares doubles it on the second
  std::uint32_t certificate_days = 365;  // validity of the certificates the registry issues

  // OAuth (Tier 1). A provider is enabled when its client id and secret are both set. The
  // callback URL sent to providers is <oauth_callback_base_url>/v1/auth/oauth/callback; empty =
  // http(s)://<listen>.
  std::string oauth_callback_base_url;
  std::uint32_t oauth_state_ttl_seconds = 600;
  std::uint32_t oauth_timeout_ms = 10000;  // each provider HTTP call
  std::string github_client_id;
  std::string github_client_secret;
  std::string github_authorize_url = "https://github.com/login/oauth/authorize";
  std::string github_token_url = "https://github.com/login/oauth/access_token";
  std::string github_user_url = "https://api.github.com/user";
  std::string google_client_id;
  std::string google_client_secret;
  std::string google_authorize_url = "https://accounts.google.com/o/oauth2/v2/auth";
  std::string google_token_url = "https://oauth2.googleapis.com/token";
  std::string google_user_url = "https://openidconnect.googleapis.com/v1/userinfo";
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

// Applies the environment variables GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET, GOOGLE_CLIENT_ID,
// GOOGLE_CLIENT_SECRET and OAUTH_CALLBACK_BASE_URL (those set and non-empty). Layered between
// the defaults and the config file: flag > file > environment > default.
void ApplyEnvironment(RegistryConfig& config);

// Cross-field rules (TLS pair, enumerations, non-zero limits, HOST:PORT form, db scheme).
Result<void> ValidateConfig(const RegistryConfig& config);

// Copies the reloadable keys of `next` onto `running`; returns the names of non-reloadable keys
// whose value differs (they are not applied).
std::vector<std::string> ApplyReloadable(const RegistryConfig& next, RegistryConfig& running);

// Human-readable description of every key (for --help-config).
std::string DescribeConfig();

}  // namespace agentmesh::registry
