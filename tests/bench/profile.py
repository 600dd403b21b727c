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
    from sockterm import core, libbpf, netns
    from sockterm.cli import render
    from sockterm.engine import bpf
    patch(core.probe, "probe", "host probe (capabilities, BTF scan)")
    patch(core.netns, "discover", "namespace discovery")
    patch(core.procs, "own_inodes", "own-socket exclusion (/proc/self/fd)")
    patch(libbpf, "load", "libbpf dlopen + ctypes binding")
    patch(bpf.BpfEngine, "open", "BPF object open + BTF layout check")
    patch(bpf.record, "layout_mismatches", "BPF object open + BTF layout check")
    patch(bpf.BpfEngine, "_configure", "BPF filter config")
    patch(bpf.BpfEngine, "_attach", "BPF iterator attach")
    patch(bpf.BpfEngine, "_fill_inodes", "BPF inode map fill")
    patch(bpf.BpfEngine, "owners", "process attribution (task_file iterator + dict)")
    patch(netns.Worker, "call", "per-namespace setns + iterator creation (worker)")
    patch(bpf, "_read_all", "iterator reads (kernel walk + destroy)", gen=True)
    patch(bpf, "decode", "record decoding -> Sock objects")
    patch(bpf.BpfEngine, "_settle", "kill settle (stats, error map)")
    init = libbpf.Libbpf.__init__

    def init_timed(self, path):
        init(self, path)
        self.bpf_object__load = timed("BPF object load (verifier, CO-RE)", self.bpf_object__load)
        self.bpf_object__open_file = timed("BPF object open + BTF layout check",
                                           self.bpf_object__open_file)
    libbpf.Libbpf.__init__ = init_timed
    try:
        from sockterm.engine import diag
        patch(diag_engine.DiagEngine, "scan", "diag engine scan (dump + destroy)", gen=True)
    except Exception:
        pass
    for cls in set(render.RENDERERS.values()):
        for meth in ("socket", "finish"):
            if meth in cls.__dict__:
                patch(cls, meth, "rendering")


def pad_stats_read(bpf, record):
    """Work around a crash so the profile can finish: BpfEngine.stats() reads the
    whole .bss map value (56 bytes: stats plus the two BTF anchor pointers) into a
    40-byte StStats, overwriting the heap. Only this harness reads it into a
    buffer of the right size; the end-to-end runs measure sockterm as it is."""
    import ctypes

    def stats(self):
        buf = ctypes.create_string_buffer(4096)
        key = ctypes.c_uint32(0)
        self.lib.bpf_map_lookup_elem(self._stats_map, ctypes.byref(key), buf)
        return record.StStats.from_buffer_copy(buf.raw[:ctypes.sizeof(record.StStats)])
    bpf.BpfEngine.stats = stats


def main() -> None:
    out = sys.argv[1]
    argv = sys.argv[sys.argv.index("--") + 1:]
    t0 = time.perf_counter()
    import sockterm.cli
    import sockterm.core  # noqa: F401  (what a kill imports anyway)
    import sockterm.engine.bpf  # noqa: F401
    imports = time.perf_counter() - t0
    from sockterm.engine import bpf
    pad_stats_read(bpf, bpf.record)
    instrument()
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
