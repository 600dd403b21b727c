"""Scale: more than 20,000 sockets killed in one run, spread over several
processes (20,000 descriptors per process here), and a report that names
exactly the sockets that died: no more, no fewer."""

import errno

from conftest import VIP4, sh, sockterm_json

CLIENT_NAMESPACES = 4
PER_NAMESPACE = 5_100         # 20,400 doomed sockets in all
SPARED_PER_NAMESPACE = 300


def test_kill_more_than_20000(topo, engine):
    be = topo.with_backend()
    sh("ip", "netns", "exec", be, "sysctl", "-qw", "net.core.somaxconn=65535")
    sh("ip", "netns", "exec", be, "sysctl", "-qw", "net.ipv4.tcp_max_syn_backlog=65535")
    server = topo.holder(be)
    # nobody accepts: the server ends stay in the accept queue, costing no descriptors
    server.call("listen", addr=VIP4, port=80, backlog=65535)
    server.call("listen", addr=VIP4, port=81, backlog=65535)
    doomed, spared = {}, {}
    for i in range(CLIENT_NAMESPACES):
        h = topo.holder(topo.client(i))
        doomed[h] = h.call("connect", dst=VIP4, port=80, count=PER_NAMESPACE)
        spared[h] = h.call("connect", dst=VIP4, port=81, count=SPARED_PER_NAMESPACE)
    expected = {s["cookie"] for socks in doomed.values() for s in socks}
    assert len(expected) == CLIENT_NAMESPACES * PER_NAMESPACE > 20_000

    mine = [arg for ns in topo.namespaces for arg in ("--netns", ns)]   # other suites share the VIP
    code, doc, err = sockterm_json("--backend", engine, "kill", "--yes", "--dst", f"{VIP4}:80",
                                   "--no-processes", *mine)
    assert code == 0, err
    reported = [s["cookie"] for s in doc["sockets"]]
    assert len(reported) == len(set(reported)), "a socket was reported twice"
    assert set(reported) == expected
    assert {s["result"] for s in doc["sockets"]} == {"killed"}
    assert doc["summary"]["killed"] == len(expected) and doc["summary"]["failed"] == 0

    died = set()
    for h, socks in doomed.items():
        status = h.status([s["id"] for s in socks])
        died |= {s["cookie"] for s in socks if status[s["id"]] == errno.ECONNABORTED}
    assert died == expected
    for h, socks in spared.items():
        assert set(h.status([s["id"] for s in socks]).values()) == {0}
