"""The kernel's BPF programs, maps and links, asked through the libbpf that
sockterm itself loads (no bpftool on a fresh machine): BPF_*_GET_NEXT_ID,
BPF_*_GET_FD_BY_ID and BPF_OBJ_GET_INFO_BY_FD, as bpftool does.

The info structs are read at their uapi offsets (include/uapi/linux/bpf.h,
stable ABI): bpf_prog_info.nr_map_ids @52, .map_ids @56, .name @64;
bpf_map_info.name @24; bpf_link_info.prog_id @8.
"""

from __future__ import annotations

import ctypes
import errno
import os

from sockterm.engine.bpf import libbpf

INFO_SIZE = 256          # larger than any of the three: the kernel zero-fills the rest


def _lib():
    lib = libbpf.load().lib
    u32, u32p = ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)
    for kind in ("prog", "map", "link"):
        nxt = getattr(lib, f"bpf_{kind}_get_next_id")
        nxt.restype, nxt.argtypes = ctypes.c_int, [u32, u32p]
        by_id = getattr(lib, f"bpf_{kind}_get_fd_by_id")
        by_id.restype, by_id.argtypes = ctypes.c_int, [u32]
    info = lib.bpf_obj_get_info_by_fd
    info.restype, info.argtypes = ctypes.c_int, [ctypes.c_int, ctypes.c_void_p, u32p]
    return lib


def _ids(lib, kind: str):
    nxt = getattr(lib, f"bpf_{kind}_get_next_id")
    cur, out = ctypes.c_uint32(0), []
    while nxt(cur.value, ctypes.byref(cur)) == 0:
        out.append(cur.value)
    err = ctypes.get_errno()
    if err not in (0, errno.ENOENT):
        raise OSError(err, f"bpf_{kind}_get_next_id: {os.strerror(err)}")
    return out


def _info(lib, kind: str, ident: int, buf) -> bool:
    """Fill buf with the object's info; False when it went away meanwhile."""
    fd = getattr(lib, f"bpf_{kind}_get_fd_by_id")(ident)
    if fd < 0:
        return False
    try:
        ctypes.memset(buf, 0, INFO_SIZE)
        size = ctypes.c_uint32(INFO_SIZE)
        return lib.bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size)) == 0
    finally:
        os.close(fd)


def _name(buf, offset: int) -> str:
    return buf.raw[offset:offset + 16].split(b"\0", 1)[0].decode(errors="replace")


def kernel_objects() -> dict:
    """{'progs': {id: (name, [map ids])}, 'maps': {id: name}, 'links': {id: prog id}}."""
    lib = _lib()
    buf = ctypes.create_string_buffer(INFO_SIZE)
    progs, maps, links = {}, {}, {}
    for ident in _ids(lib, "prog"):
        if not _info(lib, "prog", ident, buf):
            continue
        name, nr_maps = _name(buf, 64), ctypes.c_uint32.from_buffer(buf, 52).value
        map_ids = []
        if nr_maps:
            ids = (ctypes.c_uint32 * nr_maps)()
            fd = lib.bpf_prog_get_fd_by_id(ident)
            if fd >= 0:
                try:
                    ctypes.memset(buf, 0, INFO_SIZE)
                    ctypes.c_uint32.from_buffer(buf, 52).value = nr_maps
                    ctypes.c_uint64.from_buffer(buf, 56).value = ctypes.addressof(ids)
                    size = ctypes.c_uint32(INFO_SIZE)
                    if lib.bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size)) == 0:
                        map_ids = list(ids)
                finally:
                    os.close(fd)
        progs[ident] = (name, map_ids)
    for ident in _ids(lib, "map"):
        if _info(lib, "map", ident, buf):
            maps[ident] = _name(buf, 24)
    for ident in _ids(lib, "link"):
        if _info(lib, "link", ident, buf):
            links[ident] = ctypes.c_uint32.from_buffer(buf, 8).value
    return {"progs": progs, "maps": maps, "links": links}
