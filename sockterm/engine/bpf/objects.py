"""The BPF objects sockterm ships, and where they are."""

from __future__ import annotations

import os

OBJECT_NAME = "sockterm.bpf.o"
# the same programs without the bpf_sock_destroy kfunc (bpf/sockterm.bpf.c):
# for every run whose iterators destroy nothing
READ_OBJECT_NAME = "sockterm-read.bpf.o"


def object_path(name: str = OBJECT_NAME) -> str:
    # beside the package's modules (a plain directory: wheels are unpacked);
    # importlib.resources would cost a fresh process ~10 ms of imports
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.path.join(package, "data", name)
