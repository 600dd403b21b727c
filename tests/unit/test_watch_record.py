"""The watch's record layout (bpf/watch.h) against its Python mirror
(sockterm/engine/bpf/watch.py), the event decoder, the --watch duration,
and what the watch adds to the output (keys, TIME column, summary)."""

import ctypes
import json
import os
import shutil
import socket
import struct
import subprocess

import click
import pytest

from sockterm import model
from sockterm.cli import render
from sockterm.cli.options import Duration
from sockterm.core.watch import WatchReport
from sockterm.engine.bpf import record, watch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEADER = os.path.join(ROOT, "bpf", "watch.h")
OBJECT = os.path.join(ROOT, "sockterm", "data", watch.OBJECT_NAME)


def test_mirror_matches_header(tmp_path):
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not cc:
        pytest.skip("no C compiler")
    lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <linux/types.h>',
             f'#include "{HEADER}"', "int main(void) {"]
    for name, cls in watch.MIRRORS.items():
        lines.append(f'printf("{name} size %zu\\n", sizeof(struct {name}));')
        for field, _ in cls._fields_:
            lines.append(f'printf("{name} {field} %zu\\n", offsetof(struct {name}, {field}));')
    lines.append("return 0; }")
    (tmp_path / "layout.c").write_text("\n".join(lines))
    subprocess.run([cc, str(tmp_path / "layout.c"), "-o", str(tmp_path / "layout")], check=True)
    out = subprocess.run([str(tmp_path / "layout")], capture_output=True, text=True,
                         check=True).stdout
    theirs: dict = {}
    for line in out.splitlines():
        name, field, value = line.split()
        entry = theirs.setdefault(name, [0, {}])
        if field == "size":
            entry[0] = int(value)
        else:
            entry[1][field] = int(value)
    for name, cls in watch.MIRRORS.items():
        assert tuple(theirs[name]) == record.layout(cls), name


def test_mirror_matches_shipped_object_btf():
    from sockterm.engine.bpf import libbpf
    lib = libbpf.load()
    obj = lib.bpf_object__open_file(OBJECT.encode(), None)
    assert obj, "cannot open the shipped watch object"
    try:
        btf = lib.bpf_object__btf(obj)
        problems = [p for name, cls in watch.MIRRORS.items()
                    for p in watch._mismatch(name, cls, lib.struct_layout(btf, name))]
        assert problems == []
    finally:
        lib.bpf_object__close(obj)


def test_the_object_has_the_programs_sockterm_loads():
    from sockterm.engine.bpf import objinfo
    info = objinfo.inspect(OBJECT)
    assert info.has_btf and "GPL" in info.license
    want = {*watch.TCP_PROGRAMS, watch.UDP_SEND_PROGRAM, *watch.UDP_CONNECT_PROGRAMS.values()}
    assert want <= set(info.programs), info.programs


def test_decode_an_event():
    ev = watch.StWatchEvent()
    ev.held.rec.cookie, ev.held.rec.ino, ev.held.rec.uid = 77, 4242, 1000
    ev.held.rec.sport, ev.held.rec.dport = 43210, 80
    ev.held.rec.family, ev.held.rec.proto, ev.held.rec.state = socket.AF_INET, socket.IPPROTO_TCP, 2
    src = model.v4_mapped(socket.inet_aton("10.1.0.2"))
    dst = model.v4_mapped(socket.inet_aton("10.0.0.5"))
    ctypes.memmove(ev.held.rec.src, src, 16)
    ctypes.memmove(ev.held.rec.dst, dst, 16)
    ev.held.netns, ev.held.pid, ev.held.comm, ev.held.cgroup = 4026532000, 321, b"curl", 9
    ev.time_ns, ev.hook = 123456789, watch.CONNECT
    got = watch.decode(bytes(ev))
    sock = got.sock
    assert (sock.netns, sock.family, sock.proto, sock.state_name()) == (4026532000, 4, "tcp", "syn-sent")
    assert (sock.src_text(), sock.sport, sock.dst_text(), sock.dport) == ("10.1.0.2", 43210, "10.0.0.5", 80)
    assert (sock.cookie, sock.ino, sock.uid, sock.cgroup) == (77, 4242, 1000, 9)
    assert sock.processes == ((321, "curl"),)
    assert (got.hook, got.time_ns) == (watch.CONNECT, 123456789)
    ev.held.pid = 0                      # an incoming connection: held by no process yet
    assert watch.decode(bytes(ev)).sock.processes == ()


@pytest.mark.parametrize("text,seconds", [("30s", 30), ("5m", 300), ("1h", 3600), ("500ms", 0.5),
                                          ("2", 2), ("1.5s", 1.5)])
def test_durations(text, seconds):
    assert Duration().convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-1s", "5x", "", "1d", "8h" * 0 + "200h", "5 m m"])
def test_bad_durations(text):
    with pytest.raises(click.BadParameter):
        Duration().convert(text, None, None)


def _stamped(phase):
    sock = model.Sock(1, 4, "tcp", 1, model.v4_mapped(b"\1\2\3\4"), 5, model.v4_mapped(b"\5\6\7\10"),
                      80, 99, result=model.KILLED)
    sock.netns_name = "web\x1b[31m"
    return model.Stamped.of(sock, phase, 1700000000.25)


def test_watch_output_keys_and_columns():
    doc = json.loads(render.watched_json(_stamped(model.WINDOW), kill=True))
    assert doc["time"] == "2023-11-14T22:13:20.250000Z" and doc["phase"] == "window"
    assert doc["result"] == "killed" and doc["netns_name"] == "web\x1b[31m"
    cells = render.row(_stamped(model.START), kill=True, watch=True)
    assert len(cells) == len(("TIME",) + render.COLUMNS + ("RESULT",))
    assert cells[0].endswith(".250") and "\x1b" not in cells[1]


def test_watch_table_streams_in_fixed_columns():
    """A watch's table: each row out as it comes, TIME first, the header
    inside 80 columns, a pid or an address never broken (ux's table)."""
    import io
    out, err = io.StringIO(), io.StringIO()
    table = render.TableRenderer(kill=True, header=True, out=out, err=err, watch=True, width=80,
                                 color=False)
    wide = _stamped(model.WINDOW)
    wide.netns_name, wide.processes = "web-frontend-namespace", ((12, "python3"), (13345, "nginx-worker"))
    wide.dport, wide.dst = 54321, model.v4_mapped(b"\xff\xff\xff\xfe")
    table.socket(wide)
    first = out.getvalue().splitlines()
    assert first[0].startswith("TIME  ") and len(first[0]) <= 80
    assert first[1].startswith(render.clock_text(wide.time) + "  ") and "killed" in first[1]
    assert "255.255.255.254:54321" in first[1] and "[12]" in first[1]
    assert first[2].startswith(" " * 14) and "[13345]" in first[2]
    short = _stamped(model.WINDOW)
    short.processes = ()
    table.socket(short)
    table.finish(None, {})
    lines = out.getvalue().splitlines()
    assert lines[:3] == first and len(lines) == 4      # the header once, the earlier rows as were
    assert lines[3].index("1.2.3.4:5") == first[1].index("1.2.3.4:5")
    assert err.getvalue() == "sockterm: PROTO, STATE hidden to fit; -o tsv shows all\n"


def test_watch_summary():
    rep = WatchReport(duration=5.0, elapsed=5.001, ended="duration", killed_at_start=2, killed=3,
                      matched=3, lags_ms=[0.4, 0.5, 9.0], by_ns={7: [3, 3, 0]})
    doc = render.watch_dict(rep, kill=True)
    assert doc["killed_at_start"] == 2 and doc["killed_in_window"] == 3
    assert doc["lag_ms"] == {"median": 0.5, "p99": 9.0, "max": 9.0}

    class Report:
        watch = rep
        namespaces = [model.NamespaceReport(ns=model.Namespace(7, "a", ""), engine="diag",
                                            matched=5, killed=5),
                      model.NamespaceReport(ns=model.Namespace(8, "b", ""), engine="diag")]
    lines = render.watch_lines(Report, kill=True)
    assert lines[0] == "  a: 2 killed at start, 3 in the window"
    assert lines[-1].startswith("killed 2 at start and 3 in the window (5.001 of 5 s, ended by its end)")
    assert render.ns_dict(Report.namespaces[0], rep)["window"] == {"matched": 3, "killed": 3,
                                                                    "failed": 0}
