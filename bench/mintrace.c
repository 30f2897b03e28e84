// SPDX-License-Identifier: Apache-2.0
/*
 * mintrace: userspace of the benchmark's baseline tracer (the kernel side,
 * and why it is the fair baseline, are described in bench/mintrace.bpf.c).
 *
 *   mintrace [--ring-mib N]
 *
 * Loads and attaches bench/mintrace.bpf.c through its libbpf skeleton,
 * prints "mintrace: ready" on stderr, then polls the ring buffer the way
 * convis's addon does (ring_buffer__poll with a 10 ms timeout, then
 * ring_buffer__consume, because records submitted without a wakeup are
 * only seen by a consume) and counts every record by type. On SIGTERM or
 * SIGINT it consumes what is left and prints one JSON line on stdout:
 *
 *   {"records":N,"events":{"connect":N,"accept":N,"close":N,"exec":N,
 *    "exit":N,"fork":N},"close_bytes_sent":N,"close_bytes_received":N,
 *    "lost":N,"cpu_ms":N,"maxrss_kib":N}
 *
 * lost: records the ring buffer could not take; cpu_ms: its own user +
 * system time; maxrss_kib: its peak RSS.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "mintrace.skel.h"

#define POLL_MS 10

/* the record types and header of bench/mintrace.bpf.c */
enum { MT_CONNECT = 1, MT_ACCEPT = 2, MT_CLOSE = 3, MT_EXEC = 4, MT_EXIT = 5, MT_FORK = 6, MT_TYPES = 7 };

struct mt_header {
	uint16_t type;
	uint16_t size;
	uint32_t pid;
	uint64_t ts_ns;
};

struct mt_close {
	struct mt_header hdr;
	uint64_t sock;
	uint64_t bytes_sent;
	uint64_t bytes_received;
	uint64_t io_bytes;
};

static volatile sig_atomic_t stop;
static uint64_t records, by_type[MT_TYPES], close_sent, close_received;

static void on_signal(int sig)
{
	(void)sig;
	stop = 1;
}

static int on_record(void *ctx, void *data, size_t size)
{
	const struct mt_header *h = data;

	(void)ctx;
	records++;
	if (size < sizeof(*h))
		return 0;
	if (h->type < MT_TYPES)
		by_type[h->type]++;
	if (h->type == MT_CLOSE && size >= sizeof(struct mt_close)) {
		const struct mt_close *c = data;

		close_sent += c->bytes_sent;
		close_received += c->bytes_received;
	}
	return 0;
}

static int quiet(enum libbpf_print_level level, const char *fmt, va_list args)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, args);
}

static uint64_t lost_records(struct mintrace_bpf *skel)
{
	int ncpus = libbpf_num_possible_cpus();
	uint64_t *values, sum = 0;
	uint32_t key = 0;

	if (ncpus <= 0)
		return 0;
	values = calloc((size_t)ncpus, sizeof(*values));
	if (!values)
		return 0;
	if (bpf_map_lookup_elem(bpf_map__fd(skel->maps.lost), &key, values) == 0)
		for (int i = 0; i < ncpus; i++)
			sum += values[i];
	free(values);
	return sum;
}

int main(int argc, char **argv)
{
	unsigned long ring_mib = 16;
	struct mintrace_bpf *skel;
	struct ring_buffer *rb;
	struct rusage ru;
	struct sigaction sa;
	int err;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--ring-mib") && i + 1 < argc) {
			ring_mib = strtoul(argv[++i], NULL, 10);
		} else {
			fprintf(stderr, "usage: mintrace [--ring-mib N]\n");
			return 2;
		}
	}
	if (ring_mib == 0 || (ring_mib & (ring_mib - 1))) {
		fprintf(stderr, "mintrace: --ring-mib must be a power of two\n");
		return 2;
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	libbpf_set_print(quiet);

	skel = mintrace_bpf__open();
	if (!skel) {
		fprintf(stderr, "mintrace: open: %s\n", strerror(errno));
		return 1;
	}
	bpf_map__set_max_entries(skel->maps.rb, (uint32_t)(ring_mib << 20));
	err = mintrace_bpf__load(skel);
	if (!err)
		err = mintrace_bpf__attach(skel);
	if (err) {
		fprintf(stderr, "mintrace: load/attach: %s\n", strerror(-err));
		mintrace_bpf__destroy(skel);
		return 1;
	}
	rb = ring_buffer__new(bpf_map__fd(skel->maps.rb), on_record, NULL, NULL);
	if (!rb) {
		fprintf(stderr, "mintrace: ring buffer: %s\n", strerror(errno));
		mintrace_bpf__destroy(skel);
		return 1;
	}
	fprintf(stderr, "mintrace: ready\n");

	while (!stop) {
		err = ring_buffer__poll(rb, POLL_MS);
		if (err < 0 && err != -EINTR) {
			fprintf(stderr, "mintrace: poll: %s\n", strerror(-err));
			break;
		}
		ring_buffer__consume(rb);
	}
	ring_buffer__consume(rb);

	getrusage(RUSAGE_SELF, &ru);
	printf("{\"records\":%llu,\"events\":{\"connect\":%llu,\"accept\":%llu,\"close\":%llu,\"exec\":%llu,\"exit\":%llu,\"fork\":%llu},"
	       "\"close_bytes_sent\":%llu,\"close_bytes_received\":%llu,\"lost\":%llu,\"cpu_ms\":%.1f,\"maxrss_kib\":%ld}\n",
	       (unsigned long long)records, (unsigned long long)by_type[MT_CONNECT], (unsigned long long)by_type[MT_ACCEPT],
	       (unsigned long long)by_type[MT_CLOSE], (unsigned long long)by_type[MT_EXEC], (unsigned long long)by_type[MT_EXIT],
	       (unsigned long long)by_type[MT_FORK], (unsigned long long)close_sent, (unsigned long long)close_received,
	       (unsigned long long)lost_records(skel),
	       (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 + (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3,
	       ru.ru_maxrss);
	fflush(stdout);
	ring_buffer__free(rb);
	mintrace_bpf__destroy(skel);
	return 0;
}
