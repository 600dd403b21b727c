"""The pipeline: filter -> namespaces -> engine -> report.

The CLI builds a Request, calls `execute`, and renders the sockets it
streams and the Report it returns. Nothing here imports click or rich.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterator

from .. import model
from ..host import cgroups, containers, netns, probe, procs
from ..engine import EngineError
from ..exitcodes import ExitCode
from ..filter import Filter


# namespaces walked at once: one reader per core, a few at most
READERS = max(1, min(4, os.cpu_count() or 1))


class SocktermError(Exception):
    """A failure to report in one line, with the exit code it maps to."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE):
        super().__init__(message)
        self.code = code


@dataclass
class Request:
    command: str                 # list | match | kill
    flt: Filter
    backend: str = "auto"        # auto | bpf | diag
    processes: bool = True       # attribute sockets to processes
    log: Callable[[str], None] = lambda msg: None

    @property
    def kill(self) -> bool:
        return self.command == "kill"


@dataclass
class Report:
    engine: str = ""
    namespaces: list = field(default_factory=list)   # model.NamespaceReport
    skipped: list = field(default_factory=list)      # discovery notes (-v)
    warnings: list = field(default_factory=list)     # one line each, for stderr

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

    def exit_code(self, kill: bool) -> ExitCode:
        if self.failed or self.ns_errors:
            return ExitCode.FAILURE
        if kill:
            return ExitCode.OK if self.killed else ExitCode.NO_MATCH
        return ExitCode.OK if self.matched else ExitCode.NO_MATCH


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


def resolve_processes(flt: Filter) -> Filter:
    """--pid/--comm become the set of socket inodes those processes hold."""
    if not (flt.pids or flt.comms):
        return flt
    pids = set(flt.pids)
    if flt.comms:
        pids |= set(procs.pids_by_comm(flt.comms))
    return dataclasses.replace(flt, inodes=procs.inodes_of(sorted(pids)))


def select_namespaces(flt: Filter, report: Report, node=None) -> list[model.Namespace]:
    found, skipped = netns.discover()
    report.skipped.extend(skipped)
    if node is not None:
        node.attribute(found)       # pods and containers name their namespaces (--netns too)
    if not flt.netns:
        return found
    try:
        return netns.resolve(flt.netns, found)
    except netns.NamespaceError as exc:
        raise SocktermError(str(exc.strerror or exc), ExitCode.USAGE) from None


def resolve_host_names(flt: Filter, namespaces, node) -> tuple:
    """--cgroup/--container/--pod become kernel ids (model.Scope), and the
    namespaces walked shrink to those that can hold what they select."""
    if not flt.on_host:
        return None, namespaces
    try:
        scope, inos = containers.scope_for(flt, namespaces, node)
    except (containers.ContainerError, cgroups.CgroupError) as exc:
        raise SocktermError(str(exc), ExitCode.USAGE) from None
    if inos is not None:
        namespaces = [ns for ns in namespaces if ns.ino in inos]
    return scope, namespaces


def preflight(req: Request, host: probe.HostProbe, engine: str) -> None:
    missing = host.missing_caps(engine, req.kill)
    if missing:
        raise SocktermError(f"sockterm {req.command} needs {', '.join(missing)} "
                            f"(run it as root)")


def execute(req: Request, report: Report) -> Iterator[model.Sock]:
    """Check and set up the run, then return the stream of the sockets it selects
    (destroyed first, for kill).

    Everything that can be refused up front (engine, privileges, --netns values,
    the BPF object) raises SocktermError here, before any socket is touched.
    `report` fills as the stream is consumed; read it once the stream is done.
    """
    host = probe.probe()
    report.engine = engine_name = choose_engine(req.backend, req.kill, host, req.log)
    preflight(req, host, engine_name)
    flt = resolve_processes(req.flt)
    node = containers.Node()
    namespaces = select_namespaces(flt, report, node)
    scope, namespaces = resolve_host_names(flt, namespaces, node)
    for note in report.skipped:
        req.log(f"skipped {note}")
    try:
        engine = _create(engine_name, flt, req, scope)
    except EngineError as exc:
        raise SocktermError(f"{engine_name} engine: {exc}", exc.code) from None
    return _stream(engine, namespaces, report, req, node)


class _Attribution(threading.Thread):
    """The host-wide owner pass, run while the readers enter namespaces and
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


def _stream(engine, namespaces, report: Report, req: Request, node=None) -> Iterator[model.Sock]:
    try:
        attribution = _Attribution(engine, report) if req.processes else None
        ready = attribution.ready if attribution else None
        with netns.Worker(threads=min(READERS, len(namespaces))) as worker:
            for nsr, batch in _scan_all(engine, namespaces, worker, report, req, ready):
                owners = attribution.owners if attribution else None
                if owners is not None:
                    held = owners.get
                    for sock in batch:
                        sock.processes = held(sock.ino)
                if node is not None and node.present:
                    node.label(nsr.ns, batch)
                nsr.matched += len(batch)
                if req.kill:
                    for sock in batch:
                        if sock.result == model.KILLED:
                            nsr.killed += 1
                        elif sock.result != model.GONE:
                            nsr.failed += 1
                yield from batch
        report.warnings.extend(engine.warnings)
    finally:
        if attribution:
            attribution.join()
        engine.close()


def _create(name: str, flt: Filter, req: Request, scope=None):
    from .. import engine as engines
    return engines.create(name, flt=flt, kill=req.kill, exclude_inodes=procs.own_inodes(),
                          log=req.log, scope=scope)


def _scan_all(engine, namespaces, worker, report: Report, req: Request, ready=None):
    """(NamespaceReport, [Sock]) batches, several namespaces walked at once.

    The kernel's walk of a namespace costs the same whether it has 1 socket or
    10,000 (its hash tables are shared host-wide), and reads release the GIL,
    so a reader per core divides the wall time. A bounded queue keeps memory
    flat when the consumer is slower than the kernel.
    """
    nsrs = [model.NamespaceReport(ns=ns, engine=engine.name) for ns in namespaces]
    report.namespaces.extend(nsrs)
    readers = min(READERS, len(nsrs))
    if readers <= 1:
        for nsr in nsrs:
            for batch in _scan_one(engine, nsr, worker, report, req, ready):
                yield nsr, batch
        return
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for nsr in nsrs:
        todo.put(nsr)
    out: queue.Queue = queue.Queue(maxsize=64)
    stop = threading.Event()

    def read():
        try:
            while not stop.is_set():
                try:
                    nsr = todo.get_nowait()
                except queue.Empty:
                    return
                for batch in _scan_one(engine, nsr, worker, report, req, ready):
                    while not stop.is_set():
                        try:
                            out.put((nsr, batch), timeout=0.1)
                            break
                        except queue.Full:
                            continue
        finally:
            out.put(None)

    threads = [threading.Thread(target=read, name=f"sockterm-read-{i}", daemon=True)
               for i in range(readers)]
    for t in threads:
        t.start()
    try:
        running = readers
        while running:
            item = out.get()
            if item is None:
                running -= 1
            else:
                yield item
    finally:
        stop.set()            # the consumer went away (error, | head): let readers finish
        while any(t.is_alive() for t in threads):
            try:
                out.get(timeout=0.1)
            except queue.Empty:
                pass
        for t in threads:
            t.join()


def _scan_one(engine, nsr, worker, report: Report, req: Request, ready=None):
    """One namespace's batches; its failure is recorded, never raised."""
    ns = nsr.ns
    try:
        yield from engine.scan(ns, worker, ready)
    except (OSError, EngineError) as exc:
        # only the namespace itself vanishing is benign; any other ENOENT is a failure
        gone = isinstance(exc, netns.NamespaceError) and exc.errno in (errno.ENOENT, errno.ESRCH)
        nsr.gone = gone
        nsr.error = str(getattr(exc, "strerror", None) or exc)
        req.log(f"namespace {ns.name}: {nsr.error}")
        if not gone:
            report.warnings.append(f"namespace {ns.name} ({ns.ino}): {nsr.error}")
