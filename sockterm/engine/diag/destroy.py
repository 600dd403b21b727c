"""SOCK_DESTROY over NETLINK_SOCK_DIAG: destroy given sockets by their exact
address tuple, interface and cookie (ENOENT: already gone), as `ss -K` does.

SO_REUSEPORT: the kernel resolves a destroy request by a socket lookup, which
for a reuseport group picks one member by hashing the request's remote
address/port; the cookie check then refuses any other member. A server socket
(no peer) that is refused is retried with other remote ports until the lookup
lands on it, a bounded number of times.
"""

from __future__ import annotations

import errno
import _socket       # the socket module's C half (see model.py)

from ... import model
from ... import states as st
from .. import silent
from . import wire as n

AF = {4: _socket.AF_INET, 6: _socket.AF_INET6}
PROTO_NUMS = {"tcp": _socket.IPPROTO_TCP, "udp": _socket.IPPROTO_UDP}
_ZERO16 = bytes(16)

RETRY_ERRNOS = (errno.ENOENT, errno.ESTALE)
MIN_ATTEMPTS = 64          # per reuseport member
ATTEMPTS_PER_MEMBER = 24   # 1 - (1 - 1/n)^(24n) > 1 - e^-24
MAX_ATTEMPTS = 4096

def _request(sock, *, dport=None) -> bytes:
    family = AF[sock.family]
    return n.encode_request(
        n.SOCK_DESTROY, n.NLM_F_REQUEST | n.NLM_F_ACK, 0, family=family,
        proto=PROTO_NUMS[sock.proto], states=n.TCPF_ALL,
        sport=sock.sport, dport=sock.dport if dport is None else dport,
        src=n.sockid_addr(sock.src, family), dst=n.sockid_addr(sock.dst, family),
        ifindex=sock.ifindex, cookie=(sock.cookie & 0xFFFFFFFF, sock.cookie >> 32))


def _lookup_request(sock) -> bytes:
    """An exact lookup of sock by tuple and interface. udp_diag looks a UDP
    socket up with the request's addresses swapped ("for historical
    reasons", udp_dump_one; its destroy does not): the request swaps them
    back."""
    family = AF[sock.family]
    src, dst = n.sockid_addr(sock.src, family), n.sockid_addr(sock.dst, family)
    ends = (sock.sport, sock.dport, src, dst)
    if sock.proto == "udp":
        ends = (sock.dport, sock.sport, dst, src)
    return n.encode_request(
        n.SOCK_DIAG_BY_FAMILY, n.NLM_F_REQUEST, 0, family=family,
        proto=PROTO_NUMS[sock.proto], states=n.TCPF_ALL, sport=ends[0], dport=ends[1],
        src=ends[2], dst=ends[3], ifindex=sock.ifindex)


def resolve_cookies(dsock, socks) -> list:
    """Give the socks whose cookie is 0 (the one pass reads a cookie only
    where the kernel made one already) their cookies: an exact lookup by
    tuple and interface makes and reports it, an O(1) lookup each. A reply
    counts only if it is this socket (its inode). Returns the socks left
    without one, each with .error: ENOENT (nothing has that tuple now: it
    closed), or 0 (another socket answers for it: a reuseport group's
    member, or a successor)."""
    unknown = [s for s in socks if not s.cookie]
    if not unknown:
        return []
    left = []
    for sock, reply in zip(unknown, dsock.lookup([_lookup_request(s) for s in unknown])):
        if isinstance(reply, tuple) and reply[-1] == sock.ino:     # MSG ends with the inode
            sock.cookie = reply[14] | reply[15] << 32
        else:
            sock.error = reply if isinstance(reply, int) else 0
            left.append(sock)
    return left


def _peerless(sock) -> bool:
    """A server socket: the lookup a destroy does may pick another reuseport member."""
    return sock.dport == 0 and sock.state in (st.LISTEN, st.CLOSE) and (
        sock.dst == _ZERO16 or sock.dst == model.V4_PREFIX + b"\0\0\0\0")


CHUNK = 256      # destroys per netlink send; a stop request is honoured between sends
ACK_BUFFER = 8192   # what a destroy-only socket reads its acks into


def destroy_with(dsock, socks, log=silent, rng=None, stop=None) -> None:
    """SOCK_DESTROY each sock over dsock (a DiagSocket in the sockets' namespace)
    and set its result; server sockets are taken group by group (see
    _destroy_servers). `socks` must be in dump order. Once stop() says so, no
    further request is sent: the socks not reached keep result MATCHED."""
    if not socks:
        return
    stop = stop or (lambda: False)
    others = [s for s in socks if not _peerless(s)]
    for start in range(0, len(others), CHUNK):
        if stop():
            return
        chunk = others[start:start + CHUNK]
        errs = dsock.request_acks([_request(s) for s in chunk])
        for sock, err in zip(chunk, errs):
            model.set_error(sock, err)
    servers = [s for s in socks if _peerless(s)]
    if servers and not stop():
        import random    # only for servers (rarely killed): not every run's import
        _destroy_servers(dsock, servers, log, rng or random.Random())


def _local_key(sock) -> tuple:
    family = AF[sock.family]
    return (sock.proto, sock.family, n.sockid_addr(sock.src, family), sock.sport,
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
    from ...filter import PortRange
    from .bytecode import TRUE, any_of, assemble, port_tree
    alive, group = set(), {}
    keys = {(s.proto, s.family) for s in socks}
    for proto, fam in keys:
        ports = sorted({s.sport for s in socks if (s.proto, s.family) == (proto, fam)})
        tree = any_of([port_tree("s", PortRange(p, p)) for p in ports]) if len(ports) <= 512 else TRUE
        rows = dsock.dump(AF[fam], PROTO_NUMS[proto], (1 << st.LISTEN) | (1 << st.CLOSE),
                          assemble(tree))
        for row in rows:
            sport, dport, src, dst, ifi, c0, c1 = row[9:16]
            alive.add(c0 | c1 << 32)
            if not dport and dst == _ZERO16:
                key = (proto, fam, src, _socket.ntohs(sport), ifi)
                group[key] = group.get(key, 0) + 1
    return alive, group


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


def find_cookie(dsock, sock) -> int:
    """The cookie of the socket with sock's exact tuple and interface, 0 when
    there is none: one request, an O(1) lookup like a destroy's (see
    _lookup_request); the answer is checked."""
    family = AF[sock.family]
    src, dst = n.sockid_addr(sock.src, family), n.sockid_addr(sock.dst, family)
    row = dsock.get(_lookup_request(sock))
    if row is None:
        return 0
    sport, dport, rsrc, rdst = row[9:13]
    if (_socket.ntohs(sport), _socket.ntohs(dport), rsrc, rdst) != (sock.sport, sock.dport, src, dst):
        return 0
    return row[14] | row[15] << 32


class Destroyer:
    """SOCK_DESTROY for sockets found some other way (the one pass; the bpf
    engine's time-wait and request sockets, which its kfunc cannot take):
    each by its exact tuple, interface and cookie, an O(1) lookup in the
    kernel. Per namespace, a NETLINK_SOCK_DIAG socket created inside it."""

    def __init__(self, log=silent):
        self.log = log

    def open(self) -> None:
        """Can this kernel destroy over netlink? One request for a socket
        that cannot exist (cookie 0) says, without walking anything."""
        from .. import EngineError
        try:
            dsock = n.DiagSocket()
        except OSError as exc:
            raise EngineError(f"cannot open a NETLINK_SOCK_DIAG socket: {exc.strerror}") from None
        try:
            [err] = dsock.request_acks([n.encode_request(
                n.SOCK_DESTROY, n.NLM_F_REQUEST | n.NLM_F_ACK, 0, family=_socket.AF_INET,
                proto=_socket.IPPROTO_TCP, states=n.TCPF_ALL, cookie=(0, 0))])
        finally:
            dsock.close()
        if err == errno.EOPNOTSUPP:
            raise EngineError("the kernel cannot destroy sockets over netlink: it lacks "
                              "CONFIG_INET_DIAG_DESTROY")
        if err in (errno.EPERM, errno.EACCES):
            raise EngineError("destroying sockets needs CAP_NET_ADMIN: run as root")

    def resolve(self, dsock, socks: list) -> list:
        """resolve_cookies() over this namespace's socket."""
        return resolve_cookies(dsock, socks)

    def enter(self):
        """Inside the namespace: its netlink socket (usable from any thread).
        Acks only: a small buffer (a batch of CHUNK acks takes a few reads)."""
        return n.DiagSocket(recv_size=ACK_BUFFER)

    def destroy(self, dsock, socks: list, stop=None) -> None:
        """Destroy the socks not yet attempted (result MATCHED), setting results.
        A failure to read the acks is raised as OSError once the kernel was
        asked which of those sockets are gone (they were destroyed)."""
        todo = [s for s in socks if s.result == model.MATCHED]
        try:
            destroy_with(dsock, todo, self.log, stop=stop)
        except (OSError, n.NetlinkError) as exc:
            settle_unacked(dsock, todo)
            if isinstance(exc, OSError):
                raise
            raise OSError(exc.code, f"netlink destroy failed: {exc.args[1]}") from None

    def release(self, dsock) -> None:
        dsock.close()


def settle_unacked(dsock, socks: list) -> None:
    """Reading the acks failed: requests sent may have been carried out
    unreported. Ask the kernel which of those sockets still exist; the ones
    it no longer has were destroyed (the caller reports them)."""
    unknown = [s for s in socks if s.result == model.MATCHED]
    if not unknown:
        return
    alive = set()
    try:
        for fam, proto in {(s.family, s.proto) for s in unknown}:
            for row in dsock.dump(AF[fam], PROTO_NUMS[proto], n.TCPF_ALL):
                alive.add(row[14] | row[15] << 32)
    except (OSError, n.NetlinkError):
        return                  # cannot tell: report none of them as killed
    for sock in unknown:
        if sock.cookie not in alive:
            model.set_error(sock, 0)
