#!/usr/bin/env bash
# custosd's audit key: with the keyring in a token and no audit-key set,
# made in that token (label custos-audit) on first start and used from
# there after, no key file written; with a file keyring, a file key and a
# warning. A PIN its token refuses at start-up: custosd exits, and the
# store's audit log has a token.login-failed record. Skipped (77) until
# the provider is built.
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

# ---- custosd's own login refused: said, recorded, no PIN written ----
: >"$T/custosd.log"
BADURI="$KRURI&pin-value=4321"
rm -f "$STATE/endpoint"
printf '%s\n' "keyring = $BADURI" "provider-path = $MODS" >"$T/bad.conf"
timeout 60 "$CUSTOSD" --state "$STATE" --listen 127.0.0.1:0 --config "$T/bad.conf" >"$T/bad.out" 2>&1; RC=$?
[ "$RC" != 0 ] && [ "$RC" != 124 ] && ok "a wrong keyring PIN: custosd exits non-zero ($RC)" || bad "custosd exit $RC with a wrong PIN"
contains "$T/bad.out" "cannot log in to the token of the keyring" "and says which key's token refused it"
[ -e "$STATE/endpoint" ] && bad "custosd announced an endpoint" || ok "it never served"
expect_rc 0 "the audit log exports" "$CUSTOS" audit export --state "$STATE"
grep '"token.login-failed"' "$T/out" >"$T/lf"
[ "$(wc -l <"$T/lf")" = 1 ] && ok "one token.login-failed record" || bad "token.login-failed records: $(cat "$T/lf") in $(tail -c 600 "$T/out")"
contains "$T/lf" "object=store-seal" "it names the key"
contains "$T/lf" "token=custosd" "and the token"
contains "$T/lf" "keyring" "and which of custosd's keys"
grep -q -e 4321 -e pin-value "$T/lf" && bad "the PIN is in the record" || ok "no PIN in the record"
expect_rc 0 "the chain still verifies" "$CUSTOS" audit verify --state "$STATE" --pubkey "$T/tokpub"
start_server "$STATE" "${CONF[@]}"
expect_http 200 "with the right PIN custosd serves again" GET /healthz
stop_server TERM

# ---- a file keyring: a file key, and custosd says so ----
: >"$T/custosd.log"
STATE2=$T/var-file
unset CUSTOS_KEYRING_URI
start_server "$STATE2" "audit-sign-every = 3" "register-reply = final"
stop_server TERM
[ -s "$STATE2/audit.key" ] && ok "a file keyring: the audit key is a file" || bad "no audit.key with a file keyring"
contains "$T/custosd.log" "audit chain heads are signed by a key in a file" "and custosd warns at start-up"
