// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The one pass (iter/task_file): every socket a process holds, host-wide.
 * Part of sockterm.bpf.c's object: the filter, maps and helpers are there.
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
