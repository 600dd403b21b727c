"""The two engines must agree: random filters over a random socket population
in several namespaces give identical `match` (and `list`) outputs on bpf and
diag. Seeded: SOCKTERM_SEED reproduces a run, SOCKTERM_LONG=1 tries more."""

import os
import random

import pytest
from conftest import VIP4, VIP6
from node_util import Cgroups

from sockterm import core, states
from sockterm.filter import build_filter

SEED = int(os.environ.get("SOCKTERM_SEED", "20261126"))
FILTERS = 400 if os.environ.get("SOCKTERM_LONG") else 100


def populate(topo, rng, cg):
    """Client 0 runs in cgroup st-TAG/a, client 1 in st-TAG/b with its sockets
    owned by nobody, client 2 as the backend does: --uid and --cgroup have
    something to tell apart."""
    be = topo.with_backend()
    server = topo.holder(be)
    ports = [80, 443, 5353, 8080]
    listeners = {}
    for port in ports:
        listeners[(4, port)] = server.call("listen", addr=VIP4, port=port)["id"]
        listeners[(6, port)] = server.call("listen", addr=VIP6, port=port)["id"]
        server.call("listen", proto="udp", addr="::", port=port, v6only=False)
    clients = []
    for i in range(3):
        h = topo.holder(topo.client(i))
        clients.append(h)
        if i < 2:
            cg.move(h.pid, f"st-{topo.tag}/{'ab'[i]}")
        if i == 1:
            h.call("owner", uid=65534)
        for _ in range(rng.randint(6, 14)):
            port = rng.choice(ports)
            kind = rng.choice(["tcp4", "tcp6", "mapped", "udp4", "udp6"])
            dst = {"tcp4": VIP4, "tcp6": VIP6, "mapped": f"::ffff:{VIP4}", "udp4": VIP4,
                   "udp6": VIP6}[kind]
            proto = "udp" if kind.startswith("udp") else "tcp"
            h.call("connect", proto=proto, dst=dst, port=port, count=1)
            if proto == "tcp":
                fam = 6 if kind == "tcp6" else 4
                server.call("accept", id=listeners[(fam, port)], count=1)
        h.call("listen", addr="::", port=rng.choice([22, 8080]), v6only=False)
        h.call("listen", proto="udp", addr="127.0.0.1", port=rng.choice([53, 5353]))
        h.call("connect", proto="udp", dst="127.0.0.1", port=9, count=1)
    return [be] + [h.netns for h in clients]


def random_filter(rng, namespaces, tag):
    kw = {}
    addrs = [VIP4, VIP6, "10.0.0.0/8", "10.1.1.0/24", "fd00::/16", "fd01::/16", "127.0.0.1",
             "0.0.0.0/0", "::/0", f"::ffff:{VIP4}", "10.1.0.2", "fd01:2::2/128"]
    ports = ["80", "443", "5353", "8080", "22", "53", "1-1024", "1025-65535", "80-443"]

    def addr_rule():
        addr = rng.choice(addrs)
        if rng.random() < 0.4:
            port = rng.choice(ports)
            return f"[{addr.split('/')[0]}]" + (f"/{addr.split('/')[1]}" if "/" in addr else "") + f":{port}" \
                if ":" in addr else f"{addr}:{port}"
        return addr

    if rng.random() < 0.5:
        kw["dst"] = [addr_rule() for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.3:
        kw["src"] = [addr_rule() for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.4:
        kw["dport"] = [rng.choice(ports) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.3:
        kw["sport"] = [rng.choice(ports) for _ in range(rng.randint(1, 2))]
    if rng.random() < 0.3:
        kw["proto"] = [rng.choice(["tcp", "udp"])]
    if rng.random() < 0.2:
        kw[rng.choice(["ipv4", "ipv6"])] = True
    if rng.random() < 0.5:
        kw["state"] = rng.sample(states.state_names(), rng.randint(1, 3))
    if rng.random() < 0.25:
        kw["uid"] = rng.sample(["0", "65534", "nobody", "root", "1000"], rng.randint(1, 2))
    if rng.random() < 0.25:
        kw["cgroup"] = rng.sample([f"st-{tag}", f"/st-{tag}/a", f"st-{tag}/b", "/"], rng.randint(1, 2))
    kw["netns"] = namespaces
    return kw


def view(engine, command, kw):
    defaults = states.ALL if command == "list" else states.DEFAULT_KILL
    flt = build_filter(**kw, default_states=defaults)
    report = core.Report()
    run = core.kill if command == "kill" else core.scan
    socks = run(flt, report, core.Options(backend=engine, processes=False))
    return sorted((s.netns, s.cookie, s.proto, s.family, s.state_name(), s.src_text(), s.sport,
                   s.dst_text(), s.dport, s.ino, s.uid) for s in socks)


@pytest.fixture
def cg(topo):
    """Torn down before the topology: its holders are moved out, then the cgroups removed."""
    made = Cgroups()
    yield made
    made.cleanup()


def test_engines_agree_on_random_filters(topo, cg):
    rng = random.Random(SEED)
    namespaces = populate(topo, rng, cg)
    everything = view("bpf", "list", {"netns": namespaces})
    assert len(everything) > 60
    assert everything == view("diag", "list", {"netns": namespaces})
    nonempty = owners = 0
    for i in range(FILTERS):
        kw = random_filter(rng, namespaces, topo.tag)
        command = rng.choice(["match", "list"])
        bpf, diag = view("bpf", command, kw), view("diag", command, kw)
        assert bpf == diag, f"seed {SEED} filter #{i} {command} {kw}"
        nonempty += bool(bpf)
        owners += bool(bpf) and ("uid" in kw or "cgroup" in kw)
    assert nonempty > FILTERS // 4, "the random filters matched too little to prove anything"
    assert owners >= 5, "too few --uid/--cgroup filters selected anything"
