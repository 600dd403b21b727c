"""The one pool of namespace workers.

setns(CLONE_NEWNET) moves only the calling thread, and a socket iterator or
netlink socket belongs to the namespace of the thread that creates it. Each
worker thread here takes one namespace at a time: it enters it to set up
(engine.enter), returns home, and then reads, so reads of different
namespaces overlap. The kernel's walk of a namespace costs the same whether
it has 1 socket or 10,000 (its hash tables are shared host-wide) and reads
release the GIL, so a worker per core divides the wall time. The main thread
never changes namespace; it consumes results from a bounded queue, which
keeps memory flat when it is slower than the kernel.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import Callable, Iterable, Iterator

from ..host import enter

# namespaces walked at once: one worker per core, a few at most
WORKERS = max(1, min(4, os.cpu_count() or 1))
# namespaces started and not yet let go by the consumer (Window): enough
# for the workers to keep ahead of it while an early namespace's walk is in
# the kernel, few enough that a slow one does not leave every later one's
# sockets waiting in memory behind it. Measured on a diag listing of 200
# namespaces (the first walked, the rest from the one pass), paired with no
# window: at 500,000 sockets peak RSS 162 -> 137 MiB, time the same (+25 ms
# median of 8, IQR -30..+70); at 250,000 a window of 8 kept 130 -> 60 MiB
# but cost 0.15 s of 1.6 (the decoding it had overlapped with the walk),
# one of 32 +75 ms (IQR -60..+120)
AHEAD = 32
_DONE = object()


class Window:
    """How many items may be started before the consumer lets go of the
    earliest: a worker takes a place before it takes an item, so items
    start in order and the earliest one not let go always has its place."""

    def __init__(self, places: int = AHEAD):
        self._places = threading.Semaphore(places)

    def enter(self, leave: Callable[[], bool]) -> bool:
        """Wait for a place; False (and none taken) once leave() says so."""
        while not self._places.acquire(timeout=0.1):
            if leave():
                return False
        return True

    def release(self) -> None:
        """An item let go of (or one that was never started)."""
        self._places.release()


class Entry:
    """What a job gets to run code inside a namespace from its worker thread."""

    def __init__(self, home: int):
        self._home = home

    def call(self, ns, fn):
        """fn() run inside ns by this thread, which is back home afterwards."""
        return enter.run_in(ns, fn, self._home)


def run(items: Iterable, job: Callable, *, stop: Callable[[], bool],
        workers: int = WORKERS, window: Window | None = None) -> Iterator:
    """Run job(item, entry, emit) for every item on worker threads; yield what
    the jobs emit, in the order they emit it.

    stop() is checked before each item is started; jobs check it themselves
    between batches. A job's exception is the job's to handle: an escaping
    one is re-raised here once the workers are done. If the consumer stops
    early (an error, `| head`), the workers finish the job in hand and quit.
    With a window, an item starts only when it has a place there, which the
    consumer gives back (window.release()) once it let go of an item's output.
    """
    todo: queue.SimpleQueue = queue.SimpleQueue()
    count = 0
    for item in items:
        todo.put(item)
        count += 1
    workers = max(1, min(workers, count))
    if not count:
        return
    out: queue.Queue = queue.Queue(maxsize=64)
    gone = threading.Event()        # the consumer went away
    failures: list[BaseException] = []

    def emit(value) -> None:
        while not gone.is_set():
            try:
                out.put(value, timeout=0.1)
                return
            except queue.Full:
                continue

    def work() -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        entry = Entry(home)
        try:
            while not gone.is_set() and not stop():
                if window is not None and not window.enter(lambda: gone.is_set() or stop()):
                    return
                try:
                    item = todo.get_nowait()
                except queue.Empty:
                    if window is not None:
                        window.release()
                    return
                job(item, entry, emit)
        except BaseException as exc:      # handed to the consumer
            failures.append(exc)
        finally:
            os.close(home)
            out.put(_DONE)

    threads = [threading.Thread(target=work, name=f"sockterm-ns-{i}", daemon=True)
               for i in range(workers)]
    for thread in threads:
        thread.start()
    try:
        running = workers
        while running:
            value = out.get()
            if value is _DONE:
                running -= 1
            else:
                yield value
    finally:
        gone.set()
        while any(t.is_alive() for t in threads):
            try:
                out.get(timeout=0.1)
            except queue.Empty:
                pass
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
