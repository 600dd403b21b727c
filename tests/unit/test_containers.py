"""Containers and pods from what a node holds, without a node: cgroup paths of
every runtime and driver, the runtimes' files in a throwaway tree, a fake
/proc, and what --container/--pod/--cgroup/--uid become."""

from __future__ import annotations

import json
import os

import pytest

from sockterm import model, states
from sockterm.filter import FilterError, build_filter
from sockterm.host import cgroups, containers as C, netns, runtimes as R

ID = {name: (ch * 64) for name, ch in (("a", "a"), ("b", "b"), ("c", "c"), ("d", "d"), ("e", "e"))}
UID = "8dbc5577-d0e2-4706-8787-57d52c03ddf2"
UID_ = UID.replace("-", "_")


def v2(path: str, v1: str = "/") -> str:
    """/proc/PID/cgroup of a hybrid host: v1 controllers, then the v2 line."""
    return f"9:name=systemd:{v1}\n8:pids:{v1}\n4:memory:{v1}\n0::{path}\n"


@pytest.mark.parametrize("text,runtime,ident,pod,cgroup", [
    # docker: systemd and cgroupfs drivers
    (v2(f"/system.slice/docker-{ID['a']}.scope"), "docker", ID["a"], None,
     f"/system.slice/docker-{ID['a']}.scope"),
    (v2(f"/docker/{ID['a']}"), "docker", ID["a"], None, f"/docker/{ID['a']}"),
    # podman: cgroupfs (libpod_parent), systemd (machine.slice), rootless, in a pod
    (v2(f"/libpod_parent/libpod-{ID['b']}"), "podman", ID["b"], None, f"/libpod_parent/libpod-{ID['b']}"),
    (v2(f"/machine.slice/libpod-{ID['b']}.scope"), "podman", ID["b"], None,
     f"/machine.slice/libpod-{ID['b']}.scope"),
    (v2(f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID['b']}.scope"),
     "podman", ID["b"], None,
     f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID['b']}.scope"),
    (v2(f"/machine.slice/machine-libpod_pod_{ID['e']}.slice/libpod-{ID['b']}.scope"), "podman",
     ID["b"], None, f"/machine.slice/machine-libpod_pod_{ID['e']}.slice/libpod-{ID['b']}.scope"),
    # kubelet + containerd, systemd driver, each QoS class
    (v2(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"cri-containerd-{ID['c']}.scope"), "containerd", ID["c"], UID,
     f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
     f"cri-containerd-{ID['c']}.scope"),
    (v2(f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/"
        f"cri-containerd-{ID['c']}.scope"), "containerd", ID["c"], UID, None),
    (v2(f"/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID['c']}.scope"),
     "containerd", ID["c"], UID, None),
    # kubelet, cgroupfs driver: a bare id (containerd unless docker knows it)
    (v2(f"/kubepods/burstable/pod{UID}/{ID['c']}"), None, ID["c"], UID,
     f"/kubepods/burstable/pod{UID}/{ID['c']}"),
    (v2(f"/kubepods/pod{UID}/{ID['c']}"), None, ID["c"], UID, None),
    # CRI-O, both drivers
    (v2(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
        f"crio-{ID['d']}.scope"), "cri-o", ID["d"], UID, None),
    (v2(f"/kubepods/besteffort/pod{UID}/crio-{ID['d']}"), "cri-o", ID["d"], UID, None),
    # LXC (4+ and older), systemd-nspawn / machined (escaped names)
    (v2("/lxc.payload.web-1"), "lxc", "web-1", None, "/lxc.payload.web-1"),
    (v2("/lxc.payload.web-1/system.slice/nginx.service"), "lxc", "web-1", None, "/lxc.payload.web-1"),
    ("4:memory:/lxc/old-one\n0::/\n", "lxc", "old-one", None, ""),
    (v2("/machine.slice/machine-build\\x2dbox.scope"), "machined", "build-box", None,
     "/machine.slice/machine-build\\x2dbox.scope"),
    (v2("/machine.slice/systemd-nspawn@db\\x2d1.service/payload"), "machined", "db-1", None,
     "/machine.slice/systemd-nspawn@db\\x2d1.service"),
    # only a v1 line places it (cgroupfs on a hybrid host): no v2 path to compare sockets with
    (f"8:pids:/docker/{ID['a']}\n0::/\n", "docker", ID["a"], None, ""),
    # nested: the outermost container is the one the host sees
    (v2(f"/system.slice/docker-{ID['a']}.scope/docker/{ID['b']}"), "docker", ID["a"], None, None),
])
def test_cgroup_paths_of_every_runtime(text, runtime, ident, pod, cgroup):
    found = R.parse_cgroup(text)
    assert (found.runtime, found.id, found.pod_uid) == (runtime, ident, pod)
    if cgroup is not None:
        assert found.cgroup == cgroup


@pytest.mark.parametrize("text", [
    v2("/"), v2("/user.slice/user-1000.slice/session-3.scope"), v2("/system.slice/nginx.service"),
    v2("/init.scope"), "0::/\n", "",
    v2("/machine.slice"),                                    # the slice, not a machine
    v2("/kubepods.slice/kubepods-burstable.slice"),          # the QoS slice, not a pod
])
def test_host_processes_are_in_no_container(text):
    assert R.parse_cgroup(text) is None


@pytest.mark.parametrize("path", [
    f"/libpod_parent/libpod-conmon-{ID['b']}", f"/machine.slice/libpod-conmon-{ID['b']}.scope",
    f"/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{ID['d']}.scope", "/lxc.monitor.web-1",
])
def test_runtime_helpers_run_beside_the_container_not_in_it(path):
    """conmon and lxc's monitor live in the host's namespaces: attributing them
    would pull the host's namespace into --container."""
    assert R.parse_cgroup(v2(path)) is R.HELPER


def test_pod_from_v2_container_from_v1():
    text = (f"8:pids:/kubepods/burstable/pod{UID}/{ID['c']}\n"
            f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice\n")
    found = R.parse_cgroup(text)
    assert (found.id, found.pod_uid, found.cgroup) == (ID["c"], UID, "")
    assert found.pod_cgroup == f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"


# -- a node in a throwaway tree -------------------------------------------------------------

class FakeNode:
    """A /proc (pid -> cgroup text, hostname) and the runtimes' files under a root."""

    def __init__(self, tmp):
        self.proc = tmp / "proc"
        self.root = tmp / "root"
        self.proc.mkdir()
        self.root.mkdir()

    def process(self, pid: int, cgroup_text: str, hostname: str | None = None):
        d = self.proc / str(pid)
        d.mkdir()
        (d / "cgroup").write_text(cgroup_text)
        if hostname is not None:
            (d / "root" / "etc").mkdir(parents=True)
            (d / "root" / "etc" / "hostname").write_text(hostname + "\n")
        return pid

    def docker(self, cid: str, name: str):
        d = self.root / R.DOCKER_DIR / cid
        d.mkdir(parents=True)
        # the real file's shape: a volume and a restart policy have a Name too
        (d / "config.v2.json").write_text(json.dumps({
            "ID": cid, "MountPoints": {"/data": {"Name": "vol1"}},
            "HostConfig": {"RestartPolicy": {"Name": "no"}}, "Name": "/" + name}))

    def podman(self, entries, store=R.PODMAN_STORE):
        path = self.root / store
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([{"id": cid, "names": [name], "layer": "x"} for cid, name in entries]))

    def kubelet(self, namespace, pod, uid, containers_):
        (self.root / R.KUBELET_PODS / f"{namespace}_{pod}_{uid}").mkdir(parents=True)
        logs = self.root / R.KUBELET_CONTAINERS
        logs.mkdir(parents=True, exist_ok=True)
        for cname, cid in containers_:
            (self.root / R.KUBELET_PODS / f"{namespace}_{pod}_{uid}" / cname).mkdir()
            (logs / f"{pod}_{namespace}_{cname}-{cid}.log").write_text("")

    def node(self) -> C.Node:
        return C.Node(root=str(self.root), proc=str(self.proc))


@pytest.fixture
def fake(tmp_path):
    return FakeNode(tmp_path)


def test_names_from_each_runtime(fake):
    fake.docker(ID["a"], "web")
    fake.podman([(ID["b"], "api")])
    fake.kubelet("shop", "cart-7d9f", UID, [("app", ID["c"])])
    fake.process(10, v2(f"/system.slice/docker-{ID['a']}.scope"), hostname="ignored")
    fake.process(11, v2(f"/libpod_parent/libpod-{ID['b']}"))
    fake.process(12, v2(f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
                        f"cri-containerd-{ID['c']}.scope"))
    fake.process(13, v2("/lxc.payload.db"))
    fake.process(14, v2(f"/docker/{ID['d']}"), hostname="lonely")     # no metadata: its hostname
    fake.process(15, v2(f"/docker/{ID['e']}"))                         # nothing at all: short id
    fake.process(16, v2("/user.slice/session-1.scope"))
    node = fake.node()
    assert node.present
    got = {pid: (p.container.runtime, p.container.name) for pid, p in node.running().items()}
    assert got == {10: ("docker", "web"), 11: ("podman", "api"), 12: ("containerd", "app"),
                   13: ("lxc", "db"), 14: ("docker", "lonely"), 15: ("docker", ID["e"][:12])}
    pod = node.place_of(12).pod
    assert (pod.namespace, pod.name, pod.uid, pod.label) == ("shop", "cart-7d9f", UID, "shop/cart-7d9f")
    assert node.place_of(12).label == "shop/cart-7d9f" and node.place_of(10).label == "web"
    assert node.place_of(16) is None and node.place_of(99) is None


def test_rootless_podman_store_is_read_only_when_its_user_owns_it(fake, monkeypatch):
    """A user's store is named from only if every directory from their home
    down and the file are theirs: here the test's uid owns them; the same
    home given to another uid is refused, and the log says why."""
    me, other = os.getuid(), os.getuid() + 1

    class Pw:
        pw_dir = "/home/alice"
    monkeypatch.setattr(R.pwd, "getpwuid", lambda uid: Pw if uid in (me, other) else (_ for _ in ()).throw(KeyError))
    fake.podman([(ID["b"], "mine")], store="home/alice/" + R.PODMAN_USER_STORE)
    fake.podman([])
    for pid, uid in ((20, me), (21, other)):
        fake.process(pid, v2(f"/user.slice/user-{uid}.slice/user@{uid}.service/user.slice/libpod-{ID['b']}.scope"))
    notes = []
    assert C.Node(root=str(fake.root), proc=str(fake.proc), log=notes.append).place_of(20).container.name == "mine"
    assert notes == []
    node = C.Node(root=str(fake.root), proc=str(fake.proc), log=notes.append)
    assert node.place_of(21).container.name == ID["b"][:12]
    assert notes == [f"not read: {fake.root}/home/alice/{R.PODMAN_USER_STORE}: "
                     f"the home directory is owned by uid {me}, not {other}"]


def test_kubelet_bare_ids_are_docker_only_if_docker_has_them(fake):
    fake.docker(ID["a"], "k8s_app_cart")
    fake.kubelet("shop", "cart", UID, [("app", ID["a"])])
    fake.process(30, v2(f"/kubepods/burstable/pod{UID}/{ID['a']}"))
    fake.process(31, v2(f"/kubepods/burstable/pod{UID}/{ID['b']}"), hostname="cart")
    node = fake.node()
    app, pause = node.place_of(30), node.place_of(31)
    assert (app.container.runtime, app.container.name) == ("docker", "app")   # the kubelet's name
    # pause: in no log, not in docker; inside a pod its hostname is the pod's, not its own
    assert (pause.container.runtime, pause.container.name) == ("containerd", ID["b"][:12])
    assert app.pod is pause.pod


def test_pod_without_kubelet_logs_is_named_by_its_hostname(fake):
    os.makedirs(fake.root / "run/containerd")
    fake.process(40, v2(f"/kubepods/pod{UID}/{ID['c']}"), hostname="cart-7d9f")
    place = fake.node().place_of(40)
    assert (place.pod.namespace, place.pod.name, place.label) == (None, "cart-7d9f", "cart-7d9f")


def test_nothing_is_read_without_a_runtime(fake):
    fake.process(50, v2(f"/docker/{ID['a']}"))
    node = fake.node()
    assert not node.present
    ns = model.Namespace(ino=7, name="x[50]", path="", pids=[50])
    node.attribute([ns], host_inos=())
    assert ns.name == "x[50]" and ns.place is None and node._by_pid == {}


def test_hostile_names_are_kept_exactly(fake):
    evil = "web\x1b]0;pwned\x07\u202e"
    fake.podman([(ID["b"], evil)])
    fake.process(60, v2(f"/libpod_parent/libpod-{ID['b']}"))
    fake.process(61, v2(f"/docker/{ID['e']}"), hostname="\x1b[2Jbad\nline")
    os.makedirs(fake.root / R.DOCKER_DIR, exist_ok=True)
    node = fake.node()
    assert node.place_of(60).container.name == evil
    assert node.place_of(61).container.name == "\x1b[2Jbad"      # the first line only


# -- namespaces and sockets -----------------------------------------------------------------

def _pod_node(fake):
    fake.kubelet("shop", "cart", UID, [("app", ID["c"]), ("sidecar", ID["d"])])
    base = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"
    fake.process(70, v2(f"{base}/cri-containerd-{ID['b']}.scope"))           # pause
    fake.process(71, v2(f"{base}/cri-containerd-{ID['c']}.scope"))           # app
    fake.process(72, v2(f"{base}/cri-containerd-{ID['d']}.scope"))           # sidecar
    fake.docker(ID["a"], "web")
    fake.process(80, v2(f"/system.slice/docker-{ID['a']}.scope"))
    fake.process(81, v2(f"/system.slice/docker-{ID['a']}.scope"))
    fake.process(90, v2("/user.slice/session-1.scope"))                     # the host
    fake.process(91, v2(f"/system.slice/docker-{ID['e']}.scope"))            # host-network container
    nss = [model.Namespace(ino=1, name="host", path="", pids=[90, 91]),
           model.Namespace(ino=2, name="pause[70]", path="", pids=[70, 71, 72]),
           model.Namespace(ino=3, name="cni-1234", path="", pids=[80, 81]),
           model.Namespace(ino=4, name="netns-x", path="", pids=[])]
    return fake.node(), nss


def test_namespaces_are_named_after_their_pod_or_container(fake):
    node, (host, pod, web, empty) = _pod_node(fake)
    node.attribute([host, pod, web, empty], host_inos={1})
    assert (host.name, host.place) == ("host", None)
    assert pod.name == "shop/cart" and pod.place.container is None and pod.place.pod.uid == UID
    assert pod.aliases == ["pause[70]"]
    assert web.name == "web" and web.place.container.id == ID["a"] and web.aliases == ["cni-1234"]
    assert (empty.name, empty.place) == ("netns-x", None)
    # --netns still takes the old names, and the pod's NAMESPACE/NAME is not taken for a path
    assert netns.resolve(["shop/cart"], [host, pod, web, empty]) == [pod]
    assert netns.resolve(["pause[70]"], [host, pod, web, empty]) == [pod]
    assert netns.resolve(["cni-1234"], [host, pod, web, empty]) == [web]


@pytest.mark.parametrize("sel,identity", [("host", True), ("4026531840", True),
                                           ("net:[4026531840]", True), ("/run/netns/x", True),
                                           (" /proc/1/ns/net ", True), ("shop/cart", False),
                                           ("web", False), ("pause[70]", False),
                                           ("net:[web]", False)])
def test_which_netns_values_need_no_container_names(sel, identity):
    assert netns.is_identity(sel) is identity


@pytest.mark.parametrize("selectors,named", [(["host"], {1}), (["3"], {3}),
                                             (["web"], {1, 2, 3, 4}), (["3", "web"], {1, 2, 3, 4})])
def test_only_the_chosen_namespaces_are_named_when_netns_needs_no_names(fake, monkeypatch,
                                                                          selectors, named):
    # naming reads every namespace's processes' cgroups and the runtimes' files:
    # an inode, a path or `host` cannot mean a container's name, so only what
    # they choose is named (the host's is never renamed)
    from sockterm.core import pipeline
    from sockterm.filter import build_filter
    node, nss = _pod_node(fake)
    monkeypatch.setattr(netns, "discover", lambda own_only, host_only=False: (list(nss), []))
    monkeypatch.setattr(C, "host_namespaces", lambda: {1})
    asked = []
    attribute = node.attribute
    monkeypatch.setattr(node, "attribute", lambda found: (asked.extend(ns.ino for ns in found),
                                                          attribute(found)))
    run = pipeline._Run(build_filter(netns=selectors), pipeline.Report(), pipeline.Options(),
                        kill=False)
    run.node = node
    chosen = run.find_namespaces()
    assert set(asked) == named
    assert [ns.name for ns in chosen if ns.ino == 3] in ([], ["web"])


def test_a_name_two_namespaces_share_is_refused(fake):
    a = model.Namespace(ino=5, name="web", path="")
    b = model.Namespace(ino=6, name="x", path="", aliases=["web"])
    with pytest.raises(netns.NamespaceError) as exc:
        netns.resolve(["web"], [a, b])
    assert "give the inode" in str(exc.value) and "\n" not in str(exc.value)


def _sock(netns_ino, ino, holders):
    s = model.Sock(netns=netns_ino, family=4, proto="tcp", state=states.ESTABLISHED,
                   src=model.v4_mapped(bytes(4)), sport=1, dst=model.v4_mapped(bytes(4)), dport=2,
                   cookie=ino, ino=ino)
    s.processes = holders
    return s


def test_sockets_take_their_namespace_or_their_holder(fake):
    node, (host, pod, web, _) = _pod_node(fake)
    node.attribute([host, pod, web], host_inos={1})
    in_web = _sock(3, 1, ((80, "nginx"),))
    in_pod = [_sock(2, 2, ((71, "app"),)), _sock(2, 3, ((72, "envoy"), (71, "app"))), _sock(2, 4, ()),
              _sock(2, 5, None)]
    in_host = [_sock(1, 6, ((91, "exporter"),)), _sock(1, 7, ((90, "sshd"),))]
    node.label(web, [in_web])
    node.label(pod, in_pod)
    node.label(host, in_host)
    assert in_web.container.name == "web" and in_web.pod is None
    assert [(s.container.name if s.container else None, s.pod.name) for s in in_pod] == \
        [("app", "cart"), ("sidecar", "cart"), (None, "cart"), (None, "cart")]
    assert in_host[0].container.id == ID["e"] and in_host[1].place is None


# -- --container / --pod ---------------------------------------------------------------------

def test_select_by_container_and_pod(fake):
    node, nss = _pod_node(fake)
    sel = C.select(node, nss, containers=["web"])
    assert (sel.netns, sel.shared, sel.pids) == ({3}, frozenset(), frozenset())
    sel = C.select(node, nss, pods=["shop/cart"])
    assert sel.netns == {2} and not sel.shared
    # a container that shares its pod's namespace: what its processes hold or created
    sel = C.select(node, nss, containers=["app"])
    assert (sel.netns, sel.shared, sel.pids) == (frozenset(), {2}, {71})
    assert sel.cgroups == (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/"
                           f"cri-containerd-{ID['c']}.scope",)
    # a host-network container never takes the host's namespace whole
    sel = C.select(node, nss, containers=[ID["e"][:6]])
    assert (sel.netns, sel.shared, sel.pids) == (frozenset(), {1}, {91})
    # options AND: app in another pod selects nothing
    assert C.select(node, nss, containers=["app"], pods=["cart"]).pids == {71}
    fake.kubelet("staging", "other", "0" * 8 + "-0000-0000-0000-" + "0" * 12, [])
    with pytest.raises(C.ContainerError):
        C.select(node, nss, pods=["staging/other"])     # no process: not running


def test_container_names_ids_and_prefixes(fake):
    node, nss = _pod_node(fake)
    running = {p.container for p in node.running().values() if p.container}
    by = lambda sels: sorted(c.id[:1] for c in C.choose_containers(sels, running))  # noqa: E731
    assert by(["web"]) == ["a"] and by([ID["a"]]) == ["a"] and by(["aaaa"]) == ["a"]
    assert by(["app", "sidecar"]) == ["c", "d"]
    with pytest.raises(C.ContainerError, match="at least 4"):
        by(["aaa"])
    with pytest.raises(C.ContainerError, match="no running container named 'nope'"):
        by(["nope"])
    fake.process(82, v2(f"/system.slice/docker-{'a' * 63}f.scope"))
    running = {p.container for p in fake.node().running().values() if p.container}
    with pytest.raises(C.ContainerError) as exc:
        C.choose_containers(["aaaa"], running)
    assert "ambiguous" in str(exc.value) and "\n" not in str(exc.value)


def test_pods_by_name_namespace_and_uid(fake):
    node, _ = _pod_node(fake)
    pods = {p.pod for p in node.running().values() if p.pod}
    assert {p.uid for p in C.choose_pods(["cart"], pods)} == {UID}
    assert {p.uid for p in C.choose_pods(["shop/cart"], pods)} == {UID}
    assert {p.uid for p in C.choose_pods([UID], pods)} == {UID}
    with pytest.raises(C.ContainerError, match="no pod 'other/cart'"):
        C.choose_pods(["other/cart"], pods)


# -- --cgroup ----------------------------------------------------------------------------------

def test_cgroup_paths_and_unit_names(tmp_path):
    mount = tmp_path / "cg"
    for d in ("system.slice/nginx.service", "system.slice/sshd.service",
              "user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service",
              "kubepods.slice/kubepods-pod1.slice/cri-containerd-x.scope"):
        (mount / d).mkdir(parents=True)
    m = str(mount)
    assert cgroups.find("system.slice", m) == [f"{m}/system.slice"]
    assert cgroups.find("/system.slice/sshd.service", m) == [f"{m}/system.slice/sshd.service"]
    assert cgroups.find(f"{m}/system.slice/", m) == [f"{m}/system.slice"]
    assert cgroups.find("nginx.service", m) == [
        f"{m}/system.slice/nginx.service",
        f"{m}/user.slice/user-1000.slice/user@1000.service/app.slice/nginx.service"]
    assert cgroups.find("/", m) == [m]
    for bad in ("missing.service", "/system.slice/missing", "../../etc", ""):
        with pytest.raises(cgroups.CgroupError) as exc:
            cgroups.find(bad, m)
        assert "\n" not in str(exc.value)
    ids = cgroups.subtree_ids(cgroups.find("kubepods.slice", m))
    assert ids == {os.stat(mount / d).st_ino for d in (
        "kubepods.slice", "kubepods.slice/kubepods-pod1.slice",
        "kubepods.slice/kubepods-pod1.slice/cri-containerd-x.scope")}


def test_v2_mount_from_mountinfo(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text("25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n"
                    "26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n"
                    "27 25 0:24 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n")
    assert cgroups.v2_mount(str(info)) == "/sys/fs/cgroup/unified"
    info.write_text("25 30 0:22 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n")
    assert cgroups.v2_mount(str(info)) is None


# -- the filter ----------------------------------------------------------------------------------

def test_new_options_parse_and_target():
    flt = build_filter(container=["web"], pod=["shop/cart"], cgroup=["nginx.service"],
                       uid=["root,1000", "1000"])
    assert flt.uids == (0, 1000) and flt.targeted and flt.on_host
    assert flt.describe().startswith("--container web --pod shop/cart --cgroup nginx.service "
                                     "--uid 0 --uid 1000")
    for kw in ({"container": ["x"]}, {"pod": ["x"]}, {"cgroup": ["x"]}, {"uid": ["0"]}):
        assert build_filter(**kw).targeted
    assert not build_filter(uid=["0"]).on_host


@pytest.mark.parametrize("kw", [
    {"uid": ["no-such-user-here"]}, {"uid": ["4294967295"]}, {"uid": [",".join(map(str, range(17)))]},
    {"pod": ["/cart"]}, {"pod": ["shop/"]}, {"pod": ["a/b/c"]}, {"container": [" "]}, {"cgroup": [""]},
])
def test_bad_values_are_one_line_errors(kw):
    with pytest.raises(FilterError) as exc:
        build_filter(**kw)
    assert "\n" not in str(exc.value)


def test_uid_and_scope_in_python():
    from sockterm.engine import Scope
    sock = _sock(3, 9, None)
    sock.uid, sock.cgroup = 1000, 77
    assert build_filter(uid=["1000"]).matches(sock) and not build_filter(uid=["0"]).matches(sock)
    assert Scope(cgroup_ids=frozenset({77})).admits(sock)
    assert not Scope(cgroup_ids=frozenset({78})).admits(sock)
    assert Scope(owned_netns=frozenset({3})).admits(sock)                           # whole namespace
    assert Scope(owned_netns=frozenset(), owned_inodes=frozenset({9})).admits(sock)     # held
    assert Scope(owned_netns=frozenset(), owned_cgroups=frozenset({77})).admits(sock)   # created
    assert not Scope(owned_netns=frozenset({4}), owned_inodes=frozenset({8})).admits(sock)
    assert not Scope(cgroup_ids=frozenset({77}), owned_netns=frozenset({4})).admits(sock)   # AND
    mini = _sock(3, 0, None)            # time-wait: no inode, no cgroup
    assert not Scope(owned_netns=frozenset(), owned_inodes=frozenset({0, 8})).admits(mini)
    assert Scope(owned_netns=frozenset({3})).admits(mini)
    assert not Scope(cgroup_ids=frozenset({77})).admits(mini)    # --cgroup never selects one


def test_bpf_config_carries_uids_and_switches():
    from sockterm.engine import Scope
    from sockterm.engine.bpf import config, record
    flt = build_filter(uid=["0", "1000"])
    cfg = config.compile_config(flt, Scope(cgroup_ids=frozenset({1})), kill=False)
    assert (cfg.n_uids, list(cfg.uids)[:3]) == (2, [0, 1000, 0])
    assert cfg.flags & record.CFG_CGROUPS and not cfg.flags & record.CFG_SCOPE
    cfg = config.compile_config(flt, Scope(owned_netns=frozenset()), kill=True)
    assert cfg.flags & record.CFG_SCOPE and not cfg.flags & record.CFG_CGROUPS
    assert not config.compile_config(flt, Scope(), kill=True).flags & (record.CFG_SCOPE | record.CFG_CGROUPS)
