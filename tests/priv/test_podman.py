"""A real container runtime: podman (Debian's, runc, cgroupfs driver) running
a locally built busybox rootfs: no registry, no image. Containers web and
api hold connections to a listener on the host's end of podman's bridge
(10.88.0.1); `kill --container web` must kill exactly web's, as seen from
the host's end (a reset) and by `ss` inside each container's namespace.

On this kind of VM podman needs runc (crun refuses the hybrid cgroup
layout), the cgroupfs manager, and ulimits under the host's hard limits.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import socket
import subprocess
import threading
import uuid

import pytest

from conftest import sh, sockterm

PODMAN = ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]
BRIDGE = "10.88.0.1"
IP_FREEBIND = 15
CONNECTIONS = 3


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory):
    """A busybox root: bin/busybox and the applets the containers use."""
    root = tmp_path_factory.mktemp("busybox-root")
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (root / d).mkdir()
    shutil.copy(shutil.which("busybox") or "/bin/busybox", root / "bin" / "busybox")
    for applet in ("sh", "nc", "sleep"):
        os.symlink("busybox", root / "bin" / applet)
    return str(root)


class Listener:
    """The host's end: accepts every connection on BRIDGE:port (bound before
    the bridge exists: podman creates it with the first container)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        self.sock.bind((BRIDGE, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[tuple[socket.socket, str]] = []
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            conn.setblocking(False)
            self.accepted.append((conn, peer[0]))

    def wait_for(self, n: int, timeout: float = 20.0):
        import time
        deadline = time.monotonic() + timeout
        while len(self.accepted) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.accepted) >= n, f"{len(self.accepted)} of {n} connections arrived"

    def states(self) -> dict[str, list]:
        """peer ip -> what each connection from it says: 'alive' or the errno name."""
        out: dict[str, list] = {}
        for conn, ip in self.accepted:
            state = "alive"
            if select.select([conn], [], [], 0.5)[0]:
                try:
                    state = "eof" if conn.recv(1) == b"" else "alive"
                except OSError as exc:
                    state = errno.errorcode.get(exc.errno, str(exc.errno))
            out.setdefault(ip, []).append(state)
        return out

    def close(self):
        self.stop = True
        self.thread.join()
        for conn, _ in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def containers(rootfs):
    made: list[str] = []
    listener = Listener()

    def run(name: str) -> dict:
        script = " ".join(f"(sleep 600 | nc {BRIDGE} {listener.port}) &" for _ in range(CONNECTIONS))
        proc = subprocess.run([*PODMAN, "run", "-d", "--ulimit", "nofile=1024:1024",
                               "--ulimit", "nproc=1024:1024", "--name", name, "--rootfs", rootfs,
                               "/bin/sh", "-c", script + " wait"],
                              capture_output=True, text=True, timeout=120)
        made.append(name)
        assert proc.returncode == 0, f"podman run failed: {proc.stderr.strip()}"
        [info] = json.loads(sh(*PODMAN, "inspect", name).stdout)
        return {"name": name, "id": info["Id"], "pid": info["State"]["Pid"],
                "ip": info["NetworkSettings"]["IPAddress"],
                "netns": info["NetworkSettings"]["SandboxKey"]}

    try:
        yield run, listener
    finally:
        if made:
            subprocess.run([*PODMAN, "rm", "-f", "-t", "0", *made], capture_output=True, timeout=120)
        listener.close()


def established(c: dict, port: int) -> int:
    """Connections to the host listener `ss` sees inside the container's namespace."""
    out = sh("nsenter", f"--net={c['netns']}", "ss", "-tnH", "state", "established",
             "dst", f"{BRIDGE}:{port}").stdout
    return len(out.splitlines())


@pytest.mark.parametrize("engine", ["bpf", "diag"])
def test_kill_container_kills_exactly_its_connections(containers, engine):
    run, listener = containers
    tag = uuid.uuid4().hex[:6]
    web, api = run(f"web-{tag}"), run(f"api-{tag}")
    listener.wait_for(2 * CONNECTIONS)
    assert established(web, listener.port) == established(api, listener.port) == CONNECTIONS

    # attribution: the namespace, and each socket, by the container podman made
    code, out, err = sockterm("--backend", engine, "list", "--netns", web["netns"], "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    want = {"runtime": "podman", "id": web["id"], "name": web["name"]}
    assert doc["namespaces"][0]["container"] == want and doc["namespaces"][0]["netns_name"] == web["name"]
    assert {json.dumps(s["container"]) for s in doc["sockets"]} == {json.dumps(want)}
    code, out, err = sockterm("--backend", engine, "match", "--container", web["id"][:8], "-o", "tsv", "-H")
    assert code == 0 and {line.split("\t")[0] for line in out.splitlines()} == {web["name"]}

    # the kill, confined to the two namespaces this test made
    code, out, err = sockterm("--backend", engine, "kill", "--container", web["name"],
                              "--netns", web["netns"], "--netns", api["netns"], "--yes", "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["summary"]["killed"] == CONNECTIONS and doc["summary"]["failed"] == 0, doc["summary"]
    assert {s["container"]["name"] for s in doc["sockets"]} == {web["name"]}
    assert {(s["dst"], s["dport"]) for s in doc["sockets"]} == {(BRIDGE, listener.port)}

    # from outside: the host's end of each of web's connections was reset, api's are alive
    states = listener.states()
    assert states[web["ip"]] == ["ECONNRESET"] * CONNECTIONS, states
    assert states[api["ip"]] == ["alive"] * CONNECTIONS, states
    assert established(web, listener.port) == 0
    assert established(api, listener.port) == CONNECTIONS
