"""`sockterm doctor` against a real run, on whatever kernel this is (the kernel
matrix runs it in each): the engine doctor says `auto` picks is the engine a
kill with `--backend auto` then uses (list decides the same way), and it kills."""

import errno

import pytest

from conftest import sockterm_json

PORT = 7620


@pytest.mark.kernels
def test_doctor_names_the_engine_a_run_uses(topo):
    code, doctor, err = sockterm_json("doctor")
    assert code == 0, err
    auto = doctor["auto_engine"]["engine"]
    ns = topo.ns("doc")
    h = topo.holder(ns)
    lst = h.call("listen", addr="127.0.0.1", port=PORT)
    conns = h.call("connect", dst="127.0.0.1", port=PORT, count=2)
    h.call("accept", id=lst["id"], count=2)
    code, doc, err = sockterm_json("kill", "--yes", "--dport", str(PORT), "--netns", ns)
    assert code == 0, f"kill after doctor said auto is {auto}: {err.strip()}"
    assert doc["engine"] == auto, (doc["engine"], auto)
    assert [n["engine"] for n in doc["namespaces"]] == [auto], doc["namespaces"]
    assert {s["cookie"] for s in doc["sockets"]} == {c["cookie"] for c in conns}
    assert set(h.status([c["id"] for c in conns]).values()) == {errno.ECONNABORTED}
