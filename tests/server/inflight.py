#!/usr/bin/env python3
"""SIGTERM with a registration in flight on a keep-alive connection.

usage: inflight.py PORT CA PID PATH AUTH HOOKLOG WATCHERS OUT

Opens WATCHERS keep-alive connections, each asking GET /healthz once (so
that some sit on a worker other than the busy one); then on one more
keep-alive connection (after a /healthz of its own) sends PUT PATH with
AUTH, waits until the allocation webhook has the request (HOOKLOG is not
empty: the registration is in flight), sends SIGTERM to PID, asks /healthz
again on every watcher, and reads every answer to the end. Writes to OUT,
one line each: "put STATUS CONNECTION BODY-COMPLETE EOF-AFTER" and
"watch STATUS CONNECTION" (STATUS 0 when no answer came)."""
import os
import signal
import socket
import ssl
import sys
import time

port, ca, pid, path, auth, hooklog, n, out = sys.argv[1:9]
port, pid, n = int(port), int(pid), int(n)
ctx = ssl.create_default_context(cafile=ca)


def connect():
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
    s.settimeout(15)
    return s


def read_answer(s):
    """(status, connection header, body complete, buffer after) or status 0."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            d = s.recv(4096)
            if not d:
                return 0, "", False
            data += d
        head, body = data.split(b"\r\n\r\n", 1)
        lines = head.decode(errors="replace").split("\r\n")
        status = int(lines[0].split()[1])
        hdr = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdr[k.strip().lower()] = v.strip()
        want = int(hdr.get("content-length", "0"))
        while len(body) < want:
            d = s.recv(4096)
            if not d:
                break
            body += d
        return status, hdr.get("connection", "-"), len(body) == want
    except (OSError, ValueError, IndexError):
        return 0, "", False


def ask(s, method, p, extra=b"", body=b""):
    s.sendall(b"%s %s HTTP/1.1\r\nHost: localhost\r\n%sContent-Length: %d\r\n\r\n%s"
              % (method, p.encode(), extra, len(body), body))


watchers = []
for _ in range(n):
    w = connect()
    ask(w, b"GET", "/healthz")
    if read_answer(w)[0] == 200:
        watchers.append(w)
put = connect()
ask(put, b"GET", "/healthz")
read_answer(put)
ask(put, b"PUT", path, b"Authorization: %s\r\nContent-Type: application/json\r\n" % auth.encode(), b"{}")
for _ in range(200):
    if os.path.exists(hooklog) and os.path.getsize(hooklog) > 0:
        break
    time.sleep(0.02)
os.kill(pid, signal.SIGTERM)
time.sleep(0.3)  # custosd has seen it: the listeners are closed, "stopping" is set
for w in watchers:
    try:
        ask(w, b"GET", "/healthz")
    except OSError:
        pass
status, conn, complete = read_answer(put)
try:
    eof = put.recv(1) == b""
except OSError:
    eof = True
lines = ["put %d %s %s %s" % (status, conn, complete, eof)]
for w in watchers:
    st, c, _ = read_answer(w)
    lines.append("watch %d %s" % (st, c or "-"))
with open(out, "w") as f:
    f.write("\n".join(lines) + "\n")
