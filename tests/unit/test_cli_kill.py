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


@pytest.mark.parametrize("typed", ["--drain", "--grace", "--linger", "--slowly"])
def test_no_guess_for_an_option_that_does_not_exist(typed):
    """click's difflib guess answered `kill --graceful` with --rate, `--drain`
    with --dry-run and --rate, `--grace` with --rate, --src and --backend:
    options that do something else entirely. (Not --graceful itself: a real
    option of that name is coming.)"""
    code, out, err = sockterm("kill", typed, "--dport", "80")
    assert code == 2 and out == ""
    assert err == f"sockterm: error: No such option '{typed}'. (see 'sockterm kill --help')\n"


@pytest.mark.parametrize("typed, meant", [("--dprot", "--dport"), ("--yse", "--yes"),
                                          ("--contianers", "--container"), ("--stat", "--state")])
def test_a_typo_still_gets_its_option(typed, meant):
    code, out, err = sockterm("kill", typed, "--dport", "80")
    assert code == 2 and f"No such option '{typed}'. Did you mean '{meant}'?" in err


def test_a_typo_of_an_option_is_never_answered_with_a_far_one():
    # --gracefull: whatever exists then (a --graceful option is planned), never --rate
    code, out, err = sockterm("kill", "--gracefull", "--dport", "80")
    assert code == 2 and "--rate" not in err and "--dry-run" not in err


def test_edits_and_close_options():
    from sockterm.cli import close_options, edits
    assert edits("dport", "dprot") == 1                 # a swap is one edit
    assert edits("graceful", "rate") == 5
    assert edits("", "abc") == 3 and edits("abc", "") == 3 and edits("abc", "abc") == 0
    assert edits("ca", "abc") == 3                      # no swap across an insertion (OSA)
    assert edits("kitten", "sitting") == 3
    opts = ["--rate", "--dry-run", "--dport", "--state", "--container"]
    assert close_options("--graceful", opts) == []
    assert close_options("--dprot", opts) == ["--dport"]
    assert close_options("--stat", opts) == ["--state"]
    assert close_options("--contianers", opts) == ["--container"]      # two edits in eleven
    assert close_options("--rat", opts) == ["--rate"]                   # one edit, however short
    assert close_options("--ra", opts) == []
