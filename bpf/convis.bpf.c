// SPDX-License-Identifier: GPL-2.0-only
/*
 * convis kernel side: TCP connection lifecycle and process lifecycle, using
 * only tracepoints (no kprobes, no fentry: see shared/KERNEL-FACTS.md).
 *
 * How a connection is attributed to a process:
 *  - outbound: CLOSE->SYN_SENT runs inside connect() in the connecting
 *    process, so the owner is taken there; the connect event is emitted at
 *    SYN_SENT->ESTABLISHED (full 4-tuple, any context), a failure at
 *    SYN_SENT->CLOSE with sk_err as the reason.
 *  - inbound: the child socket is tracked from LISTEN->SYN_RECV (softirq,
 *    owner unknown); accept()/accept4() exit walks the new fd to the socket
 *    and names the accepting process.
 *  - close: ->CLOSE reads the tcp_sock counters; the owner comes from the
 *    socks map because the final transition often runs in softirq.
 *  - io_uring accepts (no accept syscall): the owner is named at the
 *    socket's first send or receive by a task that uses io_uring.
 *  - failures before any SYN (no route, EPERM): connect() exit, with the
 *    syscall's own arguments read from the task's saved registers.
 *
 * Live counts: userspace runs a sweep every interval (BPF_PROG_TEST_RUN of a
 * program that walks the tracked TCP sockets and the UDP flows with
 * bpf_for_each_map_elem) and it emits an update for each that moved bytes, with the delta since its previous report. What a
 * report carried is kept per socket and advanced with compare-and-swap, and
 * the close path takes the rest with an exchange, so every byte is in
 * exactly one report, and a report the ring buffer could not take is
 * simply carried by the next one.
 *
 * UDP: sock_send_length/sock_recv_length count each datagram per socket and
 * remote endpoint; for unconnected sockets the remote comes from the
 * cgroup sendmsg/recvmsg hooks of the same syscall (per thread).
 *
 * Start-up snapshot: iter/task_file names the owner of every TCP socket in
 * any process; iter/tcp (run by userspace once per network namespace)
 * reports every existing listener and connection and starts tracking it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "events.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SOCK_STREAM 1
#define MSG_PEEK 2
#define PF_IO_WORKER 0x00000010

/* TCP states (include/net/tcp_states.h) */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10

#define EINTR 4
#define EEXIST 17
#define EISCONN 106
#define EALREADY 114
#define EINPROGRESS 115
#define ECONNABORTED 103

/* a UDP flow with nothing new for this many sweeps is forgotten (its counts were all reported) */
#define UDP_IDLE_SWEEPS 3

/* Load-time knobs, set by userspace before load. */
const volatile __u64 wakeup_bytes = 256 * 1024;

struct sock_info {
	__u64 conn_id;
	__u64 start_ns;
	__u32 pid;
	__u32 tid;
	__u32 ppid;
	__u32 uid;
	char comm[CONVIS_COMM_LEN];
	__u8 direction;
	__u8 flags;
	__u8 _pad[2];
	/* fixed for a socket's life: read once when tracking starts */
	__u32 netns;
	__u64 cgroup_id;
	/* the lifetime counters as far as reports have carried them */
	__u64 rep_sent;
	__u64 rep_received;
	__u32 rep_retrans;
	__u32 _pad2;
};

/* UDP: one socket (by cookie) and one remote endpoint */
struct udp_key {
	__u64 cookie;
	__u8 raddr[16];
	__u16 rport;
	__u16 family;
	__u32 _pad;
};

struct udp_flow {
	struct sock_info si; /* owner, ids; its rep_* fields are unused */
	__u8 laddr[16];
	__u16 lport;
	__u16 _pad;
	__u32 idle_sweeps;
	__u64 bytes_sent; /* added to atomically: any CPU may send or receive */
	__u64 bytes_received;
	__u64 dgrams_sent;
	__u64 dgrams_received;
	/* what sweeps reported; only the sweep (one at a time) writes these */
	__u64 rep_bytes_sent;
	__u64 rep_bytes_received;
	__u64 rep_dgrams_sent;
	__u64 rep_dgrams_received;
};

/* the remote endpoint of the datagram a thread is sending or receiving */
struct udp_peer {
	__u64 cookie; /* 0: used */
	__u8 addr[16];
	__u16 port;
	__u16 family;
	__u8 outbound;
	__u8 _pad[3];
};

/* the start-up snapshot: the first process found holding a socket */
struct snap_owner {
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u32 _pad;
	char comm[CONVIS_COMM_LEN];
};

struct listen_key {
	__u32 netns;
	__u16 port;
	__u16 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024); /* resized by userspace */
} rb SEC(".maps");

/* Tracked TCP sockets by kernel address; every entry is deleted at ->CLOSE. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144); /* resized by userspace */
	__type(key, __u64);
	__type(value, struct sock_info);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536); /* resized by userspace */
	__type(key, struct udp_key);
	__type(value, struct udp_flow);
} udp_flows SEC(".maps");

/* by pid_tgid: a thread sends or receives one message at a time */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct udp_peer);
} udp_peers SEC(".maps");

/* filled and emptied by the start-up snapshot only: allocated as it fills,
 * not held for the agent's life */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144); /* resized by userspace */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct snap_owner);
} snap_owners SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct listen_key);
	__type(value, __u8);
} snap_listens SEC(".maps");

/*
 * Sockets whose failed connect the state path reported: a blocking
 * connect() then fails too, and its exit must not report it again (the
 * error path's tcp_disconnect() has zeroed every counter by then).
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u8);
} failed_socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CONVIS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

__u64 next_conn_id = 1;
__u64 sweep_seq = 0;

static __always_inline void stat_inc(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);

	if (v)
		*v += 1;
}

/* Wake the consumer only when a lot is pending; it also polls on a timer. */
static __always_inline __u64 rb_flags(void)
{
	__u64 avail = bpf_ringbuf_query(&rb, BPF_RB_AVAIL_DATA);

	return avail >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

static __always_inline __u32 task_ppid(struct task_struct *task)
{
	return BPF_CORE_READ(task, real_parent, tgid);
}

static __always_inline void fill_owner(struct sock_info *si)
{
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 pid_tgid = bpf_get_current_pid_tgid();

	si->pid = pid_tgid >> 32;
	si->tid = (__u32)pid_tgid;
	si->uid = (__u32)bpf_get_current_uid_gid();
	si->ppid = task->real_parent->tgid;
	bpf_get_current_comm(si->comm, sizeof(si->comm));
	si->flags |= CONVIS_F_OWNER_KNOWN;
}

/*
 * A pointer read from kernel memory, as a read-only BTF pointer: its fields
 * are then plain loads that cannot fault, not one bpf_probe_read_kernel()
 * helper call each.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define rdonly(ptr, type) ((type *)bpf_rdonly_cast((ptr), bpf_core_type_id_kernel(type)))

/* An address into 16 bytes of an event or key: IPv4 in the first 4. */
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

/* A socket's local and remote address. */
#define put_local_addr(dst, sk, family) \
	put_addr((dst), (family), (sk)->__sk_common.skc_rcv_saddr, &(sk)->__sk_common.skc_v6_rcv_saddr)
#define put_remote_addr(dst, sk, family) \
	put_addr((dst), (family), (sk)->__sk_common.skc_daddr, &(sk)->__sk_common.skc_v6_daddr)

/*
 * A TCP socket's 4-tuple with plain loads, not one bpf_probe_read_kernel()
 * per field: for a BTF socket pointer, trusted (tp_btf) or read-only (see
 * rdonly()).
 */
static __always_inline void read_tuple_sk(struct sock *sk, struct convis_conn_event *ev)
{
	__u16 family = sk->__sk_common.skc_family;

	ev->family = family;
	ev->proto = IPPROTO_TCP;
	/* not skc_num: inet_put_port() zeroes it before the ->CLOSE tracepoint;
	 * and a cast of the pointer would be "access beyond struct sock" */
	ev->sport = bpf_ntohs(rdonly(sk, struct inet_sock)->inet_sport);
	ev->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	put_local_addr(ev->saddr, sk, family);
	put_remote_addr(ev->daddr, sk, family);
}

static __always_inline void read_tuple_tp(struct tcp_sock *tp, struct convis_conn_event *ev)
{
	read_tuple_sk(&tp->inet_conn.icsk_inet.sk, ev);
}

/* A BTF socket's netns inode and cgroup v2 id (right even in softirq). */
static __always_inline __u32 sk_netns(struct sock *sk)
{
	return sk->__sk_common.skc_net.net->ns.inum;
}

static __always_inline __u64 sk_cgroup(struct sock *sk)
{
	return sk->sk_cgrp_data.cgroup->kn->id;
}

static __always_inline void copy_owner(struct convis_conn_event *ev, const struct sock_info *si)
{
	ev->hdr.pid = si->pid;
	ev->tid = si->tid;
	ev->uid = si->uid;
	ev->ppid = si->ppid;
	ev->conn_id = si->conn_id;
	ev->direction = si->direction;
	ev->flags = si->flags;
	ev->netns = si->netns;
	ev->cgroup_id = si->cgroup_id;
	__builtin_memcpy(ev->comm, si->comm, sizeof(ev->comm));
}

static __always_inline struct convis_conn_event *reserve_conn(__u16 type, __u64 now)
{
	struct convis_conn_event *ev = bpf_ringbuf_reserve(&rb, sizeof(*ev), 0);

	if (!ev) {
		stat_inc(CONVIS_STAT_RB_DROP_CONN);
		return NULL;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->hdr.type = type;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.ts_ns = now;
	return ev;
}

/* Starts tracking a socket; non-zero when it was already tracked or the map is full. */
static __always_inline long track_new(struct sock *sk, __u8 direction, int with_owner, __u64 now,
				      __u32 netns, __u64 cgroup_id, __u64 flags)
{
	__u64 key = (__u64)sk;
	struct sock_info si = {};
	long err;

	si.netns = netns;
	si.cgroup_id = cgroup_id;
	si.conn_id = __sync_fetch_and_add(&next_conn_id, 1);
	si.start_ns = now;
	si.direction = direction;
	si.flags = CONVIS_F_START_SEEN;
	if (with_owner)
		fill_owner(&si);
	err = bpf_map_update_elem(&socks, &key, &si, flags);
	if (err && err != -EEXIST)
		stat_inc(CONVIS_STAT_SOCKS_FULL);
	return err;
}

/* The same, and the tracked entry; NULL when it was already tracked or the map is full. */
static __always_inline struct sock_info *track(struct sock *sk, __u8 direction, int with_owner, __u64 now,
					       __u32 netns, __u64 cgroup_id, __u64 flags)
{
	__u64 key = (__u64)sk;

	if (track_new(sk, direction, with_owner, now, netns, cgroup_id, flags))
		return NULL;
	return bpf_map_lookup_elem(&socks, &key);
}

struct tcp_counts {
	__u64 sent;     /* payload bytes, retransmissions excluded */
	__u64 received; /* payload bytes, FIN excluded */
	__u32 srtt_us;
	__u32 retrans;
};

/* The peer's FIN has been taken in (tcp_fin() ran). */
static __always_inline int fin_in(struct tcp_sock *tp)
{
	return (*(volatile unsigned long *)&tp->inet_conn.icsk_inet.sk.__sk_common.skc_flags &
		(1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) != 0;
}

/*
 * The counters of a socket the verifier knows as a BTF pointer (trusted or
 * read-only): plain loads. Returns whether the peer's FIN was taken off.
 */
static __always_inline int counts_tp(struct tcp_sock *tp, struct tcp_counts *c)
{
	__u64 sent, retrans_bytes, received = tp->bytes_received;
	int fin = 0;

	/* bytes_sent before bytes_retrans, in that order: a retransmission adds
	 * to bytes_retrans and then, in tcp_transmit_skb(), to bytes_sent, so a
	 * sweep (which reads without the socket's lock) that sees the new
	 * bytes_sent also sees the new bytes_retrans, and at worst holds back a
	 * retransmission it saw half of. Read the other way round, one that
	 * happened wholly between the two loads (an interrupt between them)
	 * would be counted as sent, for good. x86 keeps loads in program order;
	 * the barrier keeps the compiler from swapping them. */
	sent = *(volatile __u64 *)&tp->bytes_sent;
	asm volatile("" ::: "memory");
	retrans_bytes = *(volatile __u64 *)&tp->bytes_retrans;

	/* bytes_sent counts every transmitted payload byte, retransmissions
	 * included; bytes_retrans is the retransmitted share. */
	c->sent = sent > retrans_bytes ? sent - retrans_bytes : 0;
	/* bytes_received counts the peer's FIN as one byte; tcp_fin() sets
	 * SOCK_DONE, so subtract it when the FIN arrived. */
	if (fin_in(tp) && received > 0) {
		received -= 1;
		fin = 1;
	}
	c->received = received;
	c->srtt_us = tp->srtt_us >> 3;
	c->retrans = tp->total_retrans;
	return fin;
}

/*
 * The same, read by a sweep: without the socket's lock, so a FIN may be
 * half taken in. tcp_rcv_nxt_update() counts it in bytes_received before
 * tcp_fin() sets SOCK_DONE, both under the socket's lock (its spinlock in
 * softirq, or its owner's flag in a socket call). If SOCK_DONE was not set
 * when counts_tp() looked, one byte is held back if the lock is taken
 * now or SOCK_DONE is set now (read in that order: a FIN taken in after
 * the first look and done before the second leaves SOCK_DONE set). A byte
 * held back goes with the next report; a FIN once reported would be
 * counted for good, as the close only takes what is above the marks.
 */
static __always_inline void counts_unlocked(struct tcp_sock *tp, struct tcp_counts *c)
{
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	int busy;

	if (counts_tp(tp, c) || c->received == 0)
		return;
	asm volatile("" ::: "memory");
	busy = *(volatile int *)&sk->sk_lock.owned ||
	       *(volatile int *)&sk->sk_lock.slock.rlock.raw_lock.val.counter;
	asm volatile("" ::: "memory");
	if (busy || fin_in(tp))
		c->received -= 1;
}

static __always_inline void put_counts(struct convis_conn_event *ev, const struct tcp_counts *c)
{
	ev->bytes_sent = c->sent;
	ev->bytes_received = c->received;
	ev->srtt_us = c->srtt_us;
	ev->retransmits = c->retrans;
}

/* What a final report adds: the rest since the previous report, taken with
 * an exchange so that a sweep racing with the close cannot count it too. */
static __always_inline __u64 take_rest64(__u64 *rep, __u64 now_val)
{
	__u64 old = __sync_lock_test_and_set(rep, now_val);

	return now_val > old ? now_val - old : 0;
}

static __always_inline __u32 take_rest32(__u32 *rep, __u32 now_val)
{
	__u32 old = __sync_lock_test_and_set(rep, now_val);

	return now_val > old ? now_val - old : 0;
}

static __always_inline void emit_close(struct tcp_sock *tp, struct sock_info *si,
				       int oldstate, __u64 now)
{
	struct convis_conn_event *ev;
	struct tcp_counts c;

	ev = reserve_conn(CONVIS_EV_TCP_CLOSE, now);
	if (!ev)
		return;
	copy_owner(ev, si);
	read_tuple_tp(tp, ev);
	ev->old_state = oldstate;
	ev->duration_ns = now - si->start_ns;
	counts_tp(tp, &c);
	put_counts(ev, &c);
	ev->delta_sent = take_rest64(&si->rep_sent, c.sent);
	ev->delta_received = take_rest64(&si->rep_received, c.received);
	ev->delta_retransmits = take_rest32(&si->rep_retrans, c.retrans);
	bpf_ringbuf_submit(ev, rb_flags());
}

/* connect, accept, listen, unlisten: the socket's owner and 4-tuple, no counters */
static __always_inline void emit_simple(__u16 type, struct tcp_sock *tp, const struct sock_info *si,
					int oldstate, __u64 now)
{
	struct convis_conn_event *ev = reserve_conn(type, now);

	if (!ev)
		return;
	copy_owner(ev, si);
	read_tuple_tp(tp, ev);
	ev->old_state = oldstate;
	ev->duration_ns = now - si->start_ns;
	bpf_ringbuf_submit(ev, rb_flags());
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(inet_sock_set_state, const struct sock *csk, const int oldstate, const int newstate)
{
	struct sock *sk = (struct sock *)csk;
	struct convis_conn_event *ev;
	struct tcp_sock *tp;
	struct sock_info *si;
	__u64 key = (__u64)sk;
	__u16 family;
	__u64 now;

	/* about half of a connection's state changes matter here: leave the
	 * others before any helper call */
	switch (newstate) {
	case TCP_SYN_SENT:
		if (oldstate != TCP_CLOSE)
			return 0;
		break;
	case TCP_SYN_RECV:
		if (oldstate != TCP_LISTEN)
			return 0;
		break;
	case TCP_ESTABLISHED:
		if (oldstate != TCP_SYN_SENT)
			return 0;
		break;
	case TCP_LISTEN:
		if (oldstate != TCP_CLOSE)
			return 0;
		break;
	case TCP_CLOSE:
		break;
	default:
		return 0;
	}

	/* NULL unless a full TCP socket */
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;

	switch (newstate) {
	case TCP_SYN_SENT:
		/* CLOSE->SYN_SENT runs inside connect(): the current task is the
		 * connecting process */
		track_new(sk, CONVIS_DIR_OUTBOUND, 1, bpf_ktime_get_ns(), sk_netns(sk), sk_cgroup(sk), BPF_ANY);
		return 0;
	case TCP_SYN_RECV:
		/* LISTEN->SYN_RECV: a child socket cloned from a listener; the
		 * owner is named at accept */
		track_new(sk, CONVIS_DIR_INBOUND, 0, bpf_ktime_get_ns(), sk_netns(sk), sk_cgroup(sk), BPF_ANY);
		return 0;
	case TCP_LISTEN:
		/* CLOSE->LISTEN runs inside listen() */
		now = bpf_ktime_get_ns();
		si = track(sk, CONVIS_DIR_LISTEN, 1, now, sk_netns(sk), sk_cgroup(sk), BPF_ANY);
		if (si)
			emit_simple(CONVIS_EV_TCP_LISTEN, tp, si, oldstate, now);
		return 0;
	case TCP_ESTABLISHED:
		/* SYN_SENT->ESTABLISHED: the connect completed */
		si = bpf_map_lookup_elem(&socks, &key);
		if (!si)
			return 0;
		emit_simple(CONVIS_EV_TCP_CONNECT, tp, si, oldstate, bpf_ktime_get_ns());
		return 0;
	case TCP_CLOSE:
		si = bpf_map_lookup_elem(&socks, &key);
		if (!si)
			return 0;
		now = bpf_ktime_get_ns();
		if (oldstate == TCP_LISTEN) {
			if (si->direction == CONVIS_DIR_LISTEN)
				emit_simple(CONVIS_EV_TCP_UNLISTEN, tp, si, oldstate, now);
		} else if (oldstate == TCP_SYN_SENT) {
			/* no SYN ever left: connect() failed in the syscall itself
			 * (no free port), and its exit reports the real errno */
			if (tp->segs_out == 0)
				goto out;
			ev = reserve_conn(CONVIS_EV_TCP_CONNECT_FAILED, now);
			if (ev) {
				copy_owner(ev, si);
				read_tuple_tp(tp, ev);
				ev->old_state = oldstate;
				ev->duration_ns = now - si->start_ns;
				ev->error = sk->sk_err;
				if (ev->error == 0)
					ev->error = ECONNABORTED;
				bpf_ringbuf_submit(ev, rb_flags());
			}
			{
				__u8 one = 1;

				bpf_map_update_elem(&failed_socks, &key, &one, BPF_ANY);
			}
		} else if (oldstate != TCP_SYN_RECV) {
			/* SYN_RECV->CLOSE is a handshake that never completed */
			emit_close(tp, si, oldstate, now);
		}
out:
		bpf_map_delete_elem(&socks, &key);
		return 0;
	}
	return 0;
}

/* The socket behind a file descriptor of the current task, or NULL. */
static __always_inline struct sock *fd_to_sock(__u32 fd)
{
	/* a BTF task: plain loads down to the fd array */
	struct task_struct *task = bpf_get_current_task_btf();
	struct fdtable *fdt = task->files->fdt;
	struct file *file = NULL;
	struct socket *sock;

	if (!fdt || fd >= fdt->max_fds)
		return NULL;
	/* an array of pointers: BTF cannot index it, a probe read can */
	if (bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]) || !file)
		return NULL;
	sock = rdonly(rdonly(file, struct file)->private_data, struct socket);
	if (!sock)
		return NULL;
	return rdonly(sock->sk, struct sock);
}

static __always_inline int on_accept_exit(long ret)
{
	struct convis_conn_event *ev;
	struct sock_info *si;
	struct sock *sk;
	__u16 family;
	__u64 key, now;

	if (ret < 0)
		return 0;
	sk = fd_to_sock((__u32)ret);
	if (!sk)
		return 0;

	key = (__u64)sk;
	now = bpf_ktime_get_ns();
	/* tracked since LISTEN->SYN_RECV: a TCP socket, netns and cgroup known */
	si = bpf_map_lookup_elem(&socks, &key);
	if (si) {
		fill_owner(si);
	} else {
		/* not tracked: check what it is before anything else */
		family = sk->__sk_common.skc_family;
		if (family != AF_INET && family != AF_INET6)
			return 0;
		if (sk->sk_protocol != IPPROTO_TCP)
			return 0;
		if (sk->__sk_common.skc_state != TCP_CLOSE) {
			/* established before the agent started and missed by the
			 * snapshot: track from now on */
			si = track(sk, CONVIS_DIR_INBOUND, 1, now, sk_netns(sk), sk_cgroup(sk), BPF_ANY);
			if (si)
				si->flags &= ~CONVIS_F_START_SEEN;
		}
	}

	ev = reserve_conn(CONVIS_EV_TCP_ACCEPT, now);
	if (!ev)
		return 0;
	if (si) {
		copy_owner(ev, si);
		ev->duration_ns = now - si->start_ns;
	} else {
		/* reset before accept(): closed already, report who accepted it */
		struct sock_info tmp = {};

		fill_owner(&tmp);
		tmp.direction = CONVIS_DIR_INBOUND;
		tmp.netns = sk_netns(sk);
		tmp.cgroup_id = sk_cgroup(sk);
		copy_owner(ev, &tmp);
	}
	read_tuple_sk(sk, ev);
	ev->old_state = sk->__sk_common.skc_state;
	bpf_ringbuf_submit(ev, rb_flags());
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int sys_exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept")
int sys_exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return on_accept_exit(ctx->ret);
}

/* ---- processes ---- */

SEC("tracepoint/sched/sched_process_exec")
int sched_process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct convis_exec_event *ev;
	unsigned long arg_start, arg_end, len;
	__u32 off = ctx->__data_loc_filename & 0xFFFF;
	long n;

	ev = bpf_ringbuf_reserve(&rb, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(CONVIS_STAT_RB_DROP_PROC);
		return 0;
	}
	ev->hdr.type = CONVIS_EV_EXEC;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.pid = bpf_get_current_pid_tgid() >> 32;
	ev->hdr.ts_ns = bpf_ktime_get_ns();
	ev->ppid = task_ppid(task);
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->cgroup_id = bpf_get_current_cgroup_id();
	ev->_pad0 = 0;
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));

	n = bpf_probe_read_kernel_str(ev->filename, sizeof(ev->filename), (void *)ctx + off);
	ev->filename_len = n > 0 ? n - 1 : 0;

	arg_start = BPF_CORE_READ(task, mm, arg_start);
	arg_end = BPF_CORE_READ(task, mm, arg_end);
	len = arg_end - arg_start;
	if (len > CONVIS_ARGS_LEN)
		len = CONVIS_ARGS_LEN;
	ev->args_len = 0;
	if (len > 0 && bpf_probe_read_user(ev->args, len, (void *)arg_start) == 0)
		ev->args_len = len;
	bpf_ringbuf_submit(ev, rb_flags());
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int sched_process_exit(struct trace_event_raw_sched_process_exit *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	struct convis_task_event *ev;

	/* only the end of a whole process, not of one of its threads */
	if (bpf_core_field_exists(ctx->group_dead)) {
		if (!BPF_CORE_READ(ctx, group_dead))
			return 0;
	} else if ((__u32)pid_tgid != pid_tgid >> 32) {
		return 0;
	}

	ev = bpf_ringbuf_reserve(&rb, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(CONVIS_STAT_RB_DROP_PROC);
		return 0;
	}
	ev->hdr.type = CONVIS_EV_EXIT;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.pid = pid_tgid >> 32;
	ev->hdr.ts_ns = bpf_ktime_get_ns();
	ev->ppid = task_ppid(task);
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->exit_code = BPF_CORE_READ(task, exit_code) >> 8;
	ev->_pad0 = 0;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	bpf_get_current_comm(ev->comm, sizeof(ev->comm));
	bpf_ringbuf_submit(ev, rb_flags());
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	struct convis_task_event *ev;

	/* a new thread is not a new process */
	if (child->pid != child->tgid)
		return 0;

	ev = bpf_ringbuf_reserve(&rb, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(CONVIS_STAT_RB_DROP_PROC);
		return 0;
	}
	ev->hdr.type = CONVIS_EV_FORK;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.pid = child->tgid;
	ev->hdr.ts_ns = bpf_ktime_get_ns();
	ev->ppid = parent->tgid;
	ev->uid = (__u32)bpf_get_current_uid_gid();
	ev->exit_code = 0;
	ev->_pad0 = 0;
	ev->cgroup_id = bpf_get_current_cgroup_id();
	bpf_probe_read_kernel_str(ev->comm, sizeof(ev->comm), child->comm);
	bpf_ringbuf_submit(ev, rb_flags());
	return 0;
}

/* ---- connects that fail before any SYN ---- */

/* A user sockaddr_in/in6 into the remote half of an event; its family, or 0. */
static __always_inline __u16 read_user_sockaddr(const void *uaddr, struct convis_conn_event *ev)
{
	__u16 family = 0, port = 0;

	if (!uaddr || bpf_probe_read_user(&family, sizeof(family), uaddr))
		return 0;
	bpf_probe_read_user(&port, sizeof(port), uaddr + 2);
	ev->dport = bpf_ntohs(port);
	if (family == AF_INET)
		bpf_probe_read_user(ev->daddr, 4, uaddr + 4);
	else if (family == AF_INET6)
		bpf_probe_read_user(ev->daddr, 16, uaddr + 8);
	else
		return 0;
	return family;
}

SEC("tracepoint/syscalls/sys_exit_connect")
int sys_exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	long ret = ctx->ret;
	struct convis_conn_event *ev;
	struct task_struct *task;
	struct sock_info owner = {};
	struct pt_regs *regs;
	struct sock *sk;
	const void *uaddr;
	__u16 family, proto, afam;
	__u32 fd;

	/* success, or a non-blocking connect still under way: nothing to say */
	if (ret >= 0 || ret == -EINPROGRESS || ret == -EALREADY || ret == -EISCONN || ret == -EINTR)
		return 0;
	/* the syscall's arguments are still in the saved user registers */
	task = bpf_get_current_task_btf();
	regs = (struct pt_regs *)bpf_task_pt_regs(task);
	fd = (__u32)PT_REGS_PARM1_CORE_SYSCALL(regs);
	uaddr = (const void *)PT_REGS_PARM2_CORE_SYSCALL(regs);
	sk = fd_to_sock(fd);
	if (!sk)
		return 0;
	{
		__u64 key = (__u64)sk;

		/* reported already, when the SYN_SENT socket closed */
		if (bpf_map_lookup_elem(&failed_socks, &key)) {
			bpf_map_delete_elem(&failed_socks, &key);
			return 0;
		}
	}
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	proto = sk->sk_protocol;
	if (proto == IPPROTO_TCP) {
		/* still connecting (another thread's connect), or connected */
		if (sk->__sk_common.skc_state != TCP_CLOSE)
			return 0;
	} else if (proto != IPPROTO_UDP) {
		return 0;
	}

	ev = reserve_conn(CONVIS_EV_TCP_CONNECT_FAILED, bpf_ktime_get_ns());
	if (!ev)
		return 0;
	fill_owner(&owner);
	owner.conn_id = __sync_fetch_and_add(&next_conn_id, 1);
	owner.direction = CONVIS_DIR_OUTBOUND;
	owner.flags |= CONVIS_F_START_SEEN;
	owner.netns = sk_netns(sk);
	owner.cgroup_id = sk_cgroup(sk);
	copy_owner(ev, &owner);
	read_tuple_sk(sk, ev);
	ev->proto = proto;
	/* the destination asked for, not whatever the socket holds */
	__builtin_memset(ev->daddr, 0, sizeof(ev->daddr));
	ev->dport = 0;
	afam = read_user_sockaddr(uaddr, ev);
	if (afam)
		ev->family = afam;
	ev->error = -ret;
	ev->old_state = TCP_CLOSE;
	bpf_ringbuf_submit(ev, rb_flags());
	return 0;
}

/* ---- UDP datagrams, and io_uring owners ---- */

static __always_inline __u16 udp_account(struct sock *sk, int len, __u8 outbound)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 cookie = bpf_get_socket_cookie(sk);
	struct udp_key k = {};
	struct udp_flow *f;
	struct udp_peer *p;
	__u16 family = sk->__sk_common.skc_family;
	long err;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	k.cookie = cookie;
	k.family = family;
	/* the remote: what the cgroup hook saw for this very message (an
	 * unconnected socket), else the connected socket's peer */
	p = bpf_map_lookup_elem(&udp_peers, &pid_tgid);
	if (p && p->cookie == cookie && p->outbound == outbound) {
		__builtin_memcpy(k.raddr, p->addr, sizeof(k.raddr));
		k.rport = p->port;
		k.family = p->family;
		p->cookie = 0;
	} else if (sk->__sk_common.skc_dport) {
		k.rport = bpf_ntohs(sk->__sk_common.skc_dport);
		put_remote_addr(k.raddr, sk, family);
	}
	/* else: received without asking for the sender's address: counted
	 * against an unspecified remote */

	f = bpf_map_lookup_elem(&udp_flows, &k);
	if (!f) {
		struct udp_flow nf = {};

		nf.si.conn_id = __sync_fetch_and_add(&next_conn_id, 1);
		nf.si.start_ns = bpf_ktime_get_ns();
		nf.si.direction = outbound ? CONVIS_DIR_OUTBOUND : CONVIS_DIR_INBOUND;
		nf.si.netns = sk_netns(sk);
		nf.si.cgroup_id = sk_cgroup(sk);
		fill_owner(&nf.si);
		nf.lport = sk->__sk_common.skc_num;
		put_local_addr(nf.laddr, sk, family);
		err = bpf_map_update_elem(&udp_flows, &k, &nf, BPF_NOEXIST);
		if (err && err != -EEXIST) {
			stat_inc(CONVIS_STAT_UDP_FULL);
			return k.rport;
		}
		f = bpf_map_lookup_elem(&udp_flows, &k);
		if (!f)
			return k.rport;
	}
	if (outbound) {
		__sync_fetch_and_add(&f->bytes_sent, len);
		__sync_fetch_and_add(&f->dgrams_sent, 1);
	} else {
		__sync_fetch_and_add(&f->bytes_received, len);
		__sync_fetch_and_add(&f->dgrams_received, 1);
	}
	return k.rport;
}

/*
 * A DNS answer (a UDP datagram from port 53) a process just received: its
 * bytes are still in the process's buffer, which the syscall's arguments
 * name. read() and recvfrom() pass the buffer itself, recvmsg() and
 * recvmmsg() an iovec (the first one is read). Up to CONVIS_DNS_MAX bytes
 * go to userspace, which parses them for names of remote addresses.
 */
static __always_inline void dns_answer(struct sock *sk, int len)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct pt_regs *regs = (struct pt_regs *)bpf_task_pt_regs(task);
	struct convis_dns_event *ev;
	const void *buf = NULL;
	long nr = -1;
	__u32 n;

	/* the syscall's number: x86-64's (other architectures: none yet) */
	if (bpf_core_field_exists(regs->orig_ax))
		nr = BPF_CORE_READ(regs, orig_ax);

	if (nr == 0 /* read */ || nr == 45 /* recvfrom */) {
		buf = (const void *)PT_REGS_PARM2_CORE_SYSCALL(regs);
	} else if (nr == 47 /* recvmsg */ || nr == 299 /* recvmmsg: the first message */) {
		struct user_msghdr mh;
		struct iovec iov;

		if (bpf_probe_read_user(&mh, sizeof(mh), (const void *)PT_REGS_PARM2_CORE_SYSCALL(regs)) || !mh.msg_iov)
			return;
		if (bpf_probe_read_user(&iov, sizeof(iov), mh.msg_iov))
			return;
		buf = iov.iov_base;
	}
	if (!buf || len <= 0)
		return;
	n = len;
	if (n > CONVIS_DNS_MAX)
		n = CONVIS_DNS_MAX;
	ev = bpf_ringbuf_reserve(&rb, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(CONVIS_STAT_RB_DROP_DNS);
		return;
	}
	ev->hdr.type = CONVIS_EV_DNS;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.pid = bpf_get_current_pid_tgid() >> 32;
	ev->hdr.ts_ns = bpf_ktime_get_ns();
	ev->netns = sk_netns(sk);
	ev->len = n;
	ev->pad = 0;
	if (bpf_probe_read_user(ev->data, n, buf))
		ev->len = 0;
	bpf_ringbuf_submit(ev, rb_flags());
}

/*
 * A TCP socket moving data in a task that uses io_uring: if it was accepted
 * there (no accept syscall to see), name its owner now and report the accept.
 * Tasks without io_uring leave before any map lookup.
 */
static __always_inline void uring_owner(struct sock *sk)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct tcp_sock *tp;
	struct sock_info *si;
	__u64 key = (__u64)sk;

	if (!(task->flags & PF_IO_WORKER) &&
	    !(bpf_core_field_exists(task->io_uring) && task->io_uring))
		return;
	si = bpf_map_lookup_elem(&socks, &key);
	if (!si || (si->flags & CONVIS_F_OWNER_KNOWN) || si->direction != CONVIS_DIR_INBOUND)
		return;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return;
	fill_owner(si);
	emit_simple(CONVIS_EV_TCP_ACCEPT, tp, si, sk->__sk_common.skc_state, bpf_ktime_get_ns());
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send_length, struct sock *sk, int ret, int flags)
{
	__u16 proto;

	if (!sk || ret < 0)
		return 0;
	proto = sk->sk_protocol;
	if (proto == IPPROTO_UDP)
		udp_account(sk, ret, 1);
	else if (proto == IPPROTO_TCP && ret > 0)
		uring_owner(sk);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv_length, struct sock *sk, int ret, int flags)
{
	__u16 proto;

	/* a peek is read again later */
	if (!sk || ret < 0 || (flags & MSG_PEEK))
		return 0;
	proto = sk->sk_protocol;
	if (proto == IPPROTO_UDP) {
		if (udp_account(sk, ret, 0) == 53)
			dns_answer(sk, ret);
	} else if (proto == IPPROTO_TCP && ret > 0) {
		uring_owner(sk);
	}
	return 0;
}

/* The address of one unconnected send or receive, for udp_account(). */
static __always_inline void note_peer(struct bpf_sock_addr *ctx, __u16 family, __u8 outbound)
{
	struct udp_peer p = {};
	__u64 key = bpf_get_current_pid_tgid();
	__u32 *a = (__u32 *)p.addr;

	if (ctx->protocol != IPPROTO_UDP)
		return;
	p.cookie = bpf_get_socket_cookie(ctx);
	p.family = family;
	p.outbound = outbound;
	p.port = bpf_ntohs((__u16)ctx->user_port);
	if (family == AF_INET) {
		a[0] = ctx->user_ip4;
	} else {
		a[0] = ctx->user_ip6[0];
		a[1] = ctx->user_ip6[1];
		a[2] = ctx->user_ip6[2];
		a[3] = ctx->user_ip6[3];
	}
	bpf_map_update_elem(&udp_peers, &key, &p, BPF_ANY);
}

/* these only look: returning 1 lets every message through unchanged */
SEC("cgroup/sendmsg4")
int udp_sendmsg4(struct bpf_sock_addr *ctx)
{
	note_peer(ctx, AF_INET, 1);
	return 1;
}

SEC("cgroup/sendmsg6")
int udp_sendmsg6(struct bpf_sock_addr *ctx)
{
	note_peer(ctx, AF_INET6, 1);
	return 1;
}

SEC("cgroup/recvmsg4")
int udp_recvmsg4(struct bpf_sock_addr *ctx)
{
	note_peer(ctx, AF_INET, 0);
	return 1;
}

SEC("cgroup/recvmsg6")
int udp_recvmsg6(struct bpf_sock_addr *ctx)
{
	note_peer(ctx, AF_INET6, 0);
	return 1;
}

/* ---- sweeps: live counts of open connections and UDP flows ---- */

static __always_inline void read_tuple_udp(const struct udp_key *k, const struct udp_flow *f,
					   struct convis_conn_event *ev)
{
	ev->family = k->family;
	ev->proto = IPPROTO_UDP;
	__builtin_memcpy(ev->saddr, f->laddr, sizeof(ev->saddr));
	__builtin_memcpy(ev->daddr, k->raddr, sizeof(ev->daddr));
	ev->sport = f->lport;
	ev->dport = k->rport;
}

/* bpf_for_each_map_elem() callback over socks: one update per socket that moved bytes */
static long sweep_tcp(struct bpf_map *map, __u64 *keyp, struct sock_info *si, void *unused)
{
	struct convis_conn_event *ev;
	struct tcp_counts c;
	struct tcp_sock *tp;
	__u64 old_s, old_r, ds = 0, dr = 0, conn_id, now;
	__u32 old_t, dt = 0;

	/*
	 * The entry may be deleted by the socket's close on another CPU and,
	 * this map being preallocated, reused at once for a new socket. Its
	 * conn_id (unique, and written before the rest of a new entry) is read
	 * first and checked again after the marks are moved: if it changed,
	 * what this callback read or marked may belong to the new socket, and
	 * the report is abandoned (the close carried the old socket's rest).
	 */
	conn_id = *(volatile __u64 *)&si->conn_id;
	asm volatile("" ::: "memory");
	if (si->direction == CONVIS_DIR_LISTEN)
		return 0;
	/* known only by its address: read-only plain loads, valid under the
	 * test run's rcu_read_lock */
	tp = rdonly((void *)*(volatile __u64 *)keyp, struct tcp_sock);
	counts_unlocked(tp, &c);
	old_s = si->rep_sent;
	old_r = si->rep_received;
	old_t = si->rep_retrans;
	if (c.sent <= old_s && c.received <= old_r)
		return 0;
	ev = bpf_ringbuf_reserve(&rb, sizeof(*ev), 0);
	if (!ev) {
		/* nothing marked as reported: the next sweep carries it */
		stat_inc(CONVIS_STAT_RB_DROP_UPDATE);
		return 0;
	}
	/* who and where, read before the marks move (see above) */
	__builtin_memset(ev, 0, sizeof(*ev));
	copy_owner(ev, si);
	read_tuple_tp(tp, ev);
	ev->old_state = tp->inet_conn.icsk_inet.sk.__sk_common.skc_state;
	now = bpf_ktime_get_ns();
	ev->duration_ns = now - si->start_ns;
	/* a close on another CPU takes what it finds: each counter is this
	 * report's only if its mark was still where it was read */
	if (c.sent > old_s && __sync_val_compare_and_swap(&si->rep_sent, old_s, c.sent) == old_s)
		ds = c.sent - old_s;
	if (c.received > old_r && __sync_val_compare_and_swap(&si->rep_received, old_r, c.received) == old_r)
		dr = c.received - old_r;
	if (c.retrans > old_t && __sync_val_compare_and_swap(&si->rep_retrans, old_t, c.retrans) == old_t)
		dt = c.retrans - old_t;
	if (*(volatile __u64 *)&si->conn_id != conn_id) {
		/* reused meanwhile: put back any mark moved on the new socket's entry */
		if (ds)
			__sync_val_compare_and_swap(&si->rep_sent, c.sent, old_s);
		if (dr)
			__sync_val_compare_and_swap(&si->rep_received, c.received, old_r);
		if (dt)
			__sync_val_compare_and_swap(&si->rep_retrans, c.retrans, old_t);
		stat_inc(CONVIS_STAT_SWEEP_RACES);
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
		return 0;
	}
	/* a retransmit mark moved alone is reported too: the close only takes what is above it */
	if (!ds && !dr && !dt) {
		bpf_ringbuf_discard(ev, BPF_RB_NO_WAKEUP);
		return 0;
	}
	ev->hdr.type = CONVIS_EV_TCP_UPDATE;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.ts_ns = now;
	put_counts(ev, &c);
	ev->delta_sent = ds;
	ev->delta_received = dr;
	ev->delta_retransmits = dt;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	return 0;
}

/* bpf_for_each_map_elem() callback over udp_flows: one update per flow that moved datagrams */
static long sweep_udp(struct bpf_map *map, struct udp_key *k, struct udp_flow *f, void *unused)
{
	struct convis_conn_event *ev;
	__u64 bs, br, ps, pr;

	bs = f->bytes_sent;
	br = f->bytes_received;
	ps = f->dgrams_sent;
	pr = f->dgrams_received;
	if (ps == f->rep_dgrams_sent && pr == f->rep_dgrams_received) {
		/* everything reported already: forget it after a while */
		if (++f->idle_sweeps >= UDP_IDLE_SWEEPS)
			bpf_map_delete_elem(map, k);
		return 0;
	}
	ev = bpf_ringbuf_reserve(&rb, sizeof(*ev), 0);
	if (!ev) {
		stat_inc(CONVIS_STAT_RB_DROP_UPDATE);
		return 0;
	}
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->hdr.type = CONVIS_EV_UDP_UPDATE;
	ev->hdr.size = sizeof(*ev);
	ev->hdr.ts_ns = bpf_ktime_get_ns();
	copy_owner(ev, &f->si);
	read_tuple_udp(k, f, ev);
	ev->duration_ns = ev->hdr.ts_ns - f->si.start_ns;
	ev->bytes_sent = ev->delta_sent = bs - f->rep_bytes_sent;
	ev->bytes_received = ev->delta_received = br - f->rep_bytes_received;
	ev->packets_sent = ps - f->rep_dgrams_sent;
	ev->packets_received = pr - f->rep_dgrams_received;
	f->rep_bytes_sent = bs;
	f->rep_bytes_received = br;
	f->rep_dgrams_sent = ps;
	f->rep_dgrams_received = pr;
	f->idle_sweeps = 0;
	bpf_ringbuf_submit(ev, BPF_RB_NO_WAKEUP);
	return 0;
}

/*
 * One sweep, run by userspace with BPF_PROG_TEST_RUN (this kernel refuses
 * iter/bpf_map_elem). A test run holds rcu_read_lock: the sockets the
 * sweep reads through their addresses are not freed under it.
 */
SEC("raw_tp")
int sweep(void *ctx)
{
	struct convis_sweep_event *end;

	bpf_for_each_map_elem(&socks, sweep_tcp, NULL, 0);
	bpf_for_each_map_elem(&udp_flows, sweep_udp, NULL, 0);
	/* every update of this sweep is in the ring buffer before this */
	end = bpf_ringbuf_reserve(&rb, sizeof(*end), 0);
	if (!end) {
		stat_inc(CONVIS_STAT_RB_DROP_UPDATE);
		return 0;
	}
	end->hdr.type = CONVIS_EV_SWEEP_END;
	end->hdr.size = sizeof(*end);
	end->hdr.pid = 0;
	end->hdr.ts_ns = bpf_ktime_get_ns();
	end->seq = __sync_fetch_and_add(&sweep_seq, 1) + 1;
	bpf_ringbuf_submit(end, BPF_RB_NO_WAKEUP);
	return 0;
}

/* ---- start-up snapshot ---- */

SEC("iter/task_file")
int snap_files(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct snap_owner o = {};
	struct socket *sock;
	struct sock *sk;
	__u64 key;
	__u16 family;

	if (!task || !file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = sock->sk;
	if (!sk)
		return 0;
	family = sk->__sk_common.skc_family;
	if ((family != AF_INET && family != AF_INET6) || sk->sk_protocol != IPPROTO_TCP)
		return 0;
	key = (__u64)sk;
	o.pid = task->tgid;
	o.ppid = task->real_parent->tgid;
	o.uid = task->cred->uid.val;
	bpf_probe_read_kernel_str(o.comm, sizeof(o.comm), task->comm);
	/* a socket shared by several processes: the first found (lowest pid) */
	bpf_map_update_elem(&snap_owners, &key, &o, BPF_NOEXIST);
	return 0;
}

SEC("iter/tcp")
int snap_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct convis_conn_event *ev;
	struct listen_key lk = {};
	struct snap_owner *o;
	struct sock_info *si;
	struct tcp_counts c;
	struct tcp_sock *tp;
	struct sock *sk;
	__u64 key, now;
	__u16 family;
	__u8 one = 1, dir, state;

	if (!skc)
		return 0;
	/* NULL for time-wait and request sockets: only full sockets matter */
	tp = bpf_skc_to_tcp_sock(skc);
	if (!tp)
		return 0;
	sk = (struct sock *)tp;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	state = sk->__sk_common.skc_state;
	if (state == TCP_CLOSE)
		return 0;
	key = (__u64)sk;
	now = bpf_ktime_get_ns();
	lk.netns = sk_netns(sk);
	lk.port = sk->__sk_common.skc_num;
	/* listeners come first in this iterator: a connection on a port that
	 * has a listener is an accepted one */
	if (state == TCP_LISTEN) {
		bpf_map_update_elem(&snap_listens, &lk, &one, BPF_ANY);
		dir = CONVIS_DIR_LISTEN;
	} else {
		dir = bpf_map_lookup_elem(&snap_listens, &lk) ? CONVIS_DIR_INBOUND : CONVIS_DIR_OUTBOUND;
	}
	si = track(sk, dir, 0, now, lk.netns, sk_cgroup(sk), BPF_NOEXIST);
	/* already tracked: seen live since the programs were attached */
	if (!si)
		return 0;
	/* tracked from the middle of its life: durations are partial */
	si->flags = 0;
	o = bpf_map_lookup_elem(&snap_owners, &key);
	if (o) {
		si->pid = o->pid;
		si->tid = o->pid;
		si->ppid = o->ppid;
		si->uid = o->uid;
		__builtin_memcpy(si->comm, o->comm, sizeof(si->comm));
		si->flags |= CONVIS_F_OWNER_KNOWN;
	} else {
		si->uid = ctx->uid;
	}
	counts_tp(tp, &c);
	/* bytes moved before the agent started were counted by no one here:
	 * reports start from what the socket holds now */
	si->rep_sent = c.sent;
	si->rep_received = c.received;
	si->rep_retrans = c.retrans;
	/* a connect still under way is reported when it completes */
	if (state == TCP_SYN_SENT || state == TCP_SYN_RECV)
		return 0;
	ev = reserve_conn(dir == CONVIS_DIR_LISTEN ? CONVIS_EV_TCP_LISTEN :
			  dir == CONVIS_DIR_INBOUND ? CONVIS_EV_TCP_ACCEPT : CONVIS_EV_TCP_CONNECT, now);
	if (!ev)
		return 0;
	copy_owner(ev, si);
	/* on this record only: later events of the socket are ordinary ones */
	ev->flags |= CONVIS_F_EXISTING;
	read_tuple_tp(tp, ev);
	ev->old_state = state;
	if (dir != CONVIS_DIR_LISTEN)
		put_counts(ev, &c);
	bpf_ringbuf_submit(ev, rb_flags());
	return 0;
}
