#!/usr/bin/env python3
"""Side-by-side comparison of easyproxy with HAProxy, nginx (stream) and pen.

Run through scripts/compare.sh, which installs the tools first. Every proxy
runs one worker/thread pinned to CPU 0; backends and load generators run on
CPU 1. For each proxy it measures, in one run:

  idle    RSS per idle open connection (N idle clients through the proxy)
  bulk    iperf3 throughput, and the proxy's CPU-seconds per GB relayed
  keep    wrk keep-alive HTTP against a local nginx: req/s, p99, CPU us/request
  close   wrk with `Connection: close`: conn/s, p99, CPU us/connection
  redis   redis-benchmark GET/SET: req/s, CPU us/request

CPU time is read from /proc/PID/stat (utime + stime) before and after each
load, so it is the proxy's own work, whatever the load generator costs.
Per-request CPU figures on a shared VM move by about 10% from run to run, and
the VM itself gets faster or slower over minutes, so all proxies run at once
and the load tests go round them REPEAT times (default 3), interleaved; the
table shows the median of each figure. TCP segments per request/connection (all sockets on
the machine, from /proc/net/snmp) are the deterministic counterpart: they show
what a proxy makes the kernel do, without the noise.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")
DUR = int(os.environ.get("DURATION", "5"))
IDLE_N = int(os.environ.get("IDLE_CONNS", "3000"))
CONNS = int(os.environ.get("CONNS", "32"))
REPEAT = max(1, int(os.environ.get("REPEAT", "3")))
PROXY_CPU = os.environ.get("PROXY_CPU", "0")
LOAD_CPU = os.environ.get("LOAD_CPU", "1")

# Backends (on the load CPU) and one frontend port per proxy per test.
HTTP_BACKEND = 18080
IPERF_BACKEND = 18201
REDIS_BACKEND = 18379
PROXIES = {
    # name: (bulk port, http port, redis port)
    "haproxy": (18111, 18112, 18113),
    "nginx": (18121, 18122, 18123),
    "pen": (18131, 18132, 18133),
    "easyproxy": (18141, 18142, 18143),
    # Another easyproxy binary (EASYPROXY_BEFORE=path), for before/after
    # figures of an optimisation in the same run.
    "easyproxy-before": (18151, 18152, 18153),
}

procs = []


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def spawn(cmd, cpu, **kw):
    p = subprocess.Popen(["taskset", "-c", cpu] + cmd, stdin=subprocess.DEVNULL, **kw)
    procs.append(p)
    return p


def wait_port(port, limit=10.0):
    import socket

    end = time.time() + limit
    while time.time() < end:
        s = socket.socket()
        try:
            s.connect(("127.0.0.1", port))
            s.close()
            return
        except OSError:
            time.sleep(0.05)
        finally:
            s.close()
    raise SystemExit(f"nothing listens on 127.0.0.1:{port}")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def tcp_out_segs():
    """TCP segments sent by every socket on the machine so far."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    head, vals = rows[0], rows[1]
    return int(vals[head.index("OutSegs")])


def median(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def run(cmd, cpu=LOAD_CPU, timeout=None):
    out = subprocess.run(["taskset", "-c", cpu] + cmd, capture_output=True, text=True, timeout=timeout)
    return out.stdout + out.stderr


def start_backends(tmp):
    conf = os.path.join(tmp, "nginx-backend.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 1;
daemon off;
master_process off;
pid {tmp}/nginx-backend.pid;
error_log {tmp}/nginx-backend.err warn;
events {{ worker_connections 9000; multi_accept on; }}
worker_rlimit_nofile 19000;
http {{
    access_log off;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{HTTP_BACKEND} backlog=4096;
        location / {{ return 200 "hello from nginx\\n"; }}
    }}
}}
""")
    spawn(["nginx", "-c", conf, "-p", tmp], LOAD_CPU, stderr=subprocess.DEVNULL)
    spawn(["iperf3", "-s", "-p", str(IPERF_BACKEND)], LOAD_CPU, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spawn(
        ["redis-server", "--port", str(REDIS_BACKEND), "--save", "", "--appendonly", "no", "--maxclients", "9000"],
        LOAD_CPU,
        stdout=subprocess.DEVNULL,
    )
    for port in (HTTP_BACKEND, IPERF_BACKEND, REDIS_BACKEND):
        wait_port(port)


def start_proxy(name, tmp):
    bulk, http, redis = PROXIES[name]
    routes = [(bulk, IPERF_BACKEND), (http, HTTP_BACKEND), (redis, REDIS_BACKEND)]
    if name == "haproxy":
        conf = os.path.join(tmp, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write("global\n    nbthread 1\n    maxconn 9000\n\n")
            f.write("defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\n")
            for i, (front, back) in enumerate(routes):
                f.write(f"listen l{i}\n    bind 127.0.0.1:{front}\n    server s1 127.0.0.1:{back}\n\n")
        return spawn(["haproxy", "-db", "-f", conf], PROXY_CPU, stderr=subprocess.DEVNULL), [bulk, http, redis]
    if name == "nginx":
        conf = os.path.join(tmp, "nginx-proxy.conf")
        mod = "/usr/lib/nginx/modules/ngx_stream_module.so"
        with open(conf, "w") as f:
            f.write(f"load_module {mod};\n" if os.path.exists(mod) else "")
            f.write(f"worker_processes 1;\ndaemon off;\nmaster_process off;\npid {tmp}/nginx-proxy.pid;\n")
            f.write(f"error_log {tmp}/nginx-proxy.err warn;\nworker_rlimit_nofile 19000;\n")
            f.write("events { worker_connections 9000; multi_accept on; }\nstream {\n")
            for front, back in routes:
                f.write(f"    server {{ listen 127.0.0.1:{front} backlog=4096; proxy_pass 127.0.0.1:{back}; }}\n")
            f.write("}\n")
        return spawn(["nginx", "-c", conf, "-p", tmp], PROXY_CPU, stderr=subprocess.DEVNULL), [bulk, http, redis]
    if name == "pen":
        # pen serves one listener per process; run three, measure their sum.
        ps = []
        for front, back in routes:
            ps.append(
                spawn(
                    ["pen", "-f", "-r", "-x", "9000", "-c", "9000", f"127.0.0.1:{front}", f"127.0.0.1:{back}"],
                    PROXY_CPU,
                    stderr=subprocess.DEVNULL,
                )
            )
        return ps, [bulk, http, redis]
    if name in ("easyproxy", "easyproxy-before"):
        conf = os.path.join(tmp, name + ".toml")
        with open(conf, "w") as f:
            # The access log is off (warn) like the peers' logging here.
            f.write("[global]\nmax_connections = 9000\nlog_level = \"warn\"\n\n")
            for i, (front, back) in enumerate(routes):
                f.write(f"[[service]]\nname = \"s{i}\"\nlisten = \"127.0.0.1:{front}\"\n")
                f.write(f"[[service.backend]]\naddress = \"127.0.0.1:{back}\"\n\n")
        binary = os.path.join(ROOT, "target", "release", "easyproxy")
        if name == "easyproxy-before":
            binary = os.environ["EASYPROXY_BEFORE"]
        return spawn([binary, "-c", conf], PROXY_CPU, stderr=open(os.path.join(tmp, name + ".log"), "w")), [bulk, http, redis]
    raise ValueError(name)


class Meter:
    """CPU seconds used by a proxy (one process or several) across a block."""

    def __init__(self, pids):
        self.pids = pids

    def __enter__(self):
        self.start = sum(cpu_seconds(p) for p in self.pids)
        return self

    def __exit__(self, *exc):
        self.used = sum(cpu_seconds(p) for p in self.pids) - self.start


def parse_wrk(out):
    reqs = re.search(r"(\d+) requests in", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
    errors = re.search(r"Socket errors: (.*)", out)
    p99_ms = None
    if p99:
        v, unit = float(p99.group(1)), p99.group(2)
        p99_ms = v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
    return (
        int(reqs.group(1)) if reqs else 0,
        float(rps.group(1)) if rps else 0.0,
        p99_ms,
        errors.group(1) if errors else "",
    )


def measure_idle(name, pids, http):
    """RSS per idle open connection, on a process that has served nothing yet."""
    r = {}
    time.sleep(0.5)
    base = sum(rss_kib(p) for p in pids)
    idle_bin = os.path.join(ROOT, "target", "release", "examples", "idle")
    idle = subprocess.Popen(
        ["taskset", "-c", LOAD_CPU, idle_bin, f"127.0.0.1:{http}", str(IDLE_N), "25"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = idle.stdout.readline()
    if line.startswith("ready"):
        time.sleep(2)
        held = sum(rss_kib(p) for p in pids)
        r["base_rss_mib"] = base / 1024
        r["idle_kib"] = (held - base) / IDLE_N
    else:
        log(f"{name}: idle clients did not connect")
    idle.kill()
    idle.wait()
    time.sleep(1)
    return r


def measure_round(name, pids, ports, runs):
    """One round of every load test against one proxy; appends to `runs`."""
    bulk, http, redis = ports

    # Bulk through iperf3.
    with Meter(pids) as m:
        out = run(["iperf3", "-c", "127.0.0.1", "-p", str(bulk), "-t", str(DUR), "-J"], timeout=DUR + 30)
    try:
        j = json.loads(out[out.index("{") :])
        sent = j["end"]["sum_received"]["bytes"]
        if sent:
            runs["bulk"].append((j["end"]["sum_received"]["bits_per_second"] / 1e9, None, m.used / (sent / 1e9), None))
    except (ValueError, KeyError):
        log(f"{name}: iperf3 failed: {out[:300]}")

    # Keep-alive HTTP, then a new connection per request.
    url = f"http://127.0.0.1:{http}/"
    for test, extra in (("keep", []), ("close", ["-H", "Connection: close"])):
        segs = tcp_out_segs()
        with Meter(pids) as m:
            out = run(["wrk", "-t1", f"-c{CONNS}", f"-d{DUR}s", "--latency"] + extra + [url], timeout=DUR + 30)
        segs = tcp_out_segs() - segs
        n, rps, p99, err = parse_wrk(out)
        if n:
            runs[test].append((rps, p99, m.used / n * 1e6, segs / n))
        if err:
            log(f"{name}: {test} socket errors: {err}")

    # Redis.
    total = 0
    rps_sum = []
    segs = tcp_out_segs()
    with Meter(pids) as m:
        out = run(
            ["redis-benchmark", "-p", str(redis), "-q", "-n", "200000", "-c", str(CONNS), "-t", "get,set"],
            timeout=120,
        )
    segs = tcp_out_segs() - segs
    for match in re.finditer(r"(GET|SET): ([\d.]+) requests per second", out):
        rps_sum.append(float(match.group(2)))
        total += 200000
    if rps_sum:
        runs["redis"].append((sum(rps_sum) / len(rps_sum), None, m.used / total * 1e6, segs / total))


def summarize(name, runs):
    """Medians over the rounds, per figure."""
    r = {}
    for test, keys in (
        ("bulk", ("bulk_gbps", None, "cpu_s_per_gb", None)),
        ("keep", ("keep_rps", "keep_p99_ms", "us_per_req", "segs_per_req")),
        ("close", ("conn_rps", "conn_p99_ms", "us_per_conn", "segs_per_conn")),
        ("redis", ("redis_rps", None, "redis_us_per_req", None)),
    ):
        for i, key in enumerate(keys):
            if key and runs[test]:
                r[key] = median([row[i] for row in runs[test]])
        if runs[test]:
            unit = "CPU s/GB" if test == "bulk" else "CPU us per unit"
            log(f"{name}: {test} {unit}, each round: " + ", ".join(f"{row[2]:.3f}" for row in runs[test]))
    return r


def direct():
    r = {}
    out = run(["iperf3", "-c", "127.0.0.1", "-p", str(IPERF_BACKEND), "-t", str(DUR), "-J"], timeout=DUR + 30)
    try:
        j = json.loads(out[out.index("{") :])
        r["bulk_gbps"] = j["end"]["sum_received"]["bits_per_second"] / 1e9
    except (ValueError, KeyError):
        pass
    url = f"http://127.0.0.1:{HTTP_BACKEND}/"
    n, rps, p99, _ = parse_wrk(run(["wrk", "-t1", f"-c{CONNS}", f"-d{DUR}s", "--latency", url], timeout=DUR + 30))
    r["keep_rps"], r["keep_p99_ms"] = rps, p99
    n, rps, p99, _ = parse_wrk(
        run(["wrk", "-t1", f"-c{CONNS}", f"-d{DUR}s", "--latency", "-H", "Connection: close", url], timeout=DUR + 30)
    )
    r["conn_rps"], r["conn_p99_ms"] = rps, p99
    out = run(["redis-benchmark", "-p", str(REDIS_BACKEND), "-q", "-n", "200000", "-c", str(CONNS), "-t", "get,set"])
    vals = [float(m.group(2)) for m in re.finditer(r"(GET|SET): ([\d.]+) requests per second", out)]
    if vals:
        r["redis_rps"] = sum(vals) / len(vals)
    return r


COLUMNS = [
    ("bulk_gbps", "bulk Gb/s", "{:.2f}"),
    ("cpu_s_per_gb", "CPU s/GB", "{:.3f}"),
    ("keep_rps", "keep-alive req/s", "{:.0f}"),
    ("keep_p99_ms", "p99 ms", "{:.2f}"),
    ("us_per_req", "CPU us/req", "{:.2f}"),
    ("segs_per_req", "TCP segs/req", "{:.2f}"),
    ("conn_rps", "new conn/s", "{:.0f}"),
    ("conn_p99_ms", "p99 ms", "{:.2f}"),
    ("us_per_conn", "CPU us/conn", "{:.1f}"),
    ("segs_per_conn", "TCP segs/conn", "{:.2f}"),
    ("redis_rps", "redis req/s", "{:.0f}"),
    ("redis_us_per_req", "CPU us/redis req", "{:.2f}"),
    ("idle_kib", "KiB/idle conn", "{:.2f}"),
    ("base_rss_mib", "base RSS MiB", "{:.1f}"),
]


def table(results):
    head = ["proxy"] + [c[1] for c in COLUMNS]
    rows = [head, ["---"] * len(head)]
    for name, r in results.items():
        rows.append([name] + [fmt.format(r[k]) if r.get(k) is not None else "-" for k, _, fmt in COLUMNS])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def ratios(results):
    ours = results.get("easyproxy", {})
    peers = {k: v for k, v in results.items() if k not in ("easyproxy", "easyproxy-before", "direct")}
    lines = []
    for key, label, target in [
        ("cpu_s_per_gb", "CPU per GB", 0.8),
        ("us_per_req", "CPU per keep-alive request", 0.9),
        ("us_per_conn", "CPU per new connection", 0.85),
        ("redis_us_per_req", "CPU per redis request", None),
        ("idle_kib", "RSS per idle connection", None),
    ]:
        vals = {n: r[key] for n, r in peers.items() if r.get(key) is not None and r[key] > 0}
        if not vals or ours.get(key) is None:
            continue
        best = min(vals, key=vals.get)
        ratio = ours[key] / vals[best]
        goal = f" (target <= {target})" if target else ""
        lines.append(f"- {label}: easyproxy / {best} = {ratio:.2f}{goal}")
    for key, label in (("segs_per_req", "keep-alive request"), ("segs_per_conn", "new connection")):
        vals = {n: r[key] for n, r in peers.items() if r.get(key)}
        if vals and ours.get(key) is not None:
            least = min(vals, key=vals.get)
            lines.append(f"- TCP segments per {label}: easyproxy {ours[key]:.2f}, fewest among peers {least} {vals[least]:.2f}")
    if ours.get("idle_kib") is not None:
        lines.append(f"- easyproxy RSS per idle connection {ours['idle_kib']:.2f} KiB (target <= 2), "
                     f"base RSS {ours.get('base_rss_mib', 0):.1f} MiB (target < 8)")
    return "\n".join(lines)


def main():
    only = sys.argv[1:] or [p for p in PROXIES if p != "easyproxy-before" or "EASYPROXY_BEFORE" in os.environ]
    tmp = tempfile.mkdtemp(prefix="easyproxy-compare-")
    running = {}
    try:
        subprocess.run(["sysctl", "-q", "-w", "net.ipv4.tcp_tw_reuse=1"], check=False)
        # Ephemeral ports stay above the fixed ports used here (18xxx).
        subprocess.run(["sysctl", "-q", "-w", "net.ipv4.ip_local_port_range=20000 65000"], check=False)
        start_backends(tmp)
        results = {}
        log("== direct (no proxy)")
        results["direct"] = direct()
        # Every proxy runs for the whole comparison (idle ones cost nothing),
        # so the rounds can interleave them: a machine that gets slower or
        # faster during the run then moves every proxy's figures alike.
        for name in only:
            pids, ports = start_proxy(name, tmp)
            plist = pids if isinstance(pids, list) else [pids]
            for port in ports:
                for pr in plist:
                    if pr.poll() is not None:
                        raise SystemExit(f"{name} exited with status {pr.returncode} (log in {tmp})")
                wait_port(port)
            running[name] = ([p.pid for p in plist], ports)
            log(f"== {name}: idle memory")
            results[name] = measure_idle(name, running[name][0], ports[1])
        runs = {name: {"bulk": [], "keep": [], "close": [], "redis": []} for name in only}
        for round_no in range(REPEAT):
            for name in only:
                log(f"== round {round_no + 1}/{REPEAT}: {name}")
                measure_round(name, running[name][0], running[name][1], runs[name])
        for name in only:
            results[name].update(summarize(name, runs[name]))
        print(f"\nproxy pinned to CPU {PROXY_CPU}, load and backends on CPU {LOAD_CPU}; "
              f"{DUR}s per test, {CONNS} connections, {IDLE_N} idle connections; "
              f"load figures are medians of {REPEAT} rounds, proxies interleaved\n")
        print(table(results))
        print()
        print(ratios(results))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if os.environ.get("KEEP_TMP"):
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
