#!/usr/bin/env bash
# make demo: one token of each kind under ./var/tokens/ (SoftHSM2, tpm2-pkcs11
# on a swtpm, and the Custos software keystore when custos-soft.so is built),
# keys generated on each, then `custos token list` and the custody report of
# each token. Every swtpm (and tpm2-abrmd) this script starts is stopped on exit.
#
# usage: tools/demo.sh BUILD_DIR        (make demo runs: tools/demo.sh build)
# PINs come from files under var/pins/ (mode 0600), never from argv.
set -euo pipefail

BUILD=${1:-build}
CUSTOS=$(cd "$BUILD/bin" 2>/dev/null && pwd)/custos
[ -x "$CUSTOS" ] || { echo "demo: $BUILD/bin/custos not built (run make)" >&2; exit 1; }
SOFT_MODULE=$(cd "$BUILD" && pwd)/lib/pkcs11/custos-soft.so

VAR=$PWD/var
TOKENS=$VAR/tokens
PINS=$VAR/pins
KEYS=$VAR/keys
umask 077
mkdir -p "$TOKENS" "$PINS" "$KEYS"

STARTED=()                   # token dirs whose swtpm this run started
cleanup() {
    local d
    for d in "${STARTED[@]}"; do
        "$CUSTOS" token stop --dir "$d" >/dev/null 2>&1 || echo "demo: could not stop the swtpm of $d" >&2
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# PIN files: made once, random, 0600; reused by later runs.
pin_file() {
    local f=$PINS/$1
    if [ ! -s "$f" ]; then
        openssl rand -hex 8 > "$f"
    fi
    chmod 600 "$f"
    echo "$f"
}
USER_PIN=$(pin_file user.pin)
SO_PIN=$(pin_file so.pin)

KINDS=(softhsm2 tpm2)
if [ -e "$SOFT_MODULE" ]; then
    KINDS+=(soft)
else
    echo "demo: $SOFT_MODULE is not built yet: skipping the soft token"
fi

# Fresh tokens on every run: stop and remove what an earlier run left, but
# only directories that are token directories.
for kind in softhsm2 tpm2 soft; do
    d=$TOKENS/$kind
    if [ -f "$d/custos-token.conf" ]; then
        "$CUSTOS" token stop --dir "$d" >/dev/null 2>&1 || true
        rm -rf "$d"
    fi
done

declare -A URI
step "Create one token of each kind under $TOKENS"
for kind in "${KINDS[@]}"; do
    d=$TOKENS/$kind
    printf '$ custos token init --kind %s --label demo-%s --dir %s --pin-source %s --so-pin-source %s\n' \
        "$kind" "$kind" "$d" "$USER_PIN" "$SO_PIN"
    out=$("$CUSTOS" token init --kind "$kind" --label "demo-$kind" --dir "$d" \
              --pin-source "$USER_PIN" --so-pin-source "$SO_PIN")
    [ "$kind" = tpm2 ] && STARTED+=("$d")
    printf '%s\n' "$out" | sed 's/^/  /'
    URI[$kind]=$(printf '%s\n' "$out" | head -n 1)
    # The environment lines: what any PKCS#11 application needs for this
    # token. Each kind uses its own variables, so one shell holds all three.
    while IFS= read -r line; do
        [ -n "$line" ] && export "${line?}"
    done < <(printf '%s\n' "$out" | tail -n +2)
done

# A URI that logs in with the PIN file (RFC 7512 pin-source).
with_pin() {
    case $1 in
        *\?*) printf '%s&pin-source=%s' "$1" "$USER_PIN" ;;
        *) printf '%s?pin-source=%s' "$1" "$USER_PIN" ;;
    esac
}

step "Generate keys on each token (inside the token: sensitive, never extractable)"
for kind in "${KINDS[@]}"; do
    u=$(with_pin "${URI[$kind]}")
    for type in ec-p256 rsa2048 hmac256; do
        label="demo-${type}"
        if [ "$kind" = tpm2 ] && [ "$type" = hmac256 ]; then
            # tpm2-pkcs11 cannot create secret keys through PKCS#11: say so,
            # then import a known key with tpm2_ptool (TOKENS.md §7.3).
            printf '$ custos token keygen --type hmac256 --label %s <tpm2 URI>   (expected to fail)\n' "$label"
            if "$CUSTOS" token keygen --type hmac256 --label "$label" "$u" 2>&1 | sed 's/^/  /'; then
                :
            fi
            head -c 32 /dev/urandom > "$KEYS/tpm2-sas.key"
            run "$CUSTOS" token hmac-import --dir "$TOKENS/tpm2" --key-file "$KEYS/tpm2-sas.key" \
                --label demo-hmac-imported --pin-source "$USER_PIN"
            continue
        fi
        printf '$ custos token keygen --type %s --label %s <%s URI>\n' "$type" "$label" "$kind"
        "$CUSTOS" token keygen --type "$type" --label "$label" "$u"
    done
done

step "custos token list"
run "$CUSTOS" token list

for kind in "${KINDS[@]}"; do
    step "Custody report of the $kind token (imported keys are flagged)"
    printf '$ custos token custody %s\n' "${URI[$kind]}"
    "$CUSTOS" token custody "$(with_pin "${URI[$kind]}")"
done

step "Key custody over every token under $VAR/tokens (the security team's view)"
run "$CUSTOS" audit custody --state "$VAR" --pin-source "$USER_PIN"
"$CUSTOS" audit custody --state "$VAR" --pin-source "$USER_PIN" --html > "$VAR/custody.html"
echo "(the same as one printable page: $VAR/custody.html)"

step "Done"
echo "Tokens are in $TOKENS (see docs/tokens.md); PIN files in $PINS."
echo "The tpm2 token's swtpm and tpm2-abrmd are stopped; start them again with:"
echo "  $CUSTOS token start --dir $TOKENS/tpm2"
