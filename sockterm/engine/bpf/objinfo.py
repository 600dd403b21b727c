"""The shipped BPF object's identity, read with pyelftools (no kernel involved)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

# program -> its section (a section may hold several: the plain and scoped builds)
EXPECTED_PROGRAMS = {"st_tcp": "iter/tcp", "st_tcp_scoped": "iter/tcp", "st_udp": "iter/udp",
                     "st_udp_scoped": "iter/udp", "st_held": "iter/task_file",
                     "st_held_scoped": "iter/task_file"}


@dataclass
class ObjectInfo:
    path: str
    sha256: str = ""
    programs: dict = field(default_factory=dict)    # function name -> section
    license: str = ""
    has_btf: bool = False
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def inspect(path: str) -> ObjectInfo:
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    info = ObjectInfo(path=path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        info.problems.append(f"cannot read {path}: {exc.strerror}")
        return info
    info.sha256 = hashlib.sha256(data).hexdigest()
    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf["e_machine"] != "EM_BPF":
                info.problems.append(f"not a BPF object (machine {elf['e_machine']})")
                return info
            names = {s.name for s in elf.iter_sections()}
            info.has_btf = ".BTF" in names
            lic = elf.get_section_by_name("license")
            if lic is not None:
                info.license = lic.data().rstrip(b"\0").decode(errors="replace")
            symtab = elf.get_section_by_name(".symtab")
            by_index = {i: s.name for i, s in enumerate(elf.iter_sections())}
            for sym in symtab.iter_symbols() if symtab else ():
                if sym["st_info"]["type"] == "STT_FUNC" and isinstance(sym["st_shndx"], int):
                    info.programs[sym.name] = by_index[sym["st_shndx"]]
    except (ELFError, OSError, KeyError) as exc:
        info.problems.append(f"unreadable ELF: {exc}")
        return info
    for func, section in EXPECTED_PROGRAMS.items():
        if info.programs.get(func) != section:
            info.problems.append(f"program {func} ({section}) is missing")
    if not info.has_btf:
        info.problems.append("no .BTF section (CO-RE needs it)")
    if "GPL" not in info.license:
        info.problems.append(f"license {info.license!r} is not GPL-compatible (kfuncs need GPL)")
    return info
