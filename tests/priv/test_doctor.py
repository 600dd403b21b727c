"""`sockterm doctor` on this host: every check real, the verdict right."""

import hashlib
import json

from conftest import sockterm
from sockterm.engine.bpf.engine import object_path


def test_doctor_says_this_host_can_kill():
    code, out, err = sockterm("doctor", "-o", "json")
    assert code == 0, out + err
    doc = json.loads(out)
    checks = {c["name"]: c for c in doc["checks"]}
    assert doc["can_kill"] is True
    for name in ("BTF", "capabilities", "libbpf", "BPF object", "enumerate", "one pass",
                 "destroy in kernel", "tcp diag", "udp diag", "destroy by netlink"):
        assert checks[name]["ok"] is True, checks[name]
    digest = hashlib.sha256(open(object_path(), "rb").read()).hexdigest()
    assert digest[:16] in checks["BPF object"]["detail"]
    assert checks["auto engine"]["detail"].startswith("bpf")


def test_doctor_text_is_one_screen():
    code, out, err = sockterm("doctor")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) < 30 and lines[-1].startswith("sockterm can kill")
    assert all(line == line.rstrip() for line in lines)      # no padding to the table width


def test_doctor_reports_caveats_hash_tables_and_auto():
    """The JSON keeps its keys and grows: the engine auto picks, the kernel
    caveats the man page lists that apply to this kernel, the hash tables."""
    import os
    from sockterm.host import caveats
    code, out, err = sockterm("doctor", "-o", "json")
    doc = json.loads(out)
    assert {"can_kill", "checks", "auto_engine", "caveats", "hash_tables"} <= set(doc)
    assert doc["auto_engine"] == {"engine": "bpf", "why_not_bpf": None}
    expected = [c.ident for c, _ in caveats.applicable(os.uname().release)]
    assert [c["id"] for c in doc["caveats"]] == expected
    for c in doc["caveats"]:
        assert c["auto"] and c["fixed_in"] and c["verdict"] in ("affected", "unknown")
    names = {c["name"] for c in doc["checks"]}
    assert {f"caveat {i}" for i in expected} <= names and "hash tables" in names
    tables = doc["hash_tables"]
    with open("/proc/sys/net/ipv4/tcp_child_ehash_entries") as f:
        child = int(f.read())
    assert tables["sysctls"]["net.ipv4.tcp_child_ehash_entries"] == child
    assert tables["shared"] is (child == 0 and tables["sysctls"]["net.ipv4.udp_child_hash_entries"] == 0)
    assert tables["walk_ms"] > 0 and tables["namespaces"] >= tables["namespaces_sharing"] >= 0
    assert tables["saving_ms"] >= 0
