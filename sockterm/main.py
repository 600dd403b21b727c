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

import os  # noqa: E402
import sys  # noqa: E402

from . import signals  # noqa: E402


def run() -> None:
    signals.install()
    from .cli import main
    try:
        main()
    except SystemExit as exc:
        leave(exc.code)


def leave(code) -> None:
    """Exit without the interpreter's teardown: freeing every module and
    object one by one costs a process 10-20 ms for nothing. The run is over
    (its output written and flushed, the audit sent; the only threads left
    are idle daemons); what stdio still buffers is flushed here."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError) as exc:
            if stream is sys.stdout and getattr(exc, "errno", None) not in (None, 32):   # EPIPE
                from .exitcodes import ExitCode
                os.write(2, f"sockterm: error: cannot write output: {exc.strerror}\n".encode())
                code = code or int(ExitCode.FAILURE)
    os._exit(code)
