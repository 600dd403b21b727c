"""The one pass's sockets, in the namespaces it found whole: listed as found
(each with its cookie) or destroyed by exact tuple and cookie over netlink,
from a socket made inside the namespace (made early, while the counters
opened, where no process is in it: run.dsocks). Each function that may find
the pass was not enough says so (True): the caller walks."""

from __future__ import annotations

import errno

from .. import model
from ..engine import EngineError
from . import decide, pool
from .outcome import copy, namespace_failed

HELD_BATCH = 256      # sockets of the one pass per batch: destroys between two stop checks


def list_held(run, nsr, entry: pool.Entry, emit) -> bool:
    """A listing: the pass's sockets of this namespace, in batches. True when
    the namespace must be walked instead."""
    socks = run.held_socks.pop(nsr.ns.ino, ())      # decoded now, then let go
    if any(not s.cookie for s in socks):
        try:
            dsock = entry.call(nsr.ns, run.netlink.requests().enter)
        except OSError as exc:
            namespace_failed(run, nsr, exc, emit)
            return False
        try:
            socks = _cookies(run, nsr, dsock, socks)
        finally:
            dsock.close()
        if socks is None:
            return True
    for start in range(0, len(socks), HELD_BATCH):
        if run.cancel.is_set():
            return False
        emit((nsr, socks[start:start + HELD_BATCH]))
    return False


def _cookies(run, nsr, dsock, socks: list) -> list | None:
    """Cookies for the held sockets the pass found without one (the
    kernel makes a cookie when first asked: resolve_cookies). One that
    closed since is dropped (a walk would not have found it either). None
    when another socket answered for one's tuple (a reuseport group, a
    successor): the namespace is then walked (nsr says so)."""
    try:
        left = run.netlink.requests().resolve(dsock, socks)
    except (OSError, EngineError) as exc:
        left, why = socks, str(exc)
    else:
        why = "another socket answers for its tuple"
    if any(s.error != errno.ENOENT for s in left):
        nsr.walked, nsr.walk_reason = True, decide.COOKIE
        run.log(f"namespace {nsr.ns.name}: walked ({decide.COOKIE}: a held socket's "
                f"cookie could not be had: {why})")
        return None
    return [s for s in socks if s.cookie]


def _targets(run, nsr) -> list:
    """What to destroy in a namespace the one pass found whole: the
    planned sockets (fresh copies), or the pass's own (the kernel applied
    the filter and the Scope to them, as it does to what the bpf engine's
    walks destroy)."""
    ino = nsr.ns.ino
    if run.planned:
        return [copy(s) for s in run.by_cookie.values() if s.netns == ino]
    return list(run.held_socks.get(ino, ()))


def destroy_held(run, nsr, entry: pool.Entry, emit) -> bool:
    """A kill: destroy by exact tuple and cookie over netlink, from a socket
    made inside the namespace; a socket already gone is reported `gone`.
    True when the namespace must be walked instead."""
    socks = _targets(run, nsr)
    if not socks:
        return False
    ns, destroyer = nsr.ns, run.netlink.destroyer
    dsock = run.dsocks.pop(ns.ino, None)
    try:
        if dsock is None:
            dsock = entry.call(ns, destroyer.enter)
    except OSError as exc:
        namespace_failed(run, nsr, exc, emit)
        return False
    if any(not s.cookie for s in socks):
        socks = _cookies(run, nsr, dsock, socks)
        if socks is None:
            destroyer.release(dsock)
            return True
    stop = run.cancel.is_set
    try:
        for start in range(0, len(socks), HELD_BATCH):
            if stop():
                return False
            batch = socks[start:start + HELD_BATCH]
            try:
                destroyer.destroy(dsock, batch, stop)
            except OSError as exc:
                # what died before the failure is reported all the same
                settled = [s for s in batch if s.result != model.MATCHED]
                if settled:
                    emit((nsr, settled))
                namespace_failed(run, nsr, exc, emit)
                return False
            if start == 0 and any(s.error == errno.EOPNOTSUPP for s in batch):
                break          # netlink cannot here: the walk's destroy may
            emit((nsr, [s for s in batch if s.result != model.MATCHED]))
        else:
            return False
    finally:
        destroyer.release(dsock)
    run.log(f"namespace {ns.name}: netlink cannot destroy here; walking it")
    nsr.walked, nsr.walk_reason = True, decide.NO_DESTROY
    return True
