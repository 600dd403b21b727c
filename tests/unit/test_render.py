"""Output formats: the table fits, tsv is stable, JSON keys are the contract."""

import io
import json
import re

import pytest

from sockterm import model, states, text
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
    err = io.StringIO()
    lines = visible(render_all("table", socks, kill=kill, width=80, color=False, err=err))
    assert max(map(len, lines)) <= 80
    # every address, port and pid whole, on one line
    for i in range(20):
        assert sum(f"[fd01::2]:{40000 + i}  [fd00::5]:80" in line for line in lines) == 1
    assert all(sum(f"worker[{p}]" in line for line in lines) == 20 for p in range(100, 106))
    if kill:      # STATE and PROTO give way to the name and the result, and say so
        assert lines[0].split() == ["NETNS", "LOCAL", "PEER", "PROCESS", "RESULT"]
        assert err.getvalue() == "sockterm: PROTO, STATE hidden to fit; -o tsv shows all\n"
        assert lines[1].startswith("a-rather-l\u2026space-name  [fd01::2]:40000")
    else:
        assert lines[0].split() == list(render.COLUMNS) and err.getvalue() == ""


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
    assert render.summary_lines(rep, kill=False) == ["2 sockets in 1 namespace of 1 searched (engine bpf)"]


def test_summary_per_namespace_when_several():
    socks = [sock(i, name=f"ns{i % 3}", result=model.KILLED if i % 4 else model.FAILED) for i in range(9)]
    lines = render.summary_lines(report_of(socks, kill=True), kill=True)
    assert len(lines) == 4
    assert lines[-1] == "killed 6 of 9 matching sockets in 3 namespaces of 3 searched, 3 failed (engine bpf)"
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


def test_a_terminal_too_narrow_for_the_addresses_gets_longer_lines_not_broken_ones():
    socks = [sock(i, family=6, result=model.KILLED) for i in range(3)]
    lines = visible(render_all("table", socks, kill=True, width=40, color=True, err=io.StringIO()))
    assert lines == ["NETNS  LOCAL            PEER          PROCESS     RESULT"] + [
        f"st-c0  [fd01::2]:{40000 + i}  [fd00::5]:80  curl[4242]  killed" for i in range(3)]


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
        "matched": 2, "namespaces": 2, "namespaces_matched": 2, "namespace_errors": 0,
        "interrupted": False, "killed": 1, "failed": 1, "shut_down": 0, "not_held": 0,
        "refused": None}
    assert render.summary_dict(report_of(socks), kill=False) == {
        "matched": 2, "namespaces": 2, "namespaces_matched": 2, "namespace_errors": 0,
        "interrupted": False}


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


def test_folding_breaks_between_parts_never_inside_one_and_keeps_colour():
    cells = ("a-long-name", "", "x", "", "", "p[1],q[22]", "no-permission (EPERM)", ((1, "p"), (22, "q")))
    widths = {0: 7, 2: 1, 5: 5, 6: 13}
    R, X = render.RED, render.RESET
    assert list(render.folded_lines(cells, widths, {6: R})) == [
        f"a-l\u2026ame  x  p[1]   {R}no-permission{X}",
        f"            q[22]  {R}(EPERM){X}"]
    # what fits stays on one line, joined as tsv joins it
    assert list(render.folded_lines(cells, {0: 11, 5: 10, 6: 21}, None)) == [
        "a-long-name  p[1],q[22]  no-permission (EPERM)"]
    assert list(render.folded_lines(cells, {0: 11, 5: 9}, "S")) == [
        f"Sa-long-name{X}  Sp[1]{X}", f"             Sq[22]{X}"]


NAMES = render.COLUMNS + ("RESULT",)
ROW = ("a-long-namespace-name", "tcp", "established", "[fd01::2]:40000", "[fd00::5]:80",
       "worker[100],worker[101]", "no-permission (EPERM)", ((100, "worker"), (101, "worker")))


def test_fit_widths_exactly():
    rows = [ROW]
    wide = [21, 5, 11, 15, 12, 23, 21]
    natural = dict(enumerate(wide))
    total = sum(wide) + 2 * 6
    assert render.fit_widths(NAMES, rows, total) == natural            # fits: natural widths
    assert render.fit_widths(NAMES, rows, total + 50) == natural
    # one column short: PROCESS folds by one, and only it
    assert render.fit_widths(NAMES, rows, total - 1) == {**natural, 5: 22}
    # 20 short: PROCESS folds to its widest holder, RESULT to its widest word
    assert render.fit_widths(NAMES, rows, 100) == {**natural, 5: 11, 6: 13}
    # 25 short: then the name is cut, and nothing else
    assert render.fit_widths(NAMES, rows, 95) == {**natural, 0: 16, 5: 11, 6: 13}
    # 35 short: name cut to 11 is not enough: PROTO goes, the name gets back what is left
    assert render.fit_widths(NAMES, rows, 85) == {0: 13, 2: 11, 3: 15, 4: 12, 5: 11, 6: 13}
    assert render.fit_widths(NAMES, rows, 84) == {0: 12, 2: 11, 3: 15, 4: 12, 5: 11, 6: 13}
    # then STATE
    assert render.fit_widths(NAMES, rows, 78) == {0: 19, 3: 15, 4: 12, 5: 11, 6: 13}
    # then names to three characters of their own (the pid whole); never an address
    assert render.fit_widths(NAMES, rows, 60) == {0: 5, 3: 15, 4: 12, 5: 9, 6: 13}
    assert render.fit_widths(NAMES, rows, 1) == {0: 5, 3: 15, 4: 12, 5: 9, 6: 13}
    # match has no RESULT column
    assert render.fit_widths(render.COLUMNS, [ROW[:6] + ROW[7:]], 70) == {0: 13, 2: 11, 3: 15, 4: 12, 5: 11}
    # what a column left out frees beyond the need goes to names, then to folded cells
    short = [("web",) + ROW[1:]]
    assert render.fit_widths(NAMES, short, 82) == {0: 5, 2: 11, 3: 15, 4: 12, 5: 16, 6: 13}


def test_clip_cuts_names_in_the_middle_and_never_a_pid():
    assert render.clip("a-long-namespace-name", 21) == "a-long-namespace-name"
    assert render.clip("a-long-namespace-name", 11) == "a-lon\u2026-name"
    assert render.clip("a-long-namespace-name", 10) == "a-lon\u2026name"
    assert render.clip("redis-server[7274]", 13) == "red\u2026ver[7274]"
    assert render.clip("redis-server[7274]", 10) == "re\u2026r[7274]"
    assert render.clip("redis-server[7274]", 9) == "r\u2026r[7274]"
    assert render.clip("redis-server[7274]", 8) == "redis-server[7274]"   # two of its own, or whole
    assert render.clip("abc[12]x", 5, marker="~") == "ab~]x"              # a pid only at the end
    assert render.clip("[12]", 3) == "[12]"


def test_narrowest():
    assert render.narrowest("redis-server[7274]", 10) == 17
    assert render.narrowest("redis-server[7274]", 3) == 10
    assert render.narrowest("redis[7]", 10) == 8                        # never wider than itself
    assert render.narrowest("a-long-namespace-name", 3) == 4
    assert render.narrowest("x[1]y", 3) == 4                           # a pid only at the end


def test_table_row_and_its_parts():
    s = sock(0, processes=((1, "a,b"), (22, "c\x1b")), result=model.NO_PERMISSION, error=1)
    cells = render.table_row(s, kill=True)
    assert cells == ("st-c0", "tcp", "established", "10.1.0.2:40000", "10.0.0.5:80",
                     "a,b[1],c\\x1b[22]", "no-permission (EPERM)", [(1, "a,b"), (22, "c\x1b")])
    # a comma in a name is no holder boundary: the parts are the holders
    assert render.parts(cells, 5) == ("a,b[1]", "c\\x1b[22]")
    assert render.parts(cells, 6) == ["no-permission", "(EPERM)"]
    assert render.parts(cells, 0) == ("st-c0",)
    assert render.parts(render.table_row(sock(0, processes=None), kill=False), 5) == ()
    assert render.parts(render.table_row(sock(0, processes=()), kill=False), 5) == ("-",)


def test_cell_lines():
    assert render.cell_lines(("a[1]", "b[2]", "c[3]"), ",", 9) == ["a[1],b[2]", "c[3]"]
    assert render.cell_lines(("a[1]", "b[2]", "c[3]"), ",", 8) == ["a[1]", "b[2]", "c[3]"]
    assert render.cell_lines(("a[1]", "b[2]"), ",", 20) == ["a[1],b[2]"]
    assert render.cell_lines(("longer-name[1]", "b[2]"), ",", 9) == ["lon\u2026me[1]", "b[2]"]
    assert render.cell_lines((), ",", 5) == [""]


@pytest.mark.parametrize("width", [60, 80, 120])
@pytest.mark.parametrize("kill", [False, True])
def test_no_pid_address_or_port_is_ever_broken(width, kill):
    """Long names and several holders at 60, 80 and 120 columns: every pid,
    address:port and result on one line, whole; names whole or visibly cut."""
    socks = []
    for i in range(6):
        holders = [(70000 + i, "redis-cli")] if i % 2 else [(6986, "nginx"), (6988, "nginx"), (6989, "nginx")]
        socks.append(sock(i, name=("shop/cart-7d9f5c6b8-x2k4p" if i < 3 else f"st-5f3a9c-c{i}"),
                          processes=holders, result=model.KILLED if i % 3 else model.GONE,
                          error=0 if i % 3 else 2))
    err = io.StringIO()
    text = render_all("table", socks, kill=kill, width=width, color=False, err=err)
    lines = text.splitlines()
    assert max(map(len, lines)) <= width
    for s in socks:
        pids = [f"[{pid}]" for pid, _ in s.processes]
        assert sum(f"10.1.0.2:{s.sport}  10.0.0.5:80" in line for line in lines) == 1
        assert all(pid in text for pid in pids)
    for line in lines:
        for token in re.findall(r"\S+", line):
            # a pid's brackets close on the line they open on; ports are whole
            assert token.count("[") == token.count("]"), line
            assert not re.fullmatch(r"\d+\]", token) and not token.endswith(":")
    if width == 120:           # room for every column and every name whole
        assert "shop/cart-7d9f5c6b8-x2k4p" in text and err.getvalue() == ""
        assert lines[0].split() == list(render.COLUMNS) + (["RESULT"] if kill else [])


def test_table_cuts_with_a_tilde_where_the_terminal_cannot_show_an_ellipsis():
    class Latin1(io.StringIO):
        encoding = "latin-1"
    out = Latin1()
    r = render.TableRenderer(kill=False, header=False, out=out, width=60, color=False)
    s = sock(0, name="a-very-long-namespace-name-indeed")
    r.socket(s)
    r.finish(report_of([s]), {})
    assert out.getvalue() == "a-very-lo~me-indeed  10.1.0.2:40000  10.0.0.5:80  curl[4242]\n"
    assert render.encodes(out, "x") and not render.encodes(out, render.MARKER)
    assert render.encodes(io.StringIO(), render.MARKER)           # no encoding: UTF-8
    assert render.encodes(object(), render.MARKER)                # not even the attribute


def test_wildcard_ports_in_the_table_and_numbers_in_tsv_and_json():
    s = sock(0, state=states.LISTEN)
    s.dst, s.dport = model.v4_mapped(bytes(4)), 0
    six = sock(1, family=6, proto="udp", state=states.CLOSE)
    six.dst, six.dport = bytes(16), 0
    table = render_all("table", [s, six], width=120, color=False)
    assert re.search(r"10\.1\.0\.2:40000 +0\.0\.0\.0:\* ", table)
    assert re.search(r"\[fd01::2\]:40001 +\[::\]:\* ", table)
    tsv = render_all("tsv", [s, six], header=False).splitlines()
    assert [line.split("\t")[4] for line in tsv] == ["0.0.0.0:0", "[::]:0"]
    assert json.loads(render_all("jsonl", [s]))["dport"] == 0
    unbound = sock(2, proto="udp", state=states.CLOSE)
    unbound.sport, unbound.dport = 0, 0                     # ss: 10.1.0.2:*  10.0.0.5:*
    assert re.search(r"10\.1\.0\.2:\* +10\.0\.0\.5:\* ", render_all("table", [unbound], width=120))
    assert render.endpoint("::", 0, 6, wildcard=True) == "[::]:*"
    assert render.endpoint("::", 0, 6) == "[::]:0"
    assert render.endpoint("10.0.0.5", 80, 4, wildcard=True) == "10.0.0.5:80"


def test_terminal_width(monkeypatch):
    import os
    import pty
    import struct as st
    import fcntl
    import termios
    monkeypatch.setenv("COLUMNS", "100")
    assert text.terminal_width() == 100
    monkeypatch.setenv("COLUMNS", "5")
    assert text.terminal_width() == 20
    monkeypatch.setenv("COLUMNS", "1")
    assert text.terminal_width(io.StringIO()) == 20
    monkeypatch.setenv("COLUMNS", "wide")
    assert text.terminal_width(io.StringIO()) == 80
    monkeypatch.delenv("COLUMNS")
    master, slave = pty.openpty()
    try:
        for cols, want in ((123, 123), (0, 80)):
            fcntl.ioctl(slave, termios.TIOCSWINSZ, st.pack("HHHH", 24, cols, 0, 0))
            with os.fdopen(os.dup(slave), "w") as stream:
                assert text.terminal_width(stream) == want
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
        "killed 4 of 5 matching sockets in 2 namespaces of 2 searched, 1 failed (engine bpf)"]
    assert render.summary_lines(report_of(socks), kill=False) == [
        "  ns0  3 sockets", "  ns1  2 sockets", "5 sockets in 2 namespaces of 2 searched (engine bpf)"]


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
        "shut down 2 of 5 matching sockets in 2 namespaces of 2 searched, aborted 1, "
        "1 held by no process left alone, 1 failed (engine bpf)"]
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


def test_matched_in_and_searched_namespaces_are_told_apart():
    socks = [sock(i, name=f"ns{i % 3}") for i in range(6)]
    rep = report_of(socks)
    for ino, name in ((7, "idle-1"), (8, "idle-2")):
        rep.namespaces.append(model.NamespaceReport(ns=model.Namespace(ino, name, ""), engine="bpf"))
    assert render.summary_lines(rep, kill=False)[-1] == "6 sockets in 3 namespaces of 5 searched (engine bpf)"
    summary = json.loads(render_all("json", socks))["summary"]
    doc = render.summary_dict(rep, kill=False)
    assert (doc["namespaces"], doc["namespaces_matched"]) == (5, 3)
    assert (summary["namespaces"], summary["namespaces_matched"]) == (3, 3)
    assert render.in_namespaces(1, 1) == "in 1 namespace of 1 searched"
    assert render.in_namespaces(0, 1) == "in 1 namespace searched"
    assert render.in_namespaces(0, 4) == "in 4 namespaces searched"


def test_summary_ties_keep_the_run_order_host_first():
    socks = []
    for ino, name in ((9, "b"), (4, "b"), (2, "a"), (1, "host")):
        s = sock(0, name=name)
        s.netns = ino
        socks.append(s)
    assert render.summary_lines(report_of(socks), kill=False)[:4] == [
        "  host  1 socket", "  a     1 socket", "  b     1 socket", "  b     1 socket"]
    socks[0].netns = 3          # the busiest first, whatever its name
    busy = sock(0, name="z")
    busy.netns, socks = 3, socks + [busy]
    socks[0].netns_name = "z"
    assert render.summary_lines(report_of(socks), kill=False)[0] == "  z     2 sockets"


def test_left_out_note():
    assert render.left_out_note(["PROTO"]) == "PROTO hidden to fit"
