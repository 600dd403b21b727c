"""Kernel caveats: the table doctor reports from, by release, and the man
page's CAVEATS section naming the same ones."""

import os

from sockterm.host import caveats

MAN = os.path.join(os.path.dirname(__file__), "..", "..", "man", "sockterm.8")


def test_versions():
    assert caveats.kernel_version("6.18.44-fc-v595") == (6, 18, 44)
    assert caveats.kernel_version("6.9") == (6, 9, 0)
    assert caveats.kernel_version("weird") is None


def test_every_caveat_names_its_upstream_commit():
    """A caveat is a fact shipped to operators: it cites the commit anyone
    can check (id and subject), or it is not listed."""
    import re
    for c in caveats.KERNEL_CAVEATS:
        assert re.fullmatch(r'[0-9a-f]{12,40} \("[^"]+"\)', c.source), c
        assert c.first < c.fixed


def test_verdicts_by_release():
    c = caveats.Caveat("x", "y", first=(6, 5, 0), fixed=(6, 9, 3), auto="z")
    assert c.verdict((6, 9, 2)) == "affected" and c.verdict((6, 9, 3)) == ""
    assert c.verdict((6, 6, 50)) == "unknown"       # an older series: a backport may have fixed it
    assert c.verdict((6, 4, 0)) == "" and c.verdict(None) == "unknown"


def test_man_page_lists_every_caveat_doctor_knows():
    with open(MAN) as f:
        text = f.read().replace("\\-", "-")
    caveat_section = text[text.index(".SH CAVEATS"):text.index(".SH EXAMPLES")]
    for c in caveats.KERNEL_CAVEATS:
        assert c.ident in caveat_section
        assert ".".join(map(str, c.fixed)) in caveat_section
        assert "doctor" in caveat_section
