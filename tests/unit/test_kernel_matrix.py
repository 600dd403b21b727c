"""scripts/kernels' own logic: which Debian package is a row's kernel, how a
guest's results are read, and when the matrix fails."""

import importlib.machinery
import importlib.util
import os
import sys

import pytest

PATH = os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "kernels")


@pytest.fixture(scope="module")
def kernels():
    loader = importlib.machinery.SourceFileLoader("sockterm_kernels", PATH)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    sys.modules[loader.name] = module          # dataclasses look their module up
    loader.exec_module(module)
    yield module
    del sys.modules[loader.name]


class FakeApt:
    def __init__(self, names):
        self.dir = "fake"
        self.lines = [f"{n} - Linux" for n in names]

    def names(self, pattern):
        return self.lines


# what `apt-cache search` answers for bookworm + bookworm-security, and for trixie-backports
BOOKWORM = ["linux-image-6.1.0-56-amd64-unsigned", "linux-image-6.1.0-57-amd64-unsigned",
            "linux-image-6.1.0-57-cloud-amd64-unsigned", "linux-image-6.1.0-57-rt-amd64-unsigned",
            "linux-image-6.1.0-57-amd64-dbg", "linux-image-6.12.118+deb12-amd64-unsigned",
            "linux-image-6.1.0-9-amd64-unsigned"]
BACKPORTS = ["linux-binary-unsigned-7.2.12+deb13-amd64", "linux-binary-unsigned-7.3.4+deb13-amd64",
             "linux-binary-unsigned-7.3.4+deb13-cloud-amd64", "linux-binary-7.3.4+deb13-amd64",
             "linux-modules-7.3.4+deb13-amd64", "linux-image-7.3.4+deb13-amd64",
             "linux-image-7.10.1+deb13-rt-amd64-unsigned"]


def test_a_row_is_the_newest_generic_kernel_of_its_series(kernels):
    assert kernels.newest_kernel(FakeApt(BOOKWORM), "6.1") == (
        "6.1.0-57-amd64", ["linux-image-6.1.0-57-amd64-unsigned"])
    assert kernels.newest_kernel(FakeApt(BOOKWORM), "")[0] == "6.12.118+deb12-amd64"
    with pytest.raises(kernels.Failure, match="no generic amd64 5.10 kernel"):
        kernels.newest_kernel(FakeApt(BOOKWORM), "5.10")


def test_a_split_kernel_is_its_image_modules_and_base(kernels):
    assert kernels.newest_kernel(FakeApt(BACKPORTS), "") == (
        "7.3.4+deb13-amd64", ["linux-binary-unsigned-7.3.4+deb13-amd64",
                              "linux-modules-7.3.4+deb13-amd64", "linux-base-7.3.4+deb13-amd64"])


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
<testcase classname="tests.priv.test_kill_vip" name="test_kill_dst_vip_every_namespace[diag]" time="12.5"/>
<testcase classname="tests.priv.test_kill_vip" name="test_kill_dst_vip_every_namespace[bpf]" time="3.0">
<failure message="AssertionError: no output (exit 3)&#10;more">trace</failure></testcase>
<testcase classname="tests.priv.test_onepass" name="test_time_wait[bpf]" time="0.1">
<skipped message="not here"/></testcase>
</testsuite></testsuites>"""


def test_junit_results_and_the_verdict(kernels, tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    tests = kernels.junit(str(tmp_path / "junit.xml"))
    assert tests == {
        "test_kill_vip::test_kill_dst_vip_every_namespace[diag]": ("passed", "", 12.5),
        "test_kill_vip::test_kill_dst_vip_every_namespace[bpf]":
            ("failed", "AssertionError: no output (exit 3)", 3.0),
        "test_onepass::test_time_wait[bpf]": ("skipped", "not here", 0.1),
    }
    doctor = {"checks": [{"name": "kernel", "ok": None, "detail": "6.1"},
                         {"name": "BPF load", "ok": False, "detail": "refused: R1"}],
              "auto_engine": {"engine": "diag"}}
    ok = kernels.Kernel("6.1", "6.1.0-57-amd64", "img",
                        result={"tests": tests, "doctor": doctor, "pytest_exit": 1, "boot_s": 5,
                                "modules": {"veth": True, "vxlan": "modprobe: FATAL: not found"}})
    unbooted = kernels.Kernel("5.10", "5.10.0-46-amd64", "img", result={"error": "did not boot"})
    lines, totals = kernels.matrix([ok, unbooted])
    assert (totals["passed"], totals["failed"], totals["skipped"]) == (1, 1, 1)
    assert totals["broken"] == ["5.10"]
    text = "\n".join(lines)
    assert "6.1: FAIL test_kill_vip::test_kill_dst_vip_every_namespace[bpf]: AssertionError" in text
    assert "6.1: doctor: BPF load: refused: R1" in text
    assert "6.1: modprobe vxlan: modprobe: FATAL: not found" in text and "veth" not in text
    assert any(line.split()[:3] == ["BPF", "load", "NO"] for line in lines)
    assert any(line.split()[:3] == ["auto", "engine", "diag"] for line in lines)


def test_no_test_run_is_a_broken_row(kernels):
    """pytest's exit 5 (nothing collected) is no pass."""
    empty = kernels.Kernel("6.12", "6.12.118+deb13-amd64", "img",
                           result={"tests": {}, "pytest_exit": 5, "boot_s": 5})
    assert kernels.matrix([empty])[1]["broken"] == ["6.12"]


def test_a_stopped_guest_still_reports_the_tests_it_finished(kernels, tmp_path):
    (tmp_path / "pytest.log").write_text(
        "tests/priv/test_doctor_vs_run.py::test_doctor_names_the_engine_a_run_uses PASSED [  7%]\n"
        "tests/priv/test_hygiene.py::test_cli_runs_leave_no_bpf_objects[bpf] FAILED    [ 14%]\n"
        "tests/priv/test_kill_vip.py::test_kill_dst_vip_every_namespace[bpf] \n")
    assert kernels.progress(str(tmp_path / "pytest.log")) == {
        "test_doctor_vs_run::test_doctor_names_the_engine_a_run_uses": ("passed", "", 0.0),
        "test_hygiene::test_cli_runs_leave_no_bpf_objects[bpf]": ("failed", "", 0.0)}



def test_a_row_may_run_its_own_selection(kernels, monkeypatch):
    """5.10 runs the tests named for it (files replace the marked ones: the
    guest collects only those); the other rows run every marked test."""
    monkeypatch.setenv("SOCKTERM_VNG", "/venv/bin/vng")

    def inner(name):
        kernel = kernels.Kernel(name, "", "/cache/vmlinuz")
        args = kernels.vng_command(kernel, "/tmp/results", kvm=False, cpus=2, pytest_args=["-x"])
        return args[args.index("--exec") + 1].split(" -- ", 1)[1].split()
    assert inner("6.1") == ["-x"]
    own = inner("5.10")
    assert own[-1] == "-x" and "-k" in own
    assert [a for a in own if a.startswith("tests/")] == [
        a for a in kernels.ROW_TESTS["5.10"] if a.startswith("tests/")]
