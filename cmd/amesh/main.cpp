// amesh entry point: the real process's streams and environment, then RunAmesh (cli.hpp).
#include <unistd.h>

#include <filesystem>
#include <iostream>

#include "cli.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv, argv + argc);
  amesh::Io io;
  io.in = &std::cin;
  io.out = &std::cout;
  io.err = &std::cerr;
  io.stdin_is_tty = ::isatty(STDIN_FILENO) == 1;
  io.env = agentmesh::rpc::ProcessEnvironment();
  std::error_code ec;
  io.self_exe = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  return amesh::RunAmesh(args, std::move(io));
}
