"""What a namespace reports when it could not be searched, and the planned
sockets a kill did not find (`gone`: they closed, or their namespace went)."""

from __future__ import annotations

import errno

from .. import model
from ..host import netns
from .report import failure


def copy(sock: model.Sock) -> model.Sock:
    return model.Sock(sock.netns, sock.family, sock.proto, sock.state, sock.src, sock.sport,
                      sock.dst, sock.dport, sock.cookie, sock.uid, sock.ino,
                      netns_name=sock.netns_name, mini=sock.mini, ifindex=sock.ifindex)


def gone_copy(sock: model.Sock) -> model.Sock:
    found = copy(sock)
    model.set_error(found, errno.ENOENT)
    return found


def emit_gone(run, nsr, seen: set, emit) -> None:
    """Planned sockets of this namespace that the kill pass did not find:
    they closed (or left the filter) after they were counted."""
    gone = []
    for sock in run.by_cookie.values():
        if sock.netns == nsr.ns.ino and sock.cookie not in seen:
            gone.append(gone_copy(sock))
    if gone:
        emit((nsr, gone))


def namespace_failed(run, nsr, exc, emit) -> None:
    # only the namespace itself vanishing is benign; any other ENOENT is a failure
    gone = isinstance(exc, netns.NamespaceError) and exc.errno in (errno.ENOENT, errno.ESRCH)
    nsr.gone = gone
    nsr.error = str(getattr(exc, "strerror", None) or exc)
    run.log(f"namespace {nsr.ns.name}: {nsr.error}")
    if not gone:
        run.report.warnings.append(failure(nsr))
    elif run.planned:
        emit_gone(run, nsr, set(), emit)
