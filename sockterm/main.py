"""The sockterm process: signal handling first, then the command line.

From the first line sockterm runs, SIGINT, SIGTERM and SIGHUP only set a
flag (see signals.py), so a signal during start-up is never lost inside a C
callback; before that line the signal's default action ends the process,
which has not touched anything yet.
"""

from . import signals


def run() -> None:
    signals.install()
    from .cli import main
    main()
