#!/usr/bin/env python3
# Usage: python3 scripts/status-flood.py PATH/TO/easyproxy (run it in an empty directory: it writes c.toml and token).
# /v1/status flood with 2000 backends: relayed echo latency idle vs flooded.
import socket, subprocess, threading, time, os, sys, statistics
BIN = sys.argv[1]
def free():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p
# echo backend
eb = socket.socket(); eb.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); eb.bind(("127.0.0.1", 0)); eb.listen(64)
def echo_srv():
    while True:
        c, _ = eb.accept()
        def h(c):
            while True:
                d = c.recv(4096)
                if not d: break
                c.sendall(d)
        threading.Thread(target=h, args=(c,), daemon=True).start()
threading.Thread(target=echo_srv, daemon=True).start()
listen, admin = free(), free()
open("token", "w").write("flood-token-0123456789abcdef\n"); os.chmod("token", 0o600)
cfg = f'[global]\nlog_level = "warn"\n[admin]\nlisten = "127.0.0.1:{admin}"\ntoken_file = "token"\n'
cfg += f'[[service]]\nname = "e"\nlisten = "127.0.0.1:{listen}"\n[[service.backend]]\naddress = "127.0.0.1:{eb.getsockname()[1]}"\n'
cfg += '[[service]]\nname = "big"\nlisten = "127.0.0.1:0"\n' + "".join(f'[[service.backend]]\naddress = "127.0.{i//250}.{i%250+1}:3306"\n' for i in range(1999))
open("c.toml", "w").write(cfg)
p = subprocess.Popen([BIN, "-c", "c.toml"], stderr=subprocess.DEVNULL)
time.sleep(1.5)
def echo_rtts(n):
    c = socket.create_connection(("127.0.0.1", listen)); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    out = []
    for _ in range(n):
        t = time.perf_counter(); c.sendall(b"x"); c.recv(1); out.append((time.perf_counter() - t) * 1000); time.sleep(0.002)
    c.close(); return out
stop = False; count = [0]
req = b"GET /v1/status HTTP/1.1\r\nAuthorization: Bearer flood-token-0123456789abcdef\r\n\r\n"
def flooder():
    while not stop:
        try:
            s = socket.create_connection(("127.0.0.1", admin)); s.sendall(req)
            while s.recv(65536): pass
            s.close(); count[0] += 1
        except OSError: pass
idle = echo_rtts(1000)
import multiprocessing as mp
cnt = mp.Value('i', 0); ev = mp.Event()
def fl(cnt, ev):
    while not ev.is_set():
        try:
            s = socket.create_connection(('127.0.0.1', admin)); s.sendall(req)
            while s.recv(65536): pass
            s.close()
            with cnt.get_lock(): cnt.value += 1
        except OSError: pass
ps = [mp.Process(target=fl, args=(cnt, ev)) for _ in range(2)]
for x in ps: x.start()
time.sleep(0.3)
c0 = cnt.value; t0 = time.time()
flooded = echo_rtts(1000)
rate = (cnt.value - c0) / (time.time() - t0)
ev.set()
for x in ps: x.join()
p.terminate(); p.wait()
q = lambda v: statistics.quantiles(v, n=100)
print(f"idle echo median {statistics.median(idle):.3f} ms p99 {q(idle)[98]:.3f}; flooded median {statistics.median(flooded):.3f} ms p99 {q(flooded)[98]:.3f}; status answers {rate:.0f}/s")
