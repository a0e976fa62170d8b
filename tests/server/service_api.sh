#!/usr/bin/env bash
# The service API of custosd by curl, authorized by a service SAS from the
# shared access policy: enrollments and groups (create, get, attestation
# mechanism, ETag/If-Match 412 — in the header, bare, `*` or in the body —,
# query with continuation, bulk in every mode and its bound, delete),
# registration records, CA certificates with proof of possession, and
# writes refused (forged SAS, bad key) that leave nothing behind.
BIN=${1:?usage: service_api.sh path/to/bin}
. "$(dirname "$0")/lib.sh"

STATE=$T/var
start_server "$STATE" "retry-after = 1"
V='api-version=2021-10-01'
J='Content-Type: application/json'
A() { echo "Authorization: $(svc_token)"; }
etag_of() { sed 's/.*"etag":"\(\\"[^\\]*\\"\)".*/\1/; s/\\"/"/g' "$T/body"; }

# ---- individual enrollments ----
K1=$(openssl rand -base64 32)
expect_http 200 "create an individual enrollment" PUT "/enrollments/svc-1?$V" -H "$(A)" -H "$J" \
  -d "{\"registrationId\":\"svc-1\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$K1\",\"secondaryKey\":\"$K1\"}},\"provisioningStatus\":\"enabled\"}"
body_has '"etag":"\\"' "the answer carries a quoted etag"
if grep -q "$K1" "$T/body"; then bad "PUT answer leaks the key"; else ok "PUT answer shows no key"; fi
E1=$(etag_of)
expect_http 200 "get it" GET "/enrollments/svc-1?$V" -H "$(A)"
body_has '"registrationId":"svc-1"' "get: the id"
expect_http 200 "attestation mechanism shows the keys" POST "/enrollments/svc-1/attestationmechanism?$V" -H "$(A)"
body_has "$K1" "attestationmechanism: the primary key"
expect_http 200 "update with the current etag" PUT "/enrollments/svc-1?$V" -H "$(A)" -H "$J" -H "If-Match: $E1" \
  -d "{\"registrationId\":\"svc-1\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$K1\",\"secondaryKey\":\"$K1\"}},\"provisioningStatus\":\"disabled\"}"
E2=$(etag_of)
[ "$E1" != "$E2" ] && ok "the etag changed" || bad "the etag did not change"
expect_http 412 "update with a stale etag: 412" PUT "/enrollments/svc-1?$V" -H "$(A)" -H "$J" -H "If-Match: $E1" \
  -d "{\"registrationId\":\"svc-1\",\"attestation\":{\"type\":\"symmetricKey\"}}"
body_has '"errorCode":412001' "412 error body"
expect_http 412 "delete with a stale etag: 412" DELETE "/enrollments/svc-1?$V" -H "$(A)" -H "If-Match: $E1"
expect_http 200 "still there after the refused delete" GET "/enrollments/svc-1?$V" -H "$(A)"
body_has '"provisioningStatus":"disabled"' "the update stuck"
expect_http 400 "an enrollment with a bad key" PUT "/enrollments/svc-2?$V" -H "$(A)" -H "$J" \
  -d '{"registrationId":"svc-2","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"not base64"}}}'
body_has '"errorCode":400001' "bad key: error body"
expect_http 400 "body id differs from the URL" PUT "/enrollments/svc-2?$V" -H "$(A)" -H "$J" \
  -d '{"registrationId":"svc-3","attestation":{"type":"symmetricKey"}}'
expect_http 415 "wrong content type" PUT "/enrollments/svc-2?$V" -H "$(A)" -H 'Content-Type: text/plain' -d '{}'
expect_http 404 "get a missing enrollment" GET "/enrollments/nobody?$V" -H "$(A)"
body_has '"errorCode":404201' "missing enrollment: 404201"
expect_http 401 "without a SAS" GET "/enrollments/svc-1?$V"
expect_http 204 "delete with the current etag" DELETE "/enrollments/svc-1?$V" -H "$(A)" -H "If-Match: $E2"
expect_http 404 "gone" GET "/enrollments/svc-1?$V" -H "$(A)"

# ---- bulk (POST /enrollments/ with the C SDK's trailing slash) ----
items=""
for i in $(seq 1 7); do
  items="$items${items:+,}{\"registrationId\":\"bulk-$i\",\"attestation\":{\"type\":\"symmetricKey\"}}"
done
expect_http 200 "bulk create of 7" POST "/enrollments/?$V" -H "$(A)" -H "$J" -d "{\"mode\":\"create\",\"enrollments\":[$items]}"
body_has '"isSuccessful":true' "bulk create succeeded"
expect_http 200 "bulk create again reports conflicts" POST "/enrollments?$V" -H "$(A)" -H "$J" \
  -d '{"mode":"create","enrollments":[{"registrationId":"bulk-1","attestation":{"type":"symmetricKey"}},{"registrationId":"bulk-8","attestation":{"type":"symmetricKey"}}]}'
body_has '"isSuccessful":false' "bulk: not successful"
body_has '"registrationId":"bulk-1","errorCode":409001' "bulk: bulk-1 is a 409"
expect_http 200 "bulk updateIfMatchETag with a stale etag" POST "/enrollments?$V" -H "$(A)" -H "$J" \
  -d '{"mode":"updateIfMatchETag","enrollments":[{"registrationId":"bulk-2","etag":"\"00000000-0000-0000-0000-000000000000\"","attestation":{"type":"symmetricKey"}}]}'
body_has '"errorCode":412001' "bulk: stale etag is a 412"
expect_http 400 "bulk with an unknown mode" POST "/enrollments?$V" -H "$(A)" -H "$J" -d '{"mode":"upsert","enrollments":[]}'

# ---- query with continuation ----
pages=0 seen=0 cont=""
while :; do
  if [ -n "$cont" ]; then http POST "/enrollments/query?$V" -H "$(A)" -H "$J" -H "x-ms-max-item-count: 3" -H "x-ms-continuation: $cont" -d '{"query":"*"}'
  else http POST "/enrollments/query?$V" -H "$(A)" -H "$J" -H "x-ms-max-item-count: 3" -d '{"query":"*"}'; fi
  [ "$(cat "$T/status")" = 200 ] || { bad "query page HTTP $(cat "$T/status")"; break; }
  pages=$((pages+1)); seen=$((seen + $(grep -o '"registrationId"' "$T/body" | wc -l)))
  cont=$(grep -i '^x-ms-continuation:' "$T/hdr" | sed 's/^[^:]*: *//' | tr -d '\r')
  [ -z "$cont" ] && break
  [ $pages -gt 10 ] && { bad "query does not end"; break; }
done
[ "$seen" = 8 ] && ok "query returned all 8 enrollments" || bad "query returned $seen enrollments, wanted 8"
[ "$pages" = 3 ] && ok "in 3 pages of 3" || bad "in $pages pages"
hdr_lacks '^x-ms-continuation' "the last page has no x-ms-continuation"
hdr_has '^x-ms-item-type: Enrollment' "x-ms-item-type"
expect_http 400 "a query other than *" POST "/enrollments/query?$V" -H "$(A)" -H "$J" -d '{"query":"SELECT * FROM devices WHERE 1=1"}'
expect_http 200 "bulk delete" POST "/enrollments?$V" -H "$(A)" -H "$J" \
  -d '{"mode":"delete","enrollments":[{"registrationId":"bulk-1","attestation":{"type":"symmetricKey"}},{"registrationId":"bulk-2","attestation":{"type":"symmetricKey"}}]}'
body_has '"isSuccessful":true' "bulk delete succeeded"
expect_http 404 "bulk-1 is gone" GET "/enrollments/bulk-1?$V" -H "$(A)"

# ---- groups, registrations by group ----
GK=$(openssl rand -base64 64 | tr -d '\n')
expect_http 200 "create a symmetric-key group" PUT "/enrollmentGroups/grp-1?$V" -H "$(A)" -H "$J" \
  -d "{\"enrollmentGroupId\":\"grp-1\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$GK\",\"secondaryKey\":\"$GK\"}}}"
GE=$(etag_of)
expect_http 200 "group attestation mechanism (lower-case path, as Node)" POST "/enrollmentgroups/grp-1/attestationmechanism?$V" -H "$(A)"
body_has "$GK" "group key shown"
echo "$GK" >"$T/gk"
for d in g-dev-1 g-dev-2 g-dev-3 g-dev-4; do
  "$CUSTOS" device register --scope "$SCOPE" --host "$HP" --ca "$CA" --key-file "$T/gk" --group --registration-id $d >/dev/null \
    || bad "register $d"
done
expect_http 200 "registrations of the group, first page" POST "/registrations/grp-1/query?$V" -H "$(A)" -H "$J" -H "x-ms-max-item-count: 3" -d '{}'
n=$(grep -o '"registrationId"' "$T/body" | wc -l)
[ "$n" = 3 ] && ok "3 records on the first page" || bad "$n records on the first page"
hdr_has '^x-ms-item-type: DeviceRegistration' "item type DeviceRegistration"
cont=$(grep -i '^x-ms-continuation:' "$T/hdr" | sed 's/^[^:]*: *//' | tr -d '\r')
expect_http 200 "second page" POST "/registrations/grp-1/query?$V" -H "$(A)" -H "x-ms-max-item-count: 3" -H "x-ms-continuation: $cont"
n=$(grep -o '"registrationId"' "$T/body" | wc -l)
[ "$n" = 1 ] && ok "1 record on the last page" || bad "$n records on the last page"
hdr_lacks '^x-ms-continuation' "no continuation on the last page"
expect_http 200 "get a registration record" GET "/registrations/g-dev-1?$V" -H "$(A)"
body_has '"assignedHub":"hub1.custos.local"' "record: hub"
RE=$(etag_of)
expect_http 412 "delete a record with a stale etag" DELETE "/registrations/g-dev-1?$V" -H "$(A)" -H 'If-Match: "stale"'
expect_http 204 "delete a record" DELETE "/registrations/g-dev-1?$V" -H "$(A)" -H "If-Match: $RE"
expect_http 404 "the record is gone" GET "/registrations/g-dev-1?$V" -H "$(A)"
body_has '"errorCode":404203' "missing record: 404203"
expect_http 412 "group update with a stale etag" PUT "/enrollmentGroups/grp-1?$V" -H "$(A)" -H "$J" -H 'If-Match: "nope"' \
  -d '{"enrollmentGroupId":"grp-1","attestation":{"type":"symmetricKey"}}'
expect_http 204 "delete the group" DELETE "/enrollmentGroups/grp-1?$V" -H "$(A)" -H "If-Match: $GE"

# ---- CA certificates and proof of possession ----
"$CUSTOS" pki issue --cn "Svc Root" --ca --out "$T/ca" >/dev/null || bad "pki issue"
CERT=$(awk '{printf "%s\\n", $0}' "$T/ca.pem")
expect_http 200 "upload a CA certificate" PUT "/certificates/svc-root?$V" -H "$(A)" -H "$J" -d "{\"certificate\":\"$CERT\"}"
body_has '"isVerified":false' "not verified yet"
CE=$(etag_of)
expect_http 200 "generate a verification code" POST "/certificates/svc-root/generateVerificationCode?$V" -H "$(A)" -H "If-Match: $CE"
CODE=$(sed 's/.*"verificationCode":"\([^"]*\)".*/\1/' "$T/body")
[ -n "$CODE" ] && ok "a verification code" || bad "no verification code"
http GET "/certificates/svc-root?$V" -H "$(A)"; CE=$(etag_of)
"$CUSTOS" pki verification-cert --ca-cert "$T/ca.pem" --ca-key "$T/ca.key" --code "$CODE" --out "$T/pop.pem" >/dev/null || bad "verification-cert"
POP=$(awk '{printf "%s\\n", $0}' "$T/pop.pem")
expect_http 400 "verify with a certificate for another code" POST "/certificates/svc-root/verify?$V" -H "$(A)" -H "$J" -H "If-Match: $CE" \
  -d "{\"certificate\":\"$CERT\"}"
expect_http 200 "verify with the proof of possession" POST "/certificates/svc-root/verify?$V" -H "$(A)" -H "$J" -H "If-Match: $CE" \
  -d "{\"certificate\":\"$POP\"}"
body_has '"isVerified":true' "verified"
expect_http 200 "a group on the verified CA (caReferences)" PUT "/enrollmentGroups/grp-ca?$V" -H "$(A)" -H "$J" \
  -d '{"enrollmentGroupId":"grp-ca","attestation":{"type":"x509","x509":{"caReferences":{"primary":"svc-root"}}}}'

# ---- If-Match: *, without quotes, and an etag inside the body ----
KM=$(openssl rand -base64 32)
im_body() { echo "{\"registrationId\":\"im-1\",\"attestation\":{\"type\":\"symmetricKey\",\"symmetricKey\":{\"primaryKey\":\"$KM\"}},\"provisioningStatus\":\"$1\"${2:-}}"; }
expect_http 200 "im-1 created" PUT "/enrollments/im-1?$V" -H "$(A)" -H "$J" -d "$(im_body enabled)"
M1=$(etag_of)
expect_http 200 "If-Match: * replaces whatever is there" PUT "/enrollments/im-1?$V" -H "$(A)" -H "$J" -H 'If-Match: *' -d "$(im_body disabled)"
body_has '"provisioningStatus":"disabled"' "If-Match: * applied"
M2=$(etag_of)
expect_http 200 "an If-Match without its quotes matches" PUT "/enrollments/im-1?$V" -H "$(A)" -H "$J" -H "If-Match: ${M2//\"/}" -d "$(im_body enabled)"
M3=$(etag_of)
expect_http 412 "an unquoted stale If-Match: 412" PUT "/enrollments/im-1?$V" -H "$(A)" -H "$J" -H "If-Match: ${M1//\"/}" -d "$(im_body disabled)"
body_has '"errorCode":412001' "unquoted stale If-Match: 412001"
expect_http 412 "a stale etag inside the body (no If-Match): 412" PUT "/enrollments/im-1?$V" -H "$(A)" -H "$J" \
  -d "$(im_body disabled ",\"etag\":\"${M1//\"/\\\"}\"")"
body_has '"errorCode":412001' "stale etag in the body: 412001"
expect_http 200 "im-1 after the refusals" GET "/enrollments/im-1?$V" -H "$(A)"
body_has '"provisioningStatus":"enabled"' "neither refused update was applied"
[ "$(etag_of)" = "$M3" ] && ok "im-1's etag is unchanged" || bad "im-1's etag changed: $(etag_of), wanted $M3"
expect_http 200 "the current etag inside the body is taken" PUT "/enrollments/im-1?$V" -H "$(A)" -H "$J" \
  -d "$(im_body disabled ",\"etag\":\"${M3//\"/\\\"}\"")"
body_has '"provisioningStatus":"disabled"' "the update with the body's etag applied"

# ---- bulk: mode update, more than 100 items ----
expect_http 200 "bulk update: bulk-3 changed (a stale etag is no condition), bulk-9 made" POST "/enrollments?$V" -H "$(A)" -H "$J" \
  -d '{"mode":"update","enrollments":[{"registrationId":"bulk-3","etag":"\"stale\"","attestation":{"type":"symmetricKey"},"provisioningStatus":"disabled"},{"registrationId":"bulk-9","attestation":{"type":"symmetricKey"}}]}'
body_has '"isSuccessful":true' "bulk update succeeded"
expect_http 200 "bulk-3" GET "/enrollments/bulk-3?$V" -H "$(A)"
body_has '"provisioningStatus":"disabled"' "bulk update applied to bulk-3"
expect_http 200 "bulk-9 made by the update" GET "/enrollments/bulk-9?$V" -H "$(A)"
items=""
for i in $(seq 1 101); do items="$items${items:+,}{\"registrationId\":\"many-$i\",\"attestation\":{\"type\":\"symmetricKey\"}}"; done
expect_http 400 "a bulk of 101 items: 400" POST "/enrollments?$V" -H "$(A)" -H "$J" -d "{\"mode\":\"create\",\"enrollments\":[$items]}"
body_has '"errorCode":400001' "101 items: errorCode 400001"
body_has '1..100' "101 items: the bound is named"
expect_http 404 "none of the 101 was made" GET "/enrollments/many-1?$V" -H "$(A)"

# ---- enrollment groups in bulk, and their query paged ----
gitems=""
for i in 1 2 3 4; do gitems="$gitems${gitems:+,}{\"enrollmentGroupId\":\"gb-$i\",\"attestation\":{\"type\":\"symmetricKey\"}}"; done
expect_http 200 "bulk create of 4 groups" POST "/enrollmentGroups?$V" -H "$(A)" -H "$J" -d "{\"mode\":\"create\",\"enrollmentGroups\":[$gitems]}"
body_has '"isSuccessful":true' "group bulk create succeeded"
expect_http 200 "gb-4 exists" GET "/enrollmentGroups/gb-4?$V" -H "$(A)"
expect_http 200 "group bulk: gb-1 again is a conflict, gb-4 deleted" POST "/enrollmentGroups/?$V" -H "$(A)" -H "$J" \
  -d '{"mode":"create","enrollmentGroups":[{"enrollmentGroupId":"gb-1","attestation":{"type":"symmetricKey"}}]}'
body_has '"enrollmentGroupId":"gb-1","errorCode":409001' "group bulk: gb-1 is a 409, named by enrollmentGroupId"
expect_http 200 "group bulk delete of gb-4" POST "/enrollmentGroups?$V" -H "$(A)" -H "$J" \
  -d '{"mode":"delete","enrollmentGroups":[{"enrollmentGroupId":"gb-4","attestation":{"type":"symmetricKey"}}]}'
body_has '"isSuccessful":true' "group bulk delete succeeded"
expect_http 404 "gb-4 is gone" GET "/enrollmentGroups/gb-4?$V" -H "$(A)"
body_has '"errorCode":404202' "gone group: 404202"
# grp-ca, gb-1..3: four groups, in pages of 3.
pages=0 ids="" cont=""
while :; do
  q=(-H "$(A)" -H "$J" -H "x-ms-max-item-count: 3")
  [ -n "$cont" ] && q+=(-H "x-ms-continuation: $cont")
  http POST "/enrollmentGroups/query?$V" "${q[@]}" -d '{"query":"*"}'
  [ "$(cat "$T/status")" = 200 ] || { bad "group query page HTTP $(cat "$T/status")"; break; }
  pages=$((pages+1)); ids="$ids $(grep -o '"enrollmentGroupId":"[^"]*"' "$T/body" | sed 's/.*:"//; s/"//' | tr '\n' ' ')"
  cont=$(grep -i '^x-ms-continuation:' "$T/hdr" | sed 's/^[^:]*: *//' | tr -d '\r')
  [ -z "$cont" ] && break
  [ $pages -gt 10 ] && { bad "group query does not end"; break; }
done
[ "$(echo $ids | tr ' ' '\n' | sort | tr '\n' ' ')" = "gb-1 gb-2 gb-3 grp-ca " ] && ok "the group query returned the 4 groups once each" \
  || bad "the group query returned:$ids"
[ "$pages" = 2 ] && ok "in 2 pages of at most 3" || bad "in $pages pages"
hdr_has '^x-ms-item-type: Enrollment' "group query: x-ms-item-type"

# ---- CA certificates: uploaded twice, missing ----
expect_http 409 "the same CA name uploaded again: 409" PUT "/certificates/svc-root?$V" -H "$(A)" -H "$J" -d "{\"certificate\":\"$CERT\"}"
body_has '"errorCode":409001' "CA again: 409001"
expect_http 200 "svc-root unchanged" GET "/certificates/svc-root?$V" -H "$(A)"
body_has '"isVerified":true' "still verified after the refused upload"
expect_http 404 "a missing CA: 404" GET "/certificates/no-such-ca?$V" -H "$(A)"
body_has '"errorCode":404204' "missing CA: 404204"
expect_http 404 "verification code for a missing CA: 404" POST "/certificates/no-such-ca/generateVerificationCode?$V" -H "$(A)"
body_has '"errorCode":404204' "missing CA, generateVerificationCode: 404204"

# ---- refused writes: the error body, and nothing written ----
TOK=$(svc_token)
SIG=$(echo "$TOK" | sed 's/.*sig=\([^&]*\).*/\1/')
FORGED=$(echo "$TOK" | sed "s|sig=[^&]*|sig=$(openssl rand -base64 32 | sed 's/+/%2b/g; s/\//%2f/g; s/=/%3d/g')|")
[ "$FORGED" != "$TOK" ] && [ -n "$SIG" ] && ok "a service SAS with a forged signature" || bad "could not forge: $TOK"
expect_http 401 "PUT with a forged service SAS: 401" PUT "/enrollments/forged-1?$V" -H "Authorization: $FORGED" -H "$J" \
  -d '{"registrationId":"forged-1","attestation":{"type":"symmetricKey"}}'
body_has '"errorCode":401000' "forged SAS: errorCode 401000"
body_has '"trackingId":"' "forged SAS: trackingId"
hdr_has '^x-ms-error-code: 401000' "forged SAS: x-ms-error-code"
expect_http 404 "nothing written by the forged SAS" GET "/enrollments/forged-1?$V" -H "$(A)"
expect_http 401 "bulk with a forged service SAS: 401" POST "/enrollments?$V" -H "Authorization: $FORGED" -H "$J" \
  -d '{"mode":"create","enrollments":[{"registrationId":"forged-2","attestation":{"type":"symmetricKey"}}]}'
expect_http 404 "nothing written by the forged bulk" GET "/enrollments/forged-2?$V" -H "$(A)"
expect_http 401 "delete with a forged service SAS: 401" DELETE "/enrollments/im-1?$V" -H "Authorization: $FORGED"
expect_http 200 "im-1 survives the forged delete" GET "/enrollments/im-1?$V" -H "$(A)"
expect_http 400 "PUT with a bad key: 400" PUT "/enrollments/badkey-1?$V" -H "$(A)" -H "$J" \
  -d '{"registrationId":"badkey-1","attestation":{"type":"symmetricKey","symmetricKey":{"primaryKey":"!!not base64!!"}}}'
body_has '"errorCode":400001' "bad key: errorCode 400001"
body_has '"trackingId":"' "bad key: trackingId"
expect_http 404 "nothing written by the PUT with a bad key" GET "/enrollments/badkey-1?$V" -H "$(A)"

# ---- 405 names the methods a resource takes ----
allow() { # allow-value description method path
  local want=$1 what=$2; shift 2
  expect_http 405 "$what" "$@" -H "$(A)"
  hdr_has "^Allow: $want"$'\r'"\?$" "$what: Allow: $want"
  body_has '"errorCode":405000' "$what: error body"
}
allow "GET, PUT, DELETE" "PATCH on an enrollment" PATCH "/enrollments/svc-1?$V"
allow "GET, PUT, DELETE" "POST on a group" POST "/enrollmentGroups/grp-ca?$V"
allow "POST" "DELETE on the enrollments (bulk)" DELETE "/enrollments?$V"
allow "POST" "GET on attestationmechanism" GET "/enrollments/svc-1/attestationmechanism?$V"
allow "GET, DELETE" "PUT on a registration record" PUT "/registrations/svc-1?$V"
allow "POST" "GET on a group's registration query" GET "/registrations/grp-ca/query?$V"
allow "GET, PUT, DELETE" "OPTIONS on a CA certificate" OPTIONS "/certificates/svc-root?$V"
allow "POST" "PUT on verify" PUT "/certificates/svc-root/verify?$V"
allow "GET" "DELETE on /healthz" DELETE /healthz
allow "GET" "POST on /metrics" POST /metrics
# HEAD: the head only (libevent would send the body, without a length).
python3 - "$PORT" "$CA" "$(svc_token)" "/enrollments/svc-1?$V" >"$T/head" 2>&1 <<'PY'
import socket, ssl, sys, time
port, ca, tok, path = sys.argv[1:5]
s = ssl.create_default_context(cafile=ca).wrap_socket(socket.create_connection(("127.0.0.1", int(port))),
                                                      server_hostname="localhost")
s.sendall(b"HEAD %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: %s\r\n\r\n" % (path.encode(), tok.encode()))
time.sleep(0.3)
s.settimeout(0.5)
data = b""
try:
    while True:
        d = s.recv(4096)
        if not d:
            break
        data += d
except socket.timeout:
    pass
sys.stdout.write(data.decode(errors="replace"))
PY
head -1 "$T/head" | grep -q '^HTTP/1.1 405 ' && ok "HEAD on an enrollment: 405" || bad "HEAD on an enrollment: $(head -c 300 "$T/head")"
grep -q '^Allow: GET, PUT, DELETE' "$T/head" && ok "HEAD: Allow" || bad "HEAD: no Allow in $(head -c 300 "$T/head")"
[ -z "$(sed '1,/^\r\?$/d' "$T/head")" ] && ok "HEAD: no body" || bad "HEAD answered with a body: $(sed '1,/^\r\?$/d' "$T/head" | head -c 200)"
expect_http 404 "an unknown sub-resource is 404, not 405" POST "/certificates/svc-root/nothing?$V" -H "$(A)"

# ---- the C and Node service SDK spellings ----
expect_http 200 "api-version 2018-04-01 (C service SDK)" GET "/enrollmentGroups/grp-ca?api-version=2018-04-01" -H "$(A)" -H 'UserAgent: iothub_dps_prov_client/1.0'
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
