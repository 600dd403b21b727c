"""records.Record: the dataclass behaviour the plain model classes keep
(equality and repr by field, unhashable, a shallow copy), and the probe's
kernel features read only when asked."""

import pytest

from sockterm import model
from sockterm.host import probe


def test_equal_by_fields_unhashable_and_copied_shallowly():
    a = model.Namespace(1, "host", "/proc/self/ns/net", pids=[7])
    b = model.Namespace(1, "host", "/proc/self/ns/net", pids=[7])
    assert a == b and a is not b
    assert a != model.Namespace(1, "host", "/proc/self/ns/net", pids=[8])
    assert a != (1, "host")                              # another class: not equal
    with pytest.raises(TypeError):
        hash(a)
    assert repr(a).startswith("Namespace(ino=1, name='host', path='/proc/self/ns/net'")
    report = model.NamespaceReport(ns=a, engine="bpf", matched=3)
    copy = report.copy()
    assert copy == report and copy is not report and copy.ns is a
    copy.matched += 1
    assert report.matched == 3                           # its own counters
    # each instance its own lists, as default_factory made them
    assert model.Namespace(2, "x", "p").aliases is not model.Namespace(3, "y", "q").aliases


def test_kernel_features_are_read_when_first_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(probe, "btf_names", lambda: calls.append(1) or
                        {"iter_tcp": True, "iter_udp": True, "sock_destroy_kfunc": False})
    host = probe.probe()
    assert calls == []
    assert host.bpf_can_list and not host.bpf_can_kill
    assert host.features["iter_tcp"] and calls == [1]    # once


def test_kernel_features_known_without_a_search(monkeypatch):
    # what a record says (the BTF cache's, engine.known_kernel_features) is
    # taken as is; without one the kernel's BTF is searched
    searched = []
    monkeypatch.setattr(probe, "btf_names", lambda: searched.append(1) or
                        {"iter_tcp": True, "iter_udp": True, "sock_destroy_kfunc": True})
    known = {"iter_tcp": True, "iter_udp": True, "sock_destroy_kfunc": False}
    host = probe.probe(known=lambda: known)
    assert host.bpf_can_list and not host.bpf_can_kill and searched == []
    host = probe.probe(known=lambda: None)
    assert host.bpf_can_kill and searched == [1]
