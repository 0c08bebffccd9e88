#include "agentmesh/net/tls.hpp"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <climits>

namespace agentmesh::net {

namespace {

// The most specific queued OpenSSL error, or `fallback`. Clears the queue.
std::string OpenSslError(std::string_view fallback) {
  std::string message;
  unsigned long code = 0;
  while ((code = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(code, buf, sizeof(buf));
    message = buf;  // keep the last (innermost) one
  }
  return message.empty() ? std::string(fallback) : message;
}

bool IsIpLiteral(std::string_view name) {
  std::string copy(name);
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(AF_INET, copy.c_str(), buf) == 1 || inet_pton(AF_INET6, copy.c_str(), buf) == 1;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// TlsContext

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

Result<std::shared_ptr<TlsContext>> TlsContext::CreateServer(const std::string& cert_chain_path,
                                                             const std::string& key_path) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == nullptr) return Fail(Code::kInternal, OpenSslError("SSL_CTX_new failed"));
  auto owner = std::shared_ptr<TlsContext>(new TlsContext(ctx, true, false));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_chain_path.c_str()) != 1) {
    return Fail(Code::kInvalidArgument,
                "cannot load certificate " + cert_chain_path + ": " + OpenSslError("bad PEM"),
                "tls_cert");
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, key_path.c_str(), SSL_FILETYPE_PEM) != 1) {
    return Fail(Code::kInvalidArgument,
                "cannot load private key " + key_path + ": " + OpenSslError("bad PEM"), "tls_key");
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return Fail(Code::kInvalidArgument, "private key does not match the certificate", "tls_key");
  }
  return owner;
}

Result<std::shared_ptr<TlsContext>> TlsContext::CreateClient(const ClientConfig& config) {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return Fail(Code::kInternal, OpenSslError("SSL_CTX_new failed"));
  auto owner = std::shared_ptr<TlsContext>(new TlsContext(ctx, false, config.verify_peer));
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  if (config.verify_peer) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    const int ok = config.ca_file.empty()
                       ? SSL_CTX_set_default_verify_paths(ctx)
                       : SSL_CTX_load_verify_locations(ctx, config.ca_file.c_str(), nullptr);
    if (ok != 1) {
      return Fail(Code::kInvalidArgument,
                  "cannot load CA certificates" +
                      (config.ca_file.empty() ? std::string() : " from " + config.ca_file) + ": " +
                      OpenSslError("bad PEM"),
                  "tls_ca");
    }
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  return owner;
}

// ---------------------------------------------------------------------------------------------
// TlsSession

TlsSession::~TlsSession() {
  if (ssl_ != nullptr) SSL_free(ssl_);  // frees both BIOs
}

Result<std::unique_ptr<TlsSession>> TlsSession::Create(std::shared_ptr<TlsContext> context,
                                                       std::string_view peer_name) {
  if (!context) return Fail(Code::kInvalidArgument, "no TLS context");
  ERR_clear_error();
  std::unique_ptr<TlsSession> session(new TlsSession());
  session->context_ = std::move(context);
  session->ssl_ = SSL_new(session->context_->native());
  if (session->ssl_ == nullptr) return Fail(Code::kInternal, OpenSslError("SSL_new failed"));
  BIO* rbio = BIO_new(BIO_s_mem());
  BIO* wbio = BIO_new(BIO_s_mem());
  if (rbio == nullptr || wbio == nullptr) {
    BIO_free(rbio);
    BIO_free(wbio);
    return Fail(Code::kInternal, "BIO_new failed");
  }
  BIO_set_mem_eof_return(rbio, -1);  // an empty read BIO means "retry", not EOF
  SSL_set_bio(session->ssl_, rbio, wbio);
  session->rbio_ = rbio;
  session->wbio_ = wbio;
  if (session->context_->is_server()) {
    SSL_set_accept_state(session->ssl_);
  } else {
    SSL_set_connect_state(session->ssl_);
    if (!peer_name.empty()) {
      const std::string name(peer_name);
      if (IsIpLiteral(name)) {
        if (session->context_->verify_peer() &&
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(session->ssl_), name.c_str()) != 1) {
          return Fail(Code::kInvalidArgument, "bad IP address for TLS verification");
        }
      } else {
        if (session->context_->verify_peer() && SSL_set1_host(session->ssl_, name.c_str()) != 1) {
          return Fail(Code::kInvalidArgument, "bad host name for TLS verification");
        }
        SSL_set_tlsext_host_name(session->ssl_, name.c_str());
      }
    }
  }
  return session;
}

Result<void> TlsSession::DriveHandshake() {
  ERR_clear_error();
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) {
    handshake_done_ = true;
    return {};
  }
  const int err = SSL_get_error(ssl_, r);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return {};
  const long verify = SSL_get_verify_result(ssl_);
  if (verify != X509_V_OK) {
    ERR_clear_error();
    return Fail(Code::kAuthFailed,
                std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify));
  }
  return Fail(Code::kIo, "TLS handshake failed: " + OpenSslError("protocol error"));
}

Result<void> TlsSession::StartHandshake() { return DriveHandshake(); }

Result<void> TlsSession::ReceiveCiphertext(ByteView ciphertext, Bytes& plain_out) {
  std::size_t offset = 0;
  while (offset < ciphertext.size()) {
    const std::size_t chunk = std::min<std::size_t>(ciphertext.size() - offset, INT_MAX);
    const int written = BIO_write(rbio_, ciphertext.data() + offset, static_cast<int>(chunk));
    if (written <= 0) return Fail(Code::kInternal, "BIO_write failed");
    offset += static_cast<std::size_t>(written);
  }
  if (!handshake_done_) {
    auto r = DriveHandshake();
    if (!r) return r;
    if (!handshake_done_) return {};
  }
  std::uint8_t buf[16 * 1024];  // one TLS record at most
  for (;;) {
    ERR_clear_error();
    const int n = SSL_read(ssl_, buf, static_cast<int>(sizeof(buf)));
    if (n > 0) {
      plain_out.insert(plain_out.end(), buf, buf + n);
      continue;
    }
    const int err = SSL_get_error(ssl_, n);
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return {};
    if (err == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      return {};
    }
    return Fail(Code::kIo, "TLS read failed: " + OpenSslError("protocol error"));
  }
}

Result<void> TlsSession::SendPlaintext(ByteView plaintext) {
  if (!handshake_done_) return Fail(Code::kInternal, "TLS write before the handshake finished");
  std::size_t offset = 0;
  while (offset < plaintext.size()) {
    const std::size_t chunk = std::min<std::size_t>(plaintext.size() - offset, 1 << 30);
    ERR_clear_error();
    const int n = SSL_write(ssl_, plaintext.data() + offset, static_cast<int>(chunk));
    if (n <= 0) return Fail(Code::kIo, "TLS write failed: " + OpenSslError("protocol error"));
    offset += static_cast<std::size_t>(n);
  }
  return {};
}

void TlsSession::Shutdown() noexcept {
  if (shutdown_sent_ || !handshake_done_) return;
  shutdown_sent_ = true;
  ERR_clear_error();
  (void)SSL_shutdown(ssl_);
  ERR_clear_error();
}

bool TlsSession::HasOutput() const noexcept { return BIO_ctrl_pending(wbio_) > 0; }

std::size_t TlsSession::TakeOutput(Bytes& wire_out) {
  std::size_t moved = 0;
  for (;;) {
    const std::size_t pending = BIO_ctrl_pending(wbio_);
    if (pending == 0) return moved;
    const std::size_t chunk = std::min<std::size_t>(pending, INT_MAX);
    const std::size_t old = wire_out.size();
    wire_out.resize(old + chunk);
    const int n = BIO_read(wbio_, wire_out.data() + old, static_cast<int>(chunk));
    wire_out.resize(old + static_cast<std::size_t>(n > 0 ? n : 0));
    if (n <= 0) return moved;
    moved += static_cast<std::size_t>(n);
  }
}

}  // namespace agentmesh::net
