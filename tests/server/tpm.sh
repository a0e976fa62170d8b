#!/usr/bin/env bash
# TPM attestation over HTTPS against custosd, the device side played by a
# software TPM (swtpm) through tpm2-tools: PUT with EK and SRK -> 401 with
# the activation blob (no "status"); ActivateCredential + Import + Load in
# the TPM; a SAS signed inside the TPM; the same PUT with it -> 202; the
# poll -> assigned with a second activation that the TPM accepts too.
# Skipped (77) without swtpm and tpm2-tools.
BIN=${1:?usage: tpm.sh path/to/bin}
for c in swtpm tpm2_createek tpm2_createprimary tpm2_readpublic tpm2_activatecredential tpm2_import tpm2_load \
         tpm2_hmac tpm2_startauthsession tpm2_policysecret tpm2_flushcontext tpm2_getrandom; do
  command -v "$c" >/dev/null 2>&1 || { echo "skipped: $c not found"; exit 77; }
done
. "$(dirname "$0")/lib.sh"
SW=
stop_swtpm() { [ -n "$SW" ] && kill "$SW" 2>/dev/null && wait "$SW" 2>/dev/null; SW=; }
trap 'stop_swtpm; finish; exit $?' EXIT

mkdir -p "$T/tpm"
for attempt in 1 2 3 4 5 6 7 8; do
  TP=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 20000 ))
  swtpm socket --tpm2 --tpmstate dir="$T/tpm" --server type=tcp,port=$TP --ctrl type=tcp,port=$((TP + 1)) \
        --flags not-need-init,startup-clear >"$T/swtpm.log" 2>&1 &
  SW=$!
  export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$TP"
  for _ in $(seq 1 50); do tpm2_getrandom 4 >/dev/null 2>&1 && break; kill -0 "$SW" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$SW" 2>/dev/null && tpm2_getrandom 4 >/dev/null 2>&1; then break; fi
  stop_swtpm
done
[ -n "$SW" ] && ok "swtpm running" || { bad "swtpm did not start: $(cat "$T/swtpm.log")"; exit 1; }
cd "$T"
fl() { tpm2_flushcontext -t >/dev/null 2>&1; tpm2_flushcontext -l >/dev/null 2>&1; true; }
tpm2_createek -c ek.ctx -G rsa -u ek.pub >/dev/null && fl
tpm2_createprimary -C o -g sha256 -G rsa2048:aes128cfb -c srk.ctx \
  -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt' >/dev/null && fl
tpm2_readpublic -c srk.ctx -o srk.pub >/dev/null && fl
EK=$(base64 -w0 ek.pub); SRK=$(base64 -w0 srk.pub)
[ -n "$EK" ] && [ -n "$SRK" ] && ok "EK and SRK from the TPM" || bad "no EK/SRK"

STATE=$T/var
start_server "$STATE" "retry-after = 1"
printf '%s' "$EK" >ek.b64
expect_rc 0 "a TPM enrollment for tpm-dev" "$CUSTOS" enrollment create tpm-dev --attestation tpm --ek-file ek.b64 --state "$STATE"
BODY="{\"registrationId\":\"tpm-dev\",\"tpm\":{\"endorsementKey\":\"$EK\",\"storageRootKey\":\"$SRK\"}}"
J='Content-Type: application/json'
V='api-version=2021-06-01'

# activate FILE.b64 DIR: the device side of an activation blob.
activate() {
  local b64=$1 d=$2 off=0 i sz
  mkdir -p "$d"; base64 -d "$b64" >"$d/raw"
  for i in 0 1 2 3 4 5; do
    sz=$(od -An -tu1 -j $off -N2 "$d/raw" | awk '{print $1*256+$2}')
    dd if="$d/raw" of="$d/f$i" bs=1 skip=$off count=$((sz + 2)) status=none
    off=$((off + sz + 2))
  done
  [ "$off" = "$(stat -c %s "$d/raw")" ] || return 1
  { printf '\272\334\300\336\000\000\000\001'; cat "$d/f0" "$d/f1"; } >"$d/cred.blob"
  tpm2_startauthsession --policy-session -S "$d/s.ctx" >/dev/null &&
  tpm2_policysecret -S "$d/s.ctx" -c e >/dev/null &&
  tpm2_activatecredential -c srk.ctx -C ek.ctx -i "$d/cred.blob" -o "$d/w.bin" -P "session:$d/s.ctx" >/dev/null &&
  tpm2_flushcontext "$d/s.ctx" >/dev/null && fl &&
  tpm2_import -C srk.ctx -u "$d/f4" -i "$d/f2" -s "$d/f3" -k "$d/w.bin" -r "$d/id.priv" >/dev/null && fl &&
  tpm2_load -C srk.ctx -u "$d/f4" -r "$d/id.priv" -c "$d/id.ctx" >/dev/null && fl
}

expect_http 401 "the first PUT (EK + SRK, no SAS) is challenged" PUT "/$SCOPE/registrations/tpm-dev/register?$V" -H "$J" -d "$BODY"
body_has '"authenticationKey":"' "the challenge carries authenticationKey"
body_has '"keyName":"registration"' "and keyName"
if grep -q '"status"' "$T/body"; then bad "the challenge must not carry a status"; else ok "no status in the challenge (the C SDK relies on it)"; fi
python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))
sys.exit(0 if sorted(b) == ["authenticationKey", "keyName", "message"] and
         b["message"] == "Authorization required, resend request using supplied key" else 1)' "$T/body" &&
  ok "exactly message, authenticationKey and keyName, as PROTOCOL.md §3.2" || bad "challenge body: $(head -c 200 "$T/body")"
sed 's/.*"authenticationKey":"\([^"]*\)".*/\1/' "$T/body" >blob1.b64
activate blob1.b64 a1 && ok "the TPM activates the credential and imports the key" || bad "activation in the TPM failed"

EP1=$EP
if [ -n "$PG_DB" ]; then
  # A shared store: the answer and the poll go to a second node, which
  # finds the challenge's identity key in the database.
  start_second_node "$STATE" "$T/var2"
  EP=$EP2
  ok "a second custosd on the same database answers from here on"
fi
SR="$SCOPE%2fregistrations%2ftpm-dev"; SE=$(( $(date +%s) + 2400 ))
printf '%s\n%s' "$SR" "$SE" >msg
tpm2_hmac -c a1/id.ctx -g sha256 -o mac msg >/dev/null; fl
SIG=$(base64 -w0 mac | sed 's/+/%2b/g; s/\//%2f/g; s/=/%3d/g')
AUTH="Authorization: SharedAccessSignature sr=$SR&sig=$SIG&se=$SE&skn=registration"
expect_http 202 "the same PUT with the SAS signed in the TPM" PUT "/$SCOPE/registrations/tpm-dev/register?$V" -H "$J" -H "$AUTH" -d "$BODY"
OPID=$(sed 's/.*"operationId":"\([^"]*\)".*/\1/' "$T/body")
expect_http 200 "the poll answers assigned" GET "/$SCOPE/registrations/tpm-dev/operations/$OPID?$V" -H "$AUTH"
body_has '"status":"assigned"' "assigned"
body_has '"tpm":{"authenticationKey":"' "registrationState.tpm.authenticationKey is there"
sed 's/.*"tpm":{"authenticationKey":"\([^"]*\)".*/\1/' "$T/body" >blob2.b64
activate blob2.b64 a2 && ok "the TPM accepts the second activation (the hub key)" || bad "second activation failed"

EP=$EP1
BADAUTH="Authorization: SharedAccessSignature sr=$SR&sig=AAAA$SIG&se=$SE&skn=registration"
expect_http 401 "a SAS not made by the TPM is refused" PUT "/$SCOPE/registrations/tpm-dev/register?$V" -H "$J" -H "$BADAUTH" -d "$BODY"
expect_http 401 "another EK is refused" PUT "/$SCOPE/registrations/tpm-dev/register?$V" -H "$J" \
  -d "{\"registrationId\":\"tpm-dev\",\"tpm\":{\"endorsementKey\":\"$SRK\",\"storageRootKey\":\"$SRK\"}}"
expect_http 400 "a malformed tpm object" PUT "/$SCOPE/registrations/tpm-dev/register?$V" -H "$J" -d '{"tpm":{"endorsementKey":5}}'
[ -n "$PG_DB" ] && EP=$EP2   # the node that assigned it counts it
expect_http 200 "metrics count TPM registrations" GET /metrics
EP=$EP1
body_has 'custos_registrations_total{mechanism="tpm",result="assigned"} 1' "one TPM registration assigned"
stop_server TERM
[ "$SRV_RC" = 0 ] && ok "custosd exits 0" || bad "custosd exit status $SRV_RC"
