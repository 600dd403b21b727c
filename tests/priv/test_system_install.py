"""The README's install command, as a sysadmin runs it on stock Debian/Ubuntu:
scripts/install with the system Python (externally managed, PEP 668) and
sudo's secure_path, here into a throwaway prefix. sockterm must land on that
PATH, its man page where man finds it, completions where bash-completion, zsh
and fish look, and --uninstall must take it all away.

Slow-ish (a venv and the dependencies from the package index, ~15 s).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"   # sudo's default


def run(*args, env, cwd="/"):
    return subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=cwd, env=env)


def sudo_env(**extra) -> dict:
    """What `sudo` leaves a command: secure_path, a few variables, nothing of ours."""
    env = {"PATH": SECURE_PATH, "HOME": "/root", "LANG": os.environ.get("LANG", "C.UTF-8"),
           "TERM": "dumb", "USER": "root", "SUDO_USER": "admin"}
    for key in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CONFIG_FILE"):
        if key in os.environ:          # the host's package index settings, if it has any
            env[key] = os.environ[key]
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    base = tmp_path_factory.mktemp("sysinstall")
    prefix = base / "usr" / "local"
    env = sudo_env()
    python = shutil.which("python3", path=SECURE_PATH)
    assert python == "/usr/bin/python3", python         # the distribution's, not a dev's
    proc = run(os.path.join(ROOT, "scripts", "install"), "--prefix", str(prefix), env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield base, prefix, env
    run(os.path.join(ROOT, "scripts", "install"), "--uninstall", "--prefix", str(prefix), env=env)


def test_the_system_python_is_externally_managed():
    """The premise: `pip install .` into it is refused (no --break-system-packages)."""
    markers = glob.glob("/usr/lib/python3*/EXTERNALLY-MANAGED")
    if not markers:
        pytest.skip("this distribution's Python is not externally managed")
    proc = run("/usr/bin/python3", "-m", "pip", "install", "--dry-run", ROOT, env=sudo_env())
    assert proc.returncode != 0
    assert "externally-managed" in proc.stderr or "No module named pip" in proc.stderr, proc.stderr


def test_on_sudos_path_with_a_version(installed):
    base, prefix, env = installed
    path = f"{prefix}/sbin:{SECURE_PATH}"
    proc = run("sh", "-c", "command -v sockterm && sockterm --version", env=dict(env, PATH=path))
    where, version = proc.stdout.splitlines()
    assert where == f"{prefix}/sbin/sockterm", proc.stderr
    from sockterm import __version__
    assert version == f"sockterm, version {__version__}"
    # the link leads into a venv of the system Python, not into it
    target = os.path.realpath(where)
    assert target.startswith(f"{prefix}/lib/sockterm/")
    with open(f"{prefix}/lib/sockterm/pyvenv.cfg") as f:
        assert "home = /usr/bin" in f.read()


def test_it_runs_with_the_shipped_object(installed):
    base, prefix, env = installed
    proc = run(f"{prefix}/sbin/sockterm", "--backend", "bpf", "list", "--netns", "host",
               "--state", "listening", "-o", "json", env=env)
    assert proc.returncode in (0, 1), proc.stderr
    assert '"engine": "bpf"' in proc.stdout


def test_the_callers_environment_does_not_choose_the_code_root_runs(installed, tmp_path):
    """`sudo -E`, an env_keep of PYTHONPATH, a shell in a directory a user
    owns: none may put another `sockterm` (or `click`) in front of the
    installed one. The launcher runs Python isolated (-I) and without site
    (-S), its directories written in at install time."""
    base, prefix, env = installed
    launcher = os.path.realpath(f"{prefix}/sbin/sockterm")
    with open(launcher) as f:
        first = f.readline()
    assert first == f"#!{prefix}/lib/sockterm/bin/python -IS\n"
    for name in ("sockterm", "click"):
        planted = tmp_path / "planted" / name
        planted.mkdir(parents=True)
        (planted / "__init__.py").write_text("raise SystemExit('planted code ran')\n")
    hostile = dict(env, PYTHONPATH=str(tmp_path / "planted"), PYTHONHOME="/nonexistent",
                   PYTHONSTARTUP=str(tmp_path / "planted" / "sockterm" / "__init__.py"))
    for cwd in ("/", str(tmp_path / "planted")):
        proc = run(f"{prefix}/sbin/sockterm", "--version", env=hostile, cwd=cwd)
        assert proc.returncode == 0 and "planted" not in proc.stdout + proc.stderr, proc.stderr
    proc = run(f"{prefix}/sbin/sockterm", "list", "--netns", "host", "--state", "listening",
               "-o", "json", env=hostile, cwd=str(tmp_path / "planted"))
    assert proc.returncode in (0, 1) and '"sockets"' in proc.stdout, proc.stderr


def test_man_8_finds_the_page(installed):
    base, prefix, env = installed
    manpath = f"{prefix}/share/man"
    proc = run("man", "-w", "8", "sockterm", env=dict(env, MANPATH=manpath))
    assert proc.stdout.strip() == f"{manpath}/man8/sockterm.8", proc.stderr
    proc = run("man", "-P", "cat", "8", "sockterm", env=dict(env, MANPATH=manpath, MANWIDTH="80"))
    assert proc.returncode == 0 and "EXIT STATUS" in proc.stdout
    # with no MANPATH, man-db maps $PREFIX/sbin on PATH to $PREFIX/share/man, as
    # /etc/manpath.config maps /usr/local/sbin to /usr/local/share/man
    proc = run("man", "-w", "8", "sockterm", env=dict(env, PATH=f"{prefix}/sbin:{SECURE_PATH}"))
    assert proc.stdout.strip() == f"{manpath}/man8/sockterm.8", proc.stderr


def test_bash_completion_loads_it_on_first_tab(installed):
    base, prefix, env = installed
    loader = "/usr/share/bash-completion/bash_completion"
    assert os.path.exists(loader), "scripts/test installs bash-completion"
    # bash-completion looks in $XDG_DATA_DIRS (default /usr/local/share:/usr/share)
    env = dict(env, PATH=f"{prefix}/sbin:{SECURE_PATH}", XDG_DATA_DIRS=f"{prefix}/share:/usr/share")
    script = (f"source {loader}; __load_completion sockterm; complete -p sockterm; "
              "COMP_WORDS=(sockterm kill --state list); COMP_CWORD=3; "
              "_sockterm_completion sockterm; echo \"${COMPREPLY[*]}\"")
    proc = run("bash", "-c", script, env=env)
    lines = proc.stdout.splitlines()
    assert "_sockterm_completion" in lines[0], proc.stderr
    assert lines[-1] == "listening"


def test_zsh_and_fish_find_theirs(installed):
    base, prefix, env = installed
    env = dict(env, PATH=f"{prefix}/sbin:{SECURE_PATH}")
    zsh_file = f"{prefix}/share/zsh/site-functions/_sockterm"
    assert run("zsh", "-n", zsh_file, env=env).returncode == 0
    fish_dir = f"{prefix}/etc/fish/completions"
    proc = run("fish", "-c", f"set fish_complete_path {fish_dir} $fish_complete_path; "
               "complete -C'sockterm --backend '", env=env)
    assert proc.stdout.split() == ["auto", "bpf", "diag"], proc.stderr


def test_uninstall_removes_everything(tmp_path):
    """A second, short-lived install: --uninstall leaves no file behind."""
    prefix = tmp_path / "opt"
    env = sudo_env()
    install = os.path.join(ROOT, "scripts", "install")
    assert run(install, "--prefix", str(prefix), env=env).returncode == 0
    assert os.path.islink(prefix / "sbin" / "sockterm")
    proc = run(install, "--uninstall", "--prefix", str(prefix), env=env)
    assert proc.returncode == 0, proc.stderr
    left = [os.path.join(d, f) for d, _, files in os.walk(prefix) for f in files]
    left += [os.path.join(d, f) for d, _, files in os.walk(prefix) for f in _ if
             os.path.islink(os.path.join(d, f))]
    assert left == [], left
    assert not (prefix / "lib" / "sockterm").exists()
    # and a second uninstall says there is nothing to remove
    proc = run(install, "--uninstall", "--prefix", str(prefix), env=env)
    assert proc.returncode == 1 and "no sockterm installation" in proc.stderr
