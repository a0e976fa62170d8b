#!/usr/bin/env bash
# The device client's paths that the outcomes of e2e.sh do not take: a 429
# and a 503 waited out for their Retry-After and retried, a 404 (wrong id
# scope) as a refusal, --payload reaching the allocation webhook and the
# registration record, --api-version on the wire, and a server whose
# certificate does not name the address dialled.
BIN=${1:?usage: device.sh path/to/bin}
. "$(dirname "$0")/lib.sh"
command -v python3 >/dev/null || { echo "python3 missing: skipped"; exit 77; }
D=$(cd "$(dirname "$0")" && pwd)

STATE=$T/var
start_server "$STATE" "rate-device = 2" "retry-after = 1"
register() { "$CUSTOS" device register --scope "$SCOPE" --host "$HP" --ca "$CA" --timeout 30 "$@"; }
J='Content-Type: application/json'
V='api-version=2021-06-01'
openssl rand -base64 32 >"$T/k"
K=$(cat "$T/k")
FUT=$(( $(date +%s) + 600 ))
PIDS=
# bg_port FILE: the port a helper started in the background printed.
bg_port() {
  for _ in $(seq 1 100); do [ -s "$1" ] && { cat "$1"; return 0; }; sleep 0.05; done
  bad "no helper listening: $1"; exit 1
}
trap 'for p in $PIDS; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; finish; exit $?' EXIT

# ---- 429: the device's budget used up, the client waits it out ----
expect_rc 0 "enrollment dev-rl" "$CUSTOS" enrollment create dev-rl --attestation symmetricKey --primary-key-file "$T/k" --state "$STATE"
AUTH="Authorization: $(sas "$SCOPE" dev-rl "$K" $FUT)"
expect_http 202 "dev-rl: 1st PUT by hand" PUT "/$SCOPE/registrations/dev-rl/register?$V" -H "$AUTH" -H "$J" -d '{}'
expect_http 202 "dev-rl: 2nd PUT by hand" PUT "/$SCOPE/registrations/dev-rl/register?$V" -H "$AUTH" -H "$J" -d '{}'
expect_http 429 "dev-rl: a 3rd is over the budget" PUT "/$SCOPE/registrations/dev-rl/register?$V" -H "$AUTH" -H "$J" -d '{}'
RA=$(sed -n 's/^Retry-After: *\([0-9]*\).*/\1/ip' "$T/hdr")
[ "${RA:-0}" -ge 1 ] && ok "the 429 says Retry-After: $RA" || bad "no Retry-After on the 429"
before=$(grep -c 'path=/[^ ]*/registrations/dev-rl/register route=register status=429' "$T/custosd.log")
t0=$(date +%s%N)
expect_rc 0 "the client is refused with 429, waits and is assigned" register --key-file "$T/k" --registration-id dev-rl
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
after=$(grep -c 'path=/[^ ]*/registrations/dev-rl/register route=register status=429' "$T/custosd.log")
# A client that came back before Retry-After would meet 429 after 429.
n429=$((after - before))
[ "$n429" -ge 1 ] && [ "$n429" -le 2 ] && ok "... after $n429 429 answer(s) to it" \
  || bad "the client met $n429 429 answers: $(grep dev-rl "$T/custosd.log" | tail -3)"
[ "$ms" -ge $(( (RA - 1) * 1000 )) ] && ok "... having waited (${ms} ms, Retry-After $RA)" \
  || bad "the client came back after ${ms} ms (Retry-After $RA)"

# ---- 503 with Retry-After, from a service busy once ----
B=$T/busy; mkdir -p "$B"
python3 "$D/busy.py" 127.0.0.1 "$STATE/server.crt" "$STATE/server.key" "$B/log" 2 >"$B/port" 2>"$B/err" &
PIDS="$PIDS $!"
BP=$(bg_port "$B/port")
expect_rc 0 "503 + Retry-After: 2, then assigned" "$CUSTOS" device register --scope "$SCOPE" --host "localhost:$BP" \
  --ca "$CA" --timeout 30 --key-file "$T/k" --registration-id dev-busy
contains "$T/out" "dev-busy -> busy.hub" "the assignment of the second answer"
n=$(wc -l <"$B/log")
[ "$n" = 2 ] && ok "two PUTs: the refused one and its retry" || bad "$n requests: $(cat "$B/log")"
gap=$(awk 'NR == 1 { a = $1 } NR == 2 { printf "%d", ($1 - a) * 1000 }' "$B/log")
[ "${gap:-0}" -ge 1900 ] && ok "the retry came after Retry-After: 2 (${gap} ms)" || bad "the retry came after ${gap} ms, not 2 s"

# ---- the server's name: a certificate that does not name the address ----
N=$T/name; mkdir -p "$N"
python3 "$D/busy.py" 127.0.0.2 "$STATE/server.crt" "$STATE/server.key" "$N/log" 1 >"$N/port" 2>"$N/err" &
PIDS="$PIDS $!"
NP=$(bg_port "$N/port")
expect_rc 1 "127.0.0.2 is not in the server certificate: exit 1" "$CUSTOS" device register --scope "$SCOPE" \
  --host "127.0.0.2:$NP" --ca "$CA" --timeout 10 --key-file "$T/k" --registration-id dev-name
contains "$T/err" "127.0.0.2" "the error names the address"
[ -s "$N/log" ] && bad "a request went to a server of the wrong name: $(cat "$N/log")" || ok "no request was sent"

# ---- 404: the wrong id scope is a refusal (exit 3) ----
expect_rc 0 "enrollment dev-scope" "$CUSTOS" enrollment create dev-scope --attestation symmetricKey --primary-key-file "$T/k" --state "$STATE"
expect_rc 3 "a wrong id scope (404) is a refusal: exit 3" "$CUSTOS" device register --scope 0ne00000000 --host "$HP" \
  --ca "$CA" --timeout 30 --key-file "$T/k" --registration-id dev-scope
contains "$T/out" "HTTP 404" "the refusal gives the status"
expect_http 404 "nothing was recorded for dev-scope" GET "/registrations/dev-scope?api-version=2021-10-01" -H "Authorization: $(svc_token)"

# ---- --payload: to the allocation webhook and into the record ----
W=$T/hook; mkdir -p "$W"
python3 "$D/webhook.py" "$W/log" 0 hub1.custos.local >"$W/port" 2>"$W/err" &
PIDS="$PIDS $!"
WP=$(bg_port "$W/port")
expect_rc 0 "enrollment dev-pl, custom allocation" "$CUSTOS" enrollment create dev-pl --attestation symmetricKey \
  --primary-key-file "$T/k" --allocation-policy custom --webhook-url "http://127.0.0.1:$WP/allocate" --state "$STATE"
expect_rc 0 "dev-pl registers with --payload" register --key-file "$T/k" --registration-id dev-pl \
  --payload '{"model":"m-42","fw":[1,2]}' --json
contains "$W/log" '"payload": *{"model": *"m-42", *"fw": *\[1, *2\]}' "the webhook got the device's payload"
expect_http 200 "dev-pl's registration record" GET "/registrations/dev-pl?api-version=2021-10-01" -H "Authorization: $(svc_token)"
body_has '"payload":{"echo":{"model":"m-42","fw":\[1,2\]}}' "the record holds the payload the webhook returned for it"
expect_rc 1 "--payload that is not JSON: exit 1" register --key-file "$T/k" --registration-id dev-pl --payload '{"model":'
contains "$T/err" "payload is not JSON" "and says so"

# ---- --api-version: on the wire ----
expect_rc 0 "enrollment dev-api" "$CUSTOS" enrollment create dev-api --attestation symmetricKey --primary-key-file "$T/k" --state "$STATE"
expect_rc 0 "--api-version 2019-03-31 is accepted" register --key-file "$T/k" --registration-id dev-api --api-version 2019-03-31
expect_rc 1 "--api-version 1999-01-01 is sent, and refused by custosd (400): exit 1" \
  register --key-file "$T/k" --registration-id dev-api --api-version 1999-01-01
contains "$T/err" "HTTP 400" "the error gives the status"

stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
