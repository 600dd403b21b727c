// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * For tests: programs every verifier refuses. Part of sockterm.bpf.c's object.
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
