"""What sockterm does differently in a container (its image, a debug pod): the
cgroup tree seen from a cgroup namespace of its own, `ip netns` names under
SOCKTERM_ROOT_PREFIX, and doctor's container check. The real runs are in
tests/priv/test_image.py."""

import os

import pytest

from sockterm import doctor
from sockterm.host import cgroups, netns, probe

# a privileged pod in a cgroup namespace of its own, the host's root bound at /host:
# its own cgroup2 mount first (its cgroup only), the host's rooted two levels above it
POD_MOUNTINFO = (
    "1200 1100 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
    "1300 1100 0:4 / /host rw - ext4 /dev/vda1 rw\n"
    "1301 1300 0:30 /../.. /host/sys/fs/cgroup rw - cgroup2 cgroup2 rw\n"
)


def test_the_cgroup_mount_that_sees_the_most_is_chosen(tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(POD_MOUNTINFO)
    assert cgroups.v2(str(info)) == ("/host/sys/fs/cgroup", "/../..")
    assert cgroups.v2_mount(str(info)) == "/host/sys/fs/cgroup"
    info.write_text(POD_MOUNTINFO.splitlines()[0] + "\n")
    assert cgroups.v2(str(info)) == ("/sys/fs/cgroup", "/")


@pytest.mark.parametrize("path, mount, root, want", [
    ("/kubepods.slice/x.scope", "/sys/fs/cgroup", "/", "/sys/fs/cgroup/kubepods.slice/x.scope"),
    ("/", "/sys/fs/cgroup", "/", "/sys/fs/cgroup"),
    # another pod's container, read from inside a pod's cgroup namespace
    ("/../../kubepods-besteffort.slice/cri-containerd-a.scope", "/host/sys/fs/cgroup", "/../..",
     "/host/sys/fs/cgroup/kubepods-besteffort.slice/cri-containerd-a.scope"),
    # inside the reader's own namespace: not where the host's mount can say
    ("/child", "/host/sys/fs/cgroup", "/../..", None),
    ("/../../x", "/sys/fs/cgroup", "/", None),
    ("relative", "/sys/fs/cgroup", "/", None),
])
def test_cgroup_paths_resolve_against_the_mounts_root(path, mount, root, want):
    assert cgroups.path_of(path, mount, root) == want


def test_ip_netns_names_are_also_read_under_the_root_prefix(monkeypatch):
    monkeypatch.delenv("SOCKTERM_ROOT_PREFIX", raising=False)
    assert netns.netns_dirs() == ["/run/netns"]
    monkeypatch.setenv("SOCKTERM_ROOT_PREFIX", "/")
    assert netns.netns_dirs() == ["/run/netns"]
    monkeypatch.setenv("SOCKTERM_ROOT_PREFIX", "/host")
    assert netns.netns_dirs() == ["/run/netns", "/host/run/netns"]


def _host(caps=("CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"), btf=True):
    return probe.HostProbe(kernel="6.18", btf=btf, features={}, caps=set(caps))


@pytest.fixture
def outside(monkeypatch):
    """No container marker, the host's PID namespace."""
    for name in ("SOCKTERM_ROOT_PREFIX", "container", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(netns, "kthreadd_netns", lambda: "/proc/2/ns/net")
    monkeypatch.setattr(os.path, "exists", lambda p, real=os.path.exists:
                        False if p == "/run/.containerenv" else real(p))
    return monkeypatch


def test_doctor_says_nothing_of_containers_on_a_host(outside):
    assert doctor.container_checks(_host()) == []


def test_doctor_names_everything_a_container_lacks(outside, tmp_path):
    outside.setattr(netns, "kthreadd_netns", lambda: None)
    outside.setenv("SOCKTERM_ROOT_PREFIX", str(tmp_path))
    [check] = doctor.container_checks(_host(caps=("CAP_NET_ADMIN",), btf=False))
    assert check.name == "container" and check.ok is False
    for what in ("not in the host's PID namespace", "--pid=host", "hostPID: true", "no CAP_BPF",
                 "no /sys/kernel/btf/vmlinux", f"no container runtime's files under {tmp_path}"):
        assert what in check.detail, what
    assert "\n" not in check.detail


def test_doctor_in_a_node_debug_pod_with_everything(outside, tmp_path):
    (tmp_path / "var/log/pods").mkdir(parents=True)
    outside.setenv("SOCKTERM_ROOT_PREFIX", str(tmp_path))
    [check] = doctor.container_checks(_host())
    assert check.ok is True and f"runtime files read under {tmp_path}" in check.detail
