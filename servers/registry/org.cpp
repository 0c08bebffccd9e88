#include "org.hpp"

#include <uv.h>

#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "agentmesh/core/crypto.hpp"
#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/rng.hpp"
#include "agentmesh/dns/txt_resolver.hpp"

namespace agentmesh::registry {

Result<std::string> NormalizeDomain(std::string_view text) {
  const auto bad = [] {
    return Fail(Code::kInvalidArgument,
                "must be a DNS domain of at least two labels of letters, digits and '-'", "domain");
  };
  if (text.empty() || text.size() > 253) return bad();
  std::string domain(text);
  for (char& c : domain) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  std::size_t labels = 0;
  std::size_t start = 0;
  while (true) {
    std::size_t end = domain.find('.', start);
    if (end == std::string::npos) end = domain.size();
    const std::string_view label = std::string_view(domain).substr(start, end - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
      return bad();
    }
    for (char c : label) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return bad();
    }
    ++labels;
    if (end == domain.size()) break;
    start = end + 1;
  }
  if (labels < 2) return bad();
  return domain;
}

std::vector<std::string> ResolverList(std::string_view setting, const std::string& resolv_conf) {
  std::vector<std::string> out;
  if (!setting.empty()) {
    while (true) {
      const auto comma = setting.find(',');
      if (!setting.substr(0, comma).empty()) out.emplace_back(setting.substr(0, comma));
      if (comma == std::string_view::npos) break;
      setting = setting.substr(comma + 1);
    }
    return out;
  }
  std::ifstream in(resolv_conf);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream words(line);
    std::string keyword;
    std::string address;
    if (!(words >> keyword >> address) || keyword != "nameserver") continue;
    if (address.find('%') != std::string::npos) continue;  // fe80::1%eth0
    out.push_back(address);
  }
  return out;
}

Result<std::vector<std::string>> LookupTxt(const std::vector<std::string>& servers,
                                           std::string_view name,
                                           std::chrono::milliseconds timeout) {
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return Fail(Code::kUnavailable, "cannot create an event loop");
  std::optional<Result<std::vector<std::string>>> out;
  bool guard_fired = false;
  uv_timer_t guard;
  uv_timer_init(&loop, &guard);
  guard.data = &guard_fired;
  {
    dns::TxtResolverOptions options;
    options.servers = servers;
    options.timeout = timeout;
    options.tries = 2;
    auto resolver = dns::TxtResolver::Create(&loop, std::move(options));
    if (!resolver) {
      // A resolver address the operator configured that c-ares refuses: not the client's fault.
      out = Fail(Code::kUnavailable, "unusable dns_resolver setting: " + resolver.error().message);
    } else {
      (*resolver)->Resolve(
          name, [&out](Result<std::vector<std::string>> records) { out = std::move(records); });
      // c-ares gives up after timeout + 2 x timeout; the guard only bounds a misbehaving
      // resolver.
      const auto budget = static_cast<std::uint64_t>(timeout.count()) * 4 + 1000;
      uv_timer_start(
          &guard, [](uv_timer_t* t) { *static_cast<bool*>(t->data) = true; }, budget, 0);
      while (!out && !guard_fired) uv_run(&loop, UV_RUN_ONCE);
      if (!out) out = Fail(Code::kTimeout, "DNS lookup did not finish");
    }
    // The resolver's destructor closes its handles; the loop below lets them finish.
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&guard), nullptr);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  return std::move(*out);
}

Ed25519KeyPair DeriveOrganizationKey(const Ed25519KeyPair& root, std::string_view organization_id) {
  static constexpr std::string_view kSalt = "agentmesh/1 organization key";
  const Ed25519Seed root_seed = root.Seed();
  Ed25519Seed seed;
  // Cannot fail: 32 bytes of output.
  (void)Hkdf(AsBytes(kSalt), root_seed.Expose(), AsBytes(organization_id), seed.ExposeMutable());
  return Ed25519KeyPair::FromSeed(seed);
}

std::string NewCertificateSerial() {
  SystemRng rng;
  return HexEncode(rng.Array<16>());
}

}  // namespace agentmesh::registry
