#!/usr/bin/env bash
# custos token … end to end on a SoftHSM2 token in a private directory:
# what a user types, what they see, and the exit statuses scripts rely on.
set -u
CUSTOS=${1:?usage: token_cli.sh path/to/custos}
T=$(mktemp -d /tmp/cu-cli-XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/../common/check.sh"
# Token administration without --state is recorded in the store of ./var or
# $CUSTOS_STORE when there is one: run where there is none.
cd "$T" || exit 1
unset CUSTOS_STORE CUSTOS_STORE_PASSWORD_FILE

# PINs no hex digest, timestamp or random byte string can contain by chance:
# the audit checks below look for them in the log and the database.
export CUSTOS_PIN=user-pin-qz CUSTOS_SO_PIN=so-pin-qzqz
D=$T/tok
for cmd in init start stop list keygen import hmac-import destroy set-pin objects custody check; do
  expect_rc 0 "token $cmd --help" "$CUSTOS" token "$cmd" --help
  contains "$T/out" "^usage: custos token $cmd " "token $cmd --help prints its usage"
done

expect_rc 0 "init softhsm2 token" "$CUSTOS" token init --kind softhsm2 --label cli --dir "$D"
contains "$T/out" "^pkcs11:.*token=cli" "init prints the token URI"
contains "$T/out" "SOFTHSM2_CONF=$D" "init prints the environment line"
expect_rc 1 "init refuses a directory that holds a token" "$CUSTOS" token init --kind softhsm2 --label cli --dir "$D"

for type in ec-p256 ec-p384 rsa2048 hmac256; do
  expect_rc 0 "keygen $type" "$CUSTOS" token keygen --dir "$D" --type "$type" --label "k-$type"
  contains "$T/out" "object=k-$type" "keygen $type prints the key URI"
done
expect_rc 2 "keygen with an unknown type is a usage error" "$CUSTOS" token keygen --dir "$D" --type dsa --label x
contains "$T/err" "unknown key type 'dsa'" "unknown type is named"
expect_rc 2 "a PIN on argv is refused" "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label x --pin 1234
contains "$T/err" "never taken from the command line" "PIN refusal says why"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/k.pem" \
  -subj /CN=cli-device -days 1 -out "$T/c.pem" 2>/dev/null
expect_rc 0 "import a PEM certificate" "$CUSTOS" token import --dir "$D" --cert "$T/c.pem" --label devcert
echo garbage > "$T/junk.pem"
expect_rc 1 "import of a non-certificate fails" "$CUSTOS" token import --dir "$D" --cert "$T/junk.pem"
contains "$T/err" "not a PEM or DER X.509 certificate" "non-certificate is explained"

expect_rc 0 "objects" "$CUSTOS" token objects --dir "$D"
contains "$T/out" "devcert" "objects lists the certificate"
contains "$T/out" "k-rsa2048" "objects lists the keys"

expect_rc 0 "custody (json)" "$CUSTOS" token custody --dir "$D" --json
python3 - "$T/out" <<'PY' && ok "custody JSON: every generated key sensitive, never extractable, local, unflagged" || bad "custody JSON fields"
import json, sys
d = json.load(open(sys.argv[1]))
keys = {k["label"]: k for k in d["keys"]}
assert set(keys) == {"k-ec-p256", "k-ec-p384", "k-rsa2048", "k-hmac256"}, keys.keys()
for k in keys.values():
    assert k["sensitive"] and not k["extractable"] and k["always_sensitive"], k
    assert k["never_extractable"] and k["local"] and not k["flagged"], k
assert keys["k-rsa2048"]["bits"] == 2048 and keys["k-ec-p384"]["bits"] == 384
assert d["flagged"] == 0
PY

expect_rc 0 "list (json)" "$CUSTOS" token list --dir "$D" --json
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); t=[s for m in d['modules'] for s in m['slots'] if s.get('token',{}).get('label')=='cli']; assert t and 'CKM_ECDSA' in t[0]['mechanisms']" "$T/out" \
  && ok "list shows the token and its mechanisms" || bad "list JSON"

CUSTOS_PIN=wrong-pin-qz expect_rc 1 "a wrong PIN fails" "$CUSTOS" token objects --dir "$D"
contains "$T/err" "CKR_PIN_INCORRECT" "wrong PIN is reported with the token's code"
if grep -q wrong-pin-qz "$T/err"; then bad "the wrong PIN appears in the message"; else ok "the PIN is not in the message"; fi
expect_rc 1 "a missing token directory fails" "$CUSTOS" token objects --dir "$T/nope"
expect_rc 1 "a token URI that matches nothing fails" "$CUSTOS" token objects \
  "pkcs11:token=nope?module-path=/usr/lib/softhsm/libsofthsm2.so"
contains "$T/err" "no initialized token" "token not found is explained"

# Conformance report on a scratch SoftHSM2 configuration.
mkdir -p "$T/scratch/tokens"
printf 'directories.tokendir = %s/scratch/tokens\nobjectstore.backend = file\nlog.level = ERROR\n' "$T" > "$T/scratch/softhsm2.conf"
SOFTHSM2_CONF=$T/scratch/softhsm2.conf expect_rc 0 "check passes on SoftHSM2" \
  "$CUSTOS" token check --module /usr/lib/softhsm/libsofthsm2.so --json
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['failed']==0 and d['passed']>=20, d" "$T/out" \
  && ok "check JSON: no failure, every operation run" || bad "check JSON"
expect_rc 1 "check of a missing module fails" "$CUSTOS" token check --module "$T/none.so"
contains "$T/out" "FAIL" "the report names the failure"

# check --token on the test token, the PIN from the URI's pin-source (no
# CUSTOS_PIN): it passes and leaves the token's objects as they were.
printf '%s\n' "$CUSTOS_PIN" > "$T/pin"
count_objects() { "$CUSTOS" token objects --dir "$D" --json | python3 -c "import json,sys; print(len(json.load(sys.stdin)['objects']))"; }
before=$(count_objects)
URI=$(sed -n 's/^uri=//p' "$D/custos-token.conf")
SOFTHSM2_CONF=$D/softhsm2.conf expect_rc 0 "check --token with the URI's pin-source" \
  env -u CUSTOS_PIN "$CUSTOS" token check --module /usr/lib/softhsm/libsofthsm2.so --token "$URI&pin-source=file:$T/pin" --json
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['failed']==0 and d['passed']>=20, d" "$T/out" \
  && ok "check --token JSON: no failure" || bad "check --token JSON"
after=$(count_objects)
[ -n "$before" ] && [ "$before" = "$after" ] && ok "check --token leaves $before objects" || bad "objects before check: $before, after: $after"
SOFTHSM2_CONF=$D/softhsm2.conf expect_rc 1 "check --token without any PIN fails" \
  env -u CUSTOS_PIN "$CUSTOS" token check --module /usr/lib/softhsm/libsofthsm2.so --token "$URI"
contains "$T/out" "FAIL.*login.*no PIN" "... saying there is no PIN"

# Keys and certificates by positional URI (no --dir), parsed from --json.
SOFTHSM2_CONF=$D/softhsm2.conf expect_rc 0 "keygen rsa3072 by URI (json)" \
  "$CUSTOS" token keygen --type rsa3072 --label k-rsa3072 --json "$URI"
python3 - "$T/out" <<'PY' && ok "keygen JSON: an RSA-3072 private key and its URI" || bad "keygen JSON: $(cat "$T/out")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["class"] == "private-key" and d["type"] == "RSA" and d["bits"] == 3072, d
assert d["label"] == "k-rsa3072" and "object=k-rsa3072" in d["uri"] and "type=private" in d["uri"], d
PY
openssl x509 -in "$T/c.pem" -outform DER -out "$T/c.der"
SOFTHSM2_CONF=$D/softhsm2.conf expect_rc 0 "import a DER certificate by URI (json)" \
  "$CUSTOS" token import --cert "$T/c.der" --label dercert --id 0d0e --json "$URI"
python3 - "$T/out" <<'PY' && ok "import JSON: the certificate, its id and URI" || bad "import JSON: $(cat "$T/out")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["class"] == "cert" and d["label"] == "dercert" and d["id"] == "0d0e", d
assert "object=dercert" in d["uri"] and "type=cert" in d["uri"], d
PY
expect_rc 0 "objects list the DER certificate" "$CUSTOS" token objects --dir "$D"
contains "$T/out" "dercert" "the DER certificate is on the token"

U=$("$CUSTOS" token objects --dir "$D" --json | python3 -c "import json,sys; print([o['uri'] for o in json.load(sys.stdin)['objects'] if o['label']=='k-ec-p256' and o['class']=='private-key'][0])")
expect_rc 0 "bench sign" "$CUSTOS" bench sign --dir "$D" --uri "$U" --seconds 0.3 --json
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['custos']>0 and d['raw-C_Sign']>0, d" "$T/out" \
  && ok "bench reports the layer beside raw C_Sign" || bad "bench JSON"

# Token administration is audited in a state directory's log (--state).
expect_rc 0 "keygen with --state" "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label audited --state "$T/st"
CUSTOS_PIN=wrong-9173 expect_rc 1 "keygen with a wrong PIN and --state" "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label x --state "$T/st"
expect_rc 0 "audit export" "$CUSTOS" audit export --state "$T/st"
python3 - "$T/out" <<'PY' && ok "the log has the key generation and the refused PIN, no PIN" || bad "token events in the audit log"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert [r["type"] for r in recs] == ["token.keygen", "token.login-failed"], recs
assert "object=audited" in recs[0]["payload"]["key"] and recs[0]["payload"]["result"] == "ok"
assert recs[0]["actor"].startswith("cli:")
assert "wrong-9173" not in open(sys.argv[1]).read()
PY
expect_rc 0 "audit verify" "$CUSTOS" audit verify --state "$T/st"
# A PIN refused from the URI's pin-value: the record names the token by its
# URI, without the pin-value.
SOFTHSM2_CONF=$D/softhsm2.conf expect_rc 1 "keygen refused a pin-value in its URI, --state" \
  env -u CUSTOS_PIN "$CUSTOS" token keygen --type ec-p256 --label x --state "$T/st3" "$URI&pin-value=wrong-pv-8812"
expect_rc 0 "audit export" "$CUSTOS" audit export --state "$T/st3"
grep -q '"type":"token.login-failed".*"token":"pkcs11:[^"]*token=cli' "$T/out" && ok "... recorded, naming the token's URI" ||
  bad "... the record: $(cat "$T/out")"
if grep -q 'wrong-pv-8812\|pin-value' "$T/out"; then bad "... with the pin-value"; else ok "... without the pin-value"; fi

# Every token administration command takes --state: init, hmac-import,
# destroy, set-pin (and their refused PINs).
A=$T/st2 D2=$T/tok2
expect_rc 0 "init with --state" "$CUSTOS" token init --kind softhsm2 --label adm --dir "$D2" --state "$A"
head -c 32 /dev/urandom >"$T/hk"
expect_rc 0 "hmac-import with --state" "$CUSTOS" token hmac-import --dir "$D2" --key-file "$T/hk" --label hk --state "$A"
CUSTOS_PIN=wrong-5541 expect_rc 1 "hmac-import with a wrong PIN and --state" \
  "$CUSTOS" token hmac-import --dir "$D2" --key-file "$T/hk" --label hk2 --state "$A"
expect_rc 0 "keygen of a key to destroy" "$CUSTOS" token keygen --dir "$D2" --type ec-p256 --label doomed
expect_rc 2 "destroy of a URI that names no object is refused" "$CUSTOS" token destroy --dir "$D2" --uri "pkcs11:token=adm" --state "$A"
contains "$T/err" "names no object" "... and says why"
expect_rc 1 "destroy of a URI that matches nothing fails" "$CUSTOS" token destroy --dir "$D2" --uri "pkcs11:object=nope" --state "$A"
expect_rc 0 "destroy with --state" "$CUSTOS" token destroy --dir "$D2" --uri "pkcs11:object=doomed" --state "$A"
[ "$(grep -c 'object=doomed' "$T/out")" = 2 ] && ok "destroy prints both halves of the key pair" || bad "destroy printed: $(cat "$T/out")"
expect_rc 0 "objects after destroy" "$CUSTOS" token objects --dir "$D2"
if grep -q doomed "$T/out"; then bad "the destroyed key is still on the token"; else ok "the destroyed key is gone"; fi
contains "$T/out" " hk " "the other keys stay"
CUSTOS_PIN=wrong-5542 CUSTOS_NEW_PIN=never-pin-qz expect_rc 1 "set-pin with a wrong PIN and --state" "$CUSTOS" token set-pin --dir "$D2" --state "$A"
CUSTOS_NEW_PIN=new-pin-qz expect_rc 0 "set-pin with --state" "$CUSTOS" token set-pin --dir "$D2" --state "$A" --json
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); assert d['changed'] is True and d['token']['label']=='adm' and d['token']['serial'], d" "$T/out" \
  && ok "set-pin JSON: changed, and the token" || bad "set-pin JSON: $(cat "$T/out")"
expect_rc 1 "the old PIN no longer opens the token" "$CUSTOS" token objects --dir "$D2"
CUSTOS_PIN=new-pin-qz expect_rc 0 "the new PIN does" "$CUSTOS" token objects --dir "$D2"
expect_rc 0 "audit export of the administration" "$CUSTOS" audit export --state "$A"
python3 - "$T/out" "$A/custos.db" "$T/hk" <<'PY' && ok "init, import, destroy, PIN change and refused PINs recorded; no PIN or key" || bad "token administration in the audit log"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
got = [(r["type"], r["payload"]["result"]) for r in recs]
assert [t for t, _ in got] == ["token.init", "token.import", "token.login-failed", "token.destroy", "token.destroy",
                               "token.login-failed", "token.pin-change"], got
assert all(res == "ok" for t, res in got if t != "token.login-failed"), got
assert recs[2]["payload"]["result"] == recs[5]["payload"]["result"] == "PIN incorrect", got
assert "'adm'" in recs[0]["payload"]["token"] and "pkcs11:" in recs[0]["payload"]["token"], recs[0]
assert "object=hk;" in recs[1]["payload"]["key"] and "adm" in recs[1]["payload"]["token"], recs[1]
assert all("object=doomed" in r["payload"]["key"] for r in recs[3:5]), recs[3:5]
assert all(r["actor"].startswith("cli:") for r in recs)
text = open(sys.argv[1]).read()
db = open(sys.argv[2], "rb").read()
for secret in ("wrong-5541", "wrong-5542", "new-pin-qz", "never-pin-qz", "user-pin-qz", "so-pin-qzqz"):
    assert secret not in text and secret.encode() not in db, secret
assert open(sys.argv[3], "rb").read() not in db
PY
expect_rc 0 "audit verify of the administration" "$CUSTOS" audit verify --state "$A"

# Without --state the record goes to the store every other command opens:
# the one $CUSTOS_STORE names, else ./var/custos.db; only when it exists.
expect_rc 0 "keygen --help says where the record goes" "$CUSTOS" token keygen --help
contains "$T/out" 'without it in the$' "... without --state"
contains "$T/out" '^store every other command uses, the one \$CUSTOS_STORE names, else ./var/custos.db,$' "... which store"
mkdir "$T/nostore" && cd "$T/nostore" || exit 1
expect_rc 0 "keygen without --state, no store anywhere" "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label unrecorded
CUSTOS_STORE=sqlite:$T/nostore/none.db expect_rc 0 "keygen without --state, \$CUSTOS_STORE not there" \
  "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label unrecorded2
[ -z "$(ls -A "$T/nostore")" ] && ok "... no store made (no ./var, no \$CUSTOS_STORE file)" || bad "... made: $(ls -A "$T/nostore")"
n0=$("$CUSTOS" audit export --state "$A" | wc -l)
CUSTOS_STORE=sqlite:$A/custos.db expect_rc 0 "keygen without --state, \$CUSTOS_STORE an existing store" \
  "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label via-env
CUSTOS_STORE=sqlite:$A/custos.db CUSTOS_PIN=wrong-7731 expect_rc 1 "... and a refused PIN" \
  "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label x
[ -z "$(ls -A "$T/nostore")" ] && ok "... nothing made in the working directory" || bad "... made: $(ls -A "$T/nostore")"
expect_rc 0 "audit export of \$CUSTOS_STORE's store" "$CUSTOS" audit export --state "$A" --since-seq "$((n0 + 1))"
python3 - "$T/out" <<'PY' && ok "the keygen and the refused PIN are in \$CUSTOS_STORE's log" || bad "records without --state: $(cat "$T/out")"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert [(r["type"], r["payload"]["result"]) for r in recs] == [("token.keygen", "ok"), ("token.login-failed", "PIN incorrect")], recs
assert "object=via-env;" in recs[0]["payload"]["key"] and "wrong-7731" not in open(sys.argv[1]).read()
PY
if "$CUSTOS" audit export --state "$A" | grep -q unrecorded; then bad "a key made with no store was recorded"; else ok "the keys made with no store were not recorded"; fi
mkdir -p "$T/svc" && cd "$T/svc" || exit 1
expect_rc 0 "a store in ./var (keygen --state ./var)" "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label in-var --state ./var
expect_rc 0 "keygen without --state, ./var/custos.db there" "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label default-state
expect_rc 0 "audit export of ./var" "$CUSTOS" audit export
[ "$(grep -c '"token.keygen"' "$T/out")" = 2 ] && grep -q 'object=default-state;' "$T/out" \
  && ok "the keygen is in ./var's log" || bad "./var's log: $(cat "$T/out")"
cd "$T" || exit 1

# The custody report over the token directories of a state directory.
S=$T/state
expect_rc 0 "init a token under STATE/tokens" "$CUSTOS" token init --kind softhsm2 --label audit --dir "$S/tokens/a"
K=$("$CUSTOS" token keygen --dir "$S/tokens/a" --type ec-p256 --label signer --id c0ffee)
head -c 32 /dev/urandom > "$T/hmac.key"
expect_rc 0 "import a known HMAC key" "$CUSTOS" token hmac-import --dir "$S/tokens/a" --key-file "$T/hmac.key" --label imported
expect_rc 0 "store the signer's certificate under its id" "$CUSTOS" token import --dir "$S/tokens/a" --cert "$T/c.pem" --id c0ffee --label signer-cert
# A second token of the same kind: SoftHSM2 reads its configuration once per
# process, so the report must read each token directory on its own.
expect_rc 0 "a second SoftHSM2 token under STATE/tokens" "$CUSTOS" token init --kind softhsm2 --label audit-b --dir "$S/tokens/b"
expect_rc 0 "a key on it" "$CUSTOS" token keygen --dir "$S/tokens/b" --type rsa2048 --label b-key
expect_rc 0 "token list of two SoftHSM2 token directories" "$CUSTOS" token list --state "$S" --json
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); l={s['token']['label'] for m in d['modules'] for s in m['slots'] if s.get('token',{}).get('initialized')}; assert l=={'audit','audit-b'}, l" "$T/out" \
  && ok "both tokens listed, each with its own configuration" || bad "token list of two token directories"
expect_rc 0 "audit custody (json)" "$CUSTOS" audit custody --state "$S" --json
python3 - "$T/out" <<'PY' && ok "custody report: imported key flagged, certificate named, summary right" || bad "custody report JSON"
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]
assert s["tokens"] == 2 and s["keys"] == 3 and s["flagged"] == 1 and s["imported"] == 1, s
k = {x["label"]: x for x in d["keys"]}
assert k["imported"]["flags"] == ["imported"] and k["imported"]["local"] is False, k["imported"]
assert k["signer"]["flags"] == [] and "cli-device" in k["signer"]["certificates"], k["signer"]
assert k["signer"]["token"]["kind"] == "softhsm2" and k["signer"]["token"]["serial"], k["signer"]
assert k["b-key"]["token"]["label"] == "audit-b" and k["b-key"]["bits"] == 2048, k["b-key"]
PY
expect_rc 0 "audit custody (csv)" "$CUSTOS" audit custody --state "$S" --csv
contains "$T/out" "^token_kind,token_label,manufacturer" "CSV has its header"
[ "$(grep -vc '^#' "$T/out")" = 4 ] && ok "CSV has one line per key (after its # summary)" || bad "CSV line count"
expect_rc 0 "audit custody (html)" "$CUSTOS" audit custody --state "$S" --html
contains "$T/out" "<strong>Flagged</strong></td><td><strong>1</strong>" "HTML summary counts the flagged key"
if grep -Eq '(src|href)=' "$T/out"; then bad "HTML page loads something from outside"; else ok "HTML page is self-contained"; fi
expect_rc 1 "audit custody without tokens fails" "$CUSTOS" audit custody --state "$T/empty"
contains "$T/err" "no configured tokens" "no tokens is explained"
CUSTOS_PIN=0000 expect_rc 1 "a token that cannot be read makes the report fail" "$CUSTOS" audit custody --state "$S"
contains "$T/out" "could not be read" "the report says a token could not be read"

echo
summary
