#!/usr/bin/env bash
# `custos audit custody --state DIR`: each key's last use from the state's
# audit log, in all four formats. custosd runs with its TLS key, audit key
# and keyring key in a SoftHSM2 token under STATE/tokens/ (its key.use
# records name them by URI); a key generated with --state but never used
# shows its generation; a key made without --state was never recorded.
# Without --state the column says no log was read.
#   custody_lastuse.sh path/to/bin
BIN=${1:?usage: custody_lastuse.sh path/to/bin}
MODS=$(cd "$BIN/../lib/ossl-modules" 2>/dev/null && pwd)
if [ -z "$MODS" ] || [ ! -f "$MODS/custos.so" ]; then
  echo "skipped: no provider at $BIN/../lib/ossl-modules/custos.so"; exit 77
fi
. "$(dirname "$0")/../server/lib.sh"
command -v jq >/dev/null || { echo "skipped: jq missing"; exit 77; }
export OPENSSL_MODULES=$MODS CUSTOS_PIN=1234 CUSTOS_SO_PIN=12345678
# The provider's SoftHSM2 module stays loaded at exit by design.
if [[ "$(ldd "$MODS/custos.so" 2>/dev/null)" == *libasan* ]]; then
  export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
fi

# Keys made without --state are recorded where a store is found (./var,
# $CUSTOS_STORE): from a directory with none.
mkdir "$T/cwd" && cd "$T/cwd" || exit 1
STATE=$T/var
TOK=$STATE/tokens/svc
mkdir -p "$STATE/tokens"
expect_rc 0 "the service's token under STATE/tokens" "$CUSTOS" token init --kind softhsm2 --label svc --dir "$TOK"
export SOFTHSM2_CONF=$TOK/softhsm2.conf
keygen() { # label type: the key's URI on stdout, recorded in STATE's log
  "$CUSTOS" token keygen --dir "$TOK" --type "$2" --label "$1" --state "$STATE" | tail -1
}
SURI=$(keygen server ec-p256); AURI=$(keygen audit ec-p256); KURI=$(keygen keyring hmac256); keygen spare ec-p256 >/dev/null
expect_rc 0 "a key made without --state" "$CUSTOS" token keygen --dir "$TOK" --type ec-p256 --label idle
for u in "$SURI" "$AURI" "$KURI"; do
  case "$u" in pkcs11:*) ok "keygen: $u";; *) bad "keygen printed '$u'";; esac
done

start_server "$STATE" "server-key = $SURI" "audit-key = $AURI" "keyring = $KURI" "provider-path = $MODS"
CONNS=0
for i in 1 2 3; do CONNS=$((CONNS + 1)); expect_http 200 "healthz $i" GET /healthz; done
K=$(openssl rand -base64 32)
CONNS=$((CONNS + 1))
expect_http 200 "an enrollment (a keyring use)" PUT "/enrollments/lu-1?api-version=2021-10-01" \
  -H "Authorization: $(svc_token)" -H 'Content-Type: application/json' \
  -d "{\"registrationId\":\"lu-1\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$K\"}}}"
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
"$CUSTOS" audit export --state "$STATE" >"$T/log.jsonl"
TLS_SEQ=$(jq -s -r '[.[] | select(.type=="key.use" and .payload.role=="tls-server") | .seq] | last' "$T/log.jsonl")
SPARE_SEQ=$(jq -s -r '[.[] | select(.type=="token.keygen" and (.payload.key | test("object=spare")))] | last | .seq' "$T/log.jsonl")
[ "$TLS_SEQ" != null ] && [ "$SPARE_SEQ" != null ] && ok "the log has the key uses and the keygens" \
  || bad "no key.use / keygen records: $(head -c 600 "$T/log.jsonl")"

# ---- JSON ----
expect_rc 0 "custody --json with --state" "$CUSTOS" audit custody --state "$STATE" --json
cp "$T/out" "$T/c.json"
lu() { jq -r --arg l "$1" ".keys[] | select(.label==\$l) | .last_use | $2" "$T/c.json"; }
want() { if [ "$2" = "$3" ]; then ok "$1 ($3)"; else bad "$1: wanted '$2', got '$3'"; fi; }
want "JSON: the server key's last use is a key.use record" "key.use/tls-server/$TLS_SEQ" "$(lu server '"\(.record)/\(.role)/\(.seq)"')"
want "JSON: its count is the minute's handshakes" "$CONNS" "$(jq -s -r '[.[] | select(.type=="key.use" and .payload.role=="tls-server")] | last | .payload.count' "$T/log.jsonl")"
[ "$(lu server .count)" -ge 1 ] && ok "JSON: a count" || bad "JSON: no count"
want "JSON: the audit key's last use" "key.use/audit" "$(lu audit '"\(.record)/\(.role)"')"
want "JSON: the keyring key's last use" "key.use/keyring" "$(lu keyring '"\(.record)/\(.role)"')"
want "JSON: uses are custosd's" "custosd@$(hostname)" "$(lu server .actor)"
want "JSON: the spare key: its keygen" "token.keygen/$SPARE_SEQ" "$(lu spare '"\(.record)/\(.seq)"')"
case "$(lu spare .text)" in "generated "*", no use recorded since (token.keygen #$SPARE_SEQ, cli:"*) ok "JSON: the spare key's text";;
  *) bad "JSON: spare text '$(lu spare .text)'";; esac
want "JSON: the idle key" "false/never recorded" "$(lu idle '"\(.recorded)/\(.text)"')"
want "JSON: summary names the log" "$STATE" "$(jq -r .summary.audit_log "$T/c.json")"
want "JSON: 4 of 5 keys with a recorded use" 4 "$(jq -r .summary.keys_with_recorded_use "$T/c.json")"

# ---- CSV ----
expect_rc 0 "custody --csv with --state" "$CUSTOS" audit custody --state "$STATE" --csv
contains "$T/out" '^token_kind,.*,flags,last_use_at,last_use,role,location$' "CSV: the header has the columns"
row() { grep "\"$1\"," "$T/out"; }
row server | grep -q ",\"[0-9-]*T[0-9:]*Z\",\"[0-9-]*T[0-9:]*Z: [0-9]* uses\{0,1\} that minute (key.use #$TLS_SEQ, tls-server, custosd@" \
  && ok "CSV: the server key's last use" || bad "CSV: server row: $(row server)"
row idle | grep -q ',"","never recorded","","[^"]*/tokens/svc"$' && ok "CSV: the idle key never recorded" || bad "CSV: idle row: $(row idle)"
row spare | grep -q ",\"generated [^\"]*(token.keygen #$SPARE_SEQ" && ok "CSV: the spare key's keygen" || bad "CSV: spare row: $(row spare)"

# ---- text ----
expect_rc 0 "custody (text) with --state" "$CUSTOS" audit custody --state "$STATE"
contains "$T/out" "Last use from the audit log of $STATE: 4 of 5 key(s) have a recorded use." "text: the summary"
contains "$T/out" "last use: .*(key.use #$TLS_SEQ, tls-server" "text: the server key's line"
contains "$T/out" "last use: never recorded" "text: the idle key"

# ---- HTML ----
expect_rc 0 "custody --html with --state" "$CUSTOS" audit custody --state "$STATE" --html
contains "$T/out" "<th>Last use</th>" "HTML: the column"
contains "$T/out" "<td>[0-9T:-]*Z: [0-9]* uses\{0,1\} that minute (key.use #$TLS_SEQ, tls-server, custosd@" "HTML: the server key's cell"
contains "$T/out" "<td>never recorded</td>" "HTML: the idle key's cell"
contains "$T/out" "keys with a recorded use (audit log of" "HTML: the summary row"

# ---- --config: the same token (named by the config's URIs) read once, each key's role ----
expect_rc 0 "custody --config with --state" "$CUSTOS" audit custody --config "$T/custosd.conf" --state "$STATE" --json
want "--config: one token, the five keys" "1/5" "$(jq -r '"\(.summary.tokens)/\(.summary.keys)"' "$T/out")"
want "--config: the roles" '["audit:audit-key","idle:","keyring:keyring","server:server-key","spare:"]' \
  "$(jq -c '[.keys[] | "\(.label):\(.role // "")"] | sort' "$T/out")"
want "--config: the server key's last use as with --state" "key.use/$TLS_SEQ" \
  "$(jq -r '.keys[] | select(.label=="server") | "\(.last_use.record)/\(.last_use.seq)"' "$T/out")"

# ---- without --state: the tokens by --dir, no log ----
expect_rc 0 "custody --json without --state" "$CUSTOS" audit custody --dir "$TOK" --json
want "no log read: summary" null "$(jq -r .summary.audit_log "$T/out")"
want "no log read: every key says so" "unknown (no audit log read: give --state DIR)" \
  "$(jq -r '[.keys[].last_use.text] | unique | join("|")' "$T/out")"
expect_rc 0 "custody --csv without --state" "$CUSTOS" audit custody --dir "$TOK" --csv
row server | grep -q ',"","unknown (no audit log read' && ok "CSV without --state: unknown" || bad "CSV without --state: $(row server)"
# A state whose log cannot be read is an error, not "never recorded".
mkdir -p "$T/broken/tokens" && cp -r "$TOK" "$T/broken/tokens/" && echo "not a database" >"$T/broken/custos.db"
expect_rc 1 "an unreadable log fails the report" "$CUSTOS" audit custody --state "$T/broken" --json
contains "$T/err" "cannot read the audit log" "... saying so"
