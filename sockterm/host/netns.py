"""Network namespaces: finding every one on the host, naming them, and
resolving what --netns names. Entering one is host/enter.py's; its socket
counts are host/sockstat.py's.
"""

from __future__ import annotations

import os
import stat

from ..model import HOST, Namespace, ns_order
from ..text import shown

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703   # _IO(0xb7, 0x3)


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

    def run(self, own_only: bool = False, host_only: bool = False) -> list[Namespace]:
        """Every namespace; with own_only, just sockterm's own (named as
        usual), for a caller who could not enter the others anyway; with
        host_only (--netns host), the host's found through kthreadd without
        looking at every process (names from `ip netns` as usual)."""
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
        if not own_only and not (host_only and host_path):
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


def discover(own_only: bool = False, host_only: bool = False) -> tuple[list[Namespace], list[str]]:
    d = Discovery()
    found = d.run(own_only, host_only)
    return found, d.skipped


def only_host(selectors) -> bool:
    """Do these --netns values name the host's namespace alone?"""
    return bool(selectors) and all(sel.strip() == HOST for sel in selectors)


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
    # name -> namespaces (a runbook may name hundreds: no scan per name)
    by_name: dict[str, list[Namespace]] = {}
    by_shown: dict[str, list[Namespace]] = {}
    for ns in namespaces:
        for name in dict.fromkeys([ns.name, *ns.aliases]):
            by_name.setdefault(name, []).append(ns)
        # the name as sockterm shows it (control characters escaped) names it too
        by_shown.setdefault(shown(ns.name), []).append(ns)
    for sel in selectors:
        key = sel.strip()
        ino = None
        if key.startswith("net:[") and key.endswith("]"):
            key = key[5:-1]
        named = by_name.get(key) or by_shown.get(key, [])
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
