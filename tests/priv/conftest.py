"""Real topologies for the privileged tier: throwaway namespaces joined by veth
pairs, holder processes with real sockets, and sockterm run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid

import pytest

import confine

HERE = os.path.dirname(os.path.abspath(__file__))
HOLDER = os.path.join(HERE, "holder.py")
VIP4 = "10.0.0.5"
VIP6 = "fd00::5"

if os.geteuid() != 0:
    pytest.skip("privileged tier: needs root", allow_module_level=True)

ENGINES = ["bpf", "diag"]


def sh(*args, check=True, **kw):
    return subprocess.run(args, check=check, capture_output=True, text=True, **kw)


class Holder:
    """A holder.py process inside a namespace, driven over its stdin/stdout."""

    def __init__(self, netns: str):
        self.netns = netns
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, HOLDER],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.call("pid")

    def call(self, op, **kw):
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")
        self.proc.stdin.flush()
        reply = json.loads(self.proc.stdout.readline())
        if "error" in reply:
            raise OSError(reply["error"] + ": " + reply["msg"])
        return reply["ok"]

    def status(self, ids=None) -> dict:
        return {int(k): v for k, v in self.call("status", ids=ids).items()}

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=10)


CREATED_NAMESPACES = confine.CREATED   # every namespace this session made (checked at its end)


class Topology:
    """Client namespaces, each joined to one backend namespace that holds the VIP.

    The address plan is class attributes, so a suite that runs beside another
    (and kills host-wide) can take addresses of its own by subclassing."""

    PREFIX, LINK = "st", "st"
    VIP4, VIP6 = VIP4, VIP6
    CLIENT4, CLIENT6 = "10.1", "fd01"      # client i: CLIENT4.i.2/24, CLIENT6:i::2/64

    def __init__(self):
        self.tag = uuid.uuid4().hex[:6]
        self.namespaces: list[str] = []
        self.holders: list[Holder] = []
        self.backend = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cleanup()

    def ns(self, role: str) -> str:
        name = f"{self.PREFIX}-{self.tag}-{role}"
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        CREATED_NAMESPACES.add(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def with_backend(self) -> str:
        self.backend = self.ns("be")
        sh("ip", "-n", self.backend, "addr", "add", f"{self.VIP4}/32", "dev", "lo")
        sh("ip", "-n", self.backend, "addr", "add", f"{self.VIP6}/128", "dev", "lo", "nodad")
        sh("ip", "netns", "exec", self.backend, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        return self.backend

    def client(self, index: int) -> str:
        """A client namespace with a veth to the backend and routes to the VIP."""
        name = self.ns(f"c{index}")
        a, b = f"{self.LINK}c{self.tag}{index}", f"{self.LINK}b{self.tag}{index}"
        v4, v6 = f"{self.CLIENT4}.{index}", f"{self.CLIENT6}:{index}:"
        sh("ip", "link", "add", a, "netns", name, "type", "veth", "peer", "name", b,
           "netns", self.backend)
        sh("ip", "-n", name, "addr", "add", f"{v4}.2/24", "dev", a)
        sh("ip", "-n", self.backend, "addr", "add", f"{v4}.1/24", "dev", b)
        sh("ip", "-n", name, "addr", "add", f"{v6}:2/64", "dev", a, "nodad")
        sh("ip", "-n", self.backend, "addr", "add", f"{v6}:1/64", "dev", b, "nodad")
        sh("ip", "-n", name, "link", "set", a, "up")
        sh("ip", "-n", self.backend, "link", "set", b, "up")
        sh("ip", "-n", name, "route", "add", f"{self.VIP4}/32", "via", f"{v4}.1")
        sh("ip", "-n", name, "-6", "route", "add", f"{self.VIP6}/128", "via", f"{v6}:1")
        return name

    def holder(self, netns: str) -> Holder:
        h = Holder(netns)
        self.holders.append(h)
        return h

    def cleanup(self):
        for h in self.holders:
            try:
                h.close()
            except Exception:
                h.proc.kill()
                h.proc.wait()
        self.holders.clear()
        for name in self.namespaces:
            sh("ip", "netns", "del", name, check=False)
        self.namespaces.clear()


@pytest.fixture
def topo():
    t = Topology()
    try:
        yield t
    finally:
        t.cleanup()


def sockterm(*args, input=None, env=None, prefix=()):
    """Run the CLI as an operator would; returns (code, stdout, stderr). A kill
    must name this session's namespaces with --netns, or run confined."""
    confine.check_kill(args, prefix)
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("SOCKTERM_BACKEND", None)
    proc = subprocess.run([*prefix, sys.executable, "-m", "sockterm", *args], capture_output=True,
                          text=True, input=input, env=full_env, timeout=600)
    return proc.returncode, proc.stdout, proc.stderr


def confined(*args, namespaces=(), **kw):
    """The CLI where it can reach nothing but `namespaces` (tests/confine.py)."""
    return sockterm(*args, prefix=confine.prefix(namespaces), **kw)


def traced(calls: str, argv: list, env=None) -> tuple[str, subprocess.CompletedProcess]:
    """A sockterm run under strace: (its system calls named by `calls`, the
    run). Not through sockterm() above: no kill rail, so only for runs that
    destroy nothing they were not meant to (a kill of an unused address)."""
    with tempfile.NamedTemporaryFile("r") as trace:
        run = subprocess.run(["strace", "-f", "-qq", "-e", f"trace={calls}", "-o", trace.name,
                              sys.executable, "-m", "sockterm", *argv],
                             capture_output=True, text=True, env=env)
        return trace.read(), run


def sockterm_json(*args, **kw):
    code, out, err = sockterm(*args, "-o", "json", **kw)
    assert out, f"no output (exit {code}): {err}"
    return code, json.loads(out), err


def ss_cookies(netns: str, args: str = "-tuanie") -> set[int]:
    """Socket cookies `ss` sees in a namespace: the independent view."""
    out = sh("ip", "netns", "exec", netns, "ss", "-H", *args.split()).stdout
    found = set()
    for token in out.split():
        if token.startswith("sk:"):
            found.add(int(token[3:], 16))
    return found


@pytest.fixture(params=ENGINES)
def engine(request):
    return request.param


# SOCKTERM_TEST_ENGINES=bpf (the kernel matrix, in a kernel whose auto engine
# is bpf): a test's cases on other engines are deselected. Their path (netlink
# dumps and SOCK_DESTROY) runs in the matrix's kernels whose auto is diag and
# on the host; each guest's time is the matrix's budget.
def pytest_collection_modifyitems(config, items):
    only = os.environ.get("SOCKTERM_TEST_ENGINES")
    if not only:
        return
    keep = set(only.split(","))
    selected, deselected = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("engine") if callspec else None
        (deselected if engine and engine not in keep else selected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = selected


# What `--backend bpf` can do on this kernel, as doctor says (the kernel
# matrix's old kernels): where the socket iterators are refused (5.10: no
# cookie helper in iterators before 5.12) it refuses every command in one line;
# where the bpf_sock_destroy kfunc is missing (< 6.5) it refuses to kill
# (test_degrade's test_explicit_bpf_says_what_is_missing checks both lines).
# A test's bpf case has nothing to test there; a test marked bpf_kill kills
# with the engine it is given. Asked once, only when a bpf case runs.
def pytest_runtest_setup(item):
    callspec = getattr(item, "callspec", None)
    if not callspec or callspec.params.get("engine") != "bpf":
        return
    caps = _bpf_capabilities()
    if not caps.get("enumerate"):
        pytest.skip("this kernel refuses the socket iterators: --backend bpf refuses here")
    if item.get_closest_marker("bpf_kill") and not caps.get("destroy-in-kernel"):
        pytest.skip("this kernel has no bpf_sock_destroy kfunc: --backend bpf kill refuses here")


_CAPABILITIES: dict = {}


def _bpf_capabilities() -> dict:
    """doctor's capabilities: the document the kernel matrix's guest already
    asked for (SOCKTERM_TEST_DOCTOR, a minute under TCG), else asked here."""
    if not _CAPABILITIES:
        path = os.environ.get("SOCKTERM_TEST_DOCTOR")
        if path:
            with open(path) as f:
                doc = json.load(f)
        else:
            proc = subprocess.run([sys.executable, "-m", "sockterm", "doctor", "-o", "json"],
                                  capture_output=True, text=True, timeout=600)
            doc = json.loads(proc.stdout)
        _CAPABILITIES.update({name: cap["ok"] for name, cap in doc["capabilities"].items()})
    return _CAPABILITIES


# ---- reliability suite (issue 6): no namespace left behind ---------------------------------
# Appended section: records every namespace a Topology or rel_util.RelTopology of
# this session creates, and fails the session's last test if any is still there at
# the end (deleting it, so the host is not left worse than it was found).

@pytest.fixture(scope="session", autouse=True)
def no_namespace_left_behind():
    yield
    present = set(sh("ip", "netns", "list").stdout.split())
    left = sorted(CREATED_NAMESPACES & present)
    for name in left:
        sh("ip", "netns", "del", name, check=False)
    assert not left, f"namespaces left behind by this session: {left}"


# ---- an audit sink of each test's own -------------------------------------------------------
# A kill writes an audit record; where no syslog socket takes it (this VM kind
# has no /dev/log) it says so in a warning line of its own. Tests that read a
# run's stderr as one line (its error, its refusal) are about that line: each
# test gets a datagram socket to write the record to. Tests about the audit
# trail itself pass SOCKTERM_SYSLOG_SOCKET explicitly (test_environment,
# test_applications, test_hostile_text, test_interrupt's AuditSink).

@pytest.fixture(autouse=True)
def audit_sink_of_its_own(monkeypatch):
    """Read and dropped as they come: a unix datagram queue holds only
    net.unix.max_dgram_qlen records (10) before a sender waits. Writable by
    anyone, as /dev/log is: the privilege tests run sockterm as nobody."""
    import shutil
    import socket
    import tempfile
    import threading
    where = tempfile.mkdtemp(prefix="sockterm-audit-")
    os.chmod(where, 0o711)
    path = os.path.join(where, "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    os.chmod(path, 0o666)
    rx.settimeout(0.2)
    done = threading.Event()

    def drain():
        while not done.is_set():
            try:
                rx.recv(1 << 20)
            except socket.timeout:
                continue
            except OSError:
                return
    reader = threading.Thread(target=drain, name="audit-sink", daemon=True)
    reader.start()
    monkeypatch.setenv("SOCKTERM_SYSLOG_SOCKET", path)
    yield
    done.set()
    reader.join()
    rx.close()
    shutil.rmtree(where, ignore_errors=True)
