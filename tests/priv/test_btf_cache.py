"""The minimized kernel BTF against the real kernel and libbpf: the object
relocates against it exactly as against the kernel's whole BTF, and the cache
is used only while its key holds and only root can have written it."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import traced
from sockterm.engine.bpf import btfcache, btfmin, libbpf
from sockterm.engine.bpf.engine import HELD_PROGRAMS, PROGRAMS, SCOPED_PROGRAMS, object_path

PROGRAM_NAMES = (*PROGRAMS.values(), *SCOPED_PROGRAMS.values(), *HELD_PROGRAMS.values())
LD_IMM64 = 0x18
MAP_SRC_REGS = (1, 2, 5, 6)     # BPF_PSEUDO_MAP_FD/_VALUE/_IDX/_IDX_VALUE: fds differ per load


@pytest.fixture
def cache_dir():
    """A directory only root can write (under /run: /tmp is everyone's)."""
    path = tempfile.mkdtemp(prefix="sockterm-btf-", dir="/run")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def relocated(custom: str | None) -> dict[str, bytes]:
    """Every program's instructions after libbpf's CO-RE relocation
    (bpf_object__prepare: relocated, maps created, nothing verified)."""
    lib = libbpf.load()
    c = lib.lib
    c.bpf_object__prepare.argtypes, c.bpf_object__prepare.restype = [ctypes.c_void_p], ctypes.c_int
    c.bpf_program__insns.argtypes, c.bpf_program__insns.restype = [ctypes.c_void_p], ctypes.c_void_p
    c.bpf_program__insn_cnt.argtypes = [ctypes.c_void_p]
    c.bpf_program__insn_cnt.restype = ctypes.c_size_t
    obj = lib.bpf_object__open_file(object_path().encode(), libbpf.open_opts(custom))
    assert obj
    try:
        assert c.bpf_object__prepare(obj) == 0, lib.log[-5:]
        out = {}
        for name in PROGRAM_NAMES:
            prog = lib.bpf_object__find_program_by_name(obj, name.encode())
            insns = bytearray(ctypes.string_at(c.bpf_program__insns(prog),
                                               8 * c.bpf_program__insn_cnt(prog)))
            for at in range(0, len(insns) - 8, 8):
                if insns[at] == LD_IMM64 and insns[at + 1] >> 4 in MAP_SRC_REGS:
                    insns[at + 4:at + 8] = insns[at + 12:at + 16] = bytes(4)
            out[name] = bytes(insns)
        return out
    finally:
        lib.bpf_object__close(obj)


def test_object_relocates_against_the_minimized_btf_as_against_the_kernels(cache_dir):
    path = btfcache.custom_btf(object_path(), directory=cache_dir).path
    assert path and path.startswith(cache_dir)
    assert relocated(path) == relocated(None)
    # and the comparison can fail: one member moved, one relocation differs
    with open(path, "rb") as f:
        data = bytearray(f.read())
    small = btfmin.Btf(bytes(data))
    sock = next(i for i in range(1, len(small.at)) if small.name(small.type(i)[1]) == "sock_common")
    names = [small.name(n) for n, _, _ in small.members(sock)]
    at = small.at[sock] + 12 + 12 * names.index("skc_family") + 8
    data[at:at + 4] = (int.from_bytes(data[at:at + 4], "little") + 8).to_bytes(4, "little")
    moved = os.path.join(cache_dir, "moved.btf")
    with open(moved, "wb") as f:
        f.write(data)
    assert relocated(moved) != relocated(None)


def test_cache_is_reused_while_its_key_holds(cache_dir, tmp_path):
    said = []
    path = btfcache.custom_btf(object_path(), said.append, cache_dir).path
    assert "made" in said[-1]
    first = os.stat(path)
    assert first.st_uid == 0 and first.st_mode & 0o777 == 0o644
    assert btfcache.custom_btf(object_path(), said.append, cache_dir).path == path
    assert "CO-RE against" in said[-1] and os.stat(path).st_ino == first.st_ino
    # another kernel (another build id): the key inside the file no longer
    # matches, the file is made again and carries the new key
    notes = tmp_path / "notes"
    notes.write_bytes(b"\4\0\0\0\24\0\0\0\3\0\0\0GNU\0" + b"\x5a" * 20)
    assert btfcache.custom_btf(object_path(), said.append, cache_dir, notes_path=str(notes)).path == path
    assert "made for another kernel or object; regenerating" in said[-2]
    key = btfcache.cache_key(open(object_path(), "rb").read(), str(notes))
    with open(path, "rb") as f:
        assert key in f.read()
    # back on this kernel: stale again, regenerated again, never used as is
    assert btfcache.custom_btf(object_path(), said.append, cache_dir).path == path
    assert "regenerating" in said[-2]


@pytest.mark.parametrize("how", ["chmod", "chown"])
def test_a_cache_file_others_could_write_is_never_used(cache_dir, how):
    path = btfcache.custom_btf(object_path(), directory=cache_dir).path
    if how == "chmod":
        os.chmod(path, 0o666)
    else:
        os.chown(path, 65534, 65534)
    said = []
    assert btfcache.custom_btf(object_path(), said.append, cache_dir).path == path
    assert "not a regular file that only root can write" in said[-2]
    st = os.stat(path)
    assert st.st_uid == 0 and st.st_mode & 0o022 == 0


def test_a_cache_directory_others_could_write_is_never_used(cache_dir):
    path = btfcache.custom_btf(object_path(), directory=cache_dir).path
    os.chown(cache_dir, 65534, 65534)
    said = []
    assert btfcache.custom_btf(object_path(), said.append, cache_dir) is None
    assert "can be written by others than root" in said[-1]
    # a symlink in place of the file is not followed either
    os.chown(cache_dir, 0, 0)
    os.replace(path, path + ".real")
    os.symlink(path + ".real", path)
    assert btfcache.custom_btf(object_path(), said.append, cache_dir).path == path
    assert not os.path.islink(path)


def test_a_run_uses_the_cache(cache_dir):
    # only the socket iterators: the one pass is not what this is about
    env = dict(os.environ, SOCKTERM_CACHE_DIR=cache_dir, SOCKTERM_WALK="all")
    argv = [sys.executable, "-m", "sockterm", "--backend", "bpf", "-v", "list", "--netns", "host",
            "--no-processes", "--dst", "192.0.2.1:9"]
    runs = [subprocess.run(argv, capture_output=True, text=True, env=env) for _ in range(2)]
    for run in runs:
        assert run.returncode in (0, 1), run.stderr
    assert "btf cache: made" in runs[0].stderr
    assert "btf cache: CO-RE against" in runs[1].stderr


def test_attach_points_are_where_libbpf_attaches():
    lib = libbpf.load()
    c = lib.lib
    c.btf__load_vmlinux_btf.restype = ctypes.c_void_p
    c.btf__free.argtypes = [ctypes.c_void_p]
    vmlinux = c.btf__load_vmlinux_btf()
    assert vmlinux
    try:
        points = btfmin.attach_points(btfmin.elf_sections(open(object_path(), "rb").read()),
                                        btfmin.kernel_btf(btfcache.VMLINUX_BTF))
        assert points
        for section, tid in points.items():
            name = ("bpf_iter_" + section.split("/", 1)[1]).encode()
            assert lib.btf__find_by_name_kind(vmlinux, name, 12) == tid     # BTF_KIND_FUNC
    finally:
        c.btf__free(vmlinux)


# in every kernel of the matrix: the attach points are this kernel's; the
# engine param makes a kernel whose iterators are refused (5.10) skip it, and
# the kill a kernel without the kfunc (6.1)
@pytest.mark.kernels
@pytest.mark.parametrize("engine", ["bpf"])
@pytest.mark.parametrize("kill", [False, pytest.param(True, marks=pytest.mark.bpf_kill)],
                         ids=["match", "kill"])
def test_only_a_kill_in_the_kernel_reads_the_kernels_btf(cache_dir, monkeypatch, kill, engine):
    """The iterators attached through the cached attach points find and
    destroy what libbpf's own would; only the kill's object (the kfunc)
    makes libbpf read the kernel's BTF."""
    import errno
    import socket

    from sockterm import model
    from sockterm.engine import Scope
    from sockterm.engine.bpf.engine import BpfEngine
    from sockterm.filter import build_filter
    monkeypatch.setattr(libbpf, "LIBBPF_INFO", 2)      # keep libbpf's debug lines too
    monkeypatch.setenv(btfcache.CACHE_ENV, cache_dir)
    here = model.Namespace(os.stat("/proc/self/ns/net").st_ino, "host", "/proc/self/ns/net")
    for attempt in range(2):                # the first makes the cache
        server = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        said = []
        engine = BpfEngine(flt=build_filter(dst=[f"127.0.0.1:{server.getsockname()[1]}"]),
                           scope=Scope(), kill=kill, owners=True, held=True, log=said.append)
        try:
            engine.open()
            assert set(engine.links) == {"tcp", "udp"} and engine.one_pass and not engine.lost
            fds = engine.enter()
            found = [sock for batch in engine.read(fds, here) for sock in batch]
            engine.release(fds)
        finally:
            engine.close()
        assert [(s.dport, s.result) for s in found] == [
            (server.getsockname()[1], model.KILLED if kill else model.MATCHED)]
        client.settimeout(5)
        if kill:
            with pytest.raises(OSError) as err:
                client.recv(1)
            assert err.value.errno == errno.ECONNABORTED
        else:
            peer.send(b"x")
            assert client.recv(1) == b"x"
        for sock in (client, peer, server):
            sock.close()
        assert ("made" if attempt == 0 else "CO-RE against") in "\n".join(said)
    read_btf = [line for line in said if "kernel BTF" in line]
    if kill:            # the kfunc: libbpf resolves it in the kernel's BTF
        assert read_btf, said[-20:]
    else:
        assert not read_btf, read_btf


def bpf_programs_loaded(argv: list) -> tuple[list, subprocess.CompletedProcess]:
    """The programs a sockterm run loads, in order (BPF_PROG_LOAD, seen by strace)."""
    import re
    trace, run = traced("bpf", argv)
    return re.findall(r'BPF_PROG_LOAD.*?prog_name="(st_\w+)"', trace), run


def test_a_listing_loads_the_one_pass_only_once_something_matched():
    """A match in one namespace walks it; who holds what matched comes from
    the one pass's program, loaded when something did: a match that finds
    nothing does not pay its verification."""
    import json
    import socket
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    peer, _ = server.accept()
    try:
        nothing, run = bpf_programs_loaded(["--backend", "bpf", "match", "--netns", "host",
                                            "--dst", "192.0.2.1:9"])
        assert run.returncode == 1, run.stderr
        assert sorted(nothing) == ["st_tcp", "st_udp"], nothing
        port = server.getsockname()[1]
        found, run = bpf_programs_loaded(["--backend", "bpf", "match", "--netns", "host", "-o",
                                          "json", "--dst", f"127.0.0.1:{port}"])
        assert run.returncode == 0, run.stderr
        assert sorted(found) == ["st_held", "st_tcp", "st_udp"], found
        [sock] = json.loads(run.stdout)["sockets"]
        assert sock["sport"] == client.getsockname()[1]
        assert {p["pid"] for p in sock["processes"]} == {os.getpid()}
        # a kill attributes before it reads: the pass's program loads with the rest
        killed, run = bpf_programs_loaded(["--backend", "bpf", "kill", "--yes", "--netns", "host",
                                           "--dst", "192.0.2.1:9"])
        assert run.returncode == 1, run.stderr
        assert "st_held" in killed, killed
    finally:
        for sock in (client, peer, server):
            sock.close()


def test_auto_decides_from_the_cache_without_searching_the_kernels_btf(cache_dir, monkeypatch):
    """--backend auto asks which iterators and kfuncs the kernel has: the
    cached BTF says (what was found when it was made), so a run with the cache
    made never opens the kernel's BTF; what it says is what auto decides by."""
    import re

    from sockterm import engine
    from sockterm.engine.bpf.engine import READ_OBJECT_NAME
    from sockterm.host import probe
    monkeypatch.setenv(btfcache.CACHE_ENV, cache_dir)
    env = dict(os.environ, SOCKTERM_CACHE_DIR=cache_dir)
    argv = ["-v", "match", "--netns", "host", "--dst", "192.0.2.1:9"]

    def run() -> tuple[int, str]:
        trace, done = traced("openat", argv, env)
        assert done.returncode == 1, done.stderr
        return len(re.findall(r"/sys/kernel/btf/vmlinux", trace)), done.stderr

    assert engine.known_kernel_features() is None and os.listdir(cache_dir) == []
    opened, said = run()                      # searches, then makes the cache
    assert opened and "btf cache: made" in said
    assert engine.known_kernel_features() == probe.btf_names()
    opened, said = run()
    assert opened == 0 and "engine: bpf" in said, said
    # a kill's object says the same (a host that only ever kills has only its cache)
    from sockterm.engine.bpf.engine import OBJECT_NAME
    kills = btfcache.custom_btf(object_path(OBJECT_NAME), directory=cache_dir)
    for name in os.listdir(cache_dir):
        if name != os.path.basename(kills.path):
            os.unlink(os.path.join(cache_dir, name))
    assert btfcache.custom_btf(object_path(READ_OBJECT_NAME), directory=cache_dir, make=False) is None
    assert engine.known_kernel_features() == probe.btf_names()
    # the record is what decides: one made saying the kernel has no kfunc
    for name in os.listdir(cache_dir):
        os.unlink(os.path.join(cache_dir, name))
    real = btfmin.kernel_funcs
    monkeypatch.setattr(btfmin, "kernel_funcs", lambda kernel, names: dict.fromkeys(names, 0)
                        if "bpf_sock_destroy" in names else real(kernel, names))
    assert btfcache.custom_btf(object_path(READ_OBJECT_NAME), directory=cache_dir).kfuncs == {
        "bpf_sock_destroy": 0}
    assert engine.known_kernel_features()["sock_destroy_kfunc"] is False
    opened, said = run()
    assert opened == 0 and "engine: diag (the kernel lacks the bpf_sock_destroy kfunc" in said, said


def test_a_cache_directory_that_cannot_be_written_is_not_made_on_every_run(cache_dir):
    """A read-only cache directory (a read-only root, a read-only mount): the
    minimized BTF would be made on every run and never kept, ~150 ms each;
    libbpf reads the kernel's BTF instead, and the run works."""
    command = [sys.executable, "-m", "sockterm", "--backend", "bpf", "-v", "match", "--netns",
               "host", "--dst", "192.0.2.1:9"]
    read_only = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 'mount -t tmpfs -o ro,mode=755 tmpfs "$0" && exec "$@"', cache_dir]
    run = subprocess.run(read_only + command, capture_output=True, text=True,
                         env=dict(os.environ, SOCKTERM_CACHE_DIR=cache_dir))
    assert run.returncode == 1, run.stderr
    assert f"{cache_dir} cannot be written: using the kernel's BTF" in run.stderr
    assert "regenerating" not in run.stderr and "btf cache: made" not in run.stderr
    assert "0 sockets in 1 namespace searched (engine bpf)" in run.stderr
    # and a writable one is made as before
    run = subprocess.run(command, capture_output=True, text=True,
                         env=dict(os.environ, SOCKTERM_CACHE_DIR=cache_dir))
    assert run.returncode == 1 and "btf cache: made" in run.stderr, run.stderr
