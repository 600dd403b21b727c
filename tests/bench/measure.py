"""Run one command as a child and measure it from outside: wall time from
fork to reap, CPU (user + system, the child and everything it reaped) and
peak RSS, from wait4(2) in a tiny C helper (rusage_run.c, compiled on first
use): a child forked straight from this big Python process would inherit the
benchmark's own high-water RSS in its ru_maxrss."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
_helper: list = []
# SCHED_FIFO priority the helper gives each measured command (--realtime: 10;
# set in the child before its exec, not by a chrt in front: chrt's own exec
# was measured too, ~1-4 ms of every command)
FIFO_PRIORITY = 0


@dataclass
class Sample:
    wall: float          # seconds
    cpu: float           # seconds, user + system
    rss_mib: float       # peak resident set of the child (or its largest descendant)
    rc: int
    out: str = ""        # stdout (when captured)
    err: str = ""
    lines: int = 0       # stdout lines (when counted)

    @property
    def ok(self) -> bool:
        """Finished on its own (exit 0, or 1 for 'nothing matched'), not killed by a signal."""
        return self.rc in (0, 1)


@dataclass
class Result:
    name: str
    samples: list = field(default_factory=list)
    ok: bool = True
    note: str = ""

    def _median(self, attr):
        """Over the runs that finished; a crashed run's time says nothing."""
        good = [s for s in self.samples if s.ok] or self.samples
        return statistics.median(getattr(s, attr) for s in good) if good else float("nan")

    @property
    def wall(self):
        return self._median("wall")

    @property
    def cpu(self):
        return self._median("cpu")

    @property
    def rss(self):
        return max((s.rss_mib for s in self.samples), default=float("nan"))

    def absorb(self, other: "Result") -> None:
        """other's samples (the same command measured again, later) added to
        these; a failure of either stays a failure."""
        self.samples.extend(other.samples)
        if not other.ok:
            self.ok, self.note = False, self.note or other.note


def helper() -> str:
    """Path of the compiled rusage_run helper."""
    if not _helper:
        cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
        if not cc:
            raise SystemExit("bench: a C compiler (cc, gcc or clang) is needed for rusage_run.c")
        out = os.path.join(tempfile.mkdtemp(prefix="sockterm-bench-rusage-"), "rusage_run")
        subprocess.run([cc, "-O2", "-o", out, os.path.join(HERE, "rusage_run.c")], check=True)
        _helper.append(out)
    return _helper[0]


def run(argv, *, shell: bool = False, capture: bool = False, count_lines: bool = False,
        env=None) -> Sample:
    """argv (a list, or a string for sh -c) run once, measured."""
    if shell:
        argv = ["sh", "-c", argv]
    with tempfile.NamedTemporaryFile("r") as result, tempfile.TemporaryFile() as out_f, \
            tempfile.TemporaryFile() as err_f, open(os.devnull, "wb") as devnull:
        t0 = time.perf_counter()
        fifo = ["-f", str(FIFO_PRIORITY)] if FIFO_PRIORITY else []
        proc = subprocess.run([helper(), *fifo, result.name, *argv], stdin=subprocess.DEVNULL,
                              stdout=out_f if (capture or count_lines) else devnull,
                              stderr=err_f, env=env)
        fallback_wall = time.perf_counter() - t0
        fields = result.read().split()
        if proc.returncode or len(fields) != 4:
            wall, cpu, rss_kib, rc = fallback_wall, float("nan"), float("nan"), -1000
        else:
            wall, cpu, rss_kib, rc = float(fields[0]), float(fields[1]), int(fields[2]), int(fields[3])
        out_f.seek(0)
        out, lines = "", 0
        if capture:
            out = out_f.read().decode(errors="replace")
        elif count_lines:
            while chunk := out_f.read(1 << 20):
                lines += chunk.count(b"\n")
        err_f.seek(0)
        err = err_f.read(1 << 20).decode(errors="replace")
    return Sample(wall=wall, cpu=cpu, rss_mib=rss_kib / 1024, rc=rc, out=out, err=err, lines=lines)


def repeat(name: str, argv, n: int, **kw) -> Result:
    res = Result(name)
    for _ in range(n):
        sample = run(argv, **kw)
        res.samples.append(sample)
        if not sample.ok:
            res.ok, res.note = False, f"exit {sample.rc}"
    return res
