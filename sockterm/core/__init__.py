"""The pipeline: filter -> namespaces -> engine -> report (see pipeline.py).

The CLI parses, asks and renders; everything it runs goes through here.
"""

from ..cancel import Cancel
from .graceful import shut_down
from .pipeline import Options, Plan, Refused, Report, SocktermError, kill, plan, scan

__all__ = ["Cancel", "Options", "Plan", "Refused", "Report", "SocktermError", "kill", "plan",
           "scan", "shut_down"]
