/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The filter (struct st_config, sockterm.h) as a program applies it to a
 * record: state, family, --dst/--src, --dport/--sport, --uid. The same
 * decision as sockterm.bpf.c's wanted() and uid_allowed(), which
 * tests/unit/test_bpf_config.py mirrors against Filter.matches; written for a
 * config passed by pointer, so any of sockterm's programs can include it
 * (sockterm.bpf.c keeps its own copy for now: it is being reworked).
 */
#ifndef SOCKTERM_FILTER_H
#define SOCKTERM_FILTER_H

#include "sockterm.h"

static __always_inline bool st_addr_match(const volatile struct st_addr_rule *r,
					  const __u32 *a, __u16 port)
{
	if (port < r->port_lo || port > r->port_hi)
		return false;
	return ((a[0] ^ r->addr[0]) & r->mask[0]) == 0 &&
	       ((a[1] ^ r->addr[1]) & r->mask[1]) == 0 &&
	       ((a[2] ^ r->addr[2]) & r->mask[2]) == 0 &&
	       ((a[3] ^ r->addr[3]) & r->mask[3]) == 0;
}

static __always_inline bool st_addr_rules_match(const volatile struct st_addr_rule *rules,
						__u32 n, const __u8 *addr, __u16 port)
{
	const __u32 *a = (const __u32 *)addr;

	if (n == 0)
		return true;
	for (int i = 0; i < ST_MAX_ADDRS; i++) {
		if (i >= n)
			break;
		if (st_addr_match(&rules[i], a, port))
			return true;
	}
	return false;
}

static __always_inline bool st_port_rules_match(const volatile struct st_port_range *rules,
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

/* Everything but the processes, cgroups and cookies (the Scope's). */
static __always_inline bool st_wanted(const volatile struct st_config *c, const struct st_rec *r)
{
	if (!(c->states & (1u << r->state)))
		return false;
	if (r->family == AF_INET ? !(c->families & 1) : !(c->families & 2))
		return false;
	if (!st_addr_rules_match(c->dst, c->n_dst, r->dst, r->dport))
		return false;
	if (!st_addr_rules_match(c->src, c->n_src, r->src, r->sport))
		return false;
	if (!st_port_rules_match(c->dport, c->n_dport, r->dport))
		return false;
	if (!st_port_rules_match(c->sport, c->n_sport, r->sport))
		return false;
	if (c->n_uids == 0)
		return true;
	for (int i = 0; i < ST_MAX_UIDS; i++) {
		if (i >= c->n_uids)
			break;
		if (c->uids[i] == r->uid)
			return true;
	}
	return false;
}

#endif
