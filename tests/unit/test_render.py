"""Output formats: the table fits, tsv is stable, JSON keys are the contract."""

import io
import json
import re

import pytest

from sockterm import model, states
from sockterm.cli import render
from sockterm.core import Report

ANSI = re.compile(r"\x1b\[[0-9;]*m")
CONTRACT = {"netns", "netns_name", "proto", "family", "state", "src", "sport", "dst", "dport", "cookie"}


def sock(i=0, *, family=4, proto="tcp", state=states.ESTABLISHED, result=model.MATCHED, error=0,
         name="st-c0", processes=((4242, "curl"),)):
    if family == 4:
        src, dst = model.v4_mapped(bytes([10, 1, 0, 2])), model.v4_mapped(bytes([10, 0, 0, 5]))
    else:
        src = bytes.fromhex("fd010000000000000000000000000002")
        dst = bytes.fromhex("fd000000000000000000000000000005")
    s = model.Sock(netns=4026532000 + i % 3, family=family, proto=proto, state=state, src=src,
                   sport=40000 + i, dst=dst, dport=80, cookie=1000 + i, uid=0, ino=5000 + i,
                   result=result, error=error, netns_name=name)
    s.processes = None if processes is None else list(processes)
    return s


def report_of(socks, kill=False):
    rep = Report(engine="bpf")
    by_ns = {}
    for s in socks:
        nsr = by_ns.get(s.netns)
        if nsr is None:
            nsr = by_ns[s.netns] = model.NamespaceReport(
                ns=model.Namespace(ino=s.netns, name=s.netns_name, path=""), engine="bpf")
            rep.namespaces.append(nsr)
        nsr.matched += 1
        if kill:
            nsr.killed += s.result == model.KILLED
            nsr.failed += s.result not in (model.KILLED, model.GONE)
    return rep


def render_all(fmt, socks, kill=False, header=True, **kw):
    out = io.StringIO()
    r = render.RENDERERS[fmt](kill=kill, header=header, out=out, **kw)
    for s in socks:
        r.socket(s)
    r.finish(report_of(socks, kill), {"command": "kill" if kill else "match", "filter": "--dst x"})
    return out.getvalue()


def test_tsv_header_and_stable_columns():
    text = render_all("tsv", [sock(0), sock(1, family=6)])
    lines = text.splitlines()
    assert lines[0] == "NETNS\tPROTO\tSTATE\tLOCAL\tPEER\tPROCESS"
    assert lines[1] == "st-c0\ttcp\testablished\t10.1.0.2:40000\t10.0.0.5:80\tcurl[4242]"
    assert lines[2].split("\t")[3:5] == ["[fd01::2]:40001", "[fd00::5]:80"]
    assert all(line.count("\t") == 5 for line in lines)
    assert "\x1b" not in text


def test_tsv_no_header_and_kill_result():
    socks = [sock(0, result=model.KILLED), sock(1, result=model.NO_PERMISSION, error=1)]
    lines = render_all("tsv", socks, kill=True, header=False).splitlines()
    assert [line.split("\t")[-1] for line in lines] == ["killed", "no-permission (EPERM)"]


def test_hostile_names_cannot_split_columns_or_reach_the_terminal():
    s = sock(0, name="evil\tns", processes=[(1, "a\x1b[2Jb\nc")])
    line = render_all("tsv", [s], header=False)
    assert line.count("\t") == 5 and line.count("\n") == 1 and "\x1b" not in line
    assert "\x1b[2J" not in render_all("table", [s], width=80, color=True)


@pytest.mark.parametrize("kill", [False, True])
def test_json_contract(kill):
    socks = [sock(0, result=model.KILLED if kill else model.MATCHED), sock(1, family=6)]
    doc = json.loads(render_all("json", socks, kill=kill))
    assert {"command", "filter", "engine", "sockets", "namespaces", "summary"} <= set(doc)
    for obj in doc["sockets"]:
        assert CONTRACT <= set(obj)
        assert isinstance(obj["netns"], int) and obj["family"] in (4, 6)
        assert ("result" in obj) == kill
    assert doc["sockets"][0]["dst"] == "10.0.0.5" and doc["sockets"][1]["dst"] == "fd00::5"
    assert doc["sockets"][0]["processes"] == [{"pid": 4242, "comm": "curl"}]
    assert doc["summary"]["matched"] == 2
    assert ("killed" in doc["summary"]) == kill


def test_jsonl_one_object_per_line_same_keys_as_json():
    socks = [sock(i) for i in range(5)]
    lines = render_all("jsonl", socks, kill=True).splitlines()
    assert len(lines) == 5
    objs = [json.loads(line) for line in lines]
    assert objs == json.loads(render_all("json", socks, kill=True))["sockets"]


def test_no_processes_is_null_in_json_and_empty_in_tsv():
    s = sock(0, processes=None)
    assert json.loads(render_all("jsonl", [s]))["processes"] is None
    assert render_all("tsv", [s], header=False).rstrip("\n").endswith("\t")


def visible(text):
    return [ANSI.sub("", line) for line in text.splitlines()]


@pytest.mark.parametrize("kill", [False, True])
def test_table_fits_80_columns_even_with_long_cells(kill):
    socks = [sock(i, family=6, name="a-rather-long-namespace-name",
                  processes=[(p, "worker") for p in range(100, 106)],
                  result=model.NO_PERMISSION, error=1) for i in range(20)]
    lines = visible(render_all("table", socks, kill=kill, width=80, color=False))
    assert max(map(len, lines)) <= 80
    assert lines[0].split() == list(render.COLUMNS) + (["RESULT"] if kill else [])
    # folded, not cut: every character of the address is still there
    assert "fd00::5" in "".join(lines).replace(" ", "")


def test_table_uses_natural_widths_when_they_fit():
    lines = render_all("table", [sock(0)], width=200, color=False).splitlines()
    assert lines[1].split() == ["st-c0", "tcp", "established", "10.1.0.2:40000", "10.0.0.5:80", "curl[4242]"]
    assert len(lines) == 2


def test_table_colour_only_when_asked():
    socks = [sock(0, result=model.KILLED), sock(1, result=model.FAILED, error=5)]
    plain = render_all("table", socks, kill=True, width=120, color=False)
    coloured = render_all("table", socks, kill=True, width=120, color=True)
    assert "\x1b" not in plain
    assert render.GREEN + "killed" in coloured and render.RED + "failed" in coloured
    assert visible(coloured) == plain.splitlines()


def test_use_color_respects_no_color(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert render.use_color(Tty())
    assert not render.use_color(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not render.use_color(Tty())


def test_table_is_fast_for_large_kills():
    import time
    socks = [sock(i, result=model.KILLED) for i in range(20000)]
    start = time.perf_counter()
    text = render_all("table", socks, kill=True, width=80, color=True)
    assert len(text.splitlines()) == 20001
    assert time.perf_counter() - start < 5   # rich.Table took ~10 s here


def test_empty_table_prints_nothing():
    assert render_all("table", [], width=80) == ""


def test_summary_single_namespace():
    rep = report_of([sock(0), sock(3)])
    assert render.summary_lines(rep, kill=False) == ["2 sockets in 1 namespace (engine bpf)"]


def test_summary_per_namespace_when_several():
    socks = [sock(i, name=f"ns{i % 3}", result=model.KILLED if i % 4 else model.FAILED) for i in range(9)]
    lines = render.summary_lines(report_of(socks, kill=True), kill=True)
    assert len(lines) == 4
    assert lines[-1] == "killed 6 of 9 matching sockets in 3 namespaces, 3 failed (engine bpf)"
    assert lines[0].split()[0] in {"ns0", "ns1", "ns2"} and lines[0].startswith("  ")


def test_summary_nothing_matched():
    rep = Report(engine="diag")
    rep.namespaces.append(model.NamespaceReport(ns=model.Namespace(1, "host", ""), engine="diag"))
    assert render.summary_lines(rep, kill=True) == [
        "killed 0 of 0 matching sockets in 1 namespace searched (engine diag)"]


def test_default_format_follows_stdout():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert render.default_format(Tty()) == "table"
    assert render.default_format(io.StringIO()) == "tsv"


def test_table_fits_even_a_very_narrow_terminal():
    socks = [sock(i, family=6, result=model.KILLED) for i in range(3)]
    lines = visible(render_all("table", socks, kill=True, width=40, color=True))
    assert max(map(len, lines)) <= 40


def test_tsv_header_even_when_nothing_matched_but_not_before_a_failure():
    assert render_all("tsv", []) == "NETNS\tPROTO\tSTATE\tLOCAL\tPEER\tPROCESS\n"
    out = io.StringIO()
    render.TsvRenderer(kill=False, header=True, out=out)   # the run failed: no socket, no finish
    assert out.getvalue() == ""


def test_fast_socket_json_equals_socket_dict():
    """socket_json is a hand-written encoder: it must say exactly what json.dumps would."""
    import json
    import socket as socketlib

    from sockterm import model as m
    from sockterm.cli.render import socket_dict, socket_json
    names = ["host", 'we"ird\\name', "tab\there", "ünï", "nl\nx"]
    for i, name in enumerate(names):
        for family, src, dst in ((4, m.v4_mapped(socketlib.inet_aton("10.0.0.5")), m.v4_mapped(bytes(4))),
                                 (6, socketlib.inet_pton(socketlib.AF_INET6, "fd00::5"),
                                  m.v4_mapped(socketlib.inet_aton("10.0.0.5")))):
            s = m.Sock(4026531840 + i, family, "udp" if i % 2 else "tcp", 7 if i % 2 else 1, src,
                       1234, dst, 80, 2**63 + i, uid=1000, ino=55, netns_name=name)
            for processes in (None, (), ((1, name), (2, "x"))):
                s.processes = processes
                for kill, result, error in ((False, m.MATCHED, 0), (True, m.KILLED, 0),
                                            (True, m.FAILED, 111), (True, m.FAILED, 9999),
                                            (True, m.SHUT_DOWN, 0), (True, m.NOT_HELD, 0)):
                    s.result, s.error = result, error
                    for holder in (None, (4242, 17)):
                        s.holder = holder
                        assert json.loads(socket_json(s, kill)) == socket_dict(s, kill)


# -- exact output (what mutation testing asked for) -------------------------------------

@pytest.fixture
def cold_caches():
    """The fast JSON encoder caches texts; every test here starts without them."""
    for cache in (render._addr_texts, render._names, render._holders):
        cache.clear()
    yield
    for cache in (render._addr_texts, render._names, render._holders):
        cache.clear()


def test_fast_json_from_cold_caches_and_from_warm(cold_caches):
    s = sock(0, processes=((1, "a"), (2, "b")), name="ns-cold")
    for _ in range(2):            # first fills the caches, second reads them
        assert json.loads(render.socket_json(s, True)) == render.socket_dict(s, True)
    s.processes = ((1, "a"), (2, "b"))    # an equal tuple: the cached text
    assert json.loads(render.socket_json(s, False))["processes"] == [
        {"pid": 1, "comm": "a"}, {"pid": 2, "comm": "b"}]


def test_process_and_result_cells():
    assert render.process_text(sock(0, processes=())) == "-"           # attributed: nobody
    assert render.process_text(sock(0, processes=None)) == ""          # not attributed
    assert render.process_text(sock(0, processes=((1, "a"), (2, "b")))) == "a[1],b[2]"
    assert render.result_text(sock(0, result=model.KILLED)) == "killed"
    assert render.result_text(sock(0, result=model.FAILED, error=0)) == "failed"
    assert render.result_text(sock(0, result=model.FAILED, error=9999)) == "failed (9999)"
    assert render.result_text(sock(0, result=model.GONE, error=2)) == "gone (ENOENT)"


def test_ns_dict_and_summary_dict():
    nsr = model.NamespaceReport(ns=model.Namespace(7, "web", ""), engine="diag")
    nsr.matched, nsr.killed, nsr.failed = 3, 2, 1
    assert render.ns_dict(nsr) == {"netns": 7, "netns_name": "web", "engine": "diag", "matched": 3,
                                   "killed": 2, "failed": 1, "shut_down": 0, "not_held": 0,
                                   "error": None, "walked": True,
                                   "walk_reason": None, "container": None, "pod": None}
    nsr.error = "gone"
    assert render.ns_dict(nsr)["error"] == "gone"
    socks = [sock(0, result=model.KILLED), sock(1, result=model.FAILED, error=5)]
    assert render.summary_dict(report_of(socks, kill=True), kill=True) == {
        "matched": 2, "namespaces": 2, "namespace_errors": 0, "interrupted": False, "killed": 1,
        "failed": 1, "shut_down": 0, "not_held": 0, "refused": None}
    assert render.summary_dict(report_of(socks), kill=False) == {
        "matched": 2, "namespaces": 2, "namespace_errors": 0, "interrupted": False}


def test_json_document_layout(cold_caches):
    s = sock(0)
    text = render_all("json", [s])
    doc = json.loads(text)
    assert doc["engine"] == "bpf"
    assert doc["namespaces"] == [{"netns": s.netns, "netns_name": "st-c0", "engine": "bpf",
                                  "matched": 1, "killed": 0, "failed": 0, "shut_down": 0,
                                  "not_held": 0, "error": None, "walked": True, "walk_reason": None,
                                  "container": None, "pod": None}]
    # pretty, two spaces, one socket object a line
    assert text.startswith('{\n  "command": "match",\n  "filter": "--dst x",\n  "engine": "bpf",\n'
                           '  "sockets": [\n    {"netns":')
    assert f'\n    {render.socket_json(s, False)}\n  ],\n  "namespaces": [\n    {{\n' in text
    empty = render_all("json", [])
    assert '\n  "sockets": [],\n' in empty and json.loads(empty)["sockets"] == []


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_table_colours_on_a_terminal_only_the_header_and_results(monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    out = Tty()
    r = render.TableRenderer(kill=False, header=True, out=out, width=200)   # color: ask the stream
    r.socket(sock(0))
    r.finish(report_of([sock(0)]), {})
    header, line = out.getvalue().splitlines()
    assert header.startswith(render.BOLD + "NETNS" + render.RESET)
    assert "\x1b" not in line                      # match: no RESULT column to colour
    assert not render.use_color(object())          # no isatty at all
    monkeypatch.setenv("TERM", "dumb")
    assert not render.use_color(Tty())


def test_lines_carry_no_trailing_blanks():
    lines = render_all("table", [sock(0, processes=None)], width=200, color=False).splitlines()
    assert all(line == line.rstrip() for line in lines)
    assert lines[1].endswith("10.0.0.5:80")


def test_folding_keeps_every_character_in_order_and_colour():
    cells = ("abcdefgh", "", "xy")
    lines = list(render.folded_lines(cells, [3, 2, 2], {0: render.RED}))
    R, X = render.RED, render.RESET
    assert lines == [f"{R}abc{X}      xy", f"{R}def{X}", f"{R}gh{X}"]
    assert list(render.folded_lines(("abc", "de"), [3, 2], None)) == ["abc  de"]


NAMES = render.COLUMNS + ("RESULT",)


def natural(rows):
    return [max([len(n)] + [len(r[i]) for r in rows]) for i, n in enumerate(NAMES)]


def test_fit_widths_exactly():
    rows = [("a-long-namespace-name", "tcp", "established", "[fd01::2]:40000", "[fd00::5]:80",
             "worker[100],worker[101]", "no-permission (EPERM)")]
    wide = natural(rows)
    total = sum(wide) + 2 * 6
    assert render.fit_widths(NAMES, rows, total) == wide               # fits: natural widths
    assert render.fit_widths(NAMES, rows, total + 50) == wide
    # one column short: PROCESS gives it, and only it
    assert render.fit_widths(NAMES, rows, total - 1) == wide[:5] + [wide[5] - 1] + wide[6:]
    # 30 short: PROCESS gives 16 (to 7), NETNS 9 (to 12), LOCAL 1 (to 14), NETNS 4 more
    assert wide == [21, 5, 11, 15, 12, 23, 21]
    assert render.fit_widths(NAMES, rows, 90) == [8, 5, 11, 14, 12, 7, 21]
    # 26 short: the last one comes from LOCAL (next in line), not from the widest
    assert render.fit_widths(NAMES, rows, 94) == [12, 5, 11, 14, 12, 7, 21]
    # match has no RESULT column: past it, STATE still gives
    assert render.fit_widths(render.COLUMNS, [r[:6] for r in rows], 64) == [8, 5, 8, 14, 12, 7]
    # as narrow as the minimums go, then the widest columns fold
    mins = [8, 5, 5, 14, 12, 7, 7]       # PEER is narrower than its minimum already
    assert render.fit_widths(NAMES, rows, sum(mins) + 12) == mins
    assert sum(render.fit_widths(NAMES, rows, sum(mins) + 11)) + 12 == sum(mins) + 11
    assert render.fit_widths(NAMES, rows, 1) == [1] * 7        # cannot go below one


def test_terminal_width(monkeypatch):
    import os
    import pty
    import struct as st
    import fcntl
    import termios
    monkeypatch.setenv("COLUMNS", "100")
    assert render.terminal_width() == 100
    monkeypatch.setenv("COLUMNS", "5")
    assert render.terminal_width() == 20
    monkeypatch.setenv("COLUMNS", "1")
    assert render.terminal_width(io.StringIO()) == 20
    monkeypatch.setenv("COLUMNS", "wide")
    assert render.terminal_width(io.StringIO()) == 80
    monkeypatch.delenv("COLUMNS")
    master, slave = pty.openpty()
    try:
        for cols, want in ((123, 123), (0, 80)):
            fcntl.ioctl(slave, termios.TIOCSWINSZ, st.pack("HHHH", 24, cols, 0, 0))
            with os.fdopen(os.dup(slave), "w") as stream:
                assert render.terminal_width(stream) == want
    finally:
        os.close(master)
        os.close(slave)


def test_summary_lines_exactly():
    socks = [sock(i, name=f"ns{i % 2}", result=model.KILLED if i else model.FAILED) for i in range(5)]
    for i, s in enumerate(socks):
        s.netns = 1 + i % 2
    assert render.summary_lines(report_of(socks, kill=True), kill=True) == [
        "  ns0  killed 2 of 3 matching sockets, 1 failed",
        "  ns1  killed 2 of 2 matching sockets",
        "killed 4 of 5 matching sockets in 2 namespaces, 1 failed (engine bpf)"]
    assert render.summary_lines(report_of(socks), kill=False) == [
        "  ns0  3 sockets", "  ns1  2 sockets", "5 sockets in 2 namespaces (engine bpf)"]


def test_graceful_summary_lines_exactly():
    rep = Report(engine="bpf", graceful=True)
    for name, (matched, shut, unheld, killed, failed) in (("ns0", (3, 1, 1, 1, 0)),
                                                         ("ns1", (2, 1, 0, 0, 1))):
        nsr = model.NamespaceReport(ns=model.Namespace(ino=len(rep.namespaces), name=name, path=""),
                                    engine="bpf")
        nsr.matched, nsr.shut_down, nsr.not_held, nsr.killed, nsr.failed = \
            matched, shut, unheld, killed, failed
        rep.namespaces.append(nsr)
    assert render.summary_lines(rep, kill=True) == [
        "  ns0  shut down 1 of 3 matching sockets, aborted 1, 1 held by no process left alone",
        "  ns1  shut down 1 of 2 matching sockets, 1 failed",
        "shut down 2 of 5 matching sockets in 2 namespaces, aborted 1, 1 held by no process "
        "left alone, 1 failed (engine bpf)"]
    rep.interrupted, rep.signum = True, 2
    assert render.summary_lines(rep, kill=True)[-1] == (
        "interrupted by SIGINT: no further socket was shut down; every one shut down is "
        "reported above")
    doc = render.summary_dict(rep, kill=True)
    assert (doc["shut_down"], doc["not_held"], doc["killed"], doc["failed"]) == (2, 1, 1, 1)


@pytest.mark.parametrize("count,more", [(20, None), (25, "  ... and 5 more namespaces")])
def test_summary_lines_bounded(count, more):
    socks = []
    for i in range(count):
        s = sock(0, name=f"n{i:02}")
        s.netns = 1000 + i
        socks.append(s)
    lines = render.summary_lines(report_of(socks), kill=False)
    assert lines[0] == "  n00  1 socket" and len(lines) == min(count, 20) + 1 + (more is not None)
    assert (lines[-2] == more) if more else (lines[-2] == "  n19  1 socket")
def _placed(evil_pod=False):
    from sockterm.host.containers import Container, Place, Pod
    pod = Pod("8dbc5577-d0e2-4706-8787-57d52c03ddf2", "shop",
              "cart\x1b]0;pwned\x07" if evil_pod else "cart", "/kubepods/pod8dbc")
    app = Container("containerd", "c" * 64, "app\u202e\t", pod, "/kubepods/pod8dbc/c")
    return Place(app, pod), Place(None, pod)


def test_container_and_pod_keys_are_exact_in_json():
    with_container, pod_only = _placed(evil_pod=True)
    for place in (with_container, pod_only, None):
        s = sock(name=place.label if place else "st-c0")
        s.place = place
        for kill in (False, True):
            doc = json.loads(render.socket_json(s, kill))
            assert doc == render.socket_dict(s, kill)
            if place is None:
                assert doc["container"] is None and doc["pod"] is None
            else:
                assert doc["pod"] == {"namespace": "shop", "name": "cart\x1b]0;pwned\x07",
                                      "uid": "8dbc5577-d0e2-4706-8787-57d52c03ddf2"}
                assert doc["netns_name"] == "shop/cart\x1b]0;pwned\x07"
    s = sock()
    s.place = with_container
    assert json.loads(render.socket_json(s, False))["container"] == {
        "runtime": "containerd", "id": "c" * 64, "name": "app\u202e\t"}


def test_namespace_objects_carry_container_and_pod():
    with_container, _ = _placed()
    ns = model.Namespace(ino=7, name="shop/cart", path="", place=with_container)
    doc = render.ns_dict(model.NamespaceReport(ns=ns, engine="bpf"))
    assert doc["container"]["name"] == "app\u202e\t" and doc["pod"]["name"] == "cart"
    assert render.ns_dict(model.NamespaceReport(ns=model.Namespace(1, "x", ""), engine="bpf"))["pod"] is None


def test_hostile_pod_names_never_reach_the_terminal_raw():
    _, pod_only = _placed(evil_pod=True)
    socks = [sock(0, name=pod_only.label), sock(1, name="other")]
    for fmt in ("tsv", "table"):
        out = io.StringIO()
        r = render.RENDERERS[fmt](kill=False, header=True, out=out)
        for s in socks:
            r.socket(s)
        r.finish(report_of(socks), {})
        assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()
    for line in render.summary_lines(report_of(socks), kill=False):
        assert "\x1b" not in line and "\x07" not in line


def test_refusals_render_the_summary_and_no_socket():
    rep = report_of([])
    rep.refused = "5 sockets match, more than --max 3"
    meta = {"command": "kill", "filter": "--dport 80"}
    for fmt in ("json", "jsonl"):
        out = io.StringIO()
        r = render.RENDERERS[fmt](kill=True, header=True, out=out)
        r.refusal(rep, meta)
        lines = out.getvalue().splitlines()
        doc = json.loads(out.getvalue()) if fmt == "json" else json.loads(lines[0])
        assert doc["command"] == "kill" and doc["filter"] == "--dport 80" and doc["engine"] == "bpf"
        assert doc["summary"]["refused"] == "5 sockets match, more than --max 3"
        assert doc["summary"]["killed"] == 0 and doc.get("sockets", []) == []
        assert fmt == "json" or len(lines) == 1


def test_interrupted_summary_names_the_signal():
    import signal
    rep = report_of([sock(0, result=model.KILLED)], kill=True)
    rep.interrupted, rep.signum = True, signal.SIGTERM
    assert render.summary_lines(rep, kill=True)[-1] == (
        "interrupted by SIGTERM: no further socket was destroyed; every one destroyed is "
        "reported above")
    rep.signum = 0
    assert render.summary_lines(rep, kill=False)[-1] == (
        "interrupted by a signal: the listing is incomplete")
