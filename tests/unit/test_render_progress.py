"""The progress line: only for a person at a terminal, only for slow runs, erased after."""

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
    assert text.endswith("\r\x1b[K")


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
