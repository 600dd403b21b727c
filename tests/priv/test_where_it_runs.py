"""sockterm started somewhere other than a root shell on the host: inside a
child namespace (`ip netns exec`, `nsenter -n`), inside `unshare -rn`, and as
a user without privileges. `host` is always the initial namespace, auto picks
an engine that loads, and list shows what the caller may see."""

from __future__ import annotations

import json
import os
import sys

import pytest

from conftest import Topology, sh
from rel_util import cli, loopback_pairs

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
          "--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search",
          "--bounding-set=-all,+dac_read_search", "--"]
KTHREADD_NETNS = int(sh("stat", "-L", "-c", "%i", "/proc/2/ns/net").stdout)


@pytest.fixture(scope="module")
def child():
    with Topology() as topo:
        ns, h, conns, listener = loopback_pairs(topo, "where", 7900)
        yield ns, h


def names_by_inode(doc) -> dict:
    return {n["netns"]: n["netns_name"] for n in doc["namespaces"]}


@pytest.mark.parametrize("enter", ["ip-netns-exec", "nsenter"])
def test_host_is_the_initial_namespace_from_inside_a_child(child, enter):
    ns, h = child
    prefix = (["ip", "netns", "exec", ns] if enter == "ip-netns-exec"
              else ["nsenter", f"--net=/run/netns/{ns}", "--"])
    # --netns host: exactly the initial namespace (kthreadd's), listed read-only
    code, out, err = cli("list", "--netns", "host", "--state", "listening", "--no-processes",
                         "-o", "json", prefix=prefix)
    assert code in (0, 1), err
    doc = json.loads(out)
    assert names_by_inode(doc) == {KTHREADD_NETNS: "host"}
    # every namespace: host is kthreadd's, and sockterm's own is named like any other
    code, out, err = cli("list", "--state", "listening", "--no-processes", "-o", "json",
                         prefix=prefix)
    names = names_by_inode(json.loads(out))
    assert names[KTHREADD_NETNS] == "host"
    own = os.stat(f"/run/netns/{ns}").st_ino
    assert names[own] == ns
    assert list(names.values()).count("host") == 1
    # its own namespace by name: the child's sockets
    code, out, err = cli("list", "--netns", ns, "-o", "json", prefix=prefix)
    assert code == 0 and len(json.loads(out)["sockets"]) == 5, err


def test_auto_inside_a_user_namespace_picks_diag_and_says_why():
    """unshare -rn: root in a user namespace of its own; the kernel refuses to
    load BPF iterators there. auto must not pick bpf (it used to, and list
    failed with exit 3), -v says why, and doctor agrees."""
    prefix = ["unshare", "-rn"]
    code, out, err = cli("-v", "list", "-o", "json", prefix=prefix)
    assert code == 1, err                          # a fresh namespace: nothing to list
    doc = json.loads(out)
    assert doc["engine"] == "diag"
    assert "engine: diag (sockterm runs in a user namespace" in err
    assert "searched only this process's network namespace" in err
    assert len(doc["namespaces"]) == 1
    code, out, err = cli("doctor", "-o", "json", prefix=prefix)
    doctor = json.loads(out)
    assert doctor["auto_engine"]["engine"] == "diag"
    checks = {c["name"]: c for c in doctor["checks"]}
    assert checks["auto engine"]["detail"].startswith("diag (sockterm runs in a user namespace")
    assert checks["namespaces"]["ok"] is False
    # the global options after the subcommand mean the same
    code, out, err = cli("list", "-v", "-o", "json", prefix=prefix)
    assert code == 1 and "engine: diag" in err


def test_list_without_root_shows_its_own_namespace(child):
    """A user without privileges lists its own namespace, as ss does, and is
    told that the others need root; it used to be refused outright."""
    ns, h = child
    for command in ("list", "match"):
        code, out, err = cli(command, "-o", "json", prefix=["ip", "netns", "exec", ns, *NOBODY])
        assert code == 0, err
        doc = json.loads(out)
        assert doc["engine"] == "diag"
        assert [n["netns_name"] for n in doc["namespaces"]] == [ns]
        assert len(doc["sockets"]) == (5 if command == "list" else 4)
        assert "other network namespaces need root" in err
        assert len(err.strip().splitlines()) == 2 and "Traceback" not in err
    # naming another namespace is a clear refusal
    code, out, err = cli("list", "--netns", "host", prefix=["ip", "netns", "exec", ns, *NOBODY])
    assert code == 3 and err.strip().endswith("need root (CAP_SYS_ADMIN in the initial user namespace)")
    assert len(err.strip().splitlines()) == 1
