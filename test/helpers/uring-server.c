// SPDX-License-Identifier: Apache-2.0
/*
 * A TCP server that accepts, receives and sends only through io_uring, so
 * no accept syscall names it: uring-server RECV SEND. Listens on
 * 127.0.0.1:0 and prints "port N", accepts one connection, reads RECV
 * bytes, sends SEND bytes, reads to EOF, closes and prints "done".
 */
#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct io_uring ring;

static int run(void)
{
	struct io_uring_cqe *cqe;
	int res;

	if (io_uring_submit(&ring) < 0 || io_uring_wait_cqe(&ring, &cqe) < 0)
		return -1;
	res = cqe->res;
	io_uring_cqe_seen(&ring, cqe);
	return res;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof(sa);
	static char buf[65536];
	long want, got = 0, sent = 0;
	int lfd, cfd, n;

	if (argc != 3)
		return 2;
	want = atol(argv[1]);
	inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 4) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &len) || io_uring_queue_init(8, &ring, 0))
		return 1;
	printf("port %d\n", ntohs(sa.sin_port));
	fflush(stdout);

	io_uring_prep_accept(io_uring_get_sqe(&ring), lfd, NULL, NULL, 0);
	cfd = run();
	if (cfd < 0)
		return 1;
	while (got < want) {
		io_uring_prep_recv(io_uring_get_sqe(&ring), cfd, buf, sizeof(buf), 0);
		n = run();
		if (n <= 0)
			return 1;
		got += n;
	}
	memset(buf, 'u', sizeof(buf));
	for (want = atol(argv[2]); sent < want; sent += n) {
		io_uring_prep_send(io_uring_get_sqe(&ring), cfd, buf, want - sent < (long)sizeof(buf) ? want - sent : (long)sizeof(buf), 0);
		n = run();
		if (n <= 0)
			return 1;
	}
	do {
		io_uring_prep_recv(io_uring_get_sqe(&ring), cfd, buf, sizeof(buf), 0);
		n = run();
	} while (n > 0);
	io_uring_prep_close(io_uring_get_sqe(&ring), cfd);
	run();
	close(lfd);
	printf("done\n");
	return 0;
}
