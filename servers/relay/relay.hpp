// The relay: authenticated WebSocket routing of opaque ciphertext with durable store-and-forward
// (docs/PROTOCOL.md §6).
//
// Ownership and threading: one Relay per process, on one libuv loop; every method and callback
// runs on that loop thread. Connections are referred to by ConnId and agents by AMID text, never
// by pointer across callbacks.
//
// Delivery contract: a message is acknowledged to its sender as "delivered" once it is written to
// the recipient's live connection, or as "queued" once it is committed to the SQLite store. It
// is held (in memory while live, on disk once queued) until the recipient acks it; if the
// recipient's connection ends first, live messages are committed to the store and pushed again
// on the next connection. A full queue refuses the send (QUEUE_FULL); nothing is dropped silently.
#pragma once

#include <uv.h>

#include <cstdint>
#include <memory>
#include <string>

#include "agentmesh/core/error.hpp"
#include "config.hpp"

namespace agentmesh::relay {

class Relay {
 public:
  // Opens the store and prepares the server; does not listen yet.
  static Result<std::unique_ptr<Relay>> Create(uv_loop_t* loop, const RelayConfig& config);
  ~Relay();
  Relay(const Relay&) = delete;
  Relay& operator=(const Relay&) = delete;

  Result<void> Listen();
  std::uint16_t port() const noexcept;

  // Stop accepting, close every connection cleanly (live unacked messages are committed to the
  // store first), then let the loop end.
  void Stop();
  // Applies the reloadable keys of `config` (the caller parsed and validated it).
  void Reload(const RelayConfig& config);

  class Impl;

 private:
  explicit Relay(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Logging to stderr: "2026-11-23T10:00:00.123Z relay INFO message". Thread: loop thread.
enum class LogLevel { kDebug, kInfo, kWarn, kError };
void SetLogLevel(LogLevel level);
LogLevel ParseLogLevel(const std::string& name);
void Log(LogLevel level, std::string_view message);

}  // namespace agentmesh::relay
