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

INTERVAL_MS=${INTERVAL_MS:-300}     # health-check interval of both services
CHECK_PW='Ch3ck-pw'                 # the proxy's check user
APP_PW='App-pw1'                    # the application user
REPL_PW='Repl-pw1'                  # the replication user

say() { printf '\n== %s\n' "$*"; }
die() { printf 'mysql-failover: %s\n' "$*" >&2; exit 1; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# --- MariaDB, installed only when missing -----------------------------------
find_bin() { # first of the names found in PATH or /usr/sbin, /usr/bin
  local n d
  for n in "$@"; do
    command -v "$n" 2>/dev/null && return 0
    for d in /usr/sbin /usr/bin; do [ -x "$d/$n" ] && { echo "$d/$n"; return 0; }; done
  done
  return 1
}
if ! find_bin mariadbd mysqld >/dev/null; then
  say "mariadbd is missing: apt-get install mariadb-server mariadb-client"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq mariadb-server mariadb-client >/dev/null
fi
MARIADBD=$(find_bin mariadbd mysqld) || die "no mariadbd after installing"
INSTALL_DB=$(find_bin mariadb-install-db mysql_install_db) || die "no mariadb-install-db"
CLIENT=$(find_bin mariadb mysql) || die "no mariadb client"
as_user=()
[ "$(id -u)" -eq 0 ] && as_user=(--user=root)   # mariadbd refuses to run as root without it

# --- clean-up: everything this script started, by pid ------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/easyproxy-failover.XXXXXX")
pids=()
cleanup() {
  local status=$? p
  trap - EXIT INT TERM
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 300); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
  [ "$status" -eq 0 ] || echo "mysql-failover: failed (status $status)" >&2
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports below the kernel's ephemeral range, so no client socket holds one.
read -r eph_low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_low=32768
[ "$eph_low" -gt 12000 ] || eph_low=32768
used_ports=" "
free_port() { # a loopback port nothing listens on (and not handed out yet)
  local p
  while :; do
    p=$(( 10000 + RANDOM % (eph_low - 10000) ))
    case "$used_ports" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      used_ports+="$p "
      echo "$p"
      return
    fi
  done
}

daemons=()   # the servers and easyproxy: they must keep running
wait_until() { # SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s (while
  local limit=$1 what=$2 i p  # the daemons run)
  shift 2
  for i in $(seq 1 $(( limit * 10 ))); do
    "$@" >/dev/null 2>&1 && return 0
    for p in "${daemons[@]}"; do kill -0 "$p" 2>/dev/null || die "a server exited while waiting for $what"; done
    sleep 0.1
  done
  die "timed out after ${limit}s waiting for $what"
}

# sql NAME "SQL": as root over the server's unix socket
sql() { "$CLIENT" --no-defaults -uroot -N -B --socket="$work/$1.sock" -e "$2"; }
# app PORT "SQL" [client options]: as the application, over TCP (through the
# proxy or not)
app() {
  local port=$1 query=$2
  shift 2
  "$CLIENT" --no-defaults -N -B --protocol=TCP -h127.0.0.1 -P"$port" -uapp -p"$APP_PW" "$@" -e "$query"
}

start_db() { # NAME SERVER_ID PORT [mariadbd options...]
  local name=$1 id=$2 port=$3
  shift 3
  "$INSTALL_DB" --no-defaults --auth-root-authentication-method=normal "${as_user[@]}" \
    --datadir="$work/$name" >"$work/$name-install.log" 2>&1 ||
    { cat "$work/$name-install.log"; die "mariadb-install-db failed for $name"; }
  "$MARIADBD" --no-defaults "${as_user[@]}" --datadir="$work/$name" --port="$port" \
    --bind-address=127.0.0.1 --socket="$work/$name.sock" --pid-file="$work/$name.pid" \
    --log-error="$work/$name.err" --skip-name-resolve --innodb-buffer-pool-size=32M \
    --server-id="$id" --log-bin=mysql-bin --log-slave-updates --binlog-format=ROW "$@" \
    </dev/null >/dev/null 2>&1 &
  pids+=($!) daemons+=($!)
  wait_until 60 "$name to start (see $work/$name.err)" sql "$name" "SELECT 1"
}

slave_running() { # NAME: both replication threads run
  local st
  st=$("$CLIENT" --no-defaults -uroot --socket="$work/$1.sock" -E -e "SHOW SLAVE STATUS")
  grep -q "Slave_IO_Running: Yes" <<<"$st" && grep -q "Slave_SQL_Running: Yes" <<<"$st"
}

# --- the pair -----------------------------------------------------------------
P1=$(free_port) P2=$(free_port) W=$(free_port) R=$(free_port) S=$(free_port)
say "MariaDB $("$MARIADBD" --version | awk '{print $3}'): primary db1 on 127.0.0.1:$P1, replica db2 on 127.0.0.1:$P2 (data in $work)"
start_db db1 1 "$P1"
start_db db2 2 "$P2" --read-only=1
sql db1 "CREATE USER 'repl'@'%' IDENTIFIED BY '$REPL_PW';
         GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
         CREATE USER 'check'@'%' IDENTIFIED BY '$CHECK_PW';
         GRANT REPLICA MONITOR ON *.* TO 'check'@'%';
         CREATE USER 'app'@'%' IDENTIFIED BY '$APP_PW';
         CREATE DATABASE app;
         GRANT ALL ON app.* TO 'app'@'%';
         CREATE TABLE app.t (id INT AUTO_INCREMENT PRIMARY KEY, port INT NOT NULL)"
sql db2 "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$P1, MASTER_USER='repl',
         MASTER_PASSWORD='$REPL_PW', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1;
         START SLAVE"
wait_until 60 "replication to run" slave_running db2
sql db2 "SELECT MASTER_GTID_WAIT('$(sql db1 'SELECT @@gtid_binlog_pos')', 30)" >/dev/null
echo "replication running: db2 replicates db1 (users check and app, database app, came over)"

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

roles() { # the role fields of /stats
  local json
  json=$(curl -fsS "http://127.0.0.1:$S/stats" 2>/dev/null) || { echo "(stats unavailable)"; return; }
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
sql db2 "SELECT MASTER_GTID_WAIT('$(sql db1 'SELECT @@gtid_binlog_pos')', 30)" >/dev/null
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
