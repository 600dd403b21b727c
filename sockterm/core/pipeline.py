"""The pipeline: filter -> namespaces -> engine -> report.

Three entry points, all streaming model.Sock objects into a Report:
  scan(flt)        list / match: what the filter selects, nothing touched
  plan(flt)        a scan kept whole: the selected sockets, pinned by cookie
  kill(flt|plan)   destroy what a filter selects (one pass: read and destroy),
                   or exactly a plan's sockets (each reported: killed, failed,
                   or gone when it closed or its namespace vanished since),
                   optionally paced (rate sockets a second)

Everything that can be refused up front (engine, privileges, --netns values,
the BPF object) raises SocktermError before any socket is touched. The
pipeline owns the namespace workers, the ordering, the accounting and
cancellation: once Options.cancel is set, no new destroy starts (at most the
batch in hand finishes) and everything already destroyed is reported.
Nothing here imports click or rich.

Where BPF can load, a run starts with the one pass (core/onepass.py): one
kernel pass over every process's descriptors finds the sockets processes
hold in every namespace; only the namespaces whose own counts say it missed
something are walked. The sockets of the others are listed as found, and
destroyed by exact tuple and cookie over netlink.
"""

from __future__ import annotations

import errno
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterator

from .. import model
from ..engine import EngineError, Scope
from ..exitcodes import ExitCode
from ..filter import Filter
from ..host import cgroups, containers, netns, probe, procs
from . import onepass, pacing, pool
from ..cancel import Cancel


class SocktermError(Exception):
    """A failure to report in one line, with the exit code it maps to."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE):
        super().__init__(message)
        self.code = code


class Refused(SocktermError):
    """A kill that will not start: more sockets match than the caller allowed.
    Nothing was killed; Report.refused says why."""


def _quiet(msg: str) -> None:
    pass


@dataclass
class Options:
    """How to run (what to select is the Filter)."""

    backend: str = "auto"              # auto | bpf | diag
    processes: bool = True             # attribute sockets to processes
    log: Callable[[str], None] = _quiet
    cancel: Cancel = field(default_factory=Cancel)
    walk: str = "auto"                 # auto | all | needed: which namespaces to walk (onepass.py)


@dataclass
class Report:
    engine: str = ""
    namespaces: list = field(default_factory=list)   # model.NamespaceReport
    skipped: list = field(default_factory=list)      # discovery notes (-v)
    warnings: list = field(default_factory=list)     # one line each, for stderr
    interrupted: bool = False      # a signal stopped the run before it was done
    signum: int = 0                # ... which one
    refused: str = ""              # a kill that refused to start: why (nothing killed)
    graceful: bool = False         # a kill --graceful: sockets shut down, not destroyed
    watch: object = None           # core.watch.WatchReport: what a --watch window did

    @property
    def matched(self) -> int:
        return sum(r.matched for r in self.namespaces)

    @property
    def killed(self) -> int:
        return sum(r.killed for r in self.namespaces)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.namespaces)

    @property
    def shut_down(self) -> int:
        return sum(r.shut_down for r in self.namespaces)

    @property
    def not_held(self) -> int:
        return sum(r.not_held for r in self.namespaces)

    @property
    def ns_errors(self) -> list:
        return [r for r in self.namespaces if r.error and not r.gone]

    def exit_code(self, kill: bool, signum: int = 0) -> int:
        """pkill's codes; 128 + the signal for a run a signal stopped (or that
        received one while it wrote its report)."""
        if signum or self.signum:
            return 128 + (signum or self.signum)
        if self.failed or self.ns_errors or getattr(self.watch, "ended", "") == "max":
            return ExitCode.FAILURE       # (a watch stopped by --max: more matched than allowed)
        if kill:
            return ExitCode.OK if self.killed or self.shut_down else ExitCode.NO_MATCH
        return ExitCode.OK if self.matched else ExitCode.NO_MATCH


@dataclass
class Plan:
    """The sockets a scan selected, to be killed exactly: pinned by cookie,
    so a socket that appears later is not part of what was agreed to."""

    flt: Filter
    engine: str
    sockets: list                      # model.Sock, processes attributed when asked
    namespaces: list                   # model.Namespace holding them
    walked: dict = field(default_factory=dict)   # netns inode -> walk_reason, for the
                                                 # namespaces the scan walked; the others'
                                                 # sockets came whole from the one pass
    searched: list = field(default_factory=list)  # the scan's NamespaceReports of the
                                                  # namespaces with nothing to kill

    @property
    def cookies(self) -> frozenset:
        return frozenset(s.cookie for s in self.sockets)


# -- entry points ------------------------------------------------------------------

def scan(flt: Filter, report: Report, options: Options | None = None) -> Iterator[model.Sock]:
    """The sockets flt selects, in every namespace it names (none is touched)."""
    run = _Run(flt, report, options or Options(), kill=False)
    run.prepare(run.find_namespaces())
    return run.stream()


def plan(flt: Filter, report: Report, options: Options | None = None, *,
         limit: int | None = None) -> Plan:
    """A scan kept whole (what a prompt shows). With a limit (--max), more
    matches than that refuse the kill: Refused, nothing touched."""
    socks = list(scan(flt, report, options))
    if limit is not None and len(socks) > limit:
        report.refused = f"{len(socks)} sockets match, more than --max {limit}"
        raise Refused(report.refused)
    by_ino = {r.ns.ino: r.ns for r in report.namespaces}
    held = {s.netns for s in socks}
    return Plan(flt=flt, engine=report.engine, sockets=socks,
                namespaces=[ns for ino, ns in by_ino.items() if ino in held],
                walked={r.ns.ino: r.walk_reason for r in report.namespaces if r.walked},
                searched=[r for r in report.namespaces if r.ns.ino not in held])


def kill(target: Filter | Plan, report: Report, options: Options | None = None, *,
         rate: float | None = None) -> Iterator[model.Sock]:
    """Destroy what a filter selects, or exactly what a plan holds; yield each
    socket with its result as it is settled. rate (sockets a second) paces a
    plan's destroys in batches; a filter is planned first when paced."""
    options = options or Options()
    if isinstance(target, Plan):
        the_plan = target
    elif rate:
        the_plan = plan(target, Report(), options)
    else:
        run = _Run(target, report, options, kill=True)
        run.prepare(run.find_namespaces())
        return run.stream()
    run = _Run(the_plan.flt, report, options, kill=True, planned=the_plan, paced=bool(rate))
    run.prepare(the_plan.namespaces)
    return run.stream_paced(rate) if rate else run.stream()


# -- one run -----------------------------------------------------------------------------

OTHERS_NEED_ROOT = "other network namespaces need root (CAP_SYS_ADMIN in the initial user namespace)"
# in a container of its own PID namespace /proc shows none of the host's processes,
# so neither their namespaces nor `host` can be found (only /run/netns's)
NOT_HOST_PID = ("searched only sockterm's own network namespace (and those in /run/netns): "
                "it is not in the host's PID namespace, so /proc shows none of the host's "
                "processes (run its container with --pid=host; in Kubernetes, hostPID: true)")


class _Run:
    def __init__(self, flt: Filter, report: Report, options: Options, *, kill: bool,
                 planned: Plan | None = None, paced: bool = False):
        self.flt, self.report, self.options = flt, report, options
        self.kill = kill
        self.planned = planned
        self.paced = paced              # a plan in small batches: never a walk for bulk
        self.cancel = options.cancel
        self.log = options.log
        self.engine = None
        self.source = None                       # what makes the one pass (a bpf engine)
        self.destroyer = None                    # netlink SOCK_DESTROY by exact tuple
        self._lookup = None                      # netlink lookups by exact tuple (no destroyer)
        self._bpf_failed = ""                    # why auto's BPF load failed
        self._fallback_lock = threading.Lock()
        self._closers: list = []
        self.held_socks: dict = {}               # netns inode -> Socks from the one pass
        self._dsocks: dict = {}                  # netns inode -> its netlink socket, made early
        self._counting = None                    # _Background opening the namespaces' counters
        self._host_tcp = None
        # kill(plan): cookie -> the planned Sock (for processes, and `gone` reports)
        self.by_cookie = {s.cookie: s for s in planned.sockets} if planned else {}
        self.node = containers.Node(log=self.log)   # containers and pods (cheap when none)
        self.owned: dict = {}                  # Scope fields --cgroup/--container/--pod resolved to

    # -- set-up: everything refusable is refused here ----------------------------
    def find_namespaces(self) -> list[model.Namespace]:
        self.host = probe.probe()
        found, self.owned, _ = find_namespaces(self.flt, self.report, self.log, self.node,
                                               self.host)
        return found

    def prepare(self, namespaces: list[model.Namespace]) -> None:
        if self.options.walk not in onepass.WALK_MODES:
            raise SocktermError(f"unknown walk mode {self.options.walk!r}: expected "
                                + ", ".join(onepass.WALK_MODES), ExitCode.USAGE)
        host = getattr(self, "host", None) or probe.probe()
        name = self.planned.engine if self.planned else choose_engine(
            self.options.backend, self.kill, host, self.log)
        self.report.engine = name
        missing = host.missing_caps(name, self.kill)
        if missing:
            command = "kill" if self.kill else "list"
            raise SocktermError(f"sockterm {command} needs {', '.join(missing)} (run it as root)")
        scope = Scope(inodes=resolve_processes(self.flt), exclude_inodes=procs.own_inodes(),
                      cookies=self.planned.cookies if self.planned else None,
                      namespaces=frozenset(ns.ino for ns in namespaces), **self.owned)
        self.scope = scope
        self.attribute = self.options.processes and not self.planned
        one_pass, why = self._one_pass_wanted(name, namespaces)
        self.nsrs = [model.NamespaceReport(ns=ns, engine=name)
                     for ns in sorted(namespaces, key=model.ns_order)]
        if one_pass:
            if self.kill:
                self._set_up_destroyer()
            # the namespaces' counters open (a setns each, for those without a
            # process) while the engine loads
            self._counting = _Background(lambda: self._open_counters(self.nsrs))
        try:
            self.engine, name = self._open_engine(name, one_pass)
        except BaseException:
            self._drop_counters()
            raise
        self.report.engine = name
        for nsr in self.nsrs:
            nsr.engine = name
        self.report.namespaces.extend(self.nsrs)
        if self.planned:
            # searched when the plan was made, nothing there to kill: the report
            # counts them (and a failure to search one) as a kill without a plan would
            self.report.namespaces.extend(replace(r) for r in self.planned.searched)
            self.report.namespaces.sort(key=lambda r: model.ns_order(r.ns))
            self.report.warnings.extend(_failure(r) for r in self.planned.searched
                                        if r.error and not r.gone)
        if one_pass:
            why = self._set_up_one_pass(name)
        if self.planned:
            self._set_up_plan()
        elif not self.source:
            self._drop_counters()
            self.log(f"no one pass ({why}): every namespace is walked")
            for nsr in self.nsrs:
                nsr.walk_reason = onepass.FORCED if self.options.walk == "all" else onepass.NO_ONE_PASS

    def _one_pass_wanted(self, name: str, namespaces) -> tuple[bool, str]:
        if self.planned:
            return False, ""
        if self.options.walk == "all":
            return False, "SOCKTERM_WALK=all"
        # the one pass visits every descriptor on the host: for a few namespaces
        # their walks cost less, unless the bpf engine's owner pass (the same
        # visit) runs anyway
        owner_pass = self.attribute and name == "bpf"
        if (self.options.walk == "auto" and not owner_pass
                and len(namespaces) < onepass.MIN_NAMESPACES):
            return False, f"{len(namespaces)} namespaces: walking them costs less"
        return True, ""

    def _open_engine(self, name: str, one_pass: bool):
        """(engine, its name): the engine opened, decided by what the kernel
        loads. auto's bpf becomes diag where the kernel refuses the socket
        iterators (the one-pass program, if it loaded, stays: it makes the
        pass); an explicit bpf (or a plan made with it) fails instead."""
        from .. import engine as engines
        common = dict(flt=self.flt, scope=self.scope, kill=self.kill, owners=self.attribute,
                      log=self.log)
        degrade = name == "bpf" and self.options.backend == "auto" and not self.planned
        try:
            engine = engines.create(name, held=one_pass and name == "bpf", **common)
        except EngineError as exc:
            if not degrade:
                raise _engine_error(name, exc) from None
            self.log(f"engine: diag (the BPF load failed: {exc})")
            self._bpf_failed = str(exc)         # not tried again for the one pass
            return self._open_diag(common), "diag"
        if name != "bpf" or engine.walks:
            return engine, name
        why = f"the kernel refused the socket iterators ({engine.lost.get('enumerate', '')})"
        if not degrade:
            engine.close()
            raise SocktermError(f"--backend bpf cannot run here: {why}; use --backend diag")
        self.log(f"engine: diag ({why})")
        if engine.one_pass:
            self.source = engine
            self._closers.append(engine)
        else:
            engine.close()
        return self._open_diag(common), "diag"

    def _open_diag(self, common: dict):
        from .. import engine as engines
        try:
            return engines.create("diag", **common)
        except EngineError as exc:
            raise _engine_error("diag", exc) from None

    def _set_up_one_pass(self, name: str) -> str:
        """The engine that makes the one pass; '' when it is there, else why not."""
        from .. import engine as engines
        if self.source is not None:
            return ""
        if self._bpf_failed:
            return f"BPF cannot load: {self._bpf_failed}"
        if name == "bpf":
            if not self.engine.one_pass:
                return f"the kernel refused its program: {self.engine.lost.get('one-pass', '')}"
            self.source = self.engine
            return ""
        try:
            self.source = engines.create("bpf", flt=self.flt, scope=self.scope, kill=False,
                                         owners=self.attribute, log=self.log,
                                         held=True, walks=False)
            self._closers.append(self.source)
        except EngineError as exc:
            self.source = None
            return f"BPF cannot load: {exc}"
        return ""

    def _set_up_destroyer(self) -> None:
        """Netlink SOCK_DESTROY for what the one pass finds (None: the kernel
        cannot; those namespaces are walked to kill)."""
        from .. import engine as engines
        try:
            self.destroyer = engines.destroyer(self.log)
        except EngineError as exc:
            self.log(f"one pass: {exc}; namespaces are walked to kill")

    def _drop_counters(self) -> None:
        if self._counting is not None:
            for found in (self._counting.result() or {}).values():
                if found is not None:
                    found.close()
            self._counting = None
        while self._dsocks:
            self._dsocks.popitem()[1].close()

    def _set_up_plan(self) -> None:
        """kill(plan): a namespace the scan found whole in the one pass has its
        sockets destroyed by exact tuple over netlink; the others are walked
        again, pinned to the plan's cookies."""
        held = [r for r in self.nsrs if r.ns.ino not in self.planned.walked]
        if held:
            from .. import engine as engines
            try:
                self.destroyer = engines.destroyer(self.log)
            except EngineError as exc:
                self.log(f"plan: {exc}; its namespaces are walked")
        counts: dict = {}
        for sock in self.planned.sockets:
            counts[sock.netns] = counts.get(sock.netns, 0) + 1
        for nsr in self.nsrs:
            if nsr.ns.ino in self.planned.walked:
                nsr.walk_reason = self.planned.walked[nsr.ns.ino]
            elif self.destroyer is None:
                nsr.walk_reason = onepass.NO_DESTROY
            elif not self.paced and self._bulk(counts.get(nsr.ns.ino, 0)):
                nsr.walk_reason = onepass.BULK
            else:
                nsr.walked = False

    # -- streaming ----------------------------------------------------------------------
    def stream(self) -> Iterator[model.Sock]:
        try:
            if self.source is not None:
                yield from self._one_pass()
            else:
                yield from self._pass(self.nsrs)
        finally:
            self._finish()

    def stream_paced(self, rate: float) -> Iterator[model.Sock]:
        """The plan in batches, at most `rate` sockets a second: ten batches a
        second, each a pass over the namespaces that hold its sockets."""
        nsr_of = {r.ns.ino: r for r in self.nsrs}
        start = time.monotonic()
        try:
            for part in pacing.batches(self.planned.sockets, rate, self.cancel):
                self.engine.pin(s.cookie for s in part)
                self.by_cookie = {s.cookie: s for s in part}
                held = {s.netns for s in part}
                self.log(f"paced batch of {len(part)} at {time.monotonic() - start:.2f} s")
                yield from self._pass([r for r in self.nsrs if r.ns.ino in held])
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.engine is not None:
            self.report.warnings.extend(self.engine.warnings)
            self.engine.close()
        for other in self._closers:
            other.close()
        self._drop_counters()
        if self.cancel.is_set():
            self.report.interrupted = True
            self.report.signum = self.cancel.signum

    def _one_pass(self) -> Iterator[model.Sock]:
        """Count, make the one pass, count again; walk only the namespaces
        whose counts disagree with what their processes hold."""
        counters = self._counting.result() or {}
        self._counting = None
        try:
            before = _read_counts(counters)
            certain = {r.ns.ino: onepass.certain_walk(self.flt, self.scope, before.get(r.ns.ino))
                       for r in self.nsrs}
            if not self.attribute and all(certain.values()):
                # every namespace is walked whatever the pass finds: skip it
                for nsr in self.nsrs:
                    nsr.walk_reason = certain[nsr.ns.ino]
                    self.log(f"namespace {nsr.ns.name}: walked ({nsr.walk_reason})")
                self.log("one pass skipped: every namespace needs a walk")
                yield from self._pass(self.nsrs)
                return
            started = time.monotonic()
            try:
                held = self.source.held([r.ns for r in self.nsrs])
            except (OSError, EngineError) as exc:
                self.log(f"no one pass ({exc}): every namespace is walked")
                for nsr in self.nsrs:
                    nsr.walk_reason = onepass.NO_ONE_PASS
                self.source = None
                yield from self._pass(self.nsrs)
                return
            after = _read_counts(counters)
        finally:
            for found in counters.values():
                if found is not None:
                    found.close()
        elapsed = time.monotonic() - started
        self.held_socks = held.by_namespace()
        walked = 0
        for nsr in self.nsrs:
            ino = nsr.ns.ino
            reason, detail = onepass.walk_reason(self.flt, self.scope, before.get(ino),
                                                 after.get(ino), held.counts.get(ino),
                                                 held.uncounted)
            if reason is None and self.kill:
                reason, detail = self._kill_reason(self.held_socks.get(ino, ()))
            elif reason is None:
                unknown = self.held_socks.uncookied(ino)
                if unknown and self._walk_cheaper(0, unknown):
                    reason, detail = onepass.COOKIE, (
                        f"{unknown} sockets the kernel has no cookie for yet: "
                        "the walk makes them for less than a lookup each")
            nsr.walked, nsr.walk_reason = reason is not None, reason
            walked += nsr.walked
            self.log(f"namespace {nsr.ns.name}: " + (f"walked ({reason}: {detail})" if reason
                                                     else f"not walked: {detail}"))
        self.log(f"one pass: {held.records} descriptors hold matching sockets, {elapsed * 1000:.0f} ms; "
                 f"{walked} of {len(self.nsrs)} namespaces to walk")
        # the pass's sockets carry their holders: only a walk's need the index
        owners = held.owners() if self.attribute and walked else None
        yield from self._pass(self.nsrs, owners=owners)

    def _kill_reason(self, socks) -> tuple[str | None, str]:
        """Why a namespace the pass found whole is walked to kill anyway."""
        if not socks:
            return None, "nothing to destroy"
        if self.destroyer is None:
            return onepass.NO_DESTROY, "netlink cannot destroy here"
        if onepass.reuseport_groups(socks):
            return onepass.REUSEPORT, "UDP servers share a port: destroyed in table order"
        if self._bulk(len(socks), _uncookied(socks)):
            return onepass.BULK, f"{len(socks)} sockets: the walk destroys them in the kernel for less"
        return None, f"{len(socks)} sockets to destroy by exact tuple"

    def _bulk(self, kills: int, lookups: int = 0) -> bool:
        # the diag engine's walk destroys over netlink too: it saves only lookups
        return self._walk_cheaper(kills if self.engine.destroys_while_reading else 0, lookups)

    def _walk_cheaper(self, kills: int, lookups: int) -> bool:
        if not (kills or lookups):
            return False
        if self._host_tcp is None:
            self._host_tcp = netns.host_tcp_sockets()
        return onepass.walk_cheaper(kills, self._host_tcp, lookups)

    def _open_counters(self, nsrs: list) -> dict:
        """netns inode -> its Counters (None: unreadable). Through a process in
        the namespace where there is one, else from a worker inside it, which
        (to kill) makes the namespace's netlink socket while it is there."""
        netns.reserve_descriptors(4 * len(nsrs))
        found, inside = {}, []
        for nsr in nsrs:
            counters = netns.Counters.of_process(nsr.ns)
            if counters is None:
                inside.append(nsr)
            found[nsr.ns.ino] = counters
        destroyer = self.destroyer

        def here():
            counters = netns.Counters.here()
            try:
                return counters, destroyer.enter() if destroyer else None
            except OSError:
                return counters, None

        def open_inside(nsr, entry, emit):
            try:
                emit((nsr.ns.ino, entry.call(nsr.ns, here)))
            except OSError:
                pass
        for ino, (counters, dsock) in pool.run(inside, open_inside, stop=self.cancel.is_set):
            found[ino] = counters
            if dsock is not None:
                self._dsocks[ino] = dsock
        return found

    def _pass(self, nsrs: list, owners=None) -> Iterator[model.Sock]:
        """One search of these namespaces, several at once (walks, and the one
        pass's sockets listed or destroyed); account each batch."""
        if self.cancel.is_set() or not nsrs:
            return
        attribution = None
        if owners is None and self.attribute and any(r.walked for r in nsrs):
            # a kill attributes before it reads (a killed socket's holder may
            # close it at once); a listing once something matched (when nothing
            # does, the host's descriptors are never scanned)
            attribution = _Attribution(self.engine, self.report, start=self.kill)
            owners = attribution
        ready = attribution.ready if attribution and self.kill else None

        def search(nsr, entry, emit):
            try:
                self._search(nsr, entry, emit, ready)
            finally:
                emit((nsr, None))              # this namespace is complete
        order = _InOrder(nsrs)
        try:
            try:
                for nsr, batch in pool.run(nsrs, search, stop=self.cancel.is_set):
                    if batch is not None:
                        self._account(nsr, batch, owners)
                    yield from order.take(nsr, batch)
            except Exception:
                yield from order.rest()        # what died before the failure is reported
                raise
            yield from order.rest()            # a stop: the namespaces it cut short
        finally:
            if attribution:
                attribution.finish()

    def _account(self, nsr, batch: list, owners) -> None:
        if isinstance(owners, _Attribution):
            owners = owners.result()        # a kill's reads waited for it already
        if owners is not None:
            held = owners.get
            for sock in batch:
                if sock.processes is None:
                    sock.processes = held(sock.ino)
        elif self.planned:
            for sock in batch:
                planned = self.by_cookie[sock.cookie]
                sock.processes, sock.place = planned.processes, planned.place
        if self.node.present and not self.planned:
            self.node.label(nsr.ns, batch)
        nsr.matched += len(batch)
        if self.kill:
            for sock in batch:
                if sock.result == model.KILLED:
                    nsr.killed += 1
                elif sock.result != model.GONE:
                    nsr.failed += 1

    # -- in a pool worker -----------------------------------------------------------
    def _search(self, nsr, entry: pool.Entry, emit, ready) -> None:
        if nsr.walked:
            self._namespace(nsr, entry, emit, ready)
        elif self.kill:
            self._destroy_held(nsr, entry, emit)
        else:
            socks = self.held_socks.pop(nsr.ns.ino, ())      # decoded now, then let go
            if any(not s.cookie for s in socks):
                socks = self._list_held_cookies(nsr, entry, emit, socks)
            for start in range(0, len(socks), HELD_BATCH):
                if self.cancel.is_set():
                    return
                emit((nsr, socks[start:start + HELD_BATCH]))

    def _list_held_cookies(self, nsr, entry: pool.Entry, emit, socks: list) -> list:
        """The held sockets to list, each with its cookie (see _held_cookies);
        [] when the namespace was walked instead."""
        try:
            dsock = entry.call(nsr.ns, self._netlink().enter)
        except OSError as exc:
            self._namespace_failed(nsr, exc, emit)
            return []
        try:
            found = self._held_cookies(nsr, dsock, socks)
        finally:
            dsock.close()
        if found is None:
            self._namespace(nsr, entry, emit, None)
            return []
        return found

    def _held_cookies(self, nsr, dsock, socks: list) -> list | None:
        """Cookies for the held sockets the pass found without one (the
        kernel makes a cookie when first asked: resolve_cookies). One that
        closed since is dropped (a walk would not have found it either). None
        when another socket answered for one's tuple (a reuseport group, a
        successor): the namespace is then walked (nsr says so)."""
        try:
            left = self._netlink().resolve(dsock, socks)
        except (OSError, EngineError) as exc:
            left, why = socks, str(exc)
        else:
            why = "another socket answers for its tuple"
        if any(s.error != errno.ENOENT for s in left):
            nsr.walked, nsr.walk_reason = True, onepass.COOKIE
            self.log(f"namespace {nsr.ns.name}: walked ({onepass.COOKIE}: a held socket's "
                     f"cookie could not be had: {why})")
            return None
        return [s for s in socks if s.cookie]

    def _netlink(self):
        """Netlink requests by exact tuple: the destroyer when the run has one."""
        with self._fallback_lock:
            if self.destroyer is None and self._lookup is None:
                from .. import engine as engines
                self._lookup = engines.destroyer(self.log, check=False)
            return self.destroyer or self._lookup

    def _held_targets(self, nsr) -> list:
        """What to destroy in a namespace the one pass found whole: the
        planned sockets (fresh copies), or the pass's own (the kernel applied
        the filter and the Scope to them, as it does to what the bpf engine's
        walks destroy)."""
        ino = nsr.ns.ino
        if self.planned:
            return [_copy(s) for s in self.by_cookie.values() if s.netns == ino]
        return list(self.held_socks.get(ino, ()))

    def _destroy_held(self, nsr, entry: pool.Entry, emit) -> None:
        """Destroy by exact tuple and cookie over netlink, from a socket made
        inside the namespace; a socket already gone is reported `gone`."""
        socks = self._held_targets(nsr)
        if not socks:
            return
        ns, destroyer = nsr.ns, self.destroyer
        dsock = self._dsocks.pop(ns.ino, None)
        try:
            if dsock is None:
                dsock = entry.call(ns, destroyer.enter)
        except OSError as exc:
            self._namespace_failed(nsr, exc, emit)
            return
        if any(not s.cookie for s in socks):
            socks = self._held_cookies(nsr, dsock, socks)
            if socks is None:
                destroyer.release(dsock)
                self._namespace(nsr, entry, emit, None)
                return
        stop = self.cancel.is_set
        try:
            for start in range(0, len(socks), HELD_BATCH):
                if stop():
                    return
                batch = socks[start:start + HELD_BATCH]
                try:
                    destroyer.destroy(dsock, batch, stop)
                except OSError as exc:
                    # what died before the failure is reported all the same
                    settled = [s for s in batch if s.result != model.MATCHED]
                    if settled:
                        emit((nsr, settled))
                    self._namespace_failed(nsr, exc, emit)
                    return
                if start == 0 and any(s.error == errno.EOPNOTSUPP for s in batch):
                    break          # netlink cannot here: the walk's destroy may
                emit((nsr, [s for s in batch if s.result != model.MATCHED]))
            else:
                return
        finally:
            destroyer.release(dsock)
        self.log(f"namespace {ns.name}: netlink cannot destroy here; walking it")
        nsr.walked, nsr.walk_reason = True, onepass.NO_DESTROY
        self._namespace(nsr, entry, emit, None)

    def _namespace(self, nsr, entry: pool.Entry, emit, ready) -> None:
        """One namespace: enter, read (and destroy), emit batches. Its failure
        is recorded on nsr, never raised."""
        ns, engine = nsr.ns, self.engine
        seen: set = set()
        done = False
        try:
            handle = entry.call(ns, engine.enter)
        except (OSError, EngineError) as exc:
            self._namespace_failed(nsr, exc, emit)
            return
        # a kill's sockets are attributed before any is destroyed (its holder may
        # close it at once): before reading where reading destroys, else the
        # reads overlap the owner pass and only the destroys wait for it
        early = getattr(engine, "destroys_while_reading", True)
        try:
            if handle is not None:
                if ready is not None and early:
                    ready.wait()
                reading = engine.read(handle, ns)
                try:
                    # reading may destroy (bpf kill): ask for the next batch
                    # only while no stop was requested
                    while not self.cancel.is_set():
                        batch = next(reading, None)
                        if batch is None:
                            done = True
                            break
                        if self.kill:
                            if ready is not None and not early:
                                ready.wait()
                            try:
                                batch = self._settle(entry, ns, handle, batch)
                            except (OSError, EngineError):
                                # what died before the failure is reported all the same
                                settled = [s for s in batch if s.result not in
                                           (model.MATCHED, model.DEFERRED)]
                                if settled:
                                    emit((nsr, settled))
                                raise
                        seen.update(s.cookie for s in batch)
                        if batch:
                            emit((nsr, batch))
                finally:
                    reading.close()
            else:
                done = True
        except (OSError, EngineError) as exc:
            self._namespace_failed(nsr, exc, emit)
            return
        finally:
            if handle is not None:
                engine.release(handle)
        if done and self.planned:
            self._emit_gone(nsr, seen, emit)

    def _settle(self, entry, ns, handle, batch: list) -> list:
        """Destroy what reading did not, learn the truth about what it did;
        the sockets no destroy was attempted on (a stop came) are dropped."""
        stop = self.cancel.is_set
        self.engine.destroy(handle, batch, stop)
        deferred = [s for s in batch if s.result == model.DEFERRED]
        if deferred:
            if stop():
                for sock in deferred:
                    sock.result = model.MATCHED
            else:
                self._destroy_deferred(entry, ns, deferred)
        return [s for s in batch if s.result != model.MATCHED]

    def _destroy_deferred(self, entry, ns, socks: list) -> None:
        """TIME_WAIT and request sockets have no full struct sock for the
        kfunc: netlink SOCK_DESTROY takes them."""
        try:
            destroyer = self._netlink_destroyer()
            dsock = entry.call(ns, destroyer.enter)
        except (OSError, EngineError) as exc:
            for sock in socks:
                model.set_error(sock, getattr(exc, "errno", None) or errno.EOPNOTSUPP)
            self.report.warnings.append(f"time-wait/syn-recv sockets not destroyed: {exc}")
            return
        try:
            for sock in socks:
                sock.result = model.MATCHED
            destroyer.destroy(dsock, socks, self.cancel.is_set)
        finally:
            destroyer.release(dsock)

    def _netlink_destroyer(self):
        with self._fallback_lock:
            if self.destroyer is None:
                from .. import engine as engines
                self.destroyer = engines.destroyer(self.log)
            return self.destroyer

    def _emit_gone(self, nsr, seen: set, emit) -> None:
        """Planned sockets of this namespace that the kill pass did not find:
        they closed (or left the filter) after they were counted."""
        gone = []
        for sock in self.by_cookie.values():
            if sock.netns == nsr.ns.ino and sock.cookie not in seen:
                gone.append(_gone_copy(sock))
        if gone:
            emit((nsr, gone))

    def _namespace_failed(self, nsr, exc, emit) -> None:
        # only the namespace itself vanishing is benign; any other ENOENT is a failure
        gone = isinstance(exc, netns.NamespaceError) and exc.errno in (errno.ENOENT, errno.ESRCH)
        nsr.gone = gone
        nsr.error = str(getattr(exc, "strerror", None) or exc)
        self.log(f"namespace {nsr.ns.name}: {nsr.error}")
        if not gone:
            self.report.warnings.append(_failure(nsr))
        elif self.planned:
            self._emit_gone(nsr, set(), emit)


HELD_BATCH = 256      # sockets of the one pass per batch: destroys between two stop checks


def _failure(nsr) -> str:
    return f"namespace {nsr.ns.name} ({nsr.ns.ino}): {nsr.error}"


class _InOrder:
    """Namespaces are searched several at once and finish in any order; their
    sockets leave one namespace at a time, in the run's order (model.ns_order),
    each namespace's sorted (model.sock_order), so two runs over the same
    sockets say the same thing in the same order. A namespace waits only for
    those before it, which the pool started first."""

    def __init__(self, nsrs: list):
        self.queue = [id(r) for r in nsrs]
        self.held: dict = {key: [] for key in self.queue}
        self.done: set = set()

    def take(self, nsr, batch: list | None) -> list:
        """A batch of nsr's sockets, or None when nsr is complete; returns
        what may leave now."""
        if batch is None:
            self.done.add(id(nsr))
        else:
            self.held[id(nsr)].extend(batch)
        out: list = []
        while self.queue and self.queue[0] in self.done:
            out += self._sorted(self.queue.pop(0))
        return out

    def rest(self) -> list:
        """Everything held, in order, whether its namespace completed or not."""
        out: list = []
        while self.queue:
            out += self._sorted(self.queue.pop(0))
        return out

    def _sorted(self, key) -> list:
        socks = self.held.pop(key)
        socks.sort(key=model.sock_order)
        return socks


class _Background(threading.Thread):
    """fn() on a thread of its own; result() waits for it (None if it failed:
    what it was for is then done without it)."""

    def __init__(self, fn):
        super().__init__(name="sockterm-setup", daemon=True)
        self._fn, self._value = fn, None
        self.start()

    def run(self):
        try:
            self._value = self._fn()
        except (OSError, EngineError):
            self._value = None

    def result(self):
        self.join()
        return self._value


def _read_counts(counters: dict) -> dict:
    out = {}
    for ino, found in counters.items():
        try:
            out[ino] = found.read() if found is not None else None
        except OSError:
            out[ino] = None
    return out


def _uncookied(socks) -> int:
    """How many of the one pass's sockets have no cookie yet (see _held_cookies)."""
    return sum(1 for s in socks if not s.cookie)


def _copy(sock: model.Sock) -> model.Sock:
    return model.Sock(sock.netns, sock.family, sock.proto, sock.state, sock.src, sock.sport,
                      sock.dst, sock.dport, sock.cookie, sock.uid, sock.ino,
                      netns_name=sock.netns_name, mini=sock.mini, ifindex=sock.ifindex)


def _gone_copy(sock: model.Sock) -> model.Sock:
    copy = _copy(sock)
    model.set_error(copy, errno.ENOENT)
    return copy


class _Attribution(threading.Thread):
    """The host-wide owner pass, run while the workers enter namespaces and
    create their iterators (a kill's), or once something matched (a
    listing's); `ready` holds every destroy back until it is done (and every
    read, where reading destroys), so a killed socket is attributed before
    its application can react and close it."""

    def __init__(self, engine, report: Report, start: bool = True):
        super().__init__(name="sockterm-owners", daemon=True)
        self.engine, self.report = engine, report
        self.owners = None
        self.ready = threading.Event()
        self.begun = False
        if start:
            self.begin()

    def begin(self) -> None:
        if not self.begun:
            self.begun = True
            self.start()

    def result(self):
        """The owners (None: attribution failed), started now if it was not."""
        self.begin()
        self.ready.wait()
        return self.owners

    def finish(self) -> None:
        if self.begun:
            self.join()

    def run(self):
        try:
            self.owners = self.engine.owners()
        except (OSError, EngineError) as exc:     # attribution informs; it never stops a run
            self.report.warnings.append(f"processes not shown: {exc}")
        finally:
            self.ready.set()


def _engine_error(name: str, exc) -> SocktermError:
    from .. import engine as engines
    if isinstance(exc, engines.CannotDestroy):
        return SocktermError(cannot_destroy(probe.probe(), name))
    return SocktermError(f"{name} engine: {exc}", exc.code)


GRACEFUL_INSTEAD = "kill --graceful shuts connections down through the processes holding them instead"


def cannot_destroy(host: probe.HostProbe, engine: str) -> str:
    """One line for a kill on a kernel that refuses engine's destroys."""
    if not host.bpf_can_kill:
        return ("this kernel can destroy no socket: it has neither the bpf_sock_destroy kfunc "
                "(Linux >= 6.5) nor SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY); " + GRACEFUL_INSTEAD)
    return (f"{engine} engine: the kernel cannot destroy sockets over netlink (no "
            f"CONFIG_INET_DIAG_DESTROY): use --backend bpf, or {GRACEFUL_INSTEAD}")


def find_namespaces(flt: Filter, report: Report, log, node, host) -> tuple[list, dict, bool]:
    """The namespaces a run covers, named (pods and containers name theirs),
    the Scope fields --cgroup/--container/--pod resolved to, and whether the
    filter narrowed them to a set (--netns, --container, --pod) rather than
    every namespace there is."""
    # not root, or in a user namespace of its own: only where it runs, as ss
    own_only = not host.enters_other_namespaces
    found, skipped = netns.discover(own_only)
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


def choose_engine(backend: str, kill: bool, host: probe.HostProbe, log) -> str:
    if backend == "auto":
        why = host.auto_why()
        name = "diag" if why else "bpf"
        log(f"engine: {name}" + (f" ({why})" if why else " (BTF, socket iterators and bpf_sock_destroy present)"))
        return name
    if backend == "bpf":
        why = host.why_not_bpf(kill)
        if why:
            raise SocktermError(f"--backend bpf cannot run here: {why}; use --backend diag")
    return backend


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
