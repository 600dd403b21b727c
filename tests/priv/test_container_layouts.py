"""Kubernetes, docker, CRI-O and systemd-unit nodes as they really are laid
out: cgroups in this host's hierarchy named as each runtime names them, real
processes in them (a pod is a pause process and its containers in one
namespace), the runtimes' files in a throwaway tree (SOCKTERM_ROOT_PREFIX).
Every check is made from outside: socket cookies from the holders and `ss`,
the applications' errno after a kill."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest

from conftest import sh, sockterm
from node_util import V1_PIDS, V2, Cgroups, Files, hex64, pairs, sleeper


@pytest.fixture
def node(topo, tmp_path):
    """(cgroups, files, env): torn down before the topology, so every process
    is still alive to be moved out of the cgroups."""
    cg = Cgroups()
    procs = []
    root = str(tmp_path / "root")
    os.makedirs(root)
    env = {"SOCKTERM_ROOT_PREFIX": root}
    try:
        yield cg, Files(root), env, procs
    finally:
        cg.cleanup()
        for p in procs:
            p.kill()
            p.wait()


def run_json(env, *args):
    code, out, err = sockterm(*args, "-o", "json", env=env)
    assert out, f"exit {code}: {err}"
    return code, json.loads(out), err


def cookies(infos) -> set:
    return {i["cookie"] for i in infos}


def ns_view(netns: str) -> dict:
    """cookie -> (uid, cgroup path) as `ss` sees them (nsenter keeps the host's /sys)."""
    out = sh("nsenter", f"--net=/run/netns/{netns}", "ss", "-tuanHe", "--cgroup").stdout
    found = {}
    for line in out.splitlines():
        words = line.split()
        cookie = next((int(w[3:], 16) for w in words if w.startswith("sk:")), None)
        if cookie is None:
            continue
        uid = next((int(w[4:]) for w in words if w.startswith("uid:")), 0)
        cgroup = next((w[7:] for w in words if w.startswith("cgroup:")), "")
        found[cookie] = (uid, cgroup)
    return found


def build_pod(topo, cg, files, procs, *, runtime: str, driver: str):
    """A pod: pause, app and sidecar in one namespace; plus a process made in
    the sidecar's cgroup and moved into the app's afterwards, so its sockets
    were created by one container and are held by the other."""
    tag = topo.tag
    kns, pod, uid = f"shop-{tag}", f"cart-{tag}", str(uuid.uuid4())
    ids = {"pause": hex64(), "app": hex64(), "sidecar": hex64()}
    if driver == "systemd":
        base = (f"kubepods.slice/kubepods-burstable.slice/"
                f"kubepods-burstable-pod{uid.replace('-', '_')}.slice")
        unit = {"containerd": "cri-containerd-{}.scope", "cri-o": "crio-{}.scope"}[runtime]
    else:
        base = f"kubepods/besteffort/pod{uid}"
        unit = {"containerd": "{}", "cri-o": "crio-{}"}[runtime]
    paths = {name: f"{base}/{unit.format(cid)}" for name, cid in ids.items()}
    files.kubelet(kns, pod, uid, {"app": ids["app"], "sidecar": ids["sidecar"]})
    if runtime == "cri-o":
        os.makedirs(os.path.join(files.root, "run/crio"), exist_ok=True)
    ns = topo.ns("pod")
    pause = sleeper(ns)
    procs.append(pause)
    cg.move(pause.pid, paths["pause"])
    app, side, mover = topo.holder(ns), topo.holder(ns), topo.holder(ns)
    cg.move(app.pid, paths["app"])
    cg.move(side.pid, paths["sidecar"])
    cg.move(mover.pid, paths["sidecar"])
    sockets = {}
    conns, acc, lst = pairs(side, 8080, 2, server=app)       # sidecar -> app
    sockets["app"] = cookies(acc) | {lst["cookie"]}
    sockets["sidecar"] = cookies(conns)
    mconns, macc, mlst = pairs(mover, 9090, 1, server=mover)
    sockets["moved"] = cookies(mconns) | cookies(macc) | {mlst["cookie"]}
    sockets["listeners"] = {lst["cookie"], mlst["cookie"]}
    cg.move(mover.pid, paths["app"])                          # created by sidecar, held by app
    return {"ns": ns, "kns": kns, "pod": pod, "uid": uid, "ids": ids, "paths": paths,
            "sockets": sockets, "holders": {"app": app, "sidecar": side, "mover": mover},
            "infos": {"sidecar": conns, "app": acc, "moved": mconns + macc}}


@pytest.mark.parametrize("runtime,driver", [("containerd", "systemd"), ("containerd", "cgroupfs"),
                                            ("cri-o", "systemd"), ("cri-o", "cgroupfs")])
def test_kubernetes_pod_attribution_and_selection(topo, node, runtime, driver):
    cg, files, env, procs = node
    p = build_pod(topo, cg, files, procs, runtime=runtime, driver=driver)
    everything = set(ns_view(p["ns"]))
    assert set().union(*p["sockets"].values()) <= everything

    code, doc, err = run_json(env, "list", "--netns", p["ns"])
    assert code == 0, err
    [nsdoc] = doc["namespaces"]
    label = f"{p['kns']}/{p['pod']}"
    assert nsdoc["netns_name"] == label and nsdoc["container"] is None
    assert nsdoc["pod"] == {"namespace": p["kns"], "name": p["pod"], "uid": p["uid"]}
    by_cookie = {s["cookie"]: s for s in doc["sockets"]}
    for s in doc["sockets"]:
        assert s["netns_name"] == label and s["pod"]["uid"] == p["uid"]
    for cookie in p["sockets"]["app"] | p["sockets"]["moved"]:     # held by the app's processes
        assert by_cookie[cookie]["container"] == {"runtime": runtime, "id": p["ids"]["app"],
                                                  "name": "app"}
    for cookie in p["sockets"]["sidecar"]:
        assert by_cookie[cookie]["container"]["name"] == "sidecar"
    # --netns takes the pod's name too
    assert {s["cookie"] for s in run_json(env, "list", "--netns", label)[1]["sockets"]} == everything

    # the pod: its whole namespace; a container: what it holds or created
    for engine in ("bpf", "diag"):
        got = run_json(env, "--backend", engine, "list", "--pod", label)[1]
        assert {s["cookie"] for s in got["sockets"]} == everything, engine
        assert run_json(env, "--backend", engine, "list", "--pod", p["pod"])[1]["sockets"] == got["sockets"]
        app = run_json(env, "--backend", engine, "list", "--container", "app", "--netns", p["ns"])[1]
        assert {s["cookie"] for s in app["sockets"]} == p["sockets"]["app"] | p["sockets"]["moved"]
        side = run_json(env, "--backend", engine, "list", "--container", "sidecar",
                        "--pod", label)[1]
        assert {s["cookie"] for s in side["sockets"]} == p["sockets"]["sidecar"] | p["sockets"]["moved"]
        by_id = run_json(env, "--backend", engine, "list", "--container", p["ids"]["sidecar"][:10],
                         "--netns", p["ns"])[1]
        assert by_id["sockets"] == side["sockets"]
        # the sidecar's cgroup: what was created there, wherever it is held now
        cgroup = "/" + p["paths"]["sidecar"]
        made = run_json(env, "--backend", engine, "list", "--cgroup", cgroup)[1]
        assert {s["cookie"] for s in made["sockets"]} == p["sockets"]["sidecar"] | p["sockets"]["moved"]
        assert {c for c, (_, path) in ns_view(p["ns"]).items() if path == cgroup} == \
            p["sockets"]["sidecar"] | p["sockets"]["moved"]


@pytest.mark.parametrize("engine", ["bpf", "diag"])
def test_kill_one_container_of_a_pod(topo, node, engine):
    cg, files, env, procs = node
    p = build_pod(topo, cg, files, procs, runtime="containerd", driver="systemd")
    label = f"{p['kns']}/{p['pod']}"
    code, doc, err = run_json(env, "--backend", engine, "kill", "--container", "sidecar",
                              "--pod", label, "--netns", p["ns"], "--yes")
    assert code == 0, err
    # connected sockets the sidecar holds or created (listeners only on request);
    # the moved loopback pair's second end may be reset by the first's destroy
    # before its own turn: reported gone, or not at all
    moved = p["sockets"]["moved"] - p["sockets"]["listeners"]
    results = {s["cookie"]: s["result"] for s in doc["sockets"]}
    killed = {c for c, r in results.items() if r == "killed"}
    assert set(results) <= p["sockets"]["sidecar"] | moved, results
    assert p["sockets"]["sidecar"] <= killed and killed & moved, results
    assert set(results.values()) <= {"killed", "gone"}, results
    assert set(p["holders"]["sidecar"].status().values()) == {errno.ECONNABORTED}
    mover = sorted(p["holders"]["mover"].status().values())     # listener, client, accepted
    assert mover in (sorted([0, errno.ECONNRESET, errno.ECONNABORTED]),
                     [0, errno.ECONNABORTED, errno.ECONNABORTED]), mover
    app = p["holders"]["app"].status()
    accepted = {i["id"] for i in p["infos"]["app"]}
    assert {app[i] for i in accepted} == {errno.ECONNRESET}     # the peers of what was killed
    assert {app[i] for i in app if i not in accepted} == {0}     # the app's listener untouched
    assert set(ns_view(p["ns"])) == p["sockets"]["listeners"]


@pytest.mark.parametrize("driver", ["systemd", "cgroupfs-v1"])
def test_docker_container(topo, node, driver):
    cg, files, env, procs = node
    cid, name = hex64(), f"web-{topo.tag}"
    files.docker(cid, name)
    ns = topo.ns("dk")
    h = topo.holder(ns)
    if driver == "systemd":
        cg.move(h.pid, f"system.slice/docker-{cid}.scope")
    else:   # cgroupfs on a hybrid host: only the v1 hierarchies know the container
        cg.move(h.pid, f"docker/{cid}", base=V1_PIDS)
    conns, acc, lst = pairs(h, 8080, 2)
    mine = cookies(conns) | cookies(acc) | {lst["cookie"]}
    code, doc, err = run_json(env, "list", "--netns", ns)
    assert code == 0, err
    assert doc["namespaces"][0]["container"] == {"runtime": "docker", "id": cid, "name": name}
    assert doc["namespaces"][0]["netns_name"] == name and doc["namespaces"][0]["pod"] is None
    assert all(s["container"]["id"] == cid and s["netns_name"] == name for s in doc["sockets"])
    for engine in ("bpf", "diag"):
        for sel in (name, cid, cid[:4], cid[:12]):
            got = run_json(env, "--backend", engine, "list", "--container", sel)[1]
            assert {s["cookie"] for s in got["sockets"]} == mine, (engine, sel)
    # the table and tsv show the namespace by the container's name
    code, out, err = sockterm("list", "--container", name, "-o", "tsv", "-H", env=env)
    assert {line.split("\t")[0] for line in out.splitlines()} == {name}


def test_unknown_and_ambiguous_containers_are_usage_errors(topo, node):
    cg, files, env, procs = node
    ns = topo.ns("amb")
    for i in range(2):
        cid = "abcd" + hex64()[4:]
        files.docker(cid, f"amb{i}-{topo.tag}")
        p = sleeper(ns)
        procs.append(p)
        cg.move(p.pid, f"system.slice/docker-{cid}.scope")
    for args, text in ((["--container", "abcd"], "ambiguous"),
                       (["--container", f"nope-{topo.tag}"], "no running container"),
                       (["--container", "abc"], "at least 4"),
                       (["--pod", f"nope/{topo.tag}"], "no pod"),
                       (["--cgroup", f"nope-{topo.tag}.service"], "no cgroup")):
        code, out, err = sockterm("kill", *args, "--netns", ns, "--yes", env=env)
        assert code == 2 and out == "", (args, err)
        assert text in err and err.count("\n") == 1, err


def test_systemd_unit_by_name_agrees_with_ss(topo, node):
    cg, files, env, procs = node
    unit = f"stc-{topo.tag}.service"
    ns = topo.ns("unit")
    h, other = topo.holder(ns), topo.holder(ns)
    cg.move(h.pid, f"system.slice/{unit}")
    conns, acc, lst = pairs(h, 8080, 3, server=other)
    ss_ids = {c for c, (_, path) in ns_view(ns).items() if path == f"/system.slice/{unit}"}
    assert ss_ids == cookies(conns)
    ss_filter = sh("nsenter", f"--net=/run/netns/{ns}", "ss", "-tanHe", "cgroup",
                   f"/system.slice/{unit}").stdout
    assert {int(w[3:], 16) for w in ss_filter.split() if w.startswith("sk:")} == ss_ids
    for engine in ("bpf", "diag"):
        for sel in (unit, f"/system.slice/{unit}", f"{V2}/system.slice/{unit}", "system.slice"):
            got = run_json(env, "--backend", engine, "list", "--cgroup", sel, "--netns", ns)[1]
            assert {s["cookie"] for s in got["sockets"]} == ss_ids, (engine, sel)


def test_host_network_container_keeps_the_host_namespace(topo, node):
    """A container in the host's namespace: its sockets are its own, the
    namespace stays the host's, and --container never takes it whole."""
    cg, files, env, procs = node
    cid, name = hex64(), f"hostnet-{topo.tag}"
    files.docker(cid, name)
    p = subprocess.Popen([sys.executable, "-c", (
        "import socket,sys,time\n"
        "sys.stdin.readline()\n"
        "s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True); time.sleep(600)")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    procs.append(p)
    cg.move(p.pid, f"system.slice/docker-{cid}.scope")
    p.stdin.write("go\n")
    p.stdin.flush()
    port = int(p.stdout.readline())
    for engine in ("bpf", "diag"):
        code, doc, err = run_json(env, "--backend", engine, "list", "--container", name)
        assert code == 0, err
        assert [(s["sport"], s["state"], s["netns_name"]) for s in doc["sockets"]] == \
            [(port, "listening", "host")]
        assert doc["sockets"][0]["container"]["name"] == name
        assert [n["netns_name"] for n in doc["namespaces"]] == ["host"]
        assert doc["namespaces"][0]["container"] is None


def test_hostile_hostname_is_exact_in_json_and_escaped_on_terminals(topo, node, tmp_path):
    """A container without runtime files is named by its hostname, which the
    container itself writes: escape sequences must never reach a terminal."""
    cg, files, env, procs = node
    files.docker_present()
    evil = "evil\x1b]0;pwned\x07\x1b[2J\u202ename"
    rootfs = tmp_path / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "etc").mkdir()
    (rootfs / "etc" / "hostname").write_text(evil + "\n")
    shutil.copy(shutil.which("busybox") or "/bin/busybox", rootfs / "bin" / "busybox")
    ns = topo.ns("evil")
    p = subprocess.Popen(["ip", "netns", "exec", ns, "chroot", str(rootfs), "/bin/busybox", "nc",
                          "-l", "-p", "8081"], stdin=subprocess.DEVNULL)
    procs.append(p)
    cid = hex64()
    cg.move(p.pid, f"system.slice/docker-{cid}.scope")
    for _ in range(100):
        if ns_view(ns):
            break
        time.sleep(0.05)
    code, doc, err = run_json(env, "list", "--netns", ns)
    assert code == 0, err
    assert doc["namespaces"][0]["container"]["name"] == evil
    assert doc["sockets"][0]["netns_name"] == evil
    for fmt in ("tsv", "table"):
        code, out, err = sockterm("list", "--netns", ns, "-o", fmt, env=dict(env, COLUMNS="200"))
        assert code == 0 and "\x1b" not in out and "\x07" not in out, repr(out)
        assert "\x1b" not in err and "\x07" not in err
    code, out, err = sockterm("list", "--container", evil, "-o", "tsv", env=env)
    assert code == 0 and "8081" in out


def test_no_runtime_costs_nothing_and_names_nothing(topo, node, tmp_path):
    cg, files, env, procs = node          # the root has no runtime files at all
    ns = topo.ns("none")
    h = topo.holder(ns)
    cg.move(h.pid, f"system.slice/docker-{hex64()}.scope")
    pairs(h, 8080, 1)
    code, doc, err = run_json(env, "list", "--netns", ns)
    assert code == 0, err
    assert doc["namespaces"][0]["container"] is None and doc["namespaces"][0]["netns_name"] != ""
    assert all(s["container"] is None and s["pod"] is None for s in doc["sockets"])


def test_completion_offers_the_containers_and_pods_here(topo, node):
    cg, files, env, procs = node
    p = build_pod(topo, cg, files, procs, runtime="containerd", driver="systemd")
    cid = hex64()
    files.docker(cid, f"web-{topo.tag}")
    s = sleeper(topo.ns("web"))
    procs.append(s)
    cg.move(s.pid, f"system.slice/docker-{cid}.scope")

    def complete(words):
        full = dict(os.environ, **env, COMP_WORDS=words, COMP_CWORD=str(len(words.split(" ")) - 1),
                    _SOCKTERM_COMPLETE="bash_complete")
        proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "sockterm"],
                              capture_output=True, text=True, env=full, timeout=60)
        assert proc.returncode == 0, proc.stderr
        heavy = [line for line in proc.stderr.splitlines()
                 if any(m in line for m in ("pyroute2", "pylibbpf", "elftools", "sockterm.engine",
                                            "sockterm.core"))]
        assert not heavy, heavy
        return [line.split(",", 1)[1] for line in proc.stdout.splitlines() if line.startswith("plain,")]

    assert f"web-{topo.tag}" in complete("sockterm kill --container web-")
    assert "sidecar" in complete("sockterm list --container ")
    assert complete(f"sockterm list --container {cid[:5]}") == [cid[:12]]
    assert complete(f"sockterm kill --pod shop-{topo.tag}/") == [f"shop-{topo.tag}/cart-{topo.tag}"]
    assert complete("sockterm list --cgroup /system.sl") == ["/system.slice"]
    assert p["ns"]
