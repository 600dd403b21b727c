"""The kernel selftest scenarios (tools/testing/selftests/bpf/prog_tests/
sock_destroy.c), each driven through the CLI on both engines, and checked from
the applications' side."""

import errno
import socket
import time

import pytest

from conftest import VIP4, VIP6, sh, sockterm, sockterm_json

ABORTED = errno.ECONNABORTED


def scoped(topo, *args):
    """Only the test's own namespaces: other suites may share these addresses."""
    if "--netns" in args:
        return args
    return args + tuple(arg for ns in topo.namespaces for arg in ("--netns", ns))


def kill(topo, engine, *args):
    return sockterm_json("--backend", engine, "kill", "--yes", *scoped(topo, *args))


def pair(topo, family=4):
    """A client namespace and the backend, one TCP server on the VIP."""
    be = topo.with_backend()
    ns = topo.client(0)
    server, client = topo.holder(be), topo.holder(ns)
    vip = VIP4 if family == 4 else VIP6
    lst = server.call("listen", addr=vip, port=8000)
    return server, client, lst, vip


@pytest.mark.kernels
@pytest.mark.bpf_kill
def test_tcp_client(topo, engine):
    server, client, lst, vip = pair(topo)
    conns = client.call("connect", dst=vip, port=8000, count=3)
    accepted = server.call("accept", id=lst["id"], count=3)
    victim = conns[0]
    code, doc, err = kill(topo, engine, "--sport", str(victim["local"][1]), "--dport", "8000")
    assert code == 0, err
    assert [s["cookie"] for s in doc["sockets"]] == [victim["cookie"]]
    assert client.status([c["id"] for c in conns]) == {conns[0]["id"]: ABORTED, conns[1]["id"]: 0,
                                                        conns[2]["id"]: 0}
    peer = next(a for a in accepted if a["peer"][1] == victim["local"][1])
    assert server.status([peer["id"]])[peer["id"]] == errno.ECONNRESET


def test_tcp_server(topo, engine):
    server, client, lst, vip = pair(topo)
    conns = client.call("connect", dst=vip, port=8000, count=2)
    accepted = server.call("accept", id=lst["id"], count=2)
    code, doc, err = kill(topo, engine, "--sport", "8000", "--netns", topo.backend)
    assert code == 0, err
    # the accepted sockets die, the listener (a server) is spared by default
    assert {s["cookie"] for s in doc["sockets"]} == {a["cookie"] for a in accepted}
    assert set(server.status([a["id"] for a in accepted]).values()) == {ABORTED}
    assert server.status([lst["id"]])[lst["id"]] == 0
    assert set(client.status([c["id"] for c in conns]).values()) == {errno.ECONNRESET}


@pytest.mark.kernels
@pytest.mark.bpf_kill
def test_udp_client(topo, engine):
    be = topo.with_backend()
    ns = topo.client(0)
    server, client = topo.holder(be), topo.holder(ns)
    srv = server.call("listen", proto="udp", addr=VIP4, port=5000)
    conns = client.call("connect", proto="udp", dst=VIP4, port=5000, count=2)
    code, doc, err = kill(topo, engine, "--dst", f"{VIP4}:5000")
    assert code == 0, err
    assert {s["cookie"] for s in doc["sockets"]} == {c["cookie"] for c in conns}
    assert set(client.status([c["id"] for c in conns]).values()) == {ABORTED}
    assert server.status([srv["id"]])[srv["id"]] == 0     # unconnected server spared


def test_udp_server_reuseport_group(topo, engine):
    be = topo.with_backend()
    server = topo.holder(be)
    group = [server.call("listen", proto="udp", addr="::", port=6000, reuseport=True)
             for _ in range(3)]
    other = server.call("listen", proto="udp", addr="::", port=6001)
    # default states never touch unconnected servers
    code, doc, err = kill(topo, engine, "--sport", "6000", "--netns", be)
    assert code == 1 and doc["sockets"] == []
    code, doc, err = kill(topo, engine, "--sport", "6000", "--state", "unconnected", "--netns", be)
    assert code == 0, err
    assert {s["cookie"] for s in doc["sockets"]} == {g["cookie"] for g in group}
    assert all(s["result"] == "killed" for s in doc["sockets"])
    assert set(server.status([g["id"] for g in group]).values()) == {ABORTED}
    assert server.status([other["id"]])[other["id"]] == 0


def test_listener_with_pending_connections(topo, engine):
    server, client, lst, vip = pair(topo)
    conns = client.call("connect", dst=vip, port=8000, count=3)   # never accepted
    code, doc, err = kill(topo, engine, "--sport", "8000", "--state", "listening", "--netns", topo.backend)
    assert code == 0, err
    assert [s["cookie"] for s in doc["sockets"]] == [lst["cookie"]]
    assert server.status([lst["id"]])[lst["id"]] == ABORTED
    # the pending children were reset with their listener
    assert set(client.status([c["id"] for c in conns]).values()) == {errno.ECONNRESET}


def test_ipv6_and_v4_mapped(topo, engine):
    be = topo.with_backend()
    ns = topo.client(0)
    server, client = topo.holder(be), topo.holder(ns)
    lst6 = server.call("listen", addr="::", port=9000, v6only=False)
    v6 = client.call("connect", dst=VIP6, port=9000, count=1)
    mapped = client.call("connect", dst=f"::ffff:{VIP4}", port=9000, count=1)
    plain4 = client.call("connect", dst=VIP4, port=9000, count=1)
    server.call("accept", id=lst6["id"], count=3)
    code, doc, err = kill(topo, engine, "--dst", f"{VIP4}:9000")
    assert code == 0, err
    got = {s["cookie"]: s for s in doc["sockets"]}
    assert set(got) == {mapped[0]["cookie"], plain4[0]["cookie"]}
    assert got[mapped[0]["cookie"]]["family"] == 6 and got[mapped[0]["cookie"]]["dst"] == f"::ffff:{VIP4}"
    assert got[plain4[0]["cookie"]]["family"] == 4 and got[plain4[0]["cookie"]]["dst"] == VIP4
    assert client.status([v6[0]["id"]])[v6[0]["id"]] == 0
    code, doc, err = kill(topo, engine, "--dst", f"[{VIP6}]:9000", "-6")
    assert code == 0 and [s["cookie"] for s in doc["sockets"]] == [v6[0]["cookie"]]
    assert client.status([v6[0]["id"]])[v6[0]["id"]] == ABORTED


def test_syn_sent(topo, engine):
    be = topo.with_backend()
    ns = topo.client(0)
    client = topo.holder(ns)
    # the backend swallows SYNs to this address: the client stays in SYN-SENT
    sh("ip", "-n", be, "route", "add", "blackhole", "10.9.9.9/32")
    sh("ip", "-n", ns, "route", "add", "10.9.9.9/32", "via", "10.1.0.1")
    conns = client.call("connect", dst="10.9.9.9", port=7000, count=1, nonblock_ok=True)
    code, doc, err = kill(topo, engine, "--dst", "10.9.9.9")
    assert code == 0, err
    assert doc["sockets"][0]["state"] == "syn-sent"
    assert client.status([conns[0]["id"]])[conns[0]["id"]] == ABORTED


@pytest.mark.parametrize("state", ["time-wait"])
def test_time_wait_only_when_asked(topo, engine, state):
    server, client, lst, vip = pair(topo)
    conns = client.call("connect", dst=vip, port=8000, count=2)
    accepted = server.call("accept", id=lst["id"], count=2)
    client.call("close", ids=[c["id"] for c in conns])     # active close: client in FIN_WAIT2
    server.call("close", ids=[a["id"] for a in accepted])  # peer closes too: client in TIME_WAIT
    for _ in range(100):      # until ss sees both in TIME-WAIT
        out = sh("ip", "netns", "exec", client.netns, "ss", "-Htan", "state", "time-wait").stdout
        if len(out.splitlines()) == 2:
            break
        time.sleep(0.05)
    code, doc, err = sockterm_json("--backend", engine, "match", *scoped(topo, "--dst", f"{vip}:8000"))
    assert code == 1
    code, doc, err = kill(topo, engine, "--dst", f"{vip}:8000", "--state", state)
    assert code == 0, err
    assert {s["state"] for s in doc["sockets"]} == {"time-wait"}
    assert len(doc["sockets"]) == 2 and all(s["result"] == "killed" for s in doc["sockets"])
    code, doc, err = sockterm_json("--backend", engine, "list",
                                   *scoped(topo, "--dst", f"{vip}:8000", "--state", state))
    assert code == 1


def test_kill_pinned_to_confirmed_cookies(topo, engine):
    """What a prompt or --max counted is all a kill may touch: a matching socket
    that appears afterwards is not part of what the operator agreed to."""
    from rel_util import run_core
    from sockterm import core, states
    from sockterm.filter import build_filter
    server, client, lst, vip = pair(topo)
    conns = client.call("connect", dst=vip, port=8000, count=3)
    server.call("accept", id=lst["id"], count=3)
    flt = build_filter(dst=[f"{vip}:8000"], netns=topo.namespaces, default_states=states.DEFAULT_KILL)
    options = core.Options(backend=engine)
    plan = core.plan(flt, core.Report(), options)
    assert {s.cookie for s in plan.sockets} == {c["cookie"] for c in conns}
    plan.sockets = [s for s in plan.sockets if s.cookie == conns[1]["cookie"]]
    killed, _ = run_core("kill", flt, engine, processes=True, target=plan)
    assert [s.cookie for s in killed] == [conns[1]["cookie"]]
    assert client.status([c["id"] for c in conns]) == {conns[0]["id"]: 0, conns[1]["id"]: ABORTED,
                                                        conns[2]["id"]: 0}


def test_max_refuses_and_kills_nothing(topo, engine, tmp_path):
    server, client, lst, vip = pair(topo)
    conns = client.call("connect", dst=vip, port=8000, count=3)
    server.call("accept", id=lst["id"], count=3)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as log:
        # the refusal is audited: a host without a syslog socket would add a warning line
        log.bind(str(tmp_path / "log"))
        code, out, err = sockterm("--backend", engine, "kill", "--yes", "--max", "2",
                                  *scoped(topo, "--dst", f"{vip}:8000"),
                                  env={"SOCKTERM_SYSLOG_SOCKET": str(tmp_path / "log")})
    assert code == 3 and "--max 2" in err and len(err.strip().splitlines()) == 1
    assert set(client.status([c["id"] for c in conns]).values()) == {0}
    code, doc, err = kill(topo, engine, "--max", "3", "--dst", f"{vip}:8000")
    assert code == 0 and len(doc["sockets"]) == 3
