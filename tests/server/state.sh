#!/usr/bin/env bash
# First start and the state directory: what custosd creates (id scope,
# policy key, CA, server certificate with its names, one hub), what it keeps
# across restarts, what `custos service info` prints, config errors.
BIN=${1:?usage: state.sh path/to/bin}
. "$(dirname "$0")/lib.sh"

STATE=$T/fresh/var   # a state directory whose parent does not exist yet
mkdir -p "$T/fresh"
start_server "$STATE" "host-name = dps.test" "log-format = json"
for f in custos.db keyring.key ca.crt ca.key server.crt server.key endpoint; do
  [ -s "$STATE/$f" ] && ok "first start made $f" || bad "no $f"
done
for f in keyring.key ca.key server.key; do
  [ "$(stat -c %a "$STATE/$f")" = 600 ] && ok "$f is 0600" || bad "$f mode $(stat -c %a "$STATE/$f")"
done
[ "$(stat -c %a "$STATE")" = 700 ] && ok "the state directory is 0700" || bad "state mode $(stat -c %a "$STATE")"
echo "$SCOPE" | grep -Eq '^0ne[0-9A-F]{8}$' && ok "id scope $SCOPE looks like 0ne + 8 hex" || bad "id scope '$SCOPE'"
openssl x509 -in "$STATE/server.crt" -noout -ext subjectAltName >"$T/san" 2>/dev/null
for n in DNS:localhost "IP Address:127.0.0.1" DNS:dps.test; do contains "$T/san" "$n" "the server certificate names $n"; done
openssl verify -CAfile "$CA" "$STATE/server.crt" >/dev/null 2>&1 && ok "ca.crt verifies the server certificate" || bad "server certificate does not verify"
expect_rc 0 "custos service info" "$CUSTOS" service info --state "$STATE"
contains "$T/out" "HostName=dps.test;SharedAccessKeyName=provisioningserviceowner;SharedAccessKey=" "connection string"
contains "$T/out" "https://dps.test:$PORT" "device endpoint"
contains "$T/out" "$STATE/ca.crt" "CA file"
"$CUSTOS" service info --state "$STATE" --json >"$T/info.json"
contains "$T/info.json" "\"idScope\":\"$SCOPE\"" "JSON info: idScope"
KEY1=$(sed 's/.*SharedAccessKey=\([^"]*\)".*/\1/' "$T/info.json")
# The name in the certificate and in the service SAS works.
curl -sS --cacert "$CA" --resolve "dps.test:$PORT:127.0.0.1" -o "$T/body" -w '%{http_code}' \
  -H "Authorization: $("$CUSTOS" service token --state "$STATE")" \
  "https://dps.test:$PORT/enrollments/query?api-version=2021-10-01" -X POST >"$T/status"
[ "$(cat "$T/status")" = 200 ] && ok "service API at https://dps.test with a token for sr=dps.test" || bad "dps.test: HTTP $(cat "$T/status")"
# The hub that makes the first registration work.
K=$(openssl rand -base64 32); echo "$K" >"$T/k"
"$CUSTOS" enrollment create first --attestation symmetricKey --primary-key-file "$T/k" --state "$STATE" >/dev/null
expect_rc 0 "the first registration works out of the box" "$CUSTOS" device register --scope "$SCOPE" --host "localhost:$PORT" --ca "$CA" --key-file "$T/k" --registration-id first
contains "$T/custosd.log" '^{"ts":"' "log-format = json writes JSON lines"
contains "$T/custosd.log" '"reqid":"' "JSON lines carry the request id"
stop_server TERM

# A restart keeps everything; a new host name reissues the certificate.
OLDSCOPE=$SCOPE
start_server "$STATE" "host-name = dps.test" "host-name = other.test"
[ "$SCOPE" = "$OLDSCOPE" ] && ok "the id scope survives a restart" || bad "id scope changed: $OLDSCOPE -> $SCOPE"
"$CUSTOS" service info --state "$STATE" --json >"$T/info.json"
KEY2=$(sed 's/.*SharedAccessKey=\([^"]*\)".*/\1/' "$T/info.json")
[ "$KEY1" = "$KEY2" ] && ok "the policy key survives a restart" || bad "policy key changed"
openssl x509 -in "$STATE/server.crt" -noout -ext subjectAltName >"$T/san" 2>/dev/null
contains "$T/san" "DNS:other.test" "a new host-name reissues the certificate"
stop_server TERM

# Configuration errors stop custosd with the file and line.
printf 'listen = 127.0.0.1:0\nworkers = many\n' >"$T/bad.conf"
expect_rc 2 "a bad config value is refused" "$CUSTOSD" --state "$STATE" --config "$T/bad.conf"
contains "$T/err" "bad.conf:2: workers" "the error names file, line and key"
printf 'no-such-key = 1\n' >"$T/bad2.conf"
expect_rc 2 "an unknown config key is refused" "$CUSTOSD" --state "$STATE" --config "$T/bad2.conf"
printf 'id-scope = 0neFFFFFFFF\nlisten = 127.0.0.1:0\n' >"$T/scope.conf"
expect_rc 1 "a different id scope for existing state is refused" "$CUSTOSD" --state "$STATE" --config "$T/scope.conf"
contains "$T/err" "id scope" "and says why"
expect_rc 2 "an unknown option" "$CUSTOSD" --frobnicate
expect_rc 0 "--help" "$CUSTOSD" --help
expect_rc 1 "service info on a missing state" "$CUSTOS" service info --state "$T/none"
# Two custosd on one port: the second fails to bind only if another user
# holds it; the same user shares it by SO_REUSEPORT (documented).
