"""--rate: a fixed list of sockets in paced batches."""

from __future__ import annotations

import math
import time
from typing import Iterator

BATCHES_A_SECOND = 10


def batches(items: list, rate: float, cancel) -> Iterator[list]:
    """items in batches, ten a second, at most `rate` items a second; no
    batch is handed out once cancel is set (the wait for the next ends then)."""
    size = max(1, math.ceil(rate / BATCHES_A_SECOND))
    start = time.monotonic()
    for first in range(0, len(items), size):
        due = start + first / rate
        while not cancel.is_set() and time.monotonic() < due:
            cancel.wait(due - time.monotonic())
        if cancel.is_set():
            return
        yield items[first:first + size]
