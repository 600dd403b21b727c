"""The launcher scripts/install writes (sockterm/launcher.py): run here with
this interpreter, it must start sockterm from the directories it names and
from nowhere the caller's environment points at."""

from __future__ import annotations

import os
import subprocess
import sys

from sockterm import launcher

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_isolated_without_site_and_its_directories_named(tmp_path):
    path = tmp_path / "sockterm"
    launcher.write(str(path), sys.executable, [ROOT, *launcher.site_paths()])
    text = path.read_text()
    assert text.startswith(f"#!{sys.executable} -IS\n")
    assert os.stat(path).st_mode & 0o777 == 0o755
    planted = tmp_path / "planted" / "sockterm"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("raise SystemExit('planted code ran')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "planted"))
    proc = subprocess.run([str(path), "--version"], capture_output=True, text=True, env=env,
                          cwd=str(tmp_path / "planted"), timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("sockterm, version"), proc.stderr
    # and what a site would have done is not done: no site module, no user site
    probe = tmp_path / "probe"
    probe.write_text(text.replace("from sockterm.main import run\nrun()\n",
                                  "print('site' in sys.modules, sys.flags.isolated, sys.flags.no_site)\n"))
    probe.chmod(0o755)
    out = subprocess.run([str(probe)], capture_output=True, text=True, env=env, timeout=60).stdout
    assert out.split() == ["False", "1", "1"]


def test_a_second_write_replaces_the_first(tmp_path):
    path = tmp_path / "sockterm"
    path.write_text("#!/bin/sh\necho pip's\n")
    assert launcher.main([str(path)]) == 0
    assert path.read_text() == launcher.text(sys.executable, launcher.site_paths())
    assert [p.name for p in tmp_path.iterdir()] == ["sockterm"]        # no temporary left
    assert launcher.main([]) == 2 and launcher.main(["--help"]) == 2


def test_an_interpreter_a_shebang_cannot_carry_is_started_by_sh(tmp_path):
    """A venv under a directory with a space, or deeper than a #! line holds
    (127 bytes on older kernels): /bin/sh execs the interpreter on the file."""
    spaced = tmp_path / "my tools"
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    for where in (spaced, deep):
        where.mkdir(parents=True)
        python = where / "python3"
        python.symlink_to(sys.executable)
        path = tmp_path / "sockterm"
        launcher.write(str(path), str(python), [ROOT, *launcher.site_paths()])
        assert path.read_text().startswith("#!/bin/sh\n")
        env = dict(os.environ, PYTHONPATH=str(tmp_path / "nowhere"))
        proc = subprocess.run([str(path), "--version"], capture_output=True, text=True, env=env,
                              timeout=60)
        assert proc.returncode == 0 and proc.stdout.startswith("sockterm, version"), proc.stderr
        probe = tmp_path / "probe"
        probe.write_text(path.read_text().replace(
            "from sockterm.main import run\nrun()\n",
            "print(sys.executable, sys.flags.isolated, sys.flags.no_site)\n"))
        probe.chmod(0o755)
        out = subprocess.run([str(probe)], capture_output=True, text=True, timeout=60).stdout
        assert out.split("\n")[0] == f"{python} 1 1"
