"""Entering a network namespace: the one mechanism, run_in(), for a
thread that is not the main one (setns(CLONE_NEWNET) moves only the calling
thread; the main thread never moves). The pool's workers (core/pool.py) use
it for many namespaces at once; a Worker is one such thread for callers on
the main thread (a watch, doctor).
"""

from __future__ import annotations

import errno
import os
import queue
import threading

from ..model import Namespace
from .netns import CLONE_NEWNET, NamespaceError

_libc = None


def _setns(fd: int) -> int:
    """setns(fd, CLONE_NEWNET) for the calling thread: 0, or the errno. ctypes
    is loaded on first use (~2 ms): a run that stays home never pays for it."""
    global _libc
    import ctypes
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return ctypes.get_errno() if _libc.setns(fd, CLONE_NEWNET) != 0 else 0


def run_in(ns: Namespace, fn, home: int):
    """fn() run inside ns by the calling thread, which must not be the main
    thread; the thread is back in its namespace `home` (an fd) afterwards."""
    if ns.ino == os.fstat(home).st_ino:
        return fn()      # already there: setns would need CAP_SYS_ADMIN even for this
    if threading.current_thread() is threading.main_thread():
        raise RuntimeError("run_in: the main thread never leaves its namespace")
    fd = None
    last = None
    for path in ns.paths():
        try:
            # O_NONBLOCK: a path swapped for a FIFO since discovery cannot block
            # the worker (the inode check below then refuses it)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            last = exc
            continue
        if os.fstat(fd).st_ino == ns.ino:
            break
        os.close(fd)   # the path was reused for another namespace
        fd = None
    if fd is None:
        # every way in failed, or leads elsewhere now (an `ip netns del` caught
        # between unmount and unlink, a pid reused): the namespace is gone for us
        raise NamespaceError(getattr(last, "errno", 0) or errno.ENOENT,
                             f"namespace {ns.name} is gone ({getattr(last, 'strerror', 'no path left')})")
    try:
        err = _setns(fd)
        if err:
            raise NamespaceError(err, f"cannot enter namespace {ns.name}: {os.strerror(err)}")
        try:
            return fn()
        finally:
            if _setns(home):   # never leave a thread elsewhere
                raise SystemExit("sockterm: cannot return to the original network namespace")
    finally:
        os.close(fd)


class Worker:
    """A dedicated thread that runs callables inside namespaces (for callers
    that are on the main thread and must stay where they are)."""

    def __init__(self):
        self._requests: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="sockterm-netns", daemon=True)
        self._thread.start()

    def _loop(self):
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            while True:
                item = self._requests.get()
                if item is None:
                    return
                ns, fn, reply = item
                try:
                    reply.put((True, run_in(ns, fn, home)))
                except BaseException as exc:     # handed to the caller, raised there
                    reply.put((False, exc))
        finally:
            os.close(home)

    def call(self, ns: Namespace, fn):
        """fn() run inside ns; its result, or its exception raised here."""
        reply: queue.Queue = queue.Queue(maxsize=1)
        self._requests.put((ns, fn, reply))
        ok, value = reply.get()
        if ok:
            return value
        raise value

    def close(self):
        self._requests.put(None)
        self._thread.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
