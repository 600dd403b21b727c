#!/usr/bin/env python3
"""Score per module from mutmut's results (scripts/mutate): killed / all mutants,
and every mutant that survived, with its diff. Exit 1 when a module is below 90%."""

from __future__ import annotations

import re
import subprocess
import sys

THRESHOLD = 0.90


def results() -> list[tuple[str, str]]:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"],
                         capture_output=True, text=True, check=True).stdout
    return [tuple(part.strip() for part in line.rsplit(":", 1))
            for line in out.splitlines() if ":" in line]


def module(name: str) -> str:
    # sockterm.filter.x_parse_port__mutmut_3, sockterm.filter.xǁFilterǁmatches__mutmut_1
    return re.split(r"\.x[_ǁ]", name, maxsplit=1)[0]


def main() -> int:
    table: dict[str, dict[str, int]] = {}
    survivors = []
    for name, status in results():
        counts = table.setdefault(module(name), {})
        counts[status] = counts.get(status, 0) + 1
        if status != "killed":
            survivors.append((name, status))
    low = False
    print(f"{'module':40} {'mutants':>7} {'killed':>6} {'score':>6}  other")
    for mod, counts in sorted(table.items()):
        total = sum(counts.values())
        killed = counts.get("killed", 0)
        score = killed / total if total else 1.0
        low |= score < THRESHOLD
        other = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()) if k != "killed")
        print(f"{mod:40} {total:7} {killed:6} {score:6.1%}  {other}")
    for name, status in survivors:
        diff = subprocess.run([sys.executable, "-m", "mutmut", "show", name],
                              capture_output=True, text=True).stdout
        changed = [l for l in diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---")]
        print(f"\n{name}: {status}\n    " + "\n    ".join(changed))
    return 1 if low else 0


if __name__ == "__main__":
    sys.exit(main())
