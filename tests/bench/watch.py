"""kill --watch: how fast a new connection dies, and what waiting costs.

    sudo python3 -m tests.bench.watch [--quick] [--realtime] [--json FILE]

Two throwaway namespaces (skwatch-*) joined by a veth: a client namespace,
and a backend holding the VIP 10.226.0.5 with a server that accepts and
holds connections to :80, and one that accepts and closes those to :81.
`sockterm kill --watch --netns CLIENT --dst VIP:80` runs while:

  latency  a client connects to VIP:80 over and over (>= 1,000 times), each
           time waiting for its connection to be aborted: from connect() to
           the ECONNABORTED it sees, as the client measures it (an upper bound
           of ESTABLISHED -> destroyed: it includes the handshake), and from
           the kernel's event to the destroy's acknowledgement, as sockterm
           reports it (summary.watch.lag_ms)
  idle     nothing matches for a 30 s window: sockterm's CPU time in it
           (/proc/PID/stat, from the window's opening to just before its end)
  churn    2,000 non-matching connections a second (to VIP:81, churn.c) open
           and close while the latency client runs again: the same
           latencies, and sockterm's CPU

Every kill names the client namespace (--netns). --realtime runs sockterm
and the clients at real-time priority (chrt -f 10): the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
VIP = "10.226.0.5"
TICK = os.sysconf("SC_CLK_TCK")

SERVER = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("%(vip)s", 80)); s.listen(4096)
kept = []
while True:
    kept.append(s.accept()[0])
    del kept[:-2000]
"""

LATENCY = r"""
import socket, time, json, sys, errno
n, out = int(sys.argv[1]), []
for _ in range(n):
    s = socket.socket(); s.settimeout(2)
    t0 = time.monotonic()
    try:
        s.connect(("%(vip)s", 80))
        s.recv(1)
        out.append(None)                       # closed by the peer: not ours
    except socket.timeout:
        out.append(-1.0)                       # survived 2 s
    except OSError as e:
        out.append((time.monotonic() - t0) * 1000 if e.errno in (errno.ECONNABORTED, errno.ECONNRESET) else None)
    s.close()
print(json.dumps(out))
"""

def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw)


class Bench:
    def __init__(self, realtime: bool):
        tag = uuid.uuid4().hex[:6]
        self.client, self.backend = f"skwatch-{tag}-c", f"skwatch-{tag}-b"
        self.prefix = ["chrt", "-f", "10"] if realtime else []
        self.procs: list = []

    def __enter__(self):
        for ns in (self.client, self.backend):
            sh("ip", "netns", "add", ns)
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        a, b = f"skwc{self.client[8:14]}", f"skwb{self.client[8:14]}"
        sh("ip", "link", "add", a, "netns", self.client, "type", "veth", "peer", "name", b,
           "netns", self.backend)
        sh("ip", "-n", self.client, "addr", "add", "10.227.0.2/24", "dev", a)
        sh("ip", "-n", self.backend, "addr", "add", "10.227.0.1/24", "dev", b)
        sh("ip", "-n", self.backend, "addr", "add", f"{VIP}/32", "dev", "lo")
        sh("ip", "-n", self.client, "link", "set", a, "up")
        sh("ip", "-n", self.backend, "link", "set", b, "up")
        sh("ip", "-n", self.client, "route", "add", f"{VIP}/32", "via", "10.227.0.1")
        self.procs.append(self.inside(self.backend, SERVER))
        self.procs.append(subprocess.Popen([*self.prefix, "ip", "netns", "exec", self.backend,
                                            churn_helper(), "serve", VIP, "81"]))
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for ns in (self.client, self.backend):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def inside(self, ns, code, *args) -> subprocess.Popen:
        return subprocess.Popen([*self.prefix, "ip", "netns", "exec", ns,
                                 sys.executable, "-c", code % {"vip": VIP}, *map(str, args)],
                                stdout=subprocess.PIPE, text=True)

    def churn(self, rate: float, seconds: float, parts: int = 4) -> list:
        """Generators below sockterm's priority (chrt -f 5 under --realtime),
        a share of the rate each: one waits out every handshake it makes."""
        prefix = ["chrt", "-f", "5"] if self.prefix else []
        return [subprocess.Popen([*prefix, "ip", "netns", "exec", self.client, churn_helper(), VIP,
                                  "81", str(rate / parts), str(seconds)], stdout=subprocess.PIPE,
                                 text=True) for _ in range(parts)]

    def watch(self, seconds: float) -> subprocess.Popen:
        proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "sockterm", "-v", "--backend",
                                 "diag", "kill", "--watch", f"{seconds}s", "--netns", self.client,
                                 "--dst", f"{VIP}:80", "--yes", "-o", "json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, SOCKTERM_SYSLOG_SOCKET="/nonexistent"))
        for line in proc.stderr:
            if "watch: window open" in line:
                return proc
        raise SystemExit(f"bench: sockterm ended before its window opened ({proc.wait()})")


def churn_helper() -> str:
    """tests/bench/churn.c, compiled once (as measure.py compiles rusage_run.c)."""
    out = os.path.join(tempfile.gettempdir(), f"sockterm-bench-churn-{os.getpid()}")
    if not os.path.exists(out):
        subprocess.run(["cc", "-O2", "-o", out, os.path.join(HERE, "churn.c")], check=True)
    return out


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def summarize(latencies: list) -> dict:
    killed = sorted(x for x in latencies if x is not None and x >= 0)
    survived = sum(1 for x in latencies if x == -1.0)
    if not killed:
        return {"connections": len(latencies), "killed": 0, "survived": survived}
    return {"connections": len(latencies), "killed": len(killed), "survived": survived,
            "median_ms": round(statistics.median(killed), 3),
            "p99_ms": round(killed[min(len(killed) - 1, int(0.99 * len(killed)))], 3),
            "max_ms": round(killed[-1], 3)}


def finish(proc) -> dict:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    return json.loads(out)["summary"]["watch"]


def latency_case(bench: Bench, count: int) -> dict:
    proc = bench.watch(600)
    client = bench.inside(bench.client, LATENCY, count)
    seen = json.loads(client.communicate(timeout=900)[0])
    watch = finish(proc)
    return {"client": summarize(seen), "sockterm_lag_ms": watch["lag_ms"],
            "killed_in_window": watch["killed_in_window"]}


def idle_case(bench: Bench, seconds: float) -> dict:
    proc = bench.watch(seconds + 5)
    before = cpu_seconds(proc.pid)
    time.sleep(seconds)
    used = cpu_seconds(proc.pid) - before
    finish(proc)
    return {"seconds": seconds, "cpu_s": round(used, 3), "cpu_percent": round(100 * used / seconds, 3)}


def churn_case(bench: Bench, seconds: float, rate: float, count: int) -> dict:
    proc = bench.watch(600)
    before, started = cpu_seconds(proc.pid), time.monotonic()
    churn = bench.churn(rate, seconds)
    time.sleep(1.0)                    # the churn is on when the clients start
    client = bench.inside(bench.client, LATENCY, count)
    seen = json.loads(client.communicate(timeout=900)[0])
    made = sum(int(c.communicate(timeout=900)[0]) for c in churn)
    elapsed = time.monotonic() - started
    used = cpu_seconds(proc.pid) - before
    watch = finish(proc)
    return {"churn_per_s": round(made / seconds), "client": summarize(seen),
            "sockterm_lag_ms": watch["lag_ms"], "events": watch["events"],
            "cpu_s": round(used, 3), "cpu_percent": round(100 * used / elapsed, 2),
            "seconds": round(elapsed, 1)}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m tests.bench.watch")
    ap.add_argument("--quick", action="store_true", help="fewer connections, a 10 s idle window")
    ap.add_argument("--realtime", action="store_true", help="sockterm and clients at chrt -f 10")
    ap.add_argument("--json", metavar="FILE")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root")
    count = 300 if args.quick else 1200
    res = {"loadavg_start": os.getloadavg(), "realtime": args.realtime, "cpus": os.cpu_count()}
    print(f"kill --watch bench: {os.cpu_count()} CPUs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
          + (", real-time priority" if args.realtime else ""), flush=True)
    with Bench(args.realtime) as bench:
        res["latency"] = latency_case(bench, count)
        print("latency:", json.dumps(res["latency"]), flush=True)
        res["idle"] = idle_case(bench, 10.0 if args.quick else 30.0)
        print("idle:   ", json.dumps(res["idle"]), flush=True)
        res["churn"] = churn_case(bench, 10.0 if args.quick else 20.0, 2000, count // 2)
        print("churn:  ", json.dumps(res["churn"]), flush=True)
    res["loadavg_end"] = os.getloadavg()
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in res['loadavg_end'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
