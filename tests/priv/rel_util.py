"""Helpers for the reliability tests (test_oracle, test_churn, test_faults,
test_privileges, test_hygiene): an independent view of the sockets of a
namespace (ss(8), parsed here), an independent evaluator of the documented
filter semantics, random filters, random socket populations, and snapshots of
the kernel's BPF program/link lists.

The oracle imports nothing of sockterm (no sockterm.filter, no
sockterm.states): it must not share code with what it checks. Only
run_core(), which runs sockterm's pipeline itself, imports sockterm.core.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import pwd
import random
import subprocess
import sys
import time
from dataclasses import dataclass, field

import confine
from conftest import Topology

# Neither conftest's 10.0.0.5 / fd00::5 nor tests/bench's 10.200.0.5: those
# suites run unconfined kills (`kill --dst 10.0.0.5:80`, `ss -K dst 10.200.0.5`
# in every namespace), which would hit these populations if run in parallel.
VIP4 = "10.213.0.5"
VIP6 = "fd2b::5"
MAPPED_VIP = f"::ffff:{VIP4}"
BPF_PROG_NAMES = {"st_tcp", "st_udp", "st_tcp_scoped", "st_udp_scoped", "st_held",
                  "st_held_scoped",
                  # kill --watch (watch.bpf.o), as the kernel keeps them: 15 characters at most
                  "st_watch_state", "st_watch_syn_ag", "st_watch_udp4", "st_watch_udp6",
                  "st_watch_udp_se", "st_watch_probe"}
# the object's maps as the kernel names them (libbpf prefixes internal maps
# with the object's name, cut to 15 characters)
BPF_MAP_NAMES = {"st_inodes", "st_cookies", "st_kill_errors", ".rodata.cfg", "st_ns",
                 "st_shared", "st_files"}

# ss(8)'s state column -> the kernel's TCP_* number (request sockets show as SYN-RECV)
SS_STATES = {"ESTAB": 1, "SYN-SENT": 2, "SYN-RECV": 3, "FIN-WAIT-1": 4, "FIN-WAIT-2": 5,
             "TIME-WAIT": 6, "UNCONN": 7, "CLOSE-WAIT": 8, "LAST-ACK": 9, "LISTEN": 10,
             "CLOSING": 11}
# README: --state takes ss(8)'s names and groups
STATE_NAMES = {"established": {1}, "syn-sent": {2}, "syn-recv": {3}, "fin-wait-1": {4},
               "fin-wait-2": {5}, "time-wait": {6}, "closed": {7}, "close-wait": {8},
               "last-ack": {9}, "listening": {10}, "closing": {11}}
ALL_STATES = set(range(1, 12))
STATE_GROUPS = {"all": ALL_STATES, "connected": ALL_STATES - {10, 7},
                "synchronized": ALL_STATES - {10, 7, 2}, "bucket": {3, 6},
                "big": ALL_STATES - {3, 6}, "unconnected": {7}}
# README "Safe defaults": connected sockets minus time-wait
DEFAULT_MATCH_STATES = ALL_STATES - {10, 7, 6}


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


def long_mode() -> bool:
    return os.environ.get("SOCKTERM_LONG", "") not in ("", "0")


# -- the independent view -------------------------------------------------------------

def _addr(text: str, family: int) -> int:
    """ss's address column -> 128-bit int in IPv6 form (IPv4 as ::ffff:a.b.c.d)."""
    text = text.split("%", 1)[0]
    if text.startswith("["):
        text = text[1:-1]
    if text in ("*", "0.0.0.0", "::"):
        return 0xFFFF00000000 if family == 4 else 0
    ip = ipaddress.ip_address(text)
    if ip.version == 4:
        return 0xFFFF00000000 | int(ip)
    return int(ip)


def _endpoint(text: str, family: int) -> tuple[int, int]:
    host, _, port = text.rpartition(":")
    return _addr(host, family), 0 if port == "*" else int(port)


@dataclass(frozen=True)
class SsSock:
    netns: int          # namespace inode
    proto: str
    family: int
    state: int          # kernel TCP_* number
    src: int
    sport: int
    dst: int
    dport: int
    cookie: int
    ino: int
    pids: frozenset = frozenset()      # (pid, comm)
    uid: int = 0                       # ss prints uid: only when it is not 0
    cgroup: str = ""                   # cgroup v2 path; "" for a socket with none (time-wait)

    def ends(self):
        return (self.proto, self.src, self.sport, self.dst, self.dport)


def parse_ss(text: str, family: int, netns: int) -> list[SsSock]:
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 6:
            continue
        proto, state, local, peer = words[0], words[1], words[4], words[5]
        src, sport = _endpoint(local, family)
        dst, dport = _endpoint(peer, family)
        cookie, ino, pids, uid, cgroup = None, 0, set(), 0, ""
        for word in words[6:]:
            if word.startswith("sk:"):
                cookie = int(word[3:], 16)
            elif word.startswith("ino:"):
                ino = int(word[4:])
            elif word.startswith("uid:"):
                uid = int(word[4:])
            elif word.startswith("cgroup:") and not cgroup:
                cgroup = word[7:]
            elif word.startswith("users:"):
                for part in word[len("users:(("):].split("),("):
                    items = part.rstrip(")").split(",")
                    comm = items[0].strip('"')
                    pid = int(next(i for i in items if i.startswith("pid="))[4:])
                    pids.add((pid, comm))
        if cookie is None or proto not in ("tcp", "udp"):
            continue
        out.append(SsSock(netns, proto, family, SS_STATES[state], src, sport, dst, dport,
                          cookie, ino, frozenset(pids), uid, cgroup))
    return out


def ns_inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def ss_view(names, expr=()) -> dict[int, SsSock]:
    """cookie -> SsSock for every TCP/UDP socket `ss` sees in the ip-netns `names`
    (without -p: which process holds what is read from procfs, when asked);
    `expr`: ss(8) state and filter words that narrow it."""
    found = {}
    for name in names:
        ino = ns_inode(name)
        for fam in (4, 6):
            # nsenter, not ip netns exec: that remounts /sys, and ss finds cgroup paths there
            text = sh("nsenter", f"--net=/run/netns/{name}", "ss", "-tuanHe", "--cgroup",
                      f"-{fam}", *expr).stdout
            for s in parse_ss(text, fam, ino):
                found[s.cookie] = s
    return found


# -- filters: generated as structure, rendered as command-line text --------------------

@dataclass
class AddrSpec:
    net: ipaddress.IPv6Network     # IPv6 form; IPv4 targets already mapped
    lo: int
    hi: int
    text: str

    def matches(self, addr: int, port: int) -> bool:
        return (addr & int(self.net.netmask)) == int(self.net.network_address) and \
            self.lo <= port <= self.hi


@dataclass
class Spec:
    """One filter as the README documents it: options AND, repeats OR."""

    dst: list = field(default_factory=list)
    src: list = field(default_factory=list)
    dport: list = field(default_factory=list)     # (lo, hi)
    sport: list = field(default_factory=list)
    protos: list = field(default_factory=list)
    families: list = field(default_factory=list)
    states: list = field(default_factory=list)    # names as given on the command line
    netns: list = field(default_factory=list)     # ip netns names
    pids: list = field(default_factory=list)
    comms: list = field(default_factory=list)
    uids: list = field(default_factory=list)      # numbers or user names
    cgroups: list = field(default_factory=list)   # cgroup v2 paths, /-rooted

    def args(self) -> list[str]:
        out = []
        for r in self.dst:
            out += ["--dst", r.text]
        for r in self.src:
            out += ["--src", r.text]
        for opt, ranges in (("--dport", self.dport), ("--sport", self.sport)):
            if ranges:
                texts = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges]
                # repeats and comma lists mean the same: use both forms
                out += [opt, ",".join(texts[:2])] + [x for t in texts[2:] for x in (opt, t)]
        for p in self.protos:
            out += ["--proto", p]
        out += [f"-{f}" for f in self.families]
        for s in self.states:
            out += ["--state", s]
        for n in self.netns:
            out += ["--netns", n]
        for p in self.pids:
            out += ["--pid", str(p)]
        for c in self.comms:
            out += ["--comm", c]
        for u in self.uids:
            out += ["--uid", str(u)]
        for c in self.cgroups:
            out += ["--cgroup", c]
        return out

    def kwargs(self) -> dict:
        """The same filter as sockterm.filter.build_filter keyword arguments."""
        return dict(dst=[r.text for r in self.dst], src=[r.text for r in self.src],
                    dport=[str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.dport],
                    sport=[str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.sport],
                    proto=list(self.protos), ipv4=4 in self.families, ipv6=6 in self.families,
                    state=list(self.states), netns=list(self.netns),
                    pid=[str(p) for p in self.pids], comm=list(self.comms),
                    uid=[str(u) for u in self.uids], cgroup=list(self.cgroups))

    def state_set(self, default) -> set:
        if not self.states:
            return set(default)
        out = set()
        for name in self.states:
            out |= STATE_GROUPS.get(name) or STATE_NAMES[name]
        return out

    def targeted(self) -> bool:
        return bool(self.dst or self.src or self.dport or self.sport or self.netns
                    or self.pids or self.comms or self.uids or self.cgroups)


def held_inodes(pids, comms) -> set[int]:
    """Socket inodes held by these pids and by processes named comms (procfs, read here)."""
    wanted = set(pids)
    if comms:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/comm") as f:
                        if f.read().rstrip("\n") in comms:
                            wanted.add(int(entry))
                except OSError:
                    pass
    inodes = set()
    for pid in wanted:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def oracle(spec: Spec, view: dict, default_states, ns_inodes: dict) -> set[int]:
    """Cookies of the sockets in `view` that `spec` selects, by the README's rules."""
    states = spec.state_set(default_states)
    protos = set(spec.protos) or {"tcp", "udp"}
    fams = set(spec.families) or {4, 6}
    netns = {ns_inodes[n] for n in spec.netns} if spec.netns else None
    inodes = held_inodes(spec.pids, spec.comms) if (spec.pids or spec.comms) else None
    uids = {int(u) if str(u).isdigit() else pwd.getpwnam(u).pw_uid for u in spec.uids}
    out = set()
    for s in view.values():
        if s.proto not in protos or s.family not in fams or s.state not in states:
            continue
        if netns is not None and s.netns not in netns:
            continue
        if spec.dst and not any(r.matches(s.dst, s.dport) for r in spec.dst):
            continue
        if spec.src and not any(r.matches(s.src, s.sport) for r in spec.src):
            continue
        if spec.dport and not any(lo <= s.dport <= hi for lo, hi in spec.dport):
            continue
        if spec.sport and not any(lo <= s.sport <= hi for lo, hi in spec.sport):
            continue
        if inodes is not None and (not s.ino or s.ino not in inodes):
            continue
        if uids and s.uid not in uids:
            continue
        if spec.cgroups and not any(_under(s.cgroup, c) for c in spec.cgroups):
            continue
        out.add(s.cookie)
    return out


def _under(path: str, top: str) -> bool:
    """README: --cgroup PATH is PATH or below it. A socket with no cgroup is in none."""
    if not path:
        return False
    top = "/" + top.strip("/")
    return top == "/" or path == top or path.startswith(top + "/")


def addr_spec(text_addr: str, prefix: int | None, ports: tuple | None, rng) -> AddrSpec:
    """An AddrSpec and one of its documented spellings."""
    ip = ipaddress.ip_address(text_addr)
    if ip.version == 4:
        plen = 32 if prefix is None else prefix
        v4net = ipaddress.ip_network(f"{ip}/{plen}", strict=False)
        net = ipaddress.IPv6Network(f"::ffff:{v4net.network_address}/{96 + plen}")
        body = text_addr if prefix is None else f"{text_addr}/{prefix}"
        text = body if ports is None else f"{body}:{_ports_text(ports)}"
    else:
        plen = 128 if prefix is None else prefix
        net = ipaddress.ip_network(f"{ip}/{plen}", strict=False)
        if ports is None:
            text = text_addr if prefix is None else f"{text_addr}/{prefix}"
            if rng.random() < 0.3:
                text = f"[{text_addr}]" + ("" if prefix is None else f"/{prefix}")
        elif prefix is None:
            text = f"[{text_addr}]:{_ports_text(ports)}"
        elif rng.random() < 0.5:
            text = f"[{text_addr}]/{prefix}:{_ports_text(ports)}"
        else:
            text = f"[{text_addr}/{prefix}]:{_ports_text(ports)}"
    lo, hi = ports if ports is not None else (0, 65535)
    return AddrSpec(net, lo, hi, text)


def _ports_text(ports) -> str:
    lo, hi = ports
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _int_to_text(value: int) -> str:
    if value >> 32 == 0xFFFF:
        return str(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    return str(ipaddress.IPv6Address(value))


class FilterGen:
    """Random filters biased toward what a population has, so they select something."""

    def __init__(self, rng: random.Random, view: dict, ns_names: list, pids: list,
                 uids=(), cgroups=(), comms=()):
        self.rng = rng
        self.ns_names = ns_names
        self.pids = pids
        self.comms = list(comms)        # --comm names worth trying
        self.uids = list(uids)          # --uid values worth trying (none: never)
        self.cgroups = list(cgroups)    # --cgroup paths worth trying
        addrs = set()
        ports = set()
        for s in view.values():
            addrs |= {s.src, s.dst}
            ports |= {s.sport, s.dport}
        self.addrs = sorted(addrs)
        self.ports = sorted(ports)
        self.view = sorted(view.values(), key=lambda s: s.cookie)

    def anchored(self) -> Spec:
        """A kill aimed at one real socket's address or port: it selects something."""
        rng = self.rng
        a = rng.choice(self.view)
        s = Spec(netns=rng.sample(self.ns_names, rng.randrange(1, len(self.ns_names) + 1)))
        pick = rng.randrange(5)
        if pick == 0:
            s.dst = [addr_spec(_int_to_text(a.dst), None, (a.dport, a.dport) if rng.random() < 0.5
                               else None, rng)]
        elif pick == 1:
            s.src = [addr_spec(_int_to_text(a.src), None, None, rng)]
        elif pick == 2:
            s.dport = [(a.dport, a.dport)]
        elif pick == 3:
            s.sport = [(a.sport, a.sport)]
        else:
            s.dst = [addr_spec(_int_to_text(a.dst), None, None, rng)]
            s.dport = [(a.dport, a.dport)]
        if rng.random() < 0.4:
            s.states = [rng.choice(list(STATE_NAMES) + list(STATE_GROUPS))]
        if rng.random() < 0.2:
            s.protos = [a.proto]
        return s

    def rare(self) -> Spec:
        """A kill aimed at sockets in one short-lived state (syn-sent, syn-recv,
        fin-wait-1, closing, last-ack), by that state's name or a group."""
        rng = self.rng
        state = rng.choice(sorted(RARE_STATES))
        name = RARE_STATES[state].lower()
        groups = [g for g, members in STATE_GROUPS.items() if state in members and g != "all"]
        s = Spec(netns=rng.sample(self.ns_names, rng.randrange(1, len(self.ns_names) + 1)),
                 states=[name] if rng.random() < 0.6 else [rng.choice(groups)])
        socks = [v for v in self.view if v.state == state]
        if socks and rng.random() < 0.7:
            a = rng.choice(socks)
            home = next(n for n in self.ns_names if ns_inode(n) == a.netns)
            s.netns = sorted(set(s.netns) | {home})
            s.sport = [(a.sport, a.sport)] if rng.random() < 0.5 else []
            s.dport = [(a.dport, a.dport)] if not s.sport else []
        return s

    def held(self, by_comm: bool) -> Spec:
        """A kill of what one holder process holds: by --comm or by --pid."""
        rng = self.rng
        i = rng.randrange(len(self.pids))
        s = Spec(netns=rng.sample(self.ns_names, rng.randrange(1, len(self.ns_names) + 1)))
        # holder i lives in namespace i (build_population: the backend, then the clients)
        s.netns = sorted(set(s.netns) | {self.ns_names[i]})
        if by_comm:
            s.comms = [self.comms[i]]
        else:
            s.pids = [self.pids[i]]
        if rng.random() < 0.5:
            s.dport = [self.port_range()]
        if rng.random() < 0.3:
            s.states = [rng.choice(list(STATE_NAMES) + list(STATE_GROUPS))]
        return s

    def port_range(self):
        rng = self.rng
        p = rng.choice(self.ports) if self.ports and rng.random() < 0.85 else rng.randrange(65536)
        roll = rng.random()
        if roll < 0.6:
            return (p, p)
        if roll < 0.8:
            return (max(0, p - rng.randrange(50)), min(65535, p + rng.randrange(50)))
        return (0, p) if rng.random() < 0.5 else (p, 65535)

    def addr(self, with_port: float = 0.4):
        rng = self.rng
        pick = rng.random()
        if pick < 0.7 and self.addrs:
            value = rng.choice(self.addrs)
            text = _int_to_text(value)
            if value >> 32 == 0xFFFF and rng.random() < 0.2:
                text = str(ipaddress.IPv6Address(value))      # ::ffff:a.b.c.d spelled out
        elif pick < 0.85:
            text = rng.choice([VIP4, VIP6, MAPPED_VIP, "127.0.0.1", "::1", "10.214.0.2",
                               "fd2c:1::2", "0.0.0.0", "::", "203.0.113.7", "2001:db8::1"])
        else:
            text = (str(ipaddress.IPv4Address(rng.getrandbits(32))) if rng.random() < 0.5
                    else str(ipaddress.IPv6Address(rng.getrandbits(128))))
        v4 = ":" not in text
        prefix = None
        if rng.random() < 0.4:
            prefix = rng.choice([0, 8, 16, 24, 30, 31, 32] if v4 else
                                [0, 1, 8, 16, 64, 96, 100, 112, 120, 127, 128])
        ports = self.port_range() if rng.random() < with_port else None
        return addr_spec(text, prefix, ports, rng)

    def spec(self, *, kill: bool = False) -> Spec:
        # anchored on a real socket, or free-form (which mostly selects nothing,
        # and checks that nothing is what sockterm finds)
        if self.view and self.rng.random() < (0.7 if kill else 0.55):
            return self.anchored()
        rng = self.rng
        s = Spec()
        for _ in range(rng.choice([0, 0, 1, 1, 1, 2, 3])):
            s.dst.append(self.addr())
        if rng.random() < 0.3:
            for _ in range(rng.choice([1, 1, 2])):
                s.src.append(self.addr())
        if rng.random() < 0.3:
            s.dport = [self.port_range() for _ in range(rng.choice([1, 1, 2, 3]))]
        if rng.random() < 0.3:
            s.sport = [self.port_range() for _ in range(rng.choice([1, 1, 2, 3]))]
        if rng.random() < 0.25:
            s.protos = [rng.choice(["tcp", "udp"])]
        if rng.random() < 0.2:
            s.families = [rng.choice([4, 6])]
        if rng.random() < 0.5:
            names = list(STATE_NAMES) + list(STATE_GROUPS)
            s.states = rng.sample(names, rng.choice([1, 1, 1, 2]))
        if rng.random() < 0.1 and self.pids:
            s.pids = rng.sample(self.pids, 1)
        if rng.random() < 0.08 and self.comms:
            s.comms = rng.sample(self.comms, rng.choice([1, 2]))
        if self.uids and rng.random() < 0.2:
            s.uids = rng.sample(self.uids, rng.choice([1, 1, 2]))
        if self.cgroups and rng.random() < 0.25:
            s.cgroups = rng.sample(self.cgroups, rng.choice([1, 1, 2]))
        # every kill is confined to the test's namespaces; a match too, mostly
        if kill or rng.random() < 0.8:
            k = len(self.ns_names) if rng.random() < 0.5 else rng.randrange(1, len(self.ns_names) + 1)
            s.netns = rng.sample(self.ns_names, k)
        return s


# -- populations --------------------------------------------------------------------

@dataclass
class Population:
    topo: object
    holders: list = field(default_factory=list)
    pids: list = field(default_factory=list)
    comms: list = field(default_factory=list)      # each holder's own process name
    # cookie -> (holder, socket id) for every socket a holder owns
    owned: dict = field(default_factory=dict)

    def refresh_owned(self):
        self.owned = {}
        for h in self.holders:
            for info in h.call("infos"):
                self.owned[info["cookie"]] = (h, info["id"])

    def status(self, cookies) -> dict:
        """cookie -> the errno the holding application sees (0: alive and well)."""
        by_holder = {}
        for c in cookies:
            if c in self.owned:
                h, sid = self.owned[c]
                by_holder.setdefault(h, []).append((sid, c))
        out = {}
        for h, pairs in by_holder.items():
            st = h.status([sid for sid, _ in pairs])
            out.update({c: st[sid] for sid, c in pairs})
        return out

    def forget(self, cookies):
        """Sockets known dead: SO_ERROR was consumed, never ask again."""
        for c in cookies:
            self.owned.pop(c, None)


def holders_agree_with(pop: Population, view: dict) -> list[str]:
    """The ss parser checked against the applications: every socket a holder
    owns is in `view`, with the ends the holder's own socket reports."""
    problems = []
    for h in pop.holders:
        for info in h.call("infos"):
            s = view.get(info["cookie"])
            if s is None:
                problems.append(f"ss does not list {info}")
                continue
            fam = s.family
            local = (_addr(info["local"][0], fam), info["local"][1])
            if (s.src, s.sport) != local or (info["peer"][0] and
                                             (s.dst, s.dport) != (_addr(info["peer"][0], fam),
                                                                  info["peer"][1])):
                problems.append(f"ss has {s} for {info}")
    return problems


class RelTopology(Topology):
    """conftest.Topology on addresses of its own (the bench and the other
    suites kill host-wide on theirs); namespaces named strel-TAG-ROLE."""

    PREFIX, LINK = "strel", "sr"
    VIP4, VIP6 = VIP4, VIP6
    CLIENT4, CLIENT6 = "10.214", "fd2c"


# -- short-lived TCP states, held still ------------------------------------------------
# nft in a client namespace drops the FINs sent from FIN_PORT (so a socket that
# closed first stays in FIN-WAIT-1, CLOSING or LAST-ACK, retransmitting) and the
# SYN-ACKs that come from SYN_PORT (so the client stays in SYN-SENT and the
# backend keeps a SYN-RECV request socket). Retries are raised so that neither
# gives up while a test runs.
FIN_PORT, SYN_PORT = 7300, 8443
NFT_RULES = f"""table inet sockterm_test {{
  chain out {{ type filter hook output priority 0; tcp sport {FIN_PORT} tcp flags & fin == fin drop; }}
  chain in {{ type filter hook input priority 0;
             tcp sport {SYN_PORT} tcp flags & (syn | ack) == (syn | ack) drop; }}
}}
"""
RARE_STATES = {2: "SYN-SENT", 3: "SYN-RECV", 4: "FIN-WAIT-1", 9: "LAST-ACK", 11: "CLOSING"}


def hold_still(ns: str):
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=NFT_RULES)
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.tcp_syn_retries=10")


def short_lived(h, rng: random.Random, syn_targets=(), count: int = 1):
    """Sockets of the holder `h` (in a namespace prepared by hold_still) in each
    short-lived state: over loopback, v4 and v6, `count` pairs each of
    FIN-WAIT-1 (its FIN dropped; peer ESTABLISHED), CLOSING (simultaneous close,
    its FIN dropped; peer FIN-WAIT-2) and LAST-ACK (peer closed first; peer
    FIN-WAIT-2); and SYN-SENT connections to each (addr, SYN_PORT) of
    syn_targets, whose listener keeps a SYN-RECV request socket."""
    for addr in ("127.0.0.1", "::1"):
        lst = h.call("listen", addr=addr, port=FIN_PORT)["id"]
        for order in ("fin-wait-1", "closing", "last-ack"):
            for _ in range(rng.randrange(1, count + 1)):
                client = h.call("connect", dst=addr, port=FIN_PORT)[0]["id"]
                server = h.call("accept", id=lst)[0]["id"]
                first, second = (client, server) if order == "last-ack" else (server, client)
                h.call("shutdown", ids=[first])
                if order != "fin-wait-1":
                    time.sleep(0.02)           # the first FIN is out (or dropped) first
                    h.call("shutdown", ids=[second])
    for addr, port in syn_targets:
        h.call("connect", dst=addr, port=port, count=rng.randrange(1, count + 1), nonblock_ok=True)


def wait_for_states(names, states=RARE_STATES, timeout: float = 5.0) -> dict:
    """Poll ss until every state in `states` shows in the namespaces; the view."""
    deadline = time.monotonic() + timeout
    while True:
        view = ss_view(names)
        seen = {s.state for s in view.values()}
        if set(states) <= seen or time.monotonic() > deadline:
            missing = [states[s] for s in states if s not in seen]
            assert not missing, f"ss never showed {missing}"
            return view


def time_wait(h, port: int = 7001, count: int = 2):
    """`count` new time-wait sockets (they last 60 s) over the holder's loopback."""
    lst = h.call("listen", addr="127.0.0.1", port=port)["id"]
    conns = h.call("connect", dst="127.0.0.1", port=port, count=count)
    accepted = h.call("accept", id=lst, count=count)
    h.call("close", ids=[c["id"] for c in conns])          # the first to close waits
    h.call("close", ids=[a["id"] for a in accepted] + [lst])


def close_wait(h, port: int = 7002, count: int = 2):
    """`count` connections whose accepted end closed: the client in CLOSE-WAIT,
    the accepted end an orphaned FIN-WAIT-2 (a timewait socket)."""
    lst = h.call("listen", addr="127.0.0.1", port=port)["id"]
    h.call("connect", dst="127.0.0.1", port=port, count=count)
    accepted = h.call("accept", id=lst, count=count)
    h.call("close", ids=[a["id"] for a in accepted])


def fresh_time_wait(pop: Population):
    """New time-wait sockets in the first client namespace."""
    time_wait(pop.holders[1])
    pop.refresh_owned()


def build_population(topo, rng: random.Random, clients: int = 3, scale: int = 1,
                     owners=None) -> Population:
    """Backend + `clients` client namespaces with a random mix of TCP (connected,
    listening, v4, v6, v4-mapped, loopback, veth, time-wait, close-wait/fin-wait-2,
    and held still by nft: syn-sent, syn-recv, fin-wait-1, closing, last-ack)
    and UDP (connected, unconnected) sockets: every state ss names is there.
    owners(i, holder), if given, is called before client i's holder makes a
    socket (another uid, a cgroup)."""
    pop = Population(topo)
    be = topo.with_backend()
    sh("ip", "netns", "exec", be, "sysctl", "-qw", "net.ipv4.tcp_synack_retries=10")
    server = topo.holder(be)
    pop.holders.append(server)
    for addr in (VIP4, VIP6):
        server.call("listen", addr=addr, port=SYN_PORT)
    lst = {
        (VIP4, 80): server.call("listen", addr=VIP4, port=80)["id"],
        (VIP4, 443): server.call("listen", addr=VIP4, port=443)["id"],
        (VIP6, 80): server.call("listen", addr=VIP6, port=80)["id"],
        ("::", 8080): server.call("listen", addr="::", port=8080, v6only=False)["id"],
    }
    server.call("listen", proto="udp", addr=VIP4, port=53)
    server.call("listen", proto="udp", addr=VIP6, port=53)
    server.call("listen", proto="udp", addr="::", port=5353, v6only=False)
    server.call("listen", proto="udp", addr="0.0.0.0", port=9999)   # nobody talks to it
    targets = [(VIP4, 80, (VIP4, 80)), (VIP4, 443, (VIP4, 443)), (VIP6, 80, (VIP6, 80)),
               (MAPPED_VIP, 8080, ("::", 8080)), (VIP4, 8080, ("::", 8080))]
    for i in range(clients):
        ns = topo.client(i)
        h = topo.holder(ns)
        pop.holders.append(h)
        if owners is not None:
            owners(i, h)
        for dst, port, key in targets:
            n = rng.randrange(0, 3 * scale + 1)
            if n:
                h.call("connect", dst=dst, port=port, count=n)
                server.call("accept", id=lst[key], count=n)
        for dst, port in ((VIP4, 53), (VIP6, 53), (MAPPED_VIP, 5353), (VIP4, 5353)):
            n = rng.randrange(0, 2 * scale + 1)
            if n:
                h.call("connect", proto="udp", dst=dst, port=port, count=n)
        # loopback: the same ports in every namespace (only --netns tells them apart)
        lo4 = h.call("listen", addr="127.0.0.1", port=7000)
        lo6 = h.call("listen", addr="::1", port=7000)
        for l, dst in ((lo4, "127.0.0.1"), (lo6, "::1")):
            n = rng.randrange(1, 3 * scale + 1)
            h.call("connect", dst=dst, port=7000, count=n)
            accepted = h.call("accept", id=l["id"], count=n)
            if rng.random() < 0.6:
                # close the accepted end first: it goes through FIN-WAIT to TIME-WAIT,
                # the client end sits in CLOSE-WAIT
                h.call("close", ids=[accepted[0]["id"]])
        h.call("listen", proto="udp", addr="0.0.0.0", port=5353)
        h.call("listen", proto="udp", addr="::1", port=5354)
        if rng.random() < 0.5:
            conns = h.call("connect", dst=VIP4, port=443, count=1)
            acc = server.call("accept", id=lst[(VIP4, 443)], count=1)
            h.call("close", ids=[conns[0]["id"]])
            server.call("close", ids=[acc[0]["id"]])     # client end -> TIME-WAIT
        hold_still(ns)
        short_lived(h, rng, syn_targets=[(VIP4, SYN_PORT), (VIP6, SYN_PORT)], count=scale)
    wait_for_states(topo.namespaces)
    time.sleep(0.2)
    pop.pids = [h.pid for h in pop.holders]
    pop.comms = [h.call("rename", comm=f"st{topo.tag}h{i}") for i, h in enumerate(pop.holders)]
    pop.refresh_owned()
    return pop


# tcp_abort() resets the peer only from these states (tcp_need_reset), and only
# from a full socket: a timewait or request socket just goes
RESETS_PEER = {1, 4, 5, 8}


def peers_of(view: dict, cookies) -> set[int]:
    """Cookies of the other ends (in `view`) of the TCP connections among `cookies`
    that killing them resets."""
    by_ends = {}
    for s in view.values():
        if s.proto == "tcp" and s.dport:
            by_ends.setdefault((s.src, s.sport, s.dst, s.dport), []).append(s)
    out = set()
    for c in cookies:
        s = view[c]
        if s.proto != "tcp" or not s.dport or s.state not in RESETS_PEER or \
                (s.ino == 0 and s.state == 5):
            continue
        for other in by_ends.get((s.dst, s.dport, s.src, s.sport), []):
            if other.cookie != c and other.state != 6 and (
                    other.netns == s.netns or not _loopback(s.src)):
                out.add(other.cookie)
    return out


def _loopback(addr: int) -> bool:
    return addr == 1 or (addr >> 32 == 0xFFFF and (addr & 0xFFFFFFFF) >> 24 == 127)


# -- BPF objects -------------------------------------------------------------------------

def _fd_bpf_ids(pid="self", maps: bool = False):
    """(prog ids, link ids[, map ids]) the process holds descriptors to (fdinfo)."""
    progs, links, map_ids = set(), set(), set()
    base = f"/proc/{pid}/fdinfo"
    try:
        names = os.listdir(base)
    except OSError:
        return (progs, links, map_ids) if maps else (progs, links)
    for name in names:
        try:
            with open(f"{base}/{name}") as f:
                text = f.read()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("prog_id:"):
                progs.add(int(line.split()[1]))
            elif line.startswith("link_id:"):
                links.add(int(line.split()[1]))
            elif line.startswith("map_id:"):
                map_ids.add(int(line.split()[1]))
    return (progs, links, map_ids) if maps else (progs, links)


def held_by_me() -> tuple[set, set]:
    return _fd_bpf_ids("self")


WATCH_MAP_NAMES = {"st_events", "st_udp_seen", ".rodata.watch"}


def _ours_map(name: str) -> bool:
    return (name in BPF_MAP_NAMES or name in WATCH_MAP_NAMES or name.startswith("sockterm.")
            or name.startswith("watch."))


def bpf_orphans() -> dict:
    """sockterm's programs, maps and links the kernel keeps that no process
    holds (a leak: pinned, or held by something that outlived its run), and
    pins in bpffs. Other sockterm runs on the host hold theirs, so they do not
    count; a map a live program uses is that program's. Asked through libbpf
    (bpf_objects.py), so no bpftool is needed."""
    from bpf_objects import kernel_objects
    k = kernel_objects()
    ours = {i for i, (name, _) in k["progs"].items() if name in BPF_PROG_NAMES}
    links = {l: p for l, p in k["links"].items() if p in ours}
    our_maps = {m for m, name in k["maps"].items() if _ours_map(name)}
    held_progs, held_links, held_maps = set(), set(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            p, l, m = _fd_bpf_ids(entry, maps=True)
            held_progs |= p
            held_links |= l
            held_maps |= m
    held_progs |= {links[l] for l in held_links if l in links}
    for prog, (_, map_ids) in k["progs"].items():
        if prog in held_progs or prog not in ours:
            held_maps |= set(map_ids)     # in use by a live program
    pins = []
    if os.path.isdir("/sys/fs/bpf"):
        for root, dirs, files in os.walk("/sys/fs/bpf"):
            pins += [os.path.join(root, f) for f in files]
    # the kernel's own preloaded iterators (CONFIG_BPF_PRELOAD) are not pins
    pins = [p for p in pins if p not in ("/sys/fs/bpf/maps.debug", "/sys/fs/bpf/progs.debug")]
    return {"progs": sorted(ours - held_progs),
            "maps": sorted(our_maps - held_maps),
            "links": sorted(l for l, p in links.items() if l not in held_links and p not in held_progs),
            "pins": sorted(pins)}


def wait_no_orphans(timeout: float = 20.0) -> dict:
    """The kernel frees programs asynchronously (RCU, and RCU tasks trace for
    iterators: seconds on a loaded machine): poll until none of the orphans
    seen first is left. Only those count: on a shared host other runs keep
    passing through the same unheld moment, each for an instant."""
    deadline = time.monotonic() + timeout
    left = bpf_orphans()
    while True:
        now = bpf_orphans()
        left = {k: sorted(set(left[k]) & set(now[k])) for k in left}
        if not any(left.values()) or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


ERRNO_NAMES = {errno.ECONNABORTED: "ECONNABORTED", errno.ECONNRESET: "ECONNRESET", 0: "alive"}


def cli(*args, input=None, env=None, timeout=600, prefix=()):
    """The CLI in a subprocess, as conftest.sockterm, optionally behind a prefix
    (setpriv, unshare, ...): returns (code, stdout, stderr). A kill must name
    this session's namespaces with --netns, or run confined (confine.prefix)."""
    confine.check_kill(args, prefix)
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("SOCKTERM_BACKEND", None)
    proc = subprocess.run([*prefix, sys.executable, "-m", "sockterm", *args], capture_output=True,
                          text=True, input=input, env=full_env, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def loopback_pairs(topo, role: str, port: int, count: int = 2):
    """A namespace holding `count` accepted TCP connections over its loopback:
    (namespace, holder, client socket ids, listener id)."""
    ns = topo.ns(role)
    h = topo.holder(ns)
    lst = h.call("listen", addr="127.0.0.1", port=port)
    conns = h.call("connect", dst="127.0.0.1", port=port, count=count)
    h.call("accept", id=lst["id"], count=count)
    return ns, h, [c["id"] for c in conns], lst["id"]


def run_core(command: str, flt, engine: str, processes: bool = False, target=None,
             walk: str | None = None):
    """sockterm's pipeline in-process (no interpreter start): (sockets, report).
    The one place the privileged tier calls the core's API; a kill must be
    limited to this session's namespaces (flt.netns), as confine.check_kill asks
    of a command line. target: what kill destroys (a core.Plan), else flt."""
    from sockterm import core
    if command == "kill":
        assert flt.netns and set(flt.netns) <= confine.CREATED, \
            f"refusing an in-process kill outside this session's namespaces: {flt.netns}"
    report = core.Report()
    options = core.Options(backend=engine, processes=processes)
    if walk:
        options.walk = walk
    if command == "kill":
        socks = list(core.kill(flt if target is None else target, report, options))
    else:
        socks = list(core.scan(flt, report, options))
    return socks, report


class inside:
    """`with inside(ns):` this thread's new sockets are made in network namespace
    `ns` (setns), and it returns to its own namespace after; the sockets stay there."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        import ctypes
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        self._enter(f"/run/netns/{self.name}")
        return self

    def _enter(self, path: str):
        fd = os.open(path, os.O_RDONLY) if isinstance(path, str) else path
        try:
            if self._libc.setns(fd, 0x40000000) != 0:        # CLONE_NEWNET
                import ctypes
                raise OSError(ctypes.get_errno(), f"setns {path}")
        finally:
            if isinstance(path, str):
                os.close(fd)

    def __exit__(self, *exc):
        try:
            self._enter(self._home)
        finally:
            os.close(self._home)
