"""Which engine runs, opened: auto's choice, the degradation where the kernel
refuses a program, the engine that makes the one pass, and the one place the
run's netlink requests by exact tuple (SOCK_DESTROY, lookups) are made."""

from __future__ import annotations

import threading

from ..engine import EngineError
from ..host import probe
from .report import SocktermError

GRACEFUL_INSTEAD = "kill --graceful shuts connections down through the processes holding them instead"


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


def cannot_destroy(host: probe.HostProbe, engine: str) -> str:
    """One line for a kill on a kernel that refuses engine's destroys."""
    if not host.bpf_can_kill:
        return ("this kernel can destroy no socket: it has neither the bpf_sock_destroy kfunc "
                "(Linux >= 6.5) nor SOCK_DESTROY (CONFIG_INET_DIAG_DESTROY); " + GRACEFUL_INSTEAD)
    return (f"{engine} engine: the kernel cannot destroy sockets over netlink (no "
            f"CONFIG_INET_DIAG_DESTROY): use --backend bpf, or {GRACEFUL_INSTEAD}")


def engine_error(name: str, exc) -> SocktermError:
    from .. import engine as engines
    if isinstance(exc, engines.CannotDestroy):
        return SocktermError(cannot_destroy(probe.probe(), name))
    return SocktermError(f"{name} engine: {exc}", exc.code)


def open_engine(run, name: str, one_pass: bool):
    """(engine, its name): the engine opened, decided by what the kernel
    loads. Under auto, an engine whose walks the kernel refuses becomes the
    fallback (diag; its one-pass program, if it loaded, stays: it makes the
    pass); an engine asked for by name (or a plan made with it) fails instead."""
    from .. import engine as engines
    can = engines.capabilities(name)
    common = dict(flt=run.flt, scope=run.scope, kill=run.kill, owners=run.attribute,
                  log=run.log)
    degrade = can.refusable and run.options.backend == "auto" and not run.planned
    fallback = engines.FALLBACK
    try:
        engine = engines.create(name, held=one_pass and can.one_pass, **common)
    except EngineError as exc:
        if not degrade:
            raise engine_error(name, exc) from None
        run.log(f"engine: {fallback} (the BPF load failed: {exc})")
        run.bpf_failed = str(exc)         # not tried again for the one pass
        return _open(fallback, common), fallback
    if engine.walks:
        return engine, name
    why = f"the kernel refused the socket iterators ({engine.lost.get('enumerate', '')})"
    if not degrade:
        engine.close()
        raise SocktermError(f"--backend {name} cannot run here: {why}; use --backend {fallback}")
    run.log(f"engine: {fallback} ({why})")
    if engine.one_pass:
        run.source = engine
        run.closers.append(engine)
    else:
        engine.close()
    return _open(fallback, common), fallback


def _open(name: str, common: dict):
    from .. import engine as engines
    try:
        return engines.create(name, **common)
    except EngineError as exc:
        raise engine_error(name, exc) from None


def open_one_pass(run, name: str) -> str:
    """Set run.source, the engine that makes the one pass; '' when it is
    there, else why not. The walk engine makes it where it can and is open;
    else an engine of its own (walks=False, no kfunc) makes it: beside a
    fallback's walks, or first where the walk engine opens late."""
    from .. import engine as engines
    if run.source is not None:
        return ""
    if run.bpf_failed:
        return f"BPF cannot load: {run.bpf_failed}"
    if engines.capabilities(name).one_pass and run.engine is not None:
        if not run.engine.one_pass:
            return f"the kernel refused its program: {run.engine.lost.get('one-pass', '')}"
        run.source = run.engine
        return ""
    try:
        run.source = pass_engine(run, owners=run.attribute)
    except EngineError as exc:
        run.source = None
        return f"BPF cannot load: {exc}"
    return ""


def pass_engine(run, owners: bool):
    """An engine of its own (walks=False, no kfunc) that makes the one pass
    (and, with owners, its owner pass) over the run's filter and scope;
    closed with the run. EngineError: BPF cannot load."""
    from .. import engine as engines
    source = engines.create(engines.ONE_PASS, flt=run.flt, scope=run.scope, kill=False,
                            owners=owners, log=run.log, held=True, walks=False)
    run.closers.append(source)
    return source


class Netlink:
    """The run's netlink requests by exact tuple and cookie, whichever engine
    runs: one destroyer (checked to destroy here), made up front where the
    one pass or a plan needs it, else when first needed; lookups alone (no
    check) where the run has no destroyer."""

    def __init__(self, log):
        self.log = log
        self.destroyer = None
        self._lookup = None
        self._lock = threading.Lock()

    def open(self, who: str, then: str) -> None:
        """The destroyer, now; when the kernel cannot destroy over netlink,
        none (logged: `then` says what `who` does instead)."""
        from .. import engine as engines
        try:
            self.destroyer = engines.destroyer(self.log)
        except EngineError as exc:
            self.log(f"{who}: {exc}; {then}")

    def destroys(self):
        """The destroyer, made now if need be (EngineError: the kernel cannot)."""
        with self._lock:
            if self.destroyer is None:
                from .. import engine as engines
                self.destroyer = engines.destroyer(self.log)
            return self.destroyer

    def requests(self):
        """Lookups by exact tuple: the destroyer when the run has one."""
        with self._lock:
            if self.destroyer is None and self._lookup is None:
                from .. import engine as engines
                self._lookup = engines.destroyer(self.log, check=False)
            return self.destroyer or self._lookup
