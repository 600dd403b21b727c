/* Non-matching churn for tests/bench/watch.py: RATE TCP connections a second
 * to ADDR:PORT, each opened and closed at once, for SECONDS; prints how many.
 * `churn serve ADDR PORT`: the other end, accepting and closing.
 * C, because Python cannot keep 2,000 a second on a busy 2-CPU VM. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_in to = { .sin_family = AF_INET };
	struct linger no_linger = { .l_onoff = 1, .l_linger = 0 };
	double rate, seconds, start, due;
	long done = 0;

	if (argc == 4 && argv[1][0] == 's') {
		int one = 1, lst = socket(AF_INET, SOCK_STREAM, 0);

		inet_pton(AF_INET, argv[2], &to.sin_addr);
		to.sin_port = htons(atoi(argv[3]));
		setsockopt(lst, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(lst, (struct sockaddr *)&to, sizeof(to)) || listen(lst, 4096))
			return 1;
		for (;;)
			close(accept(lst, NULL, NULL));
	}
	if (argc != 5) {
		fprintf(stderr, "usage: churn ADDR PORT RATE SECONDS | churn serve ADDR PORT\n");
		return 2;
	}
	inet_pton(AF_INET, argv[1], &to.sin_addr);
	to.sin_port = htons(atoi(argv[2]));
	rate = atof(argv[3]);
	seconds = atof(argv[4]);
	start = now();
	while (now() - start < seconds) {
		int fd;

		due = start + done / rate;
		if (due > now()) {
			double pause = due - now();
			struct timespec ts = { (time_t)pause, (long)((pause - (time_t)pause) * 1e9) };

			nanosleep(&ts, NULL);
		}
		fd = socket(AF_INET, SOCK_STREAM, 0);
		/* closed with a reset: 2,000 time-wait sockets a second would soon
		 * make every connect() search long for a free port */
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_linger, sizeof(no_linger));
		connect(fd, (struct sockaddr *)&to, sizeof(to));
		close(fd);
		done++;
	}
	printf("%ld\n", done);
	return 0;
}
