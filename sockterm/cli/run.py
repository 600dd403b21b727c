"""What list, match and kill share: options for the core, streaming into a
renderer, and the exit code."""

from __future__ import annotations

import errno
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
        from ..engine import silent
        return silent
    return lambda msg: click.echo(f"sockterm: {shown(msg)}", err=True)


def build_filter(filter_kwargs: dict, default_states):
    from ..filter import FilterError, build_filter as build
    try:
        return build(**filter_kwargs, default_states=default_states)
    except FilterError as exc:
        abort(str(exc), ExitCode.USAGE)


def core_options(ctx, *, processes: bool):
    from ..core import Options
    from ..signals import CANCEL
    # SOCKTERM_WALK=all walks every namespace (no one pass), as sockterm did
    # before it; =needed makes the one pass even where a few walks cost less
    return Options(backend=ctx.obj["backend"], processes=processes,
                   log=stderr_log(ctx.obj["verbose"]), cancel=CANCEL,
                   walk=os.environ.get("SOCKTERM_WALK") or "auto")


def stream(start, renderer, meta: dict, *, kill: bool, on_done=None, hints=()) -> int:
    """Feed the sockets start(report) streams to the renderer, finish the
    output, return the exit code.

    on_done(report, error_text) runs once the run stopped, however it stopped,
    before the output is finished (the kill audit record: sockets may be gone
    even when the run failed). A reader that goes away (`| head`, a closed
    stdout) ends a list early; a kill still completes, its output dropped.
    Either way the exit code is the run's own, whatever the format. Output
    that cannot be written (disk full, EIO, an encoding that cannot show a
    name) ends a list at once, a kill once it completed and was audited: one
    line, exit 3. `hints` go to stderr when nothing matched.
    """
    from ..core import Report, SocktermError
    from .progress import Progress, wanted
    from ..signals import CANCEL
    report = Report()
    reader_gone = False
    unwritable = ""
    try:
        # (a watch streams lines for minutes: no spinner between them)
        with Progress(report, kill=kill, enabled=wanted(renderer.fmt) and not renderer.watch):
            sockets = start(report)
            for sock in sockets:
                if reader_gone:
                    continue          # only a kill gets here: let it finish
                try:
                    renderer.socket(sock)
                except (OSError, UnicodeEncodeError) as exc:
                    if not _reader_gone(exc):
                        unwritable = output_problem(exc)
                    reader_gone = True
                    _silence_stdout()
                    if not kill:
                        sockets.close()
                        break
    except SocktermError as exc:
        if on_done:
            on_done(report, str(exc))
        abort(str(exc), exc.code)
    except BaseException as exc:
        if on_done:
            on_done(report, f"internal error ({type(exc).__name__})")
        raise
    if on_done:
        on_done(report, "")
    if not reader_gone:
        try:
            renderer.finish(report, meta)
            sys.stdout.flush()
        except (OSError, UnicodeEncodeError) as exc:
            if not _reader_gone(exc):
                unwritable = output_problem(exc)
            _silence_stdout()
    if unwritable and not kill:
        abort(unwritable)      # a list's summary would only restate what failed
    _epilogue(report, kill)
    if unwritable:
        abort(unwritable)
    code = report.exit_code(kill, CANCEL.signum)
    if code == ExitCode.NO_MATCH:
        for hint in hints:
            click.echo(f"sockterm: hint: {shown(hint)}", err=True)
    return code


def _reader_gone(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE


def output_problem(exc: BaseException) -> str:
    """One line for output that could not be written."""
    if isinstance(exc, UnicodeEncodeError):
        encoding = getattr(sys.stdout, "encoding", None) or exc.encoding
        return (f"cannot write output: {ascii(exc.object[exc.start:exc.end])} cannot be written "
                f"in the output's encoding ({encoding}); use a UTF-8 locale or -o json")
    return f"cannot write output: {getattr(exc, 'strerror', None) or exc}"


def _epilogue(report, kill: bool) -> None:
    from .render import summary_lines
    for warning in report.warnings:
        click.echo(f"sockterm: warning: {shown(warning)}", err=True)
    for line in summary_lines(report, kill):
        click.echo(line, err=True)


def _silence_stdout() -> None:
    """The reader went away: drop further output (and the flush at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def show(ctx, command: str, flt, options: dict, watch: float | None = None) -> int:
    """list / match (and kill --dry-run): stream the selected sockets, kill
    nothing; with watch (match), then what appears for that many seconds."""
    from .. import core
    opts = core_options(ctx, processes=not options["no_processes"])
    renderer = renderer_for(options["output"], options["no_header"], kill=False, watch=watch)
    meta = {"command": command, "filter": flt.describe()}
    if not watch:
        return stream(lambda report: core.scan(flt, report, opts), renderer, meta, kill=False,
                      hints=flt.hints())
    try:
        window = core.watch(flt, opts, duration=watch, kill=False)
    except core.SocktermError as exc:
        abort(str(exc), exc.code)
    try:
        return stream(lambda report: window.run(flt, report), renderer, meta, kill=False,
                      hints=flt.hints())
    finally:
        window.close()


def renderer_for(output, no_header: bool, kill: bool, watch: float | None = None):
    from .render import RENDERERS, default_format
    fmt = output or default_format()
    return RENDERERS[fmt](kill=kill, header=not no_header, watch=bool(watch))
