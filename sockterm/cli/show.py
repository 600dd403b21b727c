"""sockterm list / sockterm match."""

from __future__ import annotations

import click

from .options import (filter_args, filter_options, global_options, help_option, output_options,
                      watch_option)
from .run import build_filter, show


def _show(ctx, command: str, kwargs: dict, watch: float | None = None) -> int:
    from .. import states
    defaults = states.ALL if command == "list" else states.DEFAULT_KILL
    return show(ctx, command, build_filter(filter_args(kwargs), defaults), kwargs, watch=watch)


@click.command("list")
@filter_options
@output_options
@global_options
@help_option()
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
@watch_option
@help_option()
@click.pass_context
def match_cmd(ctx, *, watch: float | None, **kwargs):
    """Show exactly what `kill` with the same filter would destroy.

    Same filter, same defaults as kill: without --state only connected
    sockets (never listeners, unconnected UDP or time-wait). With --watch,
    then every new connection that kill --watch would destroy, as it appears.
    """
    return _show(ctx, "match", kwargs, watch)
