"""The one pass's decision, without a kernel: when a namespace's own counts
prove the processes hold every socket the filter could select, and when
they send it to a walk. The counterpart with real sockets is
tests/priv/test_onepass.py (real sockets)."""

from __future__ import annotations

import pytest

from sockterm import model, states as st
from sockterm.core import onepass
from sockterm.engine import Scope
from sockterm.filter import build_filter
from sockterm.host import netns
from sockterm.host.netns import Counts

HELD = model.HeldCounts
DEFAULT = build_filter(dst=["10.0.0.5:80"])            # connected sockets, time-wait excluded


def reason(flt, before, after, held, scope=Scope(), uncounted=""):
    return onepass.walk_reason(flt, scope, before, after, held, uncounted)[0]


def test_counts_that_agree_need_no_walk():
    counts = Counts(tcp=11, tw=0, udp=3, opens=40)
    assert reason(DEFAULT, counts, counts, HELD(11, 3, 0, 0)) is None


@pytest.mark.parametrize("held, why", [
    (HELD(10, 3, 0, 1), onepass.UNHELD),      # an unaccepted child, an orphan, a kernel socket
    (HELD(12, 3, 0, 0), onepass.UNHELD),      # more held than hashed: never trusted
    (HELD(11, 2, 0, 0), onepass.UNHELD),      # a vxlan device's UDP socket
])
def test_sockets_no_process_holds_send_it_to_a_walk(held, why):
    counts = Counts(tcp=11, tw=0, udp=3, opens=40)
    assert reason(DEFAULT, counts, counts, held) == why


def test_only_the_protocols_the_filter_selects_are_compared():
    counts = Counts(tcp=11, tw=4, udp=3, opens=40)
    udp_only = build_filter(proto=["udp"], dport=["53"])
    assert reason(udp_only, counts, counts, HELD(0, 3, 9, 0)) is None
    assert reason(udp_only, counts, counts, HELD(0, 2, 0, 0)) == onepass.UNHELD


def test_a_change_during_the_pass_sends_it_to_a_walk():
    before = Counts(tcp=11, tw=0, udp=3, opens=40)
    assert reason(DEFAULT, before, before._replace(tcp=12), HELD(12, 3, 0, 0)) == onepass.CHANGED
    # a connection opened and closed while the pass ran: same level, more opens
    assert reason(DEFAULT, before, before._replace(opens=41), HELD(11, 3, 0, 0)) == onepass.CHANGED
    assert reason(DEFAULT, before, before._replace(udp=2), HELD(11, 2, 0, 0)) == onepass.CHANGED
    # time-wait coming and going does not matter to a filter that cannot select it
    established = build_filter(state=["established"], dport=["80"])
    assert reason(established, before, before._replace(tw=5), HELD(11, 3, 0, 0)) is None


def test_time_wait_matters_when_the_filter_can_select_it():
    counts = Counts(tcp=11, tw=2, udp=0, opens=40)
    held = HELD(11, 0, 0, 0)
    timewait = build_filter(state=["time-wait"], dport=["80"])
    finwait2 = build_filter(state=["fin-wait-2"], dport=["80"])   # an orphaned one is a timewait sock
    established = build_filter(state=["established"], dport=["80"])
    assert reason(timewait, counts, counts, held) == onepass.TIME_WAIT
    assert reason(finwait2, counts, counts, held) == onepass.TIME_WAIT
    assert reason(established, counts, counts, held) is None
    # the default kill filter selects fin-wait-2
    assert reason(DEFAULT, counts, counts, held) == onepass.TIME_WAIT
    # a process filter selects by inode, --cgroup by cgroup, --uid by owner: never a
    # time-wait socket (no inode, no cgroup, uid 0)
    assert reason(timewait, counts, counts, held, scope=Scope(inodes=frozenset({7}))) is None
    assert reason(timewait, counts, counts, held, scope=Scope(cgroup_ids=frozenset({9}))) is None
    assert reason(build_filter(state=["time-wait"], uid=["1000"]), counts, counts, held) is None
    assert reason(build_filter(state=["time-wait"], uid=["0"]), counts, counts, held) == onepass.TIME_WAIT


def test_pending_requests_matter_when_the_filter_can_select_syn_recv():
    counts = Counts(tcp=11, tw=0, udp=0, opens=40)
    held = HELD(11, 0, 2, 0)
    assert reason(DEFAULT, counts, counts, held) == onepass.SYN_RECV
    assert reason(build_filter(state=["syn-recv"], dport=["80"]), counts, counts, held) == onepass.SYN_RECV
    assert reason(build_filter(state=["established"], dport=["80"]), counts, counts, held) is None


def test_unreadable_counts_and_an_uncounted_pass_walk():
    counts = Counts(tcp=1, tw=0, udp=0, opens=1)
    assert reason(DEFAULT, None, counts, HELD(1, 0, 0, 0)) == onepass.NO_COUNTERS
    assert reason(DEFAULT, counts, None, HELD(1, 0, 0, 0)) == onepass.NO_COUNTERS
    assert reason(DEFAULT, counts, counts, HELD(1, 0, 0, 0), uncounted="map full") == onepass.UNCOUNTED


def test_a_namespace_nobody_holds_anything_in():
    empty = Counts(0, 0, 0, 0)
    assert reason(DEFAULT, empty, empty, None) is None
    assert reason(DEFAULT, empty._replace(tcp=2), empty._replace(tcp=2), None) == onepass.UNHELD


def sock(cookie, proto="udp", state=st.CLOSE, sport=53, dport=0, src=b"\0" * 16, ifindex=0):
    return model.Sock(1, 6, proto, state, src, sport, b"\0" * 16, dport, cookie, ifindex=ifindex)


def test_udp_servers_sharing_a_port_are_left_to_a_walk():
    assert not onepass.reuseport_groups([sock(1), sock(2, sport=54)])
    assert onepass.reuseport_groups([sock(1), sock(2)])
    assert not onepass.reuseport_groups([sock(1), sock(2, ifindex=3)])
    assert not onepass.reuseport_groups([sock(1, proto="tcp", state=st.LISTEN),
                                         sock(2, proto="tcp", state=st.LISTEN)])
    assert not onepass.reuseport_groups([sock(1, state=st.ESTABLISHED, dport=9),
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


def test_counters_read_inuse_tw_and_opens(tmp_path):
    for name, text in zip(("sockstat", "sockstat6", "snmp"), (SOCKSTAT, SOCKSTAT6, SNMP)):
        (tmp_path / name).write_text(text)
    counters = netns.Counters._open(str(tmp_path))
    try:
        assert counters.read() == Counts(tcp=15, tw=2, udp=4, opens=160)
        (tmp_path / "sockstat6").write_text(SOCKSTAT6.replace("TCP6: inuse 4", "TCP6: inuse 5"))
        assert counters.read().tcp == 16       # each read starts from the top
    finally:
        counters.close()


def test_walk_cheaper_weighs_destroys_and_cookie_lookups_against_one_walk():
    from sockterm.core.onepass import (NETLINK_DESTROY_S, NETLINK_LOOKUP_S, WALK_PER_HOST_SOCKET_S,
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
