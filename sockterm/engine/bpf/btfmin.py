"""A minimized kernel BTF for CO-RE: the types and members a BPF object's
relocations reach, cut from the kernel's BTF (what `bpftool gen min_core_btf`
makes); btfcache.py keeps it per kernel and object.

libbpf relocates the object's CO-RE accesses against the kernel's BTF; for
each type the object relocates it scans every type the kernel has (~125k on
Linux 6.18, ~2 ms each). Handed instead a BTF holding only the types and
members those relocations reach, through bpf_object_open_opts.btf_custom_path,
it scans a few dozen. libbpf still reads the kernel's whole BTF (13-17 ms
here) for what CO-RE is not: the iterators' attach points and the kfunc. The
attach points are found here too, as libbpf finds them (iter/NAME: the first
FUNC named bpf_iter_NAME), and written in the same file with which
KERNEL_FUNCS the kernel has (btfcache.kernel_note()); the engine hands the
attach points to libbpf (libbpf.attach_by_id) so that a run without the kfunc
does not read the kernel's BTF at all.

Made here in Python over the raw BTF (no bpftool on hosts; libbpf exports
its relocation logic only as internal symbols), by libbpf's own rules for
matching a relocation to kernel types (relo_core.c: candidates by essential
name and kind, members by name through anonymous members) and bpftool's for
what to keep (gen.c: the matched root, every member on the access path and
each member's type, pointers not followed). Only field relocations are
handled, all the shipped object has; an object with others gets no minimized
BTF (libbpf then reads the kernel's, as before) and the unit tests say so.
Imported only when a BTF is to be made: a run with the cache made needs none
of it.
"""

from __future__ import annotations

import struct

from .btfcache import BTF_MAGIC, HEADER, KERNEL_FUNCS, Unsupported, kernel_note

ITER_SECTION, ITER_FUNC = "iter/", "bpf_iter_"

TYPE = struct.Struct("<III")            # name_off, info, size/type
U32 = struct.Struct("<I")
MEMBER = struct.Struct("<III")          # name_off, type, offset
ARRAY = struct.Struct("<III")           # type, index_type, nelems
PARAM = struct.Struct("<II")            # name_off, type

(UNKN, INT, PTR, ARRAY_K, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC,
 FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64) = range(20)
_EXTRA = {INT: 4, ARRAY_K: 12, VAR: 4, DECL_TAG: 4}
_PER_VLEN = {STRUCT: 12, UNION: 12, ENUM: 8, FUNC_PROTO: 8, DATASEC: 12, ENUM64: 12}
_MODS = (VOLATILE, CONST, RESTRICT, TYPE_TAG)
_COMPOSITE = (STRUCT, UNION)

# enum bpf_core_relo_kind: the field relocations, and the one needing no kernel type
FIELD_KINDS = range(0, 6)               # byte offset, byte size, exists, signed, lshift, rshift
TYPE_ID_LOCAL = 6


class Btf:
    """Raw BTF, read in place: type i's header at self.at[i]."""

    def __init__(self, data):
        if len(data) < HEADER.size:
            raise Unsupported("BTF too short")
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
        if magic != BTF_MAGIC or hdr_len + max(type_off + type_len, str_off + str_len) > len(data):
            raise Unsupported("not BTF (or not little-endian)")
        self.data = data
        self.str_at = hdr_len + str_off
        self.str_end = self.str_at + str_len
        self.at = [0]                     # type 0 is void
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack, extra, per = U32.unpack_from, _EXTRA, _PER_VLEN
        while pos < end:
            self.at.append(pos)
            info = unpack(data, pos + 4)[0]
            kind = info >> 24 & 0x1F
            pos += 12 + extra.get(kind, 0) + per.get(kind, 0) * (info & 0xFFFF)

    def name(self, off: int) -> str:
        start = self.str_at + off
        end = self.data.find(b"\0", start, self.str_end)
        return bytes(self.data[start:end if end >= 0 else self.str_end]).decode("latin-1")

    def type(self, tid: int) -> tuple[int, int, int, int]:
        """(kind, name_off, info, size or type) of type tid (0: void)."""
        if tid == 0:
            return UNKN, 0, 0, 0
        name_off, info, st = TYPE.unpack_from(self.data, self.at[tid])
        return info >> 24 & 0x1F, name_off, info, st

    def members(self, tid: int) -> list[tuple[int, int, int]]:
        """(name_off, type, bit offset) of a struct's or union's members."""
        _, _, info, _ = self.type(tid)
        base, kflag = self.at[tid] + 12, info >> 31
        return [(n, t, o & 0xFFFFFF if kflag else o)
                for n, t, o in (MEMBER.unpack_from(self.data, base + 12 * i)
                                for i in range(info & 0xFFFF))]

    def array(self, tid: int) -> tuple[int, int, int]:
        return ARRAY.unpack_from(self.data, self.at[tid] + 12)

    def skip(self, tid: int) -> int:
        """Past modifiers and typedefs (libbpf's skip_mods_and_typedefs)."""
        for _ in range(64):
            kind, _, _, st = self.type(tid)
            if kind not in _MODS and kind != TYPEDEF:
                return tid
            tid = st
        raise Unsupported("type chain too long")

    def size(self, tid: int) -> int:
        """btf__resolve_size()."""
        nelems = 1
        for _ in range(64):
            kind, _, _, st = self.type(tid)
            if kind in (INT, ENUM, ENUM64, STRUCT, UNION, DATASEC, FLOAT):
                return nelems * st
            if kind == PTR:
                return nelems * 8
            if kind in _MODS or kind in (TYPEDEF, VAR):
                tid = st
            elif kind == ARRAY_K:
                elem, _, count = self.array(tid)
                nelems *= count
                tid = elem
            else:
                raise Unsupported(f"no size for type {tid}")
        raise Unsupported("type chain too long")


def essential(name: str) -> str:
    """The name without a ___flavor suffix (libbpf's bpf_core_essential_name_len)."""
    for i in range(len(name) - 5, -1, -1):
        s = name[i:i + 5]
        if s[0] != "_" and s[1:4] == "___" and s[4] != "_":
            return name[:i + 1]
    return name


def _kinds_compat(a: int, b: int) -> bool:
    return a == b or (a in (ENUM, ENUM64) and b in (ENUM, ENUM64))


# -- the object ---------------------------------------------------------------

def elf_sections(data: bytes) -> dict[str, bytes]:
    """Section name -> contents of a little-endian ELF64 file (a BPF object)."""
    if data[:6] != b"\x7fELF\x02\x01":
        raise Unsupported("not a little-endian ELF64 object")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    heads = [struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = heads[shstrndx]

    def name(off: int) -> str:
        start = names[4] + off
        return data[start:data.index(b"\0", start)].decode("latin-1")
    return {name(h[0]): data[h[4]:h[4] + h[5]] for h in heads if h[1] != 8}   # not SHT_NOBITS


def core_relos(ext: bytes) -> list[tuple[int, str, int]]:
    """(local type id, access string offset, kind) of every CO-RE relocation in .BTF.ext."""
    _magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", ext)
    if hdr_len < 32:
        return []
    core_off, core_len = struct.unpack_from("<II", ext, 24)
    start = hdr_len + core_off
    if not core_len:
        return []
    rec_size, = U32.unpack_from(ext, start)
    out, pos, end = [], start + 4, start + core_len
    while pos < end:
        _sec, count = struct.unpack_from("<II", ext, pos)
        pos += 8
        for _ in range(count):
            _insn, type_id, access, kind = struct.unpack_from("<IIII", ext, pos)
            out.append((type_id, access, kind))
            pos += rec_size
    return out


# -- libbpf's matching of a field relocation ------------------------------------

def local_spec(btf: Btf, type_id: int, access: str) -> list[tuple[int, int, str | None]]:
    """The accessors of a field relocation, as bpf_core_parse_spec() makes them:
    (type id, index, member name or None for an array index)."""
    raw = [int(part) for part in access.split(":")]
    tid = btf.skip(type_id)
    accs = [(tid, raw[0], None)]
    for idx in raw[1:]:
        tid = btf.skip(tid)
        kind = btf.type(tid)[0]
        if kind in _COMPOSITE:
            name_off, member_type, _ = btf.members(tid)[idx]
            if name_off:
                accs.append((tid, idx, btf.name(name_off)))
            tid = member_type
        elif kind == ARRAY_K:
            tid = btf.skip(btf.array(tid)[0])
            accs.append((tid, idx, None))
        else:
            raise Unsupported(f"relocation {access} on type {type_id} crosses kind {kind}")
    return accs


def _fields_compat(local: Btf, lid: int, targ: Btf, tid: int) -> bool:
    """bpf_core_fields_are_compat()."""
    for _ in range(64):
        lid, tid = local.skip(lid), targ.skip(tid)
        lk, ln, linfo, _ = local.type(lid)
        tk, tn, tinfo, _ = targ.type(tid)
        if lk in _COMPOSITE and tk in _COMPOSITE:
            return True
        if not _kinds_compat(lk, tk):
            return False
        if lk in (PTR, FLOAT):
            return True
        if lk in (FWD, ENUM, ENUM64):
            a, b = essential(local.name(ln)), essential(targ.name(tn))
            return not a or not b or a == b
        if lk == INT:
            return (U32.unpack_from(local.data, local.at[lid] + 12)[0] >> 16 & 0xFF) == 0 and \
                   (U32.unpack_from(targ.data, targ.at[tid] + 12)[0] >> 16 & 0xFF) == 0
        if lk == ARRAY_K:
            lid, tid = local.array(lid)[0], targ.array(tid)[0]
            continue
        return False
    raise Unsupported("type chain too long")


class _Spec:
    def __init__(self, root: int):
        self.root, self.raw, self.accs, self.bit = root, [], [], 0


def _match_member(local: Btf, lacc, targ: Btf, tid: int, spec: _Spec):
    """bpf_core_match_member(): the target type after the member, or None."""
    tid = targ.skip(tid)
    if targ.type(tid)[0] not in _COMPOSITE:
        return None
    ltype, lidx, lname = lacc
    lmember_type = local.members(ltype)[lidx][1]
    for i, (name_off, mtype, bit) in enumerate(targ.members(tid)):
        spec.bit += bit
        spec.raw.append(i)
        if not name_off:
            found = _match_member(local, lacc, targ, mtype, spec)
            if found is not None:
                return found
        elif targ.name(name_off) == lname:
            if not _fields_compat(local, lmember_type, targ, mtype):
                return None
            spec.accs.append((tid, i, lname))
            return mtype
        spec.bit -= bit
        spec.raw.pop()
    return None


def match(local: Btf, accs, targ: Btf, cand: int) -> _Spec | None:
    """bpf_core_spec_match() for a field relocation: the target spec, or None."""
    spec, tid = _Spec(cand), cand
    for i, acc in enumerate(accs):
        tid = targ.skip(tid)
        if acc[2] is not None:
            tid = _match_member(local, acc, targ, tid, spec)
            if tid is None:
                return None
            continue
        if i > 0:
            if targ.type(tid)[0] != ARRAY_K:
                return None
            elem, _, nelems = targ.array(tid)
            prev = spec.accs[-1]
            flex = (prev[2] is not None and nelems == 0
                    and prev[1] == (targ.type(prev[0])[2] & 0xFFFF) - 1)
            if not flex and acc[1] >= nelems:
                return None
            tid = targ.skip(elem)
        spec.accs.append((tid, acc[1], None))
        spec.raw.append(acc[1])
        if acc[1]:
            spec.bit += acc[1] * targ.size(tid) * 8
    return spec


def _outcome(targ: Btf, spec: _Spec) -> tuple:
    """What libbpf computes from a matched spec: the field's bit offset, its
    bitfield width, size and int encoding (the same on the full and the
    minimized BTF, or the minimized one is wrong)."""
    tid, idx, name = spec.accs[-1]
    bits = 0
    if name is not None:
        kind, _, info, _ = targ.type(tid)
        _, ftype, _ = targ.members(tid)[idx]
        raw_off = MEMBER.unpack_from(targ.data, targ.at[tid] + 12 + 12 * idx)[2]
        bits = raw_off >> 24 if info >> 31 else 0
    else:
        ftype = tid
    ftype = targ.skip(ftype)
    kind = targ.type(ftype)[0]
    enc = U32.unpack_from(targ.data, targ.at[ftype] + 12)[0] if kind == INT else None
    return spec.bit, bits, targ.size(ftype) if kind not in (FWD, FUNC_PROTO) else None, kind, enc


class Resolver:
    """libbpf's resolution of the object's relocations against one kernel BTF:
    candidates by essential name and kind, narrowed relocation by relocation
    per local type as libbpf narrows them (bpf_core_calc_relo_insn)."""

    def __init__(self, local: Btf, targ: Btf, relos):
        self.local, self.targ = local, targ
        wanted = {}
        for type_id, _access, kind in relos:
            if kind == TYPE_ID_LOCAL:
                continue
            if kind not in FIELD_KINDS:
                raise Unsupported(f"CO-RE relocation kind {kind} (only field relocations are)")
            lk, ln, _, _ = local.type(type_id)
            wanted.setdefault((lk, essential(local.name(ln))), set()).add(type_id)
        self.cands = {tid: [] for tids in wanted.values() for tid in tids}
        names = {name for _, name in wanted}
        for cand in range(1, len(targ.at)):
            kind, name_off, _, _ = targ.type(cand)
            if not name_off or kind not in (STRUCT, UNION, ENUM, ENUM64, TYPEDEF, FWD, INT):
                continue
            name = essential(targ.name(name_off))
            if name not in names:
                continue
            for (lk, lname), tids in wanted.items():
                if lname == name and _kinds_compat(lk, kind):
                    for tid in tids:
                        self.cands[tid].append(cand)

    def resolve(self, type_id: int, access_off: int) -> list[_Spec]:
        """The matching candidates' specs (narrowing the type's candidates)."""
        accs = local_spec(self.local, type_id, self.local.name(access_off))
        specs = [s for s in (match(self.local, accs, self.targ, c) for c in self.cands[type_id])
                 if s is not None]
        if specs:
            self.cands[type_id] = [s.root for s in specs]
        return specs


# -- what to keep, and the new BTF ----------------------------------------------

class _Marks:
    """bpftool gen min_core_btf's marking: type id -> indices of kept members."""

    def __init__(self, btf: Btf):
        self.btf, self.kept = btf, {}

    def type(self, tid: int) -> None:
        """btfgen_mark_type(follow_pointers=false)."""
        while tid and tid not in self.kept:
            self.kept[tid] = set()
            kind, _, info, st = self.btf.type(tid)
            if kind in (INT, FLOAT, ENUM, ENUM64, STRUCT, UNION, PTR, FWD):
                return
            if kind in _MODS or kind == TYPEDEF:
                tid = st
            elif kind == ARRAY_K:
                elem, index, _ = self.btf.array(tid)
                self.type(index)
                tid = elem
            elif kind == FUNC_PROTO:
                base = self.btf.at[tid] + 12
                for i in range(info & 0xFFFF):
                    self.type(PARAM.unpack_from(self.btf.data, base + 8 * i)[1])
                tid = st
            else:
                raise Unsupported(f"kernel type {tid} of kind {kind} on an access path")

    def field(self, spec: _Spec) -> None:
        """btfgen_record_field_relo(): the root, each member on the path and its type."""
        btf, tid = self.btf, spec.root
        self.type(tid)
        for idx in spec.raw[1:]:
            tid = btf.skip(tid)
            kind = btf.type(tid)[0]
            if kind in _COMPOSITE:
                self.kept[tid].add(idx)
                tid = btf.members(tid)[idx][1]
                self.type(tid)
            elif kind == ARRAY_K:
                tid = btf.array(tid)[0]
            else:
                raise Unsupported(f"kernel type {tid} of kind {kind} on an access path")


def write_btf(btf: Btf, kept: dict[int, set], key: bytes, note: bytes = b"") -> bytes:
    """A new BTF of the kept types (composites with only their kept members),
    type ids renumbered, unkept pointer targets void; key first among the
    strings, note (the attach points) second."""
    ids = {old: new for new, old in enumerate(sorted(kept), 1)}
    strings, interned = bytearray(b"\0" + key + b"\0" + note + b"\0"), {}

    def s(off: int) -> int:
        if not off:
            return 0
        name = btf.name(off)
        at = interned.get(name)
        if at is None:
            at = interned[name] = len(strings)
            strings.extend(name.encode("latin-1") + b"\0")
        return at

    out, data = bytearray(), btf.data
    for old in sorted(kept):
        kind, name_off, info, st = btf.type(old)
        base = btf.at[old] + 12
        vlen = info & 0xFFFF
        if kind in _COMPOSITE:
            members = [MEMBER.unpack_from(data, base + 12 * i) for i in sorted(kept[old])]
            out += TYPE.pack(s(name_off), info & ~0xFFFF | len(members), st)
            for n, t, o in members:
                out += MEMBER.pack(s(n), ids.get(t, 0), o)
        elif kind in (INT, FLOAT, FWD):
            out += TYPE.pack(s(name_off), info, st) + bytes(data[base:base + _EXTRA.get(kind, 0)])
        elif kind in _MODS or kind in (PTR, TYPEDEF):
            out += TYPE.pack(s(name_off), info, ids.get(st, 0))
        elif kind == ARRAY_K:
            elem, index, nelems = btf.array(old)
            out += TYPE.pack(0, info, 0) + ARRAY.pack(ids.get(elem, 0), ids.get(index, 0), nelems)
        elif kind in (ENUM, ENUM64):
            out += TYPE.pack(s(name_off), info, st)
            step = _PER_VLEN[kind]
            for i in range(vlen):
                entry = bytes(data[base + step * i:base + step * (i + 1)])
                out += U32.pack(s(U32.unpack_from(entry)[0])) + entry[4:]
        elif kind == FUNC_PROTO:
            out += TYPE.pack(0, info, ids.get(st, 0))
            for i in range(vlen):
                n, t = PARAM.unpack_from(data, base + 8 * i)
                out += PARAM.pack(s(n), ids.get(t, 0))
        else:
            raise Unsupported(f"kernel type {old} of kind {kind} kept")
    return HEADER.pack(BTF_MAGIC, 1, 0, HEADER.size, 0, len(out), len(out), len(strings)) + out + strings


def kernel_funcs(kernel: Btf, names) -> dict[str, int]:
    """name -> the first FUNC so named in the kernel's BTF (as libbpf looks
    up an attach point or a kfunc), 0 where it has none."""
    data, str_at, str_end = kernel.data, kernel.str_at, kernel.str_end
    wanted = {}
    for name in names:
        at = data.find(b"\0" + name.encode("latin-1") + b"\0", str_at, str_end)
        if at >= 0:
            wanted[at + 1 - str_at] = name     # kernel strings are deduplicated
    found = dict.fromkeys(names, 0)
    left = len(wanted)
    unpack = TYPE.unpack_from
    for tid in range(1, len(kernel.at) if left else 1):
        name_off, info, _ = unpack(data, kernel.at[tid])
        name = wanted.get(name_off)
        if name is not None and info >> 24 & 0x1F == FUNC and not found[name]:
            found[name] = tid
            left -= 1
            if not left:
                break
    return found


def attach_points(sections, kernel: Btf) -> dict[str, int]:
    """Section -> the kernel BTF id libbpf would attach its programs to, for
    the object's iterator sections (libbpf: find_attach_btf_id, the first FUNC
    named bpf_iter_NAME in the kernel's BTF). A section whose function the
    kernel's BTF lacks is left out: libbpf looks it up itself, and says why
    it is missing."""
    iters = {ITER_FUNC + section[len(ITER_SECTION):]: section
             for section in sections if section.startswith(ITER_SECTION)}
    return {iters[name]: tid for name, tid in kernel_funcs(kernel, iters).items() if tid}


def minimize(obj: bytes, kernel: Btf, key: bytes = b"") -> bytes:
    """The minimized BTF for a BPF object's CO-RE relocations against a kernel's
    BTF, with what kernel_note() says of that kernel.
    Checked before it is returned: every relocation resolves against it as
    against the kernel's, field for field."""
    sections = elf_sections(obj)
    if ".BTF" not in sections or ".BTF.ext" not in sections:
        raise Unsupported("the object has no BTF")
    local = Btf(sections[".BTF"])
    relos = [r for r in core_relos(sections[".BTF.ext"]) if r[2] != TYPE_ID_LOCAL]
    full, marks = Resolver(local, kernel, relos), _Marks(kernel)
    outcomes = []
    for type_id, access, _kind in relos:
        specs = full.resolve(type_id, access)
        for spec in specs:
            marks.field(spec)
        outcomes.append([_outcome(kernel, spec) for spec in specs])
    note = kernel_note(attach_points(sections, kernel), kernel_funcs(kernel, KERNEL_FUNCS))
    out = write_btf(kernel, marks.kept, key, note)
    small = Resolver(local, Btf(out), relos)
    for (type_id, access, _kind), want in zip(relos, outcomes):
        got = [_outcome(small.targ, spec) for spec in small.resolve(type_id, access)]
        if got != want:
            raise Unsupported(f"relocation of type {type_id} resolves differently when minimized")
    return out


def kernel_btf(path: str) -> Btf:
    with open(path, "rb") as f:
        try:
            import mmap
            return Btf(mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ))
        except (OSError, ValueError):       # before 6.16 sysfs BTF cannot be mapped
            return Btf(f.read())
