"""Terminal and log injection: names anyone can choose reach no terminal, no
stderr line, no prompt and no syslog record raw.

A process name (prctl PR_SET_NAME: any local user can) and a namespace bind
mount path (any bytes) carry OSC, CSI, BEL, CR, LF, C1, U+202E and a byte that
is not UTF-8. Every output of list, match and kill must show them escaped
(text.shown: `\\x1b`, `\\u202e`), JSON must keep them exactly.
"""

from __future__ import annotations

import json
import re
import os
import shutil
import socket
import subprocess
import sys

import pytest

from conftest import HOLDER, Holder, Topology, sh, sockterm
from test_operator_terminal import run_pty

# 15 bytes at most each: the kernel's comm
COMM1 = b"\x1b]0;PWN\x07\x1b[2J"                 # retitle the terminal, clear the screen
COMM2 = b"z\nFAKE: ok\r\xe2\x80\xae"            # forge a line; U+202E reorders what follows
MOUNT = (b"ns\x1b]0;PWN\x07\x1b[2J\nFAKE: ok\r\xe2\x80\xae\xc2\x9b[31m\xff")   # ... C1 CSI, not UTF-8
SUDO_USER = "eve\nFAKE: ok\x1b[2J"

RAW = ["\x1b]0;PWN", "\x1b[2J", "\x07", "\u202e", "\x9b", "\udcff", "\ufffd",
       "\nFAKE", "\rFAKE", "\r\nFAKE"]


def text_of(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def assert_clean(where: str, text: str, json_text: bool = False) -> None:
    for bad in RAW:
        assert bad not in text, f"{where}: raw {bad!r} in {text!r}"
    if json_text:
        return          # escaped the JSON way (\n), and checked exactly elsewhere
    # every forged line shows its escaped newline in front of it
    for i in range(len(text)):
        if text.startswith("FAKE: ok", i):
            assert text[i - 4:i] == "\\x0a", f"{where}: {text[max(0, i - 20):i + 10]!r}"


class Hostile:
    """Three namespaces named by hostile text: one whose process is named COMM1
    (an ip netns), one unnamed whose only process is named COMM2 (so it is
    shown as COMM2[pid]), and one held only by a bind mount at MOUNT."""

    def __init__(self, topo: Topology, tmp: str):
        self.topo = topo
        self.a = topo.ns("inj")
        self.h1 = topo.holder(self.a)
        self.h1.call("pairs_in", path=f"/run/netns/{self.a}", port=7601)
        self.h1.call("comm", name_hex=COMM1.hex())
        # an unnamed namespace: its one process names it
        self.p2 = subprocess.Popen(["unshare", "--net", sys.executable, HOLDER],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.h2 = Holder.__new__(Holder)
        self.h2.proc, self.h2.netns = self.p2, None
        self.h2.pid = self.h2.call("pid")
        self.h2.call("pairs_in", path=f"/proc/{self.h2.pid}/ns/net", port=7602)
        self.h2.call("comm", name_hex=COMM2.hex())
        self.ino2 = os.stat(f"/proc/{self.h2.pid}/ns/net").st_ino
        # a namespace held only by a bind mount at a hostile path
        b = topo.ns("injb")
        self.h1.call("pairs_in", path=f"/run/netns/{b}", port=7603)
        self.dir = os.path.join(tmp, "mnt")
        os.mkdir(self.dir)
        self.mount = os.fsencode(self.dir) + b"/" + MOUNT
        with open(self.mount, "w"):
            pass
        subprocess.run([b"mount", b"--bind", f"/run/netns/{b}".encode(), self.mount], check=True)
        self.ino3 = os.stat(self.mount).st_ino
        sh("ip", "netns", "del", b)
        topo.namespaces.remove(b)
        # 3 sockets each (listener, client, accepted); match and kill take 2 each
        self.scope = ["--netns", self.a, "--netns", str(self.ino2), "--netns", str(self.ino3)]

    def close(self):
        subprocess.run([b"umount", b"-l", self.mount], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.h2.close()


@pytest.fixture
def hostile(tmp_path):
    with Topology() as topo:
        h = Hostile(topo, str(tmp_path))
        try:
            yield h
        finally:
            h.close()


@pytest.fixture
def syslog(tmp_path):
    path = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(0.5)
    yield path, rx
    rx.close()


def records(rx) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(rx.recv(1 << 20))
        except socket.timeout:
            return out


def test_the_names_really_are_hostile(hostile):
    """The kernel keeps the bytes: a comm and a mount point read back raw."""
    with open(f"/proc/{hostile.h2.pid}/comm", "rb") as f:
        assert f.read() == COMM2 + b"\n"
    code, doc, err = run_json("list", *hostile.scope)
    names = {s["netns_name"] for s in doc["sockets"]}
    comms = {p["comm"] for s in doc["sockets"] for p in s["processes"] or ()}
    # JSON keeps exact values (escaped by JSON, so the text itself is ASCII)
    assert text_of(os.fsencode(hostile.dir) + b"/" + MOUNT) in names
    assert f"{text_of(COMM2)}[{hostile.h2.pid}]" in names
    assert text_of(COMM1) in comms and text_of(COMM2) in comms


def run_json(*args):
    code, out, err = sockterm(*args, "-o", "json")
    assert code == 0, err
    assert out.isascii()
    return code, json.loads(out), err


@pytest.mark.parametrize("engine", ["bpf", "diag"])
@pytest.mark.parametrize("command", ["list", "match"])
def test_piped_outputs_and_stderr(hostile, engine, command):
    for fmt in ("tsv", "table", "jsonl"):
        code, out, err = sockterm("--backend", engine, command, "-v", *hostile.scope, "-o", fmt)
        assert code == 0, err
        assert_clean(f"{command} -o {fmt} stdout", out, json_text=fmt == "jsonl")
        assert_clean(f"{command} -o {fmt} stderr", err)
        if fmt == "tsv":
            lines = out.splitlines()
            assert len(lines) == 1 + (9 if command == "list" else 6) and all(line.count("\t") == 5 for line in lines)
            assert "\\x1b]0;PWN\\x07\\x1b[2J" in out               # shown, escaped
            assert f"z\\x0aFAKE: ok\\x0d\\u202e[{hostile.h2.pid}]" in out
            assert "\\x0aFAKE: ok\\x0d\\u202e\\x9b[31m\\xff" in out
        if fmt == "jsonl":
            assert out.isascii()
    # the per-namespace summary lines on stderr name all three
    assert len([line for line in err.splitlines() if line.startswith("  ")]) == 3


def test_table_and_summary_on_a_terminal(hostile):
    code, shown, _ = run_pty("list", *hostile.scope, cols=250)
    assert code == 0, shown
    assert_clean("list on a terminal", shown)
    assert "\\x1b]0;PWN\\x07\\x1b[2J" in shown


def test_kill_prompt_sample_and_audit_record(hostile, syslog):
    path, rx = syslog
    env = {"SOCKTERM_SYSLOG_SOCKET": path, "SUDO_USER": SUDO_USER, "SUDO_UID": "1000"}
    code, shown, _ = run_pty("kill", *hostile.scope, answer="n", cols=250, env=env)
    assert code == 1, shown
    assert_clean("kill prompt (no)", shown)
    assert "About to kill 6 sockets in 3 namespaces" in shown
    assert f"z\\x0aFAKE: ok\\x0d\\u202e[{hostile.h2.pid}]" in shown    # per-namespace counts
    assert records(rx) == []                                             # nothing killed, no record
    code, shown, _ = run_pty("kill", *hostile.scope, answer="y", cols=250, env=env)
    assert code == 0, shown
    assert_clean("kill prompt (yes) and result", shown)
    # a client's destroy resets its peer: that one is then reported gone
    assert re.search(r"killed [3-6] of 6 matching sockets in 3 namespaces", shown), shown
    [record] = records(rx)
    text = record.decode("utf-8")          # valid UTF-8: no raw byte of a name
    assert "\n" not in text and "\r" not in text
    assert_clean("audit record", text)
    assert "sudo_user=eve\\x0aFAKE: ok\\x1b[2J" in text
    assert "\\x1b]0;PWN" not in text or "\\x07" in text
    assert "\\x9b[31m\\xff" in text                                        # the mount path, escaped


def test_kill_yes_piped(hostile, syslog):
    path, rx = syslog
    code, out, err = sockterm("kill", "--yes", *hostile.scope, env={"SOCKTERM_SYSLOG_SOCKET": path})
    assert code == 0, err
    assert_clean("kill stdout", out)
    assert_clean("kill stderr", err)
    [record] = records(rx)
    assert_clean("audit record", record.decode())


def test_completion_offers_names_escaped_and_they_select(hostile):
    env = dict(os.environ, COMP_WORDS="sockterm list --netns ", COMP_CWORD="3",
               _SOCKTERM_COMPLETE="bash_complete")
    out = subprocess.run([sys.executable, "-m", "sockterm"], capture_output=True, text=True,
                         env=env, timeout=60).stdout
    assert_clean("completion", out)
    name = f"z\\x0aFAKE: ok\\x0d\\u202e[{hostile.h2.pid}]"
    assert f"plain,{name}" in out.splitlines()
    # the name as shown selects the namespace
    code, doc, err = run_json("list", "--netns", name)
    assert {s["netns"] for s in doc["sockets"]} == {hostile.ino2}
