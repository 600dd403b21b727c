"""kill --graceful: connections shut down through their holders' descriptors,
checked from outside: what the peer receives and when it reads EOF, the
application's errno, `ss`, the namespace's reset counter (OutRsts).
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ENGINES, VIP4, sh, sockterm
from rel_util import (FIN_PORT, SYN_PORT, close_wait, hold_still, inside, loopback_pairs,
                      time_wait, wait_for_states)
from test_interrupt import AuditSink, start
from test_operator_terminal import run_pty
from test_podman import CONNECTIONS, containers, established, rootfs  # noqa: F401 (fixtures)

PORT = 7400
PAYLOAD = 4 << 20            # 4 MiB
SO_SNDBUFFORCE = 32
NO_PTRACE = ("setpriv", "--bounding-set", "-sys_ptrace")


def graceful(engine: str, *args):
    """kill --graceful ... --yes -o json: (exit code, document, stderr)."""
    code, out, err = sockterm("--backend", engine, "kill", "--graceful", *args, "--yes", "-o", "json")
    assert out, f"no output (exit {code}): {err}"
    return code, json.loads(out), err


def out_rsts(ns: str) -> int:
    """The namespace's count of TCP resets sent (Tcp: OutRsts in /proc/net/snmp)."""
    lines = [l.split() for l in sh("ip", "netns", "exec", ns, "cat", "/proc/net/snmp").stdout
             .splitlines() if l.startswith("Tcp:")]
    return int(lines[1][lines[0].index("OutRsts")])


def ss_states(ns: str, dst: str) -> list[str]:
    out = sh("ip", "netns", "exec", ns, "ss", "-Htan", "dst", dst).stdout
    return sorted(line.split()[0] for line in out.splitlines())


def drain(sock: socket.socket, timeout: float = 20.0) -> tuple[int, str]:
    """(bytes read, how the stream ended: 'eof', an errno name, or 'timeout')."""
    sock.settimeout(timeout)
    got = 0
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            return got, "timeout"
        except OSError as exc:
            return got, errno.errorcode[exc.errno]
        if not chunk:
            return got, "eof"
        got += len(chunk)


def errno_of(fn) -> str:
    try:
        result = fn()
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return "eof" if result == b"" else f"ok {result!r}"


# -- doctor ------------------------------------------------------------------------------------

@pytest.mark.parametrize("prefix", [(), NO_PTRACE], ids=["root", "no-ptrace"])
def test_doctor_says_how_sockets_can_end_here(prefix):
    code, out, err = sockterm("doctor", "-o", "json", prefix=prefix)
    doc = json.loads(out)
    [check] = [c for c in doc["checks"] if c["name"] == "graceful close"]
    assert check["ok"] is True and doc["ends"]["graceful"] is True
    assert ("no CAP_SYS_PTRACE" in check["detail"]) == bool(prefix), check
    assert doc["ends"]["abort_netlink"] is True
    # abort through the kfunc: where auto runs the bpf engine (a kill's destroys are its)
    assert doc["ends"]["abort_kfunc"] in (True, False)
    assert doc["ends"]["abort_kfunc"] or doc["auto_engine"]["engine"] != "bpf"


# -- the transfer: what a FIN keeps and a reset loses --------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
# graceful in the kernel matrix: the way to end connections on kernels that can destroy none
@pytest.mark.parametrize("how", [pytest.param("graceful", marks=pytest.mark.kernels),
                                 pytest.param("abort", marks=pytest.mark.bpf_kill)])
def test_a_transfer_cut_mid_way(topo, engine, how):
    """A client in one namespace has written 4 MiB to a server in another,
    which has read only the first 64 KiB when the kill comes."""
    be = topo.with_backend()
    ns = topo.client(0)
    with inside(be):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)   # the rest waits
        listener.bind((VIP4, PORT))
        listener.listen()
    with inside(ns):
        client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 16 << 20)
    client.connect((VIP4, PORT))
    server, _ = listener.accept()
    client.sendall(b"x" * PAYLOAD)              # accepted whole: queued in the client's kernel
    server.settimeout(10)
    first = server.recv(65536)
    assert first and ss_states(ns, f"{VIP4}:{PORT}") == ["ESTAB"]
    resets = out_rsts(ns)

    mode = ["--graceful"] if how == "graceful" else []
    code, out, err = sockterm("--backend", engine, "kill", *mode, "--netns", ns,
                              "--dst", f"{VIP4}:{PORT}", "--yes", "-o", "json")
    assert code == 0, err
    [doc] = json.loads(out)["sockets"]
    states = ss_states(ns, f"{VIP4}:{PORT}")
    received, ending = drain(server)
    received += len(first)
    if how == "graceful":
        assert doc["result"] == "shut-down" and doc["error"] is None
        assert doc["holder"] == {"pid": os.getpid(), "fd": client.fileno()}
        # every byte, then EOF; the client's end is closing, not reset
        assert (received, ending) == (PAYLOAD, "eof")
        assert states and set(states) <= {"FIN-WAIT-1", "FIN-WAIT-2"}, states
        assert errno_of(lambda: client.send(b"y")) == "EPIPE"
        assert errno_of(lambda: client.recv(1)) == "eof"
        server.close()
        time.sleep(0.2)
        assert ss_states(ns, f"{VIP4}:{PORT}") == ["TIME-WAIT"]
        assert out_rsts(ns) == resets
    else:
        # the queue is lost: the server reads what had arrived, then the reset
        assert doc["result"] == "killed" and doc["holder"] is None
        assert received < PAYLOAD and ending == "ECONNRESET", (received, ending)
        assert states == []
        assert errno_of(lambda: client.send(b"y")) == "ECONNABORTED"
        assert out_rsts(ns) > resets
        server.close()
    client.close()
    listener.close()


# -- who holds it ------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_a_socket_shared_by_fork_and_dup_is_shut_down_once(topo, engine):
    be = topo.with_backend()
    ns = topo.client(0)
    server = topo.holder(be)
    lst = server.call("listen", addr=VIP4, port=PORT)
    h = topo.holder(ns)
    [conn] = h.call("connect", dst=VIP4, port=PORT)
    [peer] = server.call("accept", id=lst["id"])
    h.call("dup", id=conn["id"])
    child = h.call("fork")
    code, doc, err = graceful(engine, "--netns", ns, "--dst", f"{VIP4}:{PORT}")
    assert code == 0, err
    [sock] = doc["sockets"]
    assert {p["pid"] for p in sock["processes"]} == {h.pid, child}
    assert sock["result"] == "shut-down" and sock["holder"]["pid"] in (h.pid, child)
    assert doc["summary"]["shut_down"] == doc["summary"]["matched"] == 1
    assert server.status([peer["id"]]) == {peer["id"]: -1}          # EOF at the peer
    assert h.status([conn["id"]]) == {conn["id"]: -1}               # EOF in the application
    h.call("reap", pid=child)


def test_the_one_pass_names_each_descriptor(topo):
    """The bpf engine's one pass reads each holder's descriptor number with
    the socket: a graceful kill duplicates exactly that descriptor, and reads
    no /proc/PID/fd (the cost that grew with what a process holds)."""
    be = topo.with_backend()
    ns = topo.client(0)
    server = topo.holder(be)
    lst = server.call("listen", addr=VIP4, port=PORT)
    h = topo.holder(ns)
    h.call("connect", dst=VIP4, port=PORT, count=5)
    server.call("accept", id=lst["id"], count=5)
    code, out, err = sockterm("-v", "--backend", "bpf", "kill", "--graceful", "--netns", ns,
                              "--dst", f"{VIP4}:{PORT}", "--yes", "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    [nsr] = doc["namespaces"]
    assert not nsr["walked"], nsr                       # the one pass found them whole
    socks = doc["sockets"]
    assert len(socks) == 5 and {s["result"] for s in socks} == {"shut-down"}
    for s in socks:          # the descriptor named held that very socket (checked from /proc)
        assert s["holder"]["pid"] == h.pid
        assert os.readlink(f"/proc/{h.pid}/fd/{s['holder']['fd']}") == f"socket:[{s['inode']}]"
    assert "reading /proc/PID/fd (0 times)" in err, err


@pytest.mark.parametrize("engine", ENGINES)
def test_sockets_no_process_holds_are_left_unless_asked(topo, engine):
    """An orphan held in FIN-WAIT-1 (nft drops its FIN), two time-wait sockets
    and a held CLOSE-WAIT connection: only the held one is shut down;
    --abort-rest aborts the rest; --max counts them all."""
    ns = topo.ns("unheld")
    hold_still(ns)
    h = topo.holder(ns)
    lst = h.call("listen", addr="127.0.0.1", port=FIN_PORT)
    h.call("connect", dst="127.0.0.1", port=FIN_PORT)
    [orphan] = h.call("accept", id=lst["id"])
    h.call("close", ids=[orphan["id"]])           # its FIN dropped: an orphan in FIN-WAIT-1
    time_wait(h, port=7001, count=2)
    close_wait(h, port=7002, count=1)
    unheld = ["--state", "fin-wait-1", "--state", "time-wait"]
    before = ss_states(ns, "127.0.0.1")
    assert before.count("FIN-WAIT-1") == 1 and before.count("TIME-WAIT") == 2

    code, out, err = sockterm("--backend", engine, "kill", "--graceful", "--netns", ns, *unheld,
                              "--state", "close-wait", "--yes", "--max", "2", "-o", "json")
    assert code == 3 and json.loads(out)["summary"]["refused"].startswith("4 sockets match")
    assert ss_states(ns, "127.0.0.1") == before

    code, doc, err = graceful(engine, "--netns", ns, *unheld)       # nothing ended: exit 1
    assert code == 1 and doc["summary"]["not_held"] == 3 and doc["summary"]["failed"] == 0, err

    code, doc, err = graceful(engine, "--netns", ns, *unheld, "--state", "close-wait")
    assert code == 0, err
    results = sorted((s["state"], s["result"]) for s in doc["sockets"])
    assert results == [("close-wait", "shut-down"), ("fin-wait-1", "not-held"),
                       ("time-wait", "not-held"), ("time-wait", "not-held")], results
    assert (doc["summary"]["not_held"], doc["summary"]["shut_down"]) == (3, 1)
    assert "--abort-rest aborts them" in err
    after = ss_states(ns, "127.0.0.1")
    assert after.count("FIN-WAIT-1") == 1 and after.count("TIME-WAIT") >= 2

    # (the close-wait connection's shutdown added a time-wait socket: its peer's)
    code, doc, err = graceful(engine, "--netns", ns, "--abort-rest", *unheld)
    assert code == 0, err
    assert {s["result"] for s in doc["sockets"]} == {"killed"} and len(doc["sockets"]) >= 3
    assert doc["summary"]["killed"] == len(doc["sockets"]) and doc["summary"]["not_held"] == 0
    after = ss_states(ns, "127.0.0.1")
    assert "FIN-WAIT-1" not in after and "TIME-WAIT" not in after, after


def loopback_pair(h, port: int):
    """A listener and one connection over the holder's loopback: (client, accepted)."""
    lst = h.call("listen", addr="127.0.0.1", port=port)
    [conn] = h.call("connect", dst="127.0.0.1", port=port)
    [acc] = h.call("accept", id=lst["id"])
    return conn, acc


@pytest.mark.parametrize("engine", ENGINES)
def test_a_non_dumpable_process_as_root(topo, engine):
    """Root has CAP_SYS_PTRACE: PR_SET_DUMPABLE 0 does not stop pidfd_getfd."""
    ns = topo.ns("nodump")
    h = topo.holder(ns)
    conn, acc = loopback_pair(h, PORT)
    assert h.call("dumpable", value=0) == 0
    code, doc, err = graceful(engine, "--netns", ns, "--dst", f"127.0.0.1:{PORT}")
    assert code == 0, err
    [sock] = doc["sockets"]
    assert sock["result"] == "shut-down" and sock["holder"]["pid"] == h.pid
    assert h.status([conn["id"], acc["id"]]) == {conn["id"]: -1, acc["id"]: -1}


@pytest.mark.parametrize("engine", ENGINES)
def test_without_cap_sys_ptrace(topo, engine):
    """sockterm without CAP_SYS_PTRACE, at the prompt: a process of its uid
    holding no capability is shut down through; the same kind of process made
    non-dumpable while the operator is asked refuses (no-permission, exit 3);
    a process with every capability is more privileged than sockterm: the
    kernel refuses it too, and /proc does not even say what it holds."""
    ns = topo.ns("noptrace")
    plain, refusing, mighty = topo.holder(ns), topo.holder(ns), topo.holder(ns)
    for h in (plain, refusing):
        assert h.call("drop_caps") == "0000000000000000"
    lst = plain.call("listen", addr="127.0.0.1", port=PORT)
    conns = {}
    for h in (plain, refusing, mighty):
        [conns[h.pid]] = h.call("connect", dst="127.0.0.1", port=PORT)
    plain.call("accept", id=lst["id"], count=3)

    cookie = {h.pid: h.call("infos", ids=[conns[h.pid]["id"]])[0]["cookie"]
              for h in (plain, refusing, mighty)}
    code, shown, piped = run_pty("--backend", engine, "kill", "--graceful", "--netns", ns,
                                 "--dst", f"127.0.0.1:{PORT}", "-o", "json", answer="y",
                                 stdout_pty=False, prefix=NO_PTRACE,
                                 before_answer=lambda: refusing.call("dumpable", value=0))
    assert "Shut them down? [y/N]" in shown and "CAP_SYS_PTRACE" in shown
    result = {s["cookie"]: s["result"] for s in json.loads(piped)["sockets"]}
    assert result[cookie[plain.pid]] == "shut-down"
    assert result[cookie[refusing.pid]] == "no-permission"
    # the kernel's own pass (bpf) sees every holder; /proc hides a more privileged one's
    assert result[cookie[mighty.pid]] == ("no-permission" if engine == "bpf" else "not-held")
    assert code == 3
    status = {h.pid: h.status([conns[h.pid]["id"]])[conns[h.pid]["id"]]
              for h in (plain, refusing, mighty)}
    assert status == {plain.pid: -1, refusing.pid: 0, mighty.pid: 0}


@pytest.mark.parametrize("engine", ENGINES)
def test_holders_that_let_go_at_the_prompt(topo, engine):
    """While the operator is asked, one holder exits (its socket goes with it:
    gone), another closes its descriptor but a child it forked still holds
    the socket (shut down through the child)."""
    ns = topo.ns("letgo")
    server, leaving, forking = topo.holder(ns), topo.holder(ns), topo.holder(ns)
    lst = server.call("listen", addr="127.0.0.1", port=PORT)
    [left] = leaving.call("connect", dst="127.0.0.1", port=PORT)
    [kept] = forking.call("connect", dst="127.0.0.1", port=PORT)
    child = forking.call("fork")
    peers = {p["peer"][1]: p["id"] for p in server.call("accept", id=lst["id"], count=2)}
    cookies = {name: h.call("infos", ids=[c["id"]])[0]["cookie"]
               for name, h, c in (("left", leaving, left), ("kept", forking, kept))}

    def let_go():
        leaving.close()
        forking.call("close", ids=[kept["id"]])
    code, shown, piped = run_pty("--backend", engine, "kill", "--graceful", "--netns", ns,
                                 "--dst", f"127.0.0.1:{PORT}", "-o", "json", answer="y",
                                 stdout_pty=False, before_answer=let_go)
    by_cookie = {s["cookie"]: s for s in json.loads(piped)["sockets"]}
    assert by_cookie[cookies["left"]]["result"] == "gone"
    assert by_cookie[cookies["kept"]]["result"] == "shut-down"
    assert by_cookie[cookies["kept"]]["holder"]["pid"] == child
    assert code == 0, shown
    assert server.status([peers[kept["local"][1]]]) == {peers[kept["local"][1]]: -1}
    forking.call("reap", pid=child)


# -- what the application sees -------------------------------------------------------------------

APP = r"""
import errno, json, select, signal, socket, sys
signal.signal(signal.SIGPIPE, signal.SIG_DFL)        # as a C program that does not ignore it
role, port = sys.argv[1], int(sys.argv[2])
def say(**kw):
    print(json.dumps(kw), flush=True)
def attempt(fn):
    try:
        r = fn()
    except OSError as exc:
        return errno.errorcode[exc.errno]
    return len(r[0]) if isinstance(r, tuple) else r if isinstance(r, int) else len(r)
if role == "listener":
    s = socket.socket(); s.bind(("127.0.0.1", port)); s.listen()
    say(port=port)
    say(accept=attempt(lambda: s.accept()[0].fileno()))
elif role == "connector":               # in SYN-SENT: nft drops the SYN-ACKs it waits for
    s = socket.socket()
    say(port=0)
    say(connect=attempt(lambda: s.connect(("127.0.0.1", port)) or 0))
elif role == "udp":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", port))
    say(port=port)
    say(recv=attempt(lambda: s.recvfrom(100)))
    say(send=attempt(lambda: s.sendto(b"x", ("127.0.0.1", 9))))
else:
    s = socket.create_connection(("127.0.0.1", port))
    say(port=s.getsockname()[1])
    if role == "reader":                     # blocked in read when the shutdown comes
        say(recv=attempt(lambda: s.recv(100)))
        p = select.poll(); p.register(s, select.POLLIN | select.POLLRDHUP)
        say(poll=sum(mask for _, mask in p.poll(0)))
    else:                                    # idle until told, then writes
        sys.stdin.readline()
    say(send=attempt(lambda: s.send(b"x")))
"""
POLL_EOF = select.POLLIN | select.POLLRDHUP | select.POLLHUP


class App:
    """A small application in a namespace, its SIGPIPE at the default action."""

    def __init__(self, ns: str, role: str, port: int):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", APP, role,
                                      str(port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.port = json.loads(self.proc.stdout.readline())["port"]

    def line(self) -> dict:
        """The next thing it said (waits for it)."""
        return json.loads(self.proc.stdout.readline())

    def seen(self, stdin: str = "") -> tuple[dict, str]:
        """What it said, and how it ended (exit, or the signal that killed it)."""
        out, _ = self.proc.communicate(stdin, timeout=20)
        said = {}
        for line in out.splitlines():
            said.update(json.loads(line))
        code = self.proc.returncode
        return said, ("exit" if code >= 0 else signal.Signals(-code).name)


@pytest.mark.parametrize("half_close", [False, True], ids=["SHUT_RDWR", "SHUT_WR"])
def test_what_the_application_sees(topo, half_close):
    """What core/graceful.py's docstring says each kind of socket and
    application sees, pinned (the engine does not matter here)."""
    ns = topo.ns("app")
    hold_still(ns)
    server = topo.holder(ns)
    lst = server.call("listen", addr="127.0.0.1", port=PORT)
    server.call("listen", addr="127.0.0.1", port=SYN_PORT)
    reader, writer = App(ns, "reader", PORT), App(ns, "writer", PORT)
    listener, udp = App(ns, "listener", PORT + 1), App(ns, "udp", PORT + 2)
    connector = App(ns, "connector", SYN_PORT)
    peer = {p["peer"][1]: p["id"] for p in server.call("accept", id=lst["id"], count=2)}
    apps = (reader, writer, listener, udp, connector)
    pids = [arg for app in apps for arg in ("--pid", str(app.proc.pid))]
    wait_for_states([ns], {2: "SYN-SENT"})
    code, doc, err = graceful("diag", "--netns", ns, "--state", "all", *pids,
                              *(["--half-close"] if half_close else []))
    assert code == 0, err
    assert [s["result"] for s in doc["sockets"]] == ["shut-down"] * len(apps)
    assert server.status(list(peer.values())) == {i: -1 for i in peer.values()}   # FIN: EOF
    # shut down both ways, the reader wakes at once: what it saw then is read
    # before the peer's data comes (which the kernel answers with a reset; a
    # reader scheduled late on a busy host would see that instead)
    early = {} if half_close else {**reader.line(), **reader.line()}
    server.call("send", id=peer[reader.port], data="answer")     # after the FIN
    said, end = reader.seen()
    said = {**early, **said}
    if half_close:         # the peer's data still arrives; nothing tells the reader of the end
        assert said["recv"] == len("answer") and said["poll"] == 0
    else:                  # EOF at once, as when the peer closes
        assert said["recv"] == 0 and said["poll"] == POLL_EOF
    # either way the next write fails with EPIPE: SIGPIPE ends an application keeping its default
    assert "send" not in said and end == "SIGPIPE"
    said, end = writer.seen("go\n")
    assert "send" not in said and end == "SIGPIPE"
    # a listener is shut down both ways whatever was asked: accept fails, connections are refused
    said, end = listener.seen()
    assert said == {"accept": "EINVAL"} and end == "exit"
    with inside(ns):
        knock = socket.socket()
        dgram = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    assert knock.connect_ex(("127.0.0.1", PORT + 1)) == errno.ECONNREFUSED
    if half_close:          # UDP: reading goes on
        dgram.sendto(b"hello", ("127.0.0.1", PORT + 2))
    said, end = udp.seen()
    assert said == {"recv": 5 if half_close else 0, "send": "EPIPE"} and end == "exit"
    # a connection still being set up has nothing to drain: its connect fails
    said, end = connector.seen()
    assert said == {"connect": "ECONNRESET"} and end == "exit"
    knock.close()
    dgram.close()


# -- containers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_a_podman_container(containers, engine):
    """Its processes live in their own PID namespace: sockterm takes their
    descriptors by host pid. The host's end of each of web's connections
    reads EOF (not a reset); api's are alive."""
    import uuid
    run, listener = containers
    tag = uuid.uuid4().hex[:6]
    web, api = run(f"web-{tag}"), run(f"api-{tag}")
    listener.wait_for(2 * CONNECTIONS)
    # the holders: nc processes, in the container's PID namespace, named here by host pid
    own_pidns = os.readlink("/proc/self/ns/pid")
    in_container = {pid for pid in map(int, filter(str.isdigit, os.listdir("/proc")))
                    if _pidns(pid) == _pidns(web["pid"]) != own_pidns}
    code, doc, err = graceful(engine, "--container", web["name"], "--netns", web["netns"],
                              "--netns", api["netns"])
    assert code == 0, err
    assert doc["summary"]["shut_down"] == CONNECTIONS and doc["summary"]["failed"] == 0
    assert {s["container"]["name"] for s in doc["sockets"]} == {web["name"]}
    assert {s["holder"]["pid"] for s in doc["sockets"]} <= in_container
    states = listener.states()
    assert states[web["ip"]] == ["eof"] * CONNECTIONS, states
    assert states[api["ip"]] == ["alive"] * CONNECTIONS, states
    assert established(api, listener.port) == CONNECTIONS


def _pidns(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return ""


# -- interruption ------------------------------------------------------------------------------------

COUNT = 1500
FRACTIONS = (0.0, 0.35, 0.7, 1.5)


@pytest.fixture
def audit_sink():
    sink = AuditSink()
    yield sink
    sink.close()


def check_graceful_truth(ns, holder, ids, cookie_of, code, out, err, records, signum):
    """The run's word against the holder's sockets (EOF: shut down; 0: alive) and ss."""
    status = holder.status(ids)
    shut = {cookie_of[i] for i, e in status.items() if e == -1}
    alive = {cookie_of[i] for i, e in status.items() if e == 0}
    assert len(shut) + len(alive) == COUNT, f"unexpected socket states: {set(status.values())}"
    established = sh("ip", "netns", "exec", ns, "ss", "-Htn", "state", "established",
                     "dst", f"127.0.0.1:{PORT}").stdout
    assert len(established.splitlines()) == len(alive), "ss disagrees with the holder"
    if code == -signum or (code == 1 and err.rstrip().endswith("KeyboardInterrupt")):
        assert not shut and not records and not out, (code, err)
        return "before any shutdown"
    if out.startswith("{\n"):             # -o json: one document
        doc = json.loads(out)
        reported = {s["cookie"] for s in doc["sockets"] if s["result"] == "shut-down"}
        assert doc["summary"]["shut_down"] == len(reported)
        interrupted = doc["summary"]["interrupted"]
    else:                                  # -o jsonl: a line a socket
        reported = {json.loads(line)["cookie"] for line in out.splitlines()}
        interrupted = code == 128 + signum and len(reported) < COUNT
    assert reported == shut, (f"report says {len(reported)} shut down, the holder sees "
                              f"{len(shut)} (exit {code}): {err[-500:]}")
    assert len(records) == 1 and " mode=graceful " in records[0], records
    assert f" shut_down={len(shut)} " in records[0], records[0]
    if code == 0:
        assert len(shut) == COUNT and not interrupted
        return "after"
    assert code == 128 + signum, (code, err)
    if interrupted:
        return "interrupted" if shut else "before any shutdown"
    return "after"


@pytest.mark.parametrize("engine", ENGINES)
def test_interrupted_graceful_kill_tells_the_truth(topo, audit_sink, engine):
    ns, holder, ids, _ = loopback_pairs(topo, "t", PORT, count=COUNT)
    started = time.monotonic()
    proc = start(["--backend", engine, "kill", "--graceful", "--netns", ns, "--dst",
                  f"127.0.0.1:{PORT}", "--yes", "-o", "json"], audit_sink)
    _, err = proc.communicate(timeout=120)
    took = time.monotonic() - started
    assert proc.returncode == 0, err.decode()
    assert len(audit_sink.records()) == 1
    holder.close()
    outcomes = []
    for i, fraction in enumerate(FRACTIONS):
        signum = (signal.SIGINT, signal.SIGTERM)[i % 2]
        ns, holder, ids, _ = loopback_pairs(topo, f"i{i}", PORT, count=COUNT)
        cookie_of = {i: info["cookie"] for i, info in zip(ids, holder.call("infos", ids=ids))}
        proc = start(["--backend", engine, "kill", "--graceful", "--netns", ns, "--dst",
                      f"127.0.0.1:{PORT}", "--yes", "-o", "json"], audit_sink)
        time.sleep(fraction * took)
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=120)
        outcomes.append(check_graceful_truth(ns, holder, ids, cookie_of, proc.returncode,
                                             out.decode(), err.decode(), audit_sink.records(),
                                             signum))
        holder.close()
    assert "before any shutdown" in outcomes and "after" in outcomes, (took, outcomes)


@pytest.mark.parametrize("engine", ENGINES)
def test_interrupting_a_paced_graceful_kill(topo, audit_sink, engine):
    ns, holder, ids, _ = loopback_pairs(topo, "p", PORT, count=COUNT)
    cookie_of = {i: info["cookie"] for i, info in zip(ids, holder.call("infos", ids=ids))}
    proc = start(["--backend", engine, "kill", "--graceful", "--netns", ns, "--dst",
                  f"127.0.0.1:{PORT}", "--yes", "--rate", "2000", "-o", "jsonl"], audit_sink)
    first = os.read(proc.stdout.fileno(), 1024)   # the first paced batch is out: the signal comes
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    outcome = check_graceful_truth(ns, holder, ids, cookie_of, proc.returncode,
                                   (first + out).decode(), err.decode(), audit_sink.records(),
                                   signal.SIGINT)
    assert outcome == "interrupted" and proc.returncode == 130
    assert 0 < len((first + out).splitlines()) < COUNT
