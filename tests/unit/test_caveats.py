"""Kernel caveats: the table doctor reports from, by release, and the man
page's CAVEATS section naming the same ones."""

import os

from sockterm.host import caveats

MAN = os.path.join(os.path.dirname(__file__), "..", "..", "man", "sockterm.8")


def test_versions():
    assert caveats.kernel_version("6.18.44-fc-v595") == (6, 18, 44)
    assert caveats.kernel_version("6.9") == (6, 9, 0)
    assert caveats.kernel_version("weird") is None


def test_the_request_socket_iterator_bug():
    [(cve, verdict)] = caveats.applicable("6.18.44-fc-v595")
    assert cve.ident == "CVE-2026-74714" and verdict == "affected"
    assert caveats.applicable("6.18.0")[0][1] == "affected"
    assert caveats.applicable("6.18.45") == [] and caveats.applicable("6.19.1") == []
    assert caveats.applicable("6.6.50")[0][1] == "unknown"      # a backport may have fixed it
    assert caveats.applicable("5.4.0") == []                    # no TCP iterator at all
    assert caveats.applicable("mystery")[0][1] == "unknown"


def test_man_page_lists_every_caveat_doctor_knows():
    with open(MAN) as f:
        text = f.read().replace("\\-", "-")
    caveat_section = text[text.index(".SH CAVEATS"):text.index(".SH EXAMPLES")]
    for c in caveats.KERNEL_CAVEATS:
        assert c.ident in caveat_section
        assert ".".join(map(str, c.fixed)) in caveat_section
        assert "doctor" in caveat_section
