#include "config.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

namespace agentmesh::registry {
namespace {

struct Binding {
  ConfigKey key;
  std::string RegistryConfig::*text = nullptr;
  std::uint32_t RegistryConfig::*number = nullptr;
};

const std::vector<Binding>& Bindings() {
  static const std::vector<Binding> bindings = {
      {{"listen", "string", "127.0.0.1:8080", false, "HOST:PORT to listen on (IPv6: [::1]:8080)"},
       &RegistryConfig::listen},
      {{"db", "string", "sqlite:registry.db", false,
        "database: sqlite:PATH (relative to state_dir); postgresql://... later"},
       &RegistryConfig::db},
      {{"state_dir", "string", "$STATE_DIRECTORY or the working directory", false,
        "directory of the default database and of keys/root.key (the registry's Ed25519 key)"},
       &RegistryConfig::state_dir},
      {{"fsync", "string", "normal", false,
        "normal: a committed write survives a crash of the registry; full: also a power loss"},
       &RegistryConfig::fsync},
      {{"tls_cert", "string", "", false, "PEM certificate chain; with tls_key, serve https://"},
       &RegistryConfig::tls_cert},
      {{"tls_key", "string", "", false, "PEM private key for tls_cert"}, &RegistryConfig::tls_key},
      {{"max_body_bytes", "uint", "65536", false, "largest request body (413 beyond)"},
       nullptr,
       &RegistryConfig::max_body_bytes},
      {{"register_per_minute", "uint", "30", true,
        "registrations per client address per minute (burst of the same size; 429 beyond)"},
       nullptr,
       &RegistryConfig::register_per_minute},
      {{"search_per_minute", "uint", "600", true,
        "searches per client address per minute (burst of the same size; 429 beyond)"},
       nullptr,
       &RegistryConfig::search_per_minute},
      {{"max_connections", "uint", "0", false, "concurrent connections (0 = unlimited)"},
       nullptr,
       &RegistryConfig::max_connections},
      {{"signature_max_age_seconds", "uint", "300", true,
        "how old a signed request's timestamp may be"},
       nullptr,
       &RegistryConfig::signature_max_age_seconds},
      {{"signature_max_future_seconds", "uint", "60", true,
        "how far ahead of the registry clock a signed request's timestamp may be"},
       nullptr,
       &RegistryConfig::signature_max_future_seconds},
      {{"max_one_time_prekeys", "uint", "1000", true,
        "unconsumed one-time prekeys an agent may have stored"},
       nullptr,
       &RegistryConfig::max_one_time_prekeys},
      {{"replay_cache_entries", "uint", "1000000", true,
        "signed requests remembered for replay detection; when full, signed requests get 503"},
       nullptr,
       &RegistryConfig::replay_cache_entries},
      {{"startup_delay_ms", "uint", "0", false,
        "testing aid: wait this long before running migrations (data routes answer 503)"},
       nullptr,
       &RegistryConfig::startup_delay_ms},
      {{"log_level", "string", "info", true, "debug, info, warn or error"},
       &RegistryConfig::log_level},
      {{"dns_resolver", "string", "the nameservers of /etc/resolv.conf", true,
        "resolvers for organisation DNS verification: IP[:PORT], comma-separated"},
       &RegistryConfig::dns_resolver},
      {{"dns_timeout_ms", "uint", "2000", true,
        "DNS answer timeout of the first try (the second waits twice as long)"},
       nullptr,
       &RegistryConfig::dns_timeout_ms},
      {{"certificate_days", "uint", "365", true,
        "validity of the organisation and agent certificates the registry issues"},
       nullptr,
       &RegistryConfig::certificate_days},
      {{"oauth_callback_base_url", "string", "http(s)://<listen>", true,
        "public base URL of this registry; the OAuth redirect URI is "
        "<base>/v1/auth/oauth/callback (env OAUTH_CALLBACK_BASE_URL)"},
       &RegistryConfig::oauth_callback_base_url},
      {{"oauth_state_ttl_seconds", "uint", "600", true, "how long an OAuth state stays usable"},
       nullptr,
       &RegistryConfig::oauth_state_ttl_seconds},
      {{"oauth_timeout_ms", "uint", "10000", true, "timeout of each HTTP call to a provider"},
       nullptr,
       &RegistryConfig::oauth_timeout_ms},
      {{"github_client_id", "string", "", true,
        "GitHub OAuth app client id (env GITHUB_CLIENT_ID)"},
       &RegistryConfig::github_client_id},
      {{"github_client_secret", "string", "", true,
        "GitHub OAuth app client secret (env GITHUB_CLIENT_SECRET; never logged)"},
       &RegistryConfig::github_client_secret},
      {{"github_authorize_url", "string", "https://github.com/login/oauth/authorize", true,
        "GitHub authorization endpoint"},
       &RegistryConfig::github_authorize_url},
      {{"github_token_url", "string", "https://github.com/login/oauth/access_token", true,
        "GitHub token endpoint"},
       &RegistryConfig::github_token_url},
      {{"github_user_url", "string", "https://api.github.com/user", true,
        "GitHub user API (the verified id is its \"id\")"},
       &RegistryConfig::github_user_url},
      {{"google_client_id", "string", "", true, "Google OAuth client id (env GOOGLE_CLIENT_ID)"},
       &RegistryConfig::google_client_id},
      {{"google_client_secret", "string", "", true,
        "Google OAuth client secret (env GOOGLE_CLIENT_SECRET; never logged)"},
       &RegistryConfig::google_client_secret},
      {{"google_authorize_url", "string", "https://accounts.google.com/o/oauth2/v2/auth", true,
        "Google authorization endpoint"},
       &RegistryConfig::google_authorize_url},
      {{"google_token_url", "string", "https://oauth2.googleapis.com/token", true,
        "Google token endpoint"},
       &RegistryConfig::google_token_url},
      {{"google_user_url", "string", "https://openidconnect.googleapis.com/v1/userinfo", true,
        "Google userinfo endpoint (the verified id is its \"sub\"; email_verified required)"},
       &RegistryConfig::google_user_url},
  };
  return bindings;
}

bool HasControlOrSpace(std::string_view s) {
  for (char c : s) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return true;
  }
  return false;
}

}  // namespace

const std::vector<ConfigKey>& RegistryConfigKeys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> out;
    for (const auto& b : Bindings()) out.push_back(b.key);
    return out;
  }();
  return keys;
}

Result<void> ApplyConfigJson(std::string_view json_text, RegistryConfig& config) {
  auto doc = nlohmann::json::parse(json_text, nullptr, false);
  if (doc.is_discarded()) return Fail(Code::kInvalidArgument, "config is not valid JSON");
  if (!doc.is_object()) return Fail(Code::kInvalidArgument, "config must be a JSON object");
  RegistryConfig next = config;
  for (const auto& [name, value] : doc.items()) {
    const Binding* binding = nullptr;
    for (const auto& b : Bindings()) {
      if (name == b.key.name) binding = &b;
    }
    if (binding == nullptr) return Fail(Code::kInvalidArgument, "unknown config key", name);
    if (binding->text != nullptr) {
      if (!value.is_string()) return Fail(Code::kInvalidArgument, "must be a string", name);
      next.*(binding->text) = value.get<std::string>();
    } else {
      if (!value.is_number_unsigned() ||
          value.get<std::uint64_t>() > std::numeric_limits<std::uint32_t>::max()) {
        return Fail(Code::kInvalidArgument, "must be a non-negative integer below 2^32", name);
      }
      next.*(binding->number) = static_cast<std::uint32_t>(value.get<std::uint64_t>());
    }
  }
  if (auto r = ValidateConfig(next); !r) return r;
  config = std::move(next);
  return {};
}

Result<void> ApplyConfigFile(const std::string& path, RegistryConfig& config) {
  std::ifstream in(path);
  if (!in) return Fail(Code::kIo, fmt::format("cannot read config file {}", path));
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto r = ApplyConfigJson(buffer.str(), config);
  if (!r) {
    Error e = r.error();
    e.message = fmt::format("{}: {}", path, e.message);
    return std::unexpected(e);
  }
  return {};
}

void ApplyEnvironment(RegistryConfig& config) {
  const std::pair<const char*, std::string RegistryConfig::*> vars[] = {
      {"GITHUB_CLIENT_ID", &RegistryConfig::github_client_id},
      {"GITHUB_CLIENT_SECRET", &RegistryConfig::github_client_secret},
      {"GOOGLE_CLIENT_ID", &RegistryConfig::google_client_id},
      {"GOOGLE_CLIENT_SECRET", &RegistryConfig::google_client_secret},
      {"OAUTH_CALLBACK_BASE_URL", &RegistryConfig::oauth_callback_base_url},
  };
  for (const auto& [name, member] : vars) {
    const char* value = std::getenv(name);
    if (value != nullptr && *value != '\0') config.*member = value;
  }
}

Result<void> ValidateConfig(const RegistryConfig& config) {
  if (config.fsync != "normal" && config.fsync != "full") {
    return Fail(Code::kInvalidArgument, "must be \"normal\" or \"full\"", "fsync");
  }
  if (config.tls_cert.empty() != config.tls_key.empty()) {
    return Fail(Code::kInvalidArgument, "tls_cert and tls_key go together", "tls_cert");
  }
  if (config.log_level != "debug" && config.log_level != "info" && config.log_level != "warn" &&
      config.log_level != "error") {
    return Fail(Code::kInvalidArgument, "must be debug, info, warn or error", "log_level");
  }
  if (!config.db.empty() && !config.db.starts_with("sqlite:") &&
      !config.db.starts_with("postgresql://") && !config.db.starts_with("postgres://")) {
    return Fail(Code::kInvalidArgument, "must be sqlite:PATH or postgresql://...", "db");
  }
  if (config.db == "sqlite:") return Fail(Code::kInvalidArgument, "sqlite: needs a path", "db");
  for (auto [name, value] : {std::pair{"max_body_bytes", config.max_body_bytes},
                             {"register_per_minute", config.register_per_minute},
                             {"search_per_minute", config.search_per_minute},
                             {"signature_max_age_seconds", config.signature_max_age_seconds},
                             {"max_one_time_prekeys", config.max_one_time_prekeys},
                             {"replay_cache_entries", config.replay_cache_entries}}) {
    if (value == 0) return Fail(Code::kInvalidArgument, "must be greater than 0", name);
  }
  if (config.max_body_bytes < 1024) {
    return Fail(Code::kInvalidArgument, "must be at least 1024", "max_body_bytes");
  }
  if (config.signature_max_age_seconds > 86400 || config.signature_max_future_seconds > 86400) {
    return Fail(Code::kInvalidArgument, "must be at most 86400", "signature_max_age_seconds");
  }
  for (auto [name, value] : {std::pair{"dns_timeout_ms", config.dns_timeout_ms},
                             {"oauth_timeout_ms", config.oauth_timeout_ms}}) {
    if (value == 0 || value > 60000) {
      return Fail(Code::kInvalidArgument, "must be 1 to 60000", name);
    }
  }
  if (config.certificate_days == 0 || config.certificate_days > 3650) {
    return Fail(Code::kInvalidArgument, "must be 1 to 3650", "certificate_days");
  }
  if (config.oauth_state_ttl_seconds == 0 || config.oauth_state_ttl_seconds > 86400) {
    return Fail(Code::kInvalidArgument, "must be 1 to 86400", "oauth_state_ttl_seconds");
  }
  if (!config.dns_resolver.empty()) {
    std::string_view rest = config.dns_resolver;
    while (true) {
      const auto comma = rest.find(',');
      const std::string_view item = rest.substr(0, comma);
      if (item.empty() || item.find_first_of(" \t") != std::string_view::npos) {
        return Fail(Code::kInvalidArgument, "must be IP[:PORT] entries separated by commas",
                    "dns_resolver");
      }
      if (comma == std::string_view::npos) break;
      rest = rest.substr(comma + 1);
    }
  }
  for (auto [name, value] : {std::pair{"oauth_callback_base_url", &config.oauth_callback_base_url},
                             {"github_authorize_url", &config.github_authorize_url},
                             {"github_token_url", &config.github_token_url},
                             {"github_user_url", &config.github_user_url},
                             {"google_authorize_url", &config.google_authorize_url},
                             {"google_token_url", &config.google_token_url},
                             {"google_user_url", &config.google_user_url}}) {
    if (value->empty() && std::string_view(name) == "oauth_callback_base_url") continue;
    if (!value->starts_with("https://") && !value->starts_with("http://")) {
      return Fail(Code::kInvalidArgument, "must be an http:// or https:// URL", name);
    }
    if (HasControlOrSpace(*value)) {
      return Fail(Code::kInvalidArgument, "must not contain spaces or control characters", name);
    }
  }
  const auto colon = config.listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == config.listen.size()) {
    return Fail(Code::kInvalidArgument, "must be HOST:PORT", "listen");
  }
  return {};
}

std::vector<std::string> ApplyReloadable(const RegistryConfig& next, RegistryConfig& running) {
  std::vector<std::string> ignored;
  RegistryConfig merged = running;
  for (const auto& b : Bindings()) {
    const bool differs = b.text != nullptr ? next.*(b.text) != running.*(b.text)
                                           : next.*(b.number) != running.*(b.number);
    if (!differs) continue;
    if (!b.key.reloadable) {
      ignored.emplace_back(b.key.name);
      continue;
    }
    if (b.text != nullptr) {
      merged.*(b.text) = next.*(b.text);
    } else {
      merged.*(b.number) = next.*(b.number);
    }
  }
  running = std::move(merged);
  return ignored;
}

std::string DescribeConfig() {
  std::string out = "Config file keys (JSON object; flags override the file):\n";
  for (const auto& key : RegistryConfigKeys()) {
    out += fmt::format("  {:<30} {:<6} default {}{}\n      {}\n", key.name, key.type,
                       key.default_text[0] ? key.default_text : "(empty)",
                       key.reloadable ? ", reloadable on SIGHUP" : "", key.description);
  }
  return out;
}

}  // namespace agentmesh::registry
