"""Engines find (and in kill mode destroy) the sockets of one namespace.

Both engines take the same compiled Filter and yield model.Sock objects, so
list, match and kill behave identically whichever one runs:
  bpf  - socket iterators + the bpf_sock_destroy kfunc (kernel >= 6.5)
  diag - NETLINK_SOCK_DIAG dumps + SOCK_DESTROY, as `ss -K` does
"""

from __future__ import annotations

from ..exitcodes import ExitCode

NAMES = ("auto", "bpf", "diag")


class EngineError(RuntimeError):
    """An engine cannot run on this host; the message says why, in one line."""

    def __init__(self, message: str, code: ExitCode = ExitCode.FAILURE):
        super().__init__(message)
        self.code = code


def create(name: str, *, flt, kill: bool, exclude_inodes=frozenset(), log=None, scope=None):
    """The engine called `name` ('bpf' or 'diag'), opened and ready to scan.
    `scope` (model.Scope) is what the run resolved --cgroup/--container/--pod to."""
    if name == "bpf":
        from .bpf.engine import BpfEngine as cls
    elif name == "diag":
        from .diag.engine import DiagEngine as cls
    else:
        raise EngineError(f"unknown engine {name!r}", ExitCode.USAGE)
    engine = cls(flt=flt, kill=kill, exclude_inodes=exclude_inodes, log=log or (lambda msg: None),
                 scope=scope)
    engine.open()
    return engine
