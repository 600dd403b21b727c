"""The auto engine decision: bpf only where a real load would succeed."""

from sockterm.host import probe

FEATURES = {"iter_tcp": True, "iter_udp": True, "sock_destroy_kfunc": True}
ROOT = {"CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_BPF", "CAP_PERFMON"}


def host(**kw):
    args = dict(kernel="6.18.44", btf=True, features=dict(FEATURES), caps=set(ROOT))
    args.update(kw)
    return probe.HostProbe(**args)


def test_root_on_the_host_gets_bpf():
    assert host().auto_engine() == "bpf" and host().why_not_bpf(True) == ""


def test_user_namespace_container_lockdown_fall_back_to_diag():
    assert "user namespace" in host(initial_userns=False).why_not_bpf(True)
    assert host(initial_userns=False).auto_engine() == "diag"
    no_bpf = host(caps={"CAP_NET_ADMIN"})
    assert no_bpf.auto_engine() == "diag" and "CAP_BPF" in no_bpf.why_not_bpf(True)
    assert host(caps={"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"}).auto_engine() == "bpf"
    assert host(lockdown="confidentiality").auto_engine() == "diag"
    assert host(lockdown="integrity").auto_engine() == "bpf"
    refused = host(seccomp=True, _refused="the bpf() system call is refused here (EPERM)")
    assert refused.auto_engine() == "diag"
    assert host(features=dict(FEATURES, sock_destroy_kfunc=False)).auto_engine() == "diag"


def test_list_needs_no_capability_kill_does():
    nobody = host(caps=set())
    assert nobody.missing_caps("diag", kill=False) == []
    assert nobody.missing_caps("diag", kill=True) == ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]
    assert not nobody.enters_other_namespaces
    assert not host(initial_userns=False).enters_other_namespaces
    assert host().enters_other_namespaces


def test_user_namespace_and_lockdown_files(tmp_path):
    uid_map = tmp_path / "uid_map"
    uid_map.write_text("         0          0 4294967295\n")
    assert probe.in_initial_userns(str(uid_map))
    uid_map.write_text("         0          0          1\n")
    assert not probe.in_initial_userns(str(uid_map))
    lock = tmp_path / "lockdown"
    lock.write_text("none integrity [confidentiality]\n")
    assert probe.lockdown(str(lock)) == "confidentiality"
    assert probe.lockdown(str(tmp_path / "missing")) == ""


def test_the_decision_is_cheap(monkeypatch):
    """What auto adds to every run: a few small files read (the BTF scan was
    there before); the bpf() probe only under a seccomp filter."""
    import time
    calls = []
    monkeypatch.setattr(probe, "bpf_syscall_refused", lambda: calls.append(1) or "")
    host(seccomp=False).auto_engine()
    assert calls == []
    host(seccomp=True).auto_engine()
    host_s = host(seccomp=True)
    host_s.auto_engine()
    host_s.auto_engine()                 # asked once a run
    assert calls == [1, 1]
    start = time.perf_counter()
    for _ in range(20):
        probe.in_initial_userns(), probe.lockdown(), probe.seccomp_filtered(), probe.effective_caps()
    assert (time.perf_counter() - start) / 20 < 0.005


def test_a_kernel_that_destroys_nothing_points_to_graceful():
    """kill on a kernel without the kfunc and without SOCK_DESTROY: one line,
    naming both and suggesting --graceful; with the kfunc, --backend bpf too."""
    from sockterm.core.engines import cannot_destroy
    old = host(features={"iter_tcp": True, "iter_udp": True, "sock_destroy_kfunc": False})
    text = cannot_destroy(old, "diag")
    assert "\n" not in text and "bpf_sock_destroy" in text and "CONFIG_INET_DIAG_DESTROY" in text
    assert text.endswith("kill --graceful shuts connections down through the processes holding "
                         "them instead")
    text = cannot_destroy(host(), "diag")
    assert "--backend bpf" in text and "kill --graceful" in text
