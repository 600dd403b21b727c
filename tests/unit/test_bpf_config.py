"""compile_config: the Filter as the BPF program reads it (struct st_config).

The program's decision (wanted(), the uid and the protocol checks in
bpf/sockterm.bpf.c) is mirrored here over the compiled struct, word for word as the kernel's
little-endian loads see the record's bytes, and must agree with
Filter.matches for random filters and sockets; the flags are checked one by one.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import random
import struct

import pytest

from sockterm import model, states
from sockterm.engine import Scope
from sockterm.engine.bpf import config as bpf_config, record
from sockterm.filter import build_filter


def words(addr16: bytes) -> tuple:
    return struct.unpack("<4I", addr16)       # the program's (const __u32 *) view of the record


def _addr_rules(rules, n, addr16, port) -> bool:
    if n == 0:
        return True
    a = words(addr16)
    for r in rules[:n]:
        if r.port_lo <= port <= r.port_hi and all((a[w] ^ r.addr[w]) & r.mask[w] == 0
                                                  for w in range(4)):
            return True
    return False


def _port_rules(rules, n, port) -> bool:
    return n == 0 or any(r.lo <= port <= r.hi for r in rules[:n])


def bpf_wants(cfg, sock) -> bool:
    """bpf/sockterm.bpf.c and iter_sockets.c: the protocol check, wanted(), the uid check."""
    proto_flag = record.CFG_TCP if sock.proto == "tcp" else record.CFG_UDP
    if not cfg.flags & proto_flag:
        return False
    if cfg.n_uids and sock.uid not in list(cfg.uids[:cfg.n_uids]):
        return False
    if not cfg.states & (1 << sock.state):
        return False
    if not cfg.families & (1 if sock.family == 4 else 2):
        return False
    return (_addr_rules(cfg.dst, cfg.n_dst, sock.dst, sock.dport)
            and _addr_rules(cfg.src, cfg.n_src, sock.src, sock.sport)
            and _port_rules(cfg.dport, cfg.n_dport, sock.dport)
            and _port_rules(cfg.sport, cfg.n_sport, sock.sport))


ADDRS = ["10.0.0.5", "10.0.0.6", "10.1.2.3", "127.0.0.1", "192.168.255.254", "fd00::5",
         "fd00::1:5", "fd01::2", "::1", "2001:db8::ff", "::ffff:10.0.0.5", "fe80::1"]
PORTS = [0, 1, 22, 53, 79, 80, 81, 443, 1024, 8080, 40000, 65534, 65535]
UIDS = [0, 1, 1000, 65534, 2**32 - 2]


def random_sock(rng):
    def addr16(text):
        ip = ipaddress.ip_address(text)
        return model.v4_mapped(ip.packed) if ip.version == 4 else ip.packed
    v4 = rng.random() < 0.5
    pool = [a for a in ADDRS if (":" not in a) == v4]
    return model.Sock(netns=1, family=4 if v4 else 6, proto=rng.choice(["tcp", "udp"]),
                      state=rng.choice(sorted(states.ALL)), src=addr16(rng.choice(pool)),
                      sport=rng.choice(PORTS), dst=addr16(rng.choice(pool)),
                      dport=rng.choice(PORTS), cookie=1, uid=rng.choice(UIDS))


def random_rule(rng):
    addr = rng.choice(ADDRS)
    v6 = ":" in addr
    prefix = rng.choice([None, 0, 1, 8, 16, 24, 31, 32] if not v6 else [None, 0, 8, 64, 96, 112, 127, 128])
    body = addr if prefix is None else f"{addr}/{prefix}"
    if rng.random() < 0.5:
        return body
    lo = rng.choice(PORTS)
    hi = rng.choice([p for p in PORTS if p >= lo])
    ports = str(lo) if lo == hi else f"{lo}-{hi}"
    return f"[{body}]:{ports}" if v6 else f"{body}:{ports}"


def random_ports(rng):
    lo = rng.choice(PORTS)
    hi = rng.choice([p for p in PORTS if p >= lo])
    return str(lo) if rng.random() < 0.5 else f"{lo}-{hi}"


def random_filter(rng):
    kw = {}
    for key, make, most in (("dst", random_rule, 16), ("src", random_rule, 16),
                            ("dport", random_ports, 16), ("sport", random_ports, 16)):
        if rng.random() < 0.5:
            kw[key] = [make(rng) for _ in range(rng.choice([1, 1, 2, 3, most]))]
    if rng.random() < 0.3:
        kw["proto"] = [rng.choice(["tcp", "udp"])]
    if rng.random() < 0.3:
        kw[rng.choice(["ipv4", "ipv6"])] = True
    if rng.random() < 0.6:
        kw["state"] = rng.sample(states.state_names(), rng.randint(1, 3))
    if rng.random() < 0.3:
        kw["uid"] = [str(u) for u in rng.sample(UIDS, rng.randint(1, 3))]
    return build_filter(**kw, default_states=rng.choice([states.ALL, states.DEFAULT_KILL]))


@pytest.mark.parametrize("seed", range(8))
def test_program_decides_as_the_filter(seed):
    rng = random.Random(seed)
    agreed = matched = 0
    for _ in range(150):
        flt = random_filter(rng)
        cfg = bpf_config.compile_config(flt, Scope(), kill=rng.random() < 0.5)
        for _ in range(40):
            sock = random_sock(rng)
            want = flt.matches(sock)
            assert bpf_wants(cfg, sock) == want, (flt.describe(), sock)
            agreed += 1
            matched += want
    assert matched > agreed // 20          # the filters select something, often enough


def test_counts_and_rules_laid_out_in_order():
    flt = build_filter(dst=["10.0.0.5:80", "[fd00::]/64:1-2"], src=["::1", "10.0.0.0/8", "1.2.3.4"],
                       dport=["443,1000-2000"], sport=["1", "2", "3", "4"])
    cfg = bpf_config.compile_config(flt, Scope(), kill=False)
    assert (cfg.n_dst, cfg.n_src, cfg.n_dport, cfg.n_sport) == (2, 3, 2, 4)
    assert [(r.port_lo, r.port_hi) for r in cfg.dst[:2]] == [(80, 80), (1, 2)]
    assert [(r.lo, r.hi) for r in cfg.dport[:2]] == [(443, 443), (1000, 2000)]
    assert [(r.lo, r.hi) for r in cfg.sport[:4]] == [(1, 1), (2, 2), (3, 3), (4, 4)]
    rule = cfg.dst[1]
    assert struct.pack("<4I", *rule.addr) == ipaddress.ip_address("fd00::").packed
    assert struct.pack("<4I", *rule.mask) == b"\xff" * 8 + b"\0" * 8
    src = cfg.src[1]
    assert struct.pack("<4I", *src.addr) == model.v4_mapped(bytes([10, 0, 0, 0]))
    assert struct.pack("<4I", *src.mask) == b"\xff" * 13 + b"\0" * 3
    assert (src.port_lo, src.port_hi) == (0, 65535)


def test_sixteen_rules_of_each_kind_fit():
    flt = build_filter(dst=[f"10.0.0.{i}" for i in range(16)], src=[f"::{i + 1}" for i in range(16)],
                       dport=[str(i) for i in range(16)], sport=[str(1000 + i) for i in range(16)])
    cfg = bpf_config.compile_config(flt, Scope(), kill=False)
    assert (cfg.n_dst, cfg.n_src, cfg.n_dport, cfg.n_sport) == (16, 16, 16, 16)
    assert struct.pack("<4I", *cfg.dst[15].addr) == model.v4_mapped(bytes([10, 0, 0, 15]))
    assert (cfg.sport[15].lo, cfg.sport[15].hi) == (1015, 1015)


@pytest.mark.parametrize("kw,families", [({}, 3), ({"ipv4": True}, 1), ({"ipv6": True}, 2),
                                         ({"ipv4": True, "ipv6": True}, 3)])
def test_families(kw, families):
    assert bpf_config.compile_config(build_filter(**kw), Scope(), kill=False).families == families


def test_states_are_one_bit_each():
    for name in states.state_names():
        flt = build_filter(state=[name])
        assert bpf_config.compile_config(flt, Scope(), kill=False).states == \
            sum(1 << s for s in states.parse_state(name))
    assert bpf_config.compile_config(build_filter(state=["established"]), Scope(), kill=False).states == 0b10


@pytest.mark.parametrize("kill", [False, True])
@pytest.mark.parametrize("proto", [(), ("tcp",), ("udp",), ("tcp", "udp")])
@pytest.mark.parametrize("inodes", [None, frozenset(), frozenset({7})])
@pytest.mark.parametrize("cookies", [None, frozenset({9})])
@pytest.mark.parametrize("cgroups", [None, frozenset(), frozenset({3})])
@pytest.mark.parametrize("owned", [None, frozenset({5})])
def test_flags(kill, proto, inodes, cookies, cgroups, owned):
    scope = Scope(inodes=inodes, cookies=cookies, cgroup_ids=cgroups, owned_netns=owned)
    flags = bpf_config.compile_config(build_filter(proto=list(proto)), scope, kill=kill).flags
    assert flags == ((record.CFG_KILL if kill else 0)
                     | (record.CFG_INODES if inodes is not None else 0)
                     | (record.CFG_TCP if "tcp" in proto or not proto else 0)
                     | (record.CFG_UDP if "udp" in proto or not proto else 0)
                     | (record.CFG_COOKIES if cookies is not None else 0)
                     | (record.CFG_CGROUPS if cgroups is not None else 0)
                     | (record.CFG_SCOPE if owned is not None else 0))


def test_uids_in_order():
    cfg = bpf_config.compile_config(build_filter(uid=["0", "65534", "1000"]), Scope(), kill=False)
    assert (cfg.n_uids, list(cfg.uids[:3])) == (3, [0, 65534, 1000])
    assert bpf_config.compile_config(build_filter(), Scope(), kill=False).n_uids == 0


def test_flag_values_mirror_the_header():
    import os
    import re
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    header = open(os.path.join(root, "bpf", "sockterm.h")).read()
    for name in ("KILL", "INODES", "TCP", "UDP", "COOKIES", "CGROUPS", "SCOPE"):
        value = int(re.search(rf"#define ST_CFG_{name}\s+(0x[0-9a-f]+)", header)[1], 16)
        assert getattr(record, f"CFG_{name}") == value, name
