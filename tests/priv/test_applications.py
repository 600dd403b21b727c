"""Real applications from Debian's packages (redis-server and redis-cli, nginx
and curl; installed by scripts/test) in throwaway namespaces: a server
namespace and client namespaces. What sockterm kills (checked against ss),
what each client then says and does (README "What applications see"), and
what an operator reads on an 80-column terminal."""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import tempfile
import termios
import time

import pytest

from conftest import ENGINES, Topology, sh, sockterm
from test_operator_terminal import run_pty, visible

REDIS, HTTP = 6379, 8080
APPS = ("redis-server", "redis-cli", "nginx", "curl")
# no syslog socket there: the audit warning is the same on every host
NO_SYSLOG = "/nonexistent/sockterm-test-log"


class AppTopology(Topology):
    """Addresses of its own: other suites kill by conftest's VIP."""

    PREFIX, LINK = "sta", "sa"
    VIP4, VIP6 = "10.214.0.5", "fd2c::5"
    CLIENT4, CLIENT6 = "10.215", "fd2d"


@pytest.fixture
def apps():
    missing = [a for a in APPS if shutil.which(a) is None]
    assert not missing, f"{missing} missing: scripts/test installs them (redis-server, redis-tools, nginx, curl)"
    topo = AppTopology()
    world = World(topo)
    try:
        yield world
    finally:
        world.close()
        topo.cleanup()


def wait_for(check, what: str, timeout: float = 10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def ss_conns(ns: str, port: int) -> dict:
    """cookie -> (local, peer) of the TCP sockets ss sees in ns whose local or peer port is port."""
    out = sh("ip", "netns", "exec", ns, "ss", "-Htane").stdout
    found = {}
    for line in out.splitlines():
        words = line.split()
        local, peer = words[3], words[4]
        cookie = next((w[3:] for w in words if w.startswith("sk:")), None)
        if cookie and port in (int(local.rpartition(":")[2]), _port(peer)):
            found[int(cookie, 16)] = (local, peer)
    return found


def _port(endpoint: str) -> int:
    port = endpoint.rpartition(":")[2]
    return 0 if port == "*" else int(port)


class Client:
    """An application run in a namespace, its output on pipes."""

    def __init__(self, ns: str, *argv: str):
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def ended(self, timeout: float = 10.0) -> tuple[int, str]:
        """(exit status, standard error) once it exits."""
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.proc.args} still running after {timeout} s") from None
        return self.proc.returncode, err

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


class Interactive:
    """redis-cli at a prompt on a pseudo-terminal of 80 columns."""

    def __init__(self, ns: str, *argv: str):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdin=slave, stdout=slave,
                                     stderr=slave, env=dict(os.environ, TERM="xterm"))
        os.close(slave)
        self.master, self.buf = master, b""

    def until(self, needle: bytes, timeout: float = 10.0) -> str:
        """What the terminal showed up to and including needle."""
        end = time.monotonic() + timeout
        while needle not in self.buf:
            ready, _, _ = select.select([self.master], [], [], max(0.0, end - time.monotonic()))
            assert ready, f"{needle!r} not shown; the terminal so far: {self.buf!r}"
            try:
                self.buf += os.read(self.master, 4096)
            except OSError:          # EIO: the program exited
                assert needle in self.buf, f"{needle!r} not shown; the terminal: {self.buf!r}"
        at = self.buf.index(needle) + len(needle)
        shown, self.buf = self.buf[:at], self.buf[at:]
        return shown.decode(errors="replace")

    def type(self, line: str):
        os.write(self.master, line.encode() + b"\r")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        os.close(self.master)


class World:
    """The server namespace with redis and nginx on the VIP, client namespaces
    made on demand, every process started here stopped at the end."""

    def __init__(self, topo: AppTopology):
        self.topo = topo
        self.vip = topo.VIP4
        self.server = topo.with_backend()
        self.clients: list[str] = []
        self.procs: list = []
        self.dir = tempfile.mkdtemp(prefix="sockterm-apps-")
        self.redis = self.nginx = None

    def client(self) -> str:
        ns = self.topo.client(len(self.clients))
        self.clients.append(ns)
        return ns

    def start_redis(self):
        self.redis = self._daemon(
            "redis-server", "--bind", self.vip, "--port", str(REDIS), "--save", "",
            "--appendonly", "no", "--protected-mode", "no", "--dir", self.dir,
            "--logfile", self.path("redis.log"), "--loglevel", "verbose")
        wait_for(lambda: self._listening(REDIS), "redis to listen")

    def start_nginx(self, workers: int = 2):
        www = self.path("www")
        os.makedirs(www)
        with open(os.path.join(www, "big.bin"), "wb") as f:
            f.truncate(64 << 20)               # at 64 KiB/s: downloading for as long as a test runs
        conf = self.path("nginx.conf")
        temp = self.path("tmp")
        with open(conf, "w") as f:
            f.write(f"""
user root;
worker_processes {workers};
pid {self.path('nginx.pid')};
error_log {self.path('error.log')} info;
events {{ worker_connections 64; }}
http {{
    access_log {self.path('access.log')};
    client_body_temp_path {temp}; proxy_temp_path {temp}; fastcgi_temp_path {temp};
    uwsgi_temp_path {temp}; scgi_temp_path {temp};
    server {{ listen {self.vip}:{HTTP}; root {www}; limit_rate 64k; }}
}}
""")
        self.nginx = self._daemon("nginx", "-p", self.dir, "-c", conf, "-g", "daemon off;")
        wait_for(lambda: self._listening(HTTP), "nginx to listen")

    def _daemon(self, *argv):
        proc = subprocess.Popen(["ip", "netns", "exec", self.server, *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def _listening(self, port: int) -> bool:
        out = sh("ip", "netns", "exec", self.server, "ss", "-Htln", f"sport = :{port}").stdout
        return bool(out.strip())

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    def read(self, name: str) -> str:
        with open(self.path(name), errors="replace") as f:
            return f.read()

    def run(self, ns: str, *argv) -> Client:
        client = Client(ns, *argv)
        self.procs.append(client)
        return client

    def interactive(self, ns: str, *argv) -> Interactive:
        client = Interactive(ns, *argv)
        self.procs.append(client)
        return client

    def connected(self, ns: str, port: int, count: int = 1) -> dict:
        """Wait until ns holds count connections to the VIP's port; cookie -> (local, peer)."""
        def ready():
            found = {c: ends for c, ends in ss_conns(ns, port).items()
                     if ends[1] == f"{self.vip}:{port}"}
            return found if len(found) >= count else None
        return wait_for(ready, f"{count} connections from {ns} to :{port}")

    def netns_args(self, *names) -> list:
        return [arg for name in names for arg in ("--netns", name)]

    def close(self):
        for proc in reversed(self.procs):
            if isinstance(proc, subprocess.Popen):
                if proc.poll() is None:
                    proc.terminate()
                try:
                    proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
            else:
                proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def killed_rows(lines, vip_port: str) -> list[str]:
    return [line for line in lines if vip_port in line and "killed" in line]


def assert_whole(lines, width: int, pids=(), endpoints=()):
    """Nothing wider than the terminal, every pid and endpoint whole on a line
    (warnings are one line each, however long: the terminal wraps those)."""
    wide = [line for line in lines if len(line) > width and not line.startswith("sockterm: warning: ")]
    assert not wide, f"wider than {width} columns: {wide}"
    for pid in pids:
        assert any(re.search(rf"\[{pid}\](\s|$)", line) for line in lines), (pid, lines)
    for endpoint in endpoints:
        assert any(endpoint in line for line in lines), (endpoint, lines)
    for line in lines:
        assert not re.match(r"^\s+\d+\]", line), f"a pid broken over lines: {line!r}"


@pytest.mark.parametrize("engine", ENGINES)
def test_redis_clients_killed_from_their_own_namespaces(apps, engine):
    """The clients' ends are destroyed: each client gets ECONNABORTED. redis-cli
    exits 1 with "Error: Software caused connection abort" whether it waits on
    SUBSCRIBE, loops on PING, or sits at its prompt (it says so at the next
    command); it reconnects only after a reset or EOF. A client in a namespace
    the kill did not name keeps its connection."""
    apps.start_redis()
    c0, c1, c2, spared_ns = (apps.client() for _ in range(4))
    sub = apps.run(c0, "redis-cli", "-h", apps.vip, "SUBSCRIBE", "news")
    loop = apps.run(c1, "redis-cli", "-h", apps.vip, "-r", "-1", "-i", "0.1", "PING")
    prompt = apps.interactive(c2, "redis-cli", "-h", apps.vip)
    prompt.until(f"{apps.vip}:{REDIS}> ".encode())
    prompt.type("PING")
    prompt.until(b"PONG")
    spared = apps.run(spared_ns, "redis-cli", "-h", apps.vip, "-r", "-1", "-i", "0.1", "PING")
    doomed = {ns: apps.connected(ns, REDIS) for ns in (c0, c1, c2)}
    spared_conn = apps.connected(spared_ns, REDIS)
    listener = ss_conns(apps.server, REDIS)

    code, screen, _ = run_pty("--backend", engine, "kill", *apps.netns_args(apps.server, c0, c1, c2),
                              "--dst", f"{apps.vip}:{REDIS}", answer="y", cols=80,
                              env={"SOCKTERM_SYSLOG_SOCKET": NO_SYSLOG})
    lines = visible(screen)
    assert code == 0, screen

    # exact: the three client ends are gone, the spared one and the listener are not
    for ns, conns in doomed.items():
        assert not set(conns) & set(ss_conns(ns, REDIS)), f"{ns} still holds its connection"
    assert set(spared_conn) <= set(ss_conns(spared_ns, REDIS))
    listening = {c for c, (local, peer) in listener.items() if peer == "0.0.0.0:*"}
    assert listening and listening <= set(ss_conns(apps.server, REDIS))

    # each client's own words and exit status (README "What applications see")
    for client in (sub, loop):
        status, err = client.ended()
        assert (status, err) == (1, "Error: Software caused connection abort\n")
    prompt.type("PING")
    assert "Error: Software caused connection abort" in prompt.until(b"abort")
    assert prompt.proc.wait(timeout=10) == 1
    assert spared.proc.poll() is None, "the client in a namespace not named was cut"

    # what the operator read: the prompt and the report at 80 columns, pids whole
    pids = [sub.proc.pid, loop.proc.pid, prompt.proc.pid]
    assert f"About to kill 3 sockets in 3 namespaces of 4 searched (engine {engine}):" in lines
    ends = [local for conns in doomed.values() for local, _ in conns.values()]
    assert_whole(lines, 80, pids=pids, endpoints=ends)
    rows = killed_rows(lines, f"{apps.vip}:{REDIS}")
    assert [row.split()[0] for row in rows] == [c0, c1, c2]        # namespaces in order
    assert all(re.search(rf"redis-cli\[\d+\]\s+killed$", row) for row in rows), rows
    # the audit warning after the report, beside the summary: it cannot scroll away
    warning = f"sockterm: warning: audit record not written: no syslog socket at {NO_SYSLOG}"
    assert lines.index(warning) > lines.index(rows[-1])
    assert lines[-4:] == [*(f"  {ns}  killed 1 of 1 matching socket" for ns in (c0, c1, c2)),
                          f"killed 3 of 3 matching sockets in 3 namespaces of 4 searched (engine {engine})"]


@pytest.mark.parametrize("engine", ENGINES)
def test_redis_clients_see_a_reset_when_the_servers_ends_are_killed(apps, engine):
    """Killing the server's ends instead sends the clients a reset: a waiting
    redis-cli exits 1 with "Error: Connection reset by peer"; the one at its
    prompt says the same, shows `not connected>`, and reconnects at the next
    command. redis-server itself logs the abort of its ends (verbose)."""
    apps.start_redis()
    c0, c1 = apps.client(), apps.client()
    sub = apps.run(c0, "redis-cli", "-h", apps.vip, "SUBSCRIBE", "news")
    prompt = apps.interactive(c1, "redis-cli", "-h", apps.vip)
    prompt.until(f"{apps.vip}:{REDIS}> ".encode())
    prompt.type("PING")
    prompt.until(b"PONG")
    for ns in (c0, c1):
        apps.connected(ns, REDIS)
    code, out, err = sockterm("--backend", engine, "kill", "--netns", apps.server,
                              "--src", f"{apps.vip}:{REDIS}", "--yes", "-o", "json",
                              env={"SOCKTERM_SYSLOG_SOCKET": NO_SYSLOG})
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"]["killed"] == 2 and {s["state"] for s in doc["sockets"]} == {"established"}
    assert {p["comm"] for s in doc["sockets"] for p in s["processes"]} == {"redis-server"}
    assert sub.ended() == (1, "Error: Connection reset by peer\n")
    prompt.type("PING")
    prompt.until(b"Error: Connection reset by peer")
    prompt.until(b"not connected> ")
    prompt.type("PING")
    prompt.until(b"PONG")                      # a new connection, by itself
    assert prompt.proc.poll() is None
    assert apps.connected(c1, REDIS)
    assert apps.read("redis.log").count("Reading from client: Software caused connection abort") == 2


@pytest.mark.parametrize("engine", ENGINES)
def test_a_download_is_cut_and_curl_says_so(apps, engine):
    """curl exits 56, "Recv failure: Software caused connection abort", as soon
    as it is woken (here it waits on a rate-limited server). nginx logs the
    client's reset at `info` only, and its access log records the cut
    download as a 200 with the bytes sent."""
    apps.start_nginx()
    c0, c1, spared_ns = apps.client(), apps.client(), apps.client()
    url = f"http://{apps.vip}:{HTTP}/big.bin"
    downloads = [apps.run(ns, "curl", "-sS", "-o", "/dev/null", url) for ns in (c0, c1)]
    spared = apps.run(spared_ns, "curl", "-sS", "-o", "/dev/null", url)
    doomed = {ns: apps.connected(ns, HTTP) for ns in (c0, c1)}
    apps.connected(spared_ns, HTTP)
    code, screen, _ = run_pty("--backend", engine, "kill", *apps.netns_args(apps.server, c0, c1),
                              "--dst", f"{apps.vip}:{HTTP}", "--yes", cols=80,
                              env={"SOCKTERM_SYSLOG_SOCKET": NO_SYSLOG})
    assert code == 0, screen
    for ns, conns in doomed.items():
        assert not set(conns) & set(ss_conns(ns, HTTP))
    for download in downloads:
        status, err = download.ended()
        assert (status, err) == (56, "curl: (56) Recv failure: Software caused connection abort\n")
    assert spared.proc.poll() is None
    lines = visible(screen)
    assert_whole(lines, 80, pids=[d.proc.pid for d in downloads])
    assert len(killed_rows(lines, f"{apps.vip}:{HTTP}")) == 2
    wait_for(lambda: apps.read("error.log").count("(104: Connection reset by peer)") == 2,
             "nginx to log the resets")
    cut = [line for line in apps.read("access.log").splitlines() if '"GET /big.bin' in line]
    assert len(cut) == 2 and all(re.search(r'" 200 \d+ ', line) for line in cut), cut


def run_twice(*args, **kw):
    first, second = sockterm(*args, **kw), sockterm(*args, **kw)
    assert first == second, f"two runs differ:\n{first}\n{second}"
    assert first[0] == 0, first
    return first


@pytest.mark.parametrize("engine", ENGINES)
def test_every_output_comes_in_one_order(apps, engine):
    """Two runs over the same sockets print the same thing in the same order:
    tsv, jsonl, json, the table, the prompt and the summaries; namespaces host
    first then by name, sockets by protocol, addresses and ports."""
    apps.start_redis()
    apps.start_nginx(workers=2)
    clients = [apps.client() for _ in range(3)]
    for ns in clients:
        for _ in range(3):
            apps.run(ns, "redis-cli", "-h", apps.vip, "-r", "-1", "-i", "0.2", "PING")
        apps.run(ns, "curl", "-sS", "-o", "/dev/null", f"http://{apps.vip}:{HTTP}/big.bin")
    for ns in clients:
        apps.connected(ns, REDIS, 3)
        apps.connected(ns, HTTP)
    scope = apps.netns_args(apps.server, *clients)
    everything = ["--backend", engine, "list", *scope, "--state", "all"]

    _, tsv, err = run_twice(*everything, "-o", "tsv")
    rows = [line.split("\t") for line in tsv.splitlines()[1:]]
    names = [r[0] for r in rows]
    assert names == sorted(names) and set(names) == {apps.server, *clients}
    for name in set(names):
        mine = [r for r in rows if r[0] == name]
        assert mine == sorted(mine, key=lambda r: (r[1], _key(r[3]), _key(r[4]))), mine
    counts = {name: names.count(name) for name in names}     # the busiest first, then in order
    per_ns = sorted(counts, key=lambda name: (-counts[name], name))
    assert err.splitlines() == [f"  {name}  {counts[name]} sockets" for name in per_ns] + [
        f"{len(rows)} sockets in 4 namespaces of 4 searched (engine {engine})"]

    _, jsonl, _ = run_twice(*everything, "-o", "jsonl")
    assert [s["netns_name"] for s in map(json.loads, jsonl.splitlines())] == names
    _, out, _ = run_twice("--backend", engine, "match", *scope, "--dst", f"{apps.vip}:{REDIS}",
                          "-o", "json")
    doc = json.loads(out)
    assert [n["netns_name"] for n in doc["namespaces"]] == [apps.server, *clients]
    assert (doc["summary"]["namespaces"], doc["summary"]["namespaces_matched"]) == (4, 3)

    # on a terminal: the listeners with ss's wildcard peer, nginx's three holders whole
    lines = same_screen_twice("--backend", engine, "list", *scope, "--state", "listening", code=0)
    assert_whole(lines, 80, pids=_pids_of(apps.nginx.pid) + [apps.redis.pid],
                 endpoints=[f"{apps.vip}:{REDIS}  0.0.0.0:*", f"{apps.vip}:{HTTP}  0.0.0.0:*"])

    # the prompt, answered no: the same sample in the same order, twice
    lines = same_screen_twice("--backend", engine, "kill", *scope, "--dst", f"{apps.vip}:{REDIS}",
                              answer="n", code=1)
    assert "About to kill 9 sockets in 3 namespaces of 4 searched" in lines[0]
    sample = [line.split()[0] for line in lines if f"{apps.vip}:{REDIS}" in line]
    assert sample == sorted(sample) and len(sample) == 9


def same_screen_twice(*args, code: int, **kw) -> list:
    """What an 80-column terminal shows, the same twice (a progress line drawn
    on a slow run is erased: it is not what the terminal shows)."""
    runs = [run_pty(*args, cols=80, **kw) for _ in range(2)]
    screens = [visible(screen) for _, screen, _ in runs]
    assert screens[0] == screens[1], f"two runs differ:\n{screens[0]}\n{screens[1]}"
    assert [got for got, _, _ in runs] == [code, code], screens[0]
    return screens[0]


def _key(endpoint: str):
    """A tsv endpoint in sockterm's order: IPv4 before IPv6, then address, then port."""
    host, _, port = endpoint.rpartition(":")
    return "[" in host, ipaddress.ip_address(host.strip("[]")).packed, int(port)


def _pids_of(master: int) -> list:
    """nginx's master (the ip netns exec child execs it) and its workers."""
    kids = sh("pgrep", "-P", str(master)).stdout.split()
    return [master] + [int(k) for k in kids]
