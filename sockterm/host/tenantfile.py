"""Reading files whose path or content someone less privileged than sockterm
controls: a container's tenant (its root, through /proc/PID/root), a user (a
rootless podman store in their home).

sockterm runs as root, and such a file is a trap as often as a file: a
symbolic link to /etc/shadow (an absolute link under /proc/PID/root resolves
against the reader's root, not the container's), a FIFO (open() blocks
forever), a device (open() alone can act: a watchdog is armed by it, and a
container with CAP_MKNOD can make one), /dev/zero or a huge sparse file (a
read without end), a FUSE mount whose server never answers. So here:

- a container's root is resolved inside that root: openat2(RESOLVE_IN_ROOT |
  RESOLVE_NO_MAGICLINKS), where an absolute link or `..` stays in it; where
  openat2 is missing (Linux < 5.6, or a seccomp filter refusing it) no symbolic
  link is followed at all (O_NOFOLLOW at every component);
- a user's file is reached from their home without following any link or
  crossing any mount (RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV; O_NOFOLLOW where
  openat2 is missing), and every directory on the way, and the file, must be
  owned by that user. Whatever the path, what is read is then a file the user
  owns: text they could have written themselves. (The other way, reading with
  the user's fs identity through setfsuid in a short-lived thread, still
  reads any file the user may read, host files included, keeps root's
  supplementary groups, and costs a thread per file; ownership checks change
  no identity and are stricter.)
- the path is opened with O_PATH first, and fstat must say a regular file
  before the file is opened for reading (through /proc/self/fd: the same
  inode, no stat-then-open race), with O_NONBLOCK | O_CLOEXEC | O_NOCTTY: a
  FIFO or device is never opened;
- at most `limit` bytes are read; a file that must be read whole and is
  larger is refused;
- reads a tenant can stall (a FUSE server that does not answer, a hung
  network mount) run in a helper thread the caller waits DEADLINE seconds
  for; one that does not answer is left behind and, once STALL_BUDGET
  seconds were lost, no tenant file is read for the rest of the run. Where
  the kernel waits uninterruptibly (a FUSE request its server has read and
  keeps), the run is done but its exit waits for the answer: a trap only
  root or a privileged container can set, since a FUSE mount made in a user
  namespace, or by a user without allow_other, refuses root (EACCES)
  without asking its server.

A file refused raises Refused (an OSError) saying why in a few words, which
the caller shows under -v; an absent one raises FileNotFoundError. Either
way the caller treats the file as absent: no name from it.
"""

# Every file sockterm opens: who controls its path (P) and its content (C),
# and how it is opened. "tenant": whoever runs in a container; "user": a local
# account; "kernel": procfs, sysfs, nsfs, cgroupfs (no links, FIFOs or devices
# a tenant can plant there, though names in them may be a tenant's).
#
# /proc/PID/root/etc/hostname (Names.hostname: a name of last resort)
#     P tenant (any link, FIFO, device or mount in its root); C tenant.
#     read_in_root: openat2 inside that root, regular files only, first
#     NAME_LIMIT bytes, in the helper thread (DEADLINE).
# ~USER/.local/share/containers/storage/overlay-containers/containers.json
#   (rootless podman; Names.podman; USER from the cgroup's user-UID.slice)
#     P user below the home (the home itself: the passwd database, root's);
#     C user. read_owned: no link followed, no mount crossed, the home, every
#     directory and the file owned by USER, regular, whole up to STORE_LIMIT,
#     in the helper thread.
# /var/lib/containers/storage/overlay-containers/containers.json (podman, root)
#     P root; C root's podman (names its callers chose). read_file: root's links
#     followed, regular files only, whole up to STORE_LIMIT.
# /var/lib/docker/containers/ID/config.v2.json
#     P dockerd; C dockerd (Name: a docker API caller's). read_file, CONFIG_LIMIT.
# /var/log/pods, /var/log/containers (listed, nothing in them opened)
#     P kubelet; entry names: the kubelet's, from names the API server checked.
# marker directories of each runtime (runtimes.MARKERS), docker's ID
#   directories: P root; os.path.exists / isdir only.
# SOCKTERM_ROOT_PREFIX: the runtime paths above under another directory (tests).
# /proc/PID/cgroup
#     P kernel; C cgroup names: a user's or a container's own below a
#     delegated subtree (any bytes). open(), bytes decoded surrogateescape.
# /proc/PID/comm
#     P kernel; C the process (any 15 bytes). open(), surrogateescape.
# /proc/PID/fd/* (readlink), /proc/PID/ns/net, /proc/thread-self/ns/net
#     kernel: listdir, readlink, stat; ns files opened for setns.
# /proc/PID/net/{sockstat,sockstat6,snmp}, /proc/thread-self/net/...,
# /proc/self/{status,uid_map,loginuid}, /proc/2/stat, /proc/sys/...,
# /sys/kernel/btf/vmlinux, /sys/kernel/security/lockdown
#     kernel: open().
# /proc/self/mountinfo
#     kernel; C mount points: paths whoever mounted chose (any bytes, octal
#     escaped). open(), surrogateescape.
# /run/netns/NAME, nsfs bind mounts found in mountinfo
#     P root (ip netns, runtimes). stat(); opened O_RDONLY | O_NONBLOCK for
#     setns, the inode checked against the one found.
# --netns PATH
#     P the operator. stat() must say a regular file, then O_NONBLOCK, and
#     fstat must say nsfs (a FIFO named by mistake cannot block).
# the cgroup v2 tree (--cgroup, --container, completion)
#     P kernel, names below a delegated subtree: its user's. os.walk, stat,
#     scandir.
# sockterm/data/*.bpf.o, libbpf (pylibbpf's .so, or the system's)
#     P and C whoever installed sockterm (root). open(), ctypes.CDLL.
# /dev/log or SOCKTERM_SYSLOG_SOCKET: P root or the operator's environment; a
#     datagram socket, connected to, never read. /dev/null: O_WRONLY.

from __future__ import annotations

import errno
import os
import queue
import stat
import struct
import threading
import time

# kept in step with <linux/openat2.h>
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10
SYS_OPENAT2 = 437          # one number on every architecture (added in 5.6)

NAME_LIMIT = 256                   # a hostname is 64 bytes at most
CONFIG_LIMIT = 4 << 20             # a docker config.v2.json: ~6 KB typically
STORE_LIMIT = 32 << 20             # a podman store: ~1 KB a container
DEADLINE = 1.0                     # seconds one tenant read may take
STALL_BUDGET = 3.0                 # seconds lost to stalled reads before giving up on them

_PATH = os.O_PATH | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


class Refused(OSError):
    """A file that is there and is not read: `why` says what it is."""

    def __init__(self, why: str):
        super().__init__(0, why)
        self.why = why

    def __str__(self) -> str:
        return self.why


_OPEN_HOW = struct.Struct("=QQQ")      # struct open_how: flags, mode, resolve


class _Openat2:
    """openat2(2) through syscall(2): Python has no binding for it."""

    def __init__(self):
        self.available: bool | None = None        # None: not tried yet
        self._syscall = None

    def __call__(self, dirfd: int, path: str, flags: int, resolve: int) -> int:
        """An fd, or -1 when openat2 is missing here (then, every later call too)."""
        if self.available is False:
            return -1
        # ctypes here, not at import: most runs read no tenant's file (~2 ms)
        import ctypes
        if self._syscall is None:
            fn = ctypes.CDLL(None, use_errno=True).syscall
            fn.restype = ctypes.c_long
            self._syscall = fn
        how = _OPEN_HOW.pack(flags, 0, resolve)
        for _ in range(3):
            fd = self._syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd),
                               ctypes.c_char_p(os.fsencode(path)), ctypes.c_char_p(how),
                               ctypes.c_size_t(len(how)))
            if fd >= 0:
                self.available = True
                return fd
            err = ctypes.get_errno()
            if err == errno.EAGAIN:      # a rename or mount raced the resolution: again
                continue
            if err in (errno.ENOSYS, errno.EPERM) and not self.available:
                self.available = False   # no openat2, or a seccomp filter refusing it
                return -1
            raise OSError(err, os.strerror(err), path)
        raise Refused("changed while being opened (renames or mounts racing)")


openat2 = _Openat2()


def _refusal(exc: OSError) -> OSError:
    """The errors a trap gives, in words; anything else as it is."""
    if exc.errno == errno.ELOOP:
        return Refused("a symbolic link sockterm does not follow here, or a loop")
    if exc.errno == errno.EXDEV:
        return Refused("behind a mount point (not followed here)")
    if exc.errno == errno.ENOTDIR:
        return Refused("a path component is not a directory (or is a symbolic link)")
    return exc


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def _step(dirfd: int, name: str, resolve: int, directory: bool) -> int:
    """One component under dirfd, as an O_PATH fd, following no link."""
    flags = _PATH | os.O_NOFOLLOW | (os.O_DIRECTORY if directory else 0)
    fd = openat2(dirfd, name, flags, resolve)
    if fd < 0:
        fd = os.open(name, flags, dir_fd=dirfd)
    return fd


def _components(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p and p != "."]
    if ".." in parts:
        raise Refused("a path with '..'")
    return parts


def _walk(dirfd: int, path: str, resolve: int, check=None) -> int:
    """O_PATH fd of `path` under dirfd, component by component, no link
    followed; check(fd, st, name) is called on each (directories included)."""
    parts = _components(path)
    fd = os.dup(dirfd)
    try:
        for i, name in enumerate(parts):
            last = i == len(parts) - 1
            nxt = _step(fd, name, resolve, directory=not last)
            os.close(fd)
            fd = nxt
            if check is not None:
                check(fd, os.fstat(fd), name)
        return fd
    except BaseException:
        os.close(fd)
        raise


def _read(pathfd: int, limit: int, whole: bool) -> bytes:
    """Read the regular file an O_PATH fd names: at most `limit` bytes (with
    `whole`, refused when larger)."""
    st = os.fstat(pathfd)
    if not stat.S_ISREG(st.st_mode):
        raise Refused(_kind(st.st_mode))
    if whole and st.st_size > limit:
        raise Refused(f"larger than {limit} bytes ({st.st_size})")
    # the same inode, opened for reading only now that it is known to be a file
    fd = os.open(f"/proc/self/fd/{pathfd}", _READ)
    try:
        again = os.fstat(fd)
        if (again.st_dev, again.st_ino) != (st.st_dev, st.st_ino):
            raise Refused("changed while being opened")
        chunks, left = [], limit + 1 if whole else limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if whole and len(data) > limit:
        raise Refused(f"larger than {limit} bytes (it grew)")
    return data


def read_file(path: str, limit: int) -> bytes:
    """A file whose path root controls (a runtime's own, links followed) and
    whose content may be anyone's: regular files only, never blocking, read
    whole up to `limit` bytes."""
    try:
        fd = os.open(path, _PATH)
    except OSError as exc:
        raise _refusal(exc) from None
    try:
        return _read(fd, limit, whole=True)
    finally:
        os.close(fd)


def read_in_root(root: str, path: str, limit: int, *, whole: bool = False) -> bytes:
    """`path` resolved inside the directory `root` as if it were / (a
    container's root: /proc/PID/root): at most `limit` bytes of it."""
    def read() -> bytes:
        rootfd = os.open(root, _PATH | os.O_DIRECTORY)    # /proc/PID/root: the kernel's link
        try:
            try:
                fd = openat2(rootfd, path, _PATH, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)
                if fd < 0:
                    fd = _walk(rootfd, path, 0)
            except OSError as exc:
                raise _refusal(exc) from None
            try:
                return _read(fd, limit, whole)
            finally:
                os.close(fd)
        finally:
            os.close(rootfd)
    return _bounded(read)


def read_owned(home: str, path: str, uid: int, limit: int) -> bytes:
    """`path` under a user's home, read whole only if the home, every
    directory on the way and the file are owned by `uid`, no link is followed
    and no mount point crossed."""
    def owned(fd, st, name):
        if st.st_uid != uid:
            raise Refused(f"{name} is owned by uid {st.st_uid}, not {uid}")

    def read() -> bytes:
        homefd = os.open(home, _PATH | os.O_DIRECTORY)    # from the passwd database: root's
        try:
            owned(homefd, os.fstat(homefd), "the home directory")
            try:
                fd = _walk(homefd, path, RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV
                           | RESOLVE_NO_MAGICLINKS | RESOLVE_BENEATH, owned)
            except OSError as exc:
                raise _refusal(exc) from None
            try:
                return _read(fd, limit, whole=True)
            finally:
                os.close(fd)
        finally:
            os.close(homefd)
    return _bounded(read)


class _Helper:
    """The thread that does the reads a tenant could stall. One that does not
    answer in time is left where it is stuck (a daemon thread: exit does not
    wait for it, unless the kernel does) and a new one takes the next read."""

    def __init__(self):
        self.lost = 0.0                  # seconds lost to reads that did not finish
        self.lock = threading.Lock()
        self.requests = None

    def call(self, fn, deadline: float):
        """(True, fn()), (False, its exception), or None when it did not answer."""
        reply: queue.SimpleQueue = queue.SimpleQueue()
        with self.lock:
            if self.requests is None:
                self.requests = queue.SimpleQueue()
                threading.Thread(target=self._serve, args=(self.requests,),
                                 name="sockterm-tenantfile", daemon=True).start()
            requests = self.requests
        requests.put((fn, reply))
        start = time.monotonic()
        try:
            return reply.get(timeout=deadline)
        except queue.Empty:
            with self.lock:
                self.lost += time.monotonic() - start
                if self.requests is requests:
                    self.requests = None
            return None

    @staticmethod
    def _serve(requests) -> None:
        while True:
            fn, reply = requests.get()
            try:
                reply.put((True, fn()))
            except BaseException as exc:        # handed to the caller, raised there
                reply.put((False, exc))


_helper = _Helper()


def _bounded(fn) -> bytes:
    """fn() in the helper thread, waited for DEADLINE seconds at most."""
    if _helper.lost >= STALL_BUDGET:
        raise Refused("not read: earlier reads of tenants' files did not finish")
    answer = _helper.call(fn, DEADLINE)
    if answer is None:
        raise Refused(f"no answer within {DEADLINE:g} s (a FUSE or network file system?)")
    ok, value = answer
    if ok:
        return value
    raise value
