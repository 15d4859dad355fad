#!/usr/bin/env bash
# easyproxy demo: starts two sample backends, runs easyproxy on the example
# easyproxy.toml in front of them, sends traffic through it, shows the stats,
# then stops everything gracefully. Run from anywhere: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building (release)"
cargo build --release --quiet --bin easyproxy --example demo
bin=target/release/easyproxy
demo=target/release/examples/demo
logdir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$logdir"
}
trap cleanup EXIT

wait_port() { # host port
  for _ in $(seq 1 200); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on $1:$2" >&2
  return 1
}

echo "== starting sample backends alpha (127.0.0.1:17001, weight 3) and beta (127.0.0.1:17002, weight 1)"
"$demo" backend 127.0.0.1:17001 alpha 2>>"$logdir/backends.log" & pids+=($!)
"$demo" backend 127.0.0.1:17002 beta 2>>"$logdir/backends.log" & pids+=($!)
wait_port 127.0.0.1 17001
wait_port 127.0.0.1 17002

echo "== starting easyproxy -c easyproxy.toml"
"$bin" -c easyproxy.toml 2>"$logdir/easyproxy.log" & proxy=$!
pids+=("$proxy")
for _ in $(seq 1 200); do
  grep -q "service demo listening" "$logdir/easyproxy.log" && break
  kill -0 "$proxy" 2>/dev/null || { cat "$logdir/easyproxy.log"; exit 1; }
  sleep 0.05
done

echo "== 8 clients through 127.0.0.1:17000 (smooth weighted round robin, 3:1)"
"$demo" client 127.0.0.1:17000 8

echo "== stats: GET http://127.0.0.1:17259/stats"
(
  exec 3<>/dev/tcp/127.0.0.1/17259
  printf 'GET /stats HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n' >&3
  sed -n '/^\r$/,$p' <&3 | tail -n +2
  echo
  exec 3<&-
) 2>/dev/null || echo "(stats not available)"

echo "== SIGTERM: graceful stop"
kill -TERM "$proxy"
wait "$proxy" && echo "easyproxy exited with status 0"
echo "== easyproxy log"
cat "$logdir/easyproxy.log"
