"""Container-node layouts for the privileged tier, built as a real node has
them: cgroups in the host's hierarchy named as each runtime names them, real
processes moved into them, and the runtimes' files in a throwaway tree that
sockterm is pointed at with SOCKTERM_ROOT_PREFIX.

Independent of sockterm: the cgroup2 mount is found here, from mountinfo.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time

V1_PIDS = "/sys/fs/cgroup/pids"


def v2_mount() -> str:
    with open("/proc/self/mountinfo", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            if fields[sep + 1] == "cgroup2":
                return fields[4]
    raise RuntimeError("no cgroup2 mount on this host")


V2 = v2_mount()


def hex64() -> str:
    return secrets.token_hex(32)


class Cgroups:
    """Cgroups this test made; every process is moved back out and every
    directory removed at the end, deepest first."""

    def __init__(self):
        self.made: list[str] = []

    def make(self, rel: str, base: str = V2) -> str:
        path = os.path.join(base, rel.strip("/"))
        parts = rel.strip("/").split("/")
        for i in range(1, len(parts) + 1):
            d = os.path.join(base, *parts[:i])
            if not os.path.isdir(d):
                os.mkdir(d)
                self.made.append(d)
        return path

    def move(self, pid: int, rel: str, base: str = V2) -> None:
        path = self.make(rel, base)
        with open(os.path.join(path, "cgroup.procs"), "w") as f:
            f.write(str(pid))

    def cleanup(self) -> None:
        for d in sorted(self.made, key=lambda p: -p.count("/")):
            root = V2 if d.startswith(V2 + "/") else V1_PIDS
            for _ in range(50):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        pids = f.read().split()
                except OSError:
                    break
                for pid in pids:
                    try:
                        with open(os.path.join(root, "cgroup.procs"), "w") as f:
                            f.write(pid)
                    except OSError:
                        pass     # exiting: it leaves by itself
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.05)
        self.made.clear()


class Files:
    """The runtimes' own files, under a throwaway root."""

    def __init__(self, root: str):
        self.root = root

    def _dir(self, *parts) -> str:
        path = os.path.join(self.root, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def docker(self, cid: str, name: str) -> None:
        d = self._dir("var/lib/docker/containers", cid)
        with open(os.path.join(d, "config.v2.json"), "w") as f:
            json.dump({"ID": cid, "Name": "/" + name, "State": {"Running": True},
                       "MountPoints": {"/data": {"Name": "vol-" + name}},
                       "HostConfig": {"RestartPolicy": {"Name": "always"}}}, f)

    def docker_present(self) -> None:
        self._dir("var/lib/docker/containers")

    def kubelet(self, namespace: str, pod: str, uid: str, containers: dict) -> None:
        pod_dir = self._dir("var/log/pods", f"{namespace}_{pod}_{uid}")
        logs = self._dir("var/log/containers")
        for name, cid in containers.items():
            os.makedirs(os.path.join(pod_dir, name), exist_ok=True)
            with open(os.path.join(pod_dir, name, "0.log"), "w"):
                pass
            os.symlink(os.path.join(pod_dir, name, "0.log"),
                       os.path.join(logs, f"{pod}_{namespace}_{name}-{cid}.log"))


def sleeper(netns: str) -> subprocess.Popen:
    """A process that holds a namespace and nothing else: a pod's pause."""
    return subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "600"])


def pairs(holder, port: int, count: int = 2, server=None) -> tuple[list, list, dict]:
    """`count` loopback connections from holder to a listener of server (or its
    own): (client infos, accepted infos, listener info)."""
    server = server or holder
    lst = server.call("listen", addr="127.0.0.1", port=port)
    conns = holder.call("connect", dst="127.0.0.1", port=port, count=count)
    acc = server.call("accept", id=lst["id"], count=count)
    return conns, acc, lst
