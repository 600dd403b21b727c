// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* The floor: socket iterators that visit every socket and do nothing else.
 * Compiled at benchmark time against sockterm's bpf/ headers. */
#include "kernel.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("iter/tcp")
int walk_tcp(struct bpf_iter__tcp *ctx)
{
	return 0;
}

SEC("iter/udp")
int walk_udp(struct bpf_iter__udp *ctx)
{
	return 0;
}
