"""sockterm kill."""

from __future__ import annotations

import dataclasses
import sys

import click

from ..exitcodes import ExitCode
from .options import filter_args, filter_options, output_options
from .run import abort, build_filter, make_request, renderer_for, run_into, show, stderr_log, stream

SAMPLE = 10


@click.command("kill")
@filter_options
@output_options
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (required when not on a terminal).")
@click.option("--max", "max_kills", type=click.IntRange(min=0), metavar="N",
              help="Refuse, killing nothing, when more than N sockets match.")
@click.option("--dry-run", is_flag=True, help="Only show what would be killed (same as match).")
@click.pass_context
def kill_cmd(ctx, *, yes: bool, max_kills: int | None, dry_run: bool, **kwargs):
    """Destroy the matching sockets in every namespace.

    The local application gets ECONNABORTED, a TCP peer gets a reset.
    Without --state only connected sockets are killed: listeners and
    unconnected UDP sockets only with --state listening / unconnected / all.
    A filter naming an address, port, process, namespace, container, pod,
    cgroup or user is required.
    On a terminal kill shows what matches and asks; elsewhere it needs --yes.
    Every kill is recorded in syslog (authpriv).
    """
    from .. import states
    flt = build_filter(filter_args(kwargs), states.DEFAULT_KILL)
    processes = not kwargs["no_processes"]
    if dry_run:
        return show(ctx, "match", flt, kwargs)
    if not flt.targeted:
        abort("kill needs a filter naming what to kill: --dst, --src, --dport, --sport, "
              "--netns, --pid, --comm, --container, --pod, --cgroup or --uid", ExitCode.USAGE)
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if not yes and not interactive:
        abort("not on a terminal: pass --yes to kill without confirmation", ExitCode.USAGE)
    if max_kills is not None or not yes:
        # kill exactly what was counted and shown: a socket that appears in
        # between is not part of what the operator agreed to
        confirmed = _check_first(ctx, flt, max_kills, confirm=not yes, processes=processes)
        flt = dataclasses.replace(flt, cookies=confirmed)
    request = make_request(ctx, "kill", flt, processes=processes)
    renderer = renderer_for(kwargs["output"], kwargs["no_header"], kill=True)
    log = stderr_log(ctx.obj["verbose"])
    return stream(request, renderer, {"command": "kill", "filter": flt.describe()},
                  on_done=lambda report, error: _audit(flt, report, error, log))


def _audit(flt, report, error: str, log) -> None:
    from .. import audit
    text = audit.message(filter_text=flt.describe(), report=report, error=error)
    severity = audit.SEVERITY_WARNING if error or report.failed else audit.SEVERITY_NOTICE
    problem = audit.write(text, severity=severity)
    if problem and problem.startswith("no syslog socket"):
        log(problem)
    elif problem:
        click.echo(f"sockterm: warning: {problem}", err=True)
    else:
        log(f"audit record written to {audit.socket_path()}")


def _check_first(ctx, flt, max_kills, *, confirm: bool, processes: bool) -> frozenset:
    """A match pass before killing: the --max guard and the confirmation prompt.
    Returns the cookies of the sockets that passed them."""
    from ..core import Report, SocktermError
    report, socks = Report(), []
    request = make_request(ctx, "match", flt, processes=confirm and processes)
    try:
        run_into(request, report, socks.append, fmt="table")
    except SocktermError as exc:
        abort(str(exc), exc.code)
    if max_kills is not None and len(socks) > max_kills:
        abort(f"{len(socks)} sockets match, more than --max {max_kills}: nothing killed",
              ExitCode.FAILURE)
    confirmed = frozenset(s.cookie for s in socks)
    if not confirm:
        return confirmed    # --yes: even when nothing matched, the kill pass reports as usual
    if not socks:
        click.echo("sockterm: nothing matches; nothing killed", err=True)
        sys.exit(int(ExitCode.NO_MATCH))
    _show_sample(socks, report)
    if not click.confirm("Kill them?", default=False, err=True):
        click.echo("sockterm: nothing killed", err=True)
        sys.exit(int(ExitCode.NO_MATCH))
    return confirmed


def _show_sample(socks, report) -> None:
    from .render import COLUMNS, fit_widths, folded_lines, row, terminal_width
    nss = len({s.netns for s in socks})
    click.echo(f"About to kill {len(socks)} socket{'s' if len(socks) != 1 else ''} in "
               f"{nss} namespace{'s' if nss != 1 else ''} (engine {report.engine}):", err=True)
    rows = [row(s, kill=False) for s in socks[:SAMPLE]]
    widths = fit_widths(COLUMNS, rows, terminal_width(sys.stderr) - 2)
    for cells in rows:
        for line in folded_lines(cells, widths, None):
            click.echo("  " + line, err=True)
    if len(socks) > SAMPLE:
        click.echo(f"  ... and {len(socks) - SAMPLE} more", err=True)
