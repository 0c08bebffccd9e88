// amesh-registry: the HTTP front end (libuv loop) over a RegistryStore.
//
// Startup order: Create (resolve the state directory, open the store, load or create the root
// key, prepare the server) → Listen (the port is bound; data routes answer 503 "starting") →
// StartMigrations (schema migrations on a worker thread; when they finish, data routes open and
// `on_ready` runs). /health, /v1/health (503 while starting), /metrics and the root key answer
// throughout.
//
// Request flow: the loop thread matches the route, answers 404/405/503/429 and the static
// GET /health itself (so a liveness probe never waits behind database work), and gathers the
// rest for the end of the loop turn. Then it hands them to libuv workers (uv_queue_work) in
// groups (api.hpp, Work): reads a few per group; writes in one group whose store calls share a
// commit (RegistryStore::RunBatch), one group at a time on a single-writer backend; network-bound
// handlers alone. A group's responses are sent from the loop thread when the whole group is done,
// so no write is acknowledged before its commit.
//
// Ownership and threading: one Registry per process and loop; every method runs on the loop
// thread. Stop() lets requests in flight finish; the loop then ends by itself.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "agentmesh/core/error.hpp"
#include "config.hpp"

namespace agentmesh::registry {

class Registry {
 public:
  static Result<std::unique_ptr<Registry>> Create(uv_loop_t* loop, const RegistryConfig& config);
  ~Registry();
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  Result<void> Listen();
  std::uint16_t port() const noexcept;

  // Runs the migrations on a worker thread; `on_done` runs on the loop thread afterwards with
  // their outcome (data routes are open when it is OK).
  void StartMigrations(std::function<void(Result<void>)> on_done);

  void Stop();
  // Applies the reloadable keys of `config` (the caller parsed and validated it).
  void Reload(const RegistryConfig& config);

  class Impl;

 private:
  explicit Registry(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace agentmesh::registry
