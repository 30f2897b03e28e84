/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * THE shared header: every record the kernel side writes to the ring buffer.
 * Included by bpf/convis.bpf.c and native/addon.c; mirrored field by field in
 * src/bpf/events.ts. Sizes are asserted here and checked against the addon's
 * exported sizeof() values when the TypeScript side loads.
 *
 * Rules: fixed-width types only, padding spelled out, names carry units,
 * every record starts with struct convis_header and is a multiple of 8 bytes.
 */
#ifndef CONVIS_EVENTS_H
#define CONVIS_EVENTS_H

#define CONVIS_COMM_LEN 16
#define CONVIS_FILENAME_LEN 256
#define CONVIS_ARGS_LEN 512

enum convis_event_type {
	CONVIS_EV_EXEC = 1,
	CONVIS_EV_EXIT = 2,
	CONVIS_EV_FORK = 3,
	CONVIS_EV_TCP_CONNECT = 16,
	CONVIS_EV_TCP_ACCEPT = 17,
	CONVIS_EV_TCP_CLOSE = 18,
	/* a connect that failed: TCP after its SYN (state path) or any
	 * protocol in the connect() syscall itself (no route, EPERM, ...);
	 * the record's proto says which */
	CONVIS_EV_TCP_CONNECT_FAILED = 19,
	CONVIS_EV_TCP_UPDATE = 20,   /* an open connection moved bytes (sweep) */
	CONVIS_EV_TCP_LISTEN = 21,   /* a socket started listening */
	CONVIS_EV_TCP_UNLISTEN = 22, /* a listener closed */
	CONVIS_EV_UDP_UPDATE = 32,   /* a socket and remote endpoint moved datagrams (sweep) */
	CONVIS_EV_SWEEP_END = 48,    /* every update of one sweep is before this record */
	CONVIS_EV_DNS = 64,          /* a DNS answer (UDP from port 53) a process received */
};

enum convis_direction {
	CONVIS_DIR_UNKNOWN = 0,
	CONVIS_DIR_OUTBOUND = 1,
	CONVIS_DIR_INBOUND = 2,
	CONVIS_DIR_LISTEN = 3, /* a listening socket (kernel side only) */
};

/* struct convis_conn_event.flags */
#define CONVIS_F_OWNER_KNOWN (1 << 0) /* pid/comm/uid name the owning process */
#define CONVIS_F_START_SEEN (1 << 1)  /* duration counts from the first SYN */
#define CONVIS_F_EXISTING (1 << 2)    /* found by the start-up snapshot: older than the agent */

/*
 * Per-CPU drop and health counters (map "stats"); userspace sums them.
 * Every event the kernel side could not deliver lands in one of these.
 */
enum convis_stat {
	CONVIS_STAT_RB_DROP_CONN = 0, /* ring buffer full: connection event lost */
	CONVIS_STAT_RB_DROP_PROC = 1, /* ring buffer full: process event lost */
	CONVIS_STAT_SOCKS_FULL = 2,   /* socket map full: connection not tracked */
	CONVIS_STAT_UDP_FULL = 3,     /* UDP flow map full: datagrams not counted */
	CONVIS_STAT_RB_DROP_UPDATE = 4, /* ring buffer full: an update waits for the next sweep */
	CONVIS_STAT_RB_DROP_DNS = 5,  /* ring buffer full: a DNS answer lost (its names unknown) */
	CONVIS_STAT_SWEEP_RACES = 6,  /* a sweep found its socket closed and its entry reused: report abandoned (the close had the rest) */
	CONVIS_STAT_MAX = 8,
};

struct convis_header {
	__u16 type;   /* enum convis_event_type */
	__u16 size;   /* sizeof the whole record */
	__u32 pid;    /* tgid, host pid namespace; 0 when unknown */
	__u64 ts_ns;  /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
};
_Static_assert(sizeof(struct convis_header) == 16, "convis_header size");

/* exit and fork */
struct convis_task_event {
	struct convis_header hdr;
	__u32 ppid;
	__u32 uid;
	__s32 exit_code; /* exit: status >> 8; fork: 0 */
	__u32 _pad0;
	__u64 cgroup_id;
	char comm[CONVIS_COMM_LEN];
};
_Static_assert(sizeof(struct convis_task_event) == 56, "convis_task_event size");

struct convis_exec_event {
	struct convis_header hdr;
	__u32 ppid;
	__u32 uid;
	__u64 cgroup_id;
	char comm[CONVIS_COMM_LEN];
	__u16 filename_len; /* bytes in filename, NUL excluded */
	__u16 args_len;     /* bytes of NUL-separated argv read */
	__u32 _pad0;
	char filename[CONVIS_FILENAME_LEN];
	char args[CONVIS_ARGS_LEN];
};
_Static_assert(sizeof(struct convis_exec_event) == 824, "convis_exec_event size");

/*
 * connect, accept, close, connect_failed, listen, unlisten, and the sweep's
 * updates. Byte fields:
 *  - TCP: bytes_sent/bytes_received are the socket's lifetime totals at the
 *    event; delta_* what moved since the connection's previous report (what
 *    counters add: on an update and a close; 0 on existing connections).
 *  - UDP update: bytes_* and delta_* are both since the previous report.
 */
struct convis_conn_event {
	struct convis_header hdr;
	__u32 tid;
	__u32 uid;
	__u64 conn_id;   /* unique per tracked socket for the agent's lifetime */
	__u64 cgroup_id; /* the socket's cgroup v2 id (right even in softirq) */
	__u32 netns;     /* network namespace inode */
	__u16 family;    /* AF_INET or AF_INET6 */
	__u8 proto;      /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 direction;  /* enum convis_direction */
	__u8 saddr[16];  /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[16];  /* remote address */
	__u16 sport;     /* local port, host order */
	__u16 dport;     /* remote port, host order */
	__s32 error;     /* connect_failed: positive errno (0: aborted locally) */
	__u64 bytes_sent;     /* payload bytes, retransmissions excluded */
	__u64 bytes_received; /* payload bytes, FIN excluded */
	__u64 duration_ns;
	__u32 srtt_us;
	__u32 retransmits;    /* lifetime retransmitted segments */
	char comm[CONVIS_COMM_LEN];
	__u32 ppid;
	__u8 old_state;  /* TCP state before the transition that made the event */
	__u8 flags;      /* CONVIS_F_* */
	__u16 _pad0;
	__u64 delta_sent;       /* payload bytes since the previous report */
	__u64 delta_received;
	__u32 packets_sent;     /* UDP: datagrams since the previous report */
	__u32 packets_received;
	__u32 delta_retransmits; /* TCP: retransmitted segments since the previous report */
	__u32 _pad1;
};
_Static_assert(sizeof(struct convis_conn_event) == 176, "convis_conn_event size");

/* end of a sweep: the update records before it cover the interval */
struct convis_sweep_event {
	struct convis_header hdr;
	__u64 seq; /* sweeps since the agent started */
};
_Static_assert(sizeof(struct convis_sweep_event) == 24, "convis_sweep_event size");

/* a DNS answer as received: the UDP payload, cut at CONVIS_DNS_MAX bytes */
#define CONVIS_DNS_MAX 512
struct convis_dns_event {
	struct convis_header hdr;
	__u32 netns; /* the receiving task's network namespace (inode) */
	__u16 len;   /* payload bytes in data */
	__u16 pad;
	__u8 data[CONVIS_DNS_MAX];
};
_Static_assert(sizeof(struct convis_dns_event) == 536, "convis_dns_event size");

#endif /* CONVIS_EVENTS_H */
