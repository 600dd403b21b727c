"""Kernel bugs that bear on sockterm, by kernel release: what doctor reports
and what `--backend auto` does about each. man/sockterm.8 CAVEATS lists the
same ones; tests/unit/test_caveats.py keeps the two in step.

Each names its public source: the upstream commit (id and subject) that
fixed it, and the stable releases that took the fix where the kernel's own
CVE records (or the stable review mails) say so. A bug that cannot be
checked against a source is not listed.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class Caveat(NamedTuple):
    """One kernel bug. A NamedTuple, as filter.py's records are: immutable like
    the frozen dataclass it was, without compiling its methods at import
    (~1.3 ms of every run with --backend auto, which asks bpf_avoided)."""

    ident: str            # CVE or short name, as the man page gives it
    summary: str
    first: tuple          # first release with the code at fault
    fixed: tuple          # first mainline release with the fix
    auto: str             # what --backend auto does about it, in one sentence
    source: str = ""      # the upstream commit that fixed it: '<id> ("<subject>")'
    stable: tuple = ()    # stable releases that took the fix, one per series
    avoid_bpf: bool = False   # auto does not use the BPF socket iterators where affected

    def verdict(self, version: tuple | None) -> str:
        """'affected', 'unknown' (a series the fix was not seen reaching: a
        distribution may have backported it), or '' (not affected)."""
        if version is None:
            return "unknown"
        if version < self.first or version >= self.fixed:
            return ""
        for fix in self.stable:
            if version[:2] == fix[:2]:
                return "affected" if version < fix else ""
        if version[:2] == self.fixed[:2]:
            return "affected"
        return "unknown"

    @property
    def fixed_in(self) -> str:
        return ", ".join(map(version_text, (*self.stable, self.fixed)))


def version_text(version: tuple) -> str:
    """(6, 18, 42) -> '6.18.42'; a mainline release (7, 2, 0) -> '7.2'."""
    return ".".join(map(str, version if version[2] else version[:2]))


KERNEL_CAVEATS: tuple = (
    Caveat("CVE-2026-64575",
           "the BPF TCP iterator releases a batch's sockets twice when growing the batch "
           "fails (more than 16 sockets in one hash bucket, under memory pressure): a crash",
           first=(6, 17, 0), fixed=(7, 2, 0), stable=((6, 18, 42), (7, 1, 6)),
           source='980a813452754f8001704744e92f7aa697c53dd3 '
                  '("bpf: tcp: fix double sock release on batch realloc")',
           auto="auto uses the diag engine on an affected kernel (--backend bpf still can)",
           avoid_bpf=True),
    Caveat("iter/udp restarts",
           "the BPF UDP iterator can restart a bucket without end when its batch does not "
           "fit a read: a walk that never finishes",
           first=(6, 5, 0), fixed=(6, 8, 0), stable=((6, 6, 14), (6, 7, 2)),
           source='2242fd537fab52d5f4d2fbb1845f047c01fad0cf '
                  '("bpf: Avoid iter->offset making backward progress in bpf_iter_udp")',
           auto="auto uses the diag engine on an affected kernel (--backend bpf still can)",
           avoid_bpf=True),
    Caveat("iter/tcp skips",
           "the BPF TCP iterator resumes a bucket by offset: sockets that leave a bucket "
           "between two reads (destroyed ones too) can make a walk skip or repeat others",
           first=(5, 9, 0), fixed=(6, 17, 0), stable=((6, 1, 183), (6, 6, 152), (6, 12, 104)),
           source='f5080f612a1c587bf636bb23d2a2f4de276d60e4 '
                  '("bpf: tcp: Avoid socket skips and repeats during iteration")',
           auto="auto still picks bpf (a read takes a whole bucket unless it holds hundreds of "
                "matches); run match after a kill to see what is left"),
    Caveat("iter/udp skips",
           "the BPF UDP iterator resumes a bucket by offset: sockets that leave a bucket "
           "between two reads can make a walk skip or repeat others",
           first=(5, 9, 0), fixed=(6, 16, 0),
           source='5668f73f09aef16755da4453dc0b5b725469878a '
                  '("bpf: udp: Avoid socket skips and repeats during iteration")',
           auto="auto still picks bpf; run match after a kill to see what is left"),
    Caveat("CVE-2021-47248",
           "destroying a UDP socket while its application closes it can crash the kernel "
           "(udp_abort against close)",
           first=(4, 9, 0), fixed=(5, 13, 0), stable=((5, 4, 128), (5, 10, 46), (5, 12, 13)),
           source='a8b897c7bcd47f4147d066e22cc01d1026d7640e '
                  '("udp: fix race between close() and udp_abort()")',
           auto="both engines destroy UDP sockets this way: update the kernel"),
)


def kernel_version(release: str) -> tuple | None:
    """'6.18.44-fc-v595' -> (6, 18, 44)."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else None


def applicable(release: str) -> list[tuple[Caveat, str]]:
    """(caveat, verdict) for every known caveat that may apply to `release`."""
    version = kernel_version(release)
    return [(c, v) for c in KERNEL_CAVEATS if (v := c.verdict(version))]


def bpf_avoided(release: str) -> str:
    """Why auto does not use the BPF iterators on this kernel ('' when it may)."""
    for caveat, verdict in applicable(release):
        if caveat.avoid_bpf and verdict == "affected":
            return f"this kernel has {caveat.ident} ({caveat.summary}; fixed in {caveat.fixed_in})"
    return ""
