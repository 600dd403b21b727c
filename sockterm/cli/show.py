"""sockterm list / sockterm match."""

from __future__ import annotations

import click

from .options import filter_args, filter_options, global_options, output_options
from .run import build_filter, show


def _show(ctx, command: str, kwargs: dict) -> int:
    from .. import states
    defaults = states.ALL if command == "list" else states.DEFAULT_KILL
    return show(ctx, command, build_filter(filter_args(kwargs), defaults), kwargs)


@click.command("list")
@filter_options
@output_options
@global_options
@click.pass_context
def list_cmd(ctx, **kwargs):
    """Show sockets in every network namespace (all states unless --state).

    Exit status 0 when something is listed, 1 when nothing matched.
    """
    return _show(ctx, "list", kwargs)


@click.command("match")
@filter_options
@output_options
@global_options
@click.pass_context
def match_cmd(ctx, **kwargs):
    """Show exactly what `kill` with the same filter would destroy.

    Same filter, same defaults as kill: without --state only connected
    sockets (never listeners, unconnected UDP or time-wait).
    """
    return _show(ctx, "match", kwargs)
