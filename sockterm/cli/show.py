"""sockterm list / sockterm match."""

from __future__ import annotations

import click

from .options import filter_args, filter_options, output_options
from .run import build_filter, make_request, renderer_for, stream


def _show(ctx, command: str, kwargs: dict) -> int:
    from .. import states
    defaults = states.ALL if command == "list" else states.DEFAULT_KILL
    flt = build_filter(filter_args(kwargs), defaults)
    request = make_request(ctx, command, flt, processes=not kwargs["no_processes"])
    renderer = renderer_for(kwargs["output"], kwargs["no_header"], kill=False)
    return stream(request, renderer, {"command": command, "filter": flt.describe()})


@click.command("list")
@filter_options
@output_options
@click.pass_context
def list_cmd(ctx, **kwargs):
    """Show sockets in every network namespace (all states unless --state).

    Exit status 0 when something is listed, 1 when nothing matched.
    """
    return _show(ctx, "list", kwargs)


@click.command("match")
@filter_options
@output_options
@click.pass_context
def match_cmd(ctx, **kwargs):
    """Show exactly what `kill` with the same filter would destroy.

    Same filter, same defaults as kill: without --state only connected
    sockets (never listeners, unconnected UDP or time-wait).
    """
    return _show(ctx, "match", kwargs)
