"""Another process's socket, through a duplicate of its own descriptor:
pidfd_open(2) + pidfd_getfd(2) (Linux >= 5.6), then shutdown(2) on the copy.

The copy refers to the same open file as the application's descriptor, so
shutdown() acts on the application's socket: queued data is still sent,
then a FIN. Nothing is injected into the process and it is never stopped;
the copy is closed at once (the application's descriptor stays open).

pidfd_getfd asks what a ptrace attach asks (PTRACE_MODE_ATTACH_REALCREDS).
Measured on Linux 6.18 as root: with CAP_SYS_PTRACE any process, one made
non-dumpable (prctl PR_SET_DUMPABLE 0) included; without it only a dumpable
process of sockterm's uid holding no capability sockterm lacks (EPERM for
the rest). Yama's ptrace_scope 3 refuses it to everyone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform

# pidfd_getfd has one number on every architecture (the common numbering
# since Linux 5.1) except alpha, which adds 110
PIDFD_GETFD = 548 if platform.machine() == "alpha" else 438
SO_COOKIE = 57
SOL_SOCKET = 1
YAMA = "/proc/sys/kernel/yama/ptrace_scope"

_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _check(ret: int) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def open_process(pid: int) -> int:
    """A pidfd for the process pid (host pid: sockterm reads the host's /proc);
    ESRCH when it has exited."""
    return os.pidfd_open(pid)


def getfd(pidfd: int, fd: int) -> int:
    """A duplicate, in this process, of descriptor fd of the pidfd's process
    (close-on-exec). EBADF: it has no such descriptor; EPERM: not allowed."""
    return _check(_c().syscall(ctypes.c_long(PIDFD_GETFD), ctypes.c_int(pidfd),
                               ctypes.c_int(fd), ctypes.c_uint(0)))


def cookie(fd: int) -> int:
    """The socket cookie of descriptor fd (0 for a descriptor that is no socket)."""
    value, size = ctypes.c_uint64(0), ctypes.c_uint32(8)
    if _c().getsockopt(fd, SOL_SOCKET, SO_COOKIE, ctypes.byref(value), ctypes.byref(size)) < 0:
        return 0
    return value.value


def shutdown(fd: int, how: int) -> int:
    """shutdown(2) on fd: 0, or the errno it failed with."""
    if _c().shutdown(fd, how) < 0:
        return ctypes.get_errno()
    return 0


def why_not() -> str:
    """'' when this process can duplicate another's descriptors here, else
    why not. A real probe: its own descriptor through a pidfd of itself."""
    try:
        pidfd = open_process(os.getpid())
    except AttributeError:
        return "this Python has no os.pidfd_open (needs 3.9)"
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return "the kernel has no pidfd_open (needs Linux >= 5.3)"
        return f"pidfd_open: {exc.strerror}"
    try:
        os.close(getfd(pidfd, pidfd))
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return "the kernel has no pidfd_getfd (needs Linux >= 5.6)"
        return f"pidfd_getfd: {exc.strerror} (a seccomp profile?)"
    finally:
        os.close(pidfd)
    try:
        with open(YAMA) as f:
            if f.read().strip() == "3":
                return "Yama's ptrace_scope is 3: no process may take another's descriptors"
    except OSError:
        pass
    return ""
