#include "oauth.hpp"

#include <curl/curl.h>
#include <fmt/format.h>

#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>

namespace agentmesh::registry {
namespace {

using json = nlohmann::json;

constexpr std::size_t kMaxAnswerBytes = 1 << 20;

struct HttpAnswer {
  long status = 0;
  std::string body;
};

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

std::size_t Collect(char* data, std::size_t size, std::size_t count, void* user) {
  auto* body = static_cast<std::string*>(user);
  const std::size_t n = size * count;
  if (body->size() + n > kMaxAnswerBytes) return 0;  // aborts the transfer
  body->append(data, n);
  return n;
}

// A provider's short error text, safe to show: printable ASCII, at most 64 characters.
std::string Short(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (out.size() >= 64) break;
    if (c >= 0x20 && c < 0x7f) out += c;
  }
  return out;
}

// One HTTP call. `form` non-empty makes it a POST of application/x-www-form-urlencoded.
Result<HttpAnswer> Call(std::string_view step, const std::string& url, const std::string& form,
                        const std::vector<std::string>& headers,
                        std::chrono::milliseconds timeout) {
  GlobalInit();
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return Fail(Code::kUnavailable, fmt::format("{}: cannot create an HTTP client", step));
  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(list,
                                                                          curl_slist_free_all);
  HttpAnswer answer;
  CURL* h = curl.get();
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(h, CURLOPT_USERAGENT, "amesh-registry/0.1 (agentmesh/1)");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, header_list.get());
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &answer.body);
  if (!form.empty()) {
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, form.c_str());
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, static_cast<long>(form.size()));
  }
  const CURLcode rc = curl_easy_perform(h);
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    return Fail(Code::kTimeout, fmt::format("{}: the provider did not answer in time", step));
  }
  if (rc != CURLE_OK) {
    return Fail(Code::kUnavailable, fmt::format("{}: {}", step, curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &answer.status);
  return answer;
}

Result<json> JsonObjectOf(std::string_view step, const HttpAnswer& answer) {
  auto doc = json::parse(answer.body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) {
    if (answer.status >= 400 && answer.status < 500) {
      return Fail(Code::kAuthFailed,
                  fmt::format("{}: the provider refused (HTTP {})", step, answer.status));
    }
    return Fail(Code::kUnavailable,
                fmt::format("{}: the provider answered HTTP {} without a JSON object", step,
                            answer.status));
  }
  return doc;
}

std::string StringMember(const json& doc, const char* name) {
  auto it = doc.find(name);
  return it != doc.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace

std::string PercentEncode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::vector<OAuthProvider> OAuthProviders(const RegistryConfig& c) {
  return {
      {"github", "GitHub", c.github_client_id, c.github_client_secret, c.github_authorize_url,
       c.github_token_url, c.github_user_url},
      {"google", "Google", c.google_client_id, c.google_client_secret, c.google_authorize_url,
       c.google_token_url, c.google_user_url},
  };
}

std::optional<OAuthProvider> FindOAuthProvider(const RegistryConfig& config,
                                               std::string_view name) {
  for (auto& p : OAuthProviders(config)) {
    if (p.name == name) return std::move(p);
  }
  return std::nullopt;
}

std::string OAuthCallbackUrl(const RegistryConfig& config) {
  std::string base = config.oauth_callback_base_url;
  if (base.empty()) base = (config.tls_cert.empty() ? "http://" : "https://") + config.listen;
  while (base.ends_with('/')) base.pop_back();
  return base + "/v1/auth/oauth/callback";
}

std::string AuthorizationUrl(const OAuthProvider& provider, std::string_view redirect_uri,
                             std::string_view state) {
  const bool google = provider.name == "google";
  std::string url = provider.authorize_url;
  url += url.find('?') == std::string::npos ? '?' : '&';
  url += "client_id=" + PercentEncode(provider.client_id);
  url += "&redirect_uri=" + PercentEncode(redirect_uri);
  url += "&state=" + PercentEncode(state);
  url += "&scope=" + PercentEncode(google ? "openid email profile" : "read:user user:email");
  if (google) url += "&response_type=code";
  return url;
}

Result<ProviderIdentity> ExchangeCode(const OAuthProvider& provider, std::string_view code,
                                      std::string_view redirect_uri,
                                      std::chrono::milliseconds timeout) {
  const bool google = provider.name == "google";
  // 1. code -> access token
  std::string form = "client_id=" + PercentEncode(provider.client_id) +
                     "&client_secret=" + PercentEncode(provider.client_secret) +
                     "&code=" + PercentEncode(code) +
                     "&redirect_uri=" + PercentEncode(redirect_uri);
  if (google) form += "&grant_type=authorization_code";
  auto token_answer = Call(
      "token exchange", provider.token_url, form,
      {"Accept: application/json", "Content-Type: application/x-www-form-urlencoded"}, timeout);
  if (!token_answer) return std::unexpected(token_answer.error());
  auto token_doc = JsonObjectOf("token exchange", *token_answer);
  if (!token_doc) return std::unexpected(token_doc.error());
  if (const std::string error = StringMember(*token_doc, "error"); !error.empty()) {
    return Fail(Code::kAuthFailed,
                fmt::format("token exchange: the provider refused the code ({})", Short(error)));
  }
  if (token_answer->status >= 400 && token_answer->status < 500) {
    return Fail(Code::kAuthFailed, fmt::format("token exchange: the provider refused (HTTP {})",
                                               token_answer->status));
  }
  if (token_answer->status >= 300) {
    return Fail(Code::kUnavailable,
                fmt::format("token exchange: the provider answered HTTP {}", token_answer->status));
  }
  const std::string access_token = StringMember(*token_doc, "access_token");
  if (access_token.empty()) {
    return Fail(Code::kUnavailable, "token exchange: the answer has no access_token");
  }

  // 2. access token -> user
  auto user_answer =
      Call("user lookup", provider.user_url, {},
           {"Accept: application/json", "Authorization: Bearer " + access_token}, timeout);
  if (!user_answer) return std::unexpected(user_answer.error());
  auto user = JsonObjectOf("user lookup", *user_answer);
  if (!user) return std::unexpected(user.error());
  if (user_answer->status >= 400 && user_answer->status < 500) {
    return Fail(Code::kAuthFailed, fmt::format("user lookup: the provider refused the token "
                                               "(HTTP {})",
                                               user_answer->status));
  }
  if (user_answer->status >= 300) {
    return Fail(Code::kUnavailable,
                fmt::format("user lookup: the provider answered HTTP {}", user_answer->status));
  }
  ProviderIdentity identity;
  if (google) {
    identity.provider_id = StringMember(*user, "sub");
    const auto verified = user->find("email_verified");
    const bool email_verified =
        verified != user->end() && ((verified->is_boolean() && verified->get<bool>()) ||
                                    (verified->is_string() && *verified == "true"));
    if (!email_verified) {
      return Fail(Code::kAuthFailed, "user lookup: the Google account's email is not verified");
    }
    identity.email = StringMember(*user, "email");
    identity.display_name = StringMember(*user, "name");
  } else {
    const auto id = user->find("id");
    if (id != user->end() && id->is_number_integer()) {
      identity.provider_id = std::to_string(id->get<std::int64_t>());
    } else if (id != user->end() && id->is_string()) {
      identity.provider_id = id->get<std::string>();
    }
    identity.username = StringMember(*user, "login");
    identity.email = StringMember(*user, "email");
    identity.display_name = StringMember(*user, "name");
  }
  if (identity.provider_id.empty() || identity.provider_id.size() > 256) {
    return Fail(Code::kUnavailable, "user lookup: the answer has no usable user id");
  }
  return identity;
}

}  // namespace agentmesh::registry
