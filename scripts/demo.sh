#!/usr/bin/env bash
# The README's run command: a local AgentMesh mesh in a temporary directory.
#
#   scripts/demo.sh            install packages (scripts/deps.sh), build (reusing build/), run
#   KEEP=1 scripts/demo.sh     keep the temporary directory (homes, logs, databases) afterwards
#   BUILD_DIR=dir scripts/demo.sh   use another build directory
#
# Starts amesh-registry (SQLite) and amesh-relay on free loopback ports and two agents, Alice and
# Bob, each with its own agentmeshd, home and socket. Bob offers weather forecasts, answered by a
# tiny shell script through `amesh serve`, and his policy accepts "weather" and rejects
# "creative". Then: search, an accepted KNOCK, an encrypted request and its response, a rejected
# KNOCK with its reason, and the audit logs. Every command is printed before it runs; every
# process is stopped on exit; the exit status is non-zero if any step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bold() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
note() { printf '\033[2m%s\033[0m\n' "$*"; }
die() { printf '\033[31mdemo: %s\033[0m\n' "$*" >&2; exit 1; }

# ── Build (quick when build/ is current) ────────────────────────────────────────────────────────
bold "Installing packages and building (reuses ${BUILD_DIR:-build}/)"
scripts/deps.sh
build=${BUILD_DIR:-build}
if [ ! -f "$build/CMakeCache.txt" ]; then
  # The same configuration as scripts/test.sh, so either can reuse the other's build.
  cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DAGENTMESH_WERROR=ON \
    -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O2 -g1 -DNDEBUG" >/dev/null
fi
jobs=$(nproc 2>/dev/null || echo 2)
cmake --build "$build" -j"$jobs" --target amesh agentmeshd amesh-relay amesh-registry >/dev/null ||
  die "build failed: run \`cmake --build $build --target amesh agentmeshd amesh-relay amesh-registry\` to see why"
AMESH=$root/$build/cmd/amesh/amesh
export AGENTMESHD=$root/$build/daemon/agentmeshd
RELAY=$root/$build/servers/relay/amesh-relay
REGISTRY=$root/$build/servers/registry/amesh-registry
for bin in "$AMESH" "$AGENTMESHD" "$RELAY" "$REGISTRY"; do
  [ -x "$bin" ] || die "missing $bin"
done

# ── Cleanup, whatever happens ───────────────────────────────────────────────────────────────────
work=$(mktemp -d /tmp/agentmesh-demo.XXXXXX)
pids=()
finished=0
cleanup() {
  local status=$?
  set +e
  for agent in alice bob; do
    [ -S "$work/$agent.sock" ] &&
      AGENTMESH_HOME=$work/$agent AGENTMESH_SOCKET=$work/$agent.sock \
        "$AMESH" --no-autostart daemon stop >/dev/null 2>&1
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null; done
  if [ "$finished" = 1 ] && [ -z "${KEEP:-}" ]; then
    rm -rf "$work"
  else
    printf '\nLogs, homes and databases kept in %s\n' "$work" >&2
  fi
  if [ "$finished" != 1 ]; then
    printf '\033[31mdemo FAILED (exit status %s)\033[0m\n' "$status" >&2
    [ "$status" = 0 ] && status=1
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
unset XDG_RUNTIME_DIR  # each agent names its own socket below

# Runs amesh as one agent, printing the command first: `as alice knock …`.
as() {
  local who=$1
  shift
  printf '\033[36m%s$\033[0m amesh' "$who"
  local arg
  for arg in "$@"; do
    case $arg in
      *[!A-Za-z0-9_./:=@%+,-]*) printf " '%s'" "${arg//\'/\'\\\'\'}" ;;
      *) printf ' %s' "$arg" ;;
    esac
  done
  printf '\n'
  AGENTMESH_HOME=$work/$who AGENTMESH_SOCKET=$work/$who.sock "$AMESH" "$@"
}
# The same, silently (for values the demo needs).
quiet() {
  local who=$1
  shift
  AGENTMESH_HOME=$work/$who AGENTMESH_SOCKET=$work/$who.sock "$AMESH" "$@"
}
json_field() { sed -n "s/.*\"$1\": *\"\\([^\"]*\\)\".*/\\1/p" | head -1; }

# Starts a server in the background and waits for its "listening on port N" line.
start_server() {
  local name=$1
  shift
  printf '\033[36m$\033[0m %s\n' "$*"
  "$@" >"$work/$name.out" 2>"$work/$name.log" &
  pids+=($!)
  for _ in $(seq 100); do
    port=$(sed -n 's/.*listening on port \([0-9]*\).*/\1/p' "$work/$name.out" | head -1)
    [ -n "$port" ] && return 0
    kill -0 "${pids[-1]}" 2>/dev/null || die "$name exited: $(tail -n 3 "$work/$name.log")"
    sleep 0.05
  done
  die "$name did not start (log: $work/$name.log)"
}

# ── The mesh ────────────────────────────────────────────────────────────────────────────────────
bold "A registry and a relay on free loopback ports (in $work)"
start_server registry "$REGISTRY" --listen 127.0.0.1:0 --db "sqlite:$work/registry.db" \
  --state-dir "$work/registry"
registry_url=http://127.0.0.1:$port
start_server relay "$RELAY" --listen 127.0.0.1:0 --store "$work/relay.db"
relay_url=ws://127.0.0.1:$port
note "registry $registry_url, relay $relay_url"

bold "Two agents, each with its own agentmeshd (AGENTMESH_HOME and AGENTMESH_SOCKET per agent)"
as alice daemon start
as bob daemon start
as alice init --name Alice --registry "$registry_url" --relay "$relay_url"
as bob init --name Bob --registry "$registry_url" --relay "$relay_url"

bold "Bob offers weather forecasts, accepts \"weather\" KNOCKs and rejects \"creative\" ones"
as bob register --capability weather/forecast --display-name "Bob's weather service"
cat >"$work/bob-policy.json" <<'EOF'
{
  "accepted_intents": ["weather"],
  "rejected_intents": ["creative"],
  "default_constraints": {"max_messages": 20, "ttl_seconds": 600}
}
EOF
note "$(cat "$work/bob-policy.json")"
as bob policy set "$work/bob-policy.json"
as alice register

bold "Bob's answers come from a four-line shell script, turned into a service by amesh serve"
cat >"$work/weather.sh" <<'EOF'
#!/bin/sh
# Reads one request (JSON) on stdin, prints the response (JSON) on stdout.
read -r request
city=$(printf '%s' "$request" | sed -n 's/.*"city" *: *"\([^"]*\)".*/\1/p')
printf '{"city":"%s","forecast":"sunny","high_c":21,"served_by":"%s"}\n' "${city:-nowhere}" "$(hostname)"
EOF
chmod +x "$work/weather.sh"
note "$(cat "$work/weather.sh")"
printf '\033[36mbob$\033[0m amesh serve --intent weather -- %s &\n' "$work/weather.sh"
AGENTMESH_HOME=$work/bob AGENTMESH_SOCKET=$work/bob.sock \
  "$AMESH" serve --intent weather -- "$work/weather.sh" 2>"$work/serve.log" &
pids+=($!)

# Both daemons must be on the relay before a KNOCK can travel.
for agent in alice bob; do
  for _ in $(seq 100); do
    quiet "$agent" --json status | grep -q '"connected": true' && break
    sleep 0.05
  done
done
bob_amid=$(quiet bob --json whoami | json_field amid)
[ -n "$bob_amid" ] || die "no AMID for Bob"

bold "Alice finds Bob by capability"
as alice search weather/forecast

bold "Alice knocks: the intent is accepted by Bob's policy"
knock_out=$(as alice knock "$bob_amid" --intent weather/forecast --action lookup)
printf '%s\n' "$knock_out"
session=$(printf '%s\n' "$knock_out" | sed -n 's/^session  *//p')
[ -n "$session" ] || die "no session id in the KNOCK's answer"

bold "An end-to-end encrypted request in that session, answered by Bob's script"
as alice send "$session" '{"city":"Lisbon","days":1}' --wait 10

bold "Alice knocks with an intent Bob rejects: exit status 4 and the reason"
set +e
as alice knock "$bob_amid" --intent creative/poems
rc=$?
set -e
[ "$rc" = 4 ] || die "expected the creative KNOCK to be rejected (exit 4), got exit status $rc"
note "(exit status $rc: KNOCK rejected)"

bold "Bob can dry-run his policy on any KNOCK and see why"
set +e
as bob policy test --from "$(quiet alice --json whoami | json_field amid)" --intent creative/poems
set -e

bold "Sessions and the audit log"
as alice sessions
as bob audit --limit 20
note "Audit logs (one JSON object per line; removed with the demo directory unless KEEP=1):"
note "  $work/alice/logs/audit.jsonl"
note "  $work/bob/logs/audit.jsonl"
note "Daemon logs: $work/alice/logs/agentmeshd.log, $work/bob/logs/agentmeshd.log"

finished=1
bold "Done: registry, relay, two daemons and amesh serve are stopped on exit"
