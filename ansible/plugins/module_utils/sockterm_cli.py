# -*- coding: utf-8 -*-
# MIT License (see the sockterm repository)
"""What the sockterm modules share: their filter options, the command line built
from them, and reading the one JSON document `sockterm ... -o json` prints.

The modules drive the sockterm CLI rather than import sockterm: the CLI's JSON
and exit codes are its documented contract, and the target's Python need not be
the one sockterm runs on. Standard library only: this runs on the target.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

# after PATH, where a root shell would look (become may give a short PATH)
SEARCH_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin")

# module option -> CLI option, each list item one repeat of the CLI option
LIST_OPTIONS = (
    ("dst", "--dst"), ("src", "--src"), ("dport", "--dport"), ("sport", "--sport"),
    ("socket_state", "--state"), ("netns", "--netns"), ("pid", "--pid"), ("comm", "--comm"),
    ("container", "--container"), ("pod", "--pod"), ("cgroup", "--cgroup"), ("uid", "--uid"),
)
# what the CLI accepts as naming a kill's target (README: kill refuses without one)
TARGETING = ("dst", "src", "dport", "sport", "netns", "pid", "comm",
             "container", "pod", "cgroup", "uid")

FILTER_ARGS = dict(
    dst=dict(type="list", elements="str"),
    src=dict(type="list", elements="str"),
    dport=dict(type="list", elements="str"),
    sport=dict(type="list", elements="str"),
    proto=dict(type="str", choices=["tcp", "udp"]),
    family=dict(type="int", choices=[4, 6]),
    socket_state=dict(type="list", elements="str"),
    netns=dict(type="list", elements="str"),
    pid=dict(type="list", elements="int"),
    comm=dict(type="list", elements="str"),
    container=dict(type="list", elements="str"),
    pod=dict(type="list", elements="str"),
    cgroup=dict(type="list", elements="str"),
    uid=dict(type="list", elements="str"),
    backend=dict(type="str", choices=["auto", "bpf", "diag"]),
    executable=dict(type="path"),
)


def has_filter(params):
    return any(params.get(key) for key, _ in LIST_OPTIONS) or bool(
        params.get("proto") or params.get("family"))


def targeted(params):
    return any(params.get(key) for key in TARGETING)


def filter_argv(params):
    """The CLI's filter options. `--opt=value`: a value may start with '-'."""
    argv = []
    for key, flag in LIST_OPTIONS:
        for value in params.get(key) or ():
            argv.append("%s=%s" % (flag, value))
    if params.get("proto"):
        argv.append("--proto=%s" % params["proto"])
    if params.get("family"):
        argv.append("-%d" % params["family"])
    return argv


def command(executable, subcommand, params, options=()):
    """sockterm [--backend B] SUBCOMMAND -o json OPTIONS FILTER (--backend is global:
    it goes before the subcommand)."""
    argv = [executable]
    if params.get("backend"):
        argv.append("--backend=%s" % params["backend"])
    return argv + [subcommand, "--output=json"] + list(options) + filter_argv(params)


def number_text(value):
    """100.0 -> '100', 0.5 -> '0.5': an integral rate reads as an integer."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def find_executable(name=None):
    """The sockterm to run: a path as given, else NAME (default sockterm) on PATH,
    then in SEARCH_DIRS. None when there is none."""
    if name and os.sep in name:
        return name if _runnable(name) else None
    name = name or "sockterm"
    dirs = os.environ.get("PATH", "").split(os.pathsep) + list(SEARCH_DIRS)
    for directory in dirs:
        path = os.path.join(directory, name)
        if directory and _runnable(path):
            return path
    return None


def _runnable(path):
    return os.path.isfile(path) and os.access(path, os.X_OK)


def read_document(stdout):
    """The JSON document on stdout, or None (a refusal may print none)."""
    text = (stdout or "").strip()
    if not text.startswith("{"):
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def results(doc):
    """matched/killed/failed, sockets and namespaces exactly as the CLI reported them
    (names are anyone's to choose: data, returned as they are)."""
    doc = doc or {}
    summary = doc.get("summary")
    summary = summary if isinstance(summary, dict) else {}
    return dict(
        matched=_count(summary.get("matched")),
        killed=_count(summary.get("killed")),
        failed=_count(summary.get("failed")),
        sockets=doc.get("sockets") if isinstance(doc.get("sockets"), list) else [],
        namespaces=doc.get("namespaces") if isinstance(doc.get("namespaces"), list) else [],
        summary=summary,
    )


def _count(value):
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def reason(rc, stderr, doc):
    """Why a run failed, in the CLI's words: its `sockterm: error: ...` line, else
    what the JSON summary or the warnings say, else the last line of stderr."""
    lines = [line.strip() for line in (stderr or "").splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("sockterm: error:", "sockterm: internal error:")):
            return line
    summary = results(doc)["summary"]
    for key in ("error", "reason", "refused"):
        if isinstance(summary.get(key), str) and summary[key]:
            return "sockterm: %s" % summary[key]
    found = results(doc)
    if found["failed"]:
        errors = sorted(set(str(s.get("error")) for s in found["sockets"]
                            if isinstance(s, dict) and s.get("result") not in ("killed", "gone")))
        text = "sockterm: %d of %d matching sockets not killed" % (found["failed"], found["matched"])
        return text + (" (%s)" % ", ".join(errors) if errors else "")
    warnings = [line for line in lines if line.startswith("sockterm: warning:")]
    if warnings:
        return "; ".join(warnings)
    if lines:
        return lines[-1]
    return "sockterm exited %d without saying why" % rc


def failure_message(subcommand, rc, stderr, doc):
    return "%s (sockterm %s exited %d)" % (reason(rc, stderr, doc), subcommand, rc)
