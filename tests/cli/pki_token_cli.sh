#!/usr/bin/env bash
# custos pki with every key in a token (SoftHSM2 or the Custos software
# keystore): the chain verifies, each key sits in the token as generated
# there (sensitive, never extractable, local) and matches its certificate,
# CA keys sign through the provider; bad input fails clearly and leaves no
# file and no token object behind.
#   usage: pki_token_cli.sh softhsm2|soft path/to/custos
set -u
KIND=${1:?usage: pki_token_cli.sh softhsm2|soft path/to/custos}
CUSTOS=${2:?usage: pki_token_cli.sh softhsm2|soft path/to/custos}
PROVIDERS=$(cd "$(dirname "$CUSTOS")/../lib/ossl-modules" && pwd)
T=$(mktemp -d /tmp/cu-pki-XXXXXX)
trap 'rm -rf "$T"' EXIT
. "$(dirname "$0")/../common/check.sh"
absent() { # path description
  if [ -e "$1" ]; then bad "$2: $1 exists"; else ok "$2"; fi
}
objects() { "$CUSTOS" token objects --dir "$D" | tail -n 1; }
# openssl loading custos.so: in ASan builds with the sanitizer runtimes
# preloaded (CUSTOS_OSSL_PRELOAD), leak checking off for that foreign process.
ossl() {
  if [ -n "${CUSTOS_OSSL_PRELOAD:-}" ]; then
    LD_PRELOAD="$CUSTOS_OSSL_PRELOAD" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 openssl "$@"
  else
    openssl "$@"
  fi
}

unset CUSTOS_PIN
printf 'user-pin-qz\n' >"$T/pin"
chmod 600 "$T/pin"
export CUSTOS_SO_PIN=87654321
D=$T/tok
expect_rc 0 "init a $KIND token" "$CUSTOS" token init --kind "$KIND" --label pki --dir "$D" --pin-source "$T/pin"
# The token's module reads its store from the environment (SOFTHSM2_CONF, CUSTOS_SOFT_DIR).
while IFS= read -r line; do export "${line#env.}"; done < <(grep '^env\.' "$D/custos-token.conf")
export CUSTOS_PIN=user-pin-qz
O=$T/chain
P=(-provider-path "$PROVIDERS" -provider custos -provider default)

# ---- a chain with every key in the token ----
expect_rc 0 "pki chain --token-dir" "$CUSTOS" pki chain --out "$O" --devices 2 --token-dir "$D" --pin-source "$T/pin"
for n in root factory-1 factory-1-line-1 device-1 device-2; do
  contains "$T/out" "^  $n  *pkcs11:.*object=$n;type=private" "the URI of key $n is printed"
  if [ -s "$O/$n.uri" ] && grep -q "^pkcs11:.*object=$n;type=private" "$O/$n.uri"; then ok "$n.uri records the key's URI"
  else bad "$n.uri"; fi
  absent "$O/$n.key" "no key file for $n"
done
if grep -q "pin-value\|user-pin-qz" "$T/out" "$O"/*.uri; then bad "a PIN is printed or recorded"; else ok "no PIN in the output or the .uri files"; fi
for i in 1 2; do
  if openssl verify -CAfile "$O/root.pem" -untrusted "$O/device-$i-chain.pem" "$O/device-$i.pem" >/dev/null 2>&1
  then ok "device-$i's chain verifies with openssl verify"; else bad "device-$i's chain does not verify"; fi
done
if openssl verify -CAfile "$O/root.pem" "$O/device-1.pem" >/dev/null 2>&1; then
  bad "a leaf verifies without its intermediates"
else ok "without its intermediates the leaf does not verify (the chain is real)"; fi

# The device key in the token is the certificate's key.
KURI="$(cat "$O/device-1.uri")&pin-source=file:$T/pin"
ossl pkey "${P[@]}" -in "$KURI" -pubout -out "$T/tok.pub" 2>"$T/err"
openssl x509 -in "$O/device-1.pem" -noout -pubkey >"$T/cert.pub"
if [ -s "$T/tok.pub" ] && cmp -s "$T/tok.pub" "$T/cert.pub"; then ok "device-1's token key matches its certificate"
else bad "device-1's token key vs certificate: $(head -c 300 "$T/err")"; fi
# ... and it signs: a signature made in the token verifies with the certificate.
echo "to be signed" >"$T/msg"
if ossl dgst "${P[@]}" -sha256 -sign "$KURI" -out "$T/sig" "$T/msg" 2>"$T/err" &&
   openssl dgst -sha256 -verify "$T/cert.pub" -signature "$T/sig" "$T/msg" >/dev/null 2>&1
then ok "device-1 signs in the token, verified with its certificate"; else bad "device-1 signature: $(head -c 300 "$T/err")"; fi

# The certificates are on the token too, beside their keys.
CURI="$(sed 's/type=private/type=cert/' "$O/factory-1.uri")&pin-source=file:$T/pin"
if [ "$(ossl x509 "${P[@]}" -in "$CURI" -noout -fingerprint -sha256 2>/dev/null)" = \
     "$(openssl x509 -in "$O/factory-1.pem" -noout -fingerprint -sha256)" ]; then
  ok "factory-1's certificate is stored on the token beside its key"
else bad "factory-1's certificate on the token"; fi

expect_rc 0 "custody (json)" "$CUSTOS" token custody --dir "$D" --json
python3 - "$T/out" <<'PY' && ok "custody: the 5 keys are sensitive, never extractable, local, unflagged" || bad "custody JSON"
import json, sys
d = json.load(open(sys.argv[1]))
keys = {k["label"]: k for k in d["keys"]}
assert set(keys) == {"root", "factory-1", "factory-1-line-1", "device-1", "device-2"}, keys.keys()
for k in keys.values():
    assert k["class"] == "private-key" and k["type"] == "EC" and k["bits"] == 256, k
    assert k["sensitive"] and not k["extractable"] and k["always_sensitive"], k
    assert k["never_extractable"] and k["local"] and not k["flagged"], k
assert d["flagged"] == 0
PY
BEFORE=$(objects)

# ---- a CA key in the token signs one more certificate, and a proof of possession ----
expect_rc 0 "issue a device with the line's key in the token" "$CUSTOS" pki issue --cn device-9 \
  --out "$O/device-9" --issuer-cert "$O/factory-1-line-1.pem" --issuer-key "$(cat "$O/factory-1-line-1.uri")" \
  --token-dir "$D" --json
python3 - "$T/out" "$O/device-9.uri" <<'PY' && ok "issue --json names the new key and its URI" || bad "issue --json: $(head -c 300 "$T/out")"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["keysIn"] == "token" and len(d["keys"]) == 1, d
assert d["keys"][0]["label"] == "device-9" and d["keys"][0]["uri"] == open(sys.argv[2]).read().strip(), d
PY
cat "$O/factory-1-line-1.pem" "$O/factory-1.pem" >"$T/inter.pem"
if openssl verify -CAfile "$O/root.pem" -untrusted "$T/inter.pem" "$O/device-9.pem" >/dev/null 2>&1
then ok "the new device certificate verifies"; else bad "device-9 does not verify"; fi
contains "$O/device-9.uri" "object=device-9;type=private" "issue labels the key by its file name"
expect_rc 0 "a verification certificate signed by the root's token key" "$CUSTOS" pki verification-cert \
  --ca-cert "$O/root.pem" --ca-key "$(cat "$O/root.uri")" --code 0A1B2C3D --out "$T/proof.pem" --token-dir "$D"
if openssl verify -CAfile "$O/root.pem" -partial_chain "$T/proof.pem" >/dev/null 2>&1 &&
   openssl x509 -in "$T/proof.pem" -noout -subject | grep -q "CN *= *0A1B2C3D"
then ok "the proof verifies against the root and carries the code"; else bad "the proof"; fi
BEFORE=$(objects)

# ---- bad input: a clear error, nothing written ----
expect_rc 1 "a label already on the token is refused" "$CUSTOS" pki chain --out "$T/o2" --devices 2 --token-dir "$D"
contains "$T/err" "already holds .* labelled 'root'" "the clash names the label"
absent "$T/o2" "the clash wrote no file"
[ "$(objects)" = "$BEFORE" ] && ok "the clash made no token object" || bad "objects after the clash: $(objects)"

# A clash further down (device-2) is found before any key is made.
expect_rc 0 "(set-up: a key labelled x2-device-2)" "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label x2-device-2
BEFORE=$(objects)
expect_rc 1 "... refused" "$CUSTOS" pki chain --out "$T/o2" --devices 2 --token-dir "$D" --label-prefix x2-
contains "$T/err" "labelled 'x2-device-2'" "the clash names the device's label"
[ "$(objects)" = "$BEFORE" ] && ok "... and made no token object" || bad "objects: $(objects)"
absent "$T/o2" "... and wrote no file"

CUSTOS_PIN=wrong-pin-qz expect_rc 1 "a wrong PIN fails" "$CUSTOS" pki seed --out "$T/o3" --token-dir "$D"
contains "$T/err" "CKR_PIN_INCORRECT" "the wrong PIN is reported with the token's code"
if grep -q wrong-pin-qz "$T/err"; then bad "the wrong PIN appears in the message"; else ok "the PIN is not in the message"; fi
absent "$T/o3" "a wrong PIN writes no file"
expect_rc 1 "a missing token directory fails" "$CUSTOS" pki seed --out "$T/o3" --token-dir "$T/nope"
contains "$T/err" "nope" "the missing directory is named"
absent "$T/o3" "a missing token writes no file"
MOD=$(sed -n 's/^module=//p' "$D/custos-token.conf")
expect_rc 1 "a token URI that matches nothing fails" "$CUSTOS" pki seed --out "$T/o3" --token "pkcs11:token=nope?module-path=$MOD"
contains "$T/err" "no initialized token" "token not found is explained"
absent "$T/o3" "... and writes no file"
expect_rc 2 "--token must be a pkcs11: URI" "$CUSTOS" pki seed --out "$T/o3" --token "$D"
expect_rc 2 "--label-prefix needs a token" "$CUSTOS" pki seed --out "$T/o3" --label-prefix y-
expect_rc 1 "an issuer URI with no key there fails" "$CUSTOS" pki issue --cn z --out "$T/z" \
  --issuer-cert "$O/root.pem" --issuer-key "$(sed 's/object=root/object=nothing/' "$O/root.uri")" --token-dir "$D"
absent "$T/z.pem" "... and writes no certificate"

# A failure after keys were made (device-2.pem cannot be written) removes them again.
BEFORE=$(objects)
mkdir -p "$T/o4/device-2.pem"
expect_rc 1 "a write failure half-way fails" "$CUSTOS" pki chain --out "$T/o4" --devices 3 --token-dir "$D" --label-prefix w-
[ "$(objects)" = "$BEFORE" ] && ok "the keys it had made are removed from the token" || bad "objects after the failure: $(objects) vs $BEFORE"
[ "$(ls "$T/o4")" = "device-2.pem" ] && ok "the files it had written are removed" || bad "left in o4: $(ls "$T/o4")"

# ---- keys in files still work ----
expect_rc 0 "pki seed with keys in files" "$CUSTOS" pki seed --out "$T/files"
[ "$(stat -c %a "$T/files/device-4.key")" = 600 ] && ok "key files are 0600" || bad "key file mode"
openssl verify -CAfile "$T/files/root.pem" -untrusted "$T/files/device-4-chain.pem" "$T/files/device-4.pem" >/dev/null 2>&1 \
  && ok "the file chain verifies" || bad "the file chain"

summary
