/* Run a command and report what it cost: `rusage_run RESULT-FILE CMD ARGS...`.
 *
 * Exists because ru_maxrss of a child forked by a big process is wrong: exec
 * records the forking process's high-water RSS in the child's maxrss, so every
 * child of the benchmark (tens of MiB of Python) would look at least that big.
 * This helper is tiny, so the children it forks start from ~1 MiB.
 * Writes "wall_seconds cpu_seconds maxrss_kib exit_status" to RESULT-FILE.
 *
 * `rusage_run -f PRIO RESULT-FILE CMD ARGS...` runs CMD at SCHED_FIFO PRIO,
 * set in the child before its exec: a `chrt -f PRIO` in front of CMD would
 * add chrt's own exec to every measured wall time (~1-4 ms here, as much as
 * `ss -tan` takes in all). */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	struct timespec t0, t1;
	struct rusage ru;
	int status;
	pid_t pid;
	FILE *out;
	struct sched_param fifo = { .sched_priority = 0 };

	if (argc > 3 && argv[1][0] == '-' && argv[1][1] == 'f' && !argv[1][2]) {
		fifo.sched_priority = atoi(argv[2]);
		argv += 2;
		argc -= 2;
	}
	if (argc < 3)
		return 2;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	pid = fork();
	if (pid == 0) {
		if (fifo.sched_priority && sched_setscheduler(0, SCHED_FIFO, &fifo))
			_exit(126);
		execvp(argv[2], argv + 2);
		_exit(127);
	}
	if (pid < 0 || wait4(pid, &status, 0, &ru) < 0)
		return 2;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	out = fopen(argv[1], "w");
	if (!out)
		return 2;
	fprintf(out, "%.6f %.6f %ld %d\n",
		(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
		ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6,
		ru.ru_maxrss,
		WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status));
	return fclose(out) ? 2 : 0;
}
