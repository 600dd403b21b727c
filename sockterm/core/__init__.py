"""The pipeline: filter -> namespaces -> engine -> report (see pipeline.py,
which lists the module of each stage).

The CLI parses, asks and renders; everything it runs goes through here.
"""

from ..cancel import Cancel
from . import policy
from .pipeline import kill, plan, scan
from .report import Options, Plan, Refused, Report, SocktermError

__all__ = ["Cancel", "Options", "Plan", "Refused", "Report", "SocktermError", "kill", "plan",
           "policy", "scan", "shut_down", "watch"]


def watch(flt, options, **kw):
    """A watch window (core/watch.py), attached and ready to run: kill --watch, match --watch."""
    from .watch import Watch
    return Watch(flt, options, **kw)


def shut_down(target, report, options=None, **kw):
    """kill --graceful (core/graceful.py, imported only by a run that shuts
    sockets down: it brings ctypes and pidfd_getfd's binding, ~2 ms)."""
    from .graceful import shut_down as run
    return run(target, report, options, **kw)
