"""What this host can do: kernel features and the process's capabilities.

Cheap enough to run on every invocation (auto engine choice): a few stat()s
and one search of the kernel's BTF strings for names.
"""

from __future__ import annotations

import os
import struct

from ..records import Record

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
# struct btf_header: magic, version, flags, hdr_len, type_off/len, str_off/len
_BTF_HEADER = struct.Struct("<HBBIIIII")

CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_PTRACE": 19, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38,
        "CAP_BPF": 39}

# kernel BTF names that say a feature exists
BTF_FEATURES = {
    "iter_tcp": b"bpf_iter__tcp",
    "iter_udp": b"bpf_iter__udp",
    "sock_destroy_kfunc": b"bpf_sock_destroy",
}


def effective_caps() -> set[str]:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    mask = int(line.split()[1], 16)
                    return {name for name, bit in CAPS.items() if mask >> bit & 1}
    except OSError:
        pass
    return set()


def btf_names(path: str = VMLINUX_BTF) -> dict[str, bool]:
    """Which BTF_FEATURES the kernel's BTF names (all False without BTF).

    Only its string section is searched (~2 of ~5 MB), through a private
    read-only map where the kernel allows one (6.16+): ~1 ms, where reading
    the whole file in sysfs's page-sized pieces and searching it took ~10.
    """
    try:
        with open(path, "rb") as f:
            header = f.read(_BTF_HEADER.size)
            magic, _, _, hdr_len, _, _, str_off, str_len = _BTF_HEADER.unpack(header)
            if magic != 0xEB9F:
                raise OSError("not BTF")
            start = hdr_len + str_off
            try:
                import mmap
                blob = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
            except (OSError, ValueError):
                f.seek(start)
                blob, start = f.read(str_len), 0
            try:
                return {key: blob.find(b"\0" + name + b"\0", start, start + str_len) >= 0
                        for key, name in BTF_FEATURES.items()}
            finally:
                if not isinstance(blob, bytes):
                    blob.close()
    except (OSError, struct.error):
        return {key: False for key in BTF_FEATURES}


def in_initial_userns(path: str = "/proc/self/uid_map") -> bool:
    """The initial user namespace maps every uid to itself; any other maps less.
    Capabilities held in a user namespace of one's own (`unshare -r`) do not
    let the kernel load BPF tracing programs or enter the host's namespaces."""
    try:
        with open(path) as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return True       # no user namespaces in this kernel


def lockdown(path: str = "/sys/kernel/security/lockdown") -> str:
    """The kernel lockdown mode (none, integrity, confidentiality); '' when unknown."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return ""
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else ""


def seccomp_filtered() -> bool:
    """Is a seccomp filter installed (a container runtime's profile may refuse bpf())?"""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Seccomp:"):
                    return line.split()[1] == "2"
    except (OSError, IndexError):
        pass
    return False


def bpf_syscall_refused() -> str:
    """A tiny real probe, for when nothing cheaper can tell: create (and drop)
    a one-slot array map. '' when the kernel lets this process use bpf()."""
    import ctypes
    import errno
    import platform
    nr = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351,
          "riscv64": 280, "armv7l": 386, "i686": 357}.get(platform.machine())
    if nr is None:
        return ""
    attr = (ctypes.c_uint32 * 32)(2, 4, 4, 1)   # BPF_MAP_TYPE_ARRAY, key 4, value 4, 1 entry
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(0), attr, ctypes.c_uint(ctypes.sizeof(attr)))
    if fd < 0:
        err = ctypes.get_errno()
        return f"the bpf() system call is refused here ({errno.errorcode.get(err, err)}: a seccomp profile?)"
    os.close(fd)
    return ""


class HostProbe(Record):
    FIELDS = ("kernel", "btf", "features", "caps", "initial_userns", "lockdown", "seccomp")

    def __init__(self, kernel: str, btf: bool, features: dict | None, caps: set | None = None,
                 initial_userns: bool = True, lockdown: str = "", seccomp: bool = False,
                 _refused: str | None = None, known=None):
        self.kernel = kernel
        self.btf = btf
        self._features = features       # None: kernel_features(known), on first need
        self._known = known
        self.caps = set() if caps is None else caps
        self.initial_userns = initial_userns
        self.lockdown = lockdown
        self.seccomp = seccomp
        self._refused = _refused        # bpf_syscall_refused(), asked once (tests: given)

    @property
    def features(self) -> dict:
        """What the kernel's BTF names (BTF_FEATURES), found when first asked
        (a --backend diag listing never asks)."""
        if self._features is None:
            self._features = kernel_features(self._known)
        return self._features

    @property
    def bpf_can_list(self) -> bool:
        return self.btf and self.features["iter_tcp"] and self.features["iter_udp"]

    @property
    def bpf_can_kill(self) -> bool:
        return self.bpf_can_list and self.features["sock_destroy_kfunc"]

    @property
    def enters_other_namespaces(self) -> bool:
        """setns() into a namespace of the host needs CAP_SYS_ADMIN over the
        user namespace owning it: the initial one."""
        return self.initial_userns and "CAP_SYS_ADMIN" in self.caps

    def auto_engine(self) -> str:
        return "diag" if self.auto_why() else "bpf"

    def auto_why(self) -> str:
        """Why --backend auto does not pick bpf here ('' when it does): what a
        load would lack, or a kernel bug in the iterators (host/caveats.py).
        The load itself has the last word (the pipeline, doctor)."""
        from .caveats import bpf_avoided
        return self.why_not_bpf(kill=True) or bpf_avoided(self.kernel)

    def why_not_bpf(self, kill: bool) -> str:
        """Why a real load of the BPF engine would fail here ('' when it would
        not). Decided from the kernel's BTF, the user namespace, capabilities
        and lockdown; a bpf() probe only under a seccomp filter (~50 us)."""
        if not self.btf:
            return f"the kernel has no BTF ({VMLINUX_BTF} is missing; needs CONFIG_DEBUG_INFO_BTF)"
        if not self.bpf_can_list:
            return "the kernel has no TCP/UDP socket iterators (needs Linux >= 5.9)"
        if kill and not self.bpf_can_kill:
            return "the kernel lacks the bpf_sock_destroy kfunc (needs Linux >= 6.5)"
        if not self.initial_userns:
            return ("sockterm runs in a user namespace: the kernel loads BPF iterators "
                    "only for the initial one")
        if "CAP_SYS_ADMIN" not in self.caps and not {"CAP_BPF", "CAP_PERFMON"} <= self.caps:
            return "loading BPF programs needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"
        if self.lockdown == "confidentiality":
            return ("the kernel is locked down (confidentiality): BPF programs may not "
                    "read kernel memory")
        if self.seccomp:
            if self._refused is None:
                self._refused = bpf_syscall_refused()
            return self._refused
        return ""

    def missing_caps(self, engine: str, kill: bool) -> list[str]:
        """Capabilities a run needs and this process lacks. list and match
        need none: without CAP_SYS_ADMIN they search only their own namespace."""
        have = self.caps
        need = ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"] if kill else []   # setns; destroy
        if engine == "bpf" and "CAP_SYS_ADMIN" not in have:
            need += ["CAP_BPF", "CAP_PERFMON"]
        return [cap for cap in need if cap not in have]


def kernel_features(known=None) -> dict[str, bool]:
    """btf_names() of this kernel, or what known() says of it (a record kept
    from an earlier search; None where there is none): the search takes ~1.5 ms."""
    features = (known and known()) or btf_names()
    if "kfunc" in os.environ.get("SOCKTERM_TEST_REFUSE", "").split(","):
        features["sock_destroy_kfunc"] = False     # tests: a kernel without the kfunc
    return features


def probe(known=None) -> HostProbe:
    """This host's; known: see kernel_features()."""
    return HostProbe(kernel=os.uname().release, btf=os.path.exists(VMLINUX_BTF),
                     features=None, caps=effective_caps(), initial_userns=in_initial_userns(),
                     lockdown=lockdown(), seccomp=seccomp_filtered(), known=known)
