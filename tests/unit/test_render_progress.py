"""The progress display (rich): only for a person at a terminal, only for slow
runs, erased after, and never importing rich for a fast run."""

import io
import time

from sockterm import model
from sockterm.cli import progress
from sockterm.core import Report


class Tty(io.StringIO):
    def isatty(self):
        return True


def grow(report, n):
    for i in range(n):
        report.namespaces.append(model.NamespaceReport(ns=model.Namespace(i, f"ns{i}", ""),
                                                       engine="bpf", matched=3, killed=2))


def test_slow_run_draws_then_erases(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.01)
    monkeypatch.setattr(progress, "INTERVAL", 0.01)
    rep, err = Report(), Tty()
    with progress.Progress(rep, kill=True, enabled=True, err=err):
        grow(rep, 2)
        time.sleep(0.2)
    text = err.getvalue()
    assert "sockterm: searching 2 namespaces... 6 matched, 4 killed" in text
    assert text.endswith("\r\x1b[K")                      # the line is erased in place
    assert "\n" not in text                                # and never scrolled


def test_fast_run_does_not_import_rich():
    import subprocess
    import sys
    code = ("import io, sys\n"
            "from sockterm.cli import progress\n"
            "from sockterm.core import Report\n"
            "class Tty(io.StringIO):\n"
            "    def isatty(self): return True\n"
            "with progress.Progress(Report(), kill=False, enabled=True, err=Tty()): pass\n"
            "print('rich' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_fast_run_draws_nothing():
    rep, err = Report(), Tty()
    with progress.Progress(rep, kill=False, enabled=True, err=err):
        grow(rep, 1)
    assert err.getvalue() == ""


def test_disabled_draws_nothing(monkeypatch):
    monkeypatch.setattr(progress, "DELAY", 0.0)
    rep, err = Report(), Tty()
    with progress.Progress(rep, kill=False, enabled=False, err=err):
        time.sleep(0.05)
    assert err.getvalue() == ""


def test_wanted_only_on_a_terminal_and_never_between_streamed_lines():
    pipe = io.StringIO()
    assert not progress.wanted("table", out=Tty(), err=pipe)
    assert progress.wanted("table", out=Tty(), err=Tty())
    assert progress.wanted("json", out=Tty(), err=Tty())
    assert not progress.wanted("tsv", out=Tty(), err=Tty())       # lines stream to that terminal
    assert not progress.wanted("jsonl", out=Tty(), err=Tty())
    assert progress.wanted("tsv", out=pipe, err=Tty())            # sockterm list > file
