/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one definition of what crosses between the BPF programs and user space.
 * sockterm/record.py mirrors these structs; tests/unit/test_record.py checks
 * that sizes and offsets agree, so the two cannot drift apart.
 *
 * __u* types only, widest fields first, no implicit padding.
 */
#ifndef SOCKTERM_H
#define SOCKTERM_H

#define ST_MAX_ADDRS 16
#define ST_MAX_PORTS 16
#define ST_MAX_UIDS 16

/* st_rec.result */
#define ST_RES_MATCHED   0 /* list / match: nothing attempted */
#define ST_RES_DESTROYED 1 /* destroy called; failures land in st_kill_errors */
#define ST_RES_DEFERRED  2 /* TIME_WAIT / request socket: no kfunc, user space uses netlink */

/* st_rec.flags */
#define ST_F_MINI 0x1      /* no full struct sock (TIME_WAIT or request socket) */

/* Kernel TCP states the iterator sees that ss(8) and inet_diag report differently */
#define ST_TCP_TIME_WAIT    6
#define ST_TCP_SYN_RECV     3
#define ST_TCP_NEW_SYN_RECV 12
/* ... and the ones the one pass (st_held) looks at */
#define ST_TCP_CLOSE        7
#define ST_TCP_LISTEN       10

/* File references the one pass sees on a socket held through one descriptor:
 * that descriptor's and the iterator's own (checked on a probe socket, see
 * st_stats.probe_refs). More: the socket may be seen again, so it is counted
 * through st_shared. */
#define ST_ONE_HOLDER_REFS 2

/* st_config.flags */
#define ST_CFG_KILL       0x1 /* destroy what matches */
#define ST_CFG_INODES     0x2 /* only sockets whose inode is in st_inodes (process filter) */
#define ST_CFG_TCP        0x4
#define ST_CFG_UDP        0x8
#define ST_CFG_COOKIES    0x10 /* only sockets whose cookie is in st_cookies (what was confirmed) */
#define ST_CFG_CGROUPS    0x20 /* only sockets whose cgroup is ST_CG_SELECT in st_cgroups (--cgroup) */
#define ST_CFG_SCOPE      0x40 /* only sockets in --container/--pod's scope: a namespace in
			      * st_netns, or an ST_INO_SCOPE inode, or an ST_CG_SCOPE cgroup */

/* st_inodes values: bits, an inode can be several */
#define ST_INO_SELECT  0x1
#define ST_INO_EXCLUDE 0x2   /* sockterm's own sockets: never touched */
#define ST_INO_SCOPE   0x4   /* held by a process of a selected container or pod */

/* st_cgroups values: bits */
#define ST_CG_SELECT 0x1     /* --cgroup names it */
#define ST_CG_SCOPE  0x2     /* a selected container's or pod's cgroup */

/* One socket, as emitted with bpf_seq_write. Addresses are IPv6-form, IPv4 as ::ffff:a.b.c.d */
struct st_rec {
	__u64 cookie;
	__u64 ino;          /* socket inode (0 for TIME_WAIT / request sockets) */
	__u8 src[16];
	__u8 dst[16];
	__u32 uid;
	__u32 flags;        /* ST_F_* */
	__u32 ifindex;      /* device the socket is bound to, 0 if none (netlink destroys need it) */
	__u16 sport;        /* host byte order */
	__u16 dport;
	__u16 family;       /* AF_INET / AF_INET6 */
	__u8 proto;         /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 state;         /* kernel TCP_* numbering, UDP included */
	__u8 result;        /* ST_RES_* */
	__u8 pad[11];       /* (no netns: the reader knows which namespace it iterates) */
};

/* One --dst/--src target: (addr & mask) == addr, port in [port_lo, port_hi].
 * Addresses as four network-order words. */
struct st_addr_rule {
	__u32 addr[4];
	__u32 mask[4];
	__u16 port_lo;
	__u16 port_hi;
};

struct st_port_range {
	__u16 lo;
	__u16 hi;
};

/* The filter, set before load in its own data section (.rodata.cfg). */
struct st_config {
	struct st_addr_rule dst[ST_MAX_ADDRS];
	struct st_addr_rule src[ST_MAX_ADDRS];
	struct st_port_range dport[ST_MAX_PORTS];
	struct st_port_range sport[ST_MAX_PORTS];
	__u32 n_dst;
	__u32 n_src;
	__u32 n_dport;
	__u32 n_sport;
	__u32 states;       /* bit (1 << state) */
	__u32 families;     /* bit 0: AF_INET, bit 1: AF_INET6 */
	__u32 flags;        /* ST_CFG_* */
	__u32 n_uids;
	__u32 uids[ST_MAX_UIDS]; /* socket owner, as inet_diag reports it */
	__u64 probe_ino;    /* st_held: inode of a socket sockterm holds through one descriptor */
};

/* Counters the programs keep in .bss, read after a run. */
struct st_stats {
	__u64 visited;
	__u64 matched;
	__u64 destroyed;
	__u64 destroy_failed;
	__u64 errors_lost;  /* failures that did not fit in st_kill_errors */
	__u64 held_lost;    /* the one pass could not tell whether it had seen a socket before */
	__u64 probe_refs;   /* file references the one pass saw on st_held_probe's socket */
};

/* One matching socket a process holds, from the one pass (iter/task_file):
 * one per (process, descriptor), so a shared socket comes once per holder. */
struct st_held {
	struct st_rec rec;  /* result is ST_RES_MATCHED */
	__u64 cgroup;       /* cgroup v2 id (st_held_scoped; else 0) */
	__u32 netns;        /* network namespace inode (the pass crosses them all) */
	__u32 pid;
	char comm[16];
	__u32 fd;           /* the descriptor: kill --graceful duplicates it (pidfd_getfd) */
	__u32 reserved;
};

/* What the processes of one namespace hold, counted once per socket whatever
 * the number of descriptors and processes sharing it (map st_ns, by netns inode). */
struct st_ns_held {
	__u32 tcp;          /* hashed TCP sockets: listening or with a connection */
	__u32 udp;          /* hashed (bound) UDP sockets */
	__u32 pending;      /* request sockets queued on held listeners (accept queue qlen) */
	__u32 backlog;      /* children waiting in held listeners' accept queues */
};

#endif
