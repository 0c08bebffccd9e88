#include "postgres_server.hpp"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>

namespace agentmesh::testing {

namespace fs = std::filesystem;

namespace {

bool IsExecutable(const fs::path& path) { return ::access(path.c_str(), X_OK) == 0; }

bool HasServerBinaries(const fs::path& dir) {
  return IsExecutable(dir / "initdb") && IsExecutable(dir / "postgres");
}

// "15" -> 15, "9.6" -> 9 (only the ordering matters).
int VersionOf(const fs::path& dir) { return std::atoi(dir.filename().c_str()); }

fs::path FindBinDir() {
  if (const char* env = std::getenv("AGENTMESH_PG_BINDIR"); env != nullptr && *env != '\0') {
    return HasServerBinaries(env) ? fs::path(env) : fs::path();
  }
  std::error_code ec;
  fs::path best;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const fs::path bin = entry.path() / "bin";
    if (!HasServerBinaries(bin)) continue;
    if (best.empty() || VersionOf(entry.path()) > VersionOf(best.parent_path())) best = bin;
  }
  return best;
}

std::string Tail(const std::string& text, std::size_t max = 2000) {
  return text.size() <= max ? text : "…" + text.substr(text.size() - max);
}

// True if the child has exited (without reaping it, so ChildProcess still owns the pid).
bool HasExited(pid_t pid) {
  siginfo_t info{};
  if (::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
    return true;
  }
  return info.si_pid == pid;
}

}  // namespace

int FreeLoopbackPort(bool udp) {
  const int fd = ::socket(AF_INET, udp ? SOCK_DGRAM : SOCK_STREAM, 0);
  if (fd < 0) return 0;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  int port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
    port = ntohs(addr.sin_port);
  }
  ::close(fd);
  return port;
}

TestPostgres::TestPostgres() : bin_dir_(FindBinDir()) {
  if (bin_dir_.empty()) {
    reason_ =
        "PostgreSQL server binaries (initdb, postgres) not found in /usr/lib/postgresql/*/bin or "
        "$AGENTMESH_PG_BINDIR; install them with `apt-get install --no-install-recommends "
        "postgresql` (scripts/deps.sh does)";
  }
}

TestPostgres::~TestPostgres() { Stop(); }

std::vector<std::string> TestPostgres::AsServerUser(std::vector<std::string> argv) const {
  // setpriv execs in place (no intermediate process), so the pid we hold is the program's own,
  // and --pdeathsig makes it die with the thread that started it.
  std::vector<std::string> out = {"/usr/bin/setpriv"};
  if (as_nobody_) {
    out.insert(out.end(), {"--reuid=nobody", "--regid=nogroup", "--clear-groups"});
  }
  out.insert(out.end(), {"--pdeathsig=SIGKILL", "--"});
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

bool TestPostgres::RunToCompletion(const std::vector<std::string>& argv, const std::string& what) {
  ChildProcess child;
  const fs::path log = dir_->path() / (what + ".log");
  if (!child.Start(AsServerUser(argv), log)) {
    reason_ = what + ": cannot start " + argv[0];
    return false;
  }
  const int status = child.Signal(0, /*wait=*/true, std::chrono::seconds(120));
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    reason_ = what + " failed (status " + std::to_string(status) + "):\n" + Tail(child.StderrLog());
    return false;
  }
  return true;
}

bool TestPostgres::Start(const std::vector<std::string>& settings) {
  if (!Available()) return false;
  if (running()) return true;
  if (!IsExecutable("/usr/bin/setpriv")) {
    reason_ = "/usr/bin/setpriv (util-linux) is required to run the test server";
    return false;
  }
  dir_ = std::make_unique<TempDir>();
  if (dir_->path().empty()) {
    reason_ = "cannot create a temp dir";
    return false;
  }
  socket_dir_ = dir_->path() / "sock";
  const fs::path data = dir_->path() / "data";
  std::error_code ec;
  fs::create_directory(socket_dir_, ec);
  as_nobody_ = ::geteuid() == 0;
  if (as_nobody_) {
    // PostgreSQL refuses to run as root: hand the whole temp dir to `nobody`.
    const passwd* pw = ::getpwnam("nobody");
    if (pw == nullptr) {
      reason_ = "running as root but there is no user `nobody` to run PostgreSQL as";
      return false;
    }
    server_uid_ = pw->pw_uid;
    for (const fs::path& p : {dir_->path(), socket_dir_}) {
      if (::chown(p.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
        reason_ = "cannot chown " + p.string() + " to nobody";
        return false;
      }
    }
  }
  if (!CopyTemplate(data)) {
    if (!RunToCompletion(
            {(bin_dir_ / "initdb").string(), "-D", data.string(), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-locale", "--no-sync", "--no-instructions"},
            "initdb")) {
      return false;
    }
    PublishTemplate(data);
  }

  // A port picked now may be taken before the server binds it: retry a few times.
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = FreeLoopbackPort();
    const fs::path log = dir_->path() / ("server-" + std::to_string(attempt) + ".log");
    const std::vector<std::string> argv = {(bin_dir_ / "postgres").string(),
                                           "-D",
                                           data.string(),
                                           "-p",
                                           std::to_string(port_),
                                           "-c",
                                           "listen_addresses=127.0.0.1",
                                           "-c",
                                           "unix_socket_directories=" + socket_dir_.string(),
                                           "-c",
                                           "fsync=off",
                                           "-c",
                                           "synchronous_commit=off",
                                           "-c",
                                           "full_page_writes=off",
                                           "-c",
                                           "max_connections=64",
                                           "-c",
                                           "shared_buffers=16MB",
                                           "-c",
                                           "logging_collector=off"};
    std::vector<std::string> full = argv;
    for (const auto& setting : settings) full.insert(full.end(), {"-c", setting});
    if (!server_.Start(AsServerUser(full), log)) {
      reason_ = "cannot start postgres";
      return false;
    }
    const std::string info = conninfo();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      if (PQping(info.c_str()) == PQPING_OK) return true;
      if (HasExited(server_.pid())) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    const std::string text = server_.StderrLog();
    server_.Kill();
    reason_ = "postgres did not start on port " + std::to_string(port_) + ":\n" + Tail(text);
    if (text.find("Address already in use") == std::string::npos) return false;
  }
  return false;
}

// initdb costs seconds and every test process needs a cluster, so the first process also keeps a
// copy of its fresh (never started) data directory in the temp dir, and later processes copy
// that instead of running initdb. The name carries the effective uid, the server's major version
// and a format number for the initdb arguments above; it appears by an atomic rename, so a
// reader never sees a partial copy, and one not owned by the server user is ignored.
fs::path TestPostgres::TemplatePath() const {
  std::error_code ec;
  const fs::path tmp = fs::temp_directory_path(ec);
  if (ec) return {};
  return tmp / ("amesh-pg-template-v1-uid" + std::to_string(::geteuid()) + "-pg" +
                std::to_string(VersionOf(bin_dir_.parent_path())));
}

bool TestPostgres::CopyTemplate(const fs::path& data) {
  const fs::path tmpl = TemplatePath();
  struct stat st {};
  if (tmpl.empty() || ::lstat(tmpl.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return false;
  const uid_t owner = as_nobody_ ? server_uid_ : ::geteuid();
  if (st.st_uid != owner || (st.st_mode & 0022) != 0) return false;
  if (!RunToCompletion({"/bin/cp", "-a", tmpl.string(), data.string()}, "copy-template")) {
    std::error_code ec;
    fs::remove_all(data, ec);
    reason_.clear();
    return false;
  }
  return true;
}

void TestPostgres::PublishTemplate(const fs::path& data) {
  const fs::path tmpl = TemplatePath();
  std::error_code ec;
  if (tmpl.empty() || fs::exists(tmpl, ec)) return;
  const fs::path staging = tmpl.string() + ".tmp" + std::to_string(::getpid());
  if (!RunToCompletion({"/bin/cp", "-a", data.string(), staging.string()}, "publish-template")) {
    reason_.clear();
    fs::remove_all(staging, ec);
    return;
  }
  fs::rename(staging, tmpl, ec);  // loses to a concurrent publisher: keep theirs
  if (ec) fs::remove_all(staging, ec);
}

TestPostgres& TestPostgres::Shared() {
  static TestPostgres shared;
  static const bool started = shared.Available() && shared.Start();
  (void)started;
  return shared;
}

std::string TestPostgres::NewDatabase() {
  if (!running()) {
    if (reason_.empty()) reason_ = "the PostgreSQL test server is not running";
    return {};
  }
  const std::string name = "amesh_test_" + std::to_string(++databases_);
  PGconn* conn = PQconnectdb(conninfo().c_str());
  std::string error;
  if (PQstatus(conn) != CONNECTION_OK) {
    error = PQerrorMessage(conn);
  } else {
    // The name is generated above (no user input), so building the statement is safe here.
    PGresult* result = PQexec(conn, ("CREATE DATABASE " + name).c_str());
    if (PQresultStatus(result) != PGRES_COMMAND_OK) error = PQresultErrorMessage(result);
    PQclear(result);
  }
  PQfinish(conn);
  if (!error.empty()) {
    reason_ = "CREATE DATABASE " + name + ": " + error;
    return {};
  }
  return conninfo(name);
}

std::string TestPostgres::NewDatabaseUri() {
  const std::string info = NewDatabase();
  if (info.empty()) return {};
  return socket_uri("amesh_test_" + std::to_string(databases_));
}

void TestPostgres::Stop() {
  if (server_.running()) {
    // SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
    if (server_.Signal(SIGINT, /*wait=*/true, std::chrono::seconds(15)) == -1) server_.Kill();
  }
  dir_.reset();
}

std::string TestPostgres::conninfo(std::string_view dbname) const {
  return "host=" + socket_dir_.string() + " port=" + std::to_string(port_) +
         " user=postgres dbname=" + std::string(dbname);
}

std::string TestPostgres::uri(std::string_view dbname) const {
  return "postgresql://postgres@127.0.0.1:" + std::to_string(port_) + "/" + std::string(dbname);
}

std::string TestPostgres::socket_uri(std::string_view dbname) const {
  return "postgresql:///" + std::string(dbname) + "?host=" + socket_dir_.string() +
         "&port=" + std::to_string(port_) + "&user=postgres";
}

std::string TestPostgres::Log() const { return server_.StderrLog(); }

}  // namespace agentmesh::testing
