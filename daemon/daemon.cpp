#include "daemon.hpp"

#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <fmt/format.h>

#include "agentmesh/core/encoding.hpp"
#include "util.hpp"

namespace agentmesh::daemon {

namespace {
constexpr std::string_view kSealCheckAd = "agentmeshd:seal_check";
constexpr std::string_view kIdentityAd = "agentmeshd:identity";
constexpr std::uint32_t kOneTimePrekeyTarget = 100;
constexpr std::uint32_t kOneTimePrekeyLow = 20;
constexpr UnixNanos kSignedPrekeyLifetime = 7LL * 86400 * kNanosPerSecond;
constexpr UnixNanos kRetiredPrekeyGrace = 86400LL * kNanosPerSecond;

std::string SpkAd(std::uint32_t id) { return fmt::format("agentmeshd:spk:{}", id); }
std::string OpkAd(std::uint32_t id) { return fmt::format("agentmeshd:opk:{}", id); }
}  // namespace

// ---- Timers -----------------------------------------------------------------------------------

struct Timers::Entry {
  uv_timer_t handle;
  Timers* owner;
  std::uint64_t id;
  std::function<void()> fn;
};

Timers::~Timers() {
  for (auto& [id, e] : entries_) {
    e->owner = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&e->handle),
             [](uv_handle_t* h) { delete static_cast<Entry*>(h->data); });
  }
}

std::uint64_t Timers::Start(std::uint64_t ms, std::function<void()> fn) {
  auto* e = new Entry{{}, this, next_++, std::move(fn)};
  uv_timer_init(loop_, &e->handle);
  e->handle.data = e;
  entries_[e->id] = e;
  uv_timer_start(
      &e->handle,
      [](uv_timer_t* t) {
        auto* entry = static_cast<Entry*>(t->data);
        auto callback = std::move(entry->fn);
        if (entry->owner != nullptr) entry->owner->entries_.erase(entry->id);
        uv_close(reinterpret_cast<uv_handle_t*>(t),
                 [](uv_handle_t* h) { delete static_cast<Entry*>(h->data); });
        try {
          if (callback) callback();
        } catch (const std::exception& ex) {
          LogError(fmt::format("timer: {}", ex.what()));
        }
      },
      ms, 0);
  return e->id;
}

void Timers::Cancel(std::uint64_t id) {
  auto it = entries_.find(id);
  if (it == entries_.end()) return;
  Entry* e = it->second;
  entries_.erase(it);
  uv_timer_stop(&e->handle);
  uv_close(reinterpret_cast<uv_handle_t*>(&e->handle),
           [](uv_handle_t* h) { delete static_cast<Entry*>(h->data); });
}

void Timers::CancelAll() {
  std::vector<std::uint64_t> ids;
  for (const auto& [id, e] : entries_) ids.push_back(id);
  for (auto id : ids) Cancel(id);
}

// ---- Child processes ----------------------------------------------------------------------------

struct Daemon::Child {
  uv_process_t process{};
  Daemon* daemon = nullptr;
  std::function<void(std::int64_t, int)> on_exit;
};

Result<int> Daemon::SpawnChild(const std::vector<std::string>& argv,
                               std::function<void(std::int64_t, int)> on_exit) {
  if (argv.empty()) return Fail(Code::kInvalidArgument, "empty command");
  if (stopping_) return Fail(Code::kUnavailable, "the daemon is stopping");
  auto* child = new Child;
  child->daemon = this;
  child->on_exit = std::move(on_exit);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  for (auto& io : stdio) io.flags = UV_IGNORE;
  uv_process_options_t opts{};
  opts.file = args[0];
  opts.args = args.data();
  opts.stdio_count = 3;
  opts.stdio = stdio;
  opts.exit_cb = [](uv_process_t* proc, std::int64_t status, int signal) {
    auto* c = static_cast<Child*>(proc->data);
    c->daemon->children_.erase(c);
    auto fn = std::move(c->on_exit);
    uv_close(reinterpret_cast<uv_handle_t*>(proc),
             [](uv_handle_t* h) { delete static_cast<Child*>(h->data); });
    try {
      if (fn) fn(status, signal);
    } catch (const std::exception& e) {
      LogError(fmt::format("child exit: {}", e.what()));
    }
  };
  child->process.data = child;
  const int rc = uv_spawn(loop_, &child->process, &opts);
  if (rc != 0) {
    uv_close(reinterpret_cast<uv_handle_t*>(&child->process),
             [](uv_handle_t* h) { delete static_cast<Child*>(h->data); });
    return Fail(Code::kIo, uv_strerror(rc));
  }
  children_.insert(child);
  return child->process.pid;
}

// ---- Construction and lifecycle ---------------------------------------------------------------

Daemon::Daemon(uv_loop_t* loop, DaemonOptions options)
    : loop_(loop), options_(std::move(options)), timers_(loop) {}

Daemon::~Daemon() {
  FlushAudit();
  if (audit_fd_ >= 0) ::close(audit_fd_);
}

Result<std::unique_ptr<Daemon>> Daemon::Create(uv_loop_t* loop, DaemonOptions options) {
  std::unique_ptr<Daemon> d(new Daemon(loop, std::move(options)));
  if (auto r = d->OpenState(); !r) return std::unexpected(r.error());
  return d;
}

Result<void> Daemon::OpenState() {
  const auto& home = options_.home;
  if (auto r = MakeDirs(home / "logs"); !r) return r;
  ::chmod(home.c_str(), 0700);
  if (options_.config_path.empty()) options_.config_path = home / "config.json";
  policy_path_ = home / "policy.json";

  if (auto text = ReadFile(options_.config_path); text) {
    if (auto r = ApplyConfigText(*text, config_); !r) {
      Error e = r.error();
      e.message = options_.config_path.string() + ": " + e.message;
      return std::unexpected(e);
    }
  } else if (text.error().code != Code::kNotFound) {
    return std::unexpected(text.error());
  }
  if (options_.log_level) config_.log_level = *options_.log_level;
  if (auto level = ParseLogLevel(config_.log_level)) SetLogLevel(*level);
  if (auto r = LoadPolicy(); !r) {
    Error e = r.error();
    e.message = policy_path_.string() + ": " + e.message;
    return std::unexpected(e);
  }

  auto store = Store::Open((home / "agentmesh.db").string());
  if (!store) return std::unexpected(store.error());
  store_.emplace(std::move(*store));
  if (auto r = LoadSealKey(); !r) return r;
  if (auto r = LoadIdentity(); !r) return r;

  audit_fd_ = ::open((home / "logs" / "audit.jsonl").c_str(),
                     O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
  if (audit_fd_ < 0) {
    return Fail(Code::kIo, fmt::format("cannot open the audit log: {}", std::strerror(errno)));
  }
  if (auto paused = store_->GetMeta("paused"); paused && *paused) {
    paused_ = !(*paused)->empty() && (**paused)[0] == '1';
  }
  if (auto reg = store_->GetMeta("registered"); reg && *reg) registered_ = true;

  auto live = store_->LoadLiveSessions();
  if (!live) return std::unexpected(live.error());
  for (auto& row : *live) {
    auto session = std::make_unique<LiveSession>();
    if (!row.ratchet.empty()) {
      auto plain = OpenBlob("agentmeshd:ratchet:" + row.session_id, row.ratchet);
      if (!plain) {
        LogError(fmt::format("session {}: sealed ratchet state does not open; marking it killed",
                             row.session_id));
        row.state = "killed";
        row.close_reason = "corrupt_state";
        row.ratchet.clear();
        (void)store_->UpsertSession(row);
        continue;
      }
      auto ratchet = RatchetSession::Deserialize(plain->Expose());
      if (!ratchet) return std::unexpected(ratchet.error());
      session->ratchet.emplace(std::move(*ratchet));
    }
    if (auto mpm = store_->GetMeta("session_mpm:" + row.session_id); mpm && *mpm) {
      session->messages_per_minute = static_cast<std::uint32_t>(
          std::strtoul(std::string((*mpm)->begin(), (*mpm)->end()).c_str(), nullptr, 10));
    }
    session->row = std::move(row);
    sessions_[session->row.session_id] = std::move(session);
  }
  return {};
}

Result<void> Daemon::LoadSealKey() {
  const char* pass = std::getenv("AGENTMESH_PASSPHRASE");
  const auto salt_path = options_.home / "master.salt";
  const auto key_path = options_.home / "master.key";
  SystemRng rng;
  if (pass != nullptr && *pass != '\0') {
    passphrase_mode_ = true;
    Bytes salt;
    if (auto text = ReadFile(salt_path); text) {
      salt.assign(text->begin(), text->end());
    } else {
      auto fresh = rng.Array<kSealSaltSize>();
      salt.assign(fresh.begin(), fresh.end());
      if (auto r = WriteFileAtomic(
              salt_path, std::string_view(reinterpret_cast<const char*>(salt.data()), salt.size()));
          !r) {
        return r;
      }
    }
    auto key = DeriveSealKey(pass, salt, Argon2Params::Interactive());
    if (!key) return std::unexpected(key.error());
    seal_key_.emplace(std::move(*key));
  } else if (auto text = ReadFile(key_path); text) {
    struct stat st {};
    if (::stat(key_path.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
      LogWarn(fmt::format("{} is readable by others; it should be mode 0600", key_path.string()));
    }
    SealKey key;
    if (!SealKey::FromBytes(AsBytes(*text), key)) {
      return Fail(Code::kCorrupt, fmt::format("{} must hold exactly 32 bytes", key_path.string()));
    }
    seal_key_.emplace(std::move(key));
  }
  auto check = store_->GetMeta("seal_check");
  if (!check) return std::unexpected(check.error());
  if (*check) {
    if (!seal_key_) {
      return Fail(Code::kPermissionDenied,
                  "the state is sealed: set AGENTMESH_PASSPHRASE or restore master.key");
    }
    if (auto opened = Open(*seal_key_, **check, AsBytes(kSealCheckAd)); !opened) {
      return Fail(Code::kAuthFailed, passphrase_mode_
                                         ? "AGENTMESH_PASSPHRASE does not open the sealed state"
                                         : "master.key does not open the sealed state");
    }
  }
  return {};
}

Result<void> Daemon::LoadIdentity() {
  auto row = store_->LoadIdentity();
  if (!row) return std::unexpected(row.error());
  if (!*row) return {};
  auto plain = OpenBlob(kIdentityAd, (*row)->sealed);
  if (!plain) return std::unexpected(plain.error());
  if (plain->size() != 64) return Fail(Code::kCorrupt, "sealed identity has the wrong size");
  Ed25519Seed seed;
  Ed25519Seed::FromBytes(plain->Expose().subspan(0, 32), seed);
  X25519SecretKey xs;
  X25519SecretKey::FromBytes(plain->Expose().subspan(32, 32), xs);
  auto signing = Ed25519KeyPair::FromSeed(seed);
  identity_.emplace(Identity{std::move(signing), X25519KeyPair::FromSecret(std::move(xs)),
                             Amid::FromPublicKey(Ed25519KeyPair::FromSeed(seed).public_key)});
  auto spks = store_->LoadSignedPrekeys();
  if (!spks) return std::unexpected(spks.error());
  signed_prekeys_.clear();
  retired_prekeys_.clear();
  for (auto& r : *spks) {
    auto secret = OpenBlob(SpkAd(r.id), r.sealed);
    if (!secret) return std::unexpected(secret.error());
    X25519SecretKey sk;
    X25519SecretKey::FromBytes(secret->Expose(), sk);
    auto sig = ParseSignature(r.signature);
    if (!sig) return std::unexpected(sig.error());
    signed_prekeys_.push_back(
        SignedPrekey{r.id, X25519KeyPair::FromSecret(std::move(sk)), *sig, r.created_at});
    if (r.retired_at) retired_prekeys_[r.id] = *r.retired_at;
  }
  return {};
}

Result<void> Daemon::Start() {
  started_at_ = Now();
  check_ = new uv_check_t;
  uv_check_init(loop_, check_);
  check_->data = this;
  uv_check_start(check_, [](uv_check_t* c) {
    try {
      static_cast<Daemon*>(c->data)->OnCheck();
    } catch (const std::exception& e) {
      LogError(fmt::format("commit: {}", e.what()));
      ::_exit(70);
    }
  });
  idle_ = new uv_idle_t;
  uv_idle_init(loop_, idle_);
  idle_->data = this;
  housekeeping_ = new uv_timer_t;
  uv_timer_init(loop_, housekeeping_);
  housekeeping_->data = this;
  uv_timer_start(
      housekeeping_,
      [](uv_timer_t* t) {
        try {
          static_cast<Daemon*>(t->data)->Housekeeping();
        } catch (const std::exception& e) {
          LogError(fmt::format("housekeeping: {}", e.what()));
        }
      },
      1000, 1000);

  rpc_ = std::make_unique<RpcServer>(
      loop_,
      [this](Responder reply, const std::string& method, const nlohmann::json& params) {
        try {
          Dispatch(reply, method, params);
        } catch (const std::exception& e) {
          LogError(fmt::format("rpc {}: {}", method, e.what()));
          reply(RpcFail(MakeError(Code::kInternal, "internal error: see the daemon log", {})));
        }
      },
      [this](ConnId conn) {
        for (auto it = subscriptions_.begin(); it != subscriptions_.end();) {
          it = it->second.conn == conn ? subscriptions_.erase(it) : std::next(it);
        }
        // Messages leased to that connection are free again for other `recv` calls.
        if (std::erase_if(leases_, [conn](const auto& l) { return l.second.owner == conn; }) > 0) {
          ServeWaiters();
        }
        for (auto it = recv_waits_.begin(); it != recv_waits_.end();) {
          if (it->second.reply.conn() == conn) {
            timers_.Cancel(it->second.timer);
            it = recv_waits_.erase(it);
          } else {
            ++it;
          }
        }
      },
      [this] { WakeCheck(); });
  if (auto r = rpc_->Listen(options_.socket_path); !r) return r;
  // Rotate a signed prekey that aged past 7 days (and forget retired ones past 24 h) before any
  // relay message is handled; the upload follows at the first housekeeping tick.
  if (identity_) {
    if (auto r = EnsurePrekeys(); !r) LogWarn("prekeys: " + r.error().ToString());
  }
  ApplyNetworkConfig();
  LogInfo(fmt::format("started: home {}, socket {}, {}", options_.home.string(),
                      options_.socket_path,
                      identity_ ? "agent " + identity_->amid.str() : "not initialized"));
  return {};
}

void Daemon::Stop() {
  if (stopping_) return;
  stopping_ = true;
  LogInfo("stopping");
  SdNotify("STOPPING=1");
  OnCheck();
  if (rpc_) rpc_->Close();
  if (registered_ && identity_ && registry_ && check_ != nullptr) {
    // Tell the registry we are going away; stop when it answered, or after 2 s regardless.
    auto done = std::make_shared<bool>(false);
    auto finish = [this, done] {
      if (*done) return;
      *done = true;
      FinishStop();
    };
    const std::uint64_t timer = timers_.Start(2000, finish);
    ReportPresence("offline", [this, finish, timer] {
      timers_.Cancel(timer);
      finish();
    });
    return;
  }
  FinishStop();
}

void Daemon::ReportPresence(std::string status, std::function<void()> done) {
  if (!registered_ || !identity_ || !registry_) {
    if (done) done();
    return;
  }
  registry_->SetStatus(identity_->signing, status,
                       [this, status, done = std::move(done)](Result<nlohmann::json> r) {
                         if (r) {
                           presence_ = status;
                           LogInfo("registry presence: " + status);
                         } else {
                           LogWarn("registry presence " + status + ": " + r.error().ToString());
                         }
                         if (done) done();
                       });
}

void Daemon::FinishStop() {
  if (stopped_) return;
  stopped_ = true;
  if (relay_) relay_->Stop();
  for (auto& r : retired_relays_) r->Stop();
  auto close_handle = [](uv_handle_t* h, auto deleter) { uv_close(h, deleter); };
  if (check_ != nullptr) {
    close_handle(reinterpret_cast<uv_handle_t*>(check_),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_check_t*>(h); });
    check_ = nullptr;
  }
  if (idle_ != nullptr) {
    close_handle(reinterpret_cast<uv_handle_t*>(idle_),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_idle_t*>(h); });
    idle_ = nullptr;
  }
  if (housekeeping_ != nullptr) {
    close_handle(reinterpret_cast<uv_handle_t*>(housekeeping_),
                 [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    housekeeping_ = nullptr;
  }
  // The network clients close their handles on destruction; the loop frees them afterwards.
  relay_.reset();
  retired_relays_.clear();
  registry_.reset();
  retired_registries_.clear();
  // Children still running (a slow emergency_stop command) keep running, unwatched: their exit
  // callbacks would answer through an RpcServer that is gone.
  for (Child* c : children_) {
    c->on_exit = nullptr;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->process),
             [](uv_handle_t* h) { delete static_cast<Child*>(h->data); });
  }
  children_.clear();
  timers_.CancelAll();  // retries, waits and delivery timeouts: nothing is waiting any more
  knock_waits_.clear();
  recv_waits_.clear();
  response_waits_.clear();
  rpc_.reset();
}

void Daemon::Reload() {
  DaemonConfig next;
  if (auto text = ReadFile(options_.config_path); text) {
    if (auto r = ApplyConfigText(*text, next); !r) {
      LogError("reload: keeping the running configuration: " + r.error().ToString());
      return;
    }
  } else if (text.error().code != Code::kNotFound) {
    LogError("reload: " + text.error().ToString());
    return;
  }
  if (options_.log_level) next.log_level = *options_.log_level;
  config_ = std::move(next);
  if (auto level = ParseLogLevel(config_.log_level)) SetLogLevel(*level);
  if (auto r = LoadPolicy(); !r) {
    LogError("reload: keeping the running policy: " + r.error().ToString());
  } else {
    Audit("policy.reloaded", {{"path", policy_path_.string()}, {"trigger", "sighup"}});
  }
  ApplyNetworkConfig();
  LogInfo("configuration and policy reloaded");
}

// ---- Batching ---------------------------------------------------------------------------------

void Daemon::Batch() {
  if (auto r = store_->Begin(); !r) {
    LogError("storage: cannot begin a transaction: " + r.error().ToString());
    ::_exit(70);
  }
  WakeCheck();
}

void Daemon::AfterCommit(std::function<void()> fn) {
  after_commit_.push_back(std::move(fn));
  WakeCheck();
}

void Daemon::WakeCheck() {
  if (idle_ != nullptr && !uv_is_active(reinterpret_cast<uv_handle_t*>(idle_))) {
    uv_idle_start(idle_, [](uv_idle_t* h) {
      // While busy-polling, let any other runnable task on this CPU go first.
      const auto& rpc = static_cast<Daemon*>(h->data)->rpc_;
      if (rpc && rpc->busy_polling()) ::sched_yield();
    });
  }
}

void Daemon::OnCheck() {
  for (int round = 0; round < 1000; ++round) {
    if (serve_waiters_) {
      serve_waiters_ = false;
      ServeWaitersNow();
    }
    if (store_->in_batch()) {
      for (auto it = sessions_.begin(); it != sessions_.end();) {
        LiveSession& s = *it->second;
        const bool terminal = s.row.state != "pending" && s.row.state != "active";
        if (s.dirty || terminal) {
          if (terminal) {
            s.row.ratchet.clear();
          } else if (s.ratchet) {
            const Bytes state = s.ratchet->Serialize();
            s.row.ratchet = SealBlob("agentmeshd:ratchet:" + s.row.session_id, state);
          }
          if (auto r = store_->UpsertSession(s.row); !r) {
            LogError("storage: " + r.error().ToString());
            ::_exit(70);
          }
          s.dirty = false;
        }
        it = terminal ? sessions_.erase(it) : std::next(it);
      }
      if (auto r = store_->Commit(); !r) {
        LogError("storage: commit failed, exiting to restart from the last commit: " +
                 r.error().ToString());
        ::_exit(70);
      }
    }
    if (after_commit_.empty() && !serve_waiters_) break;
    auto actions = std::move(after_commit_);
    after_commit_.clear();
    for (auto& fn : actions) {
      try {
        fn();
      } catch (const std::exception& e) {
        LogError(fmt::format("after-commit action: {}", e.what()));
      }
    }
  }
  FlushAudit();  // after the commit: the log records what was committed
  if (rpc_) rpc_->Flush();
  if (idle_ == nullptr) return;
  const bool pending = store_->in_batch() || !after_commit_.empty() || serve_waiters_ ||
                       (rpc_ && rpc_->has_output());
  const std::uint64_t busy_poll_ns = std::uint64_t{config_.rpc_busy_poll_us} * 1000;
  const bool busy_polling =
      !pending && rpc_ && busy_poll_ns > 0 && uv_hrtime() - rpc_->last_read_ns() < busy_poll_ns;
  if (rpc_) rpc_->set_busy_polling(busy_polling);
  if (busy_polling) {
    WakeCheck();  // a read that produced no output this turn has not started it
  } else if (!pending) {
    uv_idle_stop(idle_);
  }
}

// ---- Sealing ----------------------------------------------------------------------------------

Bytes Daemon::SealBlob(std::string_view ad, ByteView plaintext) {
  SystemRng rng;
  return Seal(*seal_key_, plaintext, AsBytes(ad), rng);
}

Result<SecretBuffer> Daemon::OpenBlob(std::string_view ad, ByteView sealed) {
  if (!seal_key_) return Fail(Code::kPermissionDenied, "no master key");
  return Open(*seal_key_, sealed, AsBytes(ad));
}

// ---- Events and audit -------------------------------------------------------------------------

void Daemon::Emit(std::string_view type, std::string_view key, nlohmann::json payload) {
  if (subscriptions_.empty() || !rpc_) return;
  nlohmann::json params = {{"type", type}, {"time", FormatRfc3339Z(Now())}};
  params[std::string(key)] = std::move(payload);
  std::vector<std::uint64_t> overflowed;
  for (const auto& [id, sub] : subscriptions_) {
    if (!sub.events.empty() && !sub.events.contains(std::string(type))) continue;
    params["subscription"] = id;
    if (!rpc_->Notify(sub.conn, "event", params)) overflowed.push_back(id);
  }
  for (const std::uint64_t id : overflowed) DropSlowSubscription(id);
}

void Daemon::DropSlowSubscription(std::uint64_t id) {
  auto it = subscriptions_.find(id);
  if (it == subscriptions_.end()) return;
  const ConnId conn = it->second.conn;
  const std::size_t unread = rpc_->UnreadEventBytes(conn);
  subscriptions_.erase(it);
  LogWarn(fmt::format(
      "rpc: dropped subscription {} of pid {}: it has not read {} MiB of events (slow consumer)",
      id, rpc_->PeerPid(conn), unread >> 20));
  rpc_->Notify(conn, "event",
               {{"type", "subscription.dropped"},
                {"time", FormatRfc3339Z(Now())},
                {"subscription", id},
                {"dropped", {{"reason", "slow_consumer"}, {"unread_bytes", unread}}}},
               true);
}

void Daemon::Audit(std::string_view event, nlohmann::json fields) {
  if (!fields.is_object()) fields = nlohmann::json::object();
  nlohmann::json record = {{"time", FormatRfc3339Z(Now())}, {"event", event}};
  for (auto& [k, v] : fields.items()) record[k] = v;
  if (audit_fd_ >= 0) {
    audit_pending_ += DumpJson(record);
    audit_pending_ += '\n';
    WakeCheck();
  }
  Emit("audit", "record", std::move(record));
}

void Daemon::FlushAudit() {
  std::size_t done = 0;
  while (audit_fd_ >= 0 && done < audit_pending_.size()) {
    const ssize_t n =
        ::write(audit_fd_, audit_pending_.data() + done, audit_pending_.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      LogWarn(fmt::format("audit log write failed: {}", std::strerror(errno)));
      break;
    }
    done += static_cast<std::size_t>(n);
  }
  audit_pending_.clear();
}

// ---- Identity and prekeys ---------------------------------------------------------------------

Result<nlohmann::json> Daemon::InitIdentity(bool force, bool& created) {
  created = false;
  if (identity_ && !force) return nlohmann::json::object();
  SystemRng rng;
  if (!seal_key_) {
    auto bytes = rng.Array<32>();
    if (auto r = WriteFileAtomic(
            options_.home / "master.key",
            std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
        !r) {
      return std::unexpected(r.error());
    }
    SealKey key;
    SealKey::FromBytes(ByteView(bytes.data(), bytes.size()), key);
    detail::SecureZero(bytes.data(), bytes.size());
    seal_key_.emplace(std::move(key));
  }
  Batch();
  if (force && identity_) {
    if (auto r = store_->WipeForNewIdentity(); !r) return std::unexpected(r.error());
    for (auto& [sid, s] : sessions_) {
      s->row.state = "killed";
      s->row.close_reason = "identity_replaced";
    }
    signed_prekeys_.clear();
    retired_prekeys_.clear();
    registered_ = false;
  }
  auto signing = Ed25519KeyPair::Generate(rng);
  auto exchange = X25519KeyPair::Generate(rng);
  SecretBuffer secret{Bytes(64)};
  std::memcpy(secret.ExposeMutable().data(), signing.Seed().data(), 32);
  std::memcpy(secret.ExposeMutable().data() + 32, exchange.secret.data(), 32);
  IdentityRow row;
  row.amid = Amid::FromPublicKey(signing.public_key).str();
  row.signing_public_key = FormatEd25519Key(signing.public_key);
  row.exchange_public_key = FormatX25519Key(exchange.public_key);
  row.sealed = SealBlob(kIdentityAd, secret.Expose());
  row.created_at = Now();
  if (auto r = store_->SaveIdentity(row); !r) return std::unexpected(r.error());
  const Bytes check = SealBlob(kSealCheckAd, AsBytes("agentmeshd"));
  if (auto r = store_->SetMeta("seal_check", check); !r) return std::unexpected(r.error());
  const Amid amid = Amid::FromPublicKey(signing.public_key);
  identity_.emplace(Identity{std::move(signing), std::move(exchange), amid});
  if (auto r = EnsurePrekeys(); !r) return std::unexpected(r.error());
  created = true;
  Audit("identity.created", {{"amid", amid.str()}});
  return nlohmann::json::object();
}

Result<void> Daemon::EnsurePrekeys() {
  if (!identity_) return Fail(Code::kConflict, "not initialized");
  SystemRng rng;
  const UnixNanos now = Now();
  Batch();
  const SignedPrekey* current = nullptr;
  for (const auto& spk : signed_prekeys_) {
    if (!retired_prekeys_.contains(spk.id)) current = &spk;
  }
  if (current == nullptr || now - current->created_at > kSignedPrekeyLifetime) {
    std::uint32_t id = 1;
    for (const auto& spk : signed_prekeys_) id = std::max(id, spk.id + 1);
    if (current != nullptr) {
      retired_prekeys_[current->id] = now;
      if (auto r = store_->RetireSignedPrekey(current->id, now); !r) return r;
    }
    auto spk = SignedPrekey::Generate(id, identity_->signing.secret, now, rng);
    SignedPrekeyRow row;
    row.id = id;
    row.sealed = SealBlob(SpkAd(id), spk.pair.secret.Expose());
    row.signature = FormatSignature(spk.signature);
    row.created_at = now;
    if (auto r = store_->InsertSignedPrekey(row); !r) return r;
    signed_prekeys_.push_back(std::move(spk));
    LogInfo(fmt::format("new signed prekey {}", id));
  }
  for (auto it = retired_prekeys_.begin(); it != retired_prekeys_.end();) {
    if (now - it->second > kRetiredPrekeyGrace) {
      if (auto r = store_->DeleteSignedPrekey(it->first); !r) return r;
      std::erase_if(signed_prekeys_, [&](const SignedPrekey& s) { return s.id == it->first; });
      LogInfo(fmt::format("signed prekey {} deleted (retired more than 24 h ago)", it->first));
      it = retired_prekeys_.erase(it);
    } else {
      ++it;
    }
  }
  auto count = store_->CountOneTimePrekeys();
  if (!count) return std::unexpected(count.error());
  if (*count < kOneTimePrekeyLow) {
    std::uint32_t next = 1;
    if (auto meta = store_->GetMeta("next_opk_id"); meta && *meta) {
      next = static_cast<std::uint32_t>(
          std::strtoul(std::string((*meta)->begin(), (*meta)->end()).c_str(), nullptr, 10));
      if (next == 0) next = 1;
    }
    const std::size_t want = kOneTimePrekeyTarget - static_cast<std::size_t>(*count);
    auto keys = GenerateOneTimePrekeys(next, want, rng);
    if (!keys) return std::unexpected(keys.error());
    for (const auto& k : *keys) {
      OneTimePrekeyRow row;
      row.id = k.id;
      row.sealed = SealBlob(OpkAd(k.id), k.pair.secret.Expose());
      if (auto r = store_->InsertOneTimePrekey(row); !r) return r;
    }
    if (auto r = store_->SetMetaText("next_opk_id",
                                     std::to_string(next + static_cast<std::uint32_t>(want)));
        !r) {
      return r;
    }
  }
  return {};
}

void Daemon::UploadPrekeys(std::function<void(Result<void>)> done) {
  if (!identity_ || !registry_) {
    done(Fail(Code::kConflict, "not initialized"));
    return;
  }
  if (auto r = EnsurePrekeys(); !r) {
    done(std::unexpected(r.error()));
    return;
  }
  const SignedPrekey* current = nullptr;
  for (const auto& spk : signed_prekeys_) {
    if (!retired_prekeys_.contains(spk.id)) current = &spk;
  }
  auto pending = store_->PendingUploadPrekeys();
  if (!pending || current == nullptr) {
    done(Fail(Code::kInternal, "prekeys unavailable"));
    return;
  }
  std::vector<OneTimePrekey> keys;
  std::vector<std::uint32_t> ids;
  for (const auto& row : *pending) {
    auto secret = OpenBlob(OpkAd(row.id), row.sealed);
    if (!secret) continue;
    X25519SecretKey sk;
    X25519SecretKey::FromBytes(secret->Expose(), sk);
    keys.push_back(OneTimePrekey{row.id, X25519KeyPair::FromSecret(std::move(sk))});
    ids.push_back(row.id);
  }
  nlohmann::json body = BuildPrekeyUploadBody(identity_->amid, *current, keys);
  const std::uint32_t spk_id = current->id;
  prekeys_uploading_ = true;
  registry_->UploadPrekeys(
      identity_->signing, std::move(body),
      [this, ids = std::move(ids), spk_id, done = std::move(done)](Result<nlohmann::json> r) {
        prekeys_uploading_ = false;
        if (!r) {
          LogWarn("prekey upload failed: " + r.error().ToString());
          done(std::unexpected(r.error()));
          return;
        }
        Batch();
        if (auto m = store_->MarkUploaded(ids); !m) {
          done(m);
          return;
        }
        (void)store_->SetMetaText("spk_uploaded_id", std::to_string(spk_id));
        LogInfo(
            fmt::format("uploaded signed prekey {} and {} one-time prekeys", spk_id, ids.size()));
        done({});
      });
}

void Daemon::MaintainPrekeys() {
  if (!identity_ || !registered_ || prekeys_uploading_ || !registry_) return;
  if (auto r = EnsurePrekeys(); !r) {
    LogWarn("prekeys: " + r.error().ToString());
    return;
  }
  auto pending = store_->PendingUploadPrekeys();
  std::string uploaded_spk;
  if (auto m = store_->GetMeta("spk_uploaded_id"); m && *m) {
    uploaded_spk.assign((*m)->begin(), (*m)->end());
  }
  std::string current;
  for (const auto& spk : signed_prekeys_) {
    if (!retired_prekeys_.contains(spk.id)) current = std::to_string(spk.id);
  }
  if ((pending && !pending->empty()) || uploaded_spk != current) {
    UploadPrekeys([](Result<void>) {});
  }
}

// ---- Registry lookups -------------------------------------------------------------------------

void Daemon::LookupPeer(const std::string& amid_text, bool fresh,
                        std::function<void(Result<nlohmann::json>)> done) {
  auto amid = Amid::Parse(amid_text);
  if (!amid) {
    done(Fail(Code::kInvalidArgument, "not an AMID", "amid"));
    return;
  }
  const UnixNanos now = Now();
  if (!fresh) {
    auto it = lookup_cache_.find(amid_text);
    if (it != lookup_cache_.end() &&
        now - it->second.at <
            static_cast<UnixNanos>(config_.registry_cache_seconds) * kNanosPerSecond) {
      done(it->second.value);
      return;
    }
  }
  if (!registry_) {
    done(Fail(Code::kUnavailable, "no registry configured"));
    return;
  }
  registry_->Lookup(*amid, [this, amid_text, done = std::move(done)](Result<nlohmann::json> r) {
    if (r) {
      if (lookup_cache_.size() > 10000) lookup_cache_.clear();
      lookup_cache_[amid_text] = {*r, Now()};
    }
    done(std::move(r));
  });
}

// ---- Policy and config files ------------------------------------------------------------------

Result<void> Daemon::LoadPolicy() {
  auto text = ReadFile(policy_path_);
  if (!text) {
    if (text.error().code == Code::kNotFound) {
      policy_ = DefaultPolicy();
      policy_mtime_ = 0;
      return {};
    }
    return std::unexpected(text.error());
  }
  auto policy = ParsePolicyText(*text);
  if (!policy) return std::unexpected(policy.error());
  policy_ = std::move(*policy);
  struct stat st {};
  if (::stat(policy_path_.c_str(), &st) == 0) {
    policy_mtime_ =
        static_cast<std::int64_t>(st.st_mtim.tv_sec) * kNanosPerSecond + st.st_mtim.tv_nsec;
  }
  return {};
}

Result<void> Daemon::SavePolicy(const Policy& policy) {
  if (auto r = WriteFileAtomic(policy_path_, PolicyToJson(policy).dump(2) + "\n"); !r) return r;
  policy_ = policy;
  struct stat st {};
  if (::stat(policy_path_.c_str(), &st) == 0) {
    policy_mtime_ =
        static_cast<std::int64_t>(st.st_mtim.tv_sec) * kNanosPerSecond + st.st_mtim.tv_nsec;
  }
  return {};
}

Result<void> Daemon::SaveConfig() {
  return WriteFileAtomic(options_.config_path, ConfigToJson(config_).dump(2) + "\n");
}

void Daemon::ApplyNetworkConfig() {
  if (stopping_) return;
  const std::string registry_key = config_.registry_url + "|" + config_.registry_ca_file;
  if (!registry_ || registry_key != registry_in_use_) {
    if (registry_) retired_registries_.push_back(std::move(registry_));
    RegistryClientOptions opts;
    opts.base_url = config_.registry_url;
    opts.ca_file = config_.registry_ca_file;
    opts.timeout_ms = 10'000;
    opts.on_reachability = [this, registry_key](bool reachable, const std::string& error) {
      if (registry_key != registry_in_use_) return;  // a retired client's late answer
      if (reachable == registry_reachable_ && error == registry_error_) return;
      registry_reachable_ = reachable;
      registry_error_ = error;
      nlohmann::json ev = {{"url", config_.registry_url}, {"reachable", reachable}};
      if (!reachable) ev["error"] = error;
      if (reachable) {
        LogInfo("registry reachable (" + config_.registry_url + ")");
      } else {
        LogWarn("registry unreachable: " + error);
      }
      Emit("registry.status", "registry", ev);
    };
    registry_ = std::make_unique<RegistryClient>(loop_, std::move(opts));
    registry_in_use_ = registry_key;
    lookup_cache_.clear();
  }
  const std::string relay_key = config_.relay_url + "|" + config_.relay_ca_file;
  if (identity_ && (!relay_ || relay_key != relay_in_use_)) {
    if (relay_) {
      relay_->Stop();
      retired_relays_.push_back(std::move(relay_));
      OnRelayState(false, "relay URL changed");
    }
    RelayLinkOptions opts;
    opts.url = config_.relay_url;
    opts.ca_file = config_.relay_ca_file;
    opts.min_backoff_ms = 100;
    opts.max_backoff_ms = 10'000;
    RelayLink::Handlers h;
    h.on_state = [this](bool connected, std::string_view detail) {
      try {
        OnRelayState(connected, detail);
      } catch (const std::exception& e) {
        LogError(fmt::format("relay state: {}", e.what()));
      }
    };
    h.on_message = [this](const IncomingMessage& m) {
      try {
        OnRelayMessage(m);
      } catch (const std::exception& e) {
        LogError(fmt::format("relay message {}: {}", m.id, e.what()));
      }
    };
    h.on_send_result = [this](const SendResult& r) {
      try {
        OnSendResult(r);
      } catch (const std::exception& e) {
        LogError(fmt::format("relay send result: {}", e.what()));
      }
    };
    h.on_receipt = [this](const Receipt& r) {
      try {
        OnReceipt(r);
      } catch (const std::exception& e) {
        LogError(fmt::format("relay receipt: {}", e.what()));
      }
    };
    relay_ = std::make_unique<RelayLink>(loop_, std::move(opts), identity_->signing.Clone(),
                                         std::move(h));
    relay_in_use_ = relay_key;
    relay_->Start();
  }
}

// ---- Housekeeping -----------------------------------------------------------------------------

void Daemon::Housekeeping() {
  const std::uint64_t ticks = ++housekeeping_ticks_;
  ExpireSessions();
  std::erase_if(retired_registries_, [](const auto& r) { return r->in_flight() == 0; });
  retired_relays_.clear();
  struct stat st {};
  const std::int64_t mtime =
      ::stat(policy_path_.c_str(), &st) == 0
          ? static_cast<std::int64_t>(st.st_mtim.tv_sec) * kNanosPerSecond + st.st_mtim.tv_nsec
          : 0;
  if (mtime != policy_mtime_) {
    if (auto r = LoadPolicy(); r) {
      LogInfo("policy.json changed: reloaded");
      Audit("policy.reloaded", {{"path", policy_path_.string()}, {"trigger", "file_changed"}});
    } else {
      policy_mtime_ = mtime;
      LogError("policy.json changed but is invalid, keeping the running policy: " +
               r.error().ToString());
    }
  }
  if (ticks % 60 == 1) MaintainPrekeys();
  std::erase_if(rejected_sessions_,
                [&](const auto& kv) { return Now() - kv.second > 600LL * kNanosPerSecond; });
  if (ticks % 3600 == 1) {  // hourly, and soon after a start (a daemon restarted often prunes)
    Batch();
    (void)store_->PruneSeen(Now() - 7LL * 86400 * kNanosPerSecond);
    (void)store_->PruneSentKeys(Now() - 86400LL * kNanosPerSecond);
    (void)store_->PruneConsumedInbox(Now() - 86400LL * kNanosPerSecond);
    const UnixNanos now = Now();
    std::erase_if(knock_buckets_,
                  [&](const auto& kv) { return kv.second.Available(now) >= kv.second.capacity; });
  }
}

}  // namespace agentmesh::daemon
