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
    for name in ("BTF", "socket iterators", "bpf_sock_destroy", "capabilities", "libbpf",
                 "BPF object", "BPF load", "tcp diag", "udp diag", "diag destroy"):
        assert checks[name]["ok"] is True, checks[name]
    digest = hashlib.sha256(open(object_path(), "rb").read()).hexdigest()
    assert digest[:16] in checks["BPF object"]["detail"]
    assert checks["auto engine"]["detail"].startswith("bpf")


def test_doctor_text_is_one_screen():
    code, out, err = sockterm("doctor")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) < 25 and lines[-1].startswith("sockterm can kill")
