"""The one pass made: each namespace's counters opened and read (while the
engine loads), the pass over every process's descriptors, the counters read
again; then, per namespace, walk or not and why (decide.py), and the search
(execute.py)."""

from __future__ import annotations

import os
import time
from typing import Iterator

from .. import model
from ..engine import EngineError
from ..host import enter, sockstat
from . import decide, execute


def stream(run) -> Iterator[model.Sock]:
    """Count, make the one pass, count again; walk only the namespaces
    whose counts disagree with what their processes hold."""
    counters = run.counting.result() or {}
    run.counting = None
    try:
        # read where they were opened, while the engine loaded
        before = {ino: c.first if c is not None else None for ino, c in counters.items()}
        certain = {r.ns.ino: decide.certain_walk(run.flt, run.scope, before.get(r.ns.ino))
                   for r in run.nsrs}
        if not run.attribute and all(certain.values()):
            # every namespace is walked whatever the pass finds: skip it
            for nsr in run.nsrs:
                nsr.walk_reason = certain[nsr.ns.ino]
                run.log(f"namespace {nsr.ns.name}: walked ({nsr.walk_reason})")
            run.log("one pass skipped: every namespace needs a walk")
            yield from execute.search_pass(run, run.nsrs)
            return
        started = time.monotonic()
        try:
            found = run.source.held([r.ns for r in run.nsrs])
        except (OSError, EngineError) as exc:
            run.log(f"no one pass ({exc}): every namespace is walked")
            for nsr in run.nsrs:
                nsr.walk_reason = decide.NO_ONE_PASS
            run.source = None
            yield from execute.search_pass(run, run.nsrs)
            return
        after = read_counts(counters)
    finally:
        for counter in counters.values():
            if counter is not None:
                counter.close()
    elapsed = time.monotonic() - started
    run.held_socks = found.by_namespace()
    walked = 0
    for nsr in run.nsrs:
        reason, detail = _walk_reason(run, nsr.ns.ino, before, after, found)
        nsr.walked, nsr.walk_reason = reason is not None, reason
        walked += nsr.walked
        run.log(f"namespace {nsr.ns.name}: " + (f"walked ({reason}: {detail})" if reason
                                                 else f"not walked: {detail}"))
    run.log(f"one pass: {found.records} descriptors hold matching sockets, "
             f"{elapsed * 1000:.0f} ms; {walked} of {len(run.nsrs)} namespaces to walk")
    # the pass's sockets carry their holders: only a walk's need an index,
    # of its own namespace's sockets
    owners = model.NamespaceOwners(found) if run.attribute and walked else None
    yield from execute.search_pass(run, run.nsrs, owners=owners)

def _walk_reason(run, ino: int, before: dict, after: dict, found) -> tuple[str | None, str]:
    reason, detail = decide.walk_reason(run.flt, run.scope, before.get(ino), after.get(ino),
                                        found.counts.get(ino), found.uncounted)
    if reason is None and run.kill:
        return decide.kill_reason(run.held_socks.get(ino, ()),
                                  can_destroy=run.netlink.destroyer is not None,
                                  host_tcp=run.host_tcp,
                                  in_kernel=run.walks_destroy_in_kernel())
    if reason is None:
        cookie, why = decide.cookie_reason(run.held_socks.uncookied(ino), run.host_tcp)
        if cookie:
            return cookie, why
    return reason, detail


def open_counters(run, nsrs: list) -> dict:
    """netns inode -> its Counters (None: unreadable), each read once as it
    opens (its `first` counts). Through a process in the namespace where
    there is one, else from inside it, where (to kill) the namespace's
    netlink socket is made too. Called on a thread of its own (never the
    main one, which stays home), which enters the namespaces one after
    another: a few system calls each, which the pool's workers would hand
    to the consumer one namespace at a time for more than they cost
    (200 namespaces: 21 ms in one thread, 40 through two workers). The
    descriptors they keep were reserved before it started (pipeline.prepare)."""
    found, inside = {}, []
    for nsr in nsrs:
        counters = sockstat.Counters.of_process(nsr.ns)
        if counters is None:
            inside.append(nsr)
        else:
            counters.first_read()
        found[nsr.ns.ino] = counters
    if not inside:
        return found
    destroyer = run.netlink.destroyer

    def here():
        counters = sockstat.Counters.here().first_read()
        try:
            return counters, destroyer.enter() if destroyer else None
        except OSError:
            return counters, None
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for nsr in inside:
            if run.cancel.is_set():
                break
            try:
                counters, dsock = enter.run_in(nsr.ns, here, home)
            except OSError:
                continue
            found[nsr.ns.ino] = counters
            if dsock is not None:
                run.dsocks[nsr.ns.ino] = dsock
    finally:
        os.close(home)
    return found


def read_counts(counters: dict) -> dict:
    out = {}
    for ino, found in counters.items():
        try:
            out[ino] = found.read() if found is not None else None
        except OSError:
            out[ino] = None
    return out
