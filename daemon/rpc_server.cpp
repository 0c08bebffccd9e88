#include "rpc_server.hpp"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>

#include "util.hpp"

namespace agentmesh::daemon {

namespace {
constexpr std::size_t kPauseReadingBytes = 8 << 20;
// Events queued for a connection and not yet written (handed to libuv or not yet) beyond which
// Notify refuses more: a subscriber that stopped reading must not grow the daemon without bound.
constexpr std::size_t kMaxUnreadEventBytes = 32 << 20;

// One read buffer for every connection: the read callback consumes it before returning (the
// bytes are appended to Conn::in), and callbacks run one at a time on the loop thread.
constexpr std::size_t kReadBufferBytes = 64 * 1024;

void AllocBuffer(uv_handle_t*, size_t, uv_buf_t* buf) {
  static char buffer[kReadBufferBytes];
  buf->base = buffer;
  buf->len = sizeof buffer;
}

struct WriteReq {
  uv_write_t req;
  std::string data;
  std::size_t event_bytes;  // of `data`, notifications
  ConnId conn;
  RpcServer* server;
};
}  // namespace

struct RpcServer::Conn {
  ConnId id = 0;
  RpcServer* server = nullptr;
  uv_pipe_t pipe{};
  std::string in;
  struct Slot {
    bool filled = false;
    std::string text;  // empty = nothing to write (a notification)
    nlohmann::json id;
  };
  std::deque<Slot> slots;
  std::uint64_t first_slot = 0;
  std::uint64_t next_slot = 0;
  std::string out;
  std::size_t writing = 0;
  bool closing = false;
  bool close_after_flush = false;
  bool paused = false;
  std::size_t out_event_bytes = 0;      // notifications in `out`
  std::size_t writing_event_bytes = 0;  // notifications in writes not yet completed
  pid_t pid = 0;                        // the peer's, from SO_PEERCRED
};

std::string DumpJson(const nlohmann::json& value) {
  return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

RpcError ToRpcError(const Error& error) {
  RpcError out;
  switch (error.code) {
    case Code::kInvalidArgument:
      out.code = -32602;
      break;
    case Code::kNotFound:
      out.code = -32001;
      break;
    case Code::kConflict:
      out.code = -32002;
      break;
    case Code::kAuthFailed:
      out.code = -32003;
      break;
    case Code::kReplay:
      out.code = -32004;
      break;
    case Code::kLimitExceeded:
      out.code = -32005;
      break;
    case Code::kPermissionDenied:
      out.code = -32006;
      break;
    case Code::kUnavailable:
      out.code = -32007;
      break;
    case Code::kTimeout:
      out.code = -32008;
      break;
    case Code::kCorrupt:
      out.code = -32009;
      break;
    case Code::kIo:
      out.code = -32010;
      break;
    case Code::kInternal:
      out.code = -32603;
      break;
  }
  out.name = std::string(CodeName(error.code));
  out.message = error.field.empty() ? error.message : error.field + ": " + error.message;
  if (!error.field.empty()) out.data["field"] = error.field;
  return out;
}

std::unexpected<RpcError> RpcFail(int code, std::string name, std::string message,
                                  nlohmann::json data) {
  return std::unexpected(RpcError{code, std::move(name), std::move(message), std::move(data)});
}

void Responder::RunHook() const {
  if (on_answer_ && *on_answer_) {
    auto fn = std::move(*on_answer_);
    *on_answer_ = nullptr;
    fn();
  }
}

void Responder::operator()(RpcResult result) const {
  RunHook();
  if (server_ == nullptr || notification_) return;
  server_->Complete(conn_, slot_, std::move(result));
}

void Responder::Text(std::string result_json) const {
  RunHook();
  if (server_ == nullptr || notification_) return;
  server_->CompleteText(conn_, slot_, std::move(result_json));
}

RpcServer::RpcServer(uv_loop_t* loop, Dispatch dispatch, std::function<void(ConnId)> on_close,
                     std::function<void()> on_output)
    : loop_(loop),
      dispatch_(std::move(dispatch)),
      on_close_(std::move(on_close)),
      on_output_(std::move(on_output)) {}

RpcServer::~RpcServer() { Close(); }

Result<void> RpcServer::Listen(const std::string& path) {
  listener_ = new uv_pipe_t;
  uv_pipe_init(loop_, listener_, 0);
  listener_->data = this;
  const mode_t old = ::umask(0177);
  int rc = uv_pipe_bind(listener_, path.c_str());
  ::umask(old);
  if (rc == 0) ::chmod(path.c_str(), 0600);
  if (rc == 0) {
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(listener_), 128, [](uv_stream_t* s, int status) {
      try {
        static_cast<RpcServer*>(s->data)->OnConnection(status);
      } catch (const std::exception& e) {
        LogError(fmt::format("rpc: accept: {}", e.what()));
      }
    });
  }
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(listener_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    listener_ = nullptr;
    return Fail(Code::kIo, fmt::format("cannot listen on {}: {}", path, uv_strerror(rc)));
  }
  path_ = path;
  return {};
}

void RpcServer::Close() {
  if (listener_ != nullptr) {
    uv_close(reinterpret_cast<uv_handle_t*>(listener_),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
    listener_ = nullptr;
  }
  while (!conns_.empty()) CloseConn(*conns_.begin()->second);
}

void RpcServer::OnConnection(int status) {
  if (status < 0) return;
  auto* conn = new Conn;
  conn->server = this;
  uv_pipe_init(loop_, &conn->pipe, 0);
  conn->pipe.data = conn;
  if (uv_accept(reinterpret_cast<uv_stream_t*>(listener_),
                reinterpret_cast<uv_stream_t*>(&conn->pipe)) != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&conn->pipe),
             [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
    return;
  }
  uv_os_fd_t fd;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(&conn->pipe), &fd) != 0 ||
      ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
      (cred.uid != ::getuid() && cred.uid != 0)) {
    LogWarn(fmt::format("rpc: refused a connection from uid {}", cred.uid));
    uv_close(reinterpret_cast<uv_handle_t*>(&conn->pipe),
             [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
    return;
  }
  conn->id = next_id_++;
  conn->pid = cred.pid;
  conns_[conn->id] = conn;
  StartReading(*conn);
}

void RpcServer::StartReading(Conn& conn) {
  uv_read_start(reinterpret_cast<uv_stream_t*>(&conn.pipe), AllocBuffer,
                [](uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
                  auto* c = static_cast<Conn*>(s->data);
                  try {
                    c->server->OnRead(*c, nread, buf);
                  } catch (const std::exception& e) {
                    LogError(fmt::format("rpc: {}", e.what()));
                    c->server->CloseConn(*c);
                  }
                });
}

void RpcServer::OnRead(Conn& conn, ssize_t nread, const uv_buf_t* buf) {
  if (nread < 0) {
    CloseConn(conn);
    return;
  }
  if (nread == 0 || conn.closing || conn.close_after_flush) return;  // 0: EAGAIN
  last_read_ns_ = uv_hrtime();
  ++reads_;
  if (busy_polling_) ++busy_poll_reads_;
  conn.in.append(buf->base, static_cast<std::size_t>(nread));
  std::size_t start = 0;
  while (!conn.closing && !conn.close_after_flush) {
    const std::size_t nl = conn.in.find('\n', start);
    if (nl == std::string::npos) break;
    std::string_view line(conn.in.data() + start, nl - start);
    start = nl + 1;
    if (line.size() > kMaxLineBytes) {
      RejectOversize(conn);
      return;
    }
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;
    HandleLine(conn, line);
  }
  if (conn.closing) return;
  conn.in.erase(0, start);
  if (conn.in.size() > kMaxLineBytes) RejectOversize(conn);
}

void RpcServer::RejectOversize(Conn& conn) {
  conn.in.clear();
  conn.in.shrink_to_fit();
  const std::uint64_t slot = conn.next_slot++;
  conn.slots.emplace_back();
  nlohmann::json err = {{"jsonrpc", "2.0"},
                        {"id", nullptr},
                        {"error",
                         {{"code", -32600},
                          {"message", "request line longer than 1 MiB"},
                          {"data", {{"code", "invalid_request"}}}}}};
  conn.close_after_flush = true;
  uv_read_stop(reinterpret_cast<uv_stream_t*>(&conn.pipe));
  Fill(conn, slot, DumpJson(err));
}

void RpcServer::HandleLine(Conn& conn, std::string_view line) {
  const std::uint64_t slot = conn.next_slot++;
  conn.slots.emplace_back();
  auto fail = [&](const nlohmann::json& id, int code, std::string_view name,
                  std::string_view message, nlohmann::json data = nlohmann::json::object()) {
    data["code"] = name;
    nlohmann::json err = {{"jsonrpc", "2.0"},
                          {"id", id},
                          {"error", {{"code", code}, {"message", message}, {"data", data}}}};
    Fill(conn, slot, DumpJson(err));
  };
  auto doc = nlohmann::json::parse(line, nullptr, false);
  if (doc.is_discarded()) {
    fail(nullptr, -32700, "parse_error", "the request is not valid JSON");
    return;
  }
  if (doc.is_array()) {
    fail(nullptr, -32600, "invalid_request", "batches are not supported");
    return;
  }
  if (!doc.is_object()) {
    fail(nullptr, -32600, "invalid_request", "a request must be a JSON object");
    return;
  }
  nlohmann::json id = nullptr;
  const auto id_it = doc.find("id");
  const bool has_id = id_it != doc.end();
  if (has_id) {
    id = std::move(*id_it);
    if (!id.is_null() && !id.is_string() && !id.is_number()) {
      fail(nullptr, -32600, "invalid_request", "id must be a string, a number or null");
      return;
    }
  }
  auto jr = doc.find("jsonrpc");
  if (jr == doc.end() || !jr->is_string() || *jr->get_ptr<const std::string*>() != "2.0") {
    fail(id, -32600, "invalid_request", "jsonrpc must be \"2.0\"");
    return;
  }
  auto method = doc.find("method");
  if (method == doc.end() || !method->is_string()) {
    fail(id, -32600, "invalid_request", "method must be a string");
    return;
  }
  nlohmann::json params = nlohmann::json::object();
  if (auto p = doc.find("params"); p != doc.end() && !p->is_null()) {
    if (!p->is_object()) {
      if (has_id) {
        fail(id, -32602, "invalid_argument", "params must be a JSON object", {{"field", "params"}});
      } else {
        Fill(conn, slot, {});
      }
      return;
    }
    params = std::move(*p);
  }
  const std::string name = std::move(*method->get_ptr<std::string*>());
  if (!has_id) {
    Fill(conn, slot, {});  // notifications take no place in the answer order
    dispatch_(Responder(this, conn.id, slot, true), name, params);
    return;
  }
  conn.slots[slot - conn.first_slot].id = std::move(id);
  const ConnId cid = conn.id;
  dispatch_(Responder(this, cid, slot, false), name, params);
}

RpcServer::Conn* RpcServer::OpenSlot(ConnId conn_id, std::uint64_t slot) {
  auto it = conns_.find(conn_id);
  if (it == conns_.end()) return nullptr;
  Conn& conn = *it->second;
  if (slot < conn.first_slot || slot >= conn.next_slot) return nullptr;
  return conn.slots[slot - conn.first_slot].filled ? nullptr : &conn;
}

void RpcServer::CompleteText(ConnId conn_id, std::uint64_t slot, std::string result_json) {
  Conn* open = OpenSlot(conn_id, slot);
  if (open == nullptr) return;
  Conn& conn = *open;
  auto& entry = conn.slots[slot - conn.first_slot];
  // The success answer written directly: the same bytes as dumping
  // {"id":…,"jsonrpc":"2.0","result":…} (nlohmann sorts members), without building that object.
  std::string text = R"({"id":)";
  text += DumpJson(entry.id);
  text += R"(,"jsonrpc":"2.0","result":)";
  text += result_json;
  text += '}';
  Fill(conn, slot, std::move(text));
}

void RpcServer::Complete(ConnId conn_id, std::uint64_t slot, RpcResult result) {
  if (result) return CompleteText(conn_id, slot, DumpJson(*result));
  Conn* open = OpenSlot(conn_id, slot);
  if (open == nullptr) return;
  Conn& conn = *open;
  auto& entry = conn.slots[slot - conn.first_slot];
  nlohmann::json out = {{"jsonrpc", "2.0"}, {"id", std::move(entry.id)}};
  {
    RpcError& e = result.error();
    nlohmann::json data = e.data.is_object() ? e.data : nlohmann::json::object();
    data["code"] = e.name;
    out["error"] = {{"code", e.code}, {"message", e.message}, {"data", std::move(data)}};
  }
  Fill(conn, slot, DumpJson(out));
}

void RpcServer::Fill(Conn& conn, std::uint64_t slot, std::string text) {
  auto& entry = conn.slots[slot - conn.first_slot];
  entry.filled = true;
  entry.text = std::move(text);
  bool wrote = false;
  while (!conn.slots.empty() && conn.slots.front().filled) {
    if (!conn.slots.front().text.empty()) {
      conn.out += conn.slots.front().text;
      conn.out += '\n';
      wrote = true;
    }
    conn.slots.pop_front();
    ++conn.first_slot;
  }
  if (wrote || conn.close_after_flush) MarkDirty(conn);
}

bool RpcServer::Notify(ConnId conn_id, std::string_view method, const nlohmann::json& params,
                       bool even_if_unread) {
  auto it = conns_.find(conn_id);
  if (it == conns_.end()) return true;
  Conn& conn = *it->second;
  if (!even_if_unread && conn.writing_event_bytes + conn.out_event_bytes > kMaxUnreadEventBytes) {
    return false;
  }
  nlohmann::json note = {{"jsonrpc", "2.0"}, {"method", method}, {"params", params}};
  const std::size_t before = conn.out.size();
  conn.out += DumpJson(note);
  conn.out += '\n';
  conn.out_event_bytes += conn.out.size() - before;
  MarkDirty(conn);
  return true;
}

std::size_t RpcServer::UnreadEventBytes(ConnId conn_id) const {
  auto it = conns_.find(conn_id);
  return it == conns_.end() ? 0 : it->second->writing_event_bytes + it->second->out_event_bytes;
}

pid_t RpcServer::PeerPid(ConnId conn_id) const {
  auto it = conns_.find(conn_id);
  return it == conns_.end() ? 0 : it->second->pid;
}

void RpcServer::MarkDirty(Conn& conn) {
  dirty_.insert(conn.id);
  if (on_output_) on_output_();
}

void RpcServer::Flush() {
  auto dirty = std::move(dirty_);
  dirty_.clear();
  for (ConnId id : dirty) {
    auto it = conns_.find(id);
    if (it != conns_.end()) WriteOut(*it->second);
  }
}

void RpcServer::WriteOut(Conn& conn) {
  if (conn.closing) return;
  if (!conn.out.empty()) {
    auto* req = new WriteReq;
    req->data = std::move(conn.out);
    conn.out.clear();
    req->event_bytes = conn.out_event_bytes;
    conn.writing_event_bytes += conn.out_event_bytes;
    conn.out_event_bytes = 0;
    req->conn = conn.id;
    req->server = this;
    conn.writing += req->data.size();
    uv_buf_t buf = uv_buf_init(req->data.data(), static_cast<unsigned>(req->data.size()));
    const int rc = uv_write(&req->req, reinterpret_cast<uv_stream_t*>(&conn.pipe), &buf, 1,
                            [](uv_write_t* w, int status) {
                              auto* r = reinterpret_cast<WriteReq*>(w);
                              auto* server = r->server;
                              const ConnId cid = r->conn;
                              const std::size_t size = r->data.size();
                              const std::size_t event_bytes = r->event_bytes;
                              delete r;
                              auto it = server->conns_.find(cid);
                              if (it == server->conns_.end()) return;
                              Conn& c = *it->second;
                              c.writing -= size;
                              c.writing_event_bytes -= event_bytes;
                              if (status < 0) {
                                server->CloseConn(c);
                                return;
                              }
                              if (c.close_after_flush && c.writing == 0 && c.out.empty()) {
                                server->CloseConn(c);
                                return;
                              }
                              if (c.paused && c.writing < kPauseReadingBytes / 2) {
                                c.paused = false;
                                server->StartReading(c);
                              }
                            });
    if (rc != 0) {
      conn.writing -= buf.len;
      conn.writing_event_bytes -= req->event_bytes;
      delete req;
      CloseConn(conn);
      return;
    }
    if (conn.writing > kPauseReadingBytes && !conn.paused) {
      conn.paused = true;
      uv_read_stop(reinterpret_cast<uv_stream_t*>(&conn.pipe));
    }
  } else if (conn.close_after_flush && conn.writing == 0) {
    CloseConn(conn);
  }
}

void RpcServer::CloseConn(Conn& conn) {
  if (conn.closing) return;
  conn.closing = true;
  const ConnId id = conn.id;
  conns_.erase(id);
  dirty_.erase(id);
  uv_close(reinterpret_cast<uv_handle_t*>(&conn.pipe),
           [](uv_handle_t* h) { delete static_cast<Conn*>(h->data); });
  if (on_close_) on_close_(id);
}

}  // namespace agentmesh::daemon
