"""Filter parsing and the reference match semantics (pure logic)."""

import ipaddress

import pytest

from sockterm import model, states
from sockterm.filter import FilterError, build_filter, parse_addr_rule, parse_port_range


def sock(dst="10.0.0.5", dport=80, src="10.1.0.2", sport=40000, proto="tcp", family=None,
         state=states.ESTABLISHED, ino=1, cookie=1):
    def addr16(text):
        ip = ipaddress.ip_address(text)
        return model.v4_mapped(ip.packed) if ip.version == 4 else ip.packed
    fam = family or (6 if ":" in dst else 4)
    return model.Sock(netns=1, family=fam, proto=proto, state=state, src=addr16(src), sport=sport,
                      dst=addr16(dst), dport=dport, cookie=cookie, ino=ino)


@pytest.mark.parametrize("text,net,lo,hi", [
    ("10.0.0.5", "::ffff:10.0.0.5/128", 0, 65535),
    ("10.0.0.5:80", "::ffff:10.0.0.5/128", 80, 80),
    ("10.0.0.0/8", "::ffff:10.0.0.0/104", 0, 65535),
    ("10.0.0.0/8:1000-2000", "::ffff:10.0.0.0/104", 1000, 2000),
    ("fd00::5", "fd00::5/128", 0, 65535),
    ("[fd00::5]:443", "fd00::5/128", 443, 443),
    ("[fd00::]/64:53", "fd00::/64", 53, 53),
    ("fd00::/16", "fd00::/16", 0, 65535),
    ("::ffff:10.0.0.5", "::ffff:10.0.0.5/128", 0, 65535),
    ("10.0.0.7/24", "::ffff:10.0.0.0/120", 0, 65535),
])
def test_parse_addr_rule(text, net, lo, hi):
    rule = parse_addr_rule(text)
    assert rule.net == ipaddress.ip_network(net) and (rule.ports.lo, rule.ports.hi) == (lo, hi)


@pytest.mark.parametrize("text", [
    "", "10.0.0.5:", "10.0.0.5:http", "10.0.0.5:70000", "300.0.0.1", "10.0.0.0/33",
    "fd00::5]:80", "[fd00::5", "[fd00::5]80", "[fd00::5]:", "host.example:80", "10.0.0.5:90-80",
    "fe80::1%eth0", ":80", "[]:80", "10.0.0.5:-1",
])
def test_bad_addresses_raise_one_line(text):
    with pytest.raises(FilterError) as exc:
        parse_addr_rule(text)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("text,lo,hi", [("80", 80, 80), ("1000-2000", 1000, 2000), ("0-65535", 0, 65535)])
def test_port_ranges(text, lo, hi):
    r = parse_port_range(text)
    assert (r.lo, r.hi) == (lo, hi)


@pytest.mark.parametrize("text", ["", "-", "a", "80-", "-80", "65536", "2-1", "1.5", " "])
def test_bad_ports(text):
    with pytest.raises(FilterError):
        parse_port_range(text)


def test_v4_target_matches_v4_mapped_ipv6_socket():
    flt = build_filter(dst=["10.0.0.5:80"])
    assert flt.matches(sock())
    assert flt.matches(sock(dst="::ffff:10.0.0.5", src="::ffff:10.1.0.2", family=6))
    assert not flt.matches(sock(dst="10.0.0.6"))
    assert not flt.matches(sock(dport=81))


def test_and_between_options_or_between_repeats():
    flt = build_filter(dst=["10.0.0.5", "10.0.0.6"], dport=["80", "443"], proto=["tcp"])
    assert flt.matches(sock(dst="10.0.0.6", dport=443))
    assert not flt.matches(sock(dst="10.0.0.7", dport=443))
    assert not flt.matches(sock(dst="10.0.0.6", dport=8080))
    assert not flt.matches(sock(dst="10.0.0.6", dport=443, proto="udp"))


def test_default_states_spare_servers_and_time_wait():
    flt = build_filter(dport=["80"])
    assert flt.matches(sock(state=states.ESTABLISHED))
    assert flt.matches(sock(state=states.SYN_SENT))
    for state in (states.LISTEN, states.CLOSE, states.TIME_WAIT):
        assert not flt.matches(sock(state=state))
    assert not flt.matches(sock(proto="udp", state=states.CLOSE))


def test_list_defaults_to_all_states():
    flt = build_filter(default_states=states.ALL)
    assert flt.matches(sock(state=states.LISTEN)) and flt.matches(sock(state=states.TIME_WAIT))


@pytest.mark.parametrize("name,expected", [
    ("listening", {states.LISTEN}), ("unconnected", {states.CLOSE}),
    ("established", {states.ESTABLISHED}), ("syn-recv", {states.SYN_RECV, states.NEW_SYN_RECV}),
    ("time-wait", {states.TIME_WAIT}), ("all", set(states.ALL)),
    ("connected", set(states.ALL) - {states.LISTEN, states.CLOSE}),
])
def test_state_names(name, expected):
    assert set(build_filter(state=[name]).states) == expected


def test_states_combine_and_accept_commas():
    flt = build_filter(state=["listening,unconnected"])
    assert set(flt.states) == {states.LISTEN, states.CLOSE}


@pytest.mark.parametrize("kw", [
    {"state": ["bogus"]}, {"proto": ["sctp"]}, {"dport": ["80,,81"]}, {"pid": ["0"]},
    {"pid": ["abc"]}, {"comm": [""]}, {"comm": ["x" * 16]}, {"netns": [" "]},
    {"dst": ["10.0.0.%d" % i for i in range(17)]},
])
def test_bad_filters(kw):
    with pytest.raises(FilterError):
        build_filter(**kw)


def test_targeted():
    assert not build_filter().targeted
    assert not build_filter(state=["all"], proto=["tcp"], ipv4=True).targeted
    for kw in ({"dst": ["10.0.0.5"]}, {"sport": ["22"]}, {"pid": ["1"]}, {"netns": ["x"]},
               {"comm": ["nginx"]}, {"src": ["::1"]}, {"dport": ["80"]}):
        assert build_filter(**kw).targeted


def test_process_and_cookie_restrictions_belong_to_the_run_scope():
    from sockterm.engine import Scope
    flt = build_filter(pid=["1"])
    assert flt.matches(sock(ino=7)) and flt.matches(sock(ino=8))    # the filter: what was written
    scope = Scope(inodes=frozenset({7}), exclude_inodes=frozenset({9}))
    assert scope.admits(sock(ino=7)) and not scope.admits(sock(ino=8))
    assert not Scope(exclude_inodes=frozenset({9})).admits(sock(ino=9))
    pinned = Scope(cookies=frozenset({5}))
    assert pinned.admits(sock(cookie=5)) and not pinned.admits(sock(cookie=6))


def test_family_flags():
    flt = build_filter(ipv6=True)
    assert not flt.matches(sock()) and flt.matches(sock(dst="fd00::5", src="fd00::1"))


def test_describe_round_trips_through_the_cli_words():
    flt = build_filter(dst=["10.0.0.5:80"], dport=["1-2"], proto=["udp"], state=["listening"])
    text = flt.describe()
    assert "--dst 10.0.0.5:80" in text and "--dport 1-2" in text and "--proto udp" in text


# -- what mutation testing asked for (scripts/mutate): exact messages and edges --------

@pytest.mark.parametrize("kw,message", [
    ({"dport": ["http"]}, "invalid port 'http': expected a number 0-65535"),
    ({"dport": ["70000"]}, "invalid port '70000': expected a number 0-65535"),
    ({"dport": ["1-2-3"]}, "invalid port '2-3': expected a number 0-65535"),
    ({"dport": ["90-80"]}, "invalid port range '90-80': 90 is above 80"),
    ({"dst": [" "]}, "empty address: expected ADDR[/PREFIX][:PORT]"),
    ({"dst": ["[fd00::5"]}, "invalid address '[fd00::5': missing ']'"),
    ({"dst": ["[fd00::5]]:80"]}, "invalid address '[fd00::5]]:80': expected ':PORT' after ']'"),
    ({"dst": ["[fd00::]/64:"]}, "invalid address '[fd00::]/64:': empty port"),
    ({"dst": ["fe80::1%eth0"]}, "invalid address 'fe80::1%eth0': zone indexes are not supported"),
    ({"dst": [":80"]}, "invalid address ':80': the address is missing"),
    ({"src": ["300.1.2.3"]},
     "invalid address '300.1.2.3': expected ADDR[/PREFIX][:PORT], IPv6 as [ADDR]:PORT"),
    ({"dst": ["10.0.0.5:"]}, "invalid port '': expected a number 0-65535"),
    ({"dst": [f"10.0.0.{i}" for i in range(17)]}, "at most 16 --dst and 16 --src targets per run"),
    ({"src": [f"10.0.0.{i}" for i in range(17)]}, "at most 16 --dst and 16 --src targets per run"),
    ({"dport": [str(i) for i in range(17)]}, "at most 16 --dport and 16 --sport ranges per run"),
    ({"sport": [str(i) for i in range(17)]}, "at most 16 --dport and 16 --sport ranges per run"),
    ({"proto": ["tcp,sctp"]}, "unknown protocol 'sctp': expected tcp or udp"),
    ({"state": ["bogus"]}, "unknown state 'bogus'; expected one of: " + ", ".join(states.state_names())),
    ({"dport": ["80,,443"]}, "empty item in '80,,443'"),
    ({"netns": ["  "]}, "--netns needs a value"),
    ({"pid": ["0"]}, "invalid pid '0': expected a positive number"),
    ({"pid": ["4194305"]}, "invalid pid '4194305': above the kernel's pid limit"),
    ({"comm": ["a/b"]}, "invalid command name 'a/b': expected the process name as in "
                        "/proc/PID/comm (1-15 characters)"),
])
def test_refusals_say_exactly_what_is_wrong(kw, message):
    with pytest.raises(FilterError) as exc:
        build_filter(**kw)
    assert str(exc.value) == message


@pytest.mark.parametrize("kw", [{"pid": ["4194304"]}, {"comm": ["x" * 15]}, {"dport": ["80-80"]},
                                {"sport": [str(i) for i in range(16)]},
                                {"dst": [f"10.0.0.{i}" for i in range(16)]}])
def test_limits_are_inclusive(kw):
    assert build_filter(**kw).targeted


@pytest.mark.parametrize("comm", ["a\0b", "/", "x" * 16, " "])
def test_bad_command_names(comm):
    with pytest.raises(FilterError):
        build_filter(comm=[comm])


def test_port_range_text():
    assert [str(r) for r in build_filter(dport=["80", "1-2", "0-65535"]).dport] == ["80", "1-2", "0-65535"]


def test_ipv4_flag():
    flt = build_filter(ipv4=True)
    assert flt.families == {4}
    assert flt.matches(sock()) and not flt.matches(sock(dst="fd00::5", src="fd00::1"))


def test_describe_says_every_option_in_command_line_words():
    flt = build_filter(dst=["10.0.0.5:80"], src=["[::1]:1-2"], dport=["443,8000-8080"], sport=["22"],
                       proto=["tcp"], ipv6=True, netns=["web-1"], pid=["42"], comm=["nginx"],
                       state=["established", "listening"])
    assert flt.describe() == ("--dst 10.0.0.5:80 --src [::1]:1-2 --dport 443 --dport 8000-8080 "
                              "--sport 22 --proto tcp -6 --netns web-1 --pid 42 --comm nginx "
                              "--state established,listening")
    assert build_filter().describe() == (
        "--state close-wait,closing,established,fin-wait-1,fin-wait-2,last-ack,syn-recv,syn-sent")
    assert build_filter(proto=["udp", "tcp"], ipv4=True, ipv6=True,
                        state=["all"]).describe().startswith("--state ")


@pytest.mark.parametrize("kw,message", [
    ({"container": [" "]}, "--container needs a NAME or ID"),
    ({"container": ["a\0b"]}, "--container needs a NAME or ID"),
    ({"cgroup": [""]}, "--cgroup needs a PATH or unit name"),
    ({"pod": [" "]}, "--pod needs a [NAMESPACE/]NAME"),
    ({"pod": ["ns/"]}, "invalid pod 'ns/': expected NAME or NAMESPACE/NAME"),
    ({"uid": ["4294967295"]}, "invalid uid '4294967295': above the largest uid"),
    ({"uid": ["no-such-user-here"]}, "unknown user 'no-such-user-here': expected a user name or a uid"),
    ({"uid": [str(u) for u in range(17)]}, "at most 16 --uid values per run"),
])
def test_scope_refusals_say_exactly_what_is_wrong(kw, message):
    with pytest.raises(FilterError) as exc:
        build_filter(**kw)
    assert str(exc.value) == message


def test_sixteen_uids_fit():
    assert build_filter(uid=[str(u) for u in range(16)]).uids == tuple(range(16))


@pytest.mark.parametrize("text,meant", [
    ("fd66::5:7080", "[fd66::5]:7080"), ("fd66::5:9999", "[fd66::5]:9999"),
    ("fd66::5", ""), ("10.0.0.5", ""), ("10.0.0.5:80", ""),
    ("[fd66::5:7080]", ""), ("[fd66::5]:7080", ""), ("fd66::/64", ""),
])
def test_port_lookalike_hint(text, meant):
    """An IPv6 address whose last group looks like a port gets a hint, only bare."""
    assert parse_addr_rule(text).meant == meant


def test_port_lookalike_takes_ports_only():
    # unreachable from parse_addr_rule (a hex group has 4 digits at most), but the
    # function says what it means: a valid port, nothing above
    from sockterm.filter import _port_lookalike
    assert _port_lookalike("fd66::5:65535") == "[fd66::5]:65535"
    assert _port_lookalike("fd66::5:65536") == ""
