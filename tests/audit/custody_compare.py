#!/usr/bin/env python3
"""Compares `custos audit custody --json` of one token with what the token
itself reports through pkcs11-tool (-L and --list-objects --login), field by
field: token kind, label, manufacturer, model, serial; each key's class,
type, bits (where pkcs11-tool shows them), label, id, sensitive, extractable,
always-sensitive, never-extractable, local; the certificates with its id;
its flags (software-keystore, ever-extractable, imported).
    custody_compare.py KIND MODULE TOKEN_LABEL CUSTODY.json SLOTS.txt OBJECTS.txt [empty-ok]
Prints one line per difference and the number of keys compared; exit 1 if
anything differs, or if no key was compared (unless empty-ok: a token that
holds none, and the report must then list none)."""
import json
import re
import sys

# The module a token kind is served by (docs/tokens.md).
MODULES = {"softhsm2": "libsofthsm2.so", "soft": "custos-soft.so", "tpm2": "libtpm2_pkcs11.so"}
# pkcs11-tool's key type names; tpm2-pkcs11's CKK_SHA256_HMAC (0x2b) it does not name.
TYPES = {"EC": "EC", "RSA": "RSA", "Generic secret": "HMAC", "unknown key algorithm 43": "HMAC"}
CLASSES = {"Private Key Object": "private-key", "Public Key Object": "public-key",
           "Secret Key Object": "secret-key", "Certificate Object": "certificate"}


def slot_of(text, label):
    """The -L fields of the slot whose token label is label."""
    for block in re.split(r"\nSlot ", text):
        f = {}
        for line in block.splitlines():
            m = re.match(r"\s+([a-z ]+?)\s*: (.*)$", line)
            if m:
                f[m.group(1)] = m.group(2).rstrip()
        if f.get("token label") == label:
            return f
    return None


def objects(text):
    """pkcs11-tool --list-objects: one dict per object."""
    out, cur = [], None
    for line in text.splitlines():
        m = re.match(r"^(Private Key Object|Public Key Object|Secret Key Object|Certificate Object);\s*(.*)$", line)
        if m:
            cur = {"class": CLASSES[m.group(1)], "head": m.group(2).strip(), "access": None}
            out.append(cur)
            continue
        m = re.match(r"^\s+(label|ID|Access|subject):\s*(.*)$", line)
        if cur is not None and m:
            k, v = m.group(1), m.group(2).strip()
            if k == "Access":
                cur["access"] = [a.strip() for a in v.split(",") if a.strip() and a.strip() != "none"]
            else:
                cur[k] = v
    return out


def key_type_bits(o, objs):
    """(type, bits or None) from the object's line, or its public twin's."""
    head = o["head"]
    m = re.match(r"^Generic secret length (\d+)", head)
    if m:
        return "HMAC", int(m.group(1)) * 8
    t = TYPES.get(head.split("  ")[0].strip(), "?" + head)
    for p in objs:
        if p["class"] == "public-key" and p.get("ID") == o.get("ID") and p.get("label") == o.get("label"):
            m = re.search(r"(EC_POINT|RSA) (\d+) bits", p["head"])
            if m:
                return t, int(m.group(2))
    return t, None


def main():
    kind, module, label, cpath, spath, opath = sys.argv[1:7]
    empty_ok = sys.argv[7:8] == ["empty-ok"]
    with open(cpath) as f:
        custody = json.load(f)
    with open(spath) as f:
        slot = slot_of(f.read(), label)
    with open(opath) as f:
        objs = objects(f.read())
    diffs = []

    def same(what, got, want):
        if got != want:
            diffs.append("%s: custody says %r, the token %r" % (what, got, want))

    if slot is None:
        print("pkcs11-tool -L shows no token labelled %r" % label)
        return 1
    if not module.endswith("/" + MODULES[kind]):
        diffs.append("token kind %s but its module is %s" % (kind, module))
    keys = [o for o in objs if o["class"] in ("private-key", "secret-key")]
    rows = custody["keys"]
    same("number of keys", len(rows), len(keys))
    certs = [o for o in objs if o["class"] == "certificate"]
    for o in keys:
        name = "%s %s/%s" % (o["class"], o.get("label"), o.get("ID"))
        match = [r for r in rows if r["class"] == o["class"] and r["label"] == o.get("label", "")
                 and r["id"] == o.get("ID", "")]
        if len(match) != 1:
            diffs.append("%s: %d rows in the custody report" % (name, len(match)))
            continue
        r = match[0]
        tok = r["token"]
        same(name + ": token kind", tok["kind"], kind)
        same(name + ": token label", tok["label"], slot["token label"])
        same(name + ": manufacturer", tok["manufacturer"].rstrip(), slot["token manufacturer"])
        same(name + ": model", tok["model"].rstrip(), slot["token model"])
        same(name + ": serial", tok["serial"], slot["serial num"])
        t, bits = key_type_bits(o, objs)
        same(name + ": type", r["type"], t)
        if bits is not None:
            same(name + ": bits", r["bits"], bits)
        acc = o["access"]
        if acc is None:
            diffs.append(name + ": pkcs11-tool shows no Access line")
            continue
        attr = {a: a in acc for a in ("sensitive", "extractable", "always sensitive", "never extractable", "local")}
        for a, v in attr.items():
            same(name + ": " + a, r[a.replace(" ", "_")], v)
        subjects = sorted("/" + c["subject"][len("DN: "):].replace(", ", "/") for c in certs
                          if c.get("ID") == o.get("ID") and c.get("subject", "").startswith("DN: "))
        same(name + ": certificates", sorted(s for s in r["certificates"].split("; ") if s), subjects)
        flags = []
        if kind == "soft":
            flags.append("software-keystore")
        # As the report defines them: an imported key is flagged imported (it
        # cannot be "never extractable"), a generated one ever-extractable
        # unless it was always sensitive and never extractable.
        if attr["extractable"] or (attr["local"] and not (attr["always sensitive"] and attr["never extractable"])):
            flags.append("ever-extractable")
        if not attr["local"]:
            flags.append("imported")
        same(name + ": flags", r["flags"], flags)
    if custody.get("errors"):
        diffs.append("the report could not read the token: %s" % custody["errors"])
    for d in diffs:
        print(d)
    print("%d keys compared, %d differences" % (len(keys), len(diffs)))
    return 1 if diffs or (not keys and not empty_ok) else 0


if __name__ == "__main__":
    sys.exit(main())
