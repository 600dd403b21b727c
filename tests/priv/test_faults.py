"""Fault injection: what sockterm does when the host changes under it or a
piece it needs is broken. Every case must give a clear one-line message and
the documented exit code, kill nothing it should not, and carry on for the
rest of the host where that is safe.

Faults: a corrupt / truncated / empty BPF object (bind-mounted over the
shipped one in a private mount namespace); the bpf_sock_destroy kfunc
missing from the kernel's BTF (a copy with the name altered, bind-mounted
over /sys/kernel/btf/vmlinux); namespaces deleted while runs walk them; the
process that owns the sockets exiting mid-kill.

SOCKTERM_LONG=1 deletes more namespaces and repeats the races longer.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import threading
import time

import pytest

import confine
from rel_util import RelTopology, cli, long_mode, loopback_pairs, peers_of, sh, ss_view

SCALE = 4 if long_mode() else 1
FIGURES = {"faults": 0}


def one_line(err: str) -> str:
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert "Traceback" not in err, err
    assert len(lines) == 1, f"expected one line on stderr, got: {err!r}"
    return lines[0]


@pytest.fixture
def victim():
    """One namespace with TCP connections that any kill below would name, and
    more (a listener, UDP) it would not; `unharmed()` says nothing in it died."""
    with RelTopology() as topo:
        ns, h, conns, _ = loopback_pairs(topo, "fault", 7400)
        h.call("listen", proto="udp", addr="127.0.0.1", port=7401)
        h.call("connect", proto="udp", dst="127.0.0.1", port=7401)
        before = ss_view([ns])
        assert len(before) == 7

        def unharmed():
            return ss_view([ns]) == before and set(h.status().values()) <= {0}
        yield ns, h, conns, unharmed


def in_private_mounts(bind_src: str, bind_dst: str) -> list[str]:
    """A prefix that runs the command with bind_src mounted over bind_dst, in a
    private mount namespace that dies with it (the host's mounts stay as they are)."""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" "$1" && shift && exec "$@"', bind_src, bind_dst]


def object_path(command: str = "kill") -> str:
    """The object a command loads: a kill in the kernel's, or every other run's."""
    from sockterm.engine.bpf.engine import OBJECT_NAME, READ_OBJECT_NAME, object_path
    return object_path(OBJECT_NAME if command == "kill" else READ_OBJECT_NAME)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "elf-header-only"])
@pytest.mark.parametrize("command", ["list", "kill"])
def test_broken_bpf_object(victim, damage, command, tmp_path):
    ns, h, conns, unharmed = victim
    original = open(object_path(command), "rb").read()
    bad = {"truncated": original[: len(original) // 3],
           "garbage": os.urandom(len(original)),
           "empty": b"",
           "elf-header-only": original[:64]}[damage]
    path = tmp_path / "sockterm.bpf.o"
    path.write_bytes(bad)
    extra = ["--yes", "--dport", "7400"] if command == "kill" else []
    code, out, err = cli("--backend", "bpf", command, "--netns", ns, *extra,
                         prefix=in_private_mounts(str(path), object_path(command)))
    FIGURES["faults"] += 1
    line = one_line(err)
    assert code == 3, (code, err)
    assert "BPF object" in line or "bpf" in line.lower(), line
    assert out == ""
    assert unharmed(), "a socket died although the run failed"
    # the host's object is untouched
    assert open(object_path(command), "rb").read() == original


@pytest.fixture(scope="module")
def btf_without_kfunc():
    """(the kernel's BTF without the kfunc's name, the environment of a run
    mounting it). The run gets a BTF cache of its own: a cache is keyed by the
    kernel's build id, which this stand-in for another kernel shares with the
    real one, and says what the kernel's BTF had when it was made
    (engine/bpf/btfcache.py)."""
    blob = open("/sys/kernel/btf/vmlinux", "rb").read()
    assert blob.count(b"\0bpf_sock_destroy\0") == 1
    d = tempfile.mkdtemp(prefix="sockterm-btf-")
    path = os.path.join(d, "vmlinux")
    with open(path, "wb") as f:
        f.write(blob.replace(b"\0bpf_sock_destroy\0", b"\0bpf_sock_destrox\0"))
    cache = tempfile.mkdtemp(prefix="sockterm-btf-cache-", dir="/run")     # root's alone
    os.chmod(cache, 0o755)
    try:
        yield path, {"SOCKTERM_CACHE_DIR": cache}
    finally:
        shutil.rmtree(d)
        shutil.rmtree(cache)


def test_kfunc_missing_bpf_kill_refuses(victim, btf_without_kfunc):
    ns, h, conns, unharmed = victim
    btf, env = btf_without_kfunc
    prefix = in_private_mounts(btf, "/sys/kernel/btf/vmlinux")
    code, out, err = cli("--backend", "bpf", "kill", "--yes", "--netns", ns, "--dport", "7400",
                         prefix=prefix, env=env)
    FIGURES["faults"] += 1
    line = one_line(err)
    assert code == 3, (code, err)
    assert "bpf_sock_destroy" in line, line
    assert unharmed()
    # listing needs no kfunc: the bpf engine still lists
    code, out, err = cli("--backend", "bpf", "list", "--netns", ns, "-o", "json", prefix=prefix,
                         env=env)
    assert code == 0, err
    assert json.loads(out)["engine"] == "bpf"


@pytest.mark.parametrize("cached", [False, True], ids=["searched", "cached"])
def test_kfunc_missing_auto_falls_back_to_diag(victim, btf_without_kfunc, cached):
    # a second run decides by the BTF cache the first one made
    ns, h, conns, unharmed = victim
    btf, env = btf_without_kfunc
    prefix = in_private_mounts(btf, "/sys/kernel/btf/vmlinux")
    if cached:
        cli("--backend", "bpf", "list", "--netns", ns, prefix=prefix, env=env)
        assert os.listdir(env["SOCKTERM_CACHE_DIR"])
    code, out, err = cli("--backend", "auto", "kill", "--yes", "--netns", ns, "--dport", "7400",
                         "-o", "json", prefix=prefix, env=env)
    FIGURES["faults"] += 1
    assert code == 0, err
    doc = json.loads(out)
    assert doc["engine"] == "diag"
    assert len(doc["sockets"]) == 2 and {s["result"] for s in doc["sockets"]} == {"killed"}
    assert set(h.status(conns).values()) == {errno.ECONNABORTED}


def test_namespaces_deleted_while_walking():
    """Runs in a loop while a thread deletes namespaces (and ends their only
    process): every run completes, lists every socket of the namespaces that
    stay, and says in one line which namespace it lost, if any."""
    victims_n = 12 * SCALE
    with RelTopology() as topo:
        stable, victims = [], []
        for i in range(3):
            ns = topo.ns(f"keep{i}")
            h = topo.holder(ns)
            stable.append((ns, h, h.call("listen", addr="127.0.0.1", port=7500)))
        for i in range(victims_n):
            ns = topo.ns(f"doom{i}")
            h = topo.holder(ns)
            h.call("listen", addr="127.0.0.1", port=7500)
            victims.append((ns, h))
        want = {lst["cookie"] for _, _, lst in stable}
        done = threading.Event()

        def delete():
            for ns, h in victims:
                time.sleep(0.05)
                sh("ip", "netns", "del", ns, check=False)
                h.close()            # its last process: the namespace is gone now
                FIGURES["faults"] += 1
            done.set()

        worker = threading.Thread(target=delete)
        worker.start()
        runs = 0
        try:
            while not done.is_set() or runs < 3:
                command = ["list", "--state", "listening"] if runs % 2 == 0 else ["match"]
                code, out, err = cli("--backend", "bpf" if runs % 4 < 2 else "diag", *command,
                                     "--sport", "7500", "-o", "json")
                runs += 1
                assert "Traceback" not in err and "internal error" not in err, err
                doc = json.loads(out)
                if command[0] == "list":
                    got = {s["cookie"] for s in doc["sockets"]}
                    assert want <= got, f"run {runs}: lost sockets of namespaces that stayed"
                    assert code in (0, 3), err
                else:
                    assert code in (0, 1, 3), err     # other sockets on the host may match
                if code == 3:
                    # a namespace that vanishes is not a failure; anything else names it
                    assert any("namespace" in l for l in err.splitlines()), err
        finally:
            worker.join()
        assert runs >= 3
        # and a kill confined to the namespaces that stay kills exactly their listeners
        code, out, err = cli("kill", "--yes", "--sport", "7500", "--state", "listening",
                             *[x for ns, _, _ in stable for x in ("--netns", ns)], "-o", "json")
        assert code == 0, err
        assert {s["cookie"] for s in json.loads(out)["sockets"]} == want
        for ns, h, lst in stable:
            assert h.status([lst["id"]]) == {lst["id"]: errno.ECONNABORTED}
        topo.namespaces = [n for n in topo.namespaces if not n.startswith(f"strel-{topo.tag}-doom")]


OWNED = 3000
# diag's kill, slowed (2 ms a netlink read, strace's fault injection) so that the
# owner surely dies while it runs: after its first destroys, long before its last
SLOW_DIAG = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=recvfrom",
             "-e", "inject=recvfrom:delay_exit=2000", "--"]


@pytest.mark.parametrize("engine", ["bpf", "diag"])
def test_owner_exits_mid_kill(engine):
    """The process holding the named sockets is SIGKILLed while the kill runs
    (for diag: provably mid-kill, once ss shows the first destroyed): no crash,
    no 'failed' result, each socket reported once, an exact count, every named
    socket gone afterwards, and nothing else in the namespace touched."""
    with RelTopology() as topo:
        ns = topo.ns("owner")
        server = topo.holder(ns)
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.core.somaxconn=8192")
        lst = server.call("listen", addr="127.0.0.1", port=7600, backlog=8192)
        bystander = server.call("listen", proto="udp", addr="127.0.0.1", port=7602)
        owner = topo.holder(ns)
        owned = {c["cookie"] for c in owner.call("connect", dst="127.0.0.1", port=7600, count=OWNED)}
        outside = {c for c, s in ss_view([ns]).items() if s.dport != 7600}
        assert len(outside) == OWNED + 2          # the server's ends, its listener, the bystander
        died_mid_kill = threading.Event()

        def die():
            if engine == "diag":
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and \
                        len(owned & set(ss_view([ns], ["dport", "=", ":7600"]))) == OWNED:
                    time.sleep(0.01)
                died_mid_kill.set()
            else:
                time.sleep(0.15)
            owner.proc.kill()
            FIGURES["faults"] += 1

        t = threading.Thread(target=die)
        t.start()
        code, out, err = cli("--backend", engine, "kill", "--yes", "--netns", ns, "--dport", "7600",
                             "-o", "json", prefix=SLOW_DIAG if engine == "diag" else ())
        t.join()
        owner.proc.wait()
        assert "Traceback" not in err and "internal error" not in err, err
        doc = json.loads(out)
        results = [s["result"] for s in doc["sockets"]]
        assert set(results) <= {"killed", "gone"}, err
        assert doc["summary"]["killed"] == results.count("killed")
        assert doc["summary"]["failed"] == 0
        assert code == (0 if "killed" in results else 1), err
        cookies = [s["cookie"] for s in doc["sockets"]]
        assert len(cookies) == len(set(cookies)) and set(cookies) <= owned
        if engine == "diag":
            assert died_mid_kill.is_set()
            assert results.count("killed") > 0, "the owner died before the kill began"
        time.sleep(0.2)
        after = ss_view([ns])
        assert not owned & {c for c, s in after.items() if s.state not in (5, 6)}, \
            "a named socket is still there"
        # the server's ends die of their peers' resets or closes, nothing else
        spared = {c for c, s in after.items() if s.dport != 7600}
        assert {lst["cookie"], bystander["cookie"]} <= spared <= outside


def test_vanished_pid_is_refused_cleanly():
    code, out, err = cli("kill", "--yes", "--pid", "4194000", "-o", "json", prefix=confine.prefix())
    assert code in (1, 2), err
    assert "Traceback" not in err
    if code == 1:
        assert json.loads(out)["sockets"] == []


def test_netlink_error_mid_kill_reports_what_died():
    """diag's kill, one netlink read failing (EIO, strace's fault injection) after
    about half the destroys: one line naming the namespace, exit 3, and a report
    that names every socket that died as killed and no live one."""
    with RelTopology() as topo:
        ns = topo.ns("eio")
        h = topo.holder(ns)
        sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.core.somaxconn=1024")
        h.call("listen", addr="127.0.0.1", port=7610, backlog=1024)
        named = {c["cookie"] for c in h.call("connect", dst="127.0.0.1", port=7610, count=300)}
        before = ss_view([ns])
        fail = ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=recvfrom",
                "-e", "inject=recvfrom:error=EIO:when=150", "--"]
        code, out, err = cli("--backend", "diag", "kill", "--yes", "--netns", ns, "--dport", "7610",
                             "--no-processes", "-o", "json", prefix=fail)
        assert "Traceback" not in err and code == 3, err
        assert any(ns in line for line in err.splitlines()), err
        died = named - set(ss_view([ns]))
        assert 0 < len(died) < len(named)           # the fault struck mid-kill
        reported = {s["cookie"] for s in json.loads(out)["sockets"] if s["result"] == "killed"}
        assert reported == died
        # and nothing else died but the accepted ends the killed clients reset
        assert not set(before) - set(ss_view([ns])) - named - peers_of(before, died)
