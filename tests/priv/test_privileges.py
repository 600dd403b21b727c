"""Privileges: sockterm run without the capabilities a command needs must
refuse up front, in one line naming the missing capability, exit 3, and
leave every socket as it was (nothing half-done).

Three ways to be short of privileges: root with CAP_NET_ADMIN dropped from
the bounding set (setpriv, and capsh), and an unprivileged user (nobody).
Each prefix is first shown to have dropped what it claims to.

Past sockterm's own check, the kernel refuses too: with the check bypassed,
a diag kill without CAP_NET_ADMIN meets SOCK_DESTROY's EPERM for real, and
must report every socket `no-permission`, exit 3, and leave them alive.
"""

from __future__ import annotations

import errno
import json
import shutil
import sys

import pytest

import confine
from rel_util import RelTopology, cli, loopback_pairs, sh, ss_view

NO_NET_ADMIN = {
    "setpriv": ["setpriv", "--inh-caps=-net_admin", "--bounding-set=-net_admin", "--"],
    "capsh": ["capsh", "--drop=cap_net_admin", "--"],
}
# nobody, with no capability except CAP_DAC_READ_SEARCH: this VM's Python lives
# under /root (mode 0700), which nobody could not even start from otherwise.
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
          "--inh-caps=-all,+dac_read_search", "--ambient-caps=+dac_read_search",
          "--bounding-set=-all,+dac_read_search", "--"]


def _prefix(name):
    if name == "nobody":
        return NOBODY
    prefix = NO_NET_ADMIN[name]
    if not shutil.which(prefix[0]):
        pytest.skip(f"{prefix[0]} not installed")
    if name == "capsh":
        # capsh -- runs /bin/sh with the rest of the arguments: -c 'exec "$0" "$@"'
        return prefix + ["-c", 'exec "$0" "$@"']
    return prefix


def caps(prefix, field="CapEff") -> int:
    out = sh(*prefix, "cat", "/proc/self/status").stdout
    return int(next(l for l in out.splitlines() if l.startswith(field + ":")).split()[1], 16)


def cap_eff(prefix) -> int:
    return caps(prefix)


@pytest.fixture(scope="module")
def victim():
    with RelTopology() as topo:
        ns, h, conns, listener = loopback_pairs(topo, "priv", 7700)
        yield ns, h, conns + [listener]


@pytest.mark.parametrize("how", ["setpriv", "capsh"])
def test_prefixes_really_drop_the_capability(how):
    for field in ("CapEff", "CapPrm", "CapBnd"):
        mask = caps(_prefix(how), field)
        assert mask >> 12 & 1 == 0, (how, field, hex(mask))   # no CAP_NET_ADMIN
        assert mask >> 21 & 1 == 1, (how, field, hex(mask))   # still CAP_SYS_ADMIN
    assert caps(_prefix(how), "CapAmb") == 0


def test_nobody_has_only_dac_read_search():
    assert cap_eff(NOBODY) == 1 << 2                        # CAP_DAC_READ_SEARCH only
    assert sh(*NOBODY, "id", "-u").stdout.strip() == "65534"


@pytest.mark.parametrize("backend", ["auto", "bpf", "diag"])
@pytest.mark.parametrize("how", ["setpriv", "capsh", "nobody"])
def test_kill_without_privileges_refuses(victim, how, backend):
    ns, h, ids = victim
    for args in (["kill", "--yes", "--netns", ns, "--dport", "7700"],
                 ["kill", "--yes", "--netns", ns, "--sport", "7700", "--state", "all",
                  "--max", "10"],
                 ["kill", "--yes", "--dst", "127.0.0.1", "-o", "json"]):
        # the last one names no namespace: confined, it can reach no socket of the host
        prefix = _prefix(how) if "--netns" in args else confine.prefix([ns]) + _prefix(how)
        code, out, err = cli("--backend", backend, *args, prefix=prefix)
        lines = [l for l in err.strip().splitlines() if l.strip()]
        assert "Traceback" not in err
        assert code == 3, (how, args, code, err)
        assert len(lines) == 1, err
        wanted = "CAP_NET_ADMIN" if how != "nobody" else "CAP_"
        assert wanted in lines[0], lines[0]
        assert out == "" or not json.loads(out).get("sockets"), out
    assert set(h.status(ids).values()) == {0}, "a socket died in a refused run"


@pytest.mark.parametrize("backend", ["bpf", "diag"])
def test_list_needs_no_net_admin(victim, backend):
    ns, h, ids = victim
    code, out, err = cli("--backend", backend, "list", "--netns", ns, "-o", "json",
                         prefix=_prefix("setpriv"))
    assert code == 0, err
    assert len(json.loads(out)["sockets"]) == 5


@pytest.mark.parametrize("command", ["list", "match"])
def test_unprivileged_list_searches_its_own_namespace(command):
    """As ss does: the caller's own namespace, and a note that the others need
    root (test_where_it_runs.py checks what it lists)."""
    code, out, err = cli(command, "--no-processes", prefix=NOBODY)
    lines = [l for l in err.strip().splitlines() if l.strip()]
    assert code in (0, 1), err
    assert "other network namespaces need root" in lines[0] and len(lines) == 2, err
    assert "Traceback" not in err


# sockterm's capability check, bypassed: the kernel is then the one to refuse
BYPASS = [sys.executable, "-c",
          "import sys; from sockterm.host import probe; real = probe.effective_caps; "
          "probe.effective_caps = lambda: real() | {'CAP_NET_ADMIN'}; "
          "from sockterm.cli import main; sys.argv[0] = 'sockterm'; main()"]


def test_kernel_refuses_sock_destroy_without_net_admin(victim):
    ns, h, ids = victim
    before = ss_view([ns])
    argv = [*_prefix("setpriv"), *BYPASS, "--backend", "diag", "kill", "--yes", "--netns", ns,
            "--sport", "7700", "--state", "all", "-o", "json"]
    confine.check_kill(argv[argv.index("--backend"):])
    proc = sh(*argv, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    doc = json.loads(proc.stdout)
    assert proc.returncode == 3, proc.stderr
    got = {s["cookie"]: (s["result"], s["error"]) for s in doc["sockets"]}
    want = {c for c, s in before.items() if s.sport == 7700}
    assert set(got) == want and len(want) == 3, (got, before)
    assert set(got.values()) == {("no-permission", "EPERM")}
    assert doc["summary"]["killed"] == 0 and doc["summary"]["failed"] == 3
    assert set(h.status(ids).values()) == {0}
    assert ss_view([ns]) == before
