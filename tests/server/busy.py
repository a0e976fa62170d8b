#!/usr/bin/env python3
"""A provisioning service that is busy once: the first request is answered
503 with Retry-After: WAIT, every later one 200 with an assigned
registration (as custosd's register-reply = final would). Serves TLS with
the given certificate and key on ADDR, port printed on stdout; each request
is logged to LOG as "SECONDS METHOD PATH", so the test can see when the
client came back.

usage: busy.py ADDR CERT KEY LOG WAIT"""
import http.server
import json
import socketserver
import ssl
import sys
import time

addr, cert, key, log, wait = sys.argv[1:6]
seen = 0


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        global seen
        n = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(n)
        with open(log, "a") as f:
            f.write("%.3f %s %s\n" % (time.time(), self.command, self.path))
        seen += 1
        if seen == 1:
            code, extra = 503, {"Retry-After": wait}
            body = {"errorCode": 503000, "message": "busy", "trackingId": "busy-1"}
        else:
            rid = self.path.split("/")[3]
            code, extra = 200, {}
            body = {"operationId": "busy-op", "status": "assigned",
                    "registrationState": {"registrationId": rid, "status": "assigned",
                                          "assignedHub": "busy.hub", "deviceId": rid}}
        data = json.dumps(body).encode()
        self.send_response(code)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_PUT = do_GET = answer

    def log_message(self, *a):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


srv = Server((addr, 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(srv.server_address[1], flush=True)
srv.serve_forever()
