"""Rendering sockets and reports: table on a terminal, tsv when piped, json, jsonl.

JSON keys are a documented contract (README, man page): add, never rename.
"""

from __future__ import annotations

import errno as errno_mod
import json
import os
import sys

from .. import model

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
    }
    if kill:
        doc["result"] = sock.result
        doc["error"] = errno_mod.errorcode.get(sock.error) if sock.error else None
    return doc


def ns_dict(nsr: model.NamespaceReport) -> dict:
    return {"netns": nsr.ns.ino, "netns_name": nsr.ns.name, "engine": nsr.engine,
            "matched": nsr.matched, "killed": nsr.killed, "failed": nsr.failed,
            "error": nsr.error or None}


def row(sock: model.Sock, kill: bool) -> tuple:
    cells = (sock.netns_name, sock.proto, sock.state_name(),
             endpoint(sock.src_text(), sock.sport, sock.family),
             endpoint(sock.dst_text(), sock.dport, sock.family), process_text(sock))
    return cells + (result_text(sock),) if kill else cells


class Renderer:
    """Receives sockets as the run streams them, then the finished report."""

    def __init__(self, *, kill: bool, header: bool, out=None):
        self.kill = kill
        self.header = header
        self.out = out or sys.stdout

    def columns(self):
        return COLUMNS + (("RESULT",) if self.kill else ())

    def socket(self, sock: model.Sock) -> None:
        raise NotImplementedError

    def finish(self, report, meta: dict) -> None:
        pass


class TsvRenderer(Renderer):
    def __init__(self, **kw):
        super().__init__(**kw)
        if self.header:
            self.out.write("\t".join(self.columns()) + "\n")

    def socket(self, sock):
        self.out.write("\t".join(map(str, row(sock, self.kill))) + "\n")


class JsonlRenderer(Renderer):
    def socket(self, sock):
        self.out.write(json.dumps(socket_dict(sock, self.kill), separators=(",", ":")) + "\n")


class JsonRenderer(Renderer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.sockets = []

    def socket(self, sock):
        self.sockets.append(socket_dict(sock, self.kill))

    def finish(self, report, meta):
        doc = dict(meta)
        doc["engine"] = report.engine
        doc["sockets"] = self.sockets
        doc["namespaces"] = [ns_dict(r) for r in report.namespaces]
        doc["summary"] = summary_dict(report, self.kill)
        json.dump(doc, self.out, indent=2)
        self.out.write("\n")


class TableRenderer(Renderer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.rows = []

    def socket(self, sock):
        self.rows.append(row(sock, self.kill))

    def finish(self, report, meta):
        from rich.console import Console
        from rich.table import Table
        console = Console(file=self.out, markup=False, highlight=False,
                          no_color=bool(os.environ.get("NO_COLOR")))
        table = Table(box=None, show_header=self.header, pad_edge=False, header_style="bold")
        for name in self.columns():
            table.add_column(name, overflow="fold", no_wrap=name in ("PROTO", "STATE"))
        for cells in self.rows:
            table.add_row(*cells)
        if self.rows:
            console.print(table)


RENDERERS = {"tsv": TsvRenderer, "json": JsonRenderer, "jsonl": JsonlRenderer, "table": TableRenderer}


def summary_dict(report, kill: bool) -> dict:
    doc = {"matched": report.matched, "namespaces": len(report.namespaces),
           "namespace_errors": len(report.ns_errors)}
    if kill:
        doc.update(killed=report.killed, failed=report.failed)
    return doc


def summary_line(report, kill: bool) -> str:
    nss = len({r.ns.ino for r in report.namespaces if r.matched})
    where = f"in {nss} namespace{'s' if nss != 1 else ''}" if nss else f"in {len(report.namespaces)} namespaces searched"
    if kill:
        text = f"killed {report.killed} of {report.matched} matching sockets {where}"
        if report.failed:
            text += f", {report.failed} failed"
    else:
        text = f"{report.matched} socket{'s' if report.matched != 1 else ''} {where}"
    return text + f" (engine {report.engine})"
