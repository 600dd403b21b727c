"""NETLINK_SOCK_DIAG for INET sockets: the messages, declared in pyroute2's
style; the declarations wire.py's flattened formats are checked against.

pyroute2 (0.9) ships inet_diag_req/inet_diag_msg but no request with the
bytecode attribute, no destroy request, and a diag Marshal that does not turn
NLMSG_ERROR acks into errors. This module declares what is missing. The
declarations are the one source of the layouts: the hot paths (decoding tens
of thousands of dump messages, encoding one destroy per socket) use
struct.Struct objects that `flat()` derives from them, because pyroute2's
per-message dict decoding costs tens of microseconds a socket.

I/O is a plain AF_NETLINK socket (wire.py): pyroute2 0.9's NetlinkSocket
runs an asyncio loop and threads, which is too heavy for one socket per
namespace. wire.py holds the flattened formats, the encoding and the socket
without importing pyroute2, whose package import costs a process ~80 ms
(its __init__ pulls in ndb, ipdb, conntrack and asyncio, whatever submodule
is asked for). No run imports this module: the unit tests do, and check
that wire.py is what these declarations say (wire_mismatches()).
"""

from __future__ import annotations

import os
import _socket       # the socket module's C half (see model.py)
import struct

from pyroute2 import netlink as _pr
from pyroute2.netlink import nlmsg, nlmsg_base, nlmsg_decoder_generic, nlmsg_encoder_generic, nlmsgerr
from pyroute2.netlink import diag as _pr_diag

from .wire import *  # noqa: F401,F403 (the declarations beside what they declare)
from .wire import (DiagSocket, NLMSG_DONE, NLMSG_ERROR, SOCK_DESTROY, SOCK_DIAG_BY_FAMILY,  # noqa: F401
                   CGROUP_ID, ERR, HOSTCOND, INET_DIAG_BC_CGROUP_COND, INET_DIAG_BC_D_COND,
                   INET_DIAG_BC_D_GE, INET_DIAG_BC_D_LE, INET_DIAG_BC_S_COND, INET_DIAG_BC_S_GE,
                   INET_DIAG_BC_S_LE, MSG, OP, REQ, NetlinkError)
from . import wire as _wire

__all__ = ["NetlinkError", "SOCK_DESTROY", "SOCK_DIAG_BY_FAMILY", "NLMSG_DONE", "NLMSG_ERROR",
           "inet_diag_req_v2", "inet_diag_msg", "inet_diag_bc_op", "inet_diag_hostcond",
           "flat", "DiagSocket", "REQ", "MSG", "ERR", "OP", "HOSTCOND"]

# struct inet_diag_sockid. Addresses are raw network-order bytes (an IPv4
# address fills the first 4); the cookie is the kernel's __u32[2].
SOCKID_FIELDS = (
    ("idiag_sport", ">H"),
    ("idiag_dport", ">H"),
    ("idiag_src", "16s"),
    ("idiag_dst", "16s"),
    ("idiag_if", "I"),
    ("idiag_cookie", "2I"),
)


class inet_diag_req_v2(nlmsg):
    """struct inet_diag_req_v2 + the INET_DIAG_REQ_BYTECODE attribute.
    Used for SOCK_DIAG_BY_FAMILY dumps and for SOCK_DESTROY."""

    __slots__ = ()
    fields = (
        ("sdiag_family", "B"),
        ("sdiag_protocol", "B"),
        ("idiag_ext", "B"),
        ("__pad", "B"),
        ("idiag_states", "I"),
    ) + SOCKID_FIELDS
    nla_map = (
        ("INET_DIAG_REQ_NONE", "none"),
        ("INET_DIAG_REQ_BYTECODE", "cdata"),
    )


class inet_diag_msg(nlmsg):
    """struct inet_diag_msg, one per socket in a dump (attributes ignored)."""

    __slots__ = ()
    fields = (
        ("idiag_family", "B"),
        ("idiag_state", "B"),
        ("idiag_timer", "B"),
        ("idiag_retrans", "B"),
    ) + SOCKID_FIELDS + (
        ("idiag_expires", "I"),
        ("idiag_rqueue", "I"),
        ("idiag_wqueue", "I"),
        ("idiag_uid", "I"),
        ("idiag_inode", "I"),
    )


class _struct(nlmsg_base, nlmsg_encoder_generic, nlmsg_decoder_generic):
    """A bare C struct (no netlink header, no attributes): bytecode pieces."""

    __slots__ = ()
    header = None
    align = 0


class inet_diag_bc_op(_struct):
    """struct inet_diag_bc_op: yes/no are byte offsets from this op."""

    __slots__ = ()
    fields = (("code", "B"), ("yes", "B"), ("no", "H"))


class inet_diag_hostcond(_struct):
    """struct inet_diag_hostcond, followed by prefix address bytes (4 or 16)."""

    __slots__ = ()
    fields = (("family", "B"), ("prefix_len", "B"), ("__pad", "H"), ("port", "i"))


def flat(cls, header: bool = True) -> struct.Struct:
    """One native-order struct.Struct for a fixed-layout message class: the
    nlmsghdr (if header) and the fields, in declaration order. Fields
    declared network-order ('>H') come out as native 'H': pass them through
    socket.ntohs/htons. Every other field must be native ('B', 'I', 'NI', 'Ns')."""
    fmt = "="
    parts = list(nlmsg.header) if header else []
    for _name, code in parts + list(cls.fields):
        if code.startswith(">"):
            if code != ">H":
                raise ValueError(f"flat(): unsupported network-order field {code!r}")
            code = "H"
        fmt += code
    return struct.Struct(fmt)


def wire_mismatches() -> list[str]:
    """Where wire.py's formats and constants differ from what these
    declarations and pyroute2 say (empty: nowhere)."""
    problems = []
    pairs = {"REQ": (REQ, flat(inet_diag_req_v2)), "MSG": (MSG, flat(inet_diag_msg)),
             "ERR": (ERR, flat(nlmsgerr)), "OP": (OP, flat(inet_diag_bc_op, header=False)),
             "HOSTCOND": (HOSTCOND, flat(inet_diag_hostcond, header=False))}
    for name, (ours, declared) in pairs.items():
        if ours.format != declared.format:
            problems.append(f"wire.{name} is {ours.format}, the declaration says {declared.format}")
    for name, theirs in (("NETLINK_SOCK_DIAG", _pr.NETLINK_SOCK_DIAG), ("NLM_F_ACK", _pr.NLM_F_ACK),
                         ("NLM_F_DUMP", _pr.NLM_F_DUMP), ("NLM_F_REQUEST", _pr.NLM_F_REQUEST),
                         ("NLMSG_DONE", _pr.NLMSG_DONE), ("NLMSG_ERROR", _pr.NLMSG_ERROR),
                         ("SOCK_DESTROY", _pr_diag.SOCK_DESTROY),
                         ("SOCK_DIAG_BY_FAMILY", _pr_diag.SOCK_DIAG_BY_FAMILY)):
        if getattr(_wire, name) != theirs:
            problems.append(f"wire.{name} is {getattr(_wire, name)}, pyroute2 says {theirs}")
    return problems


def decode_error(data: bytes) -> NetlinkError | None:
    """pyroute2's own decoding of one NLMSG_ERROR message -> NetlinkError (None for an ack).
    The slow, complete path; used for diagnostics and tests."""
    msg = nlmsgerr(bytes(data))
    msg.decode()
    code = -msg["error"]
    if not code:
        return None
    return NetlinkError(code, msg.get_attr("NLMSGERR_ATTR_MSG") or os.strerror(code))


def describe_bytecode(bytecode: bytes) -> list[dict]:
    """Decode bytecode op by op with the pyroute2 classes (the unit tests' failure messages)."""
    ops = []
    off = 0
    while off < len(bytecode):
        op = inet_diag_bc_op(bytecode, offset=off)
        op.decode()
        entry = {"at": off, "code": op["code"], "yes": op["yes"], "no": op["no"]}
        size = OP.size
        if op["code"] in (INET_DIAG_BC_S_COND, INET_DIAG_BC_D_COND):
            cond = inet_diag_hostcond(bytecode, offset=off + OP.size)
            cond.decode()
            alen = {_socket.AF_INET: 4, _socket.AF_INET6: 16}.get(cond["family"], 0)
            start = off + OP.size + HOSTCOND.size
            entry.update(family=cond["family"], prefix_len=cond["prefix_len"],
                         port=cond["port"], addr=bytes(bytecode[start:start + alen]))
            size += HOSTCOND.size + alen
        elif op["code"] in (INET_DIAG_BC_S_GE, INET_DIAG_BC_S_LE, INET_DIAG_BC_D_GE,
                            INET_DIAG_BC_D_LE):
            entry["port"] = OP.unpack_from(bytecode, off + OP.size)[2]
            size += OP.size
        elif op["code"] == INET_DIAG_BC_CGROUP_COND:
            entry["cgroup"] = CGROUP_ID.unpack_from(bytecode, off + OP.size)[0]
            size += CGROUP_ID.size
        entry["size"] = size
        ops.append(entry)
        off += op["yes"] if op["yes"] else size
    return ops

