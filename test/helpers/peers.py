#!/usr/bin/env python3
"""TCP peers for the privileged tests: real processes with known pids, ports
and byte counts.

  peers.py server HOST SEND RECV       listen on HOST:0, print "port N", accept
                                       one connection, read RECV bytes, send
                                       SEND bytes, wait for EOF, close
  peers.py client HOST PORT SEND RECV  connect, print "local PORT", send SEND
                                       bytes, read RECV bytes, close
  peers.py connect-exit HOST PORT      connect, print "local PORT", exit at once
                                       (the kernel closes the socket)
  peers.py refused HOST PORT           connect to a closed port, print the errno
  peers.py pair HOST                   a listener, a client and the accepted
                                       socket in one process; print "ports
                                       SERVER CLIENT", then obey stdin lines:
                                       "c2s N" / "s2c N" (send N bytes one way,
                                       read them on the other side, print "ok"),
                                       "close" (close all, print "closed")
  peers.py listen HOST                 listen, print "port N"; "close" on stdin
                                       closes it (prints "closed")
  peers.py backlog HOST                listen, print "port N", accept only when
                                       stdin says "accept", then read to EOF
                                       (prints "drained N"); "close" closes
  peers.py orphan HOST PORT N          connect, print "local PORT", queue up to N
                                       bytes without blocking (print "queued K"),
                                       close and exit: with a peer that does not
                                       read, the socket outlives its owner
  peers.py udp-server HOST COUNT REPLY receive COUNT datagrams (print "port N"
                                       first), answer each with REPLY bytes
  peers.py udp-client HOST PORT COUNT SIZE connected|unconnected
                                       print "local PORT", send COUNT datagrams
                                       of SIZE bytes (send or sendto), read the
                                       COUNT answers (recv or recvfrom)
  peers.py udp-connect HOST PORT       connect a UDP socket, print the errno
"""
import os
import socket
import sys


def family(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def read_exactly(conn, n):
    got = 0
    while got < n:
        chunk = conn.recv(min(65536, n - got))
        if not chunk:
            raise SystemExit(f"peer closed after {got} of {n} bytes")
        got += len(chunk)


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main():
    role = sys.argv[1]
    host = sys.argv[2]
    if role == "server":
        send, recv = int(sys.argv[3]), int(sys.argv[4])
        srv = socket.socket(family(host), socket.SOCK_STREAM)
        srv.bind((host, 0))
        srv.listen(16)
        out(f"port {srv.getsockname()[1]}")
        conn, _ = srv.accept()
        read_exactly(conn, recv)
        conn.sendall(b"s" * send)
        while conn.recv(65536):
            pass
        conn.close()
        srv.close()
        out("done")
    elif role == "client":
        port, send, recv = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        conn = socket.create_connection((host, port))
        out(f"local {conn.getsockname()[1]}")
        conn.sendall(b"c" * send)
        read_exactly(conn, recv)
        conn.close()
        out("done")
    elif role == "connect-exit":
        conn = socket.create_connection((host, int(sys.argv[3])))
        out(f"local {conn.getsockname()[1]}")
        os._exit(0)
    elif role == "refused":
        try:
            socket.create_connection((host, int(sys.argv[3])), timeout=30)
            out("connected")
        except OSError as e:
            out(f"errno {e.errno}")
    elif role == "pair":
        srv = socket.socket(family(host), socket.SOCK_STREAM)
        srv.bind((host, 0))
        srv.listen(4)
        cli = socket.create_connection((host, srv.getsockname()[1]))
        acc, _ = srv.accept()
        out(f"ports {srv.getsockname()[1]} {cli.getsockname()[1]}")
        for line in sys.stdin:
            cmd = line.split()
            if cmd[0] in ("c2s", "s2c"):
                a, b = (cli, acc) if cmd[0] == "c2s" else (acc, cli)
                a.sendall(b"p" * int(cmd[1]))
                read_exactly(b, int(cmd[1]))
                out("ok")
            elif cmd[0] == "close":
                cli.close()
                acc.recv(1)
                acc.close()
                srv.close()
                out("closed")
                return
    elif role == "listen":
        srv = socket.socket(family(host), socket.SOCK_STREAM)
        srv.bind((host, 0))
        srv.listen(4)
        out(f"port {srv.getsockname()[1]}")
        sys.stdin.readline()
        srv.close()
        out("closed")
    elif role == "backlog":
        srv = socket.socket(family(host), socket.SOCK_STREAM)
        srv.bind((host, 0))
        srv.listen(4)
        out(f"port {srv.getsockname()[1]}")
        conn = None
        for line in sys.stdin:
            if line.strip() == "accept":
                conn, _ = srv.accept()
                got = 0
                while True:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    got += len(chunk)
                out(f"drained {got}")
            elif line.strip() == "close":
                if conn:
                    conn.close()
                srv.close()
                out("closed")
                return
    elif role == "orphan":
        conn = socket.create_connection((host, int(sys.argv[3])))
        out(f"local {conn.getsockname()[1]}")
        conn.setblocking(False)
        queued, left = 0, int(sys.argv[4])
        while left > 0:
            try:
                n = conn.send(b"o" * min(left, 65536))
            except BlockingIOError:
                break
            queued += n
            left -= n
        out(f"queued {queued}")
        conn.close()
    elif role == "udp-server":
        count, reply = int(sys.argv[3]), int(sys.argv[4])
        s = socket.socket(family(host), socket.SOCK_DGRAM)
        s.bind((host, 0))
        out(f"port {s.getsockname()[1]}")
        for _ in range(count):
            _, peer = s.recvfrom(65536)
            s.sendto(b"r" * reply, peer)
        out("done")
    elif role == "udp-client":
        port, count, size, mode = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
        s = socket.socket(family(host), socket.SOCK_DGRAM)
        s.bind(("::" if ":" in host else "0.0.0.0", 0))
        out(f"local {s.getsockname()[1]}")
        if mode == "connected":
            s.connect((host, port))
        for _ in range(count):
            if mode == "connected":
                s.send(b"d" * size)
                s.recv(65536)
            else:
                s.sendto(b"d" * size, (host, port))
                s.recvfrom(65536)
        out("done")
    elif role == "udp-connect":
        s = socket.socket(family(host), socket.SOCK_DGRAM)
        try:
            s.connect((host, int(sys.argv[3])))
            out("connected")
        except OSError as e:
            out(f"errno {e.errno}")
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main()
