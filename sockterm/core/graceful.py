"""kill --graceful: connections shut down through their holders' own descriptors.

Any other kill is an abort: the application gets ECONNABORTED, a TCP peer a
reset, and bytes in flight are lost. Here each planned socket that a process
holds is shut down through a duplicate of that process's descriptor
(host/pidfd.py): what the application queued is still sent, then a FIN. Nothing
is destroyed, so this works on a kernel that can destroy nothing (no kfunc,
no SOCK_DESTROY); no process is stopped or injected into.

SHUT_RDWR or SHUT_WR, measured on Linux 6.18 (tests/priv/test_graceful.py
pins each line):
  SHUT_RDWR (the default): the application learns at once, as when its peer
      closes: a blocked read returns 0 (EOF), poll() reports
      POLLIN|POLLRDHUP|POLLHUP. What the peer sends after the FIN is answered
      with a reset (the peer's next write fails with EPIPE).
  SHUT_WR (half_close): the peer's data still reaches the application, which
      learns of the end only when the peer closes in turn, or from its own
      next write.
  Either way the application's next write fails with EPIPE and raises
  SIGPIPE: one that neither ignores SIGPIPE nor reads first dies of it (so
  it does after an abort, on its second write: the first gets ECONNABORTED).
  SHUT_RDWR is the default because it hands every application the EOF that
  tells it to stop before it writes; under SHUT_WR one whose peer does not
  close learns only by writing.
  A listener is shut down both ways whatever was asked (SHUT_WR does nothing
  to one): accept() fails with EINVAL, the connections waiting in its queue
  are reset, new ones refused. A UDP socket's blocked recv returns 0 bytes,
  its sends fail with EPIPE (UDP raises no SIGPIPE). A connection still
  being set up (syn-sent) has nothing to drain: its connect() fails with
  ECONNRESET.

A socket no process holds (an orphan, a request or time-wait socket, a kernel
socket, a connection not yet accepted) has no descriptor to go through: it is
reported `not-held` and left alone, or aborted as any kill aborts (core.kill
of a plan) when abort_rest says so.
"""

from __future__ import annotations

import errno
import os
import _socket       # the socket module's C half (see model.py)
import time
from typing import Iterator

from .. import model
from .. import states as st
from ..host import pidfd, probe, procs
from . import pacing
from .pipeline import kill, plan
from .report import Options, Plan, Report, SocktermError, failure

BATCH = 256          # shutdowns between two looks at the cancel flag
# this holder has let go of the socket (exited, closed or moved the descriptor)
LET_GO = (errno.ESRCH, errno.EBADF, errno.ENOENT)


def shut_down(target, report: Report, options: Options | None = None, *,
              rate: float | None = None, half_close: bool = False,
              abort_rest: bool = False) -> Iterator[model.Sock]:
    """Shut down what a filter selects, or exactly what a plan holds, through
    the holders' descriptors; yield each socket with its result as it is
    settled (`shut-down`, `not-held`, `killed` with abort_rest, `gone`,
    `no-permission`, `failed`). rate paces both the shutdowns and the aborts."""
    options = options or Options()
    why = pidfd.why_not()
    if why:
        raise SocktermError(f"kill --graceful cannot run here: {why}")
    caps = probe.effective_caps()
    if "CAP_SYS_ADMIN" not in caps:
        raise SocktermError("sockterm kill --graceful needs CAP_SYS_ADMIN (run it as root)")
    if "CAP_SYS_PTRACE" not in caps:
        report.warnings.append(
            "sockterm lacks CAP_SYS_PTRACE: processes it may not trace (other users', "
            "non-dumpable or more privileged ones) refuse their descriptors (no-permission), "
            "and /proc does not show which sockets they hold (not-held where it attributed them)")
    failed: list = []
    if isinstance(target, Plan):
        the_plan = target
        # a plan's kill reports the namespaces its scan could not search, as
        # a kill without a plan does (its scan's warnings say so there)
        report.warnings.extend(failure(r) for r in the_plan.searched if r.error and not r.gone)
    else:
        scanned = Report()
        try:
            the_plan = plan(target, scanned, options)
        finally:
            report.engine = scanned.engine
            report.warnings.extend(scanned.warnings)
            report.skipped.extend(scanned.skipped)
        failed = scanned.ns_errors
    if any(s.processes is None for s in the_plan.sockets):
        raise SocktermError("kill --graceful needs each socket's holders, and they are "
                            "unknown: " + ("; ".join(report.warnings) or "processes not attributed"))
    return _Closing(the_plan, report, options, half_close, abort_rest, failed).stream(rate)


class _Closing:
    def __init__(self, the_plan: Plan, report: Report, options: Options, half_close: bool,
                 abort_rest: bool, failed: list):
        self.plan, self.report, self.options = the_plan, report, options
        self.cancel, self.log = options.cancel, options.log
        self.how = _socket.SHUT_WR if half_close else _socket.SHUT_RDWR
        self.abort_rest = abort_rest
        self.holders = _Holders(the_plan.sockets)
        report.engine, report.graceful = the_plan.engine, True
        self.nsrs: dict = {}
        for ns in the_plan.namespaces:
            nsr = self.nsrs[ns.ino] = model.NamespaceReport(ns=ns, engine=the_plan.engine)
            nsr.walked = ns.ino in the_plan.walked
            nsr.walk_reason = the_plan.walked.get(ns.ino)
        for scanned in failed:          # a namespace the scan could not search
            nsr = self.nsrs.setdefault(scanned.ns.ino, model.NamespaceReport(
                ns=scanned.ns, engine=scanned.engine))
            nsr.error = scanned.error
        for scanned in the_plan.searched:   # searched, nothing there to shut down
            self.nsrs.setdefault(scanned.ns.ino, scanned.copy())
        report.namespaces.extend(sorted(self.nsrs.values(), key=lambda r: model.ns_order(r.ns)))

    def stream(self, rate: float | None) -> Iterator[model.Sock]:
        held = [s for s in self.plan.sockets if s.processes]
        rest = [s for s in self.plan.sockets if not s.processes]
        try:
            if rest and not self.abort_rest and not self.cancel.is_set():
                for sock in rest:
                    sock.result = model.NOT_HELD
                self._account(rest)
                self.report.warnings.append(
                    f"{len(rest)} of the sockets are held by no process (orphans, time-wait or "
                    "request sockets, connections not yet accepted, kernel sockets): left alone; "
                    "--abort-rest aborts them")
                yield from rest
            yield from self._shut_all(held, rate)
            if rest and self.abort_rest and not self.cancel.is_set():
                yield from self._abort(rest, rate)
        finally:
            self.holders.close()
            if self.cancel.is_set():
                self.report.interrupted = True
                self.report.signum = self.cancel.signum

    def _shut_all(self, socks: list, rate: float | None) -> Iterator[model.Sock]:
        parts = pacing.batches(socks, rate, self.cancel) if rate else _chunks(socks, self.cancel)
        spent = 0.0
        for part in parts:
            started = time.perf_counter()
            self.holders.next_batch()
            for sock in part:
                self._shut(sock)
            self._account(part)
            spent += time.perf_counter() - started
            yield from part
        holders = self.holders
        self.log(f"graceful: {len(socks)} held sockets, {len(holders.pidfds)} holders: "
                 f"{spent * 1000:.0f} ms, of which {holders.reading * 1000:.0f} ms reading "
                 f"/proc/PID/fd ({holders.reads} times)")

    def _shut(self, sock: model.Sock) -> None:
        """Through the first holder that still has it; the next ones only
        when that one let go of it or may not be touched."""
        how = _socket.SHUT_RDWR if sock.state == st.LISTEN else self.how
        outcome = errno.ESRCH
        for pid, _comm in sock.processes:
            err, fd = self.holders.shut(pid, sock, how)
            if fd is not None and (sock.holder is None or not err):
                sock.holder = (pid, fd)
            if err in LET_GO:
                continue
            outcome = err
            if err not in (errno.EPERM, errno.EACCES):
                break
        settle(sock, outcome)

    def _abort(self, socks: list, rate: float | None) -> Iterator[model.Sock]:
        """The sockets no process holds, aborted as any kill aborts them."""
        inos = {s.netns for s in socks}
        rest = Plan(flt=self.plan.flt, engine=self.plan.engine, sockets=socks,
                    namespaces=[ns for ns in self.plan.namespaces if ns.ino in inos],
                    walked=self.plan.walked)
        aborted = Report()
        try:
            for sock in kill(rest, aborted, self.options, rate=rate):
                self._account([sock])
                yield sock
        except SocktermError as exc:
            self.report.warnings.append(f"sockets no process holds not aborted: {exc}")
            for sock in socks:
                model.set_error(sock, errno.EOPNOTSUPP)
            self._account(socks)
            yield from socks
        finally:
            self.report.warnings.extend(aborted.warnings)
            for nsr in aborted.ns_errors:
                self.nsrs[nsr.ns.ino].error = nsr.error

    def _account(self, socks: list) -> None:
        for sock in socks:
            nsr = self.nsrs[sock.netns]
            nsr.matched += 1
            result = sock.result
            if result == model.SHUT_DOWN:
                nsr.shut_down += 1
            elif result == model.KILLED:
                nsr.killed += 1
            elif result == model.NOT_HELD:
                nsr.not_held += 1
            elif result != model.GONE:
                nsr.failed += 1


def settle(sock: model.Sock, err: int) -> None:
    """A shutdown's outcome as the socket's result."""
    sock.error = err
    if err == 0:
        sock.result = model.SHUT_DOWN
    elif err in LET_GO or err == errno.ENOTCONN:     # ENOTCONN: the connection ended first
        sock.result = model.GONE
    elif err in (errno.EPERM, errno.EACCES):
        sock.result = model.NO_PERMISSION
    else:
        sock.result = model.FAILED


def _chunks(socks: list, cancel) -> Iterator[list]:
    for start in range(0, len(socks), BATCH):
        if cancel.is_set():
            return
        yield socks[start:start + BATCH]


class _Holders:
    """The holding processes of a run: a pidfd each, and which descriptor
    holds which planned socket: what the one pass saw (its records name the
    descriptor), else read from /proc/PID/fd when first needed, and read
    again where a descriptor no longer holds the socket."""

    def __init__(self, socks: list):
        self.wanted: dict = {}          # pid -> inodes of planned sockets it holds
        self.fds: dict = {}             # pid -> {inode: fd}
        self.read_in: dict = {}         # pid -> the batch its descriptors were read in
        for sock in socks:
            for pid, _comm in sock.processes or ():
                self.wanted.setdefault(pid, set()).add(sock.ino)
            for pid, fd in sock.fds or ():
                self.fds.setdefault(pid, {})[sock.ino] = fd
                self.read_in[pid] = -1          # from the one pass: /proc not read yet
        self.pidfds: dict = {}          # pid -> pidfd, or -errno
        self.batch = 0
        self.reads, self.reading = 0, 0.0     # for -v: /proc/PID/fd reads, seconds spent

    def next_batch(self) -> None:
        self.batch += 1

    def _pidfd(self, pid: int) -> int:
        found = self.pidfds.get(pid)
        if found is None:
            try:
                found = pidfd.open_process(pid)
            except OSError as exc:
                found = -exc.errno
            self.pidfds[pid] = found
        return found

    def _fd(self, pid: int, ino: int, again: bool) -> int | None:
        """The descriptor through which pid holds socket ino; again: read
        /proc once more (at most once a batch), it may have moved.
        PermissionError when pid's descriptors may not be read."""
        if pid not in self.fds or (again and self.read_in[pid] != self.batch):
            self.read_in[pid] = self.batch
            started = time.perf_counter()
            try:
                self.fds[pid] = procs.descriptors(pid, self.wanted.get(pid, ()))
            except PermissionError:
                self.fds[pid] = None
            self.reads += 1
            self.reading += time.perf_counter() - started
        if self.fds[pid] is None:
            raise PermissionError(errno.EPERM, "not allowed to read its descriptors")
        return self.fds[pid].get(ino)

    def shut(self, pid: int, sock: model.Sock, how: int) -> tuple[int, int | None]:
        """(errno or 0, the descriptor used) of shutting sock down through
        process pid. The copy is checked to be the very socket (_same:
        descriptors are reused) and closed at once."""
        handle = self._pidfd(pid)
        if handle < 0:
            return -handle, None
        for again in (False, True):
            try:
                fd = self._fd(pid, sock.ino, again)
            except PermissionError:
                return errno.EPERM, None
            if fd is None:
                continue
            try:
                copy = pidfd.getfd(handle, fd)
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    continue               # closed since /proc was read
                return exc.errno, fd
            try:
                if not _same(copy, sock):
                    continue               # the number now holds another socket
                err = pidfd.shutdown(copy, how)
            finally:
                os.close(copy)
            if err == errno.ENOTCONN and sock.state == st.CLOSE:
                err = 0       # unconnected: the kernel shut it down and woke its readers all the same
            return err, fd
        return errno.ESRCH, None

    def close(self) -> None:
        for handle in self.pidfds.values():
            if handle >= 0:
                os.close(handle)
        self.pidfds.clear()


def _same(copy: int, sock: model.Sock) -> bool:
    """Whether a duplicated descriptor is the planned socket: by cookie, or
    by inode where the one pass read none (0: the kernel had made none yet)."""
    if sock.cookie:
        return pidfd.cookie(copy) == sock.cookie
    return os.fstat(copy).st_ino == sock.ino
