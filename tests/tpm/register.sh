#!/usr/bin/env bash
# `custos device register --tpm` end to end over HTTPS: custosd on a free
# loopback port, two swtpms started by the token fixture (`custos token
# init --kind tpm2`, each also carrying a tpm2-pkcs11 token). The device
# sends its EK and SRK, activates the 401 challenge and signs the SAS inside
# its TPM, is assigned and imports the hub key. Then: another TPM presenting
# the first device's registration id is refused (exit 3), the device with
# its enrollment disabled is refused (exit 3), an ECC EK registers, and an
# EK certificate is checked at enrollment, and a challenge altered on the
# way is refused by the TPM and reported. Skipped (77) when
# custosd is not built. Uses tests/server/lib.sh.
BIN=${1:?usage: register.sh path/to/bin}
LIB="$(dirname "$0")/../server/lib.sh"
[ -x "$BIN/custosd" ] && [ -x "$BIN/custos" ] && [ -f "$LIB" ] || { echo "skipped: custosd not built"; exit 77; }
. "$LIB"
stop_tpms() { for d in "$T/tpmA" "$T/tpmB"; do [ -f "$d/custos-token.conf" ] && "$CUSTOS" token stop --dir "$d" >/dev/null 2>&1; done; true; }
PX=
trap 'stop_tpms; [ -z "$PX" ] || kill "$PX" 2>/dev/null; finish; exit $?' EXIT

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
# The EK is the TCG default template's, byte for byte as tpm2-tools makes it,
# and the id is base32 (RFC 4648, lower case, no padding) of its SHA-256.
TA="swtpm:host=127.0.0.1,port=$(sed -n 's/^swtpm.port=//p' "$T/tpmA/custos-token.conf")"
# (swtpm has three object slots: flush what tpm2-tools leaves loaded.)
TPM2TOOLS_TCTI=$TA tpm2_createek -c "$T/ek.ctx" -G rsa -u "$T/ek.pub" >/dev/null 2>&1
TPM2TOOLS_TCTI=$TA tpm2_flushcontext -t >/dev/null 2>&1; TPM2TOOLS_TCTI=$TA tpm2_flushcontext -l >/dev/null 2>&1
base64 -d "$T/ek.b64" | cmp -s - "$T/ek.pub" && ok "the EK equals tpm2_createek's" || bad "the EK differs from tpm2_createek's"
[ "$(sha256sum <"$T/ek.pub" | cut -c1-64 | xxd -r -p | base32 -w0 | tr -d = | tr A-Z a-z)" = "$ID" ] &&
  ok "the id is base32 of the EK's SHA-256" || bad "the id is not base32 of the EK's SHA-256"
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

# 4. An ECC P-256 endorsement key (a Custos extension), end to end.
expect_rc 0 "tpm-identity --ek ecc" "$CUSTOS" device tpm-identity --dir "$T/tpmA" --ek ecc --json
EID=$(sed -n 's/.*"registrationId":"\([^"]*\)".*/\1/p' "$T/out")
sed -n 's/.*"endorsementKey":"\([^"]*\)".*/\1/p' "$T/out" >"$T/ekecc.b64"
contains "$T/out" '"ekType":"ecc-p256"' "an ECC EK"
[ -n "$EID" ] && [ "$EID" != "$ID" ] && ok "its own registration id" || bad "ECC EK id '$EID'"
expect_rc 0 "enroll the ECC EK" "$CUSTOS" enrollment create --ek-file "$T/ekecc.b64" --state "$STATE"
expect_rc 0 "register --tpm --ek ecc: assigned" reg --dir "$T/tpmA" --ek ecc --json
contains "$T/out" "\"registrationId\":\"$EID\"" "under the ECC EK's id"
contains "$T/out" '"result":"assigned"' "result assigned"

# 5. The EK certificate (extension): swtpm_setup manufactures TPM B anew
# with an EK certificate from a private CA; the operator reads it with
# tpm-identity and enrollment checks it against that CA before writing.
expect_rc 0 "stop TPM B" "$CUSTOS" token stop --dir "$T/tpmB"
mkdir -p "$T/ca"
printf 'create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s\ncreate_certs_tool_options = /etc/swtpm-localca.options\nactive_pcr_banks = sha256\n' \
  "$T/ca/localca.conf" >"$T/ca/setup.conf"
printf 'statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\ncertserial = %s/certserial\n' \
  "$T/ca" "$T/ca" "$T/ca" "$T/ca" >"$T/ca/localca.conf"
expect_rc 0 "swtpm_setup --create-ek-cert on TPM B" swtpm_setup --tpm2 --tpmstate "$T/tpmB/tpm" --create-ek-cert \
  --config "$T/ca/setup.conf" --overwrite
expect_rc 0 "start TPM B" "$CUSTOS" token start --dir "$T/tpmB"
expect_rc 0 "tpm-identity --ek-cert-out" "$CUSTOS" device tpm-identity --dir "$T/tpmB" --ek-cert-out "$T/ekB.pem" --json
BID=$(sed -n 's/.*"registrationId":"\([^"]*\)".*/\1/p' "$T/out")
sed -n 's/.*"endorsementKey":"\([^"]*\)".*/\1/p' "$T/out" >"$T/ekB.b64"
grep -q "BEGIN CERTIFICATE" "$T/ekB.pem" && ok "the EK certificate, as PEM" || bad "no EK certificate written"
expect_rc 1 "TPM A has no EK certificate: error" "$CUSTOS" device tpm-identity --dir "$T/tpmA" --ek-cert-out "$T/none.pem"
contains "$T/err" "no EK certificate" "and says so"
ROOT="$T/ca/swtpm-localca-rootca-cert.pem"; ISS="$T/ca/issuercert.pem"
expect_rc 1 "another TPM's EK with B's certificate: refused" "$CUSTOS" enrollment create wrong-ek --ek-file "$T/ek.b64" \
  --ek-cert "$T/ekB.pem" --tpm-roots "$ROOT" --tpm-intermediates "$ISS" --state "$STATE"
contains "$T/err" "certifies another key" "the reason: $(head -c 160 "$T/err")"
expect_rc 1 "without the issuing CA: refused" "$CUSTOS" enrollment create --ek-file "$T/ekB.b64" \
  --ek-cert "$T/ekB.pem" --tpm-roots "$ROOT" --state "$STATE"
expect_rc 1 "nothing was written" "$CUSTOS" enrollment show wrong-ek --state "$STATE"
expect_rc 2 "--ek-cert without --tpm-roots" "$CUSTOS" enrollment create --ek-file "$T/ekB.b64" \
  --ek-cert "$T/ekB.pem" --state "$STATE"
expect_rc 0 "B's EK with its certificate and the manufacturer's CA: enrolled" "$CUSTOS" enrollment create \
  --ek-file "$T/ekB.b64" --ek-cert "$T/ekB.pem" --tpm-roots "$ROOT" --tpm-intermediates "$ISS" --state "$STATE"
expect_rc 0 "and TPM B registers" reg --dir "$T/tpmB" --json
contains "$T/out" "\"registrationId\":\"$BID\"" "under its own id, assigned"

# 6. The service's challenge altered on the way (a proxy with custosd's own
# certificate flips a byte of the duplicate): the TPM refuses the import and
# the device command says so, exit 1.
python3 "$(dirname "$0")/tamper_proxy.py" "$STATE/server.crt" "$STATE/server.key" "$HP" "$CA" >"$T/proxy.port" 2>"$T/proxy.err" &
PX=$!
for _ in $(seq 50); do [ -s "$T/proxy.port" ] && break; sleep 0.1; done
expect_rc 1 "a tampered challenge: error (exit 1)" "$CUSTOS" device register --scope "$SCOPE" \
  --host "127.0.0.1:$(cat "$T/proxy.port")" --ca "$CA" --timeout 60 --tpm --dir "$T/tpmA"
contains "$T/err" "integrity check failed" "the TPM's refusal, reported: $(head -c 200 "$T/err")"
kill "$PX" 2>/dev/null; wait "$PX" 2>/dev/null; PX=

# 7. Usage and local errors.
expect_rc 2 "--tpm with --key-file" reg --key-file "$T/pin"
expect_rc 2 "--tcti and --dir together" reg --tcti "$TB" --dir "$T/tpmA"
expect_rc 2 "--srk-handle outside the persistent range" reg --dir "$T/tpmA" --srk-handle 0x80000001
expect_rc 2 "--ek other than rsa|ecc" reg --dir "$T/tpmA" --ek dsa
expect_rc 2 "--tcti without --tpm" "$CUSTOS" device register --scope "$SCOPE" --host "$HP" --ca "$CA" \
  --key-file "$T/pin" --registration-id x --tcti "$TB"
expect_rc 1 "no TPM at the TCTI: error (exit 1)" reg --tcti "swtpm:host=127.0.0.1,port=1"
contains "$T/err" "TPM" "and the error says so: $(head -c 200 "$T/err")"

stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
