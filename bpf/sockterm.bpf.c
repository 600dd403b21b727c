// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The object sockterm loads for a run (sockterm/data/sockterm.bpf.o): two
 * tools that share one load, the filter (cfg) and the maps below. Built twice:
 * sockterm.bpf.o for the kills the iterators make, and sockterm-read.bpf.o
 * (ST_READ_ONLY) for every other run, the same programs without the
 * bpf_sock_destroy kfunc: a kfunc extern makes libbpf read the kernel's whole
 * BTF (~15 ms) to resolve it, and a run that destroys nothing in the kernel
 * need not pay that.
 *
 *   iter_sockets.c  the socket iterators: one walk of a namespace's TCP or
 *                   UDP table, a record per match and, in kill mode, the
 *                   bpf_sock_destroy kfunc on it
 *   one_pass.c      the one pass: every socket a process holds, host-wide,
 *                   with its holder, and what each namespace's processes hold
 *   refused.c       for tests only: programs every verifier refuses
 *
 * Each program is loaded on its own terms (sockterm/engine/bpf/engine.py): a
 * kernel that refuses one loses that capability, not the object. This file
 * holds what the tools share: the filter, the maps it reads and the helpers
 * that apply it to a socket. The record layouts are in sockterm.h; watch.bpf.c
 * (kill --watch) is a tool of its own, in an object of its own.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "sockterm.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* The filter lives in its own section so user space can set it before load
 * (a .rodata shared with string literals cannot be resized to fit). Frozen
 * at load, so the verifier prunes what a run does not use. */
const volatile struct st_config cfg SEC(".rodata.cfg");

struct st_stats stats;

/* Never used: they put the record types in the object's BTF, where the
 * loader checks the Python mirror of them. */
struct st_rec *st_rec_btf_anchor;
struct st_held *st_held_btf_anchor;
struct st_ns_held *st_ns_held_btf_anchor;

/* Process filter, self-exclusion and --container/--pod holders: socket inode -> ST_INO_* bits */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);  /* sized by user space before load */
	__type(key, __u64);
	__type(value, __u8);
} st_inodes SEC(".maps");

/* With ST_CFG_COOKIES: the only sockets this run may touch (socket cookie -> 1),
 * the ones an operator confirmed or --max counted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);  /* sized by user space before load */
	__type(key, __u64);
	__type(value, __u8);
} st_cookies SEC(".maps");

/* --cgroup, and --container/--pod's own cgroups: cgroup v2 id -> ST_CG_* bits */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);  /* sized by user space before load */
	__type(key, __u64);
	__type(value, __u8);
} st_cgroups SEC(".maps");

/* --container/--pod: network namespaces (inode) wholly theirs -> 1 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);  /* sized by user space before load */
	__type(key, __u32);
	__type(value, __u8);
} st_netns SEC(".maps");

/* Destroys that failed: socket cookie -> -errno. Absent means destroyed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __s32);
} st_kill_errors SEC(".maps");

#ifdef ST_READ_ONLY
/* no destroy in this build: emit() reports EOPNOTSUPP (sockterm never loads
 * it for a kill in the kernel) */
#define bpf_sock_destroy ((int (*)(struct sock_common *))0)
#else
extern int bpf_sock_destroy(struct sock_common *sk) __ksym __weak;
#endif

static __always_inline bool addr_match(const volatile struct st_addr_rule *r,
				       const __u32 *a, __u16 port)
{
	if (port < r->port_lo || port > r->port_hi)
		return false;
	return ((a[0] ^ r->addr[0]) & r->mask[0]) == 0 &&
	       ((a[1] ^ r->addr[1]) & r->mask[1]) == 0 &&
	       ((a[2] ^ r->addr[2]) & r->mask[2]) == 0 &&
	       ((a[3] ^ r->addr[3]) & r->mask[3]) == 0;
}

static __always_inline bool addr_rules_match(const volatile struct st_addr_rule *rules,
					     __u32 n, const __u8 *addr, __u16 port)
{
	const __u32 *a = (const __u32 *)addr;

	if (n == 0)
		return true;
	for (int i = 0; i < ST_MAX_ADDRS; i++) {
		if (i >= n)
			break;
		if (addr_match(&rules[i], a, port))
			return true;
	}
	return false;
}

static __always_inline bool port_rules_match(const volatile struct st_port_range *rules,
					     __u32 n, __u16 port)
{
	if (n == 0)
		return true;
	for (int i = 0; i < ST_MAX_PORTS; i++) {
		if (i >= n)
			break;
		if (port >= rules[i].lo && port <= rules[i].hi)
			return true;
	}
	return false;
}

static __always_inline void v4_mapped(__u8 *out, __be32 addr)
{
	__u32 *w = (__u32 *)out;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0x0000ffff);
	w[3] = addr;
}

/* Fill the addressing part of r from the fields every sock_common has
 * (full, TIME_WAIT and request sockets alike). */
static __always_inline void read_common(struct st_rec *r, struct sock_common *skc)
{
	r->family = skc->skc_family;
	r->state = skc->skc_state;
	r->sport = skc->skc_num;
	r->dport = bpf_ntohs(skc->skc_dport);
	r->ifindex = skc->skc_bound_dev_if;
	if (r->family == AF_INET) {
		v4_mapped(r->src, skc->skc_rcv_saddr);
		v4_mapped(r->dst, skc->skc_daddr);
	} else {
		BPF_CORE_READ_INTO(&r->src, skc, skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&r->dst, skc, skc_v6_daddr);
	}
}

static __always_inline bool wanted(const struct st_rec *r)
{
	if (!(cfg.states & (1u << r->state)))
		return false;
	if (r->family == AF_INET ? !(cfg.families & 1) : !(cfg.families & 2))
		return false;
	if (!addr_rules_match(cfg.dst, cfg.n_dst, r->dst, r->dport))
		return false;
	if (!addr_rules_match(cfg.src, cfg.n_src, r->src, r->sport))
		return false;
	if (!port_rules_match(cfg.dport, cfg.n_dport, r->dport))
		return false;
	return port_rules_match(cfg.sport, cfg.n_sport, r->sport);
}

/* Report the state the way inet_diag (and so ss) does: an orphaned FIN_WAIT2
 * socket lives on as a TIME_WAIT object whose substate is the real state, and
 * a request socket is SYN_RECV, owned by uid 0 (the iterator gives it its
 * listener's). Both engines then agree, and so does ss. */
static __always_inline void report_state_as_diag(struct st_rec *r, struct sock_common *skc)
{
	struct tcp_timewait_sock *tw;

	if (r->state == ST_TCP_NEW_SYN_RECV) {
		r->state = ST_TCP_SYN_RECV;
		r->uid = 0;
	} else if (r->state == ST_TCP_TIME_WAIT) {
		tw = bpf_skc_to_tcp_timewait_sock(skc);
		if (tw)
			r->state = tw->tw_sk.tw_substate;
	}
}

/* SOCK_INODE(sock)->i_ino: what /proc/PID/fd shows as socket:[ino]. */
static __always_inline __u64 socket_ino(struct socket *sock)
{
	if (!sock)
		return 0;
	return BPF_CORE_READ((struct socket_alloc *)sock, vfs_inode.i_ino);
}

static __always_inline __u64 sock_ino(struct sock *sk)
{
	return socket_ino(BPF_CORE_READ(sk, sk_socket));
}

/* The cgroup v2 id of the process that created the socket, as the kernel's
 * sock_cgroup_ptr()/cgroup_id() read it (and inet_diag reports it): 0 where
 * the kernel keeps none (no CONFIG_SOCK_CGROUP_DATA, or before 5.15). */
static __always_inline __u64 sock_cgroup_id(struct sock *sk)
{
	if (!bpf_core_field_exists(sk->sk_cgrp_data) ||
	    !bpf_core_field_exists(struct sock_cgroup_data, cgroup))
		return 0;
	return BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
}

static __always_inline bool uid_allowed(__u32 uid)
{
	if (cfg.n_uids == 0)
		return true;
	for (int i = 0; i < ST_MAX_UIDS; i++) {
		if (i >= cfg.n_uids)
			break;
		if (cfg.uids[i] == uid)
			return true;
	}
	return false;
}

/* Inode-based decisions: never our own sockets; with a process filter, only
 * the sockets those processes hold. */
static __always_inline bool inode_allowed(__u64 ino, __u8 *bits)
{
	__u8 *v = bpf_map_lookup_elem(&st_inodes, &ino);

	*bits = v ? *v : 0;
	if (*bits & ST_INO_EXCLUDE)
		return false;
	if (cfg.flags & ST_CFG_INODES)
		return *bits & ST_INO_SELECT;
	return true;
}

/* The namespace a socket lives in: the iterator walks one namespace's
 * sockets, but which one only user space knows. */
static __always_inline __u32 sock_netns(struct sock_common *skc)
{
	return BPF_CORE_READ(skc, skc_net.net, ns.inum);
}

/* --cgroup and --container/--pod (cgroup 0: a mini socket, which has none;
 * inet_diag matches it to no cgroup either). */
static __always_inline bool scope_allowed(struct sock_common *skc, __u8 ino_bits, __u64 cgroup)
{
	__u8 *cg = 0;
	__u32 netns;

	if (cgroup)
		cg = bpf_map_lookup_elem(&st_cgroups, &cgroup);
	if ((cfg.flags & ST_CFG_CGROUPS) && !(cg && (*cg & ST_CG_SELECT)))
		return false;
	if (!(cfg.flags & ST_CFG_SCOPE))
		return true;
	netns = sock_netns(skc);
	if (bpf_map_lookup_elem(&st_netns, &netns))
		return true;
	return (ino_bits & ST_INO_SCOPE) || (cg && (*cg & ST_CG_SCOPE));
}

static __always_inline bool cookie_allowed(__u64 cookie)
{
	if (!(cfg.flags & ST_CFG_COOKIES))
		return true;
	return bpf_map_lookup_elem(&st_cookies, &cookie) != 0;
}

#include "iter_sockets.c"
#include "one_pass.c"
#include "refused.c"
