"""The incident: a backend behind a VIP died, clients in several namespaces
hold TCP and connected-UDP sockets to it. `sockterm kill --dst VIP:80` must
abort exactly those, in every namespace, and nothing else."""

import errno

import pytest

from conftest import VIP4, VIP6, confined, sockterm, sockterm_json, ss_cookies


def build(topo, clients=3):
    be = topo.with_backend()
    server = topo.holder(be)
    listeners = {
        (VIP4, 80): server.call("listen", addr=VIP4, port=80)["id"],
        (VIP4, 81): server.call("listen", addr=VIP4, port=81)["id"],
        (VIP6, 80): server.call("listen", addr=VIP6, port=80)["id"],
    }
    udp_server = server.call("listen", proto="udp", addr=VIP4, port=80)
    doomed, spared = {}, {}    # holder -> [socket ids]
    peers = []                 # backend-side accepted sockets of doomed TCP connections
    for i in range(clients):
        ns = topo.client(i)
        h = topo.holder(ns)
        kill_tcp = h.call("connect", dst=VIP4, port=80, count=2)
        kill_tcp6 = h.call("connect", dst=VIP6, port=80, count=1)
        kill_udp = h.call("connect", proto="udp", dst=VIP4, port=80, count=2)
        keep_tcp = h.call("connect", dst=VIP4, port=81, count=2)
        keep_udp = h.call("connect", proto="udp", dst=VIP4, port=81, count=1)
        keep_lst = h.call("listen", addr="0.0.0.0", port=80)       # a local server on :80
        keep_unconn = h.call("listen", proto="udp", addr="0.0.0.0", port=5353)
        doomed[h] = [s["id"] for s in kill_tcp + kill_tcp6 + kill_udp]
        spared[h] = [s["id"] for s in keep_tcp + keep_udp] + [keep_lst["id"], keep_unconn["id"]]
        peers += server.call("accept", id=listeners[(VIP4, 80)], count=2)
        peers += server.call("accept", id=listeners[(VIP6, 80)], count=1)
        server.call("accept", id=listeners[(VIP4, 81)], count=2)
    return server, doomed, spared, peers, udp_server


def cookies_of(h, ids):
    return {s["cookie"] for s in h.call("infos", ids=ids)}


@pytest.mark.kernels
@pytest.mark.bpf_kill
def test_kill_dst_vip_every_namespace(topo, engine):
    server, doomed, spared, peers, _ = build(topo)
    expected = set()
    for h, ids in doomed.items():
        expected |= cookies_of(h, ids)
    before = {ns: ss_cookies(ns) for ns in topo.namespaces}

    mine = [arg for ns in topo.namespaces for arg in ("--netns", ns)]   # other suites share the VIP
    code, doc, err = sockterm_json("--backend", engine, "match", "--dst", f"{VIP4}:80", *mine)
    assert code == 0, err
    # v4 target matches IPv4 sockets only here (VIP6 is a different address)
    v6 = set()
    for h, ids in doomed.items():
        v6 |= {s["cookie"] for s in h.call("infos", ids=ids) if ":" in s["peer"][0]}
    assert {s["cookie"] for s in doc["sockets"]} == expected - v6

    code, doc, err = sockterm_json("--backend", engine, "kill", "--yes",
                                   "--dst", f"{VIP4}:80", "--dst", f"[{VIP6}]:80", *mine)
    assert code == 0, err
    reported = {s["cookie"] for s in doc["sockets"]}
    assert reported == expected
    assert all(s["result"] == "killed" for s in doc["sockets"])
    assert doc["summary"]["killed"] == len(expected)
    assert {s["netns_name"] for s in doc["sockets"]} == {ns for ns in topo.namespaces if ns != topo.backend}

    for h, ids in doomed.items():
        assert set(h.status(ids).values()) == {errno.ECONNABORTED}
    for h, ids in spared.items():
        assert set(h.status(ids).values()) == {0}
    # every TCP peer got a reset
    assert set(server.status([p["id"] for p in peers]).values()) == {errno.ECONNRESET}
    # the independent view: exactly the killed cookies vanished
    after = {ns: ss_cookies(ns) for ns in topo.namespaces}
    vanished = set().union(*(before[ns] - after[ns] for ns in topo.namespaces))
    assert expected <= vanished
    assert not (vanished - expected - {p["cookie"] for p in peers})


def test_kill_needs_yes_without_terminal(topo):
    server, doomed, spared, peers, _ = build(topo, clients=1)
    mine = [arg for ns in topo.namespaces for arg in ("--netns", ns)]
    code, out, err = sockterm("kill", "--dst", f"{VIP4}:80", *mine)
    assert code == 2 and "--yes" in err and len(err.strip().splitlines()) == 1
    for h, ids in doomed.items():
        assert set(h.status(ids).values()) == {0}


def test_kill_refuses_empty_filter():
    # confined: should the refusal regress, this kill still reaches no socket of the host
    code, out, err = confined("kill", "--yes")
    assert code == 2 and "filter" in err
    code, out, err = confined("kill", "--yes", "--state", "all")
    assert code == 2


def test_nothing_matched_exits_1(topo, engine):
    topo.with_backend()
    code, doc, err = sockterm_json("--backend", engine, "kill", "--yes", "--dst", "203.0.113.9:9",
                                   "--netns", topo.backend)
    assert code == 1 and doc["sockets"] == []
