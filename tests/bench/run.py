"""sockterm benchmarks: `sudo python3 -m tests.bench [--quick] [--json FILE]`.

Builds real workloads (client namespaces x TCP connections to a VIP, plus
background TCP and connected UDP that must survive) and compares, on the same
fresh workload each time:
  sockterm kill (--backend bpf, --backend diag), end to end as a process;
  the ss loop an operator scripts today (ss -K -N NS ... once per namespace);
  the floor: one do-nothing iterator pass per namespace (floor.bpf.c);
then sockterm list against ss -tuanp per namespace, scale curves over socket
and namespace counts, and a phase profile of one kill. Prints tables and
which targets pass. Cleans up namespaces and holders on every exit path.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time

from . import measure, workload
from .workload import VIP, Spec, Workload

PY = sys.executable
# the console script installed next to this interpreter: what an operator runs
_SCRIPT = os.path.join(os.path.dirname(PY), "sockterm")
SOCKTERM = [_SCRIPT] if os.path.exists(_SCRIPT) else [PY, "-m", "sockterm"]
NS_LOOP = "$(ip netns list | cut -d' ' -f1)"
SS_KILL = (f"ss -K dst {VIP} dport = :80 >/dev/null; for ns in {NS_LOOP}; do "
           f"ss -K -N \"$ns\" dst {VIP} dport = :80 >/dev/null; done")
SS_LIST_P = f"ss -tuanp; for ns in {NS_LOOP}; do ss -N \"$ns\" -tuanp; done"
SS_LIST = f"ss -tuan; for ns in {NS_LOOP}; do ss -N \"$ns\" -tuan; done"
KILL_ARGS = ["kill", "--yes", "--dst", f"{VIP}:80", "-o", "json"]
NOTHING = ["--dst", "255.255.255.255:1"]

FULL = dict(target=Spec(20, 1000, 3000, 100), repeats=5, start_repeats=15, curve_repeats=3,
            socket_curve=[(4, t) for t in (31, 312, 1562, 3125, 6250)],
            ns_curve=[1, 10, 50, 100], ns_curve_connections=16_000)
QUICK = dict(target=Spec(4, 250, 750, 50), repeats=1, start_repeats=5, curve_repeats=1,
             socket_curve=[(2, t) for t in (31, 312, 1250)],
             ns_curve=[1, 5, 10], ns_curve_connections=4_000)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sockterm(*args: str) -> list[str]:
    return [*SOCKTERM, *args]


# -- contenders ----------------------------------------------------------------

def kill_contenders() -> dict:
    return {"sockterm kill (bpf)": (sockterm("--backend", "bpf", *KILL_ARGS), False),
            "sockterm kill (diag)": (sockterm("--backend", "diag", *KILL_ARGS), False),
            "ss -K -N loop": (SS_KILL, True)}


def check_kill(w: Workload, sample: measure.Sample) -> str:
    """'' when exactly the target died and everything else survived; else why not."""
    dead = w.dead()
    want = {"target": w.spec.doomed, "other": 0, "udp": 0}
    got = {k: dead.get(k, 0) for k in want}
    if sample.rc not in (0, 1) and sample.rc is not None:
        return f"exit {sample.rc}" + (f" ({_last_line(sample.err)})" if sample.err else "")
    if got != want:
        return f"dead {got}, want {want}"
    return ""


def _last_line(text: str) -> str:
    lines = [l for l in text.strip().splitlines() if l.strip()]
    return lines[-1][:120] if lines else ""


def measure_kills(w: Workload, repeats: int) -> dict:
    """Each contender `repeats` times, interleaved, on a refilled workload each time."""
    results = {name: measure.Result(name) for name in kill_contenders()}
    for _ in range(repeats):
        for name, (argv, shell) in kill_contenders().items():
            sample = measure.run(argv, shell=shell)
            problem = check_kill(w, sample)
            results[name].samples.append(sample)
            if problem:
                results[name].ok = False
                results[name].note = problem
                log(f"{name}: {problem}")
            w.refill()
    return results


def measure_floor(obj: str, repeats: int) -> dict:
    sample = measure.run([PY, "-m", "tests.bench.floor", obj, str(max(3, repeats))],
                         capture=True, env=_env())
    if sample.rc:
        raise RuntimeError(f"floor failed: {sample.err.strip()}")
    doc = json.loads(sample.out)
    return {"walk": statistics.median(doc["passes"]), "load": doc["load"],
            "namespaces": doc["namespaces"], "process": sample}


def measure_lists(w: Workload, repeats: int) -> dict:
    want = w.spec.sockets
    cases = {
        "sockterm list -o jsonl": (sockterm("--backend", "bpf", "list", "-o", "jsonl"), False),
        "sockterm list -o jsonl --no-processes": (
            sockterm("--backend", "bpf", "list", "-o", "jsonl", "--no-processes"), False),
        "sockterm --backend diag list -o jsonl": (
            sockterm("--backend", "diag", "list", "-o", "jsonl"), False),
        "ss -tuanp loop": (SS_LIST_P, True),
        "ss -tuan loop": (SS_LIST, True),
        "sockterm list, nothing matches (bpf)": (
            sockterm("--backend", "bpf", "list", *NOTHING, "--no-processes", "-o", "jsonl"), False),
    }
    results = {}
    for name, (argv, shell) in cases.items():
        res = measure.Result(name)
        for _ in range(1 if "-tuanp" in name else repeats):
            sample = measure.run(argv, shell=shell, count_lines=True)
            lines = sample.lines
            res.samples.append(sample)
            if "nothing" not in name and lines < want:
                res.ok, res.note = False, f"{lines} lines < {want} sockets"
            if sample.rc not in (0, 1):
                res.ok, res.note = False, f"exit {sample.rc}: {_last_line(sample.err)}"
        results[name] = res
    return results


def _env() -> dict:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))


# -- start-up ------------------------------------------------------------------

def measure_startup(repeats: int) -> dict:
    cases = {"python3 -c pass": [PY, "-c", "pass"],
             "python3 -I -S -c pass": [PY, "-I", "-S", "-c", "pass"],
             "sockterm --version": sockterm("--version"),
             "sockterm --help": sockterm("--help"),
             "sockterm kill --help": sockterm("kill", "--help"),
             "python3 -m sockterm --help": [PY, "-m", "sockterm", "--help"]}
    on_path = shutil.which("sockterm")
    if on_path and os.path.realpath(on_path) != os.path.realpath(_SCRIPT):
        cases[f"{on_path} --help (what PATH finds)"] = [on_path, "--help"]
    out = {}
    for name, argv in cases.items():
        measure.run(argv)   # warm the page cache
        out[name] = measure.repeat(name, argv, repeats)
    return out


def import_breakdown() -> list[tuple[str, float]]:
    """Top-level imports of a kill, from python -X importtime (cumulative ms)."""
    code = ("import sockterm.cli, sockterm.cli.kill, sockterm.cli.render, sockterm.core, "
            "sockterm.engine.bpf, sockterm.engine.diag")
    sample = measure.run([PY, "-X", "importtime", "-c", code])
    rows = []
    for line in sample.err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cum_us, name = line.split("|")
        if not name[1:].startswith(" "):      # nesting is shown by indentation
            rows.append((name.strip(), int(cum_us) / 1000))
    return sorted(rows, key=lambda r: -r[1])


# -- profile -------------------------------------------------------------------

def profile_kill(w: Workload, out_dir: str) -> dict:
    path = os.path.join(out_dir, "kill.json")
    for attempt in range(3):     # a crashing run (see the kill table) leaves no profile
        sample = measure.run([PY, "-m", "tests.bench.profile", path, "--", "--backend", "bpf",
                              *KILL_ARGS], env=_env())
        w.refill()
        if os.path.exists(path):
            break
        log(f"profiled run failed (exit {sample.rc}: {_last_line(sample.err)}); retrying")
    else:
        return {}
    with open(path) as f:
        doc = json.load(f)
    doc["wall"] = sample.wall
    prof_json = os.path.join(out_dir, "kill-cprofile.json")
    measure.run([PY, "-m", "tests.bench.profile", prof_json, "--cprofile", "--", "--backend",
                 "bpf", *KILL_ARGS], env=_env())
    w.refill()
    doc["cprofile"] = _top_functions(prof_json.replace(".json", ".prof"))
    doc["prof_path"] = prof_json.replace(".json", ".prof")
    return doc


def _top_functions(path: str, n: int = 12) -> list[tuple[str, float, float, int]]:
    import pstats
    try:
        stats = pstats.Stats(path)
    except OSError:
        return []
    rows = []
    for (file, line, fn), (_, ncalls, tottime, cumtime, _) in stats.stats.items():
        where = f"{os.path.basename(file)}:{line} {fn}" if line else fn
        rows.append((where, tottime, cumtime, ncalls))
    return sorted(rows, key=lambda r: -r[1])[:n]


# -- curves --------------------------------------------------------------------

def curve_point(spec: Spec, floor_obj: str, repeats: int) -> dict:
    log(f"curve point {spec.label()} = {spec.sockets} sockets: building")
    with Workload(spec, log=log) as w:
        log(f"built in {w.build_seconds:.1f}s")
        kills = measure_kills(w, repeats)
        floor = measure_floor(floor_obj, 3)
        lst = {}
        for name, argv, shell in (
                ("sockterm list -o jsonl", sockterm("--backend", "bpf", "list", "-o", "jsonl"), False),
                ("sockterm list --no-processes", sockterm("--backend", "bpf", "list", "-o", "jsonl",
                                                          "--no-processes"), False),
                ("ss -tuanp loop", SS_LIST_P, True)):
            lst[name] = measure.repeat(name, argv, 1 if "-tuanp" in name else repeats, shell=shell)
    return {"spec": spec, "kills": kills, "floor": floor, "lists": lst}


def socket_curve(cfg: dict, floor_obj: str) -> list[dict]:
    return [curve_point(Spec(n, t, 3 * t, 0), floor_obj, cfg["curve_repeats"])
            for n, t in cfg["socket_curve"]]


def ns_curve(cfg: dict, floor_obj: str) -> list[dict]:
    points = []
    for n in cfg["ns_curve"]:
        per_ns = cfg["ns_curve_connections"] // n
        points.append(curve_point(Spec(n, per_ns // 4, per_ns - per_ns // 4, 0), floor_obj,
                                  cfg["curve_repeats"]))
    return points


# -- report --------------------------------------------------------------------

def fmt_ms(s: float) -> str:
    return "-" if s is None or math.isnan(s) else f"{s * 1000:8.1f}"


def ratio(a: float, b: float) -> str:
    return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:6.2f}x"


def table(title: str, rows: list[list[str]], head: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print(f"\n## {title}")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    sys.stdout.flush()


def report_kills(spec: Spec, kills: dict, floor: dict, start: float, nothing) -> None:
    peer = kills["ss -K -N loop"].wall
    rows = []
    for name, res in kills.items():
        rows.append([name, fmt_ms(res.wall), fmt_ms(res.cpu), f"{res.rss:6.1f}", ratio(res.wall, peer),
                     ratio(res.wall, floor["walk"]), ratio(res.wall, floor["walk"] + start),
                     "ok" if res.ok else f"FAIL: {res.note}"])
    rows.append(["floor: do-nothing iterator pass (in-process)", fmt_ms(floor["walk"]), "-", "-",
                 ratio(floor["walk"], peer), "1.00x", "-", f"{floor['namespaces']} namespaces"])
    fp = floor["process"]
    rows.append(["floor process (start+load+passes)", fmt_ms(fp.wall), fmt_ms(fp.cpu),
                 f"{fp.rss_mib:6.1f}", ratio(fp.wall, peer), ratio(fp.wall, floor["walk"]), "-",
                 f"load+attach {floor['load'] * 1000:.1f} ms"])
    if nothing is not None:
        rows.append([nothing.name, fmt_ms(nothing.wall), fmt_ms(nothing.cpu), f"{nothing.rss:6.1f}",
                     ratio(nothing.wall, peer), ratio(nothing.wall, floor["walk"]),
                     ratio(nothing.wall, floor["walk"] + start), "sockterm's fixed cost here"])
    table(f"kill {spec.doomed} of {spec.sockets} sockets ({spec.label()}); median of "
          f"{len(next(iter(kills.values())).samples)}",
          rows, ["contender", "wall ms", "cpu ms", "maxrss MiB", "vs ss", "vs floor",
                 "vs floor+start", "check"])


def report_lists(spec: Spec, lists: dict) -> None:
    peer = lists["ss -tuanp loop"].wall
    rows = [[n, fmt_ms(r.wall), fmt_ms(r.cpu), f"{r.rss:6.1f}", ratio(r.wall, peer),
             "ok" if r.ok else f"FAIL: {r.note}"] for n, r in lists.items()]
    table(f"list all {spec.sockets} sockets ({spec.label()})", rows,
          ["command", "wall ms", "cpu ms", "maxrss MiB", "vs ss -tuanp", "check"])


def report_startup(start: dict) -> None:
    rows = [[n, fmt_ms(r.wall), fmt_ms(r.cpu), f"{r.rss:6.1f}"] for n, r in start.items()]
    table("process start (median)", rows, ["command", "wall ms", "cpu ms", "maxrss MiB"])


def report_curve(title: str, points: list[dict], key) -> None:
    head = ["point", "sockets", "namespaces", "bpf kill", "diag kill", "ss -K loop", "floor",
            "bpf/ss", "bpf/floor", "list", "list rss", "list -P", "list -P rss", "ss -tuanp"]
    rows = []
    for p in points:
        k, l = p["kills"], p["lists"]
        bpf, diag, ss = (k[n] for n in ("sockterm kill (bpf)", "sockterm kill (diag)", "ss -K -N loop"))
        lst, lnp, ssl = (l[n] for n in ("sockterm list -o jsonl", "sockterm list --no-processes",
                                         "ss -tuanp loop"))
        mark = lambda r: fmt_ms(r.wall) + ("" if r.ok else "!")
        rows.append([key(p["spec"]), p["spec"].sockets, p["floor"]["namespaces"], mark(bpf), mark(diag),
                     mark(ss), fmt_ms(p["floor"]["walk"]), ratio(bpf.wall, ss.wall),
                     ratio(bpf.wall, p["floor"]["walk"]), fmt_ms(lst.wall), f"{lst.rss:5.1f}",
                     fmt_ms(lnp.wall), f"{lnp.rss:5.1f}", fmt_ms(ssl.wall)])
    table(title + " (wall ms; rss MiB; ! = wrong result or crash)", rows, head)


def report_profile(doc: dict, imports: list) -> None:
    if not doc:
        print("\n## profile: every profiled run failed (see the kill table)")
        return
    run = doc["run"]
    rows = [["interpreter start (python3 -c pass, measured apart)", "-", ""],
            ["imports (sockterm.cli, core, engine.bpf + deps)", fmt_ms(doc["imports"]), ""]]
    ordered = sorted(doc["phases"].items(), key=lambda kv: (kv[0].startswith("[other"), -kv[1]))
    for name, secs in ordered:
        share = "" if name.startswith("[other") else f"{100 * secs / run:5.1f}% of run"
        rows.append([name, fmt_ms(secs), f"{share:>14}  x{doc['calls'].get(name, '')}"])
    rows.append(["run total (cli.main)", fmt_ms(run), f"exit {doc['code']}"])
    rows.append(["process total, profiled (wall)", fmt_ms(doc["wall"]), ""])
    table("profile: one `sockterm --backend bpf kill` of the target workload (exclusive ms; "
          "[other threads] run alongside the main thread)",
          rows, ["phase", "ms", "share"])
    table("imports (python -X importtime, cumulative ms, top 10)",
          [[n, f"{ms:8.1f}"] for n, ms in imports[:10]], ["module", "ms"])
    if doc.get("cprofile"):
        table(f"cProfile top functions by own time ({doc['prof_path']})",
              [[w, fmt_ms(t), fmt_ms(c), n] for w, t, c, n in doc["cprofile"]],
              ["function", "tottime ms", "cumtime ms", "calls"])


def report_targets(res: dict, cfg: dict) -> list:
    kills, floor, start = res["kills"], res["floor"], res["start"]
    bpf = kills["sockterm kill (bpf)"]
    diag = kills.get("sockterm kill (diag)")
    ss = kills["ss -K -N loop"]
    ver = start["sockterm --version"].wall
    py = start["python3 -c pass"].wall
    checks = [
        ("1. kill e2e <= 1/3 of ss -K loop", bpf.ok and bpf.wall <= ss.wall / 3,
         f"bpf {bpf.wall * 1000:.0f} ms vs ss/3 {ss.wall / 3 * 1000:.0f} ms"
         + ("" if bpf.ok else f" (bpf run failed: {bpf.note})")),
        ("1b. kill e2e <= 240 ms (absolute)", bpf.ok and bpf.wall <= 0.240,
         f"{bpf.wall * 1000:.0f} ms"),
        ("2. kill e2e <= 1.5 x (floor + `sockterm --version` start)",
         bpf.ok and bpf.wall <= 1.5 * (floor["walk"] + ver),
         f"{bpf.wall * 1000:.0f} ms vs {1.5 * (floor['walk'] + ver) * 1000:.0f} ms"),
        ("2b. kill e2e <= 1.5 x (floor + python3 start)", bpf.ok and bpf.wall <= 1.5 * (floor["walk"] + py),
         f"{bpf.wall * 1000:.0f} ms vs {1.5 * (floor['walk'] + py) * 1000:.0f} ms"),
    ]
    if diag is not None:
        # the fallback engine (kernels without the kfunc): exact, and not far behind
        # the loop it replaces (it sends the same SOCK_DESTROY requests)
        checks.append(("1c. diag kill exact and <= 2 x ss -K loop", diag.ok and diag.wall <= 2 * ss.wall,
                       f"diag {diag.wall * 1000:.0f} ms vs 2 x ss {2 * ss.wall * 1000:.0f} ms"
                       + ("" if diag.ok else f" (diag run failed: {diag.note})")))
    curve = res.get("socket_curve") or []
    if curve:
        big = curve[-1]
        lst = big["lists"]["sockterm list -o jsonl"]
        small = curve[0]["lists"]["sockterm list -o jsonl"]
        checks.append((f"3a. list -o jsonl of {big['spec'].sockets} sockets < 1 s",
                       lst.ok and lst.wall < 1.0, f"{lst.wall * 1000:.0f} ms"))
        checks.append(("3b. list memory flat (largest <= 1.25 x smallest maxrss)",
                       lst.rss <= 1.25 * small.rss,
                       f"{small.rss:.1f} MiB at {curve[0]['spec'].sockets} -> {lst.rss:.1f} MiB at "
                       f"{big['spec'].sockets}"))
    helptime = start["sockterm --help"].wall
    checks.append(("4. sockterm --help < 120 ms", helptime < 0.120, f"{helptime * 1000:.0f} ms"))
    table("targets", [[n, "PASS" if ok else "FAIL", why] for n, ok, why in checks],
          ["target", "result", "measured"])
    return checks


# -- main ----------------------------------------------------------------------

def preflight() -> None:
    if os.geteuid() != 0:
        raise SystemExit("bench: needs root (namespaces, BPF, ss -K)")
    for tool in ("ip", "ss", "clang"):
        if not shutil.which(tool):
            raise SystemExit(f"bench: {tool} not found")
    stale = workload.stale_namespaces()
    if stale:
        log(f"warning: {len(stale)} namespaces from an earlier bench run exist "
            f"({stale[0]} ...); remove them with --cleanup")


def target_section(cfg: dict, floor_obj: str, tmp: str, res: dict, profile: bool) -> None:
    spec = cfg["target"]
    log(f"target workload {spec.label()}: {spec.sockets} sockets, building")
    with Workload(spec, log=log) as w:
        log(f"built in {w.build_seconds:.1f}s; measuring kills")
        res["kills"] = measure_kills(w, cfg["repeats"])
        log("floor")
        res["floor"] = measure_floor(floor_obj, 5)
        log("lists")
        res["lists"] = measure_lists(w, cfg["repeats"])
        res["nothing"] = res["lists"].pop("sockterm list, nothing matches (bpf)")
        if profile:
            log("profile")
            res["profile"] = profile_kill(w, tmp)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m tests.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw numbers here")
    ap.add_argument("--no-curves", action="store_true", help="skip the scale curves")
    ap.add_argument("--cleanup", action="store_true",
                    help=f"delete leftover {workload.PREFIX}* namespaces and exit")
    args = ap.parse_args(argv)
    if args.cleanup:
        for name in workload.stale_namespaces():
            workload.sh("ip", "netns", "del", name, check=False)
        return
    preflight()
    signal.signal(signal.SIGTERM, _interrupt)
    cfg = QUICK if args.quick else FULL
    res: dict = {}
    tmp = tempfile.mkdtemp(prefix="sockterm-bench-")
    from .floor import compile_object
    floor_obj = compile_object(tmp)
    t0 = time.perf_counter()
    print(f"# sockterm benchmark ({'quick' if args.quick else 'full'}), kernel {os.uname().release}, "
          f"{os.cpu_count()} CPUs", flush=True)
    log("start-up")
    res["start"] = measure_startup(cfg["start_repeats"])
    res["imports"] = import_breakdown()
    report_startup(res["start"])
    target_section(cfg, floor_obj, tmp, res, profile=True)
    report_kills(cfg["target"], res["kills"], res["floor"], res["start"]["sockterm --version"].wall,
                 res["nothing"])
    report_lists(cfg["target"], res["lists"])
    report_profile(res["profile"], res["imports"])
    sys.stdout.flush()
    if not args.no_curves:
        res["socket_curve"] = socket_curve(cfg, floor_obj)
        report_curve("scale: sockets", res["socket_curve"], _point_label)
        res["ns_curve"] = ns_curve(cfg, floor_obj)
        report_curve("scale: namespaces (same total connections)", res["ns_curve"], _point_label)
    checks = report_targets(res, cfg)
    print(f"\n(took {time.perf_counter() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_jsonable(res), f, indent=1, default=str)
    print(f"\n(cProfile data kept in {tmp})")
    sys.exit(0 if all(ok for _, ok, _ in checks) else 1)


def _point_label(s: Spec) -> str:
    return f"{s.namespaces}ns x {s.target + s.others}"


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")   # unwinds through every cleanup


def _jsonable(obj):
    if isinstance(obj, measure.Result):
        return {"name": obj.name, "ok": obj.ok, "note": obj.note, "wall": obj.wall, "cpu": obj.cpu,
                "rss_mib": obj.rss, "samples": [_jsonable(s) for s in obj.samples]}
    if isinstance(obj, measure.Sample):
        return {"wall": obj.wall, "cpu": obj.cpu, "rss_mib": obj.rss_mib, "rc": obj.rc}
    if isinstance(obj, Spec):
        return {"namespaces": obj.namespaces, "target": obj.target, "others": obj.others,
                "udp": obj.udp, "sockets": obj.sockets}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
