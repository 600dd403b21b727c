"""The Ansible collection (ansible/), built and installed as a user would, driven by
ansible-playbook against localhost on real namespaces; every kill is checked from
the sockets' side (the application's errno, the peer's reset, ss).

ansible-core comes from its own environment (scripts/test installs it and sets
SOCKTERM_ANSIBLE_BIN): missing, the tests skip, and fail under CI.
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import HOLDER, Holder, Topology, sockterm, ss_cookies

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_VENV_BIN = "/var/tmp/sockterm-ansible-venv/bin"
NO_NET_ADMIN = ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--"]
# a process name is anyone's to choose: it must come back as data, never as a template
ODD_COMM = "{{ 7*7 }}'\"x"


class AnsibleTopology(Topology):
    """Addresses of its own: other suites kill host-wide on theirs."""

    PREFIX, LINK = "stans", "sa"
    VIP4, VIP6 = "10.231.0.5", "fd31::5"
    CLIENT4, CLIENT6 = "10.232", "fd32"


class OddlyNamedHolder(Holder):
    """A holder whose process name (comm) is ODD_COMM: Python started through a
    symlink of that name (a process may rename only itself)."""

    def __init__(self, netns: str, work: str):
        exe = os.path.join(work, ODD_COMM)
        if not os.path.lexists(exe):
            os.symlink(sys.executable, exe)
        self.netns = netns
        self.proc = subprocess.Popen(["ip", "netns", "exec", netns, exe, HOLDER],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.pid = self.call("pid")


def ansible_bin() -> str:
    wanted = os.environ.get("SOCKTERM_ANSIBLE_BIN")
    found = shutil.which("ansible-playbook")
    candidates = [wanted] if wanted else [os.path.dirname(found or ""), DEFAULT_VENV_BIN]
    for directory in candidates:
        if directory and os.access(os.path.join(directory, "ansible-playbook"), os.X_OK):
            return directory
    why = (f"ansible-core not found in {wanted or ' or '.join(c for c in candidates if c)} "
           "(scripts/test installs it; or set SOCKTERM_ANSIBLE_BIN)")
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(why)
    pytest.skip(why)


class Ansible:
    """The collection built and installed into a temporary collections path, and
    ansible-playbook runs against localhost (-c local) that hand back each task's
    registered result."""

    def __init__(self, bin_dir: str, work: str):
        self.bin = bin_dir
        self.work = work
        open(os.path.join(work, "ansible.cfg"), "w").close()
        self.env = dict(os.environ, LC_ALL="C.UTF-8", ANSIBLE_CONFIG=os.path.join(work, "ansible.cfg"),
                        ANSIBLE_COLLECTIONS_PATH=os.path.join(work, "collections"),
                        ANSIBLE_HOME=os.path.join(work, "home"),
                        ANSIBLE_LOCAL_TEMP=os.path.join(work, "tmp"),
                        ANSIBLE_REMOTE_TEMP=os.path.join(work, "tmp"),
                        ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
        self.env.pop("SOCKTERM_BACKEND", None)
        self.sockterm = self.wrapper("sockterm", [])
        self.sockterm_no_net_admin = self.wrapper("sockterm-no-net-admin", NO_NET_ADMIN)

    def run(self, tool: str, *args, check=True) -> subprocess.CompletedProcess:
        proc = subprocess.run([os.path.join(self.bin, tool), *args], cwd=self.work, env=self.env,
                              capture_output=True, text=True, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(args)}: exit {proc.returncode}\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def wrapper(self, name: str, prefix: list) -> str:
        """sockterm from this checkout, as the `executable` a task names."""
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(f"#!/bin/sh\nPYTHONPATH={shlex.quote(ROOT)} exec "
                    f"{shlex.join([*prefix, sys.executable])} -m sockterm \"$@\"\n")
        os.chmod(path, 0o755)
        return path

    def install(self):
        out = os.path.join(self.work, "dist")
        self.run("ansible-galaxy", "collection", "build", os.path.join(ROOT, "ansible"),
                 "--output-path", out)
        tarball, = (os.path.join(out, f) for f in os.listdir(out) if f.endswith(".tar.gz"))
        self.run("ansible-galaxy", "collection", "install", "-p", self.env["ANSIBLE_COLLECTIONS_PATH"],
                 tarball)

    def play(self, tasks: list) -> list[dict]:
        """Run the tasks on localhost; each task's registered result, in order."""
        names = []
        for i, task in enumerate(tasks):
            names.append(task.setdefault("register", f"result{i}"))
        out = os.path.join(self.work, "results.json")
        dump = {"ansible.builtin.copy": {"dest": out,
                                         "content": "{{ [%s] | to_json }}" % ", ".join(names)}}
        playbook = os.path.join(self.work, "play.yml")
        with open(playbook, "w") as f:      # JSON is YAML
            json.dump([{"hosts": "localhost", "gather_facts": False, "tasks": tasks + [dump]}], f)
        if os.path.exists(out):
            os.unlink(out)
        proc = self.run("ansible-playbook", "-i", "localhost,", "-c", "local",
                        "-e", f"ansible_python_interpreter={sys.executable}", playbook, check=False)
        if proc.returncode != 0 or not os.path.exists(out):
            raise AssertionError(f"ansible-playbook: exit {proc.returncode}\n{proc.stdout}\n"
                                 f"{proc.stderr}")
        with open(out) as f:
            return json.load(f)


@pytest.fixture(scope="module")
def ansible(tmp_path_factory):
    a = Ansible(ansible_bin(), str(tmp_path_factory.mktemp("ansible")))
    a.install()
    return a


@pytest.fixture
def atopo():
    t = AnsibleTopology()
    try:
        yield t
    finally:
        t.cleanup()


def cli_options(command: str) -> str:
    return sockterm(command, "--help")[1]


def build(topo, clients=2, odd_work=None):
    """Clients (the first named ODD_COMM given odd_work) holding TCP (v4, v6) and connected UDP to VIP:80 (doomed) and TCP to
    VIP:81 (spared); the backend's accepted ends of the doomed TCP connections."""
    vip4, vip6 = topo.VIP4, topo.VIP6
    be = topo.with_backend()
    server = topo.holder(be)
    l80 = server.call("listen", addr=vip4, port=80)["id"]
    l80v6 = server.call("listen", addr=vip6, port=80)["id"]
    l81 = server.call("listen", addr=vip4, port=81)["id"]
    doomed, spared, peers = {}, {}, []
    for i in range(clients):
        ns = topo.client(i)
        if odd_work and i == 0:
            h = OddlyNamedHolder(ns, odd_work)
            topo.holders.append(h)
        else:
            h = topo.holder(ns)
        kill = h.call("connect", dst=vip4, port=80, count=2) + h.call("connect", dst=vip6, port=80)
        kill += h.call("connect", proto="udp", dst=vip4, port=80)
        keep = h.call("connect", dst=vip4, port=81)
        doomed[h] = [s["id"] for s in kill]
        spared[h] = [s["id"] for s in keep]
        peers += server.call("accept", id=l80, count=2) + server.call("accept", id=l80v6)
        server.call("accept", id=l81)
    return server, doomed, spared, peers


def cookies(holders: dict) -> set[int]:
    return {s["cookie"] for h, ids in holders.items() for s in h.call("infos", ids=ids)}


def statuses(holders: dict) -> set[int]:
    return {v for h, ids in holders.items() for v in h.status(ids).values()}


def test_collection_documents_itself(ansible):
    for module in ("sockets", "sockets_info"):
        out = ansible.run("ansible-doc", "-t", "module", f"sockterm.sockterm.{module}").stdout
        assert "socket_state" in out and "executable" in out
    doc = json.loads(ansible.run("ansible-doc", "--json", "-t", "module",
                                 "sockterm.sockterm.sockets").stdout)
    options = doc["sockterm.sockterm.sockets"]["doc"]["options"]
    assert {"state", "max", "rate", "dst", "netns", "backend", "container", "uid"} <= set(options)
    ansible.run("ansible-playbook", "--syntax-check", "-i", "localhost,",
                os.path.join(ROOT, "ansible", "playbooks", "vip_runbook.yml"))


def test_info_dry_run_kill_then_nothing(ansible, atopo):
    server, doomed, spared, peers = build(atopo, odd_work=ansible.work)
    expected = cookies(doomed)
    vip = {"dst": [f"{atopo.VIP4}:80", f"[{atopo.VIP6}]:80"], "netns": atopo.namespaces}
    before = {ns: ss_cookies(ns) for ns in atopo.namespaces}

    info, listeners, v6, comms, dry, dry_max = ansible.play([
        {"sockterm.sockterm.sockets_info": dict(vip, executable=ansible.sockterm), "register": "info"},
        {"sockterm.sockterm.sockets_info": {"netns": [atopo.backend], "socket_state": ["listening"],
                                            "executable": ansible.sockterm}},
        {"sockterm.sockterm.sockets_info": dict(vip, family=6, proto="tcp", backend="diag",
                                                executable=ansible.sockterm)},
        {"ansible.builtin.debug": {"msg": "{{ info.sockets | map(attribute='processes') | flatten "
                                          "| map(attribute='comm') | unique | list }}"}},
        {"sockterm.sockterm.sockets": dict(vip, executable=ansible.sockterm), "check_mode": True},
        {"sockterm.sockterm.sockets": dict(vip, max=len(expected) - 1, executable=ansible.sockterm),
         "check_mode": True, "ignore_errors": True},
    ])
    assert not info.get("failed") and not info["changed"], info
    assert info["matched"] == len(expected) == len(info["sockets"])
    assert {s["cookie"] for s in info["sockets"]} == expected
    assert {s["netns_name"] for s in info["sockets"]} == set(atopo.namespaces) - {atopo.backend}
    assert info["command"][1:3] == ["match", "--output=json"]
    assert sorted(s["sport"] for s in listeners["sockets"]) == [80, 80, 81]
    assert {s["state"] for s in listeners["sockets"]} == {"listening"}
    assert v6["matched"] == 2 and {(s["family"], s["proto"]) for s in v6["sockets"]} == {(6, "tcp")}
    assert v6["command"][1] == "--backend=diag"
    # untrusted names come back exactly, and are not evaluated as templates
    assert ODD_COMM in {p["comm"] for s in info["sockets"] for p in s["processes"]}
    assert ODD_COMM in comms["msg"]
    assert dry["changed"] and dry["matched"] == len(expected) and dry["killed"] == 0, dry
    assert dry["command"][1] == "match"
    assert dry_max["failed"] and "max" in dry_max["msg"], dry_max
    assert statuses(doomed) == statuses(spared) == {0}, "a dry run killed something"

    rate = {"rate": 10000} if "--rate" in cli_options("kill") else {}
    kill, again = ansible.play([
        {"sockterm.sockterm.sockets": dict(vip, executable=ansible.sockterm, **rate)},
        {"sockterm.sockterm.sockets": dict(vip, backend="diag", executable=ansible.sockterm)},
    ])
    assert not kill.get("failed") and kill["changed"], kill
    assert kill["matched"] == kill["killed"] == len(expected) and kill["summary"]["failed"] == 0
    assert {s["cookie"] for s in kill["sockets"]} == expected
    assert {s["result"] for s in kill["sockets"]} == {"killed"}
    assert {n["netns_name"] for n in kill["namespaces"] if n["killed"]} == \
        set(atopo.namespaces) - {atopo.backend}
    assert not again.get("failed") and not again["changed"], again
    assert again["rc"] == 1 and again["matched"] == again["killed"] == 0 and again["sockets"] == []

    assert statuses(doomed) == {errno.ECONNABORTED}
    assert statuses(spared) == {0}
    assert set(server.status([p["id"] for p in peers]).values()) == {errno.ECONNRESET}
    after = {ns: ss_cookies(ns) for ns in atopo.namespaces}
    vanished = set().union(*(before[ns] - after[ns] for ns in atopo.namespaces))
    assert expected <= vanished
    assert not vanished - expected - {p["cookie"] for p in peers}


def test_refusals_fail_and_kill_nothing(ansible, atopo):
    server, doomed, spared, peers = build(atopo, clients=1)
    vip = {"dst": [f"{atopo.VIP4}:80"], "netns": atopo.namespaces}
    count = len(cookies(doomed)) - 1          # the v6 connection is not to VIP4
    tasks = [
        {"sockterm.sockterm.sockets": dict(vip, max=count - 1, executable=ansible.sockterm)},
        {"sockterm.sockterm.sockets": dict(vip, backend="diag",
                                           executable=ansible.sockterm_no_net_admin)},
        {"sockterm.sockterm.sockets": {"proto": "tcp", "executable": ansible.sockterm}},
        {"sockterm.sockterm.sockets": dict(vip, executable=os.path.join(ansible.work, "nowhere"))},
        {"sockterm.sockterm.sockets": dict(vip, dst=["not-an-address"], executable=ansible.sockterm)},
    ]
    extra = [opt for opt in ("container", "pod", "cgroup", "uid") if f"--{opt}" in cli_options("kill")]
    for opt in extra:   # options being added to the CLI: passed through when it has them
        tasks.append({"sockterm.sockterm.sockets": dict(vip, **{opt: ["no-such-" + opt]},
                                                        executable=ansible.sockterm)})
    for task in tasks:
        task["ignore_errors"] = True
    over_max, no_cap, untargeted, missing, bad_filter, *passed = ansible.play(tasks)

    assert over_max["failed"] and over_max["killed"] == 0, over_max
    assert f"more than --max {count - 1}" in over_max["msg"] and over_max["rc"] == 3
    assert no_cap["failed"] and "CAP_NET_ADMIN" in no_cap["msg"] and no_cap["killed"] == 0, no_cap
    assert untargeted["failed"] and "naming what to kill" in untargeted["msg"]
    assert "command" not in untargeted        # refused before running anything
    assert missing["failed"] and "not found" in missing["msg"]
    assert bad_filter["failed"] and bad_filter["rc"] == 2 and "sockterm: error:" in bad_filter["msg"]
    for opt, result in zip(extra, passed):
        assert f"--{opt}=no-such-{opt}" in result["command"], result
    assert statuses(doomed) == statuses(spared) == {0}, "a refused run killed something"
