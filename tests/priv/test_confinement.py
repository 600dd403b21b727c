"""The confinement the tests rely on (tests/confine.py) really hides the host.

A confined sockterm must find only its own new, empty namespace and the test
namespaces handed to it: not the namespace the tests run in, not another test
namespace, not any process. Proven with sockets on both sides of the wall:
a kill naming every one of them by port, with no --netns at all, must destroy
exactly those inside and leave the others alive. The helpers' guard must
refuse an unconfined kill that names no namespace of this session, before
anything runs.
"""

from __future__ import annotations

import errno
import json
import os
import socket

import pytest

import confine
from conftest import sh
from rel_util import RelTopology, cli, loopback_pairs, ns_inode, ss_view

PORT = 7950


@pytest.fixture
def walls():
    """Namespace `inside` (handed to the confinement) and `outside` (not), each
    with a listener and two connections on PORT; and the same in the namespace
    the tests run in (the stand-in for the host: our own sockets only)."""
    with RelTopology() as topo:
        inside = loopback_pairs(topo, "in", PORT)
        outside = loopback_pairs(topo, "out", PORT)
        lst = socket.create_server(("127.0.0.1", 0))
        host_port = lst.getsockname()[1]
        conns = [socket.create_connection(("127.0.0.1", host_port)) for _ in range(2)]
        peers = [lst.accept()[0] for _ in conns]
        try:
            yield topo, inside, outside, (host_port, conns, peers, lst)
        finally:
            for s in [lst, *conns, *peers]:
                s.close()


def test_confined_run_sees_only_what_it_was_given(walls):
    topo, inside, outside, host = walls
    shown = sh(*confine.prefix([inside[0]]), "sh", "-c",
               "ls /proc | grep -c '^[0-9]'; ls /run/netns; grep -c ' - nsfs ' /proc/self/mountinfo; "
               "readlink /proc/self/ns/net").stdout.split()
    processes, names, nsfs, own = int(shown[0]), shown[1:-2], int(shown[-2]), shown[-1]
    assert processes <= 3                       # the shell, grep and ls: nothing of the host
    assert names == [inside[0]] and nsfs == 1
    assert own != os.readlink("/proc/self/ns/net")


@pytest.mark.parametrize("engine", ["bpf", "diag"])
def test_confined_list_and_kill_reach_only_the_given_namespace(walls, engine):
    topo, (ns_in, h_in, ids_in, lst_in), (ns_out, h_out, ids_out, lst_out), host = walls
    host_port, conns, peers, _ = host
    code, out, err = cli("--backend", engine, "list", "--state", "all", "-o", "json",
                         prefix=confine.prefix([ns_in]))
    assert code == 0, err
    doc = json.loads(out)
    seen = {n["netns"] for n in doc["namespaces"]}
    assert ns_inode(ns_in) in seen and len(seen) == 2          # and its own, new and empty
    assert {s["netns"] for s in doc["sockets"]} == {ns_inode(ns_in)}
    assert {s["cookie"] for s in doc["sockets"]} == set(ss_view([ns_in]))   # all of them

    # a kill that names every socket of the three namespaces by port, and no namespace
    ports = f"{PORT},{host_port}"
    before_out = ss_view([ns_out])
    code, out, err = cli("--backend", engine, "kill", "--yes", "--state", "all", "--sport", ports,
                         "-o", "json", prefix=confine.prefix([ns_in]))
    assert code == 0, err
    killed = {s["cookie"] for s in json.loads(out)["sockets"] if s["result"] == "killed"}
    assert killed and {s["netns"] for s in json.loads(out)["sockets"]} == {ns_inode(ns_in)}
    assert set(h_in.status([lst_in]).values()) == {errno.ECONNABORTED}
    # beyond the wall: the other test namespace and the tests' own namespace, untouched
    assert ss_view([ns_out]) == before_out
    assert set(h_out.status(ids_out + [lst_out]).values()) == {0}
    for s in conns + peers:
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    conns[0].sendall(b"alive")
    assert b"alive" in b"".join(p.recv(16, socket.MSG_DONTWAIT) for p in peers
                                if _readable(p))


def _readable(sock) -> bool:
    import select
    return bool(select.select([sock], [], [], 1)[0])


@pytest.mark.parametrize("args", [
    ["kill", "--yes", "--dport", "1"],
    ["--backend", "diag", "kill", "--yes", "--state", "all", "--sport", "1"],
    ["kill", "--yes", "--netns", "/proc/1/ns/net", "--dport", "1"],
    ["kill", "--yes", "--netns", str(os.stat("/proc/self/ns/net").st_ino), "--dport", "1"],
])
def test_helpers_refuse_an_unconfined_kill_beyond_the_tests(args):
    with pytest.raises(AssertionError, match="refusing to run an unconfined kill"):
        cli(*args)
    confine.check_kill(args, confine.prefix())           # confined: allowed
    confine.check_kill(["kill", "--dry-run", *args[-2:]])  # not a kill
