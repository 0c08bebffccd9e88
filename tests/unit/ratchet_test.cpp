#include <catch2/catch.hpp>

#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "agentmesh/core/encoding.hpp"
#include "agentmesh/core/prekey.hpp"
#include "agentmesh/core/ratchet.hpp"

using namespace agentmesh;
using nlohmann::json;

namespace {

enum class Side { kAlice, kBob };

ByteView View(std::string_view s) {
  return ByteView(reinterpret_cast<const std::uint8_t*>(s.data()), s.size());
}
std::string Str(const SecretBuffer& b) { return std::string(b.Expose().begin(), b.Expose().end()); }

SessionId MakeSessionId(std::uint8_t fill) {
  SessionId id;
  for (std::size_t i = 0; i < id.size(); ++i) id.data()[i] = static_cast<std::uint8_t>(fill + i);
  return id;
}

// Alice initiates with Bob's bundle; Bob's session appears when his first message arrives.
class Conversation {
 public:
  explicit Conversation(std::uint64_t seed, bool with_opk = true, std::uint8_t sid = 1)
      : key_rng_(seed),
        alice_rng_(seed * 7 + 1),
        bob_rng_(seed * 7 + 2),
        alice_identity_(X25519KeyPair::Generate(key_rng_)),
        bob_identity_(X25519KeyPair::Generate(key_rng_)),
        bob_signing_(Ed25519KeyPair::Generate(key_rng_)),
        spk_(SignedPrekey::Generate(3, bob_signing_.secret, 0, key_rng_)),
        opk_{17, X25519KeyPair::Generate(key_rng_)},
        with_opk_(with_opk) {
    auto alice = RatchetSession::Initiate(alice_identity_, bundle(), bob_signing_.public_key,
                                          MakeSessionId(sid), alice_rng_);
    REQUIRE(alice);
    alice_.emplace(std::move(*alice));
  }

  PrekeyBundle bundle() const {
    return MakeBundle(bob_identity_.public_key, spk_, with_opk_ ? &opk_ : nullptr);
  }

  Bytes Send(Side from, std::string_view text) {
    auto m = session(from).Encrypt(View(text), from == Side::kAlice ? alice_rng_ : bob_rng_);
    REQUIRE(m);
    return std::move(*m);
  }

  Result<SecretBuffer> TryReceive(Side to, ByteView message) {
    if (to == Side::kBob && !bob_) {
      auto r = RatchetSession::Respond(bob_identity_, spk_, with_opk_ ? &opk_ : nullptr, message);
      if (!r) return std::unexpected(r.error());
      bob_.emplace(std::move(r->session));
      return std::move(r->plaintext);
    }
    return session(to).Decrypt(message);
  }

  void Receive(Side to, ByteView message, std::string_view expected) {
    auto r = TryReceive(to, message);
    INFO((r ? std::string("ok") : r.error().ToString()));
    REQUIRE(r);
    CHECK(Str(*r) == expected);
  }

  RatchetSession& session(Side s) {
    REQUIRE((s == Side::kAlice ? alice_.has_value() : bob_.has_value()));
    return s == Side::kAlice ? *alice_ : *bob_;
  }
  bool has_bob() const { return bob_.has_value(); }
  void Replace(Side s, RatchetSession session) {
    (s == Side::kAlice ? alice_ : bob_).emplace(std::move(session));
  }

  const X25519KeyPair& bob_identity() const { return bob_identity_; }
  const SignedPrekey& spk() const { return spk_; }
  const OneTimePrekey& opk() const { return opk_; }

 private:
  DeterministicRng key_rng_;
  DeterministicRng alice_rng_;
  DeterministicRng bob_rng_;
  X25519KeyPair alice_identity_;
  X25519KeyPair bob_identity_;
  Ed25519KeyPair bob_signing_;
  SignedPrekey spk_;
  OneTimePrekey opk_;
  bool with_opk_;
  std::optional<RatchetSession> alice_;
  std::optional<RatchetSession> bob_;
};

// The message must be rejected and the session left byte-for-byte unchanged.
void ExpectRejected(RatchetSession& s, ByteView message, std::optional<Code> code = std::nullopt) {
  const Bytes before = s.Serialize();
  auto r = s.Decrypt(message);
  REQUIRE_FALSE(r);
  if (code) {
    INFO(r.error().ToString());
    CHECK(r.error().code == *code);
  }
  CHECK(s.Serialize() == before);
}

MessageKind KindOf(const Bytes& m) { return static_cast<MessageKind>(m.at(1)); }

}  // namespace

TEST_CASE("ratchet: ping-pong conversation of 50 rounds", "[ratchet]") {
  for (bool with_opk : {true, false}) {
    INFO("with_opk=" << with_opk);
    Conversation c(11, with_opk);
    for (int round = 0; round < 50; ++round) {
      const std::string a = "alice says " + std::to_string(round);
      Bytes m = c.Send(Side::kAlice, a);
      CHECK(KindOf(m) == (round == 0 ? MessageKind::kPrekeyMessage : MessageKind::kMessage));
      c.Receive(Side::kBob, m, a);
      const std::string b = "bob says " + std::to_string(round);
      Bytes r = c.Send(Side::kBob, b);
      CHECK(KindOf(r) == MessageKind::kMessage);
      c.Receive(Side::kAlice, r, b);
    }
    CHECK(c.session(Side::kAlice).is_initiator());
    CHECK_FALSE(c.session(Side::kBob).is_initiator());
    CHECK(c.session(Side::kAlice).session_id() == c.session(Side::kBob).session_id());
    CHECK(c.session(Side::kAlice).peer_identity_key() ==
          c.session(Side::kBob).local_identity_key());
    CHECK(c.session(Side::kBob).peer_identity_key() ==
          c.session(Side::kAlice).local_identity_key());
    CHECK(c.session(Side::kAlice).skipped_key_count() == 0);
    CHECK(c.session(Side::kBob).skipped_key_count() == 0);
  }
}

TEST_CASE("ratchet: the responder may speak first after the prekey message", "[ratchet]") {
  Conversation c(12);
  Bytes first = c.Send(Side::kAlice, "knock knock");
  auto info = PeekPrekeyMessage(first);
  REQUIRE(info);
  CHECK(info->signed_prekey_id == 3);
  CHECK(info->one_time_prekey_id == std::optional<std::uint32_t>(17));
  CHECK(info->initiator_identity_key == c.session(Side::kAlice).local_identity_key());
  CHECK(info->session_id == c.session(Side::kAlice).session_id());
  c.Receive(Side::kBob, first, "knock knock");
  CHECK_FALSE(c.session(Side::kAlice).has_received());

  Bytes r1 = c.Send(Side::kBob, "who's there?");
  Bytes r2 = c.Send(Side::kBob, "hello?");
  c.Receive(Side::kAlice, r1, "who's there?");
  CHECK(c.session(Side::kAlice).has_received());
  c.Receive(Side::kAlice, r2, "hello?");
  Bytes a = c.Send(Side::kAlice, "alice");
  CHECK(KindOf(a) == MessageKind::kMessage);
  c.Receive(Side::kBob, a, "alice");
}

TEST_CASE("ratchet: lost and reordered first messages", "[ratchet]") {
  Conversation c(13);
  Bytes m0 = c.Send(Side::kAlice, "one");
  Bytes m1 = c.Send(Side::kAlice, "two");
  Bytes m2 = c.Send(Side::kAlice, "three");
  for (const Bytes* m : {&m0, &m1, &m2}) CHECK(KindOf(*m) == MessageKind::kPrekeyMessage);

  c.Receive(Side::kBob, m2, "three");  // the session starts from the third message
  CHECK(c.session(Side::kBob).skipped_key_count() == 2);
  Bytes r = c.Send(Side::kBob, "got three");
  c.Receive(Side::kAlice, r, "got three");
  Bytes a = c.Send(Side::kAlice, "four");
  CHECK(KindOf(a) == MessageKind::kMessage);
  CHECK(c.session(Side::kAlice).previous_chain_length() == 3);
  c.Receive(Side::kBob, a, "four");

  SECTION("the lost messages arrive late") {
    c.Receive(Side::kBob, m0, "one");
    c.Receive(Side::kBob, m1, "two");
    CHECK(c.session(Side::kBob).skipped_key_count() == 0);
  }
  SECTION("the lost messages never arrive; the session keeps working") {
    for (int i = 0; i < 5; ++i) {
      Bytes x = c.Send(Side::kBob, "b" + std::to_string(i));
      c.Receive(Side::kAlice, x, "b" + std::to_string(i));
      Bytes y = c.Send(Side::kAlice, "a" + std::to_string(i));
      c.Receive(Side::kBob, y, "a" + std::to_string(i));
    }
    CHECK(c.session(Side::kBob).skipped_key_count() == 2);
  }
}

TEST_CASE("ratchet: out-of-order delivery within and across DH steps", "[ratchet]") {
  SECTION("scripted") {
    Conversation c(14);
    std::vector<Bytes> a;
    for (int i = 0; i < 5; ++i) a.push_back(c.Send(Side::kAlice, "a" + std::to_string(i)));
    c.Receive(Side::kBob, a[3], "a3");
    c.Receive(Side::kBob, a[1], "a1");
    Bytes b0 = c.Send(Side::kBob, "b0");
    Bytes b1 = c.Send(Side::kBob, "b1");
    c.Receive(Side::kAlice, b1, "b1");
    for (int i = 5; i < 8; ++i) a.push_back(c.Send(Side::kAlice, "a" + std::to_string(i)));
    c.Receive(Side::kBob, a[6], "a6");                      // new chain; stores a4 (pn = 5) and a5
    CHECK(c.session(Side::kBob).skipped_key_count() == 4);  // a0, a2, a4, a5
    c.Receive(Side::kBob, a[0], "a0");
    c.Receive(Side::kBob, a[4], "a4");
    c.Receive(Side::kBob, a[2], "a2");
    c.Receive(Side::kBob, a[7], "a7");
    c.Receive(Side::kBob, a[5], "a5");
    c.Receive(Side::kAlice, b0, "b0");
    CHECK(c.session(Side::kBob).skipped_key_count() == 0);
    CHECK(c.session(Side::kAlice).skipped_key_count() == 0);
  }

  SECTION("random interleaving of sends and deliveries") {
    for (std::uint64_t seed = 1; seed <= 6; ++seed) {
      INFO("seed " << seed);
      Conversation c(100 + seed);
      DeterministicRng chooser(seed);
      struct InFlight {
        Side to;
        Bytes message;
        std::string text;
      };
      std::vector<InFlight> flight;
      int counter = 0;
      auto pick = [&](std::uint32_t bound) {
        return chooser.Array<4>()[0] % bound;  // bound <= 256 here
      };
      for (int step = 0; step < 300 || !flight.empty(); ++step) {
        const std::uint32_t r = pick(10);
        if (step < 300 && r < 3) {
          std::string text = "a" + std::to_string(counter++);
          flight.push_back({Side::kBob, c.Send(Side::kAlice, text), text});
        } else if (step < 300 && r < 6 && c.has_bob()) {
          std::string text = "b" + std::to_string(counter++);
          flight.push_back({Side::kAlice, c.Send(Side::kBob, text), text});
        } else if (!flight.empty()) {
          const std::size_t i =
              pick(static_cast<std::uint32_t>(std::min<std::size_t>(flight.size(), 256)));
          InFlight f = std::move(flight[i]);
          flight.erase(flight.begin() + static_cast<std::ptrdiff_t>(i));
          c.Receive(f.to, f.message, f.text);
        }
      }
      CHECK(c.session(Side::kAlice).skipped_key_count() == 0);
      CHECK(c.session(Side::kBob).skipped_key_count() == 0);
    }
  }
}

TEST_CASE("ratchet: every replay is rejected with kReplay and changes nothing", "[ratchet]") {
  Conversation c(15);
  std::vector<Bytes> to_bob, to_alice;
  auto replay_all = [&] {
    for (const Bytes& m : to_bob) ExpectRejected(c.session(Side::kBob), m, Code::kReplay);
    if (c.has_bob()) {
      for (const Bytes& m : to_alice) ExpectRejected(c.session(Side::kAlice), m, Code::kReplay);
    }
  };
  std::vector<Bytes> a;
  for (int i = 0; i < 4; ++i) a.push_back(c.Send(Side::kAlice, "a" + std::to_string(i)));
  for (int i : {2, 0, 3, 1}) {
    c.Receive(Side::kBob, a[i], "a" + std::to_string(i));
    to_bob.push_back(a[i]);
    replay_all();
  }
  for (int round = 0; round < 6; ++round) {
    Bytes b0 = c.Send(Side::kBob, "b0");
    Bytes b1 = c.Send(Side::kBob, "b1");
    c.Receive(Side::kAlice, b1, "b1");
    to_alice.push_back(b1);
    replay_all();
    c.Receive(Side::kAlice, b0, "b0");
    to_alice.push_back(b0);
    replay_all();
    Bytes x = c.Send(Side::kAlice, "x");
    c.Receive(Side::kBob, x, "x");
    to_bob.push_back(x);
    replay_all();
  }
  // The replayed first message must not start a second session on the daemon's lookup path
  // either: it names the existing session id, whose Decrypt says kReplay.
  CHECK(PeekPrekeyMessage(a[0])->session_id == c.session(Side::kBob).session_id());

  // Both sides still work after all the replays.
  Bytes y = c.Send(Side::kBob, "still fine");
  c.Receive(Side::kAlice, y, "still fine");
  Bytes z = c.Send(Side::kAlice, "yes");
  c.Receive(Side::kBob, z, "yes");
}

TEST_CASE("ratchet: tampering and truncation fail without changing state", "[ratchet]") {
  Conversation c(16);
  Bytes p0 = c.Send(Side::kAlice, "prekey message zero");
  Bytes p1 = c.Send(Side::kAlice, "prekey message one");

  auto check_all_mutations = [&](Side to, const Bytes& genuine, bool via_respond) {
    for (std::size_t i = 0; i < genuine.size(); ++i) {
      for (std::uint8_t mask : {0x01, 0x80}) {
        Bytes bad = genuine;
        bad[i] ^= mask;
        INFO("byte " << i << " mask " << int(mask));
        if (via_respond) {
          auto r = RatchetSession::Respond(c.bob_identity(), c.spk(), &c.opk(), bad);
          CHECK_FALSE(r);
        } else {
          ExpectRejected(c.session(to), bad);
        }
      }
    }
    for (std::size_t len = 0; len < genuine.size(); ++len) {
      INFO("truncated to " << len);
      const ByteView cut(genuine.data(), len);
      if (via_respond) {
        auto r = RatchetSession::Respond(c.bob_identity(), c.spk(), &c.opk(), cut);
        REQUIRE_FALSE(r);
        CHECK(r.error().code ==
              (len < kPrekeyMessageOverhead ? Code::kInvalidArgument : Code::kAuthFailed));
      } else {
        ExpectRejected(c.session(to), cut);
      }
    }
    // Appending bytes changes the ciphertext: it must fail as well.
    Bytes longer = genuine;
    longer.push_back(0);
    if (via_respond) {
      CHECK_FALSE(RatchetSession::Respond(c.bob_identity(), c.spk(), &c.opk(), longer));
    } else {
      ExpectRejected(c.session(to), longer, Code::kAuthFailed);
    }
  };

  // A prekey message that would create Bob's session.
  check_all_mutations(Side::kBob, p0, true);
  c.Receive(Side::kBob, p0, "prekey message zero");
  // A prekey message for an existing session (same chain).
  check_all_mutations(Side::kBob, p1, false);
  c.Receive(Side::kBob, p1, "prekey message one");
  // A message that carries a new ratchet key (DH step at Alice).
  Bytes b0 = c.Send(Side::kBob, "first reply");
  Bytes b1 = c.Send(Side::kBob, "second reply");
  check_all_mutations(Side::kAlice, b0, false);
  c.Receive(Side::kAlice, b0, "first reply");
  // A message in the current receiving chain.
  check_all_mutations(Side::kAlice, b1, false);
  c.Receive(Side::kAlice, b1, "second reply");
  // A message that needs a stored skipped key.
  Bytes a0 = c.Send(Side::kAlice, "skipped");
  Bytes a1 = c.Send(Side::kAlice, "delivered");
  c.Receive(Side::kBob, a1, "delivered");
  check_all_mutations(Side::kBob, a0, false);
  c.Receive(Side::kBob, a0, "skipped");
}

TEST_CASE("ratchet: skip limits (MAX_SKIP = 1000)", "[ratchet]") {
  Conversation c(17);
  std::vector<Bytes> a;
  for (int i = 0; i < 1003; ++i) a.push_back(c.Send(Side::kAlice, "m" + std::to_string(i)));

  SECTION("a new chain may start at n = 1000") {
    c.Receive(Side::kBob, a[1000], "m1000");
    CHECK(c.session(Side::kBob).skipped_key_count() == 1000);
    c.Receive(Side::kBob, a[0], "m0");
    c.Receive(Side::kBob, a[999], "m999");
  }
  SECTION("a new chain may not start at n = 1001") {
    auto r = c.TryReceive(Side::kBob, a[1001]);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kLimitExceeded);
  }
  SECTION("skipping exactly 1000 in the current chain works, 1001 does not") {
    c.Receive(Side::kBob, a[0], "m0");
    ExpectRejected(c.session(Side::kBob), a[1002], Code::kLimitExceeded);
    c.Receive(Side::kBob, a[1001], "m1001");
    CHECK(c.session(Side::kBob).skipped_key_count() == 1000);
    c.Receive(Side::kBob, a[1002], "m1002");
    c.Receive(Side::kBob, a[500], "m500");
    CHECK(c.session(Side::kBob).skipped_key_count() == 999);
  }
}

TEST_CASE("ratchet: pn bounds the keys kept for the previous chain", "[ratchet]") {
  for (int extra : {0, 1}) {
    INFO("alice sends " << 1001 + extra << " messages in her first chain");
    Conversation c(18);
    std::vector<Bytes> a;
    for (int i = 0; i < 1001 + extra; ++i) a.push_back(c.Send(Side::kAlice, "m"));
    c.Receive(Side::kBob, a[0], "m");
    Bytes b = c.Send(Side::kBob, "reply");
    c.Receive(Side::kAlice, b, "reply");
    Bytes next = c.Send(Side::kAlice, "new chain");
    CHECK(ParseMessageHeader(next)->previous_chain_length == std::uint32_t(1001 + extra));
    if (extra == 0) {
      c.Receive(Side::kBob, next, "new chain");  // keeps 1000 keys of the old chain
      CHECK(c.session(Side::kBob).skipped_key_count() == 1000);
      c.Receive(Side::kBob, a[1000], "m");
    } else {
      ExpectRejected(c.session(Side::kBob), next, Code::kLimitExceeded);
    }
  }
}

TEST_CASE("ratchet: the skipped-key store is bounded and evicts the oldest", "[ratchet]") {
  Conversation c(19);
  std::vector<std::vector<Bytes>> chains;
  for (int chain = 0; chain < 3; ++chain) {
    std::vector<Bytes> a;
    for (int i = 0; i < 1001; ++i) {
      a.push_back(c.Send(Side::kAlice, std::to_string(chain) + ":" + std::to_string(i)));
    }
    c.Receive(Side::kBob, a[1000], std::to_string(chain) + ":1000");  // skips 1000
    CHECK(c.session(Side::kBob).skipped_key_count() ==
          std::min<std::size_t>(2000, 1000 * (chain + 1)));
    chains.push_back(std::move(a));
    Bytes r = c.Send(Side::kBob, "r");
    c.Receive(Side::kAlice, r, "r");
  }
  CHECK(c.session(Side::kBob).skipped_key_count() == kMaxSkippedKeys);
  // The first chain's keys were evicted; its messages can no longer be read.
  ExpectRejected(c.session(Side::kBob), chains[0][0]);
  ExpectRejected(c.session(Side::kBob), chains[0][999]);
  c.Receive(Side::kBob, chains[1][0], "1:0");
  c.Receive(Side::kBob, chains[2][999], "2:999");
  CHECK(c.session(Side::kBob).skipped_key_count() == kMaxSkippedKeys - 2);
}

TEST_CASE("ratchet: Serialize/Deserialize round trip mid-conversation", "[ratchet]") {
  Conversation c(20);
  std::vector<Bytes> a;
  for (int i = 0; i < 4; ++i) a.push_back(c.Send(Side::kAlice, "a" + std::to_string(i)));
  c.Receive(Side::kBob, a[3], "a3");  // Bob keeps skipped keys a0..a2
  Bytes b0 = c.Send(Side::kBob, "b0");
  Bytes b1 = c.Send(Side::kBob, "b1");
  c.Receive(Side::kAlice, b1, "b1");      // Alice keeps b0's key
  Bytes a4 = c.Send(Side::kAlice, "a4");  // Alice mid-chain, Bob pending step
  for (Side s : {Side::kAlice, Side::kBob}) {
    const Bytes state = c.session(s).Serialize();
    auto restored = RatchetSession::Deserialize(state);
    REQUIRE(restored);
    CHECK(restored->Serialize() == state);
    CHECK(restored->session_id() == c.session(s).session_id());
    CHECK(restored->is_initiator() == c.session(s).is_initiator());
    CHECK(restored->skipped_key_count() == c.session(s).skipped_key_count());
    c.Replace(s, std::move(*restored));
  }
  c.Receive(Side::kBob, a4, "a4");
  c.Receive(Side::kBob, a[0], "a0");
  c.Receive(Side::kAlice, b0, "b0");
  for (int i = 0; i < 3; ++i) {
    Bytes x = c.Send(Side::kBob, "x");
    c.Receive(Side::kAlice, x, "x");
    Bytes y = c.Send(Side::kAlice, "y");
    c.Receive(Side::kBob, y, "y");
    // Round-trip again at every step.
    for (Side s : {Side::kAlice, Side::kBob}) {
      auto restored = RatchetSession::Deserialize(c.session(s).Serialize());
      REQUIRE(restored);
      c.Replace(s, std::move(*restored));
    }
  }
  c.Receive(Side::kBob, a[1], "a1");
  c.Receive(Side::kBob, a[2], "a2");

  SECTION("an initiator that has not received anything yet") {
    Conversation fresh(21);
    Bytes m = fresh.Send(Side::kAlice, "m");
    auto restored = RatchetSession::Deserialize(fresh.session(Side::kAlice).Serialize());
    REQUIRE(restored);
    CHECK_FALSE(restored->has_received());
    fresh.Replace(Side::kAlice, std::move(*restored));
    Bytes m2 = fresh.Send(Side::kAlice, "m2");
    CHECK(KindOf(m2) == MessageKind::kPrekeyMessage);
    fresh.Receive(Side::kBob, m2, "m2");
    fresh.Receive(Side::kBob, m, "m");
  }
}

TEST_CASE("ratchet: Deserialize rejects truncations and garbage cleanly", "[ratchet]") {
  Conversation c(22);
  std::vector<Bytes> a;
  for (int i = 0; i < 3; ++i) a.push_back(c.Send(Side::kAlice, "a"));
  c.Receive(Side::kBob, a[2], "a");
  for (int i = 0; i < 3; ++i) {
    Bytes r = c.Send(Side::kBob, "r");
    c.Receive(Side::kAlice, r, "r");
    Bytes x = c.Send(Side::kAlice, "x");
    c.Receive(Side::kBob, x, "x");
  }
  const Bytes state = c.session(Side::kBob).Serialize();  // has skipped and previous keys
  REQUIRE(RatchetSession::Deserialize(state));

  for (std::size_t len = 0; len < state.size(); ++len) {
    INFO("truncated to " << len);
    auto r = RatchetSession::Deserialize(ByteView(state.data(), len));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kCorrupt);
  }
  {
    Bytes trailing = state;
    trailing.push_back(0);
    auto r = RatchetSession::Deserialize(trailing);
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kCorrupt);
  }
  {
    Bytes flags = state;
    flags[5] |= 0x10;
    CHECK_FALSE(RatchetSession::Deserialize(flags));
    Bytes version = state;
    version[4] = 2;
    CHECK_FALSE(RatchetSession::Deserialize(version));
  }
  {
    // An initiator mid-chain has its own ratchet secret: corrupting it must be detected.
    Bytes alice = c.session(Side::kAlice).Serialize();
    if (alice[5] & 0x04) {
      alice[234] ^= 0x40;
      auto r = RatchetSession::Deserialize(alice);
      REQUIRE_FALSE(r);
      CHECK(r.error().code == Code::kCorrupt);
    }
  }
  // Every single-bit flip either parses or fails with kCorrupt; never anything else.
  for (std::size_t i = 0; i < state.size(); ++i) {
    for (std::uint8_t mask : {0x01, 0x80}) {
      Bytes bad = state;
      bad[i] ^= mask;
      auto r = RatchetSession::Deserialize(bad);
      if (!r) CHECK(r.error().code == Code::kCorrupt);
    }
  }
  DeterministicRng rng(23);
  for (int i = 0; i < 2000; ++i) {
    Bytes junk(rng.Array<2>()[0] * 3);
    rng.Fill(MutableByteView(junk));
    if (i % 2 == 0 && junk.size() >= 6) {
      junk[0] = 'A';
      junk[1] = 'M';
      junk[2] = 'R';
      junk[3] = 'S';
      junk[4] = 1;
      junk[5] &= 0x0f;
    }
    auto r = RatchetSession::Deserialize(junk);
    if (!r) CHECK(r.error().code == Code::kCorrupt);
  }
}

TEST_CASE("ratchet: messages of another session are rejected", "[ratchet]") {
  Conversation one(24, true, 1);
  Conversation two(24, true, 2);  // same keys, different session id
  Bytes m1 = one.Send(Side::kAlice, "one");
  Bytes m2 = two.Send(Side::kAlice, "two");
  one.Receive(Side::kBob, m1, "one");
  ExpectRejected(one.session(Side::kBob), m2, Code::kInvalidArgument);
  Bytes r = one.Send(Side::kBob, "reply");
  ExpectRejected(two.session(Side::kAlice), r, Code::kInvalidArgument);
  one.Receive(Side::kAlice, r, "reply");
}

TEST_CASE("ratchet: header parsing and role checks", "[ratchet]") {
  Conversation c(25);
  Bytes p = c.Send(Side::kAlice, "hello");
  auto h = ParseMessageHeader(p);
  REQUIRE(h);
  CHECK(h->kind == MessageKind::kPrekeyMessage);
  CHECK(h->header_size == 154);
  CHECK(h->ciphertext_size == 5 + 16);
  CHECK(p.size() == kPrekeyMessageOverhead + 5);
  CHECK(h->message_number == 0);
  CHECK(h->previous_chain_length == 0);
  REQUIRE(h->prekey);
  CHECK(h->prekey->one_time_prekey_id == std::optional<std::uint32_t>(17));

  // The initiator never accepts a prekey message (not even its own).
  ExpectRejected(c.session(Side::kAlice), p, Code::kInvalidArgument);

  c.Receive(Side::kBob, p, "hello");
  Bytes m = c.Send(Side::kBob, "");
  CHECK(m.size() == kMessageOverhead);
  auto peek = PeekPrekeyMessage(m);
  REQUIRE_FALSE(peek);
  CHECK(peek.error().code == Code::kInvalidArgument);
  auto respond = RatchetSession::Respond(c.bob_identity(), c.spk(), &c.opk(), m);
  REQUIRE_FALSE(respond);
  CHECK(respond.error().code == Code::kInvalidArgument);
  c.Receive(Side::kAlice, m, "");

  for (std::size_t len : {0, 1, 2, 17, 97}) {
    auto r = ParseMessageHeader(ByteView(m.data(), len));
    REQUIRE_FALSE(r);
    CHECK(r.error().code == Code::kInvalidArgument);
  }
}

TEST_CASE("ratchet: Respond checks the prekeys it is given", "[ratchet]") {
  Conversation c(26);
  Bytes p = c.Send(Side::kAlice, "hi");
  DeterministicRng rng(27);
  auto expect = [&](Result<RatchetSession::Responded> r, Code code) {
    REQUIRE_FALSE(r);
    CHECK(r.error().code == code);
  };
  expect(RatchetSession::Respond(c.bob_identity(), c.spk(), nullptr, p), Code::kInvalidArgument);
  OneTimePrekey other_id{18, c.opk().pair.Clone()};
  expect(RatchetSession::Respond(c.bob_identity(), c.spk(), &other_id, p), Code::kInvalidArgument);
  SignedPrekey other_spk = c.spk().Clone();
  other_spk.id = 4;
  expect(RatchetSession::Respond(c.bob_identity(), other_spk, &c.opk(), p), Code::kInvalidArgument);
  // Right ids, wrong secrets: the AEAD does not open.
  SignedPrekey wrong_spk{3, X25519KeyPair::Generate(rng), {}, 0};
  expect(RatchetSession::Respond(c.bob_identity(), wrong_spk, &c.opk(), p), Code::kAuthFailed);
  OneTimePrekey wrong_opk{17, X25519KeyPair::Generate(rng)};
  expect(RatchetSession::Respond(c.bob_identity(), c.spk(), &wrong_opk, p), Code::kAuthFailed);
  expect(RatchetSession::Respond(X25519KeyPair::Generate(rng), c.spk(), &c.opk(), p),
         Code::kAuthFailed);
  c.Receive(Side::kBob, p, "hi");

  Conversation no_opk(28, false);
  Bytes q = no_opk.Send(Side::kAlice, "no opk");
  CHECK_FALSE(PeekPrekeyMessage(q)->one_time_prekey_id.has_value());
  expect(RatchetSession::Respond(no_opk.bob_identity(), no_opk.spk(), &no_opk.opk(), q),
         Code::kInvalidArgument);
  no_opk.Receive(Side::kBob, q, "no opk");
}

TEST_CASE("ratchet: Initiate verifies the bundle", "[ratchet]") {
  Conversation c(29);
  DeterministicRng rng(30);
  PrekeyBundle bad = c.bundle();
  bad.signed_prekey_signature.data()[0] ^= 1;
  auto r =
      RatchetSession::Initiate(X25519KeyPair::Generate(rng), bad,
                               Ed25519KeyPair::Generate(rng).public_key, MakeSessionId(9), rng);
  REQUIRE_FALSE(r);
  CHECK(r.error().code == Code::kAuthFailed);
}

TEST_CASE("ratchet: published transcript vectors", "[ratchet]") {
  std::ifstream in(std::string(AGENTMESH_VECTORS_DIR) + "/ratchet.json");
  REQUIRE(in.good());
  const json v = json::parse(in, nullptr, false);
  REQUIRE_FALSE(v.is_discarded());
  auto hex = [&](const char* name) {
    auto raw = HexDecode(v.at(name).get<std::string>());
    REQUIRE(raw);
    return *raw;
  };
  auto secret = [&](const char* name) {
    X25519SecretKey key;
    REQUIRE(X25519SecretKey::FromBytes(hex(name), key));
    return X25519KeyPair::FromSecret(std::move(key));
  };
  auto seed32 = [&](const char* name) {
    std::array<std::uint8_t, 32> seed{};
    const Bytes raw = hex(name);
    REQUIRE(raw.size() == 32);
    std::copy(raw.begin(), raw.end(), seed.begin());
    return seed;
  };
  X25519KeyPair alice_identity = secret("alice_identity_secret");
  X25519KeyPair bob_identity = secret("bob_identity_secret");
  CHECK(HexEncode(alice_identity.public_key.view()) == v.at("alice_identity_public"));
  CHECK(HexEncode(bob_identity.public_key.view()) == v.at("bob_identity_public"));
  Ed25519Seed signing_seed;
  REQUIRE(Ed25519Seed::FromBytes(hex("bob_signing_seed"), signing_seed));
  Ed25519KeyPair bob_signing = Ed25519KeyPair::FromSeed(signing_seed);
  SignedPrekey spk{
      v.at("signed_prekey_id").get<std::uint32_t>(), secret("bob_signed_prekey_secret"), {}, 0};
  spk.signature = SignPrekey(bob_signing.secret, spk.pair.public_key);
  CHECK(HexEncode(spk.signature.view()) == v.at("signed_prekey_signature"));
  OneTimePrekey opk{v.at("one_time_prekey_id").get<std::uint32_t>(),
                    secret("bob_one_time_prekey_secret")};
  SessionId sid;
  REQUIRE(SessionId::FromBytes(hex("session_id"), sid));

  DeterministicRng alice_rng(seed32("alice_rng_seed"));
  DeterministicRng bob_rng(seed32("bob_rng_seed"));
  auto alice =
      RatchetSession::Initiate(alice_identity, MakeBundle(bob_identity.public_key, spk, &opk),
                               bob_signing.public_key, sid, alice_rng);
  REQUIRE(alice);
  std::optional<RatchetSession> bob;

  std::vector<Bytes> stored;
  std::vector<std::string> texts;
  std::size_t sends = 0, receives = 0;
  for (const json& e : v.at("events")) {
    if (e.at("op") == "send") {
      const std::string text = e.at("plaintext").get<std::string>();
      const bool from_alice = e.at("from") == "alice";
      REQUIRE((from_alice || bob.has_value()));
      auto produced =
          (from_alice ? *alice : *bob).Encrypt(View(text), from_alice ? alice_rng : bob_rng);
      REQUIRE(produced);
      auto expected = HexDecode(e.at("message").get<std::string>());
      REQUIRE(expected);
      CHECK(HexEncode(*produced) == HexEncode(*expected));  // byte for byte
      stored.push_back(std::move(*expected));
      texts.push_back(text);
      ++sends;
    } else {
      const std::size_t index = e.at("index").get<std::size_t>();
      REQUIRE(index < stored.size());
      SecretBuffer plaintext;
      if (e.at("to") == "bob" && !bob) {
        auto r = RatchetSession::Respond(bob_identity, spk, &opk, stored[index]);
        REQUIRE(r);
        bob.emplace(std::move(r->session));
        plaintext = std::move(r->plaintext);
      } else {
        auto r = (e.at("to") == "alice" ? *alice : *bob).Decrypt(stored[index]);
        REQUIRE(r);
        plaintext = std::move(*r);
      }
      CHECK(Str(plaintext) == texts[index]);
      ++receives;
    }
  }
  CHECK(sends == 7);
  CHECK(receives == 7);
}
