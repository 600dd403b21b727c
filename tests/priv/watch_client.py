"""Clients for tests/priv/test_watch.py, and the driver of a confined watch.

  watch_client.py tcp|udp ADDR PORT SECONDS
      Reconnect to ADDR:PORT for SECONDS, each time on a new socket: connect
      (UDP: connect, then send one datagram) and wait up to WAIT seconds for
      the connection to be aborted. Prints one JSON line: [[cookie, outcome],
      ...], outcome the errno name the client saw (ECONNABORTED, ...), or
      "alive" when nothing came, "closed" on an orderly end.

  watch_client.py driver BACKEND SUBNET VIP PORT AT SECONDS -- SOCKTERM-ARGV...
      Inside a confinement (tests/confine.py): start sockterm, print
      "attached" once its window is open (its -v says so), then at AT seconds make a
      namespace of its own (unshare -n, a veth to BACKEND, SUBNET.2/24) and
      run a tcp client to VIP:PORT there for SECONDS; print one JSON line:
      sockterm's exit code, stdout and stderr, and that client's outcomes.
"""

import errno
import json
import os
import socket
import subprocess
import sys
import threading
import time

SO_COOKIE = 57
WAIT = 2.0


def cookie_of(s) -> int:
    return int.from_bytes(s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8), "little")


def once(proto: str, addr: str, port: int):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(family, kind) as s:
        s.settimeout(WAIT)
        try:
            s.connect((addr, port))
            if proto == "udp":
                s.send(b"q")
            data = s.recv(1)
            outcome = "closed" if not data else "data"
        except socket.timeout:
            outcome = "alive"
        except OSError as exc:
            outcome = errno.errorcode.get(exc.errno, str(exc.errno))
        return cookie_of(s), outcome


def clients(proto: str, addr: str, port: int, seconds: float) -> list:
    end = time.monotonic() + seconds
    seen = []
    while time.monotonic() < end:
        seen.append(once(proto, addr, port))
        time.sleep(0.02)
    return seen


def driver(backend, subnet, vip, port, at, seconds, argv) -> None:
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err, attached = [], threading.Event()

    def read_err():
        for line in proc.stderr:
            err.append(line)
            if "watch: window open" in line:
                attached.set()
        attached.set()
    reader = threading.Thread(target=read_err, daemon=True)
    reader.start()
    attached.wait(120)
    print("attached", flush=True)
    time.sleep(max(0.0, at - (time.monotonic() - started)))
    tag = os.getpid()
    setup = "; ".join([
        "set -e", "ip link set lo up",
        f"ip link add wa{tag} type veth peer name wb{tag} netns {backend}",
        f"ip addr add {subnet}.2/24 dev wa{tag}", f"ip link set wa{tag} up",
        f"ip -n {backend} addr add {subnet}.1/24 dev wb{tag}", f"ip -n {backend} link set wb{tag} up",
        f"ip route add {vip}/32 via {subnet}.1",
        f"exec {sys.executable} {os.path.abspath(__file__)} tcp {vip} {port} {seconds}"])
    late = subprocess.run(["unshare", "-n", "sh", "-c", setup], capture_output=True, text=True)
    out = proc.stdout.read()
    proc.wait()
    reader.join()
    print(json.dumps({"code": proc.returncode, "out": out, "err": "".join(err),
                      "late": json.loads(late.stdout or "null"), "late_err": late.stderr}),
          flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "driver":
        split = sys.argv.index("--")
        b, sub, vip, port, at, secs = sys.argv[2:split]
        driver(b, sub, vip, int(port), float(at), float(secs), sys.argv[split + 1:])
    else:
        proto, addr, port, secs = sys.argv[1:5]
        print(json.dumps(clients(proto, addr, int(port), float(secs))), flush=True)
