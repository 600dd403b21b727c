"""State names and groups as ss(8) defines them, written out here independently
(numbers from include/net/tcp_states.h, groups from ss(8)'s STATE-FILTER)."""

import pytest

from sockterm import states

# include/net/tcp_states.h
KERNEL = {"established": 1, "syn-sent": 2, "syn-recv": 3, "fin-wait-1": 4, "fin-wait-2": 5,
          "time-wait": 6, "closed": 7, "close-wait": 8, "last-ack": 9, "listening": 10,
          "closing": 11}
NEW_SYN_RECV = 12
ALL = set(range(1, 13))
# ss(8): bucket = syn-recv and time-wait (minisockets), big = all but bucket,
# connected = all but listen and closed, synchronized = connected but syn-sent
GROUPS = {"all": ALL, "connected": ALL - {10, 7}, "synchronized": ALL - {10, 7, 2},
          "bucket": {3, 12, 6}, "big": ALL - {3, 12, 6}, "unconnected": {7}}


@pytest.mark.parametrize("name", sorted(KERNEL))
def test_each_name_is_its_kernel_state(name):
    want = {KERNEL[name], NEW_SYN_RECV} if name == "syn-recv" else {KERNEL[name]}
    assert states.parse_state(name) == want
    assert all(states.NAMES[n] == name for n in want)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_each_group_is_what_ss_means(group):
    assert states.parse_state(group) == GROUPS[group]


def test_default_kill_is_connected_without_time_wait():
    assert states.DEFAULT_KILL == GROUPS["connected"] - {6}


@pytest.mark.parametrize("alias,name", [("listen", "listening"), ("close", "closed"),
                                        ("unconn", "unconnected"), ("estab", "established"),
                                        ("time_wait", "time-wait"), (" LISTEN ", "listening"),
                                        ("Time-Wait", "time-wait"), ("ESTAB", "established")])
def test_aliases_and_case(alias, name):
    assert states.parse_state(alias) == states.parse_state(name)


def test_names_in_ss_order_then_groups():
    assert states.state_names() == [
        "established", "syn-sent", "syn-recv", "fin-wait-1", "fin-wait-2", "time-wait", "closed",
        "close-wait", "last-ack", "listening", "closing",
        "all", "connected", "synchronized", "bucket", "big", "unconnected"]


def test_unknown_state_names_the_choices():
    with pytest.raises(ValueError) as exc:
        states.parse_state("bogus")
    assert str(exc.value) == ("unknown state 'bogus'; expected one of: "
                              + ", ".join(states.state_names()))

