#include "config.hpp"

#include <fmt/format.h>

#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>

namespace agentmesh::relay {
namespace {

struct Binding {
  ConfigKey key;
  std::string RelayConfig::*text = nullptr;
  std::uint32_t RelayConfig::*number = nullptr;
};

const std::vector<Binding>& Bindings() {
  static const std::vector<Binding> bindings = {
      {{"listen", "string", "127.0.0.1:8765", false, "HOST:PORT to listen on (IPv6: [::1]:8765)"},
       &RelayConfig::listen},
      {{"store", "string", "$STATE_DIRECTORY/relay.db or ./relay.db", false,
        "SQLite file of the store-and-forward queue"},
       &RelayConfig::store},
      {{"fsync", "string", "normal", false,
        "normal: a queued message survives a crash of the relay; full: also a power loss"},
       &RelayConfig::fsync},
      {{"tls_cert", "string", "", false,
        "PEM certificate chain; with tls_key, serve wss:// and https://"},
       &RelayConfig::tls_cert},
      {{"tls_key", "string", "", false, "PEM private key for tls_cert"}, &RelayConfig::tls_key},
      {{"store_ttl_seconds", "uint", "259200", true, "how long a queued message is kept (72 h)"},
       nullptr,
       &RelayConfig::store_ttl_seconds},
      {{"max_queue_per_recipient", "uint", "100", true,
        "queued messages per offline recipient; beyond it sends are refused with QUEUE_FULL"},
       nullptr,
       &RelayConfig::max_queue_per_recipient},
      {{"messages_per_minute", "uint", "100", true, "non-KNOCK sends per sender per minute"},
       nullptr,
       &RelayConfig::messages_per_minute},
      {{"knocks_per_minute", "uint", "30", true, "KNOCK sends per sender per minute"},
       nullptr,
       &RelayConfig::knocks_per_minute},
      {{"max_frame_bytes", "uint", "65536", false,
        "largest WebSocket message accepted (MESSAGE_TOO_LARGE beyond)"},
       nullptr,
       &RelayConfig::max_frame_bytes},
      {{"max_output_bytes", "uint", "1048576", false,
        "queued output per connection before the reader counts as too slow and is disconnected"},
       nullptr,
       &RelayConfig::max_output_bytes},
      {{"ping_interval_seconds", "uint", "25", false, "WebSocket ping interval (0 = none)"},
       nullptr,
       &RelayConfig::ping_interval_seconds},
      {{"auth_timeout_seconds", "uint", "10", true, "time allowed for the CONNECT frame"},
       nullptr,
       &RelayConfig::auth_timeout_seconds},
      {{"max_connections", "uint", "0", false, "total connections (0 = unlimited)"},
       nullptr,
       &RelayConfig::max_connections},
      {{"max_connections_per_ip", "uint", "4096", true,
        "concurrent WebSocket connections per source address; beyond it RATE_LIMITED and close, "
        "beyond twice it TCP connections are refused"},
       nullptr,
       &RelayConfig::max_connections_per_ip},
      {{"max_invalid_frames", "uint", "100", true,
        "invalid frames tolerated per connection before it is closed"},
       nullptr,
       &RelayConfig::max_invalid_frames},
      {{"expiry_interval_ms", "uint", "60000", true,
        "how often expired queued messages are purged"},
       nullptr,
       &RelayConfig::expiry_interval_ms},
      {{"log_level", "string", "info", true, "debug, info, warn or error"},
       &RelayConfig::log_level},
  };
  return bindings;
}

}  // namespace

const std::vector<ConfigKey>& RelayConfigKeys() {
  static const std::vector<ConfigKey> keys = [] {
    std::vector<ConfigKey> out;
    for (const auto& b : Bindings()) out.push_back(b.key);
    return out;
  }();
  return keys;
}

Result<void> ApplyConfigJson(std::string_view json_text, RelayConfig& config) {
  auto doc = nlohmann::json::parse(json_text, nullptr, false);
  if (doc.is_discarded()) return Fail(Code::kInvalidArgument, "config is not valid JSON");
  if (!doc.is_object()) return Fail(Code::kInvalidArgument, "config must be a JSON object");
  RelayConfig next = config;
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

Result<void> ApplyConfigFile(const std::string& path, RelayConfig& config) {
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

Result<void> ValidateConfig(const RelayConfig& config) {
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
  for (auto [name, value] : {std::pair{"store_ttl_seconds", config.store_ttl_seconds},
                             {"max_queue_per_recipient", config.max_queue_per_recipient},
                             {"messages_per_minute", config.messages_per_minute},
                             {"knocks_per_minute", config.knocks_per_minute},
                             {"max_frame_bytes", config.max_frame_bytes},
                             {"max_output_bytes", config.max_output_bytes},
                             {"auth_timeout_seconds", config.auth_timeout_seconds},
                             {"max_connections_per_ip", config.max_connections_per_ip},
                             {"expiry_interval_ms", config.expiry_interval_ms}}) {
    if (value == 0) return Fail(Code::kInvalidArgument, "must be greater than 0", name);
  }
  if (config.max_frame_bytes < 1024) {
    return Fail(Code::kInvalidArgument, "must be at least 1024", "max_frame_bytes");
  }
  if (config.max_output_bytes < config.max_frame_bytes) {
    return Fail(Code::kInvalidArgument, "must be at least max_frame_bytes", "max_output_bytes");
  }
  const auto colon = config.listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == config.listen.size()) {
    return Fail(Code::kInvalidArgument, "must be HOST:PORT", "listen");
  }
  return {};
}

std::string DescribeConfig() {
  std::string out = "Config file keys (JSON object; flags override the file):\n";
  for (const auto& key : RelayConfigKeys()) {
    out += fmt::format("  {:<26} {:<6} default {}{}\n      {}\n", key.name, key.type,
                       key.default_text[0] ? key.default_text : "(empty)",
                       key.reloadable ? ", reloadable on SIGHUP" : "", key.description);
  }
  return out;
}

}  // namespace agentmesh::relay
