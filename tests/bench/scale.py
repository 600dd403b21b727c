"""Scale: half a million sockets over 200 namespaces (`--only scale`).

The node the issue describes: 100,000, 250,000 and 500,000 loopback sockets
over 200 namespaces (LoopbackWorkload: holders within 18,000 descriptors
each), 5,000 of them (25 a namespace) the ones to kill. At each size:

  list -o jsonl   on each engine, and bpf with --no-processes, alternating:
                  wall, CPU and peak RSS, the lines it printed (every socket
                  on the host, the workload's and whatever else runs there)
  kill            the 5,000, named by --dst and the workload's namespaces, on
                  each engine; checked from the sockets' side, then refilled

Targets: `list -o jsonl` peak RSS <= 200 MB at 500,000 sockets, its time
linear in the sockets listed (the cost of each socket between the sizes
agrees within 30%), and the kill of 5,000 <= 1.0 s with the default engine.

One workload serves every size: the 100,000 are built once, and the sizes
above are layers of spared connections grown onto every namespace and
dropped again (LoopbackWorkload.grow/shrink: RSTs, no TIME_WAIT left). The
sizes are visited up, then down and up again (SCHEDULE): this VM's speed
drifts by tens of percent over minutes, and sizes measured one after the
other, each on a workload built anew, read that drift (and each build's
own) as a curve. Each size's time is the median of its lists over all its
visits.

A socket made since the last list has no cookie yet: the first list after a
layer is made also makes them, one exact lookup a socket. On the way up
that list is timed on its own line ("first ..."), later it runs untimed, so
the lists of the curve compare like with like.
"""

from __future__ import annotations

import os

from . import measure
from .workload import LOOPBACK, LoopbackWorkload, LoopSpec

FULL = dict(sizes=(100_000, 250_000, 500_000), namespaces=200, kills=5_000, repeats=3)
QUICK = dict(sizes=(10_000, 25_000, 50_000), namespaces=20, kills=500, repeats=1)
# the sizes' indexes in the order visited: up (kills at each), down, up, down
SCHEDULE = (0, 1, 2, 1, 0, 1, 2, 1, 0)
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


def _list(res: measure.Result, argv, spec: LoopSpec) -> measure.Sample:
    sample = measure.run(argv, count_lines=True)
    res.samples.append(sample)
    if sample.rc not in (0, 1):
        res.ok, res.note = False, f"exit {sample.rc}: {sample.err.strip()[-200:]}"
    elif sample.lines < spec.sockets:
        res.ok, res.note = False, f"{sample.lines} lines < {spec.sockets} sockets"
    return sample


def visit(p: dict, w: LoopbackWorkload, cfg: dict, log, first: bool, new: int) -> int:
    """One visit of a size: its lists (and on the first, its first list and
    kills). `new` sockets were made since the last list (none: 0); returns
    how many it made (the kills' refills)."""
    from .run import _kill_once, host_sockets, kill_args, sockterm
    spec = p["spec"]
    p["loadavg"].append(os.getloadavg())
    commands = lists()
    if first:
        p["host_sockets"] = host_sockets()
        name, argv = next(iter(commands.items()))
        res = p["first"] = measure.Result(f"first {name}: {new} new sockets' cookies made")
        _list(res, argv, spec)
        log(f"{res.name}: {res.wall * 1000:.0f} ms")
    elif new:
        _list(measure.Result("cookies"), next(iter(commands.values())), spec)   # untimed
    for _ in range(cfg["repeats"]):
        for name, argv in commands.items():
            res = p["lists"].setdefault(name, measure.Result(name))
            _list(res, argv, spec)
    log(f"{spec.sockets}: " + "; ".join(f"{n} {r.wall * 1000:.0f} ms {r.rss:.1f} MiB"
                                        f"{'' if r.ok else ' ' + r.note}" for n, r in p["lists"].items()))
    for engine in ("bpf", "diag") if first else ():
        name = f"kill {spec.doomed} ({engine})"
        res = p["kills"][name] = measure.Result(name)
        argv = sockterm("--backend", engine, *kill_args(w, f"{LOOPBACK}:80"))
        for _ in range(cfg["repeats"]):
            _kill_once(w, res, argv, False)
        log(f"{name}: {res.wall * 1000:.0f} ms {'' if res.ok else res.note}")
    return spec.doomed if first else 0


def section(quick: bool, log, res: dict) -> None:
    cfg = QUICK if quick else FULL
    specs = [spec_for(n, cfg["namespaces"], cfg["kills"]) for n in cfg["sizes"]]
    points = [{"spec": spec, "loadavg": [], "host_sockets": -1, "lists": {}, "kills": {},
               "visits": 0} for spec in specs]
    log(f"scale: {specs[0].label()} = {specs[0].sockets} sockets, building")
    with LoopbackWorkload(specs[0], log=log, room=specs[-1]) as w:
        log(f"built in {w.build_seconds:.1f}s with {len(w.holders) + len(w.servers)} holders")
        level, new = 0, specs[0].sockets       # sockets made since the last list
        for i in SCHEDULE:
            while level < i:
                seconds = w.grow(specs[level + 1].others - specs[level].others)
                new += specs[level + 1].sockets - specs[level].sockets
                level += 1
                log(f"grown to {specs[level].sockets} sockets in {seconds:.1f}s")
            while level > i:
                seconds = w.shrink()
                level -= 1
                log(f"shrunk to {specs[level].sockets} sockets in {seconds:.1f}s")
            new = visit(points[i], w, cfg, log, first=not points[i]["visits"], new=new)
            points[i]["visits"] += 1
    res["scale"] = {"points": points, "cfg": cfg, "schedule": SCHEDULE}


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
            rows.append([p["spec"].sockets, name, len(r.samples), fmt_ms(r.wall), fmt_ms(r.cpu),
                         f"{r.rss:6.1f}", lines, f"{r.wall / max(lines, 1) * 1e6:6.2f}",
                         "ok" if r.ok else f"FAIL: {r.note}"])
        if p.get("first"):
            r = p["first"]
            rows.append([p["spec"].sockets, r.name, len(r.samples), fmt_ms(r.wall), fmt_ms(r.cpu),
                         f"{r.rss:6.1f}", r.samples[-1].lines, "", "(not in the curve)"])
        for name, r in p["kills"].items():
            rows.append([p["spec"].sockets, name, len(r.samples), fmt_ms(r.wall), fmt_ms(r.cpu),
                         f"{r.rss:6.1f}", "", "", "ok" if r.ok else f"FAIL: {r.note}"])
    loads = [f"{min(x[0] for x in p['loadavg']):.1f}-{max(x[0] for x in p['loadavg']):.1f}"
             for p in points]
    order = " -> ".join(str(points[i]["spec"].sockets // 1000) + "k"
                        for i in res["scale"].get("schedule", range(len(points))))
    table(f"scale: {points[0]['spec'].namespaces} namespaces, loopback, sizes visited "
          f"{order} (load average at each size {', '.join(loads)}; sockets on the host "
          f"{', '.join(str(p['host_sockets']) for p in points)}){bpf_note()}",
          rows, ["sockets", "command", "runs", "wall ms", "cpu ms", "maxrss MiB", "lines",
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
