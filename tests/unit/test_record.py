"""The record layout has one definition (bpf/sockterm.h) and one mirror
(sockterm/record.py). These tests make drift impossible to miss: against the
C compiler's view of the header, and against the shipped object's BTF."""

import ctypes
import os
import shutil
import socket
import subprocess

import pytest

from sockterm import model
from sockterm.engine.bpf import config as bpf_config, record
from sockterm.engine import Scope
from sockterm.engine.bpf import engine as bpf_engine

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = os.path.join(ROOT, "bpf", "sockterm.h")


def c_layouts(tmp_path):
    """{struct: (size, {field: offset})} as a C compiler lays out bpf/sockterm.h."""
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <linux/types.h>',
             f'#include "{HEADER}"', "int main(void) {"]
    for name, cls in record.MIRRORS.items():
        lines.append(f'printf("{name} size %zu\\n", sizeof(struct {name}));')
        for field, _ in cls._fields_:
            lines.append(f'printf("{name} {field} %zu\\n", offsetof(struct {name}, {field}));')
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run([cc, str(src), "-o", str(exe)], check=True)
    out = {}
    for line in subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.splitlines():
        name, field, value = line.split()
        size, fields = out.setdefault(name, [0, {}])
        if field == "size":
            out[name][0] = int(value)
        else:
            fields[field] = int(value)
    return {name: (size, fields) for name, (size, fields) in out.items()}


def test_mirror_matches_header(tmp_path):
    theirs = c_layouts(tmp_path)
    for name, cls in record.MIRRORS.items():
        assert theirs[name] == record.layout(cls), name


def test_mirror_matches_shipped_object_btf():
    from sockterm.engine.bpf import libbpf
    lib = libbpf.load()
    obj = lib.bpf_object__open_file(bpf_engine.object_path().encode(), None)
    assert obj, "cannot open the shipped object"
    try:
        btf = lib.bpf_object__btf(obj)
        assert record.layout_mismatches(lambda n: lib.struct_layout(btf, n)) == []
    finally:
        lib.bpf_object__close(obj)


def test_records_have_no_implicit_padding():
    for cls in record.MIRRORS.values():
        end = 0
        for name, ctype in cls._fields_:
            assert getattr(cls, name).offset == end, (cls.__name__, name)
            end += ctypes.sizeof(ctype)
        assert end == ctypes.sizeof(cls), cls.__name__


def test_decode_round_trip():
    rec = record.StRec(cookie=0x1122334455667788, ino=4242, uid=1000,
                       flags=record.F_MINI, sport=43210, dport=80, family=socket.AF_INET,
                       proto=socket.IPPROTO_TCP, state=1, result=record.RES_DESTROYED)
    mapped = model.v4_mapped(socket.inet_aton("10.0.0.5"))
    ctypes.memmove(rec.dst, mapped, 16)
    ctypes.memmove(rec.src, model.v4_mapped(socket.inet_aton("10.1.0.2")), 16)
    rec6 = record.StRec(cookie=7, family=socket.AF_INET6, proto=socket.IPPROTO_UDP, state=7,
                        sport=53, dport=0)
    ctypes.memmove(rec6.src, socket.inet_pton(socket.AF_INET6, "fd00::1"), 16)
    buf = bytes(rec) + bytes(rec6)
    ns = model.Namespace(ino=4026531840, name="c1", path="/run/netns/c1")
    a, b = bpf_engine.decode(buf, ns)
    assert (a.cookie, a.ino, a.uid, a.sport, a.dport, a.family, a.proto) == \
        (0x1122334455667788, 4242, 1000, 43210, 80, 4, "tcp")
    assert a.dst_text() == "10.0.0.5" and a.src_text() == "10.1.0.2"
    assert a.mini and a.result == model.KILLED and a.netns_name == "c1"
    assert b.family == 6 and b.proto == "udp" and b.src_text() == "fd00::1"
    assert b.state_name() == "unconnected" and b.result == model.MATCHED


def test_held_records_decode_once_per_socket_with_every_holder():
    """The one pass writes a record per (process, descriptor): a socket held
    by a forked pair and dup'ed comes back once, with each process once.
    Sockets are told apart by inode: two whose cookies the kernel has not
    made yet (0) stay two."""
    def held(ino, pid, comm, cookie=None, netns=4026531840):
        rec = record.StHeld(pid=pid, comm=comm, netns=netns, fd=pid + 100 * ino)
        rec.rec.cookie, rec.rec.ino = ino if cookie is None else cookie, 1000 + ino
        rec.rec.family, rec.rec.proto, rec.rec.state = socket.AF_INET6, socket.IPPROTO_TCP, 1
        rec.rec.sport, rec.rec.dport, rec.rec.ifindex = 5000, 80, 3
        return bytes(rec)
    buf = held(1, 10, b"nginx") + held(1, 11, b"nginx") + held(1, 10, b"nginx") + held(2, 12, b"curl")
    found: dict = {}
    bpf_engine.decode_held(buf, {4026531840: "web"}, found, processes=True)
    a, b = found[1001], found[1002]
    assert a.processes == ((10, "nginx"), (11, "nginx")) and b.processes == ((12, "curl"),)
    # a descriptor of each holder, for kill --graceful: the first the pass met
    assert a.fds == ((10, 110), (11, 111)) and b.fds == ((12, 212),)
    assert (a.ino, a.cookie, a.netns_name, a.ifindex, a.family, a.proto, a.dport) == \
        (1001, 1, "web", 3, 6, "tcp", 80)
    assert a.result == model.MATCHED and not a.mini
    quiet: dict = {}
    bpf_engine.decode_held(buf, {}, quiet, processes=False)
    assert quiet[1001].processes is None and quiet[1001].fds is None and len(quiet) == 2
    # holders in pid order, whatever order the kernel walked the tasks in
    late: dict = {}
    bpf_engine.decode_held(held(1, 30, b"b") + held(1, 20, b"a") + held(1, 25, b"c"), {}, late,
                           processes=True)
    assert late[1001].processes == ((20, "a"), (25, "c"), (30, "b"))
    fresh: dict = {}
    bpf_engine.decode_held(held(3, 20, b"a", cookie=0) + held(4, 21, b"b", cookie=0), {}, fresh,
                           processes=True)
    assert sorted(fresh) == [1003, 1004] and {s.cookie for s in fresh.values()} == {0}


def _held_record(cookie, pid, netns, comm=b"app"):
    rec = record.StHeld(pid=pid, comm=comm, netns=netns)
    rec.rec.cookie, rec.rec.ino = cookie, 1000 + cookie
    rec.rec.family, rec.rec.proto, rec.rec.state = socket.AF_INET, socket.IPPROTO_TCP, 1
    return bytes(rec)


def test_one_pass_records_are_kept_by_namespace_and_decoded_on_demand():
    """Half a million held sockets must not become half a million Socks at
    once: the records are split by namespace (runs of whole records, in
    order) and a namespace is decoded when its turn comes."""
    a, b = 4026531001, 4026531002
    chunks = [_held_record(1, 10, a) + _held_record(2, 10, a) + _held_record(3, 11, b)
              + _held_record(1, 12, a),
              _held_record(4, 11, b) + _held_record(5, 11, b)]
    runs = bpf_engine.split_by_namespace(iter(chunks))      # the reads, as they come
    size = record.HELD.size
    assert [len(r) // size for r in runs[a]] == [2, 1] and [len(r) // size for r in runs[b]] == [1, 2]
    assert runs[b][1] is chunks[1]           # a chunk of one namespace is not copied

    def decode(runs_of_ns):
        found: dict = {}
        for run in runs_of_ns:
            bpf_engine.decode_held(run, {a: "a"}, found, processes=True)
        decoded.append(len(found))
        return list(found.values())
    decoded: list = []
    held = model.Held(runs, decode, {}, count=6)
    socks = held.by_namespace()
    kept = socks.get(a)
    assert [s.cookie for s in kept] == [1, 2] and kept[0].processes == ((10, "app"), (12, "app"))
    assert socks.get(a) is kept and socks.pop(a) is kept          # a kill sees the same Socks
    assert [s.cookie for s in socks.pop(b)] == [3, 4, 5] and socks.pop(b) is not socks.pop(b)
    assert socks.get(4026531003, "none") == "none" and socks.pop(4026531003, ()) == ()
    assert held.owners().by_ino == {1001: ((10, "app"), (12, "app")), 1002: ((10, "app"),),
                                    1003: ((11, "app"),), 1004: ((11, "app"),), 1005: ((11, "app"),)}
    # the index a walk needs is of the walked namespaces' sockets only: the
    # others' records are not even decoded
    decoded.clear()
    assert held.owners({b}).by_ino == {1003: ((11, "app"),), 1004: ((11, "app"),),
                                       1005: ((11, "app"),)}
    assert decoded == [3]
    assert held.owners(set()).by_ino == {} and decoded == [3]
    # and a run's: a walked namespace's index, built when its batches come,
    # kept while they do, let go when it is done
    decoded.clear()
    walked = model.NamespaceOwners(held)
    assert walked.of(a).get(1001) == ((10, "app"), (12, "app")) and walked.of(a).get(1003) == ()
    assert decoded == [2]                      # a's records, once for both lookups
    walked.done(a)
    assert walked.of(b).get(1003) == ((11, "app"),) and decoded == [2, 3]
    assert walked.of(a).get(1002) == ((10, "app"),) and decoded == [2, 3, 2]   # built again
    whole = held.owners()
    assert whole.of(a) is whole and whole.done(a) is None


def test_config_compiles_prefixes_as_network_order_words():
    from sockterm.filter import build_filter
    flt = build_filter(dst=["10.0.0.0/8:80-90"], dport=["443"])
    cfg = bpf_config.compile_config(flt, Scope(), kill=True)
    rule = cfg.dst[0]
    addr = b"".join(w.to_bytes(4, "little") for w in rule.addr)
    mask = b"".join(w.to_bytes(4, "little") for w in rule.mask)
    assert addr == model.v4_mapped(bytes([10, 0, 0, 0]))
    assert mask == b"\xff" * 13 + b"\0" * 3
    assert (rule.port_lo, rule.port_hi, cfg.n_dst, cfg.n_dport) == (80, 90, 1, 1)
    assert cfg.flags & record.CFG_KILL and cfg.flags & record.CFG_TCP and cfg.flags & record.CFG_UDP


def test_mirrored_constants_match_header():
    """Every #define of bpf/sockterm.h has its Python mirror, with the same value."""
    import re

    from sockterm import filter as F, states
    text = open(os.path.join(ROOT, "bpf", "sockterm.h")).read()
    defines = {name: int(value, 0) for name, value in
               re.findall(r"^#define ST_(\w+)\s+(0x[0-9a-fA-F]+|\d+)", text, re.M)}
    mirrors = {
        "MAX_ADDRS": [record.MAX_ADDRS, F.MAX_ADDR_RULES],
        "MAX_PORTS": [record.MAX_PORTS, F.MAX_PORT_RULES],
        "MAX_UIDS": [record.MAX_UIDS, F.MAX_UIDS],
        "TCP_TIME_WAIT": [states.TIME_WAIT],
        "TCP_SYN_RECV": [states.SYN_RECV],
        "TCP_NEW_SYN_RECV": [states.NEW_SYN_RECV],
        "TCP_CLOSE": [states.CLOSE, record.TCP_CLOSE],
        "TCP_LISTEN": [states.LISTEN, record.TCP_LISTEN],
        "ONE_HOLDER_REFS": [record.ONE_HOLDER_REFS],
    }
    for prefix in ("RES_", "F_", "CFG_", "INO_", "CG_"):
        for name in defines:
            if name.startswith(prefix):
                mirrors[name] = [getattr(record, name)]
    assert len(defines) >= 15, defines
    assert set(defines) == set(mirrors), set(defines) ^ set(mirrors)
    for name, values in mirrors.items():
        assert all(v == defines[name] for v in values), (name, defines[name], values)
