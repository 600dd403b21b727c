"""Keeping test kills away from the machine the tests run on.

Two layers, because a test of a tool that destroys sockets must stay harmless
even when the tool's own guards regress:

- the helpers that run sockterm (tests/priv/conftest.py `sockterm`,
  rel_util `cli`, the pty runner, the unit tier's subprocesses) call
  `check_kill` and refuse to start a `kill` that is neither confined nor
  limited by `--netns` to namespaces this test session created;
- `prefix()` confines a run: a fresh PID, mount and network namespace in which
  /proc shows only the run's own processes, sockterm's own network namespace
  is new and empty, every nsfs mount it inherited (the host's /run/netns,
  container runtimes' bind mounts) is unmounted, and the only namespaces left
  to find are the test namespaces passed in, bound under a private /run/netns.
  tests/priv/test_confinement.py proves it hides the host's sockets.

Run as a script, this module is the inside of that confinement: it rearranges
the mounts, then executes the command after `--`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import sys

HERE = os.path.abspath(__file__)
CREATED: set = set()        # ip netns names this session made (conftest.Topology adds them)
ADOPTED: set = set()        # inodes of other namespaces a test made (a podman container's)
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21
GLOBAL_OPTIONS_WITH_VALUE = {"--backend"}


def _cap_eff() -> int:
    with open("/proc/self/status") as f:
        line = next(l for l in f if l.startswith("CapEff:"))
    return int(line.split()[1], 16)


def can_harm() -> bool:
    """Could a sockterm started from here destroy a socket (CAP_NET_ADMIN)?"""
    return bool(_cap_eff() >> CAP_NET_ADMIN & 1)


def can_confine() -> bool:
    return bool(_cap_eff() >> CAP_SYS_ADMIN & 1)


def prefix(namespaces=()) -> list[str]:
    """The command prefix that confines a run to `namespaces` (ip netns names)."""
    return ["unshare", "--pid", "--fork", "--kill-child", "--mount", "--mount-proc", "--net",
            "--propagation", "private", sys.executable, HERE, *namespaces, "--"]


def wrap(argv: list[str], namespaces=()) -> list[str]:
    """argv confined when it could harm (root with CAP_NET_ADMIN); as it is otherwise."""
    if not can_harm():
        return list(argv)
    assert can_confine(), "CAP_NET_ADMIN without CAP_SYS_ADMIN: cannot confine a run"
    return prefix(namespaces) + list(argv)


def is_confined(prefix_args) -> bool:
    return HERE in list(prefix_args)


def command_of(args) -> str | None:
    """The sockterm subcommand in a command line (skipping global options)."""
    args = list(args)
    i = 0
    while i < len(args):
        a = args[i]
        if a in GLOBAL_OPTIONS_WITH_VALUE:
            i += 2
            continue
        if a.startswith("-"):
            i += 1
            continue
        return a
    return None


def _netns_values(args) -> list[str]:
    args = list(args)
    out = []
    for i, a in enumerate(args):
        if a == "--netns" and i + 1 < len(args):
            out.append(args[i + 1])
        elif a.startswith("--netns="):
            out.append(a.split("=", 1)[1])
    return out


def adopt(path: str) -> None:
    """A namespace this session made by other means than Topology (podman's
    SandboxKey): a kill may name it."""
    ADOPTED.add(os.stat(path).st_ino)


def _created_inodes() -> set:
    inodes = set(ADOPTED)
    for name in CREATED:
        try:
            inodes.add(os.stat(f"/run/netns/{name}").st_ino)
        except OSError:
            pass
    return inodes


def _is_test_namespace(value: str) -> bool:
    if value in CREATED:
        return True
    ino = value[len("net:["):-1] if value.startswith("net:[") else value
    if ino.isdigit():
        return int(ino) in _created_inodes()
    try:
        return os.path.isabs(value) and os.stat(value).st_ino in _created_inodes()
    except OSError:
        return False


def check_kill(args, prefix_args=()) -> None:
    """Refuse (AssertionError, before anything runs) a `kill` that could reach a
    socket this test session did not create."""
    if command_of(args) != "kill" or "--dry-run" in args or "--help" in args:
        return
    if is_confined(prefix_args) or not can_harm():
        return
    values = _netns_values(args)
    strays = [v for v in values if not _is_test_namespace(v)]
    assert values and not strays, (
        "refusing to run an unconfined kill that is not limited by --netns to this session's "
        f"namespaces: {' '.join(args)} (use confine.prefix(), or --netns)")


# -- inside the confinement ----------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
MS_BIND, MNT_DETACH = 4096, 2


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _nsfs_mounts() -> list[bytes]:
    """Mount points of nsfs mounts (bytes: names are anyone's to choose)."""
    points = []
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.split()
            if fields[fields.index(b"-") + 1] == b"nsfs":
                points.append(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4]))
    return points


def _inside(names: list[str], command: list[str]) -> None:
    # hold the wanted namespaces open before their mounts go
    fds = {name: os.open(f"/run/netns/{name}", os.O_RDONLY) for name in names}
    for point in reversed(_nsfs_mounts()):
        # a namespace deleted on the host (ip netns del) while unshare made
        # this mount namespace private may have taken its mount already: gone
        # is what is wanted (the check below sees that none is left)
        if _libc.umount2(point, MNT_DETACH) != 0:
            err = ctypes.get_errno()
            if err not in (errno.EINVAL, errno.ENOENT):
                raise OSError(err, f"umount {point!r}: {os.strerror(err)}")
    os.makedirs("/run/netns", exist_ok=True)
    _check(_libc.mount(b"tmpfs", b"/run/netns", b"tmpfs", 0, b"mode=0755"), "mount /run/netns")
    for name, fd in fds.items():
        target = f"/run/netns/{name}"
        open(target, "w").close()
        _check(_libc.mount(f"/proc/self/fd/{fd}".encode(), target.encode(), None, MS_BIND, None),
               f"bind {name}")
        os.close(fd)
    left = set(_nsfs_mounts()) - {f"/run/netns/{n}".encode() for n in names}
    assert not left, f"nsfs mounts left in the confinement: {sorted(left)}"
    os.execvp(command[0], command)


if __name__ == "__main__":
    split = sys.argv.index("--")
    _inside(sys.argv[1:split], sys.argv[split + 1:])
