"""The diag engine without a kernel: the filter compiled to INET_DIAG bytecode
(checked by a Python model of the kernel's audit and interpreter), the
netlink layouts against pyroute2's own codec, and destroy outcomes on canned
kernel replies."""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
import struct

import pytest

pytest.importorskip("pyroute2")

from pyroute2.netlink import nlmsgerr  # noqa: E402

from sockterm import model  # noqa: E402
from sockterm.engine.diag import netlink as nld  # noqa: E402
from sockterm import states as st  # noqa: E402
from sockterm.engine.diag import bytecode, destroy, engine as diag_engine  # noqa: E402
from sockterm.engine import Scope  # noqa: E402
from sockterm.filter import build_filter  # noqa: E402

V4 = b"\0" * 10 + b"\xff\xff"
NS = model.Namespace(ino=4026531999, name="testns", path="/nonexistent")


# -- a model of net/ipv4/inet_diag.c ----------------------------------------------

def _op(bc, off):
    return nld.OP.unpack_from(bc, off)          # code, yes, no


def kernel_audit(bc: bytes) -> bool:
    """inet_diag_bc_audit() + valid_cc() + valid_hostcond()/valid_port_comparison()."""
    if len(bc) < 4:
        return False

    def valid_cc(length, cc):
        off = 0
        while length >= 0:
            if cc > length:
                return False
            if cc == length:
                return True
            _code, yes, _no = _op(bc, off)
            if yes < 4 or yes & 3:
                return False
            length -= yes
            off += yes
        return False

    off, length = 0, len(bc)
    while length > 0:
        code, yes, no = _op(bc, off)
        min_len = 4
        if code in (nld.INET_DIAG_BC_S_COND, nld.INET_DIAG_BC_D_COND):
            min_len += 8
            if length < min_len:
                return False
            family, plen, _pad, _port = nld.HOSTCOND.unpack_from(bc, off + 4)
            alen = {socket.AF_UNSPEC: 0, socket.AF_INET: 4, socket.AF_INET6: 16}.get(family)
            if alen is None:
                return False
            min_len += alen
            if length < min_len or plen > 8 * alen:
                return False
        elif code in (nld.INET_DIAG_BC_S_GE, nld.INET_DIAG_BC_S_LE, nld.INET_DIAG_BC_D_GE,
                      nld.INET_DIAG_BC_D_LE):
            min_len += 4
            if length < min_len:
                return False
        elif code == nld.INET_DIAG_BC_CGROUP_COND:      # valid_cgroupcond()
            min_len += 8
            if length < min_len:
                return False
        elif code not in (nld.INET_DIAG_BC_AUTO, nld.INET_DIAG_BC_JMP, nld.INET_DIAG_BC_NOP):
            return False
        if code != nld.INET_DIAG_BC_NOP:
            if no < min_len or no > length + 4 or no & 3:
                return False
            if no < length and not valid_cc(len(bc), length - no):
                return False
        if yes < min_len or yes > length + 4 or yes & 3:
            return False
        off += yes
        length -= yes
    return length == 0


def _bits_match(a: bytes, b: bytes, bits: int) -> bool:
    full, rest = divmod(bits, 8)
    if a[:full] != b[:full]:
        return False
    if rest:
        mask = (0xFF << (8 - rest)) & 0xFF
        return (a[full] & mask) == (b[full] & mask)
    return True


def kernel_run(bc: bytes, family: int, saddr: bytes, daddr: bytes, sport: int, dport: int,
               cgroup: int = 0) -> bool:
    """inet_diag_bc_run(): saddr/daddr as the kernel holds them (4 or 16 bytes);
    cgroup is entry->cgroup_id (0 for a socket that is not a full one)."""
    off, length = 0, len(bc)
    while length > 0:
        code, yes_off, no_off = _op(bc, off)
        yes = True
        if code == nld.INET_DIAG_BC_JMP:
            yes = False
        elif code == nld.INET_DIAG_BC_S_GE:
            yes = sport >= _op(bc, off + 4)[2]
        elif code == nld.INET_DIAG_BC_S_LE:
            yes = sport <= _op(bc, off + 4)[2]
        elif code == nld.INET_DIAG_BC_D_GE:
            yes = dport >= _op(bc, off + 4)[2]
        elif code == nld.INET_DIAG_BC_D_LE:
            yes = dport <= _op(bc, off + 4)[2]
        elif code == nld.INET_DIAG_BC_CGROUP_COND:
            yes = cgroup == nld.CGROUP_ID.unpack_from(bc, off + 4)[0]
        elif code in (nld.INET_DIAG_BC_S_COND, nld.INET_DIAG_BC_D_COND):
            cfam, plen, _pad, port = nld.HOSTCOND.unpack_from(bc, off + 4)
            caddr = bc[off + 12:off + 12 + {socket.AF_INET: 4, socket.AF_INET6: 16}.get(cfam, 0)]
            is_s = code == nld.INET_DIAG_BC_S_COND
            addr = saddr if is_s else daddr
            if port != -1 and port != (sport if is_s else dport):
                yes = False
            elif cfam != socket.AF_UNSPEC and cfam != family:
                yes = (family == socket.AF_INET6 and cfam == socket.AF_INET
                       and addr[:12] == V4 and _bits_match(addr[12:], caddr, plen))
            elif plen == 0:
                yes = True
            else:
                yes = _bits_match(addr, caddr, plen)
        step = yes_off if yes else no_off
        off += step
        length -= step
    return length == 0


# -- bytecode structure --------------------------------------------------------------

def test_empty_filter_has_no_bytecode():
    assert bytecode.compile_bytecode(build_filter(state=["all"])) == b""
    assert bytecode.compile_bytecode(build_filter(dst=["::/0"], state=["all"])) == b""


def test_single_ipv4_host():
    bc = bytecode.compile_bytecode(build_filter(dst=["10.0.0.5"]))
    ops = nld.describe_bytecode(bc)
    assert len(ops) == 1
    op = ops[0]
    assert op["code"] == nld.INET_DIAG_BC_D_COND
    assert (op["family"], op["prefix_len"], op["port"], op["addr"]) == (socket.AF_INET, 32, -1, bytes([10, 0, 0, 5]))
    assert op["yes"] == 16 and op["no"] == 20          # fall through / reject = end + 4
    assert kernel_audit(bc)


def test_or_and_layout_like_ss():
    flt = build_filter(dst=["10.0.0.5:80", "[fd00::5]:443-450"], sport=["1000-2000"])
    bc = bytecode.compile_bytecode(flt)
    assert kernel_audit(bc)
    ops = nld.describe_bytecode(bc)
    codes = [o["code"] for o in ops]
    assert codes == [nld.INET_DIAG_BC_D_COND, nld.INET_DIAG_BC_D_GE, nld.INET_DIAG_BC_D_LE,
                     nld.INET_DIAG_BC_JMP,
                     nld.INET_DIAG_BC_D_COND, nld.INET_DIAG_BC_D_GE, nld.INET_DIAG_BC_D_LE,
                     nld.INET_DIAG_BC_S_GE, nld.INET_DIAG_BC_S_LE]
    # every op falls through on success; first alternative fails to the second
    assert all(o["yes"] == o["size"] for o in ops if o["code"] != nld.INET_DIAG_BC_JMP)
    second = ops[4]["at"]
    for o in ops[:3]:
        assert o["at"] + o["no"] == second
    # the JMP skips the second alternative to the sport clause
    assert ops[3]["at"] + ops[3]["no"] == ops[7]["at"]
    # the last alternative and the sport clause reject past the end
    for o in ops[4:]:
        assert o["at"] + o["no"] == len(bc) + 4
    assert [o["port"] for o in ops if "port" in o and o["code"] != nld.INET_DIAG_BC_D_COND] == [80, 80, 443, 450, 1000, 2000]


def test_full_port_ranges_need_no_ops():
    bc = bytecode.compile_bytecode(build_filter(dport=["0-65535"]))
    assert bc == b""
    ops = nld.describe_bytecode(bytecode.compile_bytecode(build_filter(dport=["0-80"])))
    assert [o["code"] for o in ops] == [nld.INET_DIAG_BC_D_LE]


def test_v6_prefix_covering_v4_mapped_space_accepts_ipv4():
    bc = bytecode.compile_bytecode(build_filter(dst=["::/1"]))
    assert kernel_audit(bc)
    assert kernel_run(bc, socket.AF_INET, bytes(4), bytes([10, 1, 2, 3]), 1, 2)
    bc = bytecode.compile_bytecode(build_filter(dst=["fd00::/8"]))
    assert not kernel_run(bc, socket.AF_INET, bytes(4), bytes([10, 1, 2, 3]), 1, 2)


def test_bytecode_pieces_match_pyroute2_encoding():
    op = nld.inet_diag_bc_op()
    op.update(code=nld.INET_DIAG_BC_D_COND, yes=16, no=20)
    op.encode()
    cond = nld.inet_diag_hostcond()
    cond.update(family=socket.AF_INET, prefix_len=32, port=-1)
    cond.encode()
    expected = bytes(op.data) + bytes(cond.data) + bytes([127, 0, 0, 1])
    assert bytecode.compile_bytecode(build_filter(dst=["127.0.0.1"])) == expected


def _kernel_view(sock):
    """How the kernel holds a Sock's addresses for the bytecode."""
    if sock.family == 4:
        return socket.AF_INET, sock.src[12:], sock.dst[12:]
    return socket.AF_INET6, sock.src, sock.dst


ADDRS = ["10.0.0.5", "10.0.0.6", "10.1.2.3", "127.0.0.1", "0.0.0.0", "fd00::5", "fd00::6",
         "fe80::1", "::", "::1", "::ffff:10.0.0.5", "::ffff:127.0.0.1", "2001:db8::1"]
RULES = ["10.0.0.5", "10.0.0.0/8", "10.0.0.5:80", "10.0.0.0/24:1-1024", "0.0.0.0/0",
         "127.0.0.1:53", "[fd00::5]:443", "fd00::/16", "[fd00::]/64:8000-9000", "::/0",
         "::/1", "::ffff:0:0/96", "[::ffff:10.0.0.0]/104:80", "::ffff:0:0/95", "2001:db8::/32",
         "0.0.0.0/1", "128.0.0.0/1"]
PORTS = ["80", "443", "1-1024", "1024-65535", "0", "53", "8000-9000", "65535"]


def _random_sock(rng):
    src_text, dst_text = rng.choice(ADDRS), rng.choice(ADDRS)
    pick = ipaddress.ip_address
    if pick(src_text).version == 4 and pick(dst_text).version == 4:
        family = 4
        src, dst = V4 + pick(src_text).packed, V4 + pick(dst_text).packed
    else:
        family = 6
        def v6(text):
            a = pick(text)
            return a.packed if a.version == 6 else V4 + a.packed
        src, dst = v6(src_text), v6(dst_text)
    return model.Sock(netns=1, family=family, proto="tcp", state=st.ESTABLISHED, src=src,
                      sport=rng.choice([0, 53, 80, 443, 1024, 8080, 8500, 40000, 65535]),
                      dst=dst, dport=rng.choice([0, 53, 80, 443, 1024, 8080, 8500, 40000, 65535]),
                      cookie=1)


@pytest.mark.parametrize("seed", range(40))
def test_bytecode_agrees_with_filter_matches(seed):
    """The kernel (modelled) and Filter.matches decide alike on random filters and sockets."""
    rng = random.Random(seed)
    kw = {}
    for key, pool in (("dst", RULES), ("src", RULES), ("dport", PORTS), ("sport", PORTS)):
        if rng.random() < 0.5:
            kw[key] = rng.sample(pool, rng.randint(1, 4))
    flt = build_filter(state=["all"], **kw)
    bc = bytecode.compile_bytecode(flt)
    assert bc == b"" or kernel_audit(bc), nld.describe_bytecode(bc)
    for _ in range(300):
        sock = _random_sock(rng)
        family, saddr, daddr = _kernel_view(sock)
        kernel = bc == b"" or kernel_run(bc, family, saddr, daddr, sock.sport, sock.dport)
        assert kernel == flt.matches(sock), (kw, sock)


def test_sixteen_rules_each_side_fit_and_audit():
    rules = [f"10.0.{i}.0/24:{1000 + i}-{2000 + i}" for i in range(16)]
    flt = build_filter(dst=rules, src=[f"fd00:{i}::/32" for i in range(16)],
                       dport=[str(p) for p in range(16)], sport=[f"{p}-{p + 5}" for p in range(100, 116)])
    bc = bytecode.compile_bytecode(flt)
    assert kernel_audit(bc)
    assert len(bc) < 65000


def test_state_mask_adds_new_syn_recv():
    assert bytecode.state_mask({st.SYN_RECV}) == (1 << 3) | (1 << 12)
    assert bytecode.state_mask({st.LISTEN}) == 1 << 10
    assert bytecode.state_mask(st.ALL) == 0x1FFE


# -- a canned kernel ------------------------------------------------------------------

def _error_msg(seq: int, err: int) -> bytes:
    msg = nlmsgerr()
    msg["header"]["type"] = nld.NLMSG_ERROR
    msg["header"]["sequence_number"] = seq
    msg["error"] = -err
    msg.encode()
    return bytes(msg.data)


def _done_msg(seq: int) -> bytes:
    return struct.pack("=IHHIIi", 20, nld.NLMSG_DONE, 2, seq, 0, 0)


def diag_msg(*, seq=0, family=socket.AF_INET, state=1, timer=0, sport=0, dport=0, src=bytes(16),
             dst=bytes(16), ifindex=0, cookie=1, uid=0, inode=0, attrs=True) -> bytes:
    """An inet_diag_msg encoded by pyroute2 (independently of the fast decoder)."""
    msg = nld.inet_diag_msg()
    msg["header"].update(type=nld.SOCK_DIAG_BY_FAMILY, flags=2, sequence_number=seq)
    msg.update(idiag_family=family, idiag_state=state, idiag_timer=timer, idiag_retrans=0,
               idiag_sport=sport, idiag_dport=dport, idiag_src=src, idiag_dst=dst,
               idiag_if=ifindex, idiag_cookie=(cookie & 0xFFFFFFFF, cookie >> 32),
               idiag_expires=0, idiag_rqueue=0, idiag_wqueue=0, idiag_uid=uid, idiag_inode=inode)
    msg.encode()
    data = bytes(msg.data)
    if attrs:      # INET_DIAG_SHUTDOWN + INET_DIAG_CGROUP_ID, as full sockets carry
        extra = struct.pack("=HHB3x", 5, 8, 0) + struct.pack("=HHQ", 12, 21, 1)
        data = struct.pack("=I", len(data) + len(extra)) + data[4:] + extra
    return data


class FakeKernel:
    """Stands in for the AF_NETLINK socket of a DiagSocket.

    destroy(req) -> errno decides each SOCK_DESTROY; dumps answer with `rows`
    (callables of the request -> list of encoded messages)."""

    def __init__(self, destroy=lambda req: 0, rows=lambda req: []):
        self.destroy = destroy
        self.rows = rows
        self.out: list[bytes] = []
        self.requests: list[dict] = []

    def send(self, data):
        off = 0
        while off < len(data):
            length = struct.unpack_from("=I", data, off)[0]
            msg = nld.inet_diag_req_v2(bytes(data[off:off + length]))
            msg.decode()
            req = dict(msg)
            req["header"] = dict(msg["header"])
            self.requests.append(req)
            seq = msg["header"]["sequence_number"]
            if msg["header"]["type"] == nld.SOCK_DESTROY:
                self.out.append(_error_msg(seq, self.destroy(req)))
            else:
                body = b"".join(self.rows(req))
                fixed = b""
                o = 0
                while o < len(body):      # stamp the dump's sequence number
                    ln = struct.unpack_from("=I", body, o)[0]
                    fixed += body[o:o + 8] + struct.pack("=I", seq) + body[o + 12:o + ln]
                    o += ln
                self.out.append(fixed + _done_msg(seq))
            off += (length + 3) & ~3
        return len(data)

    def recv_into(self, buf):
        data = self.out.pop(0)
        buf[:len(data)] = data
        return len(data)

    def close(self):
        pass


def fake_diag_socket(kernel) -> nld.DiagSocket:
    ds = nld.DiagSocket.__new__(nld.DiagSocket)
    ds.sock = kernel
    ds.buf = bytearray(ds.RECV_SIZE)
    ds.seq = 0
    return ds


def tcp_sock(cookie, *, sport=40000, dport=80, state=st.ESTABLISHED, family=4, proto="tcp",
             dst=None):
    if dst is None:
        dst = V4 + bytes([10, 0, 0, 5]) if family == 4 else ipaddress.ip_address("fd00::5").packed
    src = V4 + bytes([10, 1, 0, 2]) if family == 4 else ipaddress.ip_address("fd01::2").packed
    return model.Sock(netns=NS.ino, family=family, proto=proto, state=state, src=src, sport=sport,
                      dst=dst, dport=dport, cookie=cookie)


# -- error acks -------------------------------------------------------------------------

@pytest.mark.parametrize("err, result", [
    (0, model.KILLED),
    (errno.EOPNOTSUPP, model.UNSUPPORTED),
    (errno.EPERM, model.NO_PERMISSION),
    (errno.ENOENT, model.GONE),
    (errno.EINVAL, model.FAILED),
])
def test_destroy_ack_maps_to_result(err, result):
    kernel = FakeKernel(destroy=lambda req: err)
    sock = tcp_sock(0x1234_0000_5678)
    destroy.destroy_with(fake_diag_socket(kernel), [sock])
    assert sock.result == result and sock.error == err
    [req] = kernel.requests
    assert req["header"]["type"] == nld.SOCK_DESTROY
    assert req["header"]["flags"] == nld.NLM_F_REQUEST | nld.NLM_F_ACK
    assert req["sdiag_family"] == socket.AF_INET and req["sdiag_protocol"] == socket.IPPROTO_TCP
    assert req["idiag_cookie"] == (0x5678, 0x1234)
    assert req["idiag_sport"] == 40000 and req["idiag_dport"] == 80
    assert req["idiag_src"] == bytes([10, 1, 0, 2]) + bytes(12)
    assert req["idiag_dst"] == bytes([10, 0, 0, 5]) + bytes(12)


def test_every_ack_is_read_and_matched_by_sequence():
    socks = [tcp_sock(i + 1, sport=30000 + i) for i in range(700)]   # > one batch
    outcome = {s.cookie: [0, errno.ENOENT, errno.EPERM][s.cookie % 3] for s in socks}
    kernel = FakeKernel(destroy=lambda req: outcome[req["idiag_cookie"][0]])
    destroy.destroy_with(fake_diag_socket(kernel), socks)
    assert len(kernel.requests) == 700
    for s in socks:
        assert s.error == outcome[s.cookie]
    assert not kernel.out


def test_ipv6_and_ifindex_carried_exactly():
    sock = tcp_sock(7, family=6, dst=ipaddress.ip_address("fe80::1").packed)
    sock.ifindex = 3
    kernel = FakeKernel()
    destroy.destroy_with(fake_diag_socket(kernel), [sock])
    [req] = kernel.requests
    assert req["sdiag_family"] == socket.AF_INET6
    assert req["idiag_dst"] == ipaddress.ip_address("fe80::1").packed
    assert req["idiag_if"] == 3
    assert sock.result == model.KILLED


def test_decode_error_uses_pyroute2():
    exc = nld.decode_error(_error_msg(1, errno.EOPNOTSUPP))
    assert isinstance(exc, nld.NetlinkError) and exc.code == errno.EOPNOTSUPP
    assert nld.decode_error(_error_msg(1, 0)) is None


def test_dump_error_raises_netlink_error():
    class Refusing(FakeKernel):
        def send(self, data):
            seq = struct.unpack_from("=I", data, 8)[0]
            self.out.append(_error_msg(seq, errno.EINVAL))
            return len(data)
    ds = fake_diag_socket(Refusing())
    with pytest.raises(nld.NetlinkError) as info:
        list(ds.dump(socket.AF_INET, socket.IPPROTO_TCP, 0xFFF, b"\x01\x04\x08\x00"))
    assert info.value.code == errno.EINVAL


# -- decoding dumps ------------------------------------------------------------------------

def test_wire_is_what_the_declarations_say(monkeypatch):
    # checked here, not on every run: a run imports wire.py alone, never pyroute2
    assert nld.wire_mismatches() == []
    monkeypatch.setattr(nld, "MSG", struct.Struct("=IHHIIBBBBHH16s16sI2IIIII"))
    monkeypatch.setattr(nld._wire, "SOCK_DESTROY", 22)
    assert [p.split(" is ")[0] for p in nld.wire_mismatches()] == ["wire.MSG", "wire.SOCK_DESTROY"]


def test_flat_layouts_match_pyroute2():
    req = nld.inet_diag_req_v2()
    req["header"].update(type=nld.SOCK_DESTROY, flags=5, sequence_number=9)
    req.update(sdiag_family=socket.AF_INET6, sdiag_protocol=socket.IPPROTO_UDP, idiag_ext=0,
               idiag_states=0xFFF, idiag_sport=53, idiag_dport=4242, idiag_src=b"\x01" * 16,
               idiag_dst=b"\x02" * 16, idiag_if=7, idiag_cookie=(11, 12))
    req["attrs"] = [("INET_DIAG_REQ_BYTECODE", b"\x01\x04\x08\x00")]
    req.encode()
    assert bytes(req.data) == nld.encode_request(
        nld.SOCK_DESTROY, 5, 9, family=socket.AF_INET6, proto=socket.IPPROTO_UDP, states=0xFFF,
        sport=53, dport=4242, src=b"\x01" * 16, dst=b"\x02" * 16, ifindex=7, cookie=(11, 12),
        bytecode=b"\x01\x04\x08\x00")
    assert nld.MSG.size == 16 + 72 and nld.REQ.size == 16 + 56


def test_decode_canned_dump():
    flt = build_filter(state=["all"])
    msgs = [
        diag_msg(family=socket.AF_INET, state=st.ESTABLISHED, sport=40000, dport=80,
                 src=bytes([10, 1, 0, 2]) + bytes(12), dst=bytes([10, 0, 0, 5]) + bytes(12),
                 cookie=(3 << 32) | 5, uid=1000, inode=4242),
        diag_msg(family=socket.AF_INET, state=st.TIME_WAIT, timer=3, sport=40001, dport=80,
                 src=bytes([10, 1, 0, 2]) + bytes(12), dst=bytes([10, 0, 0, 5]) + bytes(12),
                 cookie=6, attrs=False),
        diag_msg(family=socket.AF_INET, state=st.SYN_RECV, timer=1, sport=80, dport=50000,
                 src=bytes([10, 0, 0, 5]) + bytes(12), dst=bytes([10, 1, 0, 2]) + bytes(12),
                 cookie=7, attrs=False),
        diag_msg(family=socket.AF_INET, state=st.LISTEN, sport=80, cookie=8, inode=99),
    ]
    ds = fake_diag_socket(FakeKernel(rows=lambda req: msgs))
    rows = ds.dump(socket.AF_INET, socket.IPPROTO_TCP, 0xFFF)
    socks = diag_engine.decode_rows(rows, "tcp", NS, flt, Scope(exclude_inodes=frozenset({99})))
    assert [s.cookie for s in socks] == [(3 << 32) | 5, 6, 7]      # inode 99 excluded
    est, tw, req = socks
    assert (est.family, est.proto, est.state, est.sport, est.dport) == (4, "tcp", 1, 40000, 80)
    assert est.src == V4 + bytes([10, 1, 0, 2]) and est.dst == V4 + bytes([10, 0, 0, 5])
    assert (est.uid, est.ino, est.netns, est.netns_name) == (1000, 4242, NS.ino, "testns")
    assert est.result == model.MATCHED and not est.mini
    assert tw.mini and tw.state == st.TIME_WAIT
    assert req.mini and req.state == st.SYN_RECV


def test_decode_ipv6_and_filter_safety_net():
    v6a = ipaddress.ip_address("fd00::5").packed
    mapped = V4 + bytes([10, 0, 0, 5])
    msgs = [diag_msg(family=socket.AF_INET6, sport=1, dport=443, src=v6a, dst=v6a, cookie=1, ifindex=4),
            diag_msg(family=socket.AF_INET6, sport=2, dport=443, src=mapped, dst=mapped, cookie=2),
            diag_msg(family=socket.AF_INET6, sport=3, dport=22, src=v6a, dst=v6a, cookie=3)]
    flt = build_filter(dport=["443"])
    ds = fake_diag_socket(FakeKernel(rows=lambda req: msgs))
    socks = diag_engine.decode_rows(ds.dump(socket.AF_INET6, socket.IPPROTO_TCP, 0xFFF), "tcp", NS, flt,
                                    Scope())
    # the kernel would not have sent cookie 3; the Python check drops it anyway
    assert [s.cookie for s in socks] == [1, 2]
    assert socks[0].dst == v6a and socks[1].dst == mapped and socks[1].family == 6
    assert [s.ifindex for s in socks] == [4, 0]


# -- reuseport members ---------------------------------------------------------------------

class ReuseportKernel(FakeKernel):
    """Unconnected UDP sockets on 0.0.0.0:5353 as the kernel keeps them: a hash
    chain (head first, as the dump lists it) and a reuseport group. A lookup
    returns the chain's first socket; if that one is in the group, the group
    picks a member by hash(remote port). A destroyed UDP socket stays in the
    chain but leaves the group. The cookie check refuses any other socket."""

    def __init__(self, cookies, refuse=errno.ENOENT, stuck=(), detached=()):
        super().__init__(destroy=self._destroy, rows=self._rows)
        self.chain = list(cookies)
        self.group = [c for c in cookies if c not in detached]
        self.refuse = refuse
        self.stuck = set(stuck)       # members the group's hash never picks
        self.killed = []

    def _destroy(self, req):
        cookie = req["idiag_cookie"][0]
        if req["idiag_sport"] != 5353 or not self.chain:
            return errno.ENOENT
        first = self.chain[0]
        picked = first
        if first in self.group:
            candidates = [c for c in self.group if c not in self.stuck]
            picked = candidates[hash((req["idiag_dport"], 17)) % len(candidates)]
        if picked != cookie:
            return self.refuse
        self.killed.append(cookie)
        if cookie in self.group:
            self.group.remove(cookie)
        return 0

    def _rows(self, req):
        return [diag_msg(family=socket.AF_INET, state=st.CLOSE, sport=5353, cookie=c, attrs=True)
                for c in self.chain]


def udp_server(cookie):
    return model.Sock(netns=NS.ino, family=4, proto="udp", state=st.CLOSE, src=V4 + bytes(4),
                      sport=5353, dst=V4 + bytes(4), dport=0, cookie=cookie)


@pytest.mark.parametrize("refuse", [errno.ENOENT, errno.ESTALE])
def test_reuseport_group_every_member_destroyed_once(refuse):
    kernel = ReuseportKernel([11, 12, 13, 14, 15], refuse=refuse)
    socks = [udp_server(c) for c in (11, 12, 13, 14, 15)]     # dump order = chain order
    destroy.destroy_with(fake_diag_socket(kernel), socks, rng=random.Random(1))
    assert [s.result for s in socks] == [model.KILLED] * 5
    assert sorted(kernel.killed) == [11, 12, 13, 14, 15]
    assert kernel.killed[-1] == 11                  # the chain head goes last


def test_detached_chain_head_shadows_the_group():
    """A member destroyed earlier (still hashed, out of the group) at the chain
    head answers every lookup: the others cannot be reached and are reported."""
    kernel = ReuseportKernel([11, 12, 13], refuse=errno.ENOENT, detached={11})
    socks = [udp_server(c) for c in (12, 13)]
    destroy.destroy_with(fake_diag_socket(kernel), socks, rng=random.Random(3))
    assert [(s.result, s.error) for s in socks] == [(model.FAILED, errno.ESTALE)] * 2


def test_reuseport_member_out_of_reach_is_reported():
    kernel = ReuseportKernel([11, 12, 13], refuse=errno.ESTALE, stuck={12})
    socks = [udp_server(c) for c in (11, 12, 13)]
    logs = []
    destroy.destroy_with(fake_diag_socket(kernel), socks, log=logs.append, rng=random.Random(2))
    assert [s.result for s in (socks[0], socks[2])] == [model.KILLED] * 2
    assert socks[1].result == model.FAILED and socks[1].error == errno.ESTALE
    destroys = [r for r in kernel.requests if r["header"]["type"] == nld.SOCK_DESTROY
                and r["idiag_cookie"][0] == 12]
    assert len(destroys) <= destroy.MAX_ATTEMPTS + 1
    assert any("could not reach" in line for line in logs)


def test_vanished_server_socket_is_gone_without_retries():
    kernel = ReuseportKernel([11, 12])
    sock = udp_server(99)       # not in the kernel any more
    destroy.destroy_with(fake_diag_socket(kernel), [sock])
    assert sock.result == model.GONE
    assert sum(1 for r in kernel.requests if r["header"]["type"] == nld.SOCK_DESTROY) == 1


def test_connected_sockets_are_not_retried():
    kernel = FakeKernel(destroy=lambda req: errno.ENOENT)
    sock = tcp_sock(5)
    destroy.destroy_with(fake_diag_socket(kernel), [sock])
    assert sock.result == model.GONE and len(kernel.requests) == 1


# -- exact layouts (what mutation testing asked for) -----------------------------------

def _bc_op(code, yes, no):
    return struct.pack("=BBH", code, yes, no)


def _bc_cond(family, plen, addr):
    return struct.pack("=BBhi", family, plen, 0, -1) + addr


@pytest.mark.parametrize("text,family,plen,addr", [
    ("::ffff:0:0/96", socket.AF_INET, 0, bytes(4)),           # the whole v4-mapped range
    ("::ffff:10.0.0.0/104", socket.AF_INET, 8, bytes([10, 0, 0, 0])),
    ("10.0.0.0/8", socket.AF_INET, 8, bytes([10, 0, 0, 0])),
])
def test_v4_mapped_prefixes_are_one_inet_condition(text, family, plen, addr):
    bc = bytecode.compile_bytecode(build_filter(dst=[text]))
    size = 4 + 8 + len(addr)
    assert bc == _bc_op(nld.INET_DIAG_BC_D_COND, size, size + 4) + _bc_cond(family, plen, addr)


def test_v6_prefix_over_the_mapped_range_is_v6_or_any_ipv4():
    bc = bytecode.compile_bytecode(build_filter(src=["::/8"]))
    v6 = _bc_cond(socket.AF_INET6, 8, bytes(16))
    any4 = _bc_cond(socket.AF_INET, 0, bytes(4))
    # v6 condition; on success jump to the end; else the IPv4 condition, else reject
    assert bc == (_bc_op(nld.INET_DIAG_BC_S_COND, 28, 32) + v6 + _bc_op(nld.INET_DIAG_BC_JMP, 4, 20)
                  + _bc_op(nld.INET_DIAG_BC_S_COND, 16, 20) + any4)


def test_port_conditions_carry_the_port_in_a_second_op_like_ss():
    bc = bytecode.compile_bytecode(build_filter(sport=["1000-2000"]))
    assert bc == (_bc_op(nld.INET_DIAG_BC_S_GE, 8, 20) + struct.pack("=BBH", 0, 0, 1000)
                  + _bc_op(nld.INET_DIAG_BC_S_LE, 8, 12) + struct.pack("=BBH", 0, 0, 2000))
# -- --cgroup: INET_DIAG_BC_CGROUP_COND ---------------------------------------------

def test_cgroup_ids_become_an_or_of_cgroup_conditions():
    flt = build_filter(dport=["80"], cgroup=["x"])
    scope = Scope(cgroup_ids=frozenset({4242, 77}))
    bc = bytecode.compile_bytecode(flt, scope)
    assert kernel_audit(bc)
    ops = nld.describe_bytecode(bc)
    assert [o.get("cgroup") for o in ops if o["code"] == nld.INET_DIAG_BC_CGROUP_COND] == [77, 4242]
    assert all(o["size"] == 12 for o in ops if o["code"] == nld.INET_DIAG_BC_CGROUP_COND)
    args = (socket.AF_INET, bytes(4), bytes([10, 0, 0, 5]), 40000, 80)
    assert kernel_run(bc, *args, cgroup=4242) and kernel_run(bc, *args, cgroup=77)
    assert not kernel_run(bc, *args, cgroup=78) and not kernel_run(bc, *args, cgroup=0)
    assert not kernel_run(bc, socket.AF_INET, bytes(4), bytes([10, 0, 0, 5]), 40000, 81, cgroup=77)


def test_a_cgroup_filter_that_resolved_to_nothing_matches_nothing():
    bc = bytecode.compile_bytecode(build_filter(cgroup=["x"]), Scope(cgroup_ids=frozenset()))
    assert kernel_audit(bc)
    assert not kernel_run(bc, socket.AF_INET, bytes(4), bytes(4), 1, 2, cgroup=0)


def test_container_scope_is_left_to_python():
    """A held inode is no bytecode condition: Filter.matches decides --container/--pod."""
    scope = Scope(owned_netns=frozenset({5}), owned_inodes=frozenset({9}), owned_cgroups=frozenset({3}))
    assert bytecode.compile_bytecode(build_filter(container=["web"], state=["all"]), scope) == b""


@pytest.mark.parametrize("seed", range(20))
def test_cgroup_bytecode_agrees_with_filter_matches(seed):
    rng = random.Random(seed)
    ids = frozenset(rng.sample(range(1, 40), rng.randint(0, 6)))
    kw = {"dport": rng.sample(PORTS, 2)} if rng.random() < 0.5 else {}
    flt = build_filter(state=["all"], cgroup=["x"], **kw)
    scope = Scope(cgroup_ids=ids)
    bc = bytecode.compile_bytecode(flt, scope)
    assert kernel_audit(bc)
    for _ in range(200):
        sock = _random_sock(rng)
        sock.cgroup = rng.randrange(0, 42)
        family, saddr, daddr = _kernel_view(sock)
        kernel = kernel_run(bc, family, saddr, daddr, sock.sport, sock.dport, cgroup=sock.cgroup)
        assert kernel == (flt.matches(sock) and scope.admits(sock)), (ids, kw, sock, sock.cgroup)


def test_dump_rows_carry_the_cgroup_attribute():
    """INET_DIAG_CGROUP_ID follows an INET_DIAG_PAD, as the kernel aligns u64 attributes."""
    row = (0, 20, 2, 0, 0, socket.AF_INET, st.ESTABLISHED, 0, 0, socket.htons(40000),
           socket.htons(80), bytes([10, 1, 0, 2]) + bytes(12), bytes([10, 0, 0, 5]) + bytes(12), 0,
           7, 0, 0, 0, 0, 1000, 555)
    attrs = (nld.NLA_HDR.pack(4, 14)                                   # INET_DIAG_PAD, empty
             + nld.NLA_HDR.pack(12, nld.INET_DIAG_CGROUP_ID) + nld.CGROUP_ID.pack(31337))
    body = nld.MSG.pack(*row)
    msg = nld.MSG.pack(nld.MSG.size + len(attrs), *row[1:]) + attrs
    assert nld.cgroup_of(msg, 0, len(msg)) == 31337
    assert nld.cgroup_of(body, 0, len(body)) == 0
    flt = build_filter(state=["all"], uid=["1000"], cgroup=["x"])
    hit = diag_engine.decode_rows([row + (31337,)], "tcp", NS, flt,
                                  Scope(cgroup_ids=frozenset({31337})))
    miss = diag_engine.decode_rows([row + (31336,)], "tcp", NS, flt,
                                   Scope(cgroup_ids=frozenset({31337})))
    assert [(s.ino, s.cgroup, s.uid) for s in hit] == [(555, 31337, 1000)] and miss == []


def test_an_empty_cgroup_set_is_the_id_no_cgroup_has():
    bc = bytecode.compile_bytecode(build_filter(cgroup=["x"]), Scope(cgroup_ids=frozenset()))
    assert bc.endswith(struct.pack("=Q", 2**64 - 1))
