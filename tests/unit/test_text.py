"""text.shown, the one sanitiser, and every boundary that uses it: table and
tsv cells, the stderr summary, -v and error lines, the audit record, the
kill confirmation. JSON keeps exact values."""

import json
import re
import socket

from hypothesis import given, strategies as st

from sockterm import audit, model
from sockterm.cli import render, run
from sockterm.core import Report
from sockterm.text import _UNSAFE_CHARS, shown

_UNSAFE = re.compile(_UNSAFE_CHARS)

HOSTILE = "a\x1b]0;PWN\x07\x1b[2J\nFAKE\r\t\x7f\x9b\u202e\u2066\u200f\u061c\u2028\udcff"


def test_no_unsafe_character_is_printable():
    # shown()'s fast path returns a str.isprintable() text as it is: exact
    # only while every character it escapes is one isprintable() refuses
    every = "".join(map(chr, range(0x110000)))
    unsafe = _UNSAFE.findall(every)
    assert len(unsafe) > 2000 and not any(c.isprintable() for c in unsafe)


def test_every_class_is_escaped_visibly():
    assert shown("\x1b]0;PWN\x07") == "\\x1b]0;PWN\\x07"
    assert shown("z\nFAKE: ok\r") == "z\\x0aFAKE: ok\\x0d"
    assert shown("\x00\x1f\x7f\x80\x9f") == "\\x00\\x1f\\x7f\\x80\\x9f"
    assert shown("\u202a\u202b\u202c\u202d\u202e") == "\\u202a\\u202b\\u202c\\u202d\\u202e"
    assert shown("\u2066\u2067\u2068\u2069\u200e\u200f\u061c") == \
        "\\u2066\\u2067\\u2068\\u2069\\u200e\\u200f\\u061c"
    assert shown("\u2028\u2029") == "\\u2028\\u2029"
    assert shown("\udcff\udc9b") == "\\xff\\x9b"          # bytes that were not UTF-8


def test_ordinary_text_is_unchanged():
    for text in ("nginx", "python3[812]", "café", "中文", "ns-web-1", "/run/netns/a b", "emoji 🙂", ""):
        assert shown(text) is text or shown(text) == text


@given(st.text())
def test_nothing_unsafe_survives(text):
    out = shown(text)
    assert not _UNSAFE.search(out)
    out.encode("utf-8")                     # always writable as UTF-8 (no lone surrogate)


def sock(name=HOSTILE, comm=HOSTILE):
    s = model.Sock(4026532000, 4, "tcp", 1, model.v4_mapped(socket.inet_aton("10.0.0.1")), 4000,
                   model.v4_mapped(socket.inet_aton("10.0.0.5")), 80, 77, netns_name=name)
    s.processes = ((42, comm),)
    return s


def test_table_and_tsv_cells():
    cells = render.row(sock(), kill=False)
    assert cells[0] == shown(HOSTILE) and cells[5] == shown(HOSTILE) + "[42]"
    assert not any(_UNSAFE.search(c) for c in cells)


def test_json_keeps_exact_values():
    doc = json.loads(render.socket_json(sock(), kill=False))
    assert doc["netns_name"] == HOSTILE and doc["processes"][0]["comm"] == HOSTILE
    assert render.socket_json(sock(), kill=False).isascii()


def test_summary_lines():
    report = Report(engine="bpf")
    for i, name in enumerate((HOSTILE, "web")):
        report.namespaces.append(model.NamespaceReport(ns=model.Namespace(i, name, ""), engine="bpf",
                                                       matched=2))
    lines = render.summary_lines(report, kill=False)
    assert any(shown(HOSTILE) in line for line in lines)
    assert not any(_UNSAFE.search(line) for line in lines)


def test_stderr_lines(capsys):
    run.stderr_log(True)(f"namespace {HOSTILE}: gone")
    try:
        run.abort(f"cannot enter namespace {HOSTILE}")
    except SystemExit:
        pass
    err = capsys.readouterr().err
    assert err.count("\n") == 2 and not _UNSAFE.search(err.replace("\n", ""))


def test_audit_record_is_one_safe_line():
    report = Report(engine="bpf")
    report.namespaces.append(model.NamespaceReport(ns=model.Namespace(7, HOSTILE, ""), engine="bpf",
                                                   matched=1, killed=1))
    text = audit.message(filter_text=f"--comm {HOSTILE}", report=report,
                         error=f"kernel said {HOSTILE}",
                         environ={"SUDO_USER": HOSTILE, "SUDO_UID": "1000"})
    assert not _UNSAFE.search(text)
    assert f"sudo_user={shown(HOSTILE)}" in text
    assert audit.frame(text).decode("utf-8").count("\n") == 0
