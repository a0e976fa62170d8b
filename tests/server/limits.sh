#!/usr/bin/env bash
# custosd's limits: per-device and global rate limits (PROTOCOL.md §10: only
# new work gets 429; an accepted registration is slowed with Retry-After on
# `assigning`), header size, body size, slow clients.
BIN=${1:?usage: limits.sh path/to/bin}
. "$(dirname "$0")/lib.sh"

STATE=$T/var
start_server "$STATE" "rate-device = 3" "timeout = 2" "max-headers = 4096" "max-body = 2048" "retry-after = 1"
J='Content-Type: application/json'
V='api-version=2021-06-01'
K=$(openssl rand -base64 32); echo "$K" >"$T/k"
expect_rc 0 "enrollment lim-1" "$CUSTOS" enrollment create lim-1 --attestation symmetricKey --primary-key-file "$T/k" --state "$STATE"
FUT=$(( $(date +%s) + 600 ))
AUTH="Authorization: $(sas "$SCOPE" lim-1 "$K" $FUT)"
expect_http 202 "1st register" PUT "/$SCOPE/registrations/lim-1/register?$V" -H "$AUTH" -H "$J" -d '{}'
OPID=$(sed 's/.*"operationId":"\([^"]*\)".*/\1/' "$T/body")
expect_http 200 "1st poll" GET "/$SCOPE/registrations/lim-1/operations/$OPID?$V" -H "$AUTH"
expect_http 202 "2nd register" PUT "/$SCOPE/registrations/lim-1/register?$V" -H "$AUTH" -H "$J" -d '{}'
OPID=$(sed 's/.*"operationId":"\([^"]*\)".*/\1/' "$T/body")
expect_http 202 "a poll over the device's budget is slowed, not refused" GET "/$SCOPE/registrations/lim-1/operations/$OPID?$V" -H "$AUTH"
body_has '"status":"assigning"' "slowed poll says assigning"
body_has "\"operationId\":\"$OPID\"" "slowed poll echoes the operation id"
hdr_has '^Retry-After: [1-9]' "slowed poll carries Retry-After"
expect_http 429 "new work over the device's budget is refused with 429" PUT "/$SCOPE/registrations/lim-1/register?$V" -H "$AUTH" -H "$J" -d '{}'
body_has '"errorCode":429001' "429 error body"
hdr_has '^Retry-After: [1-9]' "429 carries Retry-After"
# lim-2 has no enrollment: 401, but not 429.
http PUT "/$SCOPE/registrations/lim-2/register?$V" -H "$J" -d '{}'
[ "$(cat "$T/status")" = 401 ] && ok "another device gets its own budget (401, not 429)" || bad "other device: HTTP $(cat "$T/status")"
# Requests without the device's credentials do not use up its budget:
# knowing a registration id must not be enough to keep a device at 429.
expect_rc 0 "enrollment lim-3" "$CUSTOS" enrollment create lim-3 --attestation symmetricKey --primary-key-file "$T/k" --state "$STATE"
AUTH3="Authorization: $(sas "$SCOPE" lim-3 "$K" $FUT)"
FORGED="Authorization: $(sas "$SCOPE" lim-3 "$(openssl rand -base64 32)" $FUT)"
expect_http 202 "lim-3 registers" PUT "/$SCOPE/registrations/lim-3/register?$V" -H "$AUTH3" -H "$J" -d '{}'
OPID3=$(sed 's/.*"operationId":"\([^"]*\)".*/\1/' "$T/body")
n401=0
for i in 1 2 3 4 5 6; do
  http PUT "/$SCOPE/registrations/lim-3/register?$V" -H "$J" -d '{}'
  [ "$(cat "$T/status")" = 401 ] && n401=$((n401+1))
  http PUT "/$SCOPE/registrations/lim-3/register?$V" -H "$FORGED" -H "$J" -d '{}'
  [ "$(cat "$T/status")" = 401 ] && n401=$((n401+1))
  http GET "/$SCOPE/registrations/lim-3/operations/$OPID3?$V" -H "$FORGED"
  [ "$(cat "$T/status")" = 401 ] && n401=$((n401+1))
done
[ "$n401" = 18 ] && ok "18 PUTs and polls without lim-3's key are refused (401)" || bad "requests without the key: $n401 of 18 got 401"
expect_http 202 "lim-3's own PUT after them is not 429" PUT "/$SCOPE/registrations/lim-3/register?$V" -H "$AUTH3" -H "$J" -d '{}'
OPID3=$(sed 's/.*"operationId":"\([^"]*\)".*/\1/' "$T/body")
expect_http 200 "... nor is its poll slowed" GET "/$SCOPE/registrations/lim-3/operations/$OPID3?$V" -H "$AUTH3"
expect_http 429 "and its own next PUT is over its budget" PUT "/$SCOPE/registrations/lim-3/register?$V" -H "$AUTH3" -H "$J" -d '{}'

# Header and body limits.
BIGH=$(head -c 6000 /dev/zero | tr '\0' 'x')
http GET /healthz -H "X-Big: $BIGH"
s=$(cat "$T/status"); { [ "$s" = 400 ] || [ "$s" = 431 ] || [ "$s" = 413 ] || [ "$s" = 000 ]; } && ok "oversized headers are refused ($s)" || bad "oversized headers: HTTP $s"
head -c 3000 /dev/zero | tr '\0' 'a' | sed 's/^/{"payload":"/; s/$/"}/' >"$T/b.json"
expect_http 413 "a body over max-body" PUT "/$SCOPE/registrations/lim-1/register?$V" -H "$AUTH" -H "$J" --data-binary @"$T/b.json"
body_has '"errorCode":413000' "413 error body"
head -c 20000 /dev/zero | tr '\0' 'a' >"$T/huge"
http PUT "/$SCOPE/registrations/lim-1/register?$V" -H "$AUTH" -H "$J" --data-binary @"$T/huge"
[ "$(cat "$T/status")" = 413 ] && ok "a body far over the limit is refused before it is read" || bad "huge body: HTTP $(cat "$T/status")"

# A slow client: connects and never starts the handshake; the server must
# hang up after `timeout` seconds.
start=$(date +%s)
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
timeout 10 cat <&3 >/dev/null
exec 3<&-
took=$(( $(date +%s) - start ))
[ "$took" -le 6 ] && ok "a slow client is cut off after the timeout (${took}s)" || bad "slow client held the connection ${took}s"
# Slow clients that keep sending, a byte a second: the deadline covers the
# handshake and the whole request (evhttp's own timeout only fires when the
# client goes quiet), again for each request on a kept-alive connection.
for mode in hs req keep; do
  took=$(python3 "$(dirname "$0")/trickle.py" "$PORT" "$CA" "$mode" 2>&1)
  if [ $? = 0 ] && awk -v t="$took" 'BEGIN { exit !(t <= 3.5) }'; then
    ok "a client trickling its $mode is cut off after the timeout (${took}s)"
  else
    bad "a client trickling its $mode: $took"
  fi
done
expect_http 200 "the service is still healthy" GET /healthz
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"

# Global rate limit: 429 for new work once the bucket is empty.
start_server "$STATE" "rate-global = 5"
n429=0
for i in $(seq 1 20); do
  http PUT "/$SCOPE/registrations/rl-$i/register?$V" -H "$J" -d '{}'
  [ "$(cat "$T/status")" = 429 ] && n429=$((n429+1))
done
[ "$n429" -gt 0 ] && ok "the global limit refuses new work with 429 ($n429 of 20)" || bad "no 429 under the global limit"
stop_server TERM
