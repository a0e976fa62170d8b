#!/usr/bin/env python3
"""An X.509 device that registers over one connection and polls over a
second that resumes the first one's TLS session, as SDKs do.

usage: resume.py PORT CA SCOPE CERT KEY REGID TLSVERSION(1.2|1.3)
Prints what it saw; exits 0 when the PUT got 202, the second connection
resumed the session, and the poll got 200.
"""
import socket
import ssl
import sys
import time
import json

port, ca, scope, cert, key, regid, ver = sys.argv[1:8]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)
v = ssl.TLSVersion.TLSv1_3 if ver == "1.3" else ssl.TLSVersion.TLSv1_2
ctx.minimum_version = ctx.maximum_version = v


def request(s, method, path, body=b""):
    s.sendall(b"%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (method, path, len(body), body))
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(4096)
    head, rest = data.split(b"\r\n\r\n", 1)
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, val = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(val)
    while len(rest) < n:
        rest += s.recv(4096)
    return int(head.split(b" ")[1]), rest


q = b"?api-version=2021-06-01"
s1 = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="localhost")
st, body = request(s1, b"PUT", b"/%s/registrations/%s/register%s" % (scope.encode(), regid.encode(), q),
                   b'{"registrationId":"%s"}' % regid.encode())
op = json.loads(body).get("operationId", "")
sess = s1.session
s1.close()  # no close_notify: what a device's TCP close looks like
time.sleep(0.3)  # let the server free the first connection
s2 = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(port))), server_hostname="localhost",
                     session=sess)
st2, body2 = request(s2, b"GET", b"/%s/registrations/%s/operations/%s%s" % (scope.encode(), regid.encode(),
                                                                           op.encode(), q))
reused = s2.session_reused
s2.close()
print("TLS %s: PUT %d, resumed %s, poll %d %s" % (ver, st, reused, st2, body2[:80]))
sys.exit(0 if st == 202 and reused and st2 == 200 else 1)
