#!/usr/bin/env python3
"""A TLS man in the middle for tests: presents custosd's own certificate,
forwards each request to custosd, and alters one byte in the encrypted
duplicate (field 3) of every TPM challenge it passes back, so that the
device's TPM must reject the import. Prints its port, then serves until
killed. Usage: tamper_proxy.py CERT KEY UPSTREAM_HOST:PORT CA"""
import base64, json, socket, ssl, struct, sys, threading

cert, key, upstream, ca = sys.argv[1:5]
uhost, uport = upstream.rsplit(":", 1)


def read_request(f):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = f.readline()
        if not line:
            return None
        head += line
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            n = int(line.split(b":", 1)[1])
    return head, f.read(n) if n else b""


def tamper(blob_b64):
    raw = bytearray(base64.b64decode(blob_b64))
    off = 0
    for _ in range(2):  # skip fields 1 and 2
        off += 2 + struct.unpack(">H", raw[off:off + 2])[0]
    raw[off + 2 + 4 + 3] ^= 0x5A  # a byte inside field 3's HMAC
    return base64.b64encode(bytes(raw)).decode()


def serve(conn):
    try:
        f = conn.makefile("rb")
        req = read_request(f)
        if req is None:
            return
        head, body = req
        up = ssl.create_default_context(cafile=ca)
        up.check_hostname = False
        with socket.create_connection((uhost, int(uport))) as s, up.wrap_socket(s) as u:
            lines = [l for l in head.split(b"\r\n") if l and not l.lower().startswith(b"connection:")]
            u.sendall(b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n" + body)
            resp = b""
            while True:
                d = u.recv(65536)
                if not d:
                    break
                resp += d
        rhead, _, rbody = resp.partition(b"\r\n\r\n")
        status = rhead.split(b" ", 2)[1]
        if status == b"401" and b"authenticationKey" in rbody:
            j = json.loads(rbody)
            j["authenticationKey"] = tamper(j["authenticationKey"])
            rbody = json.dumps(j).encode()
        keep = [l for l in rhead.split(b"\r\n")
                if not l.lower().startswith((b"content-length:", b"connection:", b"transfer-encoding:"))]
        conn.sendall(b"\r\n".join(keep) + b"\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(rbody)
                     + rbody)
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(8)
print(ls.getsockname()[1], flush=True)
while True:
    c, _ = ls.accept()
    try:
        c = ctx.wrap_socket(c, server_side=True)
    except (OSError, ssl.SSLError):
        c.close()
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
