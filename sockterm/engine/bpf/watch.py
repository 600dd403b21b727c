"""The watch's event source: bpf/watch.bpf.c loaded, attached, and its ring
buffer read (kill --watch, match --watch; the loop is core/watch.py).

The ring buffer is read here, from Python, through its mmap'd pages, not
with libbpf's ring_buffer__poll: the libbpf that pylibbpf bundles does not
export the ring buffer API, and reading it directly means no C callback
into Python at all (a signal arriving inside one would be swallowed). The
consumer protocol is the kernel's (kernel/bpf/ringbuf.c, as libbpf reads
it): records between the consumer and producer positions, each behind an
8-byte header whose busy bit says it is not committed yet; the data pages
are mapped twice, so a record that wraps reads as one. x86 orders loads,
which is all the reader needs (the objects are built for x86).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct

from ... import model
from .. import EngineError, silent
from . import libbpf, record
from .config import compile_config
from .engine import FAMILIES, PROTO_NAMES, _verifier_reason, object_path

OBJECT_NAME = "watch.bpf.o"
RING_SIZE = 1 << 20                 # ~7,700 events in flight
u32, u64 = ctypes.c_uint32, ctypes.c_uint64

# st_watch_event.hook (bpf/watch.h)
CONNECT, ACTIVE, PASSIVE, UDP, RETRANSMIT = 1, 2, 3, 4, 5

TCP_PROGRAMS = ("st_watch_state", "st_watch_syn_again")
UDP_CONNECT_PROGRAMS = {4: "st_watch_udp4", 6: "st_watch_udp6"}
UDP_SEND_PROGRAM = "st_watch_udp_send"
# the UDP connect operation each family's fexit program attaches to: the
# first the kernel has (Linux >= 6.13 hashes connected sockets in udp_connect)
UDP_TARGETS = {4: ("udp_connect", "ip4_datagram_connect"),
               6: ("udpv6_connect", "ip6_datagram_connect")}


class StWatchEvent(ctypes.Structure):
    _fields_ = [("held", record.StHeld), ("time_ns", u64), ("hook", u32), ("pad", u32)]


class StWatchConfig(ctypes.Structure):
    _fields_ = [("pidns_dev", u64), ("pidns_ino", u64), ("own_tgid", u32), ("pad", u32)]


class StWatchStats(ctypes.Structure):
    _fields_ = [("events", u64), ("lost", u64)]


MIRRORS = {"st_watch_event": StWatchEvent, "st_watch_config": StWatchConfig,
           "st_watch_stats": StWatchStats, "st_held": record.StHeld, "st_rec": record.StRec,
           "st_config": record.StConfig}
EVENT = struct.Struct(record._struct_format(StWatchEvent))
_RING_HEADER = struct.Struct("<II")
_POS = struct.Struct("<Q")
_BUSY, _DISCARD = 1 << 31, 1 << 30

_BIND = {
    "bpf_program__attach": (ctypes.c_void_p, [ctypes.c_void_p]),
    "bpf_program__set_attach_target": (ctypes.c_int, [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p]),
    "btf__load_vmlinux_btf": (ctypes.c_void_p, []),
    "btf__find_by_name_kind": (ctypes.c_int32, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32]),
    "btf__free": (None, [ctypes.c_void_p]),
    "bpf_prog_load": (ctypes.c_int, [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p,
                                     ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]),
}
BTF_KIND_TYPEDEF, BTF_KIND_FUNC = 8, 12
BPF_PROG_TYPE_TRACING, BPF_TRACE_FEXIT = 26, 25


class _ProgLoadOpts(ctypes.Structure):
    """struct bpf_prog_load_opts (libbpf >= 0.7), the fields up to attach_btf_obj_fd."""
    _fields_ = [("sz", ctypes.c_size_t), ("attempts", ctypes.c_int),
                ("expected_attach_type", ctypes.c_int), ("prog_btf_fd", u32),
                ("prog_flags", u32), ("prog_ifindex", u32), ("kern_version", u32),
                ("attach_btf_id", u32), ("attach_prog_fd", u32), ("attach_btf_obj_fd", u32)]


def _fexit_refused(lib, btf_id: int) -> str:
    """Does the kernel take an fexit program (a BPF trampoline) on this
    function? "" if so, else why not: a two-instruction program, loaded and
    closed (some kernels, and VMs, refuse every trampoline)."""
    insns = bytes([0xb7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])   # r0 = 0; exit
    opts = _ProgLoadOpts(sz=ctypes.sizeof(_ProgLoadOpts), expected_attach_type=BPF_TRACE_FEXIT,
                         attach_btf_id=btf_id)
    fd = lib.bpf_prog_load(BPF_PROG_TYPE_TRACING, b"st_watch_probe", b"GPL", insns, 2,
                           ctypes.byref(opts))
    if fd >= 0:
        os.close(fd)
        return ""
    return libbpf.errno_text(-fd)


class Event:
    """One connection the kernel reported: the socket (cookie 0 or sport 0
    when the program could not know them), who connected, when."""

    __slots__ = ("sock", "hook", "time_ns")

    def __init__(self, sock: model.Sock, hook: int, time_ns: int):
        self.sock, self.hook, self.time_ns = sock, hook, time_ns


def decode(buf: bytes) -> Event:
    (cookie, ino, src, dst, uid, _flags, ifindex, sport, dport, family, proto, state, _result,
     cgroup, netns, pid, comm, _fd, _, time_ns, hook) = EVENT.unpack(buf)
    sock = model.Sock(netns, FAMILIES.get(family, family), PROTO_NAMES.get(proto, proto), state,
                      src, sport, dst, dport, cookie, uid, ino, ifindex=ifindex)
    sock.cgroup = cgroup
    # the process that connected holds it; an incoming connection nobody has accepted yet
    sock.processes = ((pid, comm.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")),) \
        if pid else ()
    return Event(sock, hook, time_ns)


def own_pid_namespace() -> tuple[int, int]:
    """(dev, ino) of sockterm's pid namespace as bpf_get_ns_current_pid_tgid
    takes them, or (0, 0) in the initial one (where kthreadd, pid 2, lives),
    whose pids the program reports as they are."""
    try:
        with open("/proc/2/stat") as f:
            line = f.read()
        if line[line.index("(") + 1:line.rindex(")")] == "kthreadd" and \
                line[line.rindex(")") + 2:].split()[1] == "0":
            return 0, 0
    except (OSError, ValueError, IndexError):
        pass
    st = os.stat("/proc/self/ns/pid")
    return (os.major(st.st_dev) << 20) | os.minor(st.st_dev), st.st_ino


class WatchSource:
    """The loaded, attached watch program and its ring buffer. open() raises
    EngineError, in one line, when the kernel cannot give the events."""

    def __init__(self, *, flt, scope, log=silent):
        self.flt, self.scope, self.log = flt, scope, log
        self.lib = None
        self.obj = None
        self.links: list = []
        self.udp = ""                   # how UDP connects are seen: "connect", "send" or ""
        self._targets: dict = {}        # family -> the UDP connect function fexit attaches to
        self._wanted: set = set()       # the programs loaded
        self._ring = None               # (consumer page, producer page + data) mmaps
        self._fd = -1
        self._seen_fd = -1
        self._bss = None
        self._bss_fd = -1

    def open(self) -> None:
        try:
            self.lib = libbpf.load()
        except libbpf.LibbpfUnavailable as exc:
            raise EngineError(str(exc)) from None
        for name, (restype, argtypes) in _BIND.items():
            fn = getattr(self.lib.lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        udp = ""
        if "udp" in self.flt.protos:
            udp = self._udp_mode()
        self._load(udp)
        self.udp = udp
        self._attach()
        self._map_ring()

    def _udp_mode(self) -> str:
        """How this kernel can report UDP connects: "connect" (fexit on the
        connect operations: the UDP_TARGETS it has), else "send" (the first
        send, a tracepoint: Linux >= 6.3); EngineError when neither."""
        lib = self.lib.lib
        btf = lib.btf__load_vmlinux_btf()
        if not btf:
            raise EngineError("cannot read the kernel's BTF (/sys/kernel/btf/vmlinux)")
        try:
            def func(name: str) -> int:
                return lib.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_FUNC)
            self._targets = {fam: next((t for t in names if func(t) > 0), "")
                             for fam, names in UDP_TARGETS.items()}
            first = func(self._targets[4]) if self._targets[4] else 0
            send = lib.btf__find_by_name_kind(btf, b"btf_trace_sock_send_length",
                                              BTF_KIND_TYPEDEF) > 0
        finally:
            lib.btf__free(btf)
        refused = _fexit_refused(lib, first) if first else "no UDP connect function in its BTF"
        if not refused:
            return "connect"
        if send:
            self.log(f"watch: this kernel refuses fexit programs ({refused}): UDP sockets are "
                     "caught at their first send after connect()")
            return "send"
        raise EngineError(f"this kernel cannot report UDP connects (fexit: {refused}; no "
                          "sock_send_length tracepoint before Linux 6.3): add --proto tcp")

    def _load(self, udp_mode: str) -> None:
        lib = self.lib
        path = os.path.join(os.path.dirname(object_path()), OBJECT_NAME)
        self.obj = lib.bpf_object__open_file(path.encode(), None)
        if not self.obj:
            raise EngineError(f"cannot open BPF object {path}: "
                              f"{libbpf.errno_text(ctypes.get_errno())}")
        btf = lib.bpf_object__btf(self.obj)
        problems = [p for name, cls in MIRRORS.items()
                    for p in _mismatch(name, cls, lib.struct_layout(btf, name))]
        if problems:
            raise EngineError("the watch object does not match this sockterm ("
                              + "; ".join(problems) + "): reinstall sockterm")
        cfg = compile_config(self.flt, self.scope, kill=False)
        dev, ino = own_pid_namespace()
        wcfg = StWatchConfig(pidns_dev=dev, pidns_ino=ino, own_tgid=os.getpid())
        for section, value in ((".rodata.cfg", cfg), (".rodata.watch", wcfg)):
            if lib.bpf_map__set_initial_value(self._map(section), ctypes.byref(value),
                                              ctypes.sizeof(value)):
                raise EngineError("cannot configure the watch program")
        lib.bpf_map__set_max_entries(self._map("st_events"), RING_SIZE)
        wanted = set()
        if "tcp" in self.flt.protos:
            wanted.update(TCP_PROGRAMS)
        if udp_mode == "connect":
            for fam in self.flt.families:
                if fam == 6 and not os.path.exists("/proc/sys/net/ipv6"):
                    continue             # no IPv6 in this kernel: no such sockets either
                prog = UDP_CONNECT_PROGRAMS[fam]
                wanted.add(prog)
                target = self._targets.get(fam) or UDP_TARGETS[fam][-1]
                lib.lib.bpf_program__set_attach_target(self._program(prog), 0, target.encode())
        elif udp_mode == "send":
            wanted.add(UDP_SEND_PROGRAM)
        for prog in (*TCP_PROGRAMS, UDP_SEND_PROGRAM, *UDP_CONNECT_PROGRAMS.values()):
            lib.bpf_program__set_autoload(self._program(prog), prog in wanted)
        lib.log.clear()
        err = lib.bpf_object__load(self.obj)
        for line in lib.notices:
            self.log(f"libbpf: {line}")
        lib.notices.clear()
        if err:
            reason = _verifier_reason(lib.log) or next(
                (line.split("libbpf: ", 1)[-1] for line in lib.log if "prog '" in line
                 and "failed to load" in line), "see -v for the libbpf log")
            if "bpf_get_socket_cookie" in reason:
                reason += " (tracing programs have it from Linux 5.12)"
            raise EngineError(f"the kernel refused the watch program ({libbpf.errno_text(-err)}): "
                              f"{reason}")
        self._wanted = wanted

    def _map(self, name: str):
        found = self.lib.bpf_object__find_map_by_name(self.obj, name.encode())
        if not found:
            raise EngineError(f"the watch object has no map {name}: reinstall sockterm")
        return found

    def _program(self, name: str):
        prog = self.lib.bpf_object__find_program_by_name(self.obj, name.encode())
        if not prog:
            raise EngineError(f"the watch object has no program {name}: reinstall sockterm")
        return prog

    def _attach(self) -> None:
        for name in sorted(self._wanted):
            link = self.lib.lib.bpf_program__attach(self._program(name))
            if not link:
                err = ctypes.get_errno()
                self.close()
                raise EngineError(f"cannot attach {name}: {libbpf.errno_text(err)}")
            self.links.append(link)
        self._fd = self.lib.bpf_map__fd(self._map("st_events"))
        self._seen_fd = self.lib.bpf_map__fd(self._map("st_udp_seen"))
        bss = self._map(".bss")
        self._bss_fd = self.lib.bpf_map__fd(bss)
        self._bss = ctypes.create_string_buffer(max(self.lib.bpf_map__value_size(bss),
                                                    ctypes.sizeof(StWatchStats)))

    def _map_ring(self) -> None:
        page = mmap.PAGESIZE
        try:
            consumer = mmap.mmap(self._fd, page, mmap.MAP_SHARED,
                                 mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
            data = mmap.mmap(self._fd, page + 2 * RING_SIZE, mmap.MAP_SHARED, mmap.PROT_READ,
                             offset=page)
        except OSError as exc:
            self.close()
            raise EngineError(f"cannot map the watch's ring buffer: {exc.strerror}") from None
        self._ring = (consumer, data)

    def fileno(self) -> int:
        """Readable (poll/epoll) when events are waiting."""
        return self._fd

    def read(self) -> list[bytes]:
        """Every event committed so far, oldest first (raw: decode() each)."""
        consumer, data = self._ring
        page, mask = mmap.PAGESIZE, RING_SIZE - 1
        pos = _POS.unpack_from(consumer, 0)[0]
        end = _POS.unpack_from(data, 0)[0]
        out = []
        while pos < end:
            at = page + (pos & mask)
            length, _ = _RING_HEADER.unpack_from(data, at)
            if length & _BUSY:
                break                    # reserved, not committed yet: the rest waits
            size = length & ~(_BUSY | _DISCARD)
            if not length & _DISCARD:
                out.append(data[at + 8:at + 8 + size])
            pos += (size + 8 + 7) & ~7
        _POS.pack_into(consumer, 0, pos)
        return out

    def forget(self, cookies) -> None:
        """UDP sockets settled: report them again should they reconnect."""
        if self.udp != "send":
            return
        key = ctypes.c_uint64()
        for cookie in cookies:
            key.value = cookie
            self.lib.bpf_map_delete_elem(self._seen_fd, ctypes.byref(key))

    def stats(self) -> StWatchStats:
        key = ctypes.c_uint32(0)
        if self.lib.bpf_map_lookup_elem(self._bss_fd, ctypes.byref(key), self._bss):
            return StWatchStats()
        return StWatchStats.from_buffer_copy(self._bss)

    def _close_object(self) -> None:
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = None

    def close(self) -> None:
        """Detach and unload: nothing of the watch stays in the kernel."""
        if self.lib is None:
            return
        if self._ring is not None:
            for mapped in self._ring:
                mapped.close()
            self._ring = None
        while self.links:
            self.lib.bpf_link__destroy(self.links.pop())
        self._close_object()


def _mismatch(name: str, cls, theirs) -> list[str]:
    if theirs is None:
        return [f"struct {name} is missing from the watch object"]
    if theirs != record.layout(cls):
        return [f"struct {name}: object has {theirs}, sockterm expects {record.layout(cls)}"]
    return []

