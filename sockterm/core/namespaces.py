"""Which namespaces a run covers, and the Scope it derives from the filter:
discovery, --netns resolved, pods and containers naming theirs,
--cgroup/--container/--pod and --pid/--comm turned into kernel ids; and
the namespaces that appear during a --watch window."""

from __future__ import annotations

import os
import time

from .. import model
from ..engine import Scope
from ..exitcodes import ExitCode
from ..filter import Filter
from ..host import cgroups, containers, netns, procs
from .report import Report, SocktermError

OTHERS_NEED_ROOT = "other network namespaces need root (CAP_SYS_ADMIN in the initial user namespace)"
# in a container of its own PID namespace /proc shows none of the host's processes,
# so neither their namespaces nor `host` can be found (only /run/netns's)
NOT_HOST_PID = ("searched only sockterm's own network namespace (and those in /run/netns): "
                "it is not in the host's PID namespace, so /proc shows none of the host's "
                "processes (run its container with --pid=host; in Kubernetes, hostPID: true)")
UNKNOWN_TTL = 1.0        # s: a namespace not found is not looked for again before this


def find_namespaces(flt: Filter, report: Report, log, node, host) -> tuple[list, dict, bool]:
    """The namespaces a run covers, named (pods and containers name theirs),
    the Scope fields --cgroup/--container/--pod resolved to, and whether the
    filter narrowed them to a set (--netns, --container, --pod) rather than
    every namespace there is."""
    # not root, or in a user namespace of its own: only where it runs, as ss
    own_only = not host.enters_other_namespaces
    found, skipped = netns.discover(own_only, host_only=netns.only_host(flt.netns))
    report.skipped.extend(skipped)
    for note in skipped:
        log(f"skipped {note}")
    if own_only and not flt.netns:
        report.warnings.append(f"searched only this process's network namespace: "
                               f"{OTHERS_NEED_ROOT}")
    elif not flt.netns and netns.kthreadd_netns() is None:
        report.warnings.append(NOT_HOST_PID)
    # pods and containers name their namespaces (--netns too), unless
    # --netns gave only inodes, paths or `host`: then only those are named
    by_identity = bool(flt.netns) and all(map(netns.is_identity, flt.netns))
    if not by_identity:
        node.attribute(found)
    if flt.netns:
        try:
            chosen = netns.resolve(flt.netns, found)
        except netns.NamespaceError as exc:
            if own_only:      # it may well exist: this caller cannot see it
                raise SocktermError(f"cannot search namespace {', '.join(flt.netns)}: "
                                    f"{OTHERS_NEED_ROOT}") from None
            raise SocktermError(str(exc.strerror or exc), ExitCode.USAGE) from None
        if own_only and any(ns not in found for ns in chosen):
            raise SocktermError(f"cannot search {chosen[-1].name}: {OTHERS_NEED_ROOT}")
        found = chosen
        if by_identity:
            node.attribute(found)
    narrowed, found_all = bool(flt.netns), len(found)
    found, owned = resolve_host_names(flt, found, node)
    return found, owned, narrowed or len(found) != found_all or bool(flt.containers or flt.pods)


def resolve_host_names(flt: Filter, namespaces: list, node) -> tuple[list, dict]:
    """--cgroup/--container/--pod become kernel ids (the Scope fields they
    fill), and the namespaces walked shrink to those that can hold what they
    select (host/containers.py)."""
    if not flt.on_host:
        return namespaces, {}
    try:
        owned, inos = containers.scope_for(flt, namespaces, node)
    except (containers.ContainerError, cgroups.CgroupError) as exc:
        raise SocktermError(str(exc), ExitCode.USAGE) from None
    if inos is not None:
        namespaces = [ns for ns in namespaces if ns.ino in inos]
    return namespaces, owned


def resolve_processes(flt: Filter) -> frozenset | None:
    """--pid/--comm become the set of socket inodes those processes hold."""
    if not (flt.pids or flt.comms):
        return None
    pids = set(flt.pids)
    if flt.comms:
        pids |= set(procs.pids_by_comm(flt.comms))
    return procs.inodes_of(sorted(pids))


def scope_for(flt: Filter, namespaces: list, owned: dict, cookies: frozenset | None) -> Scope:
    """The run's Scope: what it derived from the filter (owned: the fields
    --cgroup/--container/--pod resolved to), pinned to a plan's cookies."""
    return Scope(inodes=resolve_processes(flt), exclude_inodes=procs.own_inodes(),
                 cookies=cookies, namespaces=frozenset(ns.ino for ns in namespaces), **owned)


class Appearing:
    """The namespaces a --watch window covers: those found at its start, and,
    unless the filter narrowed them (--netns, --container, --pod), any that
    appears, found by the connecting process or by looking for every
    namespace again."""

    def __init__(self, found: list, narrowed: bool, node, log):
        self.known = {ns.ino: ns for ns in found}
        self.narrowed, self.node, self.log = narrowed, node, log
        self._unknown: dict = {}      # netns inode -> when it was last looked for in vain

    def find(self, ino: int, pid: int):
        ns = self.known.get(ino)
        if ns is not None or self.narrowed:
            return ns
        now = time.monotonic()
        if now - self._unknown.get(ino, -UNKNOWN_TTL) < UNKNOWN_TTL:
            return None
        started = time.perf_counter()
        ns = self._through(pid, ino) or self._discover(ino)
        self.log(f"watch: namespace net:[{ino}] " + (f"found as {ns.name}" if ns else "not found")
                 + f" in {(time.perf_counter() - started) * 1000:.1f} ms")
        if ns is None:
            self._unknown[ino] = now
            return None
        self.node.attribute([ns])
        self.known[ino] = ns
        return ns

    def _through(self, pid: int, ino: int):
        """The namespace of the process that connected, if it is still there
        (its name: its `ip netns` name, if it has one, else the process's)."""
        if not pid:
            return None
        path = f"/proc/{pid}/ns/net"
        try:
            if os.stat(path).st_ino != ino:
                return None
        except OSError:
            return None
        ns = model.Namespace(ino=ino, name="", path=path, pids=[pid])
        for directory in netns.netns_dirs():        # where discovery finds the names
            try:
                names = sorted(os.listdir(directory))
            except OSError:
                continue
            for name in names:
                named = os.path.join(directory, name)
                try:
                    if os.stat(named).st_ino == ino:
                        ns.name, ns.alt_paths = name, [named]
                        break
                except OSError:
                    continue
            if ns.name:
                break
        ns.name = ns.name or f"{procs.comm_of(pid) or '?'}[{pid}]"
        return ns

    def _discover(self, ino: int):
        found, _ = netns.discover()
        for ns in found:
            self.known.setdefault(ns.ino, ns)
        return self.known.get(ino)
