// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * sockterm's watch (kill --watch, match --watch): every new TCP connection
 * and every UDP socket connected that the filter selects, in any network
 * namespace, written to a ring buffer as the kernel makes it. User space
 * destroys each over netlink SOCK_DESTROY, by exact tuple and cookie, in its
 * namespace.
 *
 *   tp_btf/inet_sock_set_state (every TCP state change; Linux >= 5.12 for
 *       bpf_get_socket_cookie in tracing programs, 5.10 refuses): an
 *       incoming connection at ESTABLISHED (hashed, not accepted yet); an
 *       outgoing one at ESTABLISHED; a connect() at SYN-SENT when its socket
 *       was bound to a port (else the port is chosen only after this
 *       tracepoint, and no event carries it until the peer answers...)
 *   tp_btf/tcp_retransmit_skb: ...or the SYN is sent again (1 s later: a
 *       dead VIP that drops SYNs never answers)
 *   fexit/ip4_datagram_connect, ip6_datagram_connect: a UDP connect()
 *       returned (udp_connect, udpv6_connect on Linux >= 6.13: user space
 *       retargets), the protocols' connect operations, reached through
 *       struct proto's pointer, so never inlined away
 *   tp_btf/sock_send_length (Linux >= 6.3): where the kernel refuses BPF
 *       trampolines (fexit), a connected UDP socket at its first send
 *
 * Only tracepoint arguments are trusted pointers (fentry/fexit arguments are
 * not, and stricter verifiers refuse them to helpers): only the tracepoint
 * programs hand a socket to a helper (bpf_get_socket_cookie). The fexit
 * programs read fields with plain loads and take the cookie from the socket
 * when it has one; else the event carries 0 and user space finds the socket
 * by its exact tuple.
 */
#include "kernel.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "filter.h"
#include "watch.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_RINGBUF 27

const volatile struct st_config cfg SEC(".rodata.cfg");
const volatile struct st_watch_config wcfg SEC(".rodata.watch");

struct st_watch_stats stats;

/* Never used: they put the record types in the object's BTF, where the
 * loader checks the Python mirror of them. */
struct st_watch_event *st_watch_event_btf_anchor;
struct st_watch_stats *st_watch_stats_btf_anchor;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);  /* ~7,700 events; sized again by user space */
} st_events SEC(".maps");

struct bpf_pidns_info {
	__u32 pid;
	__u32 tgid;
};

/* Fields kernel.h does not declare, relocated under their own flavours. */
struct file___watch {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct socket___watch {
	struct file___watch *file;
} __attribute__((preserve_access_index));

static __always_inline void read_addr(__u8 *out, __be32 v4, struct in6_addr *v6, bool inet)
{
	__u32 *w = (__u32 *)out;

	if (inet) {
		w[0] = 0;
		w[1] = 0;
		w[2] = bpf_htonl(0x0000ffff);
		w[3] = v4;
		return;
	}
	w[0] = v6->in6_u.u6_addr32[0];
	w[1] = v6->in6_u.u6_addr32[1];
	w[2] = v6->in6_u.u6_addr32[2];
	w[3] = v6->in6_u.u6_addr32[3];
}

/* SOCK_INODE(sock)->i_ino, by plain loads: 0 for a socket no file holds yet */
static __always_inline __u64 sock_ino(struct sock *sk)
{
	struct socket___watch *sock = (void *)sk->sk_socket;

	if (!sock || !sock->file)
		return 0;
	return sock->file->f_inode->i_ino;
}

/* As sockterm.bpf.c reads it: 0 where the kernel keeps none (before 5.15) */
static __always_inline __u64 sock_cgroup_id(struct sock *sk)
{
	if (!bpf_core_field_exists(sk->sk_cgrp_data) ||
	    !bpf_core_field_exists(struct sock_cgroup_data, cgroup))
		return 0;
	return sk->sk_cgrp_data.cgroup->kn->id;
}

/* The process in whose connect() the program runs, as sockterm's pid
 * namespace sees it (0: outside it); true when it is sockterm itself. */
static __always_inline bool caller(struct st_held *h)
{
	struct bpf_pidns_info ns = {};

	if (wcfg.pidns_ino) {
		if (bpf_get_ns_current_pid_tgid(wcfg.pidns_dev, wcfg.pidns_ino, &ns, sizeof(ns)) == 0)
			h->pid = ns.tgid;
	} else {
		h->pid = bpf_get_current_pid_tgid() >> 32;
	}
	if (h->pid && h->pid == wcfg.own_tgid)
		return true;
	bpf_get_current_comm(h->comm, sizeof(h->comm));
	return false;
}

/* 1 when the event was written */
static __always_inline int report(struct sock *sk, __u8 proto, __u8 state, __u32 hook,
				  __u64 cookie)
{
	struct sock_common *skc = &sk->__sk_common;
	struct st_watch_event e = {};
	struct st_rec *r = &e.held.rec;
	bool inet = skc->skc_family == AF_INET;

	r->family = skc->skc_family;
	r->proto = proto;
	r->state = state;
	r->sport = skc->skc_num;
	r->dport = bpf_ntohs(skc->skc_dport);
	r->ifindex = skc->skc_bound_dev_if;
	r->uid = sk->sk_uid.val;
	read_addr(r->src, skc->skc_rcv_saddr, &skc->skc_v6_rcv_saddr, inet);
	read_addr(r->dst, skc->skc_daddr, &skc->skc_v6_daddr, inet);
	if (!st_wanted(&cfg, r))
		return 0;
	if ((hook == ST_WATCH_CONNECT || hook == ST_WATCH_UDP) && caller(&e.held))
		return 0;     /* (a connect() and a send run in the caller's context) */
	r->cookie = cookie ? cookie : skc->skc_cookie.counter;   /* 0 until something asked */
	r->ino = sock_ino(sk);
	e.held.netns = skc->skc_net.net->ns.inum;
	if (cfg.flags & (ST_CFG_CGROUPS | ST_CFG_SCOPE))
		e.held.cgroup = sock_cgroup_id(sk);
	e.hook = hook;
	e.time_ns = bpf_ktime_get_ns();
	if (bpf_ringbuf_output(&st_events, &e, sizeof(e), 0)) {
		__sync_fetch_and_add(&stats.lost, 1);
		return 0;
	}
	__sync_fetch_and_add(&stats.events, 1);
	return 1;
}

static __always_inline bool selects(__u32 state)
{
	return cfg.states & (1u << state);
}

SEC("tp_btf/inet_sock_set_state")
int st_watch_state(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	int oldstate = (int)ctx[1];
	int newstate = (int)ctx[2];

	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_SYN_SENT) {
		if (selects(TCP_SYN_SENT) && sk->__sk_common.skc_num)
			report(sk, IPPROTO_TCP, TCP_SYN_SENT, ST_WATCH_CONNECT,
			       bpf_get_socket_cookie(sk));
		return 0;
	}
	if (newstate != TCP_ESTABLISHED || !selects(TCP_ESTABLISHED))
		return 0;
	/* (a bound connect() reported at SYN-SENT comes again here, if still
	 * alive: user space has destroyed it, and drops the repeat) */
	if (oldstate == TCP_SYN_RECV || oldstate == TCP_SYN_SENT)
		report(sk, IPPROTO_TCP, TCP_ESTABLISHED,
		       oldstate == TCP_SYN_RECV ? ST_WATCH_PASSIVE : ST_WATCH_ACTIVE,
		       bpf_get_socket_cookie(sk));
	return 0;
}

/* A SYN sent again: a connect() nobody answered, its port known by now. */
SEC("tp_btf/tcp_retransmit_skb")
int st_watch_syn_again(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];

	if (!selects(TCP_SYN_SENT) || sk->__sk_common.skc_state != TCP_SYN_SENT)
		return 0;
	report(sk, IPPROTO_TCP, TCP_SYN_SENT, ST_WATCH_RETRANSMIT, bpf_get_socket_cookie(sk));
	return 0;
}

static __always_inline bool udp_connected_sock(struct sock *sk, __u16 family)
{
	return sk->sk_protocol == IPPROTO_UDP && sk->sk_type == SOCK_DGRAM &&
	       sk->__sk_common.skc_family == family &&
	       sk->__sk_common.skc_state == TCP_ESTABLISHED;
}

/* v4 only on the v4 hook: a v6 socket connecting to a v4-mapped address
 * passes through the v4 code on its way and is reported by the v6 hook. */
static __always_inline int udp_connected(struct sock *sk, int ret, __u16 family)
{
	if (!ret && udp_connected_sock(sk, family))
		report(sk, IPPROTO_UDP, TCP_ESTABLISHED, ST_WATCH_UDP, 0);
	return 0;     /* what a tracing program must return (Linux >= 6.x checks it) */
}

SEC("fexit/ip4_datagram_connect")
int st_watch_udp4(__u64 *ctx)
{
	return udp_connected((struct sock *)ctx[0], (int)ctx[3], AF_INET);
}

SEC("fexit/ip6_datagram_connect")
int st_watch_udp6(__u64 *ctx)
{
	return udp_connected((struct sock *)ctx[0], (int)ctx[3], AF_INET6);
}

/* The fallback's UDP sockets reported and not yet settled by user space
 * (cookie -> 1): a socket is reported once, not at every send; user space
 * deletes its entry once it destroyed it, so a reconnect is seen again. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 14);
	__type(key, __u64);
	__type(value, __u8);
} st_udp_seen SEC(".maps");

SEC("tp_btf/sock_send_length")
int st_watch_udp_send(__u64 *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	int ret = (int)ctx[1];
	__u8 one = 1;
	__u64 cookie;

	if (!sk || ret < 0)
		return 0;
	if (!udp_connected_sock(sk, AF_INET) && !udp_connected_sock(sk, AF_INET6))
		return 0;
	cookie = bpf_get_socket_cookie(sk);
	if (bpf_map_lookup_elem(&st_udp_seen, &cookie))
		return 0;
	if (report(sk, IPPROTO_UDP, TCP_ESTABLISHED, ST_WATCH_UDP, cookie))
		bpf_map_update_elem(&st_udp_seen, &cookie, &one, BPF_ANY);
	return 0;
}
