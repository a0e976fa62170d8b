#!/usr/bin/env bash
# custosd's audit key: with the keyring in a token and no audit-key set,
# made in that token (label custos-audit) on first start and used from
# there after, no key file written; with a file keyring, a file key and a
# warning. Skipped (77) until the provider is built.
BIN=${1:?usage: auditkey.sh path/to/bin}
MODS=$(cd "$BIN/../lib/ossl-modules" 2>/dev/null && pwd)
if [ -z "$MODS" ] || [ ! -f "$MODS/custos.so" ]; then
  echo "skipped: no provider at $BIN/../lib/ossl-modules/custos.so"; exit 77
fi
. "$(dirname "$0")/lib.sh"
export OPENSSL_MODULES=$MODS CUSTOS_PIN=1234 CUSTOS_SO_PIN=12345678
openssl_for "$MODS"
V='api-version=2021-06-01'
J='Content-Type: application/json'
GK=$(openssl rand -base64 64 | tr -d '\n'); echo "$GK" >"$T/gk"
# Some history: a group and its devices registering (records, and a signed
# head every 3 of them).
history() { # STATE TAG
  expect_rc 0 "$2: a group" "$CUSTOS" group create "grp-$2" --attestation symmetricKey --primary-key-file "$T/gk" --state "$1"
  for d in "$2-1" "$2-2" "$2-3"; do
    expect_http 200 "$2: $d registers" PUT "/$SCOPE/registrations/$d/register?$V" -H "$J" \
      -H "Authorization: $(sas "$SCOPE" "$d" "$(derive "$GK" "$d")" $(( $(date +%s) + 600 )))" -d "{\"registrationId\":\"$d\"}"
  done
}

expect_rc 0 "a SoftHSM2 token" "$CUSTOS" token init --kind softhsm2 --label custosd --dir "$T/tok"
export SOFTHSM2_CONF=$T/tok/softhsm2.conf
head -c 32 /dev/urandom >"$T/kr.raw"
expect_rc 0 "the store key, imported into the token" "$CUSTOS" token hmac-import --dir "$T/tok" --key-file "$T/kr.raw" --label store-seal
KRURI=$(tail -1 "$T/out"); rm -f "$T/kr.raw"
# The command line finds the keyring as custosd does.
export CUSTOS_KEYRING_URI=$KRURI

# ---- keyring in the token, no audit-key: the audit key is made there ----
STATE=$T/var
CONF=("keyring = $KRURI" "provider-path = $MODS" "audit-sign-every = 3" "register-reply = final")
start_server "$STATE" "${CONF[@]}"
history "$STATE" a
stop_server TERM
[ -e "$STATE/audit.key" ] && bad "an audit key file was written" || ok "no audit key file"
expect_rc 0 "the token lists its keys" "$CUSTOS" token objects --dir "$T/tok" --json
N=$(grep -o '"label":"custos-audit"' "$T/out" | wc -l)
[ "$N" -ge 1 ] && ok "a key labelled custos-audit is in the token" || bad "no custos-audit key in the token: $(head -c 600 "$T/out")"
AURI=$(printf '%s' "$KRURI" | sed -E 's/;id=[^;?]*//; s/;type=[^;?]*//; s/object=[^;?]*/object=custos-audit;type=private/')
$OSSL pkey -provider custos -provider default -in "$AURI" -pubout >"$T/tokpub" 2>"$T/err"
[ -s "$T/tokpub" ] && ok "its public key, from the token" || bad "no public key from $AURI: $(cat "$T/err")"
cmp -s "$T/tokpub" "$STATE/audit.pub" && ok "STATE/audit.pub is the token key's" || bad "audit.pub is not the token key's"
expect_rc 0 "the chain verifies with the token's public key" "$CUSTOS" audit verify --state "$STATE" --pubkey "$T/tokpub" --json
grep -q '"heads":0[,}]' "$T/out" && bad "no signed heads: $(cat "$T/out")" || ok "with signed heads"
"$CUSTOS" pki issue --cn other --out "$T/other" >/dev/null 2>&1
openssl pkey -in "$T/other.key" -pubout >"$T/otherpub" 2>/dev/null
expect_rc 1 "and not with another key" "$CUSTOS" audit verify --state "$STATE" --pubkey "$T/otherpub"

# Restarted: the same key, not another one.
start_server "$STATE" "${CONF[@]}"
history "$STATE" b
stop_server TERM
expect_rc 0 "the token lists its keys again" "$CUSTOS" token objects --dir "$T/tok" --json
N2=$(grep -o '"label":"custos-audit"' "$T/out" | wc -l)
[ "$N2" = "$N" ] && ok "no second audit key after a restart" || bad "$N2 custos-audit keys after a restart (was $N)"
cmp -s "$T/tokpub" "$STATE/audit.pub" && ok "audit.pub unchanged" || bad "audit.pub changed on restart"
expect_rc 0 "the whole chain verifies with the token's public key" "$CUSTOS" audit verify --state "$STATE" --pubkey "$T/tokpub"
[ -e "$STATE/audit.key" ] && bad "an audit key file was written" || ok "still no audit key file"
if grep -q "signed by a key in a file" "$T/custosd.log"; then bad "a file-key warning with the key in the token"; else ok "no file-key warning"; fi

# ---- a file keyring: a file key, and custosd says so ----
: >"$T/custosd.log"
STATE2=$T/var-file
unset CUSTOS_KEYRING_URI
start_server "$STATE2" "audit-sign-every = 3" "register-reply = final"
stop_server TERM
[ -s "$STATE2/audit.key" ] && ok "a file keyring: the audit key is a file" || bad "no audit.key with a file keyring"
contains "$T/custosd.log" "audit chain heads are signed by a key in a file" "and custosd warns at start-up"
