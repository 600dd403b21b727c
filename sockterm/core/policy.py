"""Kill policy: what a kill must name, when it is planned before it kills,
why it refuses (Report.refused is written here only), and its audit record.
The CLI asks these and renders the answers; it decides none of them."""

from __future__ import annotations

from ..exitcodes import ExitCode
from ..filter import Filter
from .report import Refused, Report, SocktermError

NEEDS_TARGET = ("kill needs a filter naming what to kill: --dst, --src, --dport, --sport, "
                "--netns, --pid, --comm, --container, --pod, --cgroup or --uid")
NOTHING_MATCHES = "nothing matches"
DECLINED = "declined at the prompt"


def require_target(flt: Filter) -> None:
    """A kill names what it kills: no filter that selects every socket."""
    if not flt.targeted:
        raise SocktermError(NEEDS_TARGET, ExitCode.USAGE)


def plans_first(*, limit: int | None, confirm: bool, rate: float | None) -> bool:
    """Is the kill planned first? Then exactly what was counted (--max),
    shown (the prompt) or paced (--rate) is killed: a socket that appears in
    between is not part of what the operator agreed to (a watch takes it, if
    it is new and matches)."""
    return limit is not None or confirm or bool(rate)


def refuse(report: Report, why: str) -> str:
    """A kill that will not start: the report says why (nothing was killed)."""
    report.refused = why
    return why


def too_many(report: Report, matched: int, limit: int | None) -> None:
    """--max: more matches than the limit refuse the kill (Refused)."""
    if limit is not None and matched > limit:
        raise Refused(refuse(report, f"{matched} sockets match, more than --max {limit}"))


def audit_kill(flt: Filter, report: Report, error: str, log, mode: dict) -> str | None:
    """Write the kill's record; None, or the warning to print when nothing
    took it. The exit status stays what the kill did to the sockets: a record
    that could not be kept is a warning, as sudo treats its own log."""
    # audit here, not at import: only a kill or a watch writes a record
    from .. import audit
    text = audit.message(filter_text=flt.describe(), report=report, error=error, mode=mode)
    severity = audit.SEVERITY_WARNING if error or report.failed else audit.SEVERITY_NOTICE
    return _write(text, severity, log)


def audit_watch(flt: Filter, duration: float, log) -> str | None:
    """Write the record of a watch window starting; None, or the warning."""
    from .. import audit
    return _write(audit.watch_started(filter_text=flt.describe(), duration=duration),
                  audit.SEVERITY_NOTICE, log)


def _write(text: str, severity: int, log) -> str | None:
    from .. import audit
    where, problems = audit.write(text, severity=severity)
    if where is None:
        return f"audit record not written: {', '.join(problems)}"
    for problem in problems:
        log(problem)
    log(f"audit record written to {where}")
    return None
