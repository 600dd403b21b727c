"""What this host can do: kernel features and the process's capabilities.

Cheap enough to run on every invocation (auto engine choice): a few stat()s
and one search of the kernel's BTF strings for names.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
# struct btf_header: magic, version, flags, hdr_len, type_off/len, str_off/len
_BTF_HEADER = struct.Struct("<HBBIIIII")

CAPS = {"CAP_NET_ADMIN": 12, "CAP_SYS_ADMIN": 21, "CAP_PERFMON": 38, "CAP_BPF": 39}

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


@dataclass
class HostProbe:
    kernel: str
    btf: bool
    features: dict
    caps: set = field(default_factory=set)

    @property
    def bpf_can_list(self) -> bool:
        return self.btf and self.features["iter_tcp"] and self.features["iter_udp"]

    @property
    def bpf_can_kill(self) -> bool:
        return self.bpf_can_list and self.features["sock_destroy_kfunc"]

    def auto_engine(self) -> str:
        return "bpf" if self.bpf_can_kill else "diag"

    def why_not_bpf(self, kill: bool) -> str:
        if not self.btf:
            return f"the kernel has no BTF ({VMLINUX_BTF} is missing; needs CONFIG_DEBUG_INFO_BTF)"
        if not self.bpf_can_list:
            return "the kernel has no TCP/UDP socket iterators (needs Linux >= 5.9)"
        if kill and not self.bpf_can_kill:
            return "the kernel lacks the bpf_sock_destroy kfunc (needs Linux >= 6.5)"
        return ""

    def missing_caps(self, engine: str, kill: bool) -> list[str]:
        """Capabilities a run needs and this process lacks."""
        have = self.caps
        need = ["CAP_SYS_ADMIN"]          # setns into other namespaces
        if kill:
            need.append("CAP_NET_ADMIN")
        if engine == "bpf" and "CAP_SYS_ADMIN" not in have:
            need += ["CAP_BPF", "CAP_PERFMON"]
        return [cap for cap in need if cap not in have]


def probe() -> HostProbe:
    features = btf_names()
    return HostProbe(kernel=os.uname().release, btf=os.path.exists(VMLINUX_BTF),
                     features=features, caps=effective_caps())
