"""Where one sockterm run spends its time, phase by phase.

`python3 -m tests.bench.profile OUT.json [--cprofile] -- SOCKTERM-ARGS...` runs the real
CLI in this process with timers wrapped around the stages of the pipeline
(imports, probe, discovery, engine setup, per-namespace iterator creation,
reads, decoding, attribution, rendering) and writes what each took, as
exclusive time: a phase nested in another is not counted twice. The code
under test is not modified; only attributes are wrapped at run time.
With --cprofile, the run is also profiled by cProfile into OUT.prof (which
slows the Python parts: use the phase times of a run without it).
"""

from __future__ import annotations

import json
import sys
import threading
import time

T_START = time.perf_counter()

_local = threading.local()       # each thread nests its own phases
_lock = threading.Lock()
phases: dict[str, float] = {}
calls: dict[str, int] = {}


def _stack() -> list:
    if not hasattr(_local, "stack"):
        _local.stack = []
    return _local.stack


def _enter():
    _stack().append(0.0)           # time spent in nested phases
    return time.perf_counter()


def _leave(name: str, t0: float):
    elapsed = time.perf_counter() - t0
    stack = _stack()
    nested = stack.pop()
    if threading.current_thread() is not threading.main_thread():
        name = "[other threads] " + name     # overlaps the main thread's time
    with _lock:
        phases[name] = phases.get(name, 0.0) + elapsed - nested
        calls[name] = calls.get(name, 0) + 1
    if stack:
        stack[-1] += elapsed


def timed(name, fn):
    def wrapper(*args, **kw):
        t0 = _enter()
        try:
            return fn(*args, **kw)
        finally:
            _leave(name, t0)
    wrapper.__wrapped__ = fn
    return wrapper


def timed_gen(name, fn):
    """A generator function whose every step is charged to `name`."""
    def wrapper(*args, **kw):
        it = fn(*args, **kw)
        while True:
            t0 = _enter()
            try:
                item = next(it)
            except StopIteration:
                _leave(name, t0)
                return
            except BaseException:
                _leave(name, t0)
                raise
            _leave(name, t0)
            yield item
    return wrapper


def patch(obj, attr, name, gen=False):
    setattr(obj, attr, (timed_gen if gen else timed)(name, getattr(obj, attr)))


def instrument():
    from sockterm.cli import render
    from sockterm.core import execute, onepass, pool
    from sockterm.engine.bpf import engine as bpf, libbpf, record
    from sockterm.host import netns, probe, procs
    patch(probe, "probe", "host probe (capabilities, BTF scan)")
    patch(netns, "discover", "namespace discovery")
    patch(netns, "resolve", "namespace discovery")
    patch(procs, "own_inodes", "own-socket exclusion (/proc/self/fd)")
    patch(libbpf, "load", "libbpf dlopen + ctypes binding")
    patch(bpf.BpfEngine, "open", "BPF object open + BTF layout check")
    patch(record, "layout_mismatches", "BPF object open + BTF layout check")
    patch(bpf.BpfEngine, "_configure", "BPF filter config")
    patch(bpf.BpfEngine, "_attach", "BPF iterator attach")
    patch(bpf.BpfEngine, "_fill_maps", "BPF map fill (inodes, cookies)")
    patch(bpf.BpfEngine, "owners", "process attribution: the owner index")
    patch(pool.Entry, "call", "per-namespace setns + engine.enter (worker)")
    patch(bpf.BpfEngine, "enter", "engine.enter: iterator creation (inside the namespace)")
    walk = timed_gen("iterator reads (kernel walk + destroy)", bpf._read_all)
    held_walk = timed_gen("one pass: task_file walk (kernel)", bpf._read_all)

    def read_all(fd, size=record.REC.size):
        return (held_walk if size == record.HELD.size else walk)(fd, size)
    bpf._read_all = read_all
    patch(bpf.BpfEngine, "held", "one pass: map fill and counts")
    patch(bpf, "decode_held", "one pass: decoding records -> Sock objects")
    patch(onepass, "open_counters", "namespace counts: opening procfs files")
    patch(onepass, "read_counts", "namespace counts: reading")
    from sockterm.engine.diag import destroy
    patch(destroy.Destroyer, "open", "netlink destroy: probe")
    patch(destroy.Destroyer, "enter", "netlink destroy: socket inside the namespace")
    patch(destroy.Destroyer, "destroy", "netlink destroy: SOCK_DESTROY by exact tuple")
    patch(bpf, "decode", "record decoding -> Sock objects")
    patch(bpf.BpfEngine, "destroy", "kill settle (stats, error map)")
    patch(execute, "account", "accounting (processes onto sockets, counts)")
    patch(execute, "destroy_deferred", "netlink destroyer (TIME_WAIT, SYN-RECV)")
    init = libbpf.Libbpf.__init__

    def init_timed(self, path):
        init(self, path)
        self.bpf_object__load = timed("BPF object load (verifier, CO-RE)", self.bpf_object__load)
        self.bpf_object__open_file = timed("BPF object open + BTF layout check",
                                           self.bpf_object__open_file)
    libbpf.Libbpf.__init__ = init_timed
    for cls in set(render.RENDERERS.values()):
        for meth in ("socket", "finish"):
            if meth in cls.__dict__:
                patch(cls, meth, "rendering")


def instrument_diag():
    """Only when the run asks for diag: importing it imports pyroute2."""
    from sockterm.engine.diag import engine as diag
    patch(diag.DiagEngine, "open", "diag engine open (bytecode, probe dumps)")
    patch(diag.DiagEngine, "enter", "engine.enter: diag socket (inside the namespace)")
    patch(diag.DiagEngine, "read", "diag dumps + decoding", gen=True)
    patch(diag.DiagEngine, "destroy", "diag SOCK_DESTROY")


def main() -> None:
    out = sys.argv[1]
    argv = sys.argv[sys.argv.index("--") + 1:]
    t0 = time.perf_counter()
    import sockterm.cli
    import sockterm.cli.kill  # noqa: F401  (what a kill imports anyway)
    import sockterm.cli.render  # noqa: F401
    import sockterm.core  # noqa: F401
    import sockterm.engine.bpf.engine  # noqa: F401
    imports = time.perf_counter() - t0
    instrument()
    if "diag" in argv:
        instrument_diag()
    prof = None
    if "--cprofile" in sys.argv[:sys.argv.index("--")]:
        import cProfile
        prof = cProfile.Profile()
    code = 0
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    try:
        sockterm.cli.main(argv)
    except SystemExit as exc:
        code = exc.code
    finally:
        if prof:
            prof.disable()
    run = time.perf_counter() - t0
    if prof:
        prof.dump_stats(out.replace(".json", ".prof"))
    main_total = sum(v for k, v in phases.items() if not k.startswith("[other"))
    phases["(rest of the main thread: click, filter, waiting for readers, ...)"] = run - main_total
    sys.stdout.flush()
    with open(out, "w") as f:
        json.dump({"imports": imports, "startup": t0 - T_START - imports, "run": run,
                   "phases": phases, "calls": calls, "code": code}, f)


if __name__ == "__main__":
    main()
