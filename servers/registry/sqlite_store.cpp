#include "sqlite_store.hpp"

#include <fmt/format.h>

#include <sqlite3.h>
#include <array>
#include <condition_variable>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "agentmesh/storage/checkpointer.hpp"
#include "agentmesh/storage/sqlite.hpp"

namespace agentmesh::registry {
namespace {

using storage::Database;
using storage::Statement;

// Versioned schema: entry i brings the database from user_version i to i + 1. Never edit a
// released entry; append a new one.
constexpr std::array<std::string_view, 4> kMigrations = {
    R"sql(
CREATE TABLE agents (
  amid TEXT PRIMARY KEY,
  signing_public_key TEXT NOT NULL,
  exchange_public_key TEXT NOT NULL,
  tier_rank INTEGER NOT NULL DEFAULT 0 CHECK (tier_rank IN (0, 1, 2)),
  display_name TEXT,
  organization TEXT,
  capabilities TEXT NOT NULL DEFAULT '[]',
  relay_endpoint TEXT,
  direct_endpoint TEXT,
  status TEXT NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'away', 'offline', 'dnd')),
  reputation_score REAL NOT NULL DEFAULT 0.5,
  last_seen INTEGER NOT NULL,
  created_at INTEGER NOT NULL,
  updated_at INTEGER NOT NULL,
  revoked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX agents_order ON agents (revoked, reputation_score DESC, last_seen DESC, amid);
CREATE TABLE agent_capabilities (
  amid TEXT NOT NULL REFERENCES agents (amid) ON DELETE CASCADE,
  capability TEXT NOT NULL,
  PRIMARY KEY (amid, capability)
) WITHOUT ROWID;
CREATE INDEX agent_capabilities_by_capability ON agent_capabilities (capability, amid);
CREATE TABLE signed_prekeys (
  amid TEXT NOT NULL REFERENCES agents (amid) ON DELETE CASCADE,
  prekey_id INTEGER NOT NULL,
  public_key TEXT NOT NULL,
  signature TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  PRIMARY KEY (amid, prekey_id)
) WITHOUT ROWID;
CREATE TABLE one_time_prekeys (
  amid TEXT NOT NULL REFERENCES agents (amid) ON DELETE CASCADE,
  prekey_id INTEGER NOT NULL,
  public_key TEXT NOT NULL,
  consumed INTEGER NOT NULL DEFAULT 0,
  consumed_at INTEGER,
  PRIMARY KEY (amid, prekey_id)
) WITHOUT ROWID;
CREATE INDEX one_time_prekeys_available ON one_time_prekeys (amid, consumed, prekey_id);
CREATE TABLE revocations (
  amid TEXT PRIMARY KEY REFERENCES agents (amid),
  id TEXT NOT NULL UNIQUE,
  reason TEXT NOT NULL,
  revoked_by TEXT NOT NULL,
  revoked_at INTEGER NOT NULL,
  notes TEXT
);
CREATE INDEX revocations_by_time ON revocations (revoked_at, amid);
CREATE TABLE reputation_feedback (
  id TEXT PRIMARY KEY,
  target_amid TEXT NOT NULL,
  from_amid TEXT NOT NULL,
  session_id TEXT NOT NULL,
  score REAL NOT NULL,
  tags TEXT NOT NULL DEFAULT '[]',
  ip_key TEXT NOT NULL DEFAULT '',
  created_at INTEGER NOT NULL,
  UNIQUE (from_amid, session_id)
);
CREATE INDEX reputation_feedback_by_target ON reputation_feedback (target_amid, created_at);
CREATE TABLE completed_sessions (
  session_id TEXT PRIMARY KEY,
  id TEXT NOT NULL,
  initiator_amid TEXT NOT NULL,
  receiver_amid TEXT NOT NULL,
  intent TEXT NOT NULL,
  outcome TEXT NOT NULL,
  started_at INTEGER,
  reporter_amid TEXT NOT NULL,
  created_at INTEGER NOT NULL
);
CREATE INDEX completed_sessions_by_initiator ON completed_sessions (initiator_amid);
CREATE INDEX completed_sessions_by_receiver ON completed_sessions (receiver_amid);
)sql",
    // 2: organisations (DNS verification, certificates) and OAuth (Tier 1).
    R"sql(
CREATE TABLE organizations (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  domain TEXT NOT NULL UNIQUE,
  admin_amid TEXT NOT NULL,
  admin_signing_key TEXT NOT NULL,
  dns_challenge TEXT NOT NULL,
  verified INTEGER NOT NULL DEFAULT 0,
  verified_at INTEGER,
  root_certificate TEXT,
  created_at INTEGER NOT NULL
);
CREATE INDEX organizations_by_admin ON organizations (admin_amid);
CREATE TABLE organization_agents (
  amid TEXT PRIMARY KEY REFERENCES agents (amid) ON DELETE CASCADE,
  organization_id TEXT NOT NULL REFERENCES organizations (id),
  certificate TEXT NOT NULL,
  added_at INTEGER NOT NULL
);
CREATE INDEX organization_agents_by_org ON organization_agents (organization_id);
CREATE TABLE oauth_states (
  state TEXT PRIMARY KEY,
  amid TEXT NOT NULL,
  provider TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  expires_at INTEGER NOT NULL,
  consumed INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX oauth_states_by_expiry ON oauth_states (expires_at);
CREATE TABLE agent_verifications (
  amid TEXT NOT NULL REFERENCES agents (amid) ON DELETE CASCADE,
  provider TEXT NOT NULL,
  provider_id TEXT NOT NULL,
  verified_at INTEGER NOT NULL,
  certificate TEXT NOT NULL,
  PRIMARY KEY (amid, provider)
);
)sql",
    // 3: the search index. One row per (agent, term): "=" + each capability and
    // "^" + each of its prefixes ending in '/' (and "^" alone, for "*"),
    // carrying the agent's order and filter columns, so a search page is one
    // index range scan in result order; live (not revoked) rows are counted per
    // term, so the total of an unfiltered search is one lookup. Triggers keep
    // both in step with agents (presence, reputation, revocation, tier).
    R"sql(
CREATE TABLE search_terms (
  term TEXT NOT NULL,
  amid TEXT NOT NULL REFERENCES agents (amid) ON DELETE CASCADE,
  revoked INTEGER NOT NULL,
  reputation_score REAL NOT NULL,
  last_seen INTEGER NOT NULL,
  tier_rank INTEGER NOT NULL,
  status TEXT NOT NULL,
  PRIMARY KEY (amid, term)
) WITHOUT ROWID;
INSERT OR IGNORE INTO search_terms
  WITH RECURSIVE p (amid, cap, pos) AS (
    SELECT amid, capability, instr(capability, '/') FROM agent_capabilities
    UNION ALL
    SELECT amid, cap, pos + instr(substr(cap, pos + 1), '/') FROM p
    WHERE instr(substr(cap, pos + 1), '/') > 0)
  SELECT '^' || substr(p.cap, 1, p.pos), a.amid, a.revoked, a.reputation_score, a.last_seen,
         a.tier_rank, a.status
  FROM p JOIN agents a ON a.amid = p.amid WHERE p.pos > 0;
INSERT OR IGNORE INTO search_terms
  SELECT '=' || c.capability, a.amid, a.revoked, a.reputation_score, a.last_seen, a.tier_rank,
         a.status FROM agent_capabilities c JOIN agents a ON a.amid = c.amid;
INSERT OR IGNORE INTO search_terms
  SELECT '^', a.amid, a.revoked, a.reputation_score, a.last_seen, a.tier_rank, a.status
  FROM agents a WHERE EXISTS (SELECT 1 FROM agent_capabilities c WHERE c.amid = a.amid);
CREATE INDEX search_terms_order ON search_terms
  (term, revoked, reputation_score DESC, last_seen DESC, amid, tier_rank, status);
CREATE TABLE search_term_counts (term TEXT PRIMARY KEY, live INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO search_term_counts
  SELECT term, count(*) FROM search_terms WHERE revoked = 0 GROUP BY term;
CREATE TRIGGER search_terms_counted AFTER INSERT ON search_terms WHEN new.revoked = 0 BEGIN
  INSERT INTO search_term_counts (term, live) VALUES (new.term, 1)
    ON CONFLICT (term) DO UPDATE SET live = live + 1;
END;
CREATE TRIGGER search_terms_uncounted AFTER DELETE ON search_terms WHEN old.revoked = 0 BEGIN
  UPDATE search_term_counts SET live = live - 1 WHERE term = old.term;
END;
CREATE TRIGGER search_terms_revoked AFTER UPDATE OF revoked ON search_terms
  WHEN old.revoked <> new.revoked BEGIN
  UPDATE search_term_counts SET live = live + (CASE WHEN new.revoked = 0 THEN 1 ELSE -1 END)
    WHERE term = new.term;
END;
CREATE TRIGGER agents_search_sync
  AFTER UPDATE OF revoked, reputation_score, last_seen, tier_rank, status ON agents
  WHEN old.revoked IS NOT new.revoked OR old.reputation_score IS NOT new.reputation_score
    OR old.last_seen IS NOT new.last_seen OR old.tier_rank IS NOT new.tier_rank
    OR old.status IS NOT new.status BEGIN
  UPDATE search_terms SET revoked = new.revoked, reputation_score = new.reputation_score,
    last_seen = new.last_seen, tier_rank = new.tier_rank, status = new.status
    WHERE amid = new.amid;
END;
)sql",
    // 4: agent_capabilities goes. Its (amid, capability) pairs are the "=" rows of search_terms,
    // which also serve any prefix as a range of "=" terms, and its two B-trees cost every
    // registration about three more random leaves to write.
    R"sql(
DROP TABLE agent_capabilities;
)sql",
};

// WAL frames (pages) at which the checkpointer thread is woken, and at which a commit finishes
// the checkpoint inline so that the WAL restarts (storage/checkpointer.hpp): the WAL file stays
// under ~160 MB. registry_bench, 1 M agents: registrations 2.2 k/s -> 3.3 k/s, p99 133 -> 35 ms.
constexpr int kCheckpointBackgroundPages = 4000;
constexpr int kCheckpointInlinePages = 40000;

constexpr std::string_view kAgentColumns =
    "a.amid, a.signing_public_key, a.exchange_public_key, a.tier_rank, a.display_name, "
    "a.organization, a.capabilities, a.relay_endpoint, a.direct_endpoint, a.status, "
    "a.reputation_score, a.last_seen, a.created_at, a.updated_at, a.revoked";
constexpr int kAgentColumnCount = 15;

Tier TierFromRank(std::int64_t rank) {
  return rank >= 2 ? Tier::kOrganization : rank == 1 ? Tier::kVerified : Tier::kAnonymous;
}

std::optional<std::string> OptText(const Statement& s, int i) {
  if (s.ColumnIsNull(i)) return std::nullopt;
  return std::string(s.ColumnText(i));
}

std::vector<std::string> JsonStrings(std::string_view text) {
  std::vector<std::string> out;
  auto doc = nlohmann::json::parse(text, nullptr, false);
  if (!doc.is_array()) return out;
  for (const auto& v : doc) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

std::string StringsJson(std::span<const std::string> values) {
  nlohmann::json doc = nlohmann::json::array();
  for (const auto& v : values) doc.push_back(v);
  return doc.dump();
}

AgentRecord ReadAgent(const Statement& s) {
  AgentRecord a;
  a.amid = std::string(s.ColumnText(0));
  a.signing_public_key = std::string(s.ColumnText(1));
  a.exchange_public_key = std::string(s.ColumnText(2));
  a.tier = TierFromRank(s.ColumnInt(3));
  a.display_name = OptText(s, 4);
  a.organization = OptText(s, 5);
  a.capabilities = JsonStrings(s.ColumnText(6));
  a.relay_endpoint = OptText(s, 7);
  a.direct_endpoint = OptText(s, 8);
  a.status = PresenceFromName(s.ColumnText(9)).value_or(Presence::kOffline);
  a.reputation_score = s.ColumnDouble(10);
  a.last_seen = s.ColumnInt(11);
  a.created_at = s.ColumnInt(12);
  a.updated_at = s.ColumnInt(13);
  a.revoked = s.ColumnInt(14) != 0;
  return a;
}

constexpr std::string_view kOrganizationColumns =
    "id, name, domain, admin_amid, admin_signing_key, dns_challenge, verified, verified_at, "
    "root_certificate, created_at";

OrganizationRecord ReadOrganization(const Statement& s) {
  OrganizationRecord o;
  o.id = std::string(s.ColumnText(0));
  o.name = std::string(s.ColumnText(1));
  o.domain = std::string(s.ColumnText(2));
  o.admin_amid = std::string(s.ColumnText(3));
  o.admin_signing_key = std::string(s.ColumnText(4));
  o.dns_challenge = std::string(s.ColumnText(5));
  o.verified = s.ColumnInt(6) != 0;
  if (!s.ColumnIsNull(7)) o.verified_at = s.ColumnInt(7);
  o.root_certificate = OptText(s, 8);
  o.created_at = s.ColumnInt(9);
  return o;
}

RevocationRecord ReadRevocation(const Statement& s) {
  RevocationRecord r;
  r.amid = std::string(s.ColumnText(0));
  r.id = std::string(s.ColumnText(1));
  r.reason = std::string(s.ColumnText(2));
  r.revoked_by = std::string(s.ColumnText(3));
  r.revoked_at = s.ColumnInt(4);
  r.notes = OptText(s, 5);
  return r;
}

// The smallest string greater than every string starting with `prefix` (byte order), or nullopt
// when there is none (empty prefix or all 0xff bytes).
std::optional<std::string> PrefixUpperBound(std::string prefix) {
  while (!prefix.empty()) {
    auto& last = reinterpret_cast<unsigned char&>(prefix.back());
    if (last != 0xff) {
      ++last;
      return prefix;
    }
    prefix.pop_back();
  }
  return std::nullopt;
}

// A connection with its prepared statements (prepared once, reused).
struct Conn {
  Database db;
  std::unordered_map<std::string, Statement> statements;

  explicit Conn(Database d) : db(std::move(d)) {}

  Result<Statement*> Prepare(std::string_view sql) {
    auto it = statements.find(std::string(sql));
    if (it != statements.end()) return &it->second;
    auto stmt = db.Prepare(sql);
    if (!stmt) return std::unexpected(stmt.error());
    auto [pos, inserted] = statements.emplace(std::string(sql), std::move(*stmt));
    return &pos->second;
  }
};

// Resets a cached statement when the scope ends, whatever happened.
class Use {
 public:
  explicit Use(Statement* s) : s_(s) {}
  ~Use() { s_->Reset(); }
  Use(const Use&) = delete;
  Use& operator=(const Use&) = delete;
  Statement& operator*() const { return *s_; }
  Statement* operator->() const { return s_; }

 private:
  Statement* s_;
};

#define AMESH_TRY(var, expr)                                       \
  auto var##_result = (expr);                                      \
  if (!var##_result) return std::unexpected(var##_result.error()); \
  auto& var = *var##_result

#define AMESH_CHECK(expr)                                          \
  do {                                                             \
    if (auto r_ = (expr); !r_) return std::unexpected(r_.error()); \
  } while (false)

class SqliteStore;

// The store whose RunBatch is running on this thread, if any: its calls then use the writer
// connection, already locked and inside the batch's transaction.
thread_local const SqliteStore* tls_batch_owner = nullptr;

class SqliteStore final : public RegistryStore {
 public:
  SqliteStore(std::unique_ptr<Conn> writer, std::vector<std::unique_ptr<Conn>> readers)
      : writer_(std::move(writer)), readers_(std::move(readers)) {}

  // Takes the writer's WAL checkpoints to a thread of their own (destroyed before writer_).
  Result<void> StartCheckpointer(const std::string& path, const storage::OpenOptions& open) {
    storage::CheckpointerOptions options;
    options.background_pages = kCheckpointBackgroundPages;
    options.inline_pages = kCheckpointInlinePages;
    auto c = storage::Checkpointer::Start(writer_->db, path, open, options);
    if (!c) return std::unexpected(c.error());
    checkpointer_ = std::move(*c);
    return {};
  }

  std::string_view backend() const noexcept override { return "sqlite"; }

  Result<void> Migrate() override {
    WriteLock lock(*this);
    return writer_->db.Migrate(kMigrations);
  }

  bool single_writer() const noexcept override { return true; }

  Result<void> RunBatch(const std::function<void()>& body) override {
    if (tls_batch_owner == this) {
      body();
      return {};
    }
    std::unique_lock lock(write_mu_);
    Database& db = writer_->db;
    if (auto begun = db.Exec("BEGIN IMMEDIATE"); !begun) {
      lock.unlock();  // no batch: every call commits on its own
      body();
      return {};
    }
    struct Owner {
      explicit Owner(const SqliteStore* s) { tls_batch_owner = s; }
      ~Owner() { tls_batch_owner = nullptr; }
      Owner(const Owner&) = delete;
      Owner& operator=(const Owner&) = delete;
    };
    {
      Owner owner(this);
      try {
        body();
      } catch (...) {
        (void)db.Exec("ROLLBACK");
        throw;
      }
    }
    if (sqlite3_get_autocommit(db.raw()) != 0) {
      return Fail(Code::kIo,
                  "the batch's transaction was rolled back by the database (disk full or I/O "
                  "error)");
    }
    if (auto committed = db.Exec("COMMIT"); !committed) {
      (void)db.Exec("ROLLBACK");
      return committed;
    }
    return {};
  }

  Result<int> SchemaVersion() override {
    WriteLock lock(*this);
    return writer_->db.UserVersion();
  }

  Result<void> InsertAgent(const AgentRecord& a) override {
    WriteLock lock(*this);
    Conn& c = *writer_;
    storage::Transaction tx(c.db);
    AMESH_CHECK(tx.status());
    {
      AMESH_TRY(p,
                c.Prepare("INSERT INTO agents (amid, signing_public_key, exchange_public_key, "
                          "tier_rank, display_name, organization, capabilities, relay_endpoint, "
                          "direct_endpoint, status, reputation_score, last_seen, created_at, "
                          "updated_at, revoked) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                          "?11, ?12, ?13, ?14, 0)"));
      Use s(p);
      s->Bind(1, a.amid)
          .Bind(2, a.signing_public_key)
          .Bind(3, a.exchange_public_key)
          .Bind(4, TierRank(a.tier))
          .Bind(5, a.display_name)
          .Bind(6, a.organization)
          .Bind(7, StringsJson(a.capabilities))
          .Bind(8, a.relay_endpoint)
          .Bind(9, a.direct_endpoint)
          .Bind(10, ToString(a.status))
          .Bind(11, a.reputation_score)
          .Bind(12, a.last_seen)
          .Bind(13, a.created_at)
          .Bind(14, a.updated_at);
      if (auto r = s->Run(); !r) {
        if (r.error().code == Code::kConflict)
          return Fail(Code::kConflict, "AMID already registered");
        return r;
      }
    }
    AMESH_CHECK(InsertCapabilities(c, a.amid, a.capabilities));
    return tx.Commit();
  }

  Result<std::optional<AgentRecord>> GetAgent(std::string_view amid) override {
    Reader r(*this);
    AMESH_TRY(p,
              r->Prepare(fmt::format("SELECT {} FROM agents a WHERE a.amid = ?1", kAgentColumns)));
    Use s(p);
    s->Bind(1, amid);
    AMESH_TRY(row, s->Step());
    if (!row) return std::optional<AgentRecord>{};
    return std::optional<AgentRecord>(ReadAgent(*s));
  }

  Result<std::optional<AgentSummary>> LookupAgent(std::string_view amid) override {
    static const std::string sql = fmt::format(
        "SELECT {}, (SELECT count(*) FROM one_time_prekeys o WHERE o.amid = a.amid AND "
        "o.consumed = 0), (SELECT count(*) FROM reputation_feedback f WHERE f.target_amid = "
        "a.amid) FROM agents a WHERE a.amid = ?1",
        kAgentColumns);
    Reader r(*this);
    AMESH_TRY(p, r->Prepare(sql));
    Use s(p);
    s->Bind(1, amid);
    AMESH_TRY(row, s->Step());
    if (!row) return std::optional<AgentSummary>{};
    AgentSummary out;
    out.agent = ReadAgent(*s);
    out.one_time_prekeys = static_cast<std::uint64_t>(s->ColumnInt(kAgentColumnCount));
    out.ratings = static_cast<std::uint64_t>(s->ColumnInt(kAgentColumnCount + 1));
    return std::optional<AgentSummary>(std::move(out));
  }

  Result<bool> UpdatePresence(std::string_view amid, Presence status, UnixNanos now) override {
    WriteLock lock(*this);
    AMESH_TRY(
        p, writer_->Prepare(
               "UPDATE agents SET status = ?2, last_seen = ?3, updated_at = ?3 WHERE amid = ?1"));
    Use s(p);
    s->Bind(1, amid).Bind(2, ToString(status)).Bind(3, now);
    AMESH_CHECK(s->Run());
    return writer_->db.Changes() > 0;
  }

  Result<bool> ReplaceCapabilities(std::string_view amid, std::span<const std::string> caps,
                                   UnixNanos now) override {
    WriteLock lock(*this);
    Conn& c = *writer_;
    storage::Transaction tx(c.db);
    AMESH_CHECK(tx.status());
    {
      AMESH_TRY(p, c.Prepare("UPDATE agents SET capabilities = ?2, last_seen = ?3, updated_at = ?3 "
                             "WHERE amid = ?1"));
      Use s(p);
      s->Bind(1, amid).Bind(2, StringsJson(caps)).Bind(3, now);
      AMESH_CHECK(s->Run());
      if (c.db.Changes() == 0) return false;
    }
    {
      AMESH_TRY(p, c.Prepare("DELETE FROM search_terms WHERE amid = ?1"));
      Use s(p);
      s->Bind(1, amid);
      AMESH_CHECK(s->Run());
    }
    AMESH_CHECK(InsertCapabilities(c, amid, caps));
    AMESH_CHECK(tx.Commit());
    return true;
  }

  Result<bool> SetReputation(std::string_view amid, double score, UnixNanos now) override {
    WriteLock lock(*this);
    AMESH_TRY(p, writer_->Prepare(
                     "UPDATE agents SET reputation_score = ?2, updated_at = ?3 WHERE amid = ?1"));
    Use s(p);
    s->Bind(1, amid).Bind(2, score).Bind(3, now);
    AMESH_CHECK(s->Run());
    return writer_->db.Changes() > 0;
  }

  Result<SearchPage> Search(const SearchFilter& f) override {
    // search_terms holds exact terms and the prefixes that end in '/' (and the empty one): any
    // other prefix (possible through the store API, not through the HTTP query) is a range of
    // exact terms.
    if (f.prefix && !f.capability.empty() && f.capability.back() != '/') {
      return PrefixRangeSearch(f);
    }
    // One range of the search_terms_order index, in result order (migration 3).
    const std::string term = (f.prefix ? "^" : "=") + f.capability;
    const bool unfiltered = f.min_tier_rank <= 0 && !f.min_reputation && !f.status;
    constexpr std::string_view where =
        "FROM search_terms t WHERE t.term = ?1 AND t.revoked = 0 AND "
        "t.tier_rank >= ?2 AND "
        "t.reputation_score >= ?3 AND (?4 IS NULL OR t.status = ?4)";
    auto bind = [&](Statement& s) {
      s.Bind(1, term);
      s.Bind(2, f.min_tier_rank);
      s.Bind(3, f.min_reputation.value_or(-1.0));
      if (f.status) {
        s.Bind(4, ToString(*f.status));
      } else {
        s.BindNull(4);
      }
    };
    Reader r(*this);
    SearchPage page;
    {
      AMESH_TRY(
          p,
          r->Prepare(unfiltered ? std::string("SELECT live FROM search_term_counts WHERE term = ?1")
                                : "SELECT count(*) " + std::string(where)));
      Use s(p);
      if (unfiltered) {
        s->Bind(1, term);
      } else {
        bind(*s);
      }
      AMESH_TRY(row, s->Step());
      page.total = row ? static_cast<std::uint64_t>(std::max<std::int64_t>(0, s->ColumnInt(0))) : 0;
    }
    if (page.total <= f.offset) return page;
    static const std::string page_sql = fmt::format(
        "SELECT {} FROM search_terms t JOIN agents a ON a.amid = "
        "t.amid WHERE t.term = ?1 AND "
        "t.revoked = 0 AND t.tier_rank >= ?2 AND "
        "t.reputation_score >= ?3 AND (?4 IS NULL OR "
        "t.status = ?4) ORDER BY t.reputation_score DESC, "
        "t.last_seen DESC, t.amid ASC LIMIT ?5 "
        "OFFSET ?6",
        kAgentColumns);
    AMESH_TRY(p, r->Prepare(page_sql));
    Use s(p);
    bind(*s);
    s->Bind(5, static_cast<std::int64_t>(f.limit));
    s->Bind(6, static_cast<std::int64_t>(f.offset));
    while (true) {
      AMESH_TRY(row, s->Step());
      if (!row) break;
      page.agents.push_back(ReadAgent(*s));
    }
    return page;
  }

  // A prefix search for a prefix that is not a term of its own (one not ending in '/'): the
  // agents with an exact term in the range of the prefix, in agents_order order.
  Result<SearchPage> PrefixRangeSearch(const SearchFilter& f) {
    const std::string low = "=" + f.capability;
    const std::string high = PrefixUpperBound(low).value_or(std::string());  // '=' is not 0xff
    constexpr std::string_view where =
        "FROM agents a WHERE a.revoked = 0 AND a.amid IN (SELECT t.amid FROM search_terms t "
        "WHERE t.term >= ?1 AND t.term < ?2) AND a.tier_rank >= ?3 AND a.reputation_score >= ?4 "
        "AND (?5 IS NULL OR a.status = ?5)";
    auto bind = [&](Statement& s) {
      s.Bind(1, low);
      s.Bind(2, high);
      s.Bind(3, f.min_tier_rank);
      s.Bind(4, f.min_reputation.value_or(-1.0));
      if (f.status) {
        s.Bind(5, ToString(*f.status));
      } else {
        s.BindNull(5);
      }
    };
    Reader r(*this);
    SearchPage page;
    {
      AMESH_TRY(p, r->Prepare("SELECT count(*) " + std::string(where)));
      Use s(p);
      bind(*s);
      AMESH_TRY(row, s->Step());
      page.total = row ? static_cast<std::uint64_t>(s->ColumnInt(0)) : 0;
    }
    if (page.total <= f.offset) return page;
    AMESH_TRY(p, r->Prepare(fmt::format("SELECT {} {} ORDER BY a.reputation_score DESC, "
                                        "a.last_seen DESC, a.amid ASC LIMIT ?6 OFFSET ?7",
                                        kAgentColumns, where)));
    Use s(p);
    bind(*s);
    s->Bind(6, static_cast<std::int64_t>(f.limit));
    s->Bind(7, static_cast<std::int64_t>(f.offset));
    while (true) {
      AMESH_TRY(row, s->Step());
      if (!row) break;
      page.agents.push_back(ReadAgent(*s));
    }
    return page;
  }

  Result<RegistryCounts> Counts() override {
    Reader r(*this);
    RegistryCounts out;
    double sum = 0;
    {
      AMESH_TRY(p, r->Prepare("SELECT tier_rank, status, count(*), sum(reputation_score) "
                              "FROM agents WHERE revoked = 0 GROUP BY tier_rank, status"));
      Use s(p);
      while (true) {
        AMESH_TRY(row, s->Step());
        if (!row) break;
        const auto n = static_cast<std::uint64_t>(s->ColumnInt(2));
        const Presence status = PresenceFromName(s->ColumnText(1)).value_or(Presence::kOffline);
        out.by_tier[TierFromRank(s->ColumnInt(0))] += n;
        out.by_status[status] += n;
        out.total_agents += n;
        if (status == Presence::kOnline) out.online_agents += n;
        sum += s->ColumnDouble(3);
      }
    }
    out.average_reputation = out.total_agents ? sum / static_cast<double>(out.total_agents) : 0;
    {
      AMESH_TRY(p, r->Prepare("SELECT count(*) FROM agents WHERE revoked = 1"));
      Use s(p);
      AMESH_TRY(row, s->Step());
      if (row) out.revoked_agents = static_cast<std::uint64_t>(s->ColumnInt(0));
    }
    {
      AMESH_TRY(p, r->Prepare("SELECT count(*) FROM one_time_prekeys WHERE consumed = 0"));
      Use s(p);
      AMESH_TRY(row, s->Step());
      if (row) out.one_time_prekeys_available = static_cast<std::uint64_t>(s->ColumnInt(0));
    }
    return out;
  }

  Result<PrekeyStoreResult> StorePrekeys(std::string_view amid, const SignedPrekeyRecord& spk,
                                         std::span<const OneTimePrekeyRecord> otpks) override {
    WriteLock lock(*this);
    Conn& c = *writer_;
    storage::Transaction tx(c.db);
    AMESH_CHECK(tx.status());
    PrekeyStoreResult result;
    {
      AMESH_TRY(p,
                c.Prepare("INSERT INTO signed_prekeys (amid, prekey_id, public_key, signature, "
                          "created_at) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (amid, prekey_id) "
                          "DO UPDATE SET public_key = excluded.public_key, signature = "
                          "excluded.signature, created_at = excluded.created_at"));
      Use s(p);
      s->Bind(1, amid)
          .Bind(2, spk.id)
          .Bind(3, spk.public_key)
          .Bind(4, spk.signature)
          .Bind(5, spk.created_at);
      AMESH_CHECK(s->Run());
    }
    {
      AMESH_TRY(p, c.Prepare("INSERT INTO one_time_prekeys (amid, prekey_id, public_key) VALUES "
                             "(?1, ?2, ?3) ON CONFLICT (amid, prekey_id) DO NOTHING"));
      for (const auto& k : otpks) {
        Use s(p);
        s->Bind(1, amid).Bind(2, k.id).Bind(3, k.public_key);
        AMESH_CHECK(s->Run());
        if (c.db.Changes() > 0) {
          ++result.stored;
        } else {
          ++result.ignored;
        }
      }
    }
    AMESH_TRY(remaining, CountOtpks(c, amid));
    result.remaining = remaining;
    AMESH_CHECK(tx.Commit());
    return result;
  }

  Result<std::optional<BundleRecord>> TakeBundle(std::string_view amid, UnixNanos now) override {
    WriteLock lock(*this);
    Conn& c = *writer_;
    storage::Transaction tx(c.db);
    AMESH_CHECK(tx.status());
    BundleRecord bundle;
    {
      AMESH_TRY(p, c.Prepare("SELECT prekey_id, public_key, signature, created_at FROM "
                             "signed_prekeys WHERE amid = ?1 ORDER BY prekey_id DESC LIMIT 1"));
      Use s(p);
      s->Bind(1, amid);
      AMESH_TRY(row, s->Step());
      if (!row) return std::optional<BundleRecord>{};
      bundle.signed_prekey.id = static_cast<std::uint32_t>(s->ColumnInt(0));
      bundle.signed_prekey.public_key = std::string(s->ColumnText(1));
      bundle.signed_prekey.signature = std::string(s->ColumnText(2));
      bundle.signed_prekey.created_at = s->ColumnInt(3);
    }
    {
      AMESH_TRY(
          p, c.Prepare("UPDATE one_time_prekeys SET consumed = 1, consumed_at = ?2 WHERE amid = ?1 "
                       "AND prekey_id = (SELECT prekey_id FROM one_time_prekeys WHERE amid = ?1 "
                       "AND consumed = 0 ORDER BY prekey_id LIMIT 1) AND consumed = 0 "
                       "RETURNING prekey_id, public_key"));
      Use s(p);
      s->Bind(1, amid).Bind(2, now);
      AMESH_TRY(row, s->Step());
      if (row) {
        bundle.one_time_prekey = OneTimePrekeyRecord{static_cast<std::uint32_t>(s->ColumnInt(0)),
                                                     std::string(s->ColumnText(1))};
        AMESH_TRY(done, s->Step());
        (void)done;
      }
    }
    AMESH_CHECK(tx.Commit());
    return std::optional<BundleRecord>(std::move(bundle));
  }

  Result<std::uint64_t> CountOneTimePrekeys(std::string_view amid) override {
    Reader r(*this);
    return CountOtpks(*r, amid);
  }

  Result<void> InsertRevocation(const RevocationRecord& rev) override {
    WriteLock lock(*this);
    Conn& c = *writer_;
    storage::Transaction tx(c.db);
    AMESH_CHECK(tx.status());
    {
      AMESH_TRY(p, c.Prepare("UPDATE agents SET revoked = 1, updated_at = ?2 WHERE amid = ?1"));
      Use s(p);
      s->Bind(1, rev.amid).Bind(2, rev.revoked_at);
      AMESH_CHECK(s->Run());
      if (c.db.Changes() == 0) return Fail(Code::kNotFound, "Agent not found");
    }
    {
      AMESH_TRY(p, c.Prepare("INSERT INTO revocations (amid, id, reason, revoked_by, revoked_at, "
                             "notes) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
      Use s(p);
      s->Bind(1, rev.amid)
          .Bind(2, rev.id)
          .Bind(3, rev.reason)
          .Bind(4, rev.revoked_by)
          .Bind(5, rev.revoked_at)
          .Bind(6, rev.notes);
      if (auto r = s->Run(); !r) {
        if (r.error().code == Code::kConflict)
          return Fail(Code::kConflict, "Agent already revoked");
        return r;
      }
    }
    return tx.Commit();
  }

  Result<std::optional<RevocationRecord>> GetRevocation(std::string_view amid) override {
    Reader r(*this);
    AMESH_TRY(p, r->Prepare("SELECT amid, id, reason, revoked_by, revoked_at, notes FROM "
                            "revocations WHERE amid = ?1"));
    Use s(p);
    s->Bind(1, amid);
    AMESH_TRY(row, s->Step());
    if (!row) return std::optional<RevocationRecord>{};
    return std::optional<RevocationRecord>(ReadRevocation(*s));
  }

  Result<std::vector<RevocationRecord>> ListRevocations(std::uint32_t limit,
                                                        std::uint64_t offset) override {
    Reader r(*this);
    AMESH_TRY(p, r->Prepare("SELECT amid, id, reason, revoked_by, revoked_at, notes FROM "
                            "revocations ORDER BY revoked_at, amid LIMIT ?1 OFFSET ?2"));
    Use s(p);
    s->Bind(1, static_cast<std::int64_t>(limit)).Bind(2, static_cast<std::int64_t>(offset));
    std::vector<RevocationRecord> out;
    while (true) {
      AMESH_TRY(row, s->Step());
      if (!row) break;
      out.push_back(ReadRevocation(*s));
    }
    return out;
  }

  Result<std::uint64_t> CountRevocations() override {
    Reader r(*this);
    return CountQuery(*r, "SELECT count(*) FROM revocations", {});
  }

  Result<std::optional<UnixNanos>> LastRevocationAt() override {
    Reader r(*this);
    AMESH_TRY(p, r->Prepare("SELECT max(revoked_at) FROM revocations"));
    Use s(p);
    AMESH_TRY(row, s->Step());
    if (!row || s->ColumnIsNull(0)) return std::optional<UnixNanos>{};
    return std::optional<UnixNanos>(s->ColumnInt(0));
  }

  Result<void> InsertFeedback(const FeedbackRecord& f) override {
    WriteLock lock(*this);
    AMESH_TRY(p, writer_->Prepare(
                     "INSERT INTO reputation_feedback (id, target_amid, from_amid, session_id, "
                     "score, tags, ip_key, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"));
    Use s(p);
    s->Bind(1, f.id)
        .Bind(2, f.target_amid)
        .Bind(3, f.from_amid)
        .Bind(4, f.session_id)
        .Bind(5, f.score)
        .Bind(6, StringsJson(f.tags))
        .Bind(7, f.ip_key)
        .Bind(8, f.created_at);
    if (auto r = s->Run(); !r) {
      if (r.error().code == Code::kConflict) {
        return Fail(Code::kConflict, "feedback for this session was already given");
      }
      return r;
    }
    return {};
  }

  Result<std::vector<FeedbackRow>> FeedbackForTarget(std::string_view target,
                                                     UnixNanos since) override {
    Reader r(*this);
    AMESH_TRY(p, r->Prepare(
                     "SELECT f.id, f.target_amid, f.from_amid, f.session_id, f.score, f.tags, "
                     "f.ip_key, f.created_at, a.tier_rank, a.created_at FROM reputation_feedback f "
                     "JOIN agents a ON a.amid = f.from_amid WHERE f.target_amid = ?1 AND "
                     "f.created_at >= ?2 ORDER BY f.created_at, f.id"));
    Use s(p);
    s->Bind(1, target).Bind(2, since);
    std::vector<FeedbackRow> out;
    while (true) {
      AMESH_TRY(row, s->Step());
      if (!row) break;
      FeedbackRow fr;
      fr.feedback.id = std::string(s->ColumnText(0));
      fr.feedback.target_amid = std::string(s->ColumnText(1));
      fr.feedback.from_amid = std::string(s->ColumnText(2));
      fr.feedback.session_id = std::string(s->ColumnText(3));
      fr.feedback.score = s->ColumnDouble(4);
      fr.feedback.tags = JsonStrings(s->ColumnText(5));
      fr.feedback.ip_key = std::string(s->ColumnText(6));
      fr.feedback.created_at = s->ColumnInt(7);
      fr.rater_tier = TierFromRank(s->ColumnInt(8));
      fr.rater_created_at = s->ColumnInt(9);
      out.push_back(std::move(fr));
    }
    return out;
  }

  Result<std::uint64_t> CountFeedback(std::string_view target) override {
    Reader r(*this);
    return CountQuery(*r, "SELECT count(*) FROM reputation_feedback WHERE target_amid = ?1",
                      target);
  }

  Result<std::vector<std::string>> RatedTargets(std::string_view rater) override {
    Reader r(*this);
    AMESH_TRY(p, r->Prepare("SELECT DISTINCT target_amid FROM reputation_feedback WHERE "
                            "from_amid = ?1 ORDER BY target_amid"));
    Use s(p);
    s->Bind(1, rater);
    std::vector<std::string> out;
    while (true) {
      AMESH_TRY(row, s->Step());
      if (!row) break;
      out.emplace_back(s->ColumnText(0));
    }
    return out;
  }

  Result<bool> InsertSession(const SessionRecord& x) override {
    WriteLock lock(*this);
    AMESH_TRY(p, writer_->Prepare(
                     "INSERT INTO completed_sessions (session_id, id, initiator_amid, "
                     "receiver_amid, intent, outcome, started_at, reporter_amid, created_at) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (session_id) DO "
                     "NOTHING"));
    Use s(p);
    s->Bind(1, x.session_id)
        .Bind(2, x.id)
        .Bind(3, x.initiator_amid)
        .Bind(4, x.receiver_amid)
        .Bind(5, x.intent)
        .Bind(6, x.outcome)
        .Bind(7, x.started_at)
        .Bind(8, x.reporter_amid)
        .Bind(9, x.created_at);
    AMESH_CHECK(s->Run());
    return writer_->db.Changes() > 0;
  }

  Result<SessionCounts> SessionCountsFor(std::string_view amid) override {
    Reader r(*this);
    AMESH_TRY(p, r->Prepare("SELECT count(*), coalesce(sum(outcome = 'success'), 0) FROM "
                            "completed_sessions WHERE initiator_amid = ?1 OR receiver_amid = ?1"));
    Use s(p);
    s->Bind(1, amid);
    AMESH_TRY(row, s->Step());
    SessionCounts out;
    if (row) {
      out.total = static_cast<std::uint64_t>(s->ColumnInt(0));
      out.successful = static_cast<std::uint64_t>(s->ColumnInt(1));
    }
    return out;
  }

  Result<std::vector<std::string>> LeaderboardCandidates(std::uint64_t min_feedback,
                                                         std::uint32_t limit) override {
    Reader r(*this);
    AMESH_TRY(
        p, r->Prepare("SELECT a.amid FROM agents a WHERE a.revoked = 0 AND (SELECT count(*) FROM "
                      "reputation_feedback f WHERE f.target_amid = a.amid) >= ?1 ORDER BY "
                      "a.reputation_score DESC, a.amid ASC LIMIT ?2"));
    Use s(p);
    s->Bind(1, static_cast<std::int64_t>(min_feedback)).Bind(2, static_cast<std::int64_t>(limit));
    std::vector<std::string> out;
    while (true) {
      AMESH_TRY(row, s->Step());
      if (!row) break;
      out.emplace_back(s->ColumnText(0));
    }
    return out;
  }

  // ── Organisations / OAuth ──

  Result<void> InsertOrganization(const OrganizationRecord& o) override {
    WriteLock lock(*this);
    AMESH_TRY(p, writer_->Prepare(
                     "INSERT INTO organizations (id, name, domain, admin_amid, admin_signing_key, "
                     "dns_challenge, verified, verified_at, root_certificate, created_at) VALUES "
                     "(?1, ?2, ?3, ?4, ?5, ?6, 0, NULL, NULL, ?7)"));
    Use s(p);
    s->Bind(1, o.id)
        .Bind(2, o.name)
        .Bind(3, o.domain)
        .Bind(4, o.admin_amid)
        .Bind(5, o.admin_signing_key)
        .Bind(6, o.dns_challenge)
        .Bind(7, o.created_at);
    if (auto r = s->Run(); !r) {
      if (r.error().code == Code::kConflict) {
        return Fail(Code::kConflict, "domain already registered");
      }
      return r;
    }
    return {};
  }

  Result<std::optional<OrganizationRecord>> GetOrganization(std::string_view id) override {
    return OrganizationWhere("id", id);
  }

  Result<std::optional<OrganizationRecord>> GetOrganizationByDomain(
      std::string_view domain) override {
    return OrganizationWhere("domain", domain);
  }

  Result<bool> MarkOrganizationVerified(std::string_view id, UnixNanos verified_at,
                                        std::string_view root_certificate) override {
    WriteLock lock(*this);
    AMESH_TRY(p, writer_->Prepare("UPDATE organizations SET verified = 1, verified_at = ?2, "
                                  "root_certificate = ?3 WHERE id = ?1 AND verified = 0"));
    Use s(p);
    s->Bind(1, id).Bind(2, verified_at).Bind(3, root_certificate);
    AMESH_CHECK(s->Run());
    return writer_->db.Changes() > 0;
  }

  Result<void> AddOrganizationAgent(std::string_view organization_id, std::string_view domain,
                                    std::string_view amid, std::string_view certificate,
                                    UnixNanos added_at) override {
    WriteLock lock(*this);
    Conn& c = *writer_;
    storage::Transaction tx(c.db);
    AMESH_CHECK(tx.status());
    {
      // The WHERE of the upsert keeps a membership of another organisation untouched (0 rows).
      AMESH_TRY(p, c.Prepare("INSERT INTO organization_agents (amid, organization_id, "
                             "certificate, added_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (amid) "
                             "DO UPDATE SET certificate = excluded.certificate, added_at = "
                             "excluded.added_at WHERE organization_agents.organization_id = "
                             "excluded.organization_id"));
      Use s(p);
      s->Bind(1, amid).Bind(2, organization_id).Bind(3, certificate).Bind(4, added_at);
      if (auto r = s->Run(); !r) {
        // A foreign-key failure: the agent row does not exist.
        if (r.error().code == Code::kConflict) return Fail(Code::kNotFound, "Agent not found");
        return r;
      }
      if (c.db.Changes() == 0) {
        return Fail(Code::kConflict, "agent belongs to another organization");
      }
    }
    {
      AMESH_TRY(p, c.Prepare("UPDATE agents SET tier_rank = 2, organization = ?2, updated_at = ?3 "
                             "WHERE amid = ?1 AND revoked = 0"));
      Use s(p);
      s->Bind(1, amid).Bind(2, domain).Bind(3, added_at);
      AMESH_CHECK(s->Run());
      if (c.db.Changes() == 0) return Fail(Code::kNotFound, "Agent not found or revoked");
    }
    return tx.Commit();
  }

  Result<std::optional<std::string>> GetOrganizationAgentCertificate(
      std::string_view amid) override {
    Reader r(*this);
    AMESH_TRY(p, r->Prepare("SELECT certificate FROM organization_agents WHERE amid = ?1"));
    Use s(p);
    s->Bind(1, amid);
    AMESH_TRY(row, s->Step());
    if (!row) return std::optional<std::string>{};
    return std::optional<std::string>(std::string(s->ColumnText(0)));
  }

  Result<std::uint64_t> CountOrganizationAgents(std::string_view organization_id) override {
    Reader r(*this);
    return CountQuery(*r, "SELECT count(*) FROM organization_agents WHERE organization_id = ?1",
                      organization_id);
  }

  Result<void> InsertOAuthState(const OAuthStateRecord& st) override {
    WriteLock lock(*this);
    AMESH_TRY(p, writer_->Prepare("INSERT INTO oauth_states (state, amid, provider, created_at, "
                                  "expires_at, consumed) VALUES (?1, ?2, ?3, ?4, ?5, 0)"));
    Use s(p);
    s->Bind(1, st.state)
        .Bind(2, st.amid)
        .Bind(3, st.provider)
        .Bind(4, st.created_at)
        .Bind(5, st.expires_at);
    if (auto r = s->Run(); !r) {
      if (r.error().code == Code::kConflict) return Fail(Code::kConflict, "state exists");
      return r;
    }
    return {};
  }

  Result<std::optional<OAuthStateRecord>> GetOAuthState(std::string_view state) override {
    Reader r(*this);
    AMESH_TRY(p, r->Prepare("SELECT state, amid, provider, created_at, expires_at, consumed FROM "
                            "oauth_states WHERE state = ?1"));
    Use s(p);
    s->Bind(1, state);
    AMESH_TRY(row, s->Step());
    if (!row) return std::optional<OAuthStateRecord>{};
    OAuthStateRecord out;
    out.state = std::string(s->ColumnText(0));
    out.amid = std::string(s->ColumnText(1));
    out.provider = std::string(s->ColumnText(2));
    out.created_at = s->ColumnInt(3);
    out.expires_at = s->ColumnInt(4);
    out.consumed = s->ColumnInt(5) != 0;
    return std::optional<OAuthStateRecord>(std::move(out));
  }

  Result<std::uint64_t> DeleteExpiredOAuthStates(UnixNanos now) override {
    WriteLock lock(*this);
    AMESH_TRY(p, writer_->Prepare("DELETE FROM oauth_states WHERE expires_at <= ?1"));
    Use s(p);
    s->Bind(1, now);
    AMESH_CHECK(s->Run());
    return static_cast<std::uint64_t>(writer_->db.Changes());
  }

  Result<bool> CompleteOAuthVerification(std::string_view state, UnixNanos now,
                                         const AgentVerificationRecord& v) override {
    WriteLock lock(*this);
    Conn& c = *writer_;
    storage::Transaction tx(c.db);
    AMESH_CHECK(tx.status());
    {
      AMESH_TRY(p, c.Prepare("UPDATE oauth_states SET consumed = 1 WHERE state = ?1 AND amid = ?2 "
                             "AND provider = ?3 AND consumed = 0 AND expires_at > ?4"));
      Use s(p);
      s->Bind(1, state).Bind(2, v.amid).Bind(3, v.provider).Bind(4, now);
      AMESH_CHECK(s->Run());
      if (c.db.Changes() == 0) return false;
    }
    {
      AMESH_TRY(p, c.Prepare("UPDATE agents SET tier_rank = CASE WHEN tier_rank < 1 THEN 1 ELSE "
                             "tier_rank END, updated_at = ?2 WHERE amid = ?1 AND revoked = 0"));
      Use s(p);
      s->Bind(1, v.amid).Bind(2, now);
      AMESH_CHECK(s->Run());
      if (c.db.Changes() == 0) return Fail(Code::kNotFound, "Agent not found or revoked");
    }
    {
      AMESH_TRY(p, c.Prepare("INSERT INTO agent_verifications (amid, provider, provider_id, "
                             "verified_at, certificate) VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT "
                             "(amid, provider) DO UPDATE SET provider_id = excluded.provider_id, "
                             "verified_at = excluded.verified_at, certificate = "
                             "excluded.certificate"));
      Use s(p);
      s->Bind(1, v.amid)
          .Bind(2, v.provider)
          .Bind(3, v.provider_id)
          .Bind(4, v.verified_at)
          .Bind(5, v.certificate);
      AMESH_CHECK(s->Run());
    }
    AMESH_CHECK(tx.Commit());
    return true;
  }

  Result<std::vector<AgentVerificationRecord>> ListAgentVerifications(
      std::string_view amid) override {
    Reader r(*this);
    AMESH_TRY(p, r->Prepare("SELECT amid, provider, provider_id, verified_at, certificate FROM "
                            "agent_verifications WHERE amid = ?1 ORDER BY provider"));
    Use s(p);
    s->Bind(1, amid);
    std::vector<AgentVerificationRecord> out;
    while (true) {
      AMESH_TRY(row, s->Step());
      if (!row) break;
      AgentVerificationRecord v;
      v.amid = std::string(s->ColumnText(0));
      v.provider = std::string(s->ColumnText(1));
      v.provider_id = std::string(s->ColumnText(2));
      v.verified_at = s->ColumnInt(3);
      v.certificate = std::string(s->ColumnText(4));
      out.push_back(std::move(v));
    }
    return out;
  }

 private:
  Result<std::optional<OrganizationRecord>> OrganizationWhere(std::string_view column,
                                                              std::string_view value) {
    Reader r(*this);
    AMESH_TRY(p, r->Prepare(fmt::format("SELECT {} FROM organizations WHERE {} = ?1",
                                        kOrganizationColumns, column)));
    Use s(p);
    s->Bind(1, value);
    AMESH_TRY(row, s->Step());
    if (!row) return std::optional<OrganizationRecord>{};
    return std::optional<OrganizationRecord>(ReadOrganization(*s));
  }

  // Borrows a reader connection for one call (the writer when there are no readers).
  class Reader {
   public:
    explicit Reader(SqliteStore& store) : store_(store) {
      if (tls_batch_owner == &store_) {
        conn_ = store_.writer_.get();  // see the batch's own writes
        return;
      }
      if (store_.readers_.empty()) {
        lock_ = std::unique_lock(store_.write_mu_);
        conn_ = store_.writer_.get();
        return;
      }
      std::unique_lock pool_lock(store_.pool_mu_);
      store_.pool_cv_.wait(pool_lock, [&] { return !store_.readers_.empty(); });
      owned_ = std::move(store_.readers_.back());
      store_.readers_.pop_back();
      conn_ = owned_.get();
    }
    ~Reader() {
      if (owned_) {
        {
          std::lock_guard pool_lock(store_.pool_mu_);
          store_.readers_.push_back(std::move(owned_));
        }
        store_.pool_cv_.notify_one();
      }
    }
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;
    Conn* operator->() const { return conn_; }
    Conn& operator*() const { return *conn_; }

   private:
    SqliteStore& store_;
    std::unique_lock<std::mutex> lock_;
    std::unique_ptr<Conn> owned_;
    Conn* conn_ = nullptr;
  };

  static Result<void> InsertCapabilities(Conn& c, std::string_view amid,
                                         std::span<const std::string> caps) {
    // The search terms (migrations 3 and 4), with the agent's current order and filter columns.
    AMESH_TRY(t, c.Prepare("INSERT OR IGNORE INTO search_terms (term, amid, revoked, "
                           "reputation_score, last_seen, tier_rank, status) SELECT ?2, amid, "
                           "revoked, reputation_score, last_seen, tier_rank, status FROM "
                           "agents "
                           "WHERE amid = ?1"));
    auto add = [&](const std::string& term) -> Result<void> {
      Use s(t);
      s->Bind(1, amid).Bind(2, term);
      return s->Run();
    };
    if (!caps.empty()) AMESH_CHECK(add("^"));
    for (const auto& cap : caps) {
      AMESH_CHECK(add("=" + cap));
      for (auto slash = cap.find('/'); slash != std::string::npos;
           slash = cap.find('/', slash + 1)) {
        AMESH_CHECK(add("^" + cap.substr(0, slash + 1)));
      }
    }
    return {};
  }

  static Result<std::uint64_t> CountOtpks(Conn& c, std::string_view amid) {
    return CountQuery(c, "SELECT count(*) FROM one_time_prekeys WHERE amid = ?1 AND consumed = 0",
                      amid);
  }

  static Result<std::uint64_t> CountQuery(Conn& c, std::string_view sql,
                                          std::optional<std::string_view> param) {
    AMESH_TRY(p, c.Prepare(sql));
    Use s(p);
    if (param) s->Bind(1, *param);
    AMESH_TRY(row, s->Step());
    return row ? static_cast<std::uint64_t>(s->ColumnInt(0)) : 0;
  }

  // Holds write_mu_ unless this thread is inside RunBatch, which holds it already.
  class WriteLock {
   public:
    explicit WriteLock(SqliteStore& store) {
      if (tls_batch_owner != &store) lock_ = std::unique_lock(store.write_mu_);
    }

   private:
    std::unique_lock<std::mutex> lock_;
  };

  std::mutex write_mu_;
  std::unique_ptr<Conn> writer_;
  std::unique_ptr<storage::Checkpointer> checkpointer_;
  std::mutex pool_mu_;
  std::condition_variable pool_cv_;
  std::vector<std::unique_ptr<Conn>> readers_;
};

}  // namespace

std::span<const std::string_view> SqliteMigrations() { return kMigrations; }

Result<std::unique_ptr<RegistryStore>> OpenSqliteStore(const SqliteStoreOptions& options) {
  storage::OpenOptions open;
  open.synchronous =
      options.fsync_full ? storage::Synchronous::kFull : storage::Synchronous::kNormal;
  auto writer = Database::Open(options.path, open);
  if (!writer) return std::unexpected(writer.error());
  // No memory mapping, on any connection: a WAL reader whose snapshot changed since its last
  // read drops its whole mapping (sqlite3OsUnfetch(fd, 0, 0)) and faults it back in page by page,
  // so with writes going on (registrations, presence) every read paid a munmap of the file and
  // a TLB flush; registrations ran at half the rate they do with pread. The same reset iterates
  // the whole page-cache hash, so the caches stay small: the OS page cache holds the file.
  (void)writer->Exec("PRAGMA mmap_size=0");
  (void)writer->Exec("PRAGMA cache_size=-16384");
  std::vector<std::unique_ptr<Conn>> readers;
  const bool in_memory = options.path == ":memory:" || options.path.starts_with("file::memory:");
  if (!in_memory) {
    for (int i = 0; i < options.reader_connections; ++i) {
      // Readers are opened lazily-safe: the file exists now, and WAL was set by the writer.
      storage::OpenOptions ro = open;
      ro.create = false;
      auto reader = Database::Open(options.path, ro);
      if (!reader) return std::unexpected(reader.error());
      (void)reader->Exec("PRAGMA mmap_size=0");
      (void)reader->Exec("PRAGMA cache_size=-16384");
      readers.push_back(std::make_unique<Conn>(std::move(*reader)));
    }
  }
  auto store =
      std::make_unique<SqliteStore>(std::make_unique<Conn>(std::move(*writer)), std::move(readers));
  if (!in_memory) {
    // Write groups never wait for a checkpoint (SQLite's automatic one copied the WAL back and
    // fsynced inside the commit that crossed its threshold, stalling every registration queued
    // behind it). An in-memory database has no WAL.
    if (auto started = store->StartCheckpointer(options.path, open); !started) {
      return std::unexpected(started.error());
    }
  }
  return std::unique_ptr<RegistryStore>(std::move(store));
}

}  // namespace agentmesh::registry
