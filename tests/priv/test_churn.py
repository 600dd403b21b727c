"""Churn: kills while connections open and close continuously.

A churn process in each client namespace connects and closes in a loop
(thousands of connections a second in all): to a loopback server and to
VIP:8081 (outside the filter) and to VIP:8082 (inside it). Meanwhile
`sockterm kill --dport 80,8082` runs again and again; before each run
holders open long-lived connections to VIP:80 (named) and VIP:81 (spared).

Each run: exits 0 without a crash; every long-lived named socket is reported
killed and its application sees ECONNABORTED; every reported-killed socket a
holder owns really saw ECONNABORTED; nothing outside the filter dies: every
socket ss listed before the kill that is not churn is still listed after it
unless it was killed or is the reset peer of one, spared holders see nothing,
and the churn to unnamed targets sees no error at all, on either end (no
abort, reset, refusal: every process reports, silence is a failure); no
socket is reported twice; `gone` only for churn sockets that closed first.

SOCKTERM_LONG=1 runs five times as many kill rounds.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from rel_util import VIP4, RelTopology, cli, long_mode, ns_inode, peers_of, ss_view

ROUNDS = 30 if long_mode() else 6
CLIENTS = 3
DOOMED, SPARED = 20, 10          # per client namespace and round
HERE = os.path.dirname(os.path.abspath(__file__))
CHURN = os.path.join(HERE, "rel_churn.py")
FIGURES = {"rounds": 0, "killed": 0, "churn_connections": 0, "long_lived_checked": 0}
CHURN_PORTS = {8081, 8082, 9100}
# ss's view without the churn (thousands of sockets a second, and their time-wait)
NOT_CHURN = ["state", "all", "exclude", "time-wait",
             "! ( " + " or ".join(f"sport = :{p} or dport = :{p}" for p in sorted(CHURN_PORTS)) + " )"]


def long_lived(view: dict) -> dict:
    """The sockets that are not churn: listeners, the holders' connections, and
    what the kills leave (time-wait and request sockets come and go)."""
    return {c: s for c, s in view.items()
            if (s.state == 10 or not ({s.sport, s.dport} & CHURN_PORTS)) and s.state not in (3, 6)
            and not (s.ino == 0 and s.state == 5)}


def start(ns, *args):
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, CHURN, *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def stop(proc):
    try:
        proc.stdin.close()
        out = proc.stdout.read()
        proc.wait(timeout=20)
        return out
    except Exception:
        proc.kill()
        proc.wait()
        raise


@pytest.mark.parametrize("engine", ["bpf", "diag"])
def test_kill_under_churn(engine):
    procs = []
    with RelTopology() as topo:
        try:
            be = topo.with_backend()
            for knob in ("net.core.somaxconn=8192", "net.ipv4.tcp_max_syn_backlog=8192"):
                subprocess.run(["ip", "netns", "exec", be, "sysctl", "-qw", knob], check=True)
            server = topo.holder(be)
            lst80 = server.call("listen", addr=VIP4, port=80, backlog=8192)
            server.call("listen", addr=VIP4, port=81, backlog=8192)
            procs.append(start(be, "serve", VIP4, "8081", "8082"))
            clients = []
            for i in range(CLIENTS):
                ns = topo.client(i)
                clients.append((ns, topo.holder(ns)))
                subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw",
                                "net.ipv4.ip_local_port_range=10000 65000"], check=True)
                procs.append(start(ns, "serve", "127.0.0.1", "9100"))
                procs.append(start(ns, "churn", "127.0.0.1:9100", f"{VIP4}:8081", f"{VIP4}:8082"))
            ours = {ns_inode(n) for n in topo.namespaces}
            netns_args = [x for n in topo.namespaces for x in ("--netns", n)]
            time.sleep(0.5)
            for rnd in range(ROUNDS):
                doomed, spared = {}, {}
                for ns, h in clients:
                    doomed[h] = h.call("connect", dst=VIP4, port=80, count=DOOMED)
                    spared[h] = h.call("connect", dst=VIP4, port=81, count=SPARED)
                before = long_lived(ss_view(topo.namespaces, NOT_CHURN))
                code, out, err = cli("--backend", engine, "kill", "--yes", "--dport", "80,8082",
                                     *netns_args, "--no-processes", "-o", "json")
                after = ss_view(topo.namespaces, NOT_CHURN)
                assert code == 0, f"round {rnd}: exit {code}: {err}"
                assert "Traceback" not in err
                doc = json.loads(out)
                socks = doc["sockets"]
                cookies = [s["cookie"] for s in socks]
                assert len(cookies) == len(set(cookies)), "a socket was reported twice"
                assert all(s["netns"] in ours and s["dport"] in (80, 8082) for s in socks)
                results = {s["cookie"]: s for s in socks}
                assert doc["summary"]["killed"] == sum(s["result"] == "killed" for s in socks)
                assert doc["summary"]["failed"] == 0, [s for s in socks if s["result"] not in
                                                       ("killed", "gone")]
                for h, conns in doomed.items():
                    for c in conns:
                        assert results.get(c["cookie"], {}).get("result") == "killed", \
                            f"round {rnd}: long-lived named socket not killed: {c}"
                    status = h.status([c["id"] for c in conns])
                    assert set(status.values()) == {errno.ECONNABORTED}
                    h.call("close", ids=[c["id"] for c in conns])
                for h, conns in spared.items():
                    assert set(h.status([c["id"] for c in conns]).values()) == {0}
                    h.call("close", ids=[c["id"] for c in conns])
                gone = [s for s in socks if s["result"] == "gone"]
                assert all(s["dport"] == 8082 for s in gone), gone
                killed = {c for c, s in results.items() if s["result"] == "killed"}
                vanished = set(before) - set(after)
                harmed = vanished - killed - peers_of(before, killed & set(before))
                assert not harmed, f"round {rnd}: died without being named: " + \
                    str([before[c] for c in harmed][:4])
                FIGURES["long_lived_checked"] += len(before)
                FIGURES["killed"] += doc["summary"]["killed"]
                FIGURES["rounds"] += 1
            # the backend's never-accepted ends: the kills reset them (their client died)
            del lst80
        finally:
            # churn first, then the servers it talks to: a server gone first refuses
            outputs = [stop(p) for p in reversed(procs)]
        for out in outputs:
            assert out.strip(), "a churn process reported nothing"
            doc = json.loads(out)
            FIGURES["churn_connections"] += sum(doc["counts"].values())
            for target, errs in doc["errors"].items():
                if not target.endswith("8082"):
                    harm = {e: n for e, n in errs.items() if e != "timeout"}
                    assert not harm, f"churn outside the filter hurt: {target} {errs}"
                    FIGURES["timeouts"] = FIGURES.get("timeouts", 0) + errs.get("timeout", 0)
            assert all(doc["counts"].values()), doc
    print(f"\nchurn[{engine}]: {FIGURES}")
