// Test support: a blocking WebSocket client over agentmesh_net, for integration tests.
//
// Each client owns a private uv loop that runs only while the test waits on it, so several
// clients in one test do not interfere. Received text frames are parsed as JSON and queued.
#pragma once

#include <uv.h>

#include <chrono>
#include <deque>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "agentmesh/core/identity.hpp"
#include "agentmesh/net/client.hpp"

namespace agentmesh::testing {

class WsTestClient {
 public:
  explicit WsTestClient(net::ClientOptions options = {});
  ~WsTestClient();
  WsTestClient(const WsTestClient&) = delete;
  WsTestClient& operator=(const WsTestClient&) = delete;

  // Connects and waits for the upgrade. False on failure/timeout (error() says why).
  bool Connect(const std::string& url, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Connect + signed CONNECT frame + wait for `connected`; returns the connected frame.
  std::optional<nlohmann::json> ConnectAs(const std::string& url, const Ed25519KeyPair& identity);

  bool Send(std::string_view text);
  bool Send(const std::string& text) { return Send(std::string_view(text)); }
  bool Send(const char* text) { return Send(std::string_view(text)); }
  bool Send(const nlohmann::json& frame) { return Send(std::string_view(frame.dump())); }
  // Next received frame, or nullopt after `timeout`.
  std::optional<nlohmann::json> Recv(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Next frame whose "type" equals `type` (others are dropped), or nullopt.
  std::optional<nlohmann::json> RecvType(
      const std::string& type, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Runs the loop for `duration`, collecting frames.
  void Pump(std::chrono::milliseconds duration);
  // Waits until the server closed the connection; returns the close code or nullopt.
  std::optional<std::uint16_t> WaitClosed(
      std::chrono::milliseconds timeout = std::chrono::seconds(5));
  void Close();

  bool open() const noexcept { return open_; }
  const std::string& error() const noexcept { return error_; }
  std::size_t pending() const noexcept { return frames_.size(); }

 private:
  bool RunUntil(const std::function<bool()>& done, std::chrono::milliseconds timeout);

  uv_loop_t loop_{};
  std::unique_ptr<net::WsClient> client_;
  std::deque<nlohmann::json> frames_;
  bool open_ = false;
  bool closed_ = false;
  std::optional<std::uint16_t> close_code_;
  std::string error_;
};

}  // namespace agentmesh::testing
