// SPDX-License-Identifier: GPL-2.0-only
/*
 * mintrace: the benchmark's baseline, a minimal connection and process
 * tracer on the same hooks convis uses on the connection-churn path.
 * Built and run by bench/bench.ts (see bench/mintrace.c for userspace).
 *
 * What it does, per hook (and nothing more):
 *  - tracepoint/syscalls/sys_exit_connect: on success (0, or -EINPROGRESS
 *    of a non-blocking connect) walks the fd to its socket; for a TCP
 *    socket it remembers the socket in a hash map (socket -> pid, I/O
 *    counter) and writes one record: pid, socket id, 4-tuple.
 *  - tracepoint/syscalls/sys_exit_accept4 and sys_exit_accept: the same for
 *    the accepted socket.
 *  - tp_btf/inet_sock_set_state: at ->CLOSE of a remembered socket, one
 *    record with its pid and the bytes from the tcp_sock (bytes_sent less
 *    retransmissions, bytes_received); the socket is forgotten. Every
 *    other transition leaves at once.
 *  - tp_btf/sock_send_length and sock_recv_length: add the length to the
 *    socket's counter in the hash map (a lookup and an atomic add), so that
 *    the per-syscall cost of these hooks is paid as convis pays it.
 *  - tracepoint/sched/sched_process_exec: one record (pid, ppid, comm,
 *    filename); sched_process_exit: one record per process (not thread)
 *    end (pid, exit code); tp_btf/sched_process_fork: one record per new
 *    process (pid, ppid).
 * Records go to a BPF ring buffer of the size convis uses by default
 * (16 MiB) with the same wakeup policy (no wakeup until 256 KiB are
 * pending; userspace polls every 10 ms), and a record the ring buffer
 * cannot take is counted in a per-CPU array, as convis counts its losses.
 *
 * Why it is the fair baseline: it pays what any tracer that reports every
 * connection with its process must pay in the kernel on these hooks (the
 * program runs, the fd walk to name the process behind a connect or
 * accept, a map keyed by socket to name it again at close, one ring-buffer
 * record per connect, accept, close, exec and exit) and in userspace (a
 * poll loop that consumes every record), and no more: no enrichment, no
 * output, no sinks. convis's distance from it is what convis's own design
 * and userspace cost the workload. It leaves out what is not on the TCP
 * churn path: UDP accounting, DNS capture, sweeps of open connections,
 * connect failures, the start-up snapshot, and the cgroup sendmsg/recvmsg
 * hooks (those run for UDP only).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define MSG_PEEK 2
#define TCP_CLOSE 7
#define EINPROGRESS 115

enum { MT_CONNECT = 1, MT_ACCEPT = 2, MT_CLOSE = 3, MT_EXEC = 4, MT_EXIT = 5, MT_FORK = 6 };

struct mt_header {
	__u16 type;
	__u16 size;
	__u32 pid;
	__u64 ts_ns;
};

/* connect and accept */
struct mt_conn {
	struct mt_header hdr;
	__u64 sock;
	__u16 family;
	__u16 sport;
	__u16 dport;
	__u16 _pad;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct mt_close {
	struct mt_header hdr;
	__u64 sock;
	__u64 bytes_sent;
	__u64 bytes_received;
	__u64 io_bytes; /* what the send/recv hooks added up */
};

struct mt_exec {
	struct mt_header hdr;
	__u32 ppid;
	__u32 _pad;
	char comm[16];
	char filename[256];
};

/* exit and fork */
struct mt_task {
	struct mt_header hdr;
	__u32 ppid;
	__s32 exit_code;
};

struct sock_val {
	__u32 pid;
	__u32 _pad;
	__u64 io_bytes;
};

const volatile __u64 wakeup_bytes = 256 * 1024;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024); /* set by userspace */
} rb SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__type(key, __u64);
	__type(value, struct sock_val);
} socks SEC(".maps");

/* [0]: records the ring buffer could not take */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} lost SEC(".maps");

extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define rdonly(ptr, type) ((type *)bpf_rdonly_cast((ptr), bpf_core_type_id_kernel(type)))

static __always_inline void *reserve(__u32 size)
{
	void *p = bpf_ringbuf_reserve(&rb, size, 0);

	if (!p) {
		__u32 k = 0;
		__u64 *v = bpf_map_lookup_elem(&lost, &k);

		if (v)
			*v += 1;
	}
	return p;
}

static __always_inline void submit(void *p)
{
	__u64 avail = bpf_ringbuf_query(&rb, BPF_RB_AVAIL_DATA);

	bpf_ringbuf_submit(p, avail >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
}

static __always_inline void header(struct mt_header *h, __u16 type, __u16 size, __u32 pid)
{
	h->type = type;
	h->size = size;
	h->pid = pid;
	h->ts_ns = bpf_ktime_get_ns();
}

/* The socket behind a file descriptor of the current task, or NULL. */
static __always_inline struct sock *fd_to_sock(__u32 fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;
	struct socket *sock;

	if (!fdt || fd >= fdt->max_fds)
		return NULL;
	if (bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]) || !file)
		return NULL;
	sock = rdonly(rdonly(file, struct file)->private_data, struct socket);
	if (!sock)
		return NULL;
	return rdonly(sock->sk, struct sock);
}

static __always_inline void put_addr(__u8 *dst, __u16 family, __be32 v4, const struct in6_addr *v6)
{
	__u32 *d = (__u32 *)dst;

	if (family == AF_INET) {
		d[0] = v4;
		return;
	}
	d[0] = v6->in6_u.u6_addr32[0];
	d[1] = v6->in6_u.u6_addr32[1];
	d[2] = v6->in6_u.u6_addr32[2];
	d[3] = v6->in6_u.u6_addr32[3];
}

/* A new connection of the current task (fd from connect or accept): remember it, report it. */
static __always_inline void on_new_conn(__u32 fd, __u16 type)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct sock_val v = {};
	struct mt_conn *ev;
	struct sock *sk;
	__u16 family;
	__u64 key;

	sk = fd_to_sock(fd);
	if (!sk)
		return;
	family = sk->__sk_common.skc_family;
	if ((family != AF_INET && family != AF_INET6) || sk->sk_protocol != IPPROTO_TCP)
		return;
	key = (__u64)sk;
	/* closed already (reset before accept, refused connect): nothing to follow */
	if (sk->__sk_common.skc_state != TCP_CLOSE) {
		v.pid = pid_tgid >> 32;
		bpf_map_update_elem(&socks, &key, &v, BPF_ANY);
	}
	ev = reserve(sizeof(*ev));
	if (!ev)
		return;
	header(&ev->hdr, type, sizeof(*ev), pid_tgid >> 32);
	ev->sock = key;
	ev->family = family;
	ev->_pad = 0;
	ev->sport = bpf_ntohs(rdonly(sk, struct inet_sock)->inet_sport);
	ev->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	__builtin_memset(ev->saddr, 0, sizeof(ev->saddr));
	__builtin_memset(ev->daddr, 0, sizeof(ev->daddr));
	put_addr(ev->saddr, family, sk->__sk_common.skc_rcv_saddr, &sk->__sk_common.skc_v6_rcv_saddr);
	put_addr(ev->daddr, family, sk->__sk_common.skc_daddr, &sk->__sk_common.skc_v6_daddr);
	submit(ev);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int mt_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct pt_regs *regs;

	if (ret != 0 && ret != -EINPROGRESS)
		return 0;
	regs = (struct pt_regs *)bpf_task_pt_regs(bpf_get_current_task_btf());
	on_new_conn((__u32)PT_REGS_PARM1_CORE_SYSCALL(regs), MT_CONNECT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int mt_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		on_new_conn((__u32)ctx->ret, MT_ACCEPT);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int mt_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	if (ctx->ret >= 0)
		on_new_conn((__u32)ctx->ret, MT_ACCEPT);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(mt_set_state, const struct sock *csk, const int oldstate, const int newstate)
{
	struct sock *sk = (struct sock *)csk;
	struct sock_val *v;
	struct mt_close *ev;
	struct tcp_sock *tp;
	__u64 key = (__u64)sk;

	if (newstate != TCP_CLOSE)
		return 0;
	v = bpf_map_lookup_elem(&socks, &key);
	if (!v)
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (tp) {
		ev = reserve(sizeof(*ev));
		if (ev) {
			__u64 sent = tp->bytes_sent, retrans = tp->bytes_retrans;

			header(&ev->hdr, MT_CLOSE, sizeof(*ev), v->pid);
			ev->sock = key;
			ev->bytes_sent = sent > retrans ? sent - retrans : 0;
			ev->bytes_received = tp->bytes_received;
			ev->io_bytes = v->io_bytes;
			submit(ev);
		}
	}
	bpf_map_delete_elem(&socks, &key);
	return 0;
}

static __always_inline void count_io(struct sock *sk, int len)
{
	__u64 key = (__u64)sk;
	struct sock_val *v;

	if (!sk || len <= 0)
		return;
	v = bpf_map_lookup_elem(&socks, &key);
	if (v)
		__sync_fetch_and_add(&v->io_bytes, len);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(mt_send, struct sock *sk, int ret, int flags)
{
	count_io(sk, ret);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(mt_recv, struct sock *sk, int ret, int flags)
{
	if (!(flags & MSG_PEEK))
		count_io(sk, ret);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int mt_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u32 off = ctx->__data_loc_filename & 0xFFFF;
	struct mt_exec *ev = reserve(sizeof(*ev));

	if (!ev)
		return 0;
	header(&ev->hdr, MT_EXEC, sizeof(*ev), bpf_get_current_pid_tgid() >> 32);
	ev->ppid = task->real_parent->tgid;
	ev->_pad = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), (void *)ctx + off);
	submit(ev);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int mt_exit(struct trace_event_raw_sched_process_exit *ctx)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct mt_task *ev;

	if (bpf_core_field_exists(ctx->group_dead)) {
		if (!BPF_CORE_READ(ctx, group_dead))
			return 0;
	} else if ((__u32)pid_tgid != pid_tgid >> 32) {
		return 0;
	}
	ev = reserve(sizeof(*ev));
	if (!ev)
		return 0;
	header(&ev->hdr, MT_EXIT, sizeof(*ev), pid_tgid >> 32);
	ev->ppid = task->real_parent->tgid;
	ev->exit_code = task->exit_code >> 8;
	submit(ev);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(mt_fork, struct task_struct *parent, struct task_struct *child)
{
	struct mt_task *ev;

	if (child->pid != child->tgid)
		return 0;
	ev = reserve(sizeof(*ev));
	if (!ev)
		return 0;
	header(&ev->hdr, MT_FORK, sizeof(*ev), child->tgid);
	ev->ppid = parent->tgid;
	ev->exit_code = 0;
	submit(ev);
	return 0;
}
