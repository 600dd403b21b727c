"""From a clean virtualenv: `pip install .` gives a working sockterm with its
BPF object, man page and shell completions where man and the shells look.

Slow-ish (a wheel build, ~5 s). The venv sees the system's site-packages so the
dependencies are not downloaded again; pip may fetch setuptools for the build.
"""

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED = ["pyproject.toml", "README.md", "sockterm", "man", "completions"]


def run(*args, env=None):
    # cwd "/": with the working tree as cwd, `python -c` would import it instead
    env = dict(env or os.environ)
    env.pop("PYTHONPATH", None)        # the venv's own copy, not a checkout on the path
    return subprocess.run(args, capture_output=True, text=True, timeout=600, cwd="/", env=env)


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    base = tmp_path_factory.mktemp("install")
    src = base / "src"
    src.mkdir()
    # a copy: building in the working tree would leave build/ behind for everyone
    for name in SHIPPED:
        path = os.path.join(ROOT, name)
        if os.path.isdir(path):
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, src / name)
    prefix = base / "venv"
    proc = run(sys.executable, "-m", "venv", "--system-site-packages", str(prefix))
    assert proc.returncode == 0, proc.stderr
    proc = run(str(prefix / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(src))
    assert proc.returncode == 0, proc.stderr
    return prefix


def env_for(prefix, **extra):
    env = dict(os.environ, PATH=f"{prefix}/bin:/usr/sbin:/usr/bin:/sbin:/bin", **extra)
    env.pop("SOCKTERM_BACKEND", None)
    env.pop("PYTHONPATH", None)
    return env


def test_installed_copy_is_what_runs(venv):
    proc = run(str(venv / "bin" / "python"), "-c",
               "import sockterm, importlib.resources as r; print(sockterm.__file__); "
               "print(r.files('sockterm').joinpath('data/sockterm.bpf.o').is_file())")
    path, has_object = proc.stdout.split()
    assert path.startswith(str(venv)) and has_object == "True", proc.stderr


def test_version(venv):
    from sockterm import __version__
    proc = run("sockterm", "--version", env=env_for(venv))
    assert proc.returncode == 0 and proc.stdout.strip() == f"sockterm, version {__version__}"
    assert run("sh", "-c", "command -v sockterm", env=env_for(venv)).stdout.startswith(str(venv))


def test_runs_with_the_shipped_object(venv):
    proc = run("sockterm", "--backend", "bpf", "list", "--state", "listening", "-o", "json",
               env=env_for(venv))
    assert proc.returncode in (0, 1), proc.stderr
    assert '"engine": "bpf"' in proc.stdout


def test_man_page(venv):
    if not shutil.which("man"):
        pytest.skip("man is not installed")
    env = env_for(venv, MANPATH=str(venv / "share" / "man"), MANWIDTH="80")
    assert run("man", "-w", "sockterm", env=env).stdout.strip() == str(
        venv / "share" / "man" / "man8" / "sockterm.8")
    proc = run("man", "-P", "cat", "8", "sockterm", env=env)
    assert proc.returncode == 0 and "EXIT STATUS" in proc.stdout, proc.stderr


def test_completion_files_installed(venv):
    share = venv / "share"
    for rel, name in [("bash-completion/completions", "sockterm.bash"),
                      ("zsh/site-functions", "_sockterm"),
                      ("fish/vendor_completions.d", "sockterm.fish")]:
        with open(share / rel / name) as f, open(os.path.join(ROOT, "completions", name)) as g:
            assert f.read() == g.read()


def test_bash_completion_from_the_install(venv):
    script = venv / "share" / "bash-completion" / "completions" / "sockterm.bash"
    proc = run("bash", "-c", f"source {script}; COMP_WORDS=(sockterm kill --state list); "
               "COMP_CWORD=3; _sockterm_completion sockterm; echo \"${COMPREPLY[*]}\"",
               env=env_for(venv))
    assert proc.stdout.strip() == "listening", proc.stderr


def test_bash_completion_loader_finds_it(venv):
    """bash-completion looks the file up in $XDG_DATA_DIRS on first <TAB>."""
    loader = "/usr/share/bash-completion/bash_completion"
    if not os.path.exists(loader):
        pytest.skip("bash-completion is not installed")
    env = env_for(venv, XDG_DATA_DIRS=f"{venv}/share:/usr/share")
    proc = run("bash", "-c", f"source {loader}; __load_completion sockterm; complete -p sockterm",
               env=env)
    assert "_sockterm_completion" in proc.stdout, proc.stderr


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_shells_parse_the_files(venv, shell):
    if not shutil.which(shell):
        pytest.skip(f"{shell} is not installed")
    name = {"zsh": "zsh/site-functions/_sockterm", "fish": "fish/vendor_completions.d/sockterm.fish"}
    flag = "-n" if shell == "zsh" else "--no-execute"
    proc = run(shell, flag, str(venv / "share" / name[shell]), env=env_for(venv))
    assert proc.returncode == 0, proc.stderr
