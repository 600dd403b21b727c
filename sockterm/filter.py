"""The socket filter: parsed once from the command line, compiled once, and
used unchanged by match and kill on every engine.

Semantics: options AND together, repeats of one option OR together.
Addresses are compared in IPv6 form, IPv4 as ::ffff:a.b.c.d, so an IPv4
target also matches an IPv6 socket talking to the v4-mapped address.
"""

from __future__ import annotations

import ipaddress
import pwd
import re
from typing import NamedTuple

from . import states as st

MAX_ADDR_RULES = 16   # mirrors ST_MAX_ADDRS in bpf/sockterm.h
MAX_PORT_RULES = 16   # mirrors ST_MAX_PORTS
MAX_UIDS = 16         # mirrors ST_MAX_UIDS


class FilterError(ValueError):
    """A filter the user wrote that cannot mean anything."""


class PortRange(NamedTuple):
    lo: int = 0
    hi: int = 65535

    def __contains__(self, port: int) -> bool:
        return self.lo <= port <= self.hi

    def __str__(self) -> str:
        return str(self.lo) if self.lo == self.hi else f"{self.lo}-{self.hi}"


ANY_PORT = PortRange()


class AddrRule(NamedTuple):
    """One --dst/--src target: a prefix in IPv6 form and an optional port range."""

    net: ipaddress.IPv6Network
    ports: PortRange = ANY_PORT
    text: str = ""
    # an unbracketed IPv6 address ending in what looks like a port: the
    # bracketed form the user may have meant, for a hint when nothing matched
    meant: str = ""

    def matches(self, addr16: bytes, port: int) -> bool:
        value = int.from_bytes(addr16, "big")
        return (value & int(self.net.netmask)) == int(self.net.network_address) and port in self.ports


def parse_port(text: str) -> int:
    if not re.fullmatch(r"\d{1,5}", text or ""):
        raise FilterError(f"invalid port {text!r}: expected a number 0-65535")
    port = int(text)
    if port > 65535:
        raise FilterError(f"invalid port {text!r}: expected a number 0-65535")
    return port


def parse_port_range(text: str) -> PortRange:
    """P or LO-HI."""
    text = text.strip()
    if "-" in text:
        lo_text, _, hi_text = text.partition("-")
        lo, hi = parse_port(lo_text), parse_port(hi_text)
        if lo > hi:
            raise FilterError(f"invalid port range {text!r}: {lo} is above {hi}")
        return PortRange(lo, hi)
    port = parse_port(text)
    return PortRange(port, port)


def _network(text: str, whole: str) -> ipaddress.IPv6Network:
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise FilterError(
            f"invalid address {whole!r}: expected ADDR[/PREFIX][:PORT], IPv6 as [ADDR]:PORT"
        ) from None
    if net.version == 4:
        mapped = ipaddress.IPv6Address("::ffff:" + str(net.network_address))
        return ipaddress.IPv6Network(f"{mapped}/{96 + net.prefixlen}")
    return net


def parse_addr_rule(text: str) -> AddrRule:
    """ADDR[/PREFIX][:PORT[-PORT]]; IPv6 in brackets when a port follows."""
    raw = text.strip()
    if not raw:
        raise FilterError("empty address: expected ADDR[/PREFIX][:PORT]")
    port_text = None
    if raw.startswith("["):
        inner, sep, rest = raw[1:].partition("]")
        if not sep:
            raise FilterError(f"invalid address {text!r}: missing ']'")
        addr = inner
        if rest:
            if rest.startswith("/"):
                prefix, _, after = rest[1:].partition(":")
                addr = f"{inner}/{prefix}"
                port_text = after if after else None
                if rest.endswith(":"):
                    raise FilterError(f"invalid address {text!r}: empty port")
            elif rest.startswith(":"):
                port_text = rest[1:]
            else:
                raise FilterError(f"invalid address {text!r}: expected ':PORT' after ']'")
    elif raw.count(":") == 1:
        addr, _, port_text = raw.partition(":")
    else:
        addr = raw  # bare IPv4, or IPv6 without a port
    if "%" in addr:
        raise FilterError(f"invalid address {text!r}: zone indexes are not supported")
    if not addr:
        raise FilterError(f"invalid address {text!r}: the address is missing")
    ports = ANY_PORT if port_text is None else parse_port_range(port_text)
    if port_text == "":
        raise FilterError(f"invalid address {text!r}: empty port")
    meant = _port_lookalike(addr) if port_text is None and not raw.startswith("[") else ""
    return AddrRule(_network(addr, text), ports, raw, meant)


def _port_lookalike(addr: str) -> str:
    """'fd66::5:7080' -> '[fd66::5]:7080': the last group is decimal, a valid
    port, and what precedes it is an IPv6 address by itself; else ''."""
    if addr.count(":") < 2 or "/" in addr:
        return ""
    head, _, tail = addr.rpartition(":")
    # two digits at least: 'fd66::5' is an address, not 'fd66::' and port 5
    if not re.fullmatch(r"\d{2,5}", tail) or int(tail) > 65535:
        return ""
    try:
        ipaddress.IPv6Address(head)
    except ValueError:
        return ""
    return f"[{head}]:{tail}"


class Filter(NamedTuple):
    """What a run selects. Empty tuples mean 'not restricted by this option'.

    The filter's records (Filter, AddrRule, PortRange) are NamedTuples, not
    frozen dataclasses: as immutable, and made in ~0.1 ms a class where a
    frozen dataclass takes ~0.9 (its methods are compiled from source at
    import, on every run: ~6 ms of a one-namespace match, measured)."""

    dst: tuple = ()
    src: tuple = ()
    dport: tuple = ()
    sport: tuple = ()
    protos: frozenset = frozenset({"tcp", "udp"})
    families: frozenset = frozenset({4, 6})
    states: frozenset = st.ALL
    netns: tuple = ()
    pids: tuple = ()
    comms: tuple = ()
    containers: tuple = ()     # names or ids, resolved on the host when a run starts
    pods: tuple = ()           # [NAMESPACE/]NAME
    cgroups: tuple = ()        # cgroup v2 paths or unit names
    uids: tuple = ()           # socket owner uids

    @property
    def targeted(self) -> bool:
        """Does the filter name something, so that a kill cannot mean 'everything'?"""
        return bool(self.dst or self.src or self.dport or self.sport
                    or self.netns or self.pids or self.comms
                    or self.containers or self.pods or self.cgroups or self.uids)

    @property
    def on_host(self) -> bool:
        """Does it name things a run must look up on the host (into its Scope)?"""
        return bool(self.containers or self.pods or self.cgroups)

    def matches(self, sock) -> bool:
        """The same decision the BPF program and the diag bytecode make, in Python
        (--pid/--comm, --container/--pod and --cgroup are decided by the run's
        Scope, from the processes and cgroups on the host)."""
        if sock.proto not in self.protos or sock.family not in self.families:
            return False
        if sock.state not in self.states:
            return False
        if self.uids and sock.uid not in self.uids:
            return False
        if self.dst and not any(r.matches(sock.dst, sock.dport) for r in self.dst):
            return False
        if self.src and not any(r.matches(sock.src, sock.sport) for r in self.src):
            return False
        if self.dport and not any(sock.dport in r for r in self.dport):
            return False
        return not self.sport or any(sock.sport in r for r in self.sport)

    def hints(self) -> list[str]:
        """What to tell a user whose filter matched nothing, when it reads as a slip."""
        return [f"{opt} {r.text} is the IPv6 address {r.text}, without a port; "
                f"did you mean {r.meant}?"
                for opt, rules in (("--dst", self.dst), ("--src", self.src))
                for r in rules if r.meant]

    def describe(self) -> str:
        """The filter in the words of the command line (audit trail, messages)."""
        parts = [f"--dst {r.text}" for r in self.dst] + [f"--src {r.text}" for r in self.src]
        parts += [f"--dport {p}" for p in self.dport] + [f"--sport {p}" for p in self.sport]
        if self.protos != {"tcp", "udp"}:
            parts += [f"--proto {p}" for p in sorted(self.protos)]
        if self.families != {4, 6}:
            parts += [f"-{f}" for f in sorted(self.families)]
        parts += [f"--netns {n}" for n in self.netns]
        parts += [f"--pid {p}" for p in self.pids] + [f"--comm {c}" for c in self.comms]
        parts += [f"--container {c}" for c in self.containers] + [f"--pod {p}" for p in self.pods]
        parts += [f"--cgroup {c}" for c in self.cgroups] + [f"--uid {u}" for u in self.uids]
        names = sorted({st.NAMES[s] for s in self.states})
        parts.append("--state " + ",".join(names))
        return " ".join(parts)


def build_filter(*, dst=(), src=(), dport=(), sport=(), proto=(), ipv4=False, ipv6=False,
                 state=(), netns=(), pid=(), comm=(), container=(), pod=(), cgroup=(), uid=(),
                 default_states=st.DEFAULT_KILL) -> Filter:
    """Turn command-line values (strings) into a Filter, or raise FilterError."""
    dst_rules = tuple(parse_addr_rule(t) for t in dst)
    src_rules = tuple(parse_addr_rule(t) for t in src)
    if len(dst_rules) > MAX_ADDR_RULES or len(src_rules) > MAX_ADDR_RULES:
        raise FilterError(f"at most {MAX_ADDR_RULES} --dst and {MAX_ADDR_RULES} --src targets per run")
    dports = tuple(parse_port_range(t) for t in _split(dport))
    sports = tuple(parse_port_range(t) for t in _split(sport))
    if len(dports) > MAX_PORT_RULES or len(sports) > MAX_PORT_RULES:
        raise FilterError(f"at most {MAX_PORT_RULES} --dport and {MAX_PORT_RULES} --sport ranges per run")
    protos = frozenset(p.lower() for p in _split(proto)) or frozenset({"tcp", "udp"})
    bad = protos - {"tcp", "udp"}
    if bad:
        raise FilterError(f"unknown protocol {sorted(bad)[0]!r}: expected tcp or udp")
    families = frozenset(f for f, on in ((4, ipv4), (6, ipv6)) if on) or frozenset({4, 6})
    states = frozenset()
    for name in _split(state):
        try:
            states |= st.parse_state(name)
        except ValueError as exc:
            raise FilterError(str(exc)) from None
    pids = tuple(_parse_pid(p) for p in _split(pid))
    comms = tuple(_parse_comm(c) for c in comm)
    netns_names = tuple(_namespace_selector(n) for n in netns)
    containers = tuple(_name(c, "--container", "NAME or ID") for c in container)
    pods = tuple(_pod(p) for p in pod)
    cgroups = tuple(_name(c, "--cgroup", "PATH or unit name") for c in cgroup)
    uids = tuple(dict.fromkeys(_parse_uid(u) for u in _split(uid)))
    if len(uids) > MAX_UIDS:
        raise FilterError(f"at most {MAX_UIDS} --uid values per run")
    return Filter(dst_rules, src_rules, dports, sports, protos, families,
                  states or frozenset(default_states), netns_names, pids, comms,
                  containers, pods, cgroups, uids)


def _split(values) -> list:
    """Repeats and comma lists mean the same: --dport 80,443 == --dport 80 --dport 443."""
    out = []
    for value in values:
        parts = [part.strip() for part in str(value).split(",")]
        if not all(parts):
            raise FilterError(f"empty item in {str(value)!r}")
        out.extend(parts)
    return out


def _namespace_selector(value: str) -> str:
    if not value.strip():
        raise FilterError("--netns needs a value")
    return value


def _parse_pid(text: str) -> int:
    if not re.fullmatch(r"[1-9]\d{0,9}", text):
        raise FilterError(f"invalid pid {text!r}: expected a positive number")
    pid = int(text)
    if pid > 2**22:
        raise FilterError(f"invalid pid {text!r}: above the kernel's pid limit")
    return pid


def _name(text: str, option: str, what: str) -> str:
    value = text.strip()
    if not value or "\0" in value:
        raise FilterError(f"{option} needs a {what}")
    return value


def _pod(text: str) -> str:
    value = _name(text, "--pod", "[NAMESPACE/]NAME")
    namespace, slash, name = value.partition("/")
    if slash and (not namespace or not name or "/" in name):
        raise FilterError(f"invalid pod {text!r}: expected NAME or NAMESPACE/NAME")
    return value


def _parse_uid(text: str) -> int:
    """A user name or a number, as the socket's owner (ss's uid)."""
    if re.fullmatch(r"\d{1,10}", text):
        uid = int(text)
        if uid >= 2**32 - 1:      # (uid_t)-1 is no one's
            raise FilterError(f"invalid uid {text!r}: above the largest uid")
        return uid
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise FilterError(f"unknown user {text!r}: expected a user name or a uid") from None


def _parse_comm(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 15 or "/" in name or "\0" in name:
        raise FilterError(
            f"invalid command name {text!r}: expected the process name as in /proc/PID/comm (1-15 characters)")
    return name

