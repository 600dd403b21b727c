"""kill's refusals happen before anything touches the kernel: one line, exit 2.
As root they run confined (tests/confine.py): should a refusal regress, the
kill it lets through still reaches no socket of the machine."""

import os
import subprocess
import sys

import pytest

import confine


def sockterm(*args):
    env = dict(os.environ)
    env.pop("SOCKTERM_BACKEND", None)
    proc = subprocess.run(confine.wrap([sys.executable, "-m", "sockterm", *args]),
                          capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL,
                          timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize("args, needle", [
    (["kill", "--yes"], "kill needs a filter"),
    (["kill", "--yes", "--state", "all"], "kill needs a filter"),
    (["kill", "--dst", "10.0.0.5:80"], "pass --yes"),
    (["kill", "--yes", "--dst", "10.0.0.999"], "invalid address"),
    (["kill", "--yes", "--dport", "80", "--max", "-1"], "--max"),
    (["kill", "--yes", "--dport", "80", "-o", "xml"], "'xml' is not one of"),
    (["kill", "--yes", "--dport", "80", "--state", "bogus"], "unknown state"),
    (["kill", "--yes", "--dport", "80", "--half-close"], "go with --graceful"),
    (["kill", "--yes", "--dport", "80", "--abort-rest"], "go with --graceful"),
    (["kill", "--yes", "--dport", "80", "--graceful", "--no-processes"], "--no-processes"),
    (["kill", "--yes", "--graceful", "--state", "all"], "kill needs a filter"),
    (["kill", "--yes", "--dport", "80", "--graceful", "--watch", "5s"], "cannot run with --graceful"),
])
def test_refusals_are_one_line_exit_2(args, needle):
    code, out, err = sockterm(*args)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("sockterm: error: ")
    assert needle in err and "Traceback" not in err


def test_help_lists_the_rails():
    code, out, err = sockterm("kill", "--help")
    assert code == 0
    for opt in ("--yes", "--max", "--dry-run", "--no-header", "--output", "--graceful",
                "--half-close", "--abort-rest", "--watch"):
        assert opt in out
