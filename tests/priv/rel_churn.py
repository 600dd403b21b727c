"""A churn process for test_churn.py, run inside a network namespace.

    python3 rel_churn.py serve ADDR PORT [PORT...]   accept and close, forever
    python3 rel_churn.py churn HOST:PORT [HOST:PORT...] connect and close in a loop

Both stop when stdin closes and then print one JSON line: connections made
(accepted) per target (port), and the errno names seen per target (port).
"""

import errno
import json
import socket
import struct
import sys
import threading

stop = threading.Event()


def watch_stdin():
    sys.stdin.read()
    stop.set()


def serve(addr, ports):
    counts = {str(p): 0 for p in ports}
    errors = {str(p): {} for p in ports}

    def note(port, name):
        errors[str(port)][name] = errors[str(port)].get(name, 0) + 1

    def listen(port):
        s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(4096)
        s.settimeout(0.2)
        return s

    def loop(port, s):
        while not stop.is_set():
            try:
                c, _ = s.accept()
            except socket.timeout:
                continue
            except OSError as exc:      # reported, not swallowed: the test decides
                note(port, errno.errorcode.get(exc.errno, str(exc.errno)))
                continue
            counts[str(port)] += 1
            # the client closes first (the time-wait is its own, never a stale
            # server end a reused port runs into); a reset is its linger-0 close
            c.settimeout(2.0)
            try:
                c.recv(1)
            except socket.timeout:
                note(port, "timeout")
            except ConnectionResetError:
                pass
            except OSError as exc:
                note(port, errno.errorcode.get(exc.errno, str(exc.errno)))
            c.close()
    # listening before "ready": a churn started then must never be refused
    threads = [threading.Thread(target=loop, args=(p, listen(p)), daemon=True) for p in ports]
    for t in threads:
        t.start()
    print("ready", flush=True)
    stop.wait()
    for t in threads:
        t.join()
    print(json.dumps({"counts": counts, "errors": errors}), flush=True)


def churn(targets):
    counts = {t: 0 for t in targets}
    errors = {t: {} for t in targets}
    linger0 = struct.pack("ii", 1, 0)
    print("ready", flush=True)
    i = 0
    while not stop.is_set():
        target = targets[i % len(targets)]
        host, _, port = target.rpartition(":")
        i += 1
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.settimeout(1.0)
        try:
            s.connect((host.strip("[]"), int(port)))
            counts[target] += 1
            if i % 2:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger0)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                name = errno.errorcode.get(err, str(err))
                errors[target][name] = errors[target].get(name, 0) + 1
        except OSError as exc:
            name = "timeout" if isinstance(exc, socket.timeout) else errno.errorcode.get(exc.errno, str(exc.errno))
            errors[target][name] = errors[target].get(name, 0) + 1
        finally:
            s.close()
    print(json.dumps({"counts": counts, "errors": errors}), flush=True)


if __name__ == "__main__":
    threading.Thread(target=watch_stdin, daemon=True).start()
    if sys.argv[1] == "serve":
        serve(sys.argv[2], [int(p) for p in sys.argv[3:]])
    else:
        churn(sys.argv[2:])
