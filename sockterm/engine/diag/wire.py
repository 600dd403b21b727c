"""NETLINK_SOCK_DIAG on the wire: the flattened message layouts, request
encoding, and a light netlink socket that speaks them.

Nothing here imports pyroute2: importing it costs a process ~80 ms (its
package imports everything), and the diag engine needs no more than this.
The layouts are declared in pyroute2's style in netlink.py; the unit tests
check that these formats are exactly what its declarations flatten to
(netlink.wire_mismatches()), so the two cannot drift apart.
"""

from __future__ import annotations

import errno
import os
import _socket       # the socket module's C half (see model.py)
import struct

# include/uapi/linux/netlink.h, sock_diag.h
NETLINK_SOCK_DIAG = 4
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
SOCK_DIAG_BY_FAMILY = 20
SOCK_DESTROY = 21

SOL_NETLINK = 270
NETLINK_CAP_ACK = 10          # acks carry the request's header only, not its payload
NETLINK_EXT_ACK = 11

# include/uapi/linux/inet_diag.h
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_NOP = 0
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_S_GE = 2
INET_DIAG_BC_S_LE = 3
INET_DIAG_BC_D_GE = 4
INET_DIAG_BC_D_LE = 5
INET_DIAG_BC_AUTO = 6
INET_DIAG_BC_S_COND = 7
INET_DIAG_BC_D_COND = 8
INET_DIAG_BC_CGROUP_COND = 13    # followed by the cgroup v2 id, a native-order u64
INET_DIAG_CGROUP_ID = 21         # dump attribute: the socket's cgroup v2 id (full sockets only)
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
TCPF_ALL = 0xFFF


class NetlinkError(Exception):
    """An error reply (pyroute2's NetlinkError's shape: args (code, message), .code)."""

    def __init__(self, code: int, msg: str | None = None):
        super().__init__(code, msg or os.strerror(code))
        self.code = code


# nlmsghdr + body, flattened:
#   REQ: len type flags seq pid | family proto ext pad states | sport dport src dst if c0 c1
#   MSG: len type flags seq pid | family state timer retrans | sport dport src dst if c0 c1
#        | expires rqueue wqueue uid inode
#   ERR: len type flags seq pid | error
REQ = struct.Struct("=IHHIIBBBBIHH16s16sI2I")
MSG = struct.Struct("=IHHIIBBBBHH16s16sI2IIIIII")
ERR = struct.Struct("=IHHIIi")
OP = struct.Struct("=BBH")              # inet_diag_bc_op
HOSTCOND = struct.Struct("=BBHi")       # inet_diag_hostcond
NLA_HDR = struct.Struct("=HH")
CGROUP_ID = struct.Struct("=Q")
HEAD = struct.Struct("=IHHI")          # nlmsghdr: length, type, flags, seq
HDR_LEN = 16


def nla_bytecode(bytecode: bytes) -> bytes:
    """The INET_DIAG_REQ_BYTECODE attribute carrying `bytecode` (4-aligned already)."""
    return NLA_HDR.pack(NLA_HDR.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode


def sockid_addr(addr16: bytes, family: int) -> bytes:
    """A 16-byte v4-mapped or IPv6 address as inet_diag_sockid carries it for `family`."""
    if family == _socket.AF_INET:
        return addr16[12:] + bytes(12)
    return addr16


def encode_request(msg_type: int, flags: int, seq: int, *, family: int, proto: int,
                   states: int, sport: int = 0, dport: int = 0, src: bytes = bytes(16),
                   dst: bytes = bytes(16), ifindex: int = 0, cookie=(INET_DIAG_NOCOOKIE,) * 2,
                   bytecode: bytes = b"") -> bytes:
    """One inet_diag_req_v2 message, via the flattened layout (fast path)."""
    attr = nla_bytecode(bytecode) if bytecode else b""
    return REQ.pack(REQ.size + len(attr), msg_type, flags, seq, 0, family, proto, 0, 0, states,
                    _socket.htons(sport), _socket.htons(dport), src, dst, ifindex,
                    cookie[0], cookie[1]) + attr


def cgroup_of(buf, offset: int, length: int) -> int:
    """The INET_DIAG_CGROUP_ID attribute of the dump message at offset, or 0."""
    at, end = offset + MSG.size, offset + length
    while at + NLA_HDR.size <= end:
        size, kind = NLA_HDR.unpack_from(buf, at)
        if size < NLA_HDR.size:
            break
        if kind & 0x3FFF == INET_DIAG_CGROUP_ID and size >= NLA_HDR.size + CGROUP_ID.size:
            return CGROUP_ID.unpack_from(buf, at + NLA_HDR.size)[0]
        at += (size + 3) & ~3
    return 0


def error_of(buf, offset: int) -> int:
    """The (positive) errno of an NLMSG_ERROR or NLMSG_DONE message at offset; 0 = ack."""
    return -ERR.unpack_from(buf, offset)[5]


class DiagSocket:
    """A NETLINK_SOCK_DIAG socket. Its namespace is the one of the thread that
    created it; after that it can be used from any thread."""

    RECV_SIZE = 1 << 16            # a dump's replies; acks need far less
    BATCH = 256                    # destroy requests in flight per send

    def __init__(self, recv_size: int = RECV_SIZE):
        self.sock = _socket.socket(_socket.AF_NETLINK, _socket.SOCK_RAW | _socket.SOCK_CLOEXEC,
                                  NETLINK_SOCK_DIAG)
        try:
            self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            try:
                self.sock.setsockopt(_socket.SOL_SOCKET, 33, 1 << 20)   # SO_RCVBUFFORCE
            except OSError:
                self.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, 1 << 20)
            self.sock.bind((0, 0))
        except BaseException:
            self.sock.close()
            raise
        # a fresh 64 KiB buffer costs ~45 us of page faults: a socket made
        # for each of hundreds of namespaces only to destroy asks for less
        self.buf = bytearray(recv_size)
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF or 1
        return self.seq

    def _recv(self) -> memoryview:
        while True:
            try:
                n = self.sock.recv_into(self.buf)
            except InterruptedError:
                continue
            return memoryview(self.buf)[:n]

    def dump(self, family: int, proto: int, states: int, bytecode: bytes = b"",
             cgroup: bool = False):
        """Yield MSG tuples for every socket the kernel dumps; NetlinkError on an
        error reply. With `cgroup`, each tuple ends with the socket's cgroup v2
        id (0 for a socket that has none: time-wait, request sockets)."""
        seq = self._next_seq()
        self.sock.send(encode_request(SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq,
                                      family=family, proto=proto, states=states,
                                      bytecode=bytecode))
        unpack = MSG.unpack_from
        head = HEAD.unpack_from
        while True:
            view = self._recv()
            off, end = 0, len(view)
            while off + HDR_LEN <= end:
                length, mtype, _flags, mseq = head(view, off)
                if length < HDR_LEN:
                    raise NetlinkError(errno.EPROTO, "malformed netlink reply")
                if mseq == seq:
                    if mtype == SOCK_DIAG_BY_FAMILY:
                        if cgroup:
                            yield unpack(view, off) + (cgroup_of(view, off, length),)
                        else:
                            yield unpack(view, off)
                    elif mtype == NLMSG_DONE:
                        err = error_of(view, off) if length >= ERR.size else 0
                        if err > 0:
                            raise NetlinkError(err)
                        return
                    elif mtype == NLMSG_ERROR:
                        err = error_of(view, off)
                        if err:
                            raise NetlinkError(err)
                off += (length + 3) & ~3

    def _send_batch(self, requests: list[bytes], start: int) -> dict:
        """Send requests[start:start + BATCH] in one write, each with a
        sequence number of its own: {sequence number: index in requests}."""
        by_seq = {}
        out = bytearray()
        for i, req in enumerate(requests[start:start + self.BATCH], start):
            seq = self._next_seq()
            by_seq[seq] = i
            out += req[:8] + seq.to_bytes(4, "little") + req[12:]
        self.sock.send(out)
        return by_seq

    def lookup(self, requests: list[bytes]) -> list:
        """Exact lookups (SOCK_DIAG_BY_FAMILY without NLM_F_DUMP or NLM_F_ACK,
        sequence numbers assigned here), sent BATCH at a time: for each
        request in order, the MSG tuple the kernel answered with, or the
        (positive) errno it refused it with."""
        results: list = [None] * len(requests)
        unpack = MSG.unpack_from
        for start in range(0, len(requests), self.BATCH):
            by_seq = self._send_batch(requests, start)
            pending = len(by_seq)
            while pending:
                view = self._recv()
                off, end = 0, len(view)
                while off + HDR_LEN <= end:
                    length, mtype, _flags, seq = HEAD.unpack_from(view, off)
                    if length < HDR_LEN:
                        raise NetlinkError(errno.EPROTO, "malformed netlink reply")
                    index = by_seq.pop(seq, None)
                    if index is not None:
                        if mtype == SOCK_DIAG_BY_FAMILY and length >= MSG.size:
                            results[index] = unpack(view, off)
                        else:
                            results[index] = error_of(view, off) if mtype == NLMSG_ERROR \
                                else errno.EPROTO
                        pending -= 1
                    off += (length + 3) & ~3
        return results

    def get(self, request: bytes):
        """One request for an exact socket (SOCK_DIAG_BY_FAMILY without
        NLM_F_DUMP): its MSG tuple, or None when there is no such socket."""
        [reply] = self.lookup([request])
        if isinstance(reply, tuple):
            return reply
        if reply in (0, errno.ENOENT):
            return None
        raise NetlinkError(reply)

    def request_acks(self, requests: list[bytes]) -> list[int]:
        """Send each request (NLM_F_ACK set, distinct sequence numbers assigned
        here) and read every ack; the errno of each, in order (0: success)."""
        results = [None] * len(requests)
        for start in range(0, len(requests), self.BATCH):
            by_seq = self._send_batch(requests, start)
            pending = len(by_seq)
            while pending:
                view = self._recv()
                off, end = 0, len(view)
                while off + HDR_LEN <= end:
                    length, mtype, _flags, seq, _pid, err = ERR.unpack_from(view, off)
                    if mtype == NLMSG_ERROR and seq in by_seq:
                        index = by_seq.pop(seq)
                        if results[index] is None:
                            results[index] = -err
                            pending -= 1
                    if length < HDR_LEN:
                        break
                    off += (length + 3) & ~3
        return results
