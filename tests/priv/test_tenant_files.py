"""What tenants control cannot hang root's sockterm or make it print host
files (issue 20). Real processes in runtime cgroups, each in a network
namespace of its own:

- docker: a process in `system.slice/docker-<id>.scope`, chrooted into a root
  the test builds, no config.v2.json (so its name would come from its
  /etc/hostname), which is a trap: a link to a host file holding a marker, a
  FIFO, a link to a FIFO, a link to /dev/zero (a real device node in that
  root), a 2 GiB sparse file, a link loop;
- rootless podman: a process in `user.slice/user-UID.slice/…/libpod-<id>.scope`
  of a user made here, whose store in the home made here is the trap: the
  same ones, and a file of root's in the user's directory.

One container per trap, plus one whose file is fine (so a name is read at
all). `list`, `match` and `kill` (--netns: the test's namespaces) each finish
within a subprocess timeout; every socket is still listed, named by the
container's short id where its file was refused, and killed; the marker
appears in no output and not in the audit record; -v says why each file was
not read.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

import confine
from conftest import Topology, sh
from node_util import Cgroups, Files, hex64, pairs

TIMEOUT = 20          # seconds: a FIFO opened for reading would block forever
STORE = ".local/share/containers/storage/overlay-containers/containers.json"
TRAPS = ("plain", "host-link", "fifo", "fifo-link", "dev-zero", "sparse", "loop")
# what -v says of each (None: nothing to say: the link resolves, inside the
# container's root, to a file that is not there; or the file was read)
DOCKER_WHY = {"fifo": "a FIFO", "fifo-link": "a FIFO", "dev-zero": "a character device",
              "loop": "a symbolic link sockterm does not follow here, or a loop"}
PODMAN_WHY = {"host-link": "a symbolic link", "fifo": "a FIFO", "fifo-link": "a symbolic link",
              "dev-zero": "a symbolic link", "sparse": "larger than",
              "loop": "a symbolic link", "foreign": "containers.json is owned by uid 0"}


def make_trap(path: str, trap: str, secret: str, content: bytes) -> None:
    """The file sockterm will look for at `path`, as a tenant would leave it."""
    d = os.path.dirname(path)
    if trap == "plain":
        with open(path, "wb") as f:
            f.write(content)
    elif trap == "foreign":          # root's file, naming the container after the marker
        with open(secret, "rb") as src, open(path, "wb") as f:
            f.write(src.read())
    elif trap == "host-link":
        os.symlink(secret, path)
    elif trap == "fifo":
        os.mkfifo(path)
    elif trap == "fifo-link":
        os.mkfifo(os.path.join(d, "pipe"))
        os.symlink("pipe", path)
    elif trap == "dev-zero":
        os.symlink("/dev/zero", path)
    elif trap == "sparse":
        with open(path, "wb") as f:
            f.write(content)
            f.truncate(2 << 30)
    elif trap == "loop":
        os.symlink(os.path.basename(path) + ".2", path)
        os.symlink(os.path.basename(path), path + ".2")


def release_fifos(paths) -> None:
    """Let any reader still blocked opening a FIFO go (a sockterm of another
    branch running beside this test): a writer opens it and closes."""
    for path in paths:
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass


class Layout:
    """One container per trap, in one runtime's layout."""

    def __init__(self, runtime: str, tmp: str):
        self.runtime, self.tmp = runtime, tmp
        self.topo = Topology()
        self.cg = Cgroups()
        self.root = os.path.join(tmp, "node")
        self.files = Files(self.root)
        self.marker = f"MARKER-{self.topo.tag}-host-secret"
        self.secret = os.path.join(tmp, "host-secret")
        self.users: list[str] = []
        self.fifos: list[str] = []
        self.containers: dict[str, dict] = {}      # trap -> {cid, ns, holder, name, file}
        self.traps = TRAPS + (("foreign",) if runtime == "podman" else ())

    def build(self) -> None:
        cid_of = {trap: hex64() for trap in self.traps}
        # the host file a link points at: a store naming every container after the marker
        with open(self.secret, "w") as f:
            f.write(self.marker + "\n" if self.runtime == "docker" else
                    json.dumps([{"id": cid, "names": [self.marker]} for cid in cid_of.values()]))
        os.makedirs(self.root)
        if self.runtime == "docker":
            self.files.docker_present()
        else:
            os.makedirs(os.path.join(self.root, "var/lib/containers/storage"))
        empty = os.path.join(self.tmp, "empty-root")
        os.makedirs(empty)
        for i, trap in enumerate(self.traps):
            cid = cid_of[trap]
            named = f"{trap}-{self.topo.tag}"
            ns = self.topo.ns(f"t{i}")
            holder = self.topo.holder(ns)
            if self.runtime == "docker":
                path = self._docker(holder, trap, named)
                self.cg.move(holder.pid, f"system.slice/docker-{cid}.scope")
            else:
                uid, path = self._podman(trap, cid, named)
                holder.call("chroot", path=empty)    # no hostname to fall back on: the short id
                self.cg.move(holder.pid, f"user.slice/user-{uid}.slice/user@{uid}.service/"
                                         f"user.slice/libpod-{cid}.scope")
            if trap in ("fifo", "fifo-link"):
                self.fifos.append(os.path.join(os.path.dirname(path), "pipe" if trap == "fifo-link"
                                               else os.path.basename(path)))
            # named from the file only where it is fine, or a hostname's bounded first line
            read = trap == "plain" or (trap == "sparse" and self.runtime == "docker")
            name = named if read else cid[:12]
            self.containers[trap] = {"cid": cid, "ns": ns, "holder": holder, "name": name,
                                     "file": path, "ino": os.stat(f"/run/netns/{ns}").st_ino}

    def _docker(self, holder, trap: str, named: str) -> str:
        """A root of its own, /etc/hostname the trap; the holder chrooted into it."""
        rootfs = os.path.join(self.tmp, f"rootfs-{trap}")
        os.makedirs(os.path.join(rootfs, "etc"))
        os.makedirs(os.path.join(rootfs, "dev"))
        os.mknod(os.path.join(rootfs, "dev/zero"), 0o666 | 0o020000, os.makedev(1, 5))
        path = os.path.join(rootfs, "etc/hostname")
        make_trap(path, trap, self.secret, f"{named}\n".encode())
        holder.call("chroot", path=rootfs)
        return path

    def _podman(self, trap: str, cid: str, named: str) -> tuple[int, str]:
        """A user of its own, whose home holds the trap as its store."""
        user = f"st{self.topo.tag}{trap.replace('-', '')[:6]}"
        home = f"/home/{user}"
        for _ in range(20):          # another helper's useradd may hold /etc/passwd's lock
            made = subprocess.run(["useradd", "-M", "-N", "-d", home, "-s", "/usr/sbin/nologin", user],
                                  capture_output=True, text=True)
            if made.returncode == 0:
                break
            time.sleep(0.2)
        assert made.returncode == 0, made.stderr
        self.users.append(user)
        uid = int(sh("id", "-u", user).stdout)
        local = os.path.join(self.root, home.lstrip("/"))
        path = os.path.join(local, STORE)
        os.makedirs(os.path.dirname(path))
        store = json.dumps([{"id": cid, "names": [named], "layer": "x"}]).encode()
        make_trap(path, trap, self.secret, store)
        for top, dirs, files in os.walk(local):
            for entry in [top] + [os.path.join(top, n) for n in dirs + files]:
                os.lchown(entry, uid, -1)
        if trap == "foreign":        # a file of root's in the user's directory (a hard link's worth)
            os.lchown(path, 0, -1)
        return uid, path

    def cleanup(self) -> None:
        release_fifos(self.fifos)
        self.cg.cleanup()
        self.topo.cleanup()
        for user in self.users:
            subprocess.run(["userdel", user], capture_output=True)


@pytest.fixture(scope="module", params=["docker", "podman"])
def layout(request, tmp_path_factory):
    made = Layout(request.param, str(tmp_path_factory.mktemp(f"tenant-{request.param}")))
    try:
        made.build()
        yield made
    finally:
        made.cleanup()


def run(layout: Layout, *args, env=None) -> tuple[int, str, str, float]:
    """sockterm with a timeout: (code, stdout, stderr, seconds)."""
    confine.check_kill(args)
    full = dict(os.environ, SOCKTERM_ROOT_PREFIX=layout.root, **(env or {}))
    full.pop("SOCKTERM_BACKEND", None)
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", "sockterm", *args], capture_output=True,
                              text=True, env=full, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        release_fifos(layout.fifos)
        pytest.fail(f"sockterm {' '.join(args)} did not finish within {TIMEOUT} s")
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


@pytest.mark.parametrize("engine", ["bpf", "diag"])
def test_tenant_files_neither_hang_nor_leak(layout, engine, tmp_path):
    port = {"bpf": 7701, "diag": 7702}[engine]
    mine, ids = {}, {}              # trap -> the cookies, the holder's ids of its connected pair
    for trap, c in layout.containers.items():
        conns, acc, _ = pairs(c["holder"], port, 1)
        mine[trap] = {i["cookie"] for i in conns + acc}
        ids[trap] = [i["id"] for i in conns + acc]
    netns = [arg for c in layout.containers.values() for arg in ("--netns", c["ns"])]
    outputs = []

    code, out, err, took = run(layout, "--backend", engine, "-v", "list", *netns, "-o", "json")
    outputs += [out, err]
    assert code == 0, err
    doc = json.loads(out)
    for trap, c in layout.containers.items():
        [ns_doc] = [n for n in doc["namespaces"] if n["netns"] == c["ino"]]
        want = {"runtime": layout.runtime, "id": c["cid"], "name": c["name"]}
        assert ns_doc["container"] == want and ns_doc["netns_name"] == c["name"], (trap, ns_doc)
        listed = {s["cookie"] for s in doc["sockets"] if s["container"] == want}
        assert mine[trap] <= listed, trap
    why = DOCKER_WHY if layout.runtime == "docker" else PODMAN_WHY
    for trap, text in why.items():
        shown_path = layout.containers[trap]["file"]
        if layout.runtime == "docker":
            shown_path = f"/proc/{layout.containers[trap]['holder'].pid}/root/etc/hostname"
        assert f"sockterm: not read: {shown_path}: {text}" in err, (trap, err)
    times = {"list": took}

    code, out, err, times["match"] = run(layout, "--backend", engine, "-v", "match", *netns, "-o", "json")
    outputs += [out, err]
    assert code == 0, err
    matched = {s["cookie"] for s in json.loads(out)["sockets"]}
    assert set().union(*mine.values()) <= matched

    log = str(tmp_path / "log")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(log)
    try:
        code, out, err, times["kill"] = run(layout, "--backend", engine, "-v", "kill", *netns,
                                            "--yes", "-o", "json", env={"SOCKTERM_SYSLOG_SOCKET": log})
        rx.settimeout(2)
        record = rx.recv(1 << 20).decode()
    finally:
        rx.close()
    outputs += [out, err, record]
    assert code == 0, err
    results = {s["cookie"]: s["result"] for s in json.loads(out)["sockets"]}
    for trap, c in layout.containers.items():
        # a loopback pair: the second end may be reset by the first's destroy first
        assert {results.get(k) for k in mine[trap]} <= {"killed", "gone"}, (trap, results)
        assert "killed" in {results.get(k) for k in mine[trap]}, trap
        assert set(c["holder"].status(ids[trap]).values()) <= {errno.ECONNABORTED, errno.ECONNRESET}, trap
        assert f"{c['name']}(" in record, (c["name"], record)

    for text in outputs:
        assert layout.marker not in text
    print(f"{layout.runtime}/{engine}: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))


class SlowFuse:
    """A FUSE file system at `path` whose server answers INIT at once and each
    LOOKUP only after `delay` seconds (ENOENT): a server that hangs, for as
    long as a read may wait, but not forever, since any process on this
    machine that looks into it (a sockterm of another branch, with no
    deadline) waits for it too, and a request the server has read is waited
    for uninterruptibly by the kernel."""

    INIT, LOOKUP, FORGET, INTERRUPT, BATCH_FORGET = 26, 1, 2, 36, 42
    # fuse_init_out: major 7, minor 31, no flags, max_write 4096, time_gran 1
    INIT_OUT = struct.pack("<IIIIHHIIHHII24x", 7, 31, 0, 0, 0, 0, 4096, 1, 0, 0, 0, 0)

    def __init__(self, path: str, delay: float):
        self.path, self.delay, self.lookups = path, delay, 0
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        opts = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0".encode()
        if self.libc.mount(b"st-slow", path.encode(), b"fuse", 0, opts) != 0:
            err = ctypes.get_errno()
            os.close(self.fd)
            pytest.fail(f"cannot mount FUSE at {path}: {os.strerror(err)}")
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                req = os.read(self.fd, 1 << 17)
            except OSError:          # ENODEV: aborted or unmounted
                return
            _, opcode, unique = struct.unpack_from("<IIQ", req)
            if opcode == self.INIT:
                self._reply(unique, 0, self.INIT_OUT)
            elif opcode == self.LOOKUP:
                self.lookups += 1
                time.sleep(self.delay)
                self._reply(unique, -errno.ENOENT)
            elif opcode not in (self.FORGET, self.INTERRUPT, self.BATCH_FORGET):
                self._reply(unique, -errno.ENOSYS)

    def _reply(self, unique: int, error: int, payload: bytes = b"") -> None:
        try:
            os.write(self.fd, struct.pack("<IiQ", 16 + len(payload), error, unique) + payload)
        except OSError:
            pass                     # the request was interrupted meanwhile

    def close(self) -> None:
        """Unmount; the server answers what is left at once and stops when the
        file system goes (once no process holds it: call this last)."""
        self.delay = 0
        self.libc.umount2(self.path.encode(), 2)      # MNT_DETACH
        self.thread.join(10)
        os.close(self.fd)


def test_a_fuse_root_that_does_not_answer_costs_a_deadline_not_a_hang(tmp_path):
    """A container whose /etc is a FUSE mount whose server does not answer
    (a privileged tenant can make one; FUSE mounts made in a user namespace,
    or by a user without allow_other, refuse root outright): sockterm gives
    the lookup of etc/hostname up after tenantfile.DEADLINE, names the
    container by its short id and says why."""
    topo, cg = Topology(), Cgroups()
    root = str(tmp_path / "node")
    Files(root).docker_present()
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True)
    fuse = SlowFuse(str(rootfs / "etc"), delay=3)
    try:
        cid = hex64()
        ns = topo.ns("fuse")
        h = topo.holder(ns)
        h.call("chroot", path=str(rootfs))
        cg.move(h.pid, f"system.slice/docker-{cid}.scope")
        pairs(h, 7703, 1)
        full = dict(os.environ, SOCKTERM_ROOT_PREFIX=root)
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "sockterm", "--backend", "diag", "-v", "list",
                               "--netns", ns, "-o", "json"], capture_output=True, text=True,
                              env=full, timeout=TIMEOUT)
        took = time.monotonic() - start
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        assert doc["namespaces"][0]["container"]["name"] == cid[:12]
        assert len(doc["sockets"]) == 3
        assert f"/proc/{h.pid}/root/etc/hostname: no answer within 1 s" in proc.stderr, proc.stderr
        assert fuse.lookups >= 1          # the lookup did reach the server
        print(f"list with a FUSE root answering after 3 s: {took:.2f} s")
    finally:
        cg.cleanup()
        topo.cleanup()
        fuse.close()
