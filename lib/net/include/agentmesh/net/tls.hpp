// TLS for the transport, I/O-free: OpenSSL driven through two memory BIOs (SSL_set_bio), so the
// socket stays a plain libuv TCP handle and ciphertext is written with the same coalesced uv_write
// as plaintext connections.
//
//   TlsContext   an SSL_CTX: server (certificate chain + private key, PEM files) or client
//                (certificate verification ON, trust anchors from a CA file or the system store,
//                TLS 1.2 minimum). Immutable after creation; share it between connections.
//   TlsSession   one connection's SSL object: ciphertext in → plaintext out, plaintext in →
//                ciphertext out. The caller moves bytes between it and the socket.
//
// Errors: kInvalidArgument (bad files/keys), kAuthFailed (peer certificate did not verify, with
// OpenSSL's reason, e.g. "certificate verify failed: self-signed certificate"), kIo (any other
// TLS failure: bad record, handshake alert, ...).
//
// Thread-safety: a TlsContext may be shared by connections on any thread once built; a
// TlsSession belongs to one connection on one thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "agentmesh/core/bytes.hpp"
#include "agentmesh/core/error.hpp"

struct ssl_ctx_st;
struct ssl_st;
struct bio_st;

namespace agentmesh::net {

class TlsContext {
 public:
  // Server context from PEM files: `cert_chain_path` holds the leaf certificate (optionally
  // followed by intermediates), `key_path` the matching private key (unencrypted).
  static Result<std::shared_ptr<TlsContext>> CreateServer(const std::string& cert_chain_path,
                                                          const std::string& key_path);

  struct ClientConfig {
    // PEM file of trust anchors. Empty → the system default store (/etc/ssl/certs).
    std::string ca_file;
    // Verify the server's certificate chain and name. Only tests against throw-away servers
    // should ever turn this off.
    bool verify_peer = true;
  };
  static Result<std::shared_ptr<TlsContext>> CreateClient(const ClientConfig& config);

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  bool is_server() const noexcept { return is_server_; }
  bool verify_peer() const noexcept { return verify_peer_; }
  ssl_ctx_st* native() const noexcept { return ctx_; }

 private:
  TlsContext(ssl_ctx_st* ctx, bool is_server, bool verify_peer) noexcept
      : ctx_(ctx), is_server_(is_server), verify_peer_(verify_peer) {}
  ssl_ctx_st* ctx_;
  bool is_server_;
  bool verify_peer_;
};

class TlsSession {
 public:
  // `peer_name` (client only) is the expected server name: a DNS name is checked against the
  // certificate (SSL_set1_host) and sent as SNI; an IP literal is checked against IP SANs.
  static Result<std::unique_ptr<TlsSession>> Create(std::shared_ptr<TlsContext> context,
                                                    std::string_view peer_name = {});
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Client: produces the ClientHello (collect it with TakeOutput).
  Result<void> StartHandshake();

  // Feeds bytes read from the socket. Decrypted application data is appended to `plain_out`.
  // Handshake messages, alerts and session tickets to send back accumulate for TakeOutput.
  Result<void> ReceiveCiphertext(ByteView ciphertext, Bytes& plain_out);

  // Encrypts application data (only after handshake_done()). The records accumulate for
  // TakeOutput.
  Result<void> SendPlaintext(ByteView plaintext);

  // Queues a close_notify alert (idempotent).
  void Shutdown() noexcept;

  // Moves all pending ciphertext to the end of `wire_out`. Returns the number of bytes moved.
  std::size_t TakeOutput(Bytes& wire_out);
  bool HasOutput() const noexcept;

  bool handshake_done() const noexcept { return handshake_done_; }
  // The peer sent close_notify.
  bool peer_closed() const noexcept { return peer_closed_; }

 private:
  TlsSession() = default;
  Result<void> DriveHandshake();

  std::shared_ptr<TlsContext> context_;
  ssl_st* ssl_ = nullptr;
  bio_st* rbio_ = nullptr;  // network → SSL (owned by ssl_)
  bio_st* wbio_ = nullptr;  // SSL → network (owned by ssl_)
  bool handshake_done_ = false;
  bool peer_closed_ = false;
  bool shutdown_sent_ = false;
};

}  // namespace agentmesh::net
