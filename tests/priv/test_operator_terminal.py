"""What an operator at a terminal sees, driven through a real pseudo-terminal,
against what a script sees through pipes."""

import errno
import fcntl
import json
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios

import confine
from conftest import VIP4, sockterm

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
PORT = 8080


QUESTION = re.compile(rb"(Kill them|Shut them down)\? \[y/N\]")


def run_pty(*args, answer=None, cols=80, env=None, stdout_pty=True, timeout=120,
            before_answer=None, prefix=()):
    """sockterm (behind `prefix`) with stdin, stderr (and stdout unless
    stdout_pty=False) on a pty; before_answer() runs while the question is
    shown, before `answer` is typed.

    Returns (exit code, what the terminal showed, stdout when it was a pipe).
    """
    confine.check_kill(args)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, cols, 0, 0))
    full_env = dict(os.environ, TERM="xterm", **(env or {}))
    for var in ("SOCKTERM_BACKEND", "COLUMNS", "NO_COLOR"):
        if var not in (env or {}):
            full_env.pop(var, None)
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "sockterm", *args], stdin=slave, stderr=slave,
                            stdout=slave if stdout_pty else subprocess.PIPE, env=full_env)
    os.close(slave)
    shown, answered = b"", False
    try:
        while True:
            ready, _, _ = select.select([master], [], [], timeout)
            assert ready, f"sockterm hung; terminal so far: {shown!r}"
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:        # EIO: every slave fd is closed
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            shown += chunk
            if answer is not None and not answered and QUESTION.search(shown):
                if before_answer:
                    before_answer()
                os.write(master, answer.encode() + b"\n")
                answered = True
        piped = proc.stdout.read().decode() if proc.stdout else ""
        code = proc.wait(timeout=timeout)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return code, shown.decode(errors="replace").replace("\r\n", "\n"), piped


def visible(text):
    """What the terminal shows: escapes dropped, a carriage return redraws the line
    (the progress line, on slow runs, is drawn and erased that way)."""
    return [ANSI.sub("", line).split("\r")[-1] for line in text.rstrip("\n").split("\n")]


def setup(topo, clients=2, per=2):
    """Clients holding `per` connections each to VIP:PORT (doomed) and one to
    VIP:PORT+1 (spared). Returns (doomed {holder: ids}, spared, --netns args)."""
    be = topo.with_backend()
    server = topo.holder(be)
    lst = server.call("listen", addr=VIP4, port=PORT)
    other = server.call("listen", addr=VIP4, port=PORT + 1)
    doomed, spared, scope = {}, {}, []
    for i in range(clients):
        ns = topo.client(i)
        h = topo.holder(ns)
        doomed[h] = [s["id"] for s in h.call("connect", dst=VIP4, port=PORT, count=per)]
        spared[h] = [s["id"] for s in h.call("connect", dst=VIP4, port=PORT + 1, count=1)]
        server.call("accept", id=lst["id"], count=per)
        server.call("accept", id=other["id"], count=1)
        scope += ["--netns", ns]
    # scoped to our namespaces: other test runs on this host use the same VIP
    return doomed, spared, scope + ["--dst", f"{VIP4}:{PORT}"]


def statuses(group):
    return {err for h, ids in group.items() for err in h.status(ids).values()}


def test_table_on_a_terminal_fits_80_columns(topo):
    doomed, spared, flt = setup(topo)
    code, shown, _ = run_pty("match", *flt)
    assert code == 0, shown
    lines = visible(shown)
    assert lines[0].split() == ["NETNS", "PROTO", "STATE", "LOCAL", "PEER", "PROCESS"]
    assert "\x1b[1m" in shown                       # a bold header: it is a terminal
    assert max(len(line) for line in lines) <= 80
    rows = [line for line in lines[1:] if f"{VIP4}:{PORT}" in line]
    assert len(rows) == 4 and all("established" in r and "python3[" in r for r in rows)
    # the summary, on stderr (same terminal): per namespace, then the total
    from sockterm.host import probe
    assert lines[-1] == f"4 sockets in 2 namespaces of 2 searched (engine {probe.probe().auto_engine()})"
    ns_lines = [line for line in lines if line.startswith("  st-")]
    assert len(ns_lines) == 2 and all(line.endswith("2 sockets") for line in ns_lines)


def test_table_is_narrower_on_a_narrow_terminal(topo):
    doomed, spared, flt = setup(topo, clients=1)
    code, shown, _ = run_pty("match", *flt, cols=60)
    assert code == 0 and max(len(line) for line in visible(shown)) <= 60


def test_no_color(topo):
    doomed, spared, flt = setup(topo, clients=1)
    code, shown, _ = run_pty("match", *flt, env={"NO_COLOR": "1"})
    assert code == 0 and "NETNS" in shown
    assert not re.search(r"\x1b\[[0-9;]*m", shown)     # no colour, no bold (cursor moves are fine)


def test_piped_output_is_plain_tsv(topo):
    doomed, spared, flt = setup(topo)
    code, out, err = sockterm("match", *flt)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "NETNS\tPROTO\tSTATE\tLOCAL\tPEER\tPROCESS"
    assert len(lines) == 5 and all(line.count("\t") == 5 for line in lines)
    assert "\x1b" not in out and "\x1b" not in err
    assert "sockets in 2 namespaces" in err and "sockets" not in out
    code, out, err = sockterm("match", "-H", *flt)
    assert len(out.splitlines()) == 4 and not out.startswith("NETNS")


def test_stdout_piped_stderr_on_terminal(topo):
    """sockterm match | less: data plain on the pipe, messages on the terminal."""
    doomed, spared, flt = setup(topo, clients=1)
    code, shown, piped = run_pty("match", *flt, stdout_pty=False)
    assert code == 0
    assert piped.startswith("NETNS\t") and "\x1b" not in piped
    assert "2 sockets in 1 namespace" in shown and "NETNS" not in shown


def test_jsonl_streams_the_same_objects_as_json(topo):
    doomed, spared, flt = setup(topo)
    code, out, err = sockterm("match", "-o", "jsonl", *flt)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    code, out, err = sockterm("match", "-o", "json", *flt)
    doc = json.loads(out)
    assert sorted(lines, key=lambda s: s["cookie"]) == sorted(doc["sockets"], key=lambda s: s["cookie"])
    for s in lines:
        assert {"netns", "netns_name", "proto", "family", "state", "src", "sport", "dst", "dport",
                "cookie"} <= set(s)


def test_kill_asks_and_no_kills_nothing(topo):
    doomed, spared, flt = setup(topo)
    code, shown, _ = run_pty("kill", *flt, answer="n")
    assert code == 1, shown
    assert "About to kill 4 sockets in 2 namespaces" in shown
    assert len([line for line in visible(shown) if f"{VIP4}:{PORT}" in line]) == 4   # the sample
    assert "nothing killed" in shown
    assert statuses(doomed) == {0} and statuses(spared) == {0}


def test_kill_asks_and_yes_kills(topo):
    doomed, spared, flt = setup(topo)
    code, shown, _ = run_pty("kill", *flt, answer="y")
    assert code == 0, shown
    assert "Kill them? [y/N]" in shown
    assert "killed 4 of 4 matching sockets in 2 namespaces" in shown
    assert "\x1b[32mkilled" in shown                # the RESULT column, coloured
    assert statuses(doomed) == {errno.ECONNABORTED} and statuses(spared) == {0}


def test_kill_sample_is_bounded(topo):
    doomed, spared, flt = setup(topo, clients=1, per=14)
    code, shown, _ = run_pty("kill", *flt, answer="n")
    assert code == 1
    assert "About to kill 14 sockets" in shown and "... and 4 more" in shown
    assert statuses(doomed) == {0}


def test_yes_on_a_terminal_does_not_ask(topo):
    doomed, spared, flt = setup(topo, clients=1)
    code, shown, _ = run_pty("kill", "--yes", *flt)
    assert code == 0, shown
    assert "Kill them?" not in shown
    assert statuses(doomed) == {errno.ECONNABORTED}


def test_without_a_terminal_kill_needs_yes(topo):
    doomed, spared, flt = setup(topo, clients=1)
    code, out, err = sockterm("kill", *flt)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == ["sockterm: error: not on a terminal: pass --yes to kill "
                                        "without confirmation"]
    assert statuses(doomed) == {0}
