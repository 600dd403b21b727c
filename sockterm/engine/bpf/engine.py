"""The BPF engine: CO-RE socket iterators that filter, and in kill mode
destroy, inside the kernel; one iterator pass per namespace. And the one
pass (held()): every socket every process holds, host-wide, in one
iter/task_file pass, with what each namespace's processes hold in all.

The object is loaded and its iterators attached once per run; each namespace
costs an iterator creation (in the worker thread, inside the namespace) and
the reads of its matches.
"""

from __future__ import annotations

import _socket       # the socket module's C half (see model.py)
import ctypes
import errno
import os
import re
import struct

from ... import model
from . import btfcache, libbpf, record
from .config import compile_config
from .objects import OBJECT_NAME, READ_OBJECT_NAME, object_path  # noqa: F401 (also theirs)
from .. import EngineError, HostFacts, silent

READ_SIZE = 1 << 16          # the kernel fills at most one 32 KiB seq buffer per read
PROGRAMS = {"tcp": "st_tcp", "udp": "st_udp"}
# the builds that also read a socket's namespace and cgroup (--cgroup, --container, --pod)
SCOPED_PROGRAMS = {"tcp": "st_tcp_scoped", "udp": "st_udp_scoped"}
HELD_PROGRAMS = {False: "st_held", True: "st_held_scoped"}       # the one pass: by scoped
PROTO_NAMES = {_socket.IPPROTO_TCP: "tcp", _socket.IPPROTO_UDP: "udp"}
FAMILIES = {_socket.AF_INET: 4, _socket.AF_INET6: 6}


def decode(buf, ns: model.Namespace) -> list[model.Sock]:
    """st_rec records -> Sock objects (positional: this is the per-socket hot path)."""
    Sock, results, name, ino = model.Sock, _RESULTS, ns.name, ns.ino
    protos, families, mini = PROTO_NAMES, FAMILIES, record.F_MINI
    return [Sock(ino, families.get(family, family), protos.get(proto, proto), state, src, sport,
                 dst, dport, cookie, uid, sock_ino, results[result], 0, name, bool(flags & mini),
                 ifindex)
            for (cookie, sock_ino, src, dst, uid, flags, ifindex, sport, dport, family,
                 proto, state, result) in record.REC.iter_unpack(buf)]


_RESULTS = {record.RES_MATCHED: model.MATCHED, record.RES_DESTROYED: model.KILLED,
            record.RES_DEFERRED: model.DEFERRED}


def decode_held(buf, names: dict, found: dict, processes: bool) -> None:
    """st_held records -> Sock objects in found (socket inode -> Sock): one
    per socket, its holders merged (a socket comes once per descriptor), with
    a descriptor of each (what kill --graceful duplicates).
    Keyed by inode: the pass reads a cookie only where the kernel made one
    already (0 otherwise, see held_cookie in the program)."""
    Sock, MATCHED = model.Sock, model.MATCHED
    protos, families = PROTO_NAMES, FAMILIES
    alone: dict = {}
    for (cookie, sock_ino, src, dst, uid, _flags, ifindex, sport, dport, family, proto,
         state, _result, cgroup, ns_ino, pid, raw, fd, _) in record.HELD.iter_unpack(buf):
        sock = found.get(sock_ino)
        if sock is None:
            sock = found[sock_ino] = Sock(ns_ino, families.get(family, family), protos.get(proto, proto),
                                        state, src, sport, dst, dport, cookie, uid, sock_ino,
                                        MATCHED, 0, names.get(ns_ino, ""), False, ifindex)
            sock.cgroup = cgroup
        if not processes:
            continue
        holder = alone.get((pid, raw))
        if holder is None:
            holder = alone[(pid, raw)] = ((pid, raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")),)
        if sock.processes is None:
            sock.processes, sock.fds = holder, ((pid, fd),)
        elif holder[0] not in sock.processes:
            sock.processes = tuple(sorted(sock.processes + holder))     # pid order
            sock.fds += ((pid, fd),)


# What each program gives a run; a capability whose program the kernel
# refuses is lost alone (BpfEngine.lost), the rest still loads.
ENUMERATE = "enumerate"      # socket iterators: walk a namespace's tables
ONE_PASS = "one-pass"        # iter/task_file: every held socket host-wide, and who holds it
# SOCKTERM_TEST_REFUSE=enumerate,one-pass: load a program every verifier
# refuses in place of the capability's own (tests of the degradation)
_REFUSED_STANDINS = {ENUMERATE: "st_refused_tcp", ONE_PASS: "st_refused_task_file"}
_WHAT = {ENUMERATE: "the socket iterators", ONE_PASS: "the one-pass program"}
_FAILED_PROGRAM = r"prog '([^']+)': failed to load"     # compiled where a load failed


# each st_held record's namespace, and nothing else
_HELD_NETNS = struct.Struct(f"<{record.StHeld.netns.offset}xI"
                            f"{record.HELD.size - record.StHeld.netns.offset - 4}x")


# each st_held record's cookie and socket inode
_HELD_COOKIE_INO = struct.Struct(f"<QQ{record.HELD.size - 16}x")


def uncookied(runs) -> int:
    """How many sockets of these st_held records have no cookie yet (0: the
    kernel had not made one when the pass read it)."""
    return len({ino for run in runs for cookie, ino in _HELD_COOKIE_INO.iter_unpack(run)
                if not cookie})


def split_by_namespace(chunks) -> dict:
    """st_held records -> netns inode -> runs of its records (bytes of whole
    records), decoded only when the namespace's turn comes: half a million
    sockets decoded at once would hold ~300 MB of Sock objects, as records
    they take 120 bytes each. A process's descriptors come in order, so runs
    are long: a chunk is a few slices, often none (a chunk of one namespace
    is kept as it is). `chunks` is consumed as it comes: a chunk that spans
    namespaces is let go once its slices are copied (read whole first, every
    such chunk stayed beside its copies until the split ended)."""
    out: dict = {}
    size = record.HELD.size
    for chunk in chunks:
        start, current = 0, None
        for i, (ino,) in enumerate(_HELD_NETNS.iter_unpack(chunk)):
            if ino != current:
                if current is not None:
                    out.setdefault(current, []).append(chunk[start * size:i * size])
                start, current = i, ino
        if current is not None:
            out.setdefault(current, []).append(chunk[start * size:])
    return out


class BpfEngine:
    name = "bpf"

    def __init__(self, *, flt, scope, kill: bool, owners: bool = True, walks: bool = True,
                 held: bool = False, log=silent, host: HostFacts | None = None):
        self.flt = flt
        self.host = host or HostFacts.here()
        self.scope = scope
        self.kill = kill
        self.attributes = owners            # owners() will be asked: load st_held
        self.walks = walks                  # enter()/read() will be asked: load the iterators
        self.one_pass = held                # held() will be asked: load st_held
        self.lost: dict[str, str] = {}      # capability -> why the kernel refused its program
        self.log = log
        self.lib = None
        self.obj = None
        self.links: dict[str, int] = {}     # proto -> link pointer
        self.link_fds: dict[str, int] = {}
        self.held_link = None
        self._held: model.Held | None = None
        self._probe = None                  # a socket held through one descriptor (see held())
        self._errors_fd = -1
        self._cookies_fd = -1
        self._stats_map = -1
        self.warnings: list[str] = []
        self._bss_buf = None
        self._entries: dict = {}
        self._opts = None                   # bpf_object_open_opts (kept alive while loading)
        self._owner_pass = None             # owners(): the pass's own engine, loaded on first ask

    @property
    def destroys_while_reading(self) -> bool:
        return self.kill          # the kfunc runs inside the iterator

    # -- setup ---------------------------------------------------------------
    def open(self) -> None:
        """Load what the run asked for. A program the kernel refuses loses its
        capability alone (lost, walks, one_pass say what is left): the object
        is loaded again without it. Only a refusal of everything, or a failure
        that is no one program's (privileges, maps), fails the engine."""
        try:
            self.lib = lib = libbpf.load()
        except libbpf.LibbpfUnavailable as exc:
            raise EngineError(str(exc)) from None
        self.log(f"bpf: libbpf {lib.version} from {lib.path}")
        # the kfunc only where the iterators destroy: resolving it costs a read
        # of the kernel's whole BTF
        path = object_path(OBJECT_NAME if self.kill and self.walks else READ_OBJECT_NAME)
        if not os.path.exists(path):
            raise EngineError(f"BPF object missing at {path}: reinstall sockterm")
        wanted = self._wanted()
        # libbpf's messages are callbacks into Python (~840 in an open and
        # load, ~0.7 ms): where nobody reads the log, only a failure's
        quiet = self.log is silent
        while True:
            with lib.printing(not quiet):
                self._open_object(path, wanted)
                lib.log.clear()
                err = lib.bpf_object__load(self.obj)
            for line in lib.notices:
                self.log(f"libbpf: {line}")
            lib.notices.clear()
            if not err:
                break
            if quiet:
                # the same open and load again, for libbpf's words on why
                quiet = False
                lib.bpf_object__close(self.obj)
                self.obj = None
                continue
            refused = _refused_program(lib.log, wanted)
            if refused is None:
                raise self._load_error(-err)
            capability = wanted[refused]
            self.lost[capability] = _verifier_reason(lib.log)
            self.log(f"bpf: the kernel refused {refused} ({capability}): {self.lost[capability]}")
            wanted = {prog: cap for prog, cap in wanted.items() if cap != capability}
            lib.bpf_object__close(self.obj)
            self.obj = None
            if not wanted:
                raise EngineError("the kernel refused " + " and ".join(
                    f"{_WHAT[cap]} ({why})" for cap, why in self.lost.items()))
        self.walks = self.walks and ENUMERATE not in self.lost
        self.one_pass = self.one_pass and ONE_PASS not in self.lost
        self.attributes = self.attributes and ONE_PASS not in self.lost
        for proto, prog_name in self._programs().items():
            if proto in self.flt.protos and self.walks:
                self.links[proto] = self._attach(prog_name)
                self.link_fds[proto] = lib.bpf_link__fd(self.links[proto])
        self._errors_fd = lib.bpf_map__fd(self._map("st_kill_errors"))
        self._cookies_fd = lib.bpf_map__fd(self._map("st_cookies"))
        bss = self._map(".bss")
        self._stats_map = lib.bpf_map__fd(bss)
        # .bss holds more than the stats: a lookup writes the whole value
        self._bss_buf = ctypes.create_string_buffer(max(lib.bpf_map__value_size(bss),
                                                        ctypes.sizeof(record.StStats)))
        self._fill_maps()

    def _wanted(self) -> dict[str, str]:
        """program name -> the capability it gives: only what the run uses is
        loaded and verified."""
        wanted = {}
        if self.walks:
            for proto, prog in self._programs().items():
                if proto in self.flt.protos:
                    wanted[prog] = ENUMERATE
        if self._loads_held():
            wanted[self._held_program()] = ONE_PASS
        refuse = os.environ.get("SOCKTERM_TEST_REFUSE", "")
        for capability in filter(None, refuse.split(",")):
            if capability in wanted.values() and capability in _REFUSED_STANDINS:
                wanted[_REFUSED_STANDINS[capability]] = capability
        return wanted

    def _open_object(self, path: str, wanted: dict) -> None:
        lib = self.lib
        if self._opts is None:
            # CO-RE against a minimized kernel BTF, cached per kernel and object,
            # with the iterators' attach points in this kernel (btfcache.py)
            custom = btfcache.custom_btf(path, self.log)
            self._opts = libbpf.open_opts(custom and custom.path)
            if custom:
                lib.attach_by_id(custom.attach)     # before the open: libbpf types programs there
        self.obj = lib.bpf_object__open_file(path.encode(), self._opts)
        if not self.obj:
            raise EngineError(f"cannot open BPF object {path}: {self._why(ctypes.get_errno())}")
        btf = lib.bpf_object__btf(self.obj)
        problems = record.layout_mismatches(lambda name: lib.struct_layout(btf, name))
        if problems:
            raise EngineError("the BPF object does not match this sockterm ("
                              + "; ".join(problems) + "): reinstall sockterm")
        self._configure(wanted)

    def _map(self, name: str):
        found = self.lib.bpf_object__find_map_by_name(self.obj, name.encode())
        if not found:
            raise EngineError(f"the BPF object has no map {name}: reinstall sockterm")
        return found

    def _configure(self, wanted: dict) -> None:
        lib, scope = self.lib, self.scope
        cfg = compile_config(self.flt, scope, self.kill)
        if self._loads_held():
            if self._probe is None:
                self._probe = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
            cfg.probe_ino = os.fstat(self._probe.fileno()).st_ino
        err = lib.bpf_map__set_initial_value(self._map(".rodata.cfg"), ctypes.byref(cfg),
                                             ctypes.sizeof(cfg))
        if err:
            raise EngineError(f"cannot set the BPF filter: {self._why(-err)}")
        self._entries = self._map_entries()
        for name, entries in self._entries.items():
            lib.bpf_map__set_max_entries(self._map(name), max(1, len(entries)))
        lib.bpf_map__set_max_entries(self._map("st_ns"), max(1, len(scope.namespaces or ())))
        if not (self.kill and self.walks):
            # no iterator destroys (the one pass never does): nothing to
            # record, and a 16,384-entry hash map costs its creation ~0.7 ms
            lib.bpf_map__set_max_entries(self._map("st_kill_errors"), 1)
        if not self._loads_held():
            # libbpf creates every map of the object, used or not
            lib.bpf_map__set_max_entries(self._map("st_shared"), 1)
        else:
            # one entry per descriptor table the pass visits (a process's);
            # a full map makes the pass's counts untrusted, not wrong
            tables = sum(1 for entry in os.scandir("/proc") if entry.name.isdigit())
            lib.bpf_map__set_max_entries(self._map("st_files"), 2 * tables + 1024)
        for prog_name in (*PROGRAMS.values(), *SCOPED_PROGRAMS.values(), *HELD_PROGRAMS.values(),
                          *_REFUSED_STANDINS.values()):
            prog = lib.bpf_object__find_program_by_name(self.obj, prog_name.encode())
            lib.bpf_program__set_autoload(prog, prog_name in wanted)

    def _loads_held(self) -> bool:
        """The one pass's program loads with the rest where held() will be
        asked, or owners() before the reads (a kill's); a listing's owners()
        loads it only once something matched (owners())."""
        return self.one_pass or (self.attributes and self.kill)

    def _scoped(self) -> bool:
        scope = self.scope
        return scope.cgroup_ids is not None or scope.owned_netns is not None

    def _programs(self) -> dict[str, str]:
        """proto -> the socket program this run loads: the scoped build only
        when --cgroup, --container or --pod need a socket's namespace and cgroup."""
        return SCOPED_PROGRAMS if self._scoped() else PROGRAMS

    def _held_program(self) -> str:
        return HELD_PROGRAMS[self._scoped()]

    def _map_entries(self) -> dict[str, dict[int, int]]:
        """map name -> {key: value bits}: the inode map (process filter, own
        sockets, --container/--pod holders), the cookie map (confirmed
        sockets), the cgroup map and the namespace map (--cgroup, --container/--pod)."""
        scope = self.scope
        maps: dict[str, dict[int, int]] = {"st_inodes": {}, "st_cookies": {}, "st_cgroups": {},
                                           "st_netns": {}}
        marks = [("st_inodes", scope.inodes or (), record.INO_SELECT),
                 ("st_inodes", scope.exclude_inodes, record.INO_EXCLUDE),
                 ("st_inodes", scope.owned_inodes, record.INO_SCOPE),
                 ("st_cookies", scope.cookies or (), 1),
                 ("st_cgroups", scope.cgroup_ids or (), record.CG_SELECT),
                 ("st_cgroups", scope.owned_cgroups, record.CG_SCOPE),
                 ("st_netns", scope.owned_netns or (), 1)]
        for name, keys, mark in marks:
            entries = maps[name]
            for key in keys:
                entries[key] = entries.get(key, 0) | mark
        return maps

    def _fill_maps(self) -> None:
        """Fill the maps _map_entries() sized."""
        val = ctypes.c_uint8()
        for map_name, entries in self._entries.items():
            key = ctypes.c_uint32() if map_name == "st_netns" else ctypes.c_uint64()
            fd = self.lib.bpf_map__fd(self._map(map_name))
            for value, mark in entries.items():
                key.value, val.value = value, mark
                if self.lib.bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(val), 0):
                    raise EngineError(f"cannot fill {map_name}: {self._why(ctypes.get_errno())}")

    def _update(self, fd: int, keys, mark: int) -> None:
        key, val = ctypes.c_uint64(), ctypes.c_uint8(mark)
        for value in keys:
            key.value = value
            if self.lib.bpf_map_update_elem(fd, ctypes.byref(key), ctypes.byref(val), 0):
                raise EngineError(f"cannot fill a BPF map: {self._why(ctypes.get_errno())}")

    def pin(self, cookies) -> None:
        """Restrict the next reads to these cookies (a subset of the run's
        Scope.cookies: the map was sized for those)."""
        key, nxt = ctypes.c_uint64(), ctypes.c_uint64()
        stale = []
        prev = None
        while self.lib.bpf_map_get_next_key(self._cookies_fd, prev, ctypes.byref(nxt)) == 0:
            stale.append(nxt.value)
            key.value = nxt.value
            prev = ctypes.byref(key)
        for value in stale:
            key.value = value
            self.lib.bpf_map_delete_elem(self._cookies_fd, ctypes.byref(key))
        self._update(self._cookies_fd, cookies, 1)

    def _attach(self, prog_name: str):
        prog = self.lib.bpf_object__find_program_by_name(self.obj, prog_name.encode())
        link = self.lib.bpf_program__attach_iter(prog, None)
        if not link:
            raise EngineError(f"cannot attach the {prog_name} iterator: {self._why(ctypes.get_errno())}")
        return link

    def _why(self, err: int) -> str:
        return libbpf.errno_text(err)

    def _load_error(self, err: int) -> EngineError:
        reason = _verifier_reason(self.lib.log)
        if err in (errno.EPERM, errno.EACCES) and not reason:
            return EngineError("loading BPF programs needs CAP_BPF and CAP_PERFMON "
                               "(or CAP_SYS_ADMIN): run as root")
        return EngineError(f"the kernel refused the BPF programs ({self._why(err)}): "
                           f"{reason or 'see -v for the libbpf log'}")

    # -- per namespace ---------------------------------------------------------
    def enter(self):
        """Inside the namespace: one iterator per protocol with sockets (None: none)."""
        busy = self.host.busy_protocols()
        fds = []
        for proto, link_fd in self.link_fds.items():
            if proto not in busy:
                continue
            fd = self.lib.bpf_iter_create(link_fd)
            if fd < 0:
                for opened in fds:
                    os.close(opened)
                raise OSError(-fd, f"cannot create the {proto} iterator: {self._why(-fd)}")
            fds.append(fd)
        return fds or None

    def read(self, fds, ns: model.Namespace):
        """Batches of matching sockets, one per read(); in kill mode the kfunc
        destroyed each (after its record was written) before the read
        returned, so a caller that stops asking stops the destroys."""
        for fd in fds:
            for chunk in _read_all(fd):
                yield decode(chunk, ns)

    def destroy(self, fds, socks: list[model.Sock], stop=None) -> None:
        """Reading destroyed them: turn 'destroy was called' into the truth.
        TIME_WAIT and request sockets stay DEFERRED (no kfunc for them)."""
        stats = self.stats()
        if stats.errors_lost and not self.warnings:
            self.warnings.append(f"{stats.errors_lost} failed destroys did not fit in the error "
                                 "map: some sockets reported killed may have survived")
        if not stats.destroy_failed:
            return
        key, val = ctypes.c_uint64(), ctypes.c_int32()
        lookup, fd = self.lib.bpf_map_lookup_elem, self._errors_fd
        for sock in socks:
            if sock.result == model.KILLED:
                key.value = sock.cookie
                if lookup(fd, ctypes.byref(key), ctypes.byref(val)) == 0:
                    model.set_error(sock, -val.value)

    def release(self, fds) -> None:
        for fd in fds:
            os.close(fd)

    def stats(self) -> record.StStats:
        """The programs' counters (struct st_stats starts the .bss section)."""
        key = ctypes.c_uint32(0)
        if self.lib.bpf_map_lookup_elem(self._stats_map, ctypes.byref(key), self._bss_buf):
            raise EngineError(f"cannot read the BPF counters: {self._why(ctypes.get_errno())}")
        return record.StStats.from_buffer_copy(self._bss_buf)

    # -- host-wide -------------------------------------------------------------
    def held(self, namespaces=None) -> model.Held:
        """The one pass: every socket the filter selects that a process holds,
        in every namespace of the run's Scope, with its holders; and per
        namespace, what its processes hold in all (st_ns_held), each socket
        counted once. One iter/task_file pass over every process's
        descriptors, whatever the number of namespaces. Run once per engine;
        namespaces (model.Namespace, within the Scope's) name the sockets."""
        if self._held is not None:
            return self._held
        lib = self.lib
        if self.held_link is None:
            self.held_link = self._attach(self._held_program())
        counts_fd = lib.bpf_map__fd(self._map("st_ns"))
        key, zero = ctypes.c_uint32(), record.StNsHeld()
        inodes = sorted(self.scope.namespaces or ())
        for ino in inodes:
            key.value = ino
            if lib.bpf_map_update_elem(counts_fd, ctypes.byref(key), ctypes.byref(zero), 0):
                raise EngineError(f"cannot fill a BPF map: {self._why(ctypes.get_errno())}")
        fd = lib.bpf_iter_create(lib.bpf_link__fd(self.held_link))
        if fd < 0:
            raise EngineError(f"cannot walk processes: {self._why(-fd)}")
        try:
            runs = split_by_namespace(_read_all(fd, record.HELD.size))
        finally:
            os.close(fd)
        names = {ns.ino: ns.name for ns in namespaces or ()}
        records = sum(len(run) for ns_runs in runs.values() for run in ns_runs) // record.HELD.size

        def decode(runs) -> list:
            found: dict = {}
            for run in runs:
                decode_held(run, names, found, self.attributes)
            return list(found.values())
        counts = {}
        value = record.StNsHeld()
        for ino in inodes:
            key.value = ino
            if lib.bpf_map_lookup_elem(counts_fd, ctypes.byref(key), ctypes.byref(value)) == 0:
                counts[ino] = model.HeldCounts(value.tcp, value.udp, value.pending, value.backlog)
        stats = self.stats()
        why = ""
        if stats.held_lost:
            why = "the pass could not tell whether it had seen some sockets before (map full)"
        elif stats.probe_refs != record.ONE_HOLDER_REFS:
            why = (f"the kernel showed {stats.probe_refs} references on a socket held once "
                   f"(expected {record.ONE_HOLDER_REFS}): shared sockets cannot be told apart")
        self._held = model.Held(runs, decode, counts, why, records, uncookied)
        return self._held

    def owners(self) -> model.Owners:
        """Who holds the sockets the filter selects, every process on the host,
        in one kernel pass (the one pass's records); from /proc where the
        kernel refused that pass. A listing without the one pass asks only
        once something matched: its program is loaded then, by an engine of
        its own (its verification, ~4 ms, and maps are not paid by a listing
        that finds nothing)."""
        if not self.attributes:
            return self.host.owners()
        if self._loads_held():          # loaded with the rest (a refusal cleared attributes)
            return self.held().owners()
        if self._owner_pass is None:
            source = BpfEngine(flt=self.flt, scope=self.scope, kill=False, owners=True,
                               walks=False, held=True, log=self.log, host=self.host)
            try:
                source.open()
            except EngineError as exc:      # as when the pass is refused with the rest
                source.close()
                self.log(f"bpf: processes from /proc ({exc})")
                self.attributes = False
                return self.host.owners()
            self._owner_pass = source
        return self._owner_pass.owners()

    def close(self) -> None:
        if self._owner_pass is not None:
            self._owner_pass.close()
            self._owner_pass = None
        if self.lib is None:
            return
        for link in [*self.links.values(), self.held_link]:
            if link:
                self.lib.bpf_link__destroy(link)
        self.links.clear()
        self.held_link = None
        if self._probe is not None:
            self._probe.close()
            self._probe = None
        if self.obj:
            self.lib.bpf_object__close(self.obj)
            self.obj = None


def _refused_program(log: list[str], wanted: dict) -> str | None:
    """The program of `wanted` the verifier refused, per libbpf's log; None
    when the failure is no one program's (no verifier log: privileges,
    maps, the object itself)."""
    if not _verifier_reason(log):
        return None
    for line in reversed(log):
        found = re.search(_FAILED_PROGRAM, line)
        if found:
            return found.group(1) if found.group(1) in wanted else None
    return None


def _verifier_reason(log: list[str]) -> str:
    """The verifier's complaint: the line before its 'processed N insns' summary."""
    for i in range(len(log) - 1, 0, -1):
        if log[i].startswith("processed ") and " insns" in log[i]:
            return log[i - 1].strip()
    return ""


def _read_all(fd: int, size: int = record.REC.size):
    """Whole-record chunks from an iterator fd until it is exhausted."""
    rest = b""
    while True:
        try:
            chunk = os.read(fd, READ_SIZE)
        except InterruptedError:
            continue
        if not chunk:
            break
        if rest:
            chunk, rest = rest + chunk, b""
        cut = len(chunk) - len(chunk) % size
        if cut != len(chunk):
            chunk, rest = chunk[:cut], chunk[cut:]
        if chunk:
            yield chunk
