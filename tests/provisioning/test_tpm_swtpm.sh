#!/bin/sh
# The TPM activation blob against a real TPM 2.0 command stream (swtpm):
# the service's software MakeCredential + duplication must be accepted by
# ActivateCredential and Import, and the imported key must be K.
# Skips (77) when swtpm or tpm2-tools are missing.
set -u
TOOL="$1"
for c in swtpm tpm2_createek tpm2_createprimary tpm2_readpublic tpm2_activatecredential tpm2_import tpm2_load tpm2_hmac tpm2_startauthsession tpm2_policysecret; do
    command -v "$c" >/dev/null 2>&1 || { echo "skip: $c not found"; exit 77; }
done
T=$(mktemp -d "${TMPDIR:-/tmp}/cu-tpm-XXXXXX")
SW=
trap 'if [ -n "$SW" ]; then kill $SW 2>/dev/null; wait $SW 2>/dev/null; fi; rm -rf "$T"' EXIT
# A free port pair: try random ones (other tests run swtpm too).
for attempt in 1 2 3 4 5 6 7 8 9 10; do
    PORT=$(( 20000 + $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 20000 ))
    swtpm socket --tpm2 --tpmstate dir="$T" --server type=tcp,port=$PORT --ctrl type=tcp,port=$((PORT + 1)) \
          --flags not-need-init,startup-clear >"$T/swtpm.log" 2>&1 &
    SW=$!
    export TPM2TOOLS_TCTI="swtpm:host=127.0.0.1,port=$PORT"
    i=0
    while kill -0 $SW 2>/dev/null && ! tpm2_getrandom 4 >/dev/null 2>&1 && [ $i -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
    sleep 0.2 # a swtpm that failed to bind has exited by now
    if kill -0 $SW 2>/dev/null && tpm2_getrandom 4 >/dev/null 2>&1; then break; fi
    kill $SW 2>/dev/null; wait $SW 2>/dev/null; SW=
done
[ -n "$SW" ] || { echo "swtpm did not start"; cat "$T/swtpm.log"; exit 1; }
set -e
cd "$T"
# No resource manager: flush transient objects after each step (swtpm has
# three slots); the saved contexts are reloaded by the next tool.
fl() { tpm2_flushcontext -t >/dev/null; tpm2_flushcontext -l >/dev/null 2>&1 || true; }
tpm2_createek -c ek.ctx -G rsa -u ek.pub >/dev/null; fl
tpm2_createprimary -C o -g sha256 -G rsa2048:aes128cfb -c srk.ctx \
    -a 'fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt' >/dev/null; fl
tpm2_readpublic -c srk.ctx -o srk.pub >/dev/null; fl
"$TOOL" ek.pub srk.pub .
# ActivateCredential: the EK needs a PolicySecret(endorsement) session.
tpm2_startauthsession --policy-session -S s.ctx
tpm2_policysecret -S s.ctx -c e >/dev/null
tpm2_activatecredential -c srk.ctx -C ek.ctx -i cred.blob -o w.bin -P "session:s.ctx" >/dev/null
tpm2_flushcontext s.ctx >/dev/null; fl
tpm2_import -C srk.ctx -u id.pub -i dup.dpriv -s dup.seed -k w.bin -r id.priv >/dev/null; fl
tpm2_load -C srk.ctx -u id.pub -r id.priv -c id.ctx >/dev/null; fl
printf '0ne00000001%%2fregistrations%%2fdevice\n1700000000' > msg
tpm2_hmac -c id.ctx -g sha256 -o tpm.mac msg >/dev/null
openssl dgst -sha256 -mac HMAC -macopt hexkey:"$(od -An -tx1 key.bin | tr -d ' \n')" -binary msg > sw.mac
if cmp -s tpm.mac sw.mac; then
    echo "ok: the TPM activated the credential, imported K and its HMAC matches"
else
    echo "FAIL: HMAC differs"; exit 1
fi

# The engine's flow, as custosd runs it: challenge, activation in the TPM,
# a SAS signed inside the TPM, registration.
mkdir dev
"$TOOL" challenge "$T/var" ek.pub srk.pub dev
tpm2_startauthsession --policy-session -S s.ctx
tpm2_policysecret -S s.ctx -c e >/dev/null
tpm2_activatecredential -c srk.ctx -C ek.ctx -i dev/cred.blob -o dev/w.bin -P "session:s.ctx" >/dev/null
tpm2_flushcontext s.ctx >/dev/null; fl
tpm2_import -C srk.ctx -u dev/id.pub -i dev/dup.dpriv -s dev/dup.seed -k dev/w.bin -r dev/id.priv >/dev/null; fl
tpm2_load -C srk.ctx -u dev/id.pub -r dev/id.priv -c dev/id.ctx >/dev/null; fl
se=$(( $(date +%s) + 2400 ))
printf '%s\n%s' "$(cat dev/sr)" "$se" > dev/msg
tpm2_hmac -c dev/id.ctx -g sha256 -o dev/mac dev/msg >/dev/null; fl
sig=$(openssl base64 -A < dev/mac | sed 's/+/%2b/g; s/\//%2f/g; s/=/%3d/g')
printf 'SharedAccessSignature sr=%s&sig=%s&se=%s&skn=registration' "$(cat dev/sr)" "$sig" "$se" > dev/token
"$TOOL" register "$T/var" ek.pub srk.pub dev/token
# A token signed with another key is refused.
printf 'SharedAccessSignature sr=%s&sig=%s&se=%s&skn=registration' "$(cat dev/sr)" "AAAA$sig" "$se" > dev/bad
if "$TOOL" register "$T/var" ek.pub srk.pub dev/bad; then echo "FAIL: bad token accepted"; exit 1; fi
echo "ok: TPM registration end to end"
