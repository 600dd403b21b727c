"""The Filter as the BPF programs read it: struct st_config in .rodata.cfg."""

from __future__ import annotations

from . import record


def compile_config(flt, scope, kill: bool) -> record.StConfig:
    """The Filter as the BPF programs read it (struct st_config); the Scope
    switches on the map lookups it needs (the maps: engine.py)."""
    cfg = record.StConfig()
    for rules, out, count in ((flt.dst, cfg.dst, "n_dst"), (flt.src, cfg.src, "n_src")):
        for i, rule in enumerate(rules):
            addr = rule.net.network_address.packed
            mask = rule.net.netmask.packed
            for w in range(4):
                # network-order words, compared as the kernel's __be32 words
                out[i].addr[w] = int.from_bytes(addr[4 * w:4 * w + 4], "little")
                out[i].mask[w] = int.from_bytes(mask[4 * w:4 * w + 4], "little")
            out[i].port_lo, out[i].port_hi = rule.ports.lo, rule.ports.hi
        setattr(cfg, count, len(rules))
    for ranges, out, count in ((flt.dport, cfg.dport, "n_dport"), (flt.sport, cfg.sport, "n_sport")):
        for i, rng in enumerate(ranges):
            out[i].lo, out[i].hi = rng.lo, rng.hi
        setattr(cfg, count, len(ranges))
    for i, uid in enumerate(flt.uids):
        cfg.uids[i] = uid
    cfg.n_uids = len(flt.uids)
    cfg.states = sum(1 << s for s in flt.states)
    cfg.families = (1 if 4 in flt.families else 0) | (2 if 6 in flt.families else 0)
    cfg.flags = ((record.CFG_KILL if kill else 0)
                 | (record.CFG_INODES if scope.inodes is not None else 0)
                 | (record.CFG_TCP if "tcp" in flt.protos else 0)
                 | (record.CFG_UDP if "udp" in flt.protos else 0)
                 | (record.CFG_COOKIES if scope.cookies is not None else 0)
                 | (record.CFG_CGROUPS if scope.cgroup_ids is not None else 0)
                 | (record.CFG_SCOPE if scope.owned_netns is not None else 0))
    return cfg
