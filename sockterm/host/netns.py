"""Network namespaces: finding every one on the host, and entering them.

setns(CLONE_NEWNET) changes only the calling thread, so namespaces are
entered by worker threads (core/pool.py); the main thread never moves.
"""

from __future__ import annotations

import errno
import os
import queue
import re
import stat
import threading
from typing import NamedTuple

from ..model import HOST, Namespace, ns_order
from ..text import shown

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703   # _IO(0xb7, 0x3)

_libc = None


def _setns(fd: int) -> int:
    """setns(fd, CLONE_NEWNET) for the calling thread: 0, or the errno. ctypes
    is loaded on first use (~2 ms): a run that stays home never pays for it."""
    global _libc
    import ctypes
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return ctypes.get_errno() if _libc.setns(fd, CLONE_NEWNET) != 0 else 0


class NamespaceError(OSError):
    """A namespace the user named that is not one, or that cannot be entered."""


def _nsfs_dev() -> int:
    return os.stat("/proc/self/ns/net").st_dev


def check_nsfs(path: str) -> int:
    """The inode of the network namespace at `path`; NamespaceError if it is not one."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):   # a FIFO would block open() forever
            raise NamespaceError(0, f"{path} is not a namespace file (nsfs)")
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise NamespaceError(exc.errno, f"cannot open namespace {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_dev != _nsfs_dev() or not stat.S_ISREG(st.st_mode):
            raise NamespaceError(0, f"{path} is not a namespace file (nsfs)")
        import fcntl
        try:
            nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            nstype = CLONE_NEWNET   # kernels before 4.11 cannot say; setns will
        if nstype != CLONE_NEWNET:
            raise NamespaceError(0, f"{path} is a namespace, but not a network namespace")
        return st.st_ino
    finally:
        os.close(fd)


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) and field[i + 1:i + 4].isdigit():
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _nsfs_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    """Mount points of network namespace bind mounts (ip netns, container runtimes)."""
    try:
        with open(mountinfo, encoding="utf-8", errors="surrogateescape", newline="") as f:
            lines = f.read().split("\n")
    except OSError:
        return []
    found = []
    for line in lines:
        # the kernel escapes only space, tab, newline and backslash in paths:
        # a mount point may hold a CR or any other byte str.split() would cut at
        fields = line.split(" ")
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if sep + 1 < len(fields) and fields[sep + 1] == "nsfs" and fields[3].startswith("net:["):
            found.append(_unescape(fields[4]))
    return found


def _ino(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def _comm(pid: str) -> str:
    from .procs import comm_of
    return comm_of(int(pid)) or "?"


# the initial namespace's inode on kernels that fix it (6.18 and later); older
# kernels number namespaces from 0xF0000000 up, so no other can have it
INIT_NET_INO = 0xEFFFFFF9


def kthreadd_netns() -> str | None:
    """An nsfs path of the host's initial network namespace: kthreadd's (pid 2,
    parent 0), which kernel threads never leave, seen from any namespace that
    shares the host's pid namespace (/proc/1/ns is not always readable, even
    for root). None when there is no kthreadd here or its ns is unreadable."""
    try:
        with open("/proc/2/stat") as f:
            stat_line = f.read()
        comm = stat_line[stat_line.index("(") + 1:stat_line.rindex(")")]
        ppid = stat_line[stat_line.rindex(")") + 2:].split()[1]
        if comm == "kthreadd" and ppid == "0":
            os.stat("/proc/2/ns/net")
            return "/proc/2/ns/net"
    except (OSError, ValueError, IndexError):
        pass
    return None


def netns_dirs() -> list[str]:
    """Where `ip netns` names live: /run/netns, and the host's under
    SOCKTERM_ROOT_PREFIX (sockterm's image, with the node's root at /host,
    sees the names even when /run/netns itself is not mounted in)."""
    from .runtimes import root_prefix
    prefix = root_prefix()
    dirs = ["/run/netns"]
    if prefix and os.path.realpath(prefix) != "/":
        dirs.append(os.path.join(prefix, "run/netns"))
    return dirs


class Discovery:
    """Every network namespace reachable from here, deduplicated by inode."""

    def __init__(self):
        self.by_ino: dict[int, Namespace] = {}
        self.skipped: list[str] = []    # what could not be looked at, and why (for -v)
        self.seen: set[str] = set()     # every path recorded
        self.dev = _nsfs_dev()

    def _add(self, path: str, name: str | None = None, pid: int | None = None) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            self.skipped.append(f"{path}: {exc.strerror}")
            return
        if st.st_dev != self.dev:
            self.skipped.append(f"{path}: not a namespace file")
            return
        ns = self.by_ino.get(st.st_ino)
        if ns is None:
            ns = self.by_ino[st.st_ino] = Namespace(ino=st.st_ino, name="", path=path)
            self.seen.add(path)
        elif path not in self.seen:   # (a scan of ns.paths() would be quadratic in pids)
            self.seen.add(path)
            ns.alt_paths.append(path)
        if name and not ns.name:
            ns.name = name
        if pid is not None:
            ns.pids.append(pid)

    def run(self, own_only: bool = False) -> list[Namespace]:
        """Every namespace; with own_only, just sockterm's own (named as
        usual), for a caller who could not enter the others anyway."""
        host_path = kthreadd_netns()
        if host_path:
            self._add(host_path, name=HOST)
        own = f"/proc/{os.getpid()}/ns/net"
        self._add(own, pid=os.getpid())
        for directory in netns_dirs():
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                names = []
            for name in names:
                self._add(os.path.join(directory, name), name=name)
        if not own_only:
            for mount in _nsfs_mounts():
                self._add(mount)
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    self._add(f"/proc/{entry.name}/ns/net", pid=int(entry.name))
        host = self.by_ino.get(_ino(host_path) if host_path else INIT_NET_INO)
        if own_only:
            own_ino = _ino(own)
            self.by_ino = {ino: ns for ino, ns in self.by_ino.items() if ino == own_ino}
        if host is not None:
            host.name = HOST     # even when `ip netns` also names it
        for ns in self.by_ino.values():
            if not ns.name or (ns.name == HOST and ns is not host):
                ns.name = self._fallback_name(ns)
        return sorted(self.by_ino.values(), key=ns_order)

    def _fallback_name(self, ns: Namespace) -> str:
        procs = sorted(p for p in ns.pids)
        if procs:
            return f"{_comm(str(procs[0]))}[{procs[0]}]"
        if not ns.path.startswith("/proc/"):
            return ns.path
        return f"net:[{ns.ino}]"


def discover(own_only: bool = False) -> tuple[list[Namespace], list[str]]:
    d = Discovery()
    found = d.run(own_only)
    return found, d.skipped


def is_identity(selector: str) -> bool:
    """Does this --netns value name its namespace whatever runs in it (an
    inode, a path, `host`), so that no container's name can be meant?"""
    key = selector.strip()
    if key.startswith("net:[") and key.endswith("]"):
        key = key[5:-1]
    return key == HOST or key.isdigit() or key.startswith("/")


def resolve(selectors, namespaces: list[Namespace]) -> list[Namespace]:
    """The namespaces --netns names: an ip-netns or display name (a pod's
    NAMESPACE/NAME, a container's name), an inode, or an nsfs path."""
    chosen: dict[int, Namespace] = {}
    by_ino = {ns.ino: ns for ns in namespaces}
    for sel in selectors:
        key = sel.strip()
        ino = None
        if key.startswith("net:[") and key.endswith("]"):
            key = key[5:-1]
        named = ([ns for ns in namespaces if ns.name == key or key in ns.aliases]
                 # the name as sockterm shows it (control characters escaped) names it too
                 or [ns for ns in namespaces if shown(ns.name) == key])
        if key.isdigit():
            ino = int(key)
            if ino not in by_ino:
                raise NamespaceError(0, f"no network namespace with inode {ino}")
        elif named and not key.startswith("/"):     # a pod's NAMESPACE/NAME is no path
            if len(named) > 1:      # container names are theirs to choose: never guess
                inos = ", ".join(str(ns.ino) for ns in named[:4])
                raise NamespaceError(0, f"{len(named)} network namespaces are named {key!r} "
                                        f"(inodes {inos}): give the inode")
            ino = named[0].ino
        elif "/" in key:
            ino = check_nsfs(key)
            if ino not in by_ino:
                by_ino[ino] = Namespace(ino=ino, name=key, path=key)
        else:
            raise NamespaceError(0, f"no network namespace named {key!r} (see 'ip netns' or 'sockterm list')")
        chosen[ino] = by_ino[ino]
    return list(chosen.values())


def run_in(ns: Namespace, fn, home: int):
    """fn() run inside ns by the calling thread, which must not be the main
    thread; the thread is back in its namespace `home` (an fd) afterwards."""
    if ns.ino == os.fstat(home).st_ino:
        return fn()      # already there: setns would need CAP_SYS_ADMIN even for this
    fd = None
    last = None
    for path in ns.paths():
        try:
            # O_NONBLOCK: a path swapped for a FIFO since discovery cannot block
            # the worker (the inode check below then refuses it)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            last = exc
            continue
        if os.fstat(fd).st_ino == ns.ino:
            break
        os.close(fd)   # the path was reused for another namespace
        fd = None
    if fd is None:
        # every way in failed, or leads elsewhere now (an `ip netns del` caught
        # between unmount and unlink, a pid reused): the namespace is gone for us
        raise NamespaceError(getattr(last, "errno", 0) or errno.ENOENT,
                             f"namespace {ns.name} is gone ({getattr(last, 'strerror', 'no path left')})")
    try:
        err = _setns(fd)
        if err:
            raise NamespaceError(err, f"cannot enter namespace {ns.name}: {os.strerror(err)}")
        try:
            return fn()
        finally:
            if _setns(home):   # never leave a thread elsewhere
                raise SystemExit("sockterm: cannot return to the original network namespace")
    finally:
        os.close(fd)


class Worker:
    """A dedicated thread that runs callables inside namespaces (for callers
    that are on the main thread and must stay where they are)."""

    def __init__(self):
        self._requests: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="sockterm-netns", daemon=True)
        self._thread.start()

    def _loop(self):
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            while True:
                item = self._requests.get()
                if item is None:
                    return
                ns, fn, reply = item
                try:
                    reply.put((True, run_in(ns, fn, home)))
                except BaseException as exc:     # handed to the caller, raised there
                    reply.put((False, exc))
        finally:
            os.close(home)

    def call(self, ns: Namespace, fn):
        """fn() run inside ns; its result, or its exception raised here."""
        reply: queue.Queue = queue.Queue(maxsize=1)
        self._requests.put((ns, fn, reply))
        ok, value = reply.get()
        if ok:
            return value
        raise value

    def close(self):
        self._requests.put(None)
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


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
        tcp, tw = _TCP4.search(stat4).groups()
        (udp,) = _UDP4.search(stat4).groups()
        (tcp6,) = _TCP6.search(stat6).groups()
        (udp6,) = _UDP6.search(stat6).groups()
        return Counts(tcp=int(tcp) + int(tcp6), tw=int(tw), udp=int(udp) + int(udp6),
                      opens=_opens(snmp))

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


# the counts read twice per namespace per run (one run may cover hundreds)
_TCP4 = re.compile(rb"^TCP: inuse (\d+) orphan \d+ tw (\d+)", re.M)
_UDP4 = re.compile(rb"^UDP: inuse (\d+)", re.M)
_TCP6 = re.compile(rb"^TCP6: inuse (\d+)", re.M)
_UDP6 = re.compile(rb"^UDP6: inuse (\d+)", re.M)


def _opens(snmp: bytes) -> int:
    """ActiveOpens + PassiveOpens from /proc/net/snmp's Tcp lines (names, then values)."""
    names, values = (line.split() for line in snmp.splitlines() if line.startswith(b"Tcp:"))
    row = dict(zip(names, values))
    return int(row[b"ActiveOpens"]) + int(row[b"PassiveOpens"])


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
    """Room for `count` more open files: raise the soft limit toward the hard
    one if need be (counters keep three files per namespace open)."""
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
        except (ValueError, OSError):
            pass


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
    for name in ("sockstat", "sockstat6"):
        try:
            with open(f"/proc/thread-self/net/{name}") as f:
                text = f.read()
        except OSError:
            return {"tcp": 1, "tcp_tw": 1, "udp": 1}   # cannot tell: assume busy
        for line in text.splitlines():
            proto, _, rest = line.partition(":")
            words = rest.split()
            fields = dict(zip(words[::2], words[1::2]))
            if proto in ("TCP", "TCP6"):
                counts["tcp"] += int(fields.get("inuse", 0))
                counts["tcp_tw"] += int(fields.get("tw", 0))
            elif proto in ("UDP", "UDP6"):
                counts["udp"] += int(fields.get("inuse", 0))
    return counts
