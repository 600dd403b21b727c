// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sockterm's socket iterators. One pass per network namespace: filter in the
 * kernel, emit one st_rec per match, and in kill mode destroy the match with
 * the bpf_sock_destroy kfunc after its record was written.
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

extern int bpf_sock_destroy(struct sock_common *sk) __ksym __weak;

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

/* Write the record, then destroy: a record that did not fit in the seq
 * buffer is retried by the kernel on the next read, and the socket must
 * still be there for that retry to report it. */
static __always_inline int emit(struct seq_file *seq, struct st_rec *r,
				struct sock_common *skc)
{
	bool kill = (cfg.flags & ST_CFG_KILL) && !(r->flags & ST_F_MINI);
	int err;

	if (cfg.flags & ST_CFG_KILL)
		r->result = kill ? ST_RES_DESTROYED : ST_RES_DEFERRED;
	if (bpf_seq_write(seq, r, sizeof(*r)))
		return 0;
	__sync_fetch_and_add(&stats.matched, 1);
	if (!kill)
		return 0;
	err = bpf_sock_destroy ? bpf_sock_destroy(skc) : -95 /* EOPNOTSUPP */;
	if (err) {
		__sync_fetch_and_add(&stats.destroy_failed, 1);
		if (bpf_map_update_elem(&st_kill_errors, &r->cookie, &err, BPF_ANY))
			__sync_fetch_and_add(&stats.errors_lost, 1);
	} else {
		__sync_fetch_and_add(&stats.destroyed, 1);
	}
	return 0;
}

static __always_inline int tcp_one(struct bpf_iter__tcp *ctx, const bool scoped)
{
	struct sock_common *skc = ctx->sk_common;
	struct st_rec r = {};
	struct tcp_sock *tp;
	__u8 ino_bits;

	if (!skc)
		return 0;
	__sync_fetch_and_add(&stats.visited, 1);
	read_common(&r, skc);
	r.proto = IPPROTO_TCP;
	r.uid = ctx->uid;
	report_state_as_diag(&r, skc);
	if (!wanted(&r) || !uid_allowed(r.uid))
		return 0;
	/* TIME_WAIT and request sockets are small objects without the fields
	 * of a full socket: only bpf_skc_to_tcp_sock says a full one is safe. */
	tp = bpf_skc_to_tcp_sock(skc);
	if (tp) {
		r.ino = sock_ino((struct sock *)tp);
		if (!inode_allowed(r.ino, &ino_bits))
			return 0;
		if (scoped && !scope_allowed(skc, ino_bits, sock_cgroup_id((struct sock *)tp)))
			return 0;
	} else {
		if (cfg.flags & ST_CFG_INODES)
			return 0;
		if (scoped && !scope_allowed(skc, 0, 0))
			return 0;
		r.flags |= ST_F_MINI;
	}
	r.cookie = bpf_get_socket_cookie(skc);
	if (!cookie_allowed(r.cookie))
		return 0;
	return emit(ctx->meta->seq, &r, skc);
}

static __always_inline int udp_one(struct bpf_iter__udp *ctx, const bool scoped)
{
	struct udp_sock *udp = ctx->udp_sk;
	struct sock *sk;
	struct st_rec r = {};
	__u8 ino_bits;

	if (!udp)
		return 0;
	sk = (struct sock *)udp;
	__sync_fetch_and_add(&stats.visited, 1);
	read_common(&r, &sk->__sk_common);
	r.proto = IPPROTO_UDP;
	r.uid = ctx->uid;
	if (!wanted(&r) || !uid_allowed(r.uid))
		return 0;
	r.ino = sock_ino(sk);
	if (!inode_allowed(r.ino, &ino_bits))
		return 0;
	if (scoped && !scope_allowed(&sk->__sk_common, ino_bits, sock_cgroup_id(sk)))
		return 0;
	r.cookie = bpf_get_socket_cookie(sk);
	if (!cookie_allowed(r.cookie))
		return 0;
	return emit(ctx->meta->seq, &r, &sk->__sk_common);
}

/* Two builds of each socket program: the plain one, and a scoped one that
 * also reads the socket's namespace and cgroup, for --cgroup, --container
 * and --pod. A run loads one of them, so the scoped build's CO-RE
 * relocations (six more kernel types, a few ms each at load) are paid only
 * by the runs that use them. */
SEC("iter/tcp")
int st_tcp(struct bpf_iter__tcp *ctx)
{
	return tcp_one(ctx, false);
}

SEC("iter/tcp")
int st_tcp_scoped(struct bpf_iter__tcp *ctx)
{
	return tcp_one(ctx, true);
}

SEC("iter/udp")
int st_udp(struct bpf_iter__udp *ctx)
{
	return udp_one(ctx, false);
}

SEC("iter/udp")
int st_udp_scoped(struct bpf_iter__udp *ctx)
{
	return udp_one(ctx, true);
}

/* ---- the one pass: every socket a process holds, host-wide ----------------
 *
 * One iter/task_file pass over every process's descriptors. For a socket the
 * run's filter selects it emits an st_held record (the socket, and who holds
 * it); for every hashed TCP/UDP socket of a namespace the run covers it
 * counts, in st_ns, what that namespace's processes hold, each socket once.
 * User space compares those counts with the namespace's own (sockstat): when
 * they agree, no socket of that namespace is out of the processes' hands
 * (orphans, unaccepted children, kernel sockets, sockets in flight all make
 * them disagree) and its records are the whole answer, without a walk of its
 * hash tables.
 *
 * A record that does not fit in the seq buffer makes the kernel run the
 * program again for the same descriptor on the next read: everything is
 * counted only once the record (if any) is written. */

/* The namespaces the run covers (netns inode -> counts), keys set by user
 * space before the pass; sockets of any other namespace are skipped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);  /* sized by user space before load */
	__type(key, __u32);
	__type(value, struct st_ns_held);
} st_ns SEC(".maps");

/* Sockets held through more than one descriptor (dup, fork, SCM_RIGHTS):
 * the ones already counted, by address (see first_sighting). Preallocated, as tracing programs'
 * hash maps must be before Linux 6.1 (and creating a map that is not costs
 * a run ~4 ms); full, it makes the counts untrusted, not wrong. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, __u64);
	__type(value, __u8);
} st_shared SEC(".maps");

/* Descriptor tables visited (table address -> the process whose visit
 * counts): several processes may share one (see table_counts). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);  /* sized by user space before load: twice the processes */
	__type(key, __u64);
	__type(value, __u32);
} st_files SEC(".maps");

/* The last task whose table was looked up, and the answer (one pass at a time). */
__u64 held_task;
__u32 held_table_counted;

/* Does this visit of the task's descriptor table count? The kernel skips
 * threads that share their leader's table; a table shared by several
 * processes (clone(CLONE_FILES) without CLONE_THREAD) is visited once per
 * process and counts for the first. One lookup per process, not per file. */
static __always_inline bool table_counts(struct task_struct *task)
{
	__u64 key = (__u64)task->files;
	__u32 tgid = task->tgid;
	__u32 *first;

	if ((__u64)task == held_task)
		return held_table_counted;
	held_task = (__u64)task;
	held_table_counted = 1;
	first = bpf_map_lookup_elem(&st_files, &key);
	if (first)
		held_table_counted = *first == tgid;
	else if (bpf_map_update_elem(&st_files, &key, &tgid, BPF_NOEXIST))
		__sync_fetch_and_add(&stats.held_lost, 1);
	return held_table_counted;
}

/* References to the file: its descriptors', in-flight messages', and the
 * iterator's own while the program runs (st_stats.probe_refs lets user
 * space check that a file held through one descriptor shows
 * ST_ONE_HOLDER_REFS). */
static __always_inline long file_refs(struct file *file)
{
	if (bpf_core_field_exists(file->f_ref))
		return file->f_ref.refcnt.counter + 1;   /* stored as count - 1 */
	return file->f_count.counter;
}

/* A socket whose file has more references than one descriptor's and the
 * iterator's can come again: is this the first time the pass sees it? Keyed
 * by the socket's address: unique among the sockets alive, and a plain
 * number (its cookie would need a helper, see held_cookie). An address
 * reused within the pass by a socket opened during it makes that socket go
 * uncounted: the counts then disagree, and the namespace is walked. */
static __always_inline bool first_sighting(__u64 sk)
{
	__u8 one = 1;
	long err;

	err = bpf_map_update_elem(&st_shared, &sk, &one, BPF_NOEXIST);
	if (err == -EEXIST)
		return false;
	if (err)
		__sync_fetch_and_add(&stats.held_lost, 1);
	return true;
}

/* TCP or UDP? sk_protocol and sk_type sit a cache line away from what the
 * pass reads anyway, once per socket on the host; a struct proto serves one
 * protocol, so its address, once seen on a TCP or UDP socket, answers for
 * every later socket that has it (tcp_prot, tcpv6_prot, and the copies kTLS
 * and sockmap install). */
#define HELD_PROTS 8
__u64 held_tcp_prots[HELD_PROTS];
__u64 held_udp_prots[HELD_PROTS];

static __always_inline void remember(__u64 *known, __u64 prot)
{
	for (int i = 0; i < HELD_PROTS; i++) {
		if (!known[i]) {
			known[i] = prot;
			return;
		}
	}
}

/* 1: TCP, 2: UDP, 0: neither */
static __always_inline int held_proto(struct sock *sk)
{
	__u64 prot = (__u64)sk->__sk_common.skc_prot;

	for (int i = 0; i < HELD_PROTS; i++) {
		if (held_tcp_prots[i] == prot)
			return 1;
		if (held_udp_prots[i] == prot)
			return 2;
	}
	if (sk->sk_protocol == IPPROTO_TCP && sk->sk_type == SOCK_STREAM) {
		remember(held_tcp_prots, prot);
		return 1;
	}
	if (sk->sk_protocol == IPPROTO_UDP && sk->sk_type == SOCK_DGRAM) {
		remember(held_udp_prots, prot);
		return 2;
	}
	return 0;
}

/* The namespace being counted and what has been counted for it since it
 * was looked up: added to its st_ns entry when the pass moves on to another
 * namespace, and at the end (the program runs once more without a file).
 * Consecutive descriptors mostly share a namespace: one map lookup per run
 * of them, not per socket. */
__u32 acc_netns;
__u32 acc_covered;
struct st_ns_held acc;

static __always_inline void flush_counts(void)
{
	struct st_ns_held *counts;

	if (acc_covered && (counts = bpf_map_lookup_elem(&st_ns, &acc_netns))) {
		counts->tcp += acc.tcp;
		counts->udp += acc.udp;
		counts->pending += acc.pending;
		counts->backlog += acc.backlog;
	}
	acc.tcp = acc.udp = acc.pending = acc.backlog = 0;
}

/* Is netns one the run covers? Moves the count to it. */
static __always_inline bool count_in(__u32 netns)
{
	if (netns != acc_netns || !acc_covered) {
		if (netns == acc_netns)
			return false;
		flush_counts();
		acc_netns = netns;
		acc_covered = bpf_map_lookup_elem(&st_ns, &netns) != 0;
	}
	return acc_covered;
}

/* The socket's cookie, read, not made: bpf_get_socket_cookie() needs a
 * pointer the verifier trusts, and some kernels' verifiers (a 6.18.44 build)
 * do not trust the struct sock reached through a file's socket; before 5.12
 * an iterator may not call it at all. 0: nobody has asked for this socket's
 * cookie yet (the kernel makes it on first request: sock_gen_cookie); user
 * space then asks netlink, which makes it. */
static __always_inline __u64 held_cookie(struct sock *sk)
{
	return sk->__sk_common.skc_cookie.counter;
}

static __always_inline int held_one(struct bpf_iter__task_file *ctx, const bool scoped)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct inet_connection_sock *icsk;
	struct st_held h = {};
	struct socket *sock;
	struct sock *sk;
	__u32 netns;
	__u8 ino_bits;
	int proto;
	bool tcp;

	if (!task || !file) {
		flush_counts();       /* the end of the pass */
		return 0;
	}
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	/* socket is socket_alloc's first member: the same load as sock->sk,
	 * relocated through the type socket_ino() needs anyway */
	sk = ((struct socket_alloc *)sock)->socket.sk;
	if (!sk)
		return 0;
	if (sk->__sk_common.skc_family != AF_INET && sk->__sk_common.skc_family != AF_INET6)
		return 0;
	proto = held_proto(sk);
	if (!proto)
		return 0;
	tcp = proto == 1;
	/* what a walk of the hash tables would find: a TCP socket leaves them
	 * when it closes, a UDP socket's port is 0 unless it is hashed */
	if (tcp ? sk->__sk_common.skc_state == ST_TCP_CLOSE : sk->__sk_common.skc_num == 0) {
		if (socket_ino(sock) == cfg.probe_ino)
			stats.probe_refs = file_refs(file);
		return 0;
	}
	/* direct loads (not BPF_CORE_READ's helper calls): this runs for every
	 * socket on the host */
	netns = sk->__sk_common.skc_net.net->ns.inum;
	if (!count_in(netns))
		return 0;

	if ((cfg.flags & (tcp ? ST_CFG_TCP : ST_CFG_UDP))) {
		read_common(&h.rec, &sk->__sk_common);
		/* sk_uid shares a cache line with sk_protocol: read only for a
		 * socket the rest of the filter wants */
		if (wanted(&h.rec) && uid_allowed(h.rec.uid = sk->sk_uid.val)) {
			h.rec.proto = tcp ? IPPROTO_TCP : IPPROTO_UDP;
			h.rec.ino = socket_ino(sock);
			if (scoped)
				h.cgroup = sock_cgroup_id(sk);
			if (inode_allowed(h.rec.ino, &ino_bits) &&
			    (!scoped || scope_allowed(&sk->__sk_common, ino_bits, h.cgroup))) {
				h.rec.cookie = held_cookie(sk);
				if (cookie_allowed(h.rec.cookie)) {
					h.netns = netns;
					h.pid = task->tgid;
					h.fd = ctx->fd;
					bpf_probe_read_kernel_str(h.comm, sizeof(h.comm), task->comm);
					if (bpf_seq_write(ctx->meta->seq, &h, sizeof(h)))
						return 0;   /* shown again on the next read: count it then */
				}
			}
		}
	}

	if (!table_counts(task))
		return 0;
	if (file_refs(file) > ST_ONE_HOLDER_REFS && !first_sighting((__u64)sk))
		return 0;
	if (!tcp) {
		acc.udp++;
		return 0;
	}
	acc.tcp++;
	if (sk->__sk_common.skc_state == ST_TCP_LISTEN) {
		icsk = (struct inet_connection_sock *)sk;
		acc.pending += BPF_CORE_READ(icsk, icsk_accept_queue.qlen.counter);
		acc.backlog += sk->sk_ack_backlog;
	}
	return 0;
}

/* Like the socket programs, two builds: the scoped one also reads the
 * socket's cgroup (--cgroup, --container, --pod). */
SEC("iter/task_file")
int st_held(struct bpf_iter__task_file *ctx)
{
	return held_one(ctx, false);
}

SEC("iter/task_file")
int st_held_scoped(struct bpf_iter__task_file *ctx)
{
	return held_one(ctx, true);
}

/* ---- for tests: programs every verifier refuses ---------------------------
 *
 * With SOCKTERM_TEST_REFUSE set, the engine loads one of these in place of
 * the real program of a capability (enumerate: st_tcp; one-pass: st_held),
 * so that the degradation path meets a real refusal by the kernel. Never
 * loaded otherwise. Each reads memory through a number the verifier knows
 * nothing of: "invalid mem access 'scalar'" on every kernel. */
static __always_inline int refused(void)
{
	return *(volatile int *)(unsigned long)bpf_get_prandom_u32();
}

SEC("iter/tcp")
int st_refused_tcp(struct bpf_iter__tcp *ctx)
{
	return refused();
}

SEC("iter/task_file")
int st_refused_task_file(struct bpf_iter__task_file *ctx)
{
	return refused();
}
