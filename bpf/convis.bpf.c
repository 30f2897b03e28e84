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
#define SOCK_STREAM 1

/* TCP states (include/net/tcp_states.h) */
#define TCP_ESTABLISHED 1
#define TCP_SYN_SENT 2
#define TCP_SYN_RECV 3
#define TCP_CLOSE 7
#define TCP_LISTEN 10

#define ECONNABORTED 103

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
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CONVIS_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

__u64 next_conn_id = 1;

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

static __always_inline void read_tuple(struct sock *sk, struct convis_conn_event *ev)
{
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	ev->family = family;
	ev->proto = IPPROTO_TCP;
	/* not skc_num: inet_put_port() zeroes it before the ->CLOSE tracepoint */
	ev->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	ev->dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (family == AF_INET) {
		/* explicit sizes: BPF_CORE_READ_INTO would copy sizeof(*dst) == 1 byte */
		bpf_core_read(ev->saddr, 4, &sk->__sk_common.skc_rcv_saddr);
		bpf_core_read(ev->daddr, 4, &sk->__sk_common.skc_daddr);
	} else {
		bpf_core_read(ev->saddr, 16, &sk->__sk_common.skc_v6_rcv_saddr);
		bpf_core_read(ev->daddr, 16, &sk->__sk_common.skc_v6_daddr);
	}
}

/*
 * The same as read_tuple() for a socket the verifier knows as a BTF pointer
 * (tp_btf): plain loads instead of one bpf_probe_read_kernel() per field.
 */
static __always_inline void read_tuple_tp(struct tcp_sock *tp, struct convis_conn_event *ev)
{
	struct sock *sk = &tp->inet_conn.icsk_inet.sk;
	__u16 family = sk->__sk_common.skc_family;
	__u32 *s6 = (__u32 *)ev->saddr, *d6 = (__u32 *)ev->daddr;

	ev->family = family;
	ev->proto = IPPROTO_TCP;
	ev->sport = bpf_ntohs(tp->inet_conn.icsk_inet.inet_sport);
	ev->dport = bpf_ntohs(sk->__sk_common.skc_dport);
	if (family == AF_INET) {
		s6[0] = sk->__sk_common.skc_rcv_saddr;
		d6[0] = sk->__sk_common.skc_daddr;
	} else {
		s6[0] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[0];
		s6[1] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[1];
		s6[2] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[2];
		s6[3] = sk->__sk_common.skc_v6_rcv_saddr.in6_u.u6_addr32[3];
		d6[0] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[0];
		d6[1] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[1];
		d6[2] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[2];
		d6[3] = sk->__sk_common.skc_v6_daddr.in6_u.u6_addr32[3];
	}
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

static __always_inline void track(struct sock *sk, __u8 direction, int with_owner, __u64 now,
				  __u32 netns, __u64 cgroup_id)
{
	__u64 key = (__u64)sk;
	struct sock_info si = {};

	si.netns = netns;
	si.cgroup_id = cgroup_id;
	si.conn_id = __sync_fetch_and_add(&next_conn_id, 1);
	si.start_ns = now;
	si.direction = direction;
	si.flags = CONVIS_F_START_SEEN;
	if (with_owner)
		fill_owner(&si);
	if (bpf_map_update_elem(&socks, &key, &si, BPF_ANY))
		stat_inc(CONVIS_STAT_SOCKS_FULL);
}

static __always_inline void emit_close(struct tcp_sock *tp, const struct sock_info *si,
				       int oldstate, __u64 now)
{
	struct convis_conn_event *ev;
	__u64 sent, retrans_bytes, received;

	ev = reserve_conn(CONVIS_EV_TCP_CLOSE, now);
	if (!ev)
		return;
	copy_owner(ev, si);
	read_tuple_tp(tp, ev);
	ev->old_state = oldstate;
	ev->duration_ns = now - si->start_ns;
	/* bytes_sent counts every transmitted payload byte, retransmissions
	 * included; bytes_retrans is the retransmitted share. */
	sent = tp->bytes_sent;
	retrans_bytes = tp->bytes_retrans;
	ev->bytes_sent = sent > retrans_bytes ? sent - retrans_bytes : 0;
	/* bytes_received counts the peer's FIN as one byte; tcp_fin() sets
	 * SOCK_DONE, so subtract it when the FIN arrived. */
	received = tp->bytes_received;
	if ((tp->inet_conn.icsk_inet.sk.__sk_common.skc_flags &
	     (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && received > 0)
		received -= 1;
	ev->bytes_received = received;
	ev->srtt_us = tp->srtt_us >> 3;
	ev->retransmits = tp->total_retrans;
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
		track(sk, CONVIS_DIR_OUTBOUND, 1, bpf_ktime_get_ns(), sk_netns(sk), sk_cgroup(sk));
		return 0;
	case TCP_SYN_RECV:
		/* LISTEN->SYN_RECV: a child socket cloned from a listener; the
		 * owner is named at accept */
		track(sk, CONVIS_DIR_INBOUND, 0, bpf_ktime_get_ns(), sk_netns(sk), sk_cgroup(sk));
		return 0;
	case TCP_ESTABLISHED:
		/* SYN_SENT->ESTABLISHED: the connect completed */
		si = bpf_map_lookup_elem(&socks, &key);
		if (!si)
			return 0;
		now = bpf_ktime_get_ns();
		ev = reserve_conn(CONVIS_EV_TCP_CONNECT, now);
		if (!ev)
			return 0;
		copy_owner(ev, si);
		read_tuple_tp(tp, ev);
		ev->old_state = oldstate;
		ev->duration_ns = now - si->start_ns;
		bpf_ringbuf_submit(ev, rb_flags());
		return 0;
	case TCP_CLOSE:
		si = bpf_map_lookup_elem(&socks, &key);
		if (!si)
			return 0;
		now = bpf_ktime_get_ns();
		if (oldstate == TCP_SYN_SENT) {
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
		} else if (oldstate != TCP_SYN_RECV) {
			/* SYN_RECV->CLOSE is a handshake that never completed */
			emit_close(tp, si, oldstate, now);
		}
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
	if (bpf_probe_read_kernel(&file, sizeof(file), &fdt->fd[fd]) || !file)
		return NULL;
	sock = BPF_CORE_READ(file, private_data);
	if (!sock)
		return NULL;
	return BPF_CORE_READ(sock, sk);
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
		family = BPF_CORE_READ(sk, __sk_common.skc_family);
		if (family != AF_INET && family != AF_INET6)
			return 0;
		if (BPF_CORE_READ_BITFIELD_PROBED(sk, sk_protocol) != IPPROTO_TCP)
			return 0;
		if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_CLOSE) {
			/* established before the agent started: track from now on */
			track(sk, CONVIS_DIR_INBOUND, 1, now, BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum),
			      BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id));
			si = bpf_map_lookup_elem(&socks, &key);
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
		tmp.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
		tmp.cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
		copy_owner(ev, &tmp);
	}
	read_tuple(sk, ev);
	ev->old_state = BPF_CORE_READ(sk, __sk_common.skc_state);
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
