"""`sockterm doctor`: what works on this host, and why not. Each check is
real (the object is loaded, netlink is asked), so its verdict can be trusted."""

from __future__ import annotations

from dataclasses import dataclass

from .host import probe


@dataclass
class Check:
    name: str
    ok: bool | None          # None: informational
    detail: str


def _bpf_load(kill: bool) -> str:
    """'' when the object loads and its iterators attach, else why not."""
    from .engine import EngineError, Scope
    from .engine.bpf.engine import BpfEngine
    from .filter import build_filter
    engine = BpfEngine(flt=build_filter(), scope=Scope(), kill=kill)
    try:
        engine.open()
    except EngineError as exc:
        return str(exc)
    finally:
        engine.close()
    return ""


def _diag_checks(host) -> list[Check]:
    try:
        from .engine.diag import engine as diag
        tcp, udp, destroy = diag.probe()
    except Exception as exc:       # a broken netlink stack is a finding, not a crash
        return [Check("sock_diag", False, f"{type(exc).__name__}: {exc}")]
    return [Check("tcp diag", tcp == "", tcp or "NETLINK_SOCK_DIAG dumps TCP sockets"),
            Check("udp diag", udp == "", udp or "NETLINK_SOCK_DIAG dumps UDP sockets"),
            Check("diag destroy", destroy == "", destroy or "SOCK_DESTROY works (CONFIG_INET_DIAG_DESTROY)")]


def run() -> tuple[list[Check], bool]:
    """All checks, and whether sockterm can kill on this host."""
    from .engine.bpf import libbpf, objinfo
    from .engine.bpf.engine import object_path
    host = probe.probe()
    checks = [Check("kernel", None, host.kernel)]
    checks.append(Check("BTF", host.btf, probe.VMLINUX_BTF if host.btf else
                        "missing: the kernel needs CONFIG_DEBUG_INFO_BTF"))
    checks.append(Check("socket iterators", host.bpf_can_list,
                        "iter/tcp and iter/udp" if host.bpf_can_list else "missing (Linux >= 5.9)"))
    checks.append(Check("bpf_sock_destroy", host.bpf_can_kill,
                        "kfunc present" if host.bpf_can_kill else "missing (Linux >= 6.5)"))
    missing = host.missing_caps(host.auto_engine(), kill=True)
    checks.append(Check("capabilities", not missing,
                        "have " + (", ".join(sorted(host.caps)) or "none")
                        + (f"; missing {', '.join(missing)}" if missing else "")))
    try:
        lib = libbpf.load()
        checks.append(Check("libbpf", True, f"{lib.version} ({lib.path})"))
    except libbpf.LibbpfUnavailable as exc:
        checks.append(Check("libbpf", False, str(exc)))
    info = objinfo.inspect(object_path())
    checks.append(Check("BPF object", info.ok,
                        f"{object_path()} sha256:{info.sha256[:16]} programs "
                        f"{', '.join(sorted(info.programs))}; license {info.license}"
                        + (f"; {'; '.join(info.problems)}" if info.problems else "")))
    bpf_ok = False
    if host.bpf_can_list and info.ok:
        why = _bpf_load(kill=host.bpf_can_kill)
        bpf_ok = not why and host.bpf_can_kill
        checks.append(Check("BPF load", not why, why or "loaded, verified and attached"))
    checks += _diag_checks(host)
    diag_ok = all(c.ok for c in checks if c.name in ("tcp diag", "udp diag", "diag destroy"))
    auto = "bpf" if host.bpf_can_kill else "diag"
    checks.append(Check("auto engine", None, auto + ("" if auto == "bpf" else f" ({host.why_not_bpf(True)})")))
    can_kill = (bpf_ok if auto == "bpf" else diag_ok) and not missing
    return checks, can_kill
