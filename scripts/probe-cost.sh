#!/usr/bin/env bash
# Probe cost: the CPU easyproxy (release build) spends checking N backends
# every INTERVAL_MS against a real MariaDB replica. The replica listens on
# 127.0.0.1 ... 127.0.0.N (one port), so the N backends of the one service
# are distinct addresses reaching the same server. For each mode:
#   replica  mysql_user + password, role = "replica" (login, SHOW GLOBAL
#            VARIABLES, SHOW SLAVE STATUS, COM_QUIT)
#   any      mysql_user + password, login only (COM_QUIT after the OK)
#   tcp      no mysql_user: a plain TCP connect
# it waits until all N are up, then reads utime+stime of easyproxy and of
# the replica's mariadbd from /proc/PID/stat before and after DURATION
# seconds, and prints CPU % and CPU per check (checks = the server's
# `Connections` counter over the window).
#
#   scripts/probe-cost.sh                 # replica mode, N=100, 100 ms, 30 s
#   scripts/probe-cost.sh replica any tcp
#   N=200 INTERVAL_MS=50 DURATION=10 scripts/probe-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ME=probe-cost
N=${N:-100}
INTERVAL_MS=${INTERVAL_MS:-100}
DURATION=${DURATION:-30}
MODES=("${@:-replica}")
[ "$N" -ge 1 ] && [ "$N" -le 254 ] || { echo "N must be 1..254" >&2; exit 2; }
for m in "${MODES[@]}"; do
  case "$m" in replica | any | tcp) ;; *) echo "unknown mode $m (replica | any | tcp)" >&2; exit 2 ;; esac
done
# shellcheck source=scripts/lib/mariadb-pair.sh
. scripts/lib/mariadb-pair.sh

start_pair --bind-address="$(seq -s, -f '127.0.0.%g' 1 "$N")" --max-connections=$(( N + 100 ))
db2_pid=$(<"$work/db2.pid")
say "building easyproxy (cargo build --release)"
cargo build --release --quiet --bin easyproxy
hz=$(getconf CLK_TCK)
status() { sql db2 "SHOW GLOBAL STATUS LIKE '$1'" | cut -f2; }
ups() { http_get "$S" /stats | grep -Eo '"state": *"up"' | wc -l; }
all_up() { [ "$(ups)" -eq "$N" ]; }

results=()
for mode in "${MODES[@]}"; do
  free_port S L
  case "$mode" in
    replica) keys="mysql_user = \"check\"
mysql_password = \"$CHECK_PW\"
role = \"replica\"" ;;
    any) keys="mysql_user = \"check\"
mysql_password = \"$CHECK_PW\"" ;;
    tcp) keys="" ;;
  esac
  {
    printf '[global]\nlog_level = "warn"\n\n[stats]\nlisten = "127.0.0.1:%s"\ncache_ms = 0\n\n' "$S"
    printf '[[service]]\nname = "replicas"\nlisten = "127.0.0.1:%s"\n\n' "$L"
    printf '[service.health_check]\ninterval_ms = %s\ntimeout_ms = 1000\nrise = 1\nfall = 1\n%s\n\n' \
      "$INTERVAL_MS" "$keys"
    for i in $(seq 1 "$N"); do printf '[[service.backend]]\naddress = "127.0.0.%s:%s"\n' "$i" "$P2"; done
  } >"$work/probe-$mode.toml"

  say "$mode: $N backends (127.0.0.1..127.0.0.$N:$P2) checked every $INTERVAL_MS ms"
  target/release/easyproxy -c "$work/probe-$mode.toml" 2>"$work/probe-$mode.log" &
  proxy=$!
  pids=("$proxy" "${pids[@]}") daemons+=("$proxy")
  wait_until 60 "all $N backends up (see $work/probe-$mode.log)" all_up
  sleep 1 # past the start, where every backend is checked at once

  conn0=$(status Connections) aborted0=$(status Aborted_connects)
  p0=$(cpu_ticks "$proxy") k0=$(sys_ticks "$proxy") d0=$(cpu_ticks "$db2_pid") t0=$(date +%s%N)
  sleep "$DURATION" # the measurement window
  p1=$(cpu_ticks "$proxy") k1=$(sys_ticks "$proxy") d1=$(cpu_ticks "$db2_pid") t1=$(date +%s%N)
  conn1=$(status Connections) aborted1=$(status Aborted_connects)
  up=$(ups)

  line=$(awk -v p=$((p1 - p0)) -v k=$((k1 - k0)) -v d=$((d1 - d0)) -v ns=$((t1 - t0)) -v hz="$hz" \
    -v checks=$((conn1 - conn0 - 2)) -v n="$N" -v iv="$INTERVAL_MS" -v mode="$mode" \
    -v aborted=$((aborted1 - aborted0)) -v up="$up" 'BEGIN {
      s = ns / 1e9; cpu = p / hz; per = 0
      if (checks > 0) per = 1e6 * cpu / checks
      kernel = 0
      if (p > 0) kernel = 100 * k / p
      printf "%-8s %3d backends / %d ms: %.1f s, %d checks (%.0f/s, expected %.0f/s), easyproxy CPU %.2f s = %.2f%% of one core (%.0f%% of it in the kernel), %.1f us per check; mariadbd CPU %.2f%%; Aborted_connects +%d; %d/%d up",
        mode, n, iv, s, checks, checks / s, n * 1000 / iv, cpu, 100 * cpu / s, kernel,
        per, 100 * d / hz / s, aborted, up, n
    }')
  echo "$line"
  results+=("$line")
  kill -TERM "$proxy"
  wait "$proxy" || true
  keep=()
  for p in "${daemons[@]}"; do [ "$p" = "$proxy" ] || keep+=("$p"); done
  daemons=("${keep[@]}")
done

say "probe cost (clock ticks: $hz/s; $(nproc) CPUs; $(uname -r))"
printf '%s\n' "${results[@]}"
