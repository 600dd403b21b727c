"""The kill confirmation: what is about to die, where, and the question.

Drawn with rich on stderr (the operator's terminal): counts per namespace and
a sample that takes sockets from every namespace in turn, so a filter that
reaches further than meant shows it at a glance. Names pass text.shown (via
render.row) before rich sees them; rich's markup and highlighting are off.
"""

from __future__ import annotations

import signal

import click
from rich.text import Text

from ..signals import Interrupted, at_prompt
from ..text import shown
from .console import console
from .render import COLUMNS, clip, in_namespaces, left_out_note, plural, table_lines, table_row

SAMPLE = 10            # sockets shown
MAX_NAMESPACES = 20    # namespace lines shown


def sample(socks, limit: int = SAMPLE) -> list:
    """Up to `limit` sockets, one namespace after another in turn (the busiest
    first), so every namespace the kill reaches is represented while room
    lasts; shown in the order they came in (the run's: see core)."""
    by_ns: dict[int, list] = {}
    for at, sock in enumerate(socks):
        by_ns.setdefault(sock.netns, []).append((at, sock))
    queues = sorted(by_ns.values(), key=len, reverse=True)    # stable: ties keep the run's order
    picked, depth = [], 0
    while len(picked) < limit and any(len(q) > depth for q in queues):
        for q in queues:
            if depth < len(q) and len(picked) < limit:
                picked.append(q[depth])
        depth += 1
    return [sock for _, sock in sorted(picked, key=lambda item: item[0])]


def ask(sockets, per_namespace_counts, engine: str, *, searched: int | None = None,
        graceful: bool = False, abort_rest: bool = False, watch: float | None = None):
    """Show the kill to come (show()) and ask. True to go ahead, False for
    no (Ctrl-C and end of input included), or the number of a terminating
    signal that arrived at the prompt. watch: the kill then holds a --watch
    window of that many seconds (asked for even when nothing matches now)."""
    question = "Shut them down?" if graceful else "Kill them?"
    if sockets:
        show(sample(sockets), per_namespace_counts, engine, total=len(sockets),
             searched=searched, graceful=graceful, abort_rest=abort_rest,
             unheld=sum(1 for s in sockets if not s.processes) if graceful else 0)
        if watch:
            question = f"Kill them, then for {watch:g} s every new connection that matches?"
    else:
        question = f"Nothing matches now. For {watch:g} s, kill every new connection that matches?"
    try:
        with at_prompt():
            return click.confirm(question, default=False, err=True)
    except click.exceptions.Abort:
        click.echo("", err=True)
        return False
    except Interrupted as exc:
        click.echo("", err=True)
        return False if exc.signum == signal.SIGINT else exc.signum


def show(sample_socks, per_namespace_counts, engine: str, total: int | None = None,
         searched: int | None = None, *, graceful: bool = False, abort_rest: bool = False,
         unheld: int = 0) -> None:
    """The kill to come, on stderr: the total, counts per namespace, a sample.

    per_namespace_counts: [(namespace name, matching sockets)] in the run's
    order (the busiest are listed first; ties keep it); total defaults to
    their sum, searched (namespaces) to their number. graceful: they are to
    be shut down, and `unheld` of them, held by no process, left alone (or
    aborted: abort_rest)."""
    counts = sorted(per_namespace_counts, key=lambda item: -item[1])
    total = sum(n for _, n in counts) if total is None else total
    where = in_namespaces(len(counts), len(counts) if searched is None else searched)
    con = console()
    verb = "shut down" if graceful else "kill"
    con.print(Text(f"About to {verb} {plural(total, 'socket')} {where} (engine {engine}):",
                   style="bold red"))
    if unheld:
        fate = "aborted" if abort_rest else "left alone (--abort-rest aborts them)"
        con.print(Text(f"{unheld} of them held by no process: {fate}", style="yellow"))
    if len(counts) > 1:
        shown_counts = counts[:MAX_NAMESPACES]
        digits = max(len("SOCKETS"), len(str(counts[0][1])))
        width = min(max(len("NAMESPACE"), *(len(shown(name)) for name, _ in shown_counts)),
                    max(len("NAMESPACE"), con.width - digits - 2))
        con.print(Text(f"{'NAMESPACE':<{width}}  {'SOCKETS':>{digits}}", style="bold"))
        for name, n in shown_counts:
            # a name too long is cut in the middle, marked; its pid, if any, stays whole
            con.print(Text(f"{clip(shown(name), width):<{width}}  ") + Text(f"{n:>{digits}}", style="yellow"),
                      crop=False, soft_wrap=True)
        if len(counts) > MAX_NAMESPACES:
            con.print(Text(f"... and {len(counts) - MAX_NAMESPACES} more namespaces"))
    if sample_socks:
        # laid out as the kill's report is: no pid, address or name broken over lines
        lines, left_out = table_lines(COLUMNS, [table_row(sock, kill=False) for sock in sample_socks],
                                      con.width)
        con.print(Text(lines[0], style="bold"), crop=False, soft_wrap=True)
        for line in lines[1:]:
            con.print(Text(line), crop=False, soft_wrap=True)
        if left_out:
            con.print(Text(f"({left_out_note(left_out)})"))
    if total > len(sample_socks):
        con.print(Text(f"... and {total - len(sample_socks)} more"))
