"""One search of a run's namespaces, several at once in the pool (pool.py):
walks (read, and destroy where the engine does), the one pass's sockets
listed or destroyed (held.py), TIME_WAIT and request sockets handed to
netlink, the owner pass beside them, and the accounting of each batch.
Sockets leave in the run's order whatever order the namespaces finish in."""

from __future__ import annotations

import errno
import threading
from typing import Iterator

from .. import model
from ..engine import EngineError
from . import held, pool
from .outcome import emit_gone, namespace_failed
from .report import SocktermError


def search_pass(run, nsrs: list, owners=None) -> Iterator[model.Sock]:
    """One search of these namespaces, several at once (walks, and the one
    pass's sockets listed or destroyed); account each batch."""
    if run.cancel.is_set() or not nsrs:
        return
    walks = any(r.walked for r in nsrs)
    if walks:
        run.walk_engine()      # here, before anything is destroyed, where it opens late
    attribution = None
    if owners is None and run.attribute and walks:
        # a kill attributes before it reads (a killed socket's holder may
        # close it at once); a listing once something matched (when nothing
        # does, the host's descriptors are never scanned)
        attribution = Attribution(run.owners, run.report, start=run.kill)
        owners = attribution
    ready = attribution.ready if attribution and run.kill else None

    def search(nsr, entry, emit):
        try:
            _search(run, nsr, entry, emit, ready)
        finally:
            emit((nsr, None))              # this namespace is complete
    window = pool.Window()
    order = InOrder(nsrs, window)
    try:
        try:
            for nsr, batch in pool.run(nsrs, search, stop=run.cancel.is_set, window=window):
                if batch is not None:
                    account(run, nsr, batch, owners)
                elif owners is not None and not isinstance(owners, Attribution):
                    owners.done(nsr.ns.ino)         # this namespace is complete
                yield from order.take(nsr, batch)
        except Exception:
            yield from order.rest()        # what died before the failure is reported
            raise
        yield from order.rest()            # a stop: the namespaces it cut short
    finally:
        if attribution:
            attribution.finish()


def account(run, nsr, batch: list, owners) -> None:
    if isinstance(owners, Attribution):
        owners = owners.result()        # a kill's reads waited for it already
    if owners is not None:
        holders = owners.of(nsr.ns.ino).get
        for sock in batch:
            if sock.processes is None:
                sock.processes = holders(sock.ino)
    elif run.planned:
        for sock in batch:
            planned = run.by_cookie[sock.cookie]
            sock.processes, sock.place = planned.processes, planned.place
    if run.node.present and not run.planned:
        run.node.label(nsr.ns, batch)
    nsr.matched += len(batch)
    if run.kill:
        for sock in batch:
            if sock.result == model.KILLED:
                nsr.killed += 1
            elif sock.result != model.GONE:
                nsr.failed += 1


# -- in a pool worker -----------------------------------------------------------
def _search(run, nsr, entry: pool.Entry, emit, ready) -> None:
    if not nsr.walked:
        found_whole = held.destroy_held if run.kill else held.list_held
        if not found_whole(run, nsr, entry, emit):
            return
        ready = None
    walk(run, nsr, entry, emit, ready)


def walk(run, nsr, entry: pool.Entry, emit, ready) -> None:
    """One namespace: enter, read (and destroy), emit batches. Its failure
    is recorded on nsr, never raised."""
    ns = nsr.ns
    seen: set = set()
    done = False
    try:
        engine = run.walk_engine()      # opened already, unless the pass sent this one late
        handle = entry.call(ns, engine.enter)
    except (OSError, EngineError, SocktermError) as exc:
        namespace_failed(run, nsr, exc, emit)
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
                while not run.cancel.is_set():
                    batch = next(reading, None)
                    if batch is None:
                        done = True
                        break
                    if run.kill:
                        if ready is not None and not early:
                            ready.wait()
                        try:
                            batch = _settle(run, entry, ns, handle, batch)
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
        namespace_failed(run, nsr, exc, emit)
        return
    finally:
        if handle is not None:
            engine.release(handle)
    if done and run.planned:
        emit_gone(run, nsr, seen, emit)


def _settle(run, entry, ns, handle, batch: list) -> list:
    """Destroy what reading did not, learn the truth about what it did;
    the sockets no destroy was attempted on (a stop came) are dropped."""
    stop = run.cancel.is_set
    run.engine.destroy(handle, batch, stop)
    deferred = [s for s in batch if s.result == model.DEFERRED]
    if deferred:
        if stop():
            for sock in deferred:
                sock.result = model.MATCHED
        else:
            destroy_deferred(run, entry, ns, deferred)
    return [s for s in batch if s.result != model.MATCHED]


def destroy_deferred(run, entry, ns, socks: list) -> None:
    """TIME_WAIT and request sockets have no full struct sock for the
    kfunc: netlink SOCK_DESTROY takes them."""
    try:
        destroyer = run.netlink.destroys()
        dsock = entry.call(ns, destroyer.enter)
    except (OSError, EngineError) as exc:
        for sock in socks:
            model.set_error(sock, getattr(exc, "errno", None) or errno.EOPNOTSUPP)
        run.report.warnings.append(f"time-wait/syn-recv sockets not destroyed: {exc}")
        return
    try:
        for sock in socks:
            sock.result = model.MATCHED
        destroyer.destroy(dsock, socks, run.cancel.is_set)
    finally:
        destroyer.release(dsock)


class InOrder:
    """Namespaces are searched several at once and finish in any order; their
    sockets leave one namespace at a time, in the run's order (model.ns_order),
    each namespace's sorted (model.sock_order), so two runs over the same
    sockets say the same thing in the same order. A namespace waits only for
    those before it, which the pool started first. Each namespace let go
    gives its place in the pool's window back: the namespaces that finished
    behind a slow one wait here, sockets and all, and no more start than the
    window holds (pool.AHEAD: without it, a diag listing of 500,000 sockets
    over 200 namespaces, whose first namespace is walked while the rest come
    from the one pass, peaked at 136-183 MiB from one run to the next)."""

    def __init__(self, nsrs: list, window=None):
        self.queue = [id(r) for r in nsrs]
        self.held: dict = {key: [] for key in self.queue}
        self.done: set = set()
        self.window = window

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
        if self.window is not None:
            self.window.release()
        return socks


class Attribution(threading.Thread):
    """The host-wide owner pass, run while the workers enter namespaces and
    create their iterators (a kill's), or once something matched (a
    listing's); `ready` holds every destroy back until it is done (and every
    read, where reading destroys), so a killed socket is attributed before
    its application can react and close it."""

    def __init__(self, owners, report, start: bool = True):
        super().__init__(name="sockterm-owners", daemon=True)
        self.find, self.report = owners, report       # find() -> model.Owners
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
            self.owners = self.find()
        except (OSError, EngineError) as exc:     # attribution informs; it never stops a run
            self.report.warnings.append(f"processes not shown: {exc}")
        finally:
            self.ready.set()
