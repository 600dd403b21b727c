"""The audit record: who, the filter, counts per namespace, sent as syslog expects."""

import os
import re
import socket

from sockterm import audit, model
from sockterm.core import Report


def report(per_ns):
    rep = Report(engine="bpf")
    for i, (name, matched, killed, failed) in enumerate(per_ns):
        nsr = model.NamespaceReport(ns=model.Namespace(4026532100 + i, name, ""), engine="bpf",
                                    matched=matched, killed=killed, failed=failed)
        rep.namespaces.append(nsr)
    return rep


def test_message_names_who_filter_and_counts():
    rep = report([("web-1", 3, 3, 0), ("web-2", 2, 1, 1), ("idle", 0, 0, 0)])
    text = audit.message(filter_text="--dst 10.0.0.5:80", report=rep,
                         environ={"SUDO_USER": "alice", "SUDO_UID": "1000"})
    assert f"uid={os.getuid()}(" in text
    assert "sudo_user=alice sudo_uid=1000" in text
    assert 'filter="--dst 10.0.0.5:80"' in text
    # namespaces searched, and those where something matched (as in JSON's summary)
    assert "engine=bpf matched=5 killed=4 failed=1 namespaces=3 namespaces_matched=2 " in text
    assert "web-1(4026532100):bpf:3/3/0" in text and "web-2(4026532101):bpf:2/1/1" in text
    assert "idle" not in text          # searched, nothing there: counted, not listed
    assert "\n" not in text


def test_message_without_sudo_and_with_error():
    text = audit.message(filter_text='--comm "x', report=report([]), environ={},
                         error="interrupted (KeyboardInterrupt)")
    assert "sudo_user" not in text
    assert 'filter="--comm \\"x"' in text and 'error="interrupted (KeyboardInterrupt)"' in text


def test_message_bounded_for_huge_runs():
    rep = report([(f"ns-{i}", 1, 1, 0) for i in range(5000)])
    text = audit.message(filter_text="--dport 80", report=rep, environ={})
    assert len(text.encode()) <= audit.MAX_RECORD
    assert "matched=5000 killed=5000" in text


def test_frame_is_rfc3164_authpriv():
    data = audit.frame("hello", now=0).decode()
    assert re.fullmatch(r"<85>[A-Z][a-z]{2} [ 123]\d \d\d:\d\d:\d\d sockterm\[\d+\]: hello", data)
    assert audit.frame("x", severity=audit.SEVERITY_WARNING).startswith(b"<84>")


def test_write_to_a_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "log")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(path)
        monkeypatch.setenv(audit.SOCKET_ENV, path)
        assert audit.targets() == [("syslog", path)]          # the socket named, and only it
        assert audit.write("kill by someone") == (path, [])
        assert rx.recv(65536).decode().endswith("sockterm[%d]: kill by someone" % os.getpid())


def test_targets_default_to_dev_log_then_journald(monkeypatch):
    monkeypatch.delenv(audit.SOCKET_ENV, raising=False)
    assert audit.targets() == [("syslog", "/dev/log"), ("journal", "/run/systemd/journal/socket")]


def test_write_says_where_it_tried_when_nothing_takes_the_record(tmp_path):
    missing, journal = str(tmp_path / "nope"), str(tmp_path / "journal")
    stale = tmp_path / "stale"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(stale))
    s.close()                          # the file stays, nobody reads it
    assert audit.write("x", to=[("syslog", missing), ("journal", journal)]) == (
        None, [f"no syslog socket at {missing}", f"no journald socket at {journal}"])
    assert audit.write("x", to=[("syslog", str(stale))]) == (None, [f"{stale}: Connection refused"])


def test_journald_takes_the_record_where_there_is_no_syslog_socket(tmp_path):
    missing, journal = str(tmp_path / "nope"), str(tmp_path / "journal")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(journal)
        where, problems = audit.write("kill by someone", severity=audit.SEVERITY_WARNING,
                                      to=[("syslog", missing), ("journal", journal)])
        assert (where, problems) == (journal, [f"no syslog socket at {missing}"])
        fields = dict(line.split("=", 1) for line in rx.recv(65536).decode().splitlines())
    assert fields == {"MESSAGE": "kill by someone", "PRIORITY": "4", "SYSLOG_FACILITY": "10",
                      "SYSLOG_IDENTIFIER": "sockterm", "SYSLOG_PID": str(os.getpid())}


def test_a_kill_nobody_could_audit_says_so_in_one_line_without_v(tmp_path, monkeypatch):
    from sockterm.cli import kill
    from sockterm.core import policy
    from sockterm.filter import build_filter
    flt, logged = build_filter(dport=["80"]), []
    abort = kill._mode(graceful=False, half_close=False, abort_rest=False)
    monkeypatch.setenv(audit.SOCKET_ENV, str(tmp_path / "nope"))
    assert policy.audit_kill(flt, report([("web-1", 1, 1, 0)]), "", logged.append, abort) == (
        f"audit record not written: no syslog socket at {tmp_path / 'nope'}")
    assert logged == []
    monkeypatch.delenv(audit.SOCKET_ENV)
    journal = str(tmp_path / "journal")
    monkeypatch.setattr(audit, "DEFAULT_SOCKET", str(tmp_path / "dev-log"))
    monkeypatch.setattr(audit, "JOURNAL_SOCKET", journal)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as rx:
        rx.bind(journal)
        assert policy.audit_kill(flt, report([("web-1", 1, 1, 0)]), "", logged.append, abort) is None
        assert b"MESSAGE=kill by " in rx.recv(65536)
    assert logged == [f"no syslog socket at {tmp_path / 'dev-log'}", f"audit record written to {journal}"]
