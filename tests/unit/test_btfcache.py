"""The minimized kernel BTF (engine/bpf/btfcache.py): what it keeps, the key
that ties it to one kernel and one object, and the cache it is never read
from unless only root can have written it. That libbpf relocates the object
against it exactly as against the kernel's BTF: tests/priv/test_btf_cache.py."""

from __future__ import annotations

import os
import struct

import pytest

from sockterm.engine.bpf import btfcache, btfmin
from sockterm.engine.bpf.engine import OBJECT_NAME, READ_OBJECT_NAME, object_path

VMLINUX = btfcache.VMLINUX_BTF


def shipped() -> bytes:
    with open(object_path(), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def kernel() -> btfmin.Btf:
    if not os.access(VMLINUX, os.R_OK):
        pytest.skip("no readable kernel BTF")
    return btfmin.kernel_btf(VMLINUX)


@pytest.fixture(scope="module")
def minimized(kernel) -> bytes:
    return btfmin.minimize(shipped(), kernel, btfcache.cache_key(shipped()))   # checks itself


def note(name: bytes, kind: int, desc: bytes) -> bytes:
    pad = lambda b: b + bytes(-len(b) % 4)
    return struct.pack("<III", len(name) + 1, len(desc), kind) + pad(name + b"\0") + pad(desc)


@pytest.mark.parametrize("name", [OBJECT_NAME, READ_OBJECT_NAME])
def test_every_relocation_of_the_shipped_objects_can_be_minimized(name):
    # a new kind of relocation in bpf/ (bpf_core_type_exists, an enum value)
    # would silently cost every run the kernel's whole BTF: it must fail here
    with open(object_path(name), "rb") as f:
        sections = btfmin.elf_sections(f.read())
    relos = btfmin.core_relos(sections[".BTF.ext"])
    assert relos
    kinds = {kind for _, _, kind in relos}
    assert kinds <= set(btfmin.FIELD_KINDS) | {btfmin.TYPE_ID_LOCAL}, kinds


def test_minimized_btf_keeps_only_what_the_relocations_reach(kernel, minimized):
    small = btfmin.Btf(minimized)
    assert len(minimized) < 16 << 10 and len(small.at) < 200 < len(kernel.at)
    key = btfcache.cache_key(shipped())
    assert minimized[small.str_at:small.str_at + len(key) + 2] == b"\0" + key + b"\0"
    structs = {small.name(small.type(i)[1]): i for i in range(1, len(small.at))
               if small.type(i)[0] == btfmin.STRUCT}
    for name in ("sock", "sock_common", "socket_alloc", "task_struct", "file", "net"):
        assert name in structs, name
    # the root keeps its size and only the members the object reads, at their offsets
    sock = structs["sock"]
    kept = {small.name(n): off for n, _, off in small.members(sock)}
    full_sock = btfmin.Resolver(btfmin.Btf(minimized), kernel, [(sock, 0, 0)]).cands[sock][0]
    full = {kernel.name(n): off for n, _, off in kernel.members(full_sock)}
    assert small.type(sock)[3] == kernel.type(full_sock)[3]
    assert "sk_socket" in kept and len(kept) < len(full) / 4
    assert all(full[name] == off for name, off in kept.items())


def test_attach_points_are_the_iterator_functions_written_after_the_key(kernel, minimized):
    sections = btfmin.elf_sections(shipped())
    points = btfmin.attach_points(sections, kernel)
    assert set(points) == {"iter/tcp", "iter/udp", "iter/task_file"}
    for section, tid in points.items():
        kind, name_off, _, _ = kernel.type(tid)
        assert kind == btfmin.FUNC and kernel.name(name_off) == "bpf_iter_" + section[5:]
    note = btfcache._note(minimized, btfcache.cache_key(shipped()))
    assert note.startswith(btfcache.NOTE_PREFIX)
    assert btfcache.parse_note(note)[0] == points
    # a function the kernel lacks is left to libbpf (it says why it is missing)
    assert btfmin.attach_points({"iter/tcp": b"", "iter/no_such_table": b"", ".text": b""},
                                  kernel) == {"iter/tcp": points["iter/tcp"]}


def test_the_note_says_which_kernel_funcs_the_kernel_has(kernel, minimized):
    # every object's note, the read object's too (it has no kfunc of its own):
    # what --backend auto asks of the kernel
    funcs = btfmin.kernel_funcs(kernel, ["bpf_sock_destroy", "bpf_no_such_kfunc", "bpf_iter_tcp"])
    assert funcs["bpf_no_such_kfunc"] == 0
    assert funcs["bpf_iter_tcp"] == btfmin.attach_points({"iter/tcp": b""}, kernel)["iter/tcp"]
    has = open(VMLINUX, "rb").read().find(b"\0bpf_sock_destroy\0") >= 0
    assert (funcs["bpf_sock_destroy"] > 0) == has
    if has:
        kind, name_off, _, _ = kernel.type(funcs["bpf_sock_destroy"])
        assert kind == btfmin.FUNC and kernel.name(name_off) == "bpf_sock_destroy"
    for name in (OBJECT_NAME, READ_OBJECT_NAME):
        with open(object_path(name), "rb") as f:
            obj = f.read()
        made = btfmin.minimize(obj, kernel, btfcache.cache_key(obj))
        note = btfcache._note(made, btfcache.cache_key(obj))
        assert btfcache.parse_note(note)[1] == {"bpf_sock_destroy": funcs["bpf_sock_destroy"]}


@pytest.mark.parametrize("note", [b"", b"sockterm-kernel:", b"sockterm-kernel:iter/tcp=",
                                  b"sockterm-kernel:iter/tcp=0", b"sockterm-kernel:iter/tcp=-4",
                                  b"sockterm-kernel:tcp=5", b"sockterm-kernel:iter/tcp=5;x",
                                  b"sockterm-kernel:iter/tcp=5;kfunc/=3",
                                  b"sockterm-kernel:iter/tcp=5;kfunc/x=-1",
                                  b"sockterm-attach:iter/tcp=5", b"other:iter/tcp=5"])
def test_a_note_that_is_not_ours_gives_nothing(note):
    assert btfcache.parse_note(note) == ({}, {})


def test_a_note_read_back():
    note = btfcache.kernel_note({"iter/udp": 7, "iter/tcp": 5}, {"bpf_sock_destroy": 0})
    assert note == b"sockterm-kernel:iter/tcp=5;iter/udp=7;kfunc/bpf_sock_destroy=0"
    assert btfcache.parse_note(note) == ({"iter/tcp": 5, "iter/udp": 7}, {"bpf_sock_destroy": 0})


def test_the_read_object_has_no_kfunc():
    # a kfunc extern makes libbpf read the kernel's whole BTF: only the object
    # the iterators destroy with may have one (engine.READ_OBJECT_NAME)
    def strings(name):
        btf = btfmin.Btf(btfmin.elf_sections(open(object_path(name), "rb").read())[".BTF"])
        return bytes(btf.data[btf.str_at:btf.str_end]).split(b"\0")
    assert b"bpf_sock_destroy" in strings(OBJECT_NAME)
    assert b"bpf_sock_destroy" not in strings(READ_OBJECT_NAME)
    assert {b"st_tcp", b"st_udp", b"st_held"} <= set(strings(READ_OBJECT_NAME))


def test_only_field_relocations_are_minimized():
    local = btfmin.Btf(btfmin.elf_sections(shipped())[".BTF"])
    with pytest.raises(btfcache.Unsupported, match="kind 7"):
        btfmin.Resolver(local, local, [(1, 0, 7)])       # BPF_CORE_TYPE_ID_TARGET


@pytest.mark.parametrize("name,want", [("sock", "sock"), ("sock___old", "sock"),
                                       ("sock___a___b", "sock___a"), ("__sk___x", "__sk"),
                                       ("a____b", "a____b"), ("x___", "x___")])
def test_essential_name_is_libbpfs(name, want):
    assert btfmin.essential(name) == want


def test_build_id_is_the_gnu_note():
    bid = bytes(range(20))
    notes = note(b"Xen", 18, b"\0" * 8) + note(b"GNU", 3, bid) + note(b"Linux", 1, b"x")
    assert btfcache.build_id(notes) == bid
    assert btfcache.build_id(note(b"Linux", 3, bid)) == b""
    assert btfcache.build_id(b"") == b""


def test_key_changes_with_kernel_and_object(tmp_path):
    notes_a, notes_b, btf = tmp_path / "a", tmp_path / "b", tmp_path / "btf"
    notes_a.write_bytes(note(b"GNU", 3, b"\1" * 20))
    notes_b.write_bytes(note(b"GNU", 3, b"\2" * 20))
    btf.write_bytes(b"x" * 100)
    key = btfcache.cache_key(b"obj", str(notes_a), str(btf))
    assert key.startswith(btfcache.KEY_PREFIX)
    assert key == btfcache.cache_key(b"obj", str(notes_a), str(btf))
    assert key != btfcache.cache_key(b"obj", str(notes_b), str(btf))
    assert key != btfcache.cache_key(b"obj2", str(notes_a), str(btf))
    btf.write_bytes(b"x" * 101)
    assert key != btfcache.cache_key(b"obj", str(notes_a), str(btf))
    # no build id, no cache: nothing would tell one kernel from the next
    assert btfcache.cache_key(b"obj", str(tmp_path / "missing"), str(btf)) == b""


def test_a_directory_others_can_write_is_never_used(tmp_path, minimized):
    # tmp_path is under /tmp (world-writable) and, without root, owned by us
    directory = tmp_path / "cache"
    directory.mkdir()
    name = f"{btfcache.digest(shipped())[:32]}-{btfcache.FORMAT}.btf"
    (directory / name).write_bytes(minimized)
    said = []
    assert btfcache.custom_btf(object_path(), said.append, str(directory)) is None
    assert "can be written by others than root" in said[-1]
    assert os.listdir(directory) == [name]           # nothing written either


def test_trusted_dir_walks_up_to_the_root(tmp_path):
    assert btfcache.trusted_dir("/") == ""
    assert "/tmp" in btfcache.trusted_dir("/tmp") or os.stat("/tmp").st_mode & 0o022 == 0
    link = tmp_path / "link"
    link.symlink_to("/")
    assert btfcache.trusted_dir(str(link)) != ""


def test_cache_off_when_asked(monkeypatch):
    monkeypatch.setenv(btfcache.CACHE_ENV, "")
    assert btfcache.custom_btf(object_path()) is None
