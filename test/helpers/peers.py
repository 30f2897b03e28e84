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
    else:
        raise SystemExit(f"unknown role {role}")


if __name__ == "__main__":
    main()
