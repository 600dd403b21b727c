"""Completion of values only the host knows: the namespaces that exist now."""

import os
import subprocess
import sys


def complete(words):
    env = dict(os.environ, COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1),
               _SOCKTERM_COMPLETE="bash_complete")
    proc = subprocess.run([sys.executable, "-m", "sockterm"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [line.split(",", 1)[1] for line in proc.stdout.splitlines() if "," in line]


def test_netns_names_complete(topo):
    a, b = topo.ns("web"), topo.ns("db")
    prefix = f"st-{topo.tag}-"
    assert sorted(complete(f"sockterm kill --netns {prefix}")) == sorted([a, b])
    assert complete(f"sockterm list --netns {prefix}w") == [a]
    ino = str(os.stat(f"/run/netns/{a}").st_ino)
    assert complete(f"sockterm match --netns {ino}") == [ino]


def test_deleted_namespace_no_longer_completes(topo):
    name = topo.ns("gone")
    assert complete(f"sockterm list --netns {name}") == [name]
    subprocess.run(["ip", "netns", "del", name], check=True)
    topo.namespaces.remove(name)
    assert complete(f"sockterm list --netns {name}") == []
