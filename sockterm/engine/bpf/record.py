"""The Python mirror of bpf/sockterm.h: the one place that knows its layout.

The ctypes structures are the definition; the fast decoders (struct.Struct)
are derived from them, and the loader compares them with the object's BTF.
"""

from __future__ import annotations

import ctypes
import struct

u8, u16, u32, u64 = ctypes.c_uint8, ctypes.c_uint16, ctypes.c_uint32, ctypes.c_uint64

MAX_ADDRS = 16
MAX_PORTS = 16
MAX_UIDS = 16

RES_MATCHED, RES_DESTROYED, RES_DEFERRED = 0, 1, 2
F_MINI = 0x1
TCP_CLOSE, TCP_LISTEN = 7, 10     # ST_TCP_*: what the one pass looks at
ONE_HOLDER_REFS = 2
CFG_KILL, CFG_INODES, CFG_TCP, CFG_UDP, CFG_COOKIES = 0x1, 0x2, 0x4, 0x8, 0x10
CFG_CGROUPS, CFG_SCOPE = 0x20, 0x40
INO_SELECT, INO_EXCLUDE, INO_SCOPE = 0x1, 0x2, 0x4
CG_SELECT, CG_SCOPE = 0x1, 0x2


class StRec(ctypes.Structure):
    _fields_ = [
        ("cookie", u64), ("ino", u64), ("src", u8 * 16), ("dst", u8 * 16),
        ("uid", u32), ("flags", u32), ("ifindex", u32),
        ("sport", u16), ("dport", u16), ("family", u16),
        ("proto", u8), ("state", u8), ("result", u8), ("pad", u8 * 11),
    ]


class StAddrRule(ctypes.Structure):
    _fields_ = [("addr", u32 * 4), ("mask", u32 * 4), ("port_lo", u16), ("port_hi", u16)]


class StPortRange(ctypes.Structure):
    _fields_ = [("lo", u16), ("hi", u16)]


class StConfig(ctypes.Structure):
    _fields_ = [
        ("dst", StAddrRule * MAX_ADDRS), ("src", StAddrRule * MAX_ADDRS),
        ("dport", StPortRange * MAX_PORTS), ("sport", StPortRange * MAX_PORTS),
        ("n_dst", u32), ("n_src", u32), ("n_dport", u32), ("n_sport", u32),
        ("states", u32), ("families", u32), ("flags", u32), ("n_uids", u32),
        ("uids", u32 * MAX_UIDS), ("probe_ino", u64),
    ]


class StStats(ctypes.Structure):
    _fields_ = [("visited", u64), ("matched", u64), ("destroyed", u64),
                ("destroy_failed", u64), ("errors_lost", u64), ("held_lost", u64),
                ("probe_refs", u64)]


class StHeld(ctypes.Structure):
    _fields_ = [("rec", StRec), ("cgroup", u64), ("netns", u32), ("pid", u32),
                ("comm", ctypes.c_char * 16), ("fd", u32), ("reserved", u32)]


class StNsHeld(ctypes.Structure):
    _fields_ = [("tcp", u32), ("udp", u32), ("pending", u32), ("backlog", u32)]


MIRRORS = {"st_rec": StRec, "st_config": StConfig, "st_addr_rule": StAddrRule,
           "st_port_range": StPortRange, "st_stats": StStats, "st_held": StHeld,
           "st_ns_held": StNsHeld}


def _struct_format(cls, top: bool = True) -> str:
    """A struct.Struct format equal to a ctypes Structure (arrays of u8 as
    bytes, nested structures inlined)."""
    codes = {u8: "B", u16: "H", u32: "I", u64: "Q"}
    fmt = "<" if top else ""
    for name, ctype in cls._fields_:
        if name == "pad":
            fmt += f"{ctypes.sizeof(ctype)}x"
        elif hasattr(ctype, "_length_"):
            fmt += f"{ctypes.sizeof(ctype)}s"
        elif issubclass(ctype, ctypes.Structure):
            fmt += _struct_format(ctype, top=False)
        else:
            fmt += codes[ctype]
    assert not top or struct.calcsize(fmt) == ctypes.sizeof(cls), cls
    return fmt


REC = struct.Struct(_struct_format(StRec))
HELD = struct.Struct(_struct_format(StHeld))
NS_HELD = struct.Struct(_struct_format(StNsHeld))


def layout(cls) -> tuple[int, dict]:
    """(size, {field: offset}) of a mirror, in the shape the BTF check returns."""
    return ctypes.sizeof(cls), {name: getattr(cls, name).offset for name, _ in cls._fields_}


def layout_mismatches(btf_layout) -> list[str]:
    """Compare every mirror with the object's BTF; [] when they agree."""
    problems = []
    for name, cls in MIRRORS.items():
        theirs = btf_layout(name)
        if theirs is None:
            problems.append(f"struct {name} is missing from the BPF object")
        elif theirs != layout(cls):
            problems.append(f"struct {name}: object has {theirs}, sockterm expects {layout(cls)}")
    return problems
