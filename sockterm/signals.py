"""SIGINT, SIGTERM and SIGHUP set the run's Cancel flag; they raise nothing.

A KeyboardInterrupt raised inside a ctypes callback (libbpf's print hook) is
swallowed with "Exception ignored", and one raised between a destroy and its
accounting makes the report lie. So the handlers only set the flag, which
the core checks between batches. The one place a signal must cut a blocking
call short is the prompt (a person waiting at input()): `at_prompt()` makes
the handlers raise there.
"""

from __future__ import annotations

import _signal     # the signal module's C half: its Python half builds three enums (~0.9 ms)
import contextlib

from .cancel import Cancel

SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
CANCEL = Cancel()
_raising = False


class Interrupted(BaseException):
    """A signal arrived while a person was being asked (see at_prompt)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _handler(signum, frame) -> None:
    CANCEL.set(signum)
    if _raising:
        raise Interrupted(signum)


def install() -> Cancel:
    for signum in SIGNALS:
        _signal.signal(signum, _handler)
    return CANCEL


@contextlib.contextmanager
def held():
    """Hold the signals back from this thread while it writes output.

    A blocking write to a pipe that a signal interrupts returns short, and
    the text layers above it lose the rest (a JSON document cut at 64 KiB).
    Held, the signal waits in the kernel (or lands in a worker thread) and
    its handler runs right after: the write completes, the flag is still set.
    """
    old = _signal.pthread_sigmask(_signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, old)


@contextlib.contextmanager
def at_prompt():
    global _raising
    if CANCEL.is_set():
        raise Interrupted(CANCEL.signum)
    _raising = True
    try:
        yield
    finally:
        _raising = False
