#!/usr/bin/env bash
# `custos audit sign/verify --key-uri pkcs11:...`: heads signed with an EC
# key that stays in a SoftHSM2 token, through the custos provider; a head
# signed by another key of the token fails verification naming that key;
# both keys given (a rotated audit key) verify; an edited record is found
# with the token key as with a PEM public key. Runs in the sanitizer build
# too (only the openssl command line needs the sanitizer runtime preloaded).
#   verify_token.sh path/to/bin
BIN=${1:?usage: verify_token.sh path/to/bin}
BIN=$(cd "$BIN" && pwd)
CUSTOS=$BIN/custos
MODS=$(cd "$BIN/../lib/ossl-modules" 2>/dev/null && pwd)
[ -n "$MODS" ] && [ -f "$MODS/custos.so" ] || { echo "skipped: no provider at $BIN/../lib/ossl-modules"; exit 77; }
command -v softhsm2-util >/dev/null || { echo "skipped: SoftHSM2 missing"; exit 77; }
command -v sqlite3 >/dev/null || { echo "skipped: sqlite3 missing"; exit 77; }
export OPENSSL_MODULES=$MODS CUSTOS_PIN=1234 CUSTOS_SO_PIN=12345678
. "$(dirname "$0")/../common/check.sh"
openssl_for "$MODS"
T=$(mktemp -d "${TMPDIR:-/tmp}/custos-auditkey.XXXXXX")
# (exit: an EXIT trap's own status is not the script's)
trap 'if [ "$fail" = 0 ]; then rm -rf "$T"; else echo "kept $T"; fi; summary; exit $?' EXIT
# Both streams in $T/out, which has() reads.
run() { # expected-rc description command...
  local want=$1 what=$2; shift 2
  "$@" >"$T/out" 2>&1; local rc=$?
  if [ "$rc" = "$want" ]; then ok "$what"; else bad "$what (exit $rc, wanted $want): $(head -c 600 "$T/out")"; fi
}
has() { if grep -q -- "$1" "$T/out"; then ok "$2"; else bad "$2: '$1' not in: $(head -c 600 "$T/out")"; fi; }

run 0 "a SoftHSM2 token" "$CUSTOS" token init --kind softhsm2 --label svc --dir "$T/tok"
export SOFTHSM2_CONF=$T/tok/softhsm2.conf
run 0 "the audit key, made in the token" "$CUSTOS" token keygen --dir "$T/tok" --type ec-p256 --label audit
AURI=$(tail -1 "$T/out")
run 0 "another key in the same token" "$CUSTOS" token keygen --dir "$T/tok" --type ec-p256 --label other
OURI=$(tail -1 "$T/out")
case "$AURI" in pkcs11:*object=audit*) ok "keygen printed the key's URI";; *) bad "keygen printed '$AURI'";; esac
# The key ids verify names: SHA-256 of each key's SubjectPublicKeyInfo.
kid() { $OSSL pkey -provider custos -provider default -in "$1" -pubout 2>/dev/null |
        openssl pkey -pubin -outform DER 2>/dev/null | sha256sum | cut -c1-16; }
AID=$(kid "$AURI"); OID=$(kid "$OURI")
[ ${#AID} = 16 ] && [ ${#OID} = 16 ] && [ "$AID" != "$OID" ] && ok "the public keys read through the provider" \
  || bad "public keys through the provider: '$AID' '$OID'"
$OSSL pkey -provider custos -provider default -in "$AURI" -pubout -out "$T/audit.pub" 2>/dev/null

S=$T/state
for i in 1 2 3; do "$CUSTOS" hub add "hub$i.example.net" --state "$S" >/dev/null || bad "hub add $i"; done
run 0 "the head signed with the token key" "$CUSTOS" audit sign --state "$S" --key-uri "$AURI"
run 0 "verify with the token key's URI" "$CUSTOS" audit verify --state "$S" --key-uri "$AURI"
has "audit log verifies: 4 records (seq 1..4), 1 signed heads, 1 signatures verified" "one signature verified"
run 0 "verify with its PEM public key agrees" "$CUSTOS" audit verify --state "$S" --pubkey "$T/audit.pub"
has "1 signatures verified" "the same signature verified"
run 1 "verify with the other key fails" "$CUSTOS" audit verify --state "$S" --key-uri "$OURI"
has "first bad record: 4 (bad head signature)" "at the head, record 4"
has "signed by key $AID" "naming the key that signed it"
# No key given: custosd's config names its audit key by URI (and where the
# provider is), and verify takes it from there; the other key's, and it fails.
printf 'state = %s\naudit-key = %s\nprovider-path = %s\n' "$S" "$AURI" "$MODS" >"$T/custosd.conf"
run 0 "verify --config: the config's audit-key URI" "$CUSTOS" audit verify --config "$T/custosd.conf"
has "1 signatures verified" "... checks the signature"
has "the config's audit-key" "... and says whose key it took"
printf 'state = %s\naudit-key = %s\n' "$S" "$OURI" >"$T/custosd.conf"
run 1 "verify --config with the other key's URI fails" "$CUSTOS" audit verify --config "$T/custosd.conf"

# A later head signed by the other key.
"$CUSTOS" hub add hub4.example.net --state "$S" >/dev/null || bad "hub add 4"
run 0 "a head signed with the other key" "$CUSTOS" audit sign --state "$S" --key-uri "$OURI"
run 1 "verify with the audit key fails at the other key's head" "$CUSTOS" audit verify --state "$S" --key-uri "$AURI"
has "first bad record: 5 (bad head signature)" "at record 5"
has "signed by key $OID.*not a given audit key" "naming the other key"
run 1 "... in JSON too" "$CUSTOS" audit verify --state "$S" --key-uri "$AURI" --json
has '"fault":"bad head signature","faultSeq":5' "JSON: the fault and its record"
run 0 "both keys given (a rotated audit key) verify" "$CUSTOS" audit verify --state "$S" --key-uri "$AURI" --key-uri "$OURI"
has "2 signed heads, 2 signatures verified" "both signatures verified"

# An edited record is found with the token key as with a file.
cp -r "$S" "$T/edited"
sqlite3 "$T/edited/custos.db" "update audit_log set payload = replace(payload, 'hub2', 'hubX') where seq = 3"
run 1 "an edited record fails with the token key" "$CUSTOS" audit verify --state "$T/edited" --key-uri "$AURI" --key-uri "$OURI"
has "first bad record: 3 (edited)" "at record 3"

# A URI that names no key is refused.
run 1 "a URI naming no key" "$CUSTOS" audit verify --state "$S" --key-uri "${AURI/object=audit/object=nothing}"
