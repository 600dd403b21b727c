"""What list, match and kill share: build the request, stream, render, exit."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from ..exitcodes import ExitCode
from ..text import shown


def abort(message: str, code: int = ExitCode.FAILURE) -> NoReturn:
    """One line on stderr, then exit: the only way commands fail."""
    click.echo(f"sockterm: error: {shown(message)}", err=True)
    sys.exit(int(code))


def stderr_log(enabled: bool):
    if not enabled:
        return lambda msg: None
    return lambda msg: click.echo(f"sockterm: {shown(msg)}", err=True)


def build_filter(filter_kwargs: dict, default_states):
    from ..filter import FilterError, build_filter as build
    try:
        return build(**filter_kwargs, default_states=default_states)
    except FilterError as exc:
        abort(str(exc), ExitCode.USAGE)


def make_request(ctx, command: str, flt, *, processes: bool):
    from ..core import Request
    return Request(command=command, flt=flt, backend=ctx.obj["backend"], processes=processes,
                   log=stderr_log(ctx.obj["verbose"]))


def stream(request, renderer, meta: dict, *, on_done=None) -> int:
    """Run the request through the renderer; return the exit code.

    on_done(report, error_text) runs once the run stopped, however it stopped
    (the kill audit record: sockets may be gone even when the run failed).
    """
    from ..core import Report, SocktermError
    from .render import summary_lines
    report = Report()
    reader_gone = []
    unwritable = []      # why the output could not be written (disk full, EIO, encoding)

    def take(sock):
        if reader_gone:
            return
        try:
            renderer.socket(sock)
        except BrokenPipeError:
            if not request.kill:
                raise             # list | head: stopping early is what the reader wants
            reader_gone.append(True)   # a kill half done because of `| head`: finish it
            _silence_stdout()
        except (OSError, UnicodeEncodeError) as exc:
            if not request.kill:
                raise _Unwritable(exc) from None
            # a kill half done: finish it, write the audit record, then say so
            unwritable.append(output_problem(exc))
            reader_gone.append(True)
            _silence_stdout()

    try:
        run_into(request, report, take, fmt=renderer.fmt)
    except _Unwritable as exc:
        _silence_stdout()
        abort(output_problem(exc.cause), ExitCode.FAILURE)
    except SocktermError as exc:
        if on_done:
            on_done(report, str(exc))
        abort(str(exc), exc.code)
    except BaseException as exc:
        if on_done:
            on_done(report, f"interrupted ({type(exc).__name__})")
        raise
    if on_done:
        on_done(report, "")
    if not reader_gone:
        try:
            renderer.finish(report, meta)
            sys.stdout.flush()
        except BrokenPipeError:
            if not request.kill:
                raise
            _silence_stdout()
        except (OSError, UnicodeEncodeError) as exc:
            unwritable.append(output_problem(exc))
            _silence_stdout()
    for warning in report.warnings:
        click.echo(f"sockterm: warning: {shown(warning)}", err=True)
    for line in summary_lines(report, request.kill):
        click.echo(line, err=True)
    if unwritable:
        abort(unwritable[0], ExitCode.FAILURE)
    code = report.exit_code(request.kill)
    if code == ExitCode.NO_MATCH:
        for hint in request.flt.hints():
            click.echo(f"sockterm: hint: {shown(hint)}", err=True)
    return code


class _Unwritable(Exception):
    def __init__(self, cause: Exception):
        super().__init__(str(cause))
        self.cause = cause


def output_problem(exc: Exception) -> str:
    """One line for an output that could not be written."""
    if isinstance(exc, UnicodeEncodeError):
        encoding = getattr(sys.stdout, "encoding", None) or exc.encoding
        return (f"cannot write output: {ascii(exc.object[exc.start:exc.end])} cannot be written "
                f"in the output's encoding ({encoding}); use a UTF-8 locale or -o json")
    return f"cannot write output: {getattr(exc, 'strerror', None) or exc}"


def _silence_stdout() -> None:
    """The reader went away: drop further output (and the flush at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def run_into(request, report, take, *, fmt: str) -> None:
    """Feed every socket the request selects to take(sock), with a progress line
    on stderr when the run takes more than a moment."""
    from ..core import execute
    from .progress import Progress, wanted
    with Progress(report, kill=request.kill, enabled=wanted(fmt)):
        for sock in execute(request, report):
            take(sock)


def show(ctx, command: str, flt, options: dict) -> int:
    """list / match (and kill --dry-run): stream the selected sockets, kill nothing."""
    request = make_request(ctx, command, flt, processes=not options["no_processes"])
    renderer = renderer_for(options["output"], options["no_header"], kill=False)
    return stream(request, renderer, {"command": command, "filter": flt.describe()})


def renderer_for(output, no_header: bool, kill: bool):
    from .render import RENDERERS, default_format
    fmt = output or default_format()
    return RENDERERS[fmt](kill=kill, header=not no_header)
