#!/usr/bin/env bash
# `custos audit custody --config FILE` and `--uri URI`: the tokens and key
# files custosd's config names, not only the token directories of the state.
# A SoftHSM2 token outside the state stands for an HSM named by the config's
# server-key URI; the audit key is a PEM file; the keyring the state's
# keyring.key. Then custosd with its default key files, whose key.use
# records give those files their last use.
#   custody_config.sh path/to/bin
BIN=${1:?usage: custody_config.sh path/to/bin}
command -v softhsm2-util >/dev/null || { echo "skipped: SoftHSM2 missing"; exit 77; }
command -v jq >/dev/null || { echo "skipped: jq missing"; exit 77; }
. "$(dirname "$0")/../server/lib.sh"
unset CUSTOS_KEYRING_URI
export CUSTOS_PIN=1234 CUSTOS_SO_PIN=12345678

# Keys made without --state are recorded where a store is found (./var,
# $CUSTOS_STORE): from a directory with none.
mkdir "$T/cwd" && cd "$T/cwd" || exit 1
STATE=$T/var
mkdir -p "$STATE/tokens"
expect_rc 0 "a token under STATE/tokens" "$CUSTOS" token init --kind softhsm2 --label svc --dir "$STATE/tokens/svc"
expect_rc 0 "a key on it" "$CUSTOS" token keygen --dir "$STATE/tokens/svc" --type hmac256 --label seal
# The "HSM": a token the state does not know, found by its module's own
# configuration (SOFTHSM2_CONF, as a real HSM's module finds its device).
expect_rc 0 "a token outside the state" "$CUSTOS" token init --kind softhsm2 --label hsm --dir "$T/hsm"
TLS=$("$CUSTOS" token keygen --dir "$T/hsm" --type ec-p256 --label tls --state "$STATE" | tail -1)
expect_rc 0 "a second key on it" "$CUSTOS" token keygen --dir "$T/hsm" --type rsa2048 --label spare
case "$TLS" in pkcs11:*token=hsm*module-path=*) ok "the HSM key's URI";; *) bad "keygen printed '$TLS'";; esac
echo 1234 >"$T/pin"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/audit.pem" 2>/dev/null
head -c 32 /dev/urandom >"$STATE/keyring.key"
cat >"$T/c.conf" <<EOF
state = $STATE
server-key = $TLS&pin-source=file:$T/pin
audit-key = $T/audit.pem
EOF
export SOFTHSM2_CONF=$T/hsm/softhsm2.conf

expect_rc 0 "custody --config --json" "$CUSTOS" audit custody --config "$T/c.conf" --json
cp "$T/out" "$T/c.json"
key() { jq -c --arg l "$1" ".keys[] | select(.label==\$l) | $2" "$T/c.json"; }
want() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: wanted '$2', got '$3'"; fi; }
want "summary: both tokens, 5 keys, the 2 files not in a token" \
  '{"tokens":2,"keys":5,"flagged":2,"not_in_token":2,"unreadable_tokens":0}' \
  "$(jq -c '.summary | {tokens, keys, flagged, not_in_token, unreadable_tokens}' "$T/c.json")"
want "the HSM key: its token, its role, unflagged" \
  '["softhsm2","hsm","server-key","EC",256,true,false,true,true,true,[]]' \
  "$(key tls '[.token.kind, .token.label, .role, .type, .bits, .sensitive, .extractable, .always_sensitive, .never_extractable, .local, .flags]')"
want "the HSM's token read through the URI, without the key's attributes" \
  "[null,\"${TLS%%;id=*}?module-path=%2Fusr%2Flib%2Fsofthsm%2Flibsofthsm2.so&pin-source=file:$T/pin\"]" \
  "$(key tls '[.token.dir, .token.uri]')"
want "the other key of the HSM: no role" '["hsm",null]' "$(key spare '[.token.label, .role]')"
want "the state's token as before" "[\"$STATE/tokens/svc\",null]" "$(key seal '[.token.dir, .role]')"
want "the audit key file: kind file, its role, not in a token" \
  "[\"file\",\"$T/audit.pem\",\"audit-key\",\"private-key\",\"EC\",256,false,true,null,[\"not-in-token\",\"ever-extractable\"]]" \
  "$(key audit.pem '[.token.kind, .token.path, .role, .class, .type, .bits, .sensitive, .extractable, .local, .flags]')"
want "the keyring file: a 256-bit secret" \
  "[\"file\",\"$STATE/keyring.key\",\"keyring\",\"secret-key\",\"HMAC\",256]" \
  "$(key keyring.key '[.token.kind, .token.path, .role, .class, .type, .bits]')"
want "no server.key listed (the config names the HSM's)" "" "$(key server.key .role)"
want "the last uses from the config's state" "$STATE" "$(jq -r .summary.audit_log "$T/c.json")"
case "$(key tls .last_use.text)" in '"generated '*'(token.keygen #'*) ok "the HSM key's last use: its keygen";;
  *) bad "HSM key last use: $(key tls .last_use)";; esac

expect_rc 0 "custody --config --csv" "$CUSTOS" audit custody --config "$T/c.conf" --csv
contains "$T/out" '^token_kind,.*,flags,last_use_at,last_use,role,location$' "CSV: role and location at the end"
contains "$T/out" "not in a token 2), unreadable tokens: 0$" "CSV: the summary counts the files"
contains "$T/out" "^\"file\",.*,\"not-in-token ever-extractable\",.*,\"audit-key\",\"$T/audit.pem\"$" "CSV: the audit key file's row"
expect_rc 0 "custody --config (text)" "$CUSTOS" audit custody --config "$T/c.conf"
contains "$T/out" "role: server-key (custosd's config)" "text: the role"
contains "$T/out" "file: $T/audit.pem" "text: where the file is"
expect_rc 0 "custody --config --html" "$CUSTOS" audit custody --config "$T/c.conf" --html
contains "$T/out" "<tr><td>not in a token (key files)</td><td>2</td></tr>" "HTML: the summary row"
contains "$T/out" "role: server-key" "HTML: the role"

# The config's keyring names a key of the state's own token: read once, its role given.
SEAL="pkcs11:token=svc;object=seal;type=secret-key?module-path=/usr/lib/softhsm/libsofthsm2.so"
cp "$T/c.conf" "$T/k.conf" && echo "keyring = $SEAL" >>"$T/k.conf"
expect_rc 0 "custody, keyring in the state's token" "$CUSTOS" audit custody --config "$T/k.conf" --json
want "the state's token once, its key the keyring, no keyring file" '[2,4,"keyring",1]' \
  "$(jq -c '[.summary.tokens, .summary.keys, (.keys[] | select(.label=="seal") | .role), .summary.not_in_token]' "$T/out")"

# What the report must not pass over: a configured key no token holds, a
# configured key file that is not there.
sed "s|object=tls|object=gone|" "$T/c.conf" >"$T/gone.conf"
expect_rc 1 "a server-key no token holds fails the report" "$CUSTOS" audit custody --config "$T/gone.conf" --json
want "... naming it" 1 "$(jq '[.errors[] | select(test("^server-key pkcs11:.*token=hsm.*: no such key"))] | length' "$T/out")"
want "... the token still reported" 2 "$(jq .summary.tokens "$T/out")"
sed "s|$T/audit.pem|$T/nowhere.pem|" "$T/c.conf" >"$T/nofile.conf"
expect_rc 1 "a configured audit-key file that is missing fails the report" "$CUSTOS" audit custody --config "$T/nofile.conf" --json
want "... naming it" 1 "$(jq '[.errors[] | select(test("^audit-key .*/nowhere.pem: No such file"))] | length' "$T/out")"
jq -r '.errors[]' "$T/out" | grep -q 1234 && bad "a PIN in the errors" || ok "no PIN in the errors"

# --uri: a token by URI alone (the state's directories are not scanned).
expect_rc 0 "custody --uri" "$CUSTOS" audit custody --uri "pkcs11:token=hsm?module-path=/usr/lib/softhsm/libsofthsm2.so" --json
want "--uri: the HSM's two keys, nothing else" '[1,["spare","tls"],[null]]' \
  "$(jq -c '[.summary.tokens, ([.keys[].label] | sort), ([.keys[].role] | unique)]' "$T/out")"
expect_rc 0 "custody --uri with a pin-value" "$CUSTOS" audit custody \
  --uri "pkcs11:token=hsm?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234" --json
grep -q 'pin-value' "$T/out" && bad "the pin-value is shown" || ok "the pin-value is not shown"
expect_rc 2 "--uri takes pkcs11: URIs" "$CUSTOS" audit custody --uri /dev/null
expect_rc 1 "an HSM that cannot be opened is named" "$CUSTOS" audit custody --uri "pkcs11:token=nope?module-path=/usr/lib/softhsm/libsofthsm2.so" --json
want "... in the errors" 1 "$(jq '[.errors[] | select(test("token=nope"))] | length' "$T/out")"
unset SOFTHSM2_CONF

# custosd with its default key files: each listed with its role and the
# last use its key.use records give the file.
S2=$T/files
start_server "$S2"
expect_http 200 "healthz (a TLS handshake)" GET /healthz
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
echo "state = $S2" >"$T/f.conf"
expect_rc 0 "custody --config of custosd's default files" "$CUSTOS" audit custody --config "$T/f.conf" --json
cp "$T/out" "$T/f.json"
want "the three files, no token" '[0,3,3]' "$(jq -c '[.summary.tokens, .summary.keys, .summary.not_in_token]' "$T/f.json")"
want "their roles" '["audit.key:audit-key","keyring.key:keyring","server.key:server-key"]' \
  "$(jq -c '[.keys[] | "\(.label):\(.role)"] | sort' "$T/f.json")"
want "server.key's last use: custosd's TLS handshakes" '"key.use/tls-server"' \
  "$(jq -c '.keys[] | select(.label=="server.key") | "\(.last_use.record)/\(.last_use.role)"' "$T/f.json")"
want "audit.key's last use: the head custosd signed" '"key.use/audit"' \
  "$(jq -c '.keys[] | select(.label=="audit.key") | "\(.last_use.record)/\(.last_use.role)"' "$T/f.json")"
