"""main.defer: a module that runs at its first use, not at its import (inspect,
which click imports for help text alone); and cli/options.py's Option, which
keeps help as written so that making the CLI never uses inspect."""

from __future__ import annotations

import inspect
import subprocess
import sys
import threading

import click
import pytest

from sockterm import main

ROOT = __file__.rsplit("/tests/", 1)[0]


@pytest.fixture
def slow_module(tmp_path, monkeypatch):
    """An importable module that counts its runs and takes a while to run
    (two threads asking for it at once meet inside it)."""
    (tmp_path / "st_deferred_probe.py").write_text(
        "import time\n"
        "import st_deferred_count\n"
        "st_deferred_count.runs += 1\n"
        "time.sleep(0.2)\n"
        "VALUE = 42\n")
    (tmp_path / "st_deferred_count.py").write_text("runs = 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("st_deferred_probe", "st_deferred_count"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield "st_deferred_probe"
    for name in ("st_deferred_probe", "st_deferred_count"):
        sys.modules.pop(name, None)


def test_a_deferred_module_runs_once_at_first_use_from_any_thread(slow_module):
    import st_deferred_count
    main.defer(slow_module)
    probe = __import__(slow_module)           # the import statement: not run yet
    assert st_deferred_count.runs == 0 and probe.__name__ == slow_module
    got = []
    threads = [threading.Thread(target=lambda: got.append(probe.VALUE)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == [42] * 4 and st_deferred_count.runs == 1
    assert type(probe) is type(sys)           # a plain module from then on
    with pytest.raises(AttributeError):
        probe.missing


def test_a_module_that_fails_to_run_is_not_left_behind(tmp_path, monkeypatch):
    (tmp_path / "st_deferred_broken.py").write_text("raise ImportError('broken on purpose')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    main.defer("st_deferred_broken")
    import st_deferred_broken
    with pytest.raises(ImportError, match="broken on purpose"):
        st_deferred_broken.anything
    assert "st_deferred_broken" not in sys.modules


def test_an_imported_module_and_an_unknown_one_are_left_alone():
    main.defer("inspect")                     # pytest imported it long ago
    assert sys.modules["inspect"] is inspect
    main.defer("st_no_such_module_here")
    assert "st_no_such_module_here" not in sys.modules


def test_the_cli_is_made_and_parsed_without_running_inspect():
    """What every run does before its command (import, build, parse) leaves
    inspect unrun; help text runs it (and is what it was)."""
    code = (
        "import sys\n"
        "from sockterm import main\n"
        "main.defer('inspect')\n"
        "from sockterm.cli import cli\n"
        "for args in (['kill', '--dst', '10.0.0.5:80', '--yes', '-o', 'json'],\n"
        "             ['match', '--netns', 'host', '-v'], ['list', '-4'], ['doctor', '-o', 'json']):\n"
        "    ctx = cli.make_context('sockterm', list(args))\n"
        "    name, cmd, rest = cli.resolve_command(ctx, ctx.protected_args + ctx.args)\n"
        "    cmd.make_context(name, rest, parent=ctx)\n"
        "print(type(sys.modules['inspect']).__name__, 'ast' in sys.modules)\n"
        "ctx = cli.make_context('sockterm', ['kill', '--help'], resilient_parsing=True)\n"
        "_, cmd, _ = cli.resolve_command(ctx, ['kill'])\n"
        "text = cmd.get_help(cmd.make_context('kill', [], parent=ctx, resilient_parsing=True))\n"
        "print(type(sys.modules['inspect']).__name__, 'ast' in sys.modules, '--graceful' in text)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=60, check=True).stdout
    assert out.split("\n")[:2] == ["_Deferred False", "module True True"]


def _all_options():
    from sockterm.cli import COMMANDS, cli
    ctx = click.Context(cli)
    yield from cli.get_params(ctx)
    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        yield from cmd.get_params(click.Context(cmd, parent=ctx))


def test_every_option_keeps_help_cleandoc_would_not_change():
    """Option skips click's cleandoc: each help text must be what cleandoc
    would have made of it, and each option must be ours (or it runs it)."""
    from sockterm.cli.options import Option
    seen = 0
    for param in _all_options():
        if isinstance(param, click.Option):
            assert type(param) is Option, param.opts
            assert param.help and inspect.cleandoc(param.help) == param.help, param.opts
            seen += 1
    assert seen > 30
