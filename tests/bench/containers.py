"""What container attribution costs: 200 containers laid out as real nodes
have them, timed as a run pays for them.

    sudo python3 -m tests.bench.containers [--containers 200] [--repeat 7]

Builds, for each kind of node, real processes each in a network namespace of
its own (`unshare -n`; a pod's containers join its pause's), moved into
cgroups named as the runtime names them (v2 hierarchy), and the runtime's
files in a throwaway root (docker: a config.v2.json of a realistic ~6 KB per
container; Kubernetes: the kubelet's log directories, pods of a pause and
three containers). Then times, with cold caches of sockterm's own (a fresh
containers.Node each repeat), what a run adds:

  attribute  every namespace named after its container or pod (every list/match/kill)
  select     --container NAME resolved (a full scan of /proc)
  absent     the same host with no runtime files: the marker check alone

Kinds: docker (named by config.v2.json), unnamed (docker cgroups and no
config.v2.json: named by the hostname in each container's root, the file the
container itself writes), kubernetes.

and, end to end, `sockterm list --no-processes -o jsonl` with and without the
root (its wall time includes walking the namespaces). Everything it made is
removed at the end. Prints a table, or JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from sockterm.host import cgroups as cg_mod
from sockterm.host import containers, netns, runtimes


class Layout:
    def __init__(self, kind: str, count: int):
        self.kind, self.count = kind, count
        self.root = tempfile.mkdtemp(prefix=f"skct-{kind}-")
        self.mount = cg_mod.v2_mount()
        self.top = f"skct-{secrets.token_hex(3)}"
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[str] = []
        self.names: list[str] = []

    def cgroup(self, rel: str) -> str:
        parts = rel.split("/")
        for i in range(1, len(parts) + 1):
            d = os.path.join(self.mount, *parts[:i])
            if not os.path.isdir(d):
                os.mkdir(d)
                self.dirs.append(d)
        return os.path.join(self.mount, rel)

    def spawn(self, rel: str, join: int | None = None) -> int:
        cmd = (["nsenter", f"--net=/proc/{join}/ns/net", "sleep", "900"] if join
               else ["unshare", "-n", "sleep", "900"])
        p = subprocess.Popen(cmd)
        self.procs.append(p)
        with open(os.path.join(self.cgroup(rel), "cgroup.procs"), "w") as f:
            f.write(str(p.pid))
        return p.pid

    def build(self) -> None:
        if self.kind in ("docker", "unnamed"):
            base = os.path.join(self.root, runtimes.DOCKER_DIR)
            os.makedirs(base)
            for i in range(self.count):
                cid, name = secrets.token_hex(32), f"web-{i}"
                if self.kind == "docker":
                    os.makedirs(os.path.join(base, cid))
                    with open(os.path.join(base, cid, "config.v2.json"), "w") as f:
                        json.dump(_docker_config(cid, name), f)
                pid = self.spawn(f"{self.top}/system.slice/docker-{cid}.scope")
                self.names.append(name if self.kind == "docker"
                                  else containers.Node(root=self.root).place_of(pid).container.name)
        else:
            per_pod = 4                   # pause + three containers
            for p in range(self.count // per_pod):
                uid = f"{secrets.token_hex(4)}-0000-4000-8000-{secrets.token_hex(6)}"
                ns, pod = f"team{p % 7}", f"svc{p}-7d9f"
                pod_dir = os.path.join(self.root, runtimes.KUBELET_PODS, f"{ns}_{pod}_{uid}")
                logs = os.path.join(self.root, runtimes.KUBELET_CONTAINERS)
                os.makedirs(logs, exist_ok=True)
                base = (f"{self.top}/kubepods.slice/kubepods-burstable.slice/"
                        f"kubepods-burstable-pod{uid.replace('-', '_')}.slice")
                pause = self.spawn(f"{base}/cri-containerd-{secrets.token_hex(32)}.scope")
                for c in ("app", "envoy", "log"):
                    cid = secrets.token_hex(32)
                    os.makedirs(os.path.join(pod_dir, c))
                    open(os.path.join(logs, f"{pod}_{ns}_{c}-{cid}.log"), "w").close()
                    self.spawn(f"{base}/cri-containerd-{cid}.scope", join=pause)
                self.names.append("app")

    def cleanup(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait()
        for d in sorted(self.dirs, key=lambda x: -x.count("/")):
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except OSError:
                    time.sleep(0.02)
        shutil.rmtree(self.root, ignore_errors=True)


def _docker_config(cid: str, name: str) -> dict:
    """The shape and size of a real config.v2.json (~6 KB)."""
    env = [f"VAR_{i}=value-{i}-" + "x" * 40 for i in range(30)]
    labels = {f"org.example.label{i}": "y" * 30 for i in range(20)}
    return {"StreamConfig": {}, "State": {"Running": True, "Pid": 1234},
            "ID": cid, "Created": "2026-11-27T10:00:00Z", "Path": "/docker-entrypoint.sh",
            "Args": ["nginx", "-g", "daemon off;"],
            "Config": {"Hostname": cid[:12], "Env": env, "Labels": labels,
                       "Image": "nginx:1.27", "Cmd": ["nginx"]},
            "Image": "sha256:" + "a" * 64,
            "NetworkSettings": {"Networks": {"bridge": {"IPAddress": "172.17.0.2"}}},
            "LogPath": f"/var/lib/docker/containers/{cid}/{cid}-json.log",
            "Name": "/" + name, "RestartCount": 0, "Driver": "overlay2",
            "MountPoints": {"/data": {"Name": "data-" + name, "Driver": "local"}},
            "HostConfig": {"RestartPolicy": {"Name": "unless-stopped"}}}


def timed(fn, repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs)


def cli_ms(root: str, repeat: int) -> float:
    env = dict(os.environ, SOCKTERM_ROOT_PREFIX=root)
    env.pop("SOCKTERM_BACKEND", None)
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sockterm", "list", "--no-processes", "-o", "jsonl"],
                       env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        runs.append((time.perf_counter() - t) * 1000)
    return statistics.median(runs)


def measure(kind: str, count: int, repeat: int) -> dict:
    layout = Layout(kind, count)
    empty = tempfile.mkdtemp(prefix="skct-empty-")
    try:
        layout.build()
        found, _ = netns.discover()
        named = {}

        def attribute():
            node = containers.Node(root=layout.root)
            node.attribute(found)
            named["n"] = sum(1 for ns in found if ns.place is not None)
            for ns in found:         # undo, so the next repeat starts from discovery's names
                if ns.place is not None:
                    ns.name, ns.place = ns.aliases.pop(), None

        def select():
            node = containers.Node(root=layout.root)
            containers.select(node, found, containers=[layout.names[0]])

        def absent():
            containers.Node(root=empty).attribute(found)

        out = {"kind": kind, "containers": count, "namespaces": len(found),
               "processes": sum(len(ns.pids) for ns in found),
               "attribute_ms": round(timed(attribute, repeat), 2),
               "select_ms": round(timed(select, repeat), 2),
               "absent_ms": round(timed(absent, repeat), 3)}
        out["named"] = named["n"]
        out["cli_ms"] = round(cli_ms(layout.root, max(3, repeat // 2)), 1)
        out["cli_no_runtime_ms"] = round(cli_ms(empty, max(3, repeat // 2)), 1)
        return out
    finally:
        layout.cleanup()
        shutil.rmtree(empty, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--kinds", default="docker,unnamed,kubernetes")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root: it builds cgroups and namespaces")
    rows = [measure(kind, args.containers, args.repeat) for kind in args.kinds.split(",")]
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'node':<11} {'containers':>10} {'netns':>6} {'procs':>6} {'named':>6} "
          f"{'attribute':>10} {'select':>8} {'absent':>8} {'list':>8} {'list, no rt':>12}")
    for r in rows:
        print(f"{r['kind']:<11} {r['containers']:>10} {r['namespaces']:>6} {r['processes']:>6} "
              f"{r['named']:>6} {r['attribute_ms']:>8.1f}ms {r['select_ms']:>6.1f}ms "
              f"{r['absent_ms']:>6.3f}ms {r['cli_ms']:>6.0f}ms {r['cli_no_runtime_ms']:>10.0f}ms")


if __name__ == "__main__":
    main()
