#include "registry_client.hpp"

#include <curl/curl.h>
#include <fmt/format.h>

#include <chrono>
#include <cstdio>
#include <deque>
#include <exception>
#include <unordered_map>
#include <utility>

#include "agentmesh/core/registry_auth.hpp"
#include "curl_uv.hpp"

namespace agentmesh::daemon {

namespace {

using nlohmann::json;

constexpr std::size_t kMaxResponseBytes = 8 * 1024 * 1024;

UnixNanos SystemNow() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string PercentEncode(std::string_view in) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(in.size());
  for (unsigned char c : in) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
        c == '_' || c == '.' || c == '~' || c == '/' || c == '*') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Code CodeForStatus(long status) {
  switch (status) {
    case 400:
      return Code::kInvalidArgument;
    case 401:
      return Code::kAuthFailed;
    case 403:
      return Code::kPermissionDenied;
    case 404:
    case 410:  // revoked: the registry no longer serves this agent's prekeys or DID
      return Code::kNotFound;
    case 409:
      return Code::kConflict;
    case 413:
    case 429:
      return Code::kLimitExceeded;
    default:
      return status >= 500 && status <= 599 ? Code::kUnavailable : Code::kInternal;
  }
}

Code CodeForCurl(CURLcode rc) {
  switch (rc) {
    case CURLE_OPERATION_TIMEDOUT:
      return Code::kTimeout;
    case CURLE_PEER_FAILED_VERIFICATION:
      return Code::kAuthFailed;
    case CURLE_WRITE_ERROR:
      return Code::kLimitExceeded;  // our write callback refused an oversized response
    case CURLE_URL_MALFORMAT:
    case CURLE_UNSUPPORTED_PROTOCOL:
      return Code::kInvalidArgument;
    default:
      return Code::kUnavailable;
  }
}

}  // namespace

class RegistryClient::Impl {
 public:
  Impl(uv_loop_t* loop, RegistryClientOptions options)
      : options_(std::move(options)), multi_(loop), deferred_timer_(loop) {
    while (!options_.base_url.empty() && options_.base_url.back() == '/') {
      options_.base_url.pop_back();
    }
  }

  ~Impl() {
    for (auto& [easy, req] : requests_) {
      multi_.Remove(easy);
      FreeRequest(*req);
    }
    requests_.clear();
    deferred_.clear();
  }

  std::size_t in_flight() const noexcept { return requests_.size() + deferred_.size(); }

  UnixNanos Now() const { return options_.now ? options_.now() : SystemNow(); }

  void Start(std::string_view method, std::string_view path_and_query, const json* body,
             const Ed25519KeyPair* signing, JsonCallback done) {
    std::string verb(method);
    for (char& c : verb) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
    if (path_and_query.empty() || path_and_query.front() != '/') {
      return Defer(std::move(done), Fail(Code::kInvalidArgument, "path must start with '/'"));
    }
    if (options_.base_url.empty()) {
      return Defer(std::move(done), Fail(Code::kInvalidArgument, "registry URL is not set"));
    }
    if (verb.empty()) verb = body != nullptr ? "POST" : "GET";
    auto req = std::make_unique<Request>();
    if (body != nullptr) {
      if (verb == "GET" || verb == "HEAD") {
        return Defer(std::move(done), Fail(Code::kInvalidArgument, "a GET request has no body"));
      }
      if (!body->is_object()) {
        return Defer(std::move(done),
                     Fail(Code::kInvalidArgument, "request body must be a JSON object"));
      }
      json signed_body = *body;
      if (signing != nullptr) {
        const std::string_view path = path_and_query.substr(0, path_and_query.find('?'));
        auto ok = SignRegistryRequest(verb, path, signed_body, signing->secret, Now());
        if (!ok) return Defer(std::move(done), std::unexpected(ok.error()));
      }
      try {
        req->body = signed_body.dump();
      } catch (const std::exception& e) {
        return Defer(std::move(done),
                     Fail(Code::kInvalidArgument, std::string("request body: ") + e.what()));
      }
      req->has_body = true;
    }
    req->done = std::move(done);
    const std::string url = options_.base_url + std::string(path_and_query);

    CURL* easy = curl_easy_init();
    if (easy == nullptr) {
      return Defer(std::move(req->done), Fail(Code::kInternal, "curl_easy_init failed"));
    }
    req->easy = easy;
    req->headers = curl_slist_append(req->headers, "Accept: application/json");
    req->headers = curl_slist_append(req->headers, "Expect:");
    if (req->has_body) {
      req->headers = curl_slist_append(req->headers, "Content-Type: application/json");
    }
    curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS, static_cast<long>(options_.timeout_ms));
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(options_.timeout_ms));
    curl_easy_setopt(easy, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(easy, CURLOPT_USERAGENT, "agentmeshd");
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!options_.ca_file.empty()) curl_easy_setopt(easy, CURLOPT_CAINFO, options_.ca_file.c_str());
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->error);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, &Impl::OnWrite);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, req.get());
    if (req->has_body) {
      curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
                       static_cast<curl_off_t>(req->body.size()));
      curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body.data());
      if (verb != "POST") curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, verb.c_str());
    } else if (verb == "GET") {
      curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
    } else {
      curl_easy_setopt(easy, CURLOPT_CUSTOMREQUEST, verb.c_str());
    }

    Request* raw = req.get();
    requests_.emplace(easy, std::move(req));
    if (!multi_.Add(easy, [this, raw](int rc) { Finish(raw, static_cast<CURLcode>(rc)); })) {
      auto node = requests_.extract(easy);
      JsonCallback cb = std::move(node.mapped()->done);
      FreeRequest(*node.mapped());
      return Defer(std::move(cb), Fail(Code::kInternal, "curl_multi_add_handle failed"));
    }
  }

 private:
  struct Request {
    CURL* easy = nullptr;
    curl_slist* headers = nullptr;
    std::string body;
    bool has_body = false;
    std::string response;
    bool too_large = false;
    char error[CURL_ERROR_SIZE] = {};
    JsonCallback done;
  };

  static std::size_t OnWrite(char* data, std::size_t size, std::size_t nmemb,
                             void* userp) noexcept {
    auto* req = static_cast<Request*>(userp);
    const std::size_t n = size * nmemb;
    if (req->response.size() + n > kMaxResponseBytes) {
      req->too_large = true;
      return 0;
    }
    try {
      req->response.append(data, n);
    } catch (...) {
      return 0;
    }
    return n;
  }

  static void FreeRequest(Request& req) {
    if (req.easy != nullptr) curl_easy_cleanup(req.easy);
    if (req.headers != nullptr) curl_slist_free_all(req.headers);
    req.easy = nullptr;
    req.headers = nullptr;
  }

  // Runs after CurlMulti removed the transfer. Frees everything, then calls back (last).
  void Finish(Request* raw, CURLcode rc) {
    auto node = requests_.extract(raw->easy);
    if (node.empty()) return;
    std::unique_ptr<Request> req = std::move(node.mapped());
    long status = 0;
    curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &status);
    Result<json> result = BuildResult(*req, rc, status);
    FreeRequest(*req);
    JsonCallback done = std::move(req->done);
    req.reset();
    if (options_.on_reachability) {
      const bool reachable = result || (result.error().code != Code::kUnavailable &&
                                        result.error().code != Code::kTimeout);
      std::weak_ptr<bool> alive = alive_;
      try {
        options_.on_reachability(reachable, reachable ? std::string() : result.error().message);
      } catch (...) {
        std::fprintf(stderr, "agentmeshd: registry reachability callback threw\n");
      }
      if (alive.expired()) return;
    }
    Invoke(done, std::move(result));
  }

  static Result<json> BuildResult(const Request& req, CURLcode rc, long status) {
    if (rc != CURLE_OK) {
      if (req.too_large) return Fail(Code::kLimitExceeded, "registry response too large");
      std::string detail = req.error[0] != '\0' ? req.error : curl_easy_strerror(rc);
      return Fail(CodeForCurl(rc), "registry request failed: " + detail);
    }
    json parsed = req.response.empty() ? json::object() : json::parse(req.response, nullptr, false);
    if (status >= 200 && status <= 299) {
      if (parsed.is_discarded()) {
        return Fail(Code::kCorrupt, fmt::format("registry answered HTTP {} with non-JSON", status));
      }
      return parsed;
    }
    std::string message;
    if (!parsed.is_discarded() && parsed.is_object()) {
      auto it = parsed.find("error");
      if (it != parsed.end() && it->is_string()) message = it->get<std::string>();
    }
    if (message.empty()) message = fmt::format("HTTP {}", status);
    return Fail(CodeForStatus(status), std::move(message));
  }

  void Invoke(const JsonCallback& done, Result<json> result) {
    if (!done) return;
    try {
      done(std::move(result));
    } catch (const std::exception& e) {
      std::fprintf(stderr, "agentmeshd: registry callback threw: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "agentmeshd: registry callback threw\n");
    }
  }

  // Answers from the loop, never from inside the caller's call.
  void Defer(JsonCallback done, Result<json> result) {
    deferred_.emplace_back(std::move(done), std::move(result));
    if (!deferred_timer_.active()) deferred_timer_.Start(0, [this] { DrainDeferred(); });
  }

  void DrainDeferred() {
    std::weak_ptr<bool> alive = alive_;
    while (!deferred_.empty()) {
      auto [done, result] = std::move(deferred_.front());
      deferred_.pop_front();
      Invoke(done, std::move(result));
      if (alive.expired()) return;
    }
  }

  RegistryClientOptions options_;
  detail::CurlMulti multi_;
  detail::UvTimer deferred_timer_;
  std::unordered_map<CURL*, std::unique_ptr<Request>> requests_;
  std::deque<std::pair<JsonCallback, Result<json>>> deferred_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

RegistryClient::RegistryClient(uv_loop_t* loop, RegistryClientOptions options)
    : impl_(std::make_unique<Impl>(loop, std::move(options))) {}

RegistryClient::~RegistryClient() = default;

std::size_t RegistryClient::in_flight() const noexcept { return impl_->in_flight(); }

void RegistryClient::Request(std::string_view method, std::string_view path_and_query,
                             const nlohmann::json* body, const Ed25519KeyPair* signing,
                             JsonCallback done) {
  impl_->Start(method, path_and_query, body, signing, std::move(done));
}

void RegistryClient::Register(const Ed25519KeyPair& signing, const X25519PublicKey& exchange,
                              const nlohmann::json& extra, JsonCallback done) {
  nlohmann::json body = extra.is_null() ? nlohmann::json::object() : extra;
  if (body.is_object()) {
    body["amid"] = Amid::FromPublicKey(signing.public_key).str();
    body["signing_public_key"] = FormatEd25519Key(signing.public_key);
    body["exchange_public_key"] = FormatX25519Key(exchange);
  }
  impl_->Start("POST", "/v1/registry/register", &body, &signing, std::move(done));
}

void RegistryClient::UpdateCapabilities(const Ed25519KeyPair& signing,
                                        const std::vector<std::string>& capabilities,
                                        JsonCallback done) {
  nlohmann::json body = {{"amid", Amid::FromPublicKey(signing.public_key).str()},
                         {"capabilities", capabilities}};
  impl_->Start("POST", "/v1/registry/capabilities", &body, &signing, std::move(done));
}

void RegistryClient::SetStatus(const Ed25519KeyPair& signing, std::string_view status,
                               JsonCallback done) {
  nlohmann::json body = {{"amid", Amid::FromPublicKey(signing.public_key).str()},
                         {"status", std::string(status)}};
  impl_->Start("POST", "/v1/registry/status", &body, &signing, std::move(done));
}

void RegistryClient::Lookup(const Amid& amid, JsonCallback done) {
  impl_->Start("GET", "/v1/registry/lookup?amid=" + PercentEncode(amid.str()), nullptr, nullptr,
               std::move(done));
}

void RegistryClient::Search(const SearchQuery& query, JsonCallback done) {
  std::string path = "/v1/registry/search?capability=" + PercentEncode(query.capability);
  if (query.tier_min) path += "&tier_min=" + PercentEncode(*query.tier_min);
  if (query.reputation_min) path += fmt::format("&reputation_min={}", *query.reputation_min);
  if (query.status) path += "&status=" + PercentEncode(*query.status);
  path += fmt::format("&limit={}&offset={}", query.limit, query.offset);
  impl_->Start("GET", path, nullptr, nullptr, std::move(done));
}

void RegistryClient::UploadPrekeys(const Ed25519KeyPair& signing, nlohmann::json upload_body,
                                   JsonCallback done) {
  impl_->Start("POST", "/v1/registry/prekeys", &upload_body, &signing, std::move(done));
}

void RegistryClient::FetchBundle(const Amid& amid, std::function<void(Result<PrekeyBundle>)> done) {
  impl_->Start("GET", "/v1/registry/prekeys/" + PercentEncode(amid.str()), nullptr, nullptr,
               [done = std::move(done)](Result<nlohmann::json> r) {
                 if (!done) return;
                 if (!r) return done(std::unexpected(r.error()));
                 auto bundle = ParseBundleJson(*r);
                 if (!bundle) {
                   Error e = bundle.error();
                   e.message = "registry returned an invalid prekey bundle: " + e.message;
                   e.code = Code::kCorrupt;
                   return done(std::unexpected(std::move(e)));
                 }
                 done(std::move(*bundle));
               });
}

}  // namespace agentmesh::daemon
