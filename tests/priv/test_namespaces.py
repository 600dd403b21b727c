"""Namespace discovery: every way a namespace can exist on a host is found
without being named, named as a human would recognise it, and refused
cleanly when a --netns value is not a network namespace."""

import os
import subprocess
import tempfile
import time

import pytest

from conftest import sh, sockterm, sockterm_json, traced


@pytest.fixture
def lone_process():
    """A namespace that only a process holds (no /run/netns entry): a container."""
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c",
                             "ip link set lo up; exec python3 -c 'import socket,time;"
                             "s=socket.socket();s.bind((\"127.0.0.1\",7777));s.listen();"
                             "time.sleep(120)'"])
    path = f"/proc/{proc.pid}/ns/net"
    for _ in range(100):
        if os.path.exists(path) and os.stat(path).st_ino != os.stat("/proc/self/ns/net").st_ino:
            break
        time.sleep(0.05)
    # wait until its listener exists
    for _ in range(100):
        out = subprocess.run(["nsenter", "-t", str(proc.pid), "-n", "ss", "-Htln"],
                             capture_output=True, text=True).stdout
        if "7777" in out:
            break
        time.sleep(0.05)
    yield proc
    proc.kill()
    proc.wait()


def test_process_only_namespace_is_found_and_named(lone_process):
    code, doc, err = sockterm_json("list", "--sport", "7777")
    assert code == 0, err
    [sock] = doc["sockets"]
    assert sock["netns"] == os.stat(f"/proc/{lone_process.pid}/ns/net").st_ino
    assert sock["netns_name"] == f"python3[{lone_process.pid}]"
    assert sock["processes"] == [{"pid": lone_process.pid, "comm": "python3"}]


def test_bind_mounted_namespace_without_process(topo):
    """A runtime's nsfs bind mount outside /run/netns, with no process inside: the
    socket's holder has moved to another namespace, so only the mount leads
    there. Found through it and named by it; gone from view once it goes."""
    ns, away = topo.ns("bind"), topo.ns("away")
    holder = topo.holder(ns)
    lst = holder.call("listen", addr="127.0.0.1", port=7788)
    ino = os.stat(f"/run/netns/{ns}").st_ino
    assert holder.call("setns", path=f"/run/netns/{away}") == os.stat(f"/run/netns/{away}").st_ino
    with tempfile.TemporaryDirectory() as d:
        target = os.path.join(d, "netns-file")
        open(target, "w").close()
        sh("mount", "--bind", f"/run/netns/{ns}", target)
        try:
            sh("umount", f"/run/netns/{ns}")          # now only the bind mount leads there
            code, doc, err = sockterm_json("list", "--sport", "7788")
            assert code == 0, err
            [sock] = doc["sockets"]
            assert (sock["cookie"], sock["netns"], sock["netns_name"]) == (lst["cookie"], ino, target)
            code, doc, err = sockterm_json("list", "--sport", "7788", "--netns", target)
            assert code == 0 and [s["cookie"] for s in doc["sockets"]] == [lst["cookie"]]
        finally:
            sh("umount", target, check=False)
            # the topology deletes /run/netns/<ns>; recreate the file so `ip netns del` is clean
            open(f"/run/netns/{ns}", "a").close()
        # the socket (held from `away`) keeps the namespace alive, but nothing leads to it
        code, doc, err = sockterm_json("list", "--sport", "7788")
        assert lst["cookie"] not in {s["cookie"] for s in doc["sockets"]}


def test_named_namespaces(topo):
    ns = topo.ns("named")
    h = topo.holder(ns)
    h.call("listen", addr="127.0.0.1", port=7799)
    code, doc, err = sockterm_json("list", "--netns", ns)
    assert code == 0, err
    assert {s["netns_name"] for s in doc["sockets"]} == {ns}
    ino = os.stat(f"/run/netns/{ns}").st_ino
    for selector in (str(ino), f"net:[{ino}]", f"/run/netns/{ns}"):
        code, doc2, err = sockterm_json("list", "--netns", selector)
        assert code == 0 and [s["cookie"] for s in doc2["sockets"]] == [s["cookie"] for s in doc["sockets"]]


@pytest.mark.parametrize("value", ["/etc/passwd", "/proc/self/ns/mnt", "/nonexistent/ns",
                                   "no-such-namespace", "4026531", "/proc/999999999/ns/net"])
def test_bad_netns_values_exit_2_in_one_line(value):
    code, out, err = sockterm("list", "--netns", value)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert out == ""


def test_verbose_reports_unreadable_proc_entries():
    """A process of another user is out of reach without CAP_SYS_PTRACE (ptrace
    access mode): -v names its /proc entry as skipped, and the run goes on."""
    other = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              "sleep", "60"])
    line = f"sockterm: skipped /proc/{other.pid}/ns/net: Permission denied"
    no_ptrace = ["setpriv", "--inh-caps=-sys_ptrace", "--bounding-set=-sys_ptrace", "--"]
    try:
        for _ in range(100):            # until setpriv has become nobody's sleep
            if os.stat(f"/proc/{other.pid}").st_uid == 65534:
                break
            time.sleep(0.02)
        code, out, err = sockterm("-v", "list", "--dport", "1", "-o", "json", prefix=no_ptrace)
        assert "Traceback" not in err and code in (0, 1), err
        assert line in err.splitlines(), err
        code, out, err = sockterm("list", "--dport", "1", "-o", "json", prefix=no_ptrace)
        assert "skipped" not in err                      # only under -v
        code, out, err = sockterm("-v", "list", "--dport", "1", "-o", "json")
        assert line not in err.splitlines()              # root with CAP_SYS_PTRACE reads it
    finally:
        other.kill()
        other.wait()


def test_netns_host_alone_is_found_without_a_look_at_every_process(lone_process):
    """`--netns host` needs the host's namespace only (kthreadd's): no
    process's namespace is looked at (on a node, thousands of stats), and
    what it finds is the host's, named so."""
    listener = subprocess.run(["ss", "-Htln", "sport", "= :7777"], capture_output=True, text=True)
    assert listener.stdout == ""          # the lone process's listener is not the host's
    path = f"/proc/{lone_process.pid}/ns/net"

    def stats(*args):
        return traced("stat,lstat,newfstatat,statx", ["list", "-o", "json", *args])
    trace, run = stats("--netns", "host")
    assert run.returncode in (0, 1), run.stderr
    assert path not in trace
    import json
    doc = json.loads(run.stdout)
    assert [(n["netns"], n["netns_name"]) for n in doc["namespaces"]] == \
        [(os.stat("/proc/2/ns/net").st_ino, "host")]
    assert not [s for s in doc["sockets"] if s["sport"] == 7777]
    trace, run = stats()                  # every namespace: every process is looked at
    assert run.returncode == 0, run.stderr
    assert path in trace
