#!/usr/bin/env bash
# ECDSA P-256 and HMAC-SHA256 signatures per second, one thread: custos-soft
# beside SoftHSM2 beside plain OpenSSL. Usage: bench.sh BUILD_DIR [SECONDS]
# Each module gets a fresh private token with the same two keys.
set -euo pipefail
B=${1:?usage: bench.sh BUILD_DIR [SECONDS]}
S=${2:-3}
BENCH=$B/bin/soft_bench
SOFT=$B/lib/pkcs11/custos-soft.so
HSM=/usr/lib/softhsm/libsofthsm2.so
T=$(mktemp -d /tmp/csb.XXXXXX)
trap 'rm -rf "$T"' EXIT
keys() { # module
    local P="pkcs11-tool --module $1 --token-label bench --login --pin 1234"
    $P --keypairgen --key-type EC:prime256v1 --label ec --id 01 >/dev/null 2>&1
    # --private: pkcs11-tool makes secret keys public otherwise (custos-soft refuses)
    $P --keygen --key-type GENERIC:32 --label hmac --id 02 --private >/dev/null 2>&1
}
# custos-soft (production PBKDF2 count: it only costs at login)
export CUSTOS_SOFT_DIR=$T/soft
pkcs11-tool --module "$SOFT" --init-token --label bench --so-pin 12345678 >/dev/null 2>&1
pkcs11-tool --module "$SOFT" --token-label bench --login --login-type so --so-pin 12345678 \
    --init-pin --pin 1234 >/dev/null 2>&1
keys "$SOFT"
# SoftHSM2
mkdir -p "$T/hsm"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' "$T/hsm" > "$T/softhsm2.conf"
export SOFTHSM2_CONF=$T/softhsm2.conf
softhsm2-util --init-token --free --label bench --so-pin 12345678 --pin 1234 >/dev/null
keys "$HSM"
"$BENCH" "$S" "$SOFT" "$HSM"
