#!/usr/bin/env bash
# TPM attestation end to end over HTTPS: custosd on a free loopback port, the
# device side played by custos_tpmdev (test_tpm_devtool) on swtpms that the
# token fixture starts (`custos token init --kind tpm2`). The checks of
# issue 7: a device registers by TPM and is assigned (and takes the second
# blob), once (the same SAS again is refused); a tampered blob is rejected by
# the TPM and reported clearly; a SAS past its expiry is refused; a different
# TPM presenting the first device's registration id is refused; the device with its enrollment
# disabled is refused. Uses tests/server/lib.sh (start_server, expect_http).
# Skipped (77) when custosd or the helpers are not built.
BIN=${1:?usage: custosd.sh path/to/bin path/to/test_tpm_devtool}
DEV=${2:?usage: custosd.sh path/to/bin path/to/test_tpm_devtool}
LIB="$(dirname "$0")/../server/lib.sh"
[ -x "$BIN/custosd" ] && [ -x "$BIN/custos" ] && [ -x "$DEV" ] && [ -f "$LIB" ] || { echo "skipped: custosd not built"; exit 77; }
. "$LIB"
stop_tpms() { for d in "$T/tpmA" "$T/tpmB"; do [ -f "$d/custos-token.conf" ] && "$CUSTOS" token stop --dir "$d" >/dev/null 2>&1; done; true; }
trap 'stop_tpms; finish; exit $?' EXIT
export TSS2_LOG=all+none

# Two TPMs from the fixture, without resource manager: the device's TCTI
# goes straight to each swtpm. tpm2-pkcs11 keeps its ECC primary at
# 0x81000001; the device keeps the DPS RSA SRK at 0x81000002 (the engine
# takes RSA-2048 SRKs only).
printf 'user-pin-1234\n' >"$T/pin"; printf 'so-pin-1234\n' >"$T/sopin"
for x in A B; do
  expect_rc 0 "swtpm fixture $x (custos token init --kind tpm2)" "$CUSTOS" token init --kind tpm2 --label "dev$x" \
    --dir "$T/tpm$x" --pin-source "$T/pin" --so-pin-source "$T/sopin" --no-resource-manager
done
tcti() { echo "swtpm:host=127.0.0.1,port=$(sed -n 's/^swtpm.port=//p' "$T/tpm$1/custos-token.conf")"; }
TA=$(tcti A); TB=$(tcti B); SRKH=0x81000002
"$DEV" "$TA" $SRKH ids >"$T/idsA" 2>"$T/err" && "$DEV" "$TB" $SRKH ids >"$T/idsB" 2>>"$T/err" \
  && ok "the devices read (or make) their EK and SRK" || bad "device ids: $(cat "$T/err")"
EKA=$(sed -n 1p "$T/idsA"); SRKA=$(sed -n 2p "$T/idsA"); ID=$(sed -n 3p "$T/idsA")
EKB=$(sed -n 1p "$T/idsB"); SRKB=$(sed -n 2p "$T/idsB")
expect_rc 0 "custos device tpm-identity --dir" "$CUSTOS" device tpm-identity --dir "$T/tpmA" --json
contains "$T/out" "\"registrationId\":\"$ID\"" "tpm-identity gives the same registration id as the device library"

STATE=$T/var
start_server "$STATE" "retry-after = 1"
printf '%s' "$EKA" >"$T/ek.b64"
expect_rc 0 "an enrollment from the EK alone (default registration id)" \
  "$CUSTOS" enrollment create --ek-file "$T/ek.b64" --state "$STATE"
contains "$T/out" "$ID" "the enrollment's id is the TPM's default registration id"
J='Content-Type: application/json'; V='api-version=2021-06-01'
body() { echo "{\"registrationId\":\"$ID\",\"tpm\":{\"endorsementKey\":\"$1\",\"storageRootKey\":\"$2\"}}"; }
URL="/$SCOPE/registrations/$ID/register?$V"

# 1. The challenge, activated in the TPM; the SAS signed in the TPM.
expect_http 401 "first PUT: challenged" PUT "$URL" -H "$J" -d "$(body "$EKA" "$SRKA")"
sed -n 's/.*"authenticationKey":"\([^"]*\)".*/\1/p' "$T/body" >"$T/blob1"
[ -s "$T/blob1" ] && ok "401 carries authenticationKey" || bad "no authenticationKey: $(cat "$T/body")"
expect_rc 0 "the device activates and imports the challenge" "$DEV" "$TA" $SRKH import "$T/blob1"
SE=$(( $(date +%s) + 2400 ))
AUTH="Authorization: $("$DEV" "$TA" $SRKH sas "$SCOPE" "$ID" "$SE")"
expect_http 202 "second PUT with the TPM-signed SAS" PUT "$URL" -H "$J" -H "$AUTH" -d "$(body "$EKA" "$SRKA")"
OP=$(sed -n 's/.*"operationId":"\([^"]*\)".*/\1/p' "$T/body")
for _ in 1 2 3 4 5 6 7 8 9 10; do
  http GET "/$SCOPE/registrations/$ID/operations/$OP?$V" -H "$AUTH"
  grep -q '"status":"assigned"' "$T/body" && break; sleep 0.3
done
body_has '"status":"assigned"' "the device is assigned"
sed -n 's/.*"tpm":{"authenticationKey":"\([^"]*\)".*/\1/p' "$T/body" >"$T/blob2"
expect_rc 0 "the device imports the second blob (the hub key)" "$DEV" "$TA" $SRKH import "$T/blob2"
# The challenge answered that one registration: the same PUT again is refused.
expect_http 401 "the same SAS again is refused (the challenge was used)" PUT "$URL" -H "$J" -H "$AUTH" -d "$(body "$EKA" "$SRKA")"

# 2. A tampered blob: the TPM refuses it (TPM_RC_INTEGRITY) and says so.
expect_http 401 "a new challenge" PUT "$URL" -H "$J" -d "$(body "$EKA" "$SRKA")"
sed -n 's/.*"authenticationKey":"\([^"]*\)".*/\1/p' "$T/body" | base64 -d >"$T/raw"
# a byte in the middle of field 3 (the duplicate's outer HMAC)
off=$(( 2 + $(od -An -tu1 -j0 -N2 "$T/raw" | awk '{print $1*256+$2}') ))
off=$(( off + 2 + $(od -An -tu1 -j$off -N2 "$T/raw" | awk '{print $1*256+$2}') + 4 + 3 ))
printf '\x5a' | dd of="$T/raw" bs=1 seek=$off conv=notrunc status=none
base64 -w0 "$T/raw" >"$T/blob3"
"$DEV" "$TA" $SRKH import "$T/blob3" >"$T/out" 2>"$T/err"; rc=$?
[ $rc = 3 ] && ok "the TPM rejects the tampered blob (TPM_RC_INTEGRITY)" || bad "tampered blob: exit $rc: $(cat "$T/err")"
contains "$T/err" "integrity check failed" "the device reports it clearly: $(cat "$T/err")"

# 3. A SAS past its expiry (and custosd's 300 s of skew), signed with the key
# of a live challenge: refused; the same key with a live expiry is accepted,
# so it was the expiry that refused.
expect_http 401 "a fresh challenge" PUT "$URL" -H "$J" -d "$(body "$EKA" "$SRKA")"
sed -n 's/.*"authenticationKey":"\([^"]*\)".*/\1/p' "$T/body" >"$T/blob4"
expect_rc 0 "the device imports it" "$DEV" "$TA" $SRKH import "$T/blob4"
OLD="Authorization: $("$DEV" "$TA" $SRKH sas "$SCOPE" "$ID" $(( $(date +%s) - 400 )))"
expect_http 401 "a SAS past its expiry is refused" PUT "$URL" -H "$J" -H "$OLD" -d "$(body "$EKA" "$SRKA")"
NEW="Authorization: $("$DEV" "$TA" $SRKH sas "$SCOPE" "$ID" $(( $(date +%s) + 600 )))"
expect_http 202 "the same key with a live expiry is accepted" PUT "$URL" -H "$J" -H "$NEW" -d "$(body "$EKA" "$SRKA")"

# 4. Another TPM presenting the first device's registration id.
expect_http 401 "another TPM with the first device's id is refused" PUT "$URL" -H "$J" -d "$(body "$EKB" "$SRKB")"
if grep -q authenticationKey "$T/body"; then bad "no challenge for another TPM"; else ok "and gets no challenge"; fi

# 5. The same device with its enrollment disabled.
expect_rc 0 "disable the enrollment" "$CUSTOS" enrollment update "$ID" --disable --state "$STATE"
expect_http 401 "the disabled device is refused" PUT "$URL" -H "$J" -d "$(body "$EKA" "$SRKA")"
if grep -q authenticationKey "$T/body"; then bad "no challenge when disabled"; else ok "and gets no challenge"; fi
AUTH="Authorization: $("$DEV" "$TA" $SRKH sas "$SCOPE" "$ID" $(( $(date +%s) + 600 )))"
expect_http 401 "even with a SAS from its imported key" PUT "$URL" -H "$J" -H "$AUTH" -d "$(body "$EKA" "$SRKA")"

stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
