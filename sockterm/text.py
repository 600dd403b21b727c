"""Text that sockterm did not write, made safe to show.

Process names (any user sets its own with prctl), namespace and mount names,
SUDO_USER and kernel error text reach root's terminal, the kill prompt and
syslog. `shown` is the one function they pass on the way: control characters
(C0, DEL, C1), line and paragraph separators and bidi overrides/isolates
become visible escapes (`\\x1b`, `\\u202e`), so no name can retitle a terminal,
clear the screen, forge a line or reorder the text around it. JSON output does
not use it: json escapes these itself and keeps exact values.
"""

from __future__ import annotations

import os
import re
import sys

# C0 but nothing printable, DEL, C1; LRM/RLM, ALM; LRE..RLO; LS/PS; LRI..PDI
# and lone surrogates: bytes of a name that were not UTF-8 (surrogateescape)
_UNSAFE_CHARS = ("[\x00-\x1f\x7f-\x9f\u200e\u200f\u061c\u202a-\u202e\u2028\u2029"
                 "\u2066-\u2069\ud800-\udfff]")
_unsafe = None      # compiled on first need: ~1 ms, and most runs never need it


def _escape(match: re.Match) -> str:
    code = ord(match.group())
    if code < 0x100:
        return f"\\x{code:02x}"
    if 0xDC80 <= code <= 0xDCFF:         # the undecodable byte itself
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}"


def shown(text: str) -> str:
    """`text` with every character that could act on a terminal or a log
    line written as a visible escape; anything else unchanged."""
    global _unsafe
    # the common case, one C-level scan: every character _UNSAFE_CHARS names
    # is one str.isprintable() refuses (Cc, Cf, Zl, Zp, Cs), not the reverse
    if text.isprintable():
        return text
    if _unsafe is None:
        _unsafe = re.compile(_UNSAFE_CHARS)
    if not _unsafe.search(text):
        return text
    return _unsafe.sub(_escape, text)


def terminal_width(stream=None) -> int:
    """COLUMNS, else the terminal's width, else 80 (as shutil does, for any stream).
    A COLUMNS that is not a positive number (0, -5, junk) is ignored."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns > 0:
        return max(20, columns)
    try:
        return os.get_terminal_size((stream or sys.stdout).fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80
