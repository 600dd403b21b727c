/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * What crosses between the watch program (watch.bpf.c) and user space
 * (sockterm/engine/bpf/watch.py mirrors it; tests/unit/test_watch_record.py
 * checks sizes and offsets against this header and the object's BTF).
 *
 * __u* types only, widest fields first, no implicit padding.
 */
#ifndef SOCKTERM_WATCH_H
#define SOCKTERM_WATCH_H

#include "sockterm.h"

/* st_watch_event.hook: where the kernel saw the connection */
#define ST_WATCH_CONNECT    1 /* TCP connect() of a bound socket: SYN-SENT */
#define ST_WATCH_ACTIVE     2 /* an outgoing TCP connection reached ESTABLISHED */
#define ST_WATCH_PASSIVE    3 /* an incoming TCP connection reached ESTABLISHED (not accepted yet) */
#define ST_WATCH_UDP        4 /* UDP: connect() returned, or (fallback) its first send */
#define ST_WATCH_RETRANSMIT 5 /* TCP connect(): its SYN sent again, unanswered (SYN-SENT) */

/* One new connection the filter selects. held.rec.cookie is 0 when the
 * program could not know it (it never hands an untrusted socket pointer to
 * a helper): user space asks the kernel by exact tuple. held.pid and held.comm are the process
 * that connected; 0 and "" when the connection came from the network. */
struct st_watch_event {
	struct st_held held;
	__u64 time_ns;      /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u32 hook;         /* ST_WATCH_* */
	__u32 pad;
};

/* Set before load, in its own section (.rodata.watch) beside .rodata.cfg. */
struct st_watch_config {
	__u64 pidns_dev;    /* report pids as this pid namespace sees them */
	__u64 pidns_ino;    /* (0: sockterm is in the initial one; host pids) */
	__u32 own_tgid;     /* sockterm itself: its connections are never reported */
	__u32 pad;
};

/* Counters in .bss, read at the end of a window. */
struct st_watch_stats {
	__u64 events;       /* written to the ring buffer */
	__u64 lost;         /* not written: the ring buffer was full */
};

#endif
