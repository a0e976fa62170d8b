#!/usr/bin/env python3
"""A client that sends one byte a second, to see when custosd hangs up.

usage: trickle.py PORT CA MODE
MODE: hs   (the TLS ClientHello, a byte a second)
      req  (a handshake, then the request a byte a second)
      keep (a handshake and one request answered, then the next request a
            byte a second: the deadline starts again per request)
Prints the seconds from the start of the slow part to the hang-up and exits
0, or exits 1 when the server answered or was still there after 15 s.
"""
import select
import socket
import ssl
import sys
import time

port, ca, mode = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
REQ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Slow: " + b"x" * 40 + b"\r\n\r\n"
sock = socket.create_connection(("127.0.0.1", port))


def closed(s, wait):
    """True when the server hung up within wait seconds; exits 1 when it
    answered instead."""
    if not select.select([s], [], [], wait)[0]:
        return False
    try:
        data = s.recv(4096)
    except (OSError, ssl.SSLError):
        return True
    if data:
        print("answered: %r" % data[:80])
        sys.exit(1)
    return True


def trickle(s, data, send):
    start = time.monotonic()
    for b in data:
        try:
            send(bytes([b]))
        except OSError:
            print("%.1f" % (time.monotonic() - start))
            return
        if closed(s, 1):
            print("%.1f" % (time.monotonic() - start))
            return
        if time.monotonic() - start > 15:
            break
    print("still connected after %.1f s" % (time.monotonic() - start))
    sys.exit(1)


if mode == "hs":
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    trickle(sock, out.read(), sock.sendall)
else:
    s = ctx.wrap_socket(sock, server_hostname="localhost")
    if mode == "keep":
        s.sendall(REQ)
        if b" 200 " not in s.recv(4096):
            print("the first request was not answered 200")
            sys.exit(1)
    trickle(s, REQ, s.sendall)
