"""Cancellation by flag.

A signal handler that raises (KeyboardInterrupt) can fire inside a C
callback (libbpf's print hook), where the exception is swallowed, or between
a destroy and its accounting, where the report would lose it. So signals
only set this flag; the pipeline looks at it between batches and stops
starting new work, and everything already done is reported.
"""

from __future__ import annotations

import threading


class Cancel:
    """Set once, by the first signal (or by the consumer going away)."""

    def __init__(self):
        self._event = threading.Event()
        self.signum = 0          # the signal that set it; 0 when not set by a signal

    def set(self, signum: int = 0) -> None:
        if not self._event.is_set():
            self.signum = signum
            self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    __bool__ = is_set
