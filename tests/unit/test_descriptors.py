"""sockstat.reserve_descriptors: room for the files a run keeps open, made
before its threads start — the soft limit raised toward the hard one, and the
descriptor table grown at once (a table that doubles later, in a process of
more than one thread, waits an RCU grace period per doubling). Each case runs
in a fresh interpreter: its table starts small, and FDSize in
/proc/self/status is the kernel's size of it."""

from __future__ import annotations

import json
import subprocess
import sys

ROOT = __file__.rsplit("/tests/", 1)[0]

PROBE = r"""
import json, os, resource, sys
sys.path.insert(0, sys.argv[1])
from sockterm.host import sockstat

def fdsize():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("FDSize:")).split()[1])

soft, hard = (int(x) for x in sys.argv[3].split(","))
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
# descriptors of the caller's at numbers in the range the table grows over
keep = os.open("/dev/null", os.O_RDONLY)
start, stop = (int(x) for x in sys.argv[4].split(":"))
held = [os.dup2(keep, fd) for fd in range(start, stop)]
before = fdsize()
open_before = len(os.listdir("/proc/self/fd"))
sockstat.reserve_descriptors(int(sys.argv[2]))
after = fdsize()
open_fds = len(os.listdir("/proc/self/fd"))
print(json.dumps(dict(before=before, after=after, limit=resource.getrlimit(resource.RLIMIT_NOFILE),
                      kept=all(os.path.samestat(os.fstat(fd), os.fstat(keep)) for fd in held),
                      open_fds=open_fds, open_before=open_before)))
"""


def probe(count: int, soft: int = 1024, hard: int = 4096, held: str = "0:0") -> dict:
    out = subprocess.run([sys.executable, "-I", "-c", PROBE, ROOT, str(count), f"{soft},{hard}",
                          held], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_table_is_grown_to_the_room_asked_for():
    r = probe(800)
    assert r["before"] < 800 <= r["after"]
    assert r["limit"][0] >= 800


def test_the_soft_limit_is_raised_toward_the_hard_one():
    r = probe(2000, soft=256, hard=4096)
    assert r["limit"][1] == 4096 and r["limit"][0] >= r["open_fds"] + 2000
    assert r["after"] >= r["open_fds"] + 2000


def test_never_past_the_hard_limit_and_no_error():
    r = probe(5000, soft=256, hard=512)
    assert r["limit"] == [512, 512]
    assert r["before"] < r["after"] <= 512


def test_no_open_descriptor_is_replaced():
    # the caller holds descriptors 300-399, where the table is grown to
    # (~100 held + 200 asked for + 64): F_DUPFD takes the next free number
    # from there, dup2 would have closed one of them
    r = probe(200, held="300:400")
    assert r["kept"]
    assert r["after"] >= 200 + r["open_fds"]


def test_nothing_left_open():
    for count in (0, 900):
        r = probe(count)
        assert r["open_fds"] == r["open_before"]
