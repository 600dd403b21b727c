"""Benchmark workloads: N client namespaces joined by veth pairs to one backend
namespace holding the VIP, M connections from each client namespace to the
VIP:80 target, plus background TCP connections and connected UDP sockets that
a kill must spare.

Sockets live in a few holder processes (tests/bench/holder.py); each holds at
most FD_BUDGET descriptors (the host allows 20,000 per process), servers and
clients in separate processes. A destructive run is undone with refill():
clients close and re-connect the target group, servers accept the new ends
and close the dead ones, so every contender meets an identical workload.

LoopbackWorkload is the other shape: loopback connections inside each of N
namespaces (what a host of many small containers looks like), no veth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
HOLDER = os.path.join(HERE, "holder.py")
PREFIX = "skbench-"          # every namespace the benchmark creates starts with this
VIP = "10.200.0.5"           # not the tests' 10.0.0.5: a parallel test run is never hit
OTHER_VIP = "10.200.0.6"     # same port, other address: must survive
LOOPBACK = "127.0.0.1"       # LoopbackWorkload: only ever inside its own namespaces
TARGET_PORT = 80
BACKGROUND_PORTS = list(range(81, 89))
UDP_PORT = 53
FD_BUDGET = 18_000           # per holder; the hard limit is 20,000
SERVER_SHARE = 13_000        # expected accepts per server (reuseport hashing is uneven)
MAX_PER_DPORT = 60_000       # per (namespace, destination, port): ip_local_port_range


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


@dataclass(frozen=True)
class Spec:
    namespaces: int          # client namespaces
    target: int              # TCP connections to VIP:80 per namespace (to be killed)
    others: int              # background TCP connections per namespace (spared)
    udp: int = 0             # connected UDP sockets per namespace (spared)

    @property
    def connections(self) -> int:
        return self.namespaces * (self.target + self.others)

    @property
    def sockets(self) -> int:
        """Both ends of every TCP connection, plus the UDP sockets."""
        return 2 * self.connections + self.namespaces * self.udp

    @property
    def doomed(self) -> int:
        return self.namespaces * self.target

    def label(self) -> str:
        return f"{self.namespaces}ns x ({self.target} target + {self.others} other + {self.udp} udp)"


class Holder:
    def __init__(self, first: dict):
        self.proc = subprocess.Popen([sys.executable, HOLDER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.call(**first)

    def send(self, op: str, **kw) -> None:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()

    def recv(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"holder {self.proc.pid} exited ({self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"holder {self.proc.pid}: {reply['error']}")
        return reply["ok"]

    def call(self, op: str, **kw):
        self.send(op, **kw)
        return self.recv()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()


class Workload:
    """Namespaces and holders for one Spec; a context manager that always cleans up."""

    def __init__(self, spec: Spec, log=print):
        self.spec = spec
        self.log = log
        self.tag = uuid.uuid4().hex[:5]
        self.backend = ""
        self.clients: list[str] = []
        self.created: list[str] = []
        self.servers: list[Holder] = []
        self.holders: list[Holder] = []
        self.build_seconds = 0.0
        self.layers: list[tuple[int, list[Holder]]] = []   # LoopbackWorkload.grow: (connections, holders)

    # -- namespaces ------------------------------------------------------------
    def _ns(self, role: str) -> str:
        name = f"{PREFIX}{self.tag}-{role}"
        sh("ip", "netns", "add", name)
        self.created.append(name)
        return name

    def _topology(self) -> None:
        be = self.backend = self._ns("be")
        script = [f"link set lo up", f"addr add {VIP}/32 dev lo", f"addr add {OTHER_VIP}/32 dev lo"]
        for i in range(self.spec.namespaces):
            c = self._ns(f"c{i}")
            self.clients.append(c)
            a, b = f"skc{self.tag}{i}", f"skb{self.tag}{i}"
            net = f"10.{201 + i // 250}.{i % 250}"
            sh("ip", "link", "add", a, "netns", c, "type", "veth", "peer", "name", b, "netns", be)
            script += [f"addr add {net}.1/24 dev {b}", f"link set {b} up"]
            self._batch(c, [f"link set lo up", f"addr add {net}.2/24 dev {a}", f"link set {a} up",
                            f"route add {VIP}/32 via {net}.1", f"route add {OTHER_VIP}/32 via {net}.1"])
            self._sysctl(c, "net.ipv4.ip_local_port_range=1024 65000")
        self._batch(be, script)
        self._sysctl(be, "net.core.somaxconn=65535", "net.ipv4.tcp_max_syn_backlog=65535")

    def _batch(self, ns: str, lines: list[str]) -> None:
        proc = subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n",
                              capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"ip -n {ns} -batch: {proc.stderr.strip()}")

    def _sysctl(self, ns: str, *settings: str) -> None:
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", *settings)

    # -- holders ---------------------------------------------------------------
    def _jobs(self) -> list[dict]:
        """Every connection to make, as (group, ns, dst, port, proto, count) jobs."""
        s = self.spec
        jobs = []
        for c in self.clients:
            path = f"/run/netns/{c}"
            jobs += _split({"group": "target", "ns": path, "dst": VIP, "port": TARGET_PORT,
                            "proto": "tcp"}, s.target)
            # half the background to other ports of the VIP, half to port 80 of another address
            other_vip = s.others // 2
            per_port = -(-(s.others - other_vip) // len(BACKGROUND_PORTS))
            left = s.others - other_vip
            for port in BACKGROUND_PORTS:
                n = min(per_port, left)
                left -= n
                jobs += _split({"group": "other", "ns": path, "dst": VIP, "port": port,
                                "proto": "tcp"}, n)
            jobs += _split({"group": "other", "ns": path, "dst": OTHER_VIP, "port": TARGET_PORT,
                            "proto": "tcp"}, other_vip)
            if s.udp:
                jobs.append({"group": "udp", "ns": path, "dst": VIP, "port": UDP_PORT,
                             "proto": "udp", "count": s.udp})
        return [j for j in jobs if j["count"]]

    def _start_servers(self) -> None:
        n = max(1, -(-self.spec.connections // SERVER_SHARE))
        spec = [{"ns": f"/run/netns/{self.backend}", "addr": a,
                 "tcp": [TARGET_PORT] + BACKGROUND_PORTS, "udp": [UDP_PORT] if a == VIP else []}
                for a in (VIP, OTHER_VIP)]
        for _ in range(n):
            self.servers.append(Holder({"op": "serve", "listeners": spec, "budget": FD_BUDGET}))

    def _start_clients(self, jobs=None) -> list[tuple[Holder, list[dict]]]:
        plan, current, used = [], [], 0
        for job in self._jobs() if jobs is None else jobs:
            while job["count"]:
                take = min(job["count"], FD_BUDGET - used)
                current.append(dict(job, count=take))
                job = dict(job, count=job["count"] - take)
                used += take
                if used >= FD_BUDGET:
                    plan.append(current)
                    current, used = [], 0
        if current:
            plan.append(current)
        started = []
        for jobs in plan:
            h = Holder({"op": "client"})
            self.holders.append(h)
            started.append((h, jobs))
        return started

    def build(self) -> None:
        t0 = time.perf_counter()
        self._topology()
        self._start_servers()
        self._connect()
        self.wait_accepted()
        self.build_seconds = time.perf_counter() - t0

    def _connect(self, jobs=None) -> list[Holder]:
        """The client holders for jobs (default: the spec's), started and
        connected; returns them."""
        started = self._start_clients(jobs)
        for h, batch in started:
            h.send("build", jobs=batch)
        for h, _ in started:
            h.recv()
        return [h for h, _ in started]

    def accepted(self) -> int:
        for s in self.servers:
            s.send("count")
        return sum(s.recv() for s in self.servers)

    def wait_accepted(self, timeout: float = 60.0) -> None:
        want = self.spec.connections + sum(connections for connections, _ in self.layers)
        deadline = time.monotonic() + timeout
        while True:
            got = self.accepted()
            if got == want:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"servers hold {got} connections, expected {want}")
            time.sleep(0.02)

    def dead(self) -> dict:
        totals: dict = {}
        for h in self.holders:
            h.send("dead")
        for h in self.holders:
            for group, n in h.recv().items():
                totals[group] = totals.get(group, 0) + n
        return totals

    def refill(self) -> float:
        """Re-create the target connections (whatever killed them); seconds taken."""
        t0 = time.perf_counter()
        for h in self.holders:
            h.send("refill", group="target")
        for h in self.holders:
            h.recv()
        self.wait_accepted()
        if any(self.dead().values()):
            raise RuntimeError(f"refill left dead sockets: {self.dead()}")
        return time.perf_counter() - t0

    def namespaces(self) -> list[str]:
        return [self.backend, *self.clients]

    def close(self) -> None:
        for h in [*self.holders, *self.servers]:
            try:
                h.close()
            except Exception:
                h.proc.kill()
        self.holders.clear()
        self.servers.clear()
        for name in self.created:
            sh("ip", "netns", "del", name, check=False)
        self.created.clear()

    def __enter__(self):
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass(frozen=True)
class LoopSpec:
    """Loopback connections inside each namespace: no veth, no backend."""

    namespaces: int
    target: int              # connections per namespace to 127.0.0.1:80 (client ends killed)
    others: int              # connections per namespace to 127.0.0.1:81-88 (spared)
    udp: int = 0             # (none: the same checks as Spec)

    @property
    def connections(self) -> int:
        return self.namespaces * (self.target + self.others)

    @property
    def sockets(self) -> int:
        return 2 * self.connections

    @property
    def doomed(self) -> int:
        return self.namespaces * self.target

    def label(self) -> str:
        return (f"{self.namespaces}ns x {2 * (self.target + self.others)} loopback sockets, "
                f"{self.target} killed per ns")


class LoopbackWorkload(Workload):
    """LoopSpec.namespaces namespaces, each with its own loopback listeners and
    the clients connected to them; a server holder serves whole namespaces
    (no reuseport split between processes), so accepts are deterministic.

    grow() adds a layer of spared connections to every namespace, in client
    holders of its own, and shrink() drops the last layer again (its holders
    exit, their sockets reset: nothing is left in TIME_WAIT), so one host can
    be measured at several sizes, back and forth, with the same namespaces,
    holders and listeners. `room` sizes the servers for the largest size."""

    def __init__(self, spec: LoopSpec, log=print, room: LoopSpec | None = None):
        super().__init__(spec, log)
        self.room = room or spec

    def grow(self, others: int) -> float:
        """`others` more spared connections in every namespace; seconds taken."""
        t0 = time.perf_counter()
        jobs = [job for c in self.clients for job in self._other_jobs(f"/run/netns/{c}", others)]
        self.layers.append((others * len(self.clients), self._connect(jobs)))
        self.wait_accepted()
        return time.perf_counter() - t0

    def shrink(self) -> float:
        """The last layer's connections reset and gone; seconds taken."""
        t0 = time.perf_counter()
        _, holders = self.layers.pop()
        for h in holders:
            h.close()
            self.holders.remove(h)
        self.wait_accepted()
        return time.perf_counter() - t0

    def _topology(self) -> None:
        for i in range(self.spec.namespaces):
            c = self._ns(f"l{i}")
            self.clients.append(c)
            self._batch(c, ["link set lo up"])

    def _start_servers(self) -> None:
        per_ns = self.room.target + self.room.others + 1 + len(BACKGROUND_PORTS)
        if per_ns > FD_BUDGET:
            raise ValueError(f"{per_ns} sockets in one namespace exceed a holder's {FD_BUDGET}")
        step = FD_BUDGET // per_ns
        for first in range(0, len(self.clients), step):
            spec = [{"ns": f"/run/netns/{c}", "addr": LOOPBACK,
                     "tcp": [TARGET_PORT] + BACKGROUND_PORTS, "udp": []}
                    for c in self.clients[first:first + step]]
            self.servers.append(Holder({"op": "serve", "listeners": spec, "budget": FD_BUDGET}))

    def _jobs(self) -> list[dict]:
        s = self.spec
        jobs = []
        for c in self.clients:
            path = f"/run/netns/{c}"
            jobs += _split({"group": "target", "ns": path, "dst": LOOPBACK, "port": TARGET_PORT,
                            "proto": "tcp"}, s.target)
            jobs += self._other_jobs(path, s.others)
        return jobs

    @staticmethod
    def _other_jobs(path: str, count: int) -> list[dict]:
        """count spared connections in one namespace, spread over the background ports."""
        jobs, left = [], count
        for i, port in enumerate(BACKGROUND_PORTS):
            n = left // (len(BACKGROUND_PORTS) - i)
            left -= n
            jobs += _split({"group": "other", "ns": path, "dst": LOOPBACK, "port": port,
                            "proto": "tcp"}, n)
        return jobs

    def namespaces(self) -> list[str]:
        return list(self.clients)


def _split(job: dict, count: int) -> list[dict]:
    if count > MAX_PER_DPORT:
        raise ValueError(f"{count} connections to one port from one namespace: the "
                         f"ephemeral range allows {MAX_PER_DPORT}")
    return [dict(job, count=count)] if count else []


def stale_namespaces() -> list[str]:
    try:
        return sorted(n for n in os.listdir("/run/netns") if n.startswith(PREFIX))
    except OSError:
        return []
