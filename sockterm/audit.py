"""The audit trail: one syslog record per kill run.

Written straight to the syslog socket (AF_UNIX datagram, RFC 3164 framing,
facility authpriv, ident "sockterm") rather than through the `syslog` module,
so tests can point it at a socket of their own via SOCKTERM_SYSLOG_SOCKET.
Where /dev/log is missing or refuses (a host with journald but no syslog
socket), the record goes to journald's native socket with the same facility,
identifier and priority. Auditing never fails a kill: `write` says where the
record went and why every place before it did not take it; the CLI warns
when none did.
"""

from __future__ import annotations

import os
import pwd
import _socket       # the socket module's C half (see model.py)
import time

from .text import shown

SOCKET_ENV = "SOCKTERM_SYSLOG_SOCKET"
DEFAULT_SOCKET = "/dev/log"
JOURNAL_SOCKET = "/run/systemd/journal/socket"     # journald's native protocol
IDENT = "sockterm"
FACILITY_AUTHPRIV = 10
SEVERITY_NOTICE = 5
SEVERITY_WARNING = 4
# journald and rsyslog take far more, but a record is one line an operator reads
MAX_RECORD = 16 * 1024
MAX_NAMESPACES = 200      # per-namespace counts listed; the rest summed up


def targets() -> list[tuple[str, str]]:
    """(kind, path) in the order tried: the socket SOCKTERM_SYSLOG_SOCKET
    names and only it, else /dev/log, then journald's."""
    named = os.environ.get(SOCKET_ENV)
    if named:
        return [("syslog", named)]
    return [("syslog", DEFAULT_SOCKET), ("journal", JOURNAL_SOCKET)]


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _loginuid() -> int | None:
    """The audit login uid: who logged in, whatever su/sudo did since."""
    try:
        with open("/proc/self/loginuid") as f:
            value = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return None if value == 0xFFFFFFFF else value


def who(environ=None) -> str:
    env = os.environ if environ is None else environ
    uid = os.getuid()
    parts = [f"uid={uid}({_user(uid)})"]
    if os.geteuid() != uid:
        parts.append(f"euid={os.geteuid()}")
    if env.get("SUDO_USER"):
        parts.append(f"sudo_user={env['SUDO_USER']}")
        if env.get("SUDO_UID"):
            parts.append(f"sudo_uid={env['SUDO_UID']}")
    login = _loginuid()
    if login is not None and login != uid:
        parts.append(f"loginuid={login}({_user(login)})")
    return " ".join(parts)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def message(*, filter_text: str, report, error: str = "", environ=None, mode=None) -> str:
    """The record's text: who, how, the filter, totals, then counts per namespace.

    `report` is a core.Report (duck-typed: engine, namespaces, matched, killed,
    failed, shut_down, not_held); `mode` the kill's (cli/kill.py: mode,
    shutdown, abort_rest), None for an abort.
    """
    graceful = bool(mode) and mode["mode"] == "graceful"
    how = (f"mode=graceful shutdown={mode['shutdown']} "
           f"abort_rest={'yes' if mode['abort_rest'] else 'no'} " if graceful else "")
    fields = (("matched", "shut_down", "not_held", "killed", "failed") if graceful
              else ("matched", "killed", "failed"))
    head = (f"kill by {who(environ)} {how}filter={_quote(filter_text)} "
            f"engine={report.engine or '-'} "
            + " ".join(f"{name}={getattr(report, name)}" for name in fields)
            + f" namespaces={len(report.namespaces)}"
            + f" namespaces_matched={sum(1 for r in report.namespaces if r.matched)}")
    watch = getattr(report, "watch", None)
    if watch is not None:
        head += (f" watch={watch.duration:g}s ended={watch.ended or '-'} "
                 f"killed_at_start={watch.killed_at_start} killed_in_window={watch.killed} "
                 f"lost={watch.lost}")
    if error:
        head += f" error={_quote(error)}"
    touched = [r for r in report.namespaces if r.matched or r.error]
    items = [f"{r.ns.name}({r.ns.ino}):{r.engine}:" + "/".join(str(getattr(r, name)) for name in fields)
             + (" error" if r.error and not r.gone else "") for r in touched[:MAX_NAMESPACES]]
    if len(touched) > MAX_NAMESPACES:
        items.append(f"... {len(touched) - MAX_NAMESPACES} more")
    text = head + (f" per-netns(name(inode):engine:{'/'.join(fields)})=" + ",".join(items)
                   if items else "")
    # names, SUDO_USER and error text are anyone's to choose: no newline may
    # forge a second record, no escape sequence reach whoever reads the log
    text = shown(text)
    if len(text.encode()) > MAX_RECORD:
        text = text.encode()[:MAX_RECORD - 14].decode(errors="ignore") + " ...truncated"
    return text


def watch_started(*, filter_text: str, duration: float, environ=None) -> str:
    """The record a kill --watch writes once its event source is attached,
    before it kills anything (the end writes message()'s, with the counts)."""
    return shown(f"kill --watch {duration:g}s started by {who(environ)} "
                 f"filter={_quote(filter_text)}")


def frame(text: str, *, severity: int = SEVERITY_NOTICE, now: float | None = None) -> bytes:
    """RFC 3164 as syslog(3) writes it to /dev/log: <PRI>Mmm dd hh:mm:ss ident[pid]: text."""
    pri = FACILITY_AUTHPRIV * 8 + severity
    stamp = time.strftime("%b %d %H:%M:%S", time.localtime(now))
    if stamp[4] == "0":
        stamp = stamp[:4] + " " + stamp[5:]
    return f"<{pri}>{stamp} {IDENT}[{os.getpid()}]: {text}".encode()


def journal_entry(text: str, *, severity: int = SEVERITY_NOTICE) -> bytes:
    """journald's native datagram: KEY=value lines (text has no newline: message() escapes them)."""
    fields = (("MESSAGE", text), ("PRIORITY", severity), ("SYSLOG_FACILITY", FACILITY_AUTHPRIV),
              ("SYSLOG_IDENTIFIER", IDENT), ("SYSLOG_PID", os.getpid()))
    return "".join(f"{key}={value}\n" for key, value in fields).encode()


def write(text: str, *, severity: int = SEVERITY_NOTICE,
          to: list[tuple[str, str]] | None = None) -> tuple[str | None, list[str]]:
    """Send one record to the first target that takes it. Returns the path
    it went to (None: none took it) and why each target before did not."""
    problems = []
    for kind, path in to or targets():
        if not os.path.exists(path):
            problems.append(f"no {'journald' if kind == 'journal' else 'syslog'} socket at {path}")
            continue
        data = journal_entry(text, severity=severity) if kind == "journal" else frame(text, severity=severity)
        try:
            sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
            try:
                sock.settimeout(2.0)
                sock.connect(path)
                sock.send(data)
            finally:
                sock.close()
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        return path, problems
    return None, problems
