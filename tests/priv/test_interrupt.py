"""A kill interrupted by a signal tells the truth.

Each run kills 3,000 loopback connections in a namespace of its own and gets
SIGINT or SIGTERM after a delay spread from start-up to output. What the run
says — exit status, the stdout document, the one audit record — is compared
with what the kernel shows afterwards: the holder's sockets (ECONNABORTED or
alive) and `ss`. Any difference fails.
"""

from __future__ import annotations

import errno
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

import confine
from conftest import ENGINES, sh
from rel_util import loopback_pairs

COUNT = 3000
# enough for a report several times a pipe's 64 KiB: sockterm blocks writing it
BLOCKED_COUNT = 600
PORT = 7300
# when the signal comes, as a fraction of an uninterrupted run's time: start-up ... output
FRACTIONS = (0.0, 0.05, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.2, 2.5)
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class AuditSink:
    """A datagram socket standing in for /dev/log."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="sockterm-audit-")
        self.path = os.path.join(self.dir, "log")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.setblocking(False)

    def records(self) -> list[str]:
        found = []
        while True:
            try:
                found.append(self.sock.recv(65536).decode())
            except BlockingIOError:
                return found

    def close(self):
        self.sock.close()
        os.unlink(self.path)
        os.rmdir(self.dir)


@pytest.fixture
def audit_sink():
    sink = AuditSink()
    yield sink
    sink.close()


def start(args, sink) -> subprocess.Popen:
    confine.check_kill(args)
    env = dict(os.environ, SOCKTERM_SYSLOG_SOCKET=sink.path)
    env.pop("SOCKTERM_BACKEND", None)
    return subprocess.Popen([sys.executable, "-m", "sockterm", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env)


def established_to(ns: str, port: int) -> int:
    out = sh("ip", "netns", "exec", ns, "ss", "-Htn", "state", "established",
             "dst", f"127.0.0.1:{port}").stdout
    return len(out.splitlines())


def check_truth(ns, holder, ids, cookie_of, code, out, err, records, signum, fmt):
    """Everything the run said against what the kernel shows."""
    status = holder.status(ids)
    aborted = {cookie_of[i] for i, e in status.items() if e == errno.ECONNABORTED}
    alive = {cookie_of[i] for i, e in status.items() if e == 0}
    count = len(ids)
    assert len(aborted) + len(alive) == count, f"unexpected socket states: {set(status.values())}"
    assert established_to(ns, PORT) == len(alive), "ss disagrees with the holder"
    if code == -signum or (code == 1 and err.rstrip().endswith("KeyboardInterrupt")):
        # the signal beat the interpreter to sockterm's first line (Python was
        # still starting up): its default action ended a process that had not
        # touched anything
        assert not aborted and not records and not out, (code, err)
        return "before any destroy"
    if fmt == "json":
        doc = json.loads(out)                      # a complete document, always
        reported = {s["cookie"] for s in doc["sockets"] if s["result"] == "killed"}
        summary = doc["summary"]
        assert summary["killed"] == len(reported)
        interrupted = summary["interrupted"]
    else:
        lines = [json.loads(line) for line in out.splitlines()]
        reported = {s["cookie"] for s in lines if s.get("result") == "killed"}
        interrupted = code == 128 + signum and len(reported) < count
    assert reported == aborted, (f"report says {len(reported)} killed, the kernel shows "
                                 f"{len(aborted)} (exit {code}): {err[-500:]}")
    assert len(records) == 1, f"{len(records)} audit records"
    assert re.search(rf" killed={len(aborted)} ", records[0]), records[0]
    if interrupted:
        assert code == 128 + signum, (code, err)
    if code == 0:
        assert len(aborted) == count and not interrupted
    else:
        assert code == 128 + signum, (code, err)
        if not aborted:
            return "before any destroy"
    return "interrupted" if interrupted else ("after" if len(aborted) == count else "partial")


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("signum", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_signal_matrix(topo, audit_sink, engine, signum):
    # how long this run takes here, now (a shared or slow host stretches it)
    ns, holder, ids, _ = loopback_pairs(topo, "t", PORT, count=COUNT)
    started = time.monotonic()
    proc = start(["--backend", engine, "kill", "--netns", ns, "--dst", f"127.0.0.1:{PORT}",
                  "--yes", "-o", "json"], audit_sink)
    proc.communicate(timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == 0 and len(audit_sink.records()) == 1
    holder.close()
    outcomes = []
    for i, fraction in enumerate(FRACTIONS):
        delay = fraction * took
        ns, holder, ids, _ = loopback_pairs(topo, f"i{i}", PORT, count=COUNT)
        infos = holder.call("infos", ids=ids)
        cookie_of = {i: info["cookie"] for i, info in zip(ids, infos)}
        fmt = "jsonl" if i % 3 == 2 else "json"
        proc = start(["--backend", engine, "kill", "--netns", ns, "--dst", f"127.0.0.1:{PORT}",
                      "--yes", "-o", fmt], audit_sink)
        time.sleep(delay)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
        outcomes.append(check_truth(ns, holder, ids, cookie_of, proc.returncode, out.decode(),
                                    err.decode(), audit_sink.records(), signum, fmt))
        holder.close()
    # the delays must reach both ends: a run stopped before anything died, and one that finished
    assert "before any destroy" in outcomes, (took, outcomes)
    assert {"after", "interrupted", "partial"} & set(outcomes), (took, outcomes)


@pytest.mark.kernels
@pytest.mark.bpf_kill
@pytest.mark.parametrize("engine", ENGINES)
def test_signal_while_the_document_is_written(topo, audit_sink, engine):
    """The reader is slow: sockterm blocks writing the report when the signal
    comes. The document still comes out whole, and the exit status says so."""
    ns, holder, ids, _ = loopback_pairs(topo, "w", PORT, count=BLOCKED_COUNT)
    infos = holder.call("infos", ids=ids)
    cookie_of = {i: info["cookie"] for i, info in zip(ids, infos)}
    proc = start(["--backend", engine, "kill", "--netns", ns, "--dst", f"127.0.0.1:{PORT}",
                  "--yes", "-o", "json"], audit_sink)
    ready, _, _ = select.select([proc.stdout], [], [], 600)    # a guard: TCG guests are slow
    assert ready
    first = os.read(proc.stdout.fileno(), 1024)
    time.sleep(0.2)                     # sockterm is now blocked on a full pipe
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    outcome = check_truth(ns, holder, ids, cookie_of, proc.returncode, (first + out).decode(),
                          err.decode(), audit_sink.records(), signal.SIGTERM, "json")
    assert outcome == "after" and proc.returncode == 143
    assert json.loads(first + out)["summary"]["interrupted"] is False


@pytest.mark.parametrize("engine", ENGINES)
def test_interrupting_a_paced_kill_leaves_the_rest_alive(topo, audit_sink, engine):
    ns, holder, ids, _ = loopback_pairs(topo, "p", PORT, count=COUNT)
    infos = holder.call("infos", ids=ids)
    cookie_of = {i: info["cookie"] for i, info in zip(ids, infos)}
    proc = start(["--backend", engine, "kill", "--netns", ns, "--dst", f"127.0.0.1:{PORT}",
                  "--yes", "--rate", "2000", "-o", "json"], audit_sink)
    time.sleep(1.0)                     # about half-way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    outcome = check_truth(ns, holder, ids, cookie_of, proc.returncode, out.decode(), err.decode(),
                          audit_sink.records(), signal.SIGINT, "json")
    assert outcome == "interrupted" and proc.returncode == 130
    killed = json.loads(out)["summary"]["killed"]
    assert 0 < killed < COUNT, killed


@pytest.mark.parametrize("engine", ENGINES)
def test_paced_kill_keeps_its_rate_and_reports_each_socket_once(topo, audit_sink, engine):
    ns, holder, ids, _ = loopback_pairs(topo, "r", PORT, count=2000)
    started = time.monotonic()
    proc = start(["--backend", engine, "kill", "--netns", ns, "--dst", f"127.0.0.1:{PORT}",
                  "--yes", "--rate", "500", "-o", "jsonl"], audit_sink)
    stamps = []                   # when each line reached us: the batches, as they go
    for line in proc.stdout:
        stamps.append((time.monotonic() - started, json.loads(line)))
    proc.wait(timeout=60)
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr.read()
    cookies = [doc["cookie"] for _, doc in stamps]
    assert len(cookies) == len(set(cookies)) == 2000
    assert {doc["result"] for _, doc in stamps} == {"killed"}
    assert 3.0 <= elapsed <= 5.0, elapsed
    # paced, not bunched: by the half-way mark in time, about half were out
    half = sum(1 for t, _ in stamps if t <= stamps[0][0] + 2.0)
    assert 700 <= half <= 1300, half
    assert set(holder.status(ids).values()) == {errno.ECONNABORTED}
    [record] = audit_sink.records()
    assert " killed=2000 " in record
