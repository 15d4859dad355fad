#!/usr/bin/env bash
# easyproxy MySQL/MariaDB failover demo.
#
# Starts a MariaDB primary and a replica (GTID replication) in a temporary
# directory on free loopback ports, then easyproxy (release build) with two
# services:
#   write  role = "primary": both servers; only the writable one takes
#          connections; close_on_down cuts sessions left on a demoted primary
#   read   role = "replica": the replica; the primary as backup
# A client writes through `write`, the replica is promoted, and new writes
# follow it within a couple of seconds. Everything is stopped and removed on
# exit. Installs mariadb-server and mariadb-client with apt-get only when
# mariadbd is missing. Run from anywhere: scripts/mysql-failover.sh
# (INTERVAL_MS=... changes the check interval; KEEP=1 keeps the directory.)
set -euo pipefail
cd "$(dirname "$0")/.."

ME=mysql-failover
INTERVAL_MS=${INTERVAL_MS:-300}     # health-check interval of both services
# shellcheck source=scripts/lib/mariadb-pair.sh
. scripts/lib/mariadb-pair.sh

start_pair
free_port W R S

# --- easyproxy ------------------------------------------------------------------
say "building easyproxy (cargo build --release)"
cargo build --release --quiet --bin easyproxy
cat >"$work/easyproxy.toml" <<EOF
[global]
log_level = "info"

[stats]
listen = "127.0.0.1:$S"
cache_ms = 0

[[service]]
name = "write"                 # one address for writes: the current primary
listen = "127.0.0.1:$W"
close_on_down = true           # a demoted primary's sessions are closed

[service.health_check]
interval_ms = $INTERVAL_MS
rise = 1
fall = 1
mysql_user = "check"
mysql_password_file = "$work/check.pw"
role = "primary"               # up only while writable; at most one at a time

[[service.backend]]
address = "127.0.0.1:$P1"
[[service.backend]]
address = "127.0.0.1:$P2"

[[service]]
name = "read"                  # one address for reads: healthy replicas
listen = "127.0.0.1:$R"

[service.health_check]
interval_ms = $INTERVAL_MS
rise = 1
fall = 1
mysql_user = "check"
mysql_password_file = "$work/check.pw"
role = "replica"               # up only while read-only and replicating
max_replication_lag_ms = 5000

[[service.backend]]
address = "127.0.0.1:$P2"
[[service.backend]]
address = "127.0.0.1:$P1"      # the primary takes reads only while no replica is up
backup = true
EOF
(umask 077 && printf '%s\n' "$CHECK_PW" >"$work/check.pw")
say "easyproxy -c $work/easyproxy.toml"
sed -n '/^\[\[service\]\]/,$p' "$work/easyproxy.toml"
target/release/easyproxy -c "$work/easyproxy.toml" 2>"$work/easyproxy.log" &
proxy=$!
pids=("$proxy" "${pids[@]}")   # stopped first
daemons+=("$proxy")
lands_on() { [ "$(app "$1" 'SELECT @@port')" = "$2" ]; }
wait_until 30 "writes through the proxy (see $work/easyproxy.log)" lands_on "$W" "$P1"
wait_until 30 "reads through the proxy" lands_on "$R" "$P2"
all_checked() { ! http_get "$S" /stats | grep -Eq '"last_check": *"none"'; }
wait_until 10 "a first check of every backend" all_checked

roles() { # the role fields of /stats
  local json
  json=$(http_get "$S" /stats 2>/dev/null) || { echo "(stats unavailable)"; return; }
  if command -v jq >/dev/null; then
    jq -r '["service","backend","state","role","lag_ms"],
           (.services[] | .name as $s | .backends[] |
            [$s, .address, .state, (.role // "-"), (.replication_lag_ms // "-")]) | @tsv' <<<"$json" |
      column -t
  else
    echo "$json"
  fi
}

say "a client through the proxy: write 127.0.0.1:$W, read 127.0.0.1:$R"
echo "\$ mariadb -h127.0.0.1 -P$W -uapp -p... -e 'INSERT INTO app.t (port) VALUES (@@port); SELECT @@port'"
app "$W" "INSERT INTO app.t (port) VALUES (@@port); SELECT @@port AS 'write went to'"
echo "\$ mariadb -h127.0.0.1 -P$R -uapp -p... -e 'SELECT @@port, COUNT(*) FROM app.t'"
app "$R" "SELECT @@port AS 'read from', COUNT(*) AS 'rows' FROM app.t"
say "GET /stats: roles"
roles

say "a session left open on the primary through write (SELECT SLEEP(60))"
# (-n: unbuffered output; the time the client ends goes to held.end)
(app "$W" "SELECT @@port; SELECT SLEEP(60)" -n >"$work/held.out" 2>&1 || true; now_ms >"$work/held.end") &
held=$!
pids+=("$held")
held_running() { [ "$(sql db1 "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER='app' AND INFO LIKE 'SELECT SLEEP%'")" -ge 1 ]; }
wait_until 10 "the held session" held_running
echo "session open on db1 (SELECT @@port said $(head -1 "$work/held.out"))"

say "failover: db1 read-only, db2 catches up and is promoted (STOP SLAVE; RESET SLAVE ALL; read_only = 0)"
t0=$(now_ms)
sql db1 "SET GLOBAL read_only = 1"
caught_up db2 db1
sql db2 "STOP SLAVE; RESET SLAVE ALL; SET GLOBAL read_only = 0"
echo "db2 writable after $(( $(now_ms) - t0 )) ms; writing through the proxy every 100 ms:"
landed=""
for _ in $(seq 1 100); do
  t=$(( $(now_ms) - t0 ))
  if out=$(app "$W" "INSERT INTO app.t (port) VALUES (@@port); SELECT @@port" 2>&1); then
    printf '  +%5d ms  write landed on port %s\n' "$t" "$out"
    [ "$out" = "$P2" ] && { landed=$t; break; }
  else
    case "$out" in
      *read-only*) why="refused: the server is read-only (db1, demoted; the proxy has not seen it yet)" ;;
      *"Lost connection"*) why="turned away by the proxy: no primary up at this instant" ;;
      *) why=$(tail -1 <<<"$out" | cut -c1-100) ;;
    esac
    printf '  +%5d ms  %s\n' "$t" "$why"
  fi
  sleep 0.1
done
[ -n "$landed" ] || die "writes did not follow the promotion within 10 s"
echo "new write connections reach the promoted server $landed ms after the failover began"
for _ in 1 2 3; do app "$W" "INSERT INTO app.t (port) VALUES (@@port)"; done

say "the session left on db1"
wait_until 10 "the session on db1 to be closed (close_on_down)" test -s "$work/held.end"
echo "closed by easyproxy $(( $(cat "$work/held.end") - t0 )) ms after the failover began; the client said:"
sed 's/^/  /' "$work/held.out"

say "GET /stats: roles after the failover"
wait_until 10 "reads on the backup" lands_on "$R" "$P1"
roles
echo "rows by the server that took them (on db2, the new primary):"
app "$W" "SELECT port, COUNT(*) FROM app.t GROUP BY port" | sed 's/^/  /'
echo "reads now come from db1 (the read service's backup): port $(app "$R" 'SELECT @@port')"

say "easyproxy log: role changes and close_on_down"
grep -E 'is (UP|DOWN)|close_on_down|\[ERROR\]' "$work/easyproxy.log" | sed 's/^[^ ]* //' || true
say "done: stopping easyproxy and both servers, removing $work"
