"""Hostile command lines (no root needed for the parse-level part).

Random argument vectors built from sockterm's options and hostile values run
through sockterm.cli.main in-process, with sockterm.core's entry points replaced by
a recorder, so nothing can touch the kernel whatever parses. Every run:
no traceback and no 'internal error'; exit 2 comes with exactly one stderr
line and no stdout; a kill that reaches the core has --yes and a filter that
names something. A sample of the usage errors is re-run as a real
subprocess, which must agree.

Namespace paths that are not network namespaces (files, devices, a FIFO,
/proc/self/fd/0, a symlink to a mount namespace, a vanished pid) must be
refused in one line with exit 2, promptly (root only: without root sockterm
refuses earlier, by design).

SOCKTERM_LONG=1 raises hypothesis's example count tenfold.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings, strategies as S

LONG = os.environ.get("SOCKTERM_LONG", "") not in ("", "0")
EXAMPLES = 4000 if LONG else 400
SUBPROCESS_SAMPLE = 12

VALUES = S.sampled_from(["", " ", "-", "--", "80", "0", "65535", "65536", "-1", "1-2", "2-1",
                         "10.0.0.5", "10.0.0.5:80", "[fd00::5]:443", "fd00::5", "::", "0.0.0.0/0",
                         "[::]/0:1-2", "10.0.0.0/33", "all", "listening", "bogus", "tcp", "udp",
                         "sctp", "json", "xml", "1", "4194305", "a,b", ",", "80,", "%", "\x00",
                         "[", "]", ":", "st-nope", "/", "/etc/passwd", "é"]) | S.text(max_size=12)
OPTIONS = S.sampled_from(["--dst", "--src", "--dport", "--sport", "--proto", "--state", "--netns",
                          "--pid", "--comm", "-o", "--max", "--backend"])
FLAGS = S.sampled_from(["-4", "-6", "--yes", "-y", "--dry-run", "-H", "--no-processes", "-v",
                        "--help", "-V", "--bogus", "-x"])
COMMANDS = S.sampled_from(["list", "match", "kill", "kill", "kill", "nope", ""])


@S.composite
def argvs(draw):
    argv = []
    if draw(S.booleans()):
        argv += ["--backend", draw(S.sampled_from(["auto", "bpf", "diag", "ebpf", ""]))]
    command = draw(COMMANDS)
    if command:
        argv.append(command)
    for _ in range(draw(S.integers(0, 6))):
        if draw(S.integers(0, 3)):
            argv += [draw(OPTIONS), draw(VALUES)]
        else:
            argv.append(draw(FLAGS))
    if draw(S.integers(0, 9)) == 0 and argv:
        argv.pop()                       # an option left without its value
    return argv


class Recorder:
    """Stands in for the core's entry points: records (command, filter), runs nothing."""

    def __init__(self):
        self.requests = []

    def scan(self, flt, report, options=None):
        self.requests.append(("list", flt))
        return iter(())

    def plan(self, flt, report, options=None):
        from sockterm.core import Plan
        self.requests.append(("plan", flt))
        return Plan(flt=flt, engine="bpf", sockets=[], namespaces=[])

    def kill(self, target, report, options=None, rate=None):
        self.requests.append(("kill", getattr(target, "flt", target)))
        return iter(())


def run_inproc(argv):
    from sockterm import cli, core
    rec = Recorder()
    out, err = io.StringIO(), io.StringIO()
    env = {"SOCKTERM_SYSLOG_SOCKET": "/nonexistent/sockterm-fuzz.sock"}
    with mock.patch.object(core, "scan", rec.scan), mock.patch.object(core, "plan", rec.plan), \
            mock.patch.object(core, "kill", rec.kill), mock.patch.dict(os.environ, env), \
            contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        os.environ.pop("SOCKTERM_BACKEND", None)
        os.environ.pop("SOCKTERM_DEBUG", None)
        try:
            cli.main(list(argv))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue(), rec.requests


USAGE_SAMPLES: list = []


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(argv=argvs())
def test_fuzzed_command_lines(argv):
    if not argv:
        return              # test_no_arguments_is_not_a_28_line_error (known bug)
    code, out, err, requests = run_inproc(argv)
    assert "Traceback" not in err and "internal error" not in err, (argv, err)
    assert code in (0, 1, 2, 3), (argv, code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, (argv, err)
        assert out == "", (argv, out)
        if len(USAGE_SAMPLES) < SUBPROCESS_SAMPLE and "\x00" not in "".join(argv):
            USAGE_SAMPLES.append((argv, lines[0]))
    for command, flt in requests:
        if command == "kill":
            assert flt.targeted, (argv, flt)
            assert "--yes" in argv or "-y" in argv, argv


def test_usage_errors_agree_with_a_real_subprocess():
    if not USAGE_SAMPLES:
        pytest.skip("the fuzz test did not run first")
    env = dict(os.environ, SOCKTERM_SYSLOG_SOCKET="/nonexistent/sockterm-fuzz.sock")
    env.pop("SOCKTERM_BACKEND", None)
    for argv, line in USAGE_SAMPLES:
        proc = subprocess.run([sys.executable, "-m", "sockterm", *argv], capture_output=True,
                              text=True, env=env, stdin=subprocess.DEVNULL, timeout=30)
        assert proc.returncode == 2, (argv, proc.stderr)
        assert proc.stderr.strip() == line, argv
        assert proc.stdout == ""


def test_no_arguments_is_not_a_28_line_error():
    code, out, err, requests = run_inproc([])
    assert not requests
    # either help on stdout (exit 0), or a usage error in one line (exit 2)
    assert (code == 0 and "Usage:" in out) or (code == 2 and len(err.strip().splitlines()) == 1)


# -- namespace paths that are not network namespaces -----------------------------------

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="without root sockterm refuses "
                               "before it looks at --netns (exit 3), by design")


def run_netns(path, timeout=10):
    env = dict(os.environ)
    env.pop("SOCKTERM_BACKEND", None)
    proc = subprocess.run([sys.executable, "-m", "sockterm", "list", "--netns", path],
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def odd_paths(tmp_path):
    plain = tmp_path / "plain"
    plain.write_text("x")
    mnt_link = tmp_path / "mnt-link"
    mnt_link.symlink_to("/proc/self/ns/mnt")
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    return {"plain": str(plain), "mnt-link": str(mnt_link), "loop": str(loop),
            "dangling": str(dangling), "dir": str(tmp_path), "dev-null": "/dev/null",
            "dev-zero": "/dev/zero", "stdin": "/proc/self/fd/0", "ns-dir": "/proc/self/ns",
            "user-ns": "/proc/self/ns/user", "vanished-pid": "/proc/4194000/ns/net",
            "proc-net": "/proc/self/net", "sysfs": "/sys/kernel/btf/vmlinux"}


@root_only
@pytest.mark.parametrize("name", ["plain", "mnt-link", "loop", "dangling", "dir", "dev-null",
                                  "dev-zero", "stdin", "ns-dir", "user-ns", "vanished-pid",
                                  "proc-net", "sysfs"])
def test_odd_netns_paths_refused_in_one_line(odd_paths, name):
    code, out, err = run_netns(odd_paths[name])
    assert code == 2, (name, code, err)
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert out == ""


@root_only
def test_fifo_netns_path_refused_promptly(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, out, err = run_netns(str(fifo), timeout=10)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
