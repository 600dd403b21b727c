"""man/sockterm.8 documents every command and option the CLI has, every exit
code and JSON key, and renders without groff warnings."""

import os
import re
import shutil
import subprocess

import click
import pytest

from sockterm.cli import COMMANDS, cli
from sockterm.cli import render
from sockterm.exitcodes import ExitCode

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAN = os.path.join(ROOT, "man", "sockterm.8")


def source() -> str:
    with open(MAN) as f:
        return f.read()


def plain(line: str) -> str:
    """A roff line's words: escapes and font changes dropped."""
    line = line.replace("\\-", "-").replace("\\(aq", "'")
    line = re.sub(r"\\f[BIRP]", "", line)
    return re.sub(r"^\.\w+\s*", "", line).replace('"', " ")


def tagged() -> list[str]:
    """The tag line of every .TP paragraph: where options and keys are defined."""
    lines = source().splitlines()
    return [plain(lines[i + 1]) for i, line in enumerate(lines[:-1]) if line.strip() == ".TP"]


def defined_options() -> set:
    found = set()
    for tag in tagged():
        found |= set(re.findall(r"(?<![\w-])(--?[\w][\w-]*)", tag))
    return found


def sections() -> dict:
    out, name = {}, None
    for line in source().splitlines():
        if line.startswith(".SH "):
            name = line[4:].strip().strip('"')
            out[name] = []
        elif name:
            out[name].append(line)
    return out


def walk():
    """(command path, click command) for the group and every lazily loaded command."""
    ctx = click.Context(cli, info_name="sockterm")
    yield "sockterm", cli, ctx
    for name in cli.list_commands(ctx):
        cmd = cli.get_command(ctx, name)
        assert cmd is not None, name
        yield f"sockterm {name}", cmd, click.Context(cmd, info_name=name, parent=ctx)


def test_every_option_is_documented():
    documented = defined_options()
    missing = []
    for path, cmd, ctx in walk():
        for param in cmd.get_params(ctx):
            for opt in list(param.opts) + list(param.secondary_opts):
                if opt.startswith("-") and opt not in documented:
                    missing.append(f"{path} {opt}")
    assert not missing, f"man/sockterm.8 does not document: {', '.join(missing)}"


def test_every_command_is_documented():
    block = "\n".join(sections()["COMMANDS"])
    tags = {plain(t).strip() for t in re.findall(r"^\.TP\n(.*)$", block, re.M)}
    assert set(COMMANDS) <= tags
    synopsis = "\n".join(sections()["SYNOPSIS"])
    assert all(f".B {name}" in synopsis for name in COMMANDS)


def test_choices_are_documented():
    text = plain(source())
    for path, cmd, ctx in walk():
        for param in cmd.get_params(ctx):
            if isinstance(param.type, click.Choice):
                for choice in param.type.choices:
                    assert re.search(rf"(?<![\w-]){re.escape(choice)}(?![\w-])", text), (path, choice)


def test_exit_codes_are_documented():
    block = "\n".join(sections()["EXIT STATUS"])
    for code in ExitCode:
        assert f".TP\n.B {int(code)}\n" in block, code


def test_json_keys_are_documented():
    from sockterm import model
    sock = model.Sock(netns=1, family=4, proto="tcp", state=1, src=model.v4_mapped(b"\1\2\3\4"),
                      sport=1, dst=model.v4_mapped(b"\1\2\3\4"), dport=2, cookie=3)
    nsr = model.NamespaceReport(ns=model.Namespace(1, "x", ""), engine="bpf")
    keys = set(render.socket_dict(sock, kill=True)) | set(render.ns_dict(nsr))

    class Rep:
        matched = killed = failed = shut_down = not_held = 0
        namespaces = ns_errors = ()
        interrupted, refused = False, ""
    keys |= set(render.summary_dict(Rep, kill=True)) | {"command", "engine", "filter", "namespaces",
                                                        "summary", "sockets", "mode", "shutdown"}
    text = "\n".join(sections()["OUTPUT"])
    bold = set()
    for line in text.splitlines():
        if line.startswith((".B ", ".BR ", ".TP")):
            bold |= set(re.findall(r"[\w-]+", plain(line)))
    assert not keys - bold, f"undocumented JSON keys: {sorted(keys - bold)}"


def test_required_sections():
    for name in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "EXIT STATUS", "ENVIRONMENT",
                 "REQUIREMENTS", "OVERHEAD", "CAVEATS", "EXAMPLES", "SEE ALSO", "AUDIT"):
        assert name in sections(), name
    req = plain("\n".join(sections()["REQUIREMENTS"]))
    for needle in ("BTF", "5.12", "5.11", "bpf_sock_destroy", "6.5", "CONFIG_INET_DIAG_DESTROY",
                   "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_BPF", "CAP_PERFMON"):
        assert needle in req, needle
    assert "ss (8)" in plain("\n".join(sections()["SEE ALSO"]))
    env = plain("\n".join(sections()["ENVIRONMENT"]))
    for var in ("SOCKTERM_BACKEND", "SOCKTERM_DEBUG", "SOCKTERM_SYSLOG_SOCKET", "NO_COLOR"):
        assert var in env, var


def test_examples_run_with_the_real_cli():
    """Every `sockterm ...` example line is a command line the CLI accepts, filter
    and all: run in-process up to the core (a recorder there; tripwires below it,
    tests/unit/test_fuzz_cli.py), so nothing touches the kernel. A kill without
    --yes stops only at the terminal question."""
    from test_fuzz_cli import run_inproc
    lines = sections()["EXAMPLES"]
    examples = []
    for line in lines:
        text = plain(line).strip()
        if text.startswith("sudo "):
            text = text[5:]
        if text.startswith("sockterm "):
            examples.append(text.split("|")[0].split(">")[0].strip())
    assert len(examples) >= 6
    reached = 0
    for example in examples:
        args = [a.strip("'") for a in example.split()[1:]]
        if args == ["doctor"]:             # no filter, and it probes the kernel: its own tests
            continue
        code, out, err, requests = run_inproc(args)
        if code == 2:
            assert "kill" in args and "--yes" not in args, (example, err)
            assert err.strip() == ("sockterm: error: not on a terminal: pass --yes to kill "
                                   "without confirmation"), (example, err)
            continue
        assert code in (0, 1) and "error" not in err, (example, code, err)
        reached += bool(requests)
        for command, flt in requests:
            assert flt.targeted or command != "kill", example
    assert reached >= len(examples) - 3


@pytest.mark.skipif(not shutil.which("groff"), reason="groff is not installed")
def test_renders_without_warnings():
    proc = subprocess.run(["groff", "-man", "-ww", "-Tutf8", MAN], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    text = re.sub(r".\x08", "", proc.stdout)      # overstrike bold and underline
    assert "sockterm" in text and "EXIT STATUS" in text


def test_version_matches_the_package():
    from sockterm import __version__
    assert f'"sockterm {__version__}"' in source().splitlines()[2]
