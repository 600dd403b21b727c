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
"""

from __future__ import annotations

import errno
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .. import model
from ..engine import EngineError, Scope
from ..exitcodes import ExitCode
from ..filter import Filter
from ..host import cgroups, containers, netns, probe, procs
from . import pool
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


@dataclass
class Report:
    engine: str = ""
    namespaces: list = field(default_factory=list)   # model.NamespaceReport
    skipped: list = field(default_factory=list)      # discovery notes (-v)
    warnings: list = field(default_factory=list)     # one line each, for stderr
    interrupted: bool = False      # a signal stopped the run before it was done
    signum: int = 0                # ... which one
    refused: str = ""              # a kill that refused to start: why (nothing killed)

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
    def ns_errors(self) -> list:
        return [r for r in self.namespaces if r.error and not r.gone]

    def exit_code(self, kill: bool, signum: int = 0) -> int:
        """pkill's codes; 128 + the signal for a run a signal stopped (or that
        received one while it wrote its report)."""
        if signum or self.signum:
            return 128 + (signum or self.signum)
        if self.failed or self.ns_errors:
            return ExitCode.FAILURE
        if kill:
            return ExitCode.OK if self.killed else ExitCode.NO_MATCH
        return ExitCode.OK if self.matched else ExitCode.NO_MATCH


@dataclass
class Plan:
    """The sockets a scan selected, to be killed exactly: pinned by cookie,
    so a socket that appears later is not part of what was agreed to."""

    flt: Filter
    engine: str
    sockets: list                      # model.Sock, processes attributed when asked
    namespaces: list                   # model.Namespace holding them

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
                namespaces=[ns for ino, ns in by_ino.items() if ino in held])


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
    run = _Run(the_plan.flt, report, options, kill=True, planned=the_plan)
    run.prepare(the_plan.namespaces)
    return run.stream_paced(rate) if rate else run.stream()


# -- one run -----------------------------------------------------------------------------

class _Run:
    def __init__(self, flt: Filter, report: Report, options: Options, *, kill: bool,
                 planned: Plan | None = None):
        self.flt, self.report, self.options = flt, report, options
        self.kill = kill
        self.planned = planned
        self.cancel = options.cancel
        self.log = options.log
        self.engine = None
        self._fallback = None                    # diag, for what the bpf kfunc cannot take
        self._fallback_lock = threading.Lock()
        # kill(plan): cookie -> the planned Sock (for processes, and `gone` reports)
        self.by_cookie = {s.cookie: s for s in planned.sockets} if planned else {}
        self.node = containers.Node()          # containers and pods (cheap when none)
        self.owned: dict = {}                  # Scope fields --cgroup/--container/--pod resolved to

    # -- set-up: everything refusable is refused here ----------------------------
    def find_namespaces(self) -> list[model.Namespace]:
        found, skipped = netns.discover()
        self.report.skipped.extend(skipped)
        for note in skipped:
            self.log(f"skipped {note}")
        self.node.attribute(found)      # pods and containers name their namespaces (--netns too)
        if self.flt.netns:
            try:
                found = netns.resolve(self.flt.netns, found)
            except netns.NamespaceError as exc:
                raise SocktermError(str(exc.strerror or exc), ExitCode.USAGE) from None
        found, self.owned = resolve_host_names(self.flt, found, self.node)
        return found

    def prepare(self, namespaces: list[model.Namespace]) -> None:
        host = probe.probe()
        name = self.planned.engine if self.planned else choose_engine(
            self.options.backend, self.kill, host, self.log)
        self.report.engine = name
        missing = host.missing_caps(name, self.kill)
        if missing:
            command = "kill" if self.kill else "list"
            raise SocktermError(f"sockterm {command} needs {', '.join(missing)} (run it as root)")
        scope = Scope(inodes=resolve_processes(self.flt), exclude_inodes=procs.own_inodes(),
                      cookies=self.planned.cookies if self.planned else None, **self.owned)
        self.scope = scope
        self.attribute = self.options.processes and not self.planned
        from .. import engine as engines
        try:
            self.engine = engines.create(name, flt=self.flt, scope=scope, kill=self.kill,
                                         owners=self.attribute, log=self.log)
        except EngineError as exc:
            raise SocktermError(f"{name} engine: {exc}", exc.code) from None
        self.nsrs = [model.NamespaceReport(ns=ns, engine=name) for ns in namespaces]
        self.report.namespaces.extend(self.nsrs)

    # -- streaming ----------------------------------------------------------------------
    def stream(self) -> Iterator[model.Sock]:
        try:
            yield from self._pass(self.nsrs)
        finally:
            self._finish()

    def stream_paced(self, rate: float) -> Iterator[model.Sock]:
        """The plan in batches, at most `rate` sockets a second: ten batches a
        second, each a pass over the namespaces that hold its sockets."""
        batch = max(1, math.ceil(rate / 10))
        socks = self.planned.sockets
        nsr_of = {r.ns.ino: r for r in self.nsrs}
        start = time.monotonic()
        try:
            for first in range(0, len(socks), batch):
                due = start + first / rate
                while not self.cancel.is_set() and time.monotonic() < due:
                    self.cancel.wait(due - time.monotonic())
                if self.cancel.is_set():
                    break
                part = socks[first:first + batch]
                self.engine.pin(s.cookie for s in part)
                self.by_cookie = {s.cookie: s for s in part}
                held = {s.netns for s in part}
                self.log(f"paced batch of {len(part)} at {time.monotonic() - start:.2f} s")
                yield from self._pass([nsr_of[ino] for ino in held if ino in nsr_of])
        finally:
            self._finish()

    def _finish(self) -> None:
        if self.engine is not None:
            self.report.warnings.extend(self.engine.warnings)
            self.engine.close()
        if self._fallback is not None:
            self._fallback.close()
        if self.cancel.is_set():
            self.report.interrupted = True
            self.report.signum = self.cancel.signum

    def _pass(self, nsrs: list) -> Iterator[model.Sock]:
        """One walk of these namespaces, several at once; account each batch."""
        if self.cancel.is_set() or not nsrs:
            return
        attribution = _Attribution(self.engine, self.report) if self.attribute else None
        ready = attribution.ready if attribution else None
        try:
            for nsr, batch in pool.run(nsrs, lambda nsr, entry, emit: self._namespace(
                    nsr, entry, emit, ready), stop=self.cancel.is_set):
                self._account(nsr, batch, attribution)
                yield from batch
        finally:
            if attribution:
                attribution.join()

    def _account(self, nsr, batch: list, attribution) -> None:
        owners = attribution.owners if attribution else None
        if owners is not None:
            held = owners.get
            for sock in batch:
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
        try:
            if handle is not None:
                if ready is not None:
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
                            batch = self._settle(entry, ns, handle, batch)
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
        kfunc: netlink SOCK_DESTROY (the diag engine) takes them."""
        try:
            fallback = self._diag_fallback()
            handle = entry.call(ns, fallback.enter)
        except (OSError, EngineError) as exc:
            for sock in socks:
                model.set_error(sock, getattr(exc, "errno", None) or errno.EOPNOTSUPP)
            self.report.warnings.append(f"time-wait/syn-recv sockets not destroyed: {exc}")
            return
        try:
            if handle is None:
                for sock in socks:
                    model.set_error(sock, errno.ENOENT)
                return
            for sock in socks:
                sock.result = model.MATCHED
            fallback.destroy(handle, socks, self.cancel.is_set)
        finally:
            if handle is not None:
                fallback.release(handle)

    def _diag_fallback(self):
        with self._fallback_lock:
            if self._fallback is None:
                from .. import engine as engines
                self._fallback = engines.create("diag", flt=self.flt, scope=self.scope, kill=True,
                                                owners=False, log=self.log)
            return self._fallback

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
            self.report.warnings.append(f"namespace {nsr.ns.name} ({nsr.ns.ino}): {nsr.error}")
        elif self.planned:
            self._emit_gone(nsr, set(), emit)


def _gone_copy(sock: model.Sock) -> model.Sock:
    copy = model.Sock(sock.netns, sock.family, sock.proto, sock.state, sock.src, sock.sport,
                      sock.dst, sock.dport, sock.cookie, sock.uid, sock.ino,
                      netns_name=sock.netns_name, mini=sock.mini, ifindex=sock.ifindex)
    model.set_error(copy, errno.ENOENT)
    return copy


class _Attribution(threading.Thread):
    """The host-wide owner pass, run while the workers enter namespaces and
    create their iterators; `ready` holds every read (and so every destroy)
    back until it is done, so a killed socket is attributed before its
    application can react and close it."""

    def __init__(self, engine, report: Report):
        super().__init__(name="sockterm-owners", daemon=True)
        self.engine, self.report = engine, report
        self.owners = None
        self.ready = threading.Event()
        self.start()

    def run(self):
        try:
            self.owners = self.engine.owners()
        except (OSError, EngineError) as exc:     # attribution informs; it never stops a run
            self.report.warnings.append(f"processes not shown: {exc}")
        finally:
            self.ready.set()


def choose_engine(backend: str, kill: bool, host: probe.HostProbe, log) -> str:
    if backend == "auto":
        name = host.auto_engine()
        why = host.why_not_bpf(kill=True)
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
