"""The minimized kernel BTF (btfmin.py), made once per kernel and object, cached.

/var/cache/sockterm/<object hash>-<format>.btf, read only when its key - the
kernel's build id (/sys/kernel/notes), release, version and BTF size, and
the object's BLAKE2b hash - matches the key stored inside it (a string at
offset 1 of its string section, kernel_note() the next string: libbpf
ignores both), and only when no one but root can have written it: the file
and every directory up to / owned by root and writable by no one else, no
symlinks. Anything else is regenerated or, where the directory cannot be
trusted, not used at all. The note says what the kernel's BTF had when the
file was made: the iterators' attach points, and which KERNEL_FUNCS the
kernel has (what --backend auto asks of a kernel: host/probe.py).
"""

from __future__ import annotations

import os
import stat
import struct
from typing import NamedTuple

try:
    from _blake2 import blake2b     # what hashlib wraps: without its OpenSSL import (~3 ms)
except ImportError:                 # pragma: no cover (another Python)
    from hashlib import blake2b

CACHE_DIR = "/var/cache/sockterm"
CACHE_ENV = "SOCKTERM_CACHE_DIR"        # tests and benchmarks; "" turns the cache off
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
KERNEL_NOTES = "/sys/kernel/notes"
# the file's format, in its key and name (a sockterm of another format
# neither reads it nor replaces it); 2: the note records KERNEL_FUNCS
FORMAT = 2
KEY_PREFIX = b"sockterm-core-btf-%d:" % FORMAT
# iter/tcp=63714;iter/udp=63733;kfunc/bpf_sock_destroy=71234 (kernel BTF ids)
NOTE_PREFIX = b"sockterm-kernel:"
ITER_SECTION, KFUNC_ITEM = "iter/", "kfunc/"
# the kfuncs whose presence the note records, for whichever object: what
# --backend auto asks of a kernel (host/probe.py), known without a search
KERNEL_FUNCS = ("bpf_sock_destroy",)

HEADER = struct.Struct("<HBBIIIII")     # struct btf_header
BTF_MAGIC = 0xEB9F


class Unsupported(Exception):
    """This object or kernel BTF cannot be minimized here (libbpf reads the kernel's)."""


def kernel_note(points: dict[str, int], kfuncs: dict[str, int]) -> bytes:
    """What the cached file says of its kernel, after the key: the attach
    points, and which KERNEL_FUNCS the kernel has (id, 0 for none)."""
    items = sorted(points.items()) + sorted((KFUNC_ITEM + name, tid) for name, tid in kfuncs.items())
    return NOTE_PREFIX + b";".join(f"{item}={tid}".encode("latin-1") for item, tid in items)


def parse_note(note: bytes) -> tuple[dict[str, int], dict[str, int]]:
    """kernel_note() read back: (attach points, kernel functions); ({}, {})
    for anything else."""
    if not note.startswith(NOTE_PREFIX):
        return {}, {}
    points, kfuncs = {}, {}
    for item in note[len(NOTE_PREFIX):].split(b";"):
        name, _, tid = item.decode("latin-1").partition("=")
        if not tid.isdigit():
            return {}, {}
        if name.startswith(ITER_SECTION) and int(tid) > 0:
            points[name] = int(tid)
        elif name.startswith(KFUNC_ITEM) and len(name) > len(KFUNC_ITEM):
            kfuncs[name[len(KFUNC_ITEM):]] = int(tid)
        else:
            return {}, {}
    return points, kfuncs


# -- the cache ------------------------------------------------------------------

def build_id(notes: bytes) -> bytes:
    """The GNU build id among the kernel's ELF notes (b'' when absent)."""
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, kind = struct.unpack_from("<III", notes, pos)
        name_at = pos + 12
        desc_at = name_at + (namesz + 3 & ~3)
        if kind == 3 and notes[name_at:name_at + namesz].rstrip(b"\0") == b"GNU":
            return notes[desc_at:desc_at + descsz]
        pos = desc_at + (descsz + 3 & ~3)
    return b""


def digest(data: bytes) -> str:
    return blake2b(data, digest_size=32).hexdigest()


def cache_key(obj: bytes, notes_path: str = KERNEL_NOTES, btf_path: str = VMLINUX_BTF) -> bytes:
    """What a cached BTF is good for: this kernel (build id, release, version,
    BTF size) and this object (its hash). Empty when the kernel has no build id."""
    try:
        with open(notes_path, "rb") as f:
            bid = build_id(f.read())
        btf_size = os.stat(btf_path).st_size
    except OSError:
        return b""
    if not bid:
        return b""
    uts = os.uname()
    kernel = b"|".join([bid.hex().encode(), uts.release.encode(), uts.version.encode(),
                        str(btf_size).encode()])
    return KEY_PREFIX + digest(kernel).encode() + b":" + digest(obj).encode()


def trusted_dir(path: str) -> str:
    """'' when only root can have written path (a directory) and every directory
    above it: owned by root, writable by no one else, no symlink; else why not."""
    parts = os.path.abspath(path).split("/")
    for i in range(len(parts), 0, -1):
        here = "/".join(parts[:i]) or "/"
        try:
            st = os.lstat(here)
        except OSError as exc:
            return f"{here}: {exc.strerror}"
        if not stat.S_ISDIR(st.st_mode):
            return f"{here} is not a directory"
        if st.st_uid != 0 or st.st_mode & 0o022:
            return f"{here} can be written by others than root"
    return ""


class CustomBtf(NamedTuple):
    """A minimized BTF on disk, and what its note says of the kernel."""
    path: str
    attach: dict      # section -> kernel BTF id (btfmin.attach_points())
    kfuncs: dict      # KERNEL_FUNCS name -> kernel BTF id, 0: the kernel has none


def strings(data) -> tuple[int, int]:
    """Where a BTF's string section starts and ends in data."""
    if len(data) < HEADER.size:
        raise Unsupported("BTF too short")
    magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
    if magic != BTF_MAGIC or hdr_len + max(type_off + type_len, str_off + str_len) > len(data):
        raise Unsupported("not BTF (or not little-endian)")
    return hdr_len + str_off, hdr_len + str_off + str_len


def _note(data, key: bytes) -> bytes:
    """The string after the key (b'' when the file has none)."""
    str_at, str_end = strings(data)
    start = str_at + len(key) + 2
    end = data.find(b"\0", start, str_end)
    return bytes(data[start:end]) if end >= 0 else b""


def _read_cached(path: str, key: bytes) -> tuple[str, CustomBtf | None]:
    """('', what it holds) when the file at path is root's alone and holds
    key; else (why not, None)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        return exc.strerror, None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            return "not a regular file that only root can write", None
        data = os.read(fd, st.st_size + 1)
    finally:
        os.close(fd)
    try:
        str_at, str_end = strings(data)
    except Unsupported as exc:
        return str(exc), None
    if len(data) != str_end or data[str_at:str_at + len(key) + 2] != b"\0" + key + b"\0":
        return "made for another kernel or object", None
    return "", CustomBtf(path, *parse_note(_note(data, key)))


def _write(path: str, data: bytes) -> None:
    """Atomically (a reader sees the old file or the whole new one), in a
    directory _writable() made."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _writable(directory: str) -> bool:
    """Can a file be made in directory (made if missing)? False on a
    read-only file system, root or not."""
    try:
        os.makedirs(directory, mode=0o755, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def _identity(path: str):
    """What changes when the file at path is written, replaced, chmod-ed or
    chown-ed, or a directory's entries change (None: it is not there)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


# custom_btf()'s answers in this process: (object, directory, kernel paths)
# -> (the identities of the object, the directory and the file it was
# decided on, the answer). The probe asks first (--backend auto), the
# engine's load next; anything changed since is looked at again.
_seen: dict[tuple, tuple] = {}


def custom_btf(object_path: str, log=lambda msg: None, directory: str | None = None,
               btf_path: str = VMLINUX_BTF, notes_path: str = KERNEL_NOTES,
               make: bool = True) -> CustomBtf | None:
    """A minimized BTF for this object on this kernel, made and cached if need
    be (make=False: only one already made); None (libbpf reads the kernel's)
    when there is no cache to trust or the object cannot be minimized."""
    if directory is None:
        directory = os.environ.get(CACHE_ENV, CACHE_DIR)
    if not directory:
        return None
    args = (object_path, directory, btf_path, notes_path)
    seen = _seen.get(args)
    if seen is not None and seen[0] == (_identity(object_path), _identity(directory),
                                        _identity(seen[1].path)):
        log(f"btf cache: CO-RE against {seen[1].path}")
        return seen[1]
    try:
        with open(object_path, "rb") as f:
            obj = f.read()
    except OSError:
        return None
    key = cache_key(obj, notes_path, btf_path)
    if not key:
        log("btf cache: the kernel has no build id; using its full BTF")
        return None
    # the object's, in this format
    path = os.path.join(directory, f"{key.rsplit(b':', 1)[1][:32].decode()}-{FORMAT}.btf")
    why = trusted_dir(directory) if os.path.isdir(directory) else trusted_dir(os.path.dirname(directory))
    if why:
        log(f"btf cache: not used ({why})")
        return None
    ids = (_identity(object_path), _identity(directory), _identity(path))
    why, found = _read_cached(path, key)
    if found is not None:
        log(f"btf cache: CO-RE against {path}")
    elif not make:
        return None
    elif not _writable(directory):
        # made on every run and never kept, it would cost more (~150 ms) than
        # libbpf's read of the kernel's BTF (~20 ms)
        log(f"btf cache: {path}: {why}; {directory} cannot be written: using the kernel's BTF")
        return None
    else:
        log(f"btf cache: {path}: {why}; regenerating")
        from . import btfmin
        try:
            data = btfmin.minimize(obj, btfmin.kernel_btf(btf_path), key)
            _write(path, data)
        except Unsupported as exc:
            log(f"btf cache: cannot minimize: {exc}")
            return None
        except (struct.error, ValueError, IndexError, KeyError) as exc:
            # a damaged object: libbpf's own open reports it, in its words
            log(f"btf cache: cannot read the object ({exc}); using the kernel's BTF")
            return None
        except OSError as exc:
            log(f"btf cache: cannot write {path}: {exc.strerror}")
            return None
        found = CustomBtf(path, *parse_note(_note(data, key)))
        ids = (_identity(object_path), _identity(directory), _identity(path))
        log(f"btf cache: made {path} ({len(data)} bytes)")
    _seen[args] = (ids, found)
    return found
