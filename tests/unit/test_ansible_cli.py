"""The Ansible collection's shared code (ansible/plugins/module_utils/sockterm_cli.py):
options -> the CLI's command line, and reading what the CLI said. Standard library
only, so it loads here without ansible; tests/priv/test_ansible.py runs the modules."""

from __future__ import annotations

import importlib.util
import json
import os
import re

import pytest

import sockterm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTION = os.path.join(ROOT, "ansible")


def _load():
    path = os.path.join(COLLECTION, "plugins", "module_utils", "sockterm_cli.py")
    spec = importlib.util.spec_from_file_location("sockterm_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = _load()


def params(**given):
    out = {key: None for key in cli.FILTER_ARGS}
    out.update(given)
    return out


def test_options_become_the_cli_options():
    p = params(dst=["10.0.0.5:80", "[fd00::5]:443"], src=["10.1.0.0/16"], dport=["80", "8000-8100"],
               sport=["5000"], proto="udp", family=6, socket_state=["established", "close-wait"],
               netns=["web-1"], pid=[42], comm=["-nginx"], container=["c1"], pod=["ns/p"],
               cgroup=["/system.slice/x"], uid=["1000"])
    assert cli.filter_argv(p) == [
        "--dst=10.0.0.5:80", "--dst=[fd00::5]:443", "--src=10.1.0.0/16", "--dport=80",
        "--dport=8000-8100", "--sport=5000", "--state=established", "--state=close-wait",
        "--netns=web-1", "--pid=42", "--comm=-nginx", "--container=c1", "--pod=ns/p",
        "--cgroup=/system.slice/x", "--uid=1000", "--proto=udp", "-6"]


def test_backend_goes_before_the_subcommand():
    p = params(backend="diag", dst=["10.0.0.5"])
    assert cli.command("/x/sockterm", "kill", p, ["--yes", "--max=3"]) == [
        "/x/sockterm", "--backend=diag", "kill", "--output=json", "--yes", "--max=3",
        "--dst=10.0.0.5"]
    assert cli.command("st", "list", params()) == ["st", "list", "--output=json"]


def test_what_counts_as_a_filter_and_a_target():
    assert not cli.has_filter(params()) and not cli.targeted(params())
    assert cli.has_filter(params(proto="tcp")) and not cli.targeted(params(proto="tcp"))
    assert cli.has_filter(params(socket_state=["all"])) and not cli.targeted(params(socket_state=["all"]))
    for key in cli.TARGETING:
        assert cli.targeted(params(**{key: ["x"]})), key


def test_rate_text():
    assert cli.number_text(100.0) == "100" and cli.number_text(0.5) == "0.5"


def test_executable_search(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    for d in (first, second):
        d.mkdir()
        (d / "sockterm").write_text("#!/bin/sh\n")
        (d / "sockterm").chmod(0o755)
    (first / "sockterm").chmod(0o644)      # not executable: skipped
    monkeypatch.setenv("PATH", f"{first}:{second}")
    assert cli.find_executable() == str(second / "sockterm")
    assert cli.find_executable(str(first / "sockterm")) is None
    assert cli.find_executable(str(second / "sockterm")) == str(second / "sockterm")
    monkeypatch.setattr(cli, "SEARCH_DIRS", (str(first), str(tmp_path)))
    monkeypatch.setenv("PATH", "")
    assert cli.find_executable() is None


DOC = {"command": "kill", "engine": "diag", "filter": "dst 10.0.0.5",
       "sockets": [{"netns_name": "{{ x }}\x1b[31m", "result": "killed", "error": None},
                   {"netns_name": "b", "result": "no-permission", "error": "EPERM"}],
       "namespaces": [{"netns": 1, "netns_name": "{{ x }}\x1b[31m"}],
       "summary": {"matched": 2, "namespaces": 1, "namespace_errors": 0, "killed": 1, "failed": 1}}


def test_results_are_the_documents_own():
    found = cli.results(cli.read_document(json.dumps(DOC, indent=2) + "\n"))
    assert (found["matched"], found["killed"], found["failed"]) == (2, 1, 1)
    assert found["sockets"] == DOC["sockets"] and found["namespaces"] == DOC["namespaces"]
    assert cli.results(None) == dict(matched=0, killed=0, failed=0, sockets=[], namespaces=[],
                                     summary={})


@pytest.mark.parametrize("stdout", ["", "\n", "not json", "[1]", '{"summary": '])
def test_no_document(stdout):
    assert cli.read_document(stdout) is None


def test_reason_prefers_the_error_line():
    err = "3 sockets\nsockterm: error: 5 sockets match, more than --max 2: nothing killed\n"
    assert cli.reason(3, err, None) == "sockterm: error: 5 sockets match, more than --max 2: nothing killed"
    doc = {"summary": {"matched": 5, "refused": "more than --max 2"}}
    assert cli.reason(3, "", doc) == "sockterm: more than --max 2"
    assert cli.reason(3, "killed 1 of 2 matching sockets, 1 failed\n", DOC) == \
        "sockterm: 1 of 2 matching sockets not killed (EPERM)"
    assert cli.reason(3, "sockterm: warning: namespace x (1): gone\nsummary\n", {}) == \
        "sockterm: warning: namespace x (1): gone"
    assert cli.reason(130, "sockterm: interrupted\n", None) == "sockterm: interrupted"
    assert "exited 9" in cli.reason(9, "", None)
    assert cli.failure_message("kill", 3, "sockterm: error: no\n", None) == \
        "sockterm: error: no (sockterm kill exited 3)"


def test_collection_version_is_the_package_version():
    with open(os.path.join(COLLECTION, "galaxy.yml")) as f:
        version = re.search(r"^version:\s*(\S+)", f.read(), re.M).group(1)
    assert version == sockterm.__version__
