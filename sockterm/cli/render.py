"""Rendering sockets and reports: table on a terminal, tsv when piped, json, jsonl.

JSON keys are a documented contract (README, man page): add, never rename.
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import sys

from .. import model
from ..signals import held
from ..text import shown

COLUMNS = ("NETNS", "PROTO", "STATE", "LOCAL", "PEER", "PROCESS")


def default_format(stream=None) -> str:
    stream = stream or sys.stdout
    return "table" if stream.isatty() else "tsv"


def endpoint(addr: str, port: int, family: int) -> str:
    return f"[{addr}]:{port}" if family == 6 else f"{addr}:{port}"


def process_text(sock: model.Sock) -> str:
    if not sock.processes:
        return "-" if sock.processes is not None else ""
    return ",".join(f"{comm}[{pid}]" for pid, comm in sock.processes)


def result_text(sock: model.Sock) -> str:
    if sock.error and sock.result != model.KILLED:
        return f"{sock.result} ({errno_mod.errorcode.get(sock.error, sock.error)})"
    return sock.result


def container_dict(container) -> dict | None:
    if container is None:
        return None
    return {"runtime": container.runtime, "id": container.id, "name": container.name}


def pod_dict(pod) -> dict | None:
    if pod is None:
        return None
    return {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid}


def socket_dict(sock: model.Sock, kill: bool) -> dict:
    doc = {
        "netns": sock.netns,
        "netns_name": sock.netns_name,
        "proto": sock.proto,
        "family": sock.family,
        "state": sock.state_name(),
        "src": sock.src_text(),
        "sport": sock.sport,
        "dst": sock.dst_text(),
        "dport": sock.dport,
        "cookie": sock.cookie,
        "inode": sock.ino,
        "uid": sock.uid,
        "processes": None if sock.processes is None else
        [{"pid": pid, "comm": comm} for pid, comm in sock.processes],
        "container": container_dict(sock.container),
        "pod": pod_dict(sock.pod),
    }
    if kill:
        doc["result"] = sock.result
        doc["error"] = errno_mod.errorcode.get(sock.error) if sock.error else None
        doc["holder"] = None if sock.holder is None else {"pid": sock.holder[0], "fd": sock.holder[1]}
    return doc


# -- the same object as socket_dict, formatted directly: json.dumps of a dict
# costs ~5 us a socket, which is most of a 200k-socket listing.
_dumps = json.dumps
_ERRNAMES = errno_mod.errorcode
_addr_texts: dict = {}
_names: dict = {}


def _addr_json(addr16: bytes, family: int) -> str:
    key = (addr16, family)
    text = _addr_texts.get(key)
    if text is None:
        if len(_addr_texts) > 65536:
            _addr_texts.clear()
        text = _addr_texts[key] = model.addr_text(addr16, family)
    return text


def _name_json(name: str) -> str:
    text = _names.get(name)
    if text is None:
        text = _names[name] = _dumps(name)
    return text


_holders: dict = {}


def _processes_json(processes) -> str:
    if processes is None:
        return "null"
    cacheable = type(processes) is tuple    # model.Owners shares few distinct tuples
    text = _holders.get(processes) if cacheable else None
    if text is None:
        text = "[" + ",".join(f'{{"pid":{pid},"comm":{_name_json(comm)}}}'
                              for pid, comm in processes) + "]"
        if cacheable:
            if len(_holders) > 65536:
                _holders.clear()
            _holders[processes] = text
    return text


_NO_PLACE = '"container":null,"pod":null'
_places: dict = {}


def _place_json(place) -> str:
    """The container and pod keys of a socket; one text per Place (sockets share them)."""
    text = _places.get(place)
    if text is None:
        text = _places[place] = (f'"container":{_dumps(container_dict(place.container))},'
                                 f'"pod":{_dumps(pod_dict(place.pod))}')
    return text


def socket_json(sock: model.Sock, kill: bool) -> str:
    """json.dumps(socket_dict(sock, kill)) with compact separators, faster."""
    text = (f'{{"netns":{sock.netns},"netns_name":{_name_json(sock.netns_name)},'
            f'"proto":"{sock.proto}","family":{sock.family},"state":"{sock.state_name()}",'
            f'"src":"{_addr_json(sock.src, sock.family)}","sport":{sock.sport},'
            f'"dst":"{_addr_json(sock.dst, sock.family)}","dport":{sock.dport},'
            f'"cookie":{sock.cookie},"inode":{sock.ino},"uid":{sock.uid},'
            f'"processes":{_processes_json(sock.processes)},'
            f'{_NO_PLACE if sock.place is None else _place_json(sock.place)}')
    if kill:
        error = f'"{_ERRNAMES[sock.error]}"' if sock.error in _ERRNAMES else "null"
        holder = "null" if sock.holder is None else \
            f'{{"pid":{sock.holder[0]},"fd":{sock.holder[1]}}}'
        text += f',"result":"{sock.result}","error":{error},"holder":{holder}'
    return text + "}"


def watched_json(sock: model.Stamped, kill: bool) -> str:
    """socket_json plus a watch's keys: `time` and `phase` (start, window)."""
    return socket_json(sock, kill)[:-1] + f',"time":"{stamp_text(sock.time)}","phase":"{sock.phase}"}}'


def ns_dict(nsr: model.NamespaceReport, watch=None) -> dict:
    place = nsr.ns.place
    doc = {"netns": nsr.ns.ino, "netns_name": nsr.ns.name, "engine": nsr.engine,
           "matched": nsr.matched, "killed": nsr.killed, "failed": nsr.failed,
           "shut_down": nsr.shut_down, "not_held": nsr.not_held,
           "error": nsr.error or None, "walked": nsr.walked, "walk_reason": nsr.walk_reason,
           "container": container_dict(place.container if place else None),
           "pod": pod_dict(place.pod if place else None)}
    if watch is not None:
        matched, killed, failed = watch.by_ns.get(nsr.ns.ino, (0, 0, 0))
        doc["window"] = {"matched": matched, "killed": killed, "failed": failed}
    return doc


def row(sock: model.Sock, kill: bool, watch: bool = False) -> tuple:
    # process and namespace names are anyone's to choose: no tab may split a
    # tsv column, no escape sequence may reach root's terminal
    cells = (shown(sock.netns_name), sock.proto, sock.state_name(),
             endpoint(sock.src_text(), sock.sport, sock.family),
             endpoint(sock.dst_text(), sock.dport, sock.family),
             shown(process_text(sock)))
    if watch:
        cells = (clock_text(sock.time),) + cells
    return cells + (result_text(sock),) if kill else cells


def clock_text(when: float) -> str:
    """A watch's TIME column: local time to the millisecond."""
    import time
    return time.strftime("%H:%M:%S", time.localtime(when)) + f".{int(when * 1000) % 1000:03d}"


def stamp_text(when: float) -> str:
    """A watch's `time` key: UTC, ISO 8601, to the microsecond."""
    import datetime
    return datetime.datetime.fromtimestamp(when, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")


class Renderer:
    """Receives sockets as the run streams them, then the finished report."""

    fmt = ""

    def __init__(self, *, kill: bool, header: bool, out=None, watch: bool = False):
        self.kill = kill
        self.header = header
        self.out = out or sys.stdout
        self.watch = watch            # kill/match --watch: stamped sockets, streamed as they come

    def write(self, text: str) -> None:
        """Out in full: signals wait until the text has left (see signals.held)."""
        with held():
            self.out.write(text)
            self.out.flush()

    def columns(self):
        return (("TIME",) if self.watch else ()) + COLUMNS + (("RESULT",) if self.kill else ())

    def socket(self, sock: model.Sock) -> None:
        raise NotImplementedError

    def finish(self, report, meta: dict) -> None:
        pass

    def refusal(self, report, meta: dict) -> None:
        """A kill that refused to start (--max, the prompt): nothing was
        killed; the stderr line says why (formats for people print nothing)."""


class TsvRenderer(Renderer):
    fmt = "tsv"
    BATCH = 256      # lines a write

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lines: list[str] = []

    # the header goes out with the first line, so a run that fails prints nothing
    def _start(self):
        if self.header:
            self.lines.append("\t".join(self.columns()))
            self.header = False

    def socket(self, sock):
        self._start()
        self.lines.append("\t".join(map(str, row(sock, self.kill, self.watch))))
        if len(self.lines) >= self.BATCH or (self.watch and sock.phase == model.WINDOW):
            self._flush()

    def _flush(self):
        if self.lines:
            self.write("\n".join(self.lines) + "\n")
            self.lines.clear()

    def finish(self, report, meta):
        self._start()
        self._flush()


class JsonlRenderer(Renderer):
    fmt = "jsonl"
    BATCH = 256      # one write per batch: 200k write() calls cost ~0.3 s

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lines: list[str] = []

    def socket(self, sock):
        if self.watch:
            self.lines.append(watched_json(sock, self.kill))
            if sock.phase == model.WINDOW:
                self._flush()         # one line per socket as it is destroyed
        else:
            self.lines.append(socket_json(sock, self.kill))
        if len(self.lines) >= self.BATCH:
            self._flush()

    def _flush(self):
        if self.lines:
            self.write("\n".join(self.lines) + "\n")
            self.lines.clear()

    def finish(self, report, meta):
        self._flush()

    def refusal(self, report, meta):
        # one object, not a socket line: consumers tell them apart by its "summary"
        doc = dict(meta, engine=report.engine, summary=summary_dict(report, self.kill))
        self.write(json.dumps(doc) + "\n")


class JsonRenderer(Renderer):
    fmt = "json"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.sockets = []

    def socket(self, sock):
        self.sockets.append(watched_json(sock, self.kill) if self.watch
                            else socket_json(sock, self.kill))

    def finish(self, report, meta):
        doc = dict(meta)
        doc["engine"] = report.engine
        doc["sockets"] = []
        doc["namespaces"] = [ns_dict(r, report.watch) for r in report.namespaces]
        doc["summary"] = summary_dict(report, self.kill)
        # one socket object a line inside the pretty document: readable, and
        # without the pure-Python indenting encoder over 20k objects
        text = json.dumps(doc, indent=2)
        marker = '"sockets": []'
        assert text.count(marker) == 1
        sockets = "[\n    " + ",\n    ".join(self.sockets) + "\n  ]" if self.sockets else "[]"
        self.write(text.replace(marker, '"sockets": ' + sockets) + "\n")

    def refusal(self, report, meta):
        self.sockets.clear()
        self.finish(report, meta)


class TableRenderer(Renderer):
    """Aligned columns fitted to the terminal (80 columns when there is none).

    Laid out here rather than with rich.Table: rich needs ~0.5 ms a row, ten
    seconds for the 20,000 sockets a large kill reports."""

    fmt = "table"

    def __init__(self, *, width: int | None = None, color: bool | None = None, **kw):
        super().__init__(**kw)
        self.rows = []
        self.width = width
        self.color = color

    def socket(self, sock):
        self.rows.append(row(sock, self.kill, self.watch))
        if self.watch:
            self._lines(self.rows)          # as they come, in columns fixed up front
            self.rows.clear()

    def finish(self, report, meta):
        if self.rows:
            self._lines(self.rows)

    def _lines(self, rows) -> None:
        width = self.width or terminal_width()
        color = use_color(self.out) if self.color is None else self.color
        names = self.columns()
        if self.watch:
            widths = self._widths = getattr(self, "_widths", None) or fit_widths(
                names, [tuple("x" * n for n in WATCH_WIDTHS[-len(names):])], width)
        else:
            widths = fit_widths(names, rows, width)
        out: list[str] = []
        write = out.append
        if self.header:
            self.header = False
            for line in folded_lines(names, widths, BOLD if color else None):
                write(line + "\n")
        result_at = len(names) - 1 if self.kill else None
        for cells in rows:
            style = None
            if color and result_at is not None:
                style = {result_at: GREEN if cells[result_at] in ENDED else RED}
            for line in folded_lines(cells, widths, style):
                write(line + "\n")
        self.write("".join(out))


# the columns of a watch's table, sized before the first line (TIME ... RESULT)
WATCH_WIDTHS = (12, 16, 5, 11, 21, 21, 16, 7)


BOLD, GREEN, RED, RESET = "\x1b[1m", "\x1b[32m", "\x1b[31m", "\x1b[0m"
ENDED = (model.KILLED, model.SHUT_DOWN)      # what a kill set out to do, done
GAP = 2
# columns give up width in this order, each down to its minimum
SHRINK = (("PROCESS", 7), ("NETNS", 12), ("PEER", 21), ("LOCAL", 21), ("PEER", 14),
          ("LOCAL", 14), ("NETNS", 8), ("RESULT", 7), ("STATE", 5))


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


def use_color(out) -> bool:
    """Colour only on a terminal, never when NO_COLOR is present and not empty
    (no-color.org), never on TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def fit_widths(names, rows, width: int) -> list[int]:
    widths = [len(n) for n in names]
    for cells in rows:
        for i, cell in enumerate(cells):
            if len(cell) > widths[i]:
                widths[i] = len(cell)
    excess = sum(widths) + GAP * (len(widths) - 1) - width
    for name, minimum in SHRINK:
        if excess <= 0:
            break
        if name not in names:
            continue
        i = names.index(name)
        give = min(excess, max(0, widths[i] - max(minimum, len(name))))
        widths[i] -= give
        excess -= give
    while excess > 0 and max(widths) > 1:    # a very narrow terminal: fold the widest
        widths[widths.index(max(widths))] -= 1
        excess -= 1
    return widths


def _line(cells, widths, style) -> str:
    out = []
    for i, (cell, w) in enumerate(zip(cells, widths)):
        code = style if isinstance(style, str) else (style or {}).get(i)
        pad = " " * (w - len(cell))
        out.append(f"{code}{cell}{RESET}{pad}" if code and cell else cell + pad)
    return (" " * GAP).join(out).rstrip()


def folded_lines(cells, widths, style):
    """A row as one line, or several when cells are wider than their column."""
    if all(len(c) <= w for c, w in zip(cells, widths)):
        yield _line(cells, widths, style)
        return
    parts = [[c[i:i + w] for i in range(0, len(c), w)] or [""] for c, w in zip(cells, widths)]
    for n in range(max(len(p) for p in parts)):
        yield _line([p[n] if n < len(p) else "" for p in parts], widths, style)


RENDERERS = {"tsv": TsvRenderer, "json": JsonRenderer, "jsonl": JsonlRenderer, "table": TableRenderer}


def summary_dict(report, kill: bool) -> dict:
    doc = {"matched": report.matched, "namespaces": len(report.namespaces),
           "namespace_errors": len(report.ns_errors), "interrupted": report.interrupted}
    if kill:
        doc.update(killed=report.killed, failed=report.failed, shut_down=report.shut_down,
                   not_held=report.not_held, refused=report.refused or None)
    if getattr(report, "watch", None) is not None:
        doc["watch"] = watch_dict(report.watch, kill)
    return doc


def watch_dict(watch, kill: bool) -> dict:
    doc = {"duration": watch.duration, "elapsed": watch.elapsed, "ended": watch.ended or None,
           "udp": watch.udp or None, "matched_in_window": watch.matched,
           "events": watch.events, "lost": watch.lost, "unreachable": watch.unreachable}
    if kill:
        doc.update(killed_at_start=watch.killed_at_start, killed_in_window=watch.killed,
                   failed_in_window=watch.failed, lag_ms=watch.lag())
    return doc


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _counts(r, kill: bool, graceful: bool, where: str = "") -> str:
    """r: a report or a namespace's (matched, killed, failed, shut_down, not_held)."""
    if not kill:
        return _plural(r.matched, "socket") + where
    if graceful:
        text = f"shut down {r.shut_down} of {_plural(r.matched, 'matching socket')}{where}"
        if r.killed:
            text += f", aborted {r.killed}"
        if r.not_held:
            text += f", {r.not_held} held by no process left alone"
    else:
        text = f"killed {r.killed} of {_plural(r.matched, 'matching socket')}{where}"
    return text + (f", {r.failed} failed" if r.failed else "")


MAX_NS_LINES = 20


def watch_lines(report, kill: bool) -> list[str]:
    """A watch's part of the summary: what died at the start, what in the
    window, per namespace."""
    watch = report.watch
    how = {"duration": "its end", "signal": "a signal", "max": "--max"}.get(watch.ended, "an error")
    window = f"the window ({watch.elapsed:g} of {watch.duration:g} s, ended by {how})"
    if not kill:
        return [f"{_plural(watch.matched, 'new connection')} matched in {window}"]
    lines = []
    for r in report.namespaces:
        at_window = watch.by_ns.get(r.ns.ino, (0, 0, 0))[1]
        if r.killed and len(report.namespaces) > 1 and len(lines) < MAX_NS_LINES:
            lines.append(f"  {shown(r.ns.name)}: {r.killed - at_window} killed at start, "
                         f"{at_window} in the window")
    lag = watch.lag()
    lines.append(f"killed {watch.killed_at_start} at start and {watch.killed} in {window}"
                 + (f"; event to destroy: median {lag['median']:g} ms, p99 {lag['p99']:g} ms"
                    if lag else ""))
    return lines


def summary_lines(report, kill: bool) -> list[str]:
    """For stderr: one line per namespace when several matched, then the total."""
    touched = [r for r in report.namespaces if r.matched]
    lines = []
    if len(touched) > 1:
        touched.sort(key=lambda r: (-r.matched, r.ns.name))
        names = {id(r): shown(r.ns.name) for r in touched[:MAX_NS_LINES]}
        width = max(map(len, names.values()))
        for r in touched[:MAX_NS_LINES]:
            lines.append(f"  {names[id(r)]:<{width}}  {_counts(r, kill, report.graceful)}")
        if len(touched) > MAX_NS_LINES:
            lines.append(f"  ... and {len(touched) - MAX_NS_LINES} more namespaces")
    if touched:
        where = f"in {_plural(len(touched), 'namespace')}"
    else:
        where = f"in {_plural(len(report.namespaces), 'namespace')} searched"
    lines.append(f"{_counts(report, kill, report.graceful, ' ' + where)} (engine {report.engine})")
    if getattr(report, "watch", None) is not None:
        lines += watch_lines(report, kill)
    if report.interrupted:
        import signal
        try:
            name = signal.Signals(report.signum).name
        except ValueError:
            name = "a signal"
        done = "shut down" if report.graceful else "destroyed"
        lines.append(f"interrupted by {name}: " + (f"no further socket was {done}; every one "
                     f"{done} is reported above" if kill else "the listing is incomplete"))
    return lines

