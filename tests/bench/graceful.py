"""kill --graceful against the abort of the same sockets (`--only graceful`).

The one pass's target case (20 namespaces x 8,000 loopback sockets, 2,500
client ends ended a pass): `sockterm kill` and `sockterm kill --graceful`,
same engine, same namespaces, in alternating passes (AB, BA, ...) on a
workload refilled after every run, each checked from the sockets' side
(exactly the target group ended: a reset or a FIN, the rest alive).

The engine is bpf where it loads, else diag (said in the table): what the
abort is on this host, the one pass or, without BPF, a walk of every
namespace. A graceful kill plans first (every socket's holders must be
known), reads the holders' /proc/PID/fd until it has found their matched
sockets, then makes four system calls per socket (pidfd_getfd, getsockopt
SO_COOKIE, shutdown, close).
"""

from __future__ import annotations

import os
import subprocess

from .workload import LOOPBACK, LoopbackWorkload, LoopSpec

FULL = (LoopSpec(20, 125, 3875), 8)
QUICK = (LoopSpec(10, 125, 1875), 4)
TARGET_RATIO = 1.5           # graceful / abort, median of the per-pass ratios
ABORT, GRACEFUL = "sockterm kill", "sockterm kill --graceful"


def engine(w, log) -> str:
    """bpf where it can load and kill here, else diag."""
    from .run import sockterm
    probe = subprocess.run(sockterm("--backend", "bpf", "match", "--netns", w.namespaces()[0],
                                    "--dst", "255.255.255.255:1"), capture_output=True, text=True)
    if probe.returncode in (0, 1):
        return "bpf"
    log(f"graceful: bpf cannot run here ({probe.stderr.strip()[-120:]}): diag")
    return "diag"


def section(quick: bool, log, res: dict) -> None:
    from .run import host_sockets, kill_args, measure_alternating, sockterm
    spec, passes = QUICK if quick else FULL
    log(f"graceful: {spec.label()} = {spec.sockets} sockets, building")
    with LoopbackWorkload(spec, log=log) as w:
        name = engine(w, log)
        args = ["--backend", name, *kill_args(w, f"{LOOPBACK}:80")]
        # A = graceful, B = abort: measure_alternating's ratios are graceful / abort
        contenders = {GRACEFUL: (sockterm(*args, "--graceful"), False),
                      ABORT: (sockterm(*args), False)}
        log(f"built in {w.build_seconds:.1f}s; {passes} alternating passes, engine {name}")
        load, sockets = os.getloadavg(), host_sockets()
        case = measure_alternating(w, contenders, passes)
        case.update(spec=spec, engine=name, loadavg=[load, os.getloadavg()],
                    host_sockets=[sockets, host_sockets()])
    res["graceful"] = case


def report(res: dict, table, fmt_ms) -> list:
    case = res.get("graceful")
    if not case:
        return []
    kills = case["kills"]
    abort, graceful = kills[ABORT], kills[GRACEFUL]
    rows = [[str(i + 1), "AB" if i % 2 == 0 else "BA", fmt_ms(g.wall), fmt_ms(a.wall),
             f"{r:.2f}x"] for i, (g, a, r) in enumerate(zip(graceful.samples, abort.samples,
                                                             case["ratios"]))]
    rows.append(["median", "", fmt_ms(graceful.wall), fmt_ms(abort.wall),
                 f"{case['median_ratio']:.2f}x"])
    rows.append(["cpu ms", "", fmt_ms(graceful.cpu), fmt_ms(abort.cpu), ""])
    rows.append(["maxrss MiB", "", f"{graceful.rss:.1f}", f"{abort.rss:.1f}", ""])
    rows.append(["check", "", "ok" if graceful.ok else f"FAIL: {graceful.note}",
                 "ok" if abort.ok else f"FAIL: {abort.note}", ""])
    spec, (before, after) = case["spec"], case["loadavg"]
    table(f"graceful: {spec.label()} = {spec.sockets} sockets, {spec.doomed} ended a pass, "
          f"engine {case['engine']} (load average {before[0]:.2f} -> {after[0]:.2f}; sockets on "
          f"the host {case['host_sockets'][0]} -> {case['host_sockets'][1]})", rows,
          ["pass", "order", f"{GRACEFUL} ms", f"{ABORT} ms", "graceful/abort"])
    ratio = case["median_ratio"]
    ok = abort.ok and graceful.ok and ratio <= TARGET_RATIO
    return [(f"graceful: {spec.namespaces}ns x {spec.sockets // spec.namespaces}, {spec.doomed} "
             f"shut down <= {TARGET_RATIO} x their abort ({case['engine']}, median of "
             f"{case['passes']} ABBA passes)", ok,
             f"{ratio:.2f}x ({graceful.wall * 1000:.0f} ms vs {abort.wall * 1000:.0f} ms)")]
