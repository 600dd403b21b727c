"""What list, match and kill share: build the request, stream, render, exit."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from ..exitcodes import ExitCode


def abort(message: str, code: int = ExitCode.FAILURE) -> NoReturn:
    """One line on stderr, then exit: the only way commands fail."""
    click.echo(f"sockterm: error: {message}", err=True)
    sys.exit(int(code))


def stderr_log(enabled: bool):
    if not enabled:
        return lambda msg: None
    return lambda msg: click.echo(f"sockterm: {msg}", err=True)


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


def stream(request, renderer, meta: dict, *, quiet_summary: bool = False) -> int:
    """Run the request through the renderer; return the exit code."""
    from ..core import Report, SocktermError, execute
    from .render import summary_line
    report = Report()
    try:
        for sock in execute(request, report):
            renderer.socket(sock)
    except SocktermError as exc:
        abort(str(exc), exc.code)
    renderer.finish(report, meta)
    sys.stdout.flush()
    for warning in report.warnings:
        click.echo(f"sockterm: warning: {warning}", err=True)
    if not quiet_summary:
        click.echo(summary_line(report, request.kill), err=True)
    return report.exit_code(request.kill)


def renderer_for(output, no_header: bool, kill: bool):
    from .render import RENDERERS, default_format
    fmt = output or default_format()
    return RENDERERS[fmt](kill=kill, header=not no_header)
