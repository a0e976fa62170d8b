#!/usr/bin/env bash
# Regenerates the known-answer vectors of tests/tpm (see README.md here).
#   tests/tpm/vectors/make-vectors.sh build/bin/test_tpm_kat_tool
# Needs swtpm, tpm2-tools 5.x, openssl and xxd. Runs its own swtpm on a
# private unix socket and stops it (by PID) at the end.
set -euo pipefail
TOOL=$(realpath "${1:?usage: $0 path/to/test_tpm_kat_tool}")
OUT=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/tpmvec.XXXXXX)
swtpm socket --tpm2 --tpmstate dir="$T" --server type=unixio,path="$T/sock" \
  --ctrl type=unixio,path="$T/sock.ctrl" --flags not-need-init,startup-clear \
  --log file="$T/swtpm.log" &
SWTPM_PID=$!
trap 'kill $SWTPM_PID 2>/dev/null; wait $SWTPM_PID 2>/dev/null; rm -rf "$T"' EXIT
export TPM2TOOLS_TCTI="swtpm:path=$T/sock"
for _ in $(seq 100); do tpm2_getrandom 4 >/dev/null 2>&1 && break; sleep 0.05; done
F() { tpm2_flushcontext -t; tpm2_flushcontext -s 2>/dev/null || true; }
cd "$T"

# The device: TCG default EKs (RSA-2048 at 0x81010001, ECC P-256 at
# 0x81010002) and the DPS SRK at 0x81000001.
tpm2_createek -c 0x81010001 -G rsa -u "$OUT/ek-rsa.pub" >/dev/null; F
tpm2_createek -c 0x81010002 -G ecc -u "$OUT/ek-ecc.pub" >/dev/null; F
tpm2_createprimary -C o -g sha256 -G rsa2048:aes128cfb \
  -a "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt" -c srk.ctx >/dev/null; F
tpm2_evictcontrol -C o -c srk.ctx 0x81000001 >/dev/null; F
tpm2_readpublic -c 0x81000001 -o "$OUT/srk.pub" -n "$OUT/srk.name" >/dev/null; F
# An ECC P-256 SRK too (extension), at 0x81000002.
tpm2_createprimary -C o -g sha256 -G ecc256:aes128cfb \
  -a "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda|restricted|decrypt" -c srk2.ctx >/dev/null; F
tpm2_evictcontrol -C o -c srk2.ctx 0x81000002 >/dev/null; F
tpm2_readpublic -c 0x81000002 -o "$OUT/srk-ecc.pub" >/dev/null; F

# Vector A: tpm2_makecredential -T none to software keys whose private
# halves are here (test keys, never used for anything else).
printf '000102030405060708090a0b0c0d0e0f' | xxd -r -p > "$OUT/secret.bin"
[ -f "$OUT/soft-ek-rsa.pem" ] || openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$OUT/soft-ek-rsa.pem" 2>/dev/null
[ -f "$OUT/soft-ek-ecc.pem" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$OUT/soft-ek-ecc.pem"
openssl pkey -in "$OUT/soft-ek-rsa.pem" -pubout -out soft-rsa.pub.pem
openssl pkey -in "$OUT/soft-ek-ecc.pem" -pubout -out soft-ecc.pub.pem
NAME=$(xxd -p -c 256 "$OUT/srk.name")
tpm2_makecredential -T none -G rsa -u soft-rsa.pub.pem -s "$OUT/secret.bin" -n "$NAME" \
  -o "$OUT/cred-soft-rsa.blob" 2>/dev/null
tpm2_makecredential -T none -G ecc -u soft-ecc.pub.pem -s "$OUT/secret.bin" -n "$NAME" \
  -o "$OUT/cred-soft-ecc.blob" 2>/dev/null

# Vector B/C: custos_tpm's blob with the deterministic RNG, to the swtpm's
# RSA / ECC EK and its SRK; then the TPM itself activates, imports, loads
# and computes an HMAC with the key it received.
KEY=202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f
printf 'custos known answer' > "$OUT/msg.bin"
for kind in rsa ecc rsa-eccsrk; do
  handle=0x81010001; [ $kind = ecc ] && handle=0x81010002
  srk=0x81000001 srkpub="$OUT/srk.pub"
  [ $kind = rsa-eccsrk ] && srk=0x81000002 srkpub="$OUT/srk-ecc.pub"
  "$TOOL" blob "$OUT/ek-${kind%-eccsrk}.pub" "$srkpub" "$KEY" "blob-$kind"
  cp "blob-$kind.blob" "$OUT/blob-$kind.bin"
  tpm2_startauthsession --policy-session -S s.ctx
  tpm2_policysecret -S s.ctx -c e >/dev/null
  tpm2_activatecredential -c $srk -C $handle -i "blob-$kind.cred" -o "$OUT/w-$kind.bin" -P session:s.ctx
  tpm2_flushcontext s.ctx; F
  tpm2_import -C $srk -u "blob-$kind.keypub" -i "blob-$kind.dup" -s "blob-$kind.seed" \
    -k "$OUT/w-$kind.bin" -r key.priv >/dev/null; F
  tpm2_load -C $srk -u "blob-$kind.keypub" -r key.priv -c key.ctx >/dev/null; F
  tpm2_hmac -c key.ctx -g sha256 -o "$OUT/tpm-hmac-$kind.bin" "$OUT/msg.bin"; F
  want=$(openssl dgst -sha256 -mac HMAC -macopt hexkey:$KEY -binary "$OUT/msg.bin" | xxd -p -c 64)
  got=$(xxd -p -c 64 "$OUT/tpm-hmac-$kind.bin")
  [ "$want" = "$got" ] || { echo "TPM HMAC ($kind) $got != OpenSSL $want" >&2; exit 1; }
  echo "vector $kind: activated, imported, TPM HMAC = OpenSSL HMAC"
done
echo "$KEY" > "$OUT/key.hex"

# The default registration id, by coreutils (an independent base32).
for kind in rsa ecc; do
  openssl dgst -sha256 -binary "$OUT/ek-$kind.pub" | base32 -w0 | tr 'A-Z' 'a-z' | tr -d '=' > "$OUT/regid-$kind.txt"
done
echo "vectors written to $OUT"
