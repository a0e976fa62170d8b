#!/usr/bin/env python3
"""A custom-allocation webhook on loopback (plain HTTP): logs each request
body to LOG (one line each), waits SLEEP seconds (to hold a registration in
flight), then assigns HUB and hands the device's payload back as the
registration's payload. Port printed on stdout.

usage: webhook.py LOG SLEEP HUB"""
import http.server
import json
import socketserver
import sys
import time

log, pause, hub = sys.argv[1], float(sys.argv[2]), sys.argv[3]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        req = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with open(log, "a") as f:
            f.write(req.decode() + "\n")
        time.sleep(pause)
        ctx = json.loads(req).get("deviceRuntimeContext", {})
        ans = {"iotHubHostName": hub}
        if "payload" in ctx:
            ans["payload"] = {"echo": ctx["payload"]}
        data = json.dumps(ans).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *a):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


srv = Server(("127.0.0.1", 0), Handler)
print(srv.server_address[1], flush=True)
srv.serve_forever()
