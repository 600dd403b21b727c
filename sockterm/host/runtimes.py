"""What each container runtime leaves on a node, read without asking it.

Every runtime names the cgroup of a container after its id (docker-<id>.scope,
/docker/<id>, libpod-<id>, cri-containerd-<id>.scope, crio-<id>,
lxc.payload.NAME, machine-NAME.scope), and the kubelet names a pod's cgroup
after its uid (kubepods…pod<uid>…), so /proc/PID/cgroup places a process.
Names are in the runtimes' own files: docker's config.v2.json, podman's
container store, the kubelet's log directories; the container's hostname as
a last resort.

Runtime files are looked for under SOCKTERM_ROOT_PREFIX (tests point it at a
throwaway tree); /proc and the cgroup hierarchy are always the real ones.
Standard library only: shell completion imports this.
"""

from __future__ import annotations

import os
import pwd
import re

ROOT_ENV = "SOCKTERM_ROOT_PREFIX"

DOCKER_DIR = "var/lib/docker/containers"
PODMAN_STORE = "var/lib/containers/storage/overlay-containers/containers.json"
PODMAN_USER_STORE = ".local/share/containers/storage/overlay-containers/containers.json"
KUBELET_PODS = "var/log/pods"
KUBELET_CONTAINERS = "var/log/containers"
# what a runtime leaves on a host even before it runs anything: without any
# of these, attribution costs these few stat() calls and nothing more
MARKERS = (DOCKER_DIR, "run/docker", "var/lib/containers/storage", "run/libpod",
           "run/containers", KUBELET_PODS, KUBELET_CONTAINERS, "run/containerd", "run/crio",
           "var/lib/lxc", "run/lxc", "run/systemd/machines")


class _Patterns:
    """The cgroup names of every runtime, compiled on first use: a run on a
    host without containers never pays for them."""

    def __init__(self):
        # runtime helpers that live beside a container, in the host's namespaces: not in it
        self.helper = re.compile(r"(?:libpod-conmon-|crio-conmon-)[0-9a-f]{64}(?:\.scope)?$"
                                 r"|lxc\.monitor[./]")
        self.runtimes = (
            (re.compile(r"docker-([0-9a-f]{64})\.scope$"), "docker"),
            (re.compile(r"cri-containerd-([0-9a-f]{64})\.scope$"), "containerd"),
            (re.compile(r"crio-([0-9a-f]{64})(?:\.scope)?$"), "cri-o"),
            (re.compile(r"libpod-([0-9a-f]{64})(?:\.scope)?$"), "podman"),
            (re.compile(r"lxc\.payload[./](.+)$"), "lxc"),
            (re.compile(r"machine-(.+)\.scope$"), "machined"),
            (re.compile(r"systemd-nspawn@(.+)\.service$"), "machined"),
        )
        self.hex64 = re.compile(r"[0-9a-f]{64}$")
        self.pod = re.compile(r"(?:^|-)pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}"
                              r"[-_][0-9a-f]{12})(?:\.slice)?$")
        # one search over the whole file decides for the (many) processes in no container
        self.any = re.compile(r"docker|libpod|containerd|crio|kubepods|lxc|machine|nspawn")
        self.rootless = re.compile(r"/user-(\d+)\.slice/")
        self.unit_escape = re.compile(r"\\x([0-9a-fA-F]{2})")


_compiled: list = []


def patterns() -> _Patterns:
    """The compiled patterns (the first call compiles them)."""
    if not _compiled:
        _compiled.append(_Patterns())
    return _compiled[0]


class Found:
    """What one /proc/PID/cgroup says (before any name is looked up)."""

    __slots__ = ("runtime", "id", "pod_uid", "cgroup", "pod_cgroup")

    def __init__(self, runtime, ident, pod_uid=None, cgroup="", pod_cgroup=""):
        self.runtime = runtime        # None: a 64-hex id under a pod, runtime told by the files
        self.id = ident
        self.pod_uid = pod_uid
        self.cgroup = cgroup          # the container's v2 path ("" if placed by a v1 line)
        self.pod_cgroup = pod_cgroup


HELPER = Found(None, None)        # a runtime's helper process: in no container


def root_prefix(root: str | None = None) -> str:
    return os.environ.get(ROOT_ENV, "") if root is None else root


def runtime_present(root: str | None = None) -> bool:
    root = root_prefix(root)
    return any(os.path.exists(os.path.join(root or "/", marker)) for marker in MARKERS)


def _unescape_unit(name: str) -> str:
    return patterns().unit_escape.sub(lambda m: chr(int(m.group(1), 16)), name)


def parse_path(path: str) -> Found | None:
    """One cgroup path -> the container and pod it names (None: neither).
    The outermost container wins: what the host sees, not what runs inside it."""
    rx = patterns()
    parts = path.split("/")
    pod_uid, pod_at, kube = None, 0, False
    for i, part in enumerate(parts):
        if not part:
            continue
        if part.startswith("kubepods"):
            kube = True
        if kube and pod_uid is None:
            m = rx.pod.search(part)
            if m:
                pod_uid, pod_at = m.group(1).replace("_", "-"), i
                continue
        if rx.helper.match(part):
            return HELPER
        for pattern, runtime in rx.runtimes:
            m = pattern.match(part)
            if m:
                ident = _unescape_unit(m.group(1)) if runtime in ("machined", "lxc") else m.group(1)
                return _found(runtime, ident, pod_uid, parts, i, pod_at)
        if rx.hex64.match(part):
            if i >= 1 and parts[i - 1] == "docker":
                return _found("docker", part, pod_uid, parts, i, pod_at)
            if pod_uid:
                return _found(None, part, pod_uid, parts, i, pod_at)
        if i == 1 and part == "lxc" and len(parts) > 2 and parts[2]:
            return _found("lxc", parts[2], None, parts, 2, 0)
    if pod_uid:
        return _found(None, None, pod_uid, parts, len(parts) - 1, pod_at)
    return None


def _found(runtime, ident, pod_uid, parts, at, pod_at) -> Found:
    cgroup = "/".join(parts[:at + 1]) if ident else ""
    pod_cgroup = "/".join(parts[:pod_at + 1]) if pod_uid else ""
    return Found(runtime, ident, pod_uid, cgroup, pod_cgroup)


def parse_cgroup(text: str) -> Found | None:
    """/proc/PID/cgroup -> where it places the process. The v2 line ("0::")
    first: its path is the one sockets record; then the v1 lines, for hosts
    whose runtime only creates v1 cgroups."""
    if not patterns().any.search(text):
        return None
    lines = text.splitlines()
    lines.sort(key=lambda line: not line.startswith("0::"))
    pod_only = None
    for line in lines:
        v2 = line.startswith("0::")
        found = parse_path(line.split(":", 2)[-1])
        if found is None:
            continue
        if found is HELPER:
            return HELPER
        if not v2:
            found = Found(found.runtime, found.id, found.pod_uid)   # its path is no v2 path
        if found.id is not None:
            if pod_only is not None and found.pod_uid in (None, pod_only.pod_uid):
                # the pod's v2 cgroup, the container from a v1 line
                found = Found(found.runtime, found.id, pod_only.pod_uid, found.cgroup,
                              pod_only.pod_cgroup)
            return found
        pod_only = pod_only or found
    return pod_only


class Names:
    """The runtimes' own files, read at most once each per run."""

    def __init__(self, root: str):
        self.root = root or "/"
        self._podman: dict[str, dict] = {}          # store path -> {id: name}
        self._kube_pods = None                      # uid -> (namespace, name)
        self._kube_containers = None                # id -> (pod, namespace, container)

    def _path(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    def docker(self, cid: str) -> str | None:
        path = self._path(DOCKER_DIR, cid, "config.v2.json")
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return None
        # the top-level Name is the only "Name" whose value starts with a slash;
        # a regex over the text is ~20x cheaper than parsing the whole document
        m = re.search(r'"Name"\s*:\s*("/(?:[^"\\]|\\.)*")', text)
        if not m:
            return None
        try:
            import json      # a host without containers never needs it
            return json.loads(m.group(1))[1:] or None
        except ValueError:
            return None

    def podman(self, cid: str, uid: int | None = None) -> str | None:
        stores = [self._path(PODMAN_STORE)]
        if uid is not None:
            try:
                home = pwd.getpwuid(uid).pw_dir
            except KeyError:
                home = None
            if home:
                stores.insert(0, os.path.join(self.root, home.lstrip("/"), PODMAN_USER_STORE))
        for store in stores:
            names = self._podman.get(store)
            if names is None:
                names = self._podman[store] = _read_podman_store(store)
            if cid in names:
                return names[cid]
        return None

    def kube_pod(self, uid: str) -> tuple | None:
        if self._kube_pods is None:
            self._kube_pods = {}
            for entry in _listdir(self._path(KUBELET_PODS)):
                # <namespace>_<pod>_<uid>: neither a namespace nor a pod name has a '_'
                parts = entry.split("_")
                if len(parts) == 3:
                    self._kube_pods[parts[2]] = (parts[0], parts[1])
        return self._kube_pods.get(uid)

    def kube_container(self, cid: str) -> tuple | None:
        if self._kube_containers is None:
            self._kube_containers = {}
            for entry in _listdir(self._path(KUBELET_CONTAINERS)):
                # <pod>_<namespace>_<container>-<id>.log
                if not entry.endswith(".log"):
                    continue
                rest, _, ident = entry[:-4].rpartition("-")
                parts = rest.split("_")
                if len(parts) == 3 and patterns().hex64.match(ident):
                    self._kube_containers[ident] = (parts[0], parts[1], parts[2])
        return self._kube_containers.get(cid)

    def docker_has(self, cid: str) -> bool:
        return os.path.isdir(self._path(DOCKER_DIR, cid))


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _read_podman_store(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            import json
            entries = json.load(f)
    except (OSError, ValueError):
        return {}
    out = {}
    for entry in entries if isinstance(entries, list) else []:
        if isinstance(entry, dict) and isinstance(entry.get("id"), str):
            names = entry.get("names") or []
            if names and isinstance(names[0], str):
                out[entry["id"]] = names[0]
    return out


def hostname_of(pid: int, proc: str = "/proc") -> str | None:
    """The hostname file inside a process's root: the last resort for a name."""
    try:
        with open(f"{proc}/{pid}/root/etc/hostname", "rb") as f:
            text = f.read(256).decode("utf-8", "replace")
    except OSError:
        return None
    line = text.strip().split("\n", 1)[0].strip() if text.strip() else ""
    return line or None
