#include "agentmesh/storage/checkpointer.hpp"

#include <sqlite3.h>

#include <utility>

namespace agentmesh::storage {

Result<std::unique_ptr<Checkpointer>> Checkpointer::Start(Database& writer, const std::string& path,
                                                          const OpenOptions& open,
                                                          const CheckpointerOptions& options) {
  OpenOptions own_options = open;
  own_options.create = false;
  auto own = Database::Open(path, own_options);
  if (!own) return std::unexpected(own.error());
  std::unique_ptr<Checkpointer> c(new Checkpointer(writer.raw(), std::move(*own), options));
  c->thread_ = std::thread([raw = c.get()] { raw->Run(); });
  sqlite3_wal_hook(writer.raw(), &Checkpointer::OnCommit, c.get());
  return c;
}

Checkpointer::Checkpointer(sqlite3* writer, Database own, const CheckpointerOptions& options)
    : writer_(writer), own_(std::move(own)), options_(options) {}

Checkpointer::~Checkpointer() {
  sqlite3_wal_hook(writer_, nullptr, nullptr);
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_one();
  if (thread_.joinable()) thread_.join();
}

std::uint64_t Checkpointer::background_runs() const {
  std::lock_guard lock(mu_);
  return runs_;
}

int Checkpointer::OnCommit(void* self, sqlite3* db, const char* schema, int frames) {
  auto* c = static_cast<Checkpointer*>(self);
  if (frames >= c->options_.inline_pages) {
    (void)sqlite3_wal_checkpoint_v2(db, schema, SQLITE_CHECKPOINT_PASSIVE, nullptr, nullptr);
  } else if (frames >= c->options_.background_pages) {
    {
      std::lock_guard lock(c->mu_);
      c->wanted_ = true;
    }
    c->cv_.notify_one();
  }
  return SQLITE_OK;
}

void Checkpointer::Run() {
  std::unique_lock lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return wanted_ || stopping_; });
    if (stopping_) return;
    wanted_ = false;
    lock.unlock();
    (void)sqlite3_wal_checkpoint_v2(own_.raw(), nullptr, SQLITE_CHECKPOINT_PASSIVE, nullptr,
                                    nullptr);
    lock.lock();
    ++runs_;
  }
}

}  // namespace agentmesh::storage
