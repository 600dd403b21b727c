"""`sockterm doctor`: what works on this host, and why not. Each check is
real (the object is loaded, netlink is asked, a namespace walk is timed), so
its verdict can be trusted; the engine it names is the one auto picks."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from .host import caveats, probe

CAPABILITIES = ("enumerate", "one pass", "destroy in kernel", "destroy by netlink", "graceful close")
SYSCTLS = ("net.ipv4.tcp_child_ehash_entries", "net.ipv4.udp_child_hash_entries")


@dataclass
class Check:
    name: str
    ok: bool | None          # None: informational
    detail: str


@dataclass
class Findings:
    checks: list
    can_kill: bool
    auto: str = ""                 # the engine --backend auto picks here
    auto_why: str = ""             # why not bpf, when it is diag
    caveats: list = field(default_factory=list)      # dicts, for JSON
    hash_tables: dict = field(default_factory=dict)
    # how sockets can end here: abort (the bpf kfunc, netlink SOCK_DESTROY), graceful close
    ends: dict = field(default_factory=dict)

    @property
    def capabilities(self) -> dict:
        """The capability rows, by their JSON names (enumerate, one-pass, ...)."""
        return {c.name.replace(" ", "-"): {"ok": c.ok, "detail": c.detail}
                for c in self.checks if c.name in CAPABILITIES}


def bpf_capabilities(host, kill: bool) -> tuple[dict, str]:
    """({capability: why it is missing, '' when it loaded}, why the engine
    failed as a whole): one real load of the programs a run can use, each
    refused alone (the engine's own degradation)."""
    from .engine import EngineError, Scope
    from .engine.bpf.engine import ENUMERATE, ONE_PASS, BpfEngine
    from .filter import build_filter
    engine = BpfEngine(flt=build_filter(), scope=Scope(), kill=kill, owners=True, held=True)
    try:
        engine.open()
    except EngineError as exc:
        lost = dict.fromkeys((ENUMERATE, ONE_PASS), str(exc))
        return {**lost, **engine.lost}, str(exc)
    finally:
        engine.close()
    return {ENUMERATE: engine.lost.get(ENUMERATE, ""), ONE_PASS: engine.lost.get(ONE_PASS, "")}, ""


def _capabilities(host, object_ok: bool) -> dict:
    """capability -> (works, detail): enumerate, one pass and destroy in the
    kernel as the programs really load here; what the kernel lacks named."""
    from .engine.bpf.engine import ENUMERATE, ONE_PASS
    kfunc = host.features["sock_destroy_kfunc"]
    kill_refused = ""
    if not host.btf:
        why = f"no BTF ({probe.VMLINUX_BTF}: the kernel needs CONFIG_DEBUG_INFO_BTF)"
        lost, failed = {ENUMERATE: why, ONE_PASS: why}, why
    elif not object_ok:
        lost = dict.fromkeys((ENUMERATE, ONE_PASS), "the shipped BPF object is unusable (see above)")
        failed = lost[ENUMERATE]
    else:
        # what list, match and the one pass load; then, where the kernel has the
        # kfunc, the iterators a kill loads (another object: the kfunc in them)
        lost, failed = bpf_capabilities(host, kill=False)
        if not failed:
            lost = {cap: why and f"refused by the kernel: {why}" for cap, why in lost.items()}
        if kfunc and not lost[ENUMERATE]:
            kill_lost, kill_failed = bpf_capabilities(host, kill=True)
            if kill_failed or kill_lost[ENUMERATE]:
                kill_refused = f"refused by the kernel: {kill_failed or kill_lost[ENUMERATE]}"
    if host.btf and not host.bpf_can_list:
        lost[ENUMERATE] = "no TCP/UDP socket iterators (Linux >= 5.9)"
    found = {
        "enumerate": (not lost[ENUMERATE],
                      lost[ENUMERATE] or "iter/tcp and iter/udp load: socket walks in the kernel"),
        "one pass": (not lost[ONE_PASS],
                     lost[ONE_PASS] or "iter/task_file loads: every held socket host-wide in one pass"),
    }
    if not kfunc:
        destroy = (False, "no bpf_sock_destroy kfunc (Linux >= 6.5): sockets are destroyed over netlink")
    elif lost[ENUMERATE] or kill_refused:
        destroy = (False, "bpf_sock_destroy is there, the iterators that call it are not "
                          f"({failed or lost[ENUMERATE] or kill_refused})")
    else:
        destroy = (True, "bpf_sock_destroy verified in the iterators")
    found["destroy in kernel"] = destroy
    return found


def _watch_check() -> Check:
    """kill --watch: its program loaded and attached (then detached), and how
    UDP connects are seen here."""
    from .engine import EngineError, Scope
    from .engine.bpf.watch import WatchSource
    from .filter import build_filter
    source = WatchSource(flt=build_filter(dst=["192.0.2.1"]), scope=Scope())
    try:
        source.open()
    except EngineError as exc:
        return Check("watch", False, f"kill --watch cannot run: {exc}")
    finally:
        source.close()
    udp = {"connect": "UDP at connect()", "send": "UDP at its first send (no BPF trampolines here)"}
    return Check("watch", True, f"kill --watch attaches: TCP at ESTABLISHED, {udp[source.udp]}")


def _diag_checks(host) -> list[Check]:
    try:
        from .engine.diag import engine as diag
        tcp, udp, destroy = diag.probe()
    except Exception as exc:       # a broken netlink stack is a finding, not a crash
        return [Check("sock_diag", False, f"{type(exc).__name__}: {exc}")]
    return [Check("tcp diag", tcp == "", tcp or "NETLINK_SOCK_DIAG dumps TCP sockets"),
            Check("udp diag", udp == "", udp or "NETLINK_SOCK_DIAG dumps UDP sockets"),
            Check("destroy by netlink", destroy == "",
                  destroy or "SOCK_DESTROY works (CONFIG_INET_DIAG_DESTROY)")]


def _sysctl(name: str) -> int | None:
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def walk_ms() -> float | None:
    """Wall time of one namespace walk, as the diag engine does it (TCP and UDP,
    IPv4 and IPv6) with a filter matching nothing: the fixed cost each namespace
    pays when the hash tables are shared."""
    from .engine.diag import wire as n
    from .engine.diag.bytecode import compile_bytecode, state_mask
    from .engine.diag.destroy import AF, PROTO_NUMS
    from .filter import build_filter
    from . import states
    flt = build_filter(sport=["1"], dport=["1"], default_states=states.ALL)
    code, mask = compile_bytecode(flt), state_mask(flt.states)
    try:
        dsock = n.DiagSocket()
    except OSError:
        return None
    try:
        start = time.perf_counter()
        for proto in ("tcp", "udp"):
            for fam in (4, 6):
                for _ in dsock.dump(AF[fam], PROTO_NUMS[proto], mask, code):
                    pass
        return (time.perf_counter() - start) * 1000
    except Exception:
        return None
    finally:
        dsock.close()


def _shared_namespaces(host) -> tuple[int, int] | None:
    """(namespaces sharing the host's TCP hash table, namespaces looked at):
    a namespace's own tcp_ehash_entries reads negative when it shares."""
    if not host.enters_other_namespaces:
        return None
    from .host import enter, netns

    def reads_shared():
        try:
            with open("/proc/sys/net/ipv4/tcp_ehash_entries") as f:
                return int(f.read()) < 0
        except (OSError, ValueError):
            return False

    found, _ = netns.discover()
    others = [ns for ns in found if ns.name != netns.HOST]
    shared = 0
    with enter.Worker() as worker:
        for ns in others:
            try:
                shared += worker.call(ns, reads_shared)
            except OSError:
                continue
    return shared, len(others)


def hash_tables(host) -> dict:
    """Do namespaces share the host-wide socket hash tables, what one walk costs,
    and what giving new namespaces their own would save."""
    values = {name: _sysctl(name) for name in SYSCTLS}
    ms = walk_ms()
    counted = _shared_namespaces(host)
    doc = {"sysctls": values, "shared": not any(values.values()),
           "walk_ms": None if ms is None else round(ms, 2),
           "namespaces": None if counted is None else counted[1],
           "namespaces_sharing": None if counted is None else counted[0]}
    if ms is not None and counted is not None:
        doc["saving_ms"] = round(ms * counted[0], 1)
    return doc


def _tables_check(doc: dict) -> Check:
    ms, sharing = doc["walk_ms"], doc["namespaces_sharing"]
    cost = f"a namespace walk costs {ms:.1f} ms here" if ms is not None else "walk not timed"
    where = ("" if sharing is None else
             f"{sharing} of {doc['namespaces']} namespaces besides the host's share them; ")
    if not doc["shared"]:
        settings = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in doc["sysctls"].items())
        return Check("hash tables", True, f"new namespaces get their own ({settings}); {where}{cost}")
    text = f"shared: every namespace walk covers every socket on the host; {where}{cost}"
    if doc.get("saving_ms") is not None:
        text += (f"; {SYSCTLS[0]} and {SYSCTLS[1].split('.')[-1]} set before namespaces are "
                 f"created would save ~{doc['saving_ms']:.0f} ms per full search")
    return Check("hash tables", None, text)


def container_checks(host) -> list[Check]:
    """What a container (sockterm's image, a debug pod) lacks that sockterm needs
    from the host, in one check: its PID namespace, CAP_BPF, the kernel's BTF,
    the runtimes' files under SOCKTERM_ROOT_PREFIX. Made outside the host's PID
    namespace, where a root prefix is set (the image sets /host) or where a
    runtime marks its container; nothing on a host, where the other checks say it all."""
    from .host import netns, runtimes
    prefix = runtimes.root_prefix()
    host_pid = netns.kthreadd_netns() is not None
    marked = (os.path.exists("/run/.containerenv") or "container" in os.environ
              or "KUBERNETES_SERVICE_HOST" in os.environ)
    if host_pid and not prefix and not marked:
        return []
    missing = []
    if not host_pid:
        missing.append("not in the host's PID namespace: only its own network namespace and "
                       "/run/netns's are found (run with --pid=host; Kubernetes: hostPID: true)")
    if "CAP_SYS_ADMIN" not in host.caps and not {"CAP_BPF", "CAP_PERFMON"} <= host.caps:
        missing.append("no CAP_BPF: the bpf engine cannot load (run with --privileged; "
                       "Kubernetes: privileged: true)")
    if not host.btf:
        missing.append(f"no {probe.VMLINUX_BTF}: the bpf engine cannot load (the host's /sys "
                       "is not mounted, as --privileged mounts it, or the kernel lacks BTF)")
    if not prefix:
        files = "runtime files read from /"
    elif runtimes.runtime_present(prefix):
        files = f"runtime files read under {prefix}"
    else:
        files = (f"no container runtime's files under {prefix}: containers and pods go unnamed "
                 f"(mount the host's / at {prefix} read-only)")
    if missing:
        return [Check("container", False, "; ".join(missing + [files]))]
    return [Check("container", True, f"host PID namespace, CAP_BPF, BTF; {files}")]


def _object_detail(info, summary: str = "") -> str:
    """A shipped BPF object as doctor shows it (objinfo.inspect()): summary,
    or its path, hash, programs and license; then any problem."""
    detail = summary or (f"{info.path} sha256:{info.sha256[:16]} programs "
                         f"{', '.join(sorted(info.programs))}; license {info.license}")
    return detail + (f"; {'; '.join(info.problems)}" if info.problems else "")


def run(timed: bool = True) -> Findings:
    """All checks, the engine auto picks, the caveats that apply, and (timed)
    the hash table finding."""
    from .engine.bpf import libbpf, objinfo
    from .engine.bpf.engine import OBJECT_NAME, READ_OBJECT_NAME, object_path
    host = probe.probe()
    checks = [Check("kernel", None, host.kernel)]
    checks.append(Check("BTF", host.btf, probe.VMLINUX_BTF if host.btf else
                        "missing: the kernel needs CONFIG_DEBUG_INFO_BTF"))
    auto_why = host.auto_why()
    auto = "diag" if auto_why else "bpf"
    missing = host.missing_caps(auto, kill=True)
    checks.append(Check("capabilities", not missing,
                        "have " + (", ".join(sorted(host.caps)) or "none")
                        + (f"; missing {', '.join(missing)}" if missing else "")))
    checks.append(Check("namespaces", host.enters_other_namespaces,
                        "can enter every network namespace" if host.enters_other_namespaces else
                        "only its own: entering others needs CAP_SYS_ADMIN in the initial user "
                        "namespace" + ("" if host.initial_userns else " (this is a user namespace)")))
    checks += container_checks(host)
    if host.lockdown:
        checks.append(Check("lockdown", host.lockdown != "confidentiality", host.lockdown))
    try:
        lib = libbpf.load()
        source = "pylibbpf" if "pylibbpf" in os.path.basename(lib.path) else lib.path
        checks.append(Check("libbpf", True, f"{lib.version} ({source})"))
    except libbpf.LibbpfUnavailable as exc:
        checks.append(Check("libbpf", False, str(exc)))
    # the object the iterators destroy with, and the one every other run loads
    info = objinfo.inspect(object_path(OBJECT_NAME))
    checks.append(Check("BPF object", info.ok, _object_detail(info)))
    read = objinfo.inspect(object_path(READ_OBJECT_NAME))
    same = read.programs == info.programs and read.license == info.license
    # beside it: one line where it is what it should be
    checks.append(Check("BPF read object", read.ok and same, _object_detail(
        read, f"the same programs, no kfunc (sha256:{read.sha256[:16]})" if same else "")))
    objects_ok = info.ok and read.ok and same
    capabilities = _capabilities(host, objects_ok)
    checks += [Check(name, ok, detail) for name, (ok, detail) in capabilities.items()]
    if host.btf:
        checks.append(_watch_check())
    checks += _diag_checks(host)
    diag_ok = all(c.ok for c in checks if c.name in ("tcp diag", "udp diag", "destroy by netlink"))
    enumerate_ok = capabilities["enumerate"][0]
    bpf_ok = bool(enumerate_ok) and host.bpf_can_kill
    if auto == "bpf" and not enumerate_ok:
        # what a run does: the kernel refused the iterators, auto uses diag
        auto, auto_why = "diag", f"the kernel refused the socket iterators: {capabilities['enumerate'][1]}"
    graceful = _graceful_check(host)
    checks.append(graceful)
    checks.append(Check("auto engine", None, auto + (f" ({auto_why})" if auto_why else "")))
    found = []
    for caveat, verdict in caveats.applicable(host.kernel):
        found.append({"id": caveat.ident, "verdict": verdict, "summary": caveat.summary,
                      "fixed_in": caveat.fixed_in, "source": caveat.source, "auto": caveat.auto})
        where = (f"this kernel is affected (fixed in {found[-1]['fixed_in']})" if verdict == "affected"
                 else f"fixed in {found[-1]['fixed_in']}: check whether your kernel has the fix")
        checks.append(Check(f"caveat {caveat.ident}", None,
                            f"{caveat.summary}; {where}. {caveat.auto}"))
    tables = {}
    if timed:
        tables = hash_tables(host)
        checks.append(_tables_check(tables))
    can_kill = (bpf_ok if auto == "bpf" else diag_ok) and not missing
    ends = {"abort_kfunc": bpf_ok, "abort_netlink": diag_ok, "graceful": graceful.ok}
    return Findings(checks, can_kill, auto, auto_why, found, tables, ends)


def _graceful_check(host) -> Check:
    """kill --graceful: pidfd_getfd, really tried (host/pidfd.py)."""
    from .host import pidfd
    why = pidfd.why_not()
    if why:
        return Check("graceful close", False, why)
    if "CAP_SYS_PTRACE" in host.caps:
        return Check("graceful close", True, "pidfd_getfd, CAP_SYS_PTRACE: any process's sockets")
    return Check("graceful close", True, "pidfd_getfd, but no CAP_SYS_PTRACE: only dumpable "
                 f"processes of uid {os.getuid()} holding no capability sockterm lacks")
