#!/usr/bin/env bash
# Side-by-side comparison of easyproxy with HAProxy, nginx (stream) and pen on
# this machine: bulk (iperf3), keep-alive and new-connection HTTP (wrk against
# a local nginx), redis-benchmark, and RSS per idle connection. Each proxy runs
# one worker pinned to CPU 0; load and backends run on CPU 1.
#
#   scripts/compare.sh                 # all proxies
#   scripts/compare.sh easyproxy pen   # a subset
#   DURATION=10 IDLE_CONNS=10000 REPEAT=5 scripts/compare.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || need+=(nginx)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || need+=(libnginx-mod-stream)
command -v pen >/dev/null || need+=(pen)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v taskset >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet --bin easyproxy --example idle
ulimit -n "$(ulimit -Hn)"
exec python3 scripts/compare.py "$@"
