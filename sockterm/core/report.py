"""What a run says: its errors (each with the exit code it maps to), the
Report every entry point fills, and the Plan a kill can be pinned to."""

from __future__ import annotations

from dataclasses import dataclass, field
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


@dataclass
class Options:
    """How to run (what to select is the Filter)."""

    backend: str = "auto"              # auto | bpf | diag
    processes: bool = True             # attribute sockets to processes
    log: Callable[[str], None] = _quiet
    cancel: Cancel = field(default_factory=Cancel)
    walk: str = "auto"                 # auto | all | needed: which namespaces to walk (decide.py)


@dataclass
class Report:
    engine: str = ""
    namespaces: list = field(default_factory=list)   # model.NamespaceReport
    skipped: list = field(default_factory=list)      # discovery notes (-v)
    warnings: list = field(default_factory=list)     # one line each, for stderr
    interrupted: bool = False      # a signal stopped the run before it was done
    signum: int = 0                # ... which one
    refused: str = ""              # a kill that refused to start: why (nothing killed)
    graceful: bool = False         # a kill --graceful: sockets shut down, not destroyed
    watch: object = None           # core.watch.WatchReport: what a --watch window did

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


@dataclass
class Plan:
    """The sockets a scan selected, to be killed exactly: pinned by cookie,
    so a socket that appears later is not part of what was agreed to."""

    flt: Filter
    engine: str
    sockets: list                      # model.Sock, processes attributed when asked
    namespaces: list                   # model.Namespace holding them
    walked: dict = field(default_factory=dict)   # netns inode -> walk_reason, for the
                                                 # namespaces the scan walked; the others'
                                                 # sockets came whole from the one pass
    searched: list = field(default_factory=list)  # the scan's NamespaceReports of the
                                                  # namespaces with nothing to kill

    @property
    def cookies(self) -> frozenset:
        return frozenset(s.cookie for s in self.sockets)


def failure(nsr) -> str:
    """The warning line of a namespace that could not be searched."""
    return f"namespace {nsr.ns.name} ({nsr.ns.ino}): {nsr.error}"
