"""The one pass against walking every namespace, with real sockets.

The one pass finds the sockets processes hold; a namespace's own counts
(sockstat) must send it to a walk whenever it has one they do not hold. For
each kind of such socket (orphans in fin-wait-1, last-ack and closing; a
child nobody accepted; a syn-recv request; time-wait; a vxlan device's
kernel UDP socket; a socket in flight over SCM_RIGHTS) a namespace holds
one, and must be walked for the reason its counts give; for what the pass
does see (sockets shared by forked processes and dup'ed descriptors, a
namespace whose sockets a process elsewhere holds) it must not be. In every
case list and match name exactly what SOCKTERM_WALK=all and ss name, and a
kill kills exactly that, on both engines.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import ENGINES, Topology, sh
from rel_util import cli, ns_inode, ss_view

# fin-wait-1: the client's FIN to FIN_WAIT_PORT is dropped; last-ack and
# closing: the server's FIN from LAST_ACK_PORT / CLOSING_PORT is dropped, so
# the socket that sent it keeps retransmitting in that state
FIN_WAIT_PORT, LAST_ACK_PORT, CLOSING_PORT = 7401, 7402, 7403
NFT_RULES = f"""table inet sockterm_onepass {{
  chain out {{ type filter hook output priority 0;
              tcp dport {FIN_WAIT_PORT} tcp flags & fin == fin drop;
              tcp sport {{ {LAST_ACK_PORT}, {CLOSING_PORT} }} tcp flags & fin == fin drop; }}
}}
"""
PORT = 7410          # everything else in a scenario


class OnePassTopology(Topology):
    PREFIX, LINK = "stop", "so"


@pytest.fixture
def topo():
    t = OnePassTopology()
    try:
        yield t
    finally:
        t.cleanup()


def run(command: str, names, engine: str, walk: str, processes: bool = False, **kw):
    """core.scan / core.kill in this process; (sockets, report)."""
    from sockterm import core, filter as F, states
    defaults = states.ALL if command == "list" else states.DEFAULT_KILL
    flt = F.build_filter(netns=list(names), default_states=defaults, **kw)
    report = core.Report()
    options = core.Options(backend=engine, processes=processes, walk=walk)
    entry = core.kill if command == "kill" else core.scan
    return list(entry(flt, report, options)), report


def cookies(socks) -> set:
    return {s.cookie for s in socks}


def agree(names, engine: str, reason, **kw):
    """list (all states) and match (the kill defaults) with the one pass
    name what walking everything names, and what ss names; the one pass
    walks each namespace for `reason` (None: not walked). The reports."""
    reports = []
    for command in ("list", "match"):
        one, rep = run(command, names, engine, "needed", **kw)
        every, rep_all = run(command, names, engine, "all", **kw)
        assert cookies(one) == cookies(every), (command, kw, engine, one, every)
        assert len(one) == len(cookies(one)), "a socket reported twice"
        assert all(r.walked and r.walk_reason == "forced" for r in rep_all.namespaces)
        got = {r.ns.name: (r.walked, r.walk_reason) for r in rep.namespaces}
        assert got == {n: (reason is not None, reason) for n in names}, (command, kw, got)
        reports.append(rep)
    if not kw:
        seen = {c for c, s in ss_view(names).items()}
        assert cookies(run("list", names, engine, "needed")[0]) == seen
    return reports


def wait_for(ns: str, port: int, states: set, timeout: float = 5.0) -> dict:
    """Poll ss until sockets on `port` show every state in `states` (kernel
    numbering); the cookie -> SsSock view of the namespace."""
    deadline = time.monotonic() + timeout
    while True:
        view = ss_view([ns])
        seen = {s.state for s in view.values() if port in (s.sport, s.dport)}
        if states <= seen:
            return view
        assert time.monotonic() < deadline, f"ss never showed states {states - seen} on {port}: {seen}"
        time.sleep(0.05)


def loopback(h, port: int, count: int = 1, addr: str = "127.0.0.1", accept: bool = True):
    """count connections to a listener on port; (listener id, client ids, server ids)."""
    lst = h.call("listen", addr=addr, port=port)["id"]
    clients = [c["id"] for c in h.call("connect", dst=addr, port=port, count=count)]
    servers = [a["id"] for a in h.call("accept", id=lst, count=count)] if accept else []
    return lst, clients, servers


def held_population(h):
    """What every namespace has beside its scenario: a listener, connections
    both ways, v4 and v6, connected and unconnected UDP."""
    loopback(h, PORT, 2)
    loopback(h, PORT, 1, addr="::1")
    h.call("listen", proto="udp", addr="0.0.0.0", port=5353)
    h.call("connect", proto="udp", dst="127.0.0.1", port=5353, count=2)


def kill_agrees(names, engine: str, reason, **kw):
    """A kill with the one pass kills exactly what a walk of everything would
    have named (match, just before); each gone from ss afterwards."""
    want, _ = run("match", names, engine, "all", **kw)
    want = cookies(want)
    killed, report = run("kill", names, engine, "needed", **kw)
    results = {s.cookie: s.result for s in killed}
    assert len(results) == len(killed), "a socket reported twice"
    assert set(results) <= want, f"killed what was not named: {set(results) - want}"
    # a connection's other end, killed first, may reset one of them: gone (or, found
    # by a walk after the reset, not found at all), never failed or alive
    assert all(r in ("killed", "gone") for r in results.values()), results
    # a destroyed UDP socket bound to its port stays hashed until its owner closes it
    stays = {s.cookie for s in killed if s.proto == "udp" and s.result == "killed"}
    alive = want & set(ss_view(names)) - stays
    assert not alive, f"alive after the kill: {alive}"
    assert [(r.walked, r.walk_reason) for r in report.namespaces] == [(reason is not None, reason)]
    return results


# -- what the pass sees: no walk ---------------------------------------------------------

@pytest.mark.kernels
@pytest.mark.bpf_kill
@pytest.mark.parametrize("engine", ENGINES)
def test_held_sockets_need_no_walk(topo, engine):
    ns = topo.ns("held")
    h = topo.holder(ns)
    held_population(h)
    agree([ns], engine, None)
    agree([ns], engine, None, dport=[str(PORT)])
    kill_agrees([ns], engine, None, dport=[str(PORT)])


@pytest.mark.parametrize("engine", ENGINES)
def test_shared_sockets_count_once_and_show_every_holder(topo, engine):
    ns = topo.ns("share")
    h = topo.holder(ns)
    held_population(h)
    _, clients, _ = loopback(h, PORT + 1, 2)
    h.call("dup", id=clients[0])
    child = h.call("fork")
    h.call("dup", id=clients[1])                 # after the fork: only the parent has two
    agree([ns], engine, None)
    socks, _ = run("match", [ns], engine, "needed", processes=True, dport=[str(PORT + 1)])
    assert len(socks) == 2
    for sock in socks:
        assert sorted(pid for pid, _ in sock.processes) == sorted([h.pid, child]), sock.processes
    kill_agrees([ns], engine, None, dport=[str(PORT + 1)])


@pytest.mark.parametrize("engine", ENGINES)
def test_a_namespace_without_processes(topo, engine):
    """Its counts are read from inside it; a process elsewhere holds its sockets."""
    ns = topo.ns("bare")
    empty = topo.ns("empty")
    holder = subprocess.Popen([sys.executable, "-c", ELSEWHERE, f"/run/netns/{ns}"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert not any(os.stat(f"/proc/{p}/ns/net").st_ino == ns_inode(ns)
                       for p in os.listdir("/proc") if p.isdigit() and _readable(p))
        agree([ns, empty], engine, None)
        assert len(run("list", [ns], engine, "needed")[0]) == 3
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)


def _readable(pid: str) -> bool:
    try:
        os.stat(f"/proc/{pid}/ns/net")
        return True
    except OSError:
        return False


ELSEWHERE = """
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
home = os.open("/proc/self/ns/net", os.O_RDONLY)
there = os.open(sys.argv[1], os.O_RDONLY)
assert libc.setns(there, 0x40000000) == 0
os.system("ip link set lo up")
l = socket.socket(); l.bind(("127.0.0.1", 7420)); l.listen()
c = socket.create_connection(("127.0.0.1", 7420)); a, _ = l.accept()
assert libc.setns(home, 0x40000000) == 0
print("ready", flush=True)
sys.stdin.read()
"""


# -- what it cannot see: the counts send the namespace to a walk ------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_unaccepted_child(topo, engine):
    ns = topo.ns("backlog")
    h = topo.holder(ns)
    held_population(h)
    lst, clients, _ = loopback(h, PORT + 1, 2, accept=False)
    h.call("accept", id=lst, count=1)            # one of the two still waits
    wait_for(ns, PORT + 1, {1})
    agree([ns], engine, "unheld")
    kill_agrees([ns], engine, "unheld", sport=[str(PORT + 1)])


@pytest.mark.parametrize("engine", ENGINES)
def test_syn_recv_request(topo, engine):
    """TCP_DEFER_ACCEPT keeps the request socket after the handshake."""
    ns = topo.ns("synrecv")
    h = topo.holder(ns)
    held_population(h)
    lst = h.call("listen", addr="127.0.0.1", port=PORT + 1)["id"]
    h.call("setsockopt", id=lst, level=socket.IPPROTO_TCP, option=socket.TCP_DEFER_ACCEPT, value=30)
    h.call("connect", dst="127.0.0.1", port=PORT + 1, count=2)
    wait_for(ns, PORT + 1, {3})
    agree([ns], engine, "syn-recv")
    # a filter that cannot select a request socket needs no walk
    agree([ns], engine, None, state=["established"])
    kill_agrees([ns], engine, "syn-recv", sport=[str(PORT + 1)], state=["syn-recv"])


@pytest.mark.kernels
@pytest.mark.bpf_kill
@pytest.mark.parametrize("engine", ENGINES)
def test_time_wait(topo, engine):
    ns = topo.ns("tw")
    h = topo.holder(ns)
    held_population(h)
    _, clients, servers = loopback(h, PORT + 1, 2)
    h.call("close", ids=clients)                 # the active closer waits in time-wait
    time.sleep(0.05)
    h.call("close", ids=servers)
    wait_for(ns, PORT + 1, {6})
    agree([ns], engine, "time-wait")
    agree([ns], engine, None, state=["established", "listening"])
    kill_agrees([ns], engine, "time-wait", state=["time-wait"], dport=[str(PORT + 1)])


@pytest.mark.parametrize("engine", ENGINES)
def test_orphans_fin_wait_1_last_ack_closing(topo, engine):
    ns = topo.ns("orphan")
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=NFT_RULES)
    h = topo.holder(ns)
    held_population(h)
    # fin-wait-1: the client closes, its FIN never arrives
    _, clients, _ = loopback(h, FIN_WAIT_PORT, 1)
    h.call("close", ids=clients)
    # last-ack: the client shuts down, the server closes, its FIN never arrives
    _, clients, servers = loopback(h, LAST_ACK_PORT, 1)
    h.call("shutdown", ids=clients)
    time.sleep(0.05)
    h.call("close", ids=servers)
    # closing: the server closes (its FIN lost), then the client's FIN arrives
    _, clients, servers = loopback(h, CLOSING_PORT, 1)
    h.call("close", ids=servers)
    time.sleep(0.05)
    h.call("shutdown", ids=clients)
    wait_for(ns, FIN_WAIT_PORT, {4})
    wait_for(ns, LAST_ACK_PORT, {9})
    view = wait_for(ns, CLOSING_PORT, {11})
    orphans = {c for c, s in view.items() if s.state in (4, 9, 11) and not s.ino}
    assert len(orphans) == 3, view
    agree([ns], engine, "unheld")
    for port, state in ((FIN_WAIT_PORT, "fin-wait-1"), (LAST_ACK_PORT, "last-ack"),
                        (CLOSING_PORT, "closing")):
        socks, _ = run("match", [ns], engine, "needed", state=[state])
        assert cookies(socks) & orphans, (state, socks)
    results = kill_agrees([ns], engine, "unheld", state=["fin-wait-1", "last-ack", "closing"])
    assert orphans <= set(results)


@pytest.mark.parametrize("engine", ENGINES)
def test_kernel_udp_socket_of_a_vxlan_device(topo, engine):
    ns = topo.ns("vxlan")
    h = topo.holder(ns)
    held_population(h)
    sh("ip", "-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789",
       "local", "127.0.0.1")
    sh("ip", "-n", ns, "link", "set", "vx0", "up")
    agree([ns], engine, "unheld")
    socks, _ = run("list", [ns], engine, "needed", sport=["4789"])
    assert len(socks) == 1 and socks[0].proto == "udp" and not socks[0].processes
    agree([ns], engine, None, proto=["tcp"])           # TCP alone: nothing unheld


@pytest.mark.parametrize("engine", ENGINES)
def test_sockets_in_flight_over_scm_rights(topo, engine):
    ns = topo.ns("flight")
    h = topo.holder(ns)
    held_population(h)
    _, clients, _ = loopback(h, PORT + 1, 2)
    h.call("send_away", id=clients[0])
    agree([ns], engine, "unheld")
    udp = h.call("connect", proto="udp", dst="127.0.0.1", port=5353)[0]["id"]
    h.call("send_away", id=udp)
    agree([ns], engine, "unheld", proto=["udp"])
    results = kill_agrees([ns], engine, "unheld", dport=[str(PORT + 1)])
    assert len(results) == 2


# -- races, fallbacks, the reuseport rule ------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_a_socket_gone_before_its_destroy_is_gone(topo, engine):
    from sockterm import core, filter as F
    ns = topo.ns("gone")
    h = topo.holder(ns)
    held_population(h)
    _, clients, _ = loopback(h, PORT + 1, 3)
    flt = F.build_filter(netns=[ns], dport=[str(PORT + 1)])
    options = core.Options(backend=engine, processes=True, walk="needed")
    plan_report = core.Report()
    plan = core.plan(flt, plan_report, options)
    assert len(plan.sockets) == 3 and not plan.walked
    assert [r.walked for r in plan_report.namespaces] == [False]
    h.call("close", ids=clients[:1], abort=True)
    report = core.Report()
    results = {s.cookie: (s.result, s.processes) for s in core.kill(plan, report, options)}
    by_id = {c["id"]: c["cookie"] for c in h.call("infos", ids=clients[1:])}
    assert sorted(r for r, _ in results.values()) == ["gone", "killed", "killed"]
    assert all(results[c][0] == "killed" for c in by_id.values())
    assert all(p and p[0][0] == h.pid for _, p in results.values())
    assert [(r.walked, r.killed) for r in report.namespaces] == [(False, 2)]
    assert all(v == errno.ECONNABORTED for v in h.status(clients[1:]).values())


@pytest.mark.parametrize("engine", ENGINES)
def test_counts_that_change_during_the_pass_mean_a_walk(topo, engine, monkeypatch):
    from sockterm.engine.bpf import engine as bpf_engine
    ns = topo.ns("changed")
    h = topo.holder(ns)
    held_population(h)
    original = bpf_engine.BpfEngine.held

    def held_then_connect(self, namespaces=None):
        found = original(self, namespaces)
        h.call("connect", dst="127.0.0.1", port=PORT)     # after the pass, before the recount
        return found
    monkeypatch.setattr(bpf_engine.BpfEngine, "held", held_then_connect)
    socks, report = run("list", [ns], engine, "needed")
    assert [(r.walked, r.walk_reason) for r in report.namespaces] == [(True, "changed")]
    assert cookies(socks) == set(ss_view([ns]))


@pytest.mark.parametrize("engine", ENGINES)
def test_counts_read_before_the_pass_see_a_socket_opened_after_them(topo, engine, monkeypatch):
    """The first counts are read as the counters open, while the engine
    loads: a connection made after that, before the pass, is a change."""
    from sockterm.engine.bpf import engine as bpf_engine
    ns = topo.ns("early")
    h = topo.holder(ns)
    held_population(h)
    original = bpf_engine.BpfEngine.held

    def connect_then_held(self, namespaces=None):
        h.call("connect", dst="127.0.0.1", port=PORT)     # after the first counts, before the pass
        return original(self, namespaces)
    monkeypatch.setattr(bpf_engine.BpfEngine, "held", connect_then_held)
    socks, report = run("list", [ns], engine, "needed")
    assert [(r.walked, r.walk_reason) for r in report.namespaces] == [(True, "changed")]
    assert cookies(socks) == set(ss_view([ns]))


@pytest.mark.parametrize("engine", [*ENGINES, "auto"])
def test_no_netlink_destroy_falls_back_to_a_walk(topo, engine, monkeypatch):
    """A kernel without CONFIG_INET_DIAG_DESTROY answers EOPNOTSUPP: the
    namespace is walked, and its engine's destroy takes the sockets. Under
    auto the walk engine is not open yet (the pass found the namespace
    whole): the pool's worker that meets the refusal opens it."""
    from sockterm import model
    from sockterm.engine.diag import destroy
    ns = topo.ns("nodestroy")
    h = topo.holder(ns)
    held_population(h)
    loopback(h, PORT + 1, 2)

    def refuse(self, dsock, socks, stop=None):
        for sock in socks:
            model.set_error(sock, errno.EOPNOTSUPP)
    monkeypatch.setattr(destroy.Destroyer, "destroy", refuse)
    results = kill_agrees([ns], engine, "no-netlink-destroy", dport=[str(PORT + 1)])
    assert sorted(results.values()) == ["killed", "killed"]


@pytest.mark.parametrize("engine", ENGINES)
def test_udp_servers_sharing_a_port_are_walked_to_kill(topo, engine):
    ns = topo.ns("reuse")
    h = topo.holder(ns)
    held_population(h)
    ids = [h.call("listen", proto="udp", addr="127.0.0.1", port=PORT + 2, reuseport=True)["id"]
           for _ in range(3)]
    agree([ns], engine, None)
    results = kill_agrees([ns], engine, "reuseport", sport=[str(PORT + 2)], state=["unconnected"])
    assert sorted(results.values()) == ["killed"] * 3
    assert all(v == errno.ECONNABORTED for v in h.status(ids).values())


# -- the CLI: -v, JSON, SOCKTERM_WALK ------------------------------------------------------

def test_cli_reports_walks_per_namespace(topo):
    held_ns = topo.ns("clih")
    h = topo.holder(held_ns)
    held_population(h)
    walked_ns = topo.ns("cliw")
    w = topo.holder(walked_ns)
    held_population(w)
    loopback(w, PORT + 1, 2, accept=False)
    args = ["-v", "list", "--netns", held_ns, "--netns", walked_ns, "-o", "json"]
    code, out, err = cli(*args, env={"SOCKTERM_WALK": "needed"})
    assert code == 0, err
    doc = json.loads(out)
    got = {n["netns_name"]: (n["walked"], n["walk_reason"]) for n in doc["namespaces"]}
    assert got == {held_ns: (False, None), walked_ns: (True, "unheld")}
    assert f"namespace {held_ns}: not walked: every socket is held by a process" in err
    assert f"namespace {walked_ns}: walked (unheld: " in err
    code, out, err = cli(*args, env={"SOCKTERM_WALK": "all"})
    assert code == 0 and "every namespace is walked" in err
    assert {(n["walked"], n["walk_reason"]) for n in json.loads(out)["namespaces"]} == {(True, "forced")}
    # two namespaces, no processes wanted: walking them costs less than the one pass
    code, out, err = cli(*args, "--no-processes")
    assert {(n["walked"], n["walk_reason"]) for n in json.loads(out)["namespaces"]} == \
        {(True, "no-one-pass")}
    code, out, err = cli(*args, env={"SOCKTERM_WALK": "some"})
    assert code == 2 and "unknown walk mode 'some'" in err and "Traceback" not in err


def test_netlink_error_mid_kill_reports_what_died(topo, monkeypatch):
    """The acks of the one pass's destroys cannot be read (EIO, injected) after
    the first few hundred: the kernel is asked which of those sockets are gone,
    they are reported killed, the namespace's error is reported, nothing
    escapes, and the sockets never asked for stay alive."""
    from sockterm.engine.diag import destroy, wire
    ns = topo.ns("eio")
    h = topo.holder(ns)
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.core.somaxconn=1024")
    _, clients, _ = loopback(h, PORT + 4, 300)
    named = {c["cookie"] for c in h.call("infos", ids=clients)}
    recv, calls = wire.DiagSocket._recv, []

    def failing(self):
        if len(self.buf) == destroy.ACK_BUFFER:      # a destroyer's socket
            calls.append(1)
            if len(calls) == 2:
                raise OSError(errno.EIO, "injected")
        return recv(self)
    monkeypatch.setattr(wire.DiagSocket, "_recv", failing)
    socks, report = run("kill", [ns], "diag", "needed", dport=[str(PORT + 4)])
    died = named - set(ss_view([ns]))
    assert 0 < len(died) < len(named), len(died)
    assert {s.cookie for s in socks if s.result == "killed"} == died
    [nsr] = report.namespaces
    assert not nsr.walked and nsr.error and report.ns_errors
