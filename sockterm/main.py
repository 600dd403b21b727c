"""The sockterm process: signal handling first, then the command line.

From the first line sockterm runs, SIGINT, SIGTERM and SIGHUP only set a
flag (see signals.py), so a signal during start-up is never lost inside a C
callback; before that line the signal's default action ends the process,
which has not touched anything yet.
"""

import gc

# no cyclic collection, from the first import on: the imports alone would
# trigger a few full passes, and the run makes only acyclic objects
gc.disable()

from . import signals  # noqa: E402


def run() -> None:
    signals.install()
    from .cli import main
    main()
