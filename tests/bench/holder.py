"""A socket holder for the benchmarks: one process, many sockets, any namespaces.

Started by tests/bench/workload.py in the host namespace; it enters the
namespaces it is told about with setns(2) before each socket() call, so one
holder can hold sockets in many namespaces (a socket belongs to the namespace
it was created in). One JSON command per stdin line, one JSON reply per line.

Two roles:
  server  reuseport listeners in the backend namespace; an epoll loop accepts
          new connections and closes the ends whose peer was killed, so a
          killed workload can be refilled without restarting anything.
  client  connects in batches of non-blocking connect()s, keeps sockets in
          named groups, reports which died and re-creates a group on demand.

Every socket gets SO_LINGER {1, 0}: closing one sends a RST instead of
leaving TIME_WAIT sockets behind to pollute the next measurement.
"""

import ctypes
import errno
import json
import os
import select
import signal
import socket
import struct
import sys

CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
LINGER_RST = struct.pack("ii", 1, 0)
BATCH = 2000
DEAD = select.POLLERR | select.POLLHUP | getattr(select, "POLLRDHUP", 0x2000)

libc = ctypes.CDLL(None, use_errno=True)
ns_fds = {}          # namespace path -> fd


def enter(path):
    fd = ns_fds.get(path)
    if fd is None:
        fd = ns_fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns {path}: {os.strerror(err)}")


def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


# -- client ------------------------------------------------------------------

groups = {}          # name -> list of job dicts (with their sockets)


def connect_job(job):
    """job: {ns, dst, port, count, proto}; returns the sockets, connected."""
    enter(job["ns"])
    fam = socket.AF_INET6 if ":" in job["dst"] else socket.AF_INET
    addr = (job["dst"], job["port"])
    out = []
    if job["proto"] == "udp":
        for _ in range(job["count"]):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.connect(addr)
            out.append(s)
        return out
    left = job["count"]
    while left:
        batch = []
        for _ in range(min(BATCH, left)):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            s.setblocking(False)
            err = s.connect_ex(addr)
            if err not in (0, errno.EINPROGRESS):
                s.close()
                raise OSError(err, f"connect {addr} in {job['ns']}: {os.strerror(err)}")
            batch.append(s)
        wait_connected(batch)
        out += batch
        left -= len(batch)
    return out


def wait_connected(batch):
    poller = select.poll()
    pending = {s.fileno(): s for s in batch}
    for fd in pending:
        poller.register(fd, select.POLLOUT)
    while pending:
        events = poller.poll(10_000)
        if not events:
            raise OSError(errno.ETIMEDOUT, f"{len(pending)} connects did not complete")
        for fd, _ in events:
            s = pending.pop(fd)
            poller.unregister(fd)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                raise OSError(err, f"connect: {os.strerror(err)}")


def op_build(jobs):
    """jobs: [{group, ns, dst, port, count, proto}] -> socket count per group."""
    for job in jobs:
        job["socks"] = connect_job(job)
        groups.setdefault(job["group"], []).append(job)
    return {g: sum(len(j["socks"]) for j in js) for g, js in groups.items()}


def op_dead():
    """Per group: how many sockets are dead (reset, aborted or closed by the kernel)."""
    out = {}
    for name, jobs in groups.items():
        poller = select.poll()
        n = 0
        for job in jobs:
            for s in job["socks"]:
                poller.register(s.fileno(), DEAD)
                n += 1
        dead = sum(1 for _, ev in poller.poll(0) if ev & DEAD)
        # connected UDP has no peer to lose: a destroyed one reports SO_ERROR instead
        if jobs and jobs[0]["proto"] == "udp":
            dead = sum(1 for job in jobs for s in job["socks"]
                       if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))
        out[name] = dead
    return out


def op_refill(group):
    """Close every socket of the group (RST, no TIME_WAIT) and connect it again."""
    for job in groups.get(group, []):
        for s in job["socks"]:
            s.close()
        job["socks"] = []
    for job in groups.get(group, []):
        job["socks"] = connect_job(job)
    return sum(len(j["socks"]) for j in groups.get(group, []))


# -- server ------------------------------------------------------------------

def serve(listeners_spec, budget):
    """Listen, report the pid, then accept and reap forever while answering stdin."""
    ep = select.epoll()
    listeners = {}
    for spec in listeners_spec:
        enter(spec["ns"])
        fam = socket.AF_INET6 if ":" in spec["addr"] else socket.AF_INET
        for port in spec.get("tcp", []):
            s = socket.socket(fam, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
            s.bind((spec["addr"], port))
            s.listen(65535)
            s.setblocking(False)
            listeners[s.fileno()] = s
            ep.register(s.fileno(), select.EPOLLIN)
        for port in spec.get("udp", []):
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((spec["addr"], port))
            listeners[s.fileno()] = s
    conns = {}
    stdin = sys.stdin.fileno()
    ep.register(stdin, select.EPOLLIN)
    reply({"ok": os.getpid()})
    buf = b""
    while True:
        for fd, ev in ep.poll():
            if fd == stdin:
                data = os.read(stdin, 65536)
                if not data:
                    return
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    req = json.loads(line)
                    if req["op"] == "count":
                        reply({"ok": len(conns)})
            elif fd in listeners:
                accept_all(listeners[fd], conns, ep, budget)
            else:
                ep.unregister(fd)
                conns.pop(fd).close()


def accept_all(lst, conns, ep, budget):
    while len(conns) < budget:
        try:
            c, _ = lst.accept()
        except BlockingIOError:
            return
        c.setblocking(False)
        conns[c.fileno()] = c
        ep.register(c.fileno(), select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR)


def main():
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)   # never outlive the benchmark
    if os.getppid() == 1:
        return
    first = json.loads(sys.stdin.readline())
    if first["op"] == "serve":
        try:
            serve(first["listeners"], first["budget"])
        except OSError as exc:
            reply({"error": str(exc)})
        return
    reply({"ok": os.getpid()})
    for line in sys.stdin:
        req = json.loads(line)
        op = req.pop("op")
        try:
            result = {"ok": globals()["op_" + op](**req)}
        except OSError as exc:
            result = {"error": f"{errno.errorcode.get(exc.errno, exc.errno)}: {exc}"}
        reply(result)


if __name__ == "__main__":
    main()
