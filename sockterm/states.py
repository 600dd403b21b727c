"""Socket states: the kernel's numbering and the names ss(8) uses for them.

TCP and UDP share the kernel's TCP_* numbering: a connected UDP socket is
TCP_ESTABLISHED, an unconnected one TCP_CLOSE.
"""

ESTABLISHED = 1
SYN_SENT = 2
SYN_RECV = 3
FIN_WAIT1 = 4
FIN_WAIT2 = 5
TIME_WAIT = 6
CLOSE = 7
CLOSE_WAIT = 8
LAST_ACK = 9
LISTEN = 10
CLOSING = 11
NEW_SYN_RECV = 12  # request socket; shown as syn-recv, like ss does

# ss(8)'s state names (misc/ss.c sstate_namel), lower-case
NAMES = {
    ESTABLISHED: "established",
    SYN_SENT: "syn-sent",
    SYN_RECV: "syn-recv",
    FIN_WAIT1: "fin-wait-1",
    FIN_WAIT2: "fin-wait-2",
    TIME_WAIT: "time-wait",
    CLOSE: "closed",
    CLOSE_WAIT: "close-wait",
    LAST_ACK: "last-ack",
    LISTEN: "listening",
    CLOSING: "closing",
    NEW_SYN_RECV: "syn-recv",
}

ALL = frozenset(NAMES)
BUCKET = frozenset({SYN_RECV, NEW_SYN_RECV, TIME_WAIT})
CONNECTED = ALL - {LISTEN, CLOSE}
# What match and kill take when no --state is given: sockets with a peer,
# never servers (listeners, unconnected UDP) and never TIME_WAIT leftovers.
DEFAULT_KILL = CONNECTED - {TIME_WAIT}

GROUPS = {
    "all": ALL,
    "connected": CONNECTED,
    "synchronized": CONNECTED - {SYN_SENT},
    "bucket": BUCKET,
    "big": ALL - BUCKET,
    "unconnected": frozenset({CLOSE}),
}


def _single(name: str) -> frozenset:
    return frozenset(num for num, n in NAMES.items() if n == name)


def state_names() -> list[str]:
    """Every name --state accepts, for help text and completion."""
    singles = sorted(set(NAMES.values()), key=lambda n: min(k for k, v in NAMES.items() if v == n))
    return singles + list(GROUPS)


def parse_state(name: str) -> frozenset:
    """The set of kernel state numbers one --state NAME stands for."""
    key = name.strip().lower()
    aliases = {"listen": "listening", "close": "closed", "unconn": "unconnected",
               "estab": "established", "time_wait": "time-wait"}
    key = aliases.get(key, key)
    if key in GROUPS:
        return GROUPS[key]
    found = _single(key)
    if not found:
        raise ValueError(
            f"unknown state {name!r}; expected one of: {', '.join(state_names())}")
    return found
