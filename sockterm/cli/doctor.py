"""sockterm doctor."""

from __future__ import annotations

import json

import click

from ..exitcodes import ExitCode
from .options import global_options, help_option, option


@click.command("doctor")
@option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
        show_default=True, help="Output format.")
@global_options
@help_option()
def doctor_cmd(*, output: str):
    """Tell what works on this host and why not: kernel, BTF, socket iterators,
    bpf_sock_destroy, sock_diag and SOCK_DESTROY, capabilities, the shipped BPF
    object, the engine auto picks, the kernel caveats that apply, and whether
    namespaces share the host-wide socket hash tables (with the measured cost
    of a namespace walk).

    Exit status 0 when sockterm can kill sockets on this host, 3 otherwise.
    """
    from .. import doctor
    found = doctor.run()
    if output == "json":
        click.echo(json.dumps({
            "can_kill": found.can_kill,
            "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in found.checks],
            "capabilities": found.capabilities,
            "auto_engine": {"engine": found.auto, "why_not_bpf": found.auto_why or None},
            "caveats": found.caveats,
            "hash_tables": found.hash_tables,
            "ends": found.ends,
        }, indent=2))
    else:
        _report(found)
    return ExitCode.OK if found.can_kill else ExitCode.FAILURE


MARKS = {True: ("ok", "green"), False: ("FAIL", "bold red"), None: ("", "")}
NOTES = ("caveat ", "hash tables")


def _report(found) -> None:
    """The checks as an aligned table on stdout, notes (caveats, hash tables)
    in full width below, the verdict last. The details are the host's own
    text (release, paths, kernel errors): shown escaped."""
    import re
    import sys
    from rich.table import Table
    from rich.text import Text
    from ..text import shown
    from .console import console
    table = Table(box=None, show_header=False, pad_edge=False, padding=(0, 2, 0, 0))
    table.add_column("mark", no_wrap=True)
    table.add_column("check", no_wrap=True, style="bold")
    table.add_column("detail", overflow="fold")
    notes = []
    for c in found.checks:
        if c.ok is None and c.name.startswith(NOTES):
            notes.append(Text.assemble(("note  ", "yellow"), (c.name, "bold"), ": " + shown(c.detail)))
            continue
        mark, style = MARKS[c.ok]
        table.add_row(Text(mark, style=style), Text(c.name), Text(shown(c.detail)))
    if found.can_kill:
        verdict = Text(f"sockterm can kill sockets on this host (engine {found.auto})", style="green")
    else:
        verdict = Text("sockterm cannot kill sockets on this host: see FAIL above"
                       + ("; kill --graceful works" if found.ends["graceful"] else ""),
                       style="bold red")
    con = console(sys.stdout)
    with con.capture() as captured:
        for part in (table, *notes, verdict):
            con.print(part, crop=False)
    # rich pads every line to the table's width: no trailing blanks in a pipe or a paste
    for line in captured.get().splitlines():
        click.echo(re.sub(r" +((?:\x1b\[[0-9;]*m)*)$", r"\1", line))
