"""host/tenantfile.py on real files (no root needed): links, FIFOs, devices,
loops, sparse giants and foreign owners, with openat2 and with the fallback
that follows no link at all. Every call either returns bytes or raises; none
may block (a FIFO opened for reading would: the deadline would then turn it
into "no answer", which these tests refuse to accept)."""

from __future__ import annotations

import os
import time

import pytest

from sockterm.host import tenantfile as T

MARKER = b"MARKER-host-secret"


@pytest.fixture(params=["openat2", "fallback"])
def mode(request, monkeypatch):
    if request.param == "fallback":
        monkeypatch.setattr(T.openat2, "available", False)
    return request.param


@pytest.fixture
def tree(tmp_path):
    """A host file holding MARKER beside a container root holding traps."""
    (tmp_path / "secret").write_bytes(MARKER + b"\n")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "real").write_bytes(b"inside\n")
    return tmp_path, root


def hostname(root, target=None, make=None):
    path = root / "etc" / "hostname"
    if target is not None:
        os.symlink(target, path)
    elif make is not None:
        make(path)
    return path


def refused(fn, *args, **kw) -> str:
    start = time.monotonic()
    with pytest.raises(T.Refused) as info:
        fn(*args, **kw)
    assert time.monotonic() - start < 0.5 and "no answer" not in info.value.why
    return info.value.why


def test_openat2_is_there_on_this_kernel(tree, mode):
    _, root = tree
    hostname(root, make=lambda p: p.write_bytes(b"web-1\n"))
    assert T.read_in_root(str(root), "etc/hostname", 256) == b"web-1\n"
    assert T.openat2.available is (mode == "openat2")


def test_an_absolute_link_resolves_inside_the_root(tree, mode):
    host, root = tree
    hostname(root, target=str(host / "secret"))
    if mode == "openat2":      # <root>/<host>/secret: not there
        with pytest.raises(FileNotFoundError):
            T.read_in_root(str(root), "etc/hostname", 256)
    else:
        assert refused(T.read_in_root, str(root), "etc/hostname", 256).startswith("a symbolic link")


def test_dot_dot_stays_in_the_root(tree, mode):
    host, root = tree
    hostname(root, target="../../../../../../" + str(host / "secret").lstrip("/"))
    with pytest.raises(OSError) as info:
        T.read_in_root(str(root), "etc/hostname", 256)
    assert MARKER not in str(info.value).encode()


def test_a_link_inside_the_root_is_followed_only_with_openat2(tree, mode):
    _, root = tree
    hostname(root, target="/etc/real")
    if mode == "openat2":
        assert T.read_in_root(str(root), "etc/hostname", 256) == b"inside\n"
    else:
        refused(T.read_in_root, str(root), "etc/hostname", 256)


@pytest.mark.parametrize("trap,why", [("fifo", "a FIFO"), ("fifo-link", "a FIFO"),
                                      ("loop", "a symbolic link"), ("dir", "a directory"),
                                      ("socket", "a socket")])
def test_traps_are_refused_without_blocking(tree, mode, trap, why):
    _, root = tree
    if trap == "fifo":
        hostname(root, make=os.mkfifo)
    elif trap == "fifo-link":
        os.mkfifo(root / "etc" / "pipe")
        hostname(root, target="pipe")
    elif trap == "loop":
        os.symlink("hostname", root / "etc" / "loop")
        hostname(root, target="loop")
    elif trap == "dir":
        hostname(root, make=os.mkdir)
    else:
        import socket
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(root / "etc" / "hostname"))
        s.close()
    got = refused(T.read_in_root, str(root), "etc/hostname", 256)
    if mode == "fallback" and trap in ("fifo-link", "loop"):
        why = "a symbolic link"        # no link is followed at all
    assert got.startswith(why), got


def test_a_device_is_never_opened(tree, mode):
    # /dev/zero itself (read_file follows root's links): refused on fstat, before any open
    assert refused(T.read_file, "/dev/zero", 1 << 20) == "a character device"
    _, root = tree
    hostname(root, target="/dev/zero")          # inside the root: not there
    with pytest.raises(OSError):
        T.read_in_root(str(root), "etc/hostname", 256)


def test_a_sparse_giant_is_read_only_as_far_as_the_limit(tree, mode):
    _, root = tree
    path = hostname(root, make=lambda p: p.write_bytes(b"big\n"))
    os.truncate(path, 2 << 30)
    assert T.read_in_root(str(root), "etc/hostname", 256) == b"big\n" + bytes(252)
    assert refused(T.read_in_root, str(root), "etc/hostname", 256, whole=True).startswith(
        "larger than 256 bytes")
    assert refused(T.read_file, str(path), 1 << 20).startswith("larger than")


def store(home, data=b"[]", parts=(".local", "share", "store.json")):
    d = home
    for part in parts[:-1]:
        d = d / part
        d.mkdir(exist_ok=True)
    (d / parts[-1]).write_bytes(data)
    return d / parts[-1]


def test_a_users_own_file_is_read(tmp_path, mode):
    store(tmp_path, b'["ok"]')
    assert T.read_owned(str(tmp_path), ".local/share/store.json", os.getuid(), 1 << 20) == b'["ok"]'


def test_a_file_of_another_owner_is_refused(tmp_path, mode):
    store(tmp_path)
    why = refused(T.read_owned, str(tmp_path), ".local/share/store.json", os.getuid() + 1, 1 << 20)
    assert why == f"the home directory is owned by uid {os.getuid()}, not {os.getuid() + 1}"


@pytest.mark.parametrize("where", ["file", "directory"])
def test_no_link_is_followed_in_a_users_home(tmp_path, mode, where):
    (tmp_path / "home").mkdir()
    (tmp_path / "elsewhere").mkdir()
    real = store(tmp_path / "elsewhere", MARKER, parts=("share", "store.json"))
    (tmp_path / "home" / ".local").mkdir()
    if where == "file":
        (tmp_path / "home" / ".local" / "share").mkdir()
        os.symlink(real, tmp_path / "home" / ".local" / "share" / "store.json")
    else:
        os.symlink(real.parent, tmp_path / "home" / ".local" / "share")
    why = refused(T.read_owned, str(tmp_path / "home"), ".local/share/store.json", os.getuid(), 1 << 20)
    assert "symbolic link" in why, why


def test_a_users_fifo_and_giant_are_refused(tmp_path, mode):
    path = store(tmp_path)
    os.unlink(path)
    os.mkfifo(path)
    assert refused(T.read_owned, str(tmp_path), ".local/share/store.json", os.getuid(), 1 << 20) == "a FIFO"
    os.unlink(path)
    store(tmp_path)
    os.truncate(path, 2 << 30)
    assert refused(T.read_owned, str(tmp_path), ".local/share/store.json", os.getuid(),
                   1 << 20).startswith("larger than")


def test_a_read_that_does_not_answer_is_given_up(monkeypatch):
    """A FUSE server that never answers, as a sleep: the caller waits
    DEADLINE, and once STALL_BUDGET is spent it does not wait at all."""
    monkeypatch.setattr(T, "DEADLINE", 0.05)
    monkeypatch.setattr(T, "STALL_BUDGET", 0.1)
    monkeypatch.setattr(T, "_helper", T._Helper())
    start = time.monotonic()
    for _ in range(2):
        with pytest.raises(T.Refused, match="no answer within"):
            T._bounded(lambda: time.sleep(1))
    with pytest.raises(T.Refused, match="did not finish"):
        T._bounded(lambda: b"never run")
    assert time.monotonic() - start < 0.5
    monkeypatch.setattr(T, "_helper", T._Helper())
    assert T._bounded(lambda: b"quick") == b"quick"
    with pytest.raises(FileNotFoundError):        # errors come back to the caller
        T._bounded(lambda: open("/nonexistent/x"))
