// Test support: start a real program as a child process and clean it up whatever happens.
//
// ChildProcess::Start forks/execs `argv`, captures its stdout through a pipe (stderr goes to a
// log file in the test's temp dir, printed when a test fails via Log()), and the destructor
// sends SIGKILL and reaps the child, so a failing REQUIRE never leaks a process.
#pragma once

#include <signal.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace agentmesh::testing {

// Whether process `pid` is stopped (state T in /proc/PID/stat).
bool IsStopped(pid_t pid);

// A fresh directory under $TMPDIR, removed with everything in it on destruction, unless
// AGENTMESH_TEST_KEEP_DIRS is set (for reading the logs of a failed run).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const noexcept { return path_; }

 private:
  std::filesystem::path path_;
};

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  // Starts argv[0] with the given arguments; stderr is appended to `stderr_path`.
  bool Start(const std::vector<std::string>& argv, const std::filesystem::path& stderr_path);
  // Reads stdout until a line containing `needle` arrives; returns the line, or nullopt on EOF or
  // timeout.
  std::optional<std::string> WaitForLine(const std::string& needle,
                                         std::chrono::milliseconds timeout);
  // Sends `signal`; with wait, reaps the child and returns its exit status (as from waitpid), or
  // -1 on timeout.
  int Signal(int signal, bool wait, std::chrono::milliseconds timeout = std::chrono::seconds(10));
  void Kill();  // SIGKILL + reap
  // SIGSTOP, then waits until the child is stopped (state T in /proc/PID/stat); false if it is
  // not within `timeout`. SIGCONT (Signal) resumes it.
  bool Stop(std::chrono::milliseconds timeout = std::chrono::seconds(5));
  bool running() const noexcept { return pid_ > 0; }
  pid_t pid() const noexcept { return pid_; }
  std::string StderrLog() const;

 private:
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string buffer_;
  std::filesystem::path stderr_path_;
};

}  // namespace agentmesh::testing
