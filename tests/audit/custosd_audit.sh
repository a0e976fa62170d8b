#!/usr/bin/env bash
# What custosd writes to the audit log about itself and its callers, read
# back with `custos audit export` after it stopped:
#  - its own key uses, one key.use record per key per minute, with counts
#    that match what was done (TLS key: one per connection; audit key: one
#    per signed head; keyring: what /metrics counted, at least one unwrap
#    per registration; policy key: one per service SAS);
#  - the actor of every change: the service API's policy, the device;
#  - device requests refused before the engine decided, one record each,
#    and a flood from one address bounded to a few records and a summary.
#   custosd_audit.sh path/to/bin
BIN=${1:?usage: custosd_audit.sh path/to/bin}
. "$(dirname "$0")/../server/lib.sh"
command -v jq >/dev/null || { echo "skipped: jq missing"; exit 77; }

CONNS=0
# Every request is one curl process, one connection, one full handshake.
req() { CONNS=$((CONNS + 1)); expect_http "$@"; }
V='api-version=2021-10-01'
J='Content-Type: application/json'

STATE=$T/var
start_server "$STATE" "register-reply = final" "workers = 2" "audit-sign-every = 7"
A="Authorization: $(svc_token)"
POLICY_USES=0

# ---- changes through the service API ----
GK=$(openssl rand -base64 64 | tr -d '\n')
req 200 "a group through the service API" PUT "/enrollmentGroups/au-group?$V" -H "$A" -H "$J" \
  -d "{\"enrollmentGroupId\":\"au-group\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$GK\",\"secondaryKey\":\"$GK\"}}}"
K1=$(openssl rand -base64 32)
req 200 "an enrollment through the service API" PUT "/enrollments/au-ind?$V" -H "$A" -H "$J" \
  -d "{\"registrationId\":\"au-ind\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$K1\",\"secondaryKey\":\"$K1\"}}}"
req 204 "deleted through the service API" DELETE "/enrollments/au-ind?$V" -H "$A"
req 401 "a forged service SAS is refused" GET "/enrollments/au-ind?$V" -H "$(echo "$A" | sed "s/sig=[^&]*/sig=forged/")"
POLICY_USES=4 # three good SAS and one whose signature did not verify

# ---- N registrations ----
N=5
FUT=$(( $(date +%s) + 600 ))
for i in $(seq 1 $N); do
  derive "$GK" "au-dev-$i" >"$T/dk"
  req 200 "au-dev-$i registers (symmetric key, group)" PUT "/$SCOPE/registrations/au-dev-$i/register?$V" \
    -H "Authorization: $(sas "$SCOPE" "au-dev-$i" "$(cat "$T/dk")" $FUT)" -H "$J" -d "{\"registrationId\":\"au-dev-$i\"}"
  body_has '"status":"assigned"' "au-dev-$i assigned"
done
req 204 "a registration record deleted through the service API" DELETE "/registrations/au-dev-1?$V" -H "$A"
POLICY_USES=$((POLICY_USES + 1))

# ---- refusals before the engine: each from its own loopback address ----
# (the per-address budget would otherwise fold them into one summary)
# A minute boundary between them would split the counts: start early in one.
s=$(date +%S); s=${s#0}; [ "$s" -gt 45 ] && sleep $((61 - s))
from() { local a=$1; shift; req "$@" --interface "$a"; }
from 127.0.0.11 404 "wrong id scope" PUT "/0neNOPE/registrations/au-x/register?$V" -H "$J" -d '{}'
from 127.0.0.12 400 "invalid registration id" PUT "/$SCOPE/registrations/bad%01id%22%C3%A9z/register?$V" -H "$J" -d '{}'
from 127.0.0.13 400 "malformed body" PUT "/$SCOPE/registrations/au-y/register?$V" -H "$J" -d '{"registrationId":'
from 127.0.0.14 401 "no credentials" PUT "/$SCOPE/registrations/au-z/register?$V" -H "$J" -d '{}'
from 127.0.0.15 404 "poll of an unknown operation" GET "/$SCOPE/registrations/au-dev-2/operations/nope?$V" \
  -H "Authorization: $(sas "$SCOPE" au-dev-2 "$(derive "$GK" au-dev-2)" $FUT)"
BAD=$(openssl rand -base64 32)
from 127.0.0.16 401 "a status request with a forged SAS" POST "/$SCOPE/registrations/au-dev-3?$V" \
  -H "Authorization: $(sas "$SCOPE" au-dev-3 "$BAD" $FUT)" -H "$J" -d '{}'
FLOOD=10
for i in $(seq 1 $FLOOD); do
  from 127.0.0.50 401 "flood $i: no credentials" PUT "/$SCOPE/registrations/flood-$i/register?$V" -H "$J" -d '{}'
done

# service-API requests whose authentication fails, before any policy acts
from 127.0.0.21 401 "service API without a SAS" GET "/enrollments/au-ind?$V"
from 127.0.0.22 401 "service SAS of another policy" GET "/enrollmentGroups/au-group?$V" \
  -H "$(echo "$A" | sed "s/skn=[^&]*/skn=other%01policy/")"
from 127.0.0.23 401 "not a service SAS" DELETE "/registrations/x%01y?$V" -H "Authorization: Bearer abc"
SFLOOD=5
for i in $(seq 1 $SFLOOD); do
  from 127.0.0.51 401 "service flood $i: no SAS" GET "/enrollments/f-$i?$V"
done

req 200 "metrics" GET /metrics
cp "$T/body" "$T/metrics"
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"

"$CUSTOS" audit export --state "$STATE" >"$T/log.jsonl" || bad "audit export"
# On PostgreSQL (audit_*_pg) the log is the database's, not a file of the state.
if [ -n "$PG_DB" ]; then
  [ ! -e "$STATE/custos.db" ] && ok "the log is in PostgreSQL ($PG_DB)" || bad "an SQLite store in $STATE"
fi
"$CUSTOS" audit export --state "$STATE" --heads >"$T/heads.jsonl" || bad "audit export --heads"
expect_rc 0 "the log verifies with custosd's audit key" "$CUSTOS" audit verify --state "$STATE" --pubkey "$STATE/audit.pub"
contains "$T/out" " 0 records after it not yet signed" "the last record is under the head signed at shutdown"
q() { jq -r "$@" "$T/log.jsonl"; }
want() { # description expected actual
  if [ "$2" = "$3" ]; then ok "$1 ($3)"; else bad "$1: wanted '$2', got '$3'"; fi
}
metric() { sed -n "s/^custos_key_uses_total{role=\"$1\"} //p" "$T/metrics"; }

# ---- 1. key uses ----
dups=$(jq -s -r '[.[] | select(.type=="key.use") | [.payload.key, .payload.minute]] | group_by(.) | map(select(length > 1)) | length' "$T/log.jsonl")
want "one key.use record per key per minute" 0 "$dups"
sum() { jq -s -r --arg r "$1" '[.[] | select(.type=="key.use" and .payload.role==$r) | .payload.count] | add // 0' "$T/log.jsonl"; }
sumop() { jq -s -r --arg r "$1" --arg o "$2" '[.[] | select(.type=="key.use" and .payload.role==$r) | .payload.uses[$o] // 0] | add // 0' "$T/log.jsonl"; }
name() { jq -s -r --arg r "$1" '[.[] | select(.type=="key.use" and .payload.role==$r) | .payload.key] | unique | join(" ")' "$T/log.jsonl"; }
S=$(cd "$STATE" && pwd -P)
want "TLS server key: one full handshake per connection" "$CONNS" "$(sum tls-server)"
want "TLS server key: named by its file" "file:$S/server.key" "$(name tls-server)"
want "TLS server key: /metrics agrees" "$CONNS" "$(metric tls-server)"
want "audit key: one use per signed head" "$(wc -l <"$T/heads.jsonl" | tr -d ' ')" "$(sum audit)"
want "audit key: named by its file" "file:$S/audit.key" "$(name audit)"
want "service policy key: one use per service SAS checked" "$POLICY_USES" "$(sum service-policy)"
want "keyring: what /metrics counted" "$(metric keyring)" "$(sum keyring)"
want "keyring: named by its file" "file:$S/keyring.key" "$(name keyring)"
[ "$(sumop keyring unwrap)" -ge "$N" ] && ok "keyring: at least one unwrap per registration" \
  || bad "keyring: $(sumop keyring unwrap) unwraps for $N registrations"
[ "$(sumop keyring wrap)" -ge 4 ] && ok "keyring: the enrollment keys were wrapped" || bad "keyring: $(sumop keyring wrap) wraps"
want "keyring: the uses by operation add up" "$(sum keyring)" \
  "$(( $(sumop keyring mac) + $(sumop keyring wrap) + $(sumop keyring unwrap) ))"
want "key.use records are custosd's" "custosd@$(hostname)" "$(q 'select(.type=="key.use") | .actor' | sort -u)"

# ---- 2. actors ----
want "group created by the service API's policy" "service-api:provisioningserviceowner" \
  "$(q 'select(.type=="enrollmentGroup.create" and .payload.id=="au-group") | .actor')"
want "enrollment created and deleted by the policy" "service-api:provisioningserviceowner service-api:provisioningserviceowner" \
  "$(q 'select((.type=="enrollment.create" or .type=="enrollment.delete") and .payload.id=="au-ind") | .actor' | tr '\n' ' ' | sed 's/ $//')"
want "registration record deleted by the policy" "service-api:provisioningserviceowner" \
  "$(q 'select(.type=="registration.delete") | .actor')"
want "each registration is its device's" "$N" \
  "$(q 'select(.type=="registration" and .actor==("device:" + .payload.registrationId)) | .seq' | wc -l | tr -d ' ')"

# ---- 3. refusals before the engine ----
refused() { jq -c --arg a "$1" 'select(.type=="registration.refused" and .payload.refusedBy=="custosd" and .payload.remote==$a)' "$T/log.jsonl"; }
check_refusal() { # address http errorCode registrationId-as-recorded description
  local rec; rec=$(refused "$1")
  if [ "$(echo "$rec" | grep -c .)" != 1 ]; then bad "$5: one record from $1, got: $rec"; return; fi
  want "$5: status" "$2/$3" "$(echo "$rec" | jq -r '"\(.payload.httpStatus)/\(.payload.errorCode)"')"
  want "$5: registration id as sent" "$4" "$(echo "$rec" | jq -r .payload.registrationId)"
  want "$5: actor" "device:$4" "$(echo "$rec" | jq -r .actor)"
  [ -n "$(echo "$rec" | jq -r '.payload.reason // empty')" ] && ok "$5: a reason" || bad "$5: no reason"
}
check_refusal 127.0.0.11 404 404001 au-x "wrong scope"
check_refusal 127.0.0.12 400 400002 'bad\x01id"\xc3\xa9z' "invalid id (escaped)"
check_refusal 127.0.0.13 400 400001 au-y "malformed body"
check_refusal 127.0.0.14 401 401002 au-z "no credentials"
check_refusal 127.0.0.15 404 404002 au-dev-2 "unknown operation"
check_refusal 127.0.0.16 401 401002 au-dev-3 "forged SAS on a status request"
want "a flood from one address: 3 records" 3 "$(refused 127.0.0.50 | grep -c .)"
summary=$(q -c 'select(.type=="registration.refused.summary" and .payload.remote=="127.0.0.50")')
want "... and one summary" 1 "$(echo "$summary" | grep -c .)"
want "the summary counts them all" "$FLOOD/3/$((FLOOD - 3))/{\"401002\":$FLOOD}" \
  "$(echo "$summary" | jq -c -r '"\(.payload.refused)/\(.payload.recorded)/\(.payload.notRecorded)/\(.payload.errorCodes|tojson)"')"
want "the summary's actor is the address" "remote:127.0.0.50" "$(echo "$summary" | jq -r .actor)"
want "no summary where every refusal was recorded" 1 "$(q 'select(.type=="registration.refused.summary") | .seq' | wc -l | tr -d ' ')"

# ---- 4. service-API authentication failures ----
srefused() { jq -c --arg a "$1" 'select(.type=="service.refused" and .payload.remote==$a)' "$T/log.jsonl"; }
check_srefusal() { # address method path reason-part description
  local rec; rec=$(srefused "$1")
  if [ "$(echo "$rec" | grep -c .)" != 1 ]; then bad "$5: one record from $1, got: $rec"; return; fi
  want "$5: status" "401/401000" "$(echo "$rec" | jq -r '"\(.payload.httpStatus)/\(.payload.errorCode)"')"
  want "$5: method and path" "$2 $3" "$(echo "$rec" | jq -r '"\(.payload.method) \(.payload.path)"')"
  want "$5: actor" "remote:$1" "$(echo "$rec" | jq -r .actor)"
  case "$(echo "$rec" | jq -r .payload.reason)" in
    *"$4"*) ok "$5: reason" ;;
    *) bad "$5: reason '$(echo "$rec" | jq -r .payload.reason)' lacks '$4'" ;;
  esac
  [ "$(echo "$rec" | jq -r .payload.requestId | wc -c)" -gt 30 ] && ok "$5: request id" || bad "$5: no request id"
}
check_srefusal 127.0.0.1 GET "/enrollments/au-ind?$V" "the signature does not verify" "forged service SAS"
check_srefusal 127.0.0.21 GET "/enrollments/au-ind?$V" "no Authorization header" "no service SAS"
check_srefusal 127.0.0.22 GET "/enrollmentGroups/au-group?$V" 'unknown shared access policy '"'"'other\x01policy'"'" \
  "another policy (escaped)"
check_srefusal 127.0.0.23 DELETE "/registrations/x%01y?$V" "not a SharedAccessSignature token" "not a SAS"
if grep -q "sig=" "$T/log.jsonl" || grep -qF "$(echo "$A" | sed 's/.*sig=\([^&]*\).*/\1/')" "$T/log.jsonl"; then
  bad "a service SAS is in the log"
else
  ok "no service SAS in the log"
fi
want "a service flood from one address: 3 records" 3 "$(srefused 127.0.0.51 | grep -c .)"
ssum=$(q -c 'select(.type=="service.refused.summary")')
want "... and one summary, counted apart from the device refusals" \
  "remote:127.0.0.51 $SFLOOD/3/$((SFLOOD - 3))/{\"401000\":$SFLOOD}" \
  "$(echo "$ssum" | jq -c -r '"\(.actor) \(.payload.refused)/\(.payload.recorded)/\(.payload.notRecorded)/\(.payload.errorCodes|tojson)"')"
