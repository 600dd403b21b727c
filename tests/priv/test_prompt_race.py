"""What an operator confirmed is what the report accounts for: sockets that
closed while the question was on the screen, and a namespace deleted in the
meantime, come back as `gone`, never silently dropped."""

from __future__ import annotations

import errno
import json

from conftest import ENGINES, sh
from test_operator_terminal import run_pty
from rel_util import loopback_pairs

import pytest

PORT = 7400
PER_NS = 20


def kill_at_prompt(args, before_answer, answer="y"):
    """sockterm kill on a pseudo-terminal (stdin, stderr), JSON on a pipe;
    before_answer() runs while the question is shown."""
    code, screen, out = run_pty(*args, answer=answer, cols=120, stdout_pty=False,
                                before_answer=before_answer)
    assert "Kill them? [y/N]" in screen, screen
    return code, out, screen


@pytest.mark.parametrize("engine", ENGINES)
def test_confirmed_sockets_that_close_or_lose_their_namespace_are_reported_gone(topo, engine):
    ns_a, holder_a, ids_a, _ = loopback_pairs(topo, "a", PORT, count=PER_NS)
    ns_b, holder_b, ids_b, _ = loopback_pairs(topo, "b", PORT, count=PER_NS)
    cookies_a = {i: info["cookie"] for i, info in zip(ids_a, holder_a.call("infos", ids=ids_a))}
    cookies_b = {info["cookie"] for info in holder_b.call("infos", ids=ids_b)}
    closing = ids_a[:5]

    def race():
        holder_a.call("close", ids=closing, abort=True)
        holder_b.close()                      # its last process: the namespace goes with the mount
        sh("ip", "netns", "del", ns_b)
        topo.namespaces.remove(ns_b)

    code, out, screen = kill_at_prompt(["--backend", engine, "kill", "--netns", ns_a,
                                        "--netns", ns_b, "--dst", f"127.0.0.1:{PORT}",
                                        "-o", "json"], race)
    doc = json.loads(out)
    results = {s["cookie"]: s["result"] for s in doc["sockets"]}
    assert f"About to kill {2 * PER_NS} sockets in 2 namespaces" in screen
    confirmed = set(cookies_a.values()) | cookies_b
    assert set(results) == confirmed, "every confirmed socket is in the report"
    closed = {cookies_a[i] for i in closing}
    assert {c for c, r in results.items() if r == "gone"} == closed | cookies_b
    assert {c for c, r in results.items() if r == "killed"} == set(cookies_a.values()) - closed
    assert doc["summary"]["killed"] == PER_NS - len(closing) and doc["summary"]["failed"] == 0
    assert doc["summary"]["matched"] == 2 * PER_NS
    assert code == 0
    # and the kernel agrees: the killed ones saw ECONNABORTED
    status = holder_a.status([i for i in ids_a if i not in closing])
    assert set(status.values()) == {errno.ECONNABORTED}


@pytest.mark.parametrize("answer,code", [("n", 1), ("\x03", 1), ("\x04", 1)])
def test_no_at_the_prompt_kills_nothing_and_says_so(topo, answer, code):
    ns, holder, ids, _ = loopback_pairs(topo, "n", PORT, count=3)
    got, out, screen = kill_at_prompt(["kill", "--netns", ns, "--dst", f"127.0.0.1:{PORT}",
                                       "-o", "json"], lambda: None, answer=answer)
    assert got == code, screen
    doc = json.loads(out)
    assert doc["sockets"] == [] and doc["summary"]["killed"] == 0
    assert doc["summary"]["matched"] == 3 and doc["summary"]["refused"]
    assert "Traceback" not in screen
    assert set(holder.status(ids).values()) == {0}
