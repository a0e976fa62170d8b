#!/usr/bin/env bash
# `custos device register --tpm` end to end over HTTPS: custosd on a free
# loopback port, two swtpms started by the token fixture (`custos token
# init --kind tpm2`, each also carrying a tpm2-pkcs11 token). The device
# sends its EK and SRK, activates the 401 challenge and signs the SAS inside
# its TPM, is assigned and imports the hub key. Then: another TPM presenting
# the first device's registration id is refused (exit 3), and the device
# with its enrollment disabled is refused (exit 3). Skipped (77) when
# custosd is not built. Uses tests/server/lib.sh.
BIN=${1:?usage: register.sh path/to/bin}
LIB="$(dirname "$0")/../server/lib.sh"
[ -x "$BIN/custosd" ] && [ -x "$BIN/custos" ] && [ -f "$LIB" ] || { echo "skipped: custosd not built"; exit 77; }
. "$LIB"
stop_tpms() { for d in "$T/tpmA" "$T/tpmB"; do [ -f "$d/custos-token.conf" ] && "$CUSTOS" token stop --dir "$d" >/dev/null 2>&1; done; true; }
trap 'stop_tpms; finish; exit $?' EXIT

printf 'user-pin-1234\n' >"$T/pin"; printf 'so-pin-1234\n' >"$T/sopin"
for x in A B; do
  expect_rc 0 "swtpm fixture $x (custos token init --kind tpm2)" "$CUSTOS" token init --kind tpm2 --label "dev$x" \
    --dir "$T/tpm$x" --pin-source "$T/pin" --so-pin-source "$T/sopin" --no-resource-manager
done
TB="swtpm:host=127.0.0.1,port=$(sed -n 's/^swtpm.port=//p' "$T/tpmB/custos-token.conf")"

STATE=$T/var
start_server "$STATE" "retry-after = 1"
reg() { "$CUSTOS" device register --scope "$SCOPE" --host "$HP" --ca "$CA" --timeout 60 --tpm "$@"; }

# Enrolled before it first connects: the EK and default id from tpm-identity.
expect_rc 0 "custos device tpm-identity --dir A" "$CUSTOS" device tpm-identity --dir "$T/tpmA" --json
ID=$(sed -n 's/.*"registrationId":"\([^"]*\)".*/\1/p' "$T/out")
sed -n 's/.*"endorsementKey":"\([^"]*\)".*/\1/p' "$T/out" >"$T/ek.b64"
[ ${#ID} = 52 ] && [ -s "$T/ek.b64" ] && ok "registration id and EK of TPM A" || bad "tpm-identity: $(cat "$T/out")"
expect_rc 0 "an individual enrollment from the EK (default registration id)" \
  "$CUSTOS" enrollment create --ek-file "$T/ek.b64" --state "$STATE"

# 1. Assigned, with the SRK at the default handle (0x81000001: here
# tpm2-pkcs11's ECC primary, which custosd takes) ...
expect_rc 0 "register --tpm --dir A: assigned" reg --dir "$T/tpmA" --json
contains "$T/out" '"result":"assigned"' "result assigned"
contains "$T/out" "\"registrationId\":\"$ID\"" "the default registration id is the EK's"
contains "$T/out" '"assignedHub":"[^"]' "an assigned hub"
# ... and with the DPS RSA-2048 SRK at 0x81000002 (created there), as the
# public service would need next to tpm2-pkcs11.
TA="swtpm:host=127.0.0.1,port=$(sed -n 's/^swtpm.port=//p' "$T/tpmA/custos-token.conf")"
expect_rc 0 "register --tpm --tcti A --srk-handle 0x81000002: assigned" \
  reg --tcti "$TA" --srk-handle 0x81000002 --registration-id "$ID"
contains "$T/out" "assigned: $ID" "assigned (text output)"
expect_http 200 "metrics" GET /metrics
body_has 'custos_registrations_total{mechanism="tpm",result="assigned"} 2' "two TPM registrations assigned"

# 2. Another TPM presenting the first device's registration id.
expect_rc 3 "TPM B with A's registration id is refused (exit 3)" reg --tcti "$TB" --registration-id "$ID" --json
contains "$T/out" '"result":"refused"' "refused"
contains "$T/out" '"httpStatus":401' "HTTP 401, no challenge to take"
# and B under its own default id, not enrolled
expect_rc 3 "TPM B without an enrollment is refused (exit 3)" reg --dir "$T/tpmB"

# 3. The device with its enrollment disabled.
expect_rc 0 "disable the enrollment" "$CUSTOS" enrollment update "$ID" --disable --state "$STATE"
expect_rc 3 "the disabled device is refused (exit 3)" reg --dir "$T/tpmA" --json
contains "$T/out" '"result":"refused"' "refused"
expect_rc 0 "enable it again" "$CUSTOS" enrollment update "$ID" --enable --state "$STATE"
expect_rc 0 "and it is assigned again" reg --dir "$T/tpmA"

# 4. Usage and local errors.
expect_rc 2 "--tpm with --key-file" reg --key-file "$T/pin"
expect_rc 2 "--tcti and --dir together" reg --tcti "$TB" --dir "$T/tpmA"
expect_rc 2 "--srk-handle outside the persistent range" reg --dir "$T/tpmA" --srk-handle 0x80000001
expect_rc 2 "--tcti without --tpm" "$CUSTOS" device register --scope "$SCOPE" --host "$HP" --ca "$CA" \
  --key-file "$T/pin" --registration-id x --tcti "$TB"
expect_rc 1 "no TPM at the TCTI: error (exit 1)" reg --tcti "swtpm:host=127.0.0.1,port=1"
contains "$T/err" "TPM" "and the error says so: $(head -c 200 "$T/err")"

stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
