"""libbpf's C API through ctypes.

The library comes from the pylibbpf wheel, whose extension module bundles
libbpf 1.6 and exports its whole C API. We load that shared object directly,
without `import pylibbpf` (which pulls in llvmlite, ~100 ms); a system
libbpf.so.1 is the fallback.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys

c_void_p, c_char_p, c_int, c_size_t, c_uint = (
    ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint)

BTF_KIND_STRUCT = 4
LIBBPF_INFO = 1   # enum libbpf_print_level: WARN 0, INFO 1, DEBUG 2

PRINT_FN = ctypes.CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)
# libbpf_prog_prepare_load_fn_t: (struct bpf_program *, struct bpf_prog_load_opts *, long cookie)
PREPARE_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_void_p, ctypes.c_long)

BPF_PROG_TYPE_TRACING, BPF_PROG_TYPE_SYSCALL = 26, 31
BPF_TRACE_ITER = 28


class HandlerOpts(ctypes.Structure):
    """struct libbpf_prog_handler_opts."""

    _fields_ = [("sz", c_size_t), ("cookie", ctypes.c_long), ("prog_setup_fn", c_void_p),
                ("prog_prepare_load_fn", PREPARE_FN), ("prog_attach_fn", c_void_p)]


class ProgLoadOpts(ctypes.Structure):
    """struct bpf_prog_load_opts, up to the attach fields (stable since libbpf 0.7)."""

    _fields_ = [("sz", c_size_t), ("attempts", c_int), ("expected_attach_type", c_uint),
                ("prog_btf_fd", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
                ("prog_ifindex", ctypes.c_uint32), ("kern_version", ctypes.c_uint32),
                ("attach_btf_id", ctypes.c_uint32), ("attach_prog_fd", ctypes.c_uint32),
                ("attach_btf_obj_fd", ctypes.c_uint32)]


class OpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts up to btf_custom_path (libbpf reads sz bytes)."""

    _fields_ = [("sz", c_size_t), ("object_name", c_char_p), ("relaxed_maps", ctypes.c_bool),
                ("pin_root_path", c_char_p), ("_attach_prog_fd", ctypes.c_uint32),
                ("kconfig", c_char_p), ("btf_custom_path", c_char_p)]


def open_opts(btf_custom_path: str | None = None):
    """Options for bpf_object__open_file (None: libbpf's defaults)."""
    if btf_custom_path is None:
        return None
    return OpenOpts(sz=ctypes.sizeof(OpenOpts), btf_custom_path=btf_custom_path.encode())

# name: (restype, argtypes)
_API = {
    "libbpf_major_version": (c_uint, []),
    "libbpf_minor_version": (c_uint, []),
    "libbpf_set_print": (c_void_p, [PRINT_FN]),
    "bpf_object__open_file": (c_void_p, [c_char_p, ctypes.POINTER(OpenOpts)]),
    "bpf_object__load": (c_int, [c_void_p]),
    "bpf_object__close": (None, [c_void_p]),
    "bpf_object__btf": (c_void_p, [c_void_p]),
    "bpf_object__find_map_by_name": (c_void_p, [c_void_p, c_char_p]),
    "bpf_object__find_program_by_name": (c_void_p, [c_void_p, c_char_p]),
    "libbpf_register_prog_handler": (c_int, [c_char_p, c_uint, c_uint, ctypes.POINTER(HandlerOpts)]),
    "bpf_program__set_type": (c_int, [c_void_p, c_uint]),
    "bpf_program__section_name": (c_char_p, [c_void_p]),
    "bpf_program__set_autoload": (c_int, [c_void_p, ctypes.c_bool]),
    "bpf_program__attach_iter": (c_void_p, [c_void_p, c_void_p]),
    "bpf_map__set_initial_value": (c_int, [c_void_p, c_void_p, c_size_t]),
    "bpf_map__set_max_entries": (c_int, [c_void_p, ctypes.c_uint32]),
    "bpf_map__fd": (c_int, [c_void_p]),
    "bpf_map__value_size": (ctypes.c_uint32, [c_void_p]),
    "bpf_link__fd": (c_int, [c_void_p]),
    "bpf_link__destroy": (c_int, [c_void_p]),
    "bpf_iter_create": (c_int, [c_int]),
    "bpf_map_update_elem": (c_int, [c_int, c_void_p, c_void_p, ctypes.c_uint64]),
    "bpf_map_lookup_elem": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_get_next_key": (c_int, [c_int, c_void_p, c_void_p]),
    "bpf_map_delete_elem": (c_int, [c_int, c_void_p]),
    "btf__find_by_name_kind": (ctypes.c_int32, [c_void_p, c_char_p, ctypes.c_uint32]),
    "btf__type_by_id": (c_void_p, [c_void_p, ctypes.c_uint32]),
    "btf__name_by_offset": (c_char_p, [c_void_p, ctypes.c_uint32]),
    "btf__resolve_size": (ctypes.c_long, [c_void_p, ctypes.c_uint32]),
}


class LibbpfUnavailable(RuntimeError):
    """No usable libbpf on this host."""


def candidate_paths():
    """pylibbpf's extension module first (in the first sys.path entry holding
    the package, where an import would look; without importlib's and glob's
    imports), then the system's libbpf (looked for only when needed:
    find_library runs ldconfig in a subprocess)."""
    for entry in sys.path:
        location = os.path.join(entry or os.curdir, "pylibbpf")
        try:
            names = os.listdir(location)
        except OSError:
            continue
        yield from (os.path.join(location, name) for name in sorted(names)
                    if name.startswith("pylibbpf") and name.endswith(".so"))
        break
    import ctypes.util
    system = ctypes.util.find_library("bpf")
    if system:
        yield system


class Libbpf:
    """The bound C API plus the log libbpf produced (for -v and error messages)."""

    def __init__(self, path: str):
        self.path = path
        self.lib = ctypes.CDLL(path, use_errno=True)
        for name in _API:
            self.lib[name]          # each exists (AttributeError: not a usable libbpf); bound on use
        self.log: list[str] = []          # libbpf's warnings and info (error messages use the tail)
        self.notices: list[str] = []      # its warnings and info lines, shown under -v
        self._libc = ctypes.CDLL(None)
        self._buf = ctypes.create_string_buffer(1 << 18)   # a verifier log is long
        self._print_cb = PRINT_FN(self._on_print)   # kept alive as long as we are
        self.libbpf_set_print(self._print_cb)
        self._attach_points: dict[str, int] = {}    # attach_by_id's sections
        self._prepare_cb = PREPARE_FN(self._prepare)

    def attach_by_id(self, points: dict[str, int]) -> None:
        """Iterator sections whose programs attach to these kernel BTF ids
        (btfmin.attach_points(), for this kernel): libbpf then needs no
        kernel BTF for them. libbpf reads the kernel's whole BTF before it
        loads any BPF_PROG_TYPE_TRACING program, for its attach point, even
        when told where the point is (obj_needs_vmlinux_btf); so a section
        registered here is opened as another type, which needs none, and
        made a tracing iterator again just before the load, where libbpf
        hands the load attributes to its handler. Registered once per section
        for the process (libbpf keeps a pointer to it in each program it opens)."""
        if self.libbpf_major_version() < 1:
            return
        for section, btf_id in points.items():
            if section not in self._attach_points:
                opts = HandlerOpts(sz=ctypes.sizeof(HandlerOpts), prog_prepare_load_fn=self._prepare_cb)
                if self.libbpf_register_prog_handler(section.encode(), BPF_PROG_TYPE_SYSCALL,
                                                     BPF_TRACE_ITER, ctypes.byref(opts)) <= 0:
                    continue        # libbpf's own handling stays
            self._attach_points[section] = btf_id

    def _prepare(self, prog, opts, _cookie):
        """Called by libbpf inside bpf_object__load, for a program of an
        attach_by_id section: its type and attach point (never raises)."""
        try:
            btf_id = self._attach_points[self.bpf_program__section_name(prog).decode()]
            load = ProgLoadOpts.from_address(opts)
            load.attach_btf_id, load.attach_btf_obj_fd = btf_id, 0       # vmlinux
            load.expected_attach_type = BPF_TRACE_ITER
            return self.bpf_program__set_type(prog, BPF_PROG_TYPE_TRACING)
        except Exception:       # noqa: BLE001 - an exception cannot cross into C
            return -22          # -EINVAL: libbpf says the program could not be prepared

    @contextlib.contextmanager
    def printing(self, on: bool):
        """libbpf's messages reach log and notices (on), or go nowhere: each
        is a call into the interpreter, ~840 in one open and load."""
        if not on:
            self.libbpf_set_print(PRINT_FN())       # NULL: libbpf prints nothing
        try:
            yield
        finally:
            if not on:
                self.libbpf_set_print(self._print_cb)

    def __getattr__(self, name: str):
        """A function of _API, typed and bound the first time it is used (a
        run uses half of them; typing each costs ~20 us)."""
        try:
            restype, argtypes = _API[name]
        except KeyError:
            raise AttributeError(name) from None
        fn = self.lib[name]
        fn.restype, fn.argtypes = restype, argtypes
        setattr(self, name, fn)
        return fn

    @property
    def version(self) -> str:
        return f"{self.libbpf_major_version()}.{self.libbpf_minor_version()}"

    def _on_print(self, level, fmt, va_list):
        if level > LIBBPF_INFO:
            # debug chatter, ~400 lines a load; what explains a failure (the
            # verifier log, a relocation that failed) comes as a warning
            return 0
        buf = self._buf
        self._libc.vsnprintf(buf, ctypes.c_size_t(len(buf)), fmt, ctypes.c_void_p(va_list))
        lines = buf.value.decode(errors="replace").rstrip("\n").splitlines()
        self.log.extend(lines)
        del self.log[:-400]   # the tail says why
        self.notices.extend(lines)
        return 0

    def struct_layout(self, btf, name: str):
        """(size, {member: byte offset}) of struct `name` in a BTF object, or None."""
        type_id = self.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_STRUCT)
        if type_id < 0:
            return None
        size = self.btf__resolve_size(btf, type_id)
        ptr = self.btf__type_by_id(btf, type_id)
        info = ctypes.c_uint32.from_address(ptr + 4).value
        vlen, kflag = info & 0xFFFF, info >> 31
        members = {}
        for i in range(vlen):
            base = ptr + 12 + 12 * i
            name_off = ctypes.c_uint32.from_address(base).value
            bit_off = ctypes.c_uint32.from_address(base + 8).value
            if kflag:
                bit_off &= 0xFFFFFF
            member = self.btf__name_by_offset(btf, name_off).decode()
            members[member] = bit_off // 8
        return size, members


_loaded: Libbpf | None = None


def load() -> Libbpf:
    """The process-wide binding (libbpf keeps one print callback per process)."""
    global _loaded
    if _loaded is None:
        errors = []
        for path in candidate_paths():
            try:
                lib = Libbpf(path)
            except (OSError, AttributeError) as exc:
                errors.append(f"{path}: {exc}")
                continue
            _loaded = lib
            break
        else:
            detail = "; ".join(errors) or "pylibbpf is not installed and no libbpf.so.1 was found"
            raise LibbpfUnavailable(f"cannot load libbpf ({detail}); install pylibbpf")
    return _loaded


def errno_text(err: int) -> str:
    return os.strerror(abs(err)) if err else "unknown error"
