"""Completion through click's real protocol, the committed scripts, and what
--help and completion may import."""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEAVY = ("pyroute2", "pylibbpf", "llvmlite", "elftools", "rich", "sockterm.engine.bpf.libbpf",
         "sockterm.engine", "sockterm.core")


def run(args=(), env=None):
    full = dict(os.environ, **(env or {}))
    full.pop("SOCKTERM_BACKEND", None)
    return subprocess.run([sys.executable, "-X", "importtime", "-m", "sockterm", *args],
                          capture_output=True, text=True, env=full, cwd=ROOT, timeout=60)


def imported(stderr: str) -> set:
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def heavy(names) -> list:
    return sorted(n for n in names if any(n == h or n.startswith(h + ".") for h in HEAVY))


def complete(words: str, shell="bash"):
    """What click answers a shell for `words` (the last word being completed)."""
    parts = words.split(" ")
    proc = run(env={"COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1),
                    "_SOCKTERM_COMPLETE": f"{shell}_complete"})
    assert proc.returncode == 0, proc.stderr
    values = [line.split(",", 1)[1] for line in proc.stdout.splitlines() if line.startswith("plain,")]
    return values, imported(proc.stderr)


@pytest.mark.parametrize("args", [["--help"], ["list", "--help"], ["match", "--help"],
                                  ["kill", "--help"], ["-V"]])
def test_help_imports_nothing_heavy(args):
    proc = run(args)
    assert proc.returncode == 0, proc.stderr
    assert heavy(imported(proc.stderr)) == []


def test_states_complete():
    values, mods = complete("sockterm kill --state est")
    assert values == ["established"]
    values, _ = complete("sockterm list --state ")
    assert {"established", "syn-sent", "listening", "unconnected", "connected", "all"} <= set(values)
    assert heavy(mods) == []


def test_protocols_engines_formats_commands_complete():
    assert complete("sockterm match --proto ")[0] == ["tcp", "udp"]
    assert complete("sockterm --backend ")[0] == ["auto", "bpf", "diag"]
    assert complete("sockterm list -o j")[0] == ["json", "jsonl"]
    assert complete("sockterm ")[0] == ["list", "match", "kill", "doctor"]
    assert "--dry-run" in complete("sockterm kill --")[0]


def test_netns_completes_this_namespace():
    ino = str(os.stat("/proc/self/ns/net").st_ino)
    values, mods = complete("sockterm list --netns ")
    assert ino in values
    assert heavy(mods) == []


def test_bash_script_drives_the_protocol():
    script = (f"source {ROOT}/completions/sockterm.bash; COMP_WORDS=(sockterm kill --proto u); "
              "COMP_CWORD=3; _sockterm_completion sockterm; echo \"${COMPREPLY[*]}\"")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    if "command not found" in proc.stderr:
        pytest.skip("sockterm is not on PATH (package not installed)")
    assert proc.stdout.strip() == "udp", proc.stderr


def test_fish_script_drives_the_protocol():
    """The committed fish script and the answer of the click installed here:
    click 8.4.0 and 8.4.2 disagreed on both, and the script completed nothing."""
    if not shutil.which("fish"):
        pytest.skip("fish is not installed")
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    proc = subprocess.run(["fish", "-c", f"set fish_complete_path {ROOT}/completions $fish_complete_path; "
                           "complete -C'sockterm kill --proto u'"],
                          capture_output=True, text=True, env=env, timeout=60)
    if "Unknown command: sockterm" in proc.stderr:
        pytest.skip("sockterm is not on PATH (package not installed)")
    assert proc.stdout.split() == ["udp"], proc.stderr


def test_committed_completions_are_current():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "gen_completions.py"),
                           "--check"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_bash_candidates_are_quoted_not_globbed(tmp_path):
    """`comm[pid]` is a glob pattern: click's own script expanded it against the
    current directory (python31 here) and `read` ate backslashes. Ours inserts
    each candidate verbatim, quoted for the command line."""
    (tmp_path / "python31").touch()
    fake = tmp_path / "bin" / "sockterm"        # answers as sockterm would, for hostile names
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nprintf '%s\\n' 'plain,python3[12]' 'plain,a b' "
                    "'plain,z\\x0aFAKE[7]' 'plain,*'\n")
    fake.chmod(0o755)
    script = (f"source {ROOT}/completions/sockterm.bash; "
              "COMP_WORDS=(sockterm list --netns ''); COMP_CWORD=3; "
              "_sockterm_completion sockterm; printf '%s\\n' \"${COMPREPLY[@]}\"")
    env = dict(os.environ, PATH=f"{fake.parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=60)
    assert proc.stdout.splitlines() == ["python3\\[12\\]", "a\\ b", "z\\\\x0aFAKE\\[7\\]", "\\*"], \
        proc.stderr


def test_global_options_after_the_command_in_help_import_nothing_heavy():
    proc = run(["list", "-v", "--backend", "diag", "--help"])
    assert proc.returncode == 0 and "--backend" in proc.stdout
    assert heavy(imported(proc.stderr)) == []
