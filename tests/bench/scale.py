"""Scale: half a million sockets over 200 namespaces (`--only scale`).

The node the issue describes: 100,000, 250,000 and 500,000 loopback sockets
over 200 namespaces (LoopbackWorkload: holders within 18,000 descriptors
each), 5,000 of them (25 a namespace) the ones to kill. At each size:

  list -o jsonl   on each engine, and bpf with --no-processes: wall, CPU and
                  peak RSS, the lines it printed (every socket on the host,
                  the workload's and whatever else runs there)
  kill            the 5,000, named by --dst and the workload's namespaces, on
                  each engine; checked from the sockets' side, then refilled

The first list of each workload runs once untimed by the curve (its time is
reported on its own line): it also makes the kernel's cookies for the new
sockets, one exact lookup each, which later runs find made.

Targets: `list -o jsonl` peak RSS <= 200 MB at 500,000 sockets, its time
linear in the sockets listed (the cost of each socket between the sizes
agrees within 30%), and the kill of 5,000 <= 1.0 s with the default engine.

The sizes are visited up and back down (100k, 250k, 500k, 250k, 100k; the
lists only on the way back): this VM's speed drifts by tens of percent over
the minutes between sizes, and a drift that only goes one way otherwise
reads as a curve. Each size's time is the median of its lists on both visits.
"""

from __future__ import annotations

import os

from . import measure
from .workload import LOOPBACK, LoopbackWorkload, LoopSpec

FULL = dict(sizes=(100_000, 250_000, 500_000), namespaces=200, kills=5_000, repeats=5)
QUICK = dict(sizes=(10_000, 25_000, 50_000), namespaces=20, kills=500, repeats=1)
RSS_LIMIT_MIB = 200e6 / 2**20      # 200 MB
KILL_LIMIT = 1.0                   # seconds, 5,000 sockets, the default engine
LINEAR_SLACK = 1.3                 # per-socket cost between sizes may differ by this much


def spec_for(sockets: int, namespaces: int, kills: int) -> LoopSpec:
    connections = sockets // namespaces // 2
    target = kills // namespaces
    return LoopSpec(namespaces, target, connections - target)


def lists() -> dict:
    from .run import sockterm
    return {"list -o jsonl (bpf)": sockterm("--backend", "bpf", "list", "-o", "jsonl"),
            "list -o jsonl --no-processes (bpf)": sockterm("--backend", "bpf", "list", "-o", "jsonl",
                                                           "--no-processes"),
            "list -o jsonl (diag)": sockterm("--backend", "diag", "list", "-o", "jsonl")}


def point(sockets: int, cfg: dict, log, kills: bool = True) -> dict:
    from .run import _kill_once, host_sockets, kill_args, sockterm
    spec = spec_for(sockets, cfg["namespaces"], cfg["kills"])
    log(f"scale: {spec.label()} = {spec.sockets} sockets, building")
    with LoopbackWorkload(spec, log=log) as w:
        log(f"built in {w.build_seconds:.1f}s with {len(w.holders) + len(w.servers)} holders")
        out = {"spec": spec, "loadavg": [os.getloadavg()], "host_sockets": host_sockets(),
               "lists": {}, "kills": {}}
        # the first run after the connections are made also makes their cookies
        # (one exact lookup a socket the kernel has none for: ~10 us each);
        # timed on its own, so that the lists below compare like with like
        first_name, first_argv = next(iter(lists().items()))
        first = out["first"] = measure.Result(f"first {first_name}: cookies made")
        first.samples.append(measure.run(first_argv, count_lines=True))
        log(f"{first.name}: {first.wall * 1000:.0f} ms")
        for name, argv in lists().items():
            res = measure.Result(name)
            for _ in range(cfg["repeats"]):
                sample = measure.run(argv, count_lines=True)
                res.samples.append(sample)
                if sample.rc not in (0, 1):
                    res.ok, res.note = False, f"exit {sample.rc}: {sample.err.strip()[-200:]}"
                elif sample.lines < spec.sockets:
                    res.ok, res.note = False, f"{sample.lines} lines < {spec.sockets} sockets"
            out["lists"][name] = res
            log(f"{name}: {res.wall * 1000:.0f} ms, {res.rss:.1f} MiB, "
                f"{res.samples[-1].lines} lines {'' if res.ok else res.note}")
        for engine in ("bpf", "diag") if kills else ():
            name = f"kill {spec.doomed} ({engine})"
            res = out["kills"][name] = measure.Result(name)
            argv = sockterm("--backend", engine, *kill_args(w, f"{LOOPBACK}:80"))
            for _ in range(cfg["repeats"]):
                _kill_once(w, res, argv, False)
            log(f"{name}: {res.wall * 1000:.0f} ms {'' if res.ok else res.note}")
        out["loadavg"].append(os.getloadavg())
    return out


def section(quick: bool, log, res: dict) -> None:
    cfg = QUICK if quick else FULL
    points = [point(n, cfg, log) for n in cfg["sizes"]]
    for p in reversed(points[:-1]):          # back down: the lists again
        again = point(p["spec"].sockets, cfg, log, kills=False)
        for name, r in again["lists"].items():
            p["lists"][name].absorb(r)
        p["loadavg"].extend(again["loadavg"])
    res["scale"] = {"points": points, "cfg": cfg}


def report(res: dict, table, fmt_ms) -> list:
    """The tables, and the targets' checks."""
    from .run import bpf_note
    if "scale" not in res:
        return []
    points = res["scale"]["points"]
    names = list(points[0]["lists"])
    rows = []
    for p in points:
        for name in names:
            r = p["lists"][name]
            lines = r.samples[-1].lines if r.samples else 0
            rows.append([p["spec"].sockets, name, fmt_ms(r.wall), fmt_ms(r.cpu), f"{r.rss:6.1f}",
                         lines, f"{r.wall / max(lines, 1) * 1e6:6.2f}",
                         "ok" if r.ok else f"FAIL: {r.note}"])
        if p.get("first"):
            r = p["first"]
            rows.append([p["spec"].sockets, r.name, fmt_ms(r.wall), fmt_ms(r.cpu), f"{r.rss:6.1f}",
                         r.samples[-1].lines, "", "(not in the curve)"])
        for name, r in p["kills"].items():
            rows.append([p["spec"].sockets, name, fmt_ms(r.wall), fmt_ms(r.cpu), f"{r.rss:6.1f}",
                         "", "", "ok" if r.ok else f"FAIL: {r.note}"])
    loads = [f"{x[0]:.1f}" for p in points for x in p["loadavg"]]
    table(f"scale: {points[0]['spec'].namespaces} namespaces, loopback (load average "
          f"{' -> '.join(loads)}; sockets on the host at each size "
          f"{', '.join(str(p['host_sockets']) for p in points)}){bpf_note()}",
          rows, ["sockets", "command", "wall ms", "cpu ms", "maxrss MiB", "lines",
                 "us a line", "check"])
    checks = []
    big = points[-1]
    for name in names:
        r = big["lists"][name]
        checks.append((f"8a. {name} of {big['spec'].sockets} sockets: peak RSS <= 200 MB",
                       r.ok and r.rss <= RSS_LIMIT_MIB, f"{r.rss * 2**20 / 1e6:.0f} MB"))
        marginal = []
        for a, b in zip(points, points[1:]):
            ra, rb = a["lists"][name], b["lists"][name]
            la, lb = ra.samples[-1].lines, rb.samples[-1].lines
            if lb > la:
                marginal.append((rb.wall - ra.wall) / (lb - la))
        ok = bool(marginal) and max(marginal) <= LINEAR_SLACK * min(marginal)
        checks.append((f"8b. {name}: time linear in the sockets listed", ok,
                       "us a socket between the sizes: "
                       + ", ".join(f"{m * 1e6:.2f}" for m in marginal)))
    for name, r in big["kills"].items():
        if "(bpf)" in name:
            checks.append((f"8c. {name} at {big['spec'].sockets} sockets <= {KILL_LIMIT:g} s "
                           "(default engine)", r.ok and r.wall <= KILL_LIMIT,
                           f"{r.wall * 1000:.0f} ms" + ("" if r.ok else f" ({r.note})")))
    return checks
