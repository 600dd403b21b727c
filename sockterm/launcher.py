"""The script that starts sockterm where scripts/install puts it.

pip's console script runs Python as a user's shell would: the site module
(which finds the environment's directories, runs its .pth files and the
distribution's sitecustomize), the PYTHON* variables and the user's
site-packages. sockterm runs as root, often from a runbook in a loop:

  -I  isolated: no PYTHONPATH, PYTHONHOME or PYTHONSTARTUP, no user
      site-packages, not the working directory on sys.path: what the
      environment of the person calling sudo says cannot change the code
      root runs;
  -S  no site module: the directories it would find are written into the
      script at install time (~4 ms of every run on this project's machine;
      `python3 -m tests.bench --only start` measures both).

`python -m sockterm.launcher PATH` writes the launcher for the interpreter
that runs it, with that interpreter's site-packages (run it with the
environment's python: scripts/install does).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys


SHEBANG_MAX = 127       # what every kernel reads of a #! line (256 from Linux 5.1)


def text(python: str, paths) -> str:
    """The launcher's source: `python`, started -IS, finds sockterm and its
    dependencies in `paths` (after the standard library, where site puts them).
    An interpreter path a #! line cannot carry (a space in it, or too long)
    is started by /bin/sh instead, as pip's own scripts do: the file is then
    both a shell script that execs Python on itself and that Python program."""
    shebang = f"#!{python} -IS"
    if len(shebang) > SHEBANG_MAX or any(c.isspace() for c in python):
        quoted = "'" + python.replace("'", "'\"'\"'") + "'"
        shebang = f"#!/bin/sh\n'''exec' {quoted} -IS \"$0\" \"$@\"\n' '''"
    return (f"{shebang}\n"
            "# sockterm's launcher (sockterm/launcher.py): Python isolated from the caller's\n"
            "# environment (-I) and without the site module (-S); the directories site would\n"
            "# have found are these.\n"
            "import sys\n"
            f"sys.path.extend({list(paths)!r})\n"
            "from sockterm.main import run\n"
            "run()\n")


def site_paths() -> list[str]:
    """What site put on this interpreter's sys.path: the environment's
    site-packages (and the base interpreter's, for a venv made with
    --system-site-packages), and what its .pth files add; what an -IS start
    of the same interpreter has anyway is left out."""
    base = subprocess.run([sys.executable, "-IS", "-c", "import sys; print(repr(sys.path))"],
                          capture_output=True, text=True, check=True).stdout
    known = set(ast.literal_eval(base))
    return [p for p in dict.fromkeys(sys.path) if p and p not in known and os.path.isdir(p)]


def write(path: str, python: str | None = None, paths=None) -> None:
    """Write the launcher to `path` (replacing what is there), mode 0755."""
    body = text(python or sys.executable, site_paths() if paths is None else paths)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(body)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m sockterm.launcher PATH", file=sys.stderr)
        return 2
    write(argv[0])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
