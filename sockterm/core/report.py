"""What a run says: its errors (each with the exit code it maps to), the
Report every entry point fills, and the Plan a kill can be pinned to."""

from __future__ import annotations

from typing import Callable

from ..cancel import Cancel
from ..exitcodes import ExitCode
from ..filter import Filter


class SocktermError(Exception):
    """A failure to report in one line, with the exit code it maps to."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE):
        super().__init__(message)
        self.code = code


class Refused(SocktermError):
    """A kill that will not start: more sockets match than the caller allowed.
    Nothing was killed; Report.refused says why."""


def _quiet(msg: str) -> None:
    pass


# Options, Report and Plan are plain classes, not dataclasses: a dataclass's
# methods are compiled from source at import, ~1 ms a class on every run.
# (Nothing compares or prints them: == is identity, repr the default.)

class Options:
    """How to run (what to select is the Filter)."""

    def __init__(self, backend: str = "auto", processes: bool = True,
                 log: Callable[[str], None] = _quiet, cancel: Cancel | None = None,
                 walk: str = "auto"):
        self.backend = backend          # auto | bpf | diag
        self.processes = processes      # attribute sockets to processes
        self.log = log
        self.cancel = Cancel() if cancel is None else cancel
        self.walk = walk                # auto | all | needed: which namespaces to walk (decide.py)


class Report:
    def __init__(self, engine: str = "", namespaces: list | None = None,
                 skipped: list | None = None, warnings: list | None = None,
                 interrupted: bool = False, signum: int = 0, refused: str = "",
                 graceful: bool = False, watch: object = None):
        self.engine = engine
        self.namespaces = [] if namespaces is None else namespaces   # model.NamespaceReport
        self.skipped = [] if skipped is None else skipped            # discovery notes (-v)
        self.warnings = [] if warnings is None else warnings         # one line each, for stderr
        self.interrupted = interrupted  # a signal stopped the run before it was done
        self.signum = signum            # ... which one
        self.refused = refused          # a kill that refused to start: why (nothing killed)
        self.graceful = graceful        # a kill --graceful: sockets shut down, not destroyed
        self.watch = watch              # core.watch.WatchReport: what a --watch window did

    @property
    def matched(self) -> int:
        return sum(r.matched for r in self.namespaces)

    @property
    def killed(self) -> int:
        return sum(r.killed for r in self.namespaces)

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.namespaces)

    @property
    def shut_down(self) -> int:
        return sum(r.shut_down for r in self.namespaces)

    @property
    def not_held(self) -> int:
        return sum(r.not_held for r in self.namespaces)

    @property
    def ns_errors(self) -> list:
        return [r for r in self.namespaces if r.error and not r.gone]

    def exit_code(self, kill: bool, signum: int = 0) -> int:
        """pkill's codes; 128 + the signal for a run a signal stopped (or that
        received one while it wrote its report)."""
        if signum or self.signum:
            return 128 + (signum or self.signum)
        if self.failed or self.ns_errors or getattr(self.watch, "ended", "") == "max":
            return ExitCode.FAILURE       # (a watch stopped by --max: more matched than allowed)
        if kill:
            return ExitCode.OK if self.killed or self.shut_down else ExitCode.NO_MATCH
        return ExitCode.OK if self.matched else ExitCode.NO_MATCH


class Plan:
    """The sockets a scan selected, to be killed exactly: pinned by cookie,
    so a socket that appears later is not part of what was agreed to."""

    def __init__(self, flt: Filter, engine: str, sockets: list, namespaces: list,
                 walked: dict | None = None, searched: list | None = None):
        self.flt = flt
        self.engine = engine
        self.sockets = sockets          # model.Sock, processes attributed when asked
        self.namespaces = namespaces    # model.Namespace holding them
        # netns inode -> walk_reason, for the namespaces the scan walked; the
        # others' sockets came whole from the one pass
        self.walked = {} if walked is None else walked
        # the scan's NamespaceReports of the namespaces with nothing to kill
        self.searched = [] if searched is None else searched

    @property
    def cookies(self) -> frozenset:
        return frozenset(s.cookie for s in self.sockets)


def failure(nsr) -> str:
    """The warning line of a namespace that could not be searched."""
    return f"namespace {nsr.ns.name} ({nsr.ns.ino}): {nsr.error}"
