"""kill --watch / match --watch against real clients (issue 24).

Clients reconnect, each time on a new socket, to a VIP whose backend is alive
(so a connection nobody kills lives, and the test can tell): every TCP
connection and every connected UDP socket to VIP:80 made during the window
must be aborted, as the client itself sees it (tests/priv/watch_client.py
records each socket's cookie and errno), the report must list exactly those
sockets, each once, and connections to VIP:81 must live. A namespace made
in the middle of the window (a process's, no `ip netns` name) is covered too:
that run is confined (tests/confine.py), and the namespace is made inside the
confinement, where the watch can find it. A signal mid-window ends it with a
complete document, exit 128 + signal and an audit count equal to what the
clients saw; afterwards new connections live and nothing of the watch is left
in the kernel.
"""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

import confine
from conftest import Topology
from rel_util import wait_no_orphans
from test_interrupt import AuditSink

HERE = os.path.dirname(os.path.abspath(__file__))
CLIENT = os.path.join(HERE, "watch_client.py")
VIP = "10.224.0.5"          # an address plan of its own: other suites kill 10.0.0.5 and 10.213.0.5
ABORTED = {"ECONNABORTED", "ECONNRESET"}


class WatchTopology(Topology):
    PREFIX, LINK = "sw", "sw"
    VIP4, VIP6 = VIP, "fd24::5"
    CLIENT4, CLIENT6 = "10.225", "fd25"


@pytest.fixture
def topo():
    t = WatchTopology()
    try:
        yield t
    finally:
        t.cleanup()


@pytest.fixture
def sink():
    s = AuditSink()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def nothing_left():
    yield
    left = wait_no_orphans()
    assert not any(left.values()), f"watch BPF objects left in the kernel: {left}"


def backend(topo):
    be = topo.with_backend()
    server = topo.holder(be)
    for port in (80, 81):
        server.call("listen", addr=VIP, port=port)
        server.call("listen", proto="udp", addr=VIP, port=port)
    return be


def loop(ns: str, proto: str, port: int, seconds: float) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, CLIENT, proto, VIP,
                             str(port), str(seconds)], stdout=subprocess.PIPE, text=True)


def outcomes(proc: subprocess.Popen) -> list:
    out, _ = proc.communicate(timeout=60)
    return [tuple(pair) for pair in json.loads(out)]


def window_open(proc) -> None:
    """Wait for sockterm's -v to say its window is open (the kill at the start is done)."""
    for line in proc.stderr:
        if "watch: window open" in line:
            return
    raise AssertionError(f"sockterm ended first (exit {proc.wait()})")


def sockterm_env(sink) -> dict:
    env = dict(os.environ, SOCKTERM_SYSLOG_SOCKET=sink.path)
    env.pop("SOCKTERM_BACKEND", None)
    return env


def test_window_kills_every_new_connection_once(topo, sink):
    be = backend(topo)
    tcp_ns, udp_ns = topo.client(0), topo.client(1)
    h = topo.holder(tcp_ns)
    before = h.call("connect", dst=VIP, port=80) + h.call("connect", proto="udp", dst=VIP, port=80)
    keep = h.call("connect", dst=VIP, port=81) + h.call("connect", proto="udp", dst=VIP, port=81)
    argv = [sys.executable, "-m", "sockterm", "-v", "--backend", "diag", "kill", "--watch", "5s",
            "--dst", f"{VIP}:80", "--yes", "-o", "json"]
    # confined: the kill names no namespace (one appears mid-window), and can reach only these
    driver = subprocess.Popen(
        confine.prefix([be, tcp_ns, udp_ns]) + [sys.executable, CLIENT, "driver", be, "10.225.9",
                                                VIP, "80", "1.2", "2.0", "--", *argv],
        stdout=subprocess.PIPE, text=True, env=sockterm_env(sink))
    assert driver.stdout.readline().strip() == "attached"
    clients = [loop(tcp_ns, "tcp", 80, 3.0), loop(udp_ns, "udp", 80, 3.0)]
    keep += h.call("connect", dst=VIP, port=81)         # a new connection elsewhere, mid-window
    seen = [outcomes(c) for c in clients]
    result = json.loads(driver.stdout.readline())
    driver.wait(timeout=60)
    assert result["code"] == 0, result["err"][-2000:]
    doc = json.loads(result["out"])
    late = [tuple(pair) for pair in result["late"] or []]
    assert late, result["late_err"]

    # the clients saw every connection aborted, and made enough of them to mean it
    for proto, got in zip(("tcp", "udp"), seen + [late]):
        assert len(got) >= 3 and {o for _, o in got} <= ABORTED, (proto, got)
    assert {o for _, o in late} <= ABORTED and len(late) >= 2, late
    aborted = {c for got in seen + [late] for c, _ in got}

    # the report: each of them once, killed, in the window; the two older ones at the start
    cookies = [s["cookie"] for s in doc["sockets"]]
    assert len(cookies) == len(set(cookies)), "a socket reported twice"
    window = {s["cookie"] for s in doc["sockets"] if s["phase"] == "window" and s["result"] == "killed"}
    assert window == aborted, (aborted - window, window - aborted, seen, late, result["err"][-3000:])
    assert {s["cookie"] for s in doc["sockets"] if s["phase"] == "start"} == {s["cookie"] for s in before}
    assert all(s["result"] == "killed" for s in doc["sockets"])
    late_ns = {s["netns"] for s in doc["sockets"] if s["cookie"] in {c for c, _ in late}}
    assert len(late_ns) == 1 and late_ns.isdisjoint(os.stat(f"/run/netns/{n}").st_ino
                                                    for n in (be, tcp_ns, udp_ns))
    watch = doc["summary"]["watch"]
    assert watch["killed_at_start"] == 2 and watch["killed_in_window"] == len(aborted)
    assert watch["ended"] == "duration" and watch["lost"] == 0
    assert doc["summary"]["killed"] == 2 + len(aborted)

    # what was not targeted lives; the audit trail has the start and the end, with true counts
    assert set(h.status([s["id"] for s in keep]).values()) == {0}
    assert set(h.status([s["id"] for s in before]).values()) == {errno.ECONNABORTED}
    records = sink.records()
    assert len(records) == 2 and "kill --watch 5s started" in records[0], records
    assert re.search(rf" killed={2 + len(aborted)} ", records[1]), records[1]
    assert f"killed_in_window={len(aborted)} " in records[1]

    # the window is over: new connections live
    after = h.call("connect", dst=VIP, port=80) + h.call("connect", proto="udp", dst=VIP, port=80)
    time.sleep(0.3)
    assert set(h.status([s["id"] for s in after]).values()) == {0}


@pytest.mark.parametrize("signum", (signal.SIGINT, signal.SIGTERM), ids=lambda s: s.name)
def test_signal_mid_window_reports_the_truth(topo, sink, signum):
    be = backend(topo)
    ns = topo.client(0)
    args = ["-v", "--backend", "diag", "kill", "--watch", "30s", "--netns", ns, "--dst",
            f"{VIP}:80", "--yes", "-o", "json"]
    confine.check_kill(args)
    proc = subprocess.Popen([sys.executable, "-m", "sockterm", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=sockterm_env(sink))
    window_open(proc)
    [start] = sink.records()
    assert "kill --watch 30s started" in start, start
    client = loop(ns, "tcp", 80, 2.5)
    time.sleep(1.2)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    seen = outcomes(client)
    assert proc.returncode == 128 + signum, err
    doc = json.loads(out)                                     # complete
    assert doc["summary"]["interrupted"] is True and doc["summary"]["watch"]["ended"] == "signal"
    aborted = {c for c, o in seen if o in ABORTED}
    assert aborted and {o for _, o in seen} <= ABORTED | {"alive"}, seen
    assert {s["cookie"] for s in doc["sockets"] if s["result"] == "killed"} == aborted
    [end] = sink.records()
    assert re.search(rf" killed={len(aborted)} ", end), end
    assert " ended=signal " in end


def test_match_watch_reports_and_destroys_nothing(topo, sink):
    backend(topo)
    ns = topo.client(0)
    proc = subprocess.Popen([sys.executable, "-m", "sockterm", "-v", "--backend", "diag", "match",
                             "--watch", "3s", "--netns", ns, "--dst", f"{VIP}:80", "-o", "jsonl"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=sockterm_env(sink))
    window_open(proc)
    seen = outcomes(loop(ns, "tcp", 80, 0.5))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert {o for _, o in seen} == {"alive"}
    assert {d["cookie"] for d in lines if d["phase"] == "window"} == {c for c, _ in seen}
    assert all("result" not in d and d["time"].endswith("Z") for d in lines)
    assert not sink.records()                                  # match is no kill: nothing audited


def test_find_cookie_by_exact_tuple():
    """What a cookie-less event (a UDP connect seen by fexit) is resolved by:
    one SOCK_DIAG_BY_FAMILY request, UDP's addresses swapped (udp_dump_one)."""
    from sockterm import model
    from sockterm.engine.diag.destroy import find_cookie
    from sockterm.engine.diag.wire import DiagSocket
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.connect(server.getsockname())
    tcp = socket.create_connection(lst.getsockname())
    with DiagSocket() as conn:
        for s, proto in ((udp, "udp"), (tcp, "tcp")):
            (src, sport), (dst, dport) = s.getsockname(), s.getpeername()
            sock = model.Sock(0, 4, proto, 1, model.v4_mapped(socket.inet_aton(src)), sport,
                              model.v4_mapped(socket.inet_aton(dst)), dport, 0)
            want = int.from_bytes(s.getsockopt(socket.SOL_SOCKET, 57, 8), "little")
            assert find_cookie(conn, sock) == want, proto
            sock.dport += 1
            assert find_cookie(conn, sock) == 0, proto
    for s in (server, lst, udp, tcp):
        s.close()


def test_doctor_says_whether_watch_attaches():
    from conftest import sockterm
    code, out, err = sockterm("doctor", "-o", "json")
    [check] = [c for c in json.loads(out)["checks"] if c["name"] == "watch"]
    assert check["ok"] is True and "kill --watch attaches" in check["detail"], check


def test_max_bounds_the_whole_watch(topo, sink):
    """--max counts the start's kill and the window's together; the watch
    stops, exit 3, before the destroy that would exceed it."""
    backend(topo)
    ns = topo.client(0)
    h = topo.holder(ns)
    h.call("connect", dst=VIP, port=80)                       # one for the start
    args = ["-v", "--backend", "diag", "kill", "--watch", "20s", "--max", "3", "--netns", ns,
            "--dst", f"{VIP}:80", "--yes", "-o", "json"]
    confine.check_kill(args)
    proc = subprocess.Popen([sys.executable, "-m", "sockterm", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=sockterm_env(sink))
    window_open(proc)
    seen = outcomes(loop(ns, "tcp", 80, 1.5))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    doc = json.loads(out)
    assert doc["summary"]["killed"] == 3 and doc["summary"]["watch"]["ended"] == "max"
    assert "--max 3 reached" in err
    aborted = {c for c, o in seen if o in ABORTED}
    assert len(aborted) == 2 and len(seen) > 2, seen      # the rest lived
    assert aborted <= {s["cookie"] for s in doc["sockets"]}
