"""The host probe's search of the kernel's BTF: names in the string section only."""

from __future__ import annotations

import mmap

import pytest

from sockterm.host import probe


def btf_blob(strings: list[bytes], types: bytes = b"") -> bytes:
    table = b"\0" + b"\0".join(strings) + b"\0"
    header = probe._BTF_HEADER.pack(0xEB9F, 1, 0, probe._BTF_HEADER.size, 0, len(types),
                                    len(types), len(table))
    return header + types + table


@pytest.fixture(params=["mmap", "read"])
def how(request, monkeypatch):
    if request.param == "read":      # kernels before 6.16 cannot map the file
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(mmap, "mmap", refuse)
    return request.param


def test_finds_feature_names(tmp_path, how):
    path = tmp_path / "vmlinux"
    path.write_bytes(btf_blob([b"sock", b"bpf_iter__tcp", b"bpf_iter__udp", b"bpf_sock_destroy"]))
    assert probe.btf_names(str(path)) == {"iter_tcp": True, "iter_udp": True,
                                          "sock_destroy_kfunc": True}


def test_only_whole_names_in_the_string_section(tmp_path, how):
    # a name in the type section, or only as a prefix of another, is not the feature
    path = tmp_path / "vmlinux"
    path.write_bytes(btf_blob([b"bpf_iter__tcp", b"bpf_sock_destroy_x"],
                              types=b"\0bpf_iter__udp\0" + b"\0" * 6))
    assert probe.btf_names(str(path)) == {"iter_tcp": True, "iter_udp": False,
                                          "sock_destroy_kfunc": False}


@pytest.mark.parametrize("content", [b"", b"not btf at all, but long enough to parse"])
def test_not_btf_means_no_features(tmp_path, content, how):
    path = tmp_path / "vmlinux"
    path.write_bytes(content)
    assert not any(probe.btf_names(str(path)).values())
    assert not any(probe.btf_names(str(tmp_path / "missing")).values())
