"""A network namespace's socket counts, from procfs: what the one pass is
checked against (Counters, opened once and read before and after it), which
protocols a namespace has sockets of (busy_protocols: a walk of the others
finds nothing), the host's TCP sockets (what every walk goes over), and room
for the files counters keep open.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple

from ..model import Namespace


class Counts(NamedTuple):
    """A namespace's own socket counts (procfs), what the one pass is checked against."""

    tcp: int          # hashed TCP sockets, IPv4 and IPv6 (sockstat inuse)
    tw: int           # time-wait sockets, orphaned fin-wait-2 ones included (sockstat tw)
    udp: int          # hashed (bound) UDP sockets, IPv4 and IPv6
    opens: int        # TCP connections ever opened, actively or passively (snmp Tcp)


_COUNTER_FILES = ("sockstat", "sockstat6", "snmp")


class Counters:
    """One namespace's counter files, opened once (a procfs net file stays
    bound to the namespace it was opened in) and read any number of times
    from any thread."""

    def __init__(self, fds: list[int]):
        self._fds = fds
        self.first: Counts | None = None     # read when opened (see first_read)

    @classmethod
    def here(cls) -> "Counters":
        """The calling thread's namespace (a worker inside it)."""
        return cls._open("/proc/thread-self/net")

    @classmethod
    def of_process(cls, ns: Namespace) -> "Counters | None":
        """Through a process in ns, without entering it; None when none of the
        first few is still there (the pid is checked to be in ns around the open)."""
        for pid in ns.pids[:3]:
            link = f"/proc/{pid}/ns/net"
            try:
                if os.stat(link).st_ino != ns.ino:
                    continue
                found = cls._open(f"/proc/{pid}/net")
                if os.stat(link).st_ino == ns.ino:
                    return found
                found.close()
            except OSError:
                continue
        return None

    @classmethod
    def _open(cls, base: str) -> "Counters":
        fds: list[int] = []
        try:
            for name in _COUNTER_FILES:
                fds.append(os.open(f"{base}/{name}", os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        return cls(fds)

    def read(self) -> Counts:
        stat4, stat6, snmp = (os.pread(fd, 4096, 0) for fd in self._fds)
        in_tcp4, in_udp4, in_tcp6, in_udp6 = _patterns()
        tcp, tw = in_tcp4.search(stat4).groups()
        (udp,) = in_udp4.search(stat4).groups()
        (tcp6,) = in_tcp6.search(stat6).groups()
        (udp6,) = in_udp6.search(stat6).groups()
        return Counts(tcp=int(tcp) + int(tcp6), tw=int(tw), udp=int(udp) + int(udp6),
                      opens=_opens(snmp))

    def first_read(self) -> "Counters":
        """Read the counts once now, as `first` (None: unreadable): a run opens
        its counters while the engine loads and reads them there, before the
        one pass, off the pass's path."""
        try:
            self.first = self.read()
        except OSError:
            self.first = None
        return self

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


_compiled: tuple = ()


def _patterns() -> tuple:
    """Counters.read()'s: the counts read twice per namespace per run (one run
    may cover hundreds), compiled on first need (~0.4 ms; a run in fewer
    than four namespaces reads none)."""
    global _compiled
    if not _compiled:
        _compiled = (re.compile(rb"^TCP: inuse (\d+) orphan \d+ tw (\d+)", re.M),
                     re.compile(rb"^UDP: inuse (\d+)", re.M),
                     re.compile(rb"^TCP6: inuse (\d+)", re.M),
                     re.compile(rb"^UDP6: inuse (\d+)", re.M))
    return _compiled


_columns: dict = {}     # snmp's Tcp names line -> where ActiveOpens and PassiveOpens are


def _opens(snmp: bytes) -> int:
    """ActiveOpens + PassiveOpens from /proc/net/snmp's Tcp lines (names, then
    values); the columns are found by name once per names line (~2 us a read
    instead of ~8 for splitting the whole file: a run reads it twice per namespace)."""
    names_at = _line(snmp, b"Tcp:", 0)
    values_at = _line(snmp, b"Tcp:", names_at + 1)
    names = snmp[names_at:_end(snmp, names_at)]
    values = snmp[values_at:_end(snmp, values_at)].split()
    where = _columns.get(names)
    if where is None:
        fields = names.split()
        where = _columns[names] = (fields.index(b"ActiveOpens"), fields.index(b"PassiveOpens"))
    active, passive = where
    return int(values[active]) + int(values[passive])


def _line(text: bytes, head: bytes, start: int) -> int:
    """Where the first line from `start` on that begins with head begins
    (ValueError: none does)."""
    at = text.index(head, start)
    while at and text[at - 1] != 0x0A:
        at = text.index(head, at + 1)
    return at


def _end(text: bytes, at: int) -> int:
    cut = text.find(b"\n", at)
    return len(text) if cut < 0 else cut


def _fields(text: str) -> dict:
    """sockstat lines ("TCP: inuse 3 orphan 0 tw 1 ...") -> {"TCP": {"inuse": 3, ...}}."""
    out = {}
    for line in text.splitlines():
        proto, _, rest = line.partition(":")
        words = rest.split()
        out[proto] = {k: int(v) for k, v in zip(words[::2], words[1::2])}
    return out


def host_tcp_sockets() -> int:
    """TCP sockets on the whole host (sockstat's alloc is not per namespace):
    what a walk of any namespace goes over."""
    try:
        with open("/proc/self/net/sockstat") as f:
            return _fields(f.read()).get("TCP", {}).get("alloc", 0)
    except OSError:
        return 0


def reserve_descriptors(count: int) -> None:
    """Room for `count` more open files, made before the threads that open
    them start: the soft limit raised toward the hard one if need be
    (counters keep three files per namespace open, and a kill a netlink
    socket per namespace), and the descriptor table grown to it at once.
    The kernel doubles a process's table as its files outgrow it, and in a
    process of more than one thread each doubling waits for an RCU grace
    period (fs/file.c, expand_fdtable()): at 200 namespaces the counting
    thread went through four, and took 80 ms here where it takes 38-42 now.
    Grown by the main thread while it is the only one, it costs an
    allocation (200 namespaces: a 1,024-entry table, 8 KB of pointers)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        used = 64
    want = used + count + 64
    if soft != resource.RLIM_INFINITY and soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(hard, want)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY:
        want = min(want, soft)
    _grow_table(want - 1)


def _grow_table(highest: int) -> None:
    """The descriptor table grown to hold descriptor `highest`: a duplicate
    made at the lowest free number from there (F_DUPFD never replaces an
    open descriptor, as dup2 would) and closed; a table never shrinks."""
    import fcntl
    try:
        fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.close(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, highest))
    except OSError:
        pass      # no room (EMFILE, EINVAL past the limit): the table grows as files open
    finally:
        os.close(fd)


def busy_protocols() -> set[str]:
    """The protocols ("tcp", "udp") the calling thread's namespace has any socket
    of, TIME_WAIT included: a walk of the others would find nothing."""
    counts = sockstat_counts()
    busy = {"udp"} if counts["udp"] else set()
    if counts["tcp"] or counts["tcp_tw"]:
        busy.add("tcp")
    return busy


def sockstat_counts() -> dict[str, int]:
    """Socket counts of the calling thread's namespace (cheap; run in the worker)."""
    counts = {"tcp": 0, "tcp_tw": 0, "udp": 0}
    for name, tcp, udp in (("sockstat", "TCP", "UDP"), ("sockstat6", "TCP6", "UDP6")):
        try:
            with open(f"/proc/thread-self/net/{name}") as f:
                fields = _fields(f.read())
        except OSError:
            return {"tcp": 1, "tcp_tw": 1, "udp": 1}   # cannot tell: assume busy
        counts["tcp"] += fields.get(tcp, {}).get("inuse", 0)
        counts["tcp_tw"] += fields.get(tcp, {}).get("tw", 0)
        counts["udp"] += fields.get(udp, {}).get("inuse", 0)
    return counts
