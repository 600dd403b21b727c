"""What every stage passes along: namespaces, sockets and kill outcomes."""

from __future__ import annotations

import errno
import struct
# the socket module's C half: its Python half (enums, selectors) is ~2 ms of imports
from _socket import AF_INET, AF_INET6, inet_ntop
from typing import NamedTuple

from . import states as st
from .records import Record

# Per-socket kill outcomes (the JSON `result` key)
MATCHED = "matched"            # match / list: nothing was attempted
KILLED = "killed"
GONE = "gone"                  # vanished before the destroy reached it
UNSUPPORTED = "unsupported"    # the kernel cannot destroy this kind of socket
NO_PERMISSION = "no-permission"
FAILED = "failed"              # any other errno; Sock.error says which
DEFERRED = "deferred"          # internal: the kfunc cannot take it, netlink will
# kill --graceful (core/graceful.py)
SHUT_DOWN = "shut-down"        # shutdown(2) through a holder's descriptor: a FIN, not a reset
NOT_HELD = "not-held"          # no process holds it: nothing to shut down through (left alone)

_ERRNO_RESULTS = {errno.ENOENT: GONE, errno.ESRCH: GONE, errno.EOPNOTSUPP: UNSUPPORTED,
                  errno.EPERM: NO_PERMISSION, errno.EACCES: NO_PERMISSION}

V4_PREFIX = b"\0" * 10 + b"\xff\xff"     # ::ffff:0:0/96, IPv4 in IPv6 form


class Namespace(Record):
    """One network namespace, identified by its nsfs inode."""

    FIELDS = ("ino", "name", "path", "alt_paths", "pids", "place", "aliases")

    def __init__(self, ino: int, name: str, path: str, alt_paths: list | None = None,
                 pids: list | None = None, place: object = None, aliases: list | None = None):
        self.ino = ino
        self.name = name
        self.path = path                # an nsfs path to open it by
        self.alt_paths = [] if alt_paths is None else alt_paths   # more ways in, should `path` vanish
        self.pids = [] if pids is None else pids
        self.place = place              # host.containers.Place: the container or pod it belongs to
        self.aliases = [] if aliases is None else aliases   # names it had before `name` became the pod's

    def paths(self):
        yield self.path
        yield from self.alt_paths


class Sock:
    """One TCP or UDP socket as an engine saw it. Addresses are 16 bytes,
    IPv4 in v4-mapped form, so filters compare one representation."""

    __slots__ = ("netns", "family", "proto", "state", "src", "sport", "dst", "dport",
                 "cookie", "uid", "ino", "result", "error", "processes", "netns_name",
                 "mini", "ifindex", "place", "cgroup", "holder", "fds")

    def __init__(self, netns, family, proto, state, src, sport, dst, dport,
                 cookie, uid=0, ino=0, result=MATCHED, error=0, netns_name="", mini=False,
                 ifindex=0):
        self.netns = netns
        self.family = family
        self.proto = proto
        self.state = state
        self.src = src
        self.sport = sport
        self.dst = dst
        self.dport = dport
        self.cookie = cookie
        self.uid = uid
        self.ino = ino
        self.result = result
        self.error = error
        self.processes = None
        self.netns_name = netns_name
        self.mini = mini           # TIME_WAIT or request socket: no full struct sock
        self.ifindex = ifindex     # bound device; a netlink destroy must name it
        self.place = None          # host.containers.Place: its container and pod, if any
        self.cgroup = 0            # its cgroup v2 id, where an engine read it (0: none or unread)
        self.holder = None         # kill --graceful: (pid, fd) of the descriptor it was shut down through
        self.fds = None            # the one pass: ((pid, fd), ...) a descriptor of each holder

    @property
    def key(self):
        return (self.netns, self.cookie)

    @property
    def container(self):
        return self.place.container if self.place is not None else None

    @property
    def pod(self):
        return self.place.pod if self.place is not None else None

    def src_text(self) -> str:
        return addr_text(self.src, self.family)

    def dst_text(self) -> str:
        return addr_text(self.dst, self.family)

    def state_name(self) -> str:
        if self.state == st.CLOSE and self.proto == "udp":
            return "unconnected"
        return st.NAMES.get(self.state, f"state-{self.state}")

    def __repr__(self) -> str:
        return (f"Sock({self.proto}{self.family} {self.state_name()} {self.src_text()}:{self.sport}"
                f" -> {self.dst_text()}:{self.dport} ns={self.netns} cookie={self.cookie} {self.result})")


class Stamped(Sock):
    """A socket a watch reported (kill --watch, match --watch): when, and
    whether in the kill of what matched at the start or during the window."""

    __slots__ = ("time", "phase")

    @classmethod
    def of(cls, sock: Sock, phase: str, when: float) -> "Stamped":
        copy = cls.__new__(cls)
        for name in Sock.__slots__:
            setattr(copy, name, getattr(sock, name))
        copy.time, copy.phase = when, phase
        return copy


START, WINDOW = "start", "window"      # Stamped.phase


class Owners:
    """socket inode -> ((pid, comm), ...): who holds each socket.

    Built for every socket on a host, so it shares one tuple per process
    instead of allocating per socket (~100 bytes a socket saved at 200k)."""

    def __init__(self):
        self.by_ino: dict[int, tuple] = {}
        self._alone: dict[tuple, tuple] = {}     # (pid, comm) -> ((pid, comm),)

    def add(self, ino: int, pid: int, comm: str) -> None:
        holder = (pid, comm)
        alone = self._alone.get(holder)
        if alone is None:
            alone = self._alone[holder] = (holder,)
        held = self.by_ino.get(ino)
        if held is None:
            self.by_ino[ino] = alone
        elif holder not in held:
            self.by_ino[ino] = tuple(sorted(held + alone))     # pid order, whatever the walk's

    def get(self, ino: int) -> tuple:
        return self.by_ino.get(ino, ())

    def of(self, ns_ino: int) -> "Owners":
        """The index a namespace's sockets are looked up in: this one, whole."""
        return self

    def done(self, ns_ino: int) -> None:
        """A namespace is accounted: nothing to let go of (built for the host)."""


class NamespaceOwners:
    """Who holds the sockets of the walked namespaces, from the one pass's
    records: a namespace's index is built when its first batch is accounted
    and let go when the namespace is done, so a run holds the indexes of the
    namespaces in flight, not one of every socket walked (the diag engine
    walks them all: listing 500,000 sockets, its peak RSS went from 183.6 to
    163.0 MiB, one run each)."""

    def __init__(self, held: "Held"):
        self._held = held
        self._built: dict = {}

    def of(self, ns_ino: int) -> Owners:
        found = self._built.get(ns_ino)
        if found is None:
            found = self._built[ns_ino] = self._held.owners({ns_ino})
        return found

    def done(self, ns_ino: int) -> None:
        self._built.pop(ns_ino, None)


class HeldCounts(NamedTuple):
    """What one namespace's processes hold, each socket once (the one pass)."""

    tcp: int          # hashed TCP sockets (listening, or with a connection)
    udp: int          # hashed (bound) UDP sockets
    pending: int      # request sockets queued on held listeners
    backlog: int      # children waiting in held listeners' accept queues


class Held:
    """The one pass: the sockets the filter selects that processes hold, by
    namespace, kept as the kernel's records until a namespace's are asked
    for (then one Sock per socket, holders attributed when asked; a cookie of
    0 is one the kernel has not made yet), and per
    namespace inode what its processes hold in all."""

    def __init__(self, records: dict, decode, counts: dict, uncounted: str = "",
                 count: int = 0, uncookied=lambda records: 0):
        self._records = records         # netns inode -> its records (an engine's form)
        self._decode = decode           # records -> [Sock]
        self._uncookied = uncookied     # records -> how many sockets have no cookie yet
        self.counts = counts            # netns inode -> HeldCounts
        self.uncounted = uncounted      # why the counts cannot be trusted ("": they can)
        self.records = count            # descriptors holding a selected socket

    def by_namespace(self) -> "HeldSockets":
        return HeldSockets(self._records, self._decode, self._uncookied)

    def owners(self, namespaces=None) -> "Owners":
        """Who holds each socket of these namespaces (inodes; None: all). A
        walk of a namespace meets only that namespace's sockets, and the
        records are by the socket's namespace: a run indexes the walked ones
        only (NamespaceOwners: one at a time)."""
        found = Owners()
        inos = self._records if namespaces is None else \
            [ino for ino in namespaces if ino in self._records]
        for ino in inos:
            for sock in self._decode(self._records[ino]):
                if sock.processes and sock.ino:
                    found.by_ino[sock.ino] = sock.processes
        return found


class HeldSockets:
    """netns inode -> the one pass's sockets there, decoded on demand: get()
    keeps what it decoded (a kill asks twice, and must see the same Socks),
    pop() does not (a listing streams each namespace once, and memory stays
    that of the records plus the namespaces in flight)."""

    def __init__(self, records: dict, decode, uncookied=lambda records: 0):
        self._records, self._decode, self._uncookied = records, decode, uncookied
        self._kept: dict = {}

    def uncookied(self, ino: int) -> int:
        """How many of the namespace's sockets the kernel has no cookie for
        yet, read from the records without decoding them."""
        return self._uncookied(self._records[ino]) if ino in self._records else 0

    def get(self, ino: int, default=()):
        socks = self._kept.get(ino)
        if socks is None:
            if ino not in self._records:
                return default
            socks = self._kept[ino] = self._decode(self._records[ino])
        return socks

    def pop(self, ino: int, default=()):
        socks = self._kept.pop(ino, None)
        if socks is not None:
            return socks
        return self._decode(self._records[ino]) if ino in self._records else default
# -- the order of every output: namespaces host first, then by name, then by
# inode; in each, sockets by protocol, family, local address and port, peer
# address and port, and cookie (unique: two sockets never tie)
HOST = "host"                  # the host's initial namespace, and only it (host/netns.py)
_PROTO_RANK = {"tcp": 0, "udp": 2}
_ORDER = struct.Struct(">B16sH16sHQ").pack


def ns_order(ns: Namespace) -> tuple:
    return (ns.name != HOST, ns.name, ns.ino)


def sock_order(sock: Sock) -> bytes:
    """A socket's place within its namespace, as one bytes key: a tuple of
    the seven fields sorts ~4x slower, which shows at 160k sockets."""
    return _ORDER(_PROTO_RANK.get(sock.proto, 4) + (sock.family == 6), sock.src, sock.sport,
                  sock.dst, sock.dport, sock.cookie)


def set_error(sock: Sock, err: int) -> None:
    """Record that destroying sock failed with errno err (0: it was destroyed)."""
    err = abs(err)
    sock.error = err
    sock.result = KILLED if err == 0 else _ERRNO_RESULTS.get(err, FAILED)


def addr_text(addr16: bytes, family: int) -> str:
    if family == 4 and addr16[:12] == V4_PREFIX:
        return inet_ntop(AF_INET, addr16[12:])
    return inet_ntop(AF_INET6, addr16)


def v4_mapped(addr4: bytes) -> bytes:
    return V4_PREFIX + addr4


class NamespaceReport(Record):
    """What happened in one namespace: sockets seen and anything that went wrong."""

    FIELDS = ("ns", "engine", "error", "gone", "matched", "killed", "failed", "shut_down",
              "not_held", "walked", "walk_reason")

    def __init__(self, ns: Namespace, engine: str, error: str = "", gone: bool = False,
                 matched: int = 0, killed: int = 0, failed: int = 0, shut_down: int = 0,
                 not_held: int = 0, walked: bool = True, walk_reason: str | None = None):
        self.ns = ns
        self.engine = engine
        self.error = error              # the namespace could not be walked: why
        self.gone = gone                # ... because it disappeared (not a failure)
        self.matched = matched
        self.killed = killed
        self.failed = failed
        self.shut_down = shut_down      # kill --graceful: shut down through a holder
        self.not_held = not_held        # kill --graceful: held by no process, left alone
        self.walked = walked            # searched by a walk of its tables (not the one pass alone)
        self.walk_reason = walk_reason  # why it was walked (see core/decide.py)
