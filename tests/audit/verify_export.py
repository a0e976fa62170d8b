#!/usr/bin/env python3
"""Re-verifies an exported audit log (JSON lines on stdin) with nothing but
the canonical form of docs/audit.md: an independent check of the format.
Prints the number of records verified, or the first bad one (exit 1)."""
import hashlib
import json
import struct
import sys


def lp(s):
    b = s.encode()
    return struct.pack(">I", len(b)) + b


prev = bytes(32)
expect = None
n = 0
for line in sys.stdin:
    r = json.loads(line)
    payload = json.dumps(r["payload"], separators=(",", ":"), ensure_ascii=False)
    canon = (b"custos-audit-v1\0" + struct.pack(">Q", r["seq"]) + lp(r["at"]) + lp(r["type"])
             + lp(r["actor"]) + lp(payload) + bytes.fromhex(r["prev"]))
    if expect is not None and r["seq"] != expect:
        sys.exit(f"record {expect} missing")
    if expect is not None and bytes.fromhex(r["prev"]) != prev:
        sys.exit(f"record {r['seq']}: broken link")
    h = hashlib.sha256(canon).digest()
    if h.hex() != r["hash"]:
        sys.exit(f"record {r['seq']}: hash mismatch")
    prev, expect, n = h, r["seq"] + 1, n + 1
print(f"{n} records verified")
