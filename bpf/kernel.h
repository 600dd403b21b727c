/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The few kernel types the programs touch, declared CO-RE style: every field
 * access is relocated by libbpf against the running kernel's BTF, so only the
 * names must match, not the layout. Field names and nesting follow vmlinux.h
 * (anonymous unions are matched by member name).
 *
 * Each relocated type costs libbpf a scan of every type in the kernel's BTF
 * at load time (~3 ms of a run's start each): the programs reach the fields
 * they need through as few types as they can, and the iterator contexts,
 * which are BPF ABI, are not relocated at all.
 */
#ifndef SOCKTERM_KERNEL_H
#define SOCKTERM_KERNEL_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;
typedef _Bool bool;
enum { false = 0, true = 1 };

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SOCK_STREAM 1
#define SOCK_DGRAM 2
#define EEXIST 17

enum { BPF_MAP_TYPE_HASH = 1 };
enum { BPF_ANY = 0, BPF_NOEXIST = 1 };

/* Pointer-only types named by helper prototypes in bpf_helper_defs.h */
struct __sk_buff; struct xdp_md; struct sk_msg_md; struct sk_reuseport_md;
struct bpf_sock_ops; struct bpf_sock; struct bpf_tcp_sock; struct bpf_sock_tuple;
struct bpf_sock_addr; struct bpf_sysctl; struct bpf_perf_event_data; struct bpf_perf_event_value;
struct bpf_pidns_info; struct bpf_redir_neigh; struct bpf_spin_lock; struct bpf_timer;
struct bpf_dynptr; struct bpf_fib_lookup; struct bpf_map; struct btf_ptr; struct linux_binprm;
struct mptcp_sock; struct path; struct pt_regs; struct seq_file; struct sk_buff; struct tcp6_sock;
struct tcp_request_sock; struct tcp_sock; struct udp6_sock;
struct unix_sock; struct bpf_iter_num; struct user_pt_regs; struct proto;

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

struct in6_addr {
	union {
		__u8 u6_addr8[16];
		__be16 u6_addr16[8];
		__be32 u6_addr32[4];
	} in6_u;
};

/* The namespace types are relocated by the one pass (st_held) and the
 * scoped builds, the cgroup types by the scoped builds only (--cgroup,
 * --container, --pod): a run that does not load those does not pay them. */
struct ns_common {
	unsigned int inum;
};

struct net {
	struct ns_common ns;
};

typedef struct {
	struct net *net;
} possible_net_t;

typedef struct {
	long long counter;
} atomic64_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	volatile unsigned char skc_state;
	int skc_bound_dev_if;
	struct proto *skc_prot;      /* compared, never read */
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;       /* 0 until something asks for the cookie (sock_gen_cookie) */
};

typedef struct {
	int counter;
} atomic_t;

typedef struct {
	long counter;
} atomic_long_t;

typedef struct {
	__u32 val;
} kuid_t;

struct inode {
	unsigned long i_ino;
};

/* The one pass reads a file's reference count (Linux >= 6.13: stored as
 * count - 1 in f_ref; before: f_count). */
typedef struct {
	atomic_long_t refcnt;
} file_ref_t;

struct file {
	file_ref_t f_ref;
	atomic_long_t f_count;
};

struct files_struct;

struct kernfs_node {
	__u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

/* Linux >= 5.15; before, a tagged union that CO-RE cannot match (see sock_cgroup_id) */
struct sock_cgroup_data {
	struct cgroup *cgroup;
};

struct sock;

struct socket {
	struct sock *sk;
};

/* How the kernel allocates a socket: with its inode (SOCK_INODE()), so the
 * inode number is one relocation away, not four (sk_socket->file->f_inode). */
struct socket_alloc {
	struct socket socket;
	struct inode vfs_inode;
};

struct sock {
	struct sock_common __sk_common;
	__u16 sk_protocol;
	__u16 sk_type;
	kuid_t sk_uid;
	__u32 sk_ack_backlog;
	struct socket *sk_socket;
	struct sock_cgroup_data sk_cgrp_data;
};

struct request_sock_queue {
	atomic_t qlen;
};

struct inet_connection_sock {
	struct request_sock_queue icsk_accept_queue;
};

struct inet_timewait_sock {
	volatile unsigned char tw_substate;
};

struct tcp_timewait_sock {
	struct inet_timewait_sock tw_sk;
};

struct inet_sock {
	struct sock sk;
};

struct udp_sock {
	struct inet_sock inet;
};

struct task_struct {
	int pid;
	int tgid;
	char comm[16];
	struct files_struct *files;
};

#pragma clang attribute pop

/* Iterator contexts: fixed 8-byte slots (__bpf_md_ptr), part of the BPF ABI
 * since 5.8/5.9, and checked by the verifier against the kernel's own
 * definitions, so they need no relocation. */
struct bpf_iter_meta {
	struct seq_file *seq;
	__u64 session_id;
	__u64 seq_num;
};

struct bpf_iter__tcp {
	struct bpf_iter_meta *meta;
	struct sock_common *sk_common;
	__u32 uid;
};

struct bpf_iter__udp {
	struct bpf_iter_meta *meta;
	struct udp_sock *udp_sk;
	__u32 uid;
	int bucket;
};

struct bpf_iter__task_file {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
	__u32 fd;
	struct file *file;
};

#endif
