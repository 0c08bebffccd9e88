// Test support: a real, throw-away PostgreSQL server from Debian's `postgresql` package.
//
// TestPostgres locates the server binaries (initdb and postgres; $AGENTMESH_PG_BINDIR, else the
// newest /usr/lib/postgresql/<version>/bin), and Start() runs initdb into a fresh temp dir (trust
// authentication, superuser "postgres", fsync off) and starts `postgres` in the foreground as a
// child process listening on 127.0.0.1:<free port> and on a Unix socket in the temp dir. It waits
// until the server accepts connections.
//
// As root, PostgreSQL refuses to run, so initdb and the server run as the unprivileged user
// `nobody` (through setpriv, which execs in place; the temp dir is handed to that user). The
// server gets SIGKILL if the thread that started it dies (setpriv --pdeathsig), so even a test
// process killed by a timeout leaves no server behind (only its temp dir); a normal exit or a
// failed REQUIRE runs the destructor, which stops the server (fast shutdown, then SIGKILL) and
// deletes the temp dir.
//
// Usage in a Catch2 v2 test:
//   auto& pg = TestPostgres::Shared();   // or a TestPostgres of its own + REQUIRE(pg.Start())
//   if (!pg.Available()) { WARN("SKIPPED: " << pg.reason()); return; }
//   const std::string db = pg.NewDatabase();
//   INFO(pg.reason());                   // on failure: why, with the server log
//   REQUIRE_FALSE(db.empty());
//   auto conn = storage::pg::Connection::Connect(db);
//
// initdb costs seconds, so the first Start() keeps a copy of its fresh data directory in
// $TMPDIR/amesh-pg-template-v1-uid<euid>-pg<major> (published by an atomic rename) and later
// Start()s, in any process, copy it instead; delete that directory to force a fresh initdb.
// Each instance is a separate cluster; ctest runs each test case in its own
// process, and Shared() + NewDatabase() give the sections of one test case one cluster. Thread:
// construct, Start, NewDatabase and destroy on one thread; conninfo()/uri() from any thread.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "process.hpp"

namespace agentmesh::testing {

class TestPostgres {
 public:
  TestPostgres();  // only looks for the binaries
  ~TestPostgres();
  TestPostgres(const TestPostgres&) = delete;
  TestPostgres& operator=(const TestPostgres&) = delete;

  // False when the binaries are missing; reason() says which and how to install them.
  bool Available() const noexcept { return !bin_dir_.empty(); }
  // Why Available() is false, or why Start() failed (with the tail of the server log).
  const std::string& reason() const noexcept { return reason_; }

  // One server shared by every test of this process: started on first use (check Available()
  // and running()), stopped at exit. Pair it with NewDatabase() so tests (and Catch2 sections,
  // which re-run the test body) do not see each other's tables.
  static TestPostgres& Shared();

  // initdb + start + wait until it accepts (up to 60 s). True when the server is ready.
  // `settings`: extra "name=value" server settings, after (and so overriding) the test defaults,
  // e.g. a benchmark's shared_buffers.
  bool Start(const std::vector<std::string>& settings = {});
  // Creates an empty database with a fresh name and returns its conninfo(); empty (reason() set)
  // when the server is not running or the CREATE DATABASE fails.
  std::string NewDatabase();
  // The same, returned as a postgresql:// URI over the Unix socket (socket_uri()), for programs
  // that take a URL (amesh-registry --db).
  std::string NewDatabaseUri();
  // Fast shutdown; idempotent. The destructor calls it.
  void Stop();
  bool running() const noexcept { return server_.running(); }

  // Keyword connection string over the Unix socket: "host=<dir> port=<p> user=postgres
  // dbname=<dbname>".
  std::string conninfo(std::string_view dbname = "postgres") const;
  // URI over TCP: "postgresql://postgres@127.0.0.1:<p>/<dbname>".
  std::string uri(std::string_view dbname = "postgres") const;
  // URI over the Unix socket: "postgresql:///<dbname>?host=<dir>&port=<p>&user=postgres".
  std::string socket_uri(std::string_view dbname = "postgres") const;
  int port() const noexcept { return port_; }
  const std::filesystem::path& bin_dir() const noexcept { return bin_dir_; }
  // The server's stderr so far (for failure messages).
  std::string Log() const;

 private:
  // Runs a program to completion (as the server user when root); false with reason_ set.
  bool RunToCompletion(const std::vector<std::string>& argv, const std::string& what);
  std::vector<std::string> AsServerUser(std::vector<std::string> argv) const;
  // The cached initdb result shared by test processes (see postgres_server.cpp).
  std::filesystem::path TemplatePath() const;
  bool CopyTemplate(const std::filesystem::path& data);
  void PublishTemplate(const std::filesystem::path& data);

  std::filesystem::path bin_dir_;
  std::string reason_;
  std::unique_ptr<TempDir> dir_;
  std::filesystem::path socket_dir_;
  int port_ = 0;
  bool as_nobody_ = false;
  unsigned server_uid_ = 0;  // the uid of `nobody` when as_nobody_
  int databases_ = 0;
  ChildProcess server_;
};

// A free TCP port on 127.0.0.1 at the time of the call (bind to port 0, read it, close).
int FreeLoopbackPort(bool udp = false);

}  // namespace agentmesh::testing
