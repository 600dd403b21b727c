"""COLUMNS, NO_COLOR, the IPv6 slip hint, the confirmation sample, and global
options after the subcommand: the parts that need no root."""

import io
import os
import re
import socket
import subprocess
import sys

import pytest

from sockterm import filter as F, model, text
from sockterm.cli import confirm, render


@pytest.mark.parametrize("value", ["0", "-5", "junk", "", " "])
def test_invalid_columns_ignored(monkeypatch, value):
    monkeypatch.setenv("COLUMNS", value)
    assert text.terminal_width(io.StringIO()) == 80


def test_valid_columns(monkeypatch):
    monkeypatch.setenv("COLUMNS", "132")
    assert text.terminal_width(io.StringIO()) == 132


class Tty(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.parametrize("value, colour", [(None, True), ("", True), ("1", False), ("0", False)])
def test_no_color(monkeypatch, value, colour):
    monkeypatch.delenv("TERM", raising=False)
    if value is None:
        monkeypatch.delenv("NO_COLOR", raising=False)
    else:
        monkeypatch.setenv("NO_COLOR", value)
    assert render.use_color(Tty()) is colour
    from sockterm.cli.console import console
    assert (console(Tty()).color_system is not None) is colour


def test_ipv6_port_lookalikes():
    meant = {t: F.parse_addr_rule(t).meant for t in
             ("fd66::5:7080", "::1:8080", "fd66::5", "fd66::5:1", "fd66::7080", "[fd66::5]:7080",
              "10.0.0.5:80", "2001:db8:0:0:0:0:1:443", "::ffff:10.0.0.5", "fd66::abcd")}
    assert meant == {"fd66::5:7080": "[fd66::5]:7080", "::1:8080": "[::1]:8080", "fd66::5": "",
                     "fd66::5:1": "", "fd66::7080": "", "[fd66::5]:7080": "", "10.0.0.5:80": "",
                     "2001:db8:0:0:0:0:1:443": "", "::ffff:10.0.0.5": "", "fd66::abcd": ""}
    flt = F.build_filter(dst=["fd66::5:7080"], src=["::1:8080"])
    assert flt.hints() == [
        "--dst fd66::5:7080 is the IPv6 address fd66::5:7080, without a port; did you mean [fd66::5]:7080?",
        "--src ::1:8080 is the IPv6 address ::1:8080, without a port; did you mean [::1]:8080?"]
    # the address itself is unchanged: the hint never changes what is matched
    assert str(flt.dst[0].net) == "fd66::5:7080/128"


def socks(counts):
    out, cookie = [], 0
    for ns, n in enumerate(counts):
        for _ in range(n):
            cookie += 1
            out.append(model.Sock(1000 + ns, 4, "tcp", 1, model.v4_mapped(socket.inet_aton("10.1.0.2")),
                                  40000 + cookie, model.v4_mapped(socket.inet_aton("10.0.0.5")), 80,
                                  cookie, netns_name=f"ns{ns}"))
    return out


def test_sample_draws_from_every_namespace():
    picked = confirm.sample(socks([50, 3, 1, 1]))
    assert len(picked) == 10
    assert {s.netns for s in picked} == {1000, 1001, 1002, 1003}
    assert len(confirm.sample(socks([2, 1]))) == 3
    many = confirm.sample(socks([1] * 30))
    assert len(many) == 10 and len({s.netns for s in many}) == 10


def test_confirmation_shows_counts_per_namespace(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.setattr("click.confirm", lambda *a, **k: True)
    all_socks = socks([12, 2])
    counts = [("ns0", 12), ("evil\x1b[2J\u202e", 2)]
    assert confirm.ask(all_socks, counts, "bpf", searched=5) is True
    err = capsys.readouterr().err
    assert "About to kill 14 sockets in 2 namespaces of 5 searched (engine bpf):" in err
    assert "evil\\x1b[2J\\u202e" in err and "\x1b[2J" not in err
    assert "... and 4 more" in err
    assert err.count("10.0.0.5:80") == 10
    # drawn from both namespaces, shown in the order the run found them
    rows = [line.split()[0] for line in err.splitlines() if "10.0.0.5:80" in line]
    assert rows == ["ns0"] * 8 + ["ns1"] * 2


def test_confirmation_never_breaks_a_pid_or_a_name_mid_token(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "60")
    monkeypatch.setattr("click.confirm", lambda *a, **k: False)
    all_socks = socks([3, 2])
    for s in all_socks:
        s.processes = [(4194000 + s.cookie, "redis-server"), (1, "nginx")]
        s.netns_name = "shop/cart-7d9f5c6b8-x2k4p" if s.netns == 1000 else f"python3[{s.netns}]"
    counts = [("shop/cart-7d9f5c6b8-x2k4p-" + "x" * 40 + "-tail", 3), ("python3[1001]", 2)]
    assert confirm.ask(all_socks, counts, "diag", searched=2) is False
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert max(map(len, lines)) <= 60
    assert "NETNS       LOCAL           PEER         PROCESS" in lines        # the sample's header
    assert all(sum(f"redis-server[{4194000 + s.cookie}]" in line or
                   f"[{4194000 + s.cookie}]" in line for line in lines) == 1 for s in all_socks)
    assert sum(line.startswith("python3[1001]  ") for line in lines) == 1       # its count
    assert any(re.fullmatch(r"shop/cart-7d9f5c6b8-x2k4p-?x*\u2026x+-tail +3", line) for line in lines)
    assert sum(line.startswith("py\u20263[1001]  ") for line in lines) == 2      # its sockets
    assert "(PROTO, STATE hidden to fit)" in lines


def test_global_options_after_the_subcommand():
    env = dict(os.environ)
    env.pop("SOCKTERM_BACKEND", None)
    for args in (["kill", "--yes", "-v", "--backend", "diag", "--debug"], ["kill", "-v", "--yes"]):
        proc = subprocess.run([sys.executable, "-m", "sockterm", *args], capture_output=True,
                              text=True, env=env, stdin=subprocess.DEVNULL, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr.startswith("sockterm: error: kill needs a filter"), proc.stderr
    proc = subprocess.run([sys.executable, "-m", "sockterm", "list", "--backend", "nope"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2 and "'nope' is not one of" in proc.stderr


BOOM = """
import sys, click
from sockterm import cli
@click.command("boom")
def boom():
    raise RuntimeError("kernel said \\x1b[2J\\u202e")
cli.COMMANDS["boom"] = ("__main__", "boom", "raise")
cli.main(sys.argv[1:])
"""


@pytest.mark.parametrize("debug", [False, True])
def test_internal_errors_one_line_or_a_rich_traceback(debug):
    env = dict(os.environ, COLUMNS="100")
    env.pop("SOCKTERM_DEBUG", None)
    args = ["--debug", "boom"] if debug else ["boom"]
    proc = subprocess.run([sys.executable, "-c", BOOM, *args], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 3
    assert "\x1b[2J" not in proc.stderr and "\u202e" not in proc.stderr
    if debug:
        assert "Traceback" in proc.stderr and "RuntimeError" in proc.stderr
        assert "kernel said \\x1b[2J\\u202e" in proc.stderr
        assert "in boom" in proc.stderr            # rich's frames name the function
    else:
        assert proc.stderr.splitlines() == [
            "sockterm: internal error: RuntimeError: kernel said \\x1b[2J\\u202e "
            "(run with --debug for a traceback)"]
