"""The diag engine: NETLINK_SOCK_DIAG dumps filtered in the kernel by
INET_DIAG bytecode, and one SOCK_DESTROY per match, as `ss -K` does.

Per namespace one NETLINK_SOCK_DIAG socket is created inside it (a netlink
socket's namespace is fixed at creation) and then used from any thread for
the dumps and the destroys. The Filter is compiled once into bytecode; only
matching sockets cross into Python, where Filter.matches() checks each again
before anything is destroyed.
"""

from __future__ import annotations

import errno
import _socket       # the socket module's C half (see model.py)

from ... import model
from ... import states as st
from ...exitcodes import ExitCode
from .. import CannotDestroy, EngineError, HostFacts, Scope, silent
from . import wire as n
from .bytecode import compile_bytecode, state_mask
from .destroy import AF, PROTO_NUMS, destroy_with, settle_unacked


def decode_rows(rows, proto, ns, flt, scope):
    """MSG tuples from a dump of `proto` -> the Socks the filter matches.
    When the scope reads cgroups, each row ends with the socket's cgroup id."""
    Sock = model.Sock
    matches, admits = flt.matches, scope.admits
    out = []
    fam_num = {_socket.AF_INET: 4, _socket.AF_INET6: 6}
    ntohs = _socket.ntohs
    v4 = model.V4_PREFIX
    ns_ino, ns_name = ns.ino, ns.name
    cgroups = scope.reads_cgroup
    for row in rows:
        if cgroups:
            cgroup, row = row[21], row[:21]
        (length, _t, _f, _s, _p, family, state, timer, _r, sport, dport, src, dst, ifi,
         c0, c1, _e, _rq, _wq, uid, ino) = row
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
        if cgroups:
            sock.cgroup = cgroup
        if not matches(sock) or not admits(sock):
            continue
        out.append(sock)
    return out


class _Handle:
    """One namespace's diag socket, what it has to dump, and what it dumped."""

    def __init__(self, dsock, targets):
        self.dsock, self.targets = dsock, targets
        self.seen: set[int] = set()


class DiagEngine:
    name = "diag"
    destroys_while_reading = False     # a dump reads; destroy() destroys, a netlink request each
    walks = True                       # dumps need nothing the kernel may refuse
    one_pass = False                   # held() is the bpf engine's

    def __init__(self, *, flt, scope, kill: bool, owners: bool = True, log=silent,
                 held: bool = False, walks: bool = True, host: HostFacts | None = None):
        self.flt = flt
        self.host = host or HostFacts.here()
        self.lost: dict[str, str] = {}
        self.scope = scope
        self.kill = kill
        self.log = log
        self.bytecode = b""
        self.states = 0
        self.targets: list[tuple[int, str]] = []     # (address family, proto)
        self.warnings: list[str] = []

    def open(self) -> None:
        self.bytecode = compile_bytecode(self.flt, self.scope)
        self.states = state_mask(self.flt.states)
        self.targets = [(AF[fam], proto) for proto in ("tcp", "udp") if proto in self.flt.protos
                        for fam in (4, 6) if fam in self.flt.families]
        if len(self.bytecode) > 65000:
            raise EngineError("the filter is too large for INET_DIAG bytecode", ExitCode.USAGE)
        if self.kill:
            if "CAP_NET_ADMIN" not in self.host.effective_caps():
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
        what = f"{proto}/IPv{4 if family == _socket.AF_INET else 6}"
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
            raise CannotDestroy("the kernel cannot destroy sockets: it lacks CONFIG_INET_DIAG_DESTROY")
        if err in (errno.EPERM, errno.EACCES):
            raise EngineError("destroying sockets needs CAP_NET_ADMIN: run as root")

    # -- per namespace ---------------------------------------------------------
    def enter(self):
        """Inside the namespace: a diag socket, for the protocols that have
        sockets (None: none). Its namespace is fixed at creation."""
        busy = self.host.busy_protocols()
        targets = [(fam, proto) for fam, proto in self.targets if proto in busy]
        if not targets:
            return None
        return _Handle(n.DiagSocket(), targets)

    def read(self, handle: _Handle, ns):
        """One batch per dump (family x protocol): the matching sockets, each once."""
        for family, proto in handle.targets:
            try:
                rows = handle.dsock.dump(family, PROTO_NUMS[proto], self.states, self.bytecode,
                                         cgroup=self.scope.reads_cgroup)
                socks = decode_rows(rows, proto, ns, self.flt, self.scope)
            except n.NetlinkError as exc:
                raise OSError(exc.code, f"{proto} dump failed: {exc.args[1]}") from None
            fresh = []
            for sock in socks:         # a dump may repeat a socket if a hash chain moved
                if sock.cookie not in handle.seen:
                    handle.seen.add(sock.cookie)
                    fresh.append(sock)
            if fresh:
                yield fresh

    def destroy(self, handle: _Handle, socks: list, stop=None) -> None:
        """SOCK_DESTROY each unattempted sock by its exact tuple and cookie."""
        todo = [s for s in socks if s.result == model.MATCHED]
        try:
            destroy_with(handle.dsock, todo, self.log, stop=stop)
        except (OSError, n.NetlinkError):
            self._settle_unacked(handle, todo)
            raise
        if todo and all(s.error == errno.EOPNOTSUPP for s in todo):
            self.log("diag: the kernel refused every destroy with EOPNOTSUPP: "
                     "it lacks CONFIG_INET_DIAG_DESTROY")

    def _settle_unacked(self, handle: _Handle, socks: list) -> None:
        settle_unacked(handle.dsock, socks)

    def pin(self, cookies) -> None:
        """Restrict the next reads to these cookies (paced kills)."""
        self.scope = self.scope._replace(cookies=frozenset(cookies))

    def release(self, handle: _Handle) -> None:
        handle.dsock.close()

    def owners(self):
        return self.host.owners()

    def close(self) -> None:
        """Nothing is held between namespaces: each handle's socket is closed
        by release(), and open() closes its probe's."""


def probe() -> tuple[str, str, str]:
    """For doctor: why a TCP dump, a UDP dump and a destroy cannot work here
    ('' for each that works). Each is a real request to the kernel."""
    from ...filter import build_filter
    answers = []
    for proto, kill in (("tcp", False), ("udp", False), ("tcp", True)):
        try:
            DiagEngine(flt=build_filter(proto=[proto], default_states=st.ALL), scope=Scope(),
                       kill=kill).open()
            answers.append("")
        except EngineError as exc:
            answers.append(str(exc))
    return tuple(answers)
