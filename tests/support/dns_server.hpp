// Test support: a real DNS server (dnsmasq) on 127.0.0.1 serving TXT records, for the tests of
// the registry's organisation DNS verification.
//
// DnsServer::Start runs `dnsmasq --no-daemon` authoritative for the given zones (names under
// them without a record answer NXDOMAIN, never REFUSED or a forward), with the given TXT records,
// on 127.0.0.1:<port> (UDP and TCP), and waits until dnsmasq says it started. Restart keeps the
// port and replaces the records (dnsmasq cannot reload --txt-record). The destructor kills it.
//
// Tests skip (WARN "SKIPPED: ...") when Installed() is false; CI installs dnsmasq-base.
#pragma once

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "process.hpp"

namespace agentmesh::testing {

struct TxtRecord {
  std::string name;   // "_agentmesh.example.org"
  std::string value;  // one character-string (at most 255 bytes)
};

class DnsServer {
 public:
  static constexpr const char* kBinary = "/usr/sbin/dnsmasq";
  static bool Installed();

  // Starts on a free port (a few attempts). False when dnsmasq never came up (see Log()).
  bool Start(std::vector<std::string> zones, std::vector<TxtRecord> records);
  // Stops the server and starts it again on the same port with new records.
  bool Restart(std::vector<TxtRecord> records);
  void Stop();

  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string Log() const;

 private:
  bool Launch(int port, int attempt);

  TempDir dir_;
  ChildProcess process_;
  std::filesystem::path log_;
  std::vector<std::string> zones_;
  std::vector<TxtRecord> records_;
  int port_ = 0;
};

// A UDP port on 127.0.0.1 that was free a moment ago.
int FreeUdpPort();

}  // namespace agentmesh::testing
