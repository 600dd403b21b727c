"""Who holds a socket, whichever engine walks: the processes a listing shows
come from the kernel's owner pass where BPF loads and the host has enough
files open that reading /proc would cost more (the netlink engine's walks
included), and from /proc where it costs less or the pass cannot load.
Checked from outside: the holders are the processes that made the sockets,
and strace shows whether /proc's descriptors were read (every process's, one
readlink a descriptor: seconds on a host of half a million sockets, where
the owner pass takes a fraction of one)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import Topology, _bpf_capabilities, traced
from sockterm.core import decide

# the open files above which the owner pass costs less than /proc
THRESHOLD = decide.OWNER_PASS_SETUP_S / decide.PROC_PER_FILE_S


class AttributionTopology(Topology):
    PREFIX, LINK = "stat", "sa"
    CLIENT4, CLIENT6 = "10.63", "fd63"


@pytest.fixture
def topo():
    t = AttributionTopology()
    try:
        yield t
    finally:
        t.cleanup()


PORT = 7790
FD_READ = re.compile(r'readlink(?:at)?\((?:AT_FDCWD, )?"/proc/(\d+)/fd/\d+"')


def listed(ns: str, backend: str, env=None) -> tuple[list, set]:
    """The sockets `list --netns ns` shows with --backend, and the pids whose
    descriptors it read through /proc."""
    trace, run = traced("readlink,readlinkat",
                        ["--backend", backend, "list", "-o", "json", "--netns", ns],
                        env=dict(os.environ, **(env or {})))
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)["sockets"], {int(pid) for pid in FD_READ.findall(trace)}


def scene(topo):
    """A server and a client process in one namespace: a listener, and two
    loopback connections (both ends)."""
    ns = topo.ns("a")
    server, client = topo.holder(ns), topo.holder(ns)
    lst = server.call("listen", addr="127.0.0.1", port=PORT)
    client.call("connect", dst="127.0.0.1", port=PORT, count=2)
    server.call("accept", id=lst["id"], count=2)
    return ns, server, client


def holders(sockets) -> dict:
    """(local port, peer port) -> the pids holding it."""
    return {(s["sport"], s["dport"]): sorted(p["pid"] for p in s["processes"]) for s in sockets}


def expected(sockets, server, client) -> dict:
    """Listener and accepted ends: the server's; the connecting ends: the client's."""
    return {(s["sport"], s["dport"]): [server.pid if s["sport"] == PORT else client.pid]
            for s in sockets}


def open_files() -> int:
    with open("/proc/sys/fs/file-nr") as f:
        return int(f.read().split()[0])


@pytest.fixture
def busy_host():
    """A process holding enough files of its own (each opened anew: a dup
    shares its file) that the host has more open than the threshold."""
    want = int(THRESHOLD) + 500 - open_files()
    if want <= 0:
        yield
        return
    code = ("import os, resource, sys\n"
            "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
            f"resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, {want} + 100), hard))\n"
            f"files = [os.open('/dev/null', os.O_RDONLY) for _ in range({want})]\n"
            "print('ready', flush=True)\n"
            "sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        assert open_files() > THRESHOLD
        yield
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


@pytest.mark.parametrize("backend", ["diag", "bpf"])
def test_walks_attribute_through_the_owner_pass(topo, busy_host, backend):
    if not _bpf_capabilities().get("one-pass"):
        pytest.skip("this kernel refuses the one-pass program: processes come from /proc")
    if backend == "bpf" and not _bpf_capabilities().get("enumerate"):
        pytest.skip("this kernel refuses the socket iterators: --backend bpf refuses here")
    ns, server, client = scene(topo)
    sockets, read = listed(ns, backend)
    assert len(sockets) == 5
    assert holders(sockets) == expected(sockets, server, client)
    assert not read & {server.pid, client.pid}, "descriptors read through /proc"


def test_diag_attributes_from_proc_where_the_pass_is_refused(topo):
    ns, server, client = scene(topo)
    sockets, read = listed(ns, "diag", env={"SOCKTERM_TEST_REFUSE": "one-pass"})
    assert len(sockets) == 5
    assert holders(sockets) == expected(sockets, server, client)
    assert {server.pid, client.pid} <= read


def test_diag_reads_proc_where_few_files_are_open(topo):
    """/proc costs less than loading the owner pass on a quiet host."""
    if open_files() > THRESHOLD - 300:
        pytest.skip(f"{open_files()} files open on this host: not a quiet one")
    ns, server, client = scene(topo)
    sockets, read = listed(ns, "diag")
    assert len(sockets) == 5
    assert holders(sockets) == expected(sockets, server, client)
    assert {server.pid, client.pid} <= read
