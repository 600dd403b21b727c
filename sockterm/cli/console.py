"""rich, for the surfaces a person reads: the kill confirmation, doctor, the
progress display and --debug tracebacks. Imported only by those, never by
--help, completion or the list/match stream (rich needs ~0.5 ms a table row).

Everything shown through it is data: markup and highlighting are off (`[::1]`
is an address, not markup), and untrusted text has passed text.shown first.
"""

from __future__ import annotations

import sys

from rich.console import Console

from ..text import shown, terminal_width
from .render import use_color


def console(stream=None) -> Console:
    """A Console on `stream` (stderr by default) that follows sockterm's rules:
    its width (COLUMNS only when valid), colour only on a terminal and never
    with NO_COLOR set and non-empty or TERM=dumb."""
    stream = stream or sys.stderr
    color = use_color(stream)
    return Console(file=stream, markup=False, highlight=False, emoji=False,
                   width=terminal_width(stream), color_system="auto" if color else None,
                   no_color=not color)


def print_traceback(exc: BaseException) -> None:
    """--debug: the traceback of an internal error, its message made safe."""
    from rich.traceback import Traceback
    trace = Traceback.extract(type(exc), exc, exc.__traceback__)
    for stack in trace.stacks:
        stack.exc_value = shown(stack.exc_value)
    console(sys.stderr).print(Traceback(trace))
