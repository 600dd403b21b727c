"""Hostile input to the filter parser (no root needed).

build_filter must either return a Filter or raise FilterError: no other
exception, whatever the text. It must never drop an item silently (a
`--dst` that parses is one rule, a comma list of N ports is N ranges), so
no spelling turns a kill's filter into one that names nothing and so
matches everything. Addresses it accepts mean what they say: checked
against an independent computation with the ipaddress module.

SOCKTERM_LONG=1 raises hypothesis's example count tenfold; SOCKTERM_SEED=N
reproduces a run.
"""

from __future__ import annotations

import ipaddress
import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as S

from seeding import seeded
from sockterm.filter import FilterError, build_filter

LONG = os.environ.get("SOCKTERM_LONG", "") not in ("", "0")
EXAMPLES = 3000 if LONG else 300
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))

ALPHABET = "0123456789abcdefABCDEF:./-[]%, \t*ff:x\n\x00\u00e9"
hostile = S.text(alphabet=ALPHABET, max_size=40) | S.text(max_size=20)

OPTIONS = ("dst", "src", "dport", "sport", "proto", "state", "netns", "pid", "comm")


@seeded
@fuzz
@given(option=S.sampled_from(OPTIONS), values=S.lists(hostile, min_size=1, max_size=3))
def test_parser_raises_only_filter_error(option, values):
    try:
        flt = build_filter(**{option: values})
    except FilterError as exc:
        text = str(exc)
        assert text and "\n" not in text.strip(), repr(text)
        return
    # accepted: nothing was dropped on the way
    counts = {"dst": len(flt.dst), "src": len(flt.src), "netns": len(flt.netns),
              "comm": len(flt.comms)}
    if option in counts:
        assert counts[option] == len(values), (values, flt)
    if option in ("dport", "sport", "pid"):
        items = sum(len(v.split(",")) for v in values)
        got = {"dport": len(flt.dport), "sport": len(flt.sport), "pid": len(flt.pids)}[option]
        assert got == items, (values, flt)
    if option not in ("proto", "state"):
        assert flt.targeted, f"{option}={values!r} parsed into a filter that names nothing"


def _v4():
    return S.builds(ipaddress.IPv4Address, S.integers(0, 2**32 - 1))


def _v6():
    return S.builds(ipaddress.IPv6Address, S.integers(0, 2**128 - 1))


ports = S.one_of(S.none(), S.tuples(S.integers(0, 65535), S.integers(0, 65535)).map(sorted))


@seeded
@fuzz
@given(addr=S.one_of(_v4(), _v6()), prefix=S.one_of(S.none(), S.integers(0, 128)), ports=ports,
       spelling=S.integers(0, 2))
def test_accepted_addresses_mean_what_they_say(addr, prefix, ports, spelling):
    v4 = addr.version == 4
    if prefix is not None and prefix > (32 if v4 else 128):
        prefix = prefix % (33 if v4 else 129)
    body = str(addr) if prefix is None else f"{addr}/{prefix}"
    port_text = None if ports is None else (str(ports[0]) if ports[0] == ports[1]
                                            else f"{ports[0]}-{ports[1]}")
    if v4:
        text = body if port_text is None else f"{body}:{port_text}"
    elif port_text is None:
        text = body if spelling else f"[{addr}]" + ("" if prefix is None else f"/{prefix}")
    elif prefix is None or spelling == 0:
        text = f"[{addr}]" + ("" if prefix is None else f"/{prefix}") + f":{port_text}"
    else:
        text = f"[{body}]:{port_text}"
    [rule] = build_filter(dst=[text]).dst
    # independent: IPv4 targets are ::ffff:a.b.c.d/(96+n)
    if v4:
        plen = 32 if prefix is None else prefix
        net4 = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
        want = ipaddress.ip_network(f"::ffff:{net4.network_address}/{96 + plen}")
    else:
        want = ipaddress.ip_network(f"{addr}/{128 if prefix is None else prefix}", strict=False)
    assert rule.net == want, text
    lo, hi = ports if ports is not None else (0, 65535)
    assert (rule.ports.lo, rule.ports.hi) == (lo, hi), text


@pytest.mark.parametrize("value", ["", " ", "\t", ",", " , ", ",80", "80,", "80,,443"])
@pytest.mark.parametrize("option", ["dst", "src", "dport", "sport", "netns", "pid", "comm"])
def test_blank_items_are_refused_not_dropped(option, value):
    try:
        flt = build_filter(**{option: [value]})
    except FilterError:
        return
    assert flt.targeted, f"--{option} {value!r} was dropped: the filter names nothing"
