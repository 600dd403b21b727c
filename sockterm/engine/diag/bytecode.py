"""The Filter as INET_DIAG bytecode: what the kernel runs on every socket of a
dump, so only matches cross into user space.

Expression tree: ("op", code, payload) is one bytecode condition;
("and", [...]) / ("or", [...]); TRUE is ("and", []). Compiled to a linear
program where every op's `yes` is its own size (fall through) and `no`
jumps forward to the next alternative, to the end (accept) or four bytes
past it (reject), which is how ss(8) lays bytecode out and what the
kernel's inet_diag_bc_audit()/valid_cc() accept.
"""

from __future__ import annotations

import _socket       # the socket module's C half (see model.py)

from ... import states as st
from ...model import V4_PREFIX
from . import wire as n

TCPF_NEW_SYN_RECV = 1 << st.NEW_SYN_RECV
_MAPPED_NET_BITS = int.from_bytes(V4_PREFIX + b"\0\0\0\0", "big")   # ::ffff:0:0/96

TRUE = ("and", [])


def _op(code, payload=b""):
    return ("op", code, payload)


def all_of(parts):
    parts = [p for p in parts if p != TRUE]
    return parts[0] if len(parts) == 1 else ("and", parts)


def any_of(parts):
    if any(p == TRUE for p in parts):
        return TRUE
    return parts[0] if len(parts) == 1 else ("or", parts)


def _hostcond(code, family, prefix_len, addr):
    return _op(code, n.HOSTCOND.pack(family, prefix_len, 0, -1) + addr)


def addr_tree(side: str, network) -> tuple:
    """One prefix (IPv6 form, IPv4 as ::ffff:a.b.c.d/96+n) as host conditions.

    The kernel compares an AF_INET condition with IPv4 sockets and with
    v4-mapped IPv6 sockets, and an AF_INET6 condition only with IPv6
    sockets, so a prefix inside ::ffff:0:0/96 becomes an AF_INET condition
    and one that covers that range also accepts every IPv4 socket."""
    code = n.INET_DIAG_BC_S_COND if side == "s" else n.INET_DIAG_BC_D_COND
    plen = network.prefixlen
    if plen == 0:
        return TRUE
    value = int(network.network_address)
    packed = network.network_address.packed
    if plen >= 96 and value >> 32 == _MAPPED_NET_BITS >> 32:
        return _hostcond(code, _socket.AF_INET, plen - 96, packed[12:])
    v6 = _hostcond(code, _socket.AF_INET6, plen, packed)
    if plen <= 96 and (_MAPPED_NET_BITS >> (128 - plen)) == (value >> (128 - plen)):
        return any_of([v6, _hostcond(code, _socket.AF_INET, 0, bytes(4))])
    return v6


def port_tree(side: str, rng) -> tuple:
    ge, le = ((n.INET_DIAG_BC_S_GE, n.INET_DIAG_BC_S_LE) if side == "s"
              else (n.INET_DIAG_BC_D_GE, n.INET_DIAG_BC_D_LE))
    parts = []
    if rng.lo > 0:
        parts.append(_op(ge, n.OP.pack(0, 0, rng.lo)))
    if rng.hi < 65535:
        parts.append(_op(le, n.OP.pack(0, 0, rng.hi)))
    return all_of(parts)


def filter_tree(flt, scope=None) -> tuple:
    clauses = []
    for rules, side in ((flt.dst, "d"), (flt.src, "s")):
        if rules:
            clauses.append(any_of([all_of([addr_tree(side, r.net), port_tree(side, r.ports)])
                                for r in rules]))
    for ranges, side in ((flt.dport, "d"), (flt.sport, "s")):
        if ranges:
            clauses.append(any_of([port_tree(side, r) for r in ranges]))
    if scope is not None and scope.cgroup_ids is not None:
        # an empty set (the cgroup went away meanwhile) must match nothing: not
        # even a mini socket, whose id the kernel takes as 0; ~0 is no kernfs id
        ids = sorted(scope.cgroup_ids) or [2**64 - 1]
        clauses.append(any_of([_op(n.INET_DIAG_BC_CGROUP_COND, n.CGROUP_ID.pack(i)) for i in ids]))
    return all_of(clauses)


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


def compile_bytecode(flt, scope=None) -> bytes:
    """The filter and the Scope as bytecode. --container/--pod (the Scope's
    owned_* sets) are not compiled: a held inode is no bytecode condition, so
    the engine decides them on the dump rows (Scope.admits)."""
    return assemble(filter_tree(flt, scope))


def state_mask(states) -> int:
    mask = 0
    for s in states:
        mask |= 1 << s
    if mask & (1 << st.SYN_RECV):
        mask |= TCPF_NEW_SYN_RECV     # request sockets are TCP_NEW_SYN_RECV inside the kernel
    return mask
