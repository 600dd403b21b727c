"""Containers and pods: which one a process, a network namespace or a socket
belongs to, and what --container and --pod select, from what the node itself
holds: no API server, no CRI socket, no runtime daemon (host/runtimes.py reads
what each runtime leaves). One Node per run reads every file once and places
every process once; a host without a runtime costs a few stat() calls.

Standard library only: shell completion imports this.
"""

from __future__ import annotations

import os
import re

from . import cgroups, procs, runtimes
from .runtimes import HELPER, Found, parse_cgroup, root_prefix, runtime_present

class ContainerError(ValueError):
    """A --container/--pod value that names nothing running here (one line)."""


class Pod:
    """A Kubernetes pod, as the node knows it. One object per pod in a run."""

    __slots__ = ("uid", "namespace", "name", "cgroup")

    def __init__(self, uid: str, namespace: str | None = None, name: str | None = None,
                 cgroup: str = ""):
        self.uid = uid
        self.namespace = namespace
        self.name = name
        self.cgroup = cgroup          # its cgroup v2 path, when its processes are under one

    @property
    def label(self) -> str:
        if self.namespace and self.name:
            return f"{self.namespace}/{self.name}"
        return self.name or f"pod-{self.uid}"

    def __repr__(self) -> str:
        return f"Pod({self.label} {self.uid})"


class Container:
    """A container, as the node knows it. One object per container in a run."""

    __slots__ = ("runtime", "id", "name", "pod", "cgroup")

    def __init__(self, runtime: str, ident: str, name: str, pod: Pod | None = None,
                 cgroup: str = ""):
        self.runtime = runtime        # docker, podman, containerd, cri-o, lxc, machined
        self.id = ident               # full id (the name, for lxc and machined)
        self.name = name
        self.pod = pod
        self.cgroup = cgroup          # its own cgroup v2 path, when it has one

    def __repr__(self) -> str:
        return f"Container({self.runtime} {self.name} {self.id[:12]})"


class Place:
    """Where a process, a namespace or a socket belongs: a container, a pod, or both."""

    __slots__ = ("container", "pod")

    def __init__(self, container: Container | None = None, pod: Pod | None = None):
        self.container = container
        self.pod = pod

    @property
    def label(self) -> str:
        """The name an operator knows it by: the pod's, else the container's."""
        if self.pod is not None and (self.pod.name or self.container is None):
            return self.pod.label
        return self.container.name

    def __repr__(self) -> str:
        return f"Place({self.container!r}, {self.pod!r})"


class Node:
    """One run's view of the containers and pods on this node: every file is
    read once, every process placed once."""

    def __init__(self, root: str | None = None, proc: str = "/proc", present: bool | None = None,
                 log=None):
        self.root = root_prefix(root)
        self.proc = proc
        self.present = runtime_present(self.root) if present is None else present
        self.names = runtimes.Names(self.root, proc, log)     # log: why a file was not read (-v)
        self._by_pid: dict[int, Place | None] = {}
        self._containers: dict[tuple, Container] = {}
        self._pods: dict[str, Pod] = {}
        self._places: dict[tuple, Place] = {}
        self._held: dict[tuple, Place | None] = {}

    # -- processes -------------------------------------------------------------
    def place_of(self, pid: int) -> Place | None:
        """The container and pod process `pid` runs in (None: neither, or gone)."""
        try:
            return self._by_pid[pid]
        except KeyError:
            pass
        place = None
        try:
            with open(f"{self.proc}/{pid}/cgroup", "rb") as f:
                # cgroup names are anyone's with a delegated subtree: any bytes
                found = parse_cgroup(f.read().decode("utf-8", "surrogateescape"))
        except OSError:
            found = None
        if found is not None and found is not HELPER:
            place = self._place(found, pid)
        self._by_pid[pid] = place
        return place

    def _place(self, found: Found, pid: int) -> Place:
        pod = self._pod(found, pid) if found.pod_uid else None
        container = self._container(found, pod, pid) if found.id else None
        return self._shared(container, pod)

    def _pod(self, found: Found, pid: int) -> Pod:
        pod = self._pods.get(found.pod_uid)
        if pod is None:
            known = self.names.kube_pod(found.pod_uid)
            namespace, name = known if known else (None, None)
            if name is None and found.id:
                seen = self.names.kube_container(found.id)
                namespace, name = (seen[1], seen[0]) if seen else (None, None)
            if name is None:
                name = self.names.hostname(pid)     # a pod's hostname is its name
            pod = self._pods[found.pod_uid] = Pod(found.pod_uid, namespace, name, found.pod_cgroup)
        return pod

    def _container(self, found: Found, pod: Pod | None, pid: int) -> Container:
        runtime = found.runtime
        if runtime is None:     # a bare id under a pod: docker's if docker has it
            runtime = "docker" if self.names.docker_has(found.id) else "containerd"
        key = (runtime, found.id)
        container = self._containers.get(key)
        if container is None:
            name = self._name(runtime, found, pod, pid)
            container = self._containers[key] = Container(runtime, found.id, name, pod, found.cgroup)
        return container

    def _name(self, runtime: str, found: Found, pod: Pod | None, pid: int) -> str:
        name = None
        if pod is not None or runtime in ("containerd", "cri-o"):
            seen = self.names.kube_container(found.id)
            name = seen[2] if seen else None
        if name is None and runtime == "docker":
            name = self.names.docker(found.id)
        elif name is None and runtime == "podman":
            m = runtimes.patterns().rootless.search(found.cgroup or "")
            name = self.names.podman(found.id, int(m.group(1)) if m else None)
        elif name is None and runtime in ("lxc", "machined"):
            name = found.id
        if name is None and pod is None:
            name = self.names.hostname(pid)
        return name or found.id[:12]

    def running(self) -> dict[int, Place]:
        """Every process on the host that runs in a container or pod."""
        out = {}
        for entry in os.scandir(self.proc):
            if entry.name.isdigit():
                place = self.place_of(int(entry.name))
                if place is not None:
                    out[int(entry.name)] = place
        return out

    # -- namespaces and sockets --------------------------------------------------
    def attribute(self, namespaces, host_inos=None) -> None:
        """Name each namespace after the pod or container its processes run in.
        The host's namespace stays the host's, whatever host-network containers
        run there."""
        if not self.present:
            return
        host_inos = host_namespaces() if host_inos is None else host_inos
        for ns in namespaces:
            if ns.ino in host_inos:
                continue
            place = self.namespace_place(ns)
            if place is not None:
                ns.place = place
                ns.aliases.append(ns.name)
                ns.name = place.label

    def namespace_place(self, ns) -> Place | None:
        places = {self.place_of(pid) for pid in ns.pids}
        places.discard(None)
        containers = {p.container for p in places if p.container is not None}
        pods = {p.pod for p in places if p.pod is not None}
        if len(containers) == 1 and len(pods) <= 1:
            [container] = containers
            return self._shared(container, container.pod)
        if len(pods) == 1:
            [pod] = pods
            return self._shared(None, pod)
        return None

    def _shared(self, container, pod) -> Place:
        """One Place object per (container, pod): sockets share it, output caches by it."""
        key = (container, pod)
        place = self._places.get(key)
        if place is None:
            place = self._places[key] = Place(container, pod)
        return place

    def label(self, ns, socks) -> None:
        """Set each socket's place: its namespace's container, or, where several
        containers share the namespace (a pod, the host), the holding process's."""
        if not self.present:
            return
        place = getattr(ns, "place", None)
        if place is not None and place.container is not None:
            for sock in socks:
                sock.place = place
            return
        held = self._held
        for sock in socks:
            procs = sock.processes
            if not procs:
                sock.place = place
                continue
            found = held.get(procs, False)
            if found is False:
                found = held[procs] = self._holder_place(procs, place)
            sock.place = found

    def _holder_place(self, procs, ns_place: Place | None) -> Place | None:
        for pid, _comm in procs:
            place = self.place_of(pid)
            if place is not None and place.container is not None:
                if ns_place is None or place.pod is ns_place.pod:
                    return place
        return ns_place


# -- what --container and --pod name ---------------------------------------------

def choose_containers(selectors, containers) -> set:
    """The running containers a list of --container values names: every one
    with that name, else the one with that id or (4+ characters) id prefix."""
    chosen = set()
    for sel in selectors:
        key = sel.strip()
        hits = [c for c in containers if c.name == key] or [c for c in containers if c.id == key]
        if not hits and len(key) >= 4 and re.fullmatch(r"[0-9a-f]+", key):
            hits = [c for c in containers if runtimes.patterns().hex64.match(c.id) and c.id.startswith(key)]
            if len(hits) > 1:
                ids = ", ".join(sorted(c.id[:12] for c in hits)[:4])
                raise ContainerError(f"container id prefix {key!r} is ambiguous ({ids}, ...): "
                                     "give more of the id or the name")
        if not hits:
            short = " (an id prefix needs at least 4 characters)" if len(key) < 4 else ""
            raise ContainerError(f"no running container named {key!r} or with that id{short}")
        chosen.update(hits)
    return chosen


def choose_pods(selectors, pods) -> set:
    """The pods a list of --pod values names: NAMESPACE/NAME, NAME in any
    namespace, or the pod's uid."""
    chosen = set()
    for sel in selectors:
        key = sel.strip()
        if "/" in key:
            namespace, _, name = key.partition("/")
            hits = [p for p in pods if p.namespace == namespace and p.name == name]
        else:
            hits = [p for p in pods if p.name == key] or [p for p in pods if p.uid == key]
        if not hits:
            raise ContainerError(f"no pod {key!r} on this node")
        chosen.update(hits)
    return chosen


class Selection:
    """What --container/--pod select on this host."""

    __slots__ = ("netns", "shared", "pids", "cgroups")

    def __init__(self, netns: frozenset, shared: frozenset, pids: frozenset, cgroups: tuple):
        self.netns = netns            # namespaces that are wholly theirs
        self.shared = shared          # namespaces they share with other processes
        self.pids = pids              # their processes in the shared namespaces
        self.cgroups = cgroups        # their own cgroup v2 paths


def select(node: Node, namespaces, containers=(), pods=()) -> Selection:
    """Resolve --container/--pod against the processes running now. A namespace
    all of whose processes are selected is selected whole; in one shared with
    others (a pod's other containers, the host) only what the selected
    processes hold or created is."""
    running = node.running()
    if containers:
        chosen_c = choose_containers(containers, {p.container for p in running.values()
                                                  if p.container is not None})
    if pods:
        chosen_p = choose_pods(pods, {p.pod for p in running.values() if p.pod is not None})

    def wanted(place):
        return place is not None and (not containers or place.container in chosen_c) \
            and (not pods or place.pod in chosen_p)

    whole, shared, pids, paths = set(), set(), set(), set()
    for ns in namespaces:
        places = {pid: node.place_of(pid) for pid in ns.pids}
        mine = [pid for pid, place in places.items() if wanted(place)]
        if not mine:
            continue
        # a process that exited meanwhile does not make the namespace shared
        others = [pid for pid, place in places.items()
                  if not wanted(place) and os.path.exists(f"{node.proc}/{pid}")]
        if not others:
            whole.add(ns.ino)
            continue
        shared.add(ns.ino)
        pids.update(mine)
        for pid in mine:
            place = places[pid]
            own = place.container.cgroup if containers and place.container is not None else ""
            path = own or (place.pod.cgroup if place.pod is not None and not containers else "")
            if path:
                paths.add(path)
    return Selection(frozenset(whole), frozenset(shared), frozenset(pids), tuple(sorted(paths)))


def scope_for(flt, namespaces, node: Node) -> tuple[dict, frozenset | None]:
    """--cgroup, --container and --pod as kernel ids: the engine Scope's fields
    (cgroup_ids, owned_netns, owned_inodes, owned_cgroups), and the inodes of
    the namespaces that can hold what they select (None: any). Raises
    ContainerError or cgroups.CgroupError, one line each."""
    fields: dict = {}
    if flt.cgroups:
        fields["cgroup_ids"] = cgroups.ids_for(flt.cgroups)
    if not (flt.containers or flt.pods):
        return fields, None
    sel = select(node, namespaces, flt.containers, flt.pods)
    fields.update(owned_netns=sel.netns,
                  owned_inodes=procs.inodes_of(sorted(sel.pids)) if sel.pids else frozenset(),
                  owned_cgroups=cgroup_ids_of(sel.cgroups) if sel.cgroups else frozenset())
    return fields, sel.netns | sel.shared


def host_namespaces() -> frozenset:
    """The host's network namespace (kernel threads'), and sockterm's own."""
    found = set()
    for path in ("/proc/2/ns/net", "/proc/self/ns/net"):
        try:
            found.add(os.stat(path).st_ino)
        except OSError:
            pass
    return frozenset(found)


def inventory(node: Node | None = None) -> tuple[list[Container], list[Pod]]:
    """The containers and pods running now (shell completion)."""
    node = node or Node()
    if not node.present:
        return [], []
    places = set(node.running().values())
    containers = {p.container for p in places if p.container is not None}
    pods = {p.pod for p in places if p.pod is not None}
    return (sorted(containers, key=lambda c: (c.name, c.id)),
            sorted(pods, key=lambda p: p.label))


def cgroup_ids_of(paths) -> frozenset[int]:
    """The ids of the cgroup v2 paths (as /proc/PID/cgroup prints them) and below."""
    mount, root = cgroups.v2() or (None, "/")
    if not mount:
        return frozenset()
    dirs = [d for d in (cgroups.path_of(p, mount, root) for p in paths) if d]
    return cgroups.subtree_ids(dirs)
