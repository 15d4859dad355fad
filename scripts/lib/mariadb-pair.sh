# Shared by scripts/mysql-failover.sh and scripts/probe-cost.sh (sourced,
# not run): a MariaDB primary and replica in a temporary directory on free
# loopback ports, with GTID replication and three users (repl, check, app),
# and the clean-up of everything started, by pid, on exit. Installs
# mariadb-server and mariadb-client with apt-get only when mariadbd is
# missing. The caller sets ME (its name, for messages) and may set
# CHECK_PW, APP_PW, REPL_PW; KEEP=1 keeps the directory.

CHECK_PW=${CHECK_PW:-'Ch3ck-pw'}    # the proxy's check user
APP_PW=${APP_PW:-'App-pw1'}         # the application user
REPL_PW=${REPL_PW:-'Repl-pw1'}      # the replication user

say() { printf '\n== %s\n' "$*"; }
die() { printf '%s: %s\n' "$ME" "$*" >&2; exit 1; }
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
work=$(mktemp -d "${TMPDIR:-/tmp}/easyproxy-$ME.XXXXXX")
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
  [ "$status" -eq 0 ] || echo "$ME: failed (status $status)" >&2
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Ports below the kernel's ephemeral range, so no client socket holds one.
read -r eph_low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || eph_low=32768
[ "$eph_low" -gt 12000 ] || eph_low=32768
used_ports=" "
free_port() { # VAR...: sets each VAR to a loopback port nothing listens on
  local p var
  for var in "$@"; do
    while :; do
      p=$(( 10000 + RANDOM % (eph_low - 10000) ))
      case "$used_ports" in *" $p "*) continue ;; esac
      (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || break
    done
    used_ports+="$p "
    printf -v "$var" '%s' "$p"
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
# start_pair [replica options...]: db1 (primary) on $P1 and db2 (replica,
# read-only, replicating db1) on $P2; the users and database app (table t)
# created on db1 and replicated.
start_pair() {
  free_port P1 P2
  say "MariaDB $("$MARIADBD" --version | awk '{print $3}'): primary db1 on 127.0.0.1:$P1, replica db2 on 127.0.0.1:$P2 (data in $work)"
  start_db db1 1 "$P1"
  start_db db2 2 "$P2" --read-only=1 "$@"
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
  caught_up db2 db1
  echo "replication running: db2 replicates db1 (users check and app, database app, came over)"
}

caught_up() { # REPLICA SOURCE: waits until REPLICA applied all SOURCE wrote
  [ "$(sql "$1" "SELECT MASTER_GTID_WAIT('$(sql "$2" 'SELECT @@gtid_binlog_pos')', 30)")" = 0 ] ||
    die "$1 did not catch up with $2"
}

http_get() { # PORT PATH: the body of GET PATH from 127.0.0.1:PORT
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf 'GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' "$2" >&3
  sed '1,/^\r$/d' <&3
  exec 3<&-
}

# cpu_ticks PID: utime + stime from /proc/PID/stat, in clock ticks;
# sys_ticks PID: stime alone
cpu_ticks() { stat_fields "$1" 12 13; }
sys_ticks() { stat_fields "$1" 13; }
stat_fields() { # PID N...: the sum of fields N (counted after the command name)
  local stat sum=0 n
  stat=$(<"/proc/$1/stat")
  stat=${stat##*) }            # the fields after "(command) "
  read -r -a f <<<"$stat"
  shift
  for n in "$@"; do sum=$(( sum + f[n - 1] )); done
  echo "$sum"
}
