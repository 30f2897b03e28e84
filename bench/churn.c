/*
 * churn: loopback TCP connection-churn workload for the convis benchmark.
 *
 *   churn [--clients N] [--servers N] [--seconds S] [--rate R] [--port P]
 *
 * Server threads share one listening socket on 127.0.0.1 and loop
 * accept -> read 64 bytes -> write 64 bytes -> close. Client threads loop
 * connect -> write 64 bytes -> read 64 bytes -> wait for EOF -> close.
 * --rate is the total target in connections/s (0: as fast as possible);
 * each client paces itself to rate/clients with absolute deadlines, so a
 * client that falls behind catches up instead of drifting.
 *
 * Close order: the server closes first and the client closes only after it
 * has read the server's FIN. TIME_WAIT therefore lands on the server side,
 * where it does not hold ephemeral ports: the client socket goes
 * CLOSE_WAIT -> LAST_ACK -> CLOSE and its port is free at once, and a SYN that
 * reuses a 4-tuple still in TIME_WAIT is accepted by the kernel (timestamps
 * are newer). With the client closing first, each connection would pin a
 * client port in TIME_WAIT, and with ~28k ephemeral ports and
 * tcp_tw_reuse_delay = 1 s the rate would be capped near 28k conn/s and then
 * fail with EADDRNOTAVAIL. Both sides close normally (no SO_LINGER), so a
 * tracer sees ordinary connections: one connect, one accept, two closes.
 *
 * On exit it prints one JSON line to stdout:
 *   {"connections":N,"failed":F,"seconds":S,"rate":R}
 * where connections counts only complete exchanges, failed counts attempts
 * that errored at any step, and seconds is the measured wall time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG_SIZE 64
/* Time the main thread waits for clients after the deadline before it
 * reports anyway (a client stuck in a connect retry must not hang the run). */
#define JOIN_GRACE_S 5

struct options {
	int clients;
	int servers;
	double seconds;
	double rate;
	int port;
};

/* Per-client counters, one cache line each to avoid false sharing. */
struct client {
	_Alignas(64) pthread_t thread;
	int index;
	uint64_t connections;
	uint64_t failed;
};

static struct options opts = { .clients = 2, .servers = 2, .seconds = 20, .rate = 0, .port = 0 };
static struct sockaddr_in server_addr;
static struct timespec start_time;
static atomic_bool stopping;

static void die(const char *what)
{
	fprintf(stderr, "churn: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void usage(void)
{
	fprintf(stderr, "usage: churn [--clients N] [--servers N] [--seconds S] [--rate R] [--port P]\n");
	exit(2);
}

static double parse_number(const char *flag, const char *value, double min)
{
	char *end;
	double v;

	if (!value)
		usage();
	errno = 0;
	v = strtod(value, &end);
	if (errno || end == value || *end || v < min) {
		fprintf(stderr, "churn: bad value for %s: %s\n", flag, value);
		exit(2);
	}
	return v;
}

static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *flag = argv[i];
		const char *value = argv[i + 1];

		if (!strcmp(flag, "--clients"))
			opts.clients = (int)parse_number(flag, value, 1);
		else if (!strcmp(flag, "--servers"))
			opts.servers = (int)parse_number(flag, value, 1);
		else if (!strcmp(flag, "--seconds"))
			opts.seconds = parse_number(flag, value, 0.001);
		else if (!strcmp(flag, "--rate"))
			opts.rate = parse_number(flag, value, 0);
		else if (!strcmp(flag, "--port"))
			opts.port = (int)parse_number(flag, value, 0);
		else
			usage();
		i++;
	}
	if (opts.port > 65535)
		usage();
}

static void timespec_add_ns(struct timespec *t, int64_t ns)
{
	int64_t total = (int64_t)t->tv_nsec + ns;

	t->tv_sec += total / 1000000000;
	t->tv_nsec = total % 1000000000;
}

static double elapsed_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) + (double)(now.tv_nsec - t0->tv_nsec) / 1e9;
}

/* read() exactly len bytes; returns 0 on success, -1 on error or early EOF. */
static int read_full(int fd, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = read(fd, buf + got, len - got);

		if (n > 0)
			got += (size_t)n;
		else if (n < 0 && errno == EINTR)
			continue;
		else
			return -1;
	}
	return 0;
}

static int write_full(int fd, const char *buf, size_t len)
{
	size_t put = 0;

	while (put < len) {
		ssize_t n = write(fd, buf + put, len - put);

		if (n > 0)
			put += (size_t)n;
		else if (n < 0 && errno == EINTR)
			continue;
		else
			return -1;
	}
	return 0;
}

static void *server_main(void *arg)
{
	int listen_fd = *(int *)arg;
	char buf[MSG_SIZE];

	memset(buf, 's', sizeof(buf));
	for (;;) {
		int fd = accept(listen_fd, NULL, NULL);

		if (fd < 0) {
			/* aborted handshakes and resource shortages are transient */
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE ||
			    errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
				continue;
			fprintf(stderr, "churn: accept: %s\n", strerror(errno));
			return NULL;
		}
		/* a failed exchange is counted by the client that sees it */
		if (read_full(fd, buf, MSG_SIZE) == 0)
			write_full(fd, buf, MSG_SIZE);
		close(fd);
	}
}

/* One connection; returns 0 when the whole exchange completed. */
static int client_exchange(char *buf)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int ok = -1;

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&server_addr, sizeof(server_addr)) == 0 &&
	    write_full(fd, buf, MSG_SIZE) == 0 && read_full(fd, buf, MSG_SIZE) == 0) {
		/* wait for the server's FIN so that the server closes first */
		char extra;

		while (ok < 0) {
			ssize_t n = read(fd, &extra, 1);

			if (n == 0)
				ok = 0;
			else if (n > 0 || errno != EINTR)
				break;
		}
	}
	close(fd);
	return ok;
}

static void *client_main(void *arg)
{
	struct client *c = arg;
	char buf[MSG_SIZE];
	int64_t interval_ns = 0;
	struct timespec next = start_time;

	memset(buf, 'c', sizeof(buf));
	if (opts.rate > 0) {
		interval_ns = (int64_t)(1e9 * opts.clients / opts.rate);
		/* stagger the clients evenly inside one interval */
		timespec_add_ns(&next, interval_ns * c->index / opts.clients);
	}
	while (!atomic_load_explicit(&stopping, memory_order_relaxed)) {
		if (interval_ns) {
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR)
				;
			if (atomic_load_explicit(&stopping, memory_order_relaxed))
				break;
			timespec_add_ns(&next, interval_ns);
		}
		if (client_exchange(buf) == 0)
			c->connections++;
		else
			c->failed++;
	}
	return NULL;
}

static int open_listener(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	socklen_t len = sizeof(server_addr);

	if (fd < 0)
		die("socket");
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		die("setsockopt SO_REUSEADDR");
	memset(&server_addr, 0, sizeof(server_addr));
	server_addr.sin_family = AF_INET;
	server_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	server_addr.sin_port = htons((uint16_t)opts.port);
	if (bind(fd, (struct sockaddr *)&server_addr, sizeof(server_addr)) < 0)
		die("bind");
	/* the kernel caps the backlog at net.core.somaxconn */
	if (listen(fd, 65535) < 0)
		die("listen");
	/* learn the port the kernel picked for --port 0 */
	if (getsockname(fd, (struct sockaddr *)&server_addr, &len) < 0)
		die("getsockname");
	return fd;
}

int main(int argc, char **argv)
{
	int listen_fd;
	pthread_t *servers;
	struct client *clients;
	struct timespec deadline;
	uint64_t connections = 0, failed = 0;
	double seconds;

	parse_args(argc, argv);
	listen_fd = open_listener();
	servers = calloc((size_t)opts.servers, sizeof(*servers));
	clients = calloc((size_t)opts.clients, sizeof(*clients));
	if (!servers || !clients)
		die("calloc");

	for (int i = 0; i < opts.servers; i++)
		if ((errno = pthread_create(&servers[i], NULL, server_main, &listen_fd)))
			die("pthread_create");

	clock_gettime(CLOCK_MONOTONIC, &start_time);
	for (int i = 0; i < opts.clients; i++) {
		clients[i].index = i;
		if ((errno = pthread_create(&clients[i].thread, NULL, client_main, &clients[i])))
			die("pthread_create");
	}

	deadline = start_time;
	timespec_add_ns(&deadline, (int64_t)(opts.seconds * 1e9));
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &deadline, NULL) == EINTR)
		;
	atomic_store(&stopping, true);

	/* clients finish their current exchange; servers are still serving them */
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += JOIN_GRACE_S;
	for (int i = 0; i < opts.clients; i++) {
		if (pthread_timedjoin_np(clients[i].thread, NULL, &deadline) != 0) {
			fprintf(stderr, "churn: client %d did not stop in time\n", i);
			continue;
		}
		connections += clients[i].connections;
		failed += clients[i].failed;
	}
	seconds = elapsed_since(&start_time);

	printf("{\"connections\":%llu,\"failed\":%llu,\"seconds\":%.3f,\"rate\":%.1f}\n",
	       (unsigned long long)connections, (unsigned long long)failed, seconds,
	       (double)connections / seconds);
	/* exit() ends the server threads, still blocked in accept() */
	exit(0);
}
