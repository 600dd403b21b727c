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

Where BPF can load, a run starts with the one pass: one kernel pass over
every process's descriptors finds the sockets processes hold in every
namespace; only the namespaces whose own counts say it missed something are
walked (decide.py). The sockets of the others are listed as found, and
destroyed by exact tuple and cookie over netlink (held.py).

The stages, each in a module of its own:
  namespaces.py  which namespaces, and the run's Scope
  engines.py     which engine, opened; the one pass's engine; netlink requests
  decide.py      walk or not, and why: pure functions of counts
  onepass.py     counters, the one pass, and each namespace's walk decided
  execute.py     the pool's search: walks, destroys, accounting, order
  held.py        the one pass's sockets: listed, or destroyed over netlink
  policy.py      a kill's policy: targeting, plan first, --max, refusals, audit
  report.py      Report, Plan, errors
"""

from __future__ import annotations

import threading
import time
from typing import Iterator

from .. import model
from ..engine import EngineError, capabilities, known_kernel_features
from ..exitcodes import ExitCode
from ..filter import Filter
from ..host import containers, probe, procs, sockstat
from . import decide, engines, execute, namespaces, onepass, pacing, policy
from .report import Options, Plan, Refused, Report, SocktermError, failure

__all__ = ["Options", "Plan", "Refused", "Report", "SocktermError", "kill", "plan", "scan"]


# -- entry points ------------------------------------------------------------------

def scan(flt: Filter, report: Report, options: Options | None = None, *,
         planning: bool = False) -> Iterator[model.Sock]:
    """The sockets flt selects, in every namespace it names (none is touched).
    planning: the scan of a plan, which a kill will act on."""
    run = _Run(flt, report, options or Options(), kill=False, planning=planning)
    run.prepare(run.find_namespaces())
    return run.stream()


def plan(flt: Filter, report: Report, options: Options | None = None, *,
         limit: int | None = None) -> Plan:
    """A scan kept whole (what a prompt shows). With a limit (--max), more
    matches than that refuse the kill: Refused, nothing touched."""
    socks = list(scan(flt, report, options, planning=True))
    policy.too_many(report, len(socks), limit)
    by_ino = {r.ns.ino: r.ns for r in report.namespaces}
    holding = {s.netns for s in socks}
    return Plan(flt=flt, engine=report.engine, sockets=socks,
                namespaces=[ns for ino, ns in by_ino.items() if ino in holding],
                walked={r.ns.ino: r.walk_reason for r in report.namespaces if r.walked},
                searched=[r for r in report.namespaces if r.ns.ino not in holding])


def kill(target: Filter | Plan, report: Report, options: Options | None = None, *,
         rate: float | None = None) -> Iterator[model.Sock]:
    """Destroy what a filter selects, or exactly what a plan holds; yield each
    socket with its result as it is settled. rate (sockets a second) paces a
    plan's destroys in batches (plan() first: what is paced is fixed)."""
    options = options or Options()
    if not isinstance(target, Plan):
        if rate:
            raise ValueError("kill(rate=...) paces a plan: plan() first")
        run = _Run(target, report, options, kill=True)
        run.prepare(run.find_namespaces())
        return run.stream()
    run = _Run(target.flt, report, options, kill=True, planned=target, paced=bool(rate))
    run.prepare(target.namespaces)
    return run.stream_paced(rate) if rate else run.stream()


# -- one run -----------------------------------------------------------------------------

class _Run:
    """One scan or kill: what it found out while setting up (the stage
    modules read and fill it), then its stream."""

    def __init__(self, flt: Filter, report: Report, options: Options, *, kill: bool,
                 planned: Plan | None = None, paced: bool = False, planning: bool = False):
        self.flt, self.report, self.options = flt, report, options
        self.kill = kill
        self.planning = planning        # the scan of a plan (scan(planning=True))
        self.planned = planned
        self.paced = paced              # a plan in small batches: never a walk for bulk
        self.cancel = options.cancel
        self.log = options.log
        self.engine = None                       # what walks: walk_engine()
        self.engine_name = ""
        self._opening = threading.Lock()         # walk_engine(): one thread opens it
        self._walk_error: SocktermError | None = None
        self.source = None                       # what makes the one pass (a bpf engine)
        self.netlink = engines.Netlink(self.log)   # SOCK_DESTROY and lookups by exact tuple
        self.bpf_failed = ""                     # why auto's BPF load failed
        self.closers: list = []
        self.held_socks: dict = {}               # netns inode -> Socks from the one pass
        self.dsocks: dict = {}                   # netns inode -> its netlink socket, made early
        self.counting = None                     # _Background opening the namespaces' counters
        self._host_tcp = None
        # kill(plan): cookie -> the planned Sock (for processes, and `gone` reports)
        self.by_cookie = {s.cookie: s for s in planned.sockets} if planned else {}
        self.node = containers.Node(log=self.log)   # containers and pods (cheap when none)
        self.owned: dict = {}                  # Scope fields --cgroup/--container/--pod resolved to

    # -- set-up: everything refusable is refused here ----------------------------
    def find_namespaces(self) -> list[model.Namespace]:
        self.host = probe.probe(known=known_kernel_features)
        found, self.owned, _ = namespaces.find_namespaces(self.flt, self.report, self.log,
                                                          self.node, self.host)
        return found

    def prepare(self, found: list[model.Namespace]) -> None:
        if self.options.walk not in decide.WALK_MODES:
            raise SocktermError(f"unknown walk mode {self.options.walk!r}: expected "
                                + ", ".join(decide.WALK_MODES), ExitCode.USAGE)
        host = getattr(self, "host", None) or probe.probe(known=known_kernel_features)
        name = self.planned.engine if self.planned else engines.choose_engine(
            self.options.backend, self.kill, host, self.log)
        self.report.engine = name
        missing = host.missing_caps(name, self.kill)
        if missing:
            command = "kill" if self.kill else "list"
            raise SocktermError(f"sockterm {command} needs {', '.join(missing)} (run it as root)")
        self.scope = namespaces.scope_for(self.flt, found, self.owned,
                                          self.planned.cookies if self.planned else None)
        self.attribute = self.options.processes and not self.planned
        # the engine's owner pass is the one pass's visit: a kill, and the
        # scan of a plan (every socket it keeps is attributed, and kill
        # --graceful takes their descriptors from the pass), make it anyway;
        # a listing only once something matched
        one_pass, why = decide.one_pass_wanted(
            self.options.walk, planned=bool(self.planned), namespaces=len(found),
            owner_pass=(self.attribute and (self.kill or self.planning)
                        and capabilities(name).owners_in_one_pass))
        self.nsrs = [model.NamespaceReport(ns=ns, engine=name)
                     for ns in sorted(found, key=model.ns_order)]
        late = one_pass and self._walks_open_late(name)
        if one_pass:
            if self.kill:
                self.netlink.open("one pass", "namespaces are walked to kill")
            # the namespaces' counters open (a setns each, for those without a
            # process) while the engine loads, in descriptors reserved here,
            # while this thread is the process's only one
            sockstat.reserve_descriptors(4 * len(self.nsrs))
            self.counting = _Background(lambda: onepass.open_counters(self, self.nsrs))
        try:
            if late:
                why = engines.open_one_pass(self, name)
                if self.source is None:     # no one pass: every namespace is walked
                    late = one_pass = False
            if not late:
                self.engine, name = engines.open_engine(self, name, one_pass)
        except BaseException:
            self._drop_counters()
            raise
        self._name_engine(name)
        self.report.namespaces.extend(self.nsrs)
        if self.planned:
            # searched when the plan was made, nothing there to kill: the report
            # counts them (and a failure to search one) as a kill without a plan would
            self.report.namespaces.extend(r.copy() for r in self.planned.searched)
            self.report.namespaces.sort(key=lambda r: model.ns_order(r.ns))
            self.report.warnings.extend(failure(r) for r in self.planned.searched
                                        if r.error and not r.gone)
        if one_pass and not late:       # where it opens late, the one pass's engine opened first
            why = engines.open_one_pass(self, name)
        if self.planned:
            self._set_up_plan()
        elif not self.source:
            self._drop_counters()
            self.log(f"no one pass ({why}): every namespace is walked")
            for nsr in self.nsrs:
                nsr.walk_reason = decide.without_one_pass(self.options.walk)

    def _walks_open_late(self, name: str) -> bool:
        """Is the walk engine opened only when a namespace needs a walk? Where
        the one pass makes it and auto may fall back (a kill or a listing
        without a plan): the pass may leave nothing to walk, and a kill's walk
        programs cost their verification and the kfunc's read of the kernel's
        whole BTF (~22 ms of a kill in four namespaces here). An engine asked
        for by name, and a plan's, are opened up front: refused there, before
        anything is touched."""
        can = capabilities(name)
        return (can.one_pass and can.refusable and self.options.backend == "auto"
                and not self.planned and not self.planning)

    def walk_engine(self):
        """The engine the walks use, opened on first use where it opens late
        (any thread may ask; the first opens it, home, out of any namespace).
        Under auto a refusal of its programs makes it the fallback, and the
        report says so; a failure to open even that is each walk's failure."""
        if self.engine is None:
            with self._opening:
                if self.engine is None:
                    if self._walk_error is not None:
                        raise self._walk_error
                    try:
                        engine, name = engines.open_engine(self, self.engine_name, False)
                    except SocktermError as exc:
                        self._walk_error = exc
                        raise
                    self._name_engine(name)
                    self.engine = engine
        return self.engine

    def owners(self) -> model.Owners:
        """Who holds the sockets the walks find (the walks' attribution, from
        any thread). An engine that makes the one pass answers with its own
        owner pass. The netlink engine's answer is /proc: every process's
        descriptors read, ~6 us an open file on the host (~3 s at 500,000
        sockets). Where that costs more than loading the one pass's owner
        pass (decide.owners_from_proc) and BPF loads, the owner pass answers
        instead, as it does where the one pass is made."""
        engine = self.walk_engine()
        if capabilities(self.engine_name).one_pass or self.bpf_failed:
            return engine.owners()
        files = procs.open_files()
        if decide.owners_from_proc(files):
            return engine.owners()
        try:
            source = engines.pass_engine(self, owners=True)
        except EngineError as exc:
            self.log(f"processes from /proc: BPF cannot load ({exc})")
            return engine.owners()
        try:
            owners = source.owners()
        except (OSError, EngineError) as exc:
            self.log(f"processes from /proc: the owner pass failed ({exc})")
            return engine.owners()
        self.log(f"processes from the owner pass ({files} files open on the host)")
        return owners

    def walks_destroy_in_kernel(self) -> bool:
        """Does a kill's walk destroy in the kernel (the bpf kfunc), known
        before the walk engine opens (decide.py weighs it)?"""
        if self.engine is not None:
            return self.engine.destroys_while_reading
        return self.kill and capabilities(self.engine_name).destroys_while_reading

    def _name_engine(self, name: str) -> None:
        self.engine_name = self.report.engine = name
        for nsr in self.nsrs:
            nsr.engine = name

    def _set_up_plan(self) -> None:
        """kill(plan): a namespace the scan found whole in the one pass has its
        sockets destroyed by exact tuple over netlink; the others are walked
        again, pinned to the plan's cookies."""
        if any(r.ns.ino not in self.planned.walked for r in self.nsrs):
            self.netlink.open("plan", "its namespaces are walked")
        counts: dict = {}
        for sock in self.planned.sockets:
            counts[sock.netns] = counts.get(sock.netns, 0) + 1
        for nsr in self.nsrs:
            if nsr.ns.ino in self.planned.walked:
                nsr.walk_reason = self.planned.walked[nsr.ns.ino]
                continue
            reason = decide.planned_reason(
                counts.get(nsr.ns.ino, 0), can_destroy=self.netlink.destroyer is not None,
                paced=self.paced, host_tcp=self.host_tcp,
                in_kernel=self.engine.destroys_while_reading)
            if reason is None:
                nsr.walked = False
            else:
                nsr.walk_reason = reason

    def _drop_counters(self) -> None:
        if self.counting is not None:
            for found in (self.counting.result() or {}).values():
                if found is not None:
                    found.close()
            self.counting = None
        while self.dsocks:
            self.dsocks.popitem()[1].close()

    def host_tcp(self) -> int:
        """TCP sockets on the host (what a walk goes over), read once."""
        if self._host_tcp is None:
            self._host_tcp = sockstat.host_tcp_sockets()
        return self._host_tcp

    # -- streaming ----------------------------------------------------------------------
    def stream(self) -> Iterator[model.Sock]:
        try:
            if self.source is not None:
                yield from onepass.stream(self)
            else:
                yield from execute.search_pass(self, self.nsrs)
        finally:
            self._finish()

    def stream_paced(self, rate: float) -> Iterator[model.Sock]:
        """The plan in batches, at most `rate` sockets a second: ten batches a
        second, each a pass over the namespaces that hold its sockets."""
        start = time.monotonic()
        try:
            for part in pacing.batches(self.planned.sockets, rate, self.cancel):
                self.engine.pin(s.cookie for s in part)
                self.by_cookie = {s.cookie: s for s in part}
                holding = {s.netns for s in part}
                self.log(f"paced batch of {len(part)} at {time.monotonic() - start:.2f} s")
                yield from execute.search_pass(self, [r for r in self.nsrs if r.ns.ino in holding])
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.engine is not None:
            self.report.warnings.extend(self.engine.warnings)
            self.engine.close()
        for other in self.closers:
            other.close()
        self._drop_counters()
        if self.cancel.is_set():
            self.report.interrupted = True
            self.report.signum = self.cancel.signum


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
