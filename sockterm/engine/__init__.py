"""Engines: what only a kernel interface knows.

An engine is opened once per run with the Filter (what the user wrote) and
the run's Scope (what the run derived from it), then asked, per namespace:

  enter()                 inside the namespace (a pool worker that entered it):
                          set up whatever reads it — iterators, a netlink
                          socket — or return None when it has nothing to read
  read(handle, ns)        from any thread: the matching sockets, in batches;
                          in kill mode an engine may destroy as it reads (the
                          bpf kfunc runs inside the iterator), setting results
  destroy(handle, socks)  destroy what is still unattempted (result MATCHED) and
                          settle what reading destroyed; leave what this engine
                          cannot take as DEFERRED (the core hands those on)
  release(handle)

plus owners() (who holds the sockets, host-wide) and close(). The bpf engine
also makes the one pass, held(): every socket every process holds, host-wide,
and what each namespace's processes hold in all (see core/decide.py).

The core never asks an engine's name; it reads what an engine can do:
before opening, its Capabilities (CAPABILITIES below); once open, what the
kernel loaded: walks (enter()/read() work), one_pass (held() works), lost
(capability -> why the kernel refused its program), and destroys_while_reading
(a kill's read() destroys, so the owners must be known before it; otherwise
only before destroy()). What an engine needs from the host (which protocols
a namespace uses, who holds a socket, the capabilities it runs with) the core
hands it as a HostFacts, so engines import only their kernel interface.
Threads, ordering, accounting and cancellation are the core's (sockterm.core).
  bpf  - socket iterators + the bpf_sock_destroy kfunc (kernel >= 6.5)
  diag - NETLINK_SOCK_DIAG dumps + SOCK_DESTROY, as `ss -K` does
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from ..exitcodes import ExitCode

NAMES = ("auto", "bpf", "diag")


class Capabilities(NamedTuple):
    """What an engine can do, known before it is opened."""

    one_pass: bool = False            # held(): the one pass, host-wide
    owners_in_one_pass: bool = False  # owners() is the one pass's visit of every descriptor
    refusable: bool = False           # the kernel may refuse its programs: auto then runs FALLBACK
    destroys_while_reading: bool = False  # a kill's walk destroys as it reads (the kfunc)


CAPABILITIES = {
    "bpf": Capabilities(one_pass=True, owners_in_one_pass=True, refusable=True,
                        destroys_while_reading=True),
    "diag": Capabilities(),
}
FALLBACK = "diag"           # what auto runs where the kernel refuses the other's walks
ONE_PASS = "bpf"            # the engine that makes the one pass, whichever engine walks


def silent(msg: str) -> None:
    """The log of a run whose log nobody reads (no -v): where an engine's log
    is this, it may skip work whose only product is log lines (libbpf's)."""


def known_kernel_features() -> dict[str, bool] | None:
    """What the bpf engine's cached BTF says of this kernel (written when it
    was made from the kernel's BTF: engine/bpf/btfcache.py), in
    host/probe.py's terms: the TCP and UDP socket iterators, the
    bpf_sock_destroy kfunc. None where nothing is cached for this kernel."""
    from .bpf import btfcache
    from .bpf.objects import OBJECT_NAME, READ_OBJECT_NAME, object_path
    for name in (READ_OBJECT_NAME, OBJECT_NAME):        # a listing's, a kill's
        found = btfcache.custom_btf(object_path(name), make=False)
        if found is not None and "bpf_sock_destroy" in found.kfuncs:
            return {"iter_tcp": "iter/tcp" in found.attach, "iter_udp": "iter/udp" in found.attach,
                    "sock_destroy_kfunc": found.kfuncs["bpf_sock_destroy"] > 0}
    return None


def capabilities(name: str) -> Capabilities:
    return CAPABILITIES.get(name, Capabilities())


class HostFacts(NamedTuple):
    """What the host knows that an engine asks for, handed in by the core."""

    busy_protocols: Callable      # () -> protocols with sockets, in the namespace it runs in
    owners: Callable              # () -> model.Owners: who holds each socket, from /proc
    effective_caps: Callable      # () -> the capabilities this process runs with

    @classmethod
    def here(cls) -> "HostFacts":
        """This host's, read through host/ (the core's; also what a caller
        that opens an engine directly gets: doctor, the tests)."""
        from ..host import probe, procs, sockstat
        return cls(busy_protocols=sockstat.busy_protocols, owners=procs.owners_from_proc,
                   effective_caps=probe.effective_caps)


class EngineError(RuntimeError):
    """An engine cannot run on this host; the message says why, in one line."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE):
        super().__init__(message)
        self.code = code


class CannotDestroy(EngineError):
    """The kernel refuses every destroy of this engine's kind (no
    CONFIG_INET_DIAG_DESTROY): nothing to retry, another way is needed."""


class Scope(NamedTuple):
    """What a run derived from the filter, kept apart from it: the socket
    inodes --pid/--comm resolved to, the cookies a kill is pinned to (what
    was confirmed or counted), sockterm's own sockets, the namespaces the run
    covers, and what --cgroup, --container and --pod resolved to on the host
    (host/containers.py)."""

    inodes: frozenset | None = None       # None: no process option
    cookies: frozenset | None = None      # None: not pinned
    exclude_inodes: frozenset = frozenset()
    namespaces: frozenset | None = None   # inodes of the namespaces the run covers
    cgroup_ids: frozenset | None = None   # --cgroup: the socket's cgroup is one of these
    # --container/--pod (owned_netns None: not given): a namespace wholly
    # theirs, or a socket their processes hold, or one created in their cgroups
    owned_netns: frozenset | None = None
    owned_inodes: frozenset = frozenset()
    owned_cgroups: frozenset = frozenset()

    @property
    def reads_cgroup(self) -> bool:
        """Must an engine know each socket's cgroup to decide?"""
        return self.cgroup_ids is not None or bool(self.owned_cgroups)

    def admits(self, sock) -> bool:
        if sock.ino and sock.ino in self.exclude_inodes:
            return False
        if self.inodes is not None and sock.ino not in self.inodes:
            return False
        if self.cookies is not None and sock.cookie not in self.cookies:
            return False
        if self.cgroup_ids is not None and sock.cgroup not in self.cgroup_ids:
            return False
        return self.owned_netns is None or (
            sock.netns in self.owned_netns or (sock.ino and sock.ino in self.owned_inodes)
            or (sock.cgroup and sock.cgroup in self.owned_cgroups))


def create(name: str, *, flt, scope: Scope = Scope(), kill: bool, owners: bool = True, log=None,
           held: bool = False, walks: bool = True, host: HostFacts | None = None):
    """The engine called `name` ('bpf' or 'diag'), opened and ready to read.
    held: held() will be asked (where the engine can make the one pass);
    walks=False: only held() and owners(), nothing loaded to walk with."""
    try:
        if name == "bpf":
            from .bpf.engine import BpfEngine as cls
        elif name == "diag":
            from .diag.engine import DiagEngine as cls
        else:
            raise EngineError(f"unknown engine {name!r}", ExitCode.USAGE)
    except ImportError as exc:
        raise EngineError(f"the {name} engine cannot be imported ({exc}): reinstall sockterm") from None
    engine = cls(flt=flt, scope=scope, kill=kill, owners=owners, log=log or silent,
                 held=held, walks=walks, host=host or HostFacts.here())
    try:
        engine.open()
    except BaseException:
        engine.close()
        raise
    return engine


def destroyer(log=None, check: bool = True):
    """Netlink SOCK_DESTROY (and lookups) by exact tuple and cookie, whichever
    engine runs (engine/diag/destroy.py: Destroyer); with `check`, checked to
    destroy here (lookups alone need no check)."""
    from .diag.destroy import Destroyer
    found = Destroyer(log or silent)
    if check:
        found.open()
    return found
