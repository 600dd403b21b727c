"""A process that holds sockets for the tests, inside one network namespace.

Run as `ip netns exec NS python3 holder.py`; it reads one JSON command per
line on stdin and answers one JSON line on stdout. It reports what its own
sockets see (SO_ERROR, recv errors), the outside view tests trust.
"""

import errno
import json
import os
import select
import socket
import struct
import sys

SO_COOKIE = 57
socks = {}       # id -> socket
next_id = [0]
owner = [None]   # uid that owns the sockets made from now on (None: the holder's own)
lazy = [False]   # never ask for a socket's cookie


def new_socket(fam, kind):
    """A socket owned by `owner`: the kernel gives a socket its creator's fsuid."""
    if owner[0] is None:
        return socket.socket(fam, kind)
    os.seteuid(owner[0])
    try:
        return socket.socket(fam, kind)
    finally:
        os.seteuid(0)


def add(sock):
    next_id[0] += 1
    socks[next_id[0]] = sock
    return next_id[0]


def info(sid):
    s = socks[sid]
    try:
        local = s.getsockname()
    except OSError:
        local = ("", 0)
    try:
        peer = s.getpeername()
    except OSError:
        peer = ("", 0)
    # asking makes the kernel give the socket its cookie (sock_gen_cookie):
    # a lazy holder leaves that to others, as most applications do
    cookie = None if lazy[0] else int.from_bytes(
        s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")
    return {"id": sid, "local": list(local[:2]), "peer": list(peer[:2]), "cookie": cookie,
            "inode": os.fstat(s.fileno()).st_ino}


def family_of(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def op_listen(proto="tcp", addr="0.0.0.0", port=0, backlog=4096, reuseport=False, v6only=None):
    fam = family_of(addr)
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = new_socket(fam, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if fam == socket.AF_INET6 and v6only is not None:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(v6only))
    s.bind((addr, port))
    if proto == "tcp":
        s.listen(backlog)
    return info(add(s))


def op_connect(proto="tcp", dst="127.0.0.1", port=80, count=1, src=None, nonblock_ok=False):
    out = []
    fam = family_of(dst)
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    for _ in range(count):
        s = new_socket(fam, kind)
        if src:
            s.bind((src, 0))
        if nonblock_ok:   # leave it in SYN-SENT when nobody answers
            s.setblocking(False)
            try:
                s.connect((dst, port))
            except BlockingIOError:
                pass
        else:
            s.connect((dst, port))
        out.append(info(add(s)))
    return out


def op_accept(id, count=1, timeout=10.0):
    lst = socks[id]
    out = []
    lst.settimeout(timeout)
    for _ in range(count):
        if owner[0] is not None:       # an accepted socket is its accepter's (sock_graft)
            os.seteuid(owner[0])
        try:
            conn, _ = lst.accept()
        finally:
            if owner[0] is not None:
                os.seteuid(0)
        conn.setblocking(True)
        out.append(info(add(conn)))
    return out


def op_send(id, data="x"):
    socks[id].send(data.encode())
    return True


def so_error(sid):
    s = socks[sid]
    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    return err


def op_status(ids=None):
    """Per socket: pending SO_ERROR, or the error a non-blocking recv gets."""
    out = {}
    for sid in (ids or list(socks)):
        s = socks[sid]
        err = so_error(sid)
        if err == 0 and s.type == socket.SOCK_STREAM:
            try:
                poller = select.poll()
                poller.register(s, select.POLLIN)
                if poller.poll(0):
                    data = s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
                    err = -1 if data == b"" else 0
            except OSError as exc:
                err = exc.errno
        out[str(sid)] = err
    return out


def op_infos(ids=None):
    return [info(sid) for sid in (ids or list(socks))]


def op_shutdown(ids, how="wr"):
    """Send a FIN, keep the descriptor: the socket's state stays observable."""
    for sid in ids:
        socks[sid].shutdown({"wr": socket.SHUT_WR, "rdwr": socket.SHUT_RDWR}[how])
    return True


def op_close(ids, abort=False):
    """Close; abort=True resets the connection (SO_LINGER 0), freeing the
    socket at once instead of leaving it orphaned in FIN-WAIT."""
    for sid in ids:
        s = socks.pop(sid)
        if abort:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    return True


def op_lazy(on=True):
    lazy[0] = on
    return True


def op_pid():
    return os.getpid()


def op_setns(path):
    """Move this (single-threaded) process to another network namespace; its
    sockets stay where they were made."""
    import ctypes
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:   # CLONE_NEWNET
            raise OSError(ctypes.get_errno(), "setns " + path)
    finally:
        os.close(fd)
    return os.stat("/proc/self/ns/net").st_ino


def op_rename(comm):
    """Set this process's name (/proc/PID/comm), as --comm selects it."""
    import ctypes
    ctypes.CDLL(None).prctl(15, comm.encode(), 0, 0, 0)      # PR_SET_NAME
    with open("/proc/self/comm") as f:
        return f.read().rstrip("\n")
def op_owner(uid=None):
    owner[0] = uid
    return True


def op_chroot(path):
    """Make `path` this process's root, as a container's is (/proc/PID/root)."""
    os.chroot(path)
    os.chdir("/")
    return True


def op_comm(name_hex):
    """Set the process name to these bytes (prctl PR_SET_NAME), as any user can."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(15, ctypes.c_char_p(bytes.fromhex(name_hex)), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")
    with open("/proc/self/comm", "rb") as f:
        return f.read().hex()


def op_pairs_in(path, port, count=1):
    """Connections over loopback in the namespace at `path`, made from here:
    setns there, listen/connect/accept, setns back. The namespace then holds
    sockets but no process (it is named by its bind mount)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    there = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(there, 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
        try:
            subprocess_free_lo_up()
            lst = op_listen(addr="127.0.0.1", port=port)
            out = op_connect(dst="127.0.0.1", port=port, count=count)
            op_accept(lst["id"], count=count)
        finally:
            if libc.setns(home, 0x40000000) != 0:
                raise SystemExit("holder: cannot return to its namespace")
    finally:
        os.close(home)
        os.close(there)
    return out


def subprocess_free_lo_up():
    """`ip link set lo up` for the calling thread's namespace (SIOCSIFFLAGS)."""
    import fcntl
    import struct
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]   # SIOCGIFFLAGS
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))   # SIOCSIFFLAGS, IFF_UP
    finally:
        s.close()


# -- sharing and passing sockets (tests/priv/test_onepass.py) ----------------------------

children = {}        # pid -> child holding copies of every socket at fork time
in_flight = []       # unix socket pairs with a socket in a message nobody received


def op_shutdown(ids, how="wr"):
    """Send a FIN, keep the descriptor: the socket's state stays observable."""
    for sid in ids:
        socks[sid].shutdown({"wr": socket.SHUT_WR, "rdwr": socket.SHUT_RDWR}[how])
    return True


def op_dup(id):
    """A second descriptor for the same socket, under a new id."""
    return info(add(socket.socket(fileno=os.dup(socks[id].fileno()))))


def op_fork():
    """A child process holding every socket this one holds now, until reaped."""
    pid = os.fork()
    if pid == 0:
        import ctypes
        import signal
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)     # PR_SET_PDEATHSIG
        sys.stdin.close()
        while True:
            signal.pause()
    children[pid] = True
    return pid


def op_reap(pid):
    import signal
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    children.pop(pid, None)
    return True


def op_send_away(id):
    """Put the socket in a message on a unix socket nobody reads, and close
    this process's descriptor: only the message holds it."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    s = socks.pop(id)
    socket.send_fds(a, [b"x"], [s.fileno()])
    s.close()
    in_flight.append((a, b))
    return True


def op_dumpable(value):
    """prctl(PR_SET_DUMPABLE): 0 keeps other processes of its uid from
    tracing it (and from taking its descriptors) unless they have CAP_SYS_PTRACE."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(4, value, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE)")
    return libc.prctl(3, 0, 0, 0, 0)          # PR_GET_DUMPABLE


def op_drop_caps():
    """Give up every capability: a root process no more privileged than a
    sockterm without CAP_SYS_PTRACE."""
    import ctypes

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                    ("inheritable", ctypes.c_uint32)]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.capset(ctypes.byref(Header(0x20080522, 0)), (Data * 2)()) != 0:   # _LINUX_CAPABILITY_VERSION_3
        raise OSError(ctypes.get_errno(), "capset")
    with open("/proc/self/status") as f:
        return next(line.split()[1] for line in f if line.startswith("CapEff:"))


def op_setsockopt(id, level, option, value):
    socks[id].setsockopt(level, option, value)
    return True


def main():
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        try:
            result = {"ok": globals()["op_" + op](**req)}
        except OSError as exc:
            result = {"error": errno.errorcode.get(exc.errno, str(exc.errno)), "msg": str(exc)}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
