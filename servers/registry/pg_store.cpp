#include "pg_store.hpp"

#include <algorithm>

namespace agentmesh::registry {

std::string RedactDatabaseUrl(std::string_view url) {
  std::string out(url);
  const bool pg_url = out.starts_with("postgresql://") || out.starts_with("postgres://");
  if (pg_url) {
    const std::size_t start = out.find("://") + 3;
    const std::size_t end = std::min(out.find_first_of("/?", start), out.size());
    const std::size_t at = out.rfind('@', end - 1);
    if (at != std::string::npos && at >= start) {
      const std::size_t colon = out.find(':', start);
      if (colon != std::string::npos && colon < at) out.replace(colon + 1, at - colon - 1, "***");
    }
  }
  // Keyword strings and URI parameters: password=VALUE up to the next space or '&'.
  for (std::size_t pos = out.find("password="); pos != std::string::npos;
       pos = out.find("password=", pos + 1)) {
    const std::size_t value = pos + 9;
    const std::size_t end = std::min(out.find_first_of(" &", value), out.size());
    out.replace(value, end - value, "***");
  }
  return out;
}

}  // namespace agentmesh::registry

#ifdef AMESH_REGISTRY_HAVE_PG

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include "agentmesh/storage/postgres.hpp"

namespace agentmesh::registry {
namespace {

namespace pg = storage::pg;
using pg::Param;
using pg::Rows;

// Versioned schema: entry i brings the database from version i to i + 1 (pg::Connection::Migrate
// runs each in its own transaction under an advisory lock). Never edit a released entry; append.
// The tables and columns are those of the SQLite schema (sqlite_store.cpp) with PostgreSQL types:
// times are int8 nanoseconds, flags are 0/1 smallints, and every text column that is compared or
// ordered uses the "C" collation so that ordering and prefix ranges are byte-wise, as in SQLite,
// whatever the database's default collation.
constexpr std::array<std::string_view, 5> kMigrations = {
    R"sql(
CREATE TABLE agents (
  amid text COLLATE "C" PRIMARY KEY,
  signing_public_key text NOT NULL,
  exchange_public_key text NOT NULL,
  tier_rank integer NOT NULL DEFAULT 0 CHECK (tier_rank IN (0, 1, 2)),
  display_name text,
  organization text COLLATE "C",
  capabilities text NOT NULL DEFAULT '[]',
  relay_endpoint text,
  direct_endpoint text,
  status text COLLATE "C" NOT NULL DEFAULT 'offline'
    CHECK (status IN ('online', 'away', 'offline', 'dnd')),
  reputation_score double precision NOT NULL DEFAULT 0.5,
  last_seen bigint NOT NULL,
  created_at bigint NOT NULL,
  updated_at bigint NOT NULL,
  revoked smallint NOT NULL DEFAULT 0 CHECK (revoked IN (0, 1))
);
CREATE INDEX agents_order ON agents (revoked, reputation_score DESC, last_seen DESC, amid);
CREATE TABLE agent_capabilities (
  amid text COLLATE "C" NOT NULL REFERENCES agents (amid) ON DELETE CASCADE,
  capability text COLLATE "C" NOT NULL,
  PRIMARY KEY (amid, capability)
);
CREATE INDEX agent_capabilities_by_capability ON agent_capabilities (capability, amid);
CREATE TABLE signed_prekeys (
  amid text COLLATE "C" NOT NULL REFERENCES agents (amid) ON DELETE CASCADE,
  prekey_id bigint NOT NULL,
  public_key text NOT NULL,
  signature text NOT NULL,
  created_at bigint NOT NULL,
  PRIMARY KEY (amid, prekey_id)
);
CREATE TABLE one_time_prekeys (
  amid text COLLATE "C" NOT NULL REFERENCES agents (amid) ON DELETE CASCADE,
  prekey_id bigint NOT NULL,
  public_key text NOT NULL,
  consumed smallint NOT NULL DEFAULT 0 CHECK (consumed IN (0, 1)),
  consumed_at bigint,
  PRIMARY KEY (amid, prekey_id)
);
CREATE INDEX one_time_prekeys_available ON one_time_prekeys (amid, consumed, prekey_id);
CREATE TABLE revocations (
  amid text COLLATE "C" PRIMARY KEY REFERENCES agents (amid),
  id text COLLATE "C" NOT NULL UNIQUE,
  reason text NOT NULL,
  revoked_by text COLLATE "C" NOT NULL,
  revoked_at bigint NOT NULL,
  notes text
);
CREATE INDEX revocations_by_time ON revocations (revoked_at, amid);
CREATE TABLE reputation_feedback (
  id text COLLATE "C" PRIMARY KEY,
  target_amid text COLLATE "C" NOT NULL,
  from_amid text COLLATE "C" NOT NULL,
  session_id text COLLATE "C" NOT NULL,
  score double precision NOT NULL,
  tags text NOT NULL DEFAULT '[]',
  ip_key text COLLATE "C" NOT NULL DEFAULT '',
  created_at bigint NOT NULL,
  UNIQUE (from_amid, session_id)
);
CREATE INDEX reputation_feedback_by_target ON reputation_feedback (target_amid, created_at);
CREATE TABLE completed_sessions (
  session_id text COLLATE "C" PRIMARY KEY,
  id text COLLATE "C" NOT NULL,
  initiator_amid text COLLATE "C" NOT NULL,
  receiver_amid text COLLATE "C" NOT NULL,
  intent text NOT NULL,
  outcome text COLLATE "C" NOT NULL,
  started_at bigint,
  reporter_amid text COLLATE "C" NOT NULL,
  created_at bigint NOT NULL
);
CREATE INDEX completed_sessions_by_initiator ON completed_sessions (initiator_amid);
CREATE INDEX completed_sessions_by_receiver ON completed_sessions (receiver_amid);
)sql",
    // 2: organisations (DNS verification, certificates) and OAuth (Tier 1).
    R"sql(
CREATE TABLE organizations (
  id text COLLATE "C" PRIMARY KEY,
  name text NOT NULL,
  domain text COLLATE "C" NOT NULL UNIQUE,
  admin_amid text COLLATE "C" NOT NULL,
  admin_signing_key text NOT NULL,
  dns_challenge text NOT NULL,
  verified smallint NOT NULL DEFAULT 0 CHECK (verified IN (0, 1)),
  verified_at bigint,
  root_certificate text,
  created_at bigint NOT NULL
);
CREATE INDEX organizations_by_admin ON organizations (admin_amid);
CREATE TABLE organization_agents (
  amid text COLLATE "C" PRIMARY KEY REFERENCES agents (amid) ON DELETE CASCADE,
  organization_id text COLLATE "C" NOT NULL REFERENCES organizations (id),
  certificate text NOT NULL,
  added_at bigint NOT NULL
);
CREATE INDEX organization_agents_by_org ON organization_agents (organization_id);
CREATE TABLE oauth_states (
  state text COLLATE "C" PRIMARY KEY,
  amid text COLLATE "C" NOT NULL,
  provider text COLLATE "C" NOT NULL,
  created_at bigint NOT NULL,
  expires_at bigint NOT NULL,
  consumed smallint NOT NULL DEFAULT 0 CHECK (consumed IN (0, 1))
);
CREATE INDEX oauth_states_by_expiry ON oauth_states (expires_at);
CREATE TABLE agent_verifications (
  amid text COLLATE "C" NOT NULL REFERENCES agents (amid) ON DELETE CASCADE,
  provider text COLLATE "C" NOT NULL,
  provider_id text NOT NULL,
  verified_at bigint NOT NULL,
  certificate text NOT NULL,
  PRIMARY KEY (amid, provider)
);
)sql",
    // 3: the search index, as SQLite's migration 3 (sqlite_store.cpp): one row per (agent, term),
    // "=" + each capability and "^" + each of its prefixes ending in '/' (and "^" alone, for
    // "*"), carrying the agent's order and filter columns, so a search page is one range of
    // search_terms_order in result order and its total an index-only count of that range.
    // Triggers keep it in step: agent_capabilities rows add and remove their terms, updates of
    // agents copy the order and filter columns. Unlike SQLite there is no per-term count table:
    // its rows would be updated by every registration and serialise concurrent writers.
    R"sql(
CREATE FUNCTION capability_terms(cap text) RETURNS SETOF text LANGUAGE sql IMMUTABLE AS $$
  SELECT '=' || cap
  UNION ALL SELECT '^'
  UNION ALL SELECT '^' || substr(cap, 1, p) FROM generate_series(1, length(cap)) AS p
    WHERE substr(cap, p, 1) = '/'
$$;
CREATE TABLE search_terms (
  term text COLLATE "C" NOT NULL,
  amid text COLLATE "C" NOT NULL REFERENCES agents (amid) ON DELETE CASCADE,
  revoked smallint NOT NULL,
  reputation_score double precision NOT NULL,
  last_seen bigint NOT NULL,
  tier_rank integer NOT NULL,
  status text COLLATE "C" NOT NULL,
  PRIMARY KEY (amid, term)
);
INSERT INTO search_terms
  SELECT DISTINCT t.term, a.amid, a.revoked, a.reputation_score, a.last_seen, a.tier_rank, a.status
  FROM agent_capabilities c JOIN agents a ON a.amid = c.amid,
       LATERAL capability_terms(c.capability) AS t (term);
CREATE INDEX search_terms_order ON search_terms
  (term, revoked, reputation_score DESC, last_seen DESC, amid) INCLUDE (tier_rank, status);
CREATE FUNCTION agent_capabilities_terms() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO search_terms
      SELECT t.term, a.amid, a.revoked, a.reputation_score, a.last_seen, a.tier_rank, a.status
      FROM agents a, capability_terms(NEW.capability) AS t (term) WHERE a.amid = NEW.amid
      ON CONFLICT (amid, term) DO NOTHING;
  ELSE
    DELETE FROM search_terms s
      WHERE s.amid = OLD.amid AND s.term IN (SELECT capability_terms(OLD.capability))
        AND NOT EXISTS (SELECT 1 FROM agent_capabilities c, capability_terms(c.capability) AS t
                        WHERE c.amid = OLD.amid AND t = s.term);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER agent_capabilities_terms AFTER INSERT OR DELETE ON agent_capabilities
  FOR EACH ROW EXECUTE FUNCTION agent_capabilities_terms();
CREATE FUNCTION agents_search_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE search_terms SET revoked = NEW.revoked, reputation_score = NEW.reputation_score,
    last_seen = NEW.last_seen, tier_rank = NEW.tier_rank, status = NEW.status
    WHERE amid = NEW.amid;
  RETURN NULL;
END $$;
CREATE TRIGGER agents_search_sync
  AFTER UPDATE OF revoked, reputation_score, last_seen, tier_rank, status ON agents FOR EACH ROW
  WHEN (OLD.revoked IS DISTINCT FROM NEW.revoked
        OR OLD.reputation_score IS DISTINCT FROM NEW.reputation_score
        OR OLD.last_seen IS DISTINCT FROM NEW.last_seen OR OLD.tier_rank IS DISTINCT FROM NEW.tier_rank
        OR OLD.status IS DISTINCT FROM NEW.status)
  EXECUTE FUNCTION agents_search_sync();
)sql",
    // 4: per-term counts of live search_terms rows, so that the total of an unfiltered search is
    // a lookup instead of a count of every match (O(matches): ~3 ms per search at 14 k matches).
    // A count row updated by every write would serialise concurrent registrations (they all
    // touch "^"), so writes only append deltas (statement triggers, one row per term and
    // statement) and FoldCounts moves them into search_term_counts now and then. A total is
    // the count plus the term's pending deltas, read in one snapshot: exact at any time.
    R"sql(
CREATE TABLE search_term_counts (term text COLLATE "C" PRIMARY KEY, live bigint NOT NULL);
CREATE TABLE search_term_deltas (
  id bigserial PRIMARY KEY,
  term text COLLATE "C" NOT NULL,
  delta bigint NOT NULL
);
CREATE INDEX search_term_deltas_by_term ON search_term_deltas (term) INCLUDE (delta);
INSERT INTO search_term_counts
  SELECT term, count(*) FROM search_terms WHERE revoked = 0 GROUP BY term;
CREATE FUNCTION search_terms_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO search_term_deltas (term, delta)
    SELECT term, count(*) FROM new_rows WHERE revoked = 0 GROUP BY term;
  RETURN NULL;
END $$;
CREATE TRIGGER search_terms_counted AFTER INSERT ON search_terms
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION search_terms_counted();
CREATE FUNCTION search_terms_uncounted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO search_term_deltas (term, delta)
    SELECT term, -count(*) FROM old_rows WHERE revoked = 0 GROUP BY term;
  RETURN NULL;
END $$;
CREATE TRIGGER search_terms_uncounted AFTER DELETE ON search_terms
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION search_terms_uncounted();
CREATE FUNCTION search_terms_recounted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO search_term_deltas (term, delta)
    SELECT term, sum(d) FROM (SELECT term, -1 AS d FROM old_rows WHERE revoked = 0
                              UNION ALL SELECT term, 1 FROM new_rows WHERE revoked = 0) AS x
    GROUP BY term HAVING sum(d) <> 0;
  RETURN NULL;
END $$;
CREATE TRIGGER search_terms_recounted AFTER UPDATE ON search_terms
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
  FOR EACH STATEMENT EXECUTE FUNCTION search_terms_recounted();
)sql",
    // 5: the counts of migration 4 without its delta queue. Reading a total summed every pending
    // delta of the term, and the queue's deleted rows stayed behind until autovacuum: after a
    // minute of registrations a count read thousands of rows (a popular term's deltas, a seq
    // scan of dead pages), ten times the search itself. Now each server backend (each
    // connection) adds its statements' changes to its own row per term, shard = its
    // pg_backend_pid(): live backends have distinct pids, so concurrent writers never touch the
    // same row (and each statement upserts in term order), and a total is the sum of the term's
    // few rows. FoldCounts merges the rows of backends that have ended into shard 0. The
    // triggers of migration 4 stay, bound to the replaced functions.
    R"sql(
CREATE TABLE search_term_shards (
  term text COLLATE "C" NOT NULL,
  shard integer NOT NULL,
  live bigint NOT NULL,
  PRIMARY KEY (term, shard)
);
INSERT INTO search_term_shards
  SELECT term, 0, sum(n) FROM (SELECT term, live AS n FROM search_term_counts
                               UNION ALL SELECT term, delta FROM search_term_deltas) AS x
  GROUP BY term;
DROP TABLE search_term_counts;
DROP TABLE search_term_deltas;
ALTER TABLE search_term_shards RENAME TO search_term_counts;
CREATE OR REPLACE FUNCTION search_terms_counted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO search_term_counts AS c (term, shard, live)
    SELECT term, pg_backend_pid(), count(*) FROM new_rows WHERE revoked = 0
    GROUP BY term ORDER BY term
  ON CONFLICT (term, shard) DO UPDATE SET live = c.live + EXCLUDED.live;
  RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION search_terms_uncounted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO search_term_counts AS c (term, shard, live)
    SELECT term, pg_backend_pid(), -count(*) FROM old_rows WHERE revoked = 0
    GROUP BY term ORDER BY term
  ON CONFLICT (term, shard) DO UPDATE SET live = c.live + EXCLUDED.live;
  RETURN NULL;
END $$;
CREATE OR REPLACE FUNCTION search_terms_recounted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO search_term_counts AS c (term, shard, live)
    SELECT term, pg_backend_pid(), sum(d) FROM (SELECT term, -1 AS d FROM old_rows WHERE revoked = 0
                              UNION ALL SELECT term, 1 FROM new_rows WHERE revoked = 0) AS x
    GROUP BY term HAVING sum(d) <> 0 ORDER BY term
  ON CONFLICT (term, shard) DO UPDATE SET live = c.live + EXCLUDED.live;
  RETURN NULL;
END $$;
)sql",
};

constexpr std::string_view kAgentColumns =
    "a.amid, a.signing_public_key, a.exchange_public_key, a.tier_rank, a.display_name, "
    "a.organization, a.capabilities, a.relay_endpoint, a.direct_endpoint, a.status, "
    "a.reputation_score, a.last_seen, a.created_at, a.updated_at, a.revoked";
constexpr int kAgentColumnCount = 15;

constexpr std::string_view kRevocationColumns = "amid, id, reason, revoked_by, revoked_at, notes";

#define AMESH_TRY(var, expr)                                       \
  auto var##_result = (expr);                                      \
  if (!var##_result) return std::unexpected(var##_result.error()); \
  auto& var = *var##_result

#define AMESH_CHECK(expr)                                          \
  do {                                                             \
    if (auto r_ = (expr); !r_) return std::unexpected(r_.error()); \
  } while (false)

Tier TierFromRank(std::int64_t rank) {
  return rank >= 2 ? Tier::kOrganization : rank == 1 ? Tier::kVerified : Tier::kAnonymous;
}

std::optional<std::string> OptText(const Rows& rows, int r, int c) {
  if (rows.IsNull(r, c)) return std::nullopt;
  return std::string(rows.Text(r, c));
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

Result<AgentRecord> ReadAgent(const Rows& rows, int r) {
  AgentRecord a;
  a.amid = std::string(rows.Text(r, 0));
  a.signing_public_key = std::string(rows.Text(r, 1));
  a.exchange_public_key = std::string(rows.Text(r, 2));
  AMESH_TRY(tier, rows.Int(r, 3));
  a.tier = TierFromRank(tier);
  a.display_name = OptText(rows, r, 4);
  a.organization = OptText(rows, r, 5);
  a.capabilities = JsonStrings(rows.Text(r, 6));
  a.relay_endpoint = OptText(rows, r, 7);
  a.direct_endpoint = OptText(rows, r, 8);
  a.status = PresenceFromName(rows.Text(r, 9)).value_or(Presence::kOffline);
  AMESH_TRY(score, rows.Double(r, 10));
  a.reputation_score = score;
  AMESH_TRY(last_seen, rows.Int(r, 11));
  a.last_seen = last_seen;
  AMESH_TRY(created_at, rows.Int(r, 12));
  a.created_at = created_at;
  AMESH_TRY(updated_at, rows.Int(r, 13));
  a.updated_at = updated_at;
  AMESH_TRY(revoked, rows.Int(r, 14));
  a.revoked = revoked != 0;
  return a;
}

Result<RevocationRecord> ReadRevocation(const Rows& rows, int r) {
  RevocationRecord rev;
  rev.amid = std::string(rows.Text(r, 0));
  rev.id = std::string(rows.Text(r, 1));
  rev.reason = std::string(rows.Text(r, 2));
  rev.revoked_by = std::string(rows.Text(r, 3));
  AMESH_TRY(at, rows.Int(r, 4));
  rev.revoked_at = at;
  rev.notes = OptText(rows, r, 5);
  return rev;
}

constexpr std::string_view kOrganizationColumns =
    "id, name, domain, admin_amid, admin_signing_key, dns_challenge, verified, verified_at, "
    "root_certificate, created_at";

Result<OrganizationRecord> ReadOrganization(const Rows& rows, int r) {
  OrganizationRecord o;
  o.id = std::string(rows.Text(r, 0));
  o.name = std::string(rows.Text(r, 1));
  o.domain = std::string(rows.Text(r, 2));
  o.admin_amid = std::string(rows.Text(r, 3));
  o.admin_signing_key = std::string(rows.Text(r, 4));
  o.dns_challenge = std::string(rows.Text(r, 5));
  AMESH_TRY(verified, rows.Int(r, 6));
  o.verified = verified != 0;
  if (!rows.IsNull(r, 7)) {
    AMESH_TRY(verified_at, rows.Int(r, 7));
    o.verified_at = verified_at;
  }
  o.root_certificate = OptText(rows, r, 8);
  AMESH_TRY(created_at, rows.Int(r, 9));
  o.created_at = created_at;
  return o;
}

Result<std::uint64_t> Count(const Result<Rows>& rows) {
  if (!rows) return std::unexpected(rows.error());
  if (rows->empty()) return std::uint64_t{0};
  AMESH_TRY(n, rows->Int(0, 0));
  return static_cast<std::uint64_t>(n);
}

// Decodes the longest valid UTF-8 prefix of `text` into code points; `valid_bytes` is its length
// (text.size() when all of `text` is valid UTF-8).
std::vector<char32_t> DecodeUtf8Prefix(std::string_view text, std::size_t& valid_bytes) {
  std::vector<char32_t> out;
  std::size_t i = 0;
  while (i < text.size()) {
    const auto b0 = static_cast<unsigned char>(text[i]);
    std::size_t len = 0;
    char32_t cp = 0;
    if (b0 < 0x80) {
      len = 1;
      cp = b0;
    } else if ((b0 & 0xe0) == 0xc0) {
      len = 2;
      cp = b0 & 0x1f;
    } else if ((b0 & 0xf0) == 0xe0) {
      len = 3;
      cp = b0 & 0x0f;
    } else if ((b0 & 0xf8) == 0xf0) {
      len = 4;
      cp = b0 & 0x07;
    } else {
      break;
    }
    if (i + len > text.size()) break;
    bool ok = true;
    for (std::size_t k = 1; k < len && ok; ++k) {
      const auto b = static_cast<unsigned char>(text[i + k]);
      ok = (b & 0xc0) == 0x80;
      cp = (cp << 6) | (b & 0x3f);
    }
    static constexpr char32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (!ok || cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) break;
    out.push_back(cp);
    i += len;
  }
  valid_bytes = i;
  return out;
}

std::string EncodeUtf8(const std::vector<char32_t>& cps) {
  std::string out;
  for (const char32_t cp : cps) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
      out += static_cast<char>(0x80 | (cp & 0x3f));
    }
  }
  return out;
}

// The smallest valid UTF-8 string greater (byte-wise) than every string that starts with the
// valid UTF-8 `prefix`: the prefix with its last code point incremented (trailing U+10FFFF
// dropped first, surrogates skipped). nullopt when there is none (empty prefix). Unlike SQLite's
// byte increment, the bound stays valid UTF-8, which PostgreSQL requires of text parameters.
std::optional<std::string> PrefixUpperBound(std::vector<char32_t> cps) {
  while (!cps.empty() && cps.back() == 0x10ffff) cps.pop_back();
  if (cps.empty()) return std::nullopt;
  char32_t& last = cps.back();
  last = last == 0xd7ff ? 0xe000 : last + 1;
  return EncodeUtf8(cps);
}

// A small pool of connections shared by the worker threads: a call borrows one (opening a new
// one while fewer than `size` exist, else waiting for one to come back) and returns it; a broken
// connection is closed on return instead of going back to the pool.
class Pool {
 public:
  struct Lease {
    std::unique_ptr<pg::Connection> conn;
    bool reused = false;  // came from the idle list (may have gone stale since)
  };

  Pool(std::string conninfo, std::size_t size) : conninfo_(std::move(conninfo)), size_(size) {}

  void Add(pg::Connection conn) {
    std::lock_guard lock(mu_);
    ++open_;
    idle_.push_back(std::make_unique<pg::Connection>(std::move(conn)));
  }

  Result<Lease> Take() {
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return !idle_.empty() || open_ < size_; });
      if (!idle_.empty()) {
        Lease lease{std::move(idle_.back()), true};
        idle_.pop_back();
        return lease;
      }
      ++open_;  // reserve the slot, connect without the lock
    }
    auto conn = pg::Connection::Connect(conninfo_, Options());
    if (!conn) {
      {
        std::lock_guard lock(mu_);
        --open_;
      }
      cv_.notify_one();
      return std::unexpected(conn.error());
    }
    return Lease{std::make_unique<pg::Connection>(std::move(*conn)), false};
  }

  void Give(std::unique_ptr<pg::Connection> conn) {
    {
      std::lock_guard lock(mu_);
      if (conn->ok()) {
        idle_.push_back(std::move(conn));
      } else {
        --open_;
      }
    }
    cv_.notify_one();
  }

  static pg::ConnectOptions Options() {
    pg::ConnectOptions options;
    options.application_name = "amesh-registry";
    return options;
  }

 private:
  const std::string conninfo_;
  const std::size_t size_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<pg::Connection>> idle_;
  std::size_t open_ = 0;
};

// Builds a parameter list and hands out the matching "$n" placeholders.
class Args {
 public:
  std::string operator()(Param p) {
    params_.push_back(std::move(p));
    return "$" + std::to_string(params_.size());
  }
  std::span<const Param> span() const { return params_; }

 private:
  std::vector<Param> params_;
};

class PgStore final : public RegistryStore {
 public:
  explicit PgStore(std::unique_ptr<Pool> pool) : pool_(std::move(pool)) {}

  std::string_view backend() const noexcept override { return "postgresql"; }

  Result<void> Migrate() override {
    return Run([](pg::Connection& c) { return c.Migrate(kMigrations); });
  }

  Result<int> SchemaVersion() override {
    return Run([](pg::Connection& c) { return c.SchemaVersion(); });
  }

  // The group's calls commit one by one (PostgreSQL groups commits itself); then, at most about
  // once per kFoldInterval across this process's threads, the search counts of ended backends
  // are folded.
  Result<void> RunBatch(const std::function<void()>& body) override {
    body();
    const auto now = std::chrono::steady_clock::now().time_since_epoch().count();
    auto due = next_fold_.load();
    if (now >= due && next_fold_.compare_exchange_strong(
                          due, now + std::chrono::nanoseconds(kFoldInterval).count())) {
      (void)FoldCounts();  // on failure the deltas wait for the next fold; totals stay exact
    }
    return {};
  }

  Result<void> FoldCounts() override {
    // One statement, so one transaction: the rows it deletes are the ones it adds. Only the rows
    // of backends that have ended (no writer left) are moved; the advisory lock lets one fold run
    // at a time across replicas (the others skip), the only writers of shard 0.
    auto rows = Run([](pg::Connection& c) {
      return c.ExecPrepared(
          "WITH lock AS (SELECT pg_try_advisory_xact_lock(7306251938640010531) AS got), "
          "moved AS (DELETE FROM search_term_counts WHERE (SELECT got FROM lock) AND shard <> 0 "
          "AND shard NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL) "
          "RETURNING term, live), "
          "sums AS (SELECT term, sum(live)::bigint AS d FROM moved GROUP BY term) "
          "INSERT INTO search_term_counts AS c (term, shard, live) "
          "SELECT term, 0, d FROM sums ORDER BY term "
          "ON CONFLICT (term, shard) DO UPDATE SET live = c.live + EXCLUDED.live");
    });
    if (!rows) return std::unexpected(rows.error());
    return {};
  }

  Result<void> InsertAgent(const AgentRecord& a) override {
    // One statement (atomic on its own): the agent row, then its capability rows.
    const std::string caps = StringsJson(a.capabilities);
    auto rows = Run([&](pg::Connection& c) {
      return c.ExecPrepared(
          "WITH a AS (INSERT INTO agents (amid, signing_public_key, exchange_public_key, "
          "tier_rank, display_name, organization, capabilities, relay_endpoint, direct_endpoint, "
          "status, reputation_score, last_seen, created_at, updated_at, revoked) VALUES ($1, $2, "
          "$3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 0) RETURNING amid) "
          "INSERT INTO agent_capabilities (amid, capability) SELECT a.amid, x FROM a, "
          "json_array_elements_text($7::json) AS x ON CONFLICT (amid, capability) DO NOTHING",
          {a.amid, a.signing_public_key, a.exchange_public_key, TierRank(a.tier), a.display_name,
           a.organization, caps, a.relay_endpoint, a.direct_endpoint, ToString(a.status),
           a.reputation_score, a.last_seen, a.created_at, a.updated_at});
    });
    if (!rows) {
      if (rows.error().code == Code::kConflict) {
        return Fail(Code::kConflict, "AMID already registered");
      }
      return std::unexpected(rows.error());
    }
    return {};
  }

  Result<std::optional<AgentRecord>> GetAgent(std::string_view amid) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    fmt::format("SELECT {} FROM agents a WHERE a.amid = $1", kAgentColumns),
                    {amid});
              }));
    if (rows.empty()) return std::optional<AgentRecord>{};
    AMESH_TRY(agent, ReadAgent(rows, 0));
    return std::optional<AgentRecord>(std::move(agent));
  }

  Result<std::optional<AgentSummary>> LookupAgent(std::string_view amid) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    fmt::format("SELECT {}, (SELECT count(*) FROM one_time_prekeys o WHERE "
                                "o.amid = a.amid AND o.consumed = 0), (SELECT count(*) FROM "
                                "reputation_feedback f WHERE f.target_amid = a.amid) FROM agents a "
                                "WHERE a.amid = $1",
                                kAgentColumns),
                    {amid});
              }));
    if (rows.empty()) return std::optional<AgentSummary>{};
    AgentSummary out;
    AMESH_TRY(agent, ReadAgent(rows, 0));
    out.agent = std::move(agent);
    AMESH_TRY(prekeys, rows.Int(0, kAgentColumnCount));
    AMESH_TRY(ratings, rows.Int(0, kAgentColumnCount + 1));
    out.one_time_prekeys = static_cast<std::uint64_t>(prekeys);
    out.ratings = static_cast<std::uint64_t>(ratings);
    return std::optional<AgentSummary>(std::move(out));
  }

  Result<bool> UpdatePresence(std::string_view amid, Presence status, UnixNanos now) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    "UPDATE agents SET status = $2, last_seen = $3, updated_at = $3 "
                    "WHERE amid = $1",
                    {amid, ToString(status), now});
              }));
    return rows.affected() > 0;
  }

  Result<bool> ReplaceCapabilities(std::string_view amid, std::span<const std::string> caps,
                                   UnixNanos now) override {
    // A transaction: the UPDATE locks the agent row first, so concurrent replacements of one
    // agent's list are serialised and each later statement sees the previous one committed.
    const std::string json = StringsJson(caps);
    return Run([&](pg::Connection& c) -> Result<bool> {
      pg::Transaction tx(c);
      AMESH_CHECK(tx.status());
      AMESH_TRY(updated, c.ExecPrepared(
                             "UPDATE agents SET capabilities = $2, last_seen = $3, updated_at = $3 "
                             "WHERE amid = $1",
                             {amid, json, now}));
      if (updated.affected() == 0) return false;
      AMESH_CHECK(c.ExecPrepared("DELETE FROM agent_capabilities WHERE amid = $1", {amid}));
      AMESH_CHECK(
          c.ExecPrepared("INSERT INTO agent_capabilities (amid, capability) SELECT $1::text, x "
                         "FROM json_array_elements_text($2::json) AS x "
                         "ON CONFLICT (amid, capability) DO NOTHING",
                         {amid, json}));
      AMESH_CHECK(tx.Commit());
      return true;
    });
  }

  Result<bool> SetReputation(std::string_view amid, double score, UnixNanos now) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    "UPDATE agents SET reputation_score = $2, updated_at = $3 WHERE amid = $1",
                    {amid, score, now});
              }));
    return rows.affected() > 0;
  }

  Result<SearchPage> Search(const SearchFilter& f) override {
    // search_terms holds exact terms and the prefixes that end in '/' (and the empty one), all
    // valid UTF-8: other queries (possible through the store API, not through the HTTP query)
    // take the scan below.
    const bool has_term = (!f.prefix || f.capability.empty() || f.capability.back() == '/');
    if (has_term) {
      std::size_t valid = 0;
      (void)DecodeUtf8Prefix(f.capability, valid);
      if (valid != f.capability.size()) return SearchPage{};  // no stored term can match
      return TermSearch(f);
    }
    return ScanSearch(f);
  }

  // One range of search_terms_order, in result order (migration 3). An unfiltered total is the
  // sum of the term's count rows (migration 5); a filtered one counts the range.
  //
  // The unfiltered statements have one shape whatever the term, so they are prepared, and their
  // page must then run on a cached generic plan: planning the join costs more than running it.
  // PostgreSQL keeps re-planning a prepared statement while its generic plan's estimate is above
  // the custom plans' average, which a join ordered by the index always is (a popular term's
  // custom plan expects to stop after `limit` rows of many). So the page is taken in two steps
  // whose estimates do not depend on the term: the ordered AMIDs (one index-only range with a
  // literal LIMIT, estimated alike for every term), then their agents by primary key in that
  // order. Only the first page is prepared (one statement per page size, kMaxPreparedPageSize);
  // a deeper offset is an unnamed statement, planned once for its values.
  Result<SearchPage> TermSearch(const SearchFilter& f) {
    const bool unfiltered = f.min_tier_rank <= 0 && !f.min_reputation && !f.status;
    Args args;
    const std::string term = args((f.prefix ? "^" : "=") + f.capability);
    std::string match = "t.term = " + term + " AND t.revoked = 0";
    constexpr std::string_view kOrder = "t.reputation_score DESC, t.last_seen DESC, t.amid ASC";
    if (!unfiltered) {
      match += fmt::format(" AND t.tier_rank >= {} AND t.reputation_score >= {}",
                           args(f.min_tier_rank), args(f.min_reputation.value_or(-1.0)));
      if (f.status) match += " AND t.status = " + args(ToString(*f.status));
      auto [page_sql, paged] = Paged(
          f, args,
          fmt::format("SELECT {} FROM search_terms t JOIN agents a ON a.amid = t.amid WHERE {} "
                      "ORDER BY {}",
                      kAgentColumns, match, kOrder));
      return CountThenPage(f, args, "SELECT count(*) FROM search_terms t WHERE " + match, paged,
                           page_sql, Prepare::kNeither);
    }
    const std::string count_sql =
        "SELECT coalesce(sum(live), 0)::bigint FROM search_term_counts WHERE term = " + term;
    const std::string page_sql = fmt::format(
        "SELECT {} FROM unnest(ARRAY(SELECT t.amid FROM search_terms t WHERE {} ORDER BY {} "
        "LIMIT {} OFFSET {})) WITH ORDINALITY AS p (amid, n) JOIN agents a ON a.amid = p.amid "
        "ORDER BY p.n",
        kAgentColumns, match, kOrder, f.limit, f.offset);
    return CountThenPage(
        f, args, count_sql, args, page_sql,
        f.offset == 0 && f.limit <= kMaxPreparedPageSize ? Prepare::kBoth : Prepare::kCount);
  }

  enum class Prepare { kNeither, kCount, kBoth };
  // The first pages prepared, one statement per page size: the HTTP route's maximum.
  static constexpr std::uint32_t kMaxPreparedPageSize = 100;

  // `sql` (an ordered SELECT) with the page's LIMIT and OFFSET as parameters after `args`.
  static std::pair<std::string, Args> Paged(const SearchFilter& f, Args args, std::string sql) {
    sql += fmt::format(" LIMIT {} OFFSET {}", args(static_cast<std::int64_t>(f.limit)),
                       args(static_cast<std::int64_t>(f.offset)));
    return {std::move(sql), std::move(args)};
  }

  // The total of the matches (`count_sql` with `count_args`, one bigint), then the page of agents
  // (`page_sql` with `page_args`, kAgentColumns in result order), in one pooled connection.
  // Statements not prepared are unnamed (Exec): planned with the actual values, so a rare and a
  // popular capability each get the plan that suits them.
  Result<SearchPage> CountThenPage(const SearchFilter& f, const Args& count_args,
                                   const std::string& count_sql, const Args& page_args,
                                   const std::string& page_sql, Prepare prepare) {
    return Run([&](pg::Connection& c) -> Result<SearchPage> {
      SearchPage out;
      AMESH_TRY(total,
                Count(prepare != Prepare::kNeither ? c.ExecPrepared(count_sql, count_args.span())
                                                   : c.Exec(count_sql, count_args.span())));
      out.total = total;
      if (out.total <= f.offset) return out;
      AMESH_TRY(rows, prepare == Prepare::kBoth ? c.ExecPrepared(page_sql, page_args.span())
                                                : c.Exec(page_sql, page_args.span()));
      for (int r = 0; r < rows.size(); ++r) {
        AMESH_TRY(agent, ReadAgent(rows, r));
        out.agents.push_back(std::move(agent));
      }
      return out;
    });
  }

  // The search without search_terms: drives from agents and probes the capabilities of each.
  Result<SearchPage> ScanSearch(const SearchFilter& f) {
    SearchPage page;
    // Stored capabilities are valid UTF-8 (PostgreSQL refuses anything else) and "C"-collated,
    // so text order is byte order. A query that is not valid UTF-8 cannot be a text parameter:
    // an exact match then finds nothing, and a prefix becomes the range of its valid leading
    // part plus a byte-wise check, which is what SQLite's byte comparison does.
    std::size_t valid = 0;
    auto cps = DecodeUtf8Prefix(f.capability, valid);
    const bool is_utf8 = valid == f.capability.size();
    std::string match;
    Args args;
    if (!f.prefix) {
      if (!is_utf8) return page;
      match = "c.capability = " + args(f.capability);
    } else {
      // A range on the "C"-collated capability index: exactly the strings with the prefix.
      match = "c.capability >= " + args(f.capability.substr(0, valid));
      if (auto upper = PrefixUpperBound(std::move(cps))) {
        match += " AND c.capability < " + args(*upper);
      }
      if (!is_utf8) {
        match +=
            " AND position(" +
            args(Param::Bytea(ByteView(reinterpret_cast<const std::uint8_t*>(f.capability.data()),
                                       f.capability.size()))) +
            "::bytea IN convert_to(c.capability, 'UTF8')) = 1";
      }
    }
    std::string where = fmt::format(
        "FROM agents a WHERE a.revoked = 0 AND EXISTS (SELECT 1 FROM agent_capabilities c "
        "WHERE c.amid = a.amid AND {}) AND a.tier_rank >= {} AND a.reputation_score >= {}",
        match, args(f.min_tier_rank), args(f.min_reputation.value_or(-1.0)));
    if (f.status) where += " AND a.status = " + args(ToString(*f.status));
    auto [page_sql, paged] = Paged(
        f, args,
        fmt::format("SELECT {} {} ORDER BY a.reputation_score DESC, a.last_seen DESC, a.amid ASC",
                    kAgentColumns, where));
    return CountThenPage(f, args, "SELECT count(*) " + where, paged, page_sql, Prepare::kNeither);
  }

  Result<RegistryCounts> Counts() override {
    return Run([&](pg::Connection& c) -> Result<RegistryCounts> {
      RegistryCounts out;
      double sum = 0;
      AMESH_TRY(groups, c.ExecPrepared("SELECT tier_rank, status, count(*), sum(reputation_score) "
                                       "FROM agents WHERE revoked = 0 GROUP BY tier_rank, status"));
      for (int r = 0; r < groups.size(); ++r) {
        AMESH_TRY(rank, groups.Int(r, 0));
        AMESH_TRY(count, groups.Int(r, 2));
        AMESH_TRY(score, groups.Double(r, 3));
        const auto n = static_cast<std::uint64_t>(count);
        const Presence status = PresenceFromName(groups.Text(r, 1)).value_or(Presence::kOffline);
        out.by_tier[TierFromRank(rank)] += n;
        out.by_status[status] += n;
        out.total_agents += n;
        if (status == Presence::kOnline) out.online_agents += n;
        sum += score;
      }
      out.average_reputation = out.total_agents ? sum / static_cast<double>(out.total_agents) : 0;
      AMESH_TRY(revoked, Count(c.ExecPrepared("SELECT count(*) FROM agents WHERE revoked = 1")));
      out.revoked_agents = revoked;
      AMESH_TRY(available,
                Count(c.ExecPrepared("SELECT count(*) FROM one_time_prekeys WHERE consumed = 0")));
      out.one_time_prekeys_available = available;
      return out;
    });
  }

  Result<PrekeyStoreResult> StorePrekeys(std::string_view amid, const SignedPrekeyRecord& spk,
                                         std::span<const OneTimePrekeyRecord> otpks) override {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& k : otpks) list.push_back({{"id", k.id}, {"key", k.public_key}});
    const std::string json = list.dump();
    return Run([&](pg::Connection& c) -> Result<PrekeyStoreResult> {
      pg::Transaction tx(c);
      AMESH_CHECK(tx.status());
      AMESH_CHECK(c.ExecPrepared(
          "INSERT INTO signed_prekeys (amid, prekey_id, public_key, signature, created_at) "
          "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (amid, prekey_id) DO UPDATE SET public_key = "
          "excluded.public_key, signature = excluded.signature, created_at = excluded.created_at",
          {amid, spk.id, spk.public_key, spk.signature, spk.created_at}));
      // In the order given: of two entries with one id, the first is stored (as in SQLite).
      AMESH_TRY(inserted,
                c.ExecPrepared("INSERT INTO one_time_prekeys (amid, prekey_id, public_key) "
                               "SELECT $1::text, (e.v->>'id')::bigint, e.v->>'key' "
                               "FROM json_array_elements($2::json) WITH ORDINALITY AS e (v, n) "
                               "ORDER BY e.n ON CONFLICT (amid, prekey_id) DO NOTHING",
                               {amid, json}));
      PrekeyStoreResult result;
      result.stored = static_cast<std::uint64_t>(inserted.affected());
      result.ignored = otpks.size() - result.stored;
      AMESH_TRY(remaining,
                Count(c.ExecPrepared("SELECT count(*) FROM one_time_prekeys WHERE amid = $1 "
                                     "AND consumed = 0",
                                     {amid})));
      result.remaining = remaining;
      AMESH_CHECK(tx.Commit());
      return result;
    });
  }

  Result<std::optional<BundleRecord>> TakeBundle(std::string_view amid, UnixNanos now) override {
    // One statement. The inner SELECT locks the lowest unconsumed row and skips rows another
    // transaction holds, so concurrent calls consume different prekeys; nothing is consumed when
    // the agent has no signed prekey.
    AMESH_TRY(
        rows, Run([&](pg::Connection& c) {
          return c.ExecPrepared(
              "WITH spk AS (SELECT prekey_id, public_key, signature, created_at FROM "
              "signed_prekeys WHERE amid = $1 ORDER BY prekey_id DESC LIMIT 1), "
              "otk AS (UPDATE one_time_prekeys SET consumed = 1, consumed_at = $2 WHERE amid = $1 "
              "AND consumed = 0 AND EXISTS (SELECT 1 FROM spk) AND prekey_id = (SELECT prekey_id "
              "FROM one_time_prekeys WHERE amid = $1 AND consumed = 0 ORDER BY prekey_id LIMIT 1 "
              "FOR UPDATE SKIP LOCKED) RETURNING prekey_id, public_key) "
              "SELECT spk.prekey_id, spk.public_key, spk.signature, spk.created_at, "
              "otk.prekey_id, otk.public_key FROM spk LEFT JOIN otk ON true",
              {amid, now});
        }));
    if (rows.empty()) return std::optional<BundleRecord>{};
    BundleRecord bundle;
    AMESH_TRY(spk_id, rows.Int(0, 0));
    bundle.signed_prekey.id = static_cast<std::uint32_t>(spk_id);
    bundle.signed_prekey.public_key = std::string(rows.Text(0, 1));
    bundle.signed_prekey.signature = std::string(rows.Text(0, 2));
    AMESH_TRY(spk_at, rows.Int(0, 3));
    bundle.signed_prekey.created_at = spk_at;
    if (!rows.IsNull(0, 4)) {
      AMESH_TRY(otk_id, rows.Int(0, 4));
      bundle.one_time_prekey =
          OneTimePrekeyRecord{static_cast<std::uint32_t>(otk_id), std::string(rows.Text(0, 5))};
    }
    return std::optional<BundleRecord>(std::move(bundle));
  }

  Result<std::uint64_t> CountOneTimePrekeys(std::string_view amid) override {
    return Run([&](pg::Connection& c) {
      return Count(c.ExecPrepared(
          "SELECT count(*) FROM one_time_prekeys WHERE amid = $1 AND consumed = 0", {amid}));
    });
  }

  Result<void> InsertRevocation(const RevocationRecord& rev) override {
    auto rows = Run([&](pg::Connection& c) {
      return c.ExecPrepared(
          "WITH a AS (UPDATE agents SET revoked = 1, updated_at = $5 WHERE amid = $1 "
          "RETURNING amid) INSERT INTO revocations (amid, id, reason, revoked_by, revoked_at, "
          "notes) SELECT a.amid, $2::text, $3::text, $4::text, $5::bigint, $6::text FROM a "
          "RETURNING amid",
          {rev.amid, rev.id, rev.reason, rev.revoked_by, rev.revoked_at, rev.notes});
    });
    if (!rows) {
      if (rows.error().code == Code::kConflict)
        return Fail(Code::kConflict, "Agent already revoked");
      return std::unexpected(rows.error());
    }
    if (rows->empty()) return Fail(Code::kNotFound, "Agent not found");
    return {};
  }

  Result<std::optional<RevocationRecord>> GetRevocation(std::string_view amid) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    fmt::format("SELECT {} FROM revocations WHERE amid = $1", kRevocationColumns),
                    {amid});
              }));
    if (rows.empty()) return std::optional<RevocationRecord>{};
    AMESH_TRY(rev, ReadRevocation(rows, 0));
    return std::optional<RevocationRecord>(std::move(rev));
  }

  Result<std::vector<RevocationRecord>> ListRevocations(std::uint32_t limit,
                                                        std::uint64_t offset) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    fmt::format("SELECT {} FROM revocations ORDER BY revoked_at, amid "
                                "LIMIT $1 OFFSET $2",
                                kRevocationColumns),
                    {static_cast<std::int64_t>(limit), static_cast<std::int64_t>(offset)});
              }));
    std::vector<RevocationRecord> out;
    for (int r = 0; r < rows.size(); ++r) {
      AMESH_TRY(rev, ReadRevocation(rows, r));
      out.push_back(std::move(rev));
    }
    return out;
  }

  Result<std::uint64_t> CountRevocations() override {
    return Run([](pg::Connection& c) {
      return Count(c.ExecPrepared("SELECT count(*) FROM revocations"));
    });
  }

  Result<std::optional<UnixNanos>> LastRevocationAt() override {
    AMESH_TRY(rows, Run([](pg::Connection& c) {
                return c.ExecPrepared("SELECT max(revoked_at) FROM revocations");
              }));
    if (rows.empty() || rows.IsNull(0, 0)) return std::optional<UnixNanos>{};
    AMESH_TRY(at, rows.Int(0, 0));
    return std::optional<UnixNanos>(at);
  }

  Result<void> InsertFeedback(const FeedbackRecord& f) override {
    const std::string tags = StringsJson(f.tags);
    auto rows = Run([&](pg::Connection& c) {
      return c.ExecPrepared(
          "INSERT INTO reputation_feedback (id, target_amid, from_amid, session_id, score, tags, "
          "ip_key, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
          {f.id, f.target_amid, f.from_amid, f.session_id, f.score, tags, f.ip_key, f.created_at});
    });
    if (!rows) {
      if (rows.error().code == Code::kConflict) {
        return Fail(Code::kConflict, "feedback for this session was already given");
      }
      return std::unexpected(rows.error());
    }
    return {};
  }

  Result<std::vector<FeedbackRow>> FeedbackForTarget(std::string_view target,
                                                     UnixNanos since) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    "SELECT f.id, f.target_amid, f.from_amid, f.session_id, f.score, f.tags, "
                    "f.ip_key, f.created_at, a.tier_rank, a.created_at FROM reputation_feedback f "
                    "JOIN agents a ON a.amid = f.from_amid WHERE f.target_amid = $1 AND "
                    "f.created_at >= $2 ORDER BY f.created_at, f.id",
                    {target, since});
              }));
    std::vector<FeedbackRow> out;
    for (int r = 0; r < rows.size(); ++r) {
      FeedbackRow fr;
      fr.feedback.id = std::string(rows.Text(r, 0));
      fr.feedback.target_amid = std::string(rows.Text(r, 1));
      fr.feedback.from_amid = std::string(rows.Text(r, 2));
      fr.feedback.session_id = std::string(rows.Text(r, 3));
      AMESH_TRY(score, rows.Double(r, 4));
      fr.feedback.score = score;
      fr.feedback.tags = JsonStrings(rows.Text(r, 5));
      fr.feedback.ip_key = std::string(rows.Text(r, 6));
      AMESH_TRY(created_at, rows.Int(r, 7));
      fr.feedback.created_at = created_at;
      AMESH_TRY(rank, rows.Int(r, 8));
      fr.rater_tier = TierFromRank(rank);
      AMESH_TRY(rater_created_at, rows.Int(r, 9));
      fr.rater_created_at = rater_created_at;
      out.push_back(std::move(fr));
    }
    return out;
  }

  Result<std::uint64_t> CountFeedback(std::string_view target) override {
    return Run([&](pg::Connection& c) {
      return Count(c.ExecPrepared("SELECT count(*) FROM reputation_feedback WHERE target_amid = $1",
                                  {target}));
    });
  }

  Result<std::vector<std::string>> RatedTargets(std::string_view rater) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    "SELECT DISTINCT target_amid FROM reputation_feedback WHERE "
                    "from_amid = $1 ORDER BY target_amid",
                    {rater});
              }));
    return Column(rows);
  }

  Result<bool> InsertSession(const SessionRecord& x) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    "INSERT INTO completed_sessions (session_id, id, initiator_amid, "
                    "receiver_amid, intent, outcome, started_at, reporter_amid, created_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (session_id) DO "
                    "NOTHING",
                    {x.session_id, x.id, x.initiator_amid, x.receiver_amid, x.intent, x.outcome,
                     x.started_at, x.reporter_amid, x.created_at});
              }));
    return rows.affected() > 0;
  }

  Result<SessionCounts> SessionCountsFor(std::string_view amid) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    "SELECT count(*), count(*) FILTER (WHERE outcome = 'success') FROM "
                    "completed_sessions WHERE initiator_amid = $1 OR receiver_amid = $1",
                    {amid});
              }));
    SessionCounts out;
    if (!rows.empty()) {
      AMESH_TRY(total, rows.Int(0, 0));
      AMESH_TRY(successful, rows.Int(0, 1));
      out.total = static_cast<std::uint64_t>(total);
      out.successful = static_cast<std::uint64_t>(successful);
    }
    return out;
  }

  Result<std::vector<std::string>> LeaderboardCandidates(std::uint64_t min_feedback,
                                                         std::uint32_t limit) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    "SELECT a.amid FROM agents a WHERE a.revoked = 0 AND (SELECT count(*) FROM "
                    "reputation_feedback f WHERE f.target_amid = a.amid) >= $1 ORDER BY "
                    "a.reputation_score DESC, a.amid ASC LIMIT $2",
                    {static_cast<std::int64_t>(min_feedback), static_cast<std::int64_t>(limit)});
              }));
    return Column(rows);
  }

  // ── Organisations / OAuth ──

  Result<void> InsertOrganization(const OrganizationRecord& o) override {
    auto rows = Run([&](pg::Connection& c) {
      return c.ExecPrepared(
          "INSERT INTO organizations (id, name, domain, admin_amid, admin_signing_key, "
          "dns_challenge, verified, verified_at, root_certificate, created_at) VALUES "
          "($1, $2, $3, $4, $5, $6, 0, NULL, NULL, $7)",
          {o.id, o.name, o.domain, o.admin_amid, o.admin_signing_key, o.dns_challenge,
           o.created_at});
    });
    if (!rows) {
      if (rows.error().code == Code::kConflict) {
        return Fail(Code::kConflict, "domain already registered");
      }
      return std::unexpected(rows.error());
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
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    "UPDATE organizations SET verified = 1, verified_at = $2, "
                    "root_certificate = $3 WHERE id = $1 AND verified = 0",
                    {id, verified_at, root_certificate});
              }));
    return rows.affected() > 0;
  }

  Result<void> AddOrganizationAgent(std::string_view organization_id, std::string_view domain,
                                    std::string_view amid, std::string_view certificate,
                                    UnixNanos added_at) override {
    return Run([&](pg::Connection& c) -> Result<void> {
      pg::Transaction tx(c);
      AMESH_CHECK(tx.status());
      // The WHERE of the upsert keeps a membership of another organisation untouched (0 rows).
      auto upsert = c.ExecPrepared(
          "INSERT INTO organization_agents (amid, organization_id, certificate, added_at) VALUES "
          "($1, $2, $3, $4) ON CONFLICT (amid) DO UPDATE SET certificate = excluded.certificate, "
          "added_at = excluded.added_at WHERE organization_agents.organization_id = "
          "excluded.organization_id",
          {amid, organization_id, certificate, added_at});
      if (!upsert) {
        // A foreign-key failure: the agent (or organisation) row does not exist.
        if (upsert.error().code == Code::kConflict) return Fail(Code::kNotFound, "Agent not found");
        return std::unexpected(upsert.error());
      }
      if (upsert->affected() == 0) {
        return Fail(Code::kConflict, "agent belongs to another organization");
      }
      AMESH_TRY(updated, c.ExecPrepared("UPDATE agents SET tier_rank = 2, organization = $2, "
                                        "updated_at = $3 WHERE amid = $1 AND revoked = 0",
                                        {amid, domain, added_at}));
      if (updated.affected() == 0) return Fail(Code::kNotFound, "Agent not found or revoked");
      return tx.Commit();
    });
  }

  Result<std::optional<std::string>> GetOrganizationAgentCertificate(
      std::string_view amid) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared("SELECT certificate FROM organization_agents WHERE amid = $1",
                                      {amid});
              }));
    if (rows.empty()) return std::optional<std::string>{};
    return std::optional<std::string>(std::string(rows.Text(0, 0)));
  }

  Result<std::uint64_t> CountOrganizationAgents(std::string_view organization_id) override {
    return Run([&](pg::Connection& c) {
      return Count(
          c.ExecPrepared("SELECT count(*) FROM organization_agents WHERE organization_id = $1",
                         {organization_id}));
    });
  }

  Result<void> InsertOAuthState(const OAuthStateRecord& st) override {
    auto rows = Run([&](pg::Connection& c) {
      return c.ExecPrepared(
          "INSERT INTO oauth_states (state, amid, provider, created_at, expires_at, consumed) "
          "VALUES ($1, $2, $3, $4, $5, 0)",
          {st.state, st.amid, st.provider, st.created_at, st.expires_at});
    });
    if (!rows) {
      if (rows.error().code == Code::kConflict) return Fail(Code::kConflict, "state exists");
      return std::unexpected(rows.error());
    }
    return {};
  }

  Result<std::optional<OAuthStateRecord>> GetOAuthState(std::string_view state) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    "SELECT state, amid, provider, created_at, expires_at, consumed "
                    "FROM oauth_states WHERE state = $1",
                    {state});
              }));
    if (rows.empty()) return std::optional<OAuthStateRecord>{};
    OAuthStateRecord out;
    out.state = std::string(rows.Text(0, 0));
    out.amid = std::string(rows.Text(0, 1));
    out.provider = std::string(rows.Text(0, 2));
    AMESH_TRY(created_at, rows.Int(0, 3));
    out.created_at = created_at;
    AMESH_TRY(expires_at, rows.Int(0, 4));
    out.expires_at = expires_at;
    AMESH_TRY(consumed, rows.Int(0, 5));
    out.consumed = consumed != 0;
    return std::optional<OAuthStateRecord>(std::move(out));
  }

  Result<std::uint64_t> DeleteExpiredOAuthStates(UnixNanos now) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared("DELETE FROM oauth_states WHERE expires_at <= $1", {now});
              }));
    return static_cast<std::uint64_t>(rows.affected());
  }

  Result<bool> CompleteOAuthVerification(std::string_view state, UnixNanos now,
                                         const AgentVerificationRecord& v) override {
    return Run([&](pg::Connection& c) -> Result<bool> {
      pg::Transaction tx(c);
      AMESH_CHECK(tx.status());
      // The row lock makes a concurrent call with the same state wait, then see consumed = 1.
      AMESH_TRY(consumed, c.ExecPrepared(
                              "UPDATE oauth_states SET consumed = 1 WHERE state = $1 AND amid = $2 "
                              "AND provider = $3 AND consumed = 0 AND expires_at > $4",
                              {state, v.amid, v.provider, now}));
      if (consumed.affected() == 0) return false;
      AMESH_TRY(raised,
                c.ExecPrepared("UPDATE agents SET tier_rank = CASE WHEN tier_rank < 1 THEN 1 "
                               "ELSE tier_rank END, updated_at = $2 WHERE amid = $1 AND "
                               "revoked = 0",
                               {v.amid, now}));
      if (raised.affected() == 0) return Fail(Code::kNotFound, "Agent not found or revoked");
      AMESH_CHECK(c.ExecPrepared(
          "INSERT INTO agent_verifications (amid, provider, provider_id, verified_at, "
          "certificate) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (amid, provider) DO UPDATE SET "
          "provider_id = excluded.provider_id, verified_at = excluded.verified_at, certificate = "
          "excluded.certificate",
          {v.amid, v.provider, v.provider_id, v.verified_at, v.certificate}));
      AMESH_CHECK(tx.Commit());
      return true;
    });
  }

  Result<std::vector<AgentVerificationRecord>> ListAgentVerifications(
      std::string_view amid) override {
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(
                    "SELECT amid, provider, provider_id, verified_at, certificate FROM "
                    "agent_verifications WHERE amid = $1 ORDER BY provider",
                    {amid});
              }));
    std::vector<AgentVerificationRecord> out;
    for (int r = 0; r < rows.size(); ++r) {
      AgentVerificationRecord v;
      v.amid = std::string(rows.Text(r, 0));
      v.provider = std::string(rows.Text(r, 1));
      v.provider_id = std::string(rows.Text(r, 2));
      AMESH_TRY(verified_at, rows.Int(r, 3));
      v.verified_at = verified_at;
      v.certificate = std::string(rows.Text(r, 4));
      out.push_back(std::move(v));
    }
    return out;
  }

 private:
  Result<std::optional<OrganizationRecord>> OrganizationWhere(std::string_view column,
                                                              std::string_view value) {
    // `column` is one of two fixed names from this file, never input.
    AMESH_TRY(rows, Run([&](pg::Connection& c) {
                return c.ExecPrepared(fmt::format("SELECT {} FROM organizations WHERE {} = $1",
                                                  kOrganizationColumns, column),
                                      {value});
              }));
    if (rows.empty()) return std::optional<OrganizationRecord>{};
    AMESH_TRY(org, ReadOrganization(rows, 0));
    return std::optional<OrganizationRecord>(std::move(org));
  }

  // Runs `f` on a pooled connection. When it fails because an idle connection had gone stale
  // (the server restarted or dropped it), runs it once more on a fresh connection: the failed
  // attempt never reached a live session, so nothing was applied twice.
  template <typename F>
  auto Run(F&& f) -> decltype(f(std::declval<pg::Connection&>())) {
    for (int attempt = 0;; ++attempt) {
      auto lease = pool_->Take();
      if (!lease) return std::unexpected(lease.error());
      auto result = f(*lease->conn);
      const bool broken = !lease->conn->ok();
      pool_->Give(std::move(lease->conn));
      if (result || !broken || !lease->reused || attempt > 0) return result;
    }
  }

  static std::vector<std::string> Column(const Rows& rows) {
    std::vector<std::string> out;
    out.reserve(static_cast<std::size_t>(rows.size()));
    for (int r = 0; r < rows.size(); ++r) out.emplace_back(rows.Text(r, 0));
    return out;
  }

  static constexpr std::chrono::milliseconds kFoldInterval{10'000};

  std::unique_ptr<Pool> pool_;
  std::atomic<std::int64_t> next_fold_{0};  // steady-clock ns
};

}  // namespace

Result<std::unique_ptr<RegistryStore>> OpenPostgresStore(const std::string& uri,
                                                         const PostgresStoreOptions& options) {
  // One connection now, so that a wrong URL or an unreachable server fails at start.
  auto first = pg::Connection::Connect(uri, Pool::Options());
  if (!first) {
    return Fail(first.error().code, "postgresql: " + first.error().message, "db");
  }
  auto pool = std::make_unique<Pool>(uri, std::max<std::size_t>(1, options.connections));
  pool->Add(std::move(*first));
  return std::unique_ptr<RegistryStore>(new PgStore(std::move(pool)));
}

std::span<const std::string_view> PostgresMigrations() { return kMigrations; }

Result<std::unique_ptr<RegistryStore>> OpenPostgresStore(const std::string& uri) {
  PostgresStoreOptions options;
  if (const char* env = std::getenv("UV_THREADPOOL_SIZE"); env != nullptr) {
    const int n = std::atoi(env);
    if (n >= 1 && n <= 128) options.connections = static_cast<std::size_t>(n);
  }
  return OpenPostgresStore(uri, options);
}

}  // namespace agentmesh::registry

#else  // built without libpq

namespace agentmesh::registry {

Result<std::unique_ptr<RegistryStore>> OpenPostgresStore(const std::string& /*uri*/,
                                                         const PostgresStoreOptions& /*options*/) {
  return Fail(Code::kUnavailable,
              "the PostgreSQL backend is not built into this program (libpq-dev was missing)",
              "db");
}

Result<std::unique_ptr<RegistryStore>> OpenPostgresStore(const std::string& uri) {
  return OpenPostgresStore(uri, PostgresStoreOptions{});
}

std::span<const std::string_view> PostgresMigrations() { return {}; }

}  // namespace agentmesh::registry

#endif
