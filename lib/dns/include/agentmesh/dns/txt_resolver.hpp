// DNS TXT lookups with c-ares, driven by a libuv loop: the registry's organisation verification
// (is "_agentmesh.<domain>" TXT "agentmesh-verify=<challenge>" published?).
//
// TxtResolver owns one c-ares channel configured with explicit resolver addresses (never
// /etc/resolv.conf's, so an operator chooses which resolver the registry trusts and tests point
// it at a DNS server on loopback). c-ares' sockets are watched with uv_poll handles and its
// retransmission timeouts with one uv_timer, so lookups never block the loop.
//
// Result of Resolve(name, callback), delivered exactly once per accepted call, on the loop thread,
// never from inside Resolve() itself:
//   ok                one string per TXT record of `name`, in the order of the answer; a record
//                     made of several character-strings is their concatenation (as SPF/DKIM
//                     define). Bytes are returned as received (TXT data is not necessarily UTF-8).
//   kNotFound         NXDOMAIN, or the name exists without TXT records (NODATA).
//   kTimeout          no answer within the retry schedule (see Options).
//   kUnavailable      the resolver refused, failed (SERVFAIL), answered garbage, could not be
//                     reached (e.g. ICMP port unreachable on loopback), or the query was cancelled
//                     by Cancel().
//   kInvalidArgument  a malformed name (c-ares rejected it).
//
// Lifetime: owned by the application; the loop must outlive it. The destructor cancels pending
// lookups WITHOUT calling their callbacks and closes its handles; run the loop afterwards
// (uv_run) so the close callbacks free them, after which uv_loop_close() returns 0. Callbacks may
// call Resolve(), Cancel() or destroy the resolver.
//
// Threading: create, use and destroy on the loop thread only.
#pragma once

#include <uv.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "agentmesh/core/error.hpp"

namespace agentmesh::dns {

struct TxtResolverOptions {
  // Resolver addresses "IPv4:port", "[IPv6]:port", or a bare address (port 53). At least one;
  // queries go to the first and fail over to the next.
  std::vector<std::string> servers;
  // Time to wait for the first answer from a server; c-ares doubles it on each later round.
  std::chrono::milliseconds timeout{2000};
  // Rounds over all servers before giving up with kTimeout. Total worst case with one server:
  // timeout * (2^tries - 1).
  int tries = 2;
};

class TxtResolver {
 public:
  using Callback = std::function<void(Result<std::vector<std::string>> records)>;

  // Errors: kInvalidArgument (no servers, an address that is not ip[:port]), kUnavailable when
  // c-ares cannot be initialised.
  static Result<std::unique_ptr<TxtResolver>> Create(uv_loop_t* loop, TxtResolverOptions options);

  ~TxtResolver();
  TxtResolver(const TxtResolver&) = delete;
  TxtResolver& operator=(const TxtResolver&) = delete;

  // Starts a TXT (class IN) lookup of `name` exactly as given (no search list, no dots rule).
  // `callback` is always called later on the loop, once.
  void Resolve(std::string_view name, Callback callback);
  // Ends every pending lookup now; each callback receives kUnavailable "cancelled".
  void Cancel();
  // Lookups started and not yet answered.
  std::size_t pending() const noexcept;

  class Impl;

 private:
  explicit TxtResolver(Impl* impl) noexcept : impl_(impl) {}
  Impl* impl_;  // frees itself once its handles are closed
};

// The TXT record string the registry's organisation DNS challenge expects, and its owner name:
// "_agentmesh.<domain>" and "agentmesh-verify=<challenge>".
std::string OrgChallengeName(std::string_view domain);
std::string OrgChallengeValue(std::string_view challenge);

}  // namespace agentmesh::dns
