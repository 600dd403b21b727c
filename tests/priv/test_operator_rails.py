"""Safety rails: --max, --dry-run, sockterm's own sockets, the audit record."""

import errno
import json
import os
import socket
import subprocess
import sys

import pytest

import confine
from conftest import sockterm, sockterm_json
from rel_util import inside
from test_operator_terminal import setup, statuses


def test_max_refuses_and_kills_nothing(topo, syslog):
    doomed, spared, flt = setup(topo)
    path, rx = syslog              # audited: the one line is the refusal (no warning, whatever the host)
    code, out, err = sockterm("kill", "--yes", "--max", "3", "-o", "json", *flt,
                              env={"SOCKTERM_SYSLOG_SOCKET": path})
    assert code == 3
    assert err.strip() == "sockterm: error: 4 sockets match, more than --max 3: nothing killed"
    [record] = records(rx)
    assert 'error="4 sockets match, more than --max 3"' in record
    doc = json.loads(out)          # the refusal is a document too
    assert doc["sockets"] == [] and doc["summary"]["matched"] == 4
    assert doc["summary"]["killed"] == 0 and "--max 3" in doc["summary"]["refused"]
    code, out, err = sockterm("kill", "--yes", "--max", "3", "-o", "jsonl", *flt)
    [line] = out.splitlines()
    assert code == 3 and json.loads(line)["summary"]["refused"] == doc["summary"]["refused"]
    assert statuses(doomed) == {0}
    code, doc, err = sockterm_json("kill", "--yes", "--max", "4", *flt)
    assert code == 0 and doc["summary"]["killed"] == 4, err
    assert statuses(doomed) == {errno.ECONNABORTED} and statuses(spared) == {0}


def test_max_with_nothing_matching_still_reports(topo):
    doomed, spared, flt = setup(topo, clients=1)
    code, doc, err = sockterm_json("kill", "--yes", "--max", "0", *flt[:-2], "--dst", "203.0.113.9:9")
    assert code == 1 and doc["sockets"] == [] and doc["summary"]["killed"] == 0


def strip_volatile(doc):
    return sorted(json.dumps(s, sort_keys=True) for s in doc["sockets"])


def test_dry_run_is_match(topo):
    doomed, spared, flt = setup(topo)
    match = sockterm_json("match", *flt)
    dry = sockterm_json("kill", "--dry-run", *flt)        # no --yes needed, nothing asked
    assert match[0] == dry[0] == 0
    assert strip_volatile(match[1]) == strip_volatile(dry[1])
    assert dry[1]["command"] == "match" and "result" not in dry[1]["sockets"][0]
    assert statuses(doomed) == {0}
    for fmt in ("tsv", "jsonl"):
        a, b = sockterm("match", "-o", fmt, *flt), sockterm("kill", "--dry-run", "-o", fmt, *flt)
        assert a[0] == b[0] and sorted(a[1].splitlines()) == sorted(b[1].splitlines())
    nothing = ["--dst", "203.0.113.9:9"]
    assert sockterm("match", *nothing)[0] == sockterm("kill", "--dry-run", *nothing)[0] == 1


def test_never_kills_its_own_sockets(topo):
    """A socket sockterm itself holds (here: inherited) is never destroyed, even
    when the filter names it; the same connection held only by us is. The
    sockets live in a test namespace: the kill names it and nothing else."""
    ns = topo.ns("own")
    with inside(ns):
        lst = socket.create_server(("127.0.0.1", 0))
        port = lst.getsockname()[1]
        mine, inherited = (socket.create_connection(("127.0.0.1", port)),
                           socket.create_connection(("127.0.0.1", port)))
    peers = [lst.accept()[0] for _ in range(2)]
    scope = ["--netns", ns, "--dst", f"127.0.0.1:{port}", "-o", "json"]
    try:
        env = dict(os.environ)
        env.pop("SOCKTERM_BACKEND", None)
        for engine in ("bpf", "diag"):
            proc = subprocess.run([sys.executable, "-m", "sockterm", "--backend", engine, "match",
                                   *scope], capture_output=True, text=True, env=env,
                                  pass_fds=[inherited.fileno()], timeout=120)
            sports = {s["sport"] for s in json.loads(proc.stdout)["sockets"]}
            assert sports == {mine.getsockname()[1]}, (engine, proc.stderr)
        confine.check_kill(["kill", *scope])
        proc = subprocess.run([sys.executable, "-m", "sockterm", "kill", "--yes", *scope],
                              capture_output=True, text=True, env=env,
                              pass_fds=[inherited.fileno()], timeout=120)
        doc = json.loads(proc.stdout)
        assert proc.returncode == 0, proc.stderr
        assert [s["sport"] for s in doc["sockets"]] == [mine.getsockname()[1]]
        assert mine.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNABORTED
        assert inherited.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        inherited.sendall(b"still alive")
        assert peers[1].recv(64) == b"still alive" or peers[0].recv(64) == b"still alive"
    finally:
        for s in [lst, mine, inherited, *peers]:
            s.close()


@pytest.fixture
def syslog(tmp_path):
    path = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(5)
    yield path, rx
    rx.close()


def records(rx):
    out = []
    rx.settimeout(0.2)
    while True:
        try:
            out.append(rx.recv(1 << 20).decode())
        except socket.timeout:
            return out


def test_audit_record_per_kill(topo, syslog, engine):
    path, rx = syslog
    doomed, spared, flt = setup(topo)
    env = {"SOCKTERM_SYSLOG_SOCKET": path, "SUDO_USER": "alice", "SUDO_UID": "1000"}
    code, doc, err = sockterm_json("--backend", engine, "kill", "--yes", *flt, env=env)
    assert code == 0, err
    [record] = records(rx)
    assert record.startswith("<85>")                   # authpriv.notice
    assert " sockterm[" in record and "]: kill by uid=0(root)" in record
    assert "sudo_user=alice sudo_uid=1000" in record
    assert f'filter="{doc["filter"]}"' in record
    assert f"engine={engine} matched=4 killed=4 failed=0" in record
    for ns in {s["netns_name"] for s in doc["sockets"]}:
        assert f"{ns}(" in record and ":2/2/0" in record
    # match and dry runs kill nothing and leave no record
    sockterm("match", *flt, env=env)
    sockterm("kill", "--dry-run", *flt, env=env)
    assert records(rx) == []


def test_audit_record_when_nothing_matched(topo, syslog):
    path, rx = syslog
    setup(topo, clients=1)
    code, out, err = sockterm("kill", "--yes", "--dst", "203.0.113.9:9", "--netns", topo.backend,
                              env={"SOCKTERM_SYSLOG_SOCKET": path})
    assert code == 1
    [record] = records(rx)
    assert "matched=0 killed=0" in record


def test_no_syslog_socket_is_a_warning_never_a_failed_kill(topo, tmp_path):
    """A record nobody takes is one line on stderr, -v or not, naming where it
    was tried; the exit status is the kill's."""
    doomed, spared, flt = setup(topo, clients=1)
    missing = str(tmp_path / "missing")
    warning = f"sockterm: warning: audit record not written: no syslog socket at {missing}"
    env = {"SOCKTERM_SYSLOG_SOCKET": missing}
    code, out, err = sockterm("kill", "--yes", *flt, env=env)
    assert code == 0 and err.splitlines().count(warning) == 1, err
    assert [line for line in err.splitlines() if "audit" in line] == [warning]
    assert statuses(doomed) == {errno.ECONNABORTED}
    doomed, spared, flt = setup_more(topo)
    code, out, err = sockterm("-v", "kill", "--yes", *flt, env=env)
    assert code == 0 and err.splitlines().count(warning) == 1, err


def setup_more(topo):
    """More victims in the same topology, on a new port."""
    h = topo.holders[1]
    server = topo.holders[0]
    from conftest import VIP4
    lst = server.call("listen", addr=VIP4, port=9090)
    ids = [s["id"] for s in h.call("connect", dst=VIP4, port=9090, count=1)]
    server.call("accept", id=lst["id"], count=1)
    return {h: ids}, {}, ["--netns", h.netns, "--dst", f"{VIP4}:9090"]
