"""sockterm doctor."""

from __future__ import annotations

import json

import click

from ..exitcodes import ExitCode


@click.command("doctor")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text",
              show_default=True, help="Output format.")
def doctor_cmd(*, output: str):
    """Tell what works on this host and why not: kernel, BTF, socket iterators,
    bpf_sock_destroy, sock_diag and SOCK_DESTROY, capabilities, the shipped BPF
    object, and the engine auto picks.

    Exit status 0 when sockterm can kill sockets on this host, 3 otherwise.
    """
    from .. import doctor
    checks, can_kill = doctor.run()
    if output == "json":
        click.echo(json.dumps({"can_kill": can_kill, "checks": [
            {"name": c.name, "ok": c.ok, "detail": c.detail} for c in checks]}, indent=2))
    else:
        width = max(len(c.name) for c in checks)
        marks = {True: "ok  ", False: "FAIL", None: "    "}
        for c in checks:
            click.echo(f"{marks[c.ok]}  {c.name:<{width}}  {c.detail}")
        click.echo("sockterm can kill sockets on this host" if can_kill
                   else "sockterm cannot kill sockets on this host: see FAIL above")
    return ExitCode.OK if can_kill else ExitCode.FAILURE
