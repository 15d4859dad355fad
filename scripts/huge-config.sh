#!/bin/bash
# usage: scripts/huge-config.sh PATH/TO/easyproxy N: starts on one backend, reloads onto N (SIGHUP), reverts; prints VmHWM/VmRSS at each step and the reload time
BIN=$1; N=$2; D=$(mktemp -d); cd $D
small='[[service]]
name = "e"
listen = "127.0.0.1:0"
[[service.backend]]
address = "127.0.0.1:1"
'
echo "$small" > c.toml
python3 -c "
import sys
n=int(sys.argv[1]); out=open('big.toml','w'); out.write('''$small''')
out.write('[[service]]\nname = \"big\"\nlisten = \"127.0.0.1:0\"\n')
for i in range(n-1): out.write(f'[[service.backend]]\naddress = \"10.{i//62500}.{(i//250)%250}.{i%250+1}:3306\"\n')
" $N
$BIN -c c.toml 2>log & P=$!; sleep 1
rss() { grep -E "VmHWM|VmRSS" /proc/$P/status | tr -s ' ' | tr '\n' ' '; }
echo "start: $(rss)"
cp big.toml c.toml; t=$(date +%s%N); kill -HUP $P
until grep -q "reload done\|reload failed" log; do sleep 0.05; done; echo "big: $(grep -c 'reload done' log) done, $(( ($(date +%s%N)-t)/1000000 )) ms; $(rss)"
echo "$small" > c.toml; kill -HUP $P
until [ "$(grep -c 'reload done\|reload failed' log)" -ge 2 ]; do sleep 0.05; done; sleep 1; echo "reverted: $(rss)"
kill $P; wait $P 2>/dev/null; grep -E "reload failed" log | cut -c1-200; rm -rf $D
