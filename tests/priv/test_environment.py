"""What a new user's environment does to sockterm: COLUMNS, NO_COLOR, an ASCII
locale, a full disk or a dead terminal on stdout, options after the command,
an IPv6 address written without brackets, and what a killed listener sees."""

from __future__ import annotations

import errno
import json
import os
import pty
import re
import socket
import subprocess
import sys

import pytest

from conftest import Topology, sockterm
from rel_util import loopback_pairs
from test_operator_terminal import run_pty, visible

HEADER = ["NETNS", "PROTO", "STATE", "LOCAL", "PEER", "PROCESS"]


@pytest.fixture
def pairs():
    with Topology() as topo:
        ns, h, conns, listener = loopback_pairs(topo, "env", 7950)
        h.call("comm", name_hex="café".encode().hex())     # a name ASCII cannot write
        yield ns, h, conns, listener


@pytest.fixture
def syslog(tmp_path):
    path = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(0.5)
    yield path, rx
    rx.close()


def records(rx) -> list[str]:
    out = []
    while True:
        try:
            out.append(rx.recv(1 << 20).decode())
        except socket.timeout:
            return out


@pytest.mark.parametrize("columns", ["0", "-5", "junk", ""])
def test_invalid_columns_is_ignored(pairs, columns):
    ns, *_ = pairs
    code, shown, _ = run_pty("list", "--netns", ns, cols=100, env={"COLUMNS": columns})
    assert code == 0, shown
    lines = visible(shown)
    assert lines[0].split() == HEADER            # not folded into strips
    assert max(len(line) for line in lines) <= 100


@pytest.mark.parametrize("value, colour", [("", True), ("1", False), ("0", False)])
def test_no_color_present_and_not_empty_disables(pairs, value, colour):
    """no-color.org: NO_COLOR present and not empty disables colour (any value,
    '0' too); empty is as if unset. The rich surfaces follow the same rule."""
    ns, *_ = pairs
    for args in (["list", "--netns", ns], ["doctor"]):
        code, shown, _ = run_pty(*args, env={"NO_COLOR": value})
        assert code == 0, shown
        assert bool(re.search(r"\x1b\[[0-9;]*m", shown)) == colour, (args, shown)


def test_ascii_output_encoding_is_one_line_exit_3(pairs, syslog):
    ns, h, conns, listener = pairs
    env = {"PYTHONIOENCODING": "ascii"}
    code, out, err = sockterm("list", "--netns", ns, env=env)
    assert code == 3
    assert err.strip().splitlines() == [
        "sockterm: error: cannot write output: '\\xe9' cannot be written in the output's "
        "encoding (ascii); use a UTF-8 locale or -o json"]
    # a kill goes through, is audited, and then says the output failed
    path, rx = syslog
    code, out, err = sockterm("kill", "--yes", "--netns", ns, "--dport", "7950",
                              env=dict(env, SOCKTERM_SYSLOG_SOCKET=path))
    assert code == 3, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "sockterm: error: cannot write output:")
    [record] = records(rx)
    assert "killed=2" in record
    assert set(h.status(conns).values()) == {errno.ECONNABORTED}


def test_full_disk_is_one_line_exit_3_after_the_audit_record(pairs, syslog):
    ns, h, conns, listener = pairs
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "sockterm", "list", "--netns", ns],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "sockterm: error: cannot write output: No space left on device"]
    path, rx = syslog
    env = dict(os.environ, SOCKTERM_SYSLOG_SOCKET=path)
    env.pop("SOCKTERM_BACKEND", None)
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "sockterm", "kill", "--yes", "--netns", ns,
                               "--dport", "7950", "-o", "json"], stdout=full,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == "sockterm: error: cannot write output: No space left on device"
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    [record] = records(rx)
    assert "killed=2" in record
    assert set(h.status(conns).values()) == {errno.ECONNABORTED}


def test_dead_terminal_is_one_line_exit_3(pairs):
    """EIO: stdout is a terminal whose other side has gone."""
    ns, *_ = pairs
    master, slave = pty.openpty()
    os.close(master)
    try:
        proc = subprocess.run([sys.executable, "-m", "sockterm", "list", "--netns", ns],
                              stdout=slave, stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(slave)
    assert proc.returncode == 3
    assert proc.stderr.strip().splitlines() == [
        "sockterm: error: cannot write output: Input/output error"]


def test_unbracketed_ipv6_with_a_port_gets_a_hint(pairs):
    ns, *_ = pairs
    code, out, err = sockterm("match", "--netns", ns, "--dst", "fd66::5:7080")
    assert code == 1
    assert err.strip().splitlines()[-1] == (
        "sockterm: hint: --dst fd66::5:7080 is the IPv6 address fd66::5:7080, without a port; "
        "did you mean [fd66::5]:7080?")
    code, out, err = sockterm("match", "--netns", ns, "--dst", "[fd66::5]:7080")
    assert code == 1 and "hint" not in err
    code, out, err = sockterm("kill", "--yes", "--netns", ns, "--dst", "::1:7950")
    assert code == 1 and "did you mean [::1]:7950?" in err


def test_global_options_after_the_command(pairs):
    ns, *_ = pairs
    code, out, err = sockterm("match", "--netns", ns, "--dport", "7950", "-v", "--backend", "diag",
                              "-o", "json")
    assert code == 0, err
    assert json.loads(out)["engine"] == "diag"     # --backend after the command took effect
    assert "sockterm: diag: " in err               # and so did -v
    code, out, err = sockterm("doctor", "-v", "-o", "json")
    assert code == 0 and json.loads(out)["can_kill"] is True


def test_a_killed_listener_accept_fails_with_einval(pairs):
    """What the man page says a killed listener's application sees: accept()
    fails with EINVAL (the socket is closed), not ECONNABORTED; its pending
    error (SO_ERROR) is ECONNABORTED, and new connections are refused."""
    ns, h, conns, listener = pairs
    for engine in ("bpf", "diag"):
        lst = h.call("listen", addr="127.0.0.1", port=7960 if engine == "bpf" else 7961)
        code, out, err = sockterm("--backend", engine, "kill", "--yes", "--netns", ns,
                                  "--state", "listening", "--sport", str(lst["local"][1]))
        assert code == 0, err
        assert h.status([lst["id"]]) == {lst["id"]: errno.ECONNABORTED}
        with pytest.raises(OSError, match="^EINVAL"):
            h.call("accept", id=lst["id"], timeout=1)
