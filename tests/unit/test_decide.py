"""The one pass's decision, without a kernel: when a namespace's own counts
prove the processes hold every socket the filter could select, and when
they send it to a walk. The counterpart with real sockets is
tests/priv/test_onepass.py (real sockets)."""

from __future__ import annotations

import pytest

from sockterm import model, states as st
from sockterm.core import decide
from sockterm.engine import Scope
from sockterm.filter import build_filter
from sockterm.host import sockstat
from sockterm.host.sockstat import Counts

HELD = model.HeldCounts
DEFAULT = build_filter(dst=["10.0.0.5:80"])            # connected sockets, time-wait excluded


def reason(flt, before, after, held, scope=Scope(), uncounted=""):
    return decide.walk_reason(flt, scope, before, after, held, uncounted)[0]


def test_counts_that_agree_need_no_walk():
    counts = Counts(tcp=11, tw=0, udp=3, opens=40)
    assert reason(DEFAULT, counts, counts, HELD(11, 3, 0, 0)) is None


@pytest.mark.parametrize("held, why", [
    (HELD(10, 3, 0, 1), decide.UNHELD),      # an unaccepted child, an orphan, a kernel socket
    (HELD(12, 3, 0, 0), decide.UNHELD),      # more held than hashed: never trusted
    (HELD(11, 2, 0, 0), decide.UNHELD),      # a vxlan device's UDP socket
])
def test_sockets_no_process_holds_send_it_to_a_walk(held, why):
    counts = Counts(tcp=11, tw=0, udp=3, opens=40)
    assert reason(DEFAULT, counts, counts, held) == why


def test_only_the_protocols_the_filter_selects_are_compared():
    counts = Counts(tcp=11, tw=4, udp=3, opens=40)
    udp_only = build_filter(proto=["udp"], dport=["53"])
    assert reason(udp_only, counts, counts, HELD(0, 3, 9, 0)) is None
    assert reason(udp_only, counts, counts, HELD(0, 2, 0, 0)) == decide.UNHELD


def test_a_change_during_the_pass_sends_it_to_a_walk():
    before = Counts(tcp=11, tw=0, udp=3, opens=40)
    assert reason(DEFAULT, before, before._replace(tcp=12), HELD(12, 3, 0, 0)) == decide.CHANGED
    # a connection opened and closed while the pass ran: same level, more opens
    assert reason(DEFAULT, before, before._replace(opens=41), HELD(11, 3, 0, 0)) == decide.CHANGED
    assert reason(DEFAULT, before, before._replace(udp=2), HELD(11, 2, 0, 0)) == decide.CHANGED
    # time-wait coming and going does not matter to a filter that cannot select it
    established = build_filter(state=["established"], dport=["80"])
    assert reason(established, before, before._replace(tw=5), HELD(11, 3, 0, 0)) is None


def test_time_wait_matters_when_the_filter_can_select_it():
    counts = Counts(tcp=11, tw=2, udp=0, opens=40)
    held = HELD(11, 0, 0, 0)
    timewait = build_filter(state=["time-wait"], dport=["80"])
    finwait2 = build_filter(state=["fin-wait-2"], dport=["80"])   # an orphaned one is a timewait sock
    established = build_filter(state=["established"], dport=["80"])
    assert reason(timewait, counts, counts, held) == decide.TIME_WAIT
    assert reason(finwait2, counts, counts, held) == decide.TIME_WAIT
    assert reason(established, counts, counts, held) is None
    # the default kill filter selects fin-wait-2
    assert reason(DEFAULT, counts, counts, held) == decide.TIME_WAIT
    # a process filter selects by inode, --cgroup by cgroup, --uid by owner: never a
    # time-wait socket (no inode, no cgroup, uid 0)
    assert reason(timewait, counts, counts, held, scope=Scope(inodes=frozenset({7}))) is None
    assert reason(timewait, counts, counts, held, scope=Scope(cgroup_ids=frozenset({9}))) is None
    assert reason(build_filter(state=["time-wait"], uid=["1000"]), counts, counts, held) is None
    assert reason(build_filter(state=["time-wait"], uid=["0"]), counts, counts, held) == decide.TIME_WAIT


def test_pending_requests_matter_when_the_filter_can_select_syn_recv():
    counts = Counts(tcp=11, tw=0, udp=0, opens=40)
    held = HELD(11, 0, 2, 0)
    assert reason(DEFAULT, counts, counts, held) == decide.SYN_RECV
    assert reason(build_filter(state=["syn-recv"], dport=["80"]), counts, counts, held) == decide.SYN_RECV
    assert reason(build_filter(state=["established"], dport=["80"]), counts, counts, held) is None


def test_unreadable_counts_and_an_uncounted_pass_walk():
    counts = Counts(tcp=1, tw=0, udp=0, opens=1)
    assert reason(DEFAULT, None, counts, HELD(1, 0, 0, 0)) == decide.NO_COUNTERS
    assert reason(DEFAULT, counts, None, HELD(1, 0, 0, 0)) == decide.NO_COUNTERS
    assert reason(DEFAULT, counts, counts, HELD(1, 0, 0, 0), uncounted="map full") == decide.UNCOUNTED


def test_a_namespace_nobody_holds_anything_in():
    empty = Counts(0, 0, 0, 0)
    assert reason(DEFAULT, empty, empty, None) is None
    assert reason(DEFAULT, empty._replace(tcp=2), empty._replace(tcp=2), None) == decide.UNHELD


def sock(cookie, proto="udp", state=st.CLOSE, sport=53, dport=0, src=b"\0" * 16, ifindex=0):
    return model.Sock(1, 6, proto, state, src, sport, b"\0" * 16, dport, cookie, ifindex=ifindex)


def test_udp_servers_sharing_a_port_are_left_to_a_walk():
    assert not decide.reuseport_groups([sock(1), sock(2, sport=54)])
    assert decide.reuseport_groups([sock(1), sock(2)])
    assert not decide.reuseport_groups([sock(1), sock(2, ifindex=3)])
    assert not decide.reuseport_groups([sock(1, proto="tcp", state=st.LISTEN),
                                         sock(2, proto="tcp", state=st.LISTEN)])
    assert not decide.reuseport_groups([sock(1, state=st.ESTABLISHED, dport=9),
                                         sock(2, state=st.ESTABLISHED, dport=9)])


SOCKSTAT = """sockets: used 14
TCP: inuse 11 orphan 0 tw 2 alloc 8176 mem 217
UDP: inuse 3 mem 0
UDPLITE: inuse 0
RAW: inuse 0
FRAG: inuse 0 memory 0
"""
SOCKSTAT6 = """TCP6: inuse 4
UDP6: inuse 1
UDPLITE6: inuse 0
RAW6: inuse 0
FRAG6: inuse 0 memory 0
"""
SNMP = """Ip: Forwarding DefaultTTL
Ip: 1 64
Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails
Tcp: 1 200 120000 -1 129 31 2
Udp: InDatagrams NoPorts
Udp: 5 0
"""


def test_opens_found_by_column_name():
    """ActiveOpens and PassiveOpens are found by name, wherever the kernel
    puts them; the Ip and Udp lines around Tcp's are no part of it."""
    assert sockstat._opens(SNMP.encode()) == 160
    moved = SNMP.replace("MaxConn ActiveOpens PassiveOpens", "PassiveOpens MaxConn ActiveOpens") \
                .replace("-1 129 31", "31 -1 129")
    assert sockstat._opens(moved.encode()) == 160
    assert sockstat._opens(SNMP.replace("129 31 2", "130 31 2").encode()) == 161
    # a line that only contains "Tcp:" is no Tcp line; the last line may lack its newline
    odd = "IpExtTcp: 1\nIpExtTcp: 2\n" + SNMP.rstrip("\n").replace("\nUdp: InDatagrams NoPorts\nUdp: 5 0", "")
    assert sockstat._opens(odd.encode()) == 160


def test_counters_read_inuse_tw_and_opens(tmp_path):
    for name, text in zip(("sockstat", "sockstat6", "snmp"), (SOCKSTAT, SOCKSTAT6, SNMP)):
        (tmp_path / name).write_text(text)
    counters = sockstat.Counters._open(str(tmp_path))
    try:
        assert counters.read() == Counts(tcp=15, tw=2, udp=4, opens=160)
        (tmp_path / "sockstat6").write_text(SOCKSTAT6.replace("TCP6: inuse 4", "TCP6: inuse 5"))
        assert counters.read().tcp == 16       # each read starts from the top
    finally:
        counters.close()


def test_walk_cheaper_weighs_destroys_and_cookie_lookups_against_one_walk():
    from sockterm.core.decide import (NETLINK_DESTROY_S, NETLINK_LOOKUP_S, WALK_PER_HOST_SOCKET_S,
                                       WALK_SETUP_S, walk_cheaper)
    host = 160_000
    walk = host * WALK_PER_HOST_SOCKET_S + WALK_SETUP_S
    kills = int(walk / NETLINK_DESTROY_S)
    assert not walk_cheaper(kills, host) and walk_cheaper(kills + 1, host)
    lookups = int(walk / NETLINK_LOOKUP_S)
    assert not walk_cheaper(0, host, lookups) and walk_cheaper(0, host, lookups + 1)
    # lookups add to destroys: fewer of each tip the balance together
    assert walk_cheaper(kills // 2 + 1, host, lookups // 2 + 1)
    assert not walk_cheaper(0, host, 0) and walk_cheaper(1000, 0)


# -- the run's other decisions: whether to make the pass, and the walks a kill needs ----

def test_the_one_pass_is_made_unless_walks_cost_less_or_a_plan_knows_its_sockets():
    few = decide.MIN_NAMESPACES - 1
    assert decide.one_pass_wanted("auto", planned=False, owner_pass=False,
                                  namespaces=decide.MIN_NAMESPACES) == (True, "")
    assert decide.one_pass_wanted("auto", planned=False, owner_pass=False, namespaces=few) == (
        False, f"{few} namespaces: walking them costs less")
    # the owner pass visits every descriptor anyway; `needed` asks for the pass
    assert decide.one_pass_wanted("auto", planned=False, owner_pass=True, namespaces=1)[0]
    assert decide.one_pass_wanted("needed", planned=False, owner_pass=False, namespaces=1)[0]
    assert decide.one_pass_wanted("all", planned=False, owner_pass=True, namespaces=9) == (
        False, "SOCKTERM_WALK=all")
    assert decide.one_pass_wanted("needed", planned=True, owner_pass=True, namespaces=9) == (
        False, "")
    assert decide.without_one_pass("all") == decide.FORCED
    assert decide.without_one_pass("auto") == decide.without_one_pass("needed") == decide.NO_ONE_PASS


def _held(n, proto="tcp", dport=80, cookie=1, state=st.ESTABLISHED):
    return [model.Sock(netns=1, family=4, proto=proto, state=state,
                       src=model.v4_mapped(bytes(4)), sport=1000 + i, dst=model.v4_mapped(bytes(4)),
                       dport=dport, cookie=cookie and cookie + i, ino=i + 1) for i in range(n)]


def _unread():
    raise AssertionError("the host's sockets are read only when a cost is weighed")


def test_a_kill_destroys_the_held_sockets_over_netlink_unless_a_walk_must_or_costs_less():
    # a walk on a host of 10000 TCP sockets: 10000 x 0.12 us + 2 ms = 3.2 ms,
    # 160 destroys' (20 us) or 320 lookups' (10 us) worth
    kw = dict(can_destroy=True, host_tcp=lambda: 10_000, in_kernel=True)
    assert decide.kill_reason([], **dict(kw, host_tcp=_unread)) == (None, "nothing to destroy")
    assert decide.kill_reason(_held(3), **kw) == (None, "3 sockets to destroy by exact tuple")
    assert decide.kill_reason(_held(3), **dict(kw, can_destroy=False, host_tcp=_unread)) == (
        decide.NO_DESTROY, "netlink cannot destroy here")
    group = _held(2, proto="udp", dport=0, state=st.CLOSE)
    for sock in group:
        sock.sport = 53
    assert decide.kill_reason(group, **dict(kw, host_tcp=_unread)) == (
        decide.REUSEPORT, "UDP servers share a port: destroyed in table order")
    assert decide.kill_reason(_held(159), **kw)[0] is None
    assert decide.kill_reason(_held(161), **kw) == (
        decide.BULK, "161 sockets: the walk destroys them in the kernel for less")
    # lookups add to the destroys: 110 x (20 + 10) us
    assert decide.kill_reason(_held(110), **kw)[0] is None
    assert decide.kill_reason(_held(110, cookie=0), **kw)[0] == decide.BULK
    # diag's walk destroys over netlink too: only the cookie lookups it saves count
    diag = dict(kw, in_kernel=False)
    assert decide.kill_reason(_held(500), **dict(diag, host_tcp=_unread))[0] is None
    assert decide.kill_reason(_held(319, cookie=0), **diag)[0] is None
    assert decide.kill_reason(_held(321, cookie=0), **diag)[0] == decide.BULK


def test_a_listing_walks_where_making_the_cookies_costs_more():
    assert decide.cookie_reason(0, _unread) == (None, "")
    assert decide.cookie_reason(319, lambda: 10_000) == (None, "")
    assert decide.cookie_reason(321, lambda: 10_000) == (
        decide.COOKIE, "321 sockets the kernel has no cookie for yet: the walk makes them "
                       "for less than a lookup each")


def test_a_planned_kill_walks_a_namespace_found_whole_only_when_it_must_or_costs_less():
    kw = dict(can_destroy=True, paced=False, host_tcp=lambda: 10_000, in_kernel=True)
    assert decide.planned_reason(159, **kw) is None
    assert decide.planned_reason(161, **kw) == decide.BULK
    assert decide.planned_reason(161, **dict(kw, paced=True, host_tcp=_unread)) is None
    assert decide.planned_reason(10 ** 6, **dict(kw, in_kernel=False, host_tcp=_unread)) is None
    assert decide.planned_reason(0, **dict(kw, host_tcp=_unread)) is None
    assert decide.planned_reason(1, **dict(kw, can_destroy=False, host_tcp=_unread)) == \
        decide.NO_DESTROY


def test_a_namespace_is_walked_whatever_the_pass_finds_without_counts_or_with_time_wait():
    counts = Counts(tcp=11, tw=2, udp=3, opens=40)
    assert decide.certain_walk(DEFAULT, Scope(), None) == decide.NO_COUNTERS
    assert decide.certain_walk(DEFAULT, Scope(), counts) == decide.TIME_WAIT   # fin-wait-2
    assert decide.certain_walk(build_filter(state=["established"]), Scope(), counts) is None
    timewait = build_filter(state=["time-wait"], dport=["80"])
    assert decide.certain_walk(timewait, Scope(), counts) == decide.TIME_WAIT
    assert decide.certain_walk(build_filter(state=["fin-wait-2"]), Scope(), counts) == \
        decide.TIME_WAIT
    assert decide.certain_walk(timewait, Scope(), counts._replace(tw=0)) is None
    # a time-wait socket has no inode, no cgroup and uid 0: these cannot select one
    assert decide.certain_walk(timewait, Scope(inodes=frozenset({1})), counts) is None
    assert decide.certain_walk(timewait, Scope(cgroup_ids=frozenset({1})), counts) is None
    assert decide.certain_walk(build_filter(state=["time-wait"], uid=["1000"]), Scope(),
                               counts) is None
    assert decide.certain_walk(build_filter(state=["time-wait"], proto=["udp"]), Scope(),
                               counts) is None


def test_each_reason_says_why_in_words():
    counts = Counts(tcp=11, tw=0, udp=3, opens=40)
    assert decide.walk_reason(DEFAULT, Scope(), counts, counts, HELD(11, 3, 0, 0)) == (
        None, "every socket is held by a process (11 TCP, 3 UDP)")
    assert decide.walk_reason(DEFAULT, Scope(), None, counts, HELD(11, 3, 0, 0)) == (
        decide.NO_COUNTERS, "its socket counts could not be read")
    after = counts._replace(tcp=12, opens=43, udp=2)
    assert decide.walk_reason(DEFAULT, Scope(), counts, after, HELD(12, 2, 0, 0)) == (
        decide.CHANGED, "its sockets changed during the pass (TCP 11 -> 12, 3 opened; UDP 3 -> 2)")
    assert decide.walk_reason(DEFAULT, Scope(), counts, counts, HELD(9, 3, 0, 2)) == (
        decide.UNHELD, "11 TCP sockets hashed, 9 held by processes (orphans, unaccepted or "
                       "kernel sockets, 2 of them waiting to be accepted)")
    assert decide.walk_reason(DEFAULT, Scope(), counts, counts, HELD(10, 3, 0, 0)) == (
        decide.UNHELD, "11 TCP sockets hashed, 10 held by processes (orphans, unaccepted or "
                       "kernel sockets)")
    # no held counts at all: nothing held there
    assert decide.walk_reason(DEFAULT, Scope(), counts, counts, None) == (
        decide.UNHELD, "11 TCP sockets hashed, 0 held by processes (orphans, unaccepted or "
                       "kernel sockets)")
    assert decide.walk_reason(DEFAULT, Scope(), counts, counts, HELD(11, 2, 0, 0)) == (
        decide.UNHELD, "3 UDP sockets hashed, 2 held by processes (kernel sockets, sockets in flight)")


def test_cost_defaults_count_no_lookups_and_an_in_kernel_walk():
    # at exactly the walk's cost a walk is not cheaper: 100 destroys = 2 ms = an empty host's walk
    assert not decide.walk_cheaper(100, 0) and decide.walk_cheaper(101, 0)
    assert decide.bulk(161, lambda: 10_000) and not decide.bulk(159, lambda: 10_000)


def test_walks_attribution_reads_proc_on_a_quiet_host_and_passes_on_a_busy_one():
    # ~350 files open on a quiet VM: /proc (~2 ms) beats loading the owner pass
    assert decide.owners_from_proc(350)
    assert decide.owners_from_proc(1_500)
    # a node of half a million sockets: /proc ~3 s, the pass ~0.2 s
    assert not decide.owners_from_proc(3_000)
    assert not decide.owners_from_proc(500_000)
    assert decide.owners_from_proc(None)        # not known: nothing loaded for it
