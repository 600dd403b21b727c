"""sockterm's container image, built offline (scripts/image: a base made from
Debian's archive with mmdebstrap, wheels from PyPI, no image registry) and run
with podman as a node debug pod runs it: privileged, in the host's PID and
network namespaces, the host's root at /host. Inside it sockterm must find the
test's namespaces, processes and podman containers, and kill exactly the
test's sockets (seen from the holders and from the host's end).

The first run builds the image from scratch (a few minutes); later runs reuse
it while the inputs' key is unchanged (about a second). Each engine runs where
it loads in the image, and it loads there exactly where it loads on the host.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
import uuid

import pytest

import confine
from sockterm import __version__
from conftest import VIP4, Topology, sh, sockterm
from test_podman import BRIDGE, CONNECTIONS, PODMAN, containers, rootfs  # noqa: F401 (fixtures)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# podman's defaults ask for more than this VM's hard limits allow
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# what `kubectl debug node/X --profile=sysadmin` gives a pod, and README's podman recipe
NODE_DEBUG = ["--privileged", "--pid=host", "--network=host", "--cgroupns=host",
              "-v", "/:/host:ro,rslave"]
MAX_BYTES = 150_000_000


@pytest.fixture(scope="session")
def image():
    env = dict(os.environ, PODMAN=" ".join(PODMAN), PYTHON=sys.executable)
    start = time.monotonic()
    proc = subprocess.run([os.path.join(ROOT, "scripts", "image")], capture_output=True,
                          text=True, env=env, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"\nscripts/image: {time.monotonic() - start:.1f} s; {proc.stderr.strip()}")
    return proc.stdout.split()[-1]


@pytest.fixture(scope="session")
def image_doctor(image):
    code, out, err = in_image(image, "doctor", "-o", "json")
    assert out, err
    return json.loads(out)


@pytest.fixture(params=["bpf", "diag"])
def engine(request, image_doctor):
    """Each engine, where it loads in the image (doctor's verdict says why not)."""
    auto = image_doctor["auto_engine"]
    if request.param == "bpf" and auto["engine"] != "bpf":
        pytest.skip(f"the bpf engine does not load here: {auto['why_not_bpf']}")
    return request.param


def in_image(image, *args, flags=NODE_DEBUG):
    """sockterm run in the image; (code, stdout, stderr). A kill must name this
    session's namespaces with --netns (the same guard as every other test's)."""
    confine.check_kill(args)
    proc = subprocess.run([*PODMAN, "run", "--rm", *LIMITS, *flags, image, "sockterm", *args],
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


class ImageTopology(Topology):
    PREFIX, LINK = "sti", "sti"
    CLIENT4, CLIENT6 = "10.31", "fd31"


def test_image_is_small_with_nothing_but_the_runtime(image):
    size = int(sh(*PODMAN, "image", "inspect", "--format", "{{.Size}}", image).stdout)
    assert size <= MAX_BYTES, f"{image} is {size / 1e6:.0f} MB"
    # no mounts, no privileges: the default command is the help, nothing in the way
    proc = subprocess.run([*PODMAN, "run", "--rm", *LIMITS, image], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("Usage: sockterm"), proc.stderr
    inspect = json.loads(sh(*PODMAN, "image", "inspect", image).stdout)[0]
    assert not inspect["Config"].get("Entrypoint")
    proc = subprocess.run([*PODMAN, "run", "--rm", *LIMITS, image, "sh", "-c",
                           "command -v cc gcc clang pip pip3 apt-get; "
                           "python3 -c 'import llvmlite' 2>/dev/null && echo llvmlite; true"],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout == "", f"a build tool or an unused dependency in the image: {proc.stdout}"
    # sockterm's launcher, as scripts/install writes it: an environment given to
    # the container (podman run -e, a pod spec's env) cannot choose what runs
    proc = subprocess.run([*PODMAN, "run", "--rm", *LIMITS, "-e", "PYTHONPATH=/nonexistent",
                           "-e", "PYTHONHOME=/nonexistent", image, "sh", "-c",
                           "head -n 1 \"$(command -v sockterm)\"; sockterm --version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.stdout.splitlines() == ["#!/opt/sockterm/bin/python3 -IS",
                                        f"sockterm, version {__version__}"], proc.stderr


def test_node_debug_pod_lists_and_kills_exactly_the_test_sockets(image, engine):
    with ImageTopology() as topo:
        backend = topo.holder(topo.with_backend())
        for port in (80, 81):
            backend.call("listen", addr=VIP4, port=port)
        holders = {}
        for i in range(2):
            ns = topo.client(i)
            h = holders[ns] = topo.holder(ns)
            h.doomed = [s["id"] for s in h.call("connect", dst=VIP4, port=80, count=2)]
            h.spared = [s["id"] for s in h.call("connect", dst=VIP4, port=81, count=1)]
        (c0, h0), (c1, h1) = holders.items()

        # the test's namespaces by their ip netns names (the node's /run/netns, under
        # /host), `host` the host's initial namespace, the holders by their pids (the
        # host's PID namespace). Named, not every namespace: other work on a shared
        # host may hold hundreds of thousands of sockets in namespaces of its own
        code, out, err = in_image(image, "--backend", engine, "list", "--netns", c0, "--netns", c1,
                                  "--netns", "host", "--dport", "80,81", "-o", "json")
        assert code == 0, err
        doc = json.loads(out)
        host_ino = os.stat("/proc/2/ns/net").st_ino
        assert {(n["netns_name"], n["netns"]) for n in doc["namespaces"]} == {
            (c0, os.stat(f"/run/netns/{c0}").st_ino), (c1, os.stat(f"/run/netns/{c1}").st_ino),
            ("host", host_ino)}
        seen = {s["cookie"]: s for s in doc["sockets"]}
        for ns, h in holders.items():
            for info in h.call("infos", ids=h.doomed + h.spared):
                sock = seen[info["cookie"]]
                assert sock["netns_name"] == ns, sock
                assert h.pid in [p["pid"] for p in sock["processes"]], sock

        # the kill: c0's connections to :80, nothing else (c0's :81, c1's :80 stay)
        code, out, err = in_image(image, "--backend", engine, "kill", "--netns", c0,
                                  "--dst", f"{VIP4}:80", "--yes", "-o", "json")
        assert code == 0, err
        doc = json.loads(out)
        want = {i["cookie"] for i in h0.call("infos", ids=h0.doomed)}
        assert {s["cookie"] for s in doc["sockets"] if s["result"] == "killed"} == want
        assert doc["summary"]["killed"] == len(want) and doc["summary"]["failed"] == 0
        assert h0.status(h0.doomed) == {i: errno.ECONNABORTED for i in h0.doomed}
        assert h0.status(h0.spared) == {i: 0 for i in h0.spared}
        assert h1.status(h1.doomed + h1.spared) == {i: 0 for i in h1.doomed + h1.spared}


def test_container_names_resolve_inside_the_image(image, engine, containers):  # noqa: F811
    run, listener = containers
    web = run(f"web-{uuid.uuid4().hex[:6]}")
    listener.wait_for(CONNECTIONS)
    want = {"runtime": "podman", "id": web["id"], "name": web["name"]}

    # podman's store, read under /host: the container by name, its sockets only
    code, out, err = in_image(image, "--backend", engine, "match", "--container", web["name"],
                              "-o", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert [s["container"] for s in doc["sockets"]] == [want] * CONNECTIONS
    assert {(s["dst"], s["dport"]) for s in doc["sockets"]} == {(BRIDGE, listener.port)}

    netns = str(os.stat(web["netns"]).st_ino)      # the one namespace this kill may reach
    code, out, err = in_image(image, "--backend", engine, "kill", "--container", web["name"],
                              "--netns", netns, "--yes", "-o", "json")
    assert code == 0, err
    assert json.loads(out)["summary"]["killed"] == CONNECTIONS
    assert listener.states()[web["ip"]] == ["ECONNRESET"] * CONNECTIONS


def test_doctor_in_the_image_says_what_the_host_gives_it(image, image_doctor):
    checks = {c["name"]: c for c in image_doctor["checks"]}
    assert checks["container"]["ok"] is True, checks["container"]
    assert "runtime files read under /host" in checks["container"]["detail"]
    assert checks["libbpf"]["ok"] is True, checks["libbpf"]
    # every verdict the host gets, the image gets (libbpf, the BPF load, netlink...)
    _, host_out, _ = sockterm("doctor", "-o", "json")
    for host_check in json.loads(host_out)["checks"]:
        assert checks[host_check["name"]]["ok"] == host_check["ok"], (checks[host_check["name"]],
                                                                      host_check)

    # a container without the host's PID namespace, nor CAP_BPF: both named
    code, out, err = in_image(image, "doctor", "-o", "json", flags=["--network=host"])
    checks = {c["name"]: c for c in json.loads(out)["checks"]}
    detail = checks["container"]["detail"]
    assert checks["container"]["ok"] is False
    assert "not in the host's PID namespace" in detail and "no CAP_BPF" in detail, detail


def test_without_the_host_pid_namespace_one_line_says_why(image):
    code, out, err = in_image(image, "--backend", "diag", "list", "--dport", "1", "-o", "json",
                              flags=["--privileged", "--network=host"])
    assert code in (0, 1), err
    said = [line for line in err.splitlines() if line.startswith("sockterm:")]
    assert len(said) == 1 and "not in the host's PID namespace" in said[0] \
        and "--pid=host" in said[0], err
    json.loads(out)
