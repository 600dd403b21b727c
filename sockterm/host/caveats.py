"""Kernel bugs that bear on sockterm, by kernel release: what doctor reports
and what `--backend auto` does about each. man/sockterm.8 CAVEATS lists the
same ones; tests/unit/test_caveats.py keeps the two in step."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Caveat:
    ident: str            # CVE or short name, as the man page gives it
    summary: str
    first: tuple          # first release with the code at fault
    fixed: tuple          # first mainline release with the fix
    auto: str             # what --backend auto does about it, in one sentence
    source: str = ""      # the upstream commit that fixed it: "<id> (\"<subject>\")"

    def verdict(self, version: tuple | None) -> str:
        """'affected', 'unknown' (an older series: a distribution may have
        backported the fix), or '' (not affected)."""
        if version is None:
            return "unknown"
        if version < self.first or version >= self.fixed:
            return ""
        if version[:2] == self.fixed[:2]:
            return "affected"
        return "unknown"


# Each names its public source: the upstream commit (id and subject) that
# fixed it. One that cannot be checked against a source is not listed.
KERNEL_CAVEATS: tuple = ()


def kernel_version(release: str) -> tuple | None:
    """'6.18.44-fc-v595' -> (6, 18, 44)."""
    m = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", release)
    return (int(m[1]), int(m[2]), int(m[3] or 0)) if m else None


def applicable(release: str) -> list[tuple[Caveat, str]]:
    """(caveat, verdict) for every known caveat that may apply to `release`."""
    version = kernel_version(release)
    return [(c, v) for c in KERNEL_CAVEATS if (v := c.verdict(version))]
