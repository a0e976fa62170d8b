# Shared set-up for the custos-soft interop scripts (sourced).
# Usage: <script> MODULE_PATH. Makes a private store with one token "it"
# (SO PIN 12345678, user PIN 1234), prints "N passed, N failed" at the end
# and exits non-zero if any check failed.
set -uo pipefail
M=${1:?usage: $0 path/to/custos-soft.so}
[ -r "$M" ] || { echo "module $M not found"; exit 2; }
T=$(mktemp -d /tmp/csi.XXXXXX)
trap 'rm -rf "$T"' EXIT
cd "$T"
export CUSTOS_SOFT_DIR=$T/store
unset CUSTOS_SOFT_PBKDF2_ITERATIONS  # the default (200,000) is also the floor
export CUSTOS_SOFT_DEBUG=$T/debug.log
unset CUSTOS_SOFT_CONF
PASS=0 FAIL=0
check() { # check "what" command...
    local what=$1; shift
    if "$@" >"$T/out" 2>&1; then
        PASS=$((PASS + 1)); echo "ok   $what"
    else
        FAIL=$((FAIL + 1)); echo "FAIL $what"; sed 's/^/     /' "$T/out" | tail -20
    fi
}
finish() {
    echo "$PASS passed, $FAIL failed"
    [ "$FAIL" -eq 0 ]
    exit $?
}
# ASan build: only the programs that load the module get the ASan runtime
# preloaded (CUSTOS_SOFT_PRELOAD, set by CMake); coreutils break under it.
W=${CUSTOS_SOFT_PRELOAD:+env LD_PRELOAD=$CUSTOS_SOFT_PRELOAD}
P="$W pkcs11-tool --module $M"
Q="$P --token-label it --login --pin 1234"
# The public key of a private key (by label) as PEM, read with p11tool.
# (opensc 0.23 `--read-object --type pubkey` of an EC key fails for P-384
# and reads freed memory for P-256 — seen under ASan, SoftHSM2 the same.)
pub_pem() {
    GNUTLS_PIN=1234 $W p11tool --provider "$M" --login --export-pubkey \
        "pkcs11:token=it;object=$1;type=private" --outfile "$2" && openssl pkey -pubin -in "$2" -noout
}
make_token() {
    $P --init-token --label it --so-pin 12345678 >/dev/null 2>&1 &&
    $P --token-label it --login --login-type so --so-pin 12345678 --init-pin --pin 1234 >/dev/null 2>&1
}
echo "custos-soft interop test data" > msg
openssl dgst -sha256 -binary msg > msg.sha256
openssl dgst -sha384 -binary msg > msg.sha384
