"""kill --watch / match --watch: a kill that holds for a window.

First the ordinary kill (or match) of what the filter selects now; then,
until the window ends, every new connection the kernel reports that the
filter selects is destroyed as soon as it is read: over netlink
SOCK_DESTROY, by exact tuple and cookie, from a socket made inside its
namespace -- namespaces that appear during the window included, found
through the connecting process (/proc/PID/ns/net) or, failing that, by
looking for every namespace again. The events come from a BPF program
(engine/bpf/watch.py) feeding a ring buffer; the loop sleeps in poll() on
it, woken by an event, a signal, or the end of the window.

The event source is attached before anything is killed (a watch that
cannot attach fails first) and detached when the window ends: at its
duration, on SIGINT/SIGTERM/SIGHUP (the Cancel flag: no destroy starts
after it is seen, everything destroyed is reported), or when --max would
be exceeded. What the kernel checks (addresses, ports, family, state,
uid) it checks before waking sockterm; the Scope (sockterm's own sockets,
--cgroup, --container, --pod) and --pid/--comm (the process that
connected) are checked here. Nothing here imports click or rich.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import statistics
import threading
import time
from dataclasses import dataclass, field

from .. import model
from .. import states as st
from ..engine import EngineError, Scope
from ..engine.bpf.watch import WatchSource, decode
from ..engine.diag.destroy import destroy_with, find_cookie, settle_unacked
from ..engine.diag.wire import DiagSocket, NetlinkError
from ..exitcodes import ExitCode
from ..host import containers, enter, netns, probe, procs
from . import pipeline
from .namespaces import Appearing, find_namespaces
from .report import Options, Report, SocktermError, failure

# --state must select one of these: a new connection is reported at SYN-SENT
# (connect) or ESTABLISHED (accept, or connect when syn-sent is not selected)
WATCHED_STATES = frozenset({st.SYN_SENT, st.ESTABLISHED})
DURATION, SIGNAL, MAX = "duration", "signal", "max"      # WatchReport.ended
BACKSTOP = 1.0           # s: the longest sleep, should the Cancel flag be set by no signal


@dataclass
class WatchReport:
    """What the window did (the JSON summary's `watch`)."""

    duration: float
    udp: str = ""                # how UDP connects were seen: connect | send ("": not watched)
    elapsed: float = 0.0
    ended: str = ""              # duration | signal | max
    killed_at_start: int = 0
    matched: int = 0             # in the window
    killed: int = 0
    failed: int = 0
    events: int = 0              # reported by the kernel (before the Scope's checks)
    lost: int = 0                # not reported: the ring buffer was full
    unreachable: int = 0         # selected, in a namespace sockterm could not find or enter
    lags_ms: list = field(default_factory=list)   # kernel event -> destroy acknowledged
    by_ns: dict = field(default_factory=dict)     # netns inode -> [matched, killed, failed]

    def lag(self) -> dict | None:
        """Median, p99 and max of lags_ms (None: nothing destroyed in the window)."""
        if not self.lags_ms:
            return None
        ordered = sorted(self.lags_ms)
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        return {"median": round(statistics.median(ordered), 3), "p99": round(p99, 3),
                "max": round(ordered[-1], 3)}


class Watch:
    """One window: created (namespaces found, event source attached, netlink
    checked) before anything is touched, then run() once, then close()."""

    def __init__(self, flt, options: Options, *, duration: float, kill: bool,
                 limit: int | None = None, rate: float | None = None):
        if not flt.states & WATCHED_STATES:
            raise SocktermError("--watch reports new connections, at syn-sent or established: "
                                "--state must select one of them", ExitCode.USAGE)
        self.flt, self.options, self.kill = flt, options, kill
        self.limit, self.rate = limit, rate
        self.log, self.cancel = options.log, options.cancel
        self.summary = WatchReport(duration=duration)
        host = probe.probe()
        missing = host.missing_caps("bpf", kill)
        if missing:
            raise SocktermError(f"sockterm {'kill' if kill else 'match'} --watch needs "
                                f"{', '.join(missing)} (run it as root)")
        node = containers.Node()
        found, owned, narrowed = find_namespaces(flt, Report(), self.log, node, host)
        self.scope = Scope(exclude_inodes=procs.own_inodes(), **owned)
        self.namespaces = Appearing(found, narrowed, node, self.log)
        self.pids = frozenset(flt.pids) | frozenset(procs.pids_by_comm(flt.comms))
        if kill:
            from .. import engine as engines
            try:
                engines.destroyer(self.log)          # can this kernel destroy over netlink?
            except EngineError as exc:
                raise SocktermError(f"cannot watch: {exc}", exc.code) from None
        self.source = self._attach()
        self.summary.udp = self.source.udp
        self._conns: dict = {}           # netns inode -> its DiagSocket
        self._worker = None
        self._killed: set = set()        # cookies destroyed by this run
        self._seen: set = set()          # cookies reported (match)
        self._next_slot = 0.0            # --rate: when the next destroy may start

    def _attach(self):
        source = WatchSource(flt=self.flt, scope=self.scope, log=self.log)
        try:
            source.open()
        except EngineError as exc:
            source.close()
            raise SocktermError(f"cannot watch for new connections: {exc}", exc.code) from None
        self.log(f"watch: attached (UDP: {source.udp or 'not watched'})")
        return source

    # -- the run ----------------------------------------------------------------------
    def run(self, target, report: Report, on_start=None):
        """Kill (or match) what target selects now, then watch: yield each
        socket as a model.Stamped, phase START or WINDOW, as it is settled."""
        report.watch = self.summary
        try:
            if on_start is not None:
                on_start(report)
            if self.kill:
                first = pipeline.kill(target, report, self.options, rate=self.rate)
            else:
                first = pipeline.scan(target, report, self.options)
            for sock in first:
                (self._killed if sock.result == model.KILLED else self._seen).add(sock.cookie)
                yield model.Stamped.of(sock, model.START, time.time())
            self.summary.killed_at_start = report.killed
            if not self.cancel.is_set():
                yield from self._window(report)
        finally:
            self.close()
            if self.cancel.is_set():
                report.interrupted, report.signum = True, self.cancel.signum
                self.summary.ended = self.summary.ended or SIGNAL

    def _window(self, report: Report):
        self._nsrs = {r.ns.ino: r for r in report.namespaces}
        self._report = report
        if self.namespaces.narrowed:
            # a few named namespaces: enter them now, not at their first event
            for ns in self.namespaces.known.values():
                try:
                    self._conn(ns)
                except OSError as exc:
                    self._failed(self._nsr(ns), exc)
        started = time.monotonic()
        deadline = started + self.summary.duration
        self.log(f"watch: window open for {self.summary.duration:g} s")
        poller = select.poll()
        poller.register(self.source.fileno(), select.POLLIN)
        with _Wakeup() as wake:
            if wake.fd >= 0:
                poller.register(wake.fd, select.POLLIN)
            try:
                while not self.summary.ended:
                    now = time.monotonic()
                    if self.cancel.is_set():
                        self.summary.ended = SIGNAL
                        break
                    if now >= deadline:
                        self.summary.ended = DURATION
                        break
                    timeout = min(deadline - now, BACKSTOP)
                    poller.poll(max(0, int(timeout * 1000)) + 1)
                    wake.drain()
                    if self.cancel.is_set():
                        continue
                    yield from self._settle(self._events())
            finally:
                self.summary.elapsed = round(time.monotonic() - started, 3)

    def _events(self) -> list:
        events = [decode(raw) for raw in self.source.read()]
        self.summary.events += len(events)
        return events

    def _settle(self, events: list):
        """Events -> sockets destroyed (or matched), namespace by namespace."""
        by_ns: dict = {}
        for ev in events:
            sock = ev.sock
            if not self._admits(sock):
                continue
            pid = sock.processes[0][0] if sock.processes else 0
            ns = self.namespaces.find(sock.netns, pid)
            if ns is None:
                if not self.namespaces.narrowed:
                    self.summary.unreachable += 1
                    self.log(f"watch: no way into namespace net:[{sock.netns}] for {sock!r}")
                continue
            by_ns.setdefault(ns.ino, (ns, []))[1].append(ev)
        for ns, evs in by_ns.values():
            if self.summary.ended:
                return
            yield from self._namespace(ns, evs)

    def _admits(self, sock) -> bool:
        if not self.kill and sock.cookie and sock.cookie in self._seen:
            return False
        if self.flt.pids or self.flt.comms:
            # a new connection belongs to the process that made it (an
            # incoming one, to no process yet: never selected by --pid/--comm)
            holder = sock.processes[0] if sock.processes else None
            if holder is None or not (holder[0] in self.pids or holder[1] in self.flt.comms):
                return False
        return self.scope.admits(sock)

    def _namespace(self, ns, evs: list):
        nsr = self._nsr(ns)
        failure = None
        try:
            conn = self._conn(ns)
            ready = self._resolve(conn, evs)
            if self.kill:
                ready = self._destroy(conn, ready)
        except (OSError, EngineError) as exc:
            # what died before the failure is reported all the same
            failure, ready = exc, [ev for ev in getattr(exc, "settled", ())]
        counts = self.summary.by_ns.setdefault(ns.ino, [0, 0, 0])
        done = time.monotonic_ns()
        socks = []
        for ev in ready:
            sock = ev.sock
            socks.append(sock)
            sock.netns_name = ns.name
            nsr.matched += 1
            counts[0] += 1
            self.summary.matched += 1
            if self.kill and sock.result == model.KILLED:
                nsr.killed += 1
                counts[1] += 1
                self.summary.killed += 1
                self.summary.lags_ms.append((done - ev.time_ns) / 1e6)
            elif self.kill and sock.result != model.GONE:
                nsr.failed += 1
                counts[2] += 1
                self.summary.failed += 1
            elif not self.kill:
                self._seen.add(sock.cookie)
        if failure is not None:
            self._failed(nsr, failure)
        if self.namespaces.node.present:
            self.namespaces.node.label(ns, socks)
        now = time.time()
        for sock in socks:
            yield model.Stamped.of(sock, model.WINDOW, now)

    def _resolve(self, conn, evs: list) -> list:
        """An event without its cookie (a UDP connect() seen by fexit, whose
        pointer no helper may take) gets it from the kernel by exact tuple.
        One whose socket is gone by then is dropped: without its cookie it
        cannot be told from a socket the kill at the start destroyed."""
        ready = []
        for ev in evs:
            if not ev.sock.cookie:
                ev.sock.cookie = find_cookie(conn, ev.sock)
                if not ev.sock.cookie:
                    self.log(f"watch: {ev.sock!r} was gone before it could be looked up")
                    continue
            ready.append(ev)
        return ready

    def _destroy(self, conn, evs: list) -> list:
        """Destroy what is ready (paced by --rate, bounded by --max); the
        events no destroy was attempted on are dropped, and so is a socket
        the kill at the start destroyed already (its event came first). A
        netlink failure is raised with the settled events on it."""
        todo = [ev.sock for ev in evs if ev.sock.result == model.MATCHED]
        if self.limit is not None:
            room = max(0, self.limit - self._report.killed)
            if len(todo) > room:
                self.summary.ended = MAX
                self._report.warnings.append(
                    f"--max {self.limit} reached: the watch stopped; {len(todo) - room} more "
                    "matching connections were not destroyed")
                todo = todo[:room]
        try:
            for group in self._paced(todo):
                destroy_with(conn, group, self.log)
        except (OSError, NetlinkError) as exc:
            settle_unacked(conn, todo)
            if not isinstance(exc, OSError):
                exc = OSError(exc.code, f"netlink destroy failed: {exc.args[1]}")
            exc.settled = self._kept(evs)
            raise exc
        return self._kept(evs)

    def _kept(self, evs: list) -> list:
        kept = []
        for ev in evs:
            sock = ev.sock
            if sock.result == model.MATCHED:
                continue                 # a stop (or --max) came first: never attempted
            if sock.result == model.GONE and sock.cookie in self._killed:
                continue                 # the kill at the start got it
            if sock.result == model.KILLED:
                self._killed.add(sock.cookie)
            kept.append(ev)
        self.source.forget(ev.sock.cookie for ev in kept if ev.sock.proto == "udp")
        return kept

    def _paced(self, todo: list):
        if not self.rate:
            if todo and not self.cancel.is_set():
                yield todo
            return
        for sock in todo:
            delay = self._next_slot - time.monotonic()
            if (delay > 0 and self.cancel.wait(delay)) or self.cancel.is_set():
                return
            self._next_slot = max(self._next_slot, time.monotonic()) + 1 / self.rate
            yield [sock]

    # -- namespaces -----------------------------------------------------------------
    def _nsr(self, ns) -> model.NamespaceReport:
        nsr = self._nsrs.get(ns.ino)
        if nsr is None:
            nsr = self._nsrs[ns.ino] = model.NamespaceReport(ns=ns, engine="diag", walked=False)
            self._report.namespaces.append(nsr)
        return nsr

    def _conn(self, ns):
        conn = self._conns.get(ns.ino)
        if conn is None:
            if self._worker is None:
                self._worker = enter.Worker()
            conn = self._conns[ns.ino] = self._worker.call(ns, DiagSocket)
        return conn

    def _failed(self, nsr, exc) -> None:
        gone = isinstance(exc, netns.NamespaceError) and exc.errno in (errno.ENOENT, errno.ESRCH)
        nsr.gone = nsr.gone or gone
        nsr.error = str(getattr(exc, "strerror", None) or exc)
        self.log(f"namespace {nsr.ns.name}: {nsr.error}")
        if not gone:
            self._report.warnings.append(failure(nsr))
        conn = self._conns.pop(nsr.ns.ino, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Detach the event source, close what the window opened."""
        if self.source is None:
            return
        stats = self.source.stats()
        self.summary.lost = stats.lost
        self.source.close()
        self.source = None
        while self._conns:
            self._conns.popitem()[1].close()
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        report = getattr(self, "_report", None)
        if report is not None:
            if self.summary.lost:
                report.warnings.append(
                    f"{self.summary.lost} new connections were not seen (the event ring buffer "
                    "was full): run the kill again")
            if self.summary.unreachable:
                report.warnings.append(
                    f"{self.summary.unreachable} matching connections were in namespaces "
                    "sockterm could not find or enter")


class _Wakeup:
    """A pipe the signal handlers' C half writes to (signal.set_wakeup_fd),
    so a signal wakes the poll whichever thread it was delivered to. Only
    the main thread can install it; elsewhere fd is -1 (BACKSTOP bounds
    the wait for the Cancel flag)."""

    def __enter__(self):
        self.fd, self._old, self._write = -1, None, -1
        if threading.current_thread() is not threading.main_thread():
            return self
        self.fd, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._old = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        return self

    def drain(self) -> None:
        if self.fd >= 0:
            try:
                while os.read(self.fd, 64):
                    pass
            except BlockingIOError:
                pass

    def __exit__(self, *exc):
        if self.fd >= 0:
            signal.set_wakeup_fd(self._old)
            os.close(self.fd)
            os.close(self._write)
