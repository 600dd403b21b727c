"""Hostile runtime files (no root needed): the parsers of what container
runtimes leave on a node — docker's config.v2.json, podman's
containers.json, the kubelet's directory and log names, /proc/PID/cgroup
paths, a container's /etc/hostname — take any bytes and return a name or
nothing. They never raise: random bytes, nesting deeper than Python's stack
(json.loads raises RecursionError there), huge strings, invalid UTF-8, NUL.
A name that parses is kept exactly (JSON output is exact) and text.shown()
leaves no control character in it (terminals).

SOCKTERM_LONG=1 raises hypothesis's example count tenfold; SOCKTERM_SEED=N
reproduces a run.
"""

from __future__ import annotations

import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as S

from seeding import seeded
from sockterm.host import containers as C, runtimes as R
from sockterm.text import shown

LONG = os.environ.get("SOCKTERM_LONG", "") not in ("", "0")
EXAMPLES = 2000 if LONG else 200
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

HEX = "0123456789abcdef"
ID = "ab" * 32
DEPTH = 50_000              # far past any Python's recursion limit (json's C scanner obeys it)
HUGE = 100_000


def _mutated(data: bytes, draw) -> bytes:
    """A few bytes of `data` replaced, inserted or cut: almost-valid input."""
    out = bytearray(data)
    for _ in range(draw(S.integers(0, 4))):
        op = draw(S.sampled_from(("set", "insert", "cut")))
        at = draw(S.integers(0, len(out)))
        byte = draw(S.sampled_from((0, 0xFF, 0xC0, 0xED, 0x80, ord('"'), ord("\\"), ord("["),
                                    ord("{"), ord("\n"), 0x1B)))
        if op == "insert" or at == len(out):
            out.insert(at, byte)
        elif op == "set":
            out[at] = byte
        else:
            del out[at:at + draw(S.integers(1, 16))]
    return bytes(out)


json_values = S.recursive(
    S.none() | S.booleans() | S.integers() | S.floats(allow_nan=False) | S.text(max_size=20),
    lambda inner: S.lists(inner, max_size=4) | S.dictionaries(S.text(max_size=8), inner, max_size=4),
    max_leaves=20)
names = S.text(max_size=30)        # any code points, control characters and surrogates included


@S.composite
def podman_stores(draw) -> bytes:
    entry = S.fixed_dictionaries({"id": S.sampled_from((ID, 7, None)) | S.text(HEX, max_size=64),
                                  "names": S.lists(names, max_size=2) | json_values})
    store = draw(S.lists(entry | json_values, max_size=4) | json_values)
    return json.dumps(store).encode()


@S.composite
def docker_configs(draw) -> bytes:
    doc = {"ID": ID, "Name": draw(S.sampled_from(("/", "", "//"))) + draw(names),
           "MountPoints": {"/d": {"Name": draw(names)}}, "Config": draw(json_values)}
    return json.dumps(doc, ensure_ascii=draw(S.booleans())).encode("utf-8", "surrogatepass")


@S.composite
def hostile_bytes(draw, valid) -> bytes:
    kind = draw(S.sampled_from(("random", "valid", "mutated", "deep", "huge", "nul")))
    if kind == "random":
        return draw(S.binary(max_size=200))
    if kind == "valid":
        return draw(valid)
    if kind == "mutated":
        return _mutated(draw(valid), draw)
    if kind == "deep":
        opener = draw(S.sampled_from((b"[", b'{"a":', b'[{"id":"x","names":')))
        return draw(S.sampled_from((b"", b'[{"names":'))) + opener * DEPTH
    if kind == "huge":
        body = draw(S.sampled_from((b"x", b"\\", b"\xff", b"\\u0000", b"\x00")))
        return (b'[{"id":"' + ID.encode() + b'","names":["' + body * HUGE + b'"]}], "Name": "/'
                + body * HUGE + b'"')
    return draw(valid).replace(b'"', b'"\x00', draw(S.integers(0, 3)))


def _name_ok(name) -> None:
    assert name is None or isinstance(name, str)
    if name:     # shown() works character by character: a prefix of a huge name says as much
        assert not any(c in shown(name[:4096]) for c in "\x00\x1b\x07\n\r\x9b\u202e")


@seeded
@fuzz
@given(data=hostile_bytes(podman_stores()))
def test_podman_store_parser_never_raises(data):
    got = R.podman_names(data)
    assert isinstance(got, dict)
    for cid, name in got.items():
        assert isinstance(cid, str)
        _name_ok(name)


@seeded
@fuzz
@given(name=names)
def test_podman_names_are_kept_exactly(name):
    store = json.dumps([{"id": ID, "names": [name, "other"]}]).encode()
    assert R.podman_names(store) == {ID: name}


@seeded
@fuzz
@given(data=hostile_bytes(docker_configs()))
def test_docker_config_parser_never_raises(data):
    _name_ok(R.docker_name(data))


@seeded
@fuzz
@given(name=names.filter(lambda n: n != ""))
def test_docker_names_are_kept_exactly(name):
    doc = {"MountPoints": {"/d": {"Name": "vol"}}, "Name": "/" + name}
    assert R.docker_name(json.dumps(doc).encode()) == name


@seeded
@fuzz
@given(data=hostile_bytes(S.text(max_size=80).map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_hostname_parser_never_raises(data):
    name = R.hostname_line(data)
    _name_ok(name)
    assert name is None or ("\n" not in name and "\0" not in name and name == name.strip())


entry_names = S.text(max_size=120) | S.builds(
    lambda a, b, c, cid, ext: f"{a}_{b}_{c}-{cid}{ext}",
    names, names, names, S.sampled_from((ID, "x" * 64, "")), S.sampled_from((".log", "", ".log.1")))


@seeded
@fuzz
@given(entry=entry_names | S.binary(max_size=80).map(lambda b: b.decode("utf-8", "surrogateescape")))
def test_kubelet_entry_parsers_never_raise(entry):
    pod = R.kube_pod_entry(entry)
    assert pod is None or (len(pod) == 2 and len(pod[1]) == 2 and "_".join((*pod[1], pod[0])) == entry)
    found = R.kube_container_entry(entry)
    if found is not None:
        cid, (pod_name, namespace, container) = found
        assert entry == f"{pod_name}_{namespace}_{container}-{cid}.log" and len(cid) == 64


PARTS = ("docker", "system.slice", "user.slice", "user-1000.slice", "kubepods", "kubepods.slice",
         f"pod{ID[:8]}-{ID[:4]}-{ID[:4]}-{ID[:4]}-{ID[:12]}", f"docker-{ID}.scope", ID,
         f"libpod-{ID}", f"libpod-conmon-{ID}", f"crio-{ID}", f"cri-containerd-{ID}.scope",
         "lxc", "lxc.payload.db", "lxc.monitor.db", "machine-a\\x2db.scope",
         "systemd-nspawn@x.service", "", "..", "\x00", "\udcff", "\\x", "\\xzz", "\n")


@S.composite
def cgroup_texts(draw) -> str:
    lines = []
    for _ in range(draw(S.integers(0, 4))):
        head = draw(S.sampled_from(("0::", "1:pids:", "2:name=systemd:", "", "x:")))
        parts = draw(S.lists(S.sampled_from(PARTS) | S.text(max_size=12), max_size=8))
        lines.append(head + "/" + "/".join(parts))
    return "\n".join(lines)


@seeded
@fuzz
@given(text=cgroup_texts() | S.binary(max_size=300).map(lambda b: b.decode("utf-8", "surrogateescape"))
       | S.just("0::/" + "/".join([f"docker-{ID}.scope"] + ["a"] * 50_000)))
def test_cgroup_parser_never_raises(text):
    found = R.parse_cgroup(text)
    if found is None or found is R.HELPER:
        return
    assert found.runtime in (None, "docker", "containerd", "cri-o", "podman", "lxc", "machined")
    assert found.id is not None or found.pod_uid is not None
    paths = [line.split(":", 2)[-1] for line in text.splitlines()]
    assert not found.cgroup or any(p.startswith(found.cgroup) for p in paths)
    _name_ok(found.id)


@seeded
@settings(max_examples=EXAMPLES // 8, deadline=None, suppress_health_check=list(HealthCheck))
@given(config=hostile_bytes(docker_configs()), store=hostile_bytes(podman_stores()),
       hostname=S.binary(max_size=100), cgroup=S.binary(max_size=200))
def test_a_node_of_hostile_files_never_raises(config, store, hostname, cgroup):
    """The same bytes where a node keeps them, read and placed end to end."""
    with tempfile.TemporaryDirectory() as tmp:
        root, proc = os.path.join(tmp, "root"), os.path.join(tmp, "proc")
        for path, data in ((f"{root}/{R.DOCKER_DIR}/{ID}/config.v2.json", config),
                           (f"{root}/{R.PODMAN_STORE}", store),
                           (f"{proc}/1/root/etc/hostname", hostname),
                           (f"{proc}/2/root/etc/hostname", hostname),
                           (f"{proc}/3/root/etc/hostname", hostname),
                           (f"{proc}/1/cgroup", f"0::/system.slice/docker-{ID}.scope\n".encode()),
                           (f"{proc}/2/cgroup", f"0::/machine.slice/libpod-{ID}.scope\n".encode()),
                           (f"{proc}/3/cgroup", cgroup)):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        node = C.Node(root=root, proc=proc)
        for pid in (1, 2, 3):
            place = node.place_of(pid)
            if place is not None:
                _name_ok(place.label)
