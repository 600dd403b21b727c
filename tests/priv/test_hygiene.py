"""Hygiene: sockterm leaves the host as it found it.

- no BPF program, map or link of sockterm's (st_tcp, st_udp, st_held and
  their maps) stays loaded after a run, none is pinned under /sys/fs/bpf, and
  the test process itself holds none after in-process runs (checked after
  every test here), asked of the kernel through libbpf, not bpftool;
- no descriptor or thread growth across 1,000 in-process runs of
  the core's scan and kill (list, match and kill, both engines);
- the bpf kill path exits cleanly (regression: a 16-byte heap overflow in
  BpfEngine.stats() made every `sockterm kill` on bpf die with SIGSEGV);
- the session check that no namespace is left behind lives in conftest.py.

SOCKTERM_LONG=1 makes the in-process loop 10,000 runs.
"""

from __future__ import annotations

import gc
import json
import os
import threading

import pytest

import confine
from rel_util import (RelTopology, cli, held_by_me, long_mode, loopback_pairs, run_core, sh,
                      wait_no_orphans)

RUNS = 10_000 if long_mode() else 1_000
BPF_SHARE = 4          # one run in BPF_SHARE on the bpf engine (a load costs ~50 ms)


@pytest.fixture(autouse=True)
def no_bpf_leftovers():
    yield
    assert held_by_me() == (set(), set()), "the test process still holds BPF programs/links"
    left = wait_no_orphans()
    assert not any(left.values()), f"sockterm BPF objects left in the kernel: {left}"


def test_the_leak_check_sees_a_loaded_object():
    """The check asks the kernel through libbpf (no bpftool): while an engine
    is open, its programs, maps and links are listed under their names, and
    they are held (so not orphans); once closed, they are gone."""
    from bpf_objects import kernel_objects
    from rel_util import BPF_MAP_NAMES, BPF_PROG_NAMES, bpf_orphans
    from sockterm.engine import Scope
    from sockterm.engine.bpf.engine import BpfEngine
    from sockterm.filter import build_filter
    engine = BpfEngine(flt=build_filter(), scope=Scope(), kill=True)
    engine.open()
    try:
        engine.owners()
        progs, links = held_by_me()
        k = kernel_objects()
        assert {k["progs"][p][0] for p in progs} <= BPF_PROG_NAMES and "st_held" in {
            k["progs"][p][0] for p in progs}
        assert {k["links"][l] for l in links} <= progs and len(links) == 3
        maps = {m for p in progs for m in k["progs"][p][1]}
        assert BPF_MAP_NAMES <= {k["maps"][m] for m in maps}
        left = bpf_orphans()
        assert not (set(left["progs"]) & progs or set(left["links"]) & links
                    or set(left["maps"]) & maps)
    finally:
        engine.close()
    assert held_by_me() == (set(), set())
    k = wait_gone(progs, maps)
    assert not set(k["progs"]) & progs and not set(k["maps"]) & maps


def wait_gone(progs, maps, timeout=5.0):
    """Programs, then their maps, are freed after RCU grace periods: poll."""
    import time
    from bpf_objects import kernel_objects
    deadline = time.monotonic() + timeout
    while True:
        k = kernel_objects()
        if not (set(k["progs"]) & progs or set(k["maps"]) & maps) or time.monotonic() > deadline:
            return k
        time.sleep(0.05)


@pytest.fixture(scope="module")
def small():
    """A namespace with a few sockets for small, fast runs."""
    with RelTopology() as topo:
        ns, h, _, _ = loopback_pairs(topo, "hyg", 7800)
        h.call("listen", proto="udp", addr="::1", port=7801)
        yield ns, h


# in the kernel matrix, the engine that loads BPF (and may be refused part of it)
@pytest.mark.parametrize("engine", [pytest.param("bpf", marks=pytest.mark.kernels), "diag"])
def test_cli_runs_leave_no_bpf_objects(small, engine):
    ns, h = small
    for args in (["list"], ["match", "--dport", "7800"], ["kill", "--yes", "--dport", "1"],
                 ["kill", "--yes", "--dport", "7800", "--max", "0"]):
        code, out, err = cli("--backend", engine, *args, "--netns", ns)
        assert code in (0, 1, 3), err
        assert "Traceback" not in err


def test_bpf_kill_exits_cleanly_console_script(small):
    """Regression: the installed `sockterm` script crashed (exit 139) after every bpf kill."""
    ns, h = small
    exe = sh("sh", "-c", "command -v sockterm", check=False).stdout.strip()
    if not exe:
        pytest.skip("sockterm is not on PATH")
    for _ in range(3):
        confine.check_kill(["kill", "--netns", ns])
        proc = sh(exe, "--backend", "bpf", "kill", "--yes", "--dport", "1", "--netns", ns,
                  "-o", "json", check=False)
        assert proc.returncode == 1, (proc.returncode, proc.stderr)
        assert json.loads(proc.stdout)["summary"]["killed"] == 0


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_descriptor_growth_over_1000_inprocess_runs(small):
    from sockterm import filter as F, states
    ns, h = small
    flts = {
        "list": F.build_filter(netns=[ns], default_states=states.ALL),
        "match": F.build_filter(netns=[ns], dport=["7800"], default_states=states.DEFAULT_KILL),
        "kill": F.build_filter(netns=[ns], dport=["1"], default_states=states.DEFAULT_KILL),
    }

    def run(i):
        engine = "bpf" if i % BPF_SHARE == 0 else "diag"
        command = ("list", "match", "kill")[i % 3]
        socks, _ = run_core(command, flts[command], engine, processes=i % 2 == 0)
        if command == "match":
            assert len(socks) == 2
        elif command == "kill":
            assert not socks

    for i in range(6):          # warm-up: libraries load and cache once
        run(i)
    gc.collect()                # descriptors earlier tests left to the collector
    fds, threads = fd_count(), threading.active_count()
    for i in range(RUNS):
        run(i)
    gc.collect()
    assert fd_count() <= fds, f"descriptors grew from {fds} to {fd_count()} over {RUNS} runs"
    assert threading.active_count() == threads
    assert held_by_me() == (set(), set())
    # the sockets named by match were only looked at
    assert set(h.status().values()) == {0}


def test_failed_runs_leave_nothing_either(small):
    """Runs refused half-way (a bad --netns, a kill over --max) close what they opened."""
    from sockterm import core, filter as F, states
    ns, h = small
    fds = fd_count()
    for i in range(50):
        flt = F.build_filter(netns=["/proc/self/ns/mnt" if i % 2 else "no-such-ns"],
                             default_states=states.ALL)
        with pytest.raises(core.SocktermError):
            list(core.scan(flt, core.Report(), core.Options(backend=("bpf", "diag")[i % 2])))
    assert fd_count() <= fds
    # a stream abandoned half-way (a reader that stops early) must still release
    flt = F.build_filter(netns=[ns], default_states=states.ALL)
    for i in range(20):
        it = iter(core.scan(flt, core.Report(), core.Options(backend=("bpf", "diag")[i % 2])))
        next(it)
        it.close()
    assert fd_count() <= fds
