"""The cgroup v2 hierarchy: where it is mounted, and what --cgroup names in it.

A socket keeps the cgroup v2 of the process that created it (the kernel's
sk->sk_cgrp_data, also on hosts whose controllers are v1). Both engines
compare that cgroup's id, which is the inode number of its directory in the
cgroup2 filesystem: the id `ss`'s `cgroup PATH` filter compares too.

Standard library only: completion imports this.
"""

from __future__ import annotations

import os

from .netns import _unescape

# systemd unit suffixes that own processes: `--cgroup nginx.service` is searched for
UNIT_SUFFIXES = (".service", ".scope", ".slice")


class CgroupError(ValueError):
    """A --cgroup value that names no cgroup here; the message says why, in one line."""


def v2(mountinfo: str = "/proc/self/mountinfo") -> tuple[str, str] | None:
    """(mount point, its root as mountinfo shows it) of the cgroup2 filesystem:
    /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid one.
    Of several, the one that sees the most of the hierarchy: in a cgroup
    namespace of its own (a Kubernetes pod's, `podman run --cgroupns=private`)
    the container's own mount shows only its cgroup, and the host's, bound in
    under /host, shows as rooted above it (/../..)."""
    try:
        # mount points are anyone's to name, in any bytes: never fail on one
        with open(mountinfo, errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    found = []
    for line in lines:
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if sep + 1 < len(fields) and fields[sep + 1] == "cgroup2":
            found.append((_unescape(fields[4]), _unescape(fields[3])))
    if not found:
        return None
    return max(found, key=lambda m: m[1].split("/").count(".."))    # the first of equals


def v2_mount(mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the cgroup2 filesystem is mounted (see v2), or None."""
    found = v2(mountinfo)
    return found[0] if found else None


def find(spec: str, mount: str) -> list[str]:
    """The directories `spec` names under the v2 mount: a path relative to it
    (with or without a leading /, or spelled out under the mount), or the
    name of a cgroup anywhere in it, such as a systemd unit (nginx.service)."""
    text = spec.strip()
    if not text or "\0" in text:
        raise CgroupError("--cgroup needs a path or a unit name")
    mount = mount.rstrip("/") or "/"
    if text == mount or text.startswith(mount + "/"):
        text = text[len(mount):]
    rel = os.path.normpath("/" + text.strip("/")).lstrip("/")
    if rel.startswith(".."):
        raise CgroupError(f"--cgroup {spec!r} leaves the cgroup hierarchy")
    path = os.path.join(mount, rel) if rel else mount
    if "/" not in text.strip("/"):
        # a bare name: the top-level cgroup of that name, else every one anywhere
        if rel and not os.path.isdir(path):
            found = search(rel, mount)
            if found:
                return found
    if not os.path.isdir(path):
        hint = " (a unit name is searched for everywhere)" if text.endswith(UNIT_SUFFIXES) else ""
        raise CgroupError(f"no cgroup {spec!r} under {mount}{hint}")
    return [path]


def search(name: str, mount: str) -> list[str]:
    """Every cgroup directory called `name` under the mount, shallowest first."""
    found = []
    for top, dirs, _files in os.walk(mount):
        if name in dirs:
            found.append(os.path.join(top, name))
    return sorted(found, key=lambda p: (p.count("/"), p))


def subtree_ids(paths) -> frozenset[int]:
    """The ids of these cgroups and of every cgroup below them."""
    ids = set()
    for path in paths:
        try:
            ids.add(os.stat(path).st_ino)
        except OSError:
            continue          # removed meanwhile: nothing in it can match
        for top, dirs, _files in os.walk(path):
            for name in dirs:
                try:
                    ids.add(os.stat(os.path.join(top, name)).st_ino)
                except OSError:
                    pass
    return frozenset(ids)


def ids_for(specs, mount: str | None = None) -> frozenset[int]:
    """--cgroup values -> the cgroup ids a socket's cgroup must be one of."""
    mount = mount or v2_mount()
    if not mount:
        raise CgroupError("--cgroup needs the cgroup v2 hierarchy, and it is not mounted here")
    dirs = []
    for spec in specs:
        dirs += find(spec, mount)
    return subtree_ids(dirs)


def path_of(relative: str, mount: str | None = None, root: str = "/") -> str | None:
    """The directory of a cgroup v2 path as /proc/PID/cgroup prints it, under a
    mount whose root mountinfo shows as `root`. Both are relative to the reader's
    cgroup namespace: in one of its own, the host's cgroups are /../../NAME and
    the host's mount is rooted at /../.. (None: not under this mount)."""
    if mount is None:
        mount, root = v2() or (None, "/")
    if not mount or not relative.startswith("/"):
        return None
    parts = [p for p in relative.split("/") if p]
    top = [p for p in root.split("/") if p]
    if parts[:len(top)] != top or ".." in parts[len(top):]:
        return None
    return os.path.join(mount, *parts[len(top):])
