"""sockterm benchmarks: `sudo python3 -m tests.bench [--quick] [--json FILE]`.

Builds real workloads (client namespaces x TCP connections to a VIP, plus
background TCP and connected UDP that must survive) and compares, on the same
fresh workload each time:
  sockterm kill (--backend bpf, --backend diag), end to end as a process;
  the ss loop an operator scripts today (ss -K -N NS ... once per namespace);
  the floor: one do-nothing iterator pass per namespace (floor.bpf.c);
then sockterm list against ss -tuanp per namespace, scale curves over socket
and namespace counts, and a phase profile of one kill. Two loopback cases
(many namespaces of loopback connections; a small host) time the bpf kill
against the ss loop in alternating passes (ABBA: neither always runs first
on a freshly refilled table). Prints tables and which targets pass. Cleans
up namespaces and holders on every exit path. Every kill names the
workload's namespaces (--netns; the ss loop walks the same ones): nothing
outside them is ever touched, whatever else runs on the machine.
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

from . import graceful, measure, onepass, scale, workload
from .workload import LOOPBACK, VIP, LoopbackWorkload, LoopSpec, Spec, Workload

PY = sys.executable
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# what an operator runs: the launcher scripts/install writes, for this checkout
# (written by install_launcher(); an installed one may be stale)
SOCKTERM = [PY, "-m", "sockterm"]
NS_LOOP = "$(ip netns list | cut -d' ' -f1)"
SS_LIST_P = f"ss -tuanp; for ns in {NS_LOOP}; do ss -N \"$ns\" -tuanp; done"
SS_LIST = f"ss -tuan; for ns in {NS_LOOP}; do ss -N \"$ns\" -tuan; done"
NOTHING = ["--dst", "255.255.255.255:1"]

FULL = dict(target=Spec(20, 1000, 3000, 100), repeats=5, start_repeats=15, curve_repeats=3,
            nothing_passes=15,
            socket_curve=[(4, t) for t in (31, 312, 1562, 3125, 6250)],
            ns_curve=[1, 10, 50, 100], ns_curve_connections=16_000,
            # 20 x 8,000 sockets, 5,000 killed a pass; 4 x 2,000, 124 killed a pass
            loopback=(LoopSpec(20, 250, 3750), 8), small=(LoopSpec(4, 31, 969), 10))
QUICK = dict(target=Spec(4, 250, 750, 50), repeats=1, start_repeats=5, curve_repeats=1,
             nothing_passes=5,
             socket_curve=[(2, t) for t in (31, 312, 1250)],
             ns_curve=[1, 5, 10], ns_curve_connections=4_000,
             loopback=(LoopSpec(10, 250, 1750), 4), small=(LoopSpec(4, 31, 969), 4))
SECTIONS = ("start", "nothing", "target", "loopback", "small", "curves", "onepass", "graceful",
            "scale")
LOOPBACK_RATIO = 0.65        # target: bpf kill / ss loop, median over the passes
SMALL_RATIO = 3.0            # each engine's kill / ss loop, median over the passes
NOTHING_RATIO = 12.0         # match of nothing in one namespace / ss -tan dst
START_LIMIT = 0.060          # --help, and completing an option
UNUSED = "192.0.2.99"        # TEST-NET-1: no socket here talks to it
# --bpf-args / --bpf-env: what every bpf run gets besides, so that a kernel
# refusing one program can still be measured with what loads (--no-processes,
# SOCKTERM_WALK=all); the tables say so
BPF_ARGS: list = []
BPF_ENV: list = []


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sockterm(*args: str) -> list[str]:
    if args[:2] == ("--backend", "bpf") and (BPF_ARGS or BPF_ENV):
        return [*(["env", *BPF_ENV] if BPF_ENV else []), *SOCKTERM, *args, *BPF_ARGS]
    return [*SOCKTERM, *args]


def bpf_note() -> str:
    return f" [bpf runs with {' '.join(BPF_ENV + BPF_ARGS)}]" if BPF_ARGS or BPF_ENV else ""


def install_launcher(tmp: str) -> None:
    """This checkout, as an installed copy runs: byte-compiled (pip compiles
    on install; a PYTHONDONTWRITEBYTECODE shell would otherwise recompile
    every module on every run) and started by the launcher scripts/install
    writes (sockterm/launcher.py), here finding the checkout first."""
    import compileall
    sys.path.insert(0, ROOT)
    from sockterm import launcher
    compileall.compile_dir(os.path.join(ROOT, "sockterm"), quiet=1)
    path = os.path.join(tmp, "sockterm")
    launcher.write(path, PY, [ROOT, *launcher.site_paths()])
    SOCKTERM[:] = [path]
    os.environ["PYTHONPATH"] = ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")   # for PY -m


# -- contenders ----------------------------------------------------------------

def kill_args(w: Workload, dst: str) -> list[str]:
    """A runbook's kill (JSON report), scoped to the workload's namespaces."""
    scope = [arg for ns in w.namespaces() for arg in ("--netns", ns)]
    return ["kill", "--yes", "--dst", dst, "-o", "json", *scope]


def ss_kill_loop(w: Workload, addr: str, port: int) -> str:
    """The loop an operator scripts today, over the same namespaces."""
    return (f"for ns in {' '.join(w.namespaces())}; do "
            f"ss -K -N \"$ns\" dst {addr} dport = :{port} >/dev/null; done")


def kill_contenders(w: Workload) -> dict:
    args = kill_args(w, f"{VIP}:80")
    return {"sockterm kill (bpf)": (sockterm("--backend", "bpf", *args), False),
            "sockterm kill (diag)": (sockterm("--backend", "diag", *args), False),
            "ss -K -N loop": (ss_kill_loop(w, VIP, 80), True)}


def loopback_contenders(w: LoopbackWorkload, engines=("bpf",)) -> dict:
    """sockterm on each engine, then the ss loop (last: what the others are compared with)."""
    out = {f"sockterm kill ({e})": (sockterm("--backend", e, *kill_args(w, f"{LOOPBACK}:80")), False)
           for e in engines}
    out["ss -K -N loop"] = (ss_kill_loop(w, LOOPBACK, 80), True)
    return out


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
    contenders = kill_contenders(w)
    results = {name: measure.Result(name) for name in contenders}
    for _ in range(repeats):
        for name, (argv, shell) in contenders.items():
            _kill_once(w, results[name], argv, shell)
    return results


def _kill_once(w: Workload, res: measure.Result, argv, shell: bool) -> None:
    """One measured kill, checked from the sockets' side, then the workload refilled."""
    sample = measure.run(argv, shell=shell)
    problem = check_kill(w, sample)
    res.samples.append(sample)
    if problem:
        res.ok = False
        res.note = problem
        log(f"{res.name}: {problem}")
    w.refill()


def measure_alternating(w: Workload, contenders: dict, passes: int) -> dict:
    """Every contender `passes` times, in an order that rotates and reverses
    every other pass (two: AB, BA, AB, ...): a drift in the machine or the
    tables (a refilled target group sits in fresh hash chains) favours none.
    Per-pass ratios of each contender to the last one come with the results."""
    names = list(contenders)
    results = {name: measure.Result(name) for name in names}
    for p in range(passes):
        order = names[p % len(names):] + names[:p % len(names)]
        for name in (order if p % 2 == 0 else order[::-1]):
            argv, shell = contenders[name]
            _kill_once(w, results[name], argv, shell)
    base = results[names[-1]]
    ratios = {n: [x.wall / y.wall for x, y in zip(results[n].samples, base.samples)]
              for n in names[:-1]}
    first = names[0]
    return {"kills": results, "ratios": ratios[first], "passes": passes,
            "median_ratio": statistics.median(ratios[first]),
            "ratio_of_medians": results[first].wall / base.wall,
            "median_ratios": {n: statistics.median(r) for n, r in ratios.items()}}


def measure_floor(obj: str, repeats: int, w: Workload) -> dict:
    sample = measure.run([PY, "-m", "tests.bench.floor", obj, str(max(3, repeats)),
                          *w.namespaces()], capture=True, env=_env())
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
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _bpf_env() -> dict:
    return dict(_env(), **dict(e.split("=", 1) for e in BPF_ENV))


# -- start-up ------------------------------------------------------------------

def measure_startup(repeats: int) -> dict:
    cases = {"python3 -c pass": [PY, "-c", "pass"],
             "python3 -I -S -c pass": [PY, "-I", "-S", "-c", "pass"],
             "sockterm --version": sockterm("--version"),
             "sockterm --help": sockterm("--help"),
             "sockterm kill --help": sockterm("kill", "--help"),
             # what bash runs for `sockterm kill --st<TAB>` and `... --state <TAB>`
             "completion: kill --st<TAB>": ["env", "COMP_WORDS=sockterm kill --st", "COMP_CWORD=2",
                                            "_SOCKTERM_COMPLETE=bash_complete", *SOCKTERM],
             "completion: kill --state <TAB>": ["env", "COMP_WORDS=sockterm kill --state ",
                                                "COMP_CWORD=3", "_SOCKTERM_COMPLETE=bash_complete",
                                                *SOCKTERM],
             "python3 -m sockterm --help": [PY, "-m", "sockterm", "--help"]}
    on_path = shutil.which("sockterm")
    if on_path:
        cases[f"{on_path} --help (what PATH finds)"] = [on_path, "--help"]
    out = {}
    for name, argv in cases.items():
        measure.run(argv)   # warm the page cache
        out[name] = measure.repeat(name, argv, repeats)
    return out


def nothing_section(cfg: dict, res: dict) -> None:
    """One namespace, nothing matching: `match --netns host --dst` of an address
    nobody uses, on each engine, against `ss -tan dst` of it (one namespace:
    no workload; the host's own sockets, whatever they are, are walked by all)."""
    cases = {"sockterm match (bpf)": sockterm("--backend", "bpf", "match", "--netns", "host",
                                              "--dst", UNUSED),
             "sockterm match (diag)": sockterm("--backend", "diag", "match", "--netns", "host",
                                               "--dst", UNUSED),
             "ss -tan dst": ["ss", "-tan", "dst", UNUSED]}
    names = list(cases)
    results = {name: measure.Result(name) for name in names}
    load, sockets = os.getloadavg(), host_sockets()
    for argv in cases.values():
        measure.run(argv)              # the page cache
    for p in range(cfg["nothing_passes"]):
        order = names[p % len(names):] + names[:p % len(names)]
        for name in (order if p % 2 == 0 else order[::-1]):
            sample = measure.run(cases[name])
            results[name].samples.append(sample)
            if sample.rc not in (0, 1):
                results[name].ok, results[name].note = False, f"exit {sample.rc}: {_last_line(sample.err)}"
    res["nothing_match"] = {"kills": results, "loadavg": [load, os.getloadavg()],
                            "host_sockets": [sockets, host_sockets()]}


def report_nothing(case: dict) -> None:
    kills = case["kills"]
    ss = kills["ss -tan dst"]
    rows = [[n, fmt_ms(r.wall), fmt_ms(r.cpu), f"{r.rss:6.1f}", ratio(r.wall, ss.wall),
             "ok" if r.ok else f"FAIL: {r.note}"] for n, r in kills.items()]
    before, after = case["loadavg"]
    table(f"one namespace, nothing matching (--netns host --dst {UNUSED}); median of "
          f"{len(ss.samples)} rotating passes (load average {before[0]:.2f} -> {after[0]:.2f}; "
          f"sockets on the host {case['host_sockets'][0]}){bpf_note()}",
          rows, ["command", "wall ms", "cpu ms", "maxrss MiB", "vs ss", "check"])


def import_breakdown() -> list[tuple[str, float]]:
    """Top-level imports of a bpf kill, from python -X importtime (cumulative ms)."""
    code = ("import sockterm.main, sockterm.cli, sockterm.cli.kill, sockterm.cli.render, "
            "sockterm.core, sockterm.engine.bpf.engine")
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

def profile_kill(w: Workload, out_dir: str, dst: str, tag: str = "kill") -> dict:
    path = os.path.join(out_dir, f"{tag}.json")
    args = ["--backend", "bpf", *kill_args(w, dst), *BPF_ARGS]
    for attempt in range(3):     # a crashing run (see the kill table) leaves no profile
        sample = measure.run([PY, "-m", "tests.bench.profile", path, "--", *args], env=_bpf_env())
        w.refill()
        if os.path.exists(path):
            break
        log(f"profiled run failed (exit {sample.rc}: {_last_line(sample.err)}); retrying")
    else:
        return {}
    with open(path) as f:
        doc = json.load(f)
    doc["wall"] = sample.wall
    prof_json = os.path.join(out_dir, f"{tag}-cprofile.json")
    measure.run([PY, "-m", "tests.bench.profile", prof_json, "--cprofile", "--", *args], env=_bpf_env())
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
        floor = measure_floor(floor_obj, 3, w)
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


def report_profile(doc: dict, imports: list, what: str = "the target workload") -> None:
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
    table(f"profile: one `sockterm --backend bpf kill` of {what} (exclusive ms; "
          "[other threads] run alongside the main thread)",
          rows, ["phase", "ms", "share"])
    if imports:
        table("imports (python -X importtime, cumulative ms, top 10)",
              [[n, f"{ms:8.1f}"] for n, ms in imports[:10]], ["module", "ms"])
    if doc.get("cprofile"):
        table(f"cProfile top functions by own time ({doc['prof_path']})",
              [[w, fmt_ms(t), fmt_ms(c), n] for w, t, c, n in doc["cprofile"]],
              ["function", "tottime ms", "cumtime ms", "calls"])


def report_targets(res: dict, cfg: dict) -> list:
    checks = []
    start = res.get("start")
    if "kills" in res:
        kills, floor = res["kills"], res["floor"]
        bpf = kills["sockterm kill (bpf)"]
        diag = kills.get("sockterm kill (diag)")
        ss = kills["ss -K -N loop"]
        if diag is not None:
            # the fallback engine (kernels without the kfunc): exact, and not far behind
            # the loop it replaces (it sends the same SOCK_DESTROY requests)
            checks.append(("1c. diag kill exact and <= 2 x ss -K loop",
                           diag.ok and diag.wall <= 2 * ss.wall,
                           f"diag {diag.wall * 1000:.0f} ms vs 2 x ss {2 * ss.wall * 1000:.0f} ms"
                           + ("" if diag.ok else f" (diag run failed: {diag.note})")))
        checks += [
            ("1. kill e2e <= 1/3 of ss -K loop", bpf.ok and bpf.wall <= ss.wall / 3,
             f"bpf {bpf.wall * 1000:.0f} ms vs ss/3 {ss.wall / 3 * 1000:.0f} ms"
             + ("" if bpf.ok else f" (bpf run failed: {bpf.note})")),
            ("1b. kill e2e <= 240 ms (absolute)", bpf.ok and bpf.wall <= 0.240,
             f"{bpf.wall * 1000:.0f} ms"),
        ]
        if start:
            ver = start["sockterm --version"].wall
            py = start["python3 -c pass"].wall
            checks += [
                ("2. kill e2e <= 1.5 x (floor + `sockterm --version` start)",
                 bpf.ok and bpf.wall <= 1.5 * (floor["walk"] + ver),
                 f"{bpf.wall * 1000:.0f} ms vs {1.5 * (floor['walk'] + ver) * 1000:.0f} ms"),
                ("2b. kill e2e <= 1.5 x (floor + python3 start)",
                 bpf.ok and bpf.wall <= 1.5 * (floor["walk"] + py),
                 f"{bpf.wall * 1000:.0f} ms vs {1.5 * (floor['walk'] + py) * 1000:.0f} ms"),
            ]
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
    if start:
        for name in ("sockterm --help", "completion: kill --st<TAB>"):
            took = start[name].wall
            checks.append((f"4. {name} <= {START_LIMIT * 1000:.0f} ms", took <= START_LIMIT,
                           f"{took * 1000:.0f} ms"))
    if "nothing_match" in res:
        kills = res["nothing_match"]["kills"]
        ss = kills["ss -tan dst"]
        for name in ("sockterm match (bpf)", "sockterm match (diag)"):
            r = kills[name]
            checks.append((f"7. one namespace, nothing matching: {name} <= {NOTHING_RATIO:g} x "
                           f"ss -tan dst", r.ok and r.wall <= NOTHING_RATIO * ss.wall,
                           f"{r.wall / ss.wall:.2f}x ({r.wall * 1000:.0f} ms vs {ss.wall * 1000:.0f} ms)"))
    for key, number, limit in (("loopback", 5, LOOPBACK_RATIO), ("small", 6, SMALL_RATIO)):
        if key in res:
            checks += _ratio_checks(number, res[key], limit)
    checks += onepass.report(res, table, fmt_ms)      # its tables, then its targets
    checks += graceful.report(res, table, fmt_ms)
    checks += scale.report(res, table, fmt_ms)
    table("targets", [[n, "PASS" if ok else "FAIL", why] for n, ok, why in checks],
          ["target", "result", "measured"])
    return checks


def _ratio_checks(number: int, case: dict, limit: float) -> list:
    spec, kills = case["spec"], case["kills"]
    loop = kills["ss -K -N loop"]
    checks = []
    for name, ratio in case["median_ratios"].items():
        res = kills[name]
        ok = res.ok and loop.ok and ratio <= limit
        checks.append((f"{number}. {spec.namespaces}ns x {spec.sockets // spec.namespaces} loopback, "
                       f"{spec.doomed} kills: {name} <= {limit:g} x ss -K loop "
                       f"(median of {case['passes']} rotating passes)", ok,
                       f"{ratio:.2f}x ({res.wall * 1000:.0f} ms vs {loop.wall * 1000:.0f} ms)"
                       + ("" if res.ok and loop.ok else f" (failed: {res.note or loop.note})")))
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


def loopback_section(key: str, cfg: dict, tmp: str, res: dict) -> None:
    """A LoopSpec's bpf kill against the ss loop, alternating; then a phase
    profile of one kill there (where sockterm's fixed start shows)."""
    spec, passes = cfg[key]
    log(f"{key} workload {spec.label()}: {spec.sockets} sockets, building")
    with LoopbackWorkload(spec, log=log) as w:
        log(f"built in {w.build_seconds:.1f}s; {passes} alternating passes")
        load, sockets = os.getloadavg(), host_sockets()
        # the small host: the default engine (auto: under it a kill that walks no
        # namespace loads no walk programs), each engine by name (where most hosts
        # are, diag is what old kernels get)
        engines = ("auto", "bpf", "diag") if key == "small" else ("bpf",)
        case = measure_alternating(w, loopback_contenders(w, engines), passes)
        case["spec"] = spec
        case["loadavg"] = [load, os.getloadavg()]
        # every namespace's walk crosses every socket on the host (shared hash tables)
        case["host_sockets"] = [sockets, host_sockets()]
        log("profile")
        case["profile"] = profile_kill(w, tmp, f"{LOOPBACK}:80", tag=key)
    res[key] = case


SOCKET_SLABS = ("TCP", "TCPv6", "tw_sock_TCP", "request_sock_TCP", "UDP", "UDPv6")


def host_sockets() -> int:
    """TCP (TIME_WAIT and request sockets included) and UDP sockets on the
    whole host, from the slab counts (sockstat counts one namespace)."""
    try:
        with open("/proc/slabinfo") as f:
            return sum(int(line.split()[1]) for line in f if line.split()[0] in SOCKET_SLABS)
    except (OSError, IndexError, ValueError):
        return -1


def report_alternating(title: str, case: dict) -> None:
    kills = case["kills"]
    names = list(kills)
    base = kills[names[-1]]
    head = ["pass"] + [f"{n} ms" for n in names] + [f"{n} / {names[-1]}" for n in names[:-1]]
    rows = []
    for i in range(case["passes"]):
        walls = [kills[n].samples[i].wall for n in names]
        rows.append([str(i + 1)] + [fmt_ms(w) for w in walls]
                    + [f"{w / walls[-1]:6.2f}x" for w in walls[:-1]])
    rows.append(["median"] + [fmt_ms(kills[n].wall) for n in names]
                + [f"{case['median_ratios'][n]:6.2f}x (of medians {kills[n].wall / base.wall:.2f}x)"
                   for n in names[:-1]])
    rows.append(["cpu ms"] + [fmt_ms(kills[n].cpu) for n in names] + [""] * (len(names) - 1))
    rows.append(["maxrss MiB"] + [f"{kills[n].rss:6.1f}" for n in names] + [""] * (len(names) - 1))
    rows.append(["check"] + ["ok" if kills[n].ok else f"FAIL: {kills[n].note}" for n in names]
                + [""] * (len(names) - 1))
    before, after = case["loadavg"]
    table(f"{title}: {case['spec'].label()} = {case['spec'].sockets} sockets, "
          f"{case['spec'].doomed} killed a pass, rotating order (load average "
          f"{before[0]:.2f} -> {after[0]:.2f}; sockets on the host "
          f"{case['host_sockets'][0]} -> {case['host_sockets'][1]}){bpf_note()}", rows, head)


def target_section(cfg: dict, floor_obj: str, tmp: str, res: dict, profile: bool) -> None:
    spec = cfg["target"]
    log(f"target workload {spec.label()}: {spec.sockets} sockets, building")
    with Workload(spec, log=log) as w:
        log(f"built in {w.build_seconds:.1f}s; measuring kills")
        res["kills"] = measure_kills(w, cfg["repeats"])
        log("floor")
        res["floor"] = measure_floor(floor_obj, 5, w)
        log("lists")
        res["lists"] = measure_lists(w, cfg["repeats"])
        res["nothing"] = res["lists"].pop("sockterm list, nothing matches (bpf)")
        if profile:
            log("profile")
            res["profile"] = profile_kill(w, tmp, f"{VIP}:80")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m tests.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--json", metavar="FILE", help="also write the raw numbers here")
    ap.add_argument("--no-curves", action="store_true", help="skip the scale curves")
    ap.add_argument("--realtime", action="store_true",
                    help="run every measured command (and its children) at real-time priority "
                         "(chrt -f 10): on a shared machine, other load then does not decide "
                         "the figures; every contender gets the same")
    ap.add_argument("--only", metavar="SECTION[,SECTION]",
                    help=f"run only these sections, of {', '.join(SECTIONS)}")
    ap.add_argument("--svg", metavar="FILE",
                    help="where the onepass section draws its curve (default: the temp dir)")
    ap.add_argument("--bpf-args", metavar="ARGS", default="",
                    help="append these to every bpf sockterm run (e.g. --no-processes where the "
                         "kernel refuses the one pass); the tables say so")
    ap.add_argument("--bpf-env", metavar="NAME=VALUE", action="append", default=[],
                    help="set this in every bpf sockterm run's environment (e.g. SOCKTERM_WALK=all)")
    ap.add_argument("--cleanup", action="store_true",
                    help=f"delete leftover {workload.PREFIX}* namespaces and exit")
    args = ap.parse_args(argv)
    if args.cleanup:
        for name in workload.stale_namespaces():
            workload.sh("ip", "netns", "del", name, check=False)
        return
    # scale builds half a million sockets (minutes, ~2 GB of kernel memory): asked for only
    sections = set(SECTIONS) - {"scale"} - ({"curves"} if args.no_curves else set())
    if args.only:
        sections = set(args.only.split(","))
        if sections - set(SECTIONS):
            ap.error(f"unknown section(s): {', '.join(sorted(sections - set(SECTIONS)))}")
    preflight()
    import shlex
    BPF_ARGS[:] = shlex.split(args.bpf_args)
    BPF_ENV[:] = args.bpf_env
    if args.realtime:
        measure.FIFO_PRIORITY = 10
    signal.signal(signal.SIGTERM, _interrupt)
    cfg = QUICK if args.quick else FULL
    res: dict = {"loadavg_start": os.getloadavg()}
    tmp = tempfile.mkdtemp(prefix="sockterm-bench-")
    install_launcher(tmp)
    from .floor import compile_object
    floor_obj = compile_object(tmp)
    t0 = time.perf_counter()
    print(f"# sockterm benchmark ({'quick' if args.quick else 'full'}), kernel {os.uname().release}, "
          f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
          + (", real-time priority" if args.realtime else ""), flush=True)
    res["realtime"] = args.realtime
    if "start" in sections:
        log("start-up")
        res["start"] = measure_startup(cfg["start_repeats"])
        res["imports"] = import_breakdown()
        report_startup(res["start"])
    if "nothing" in sections:
        log("one namespace, nothing matching")
        nothing_section(cfg, res)
        report_nothing(res["nothing_match"])
    if "target" in sections:
        target_section(cfg, floor_obj, tmp, res, profile=True)
        start = res["start"]["sockterm --version"].wall if "start" in res else float("nan")
        report_kills(cfg["target"], res["kills"], res["floor"], start, res["nothing"])
        report_lists(cfg["target"], res["lists"])
        report_profile(res["profile"], res.get("imports", []))
        sys.stdout.flush()
    for key, title in (("loopback", "loopback namespaces"), ("small", "small host")):
        if key in sections:
            loopback_section(key, cfg, tmp, res)
            report_alternating(title, res[key])
            report_profile(res[key]["profile"], [], f"the {title} workload")
            sys.stdout.flush()
    if "curves" in sections:
        res["socket_curve"] = socket_curve(cfg, floor_obj)
        report_curve("scale: sockets", res["socket_curve"], _point_label)
        res["ns_curve"] = ns_curve(cfg, floor_obj)
        report_curve("scale: namespaces (same total connections)", res["ns_curve"], _point_label)
    if "onepass" in sections:
        onepass.section(args.quick, log, res, args.svg or os.path.join(tmp, "onepass-curve.svg"))
    if "graceful" in sections:
        graceful.section(args.quick, log, res)
    if "scale" in sections:
        scale.section(args.quick, log, res)
    checks = report_targets(res, cfg)
    res["targets"] = [{"target": n, "ok": ok, "measured": why} for n, ok, why in checks]
    res["loadavg_end"] = os.getloadavg()
    print(f"\n(took {time.perf_counter() - t0:.0f} s; load average "
          f"{' '.join(f'{x:.2f}' for x in res['loadavg_end'])})")
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
    if isinstance(obj, (Spec, LoopSpec)):
        return {"namespaces": obj.namespaces, "target": obj.target, "others": obj.others,
                "udp": obj.udp, "sockets": obj.sockets, "doomed": obj.doomed,
                "shape": "loopback" if isinstance(obj, LoopSpec) else "veth"}
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
