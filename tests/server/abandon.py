#!/usr/bin/env python3
"""Clients that send a registration and leave without reading the answer.

usage: abandon.py PORT CA SCOPE MODE N
MODE: close  (TCP close, no TLS close_notify: what a killed device does)
      notify (close_notify, then close)
      rst    (an abortive close: SO_LINGER 0)
Each of the N clients sends one PUT and goes away at once; a resetting
client first gives the server a moment to read the request, since a reset
that arrives first makes the kernel drop the request unread.
"""
import socket
import ssl
import struct
import sys
import time

port, ca, scope, mode, n = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
for i in range(n):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    body = b'{"registrationId":"gone-%d"}' % i
    s.sendall(b"PUT /%s/registrations/gone-%d/register?api-version=2021-06-01 HTTP/1.1\r\n"
              b"Host: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
              % (scope.encode(), i, len(body), body))
    if mode == "rst":
        time.sleep(0.05)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    elif mode == "notify":
        try:
            s = s.unwrap()
        except (ssl.SSLError, OSError):
            pass
    s.close()
