"""Where each millisecond of one sockterm process goes, from exec to exit.

    sudo python3 -m tests.bench.timeline [-n RUNS] [--realtime] [--small-host] -- SOCKTERM-ARGS...

Each run is a fresh process started as the console script starts sockterm
(`from sockterm.main import run; run()`), timed from the parent's exec: the
interpreter and site, then each import as it completes (in the order the run
makes them), then the stages of the run - probe, discovery, the engine's
set-up (libbpf, the BTF cache, object open and load), the first namespace
entered, the first socket read, the first destroy - and the exit. Stages are
wrapped at run time; nothing in sockterm is changed. Prints, per event, the
median over the runs of when it happened (ms since exec) and of the time
from the event before. Unlike tests/bench/profile.py (which imports
everything up front), the imports here are the run's own.

--small-host builds the bench's small host (4 namespaces x 2,000 loopback
sockets), gives the run its namespaces (--netns) and refills what a run
killed before the next: `... --small-host -- kill --yes --dst 127.0.0.1:80 -o json`.
"""

from __future__ import annotations

import os
import sys
import time

# module -> the events wrapped in it once it is imported: attr path, label
STAGES = {
    "sockterm.host.probe": [("probe", "host probe")],
    "sockterm.host.netns": [("discover", "namespace discovery"), ("resolve", "--netns resolved")],
    "sockterm.host.procs": [("own_inodes", "own sockets (/proc/self/fd)")],
    "sockterm.core.engines": [("choose_engine", "engine chosen")],
    "sockterm.core.pipeline": [("_Run.prepare", "run prepared (engine open)"),
                               ("_Background.result", "one pass: counters awaited")],
    "sockterm.core.onepass": [("open_counters", "one pass: counters opened (a thread)"),
                              ("read_counts", "one pass: counts read after it")],
    "sockterm.core.held": [("destroy_held", "one pass: a namespace's sockets destroyed (worker)")],
    "sockterm.core.execute": [("search_pass", "namespace walks")],
    "sockterm.engine": [("create", "engine created and opened")],
    "sockterm.engine.bpf.libbpf": [("load", "libbpf dlopen + binding")],
    "sockterm.engine.bpf.btfcache": [("custom_btf", "BTF cache checked")],
    "sockterm.engine.bpf.engine": [("BpfEngine._configure", "BPF config + maps sized"),
                                   ("BpfEngine.enter", "bpf: iterators created (in the namespace)"),
                                   ("_read_all", "bpf: iterator read (kernel walk, kfunc destroys)"),
                                   ("BpfEngine.held", "bpf: the one pass")],
    "sockterm.engine.diag.engine": [("DiagEngine.open", "diag: open (bytecode, probe)"),
                                    ("DiagEngine.enter", "diag: socket in the namespace"),
                                    ("DiagEngine.destroy", "diag: SOCK_DESTROY")],
    "sockterm.engine.diag.wire": [("DiagSocket.dump", "diag: dump"),
                                  ("DiagSocket.request_acks", "netlink: SOCK_DESTROY sent, acks read")],
    "sockterm.engine.diag.destroy": [("Destroyer.open", "netlink destroyer: probe"),
                                     ("Destroyer.destroy", "netlink destroyer: destroy")],
    "sockterm.core.pool": [("Entry.call", "setns + enter (worker)")],
}
IMPORTS = ("click", "sockterm.cli", "sockterm.cli.show", "sockterm.cli.kill", "sockterm.cli.run",
           "sockterm.filter", "sockterm.core", "sockterm.host.containers", "sockterm.engine.diag.engine",
           "sockterm.engine.bpf.engine", "sockterm.cli.render", "rich", "json")


def child(t0: float, out: str) -> None:
    """In the measured process: record events, run sockterm, write them at exit."""
    events: list = [("interpreter and site ready", time.monotonic() - t0)]
    seen: set = set()

    def mark(label: str) -> None:
        if label not in seen:
            seen.add(label)
            events.append((label, time.monotonic() - t0))

    def wrap(label, fn):
        import inspect
        if inspect.isgeneratorfunction(fn):
            def gen(*a, **kw):
                mark(f"{label}: start")
                for item in fn(*a, **kw):
                    mark(f"{label}: first item")
                    yield item
                mark(f"{label}: end")
            return gen

        def call(*a, **kw):
            mark(f"{label}: start")
            try:
                return fn(*a, **kw)
            finally:
                mark(f"{label}: end")
        return call

    def instrument(name: str, module) -> None:
        for path, label in STAGES.get(name, ()):
            owner, _, attr = path.rpartition(".")
            obj = getattr(module, owner) if owner else module
            if hasattr(obj, attr):
                setattr(obj, attr, wrap(label, getattr(obj, attr)))
        if name == "sockterm.engine.bpf.libbpf":
            init = module.Libbpf.__init__

            def init_timed(self, path):
                init(self, path)
                self.bpf_object__open_file = wrap("bpf: object open", self.bpf_object__open_file)
                self.bpf_object__load = wrap("bpf: object load (CO-RE, verifier)", self.bpf_object__load)
            module.Libbpf.__init__ = init_timed

    import importlib.abc

    class Watch(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name not in STAGES and name not in IMPORTS:
                return None
            for finder in sys.meta_path:
                if finder is self:
                    continue
                spec = getattr(finder, "find_spec", lambda *a: None)(name, path, target)
                if spec is not None:
                    loader = spec.loader
                    run_module = loader.exec_module

                    def exec_module(module, run_module=run_module, name=name):
                        run_module(module)
                        if name in IMPORTS:
                            mark(f"import {name}")
                        instrument(name, module)
                    loader.exec_module = exec_module
                    return spec
            return None

    sys.meta_path.insert(0, Watch())
    real_exit = os._exit

    def write(*_):
        mark("exit")
        with open(out, "w") as f:
            f.write("".join(f"{label}\t{at}\n" for label, at in events))

    def exit_now(code):             # sockterm leaves without the interpreter's teardown
        write()
        real_exit(code)
    os._exit = exit_now
    import atexit
    atexit.register(write)          # ... except where the run raises
    sys.argv[0] = "sockterm"
    from sockterm.main import run
    run()


def main() -> None:
    args = sys.argv[1:]
    runs, realtime, small = 7, False, False
    while args and args[0] != "--":
        opt = args.pop(0)
        if opt == "-n":
            runs = int(args.pop(0))
        elif opt == "--realtime":
            realtime = True
        elif opt == "--small-host":
            small = True
    argv = args[1:]
    if small:
        from .run import FULL
        from .workload import LoopbackWorkload
        spec, _ = FULL["small"]
        with LoopbackWorkload(spec, log=lambda msg: None) as w:
            argv += [arg for ns in w.namespaces() for arg in ("--netns", ns)]
            return report(argv, measure_runs(argv, runs, realtime, w.refill), runs, realtime)
    report(argv, measure_runs(argv, runs, realtime), runs, realtime)


def measure_runs(argv: list, runs: int, realtime: bool, after=None) -> list[dict]:
    import subprocess
    import tempfile
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    prefix = ["chrt", "-f", "10"] if realtime else []
    samples: list[dict] = []
    for _ in range(runs):
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            code = ("import sys; sys.argv[1:] = " + repr(argv) +
                    "; from tests.bench.timeline import child; child(%r, %r)")
            t0 = time.monotonic()
            proc = subprocess.run([*prefix, sys.executable, "-c", code % (t0, out.name)], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wall = time.monotonic() - t0
            events = [(label, float(at)) for label, at in
                      (line.rsplit("\t", 1) for line in open(out.name).read().splitlines())]
        if proc.returncode not in (0, 1):
            print(f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}", file=sys.stderr)
        events.append(("reaped by the parent", wall))
        samples.append(dict(events))
        if after:
            after()
    return samples


def report(argv: list, samples: list[dict], runs: int, realtime: bool) -> None:
    import statistics
    labels = {label for s in samples for label in s}
    labels = sorted(labels, key=lambda l: statistics.median(s[l] for s in samples if l in s))
    print(f"# sockterm {' '.join(argv)}; {runs} runs, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}" + (", real-time priority" if realtime else ""))
    print(f"{'ms since exec':>14} {'+ms':>7}  event")
    prev = 0.0
    for label in labels:
        at = statistics.median(s[label] for s in samples if label in s) * 1000
        print(f"{at:14.1f} {at - prev:7.1f}  {label}")
        prev = at


if __name__ == "__main__":
    main()
