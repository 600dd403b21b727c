"""Every kernel gets the best mechanism it has: a program the kernel refuses
loses its capability alone, and the run still lists and kills exactly.

Refusals are real: SOCKTERM_TEST_REFUSE makes the engine load, in place of a
capability's program, one that every verifier refuses (bpf/refused.c's
st_refused_*), so the kernel says no and the engine degrades as it would on a
kernel that refuses the real one; `kfunc` makes the host probe report no
bpf_sock_destroy, as on kernels before 6.5. Sockets are made by holders that
never ask for their cookies: the one pass then meets sockets whose cookie the
kernel has not made yet, as it does with most applications' sockets.
"""

from __future__ import annotations

import errno
import json

import pytest

from conftest import VIP4, Topology, sh, sockterm, sockterm_json
from rel_util import bpf_orphans, held_by_me, wait_no_orphans

CLIENTS = 4       # auto makes the one pass from four namespaces on


class DegradeTopology(Topology):
    PREFIX, LINK = "stdg", "sd"
    CLIENT4, CLIENT6 = "10.61", "fd61"


@pytest.fixture
def topo():
    t = DegradeTopology()
    try:
        yield t
    finally:
        t.cleanup()


def scene(topo):
    """Four client namespaces, each with two connections to VIP:8000 (the
    targets: TCP, and a connected UDP socket) and one to VIP:8001 (must
    survive); no cookie asked for."""
    be = topo.with_backend()
    server = topo.holder(be)
    server.call("lazy")
    lst = {port: server.call("listen", addr=VIP4, port=port) for port in (8000, 8001)}
    server.call("listen", proto="udp", addr=VIP4, port=8000)
    targets, spared = [], []
    for i in range(CLIENTS):
        client = topo.holder(topo.client(i))
        client.call("lazy")
        targets += [(client, c) for c in client.call("connect", dst=VIP4, port=8000, count=2)]
        targets += [(client, c) for c in client.call("connect", proto="udp", dst=VIP4, port=8000)]
        spared += [(client, c) for c in client.call("connect", dst=VIP4, port=8001)]
        server.call("accept", id=lst[8000]["id"], count=2)
        server.call("accept", id=lst[8001]["id"])
    return targets, spared


def ss_sockets(names) -> dict:
    """(namespace, local port, peer port) -> cookie, as ss sees them."""
    found = {}
    for ns in names:
        out = sh("ip", "netns", "exec", ns, "ss", "-H", "-tnie", "state", "established").stdout
        for line in out.splitlines():
            if not line[:1].strip():
                continue
            fields = line.split()
            local, peer = fields[2], fields[3]
            cookie = next(int(t[3:], 16) for t in fields if t.startswith("sk:"))
            found[(ns, int(local.rsplit(":", 1)[1]), int(peer.rsplit(":", 1)[1]))] = cookie
    return found


def netns_args(topo):
    return [a for ns in topo.namespaces for a in ("--netns", ns)]


def engine_for(refuse: str, walked: bool) -> str:
    """The engine a run reports: diag where the kfunc is missing (auto picks
    it up front), or where the iterators are refused and a namespace was
    walked. Under auto the walk engine opens at the first walk: where the one
    pass leaves nothing to walk, the iterators are never loaded (nor refused)
    and bpf made the run."""
    refused = set(refuse.split(","))
    return "diag" if "kfunc" in refused or ("enumerate" in refused and walked) else "bpf"


REFUSALS = ["", "one-pass", "enumerate", "enumerate,one-pass", "kfunc"]


@pytest.mark.parametrize("refuse", REFUSALS)
def test_lists_and_kills_exactly_with_what_loads(topo, refuse):
    targets, spared = scene(topo)
    env = {"SOCKTERM_TEST_REFUSE": refuse}
    # every namespace is walked where the one pass cannot run, none where it can
    walked = "one-pass" in refuse
    expected = engine_for(refuse, walked)

    # the kill first, while no cookie has been made: the one pass reads none
    code, doc, err = sockterm_json("-v", "kill", "--yes", "--dst", f"{VIP4}:8000",
                                   *netns_args(topo), env=env)
    assert code == 0, err
    assert {n["walk_reason"] is not None for n in doc["namespaces"]} == {walked}, doc["namespaces"]
    assert doc["engine"] == expected and {n["engine"] for n in doc["namespaces"]} == {expected}
    assert doc["summary"]["killed"] == len(targets) == len(doc["sockets"])
    assert {s["result"] for s in doc["sockets"]} == {"killed"}
    cookies = [s["cookie"] for s in doc["sockets"]]
    assert all(cookies) and len(set(cookies)) == len(cookies)
    for client, conn in targets:
        assert client.status([conn["id"]])[conn["id"]] == errno.ECONNABORTED
    for client, conn in spared:
        assert client.status([conn["id"]])[conn["id"]] == 0
    reasons = {n["walk_reason"] for n in doc["namespaces"]}
    if "one-pass" in refuse:
        assert reasons == {"no-one-pass"}
        assert "refused" in err and "one-pass" in err
    # the iterators are loaded (and refused) only where a namespace is walked
    assert ("refused the socket iterators" in err) is ("enumerate" in refuse and walked)

    # then the list, of sockets whose cookies nobody asked for yet
    code, doc, err = sockterm_json("-v", "list", *netns_args(topo), "--state", "established",
                                   env=env)
    assert code == 0, err
    assert doc["engine"] == expected
    inode_of = {ns["netns"]: ns["netns_name"] for ns in doc["namespaces"]}
    got = {(inode_of[s["netns"]], s["sport"], s["dport"]): s["cookie"] for s in doc["sockets"]}
    # exactly what ss lists, each socket with the cookie ss shows (the kernel's one)
    assert got == ss_sockets(topo.namespaces) and all(got.values())
    assert len(got) == 2 * len(spared)

    # doctor names the engine auto walks with, and each capability's fate
    code, out, err = sockterm("doctor", "-o", "json", env=env)
    found = json.loads(out)
    assert found["auto_engine"]["engine"] == engine_for(refuse, walked=True)
    caps = found["capabilities"]
    assert caps["enumerate"]["ok"] is ("enumerate" not in refuse)
    assert caps["one-pass"]["ok"] is ("one-pass" not in refuse)
    assert caps["destroy-in-kernel"]["ok"] is not ({"kfunc", "enumerate"} & set(refuse.split(",")))
    assert caps["destroy-by-netlink"]["ok"] is True

    # a refused program leaves nothing behind
    assert held_by_me() == (set(), set())
    left = wait_no_orphans()
    assert not any(left.values()), left


def test_a_walk_the_pass_asks_for_loads_the_iterators_then(topo):
    """Under auto the walk engine opens when the one pass leaves a namespace
    to walk: there the refused iterators make it the fallback (diag), which
    walks that namespace; the others are killed from the pass, exactly."""
    targets, spared = scene(topo)
    backlog_ns = topo.namespaces[1]            # client 0: a child its listener never accepted
    client = topo.holder(backlog_ns)
    client.call("listen", addr="127.0.0.1", port=9000)
    [waiting] = client.call("connect", dst="127.0.0.1", port=9000)
    env = {"SOCKTERM_TEST_REFUSE": "enumerate"}
    code, doc, err = sockterm_json("-v", "kill", "--yes", "--dst", f"{VIP4}:8000",
                                   *netns_args(topo), env=env)
    assert code == 0, err
    reasons = {n["netns_name"]: n["walk_reason"] for n in doc["namespaces"]}
    assert reasons.pop(backlog_ns) == "unheld" and set(reasons.values()) == {None}, reasons
    assert doc["engine"] == "diag" and {n["engine"] for n in doc["namespaces"]} == {"diag"}
    assert "refused the socket iterators" in err
    assert doc["summary"]["killed"] == len(targets) == len(doc["sockets"])
    for c, conn in targets:
        assert c.status([conn["id"]])[conn["id"]] == errno.ECONNABORTED
    for c, conn in spared:
        assert c.status([conn["id"]])[conn["id"]] == 0
    assert client.status([waiting["id"]])[waiting["id"]] == 0    # not named: left alone
    assert held_by_me() == (set(), set())
    left = wait_no_orphans()
    assert not any(left.values()), left


@pytest.mark.parametrize("refuse,command,needs", [
    ("enumerate", "list", "refused the socket iterators"),
    ("kfunc", "kill", "bpf_sock_destroy"),
])
def test_explicit_bpf_says_what_is_missing(topo, refuse, command, needs):
    targets, _ = scene(topo)
    extra = ["--yes", "--dst", f"{VIP4}:8000"] if command == "kill" else []
    code, out, err = sockterm("--backend", "bpf", command, *extra, *netns_args(topo),
                              env={"SOCKTERM_TEST_REFUSE": refuse})
    assert code == 3 and out == ""
    [line] = err.strip().splitlines()
    assert needs in line and "--backend diag" in line
    for client, conn in targets:
        assert client.status([conn["id"]])[conn["id"]] == 0       # nothing killed
