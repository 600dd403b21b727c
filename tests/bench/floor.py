"""The floor: what one do-nothing iterator pass per namespace costs.

`python3 -m tests.bench.floor OBJECT REPEATS [NAME...]` loads OBJECT
(floor.bpf.c, compiled by the benchmark), attaches its tcp and udp iterators
once, then for every namespace (the /run/netns entries named, or the host's
and every /run/netns entry) enters it, creates both iterators and reads them
to EOF. Prints JSON:
seconds for load+attach and for each full pass. Uses sockterm's libbpf
binding only to reach libbpf; none of sockterm's engine code runs.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
import time

from sockterm.engine.bpf import libbpf

CLONE_NEWNET = 0x40000000


def compile_object(out_dir: str) -> str:
    here = os.path.dirname(os.path.abspath(__file__))
    bpf_dir = os.path.join(here, "..", "..", "bpf")
    out = os.path.join(out_dir, "floor.bpf.o")
    subprocess.run(["clang", "-target", "bpf", "-O2", "-g", "-D__TARGET_ARCH_x86",
                    f"-I{bpf_dir}/include", f"-I{bpf_dir}", "-c",
                    os.path.join(here, "floor.bpf.c"), "-o", out], check=True)
    return out


def namespace_paths(names=()) -> list[str]:
    if names:
        return [f"/run/netns/{n}" for n in names]
    try:
        names = sorted(os.listdir("/run/netns"))
    except OSError:
        names = []
    return ["/proc/self/ns/net"] + [f"/run/netns/{n}" for n in names]


def drain(fd: int) -> int:
    n = 0
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return n
        n += len(chunk)


def main() -> None:
    obj_path, repeats = sys.argv[1], int(sys.argv[2])
    libc = ctypes.CDLL(None, use_errno=True)
    t0 = time.perf_counter()
    lib = libbpf.load()
    obj = lib.bpf_object__open_file(obj_path.encode(), None)
    if not obj or lib.bpf_object__load(obj):
        raise SystemExit("floor: cannot load " + obj_path + ": " + " | ".join(lib.log[-3:]))
    links = []
    for name in (b"walk_tcp", b"walk_udp"):
        link = lib.bpf_program__attach_iter(lib.bpf_object__find_program_by_name(obj, name), None)
        if not link:
            raise SystemExit(f"floor: cannot attach {name.decode()}")
        links.append(lib.bpf_link__fd(link))
    load = time.perf_counter() - t0
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    paths = namespace_paths(sys.argv[3:])
    passes = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        walked = 0
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:   # someone else's namespace, deleted meanwhile
                continue
            walked += 1
            libc.setns(fd, CLONE_NEWNET)
            os.close(fd)
            for link_fd in links:
                it = lib.bpf_iter_create(link_fd)
                if it < 0:
                    raise SystemExit(f"floor: bpf_iter_create: {os.strerror(-it)}")
                drain(it)
                os.close(it)
        libc.setns(home, CLONE_NEWNET)
        passes.append(time.perf_counter() - t0)
    print(json.dumps({"load": load, "passes": passes, "namespaces": walked}))


if __name__ == "__main__":
    main()
