"""Rendering sockets and reports: table on a terminal, tsv when piped, json, jsonl.

JSON keys are a documented contract (README, man page): add, never rename.
"""

from __future__ import annotations

import errno as errno_mod
import os
import re
import sys

from .. import model
from ..signals import held
from ..text import shown, terminal_width

COLUMNS = ("NETNS", "PROTO", "STATE", "LOCAL", "PEER", "PROCESS")


def default_format(stream=None) -> str:
    stream = stream or sys.stdout
    return "table" if stream.isatty() else "tsv"


def endpoint(addr: str, port: int, family: int, wildcard: bool = False) -> str:
    """addr:port, IPv6 in brackets; with wildcard, port 0 (no peer, not
    bound) is ss's `*`: `0.0.0.0:*`, `[::]:*`."""
    port_text = "*" if wildcard and port == 0 else port
    return f"[{addr}]:{port_text}" if family == 6 else f"{addr}:{port_text}"


def holders(processes) -> tuple:
    """A socket's processes as the PROCESS cell's parts, `comm[pid]` each:
    "-" for none, nothing when not attributed (None)."""
    if not processes:
        return ("-",) if processes is not None else ()
    return tuple(f"{comm}[{pid}]" for pid, comm in processes)


def process_text(sock: model.Sock) -> str:
    return ",".join(holders(sock.processes))


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
def _dumps(value) -> str:
    # json here, not at import: only the json formats use it (a table or
    # tsv run does without it, ~1.5 ms); each text is made once, then cached
    import json
    return json.dumps(value)


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


def row(sock: model.Sock, kill: bool, watch: bool = False, wildcard: bool = False) -> tuple:
    """The text cells of a socket (tsv; the table and the prompt with ss's
    wildcard port); a watch's begin with its TIME."""
    # process and namespace names are anyone's to choose: no tab may split a
    # tsv column, no escape sequence may reach root's terminal
    cells = (shown(sock.netns_name), sock.proto, sock.state_name(),
             endpoint(sock.src_text(), sock.sport, sock.family, wildcard),
             endpoint(sock.dst_text(), sock.dport, sock.family, wildcard),
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


def table_row(sock: model.Sock, kill: bool) -> tuple:
    """A table row: the cells' text (with ss's wildcard port), then the
    socket's processes, which the PROCESS cell is made of: a line may break
    between two holders, never inside one (see parts)."""
    return row(sock, kill, wildcard=True) + (sock.processes,)


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


class _LineRenderer(Renderer):
    """One line a socket, written in batches."""

    BATCH = 256      # lines a write: 200k write() calls cost ~0.3 s

    def __init__(self, **kw):
        super().__init__(**kw)
        self.lines: list[str] = []

    def _flush(self):
        if self.lines:
            self.write("\n".join(self.lines) + "\n")
            self.lines.clear()


class TsvRenderer(_LineRenderer):
    fmt = "tsv"

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

    def finish(self, report, meta):
        self._start()
        self._flush()


class JsonlRenderer(_LineRenderer):
    fmt = "jsonl"

    def socket(self, sock):
        if self.watch:
            self.lines.append(watched_json(sock, self.kill))
            if sock.phase == model.WINDOW:
                self._flush()         # one line per socket as it is destroyed
        else:
            self.lines.append(socket_json(sock, self.kill))
        if len(self.lines) >= self.BATCH:
            self._flush()

    def finish(self, report, meta):
        self._flush()

    def refusal(self, report, meta):
        # one object, not a socket line: consumers tell them apart by its "summary"
        doc = dict(meta, engine=report.engine, summary=summary_dict(report, self.kill))
        self.write(_dumps(doc) + "\n")


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
        import json
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

    def __init__(self, *, width: int | None = None, color: bool | None = None, err=None, **kw):
        super().__init__(**kw)
        self.rows = []
        self.width = width
        self.color = color
        self.err = err
        self._fixed = None          # a watch's: names, widths, color, marker (see _stream)

    def socket(self, sock):
        if self.watch:
            self._stream(sock)          # as they come, in columns fixed up front
        else:
            self.rows.append(table_row(sock, self.kill))

    def finish(self, report, meta):
        if not self.rows:
            return
        width = self.width or terminal_width()
        color = use_color(self.out) if self.color is None else self.color
        lines, left_out = table_lines(self.columns(), self.rows, width, header=self.header,
                                      color=color, marker=self._marker())
        self.write("".join(line + "\n" for line in lines))
        self._left_out(left_out)

    def _marker(self) -> str:
        return MARKER if encodes(self.out, MARKER) else "~"

    def _left_out(self, left_out) -> None:
        if left_out:
            (self.err or sys.stderr).write(f"sockterm: {left_out_note(left_out)}; -o tsv shows all\n")

    def _stream(self, sock) -> None:
        """A watch's row, written as it comes, in columns sized before the
        first (for a template row of WATCH_WIDTHS). TIME goes before the
        table_row's columns, as a prefix of each line; a cell wider than its
        column folds as a table's does, and a pid or an address that cannot
        fit widens its row rather than break."""
        if self._fixed is None:
            names = COLUMNS + (("RESULT",) if self.kill else ())
            sizes = WATCH_WIDTHS[1:len(names) + 1]
            template = tuple("x" * n for n in sizes) + (((1, "x" * (sizes[PROCESS] - 3)),),)
            width = (self.width or terminal_width()) - WATCH_WIDTHS[0] - GAP
            color = use_color(self.out) if self.color is None else self.color
            widths = fit_widths(names, [template], width)
            # still too wide: the address columns give up what is left over (a
            # row whose address is wider widens, below: it never breaks)
            for i in (names.index("PEER"), names.index("LOCAL")):
                excess = sum(widths.values()) + GAP * (len(widths) - 1) - width
                widths[i] -= min(max(0, excess), widths[i] - len(names[i]))
            self._fixed = (names, widths, color, self._marker())
            names, widths, color, _ = self._fixed
            if self.header:
                self.write(_prefixed("TIME", _line([names[i] for i in widths], widths,
                                                   BOLD if color else None),
                                     BOLD if color else None) + "\n")
            self._left_out([name for i, name in enumerate(names) if i not in widths])
        names, widths, color, marker = self._fixed
        cells = table_row(sock, self.kill)
        fitted = {i: max([w] + [len(part) if names[i] not in NAMES else narrowest(part, HARD)
                                for part in parts(cells, i)])
                  for i, w in widths.items()}
        style = {RESULT: GREEN if cells[RESULT] in ENDED else RED} if color and self.kill else None
        lines = list(folded_lines(cells, fitted, style, marker))
        self.write("".join(_prefixed(clock_text(sock.time) if n == 0 else "", line) + "\n"
                           for n, line in enumerate(lines)))


def _prefixed(prefix: str, line: str, style: str | None = None) -> str:
    """A watch's line: its TIME cell (WATCH_WIDTHS[0] wide), then the table's."""
    pad = " " * (WATCH_WIDTHS[0] - len(prefix) + GAP)
    head = f"{style}{prefix}{RESET}" if style and prefix else prefix
    return (head + pad + line).rstrip()


# the columns of a watch's table, sized before the first line (TIME ... RESULT)
WATCH_WIDTHS = (12, 16, 5, 11, 21, 21, 16, 7)


BOLD, GREEN, RED, RESET = "\x1b[1m", "\x1b[32m", "\x1b[31m", "\x1b[0m"
ENDED = (model.KILLED, model.SHUT_DOWN)      # what a kill set out to do, done
GAP = 2
MARKER = "\u2026"     # where a name was cut: "…"
# how much of a name a cut leaves (before the marker; a pid suffix stays whole)
SOFT, HARD = 10, 3
# Rows wider than the terminal give up width in these steps, in this order,
# each only as far as needed. No step ever breaks a pid, an address or a port:
#   several holders go one to a line, a result breaks at its space (nothing lost);
#   names are cut in the middle, marked, down to SOFT characters;
#   columns are left out, PROTO then STATE (a line on stderr says so);
#   names are cut down to HARD characters.
# A row that still does not fit is wider than the terminal.
FOLD, DROP = -1, 0
SHRINK = (("PROCESS", FOLD), ("RESULT", FOLD), ("NETNS", SOFT), ("PROCESS", SOFT),
          ("PROTO", DROP), ("STATE", DROP), ("NETNS", HARD), ("PROCESS", HARD))
PROCESS, RESULT = 5, 6                 # the columns made of parts: holders, words
NAMES = ("NETNS", "PROCESS")           # the columns whose text may be cut (clip)
SEPARATOR = {PROCESS: ",", RESULT: " "}   # how their parts join on one line
_PID = r"\[\d+\]$"     # compiled where a name is cut (re's cache keeps it)


def use_color(out) -> bool:
    """Colour only on a terminal, never when NO_COLOR is present and not empty
    (no-color.org), never on TERM=dumb."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return out.isatty()
    except (AttributeError, ValueError):
        return False


def encodes(out, text: str) -> bool:
    """Can the stream write text? (a table on a Latin-1 terminal gets "~" marks)"""
    try:
        text.encode(getattr(out, "encoding", None) or "utf-8")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def clip(part: str, width: int, marker: str = MARKER) -> str:
    """part cut in the middle to width, marked; a trailing [pid] stays whole,
    and so does a part that cannot keep two characters of its own."""
    if len(part) <= width:
        return part
    found = re.search(_PID, part)
    tail = found.group() if found else ""
    head = part[:len(part) - len(tail)]
    room = width - len(tail) - len(marker)
    if room < 2:
        return part
    left = (room + 1) // 2
    return head[:left] + marker + head[len(head) - (room - left):] + tail


def narrowest(part: str, keep: int) -> int:
    """The width part can be cut to keeping `keep` characters of its own."""
    found = re.search(_PID, part)
    return min(len(part), keep + 1 + (len(found.group()) if found else 0))


def parts(cells, i: int):
    """What cell i of a table_row is made of, each part never broken: a
    holder, a result's word, or the whole cell."""
    if i == PROCESS:
        return tuple(shown(h) for h in holders(cells[-1]))
    if i == RESULT:
        return cells[i].split(" ")
    return (cells[i],)


def fit_widths(names, rows, width: int) -> dict:
    """Column index -> width for the columns shown, fitted to width (SHRINK)."""
    natural = {i: max([len(name)] + [len(cells[i]) for cells in rows])
               for i, name in enumerate(names)}
    widths = dict(natural)

    def excess():
        return sum(widths.values()) + GAP * (len(widths) - 1) - width
    if excess() <= 0:
        return widths
    for name, keep in SHRINK:
        if excess() <= 0:
            break
        if name not in names:
            continue
        i = names.index(name)
        if keep == DROP:
            del widths[i]
            continue
        floor = len(name)
        for cells in rows:
            for part in parts(cells, i):
                floor = max(floor, len(part) if keep == FOLD else narrowest(part, keep))
        widths[i] -= min(excess(), max(0, widths[i] - floor))
    # a column left out may have freed more than was needed: it goes back to
    # the names that were cut first, then to the cells that were folded
    widest = {i: max([len(names[i])] + [len(part) for cells in rows for part in parts(cells, i)])
              for i in widths}
    for most in (widest, natural):
        for i in widths:
            widths[i] += min(max(0, -excess()), max(0, most[i] - widths[i]))
    return widths


def cell_lines(parts, sep: str, width: int, marker: str = MARKER) -> list:
    """A cell's parts on as few lines of width as they go, whole (a name
    too wide for any line is cut: clip)."""
    lines: list = []
    for part in parts:
        part = clip(part, width, marker)
        if lines and len(lines[-1]) + len(sep) + len(part) <= width:
            lines[-1] += sep + part
        else:
            lines.append(part)
    return lines or [""]


def _line(cells, widths, style) -> str:
    out = []
    for (i, w), cell in zip(widths.items(), cells):
        code = style if isinstance(style, str) else (style or {}).get(i)
        pad = " " * (w - len(cell))
        out.append(f"{code}{cell}{RESET}{pad}" if code and cell else cell + pad)
    return (" " * GAP).join(out).rstrip()


def folded_lines(cells, widths: dict, style, marker: str = MARKER):
    """A table_row as one line, or several when cells are wider than their column."""
    texts = [cells[i] for i in widths]
    if all(len(t) <= w for t, w in zip(texts, widths.values())):
        yield _line(texts, widths, style)
        return
    folded = [cell_lines(parts(cells, i), SEPARATOR.get(i, ""), w, marker) for i, w in widths.items()]
    for n in range(max(map(len, folded))):
        yield _line([p[n] if n < len(p) else "" for p in folded], widths, style)


def table_lines(names, rows, width: int, *, header: bool = True, color: bool = False,
                marker: str = MARKER) -> tuple[list, list]:
    """The table's lines (table_row rows), and the names of the columns left out."""
    widths = fit_widths(names, rows, width)
    lines = []
    if header:
        # no column is ever narrower than its name: the header is one line
        lines.append(_line([names[i] for i in widths], widths, BOLD if color else None))
    kill = len(names) > RESULT
    for cells in rows:
        style = None
        if color and kill:
            style = {RESULT: GREEN if cells[RESULT] in ENDED else RED}
        lines += folded_lines(cells, widths, style, marker)
    return lines, [name for i, name in enumerate(names) if i not in widths]


def left_out_note(left_out) -> str:
    return f"{', '.join(left_out)} hidden to fit"


RENDERERS = {"tsv": TsvRenderer, "json": JsonRenderer, "jsonl": JsonlRenderer, "table": TableRenderer}


def summary_dict(report, kill: bool) -> dict:
    # "namespaces" counts those searched (its meaning since the first release);
    # "namespaces_matched" those where something matched ("in 3 namespaces of 5 searched")
    doc = {"matched": report.matched, "namespaces": len(report.namespaces),
           "namespaces_matched": matched_in(report),
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


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def matched_in(report) -> int:
    return sum(1 for r in report.namespaces if r.matched)


def in_namespaces(touched: int, searched: int) -> str:
    """In how many namespaces, of how many searched: one phrase for every
    summary (the kill prompt's too), so the word means one thing."""
    if not touched:
        return f"in {plural(searched, 'namespace')} searched"
    return f"in {plural(touched, 'namespace')} of {searched} searched"


def _counts(r, kill: bool, graceful: bool, where: str = "") -> str:
    """r: a report or a namespace's (matched, killed, failed, shut_down, not_held)."""
    if not kill:
        return plural(r.matched, "socket") + where
    if graceful:
        text = f"shut down {r.shut_down} of {plural(r.matched, 'matching socket')}{where}"
        if r.killed:
            text += f", aborted {r.killed}"
        if r.not_held:
            text += f", {r.not_held} held by no process left alone"
    else:
        text = f"killed {r.killed} of {plural(r.matched, 'matching socket')}{where}"
    return text + (f", {r.failed} failed" if r.failed else "")


MAX_NS_LINES = 20


def watch_lines(report, kill: bool) -> list[str]:
    """A watch's part of the summary: what died at the start, what in the
    window, per namespace."""
    watch = report.watch
    how = {"duration": "its end", "signal": "a signal", "max": "--max"}.get(watch.ended, "an error")
    window = f"the window ({watch.elapsed:g} of {watch.duration:g} s, ended by {how})"
    if not kill:
        return [f"{plural(watch.matched, 'new connection')} matched in {window}"]
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
    """For stderr: one line per namespace when several matched (the most
    matches first, then in the run's order), then the total."""
    touched = [r for r in report.namespaces if r.matched]
    lines = []
    if len(touched) > 1:
        touched.sort(key=lambda r: (-r.matched, model.ns_order(r.ns)))
        names = {id(r): shown(r.ns.name) for r in touched[:MAX_NS_LINES]}
        width = max(map(len, names.values()))
        for r in touched[:MAX_NS_LINES]:
            lines.append(f"  {names[id(r)]:<{width}}  {_counts(r, kill, report.graceful)}")
        if len(touched) > MAX_NS_LINES:
            lines.append(f"  ... and {len(touched) - MAX_NS_LINES} more namespaces")
    where = in_namespaces(matched_in(report), len(report.namespaces))
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

