"""The diag engine: NETLINK_SOCK_DIAG dumps filtered in the kernel by
INET_DIAG bytecode, and one SOCK_DESTROY per match, as `ss -K` does.

Per namespace one NETLINK_SOCK_DIAG socket is created inside it (a netlink
socket's namespace is fixed at creation) and then used from the main thread
for the dumps and the destroys. The Filter is compiled once into bytecode;
only matching sockets cross into Python, where Filter.matches() checks each
again before anything is destroyed.

SO_REUSEPORT: the kernel resolves a destroy request by a socket lookup, which
for a reuseport group picks one member by hashing the request's remote
address/port; the cookie check then refuses any other member. A server socket
(no peer) that is refused is retried with other remote ports until the lookup
lands on it, a bounded number of times.
"""

from __future__ import annotations

import errno
import random
import socket

from .. import model, netns, procs
from .. import states as st
from ..exitcodes import ExitCode
from . import EngineError

_nl = None


def nl():
    """sockterm.netlink_diag, imported on first use (it imports pyroute2)."""
    global _nl
    if _nl is None:
        try:
            from .. import netlink_diag
        except ImportError as exc:
            raise EngineError(f"the diag engine needs pyroute2 ({exc}): pip install pyroute2") from None
        _nl = netlink_diag
    return _nl


AF = {4: socket.AF_INET, 6: socket.AF_INET6}
PROTO_NUMS = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}
PROTO_NAMES = {v: k for k, v in PROTO_NUMS.items()}
TCPF_NEW_SYN_RECV = 1 << st.NEW_SYN_RECV
_V4_PREFIX = b"\0" * 10 + b"\xff\xff"
_ZERO16 = bytes(16)
_MAPPED_NET_BITS = int.from_bytes(_V4_PREFIX + b"\0\0\0\0", "big")   # ::ffff:0:0/96

RETRY_ERRNOS = (errno.ENOENT, errno.ESTALE)
MIN_ATTEMPTS = 64          # per reuseport member
ATTEMPTS_PER_MEMBER = 24   # 1 - (1 - 1/n)^(24n) > 1 - e^-24
MAX_ATTEMPTS = 4096


# -- the filter as INET_DIAG bytecode ------------------------------------------
#
# Expression tree: ("op", code, payload) is one bytecode condition;
# ("and", [...]) / ("or", [...]); TRUE is ("and", []). Compiled to a linear
# program where every op's `yes` is its own size (fall through) and `no`
# jumps forward to the next alternative, to the end (accept) or four bytes
# past it (reject), which is how ss(8) lays bytecode out and what the
# kernel's inet_diag_bc_audit()/valid_cc() accept.

TRUE = ("and", [])


def _op(code, payload=b""):
    return ("op", code, payload)


def _and(parts):
    parts = [p for p in parts if p != TRUE]
    return parts[0] if len(parts) == 1 else ("and", parts)


def _or(parts):
    if any(p == TRUE for p in parts):
        return TRUE
    return parts[0] if len(parts) == 1 else ("or", parts)


def _hostcond(code, family, prefix_len, addr):
    n = nl()
    return _op(code, n.HOSTCOND.pack(family, prefix_len, 0, -1) + addr)


def addr_tree(side: str, network) -> tuple:
    """One prefix (IPv6 form, IPv4 as ::ffff:a.b.c.d/96+n) as host conditions.

    The kernel compares an AF_INET condition with IPv4 sockets and with
    v4-mapped IPv6 sockets, and an AF_INET6 condition only with IPv6
    sockets, so a prefix inside ::ffff:0:0/96 becomes an AF_INET condition
    and one that covers that range also accepts every IPv4 socket."""
    n = nl()
    code = n.INET_DIAG_BC_S_COND if side == "s" else n.INET_DIAG_BC_D_COND
    plen = network.prefixlen
    if plen == 0:
        return TRUE
    value = int(network.network_address)
    packed = network.network_address.packed
    if plen >= 96 and value >> 32 == _MAPPED_NET_BITS >> 32:
        return _hostcond(code, socket.AF_INET, plen - 96, packed[12:])
    v6 = _hostcond(code, socket.AF_INET6, plen, packed)
    if plen <= 96 and (_MAPPED_NET_BITS >> (128 - plen)) == (value >> (128 - plen)):
        return _or([v6, _hostcond(code, socket.AF_INET, 0, bytes(4))])
    return v6


def port_tree(side: str, rng) -> tuple:
    n = nl()
    ge, le = ((n.INET_DIAG_BC_S_GE, n.INET_DIAG_BC_S_LE) if side == "s"
              else (n.INET_DIAG_BC_D_GE, n.INET_DIAG_BC_D_LE))
    parts = []
    if rng.lo > 0:
        parts.append(_op(ge, n.OP.pack(0, 0, rng.lo)))
    if rng.hi < 65535:
        parts.append(_op(le, n.OP.pack(0, 0, rng.hi)))
    return _and(parts)


def filter_tree(flt) -> tuple:
    clauses = []
    for rules, side in ((flt.dst, "d"), (flt.src, "s")):
        if rules:
            clauses.append(_or([_and([addr_tree(side, r.net), port_tree(side, r.ports)])
                                for r in rules]))
    for ranges, side in ((flt.dport, "d"), (flt.sport, "s")):
        if ranges:
            clauses.append(_or([port_tree(side, r) for r in ranges]))
    return _and(clauses)


def assemble(tree) -> bytes:
    """Lay out an expression tree as bytecode (b'' when it accepts everything)."""
    if tree == TRUE:
        return b""
    items = []              # ("op", code, payload, fail) | ("jmp", target) | ("label", name)
    labels = iter(range(1 << 30))

    def emit(node, fail):
        kind = node[0]
        if kind == "op":
            items.append(("op", node[1], node[2], fail))
        elif kind == "and":
            for part in node[1]:
                emit(part, fail)
        else:
            done = next(labels)
            for part in node[1][:-1]:
                alt = next(labels)
                emit(part, alt)
                items.append(("jmp", done))
                items.append(("label", alt))
            emit(node[1][-1], fail)
            items.append(("label", done))

    emit(tree, "reject")
    where, pos = {}, 0
    for item in items:
        if item[0] == "label":
            where[item[1]] = pos
        else:
            pos += 4 + (len(item[2]) if item[0] == "op" else 0)
    where["reject"] = pos + 4
    n = nl()
    out, pos = bytearray(), 0
    for item in items:
        if item[0] == "label":
            continue
        if item[0] == "jmp":
            out += n.OP.pack(n.INET_DIAG_BC_JMP, 4, where[item[1]] - pos)
            pos += 4
        else:
            _, code, payload, fail = item
            size = 4 + len(payload)
            out += n.OP.pack(code, size, where[fail] - pos) + payload
            pos += size
    return bytes(out)


def compile_bytecode(flt) -> bytes:
    return assemble(filter_tree(flt))


def state_mask(states) -> int:
    mask = 0
    for s in states:
        mask |= 1 << s
    if mask & (1 << st.SYN_RECV):
        mask |= TCPF_NEW_SYN_RECV     # request sockets are TCP_NEW_SYN_RECV inside the kernel
    return mask


# -- decoding ---------------------------------------------------------------------

def decode_rows(rows, proto, ns, flt, exclude):
    """MSG tuples from a dump of `proto` -> the Socks the filter matches."""
    Sock = model.Sock
    matches = flt.matches
    out = []
    fam_num = {socket.AF_INET: 4, socket.AF_INET6: 6}
    ntohs = socket.ntohs
    v4 = _V4_PREFIX
    ns_ino, ns_name = ns.ino, ns.name
    for (length, _t, _f, _s, _p, family, state, timer, _r, sport, dport, src, dst, ifi,
         c0, c1, _e, _rq, _wq, uid, ino) in rows:
        fam = fam_num.get(family)
        if fam == 4:
            src, dst = v4 + src[:4], v4 + dst[:4]
        elif fam is None:
            continue
        sock = Sock(netns=ns_ino, family=fam, proto=proto, state=state, src=src,
                    sport=ntohs(sport), dst=dst, dport=ntohs(dport), cookie=c0 | c1 << 32,
                    uid=uid, ino=ino, netns_name=ns_name,
                    mini=(timer == 3 or state == st.TIME_WAIT
                          or (state == st.SYN_RECV and length <= 96)),
                    ifindex=ifi)
        if not matches(sock) or (ino and ino in exclude):
            continue
        out.append(sock)
    return out


# -- destroying -------------------------------------------------------------------

def _request(sock, *, dport=None) -> bytes:
    n = nl()
    family = AF[sock.family]
    return n.encode_request(
        n.SOCK_DESTROY, n.NLM_F_REQUEST | n.NLM_F_ACK, 0, family=family,
        proto=PROTO_NUMS[sock.proto], states=n.TCPF_ALL,
        sport=sock.sport, dport=sock.dport if dport is None else dport,
        src=n.sockid_addr(sock.src, family), dst=n.sockid_addr(sock.dst, family),
        ifindex=sock.ifindex, cookie=(sock.cookie & 0xFFFFFFFF, sock.cookie >> 32))


def _peerless(sock) -> bool:
    """A server socket: the lookup a destroy does may pick another reuseport member."""
    return sock.dport == 0 and sock.state in (st.LISTEN, st.CLOSE) and (
        sock.dst == _ZERO16 or sock.dst == _V4_PREFIX + b"\0\0\0\0")


def destroy_with(dsock, socks, log=lambda msg: None, rng=None) -> None:
    """SOCK_DESTROY each sock over dsock (a DiagSocket in the sockets' namespace)
    and set its result; server sockets are taken group by group (see
    _destroy_servers). `socks` must be in dump order."""
    if not socks:
        return
    others = [s for s in socks if not _peerless(s)]
    if others:
        errs = dsock.request_acks([_request(s) for s in others])
        for sock, err in zip(others, errs):
            model.set_error(sock, err)
    servers = [s for s in socks if _peerless(s)]
    if servers:
        _destroy_servers(dsock, servers, log, rng or random.Random())


def _local_key(sock) -> tuple:
    family = AF[sock.family]
    return (sock.proto, sock.family, nl().sockid_addr(sock.src, family), sock.sport,
            sock.ifindex)


def _destroy_servers(dsock, servers, log, rng) -> None:
    """Listeners and unconnected UDP sockets, which may share a reuseport group.

    The lookup returns the first socket of the port's hash chain that scores
    best; if it is a group member, the group picks one member by hash. A
    destroyed UDP socket stays hashed where it was but leaves its group, so
    once the chain's first member is destroyed it wins every later lookup
    and shadows the rest. The dump lists a chain head first: destroy each
    group's members last-dumped first, one member per group at a time."""
    groups: dict[tuple, list] = {}
    for sock in servers:
        groups.setdefault(_local_key(sock), []).append(sock)
    waves: list[list] = []
    for members in groups.values():
        for i, sock in enumerate(reversed(members)):
            if i == len(waves):
                waves.append([])
            waves[i].append(sock)
    for wave in waves:
        errs = dsock.request_acks([_request(s) for s in wave])
        retry = []
        for sock, err in zip(wave, errs):
            if err in RETRY_ERRNOS:
                retry.append(sock)
            else:
                model.set_error(sock, err)
        if retry:
            _retry_members(dsock, retry, log, rng)


def _members(dsock, socks):
    """What the kernel has now on the local ports of socks: cookies alive, and
    how many peerless sockets share each local (proto, family, addr, port, if)."""
    alive, group = set(), {}
    keys = {(s.proto, s.family) for s in socks}
    for proto, fam in keys:
        ports = sorted({s.sport for s in socks if (s.proto, s.family) == (proto, fam)})
        tree = _or([port_tree("s", _Range(p, p)) for p in ports]) if len(ports) <= 512 else TRUE
        rows = dsock.dump(AF[fam], PROTO_NUMS[proto], (1 << st.LISTEN) | (1 << st.CLOSE),
                          assemble(tree))
        for row in rows:
            sport, dport, src, dst, ifi, c0, c1 = row[9:16]
            alive.add(c0 | c1 << 32)
            if not dport and dst == _ZERO16:
                key = (proto, fam, src, socket.ntohs(sport), ifi)
                group[key] = group.get(key, 0) + 1
    return alive, group


class _Range:
    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi


def _retry_members(dsock, pending, log, rng) -> None:
    """Destroy requests for pending (at most one per group) with random remote
    ports, so the group's hash picks each in turn; bounded per socket."""
    alive, group = _members(dsock, pending)
    budget = {}
    still = []
    for sock in pending:
        if sock.cookie not in alive:
            model.set_error(sock, errno.ENOENT)
            continue
        size = group.get(_local_key(sock), 1)
        budget[sock.cookie] = min(MAX_ATTEMPTS, max(MIN_ATTEMPTS, ATTEMPTS_PER_MEMBER * size))
        still.append(sock)
    attempts = 0
    while still:
        attempts += 1
        ports = rng.sample(range(1, 65536), min(len(still), 65535))
        ports += [rng.randrange(1, 65536) for _ in range(len(still) - len(ports))]
        errs = dsock.request_acks([_request(s, dport=p)
                                   for s, p in zip(still, ports)])
        nxt, exhausted = [], []
        for sock, err in zip(still, errs):
            if err in RETRY_ERRNOS:
                (nxt if attempts < budget[sock.cookie] else exhausted).append(sock)
            else:
                model.set_error(sock, err)
        if exhausted:
            alive, _ = _members(dsock, exhausted)
            for sock in exhausted:
                if sock.cookie in alive:
                    # still there, but every lookup found another socket: the
                    # cookie check's refusal (ESTALE), whatever errno it came as
                    model.set_error(sock, errno.ESTALE)
                    log(f"diag: could not reach reuseport member {sock!r} "
                        f"in {budget[sock.cookie]} lookups")
                else:
                    model.set_error(sock, errno.ENOENT)
        still = nxt
    if attempts:
        log(f"diag: reuseport retries: {attempts} round(s) for {len(pending)} socket(s)")


def destroy_here(socks: list) -> None:
    """SOCK_DESTROY each Sock from inside the calling thread's namespace (the
    worker calls this) and set its result. Used by the BPF engine for the
    sockets its kfunc cannot take (TIME_WAIT, request sockets)."""
    if not socks:
        return
    dsock = nl().DiagSocket()
    try:
        destroy_with(dsock, socks)
    finally:
        dsock.close()


# -- the engine ---------------------------------------------------------------------

class DiagEngine:
    name = "diag"

    def __init__(self, *, flt, kill: bool, exclude_inodes=frozenset(), log=lambda msg: None):
        self.flt = flt
        self.kill = kill
        self.exclude_inodes = frozenset(exclude_inodes)
        self.log = log
        self.bytecode = b""
        self.states = 0
        self.targets: list[tuple[int, str]] = []     # (address family, proto)
        self.warnings: list[str] = []

    def open(self) -> None:
        n = nl()
        self.bytecode = compile_bytecode(self.flt)
        self.states = state_mask(self.flt.states)
        self.targets = [(AF[fam], proto) for proto in ("tcp", "udp") if proto in self.flt.protos
                        for fam in (4, 6) if fam in self.flt.families]
        if len(self.bytecode) > 65000:
            raise EngineError("the filter is too large for INET_DIAG bytecode", ExitCode.USAGE)
        if self.kill:
            from .. import probe
            if "CAP_NET_ADMIN" not in probe.effective_caps():
                raise EngineError("destroying sockets needs CAP_NET_ADMIN: run as root")
        try:
            dsock = n.DiagSocket()
        except OSError as exc:
            raise EngineError(f"cannot open a NETLINK_SOCK_DIAG socket: {exc.strerror}") from None
        try:
            for family, proto in self.targets:
                self._probe(dsock, family, proto)
        finally:
            dsock.close()
        self.log(f"diag: {len(self.bytecode)} bytes of filter bytecode, state mask {self.states:#x}")

    def _probe(self, dsock, family, proto) -> None:
        """An empty dump validates the bytecode; a destroy of no socket (cookie 0
        is never a socket's) tells whether the kernel can destroy at all."""
        n = nl()
        what = f"{proto}/IPv{4 if family == socket.AF_INET else 6}"
        try:
            for _ in dsock.dump(family, PROTO_NUMS[proto], 0, self.bytecode):
                pass
        except n.NetlinkError as exc:
            if exc.code == errno.EINVAL:
                raise EngineError(f"the kernel rejected the INET_DIAG filter bytecode for {what}") from None
            raise EngineError(f"the kernel cannot dump {what} sockets (inet_diag/"
                              f"{proto}_diag missing?): {exc.args[1]}") from None
        if not self.kill:
            return
        [err] = dsock.request_acks([n.encode_request(
            n.SOCK_DESTROY, n.NLM_F_REQUEST | n.NLM_F_ACK, 0, family=family,
            proto=PROTO_NUMS[proto], states=n.TCPF_ALL, cookie=(0, 0))])
        if err == errno.EOPNOTSUPP:
            raise EngineError("the kernel cannot destroy sockets: it lacks CONFIG_INET_DIAG_DESTROY")
        if err in (errno.EPERM, errno.EACCES):
            raise EngineError("destroying sockets needs CAP_NET_ADMIN: run as root")

    def _open_here(self):
        """In the worker, inside the namespace: a diag socket, and which protocols have sockets."""
        busy = netns.busy_protocols()
        targets = [(fam, proto) for fam, proto in self.targets if proto in busy]
        if not targets:
            return None, []
        return nl().DiagSocket(), targets

    def scan(self, ns, worker, ready=None):
        """Yield lists of the matching sockets of ns; in kill mode they are
        already destroyed. Safe to run for several namespaces at once.
        `ready` (an Event), if given, is waited for before the first dump."""
        n = nl()
        dsock, targets = worker.call(ns, self._open_here)
        if dsock is None:
            return
        try:
            if ready is not None:
                ready.wait()
            found, seen = [], set()
            for family, proto in targets:
                try:
                    rows = dsock.dump(family, PROTO_NUMS[proto], self.states, self.bytecode)
                    socks = decode_rows(rows, proto, ns, self.flt,
                                        self.exclude_inodes)
                except n.NetlinkError as exc:
                    raise OSError(exc.code, f"{proto} dump failed: {exc.args[1]}") from None
                if self.kill:
                    for sock in socks:         # a dump may repeat a socket if a hash chain moved
                        if sock.cookie not in seen:
                            seen.add(sock.cookie)
                            found.append(sock)
                elif socks:
                    yield socks
            if self.kill and found:
                destroy_with(dsock, found, self.log)
                unsupported = sum(1 for s in found if s.error == errno.EOPNOTSUPP)
                if unsupported == len(found):
                    self.log("diag: the kernel refused every destroy with EOPNOTSUPP: "
                             "it lacks CONFIG_INET_DIAG_DESTROY")
                yield found
        finally:
            dsock.close()

    def owners(self) -> dict:
        return procs.owners_from_proc()

    def close(self) -> None:
        pass


def probe() -> tuple[str, str, str]:
    """For doctor: why a TCP dump, a UDP dump and a destroy cannot work here
    ('' for each that works). Each is a real request to the kernel."""
    from ..filter import build_filter
    answers = []
    for proto, kill in (("tcp", False), ("udp", False), ("tcp", True)):
        try:
            DiagEngine(flt=build_filter(proto=[proto], default_states=st.ALL), kill=kill).open()
            answers.append("")
        except EngineError as exc:
            answers.append(str(exc))
    return tuple(answers)
