"""A progress display on stderr for runs that take more than a moment.

A thread redraws a rich spinner line from counters the run updates; nothing
is drawn (and rich is not even imported) for runs shorter than DELAY, and the
line is erased before any output. The line holds counts only: no name from
the host reaches it.
"""

from __future__ import annotations

import sys
import threading
import time

DELAY = 0.4       # seconds before the line appears
INTERVAL = 0.1


class Progress:
    def __init__(self, report, *, kill: bool, enabled: bool, err=None):
        self.report = report          # core.Report: its namespaces list grows as the run goes
        self.kill = kill
        self.enabled = enabled
        self.err = err or sys.stderr
        self._stop = threading.Event()
        self._thread = None

    def __enter__(self):
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="sockterm-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()     # the thread erases its line before it ends
        self._thread = None

    def line(self) -> str:
        report = self.report
        nss = len(report.namespaces)
        text = (f"sockterm: searching {nss} namespace{'s' if nss != 1 else ''}... "
                f"{report.matched} matched")
        if not self.kill:
            return text
        return text + (f", {report.shut_down} shut down" if report.shut_down else "") + \
            f", {report.killed} killed"

    def _run(self) -> None:
        if self._stop.wait(DELAY):
            return
        try:
            from rich.spinner import Spinner
            from .console import console
            con = console(self.err)
            utf = (getattr(self.err, "encoding", "") or "").lower().startswith("utf")
            spinner = Spinner("dots" if utf else "line", style="cyan")
        except Exception:       # the display is a courtesy: never fail a run over it
            return
        drawn = False
        try:
            while True:
                spinner.update(text=self.line())
                # rich renders the frame and its colours; the line is drawn and
                # erased in place (CR, erase line), never scrolled: what follows
                # on the terminal starts where the line was
                with con.capture() as captured:
                    con.print(spinner.render(time.monotonic()), end="", no_wrap=True,
                              overflow="ellipsis", crop=True)
                self._write("\r\x1b[K" + captured.get())
                drawn = True
                if self._stop.wait(INTERVAL):
                    return
        except Exception:
            return
        finally:
            if drawn:
                self._write("\r\x1b[K")

    def _write(self, text: str) -> None:
        try:
            self.err.write(text)
            self.err.flush()
        except (OSError, ValueError):
            pass


def wanted(fmt: str, out=None, err=None) -> bool:
    """Draw only for a person watching stderr, and never between lines that
    stream to the same terminal (tsv, jsonl)."""
    out, err = out or sys.stdout, err or sys.stderr
    if not _isatty(err):
        return False
    return fmt in ("table", "json") or not _isatty(out)


def _isatty(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
