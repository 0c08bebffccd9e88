// WsCodec: framing, reassembly, limits and validation, without sockets.
#include <catch2/catch.hpp>

#include <algorithm>
#include <string>
#include <vector>

#include "agentmesh/net/ws_codec.hpp"

using namespace agentmesh;
using namespace agentmesh::net;

namespace {

struct Event {
  std::string kind;  // "text", "binary", "ping", "pong", "close"
  std::string data;
  std::uint16_t code = 0;
};

class Recorder final : public WsSink {
 public:
  std::vector<Event> events;
  bool stop_after_close = true;
  bool OnWsMessage(WsOpcode opcode, ByteView payload) override {
    events.push_back({opcode == WsOpcode::kText ? "text" : "binary",
                      std::string(payload.begin(), payload.end()), 0});
    return true;
  }
  bool OnWsPing(ByteView payload) override {
    events.push_back({"ping", std::string(payload.begin(), payload.end()), 0});
    return true;
  }
  bool OnWsPong(ByteView payload) override {
    events.push_back({"pong", std::string(payload.begin(), payload.end()), 0});
    return true;
  }
  bool OnWsClose(std::uint16_t code, std::string_view reason) override {
    events.push_back({"close", std::string(reason), code});
    return !stop_after_close;
  }
};

ByteView View(std::string_view s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}

// Builds a frame by hand (so tests can make fragments and malformed frames).
Bytes RawFrame(bool fin, std::uint8_t opcode, std::string_view payload, bool mask,
               std::uint8_t rsv = 0) {
  Bytes out;
  out.push_back(static_cast<std::uint8_t>((fin ? 0x80 : 0) | (rsv << 4) | opcode));
  const std::uint8_t mask_bit = mask ? 0x80 : 0;
  if (payload.size() < 126) {
    out.push_back(static_cast<std::uint8_t>(mask_bit | payload.size()));
  } else if (payload.size() < 65536) {
    out.push_back(mask_bit | 126);
    out.push_back(static_cast<std::uint8_t>(payload.size() >> 8));
    out.push_back(static_cast<std::uint8_t>(payload.size()));
  } else {
    out.push_back(mask_bit | 127);
    for (int shift = 56; shift >= 0; shift -= 8) {
      out.push_back(static_cast<std::uint8_t>(static_cast<std::uint64_t>(payload.size()) >> shift));
    }
  }
  const std::uint8_t key[4] = {0x12, 0x34, 0x56, 0x78};
  if (mask) out.insert(out.end(), key, key + 4);
  for (std::size_t i = 0; i < payload.size(); ++i) {
    out.push_back(static_cast<std::uint8_t>(payload[i]) ^ (mask ? key[i % 4] : 0));
  }
  return out;
}

}  // namespace

TEST_CASE("codec: client frames decode on the server, byte by byte and in one chunk", "[codec]") {
  DeterministicRng rng(7);
  WsCodec client(WsRole::kClient, 1 << 20, &rng);
  Bytes wire;
  client.AppendFrame(wire, WsOpcode::kText, View("hello"));
  client.AppendFrame(wire, WsOpcode::kBinary, View(std::string(300, 'b')));
  client.AppendFrame(wire, WsOpcode::kText, View(std::string(70000, 'x')));
  client.AppendFrame(wire, WsOpcode::kText, {});
  client.AppendFrame(wire, WsOpcode::kPing, View("p"));
  client.AppendClose(wire, 1000, "bye");
  CHECK(wire.size() == client.FrameSize(5) + client.FrameSize(300) + client.FrameSize(70000) +
                           client.FrameSize(0) + client.FrameSize(1) + client.FrameSize(5));

  const bool byte_by_byte = GENERATE(false, true);
  WsCodec server(WsRole::kServer, 1 << 20);
  Recorder rec;
  if (byte_by_byte) {
    bool all_ok = true;
    for (std::uint8_t b : wire) all_ok = server.Feed(ByteView(&b, 1), rec).has_value() && all_ok;
    REQUIRE(all_ok);
  } else {
    auto r = server.Feed(wire, rec);
    REQUIRE(r);
    CHECK(*r == WsCodec::FeedResult::kStopped);  // stopped at the close frame
  }
  REQUIRE(rec.events.size() == 6);
  CHECK(rec.events[0].kind == "text");
  CHECK(rec.events[0].data == "hello");
  CHECK(rec.events[1].kind == "binary");
  CHECK(rec.events[1].data == std::string(300, 'b'));
  CHECK(rec.events[2].data == std::string(70000, 'x'));
  CHECK(rec.events[3].kind == "text");
  CHECK(rec.events[3].data.empty());
  CHECK(rec.events[4].kind == "ping");
  CHECK(rec.events[5].kind == "close");
  CHECK(rec.events[5].code == 1000);
  CHECK(rec.events[5].data == "bye");
}

TEST_CASE("codec: server frames are unmasked and decode on the client", "[codec]") {
  WsCodec server(WsRole::kServer, 1 << 20);
  Bytes wire;
  server.AppendFrame(wire, WsOpcode::kText, View("hi"));
  REQUIRE(wire.size() == 4);
  CHECK(wire[0] == 0x81);
  CHECK(wire[1] == 0x02);
  DeterministicRng rng(1);
  WsCodec client(WsRole::kClient, 1 << 20, &rng);
  Recorder rec;
  REQUIRE(client.Feed(wire, rec));
  REQUIRE(rec.events.size() == 1);
  CHECK(rec.events[0].data == "hi");
}

TEST_CASE("codec: fragmented messages are reassembled, control frames may interleave", "[codec]") {
  Bytes wire;
  for (const Bytes& f : {RawFrame(false, 0x1, "frag", true), RawFrame(true, 0x9, "ping!", true),
                         RawFrame(false, 0x0, "ment", true), RawFrame(true, 0x0, "ed", true)}) {
    wire.insert(wire.end(), f.begin(), f.end());
  }
  WsCodec server(WsRole::kServer, 1024);
  Recorder rec;
  REQUIRE(server.Feed(wire, rec));
  REQUIRE(rec.events.size() == 2);
  CHECK(rec.events[0].kind == "ping");
  CHECK(rec.events[1].kind == "text");
  CHECK(rec.events[1].data == "fragmented");
}

TEST_CASE("codec: size limit applies to single frames and to reassembled messages", "[codec]") {
  SECTION("one frame just at the limit passes") {
    WsCodec server(WsRole::kServer, 100);
    Recorder rec;
    REQUIRE(server.Feed(RawFrame(true, 0x2, std::string(100, 'a'), true), rec));
    CHECK(rec.events.size() == 1);
  }
  SECTION("one frame over the limit fails with 1009 before buffering") {
    WsCodec server(WsRole::kServer, 100);
    Recorder rec;
    auto r = server.Feed(RawFrame(true, 0x2, std::string(101, 'a'), true), rec);
    REQUIRE_FALSE(r);
    CHECK(r.error().close_code == 1009);
    CHECK(rec.events.empty());
  }
  SECTION("fragments adding up to more than the limit fail with 1009") {
    WsCodec server(WsRole::kServer, 100);
    Recorder rec;
    REQUIRE(server.Feed(RawFrame(false, 0x1, std::string(60, 'a'), true), rec));
    auto r = server.Feed(RawFrame(true, 0x0, std::string(60, 'a'), true), rec);
    REQUIRE_FALSE(r);
    CHECK(r.error().close_code == 1009);
  }
}

TEST_CASE("codec: protocol violations are reported with the right close code", "[codec]") {
  struct Case {
    const char* name;
    Bytes wire;
    std::uint16_t code;
  };
  const std::string bad_utf8 = "\xC3\x28";
  const std::string surrogate = "\xED\xA0\x80";
  const std::vector<Case> cases = {
      {"unmasked client frame", RawFrame(true, 0x1, "x", false), 1002},
      {"reserved bit", RawFrame(true, 0x1, "x", true, 4), 1002},
      {"unknown opcode", RawFrame(true, 0x3, "x", true), 1002},
      {"continuation first", RawFrame(true, 0x0, "x", true), 1002},
      {"fragmented ping", RawFrame(false, 0x9, "x", true), 1002},
      {"126-byte pong", RawFrame(true, 0xA, std::string(126, 'p'), true), 1002},
      {"64-bit length with the top bit set",
       Bytes{0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4}, 1002},
      {"bad UTF-8 text", RawFrame(true, 0x1, bad_utf8, true), 1007},
      {"surrogate in text", RawFrame(true, 0x1, surrogate, true), 1007},
      {"1-byte close", RawFrame(true, 0x8, "x", true), 1002},
      {"close code 1005", RawFrame(true, 0x8, std::string("\x03\xED", 2), true), 1002},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    WsCodec server(WsRole::kServer, 1024);
    Recorder rec;
    auto r = server.Feed(c.wire, rec);
    REQUIRE_FALSE(r);
    CHECK(r.error().close_code == c.code);
  }
  SECTION("a new data frame while a message is open") {
    WsCodec server(WsRole::kServer, 1024);
    Recorder rec;
    REQUIRE(server.Feed(RawFrame(false, 0x1, "a", true), rec));
    auto r = server.Feed(RawFrame(true, 0x1, "b", true), rec);
    REQUIRE_FALSE(r);
    CHECK(r.error().close_code == 1002);
  }
  SECTION("masked frame from a server") {
    DeterministicRng rng(3);
    WsCodec client(WsRole::kClient, 1024, &rng);
    Recorder rec;
    auto r = client.Feed(RawFrame(true, 0x1, "x", true), rec);
    REQUIRE_FALSE(r);
    CHECK(r.error().close_code == 1002);
  }
}

TEST_CASE("codec: any split of a masked stream decodes to the same messages", "[codec]") {
  // Payload lengths around the 7-bit, 16-bit and 64-bit length forms and the 8-byte unmasking
  // step; a ping interleaved with a fragmented message.
  Bytes wire;
  std::vector<std::string> want;
  for (std::size_t len : {0, 1, 7, 8, 9, 125, 126, 127, 65535, 65536, 70001}) {
    std::string payload(len, ' ');
    for (std::size_t i = 0; i < len; ++i) payload[i] = static_cast<char>('a' + (i * 7 + len) % 26);
    const Bytes f = RawFrame(true, 0x2, payload, true);
    wire.insert(wire.end(), f.begin(), f.end());
    want.push_back(payload);
  }
  for (const Bytes& f :
       {RawFrame(false, 0x1, "frag-", true), RawFrame(true, 0x9, "pi", true),
        RawFrame(false, 0x0, std::string(300, 'm'), true), RawFrame(true, 0x0, "-end", true)}) {
    wire.insert(wire.end(), f.begin(), f.end());
  }
  want.push_back("pi");
  want.push_back("frag-" + std::string(300, 'm') + "-end");
  for (std::size_t step : {1, 2, 3, 5, 13, 64, 4096, 1 << 20}) {
    INFO("chunks of " << step);
    WsCodec server(WsRole::kServer, 80'000);
    Recorder rec;
    for (std::size_t at = 0; at < wire.size(); at += step) {
      const std::size_t n = std::min(step, wire.size() - at);
      REQUIRE(server.Feed(ByteView(wire.data() + at, n), rec));
    }
    std::vector<std::string> got;
    for (const auto& e : rec.events) got.push_back(e.data);
    CHECK(got == want);
  }
}

TEST_CASE("codec: UTF-8 validator", "[codec]") {
  CHECK(IsValidUtf8(""));
  CHECK(IsValidUtf8("plain ascii that is longer than eight bytes"));
  CHECK(IsValidUtf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"));
  CHECK_FALSE(IsValidUtf8("\xC0\xAF"));          // overlong '/'
  CHECK_FALSE(IsValidUtf8("\xE0\x80\xAF"));      // overlong
  CHECK_FALSE(IsValidUtf8("\xF4\x90\x80\x80"));  // > U+10FFFF
  CHECK_FALSE(IsValidUtf8("\xE2\x82"));          // truncated
  CHECK_FALSE(IsValidUtf8("abcdefgh\x80"));      // stray continuation after the fast path
}

TEST_CASE("codec: close frames carry code and reason, truncated to 125 bytes", "[codec]") {
  WsCodec server(WsRole::kServer, 1024);
  Bytes wire;
  server.AppendClose(wire, 1009, std::string(300, 'r'));
  REQUIRE(wire.size() == 2 + 125);
  DeterministicRng rng(5);
  WsCodec client(WsRole::kClient, 1024, &rng);
  Recorder rec;
  REQUIRE(client.Feed(wire, rec));
  REQUIRE(rec.events.size() == 1);
  CHECK(rec.events[0].code == 1009);
  CHECK(rec.events[0].data.size() == 123);
}
