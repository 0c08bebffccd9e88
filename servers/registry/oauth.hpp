// OAuth (Tier 1) of amesh-registry: the GitHub and Google authorization-code flows.
//
//   POST /v1/auth/oauth/authorize  -> AuthorizationUrl(): the provider's page, with our state
//   GET  /v1/auth/oauth/callback   -> ExchangeCode(): code -> access token (token_url, form POST)
//                                     -> user id (user_url, GET with "Authorization: Bearer")
//
// Provider endpoints come from the configuration (defaults: the real ones), so tests point them
// at a stand-in server on loopback. HTTP calls use libcurl easy handles on the calling thread
// (a worker thread) with a total timeout, no redirects, http/https only and a 1 MiB answer
// limit. Client secrets, codes and access tokens never appear in errors or logs.
//
// Thread-safety: free functions; libcurl's global init runs once (std::call_once).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agentmesh/core/error.hpp"
#include "config.hpp"

namespace agentmesh::registry {

struct OAuthProvider {
  std::string name;          // "github" | "google"
  std::string display_name;  // "GitHub" | "Google"
  std::string client_id;
  std::string client_secret;
  std::string authorize_url;
  std::string token_url;
  std::string user_url;
  // Enabled when the client id and secret are both configured.
  bool enabled() const { return !client_id.empty() && !client_secret.empty(); }
};

// Every provider the registry knows, enabled or not, in a fixed order.
std::vector<OAuthProvider> OAuthProviders(const RegistryConfig& config);
// nullopt for a name that is not a known provider.
std::optional<OAuthProvider> FindOAuthProvider(const RegistryConfig& config, std::string_view name);

// <oauth_callback_base_url or http(s)://<listen>>/v1/auth/oauth/callback
std::string OAuthCallbackUrl(const RegistryConfig& config);

// The provider's authorization page for `state` (query parameters percent-encoded).
std::string AuthorizationUrl(const OAuthProvider& provider, std::string_view redirect_uri,
                             std::string_view state);

struct ProviderIdentity {
  std::string provider_id;  // GitHub: the numeric "id" as text; Google: "sub"
  std::string username;     // GitHub "login"; Google: empty
  std::string email;        // may be empty
  std::string display_name;
};

// Exchanges `code` at the token endpoint and reads the user at the user endpoint.
// Errors: kAuthFailed when the provider refuses the code or the token (an OAuth "error" answer
// or a 4xx status), or (Google) the email is not verified; kUnavailable when a provider cannot
// be reached, answers 5xx or something that is not the expected JSON; kTimeout when a call
// exceeds `timeout`. Messages name the step and the provider's short error code only.
Result<ProviderIdentity> ExchangeCode(const OAuthProvider& provider, std::string_view code,
                                      std::string_view redirect_uri,
                                      std::chrono::milliseconds timeout);

// RFC 3986 percent-encoding of everything but unreserved characters.
std::string PercentEncode(std::string_view text);

}  // namespace agentmesh::registry
