"""Which namespaces need a walk of their tables: pure functions from counts
to walk / no walk and the reason (the JSON's walk_reason; -v says more).
Nothing here touches the kernel; core/pipeline.py reads the counts and acts.

A walk of a namespace's TCP or UDP tables (an iterator pass or a netlink
dump) goes over the host's whole hash table, shared by every namespace, so
walking each namespace costs namespaces x host sockets. The one pass
(engine.held(), one iter/task_file pass over every process's descriptors)
finds every socket a process holds, in every namespace, at once. What it
cannot see is what no process holds: orphans after close(), children
waiting to be accepted, request sockets (syn-recv), time-wait sockets,
kernel sockets (a vxlan device's), sockets in flight over SCM_RIGHTS.

Each namespace counts its own: sockstat's inuse (every hashed full socket:
listeners, connections, orphans and unaccepted children included) and tw.
So when the hashed TCP and UDP sockets its processes hold, each counted
once, equal its inuse counts, none of its listeners has a request pending
and it has no time-wait socket (or the filter cannot select those), the one
pass holds every socket the filter could select there: no walk. The counts
are read before and after the pass; a change, or a TCP connection opened
in between (snmp's opens, monotonic), means the pass may have seen a socket
that is gone or missed one that came, and the namespace is walked.

Known gap: a UDP socket or a TCP listener created and closed while the pass
runs, in a namespace that also has a socket no process holds, can make the
counts agree by coincidence (no per-namespace counter shows UDP or
listener churn). Such a namespace is then not walked, and the socket no
process holds (a kernel socket, a listener's pending child) is not seen.
"""

from __future__ import annotations

from typing import Callable

from .. import states as st
from ..host.sockstat import Counts
from ..model import HeldCounts

# walk_reason values (the JSON contract; -v says more)
FORCED = "forced"              # SOCKTERM_WALK=all
NO_ONE_PASS = "no-one-pass"    # the one pass cannot run here (no BPF), or is not worth it
NO_COUNTERS = "no-counters"    # the namespace's counts could not be read
UNCOUNTED = "uncounted"        # the pass could not count every socket once
CHANGED = "changed"            # its counts changed while the pass ran
UNHELD = "unheld"              # hashed sockets no process holds
TIME_WAIT = "time-wait"        # time-wait sockets the filter may select
SYN_RECV = "syn-recv"          # pending connection requests the filter may select
REUSEPORT = "reuseport"        # UDP servers sharing a port: a walk destroys them in table order
BULK = "bulk"                  # so many to kill that the walk's in-kernel destroy costs less
NO_DESTROY = "no-netlink-destroy"   # netlink cannot destroy here: the walk's kfunc does
COOKIE = "cookie"              # a held socket's cookie could not be had by its tuple

WALK_MODES = ("auto", "all", "needed")
# below this many namespaces walking them costs less than the one pass (which
# visits every descriptor on the host), unless the bpf engine visits them all
# anyway to attribute sockets to processes
MIN_NAMESPACES = 4

# What a kill costs beyond the kernel's own destroy (measured on a 2-CPU VM,
# Linux 6.18): a netlink SOCK_DESTROY ~20 us a socket (encoding, the round
# trip, the ack, in Python); a bpf walk ~0.12 us per TCP socket on the host
# (the shared hash table) and ~2 ms to set up, its kfunc destroys for free.
NETLINK_DESTROY_S = 20e-6
WALK_PER_HOST_SOCKET_S = 0.12e-6
WALK_SETUP_S = 2e-3
# An exact netlink lookup, which makes a held socket's cookie where the
# kernel had not made one yet (the pass reads cookies, it cannot make them):
# about half a destroy, measured beside it.
NETLINK_LOOKUP_S = 10e-6

# Who holds the sockets a walk found, where the walk engine makes no owner
# pass of its own (diag): /proc costs ~6 us an open file on the host (a
# readlink a descriptor, measured at 350 and at 500,000), the one pass's
# owner pass ~12 ms to load and verify, then well under a microsecond a
# descriptor in the kernel.
PROC_PER_FILE_S = 6e-6
OWNER_PASS_SETUP_S = 12e-3

_TIMEWAIT_STATES = frozenset({st.TIME_WAIT, st.FIN_WAIT2})   # a timewait sock is either
_REQUEST_STATES = frozenset({st.SYN_RECV, st.NEW_SYN_RECV})


def _minis_selectable(flt, scope) -> bool:
    """Can the filter select a time-wait or request socket at all? They have
    no inode (--pid/--comm select by inode), no cgroup (--cgroup) and uid 0."""
    return (scope.inodes is None and scope.cgroup_ids is None
            and (not flt.uids or 0 in flt.uids))


def certain_walk(flt, scope, before: Counts | None) -> str | None:
    """The reason a namespace will be walked whatever the pass finds (its
    counts alone say so), or None. When every namespace has one, the pass
    is not worth making."""
    if before is None:
        return NO_COUNTERS
    if "tcp" in flt.protos and _minis_selectable(flt, scope):
        if before.tw and flt.states & _TIMEWAIT_STATES:
            return TIME_WAIT
    return None


def walk_reason(flt, scope, before: Counts | None, after: Counts | None,
                held: HeldCounts | None, uncounted: str = "") -> tuple[str | None, str]:
    """(reason, detail): why this namespace must be walked (None: it need
    not be), and the same in words for -v."""
    if uncounted:
        return UNCOUNTED, uncounted
    if before is None or after is None:
        return NO_COUNTERS, "its socket counts could not be read"
    tcp, udp = "tcp" in flt.protos, "udp" in flt.protos
    if (tcp and (before.tcp, before.opens) != (after.tcp, after.opens)) or \
            (udp and before.udp != after.udp):
        return CHANGED, (f"its sockets changed during the pass (TCP {before.tcp} -> {after.tcp}, "
                         f"{after.opens - before.opens} opened; UDP {before.udp} -> {after.udp})")
    held = held or HeldCounts(0, 0, 0, 0)
    if tcp and held.tcp != after.tcp:
        waiting = f", {held.backlog} of them waiting to be accepted" if held.backlog else ""
        return UNHELD, (f"{after.tcp} TCP sockets hashed, {held.tcp} held by processes "
                        f"(orphans, unaccepted or kernel sockets{waiting})")
    if udp and held.udp != after.udp:
        return UNHELD, (f"{after.udp} UDP sockets hashed, {held.udp} held by processes "
                        "(kernel sockets, sockets in flight)")
    by_state = _minis_selectable(flt, scope)
    if tcp and by_state and after.tw and flt.states & _TIMEWAIT_STATES:
        return TIME_WAIT, f"{after.tw} time-wait sockets"
    if tcp and by_state and held.pending and flt.states & _REQUEST_STATES:
        return SYN_RECV, f"{held.pending} connection requests pending on its listeners"
    return None, f"every socket is held by a process ({after.tcp} TCP, {after.udp} UDP)"


def walk_cheaper(kills: int, host_tcp: int, lookups: int = 0) -> bool:
    """Would a walk of the namespace cost less than destroying these `kills`
    sockets one netlink request each (0 where the walk destroys over netlink
    too: it saves nothing there) and making `lookups` cookies, on a host with
    `host_tcp` TCP sockets? A walk destroys in the kernel (bpf) and makes
    every cookie it reports."""
    return (kills * NETLINK_DESTROY_S + lookups * NETLINK_LOOKUP_S
            > host_tcp * WALK_PER_HOST_SOCKET_S + WALK_SETUP_S)


def reuseport_groups(socks) -> bool:
    """Do these sockets (to be destroyed over netlink) include UDP servers
    sharing a local address and port? A destroyed UDP socket stays hashed and
    shadows the rest of its group in the lookup a netlink destroy makes, so
    they must go in hash-chain order, which only a walk knows."""
    seen = set()
    for sock in socks:
        if sock.proto == "udp" and sock.state == st.CLOSE and not sock.dport:
            key = (sock.family, sock.src, sock.sport, sock.ifindex)
            if key in seen:
                return True
            seen.add(key)
    return False


def one_pass_wanted(walk: str, *, planned: bool, owner_pass: bool,
                    namespaces: int) -> tuple[bool, str]:
    """(make the one pass?, why not). A plan's kill never makes it (the plan
    knows its sockets); the one pass visits every descriptor on the host: for
    a few namespaces their walks cost less, unless the engine's owner pass
    (the same visit) runs anyway."""
    if planned:
        return False, ""
    if walk == "all":
        return False, "SOCKTERM_WALK=all"
    if walk == "auto" and not owner_pass and namespaces < MIN_NAMESPACES:
        return False, f"{namespaces} namespaces: walking them costs less"
    return True, ""


def without_one_pass(walk: str) -> str:
    """Every namespace's reason when no one pass is made."""
    return FORCED if walk == "all" else NO_ONE_PASS


def bulk(kills: int, host_tcp: Callable[[], int], lookups: int = 0, *,
         in_kernel: bool = True) -> bool:
    """Would a walk cost less than `kills` netlink destroys and `lookups`
    cookie lookups? host_tcp is read only when there is something to weigh.
    A walk that destroys over netlink too (not in_kernel: diag) saves only
    the lookups."""
    kills = kills if in_kernel else 0
    if not (kills or lookups):
        return False
    return walk_cheaper(kills, host_tcp(), lookups)


def kill_reason(socks: list, *, can_destroy: bool, host_tcp: Callable[[], int],
                in_kernel: bool) -> tuple[str | None, str]:
    """Why a namespace the pass found whole is walked to kill anyway (None:
    its sockets are destroyed by exact tuple over netlink)."""
    if not socks:
        return None, "nothing to destroy"
    if not can_destroy:
        return NO_DESTROY, "netlink cannot destroy here"
    if reuseport_groups(socks):
        return REUSEPORT, "UDP servers share a port: destroyed in table order"
    uncookied = sum(1 for s in socks if not s.cookie)
    if bulk(len(socks), host_tcp, uncookied, in_kernel=in_kernel):
        return BULK, f"{len(socks)} sockets: the walk destroys them in the kernel for less"
    return None, f"{len(socks)} sockets to destroy by exact tuple"


def cookie_reason(uncookied: int, host_tcp: Callable[[], int]) -> tuple[str | None, str]:
    """A listing's namespace the pass found whole: walked when making the
    cookies the kernel has not made yet costs more than the walk."""
    if uncookied and bulk(0, host_tcp, uncookied):
        return COOKIE, (f"{uncookied} sockets the kernel has no cookie for yet: "
                        "the walk makes them for less than a lookup each")
    return None, ""


def owners_from_proc(open_files: int | None) -> bool:
    """Are the holders of a walk's sockets found for less through /proc than
    by the owner pass, with this many files open on the host (None: not
    known, and /proc, which needs nothing loaded)?"""
    return open_files is None or open_files * PROC_PER_FILE_S <= OWNER_PASS_SETUP_S


def planned_reason(kills: int, *, can_destroy: bool, paced: bool, host_tcp: Callable[[], int],
                   in_kernel: bool) -> str | None:
    """kill(plan), a namespace the plan's scan found whole: why it is walked
    again (None: its planned sockets are destroyed by exact tuple). Paced
    batches are small: never a walk for bulk."""
    if not can_destroy:
        return NO_DESTROY
    if not paced and bulk(kills, host_tcp, in_kernel=in_kernel):
        return BULK
    return None
