"""The sockterm command line: parse, call sockterm.core, render.

Subcommands load lazily, so `sockterm --help` and completion import only
click: no pyroute2, libbpf, pyelftools or rich.
"""

from __future__ import annotations

import gc
import os
import sys

import click

from .. import __version__
from ..exitcodes import ExitCode
from ..text import shown, terminal_width
from .options import Option, help_option, option

COMMANDS = {
    "list": ("sockterm.cli.show", "list_cmd", "Show sockets in every network namespace."),
    "match": ("sockterm.cli.show", "match_cmd", "Show exactly what `kill` with the same filter would destroy."),
    "kill": ("sockterm.cli.kill", "kill_cmd", "Destroy matching sockets (ECONNABORTED locally, RST to TCP peers)."),
    "doctor": ("sockterm.cli.doctor", "doctor_cmd", "Tell what works on this host, and why not."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(__import__(module, fromlist=[attr]), attr)   # importlib's import: ~0.5 ms

    def format_commands(self, ctx, formatter):
        rows = [(name, help_text) for name, (_, _, help_text) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


MAX_HELP_WIDTH = 100


def help_width() -> int:
    """The width click gives help (the terminal's, at most 100, less 2, at
    least 50), given to it: left to click, it imports shutil for the
    terminal's size (~2 ms of every --help)."""
    return max(min(terminal_width(), MAX_HELP_WIDTH) - 2, 50)


# -h/--help is given to each command by hand (help_option): an Option of ours
@click.group(cls=LazyGroup, context_settings={"help_option_names": [],
                                               "max_content_width": MAX_HELP_WIDTH,
                                               "terminal_width": help_width()})
@click.version_option(__version__, "-V", "--version", prog_name="sockterm", cls=Option)
@option("--backend", type=click.Choice(["auto", "bpf", "diag"]), default="auto",
        show_default=True, envvar="SOCKTERM_BACKEND",
        help="Engine: bpf (socket iterators + bpf_sock_destroy), diag (netlink "
             "SOCK_DESTROY, like ss -K), or auto (bpf where the kernel can).")
@option("-v", "--verbose", is_flag=True, help="Explain decisions and skipped namespaces on stderr.")
@option("--debug", is_flag=True, envvar="SOCKTERM_DEBUG", help="Show tracebacks on errors.")
@help_option()
@click.pass_context
def cli(ctx, *, backend: str, verbose: bool, debug: bool):
    """Find sockets anywhere on this host and forcefully terminate the ones you name.

    \b
    Every network namespace is searched unless --netns narrows it.
    Exit status: 0 matched/killed, 1 nothing matched, 2 usage error,
    3 operational failure (a kill failed, missing privileges, unsupported kernel).

    \b
    Example, a backend behind a VIP died:
      sudo sockterm kill --dst 10.0.0.5:80 --yes
    """
    ctx.obj = {"backend": backend, "verbose": verbose, "debug": debug}


def edits(a: str, b: str) -> int:
    """Optimal string alignment distance: insertions, deletions, substitutions
    and swaps of neighbours (the typos people make)."""
    prev2, prev = None, list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cost = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cost = min(cost, prev2[j - 2] + 1)
            cur.append(cost)
        prev2, prev = prev, cur
    return prev[-1]


def close_options(typed: str, candidates) -> list[str]:
    """The options a typo of `typed` could be: at most one edit in four
    characters (at least one). click's own guess (difflib, ratio 0.6) answers
    `--graceful` with `--rate`, an option that does something else."""
    name = typed.lstrip("-")
    return [c for c in candidates if edits(name, c.lstrip("-")) <= max(1, len(name) // 4)]


def main(argv=None) -> None:
    # a short-lived process holding many small acyclic objects (one per socket):
    # the cyclic collector would rescan them all again and again for nothing
    gc.disable()
    from ..signals import install
    install()     # first: a signal from here on is a flag the run honours, never lost
    debug = bool(os.environ.get("SOCKTERM_DEBUG")) or "--debug" in (argv or sys.argv[1:])
    if "_SOCKTERM_COMPLETE" in os.environ:
        from .completion import register
        register()
    try:
        code = cli.main(args=argv, prog_name="sockterm", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:   # bare `sockterm`: help, not an error
        click.echo(exc.ctx.get_help())
        code = ExitCode.OK
    except click.exceptions.Abort:
        click.echo("sockterm: aborted", err=True)
        code = ExitCode.NO_MATCH
    except click.ClickException as exc:
        if isinstance(exc, click.NoSuchOption) and exc.possibilities:
            exc.possibilities = close_options(exc.option_name, exc.possibilities)
        hint = ""
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            hint = f" (see '{exc.ctx.command_path} --help')"
        click.echo(f"sockterm: error: {shown(exc.format_message())}{hint}", err=True)
        code = exc.exit_code
    except KeyboardInterrupt:
        click.echo("sockterm: interrupted", err=True)
        code = 130
    except BrokenPipeError:
        sys.stderr.close()   # the reader went away (| head): not an error
        code = ExitCode.OK
    except Exception as exc:
        if debug:
            from .console import print_traceback
            print_traceback(exc)
        else:
            click.echo(f"sockterm: internal error: {type(exc).__name__}: {shown(str(exc))} "
                       "(run with --debug for a traceback)", err=True)
        code = ExitCode.FAILURE
    sys.exit(int(code or 0))
