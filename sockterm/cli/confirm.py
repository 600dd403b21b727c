"""The kill confirmation: what is about to die, where, and the question.

Drawn with rich on stderr (the operator's terminal): counts per namespace and
a sample that takes sockets from every namespace in turn, so a filter that
reaches further than meant shows it at a glance. Names pass text.shown (via
render.row) before rich sees them; rich's markup and highlighting are off.
"""

from __future__ import annotations

import click
from rich.table import Table
from rich.text import Text

from ..text import shown
from .console import console
from .render import COLUMNS, row

SAMPLE = 10            # sockets shown
MAX_NAMESPACES = 20    # namespace lines shown


def sample(socks, limit: int = SAMPLE) -> list:
    """Up to `limit` sockets, one namespace after another in turn (the busiest
    first), so every namespace the kill reaches is represented while room lasts."""
    by_ns: dict[int, list] = {}
    for sock in socks:
        by_ns.setdefault(sock.netns, []).append(sock)
    queues = sorted(by_ns.values(), key=len, reverse=True)
    picked, depth = [], 0
    while len(picked) < limit and any(len(q) > depth for q in queues):
        for q in queues:
            if depth < len(q) and len(picked) < limit:
                picked.append(q[depth])
        depth += 1
    return picked


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def ask(sample_socks, per_namespace_counts, engine: str, total: int | None = None) -> bool:
    """Show the kill to come and ask; True when the operator said yes."""
    show(sample_socks, per_namespace_counts, engine, total)
    return click.confirm("Kill them?", default=False, err=True)


def show(sample_socks, per_namespace_counts, engine: str, total: int | None = None, *,
         graceful: bool = False, abort_rest: bool = False, unheld: int = 0) -> None:
    """The kill to come, on stderr: the total, counts per namespace, a sample.

    per_namespace_counts: [(namespace name, matching sockets)], any order;
    total defaults to their sum. graceful: they are to be shut down, and
    `unheld` of them, held by no process, left alone (or aborted: abort_rest)."""
    counts = sorted(per_namespace_counts, key=lambda item: (-item[1], item[0]))
    total = sum(n for _, n in counts) if total is None else total
    con = console()
    verb = "shut down" if graceful else "kill"
    con.print(Text(f"About to {verb} {_plural(total, 'socket')} in "
                   f"{_plural(len(counts), 'namespace')} (engine {engine}):", style="bold red"))
    if unheld:
        fate = "aborted" if abort_rest else "left alone (--abort-rest aborts them)"
        con.print(Text(f"{unheld} of them held by no process: {fate}", style="yellow"))
    if len(counts) > 1:
        per_ns = Table(box=None, show_header=True, header_style="bold", pad_edge=False,
                       padding=(0, 2))
        per_ns.add_column("NAMESPACE", overflow="fold")
        per_ns.add_column("SOCKETS", justify="right", style="yellow")
        for name, n in counts[:MAX_NAMESPACES]:
            per_ns.add_row(Text(shown(name)), Text(str(n)))
        if len(counts) > MAX_NAMESPACES:
            per_ns.add_row(Text(f"... and {len(counts) - MAX_NAMESPACES} more namespaces"), Text(""))
        con.print(per_ns, crop=False)
    if sample_socks:
        table = Table(box=None, show_header=True, header_style="bold", pad_edge=False,
                      padding=(0, 1))
        for name in COLUMNS:
            # addresses never fold: a peer split over two lines reads as two
            address = name in ("LOCAL", "PEER", "PROTO", "STATE")
            table.add_column(name, no_wrap=address, overflow="fold")
        for sock in sample_socks:
            table.add_row(*(Text(cell) for cell in row(sock, kill=False)))
        con.print(table, crop=False)
    if total > len(sample_socks):
        con.print(Text(f"... and {total - len(sample_socks)} more"))
