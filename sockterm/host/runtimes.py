"""What each container runtime leaves on a node, read without asking it.

Every runtime names the cgroup of a container after its id (docker-<id>.scope,
/docker/<id>, libpod-<id>, cri-containerd-<id>.scope, crio-<id>,
lxc.payload.NAME, machine-NAME.scope), and the kubelet names a pod's cgroup
after its uid (kubepods…pod<uid>…), so /proc/PID/cgroup places a process.
Names are in the runtimes' own files: docker's config.v2.json, podman's
container store, the kubelet's log directories; the container's hostname as
a last resort. What a tenant or a user controls is read through tenantfile;
every parser takes any bytes and returns a name or nothing, never raising.

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
    """The runtimes' own files, read at most once each per run. Files a tenant
    or a user controls are read through host/tenantfile.py; one refused is
    absent, and `log` (-v) says why."""

    def __init__(self, root: str, proc: str = "/proc", log=None):
        self.root = root or "/"
        self.proc = proc
        self.log = log or (lambda msg: None)
        self._podman: dict[str, dict] = {}          # store path -> {id: name}
        self._kube_pods = None                      # uid -> (namespace, name)
        self._kube_containers = None                # id -> (pod, namespace, container)

    def _path(self, *parts) -> str:
        return os.path.join(self.root, *parts)

    def _read(self, what: str, read, *args) -> bytes | None:
        """read(*args), or None (absent; refused, which -v says)."""
        try:
            return read(*args)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.log(f"not read: {what}: {exc.strerror or exc}")
            return None

    def docker(self, cid: str) -> str | None:
        # tenantfile here, not at import: a run reads a runtime's file only to
        # name a container (~1.5 ms of every run on a host with a runtime)
        from . import tenantfile
        path = self._path(DOCKER_DIR, cid, "config.v2.json")
        data = self._read(path, tenantfile.read_file, path, tenantfile.CONFIG_LIMIT)
        return None if data is None else docker_name(data)

    def podman(self, cid: str, uid: int | None = None) -> str | None:
        from . import tenantfile
        stores = [(self._path(PODMAN_STORE), None, None)]
        if uid is not None:
            try:
                home = pwd.getpwuid(uid).pw_dir
            except KeyError:
                home = None
            if home:
                home = os.path.join(self.root, home.lstrip("/"))
                stores.insert(0, (os.path.join(home, PODMAN_USER_STORE), home, uid))
        for store, home, owner in stores:
            names = self._podman.get(store)
            if names is None:
                if home is None:
                    data = self._read(store, tenantfile.read_file, store, tenantfile.STORE_LIMIT)
                else:
                    data = self._read(store, tenantfile.read_owned, home, PODMAN_USER_STORE,
                                      owner, tenantfile.STORE_LIMIT)
                names = self._podman[store] = {} if data is None else podman_names(data)
            if cid in names:
                return names[cid]
        return None

    def kube_pod(self, uid: str) -> tuple | None:
        if self._kube_pods is None:
            found = (kube_pod_entry(e) for e in _listdir(self._path(KUBELET_PODS)))
            self._kube_pods = dict(f for f in found if f)
        return self._kube_pods.get(uid)

    def kube_container(self, cid: str) -> tuple | None:
        if self._kube_containers is None:
            found = (kube_container_entry(e) for e in _listdir(self._path(KUBELET_CONTAINERS)))
            self._kube_containers = dict(f for f in found if f)
        return self._kube_containers.get(cid)

    def docker_has(self, cid: str) -> bool:
        return os.path.isdir(self._path(DOCKER_DIR, cid))

    def hostname(self, pid: int) -> str | None:
        """The hostname file inside a process's root: the last resort for a name."""
        from . import tenantfile
        root = f"{self.proc}/{pid}/root"
        data = self._read(f"{root}/etc/hostname", tenantfile.read_in_root, root, "etc/hostname",
                          tenantfile.NAME_LIMIT)
        return None if data is None else hostname_line(data)


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


# -- the runtimes' files, parsed: any bytes in, a name or nothing out -------------------------

def docker_name(data: bytes) -> str | None:
    """config.v2.json -> the container's name (its top-level Name, less the slash)."""
    text = data.decode("utf-8", "replace")
    # the top-level Name is the only "Name" whose value starts with a slash;
    # a regex over the text is ~20x cheaper than parsing the whole document
    m = re.search(r'"Name"\s*:\s*("/[^"\\]*(?:\\.[^"\\]*)*")', text)
    if not m:
        return None
    try:
        import json      # a host without containers never needs it
        return json.loads(m.group(1))[1:] or None
    except ValueError:
        return None


def podman_names(data: bytes) -> dict[str, str]:
    """A podman containers.json -> {id: first name}."""
    import json
    try:
        entries = json.loads(data)
    except (ValueError, RecursionError):     # RecursionError: nesting deeper than Python's stack
        return {}
    out = {}
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        names = entry.get("names")
        if isinstance(names, list) and names and isinstance(names[0], str):
            out[entry["id"]] = names[0]
    return out


def kube_pod_entry(entry: str) -> tuple | None:
    """A /var/log/pods entry, <namespace>_<pod>_<uid> -> (uid, (namespace, pod));
    neither a namespace nor a pod name has a '_'."""
    parts = entry.split("_")
    return (parts[2], (parts[0], parts[1])) if len(parts) == 3 else None


def kube_container_entry(entry: str) -> tuple | None:
    """A /var/log/containers entry, <pod>_<namespace>_<container>-<id>.log ->
    (id, (pod, namespace, container))."""
    if not entry.endswith(".log"):
        return None
    rest, _, ident = entry[:-4].rpartition("-")
    parts = rest.split("_")
    if len(parts) == 3 and patterns().hex64.match(ident):
        return ident, (parts[0], parts[1], parts[2])
    return None


def hostname_line(data: bytes) -> str | None:
    """The first line of a hostname file (up to a NUL, which no hostname
    has: a sparse file's hole), or None when it has none."""
    text = data.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    line = text.split("\n", 1)[0].strip() if text else ""
    return line or None
