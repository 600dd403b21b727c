// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * The socket iterators (iter/tcp, iter/udp): one pass per network namespace,
 * run in a thread inside it. Filter in the kernel, emit one st_rec per match,
 * and in kill mode destroy the match with the bpf_sock_destroy kfunc after
 * its record was written. Part of sockterm.bpf.c's object: the filter, maps
 * and helpers are there.
 */

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
