"""One order for every output: namespaces host first, then by name, then by
inode; in each, sockets by protocol, family, local address and port, peer
address and port, cookie. Namespaces searched at once leave in that order."""

import random
import socket
import threading
import time

import pytest

from sockterm import model
from sockterm.core import pool
from sockterm.core.execute import InOrder


def v4(text):
    return model.v4_mapped(socket.inet_aton(text))


def v6(text):
    return socket.inet_pton(socket.AF_INET6, text)


def sock(proto="tcp", family=4, src="10.0.0.2", sport=1000, dst="10.0.0.5", dport=80, cookie=1,
         netns=1):
    pack = v4 if family == 4 else v6
    return model.Sock(netns, family, proto, 1, pack(src), sport, pack(dst), dport, cookie)


def test_sockets_by_protocol_family_addresses_ports_then_cookie():
    want = [
        sock("tcp", 4, "9.0.0.1", 9, "10.0.0.5", 80, cookie=9),
        sock("tcp", 4, "10.0.0.2", 999, "10.0.0.5", 80, cookie=8),
        sock("tcp", 4, "10.0.0.2", 1000, "9.9.9.9", 65535, cookie=7),
        sock("tcp", 4, "10.0.0.2", 1000, "10.0.0.5", 80, cookie=6),
        sock("tcp", 4, "10.0.0.2", 1000, "10.0.0.5", 81, cookie=2),
        sock("tcp", 4, "10.0.0.2", 1000, "10.0.0.5", 81, cookie=3),     # a tie: the cookie
        sock("tcp", 6, "::1", 1, "::1", 2, cookie=1),                     # IPv6 after IPv4
        sock("tcp", 6, "fd00::1", 1, "::", 0, cookie=1),
        sock("udp", 4, "0.0.0.0", 53, "0.0.0.0", 0, cookie=1),           # UDP after TCP
        sock("udp", 6, "::", 53, "::", 0, cookie=1),
    ]
    shuffled = list(want)
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=model.sock_order) == want
    big = sock(cookie=2**64 - 1, sport=65535)
    assert model.sock_order(big) > model.sock_order(sock(cookie=0, sport=65535))


def test_namespaces_host_first_then_name_then_inode():
    nss = [model.Namespace(9, "web", ""), model.Namespace(3, "web", ""), model.Namespace(5, "api", ""),
           model.Namespace(7, "host", ""), model.Namespace(1, "zz[1]", "")]
    assert [(ns.name, ns.ino) for ns in sorted(nss, key=model.ns_order)] == [
        ("host", 7), ("api", 5), ("web", 3), ("web", 9), ("zz[1]", 1)]


def nsr(ino, name):
    return model.NamespaceReport(ns=model.Namespace(ino, name, ""), engine="diag")


def test_namespaces_leave_in_order_each_sorted_whatever_order_they_finish_in():
    a, b, c = nsr(1, "a"), nsr(2, "b"), nsr(3, "c")
    order = InOrder([a, b, c])
    s = {i: sock(sport=i, netns=n.ns.ino) for i, n in ((1, a), (2, a), (3, b), (4, c), (5, c))}
    assert order.take(c, [s[5], s[4]]) == []
    assert order.take(c, None) == []                  # c is complete, but a and b come first
    assert order.take(b, [s[3]]) == []
    assert order.take(a, [s[2]]) == []
    assert order.take(a, [s[1]]) == []                # more may come: nothing leaves yet
    assert order.take(a, None) == [s[1], s[2]]        # a complete: a leaves, sorted
    assert order.take(b, None) == [s[3], s[4], s[5]]  # b, then c that was waiting
    assert order.rest() == []


def test_a_stop_or_a_failure_releases_what_is_held_in_order():
    a, b = nsr(1, "a"), nsr(2, "b")
    order = InOrder([a, b])
    s1, s2, s3 = sock(sport=3, netns=1), sock(sport=1, netns=1), sock(sport=2, netns=2)
    order.take(b, [s3])
    order.take(a, [s1, s2])
    assert order.rest() == [s2, s1, s3]
    assert order.rest() == []


@pytest.mark.parametrize("places", [4, None])
def test_a_slow_first_namespace_holds_back_no_more_than_the_window(places):
    """The first namespace's walk is slow; the later ones finish at once and
    wait behind it with their sockets. With a window of 4, the workers start
    no more than 4 namespaces until the first is let go; without one, all
    30. Either way every socket leaves, in order."""
    nsrs = [nsr(i + 1, f"n{i:02}") for i in range(30)]
    socks = {n.ns.ino: sock(sport=n.ns.ino, netns=n.ns.ino) for n in nsrs}
    window = pool.Window(places) if places else None
    started, first_done = [], threading.Event()

    def job(n, entry, emit):
        started.append(n)
        if n is nsrs[0]:
            assert first_done.wait(10)
        emit((n, [socks[n.ns.ino]]))
        emit((n, None))
    order, out, completed, while_slow = InOrder(nsrs, window), [], 0, None
    for n, batch in pool.run(nsrs, job, stop=lambda: False, workers=2, window=window):
        completed += batch is None
        if completed == 3 and while_slow is None:
            time.sleep(0.3)                  # room for a worker to run ahead
            while_slow = len(started)
            first_done.set()
        out += order.take(n, batch)
    out += order.rest()
    assert while_slow == (places or len(nsrs))
    assert out == [socks[n.ns.ino] for n in nsrs]


def test_holders_in_pid_order_whatever_order_procfs_gave():
    owners = model.Owners()
    for pid, comm in ((30, "b"), (20, "a"), (25, "c"), (20, "a")):
        owners.add(7, pid, comm)
    owners.add(8, 5, "x")
    assert owners.get(7) == ((20, "a"), (25, "c"), (30, "b"))
    assert owners.get(8) == ((5, "x"),) and owners.get(9) == ()
