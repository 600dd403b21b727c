"""sockterm kill."""

from __future__ import annotations

import sys

import click

from ..exitcodes import ExitCode
from ..text import shown
from .options import (filter_args, filter_options, global_options, help_option, option,
                      output_options, watch_option)
from .run import abort, build_filter, core_options, renderer_for, show, stderr_log, stream


@click.command("kill")
@filter_options
@output_options
@global_options
@option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (required when not on a terminal).")
@option("--max", "max_kills", type=click.IntRange(min=0), metavar="N",
        help="Refuse, killing nothing, when more than N sockets match.")
@option("--rate", type=click.FloatRange(min=0, min_open=True), metavar="N",
        help="Destroy at most N sockets a second: the matching set is fixed first, "
             "then destroyed in paced batches.")
@option("--dry-run", is_flag=True, help="Only show what would be killed (same as match).")
@option("--graceful", is_flag=True,
        help="Shut connections down instead of aborting them: a FIN, after what was "
             "queued, through a descriptor of the process holding each socket "
             "(pidfd_getfd). Sockets no process holds are left alone.")
@option("--half-close", is_flag=True,
        help="With --graceful: shut down only the sending side (SHUT_WR); the peer's "
             "data still reaches the application.")
@option("--abort-rest", is_flag=True,
        help="With --graceful: abort the sockets no process holds (orphans, time-wait, "
             "request sockets) instead of leaving them.")
@watch_option
@help_option()
@click.pass_context
def kill_cmd(ctx, *, yes: bool, max_kills: int | None, rate: float | None, dry_run: bool,
             graceful: bool, half_close: bool, abort_rest: bool, watch: float | None, **kwargs):
    """Destroy the matching sockets in every namespace.

    The local application gets ECONNABORTED, a TCP peer gets a reset.
    With --graceful they are shut down instead: the application reads EOF,
    its writes fail with EPIPE, the peer gets what was queued, then a FIN.
    Without --state only connected sockets are killed: listeners and
    unconnected UDP sockets only with --state listening / unconnected / all.
    A filter naming an address, port, process, namespace, container, pod,
    cgroup or user is required.
    On a terminal kill shows what matches and asks; elsewhere it needs --yes.
    With --watch it then holds for DURATION: new matching connections are
    destroyed as they appear (--max bounds the total).
    Every kill is recorded in syslog (authpriv).
    """
    from .. import core, states
    flt = build_filter(filter_args(kwargs), states.DEFAULT_KILL)
    processes = not kwargs["no_processes"]
    if (half_close or abort_rest) and not graceful:
        abort("--half-close and --abort-rest go with --graceful", ExitCode.USAGE)
    if graceful and not processes:
        abort("--graceful shuts sockets down through the processes holding them: "
              "it cannot run with --no-processes", ExitCode.USAGE)
    if graceful and watch:
        abort("--watch destroys new connections as they appear: it cannot run with --graceful",
              ExitCode.USAGE)
    if dry_run:
        return show(ctx, "match", flt, kwargs, watch=watch)
    try:
        core.policy.require_target(flt)
    except core.SocktermError as exc:
        abort(str(exc), exc.code)
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    if not yes and not interactive:
        abort("not on a terminal: pass --yes to kill without confirmation", ExitCode.USAGE)
    opts = core_options(ctx, processes=processes)
    renderer = renderer_for(kwargs["output"], kwargs["no_header"], kill=True, watch=watch)
    mode = _mode(graceful, half_close, abort_rest)
    meta = {"command": "kill", "mode": mode["mode"], "shutdown": mode["shutdown"],
            "filter": flt.describe()}
    log = stderr_log(ctx.obj["verbose"])

    def audit(report, error):
        problem = core.policy.audit_kill(flt, report, error, log, mode)
        if problem and not error:
            report.warnings.append(problem)     # after the report, beside the summary
        elif problem:                           # a run that failed: before its error line
            click.echo(f"sockterm: warning: {shown(problem)}", err=True)

    # a watch attaches first: one that cannot fails before anything is asked or killed
    window = _watch(flt, opts, watch, max_kills, rate, audit) if watch else None
    try:
        target = flt
        if core.policy.plans_first(limit=max_kills, confirm=not yes, rate=rate):
            target = _plan(flt, opts, renderer, meta, audit, max_kills=max_kills, confirm=not yes,
                           mode=mode, watch=watch)
        if window is not None:
            started = _audit_start(flt, watch, log)
            return stream(lambda report: window.run(target, report, on_start=started), renderer,
                          meta, kill=True, on_done=audit, hints=flt.hints())
        if graceful:
            def start(report):
                return core.shut_down(target, report, opts, rate=rate, half_close=half_close,
                                      abort_rest=abort_rest)
        else:
            def start(report):
                return core.kill(target, report, opts, rate=rate)
        return stream(start, renderer, meta, kill=True, on_done=audit, hints=flt.hints())
    finally:
        if window is not None:
            window.close()


def _mode(graceful: bool, half_close: bool, abort_rest: bool) -> dict:
    """How the kill ends sockets, as the document and the audit record say it."""
    if not graceful:
        return {"mode": "abort", "shutdown": None, "abort_rest": None}
    return {"mode": "graceful", "shutdown": "SHUT_WR" if half_close else "SHUT_RDWR",
            "abort_rest": abort_rest}


def _watch(flt, opts, duration: float, max_kills, rate, audit):
    """The watch, attached (or a one-line refusal, audited: nothing was touched)."""
    from .. import core
    try:
        return core.watch(flt, opts, duration=duration, kill=True, limit=max_kills, rate=rate)
    except core.SocktermError as exc:
        audit(core.Report(), str(exc))
        abort(str(exc), exc.code)


def _audit_start(flt, duration: float, log):
    def started(report) -> None:
        from .. import core
        problem = core.policy.audit_watch(flt, duration, log)
        if problem:
            click.echo(f"sockterm: warning: {shown(problem)}", err=True)
    return started


def _plan(flt, opts, renderer, meta, audit, *, max_kills, confirm: bool, mode: dict,
          watch: float | None):
    """The match pass before a kill: the --max guard and the confirmation.
    Returns the plan to kill, or exits with a report saying why not."""
    from .. import core
    report = core.Report()
    try:
        the_plan = core.plan(flt, report, opts, limit=max_kills)
    except core.Refused as exc:
        audit(report, str(exc))
        _refuse(renderer, report, meta, f"{exc}: nothing killed", exc.code)
    except core.SocktermError as exc:
        audit(report, str(exc))
        abort(str(exc), exc.code)
    if opts.cancel.is_set():
        return the_plan          # the kill pass sees the signal and kills nothing
    matched = len(the_plan.sockets)
    if not confirm:
        return the_plan          # --yes: even when nothing matched, the kill pass reports as usual
    if not matched and not watch:
        for hint in flt.hints():
            click.echo(f"sockterm: hint: {shown(hint)}", err=True)
        core.policy.refuse(report, core.policy.NOTHING_MATCHES)
        _refuse(renderer, report, meta, "nothing matches; nothing killed", ExitCode.NO_MATCH)
    answer = _ask(the_plan, report, mode, watch)
    if answer is not True:
        core.policy.refuse(report, core.policy.DECLINED)
        code = ExitCode.NO_MATCH if answer is False else 128 + answer
        _refuse(renderer, report, meta, "nothing killed", code)
    return the_plan


def _ask(the_plan, report, mode: dict, watch: float | None):
    from .confirm import ask
    counts = [(r.ns.name, r.matched) for r in report.namespaces if r.matched]
    return ask(the_plan.sockets, counts, report.engine, searched=len(report.namespaces),
               graceful=mode["mode"] == "graceful", abort_rest=mode["abort_rest"], watch=watch)


def _refuse(renderer, report, meta, message: str, code: int):
    """A kill that will not run still answers in the chosen format."""
    renderer.refusal(report, meta)
    sys.stdout.flush()
    if code == ExitCode.FAILURE:
        abort(message, code)
    click.echo(f"sockterm: {message}", err=True)
    sys.exit(int(code))
