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
