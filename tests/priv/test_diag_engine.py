"""The diag engine against a real kernel: throwaway namespaces, real sockets
opened inside them (by a worker thread that setns'd there), and the outcome
checked from the outside: the application's socket error, the peer's reset,
and what `ss` sees."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import time
import uuid

import pytest

if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)

pytest.importorskip("pyroute2")

from sockterm import model  # noqa: E402
from sockterm.host import enter  # noqa: E402
from sockterm import states as st  # noqa: E402
from sockterm.engine import Scope  # noqa: E402
from sockterm.engine.diag import engine as diag_engine  # noqa: E402
from sockterm.filter import build_filter  # noqa: E402

SO_COOKIE = 57
TCP_DEFER_ACCEPT = 9
V4 = b"\0" * 10 + b"\xff\xff"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


class Net:
    """One throwaway namespace, a worker thread that can enter it, and the
    sockets the test opened there (closed at teardown)."""

    def __init__(self, worker):
        self.name = f"st-diag-{uuid.uuid4().hex[:8]}"
        sh("ip", "netns", "add", self.name)
        self.path = f"/run/netns/{self.name}"
        self.ns = model.Namespace(ino=os.stat(self.path).st_ino, name=self.name, path=self.path)
        self.worker = worker
        self.socks: list[socket.socket] = []
        sh("ip", "-n", self.name, "link", "set", "lo", "up")

    def sock(self, family=socket.AF_INET, kind=socket.SOCK_STREAM) -> socket.socket:
        s = self.worker.call(self.ns, lambda: socket.socket(family, kind))
        self.socks.append(s)
        return s

    def listen(self, addr="127.0.0.1", port=0, family=socket.AF_INET, reuseport=False,
               kind=socket.SOCK_STREAM, v6only=None) -> socket.socket:
        s = self.sock(family, kind)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if v6only is not None:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
        s.bind((addr, port))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
        return s

    def connect(self, listener, dst=None, family=None):
        """A connected TCP pair: (client, accepted)."""
        port = listener.getsockname()[1]
        dst = dst or listener.getsockname()[0]
        family = family or (socket.AF_INET6 if ":" in dst else socket.AF_INET)
        c = self.sock(family)
        c.connect((dst, port))
        a, _ = listener.accept()
        self.socks.append(a)
        return c, a

    def ss(self, args: str) -> str:
        return sh("ip", "netns", "exec", self.name, "ss", "-H", *args.split()).stdout

    def close(self):
        for s in self.socks:
            s.close()
        sh("ip", "netns", "del", self.name, check=False)


@pytest.fixture
def worker():
    w = enter.Worker()
    yield w
    w.close()


@pytest.fixture
def net(worker):
    n = Net(worker)
    try:
        yield n
    finally:
        n.close()
    assert n.name not in sh("ip", "netns", "list").stdout


def cookie_of(s) -> int:
    return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")


def so_error(s) -> int:
    return s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)


def walk(engine, net):
    """What the core does with an engine in one namespace: enter, read, destroy."""
    handle = net.worker.call(net.ns, engine.enter)
    if handle is None:
        return []
    found = []
    try:
        for batch in engine.read(handle, net.ns):
            if engine.kill:
                engine.destroy(handle, batch)
            found += batch
    finally:
        engine.release(handle)
    return found


def run(net, kill, **filter_args):
    logs = []
    engine = diag_engine.DiagEngine(flt=build_filter(**filter_args), scope=Scope(), kill=kill,
                                    log=logs.append)
    engine.open()
    try:
        return walk(engine, net)
    finally:
        engine.close()


def destroy_again(net, socks):
    """SOCK_DESTROY these exact sockets now (as the core hands the bpf engine's
    TIME_WAIT and request sockets to diag)."""
    engine = diag_engine.DiagEngine(flt=build_filter(state=["all"]), scope=Scope(), kill=True)
    engine.open()
    handle = net.worker.call(net.ns, engine.enter)
    try:
        for sock in socks:
            sock.result = model.MATCHED
        engine.destroy(handle, socks)
    finally:
        engine.release(handle)


def by_cookie(socks):
    return {s.cookie: s for s in socks}


def alive(s) -> bool:
    """Still usable: no pending error and the kernel still has it connected."""
    return so_error(s) == 0 and s.getsockopt(socket.SOL_TCP, socket.TCP_INFO, 1)[0] == st.ESTABLISHED


def ss_tokens(out: str, prefix: str) -> set:
    return {tok[len(prefix):] for tok in out.split() if tok.startswith(prefix)}


# -- match ------------------------------------------------------------------------------

def test_match_returns_exact_set_with_fields(net):
    lst = net.listen("127.0.0.1")
    port = lst.getsockname()[1]
    c1, a1 = net.connect(lst)
    c2, a2 = net.connect(lst)
    other = net.listen("127.0.0.1")
    c3, a3 = net.connect(other)
    udp = net.listen("127.0.0.1", kind=socket.SOCK_DGRAM)

    found = run(net, False, dst=[f"127.0.0.1:{port}"])
    assert set(by_cookie(found)) == {cookie_of(c1), cookie_of(c2)}
    for s in found:
        app = c1 if s.cookie == cookie_of(c1) else c2
        assert s.result == model.MATCHED and s.proto == "tcp" and s.family == 4
        assert s.state == st.ESTABLISHED and not s.mini
        assert (s.src_text(), s.sport) == app.getsockname()
        assert (s.dst_text(), s.dport) == (app.getpeername()[0], port)
        assert s.ino == os.fstat(app.fileno()).st_ino
        assert s.netns == net.ns.ino and s.netns_name == net.name and s.uid == 0

    # everything, compared with ss's own view (cookie and inode)
    everything = run(net, False, state=["all"])
    ss_out = net.ss("-tuanei")
    assert {format(s.cookie, "x") for s in everything} == ss_tokens(ss_out, "sk:")
    assert {str(s.ino) for s in everything} == ss_tokens(ss_out, "ino:")
    assert cookie_of(udp) in by_cookie(everything)
    assert by_cookie(everything)[cookie_of(udp)].state == st.CLOSE
    assert by_cookie(everything)[cookie_of(lst)].state == st.LISTEN

    # the default states never include servers
    assert cookie_of(lst) not in by_cookie(run(net, False, sport=[str(port)]))
    # nothing was touched
    for s in (c1, c2, c3, a1, a2, a3):
        assert alive(s)


def test_match_ipv6_and_v4_mapped(net):
    lst = net.listen("::", family=socket.AF_INET6, v6only=False)
    port = lst.getsockname()[1]
    c4, a4 = net.connect(lst, dst="127.0.0.1")          # a4: IPv6 socket, v4-mapped addresses
    c6, a6 = net.connect(lst, dst="::1")
    found = by_cookie(run(net, False, src=[f"127.0.0.1:{port}"]))
    assert set(found) == {cookie_of(a4)}
    mapped = found[cookie_of(a4)]
    assert mapped.family == 6 and mapped.src == V4 + socket.inet_aton("127.0.0.1")
    assert found[cookie_of(a4)].ino == os.fstat(a4.fileno()).st_ino

    found = by_cookie(run(net, False, src=[f"[::1]:{port}"]))
    assert set(found) == {cookie_of(a6)}
    found = by_cookie(run(net, False, dst=[f"[::1]:{port}"], ipv6=True))
    assert set(found) == {cookie_of(c6)}
    # IPv4 only: the v4-mapped socket is an IPv6 socket
    found = by_cookie(run(net, False, sport=[str(port)], ipv4=True))
    assert found == {}


# -- kill --------------------------------------------------------------------------------

def test_kill_tcp_aborts_app_resets_peer_spares_the_rest(net):
    lst = net.listen("127.0.0.1")
    port = lst.getsockname()[1]
    pairs = [net.connect(lst) for _ in range(3)]
    other = net.listen("127.0.0.1")
    spare_c, spare_a = net.connect(other)

    killed = run(net, True, dst=[f"127.0.0.1:{port}"])
    assert {s.cookie for s in killed} == {cookie_of(c) for c, _ in pairs}
    assert all(s.result == model.KILLED and s.error == 0 for s in killed)
    for client, accepted in pairs:
        assert so_error(client) == errno.ECONNABORTED
        with pytest.raises(ConnectionResetError):       # the peer got a RST
            accepted.recv(10)
    # survivors: the listener and the other connection
    assert alive(spare_c) and alive(spare_a)
    spare_c.send(b"ping")
    assert spare_a.recv(4) == b"ping"
    out = net.ss("-tan")
    assert f"127.0.0.1:{port} " in out                    # the listener still listens
    assert not any(f"127.0.0.1:{port}" in line and "ESTAB" in line for line in out.splitlines())


def test_kill_ipv6_and_v4_mapped(net):
    lst = net.listen("::", family=socket.AF_INET6, v6only=False)
    port = lst.getsockname()[1]
    c4, a4 = net.connect(lst, dst="127.0.0.1")
    c6, a6 = net.connect(lst, dst="::1")
    killed = run(net, True, src=[f"127.0.0.1:{port}"])    # an IPv4 rule, an IPv6 socket
    assert [(s.cookie, s.result) for s in killed] == [(cookie_of(a4), model.KILLED)]
    assert so_error(a4) == errno.ECONNABORTED
    with pytest.raises(ConnectionResetError):
        c4.recv(10)
    assert alive(c6) and alive(a6)
    killed = run(net, True, dst=[f"[::1]:{port}"])
    assert [(s.cookie, s.result) for s in killed] == [(cookie_of(c6), model.KILLED)]
    assert so_error(c6) == errno.ECONNABORTED


def test_reuseport_udp_group_all_destroyed(net):
    servers = [net.listen("0.0.0.0", 5353, kind=socket.SOCK_DGRAM, reuseport=True)
               for _ in range(3)]
    bystander = net.listen("0.0.0.0", 5354, kind=socket.SOCK_DGRAM)
    connected = net.sock(kind=socket.SOCK_DGRAM)
    connected.connect(("127.0.0.1", 5353))

    killed = run(net, True, sport=["5353"], state=["unconnected"])
    # each member reported exactly once, killed (SO_ERROR holds one pending error,
    # however often a socket was aborted: only the report can say "once")
    assert sorted(s.cookie for s in killed) == sorted(cookie_of(s) for s in servers)
    assert [s.result for s in killed] == [model.KILLED] * 3
    for s in servers:
        assert so_error(s) == errno.ECONNABORTED
    assert so_error(bystander) == 0 and so_error(connected) == 0


@pytest.mark.parametrize("family, addr, size", [
    (socket.AF_INET, "127.0.0.1", 8), (socket.AF_INET6, "::", 3), (socket.AF_INET6, "::1", 6)])
def test_reuseport_udp_groups_other_shapes(net, family, addr, size):
    servers = [net.listen(addr, 6000, family=family, kind=socket.SOCK_DGRAM, reuseport=True)
               for _ in range(size)]
    others = [net.listen(addr, 6001, family=family, kind=socket.SOCK_DGRAM, reuseport=True)
              for _ in range(2)]
    killed = run(net, True, sport=["6000"], state=["unconnected"])
    assert sorted(s.result for s in killed) == [model.KILLED] * size
    assert all(so_error(s) == errno.ECONNABORTED for s in servers)
    assert all(so_error(s) == 0 for s in others)


def test_ss_kill_alone_misses_reuseport_members(net):
    """Why the retries exist: ss -K's one request per socket reaches one member."""
    servers = [net.listen("0.0.0.0", 5353, kind=socket.SOCK_DGRAM, reuseport=True) for _ in range(3)]
    sh("ip", "netns", "exec", net.name, "ss", "-K", "-uan", "sport", "=", ":5353", check=False)
    hit = [so_error(s) == errno.ECONNABORTED for s in servers]
    assert sum(hit) < 3


def test_reuseport_tcp_listeners_all_destroyed(net):
    servers = [net.listen("127.0.0.1", 7070, reuseport=True) for _ in range(4)]
    killed = run(net, True, sport=["7070"], state=["listening"])
    assert sorted(s.result for s in killed) == [model.KILLED] * 4
    for s in servers:
        assert so_error(s) == errno.ECONNABORTED
    assert "7070" not in net.ss("-tln")


def test_kill_time_wait(net):
    lst = net.listen("127.0.0.1")
    port = lst.getsockname()[1]
    for _ in range(2):
        c, a = net.connect(lst)
        c.close()                     # the active closer keeps TIME_WAIT
        a.close()
    deadline = time.time() + 5
    while net.ss("-tan state time-wait").count(f"127.0.0.1:{port}") < 2 and time.time() < deadline:
        time.sleep(0.05)
    found = run(net, False, dst=[f"127.0.0.1:{port}"], state=["time-wait"])
    assert len(found) == 2 and all(s.mini and s.state == st.TIME_WAIT and s.ino == 0 for s in found)

    # one through the engine, one the way the BPF engine hands them over
    first, second = found
    destroy_again(net, [first])
    assert first.result == model.KILLED
    assert f"{second.sport}" in net.ss("-tan state time-wait")
    killed = run(net, True, dst=[f"127.0.0.1:{port}"], state=["time-wait"])
    assert [(s.cookie, s.result) for s in killed] == [(second.cookie, model.KILLED)]
    assert f"127.0.0.1:{port}" not in net.ss("-tan state time-wait")


def test_kill_syn_recv_request_socket(net):
    lst = net.listen("127.0.0.1")
    lst.setsockopt(socket.SOL_TCP, TCP_DEFER_ACCEPT, 30)     # the bare ACK leaves a request socket
    port = lst.getsockname()[1]
    client = net.sock()
    client.connect(("127.0.0.1", port))
    found = run(net, False, sport=[str(port)], state=["syn-recv"])
    assert len(found) == 1
    req = found[0]
    assert req.state == st.SYN_RECV and req.mini and req.dport == client.getsockname()[1]
    killed = run(net, True, sport=[str(port)], state=["syn-recv"])
    assert [(s.cookie, s.result) for s in killed] == [(req.cookie, model.KILLED)]
    assert "SYN-RECV" not in net.ss("-tan")
    assert so_error(lst) == 0


def test_gone_and_excluded(net):
    lst = net.listen("127.0.0.1")
    port = lst.getsockname()[1]
    c1, _ = net.connect(lst)
    c2, _ = net.connect(lst)
    flt = build_filter(dst=[f"127.0.0.1:{port}"])
    engine = diag_engine.DiagEngine(flt=flt, kill=True,
                                    scope=Scope(exclude_inodes=frozenset({os.fstat(c2.fileno()).st_ino})))
    engine.open()
    killed = walk(engine, net)
    assert [s.cookie for s in killed] == [cookie_of(c1)]
    assert alive(c2)
    # destroying it again: the kernel no longer has it
    destroy_again(net, killed)
    assert killed[0].result == model.GONE


def test_empty_namespace_costs_no_diag_socket(net):
    assert run(net, False, state=["all"]) == []
    engine = diag_engine.DiagEngine(flt=build_filter(state=["all"]), scope=Scope(), kill=False)
    assert net.worker.call(net.ns, engine.enter) is None
