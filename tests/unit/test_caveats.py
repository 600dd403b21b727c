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
    c = caveats.Caveat("x", "y", first=(6, 5, 0), fixed=(6, 9, 0), auto="z",
                       stable=((6, 6, 14),))
    assert c.verdict((6, 8, 2)) == "unknown"      # no fix seen in 6.8.y: a backport may have it
    assert c.verdict((6, 6, 13)) == "affected" and c.verdict((6, 6, 14)) == ""
    assert c.verdict((6, 9, 0)) == "" and c.verdict((6, 4, 9)) == ""
    assert c.verdict(None) == "unknown" and c.fixed_in == "6.6.14, 6.9"


def test_this_kernel_and_the_crash_auto_avoids():
    """CVE-2026-64575 (a crash in the TCP iterator, 6.17 to 7.1.5): fixed in
    6.18.42, so not on this machine kind's 6.18.44; auto avoids bpf where a
    kernel is affected, and only there."""
    assert caveats.bpf_avoided("6.18.44-fc-v1272") == ""
    assert "CVE-2026-64575" in caveats.bpf_avoided("6.18.41")
    assert "CVE-2026-64575" in caveats.bpf_avoided("7.1.5") and caveats.bpf_avoided("7.1.6") == ""
    assert "iter/udp restarts" in caveats.bpf_avoided("6.6.13") and caveats.bpf_avoided("6.6.14") == ""
    assert caveats.bpf_avoided("6.12.104") == "" and caveats.bpf_avoided("7.3.0") == ""
    idents = {c.ident: v for c, v in caveats.applicable("5.10.40")}
    assert idents["CVE-2021-47248"] == "affected" and idents["iter/tcp skips"] == "unknown"
    assert "CVE-2021-47248" not in {c.ident for c, _ in caveats.applicable("5.10.46")}


def test_man_page_lists_every_caveat_doctor_knows():
    with open(MAN) as f:
        text = f.read().replace("\\-", "-")
    caveat_section = text[text.index(".SH CAVEATS"):text.index(".SH EXAMPLES")]
    for c in caveats.KERNEL_CAVEATS:
        assert c.ident in caveat_section
        assert all(v in caveat_section for v in c.fixed_in.split(", "))
        assert c.source.split()[0][:12] in caveat_section
        assert "doctor" in caveat_section
