// WAL checkpoints on a thread of their own.
//
// SQLite's automatic checkpoint runs inside the commit that crosses `wal_autocheckpoint`, on the
// committing thread: that commit then copies the WAL back into the database file and fsyncs both
// before it returns, and every caller waiting on it (a registry write group, the daemon's loop)
// waits too. A Checkpointer takes that work off the writer: it watches the writer's commits
// through SQLite's WAL hook and, once the WAL holds `background_pages` frames, wakes a thread
// that runs PASSIVE checkpoints on a connection of its own, concurrently with later commits
// (WAL mode lets a checkpoint and a writer run at once).
//
// Bound: SQLite restarts the WAL from its beginning only at the first write after a checkpoint
// that copied every frame. Under a steady stream of commits the thread is always a little behind,
// so the WAL keeps growing until it reaches `inline_pages` frames; the commit that sees that
// checkpoints inline, as SQLite's automatic checkpoint would. By then the thread has copied
// almost every frame, so the inline checkpoint is short, and the next write restarts the WAL.
// The WAL file therefore grows to about `inline_pages` pages under sustained writes.
//
// Durability is unchanged: a checkpoint only moves committed frames into the main file; it never
// decides what is committed.
//
// Ownership and lifetime: the connection of `writer` (its sqlite3 handle: the Database object
// itself may be moved) must stay open while the Checkpointer lives; the Checkpointer replaces the
// writer's WAL hook (and with it the writer's automatic checkpoint) and removes it on
// destruction, which also stops and joins the thread. Construct and destroy it on the thread
// that owns `writer`, while no statement of `writer` runs. Errors of background checkpoints are
// not reported: a failed or busy checkpoint is retried on the next wake-up, and the inline bound
// still holds.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "agentmesh/core/error.hpp"
#include "agentmesh/storage/sqlite.hpp"

namespace agentmesh::storage {

struct CheckpointerOptions {
  int background_pages = 2000;  // wake the thread at this many WAL frames
  int inline_pages = 40000;     // checkpoint on the committing thread at this many
};

class Checkpointer {
 public:
  // Opens the thread's own connection to `path` (the file `writer` has open; not ":memory:")
  // with `open` (use the writer's: `synchronous` decides the checkpoint's fsyncs).
  static Result<std::unique_ptr<Checkpointer>> Start(Database& writer, const std::string& path,
                                                     const OpenOptions& open,
                                                     const CheckpointerOptions& options = {});
  ~Checkpointer();
  Checkpointer(const Checkpointer&) = delete;
  Checkpointer& operator=(const Checkpointer&) = delete;

  // Checkpoints run by the thread so far (for tests and metrics). Thread-safe.
  std::uint64_t background_runs() const;

 private:
  Checkpointer(sqlite3* writer, Database own, const CheckpointerOptions& options);
  static int OnCommit(void* self, sqlite3* db, const char* schema, int frames);
  void Run();

  sqlite3* writer_;
  Database own_;
  CheckpointerOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool wanted_ = false;
  bool stopping_ = false;
  std::uint64_t runs_ = 0;
  std::thread thread_;
};

}  // namespace agentmesh::storage
