"""Processes and the sockets they hold, read from procfs.

The BPF engine attributes sockets with one in-kernel pass over every task's
files; this module is what the diag engine uses instead where that pass
cannot load or few files are open (core/decide.owners_from_proc), and what
resolves --pid/--comm and sockterm's own sockets to socket inodes.
"""

from __future__ import annotations

import os


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def descriptors(pid: int, inodes) -> dict[int, int]:
    """socket inode -> the descriptor through which process pid holds it,
    for the given inodes (the lowest such descriptor is not promised). Stops
    reading once every one is found; {} when the process is gone.
    PermissionError: this process may not read pid's descriptors (ptrace's
    read check: another uid, not dumpable, more privileged)."""
    wanted = set(inodes)
    found: dict[int, int] = {}
    gone = (FileNotFoundError, ProcessLookupError)
    try:
        dir_fd = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
    except gone:
        return found
    try:
        for name in os.listdir(dir_fd):
            try:
                target = os.readlink(name, dir_fd=dir_fd)
            except gone:               # closed meanwhile
                continue
            if target.startswith("socket:["):
                ino = int(target[8:-1])
                if ino in wanted:
                    found[ino] = int(name)
                    if len(found) == len(wanted):
                        break
    except gone:
        pass
    finally:
        os.close(dir_fd)
    return found


def comm_of(pid: int) -> str | None:
    """The process name: any bytes its owner chose (prctl), undecodable ones
    kept as surrogates (text.shown writes them back as \\xNN)."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[:-1].decode("utf-8", "surrogateescape") if raw.endswith(b"\n") else \
        raw.decode("utf-8", "surrogateescape")


def pids_by_comm(names) -> list[int]:
    wanted = set(names)
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and comm_of(int(entry.name)) in wanted:
            found.append(int(entry.name))
    return sorted(found)


def inodes_of(pids) -> frozenset[int]:
    """Every socket inode the given processes hold right now."""
    inodes: set[int] = set()
    for pid in pids:
        inodes |= _socket_inodes(pid)
    return frozenset(inodes)


def own_inodes() -> frozenset[int]:
    """sockterm's own sockets, which it never touches."""
    return inodes_of([os.getpid()])


def open_files() -> int | None:
    """Files open on the whole host (fs.file-nr's first field: each open
    file once, however many descriptors share it); None if unreadable."""
    try:
        with open("/proc/sys/fs/file-nr") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def owners_from_proc():
    """Who holds every socket on the host (model.Owners), read from /proc."""
    from ..model import Owners
    found = Owners()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        inodes = _socket_inodes(pid)
        if not inodes:
            continue
        comm = comm_of(pid) or "?"
        for ino in inodes:
            found.add(ino, pid, comm)
    return found
