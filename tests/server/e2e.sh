#!/usr/bin/env bash
# custosd end to end over HTTPS on loopback: the seed's five-device X.509
# example with all three outcomes, symmetric keys (individual, group-derived,
# primary and secondary, expired), and bad requests — each with its status,
# error body, and nothing written.
BIN=${1:?usage: e2e.sh path/to/bin}
. "$(dirname "$0")/lib.sh"

STATE=$T/var
start_server "$STATE" "device-error-detail = true" "retry-after = 1"
echo "# custosd at $EP, id scope $SCOPE"
register() { "$CUSTOS" device register --scope "$SCOPE" --host "$HP" --ca "$CA" --timeout 30 "$@"; }

# ---- the seed example over HTTPS (X.509) ----
"$CUSTOS" pki seed --out "$T/pki" >/dev/null || { bad "custos pki seed"; exit 1; }
expect_rc 0 "root group enrolled" "$CUSTOS" group create root --attestation x509 --cert "$T/pki/root.pem" --state "$STATE"
x509() { register --x509 --cert "$T/pki/device-$1-chain.pem" --key "$T/pki/device-$1.key" --json; }
for d in 1 2 3 4 5; do
  expect_rc 0 "device-$d assigned through the root group" x509 $d
  contains "$T/out" '"assignedHub":"hub1.custos.local"' "device-$d has its hub"
done
expect_rc 0 "group B enrolled, disabled" "$CUSTOS" group create group-b --attestation x509 --cert "$T/pki/cert-b.pem" --disable --state "$STATE"
for d in 1 2 3; do expect_rc 0 "device-$d still assigned with B disabled" x509 $d; done
for d in 4 5; do
  expect_rc 3 "device-$d refused: group B is disabled" x509 $d
  contains "$T/out" "group-b" "device-$d refusal names group-b"
done
expect_rc 0 "device-3 individual entry, disabled" "$CUSTOS" enrollment create device-3 --attestation x509 --cert "$T/pki/device-3.pem" --disable --state "$STATE"
for d in 1 2; do expect_rc 0 "device-$d still assigned" x509 $d; done
expect_rc 3 "device-3 refused by its individual entry" x509 3
contains "$T/out" "device-3" "device-3 refusal names its entry"
expect_rc 3 "device-4 still refused" x509 4
# Without the intermediate the chain does not reach the group's certificate.
expect_rc 3 "device-1 without its intermediate is refused" register --x509 --cert "$T/pki/device-1.pem" --key "$T/pki/device-1.key"
# A certificate with another device's key never gets as far as the server:
# the client refuses to use them together (the server's side of a forged
# proof of possession is the TLS stack's CertificateVerify check).
expect_rc 1 "device-1's certificate with device-2's key: the client refuses it (exit 1)" register --x509 --cert "$T/pki/device-1-chain.pem" --key "$T/pki/device-2.key"
contains "$T/err" "the key does not fit the certificate" "... and says the key does not fit"
# The poll resumes the PUT's TLS session (PROTOCOL.md §10) after the first
# connection closed without a TLS shutdown, as a device's does.
for v in 1.3 1.2; do
  expect_rc 0 "device-1 polls over a resumed TLS $v session" python3 "$(dirname "$0")/resume.py" "$PORT" "$CA" "$SCOPE" \
    "$T/pki/device-1-chain.pem" "$T/pki/device-1.key" device-1 "$v"
done

# --timeout covers the whole registration, each request included: a
# listener that accepts and never answers.
timeout 30 python3 -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(8)
print(s.getsockname()[1], flush=True)
held = [s.accept() for _ in range(8)]' >"$T/stall.port" &
STALL_PID=$!
for _ in $(seq 1 50); do [ -s "$T/stall.port" ] && break; sleep 0.1; done
openssl rand -base64 32 >"$T/stallk"
t0=$(date +%s%N)
expect_rc 1 "a service that never answers: exit 1" "$CUSTOS" device register --scope "$SCOPE" --host "127.0.0.1:$(cat "$T/stall.port")" \
  --ca "$CA" --timeout 3 --key-file "$T/stallk" --registration-id stalled
took=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$took" -le 4000 ] && ok "... within --timeout 3 (${took} ms)" || bad "a stalled service held the client ${took} ms (--timeout 3)"
kill "$STALL_PID" 2>/dev/null; wait "$STALL_PID" 2>/dev/null

# ---- symmetric keys ----
PK=$(openssl rand -base64 32); SK=$(openssl rand -base64 32); GK=$(openssl rand -base64 64 | tr -d '\n')
echo "$PK" >"$T/pk"; echo "$SK" >"$T/sk"; echo "$GK" >"$T/gk"
expect_rc 0 "symmetric individual enrolled" "$CUSTOS" enrollment create sym-1 --attestation symmetricKey --primary-key-file "$T/pk" --secondary-key-file "$T/sk" --state "$STATE"
expect_rc 0 "sym-1 assigned with the primary key" register --key-file "$T/pk" --registration-id sym-1 --json
contains "$T/out" '"status":"assigned"' "sym-1 status assigned"
expect_rc 0 "sym-1 assigned with the secondary key" register --key-file "$T/sk" --registration-id sym-1
openssl rand -base64 32 >"$T/wrong"
expect_rc 3 "sym-1 refused with a wrong key" register --key-file "$T/wrong" --registration-id sym-1
expect_rc 0 "symmetric group enrolled" "$CUSTOS" group create sym-group --attestation symmetricKey --primary-key-file "$T/gk" --state "$STATE"
for d in sym-g-1 sym-g-2 sym-g-3; do
  expect_rc 0 "$d assigned with a key derived from the group key" register --key-file "$T/gk" --group --registration-id "$d"
done
derive "$GK" sym-g-4 >"$T/dk4"
expect_rc 0 "a device holding only its derived key is assigned" register --key-file "$T/dk4" --registration-id sym-g-4
expect_rc 3 "the group key itself is not a device key" register --key-file "$T/gk" --registration-id sym-g-5
# Accepted but not assigned: a custom allocation whose webhook is down.
expect_rc 0 "an enrollment with a dead allocation webhook" "$CUSTOS" enrollment create sym-nohub --attestation symmetricKey \
  --primary-key-file "$T/pk" --allocation-policy custom --webhook-url http://127.0.0.1:9/allocate --state "$STATE"
expect_rc 4 "its registration fails (exit 4)" register --key-file "$T/pk" --registration-id sym-nohub --json
contains "$T/out" '"status":"failed"' "status failed"
contains "$T/out" '"errorCode":400208' "errorCode 400208 (no hub)"
OLD=$(( $(date +%s) - 3600 ))
expect_http 401 "an expired SAS is refused" PUT "/$SCOPE/registrations/sym-1/register?api-version=2021-06-01" \
  -H "Authorization: $(sas "$SCOPE" sym-1 "$PK" $OLD)" -H 'Content-Type: application/json' -d '{"registrationId":"sym-1"}'
body_has '"errorCode":401002' "expired SAS: error body"
FUT=$(( $(date +%s) + 600 ))
expect_http 202 "a C-SDK-style SAS by hand is accepted" PUT "/$SCOPE/registrations/sym-1/register?api-version=2021-06-01" \
  -H "Authorization: $(sas "$SCOPE" sym-1 "$PK" $FUT)" -H 'Content-Type: application/json' -d '{"registrationId":"sym-1","payload":null}'
body_has '"status":"assigning"' "202 says assigning"
hdr_has '^Retry-After: 1' "202 carries Retry-After"
hdr_has '^Location: ' "202 carries Location"
OPID=$(sed 's/.*"operationId":"\([^"]*\)".*/\1/' "$T/body")
AUTH=$(sas "$SCOPE" sym-1 "$PK" $FUT)
expect_http 200 "the poll (with a {} body, like Node) answers assigned" GET \
  "/$SCOPE/registrations/sym-1/operations/$OPID?api-version=2019-03-31" -H "Authorization: $AUTH" \
  -H 'Content-Type: application/json' -d '{}'
body_has '"registrationState":{' "poll carries registrationState"
body_has '"assignedHub":"hub1.custos.local"' "poll carries the hub"
expect_http 401 "a poll without the SAS is refused" GET "/$SCOPE/registrations/sym-1/operations/$OPID?api-version=2021-06-01"
expect_http 404 "a poll of another operation id" GET "/$SCOPE/registrations/sym-1/operations/5.0.nope?api-version=2021-06-01" -H "Authorization: $AUTH"
# Upper-case fixed segments and a lower-case scope route the same.
LS=$(echo "$SCOPE" | tr 'A-Z' 'a-z')
expect_http 202 "case-insensitive fixed segments" PUT "/$LS/Registrations/sym-1/REGISTER?api-version=2021-10-01" \
  -H "Authorization: $AUTH" -H 'Content-Type: application/json; charset=utf-8' -H 'UserAgent: prov_device_client/1.0' -d '{"registrationId":"sym-1"}'

# ---- bad requests: status, error body, and nothing written ----
svc_get_reg() { http GET "/registrations/$1?api-version=2021-10-01" -H "Authorization: $(svc_token)"; cat "$T/status"; }
nothing_written() { # regid description
  local s; s=$(svc_get_reg "$1"); if [ "$s" = 404 ]; then ok "$2: nothing written"; else bad "$2: record exists (HTTP $s)"; fi
}
errbody() { body_has "\"errorCode\":$1" "$2: errorCode $1"; body_has '"trackingId":"' "$2: trackingId"; hdr_has "^x-ms-error-code: $1" "$2: x-ms-error-code"; }
BADKEY=$(openssl rand -base64 32)
expect_rc 0 "enrollment bad-1 for the bad requests" "$CUSTOS" enrollment create bad-1 --attestation symmetricKey --primary-key-file "$T/pk" --state "$STATE"
GOOD=$(sas "$SCOPE" bad-1 "$PK" $FUT)
J='Content-Type: application/json'
expect_http 404 "wrong id scope" PUT "/0ne00000000/registrations/bad-1/register?api-version=2021-06-01" -H "Authorization: $GOOD" -H "$J" -d '{}'
errbody 404001 "wrong scope"
nothing_written bad-1 "wrong scope"
expect_http 400 "path traversal (%2e%2e) in the id" PUT "/$SCOPE/registrations/%2e%2e/register?api-version=2021-06-01" -H "Authorization: $GOOD" -H "$J" -d '{}'
errbody 400000 "traversal ."
expect_http 400 "path traversal (..%2f) in the id" PUT "/$SCOPE/registrations/..%2f..%2fetc/register?api-version=2021-06-01" -H "Authorization: $GOOD" -H "$J" -d '{}'
errbody 400000 "traversal /"
expect_http 400 "an invalid registration id" PUT "/$SCOPE/registrations/bad%20id!/register?api-version=2021-06-01" -H "Authorization: $GOOD" -H "$J" -d '{}'
errbody 400002 "invalid id"
head -c 200000 /dev/zero | tr '\0' 'a' | sed 's/^/{"payload":"/; s/$/"}/' >"$T/big.json"
expect_http 413 "an oversized body" PUT "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01" -H "Authorization: $GOOD" -H "$J" --data-binary @"$T/big.json"
errbody 413000 "oversized"
nothing_written bad-1 "oversized"
expect_http 400 "malformed JSON" PUT "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01" -H "Authorization: $GOOD" -H "$J" -d '{"registrationId":'
errbody 400001 "malformed JSON"
body_has 'line 1' "malformed JSON: position given"
nothing_written bad-1 "malformed JSON"
expect_http 400 "a body id that differs from the URL" PUT "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01" -H "Authorization: $GOOD" -H "$J" -d '{"registrationId":"other"}'
errbody 400003 "mismatched id"
expect_http 415 "wrong content type" PUT "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01" -H "Authorization: $GOOD" -H 'Content-Type: text/plain' -d '{"registrationId":"bad-1"}'
errbody 415000 "content type"
nothing_written bad-1 "content type"
expect_http 400 "a missing api-version" PUT "/$SCOPE/registrations/bad-1/register" -H "Authorization: $GOOD" -H "$J" -d '{}'
errbody 400004 "api-version"
expect_http 401 "a missing SAS" PUT "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01" -H "$J" -d '{"registrationId":"bad-1"}'
errbody 401002 "missing SAS"
nothing_written bad-1 "missing SAS"
expect_http 401 "a forged SAS" PUT "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01" -H "Authorization: $(sas "$SCOPE" bad-1 "$BADKEY" $FUT)" -H "$J" -d '{"registrationId":"bad-1"}'
errbody 401002 "forged SAS"
nothing_written bad-1 "forged SAS"
expect_http 401 "a SAS for another device" PUT "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01" -H "Authorization: $(sas "$SCOPE" sym-1 "$PK" $FUT)" -H "$J" -d '{}'
nothing_written bad-1 "other device's SAS"
expect_http 401 "garbage in Authorization" PUT "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01" -H "Authorization: SharedAccessSignature sr=%zz" -H "$J" -d '{}'
nothing_written bad-1 "garbage SAS"
expect_http 405 "wrong method on register" GET "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01"
hdr_has '^Allow: PUT' "405 names the method (Allow)"
expect_http 405 "PATCH on register is 405, not libevent's 501" PATCH "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01"
hdr_has '^Allow: PUT' "PATCH: Allow"
expect_http 401 "service API without a SAS" GET "/registrations/bad-1?api-version=2021-10-01"
errbody 401000 "service without SAS"
expect_http 401 "service API with a forged SAS" GET "/registrations/bad-1?api-version=2021-10-01" \
  -H "Authorization: SharedAccessSignature sr=localhost&sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA%3D&se=9999999999&skn=provisioningserviceowner"
expect_http 404 "unknown path" GET "/nothing-here"
# And after all that, the right request still works.
expect_http 202 "bad-1 registers with a good request" PUT "/$SCOPE/registrations/bad-1/register?api-version=2021-06-01" -H "Authorization: $GOOD" -H "$J" -d '{"registrationId":"bad-1"}'

# ---- the registration-status query: read only ----
svc_get_reg sym-1 >/dev/null; cp "$T/body" "$T/sym1.before"
expect_http 200 "status query of a registered device" POST "/$SCOPE/registrations/sym-1?api-version=2021-10-01" \
  -H "Authorization: $AUTH" -H "$J" -d '{"registrationId":"sym-1"}'
body_has '"registrationId":"sym-1"' "status query: registrationId"
body_has '"assignedHub":"hub1.custos.local"' "status query: assignedHub"
body_has '"status":"assigned"' "status query: status"
svc_get_reg sym-1 >/dev/null
cmp -s "$T/body" "$T/sym1.before" && ok "status query: the record is unchanged" || bad "status query changed sym-1's record"
expect_rc 0 "enrollment stat-1, never registered" "$CUSTOS" enrollment create stat-1 --attestation symmetricKey --primary-key-file "$T/pk" --state "$STATE"
expect_http 404 "status query of an enrolled device that never registered" POST "/$SCOPE/registrations/stat-1?api-version=2021-10-01" \
  -H "Authorization: $(sas "$SCOPE" stat-1 "$PK" $FUT)" -H "$J" -d '{"registrationId":"stat-1"}'
errbody 404002 "status of an unregistered device"
nothing_written stat-1 "status query"
expect_http 401 "status query with a forged SAS" POST "/$SCOPE/registrations/sym-1?api-version=2021-10-01" \
  -H "Authorization: $(sas "$SCOPE" sym-1 "$BADKEY" $FUT)" -H "$J" -d '{}'
errbody 401002 "status with a forged SAS"

# ---- operations endpoints ----
expect_http 200 "healthz" GET /healthz
expect_http 200 "metrics" GET /metrics
# Every series is rendered, at 0 too: the values are checked against what
# this test did, as the log tells it.
metric() { awk -v k="$1" '$1 == k { print $2; f = 1 } END { if (!f) print "missing" }' "$T/body"; }
at_least() { # series minimum description
  local v; v=$(metric "$1")
  if [ "$v" != missing ] && [ "${v%.*}" -ge "$2" ]; then ok "$3 ($v)"; else bad "$3: $1 = $v, wanted >= $2"; fi
}
at_least 'custos_registrations_total{mechanism="x509",result="assigned"}' 12 "metrics: the X.509 registrations assigned above"
at_least 'custos_registrations_total{mechanism="x509",result="refused"}' 4 "metrics: the X.509 refusals above"
at_least 'custos_registrations_total{mechanism="symmetricKey",result="assigned"}' 8 "metrics: the symmetric-key registrations assigned above"
at_least 'custos_registrations_total{mechanism="symmetricKey",result="refused"}' 5 "metrics: the symmetric-key refusals above"
at_least 'custos_registrations_total{mechanism="symmetricKey",result="failed"}' 1 "metrics: the registration without a hub"
puts=$(grep -c 'method=PUT .*route=register ' "$T/custosd.log")
[ "$(metric custos_registration_duration_seconds_count)" = "$puts" ] && ok "metrics: one latency sample per registration PUT ($puts)" \
  || bad "metrics: latency _count $(metric custos_registration_duration_seconds_count), $puts registration PUTs in the log"
[ "$(metric 'custos_registration_duration_seconds_bucket{le="+Inf"}')" = "$puts" ] && ok "metrics: the +Inf bucket holds them all" \
  || bad "metrics: +Inf bucket $(metric 'custos_registration_duration_seconds_bucket{le="+Inf"}'), wanted $puts"
conns=$(grep -o ' peer=[^ ]*' "$T/custosd.log" | sort -u | wc -l)
at_least 'custos_tls_handshakes_total{result="ok"}' "$conns" "metrics: a TLS handshake for each connection the log saw"
contains "$T/custosd.log" 'reqid=' "log lines carry request ids"

# ---- graceful stop ----
stop_server TERM
if [ "$SRV_RC" = 0 ]; then ok "custosd exits 0 after SIGTERM"; else bad "custosd exit status $SRV_RC after SIGTERM"; fi
contains "$T/custosd.log" 'custosd stopped' "SIGTERM stops custosd cleanly"

# ---- the audit log of everything above: whole, and signed by custosd ----
expect_rc 0 "audit verify with custosd's audit key" "$CUSTOS" audit verify --state "$STATE" --pubkey "$STATE/audit.pub"
contains "$T/out" "signatures checked\|signed head" "the chain head is signed"
if grep -q "no signed head yet" "$T/out" "$T/err"; then bad "custosd left the head unsigned"; else ok "custosd signed the head at shutdown"; fi
expect_rc 0 "audit export" "$CUSTOS" audit export --state "$STATE"
contains "$T/out" '"type":"registration.refused"' "refusals are in the log"
contains "$T/out" '"type":"registration"' "registrations are in the log"
