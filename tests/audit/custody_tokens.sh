#!/usr/bin/env bash
# `custos audit custody --json` of the kinds of token `make demo` makes
# (tools/demo.sh: SoftHSM2 for the service, the factory and devices 1, 3, 5;
# the software keystore for devices 2 and 4; tpm2 for the TPM device), with
# the demo's kinds of key — generated EC and HMAC keys, an imported HMAC
# key, a device key with its certificate (custos pki issue --token-dir) —
# compared field by field with what each token reports through pkcs11-tool
# (custody_compare.py). A report changed behind the comparison's back (one
# attribute flipped) must be found. tpm2 when swtpm and tpm2-pkcs11 are
# installed (its swtpm and tpm2-abrmd are stopped at the end).
#   custody_tokens.sh path/to/bin
BIN=${1:?usage: custody_tokens.sh path/to/bin}
BIN=$(cd "$BIN" && pwd)
CUSTOS=$BIN/custos
HERE=$(cd "$(dirname "$0")" && pwd)
MODS=$(cd "$BIN/../lib/ossl-modules" 2>/dev/null && pwd)
[ -n "$MODS" ] && [ -f "$MODS/custos.so" ] || { echo "skipped: no provider at $BIN/../lib/ossl-modules"; exit 77; }
[ -f "$BIN/../lib/pkcs11/custos-soft.so" ] || { echo "skipped: custos-soft.so is not built"; exit 77; }
for c in pkcs11-tool softhsm2-util jq python3; do
    command -v $c >/dev/null || { echo "skipped: $c missing"; exit 77; }
done
# (custos finds its provider next to itself; no OPENSSL_MODULES, which
# would also reach tpm2_ptool's own OpenSSL and break its import.)
export CUSTOS_PIN=1234 CUSTOS_SO_PIN=12345678
# The provider's SoftHSM2 module stays loaded at exit by design.
if [[ "$(ldd "$MODS/custos.so" 2>/dev/null)" == *libasan* ]]; then
    export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/custos-custody.XXXXXX")
. "$HERE/../common/check.sh"
KINDS="softhsm2 soft"
if command -v swtpm >/dev/null && [ -f /usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so ]; then
    KINDS="$KINDS tpm2"
else
    echo "note: no swtpm or tpm2-pkcs11: the tpm2 token is not compared"
fi
finish() {
    [ -f "$T/tpm2/custos-token.conf" ] && "$CUSTOS" token stop --dir "$T/tpm2" >/dev/null 2>&1
    if [ "$fail" = 0 ]; then rm -rf "$T"; else echo "kept $T"; fi
    summary
}
trap 'finish; exit $?' EXIT

head -c 32 /dev/urandom >"$T/group.raw"
for kind in $KINDS; do
    D=$T/$kind
    expect_rc 0 "$kind: token init" "$CUSTOS" token init --kind "$kind" --label "demo-$kind" --dir "$D"
    # The service's keys (a TLS and an audit key; the keyring's HMAC key, not on tpm2-pkcs11).
    expect_rc 0 "$kind: EC key generated" "$CUSTOS" token keygen --dir "$D" --type ec-p256 --label tls
    [ "$kind" = tpm2 ] ||
        expect_rc 0 "$kind: HMAC key generated" "$CUSTOS" token keygen --dir "$D" --type hmac256 --label store-seal
    [ "$kind" = softhsm2 ] &&
        expect_rc 0 "$kind: RSA key generated" "$CUSTOS" token keygen --dir "$D" --type rsa2048 --label rsa
    # The factory's group key, imported.
    expect_rc 0 "$kind: HMAC key imported" \
        "$CUSTOS" token hmac-import --dir "$D" --key-file "$T/group.raw" --label sensors
    # A device's key with its certificate beside it.
    expect_rc 0 "$kind: device key and certificate" \
        "$CUSTOS" pki issue --cn "device-$kind" --days 30 --out "$T/device-$kind" --token-dir "$D"
    expect_rc 0 "$kind: audit custody --json" "$CUSTOS" audit custody --dir "$D" --json
    cp "$T/out" "$T/$kind.json"

    # What the token says, through pkcs11-tool with the token's module and environment.
    module=$(sed -n 's/^module=//p' "$D/custos-token.conf")
    mapfile -t envs < <(sed -n 's/^env\.//p' "$D/custos-token.conf")
    # An instrumented module (custos-soft in the sanitizer build) needs the
    # sanitizer runtimes loaded first in the uninstrumented pkcs11-tool.
    if [[ "$(ldd "$module" 2>/dev/null)" == *libasan* ]]; then
        envs+=("LD_PRELOAD=$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
               "ASAN_OPTIONS=detect_leaks=0")
    fi
    env "${envs[@]}" pkcs11-tool --module "$module" -L >"$T/$kind.slots" 2>"$T/err" ||
        bad "$kind: pkcs11-tool -L: $(head -c 300 "$T/err")"
    env "${envs[@]}" pkcs11-tool --module "$module" --token-label "demo-$kind" --login --pin "$CUSTOS_PIN" \
        --list-objects >"$T/$kind.objects" 2>"$T/err" || bad "$kind: pkcs11-tool --list-objects: $(head -c 300 "$T/err")"
    out=$(python3 "$HERE/custody_compare.py" "$kind" "$module" "demo-$kind" "$T/$kind.json" \
        "$T/$kind.slots" "$T/$kind.objects" 2>&1)
    if [ $? = 0 ]; then ok "$kind: custody = token ($(echo "$out" | tail -1))"; else bad "$kind: $out"; fi

    # Not a comparison of nothing: the keys and flags the demo relies on.
    J=$T/$kind.json
    sw=$([ "$kind" = soft ] && echo '"software-keystore",' || echo)
    [ "$(jq -c '.keys[] | select(.label == "sensors") | .flags' "$J")" = "[${sw}\"imported\"]" ] &&
        ok "$kind: the imported key is flagged imported" || bad "$kind: sensors: $(jq -c '.keys[]|select(.label=="sensors")' "$J")"
    [ "$(jq -r '.keys[] | select(.label == "device-'"$kind"'") | .certificates' "$J")" = "/CN=device-$kind" ] &&
        ok "$kind: the device key names its certificate" || bad "$kind: device certificate: $(jq -c .keys "$J")"
    [ "$(jq -c '.keys[] | select(.label == "tls") | [.sensitive,.extractable,.always_sensitive,.never_extractable,.local]' "$J")" = \
        "[true,false,true,true,true]" ] && ok "$kind: the generated key never left the token" || bad "$kind: tls: $(jq -c .keys "$J")"

    # The comparison finds a report that differs from the token.
    for f in '.keys[0].local |= not' '.keys[0].token.serial = "0"' '.keys[0].flags += ["imported"]' \
        '.keys[0].id = "00"' '.keys[0].certificates = "/CN=other"' '.keys[0].token.kind = "module"'; do
        jq "$f" "$J" >"$T/$kind.bad.json"
        python3 "$HERE/custody_compare.py" "$kind" "$module" "demo-$kind" "$T/$kind.bad.json" \
            "$T/$kind.slots" "$T/$kind.objects" >/dev/null 2>&1 &&
            bad "$kind: a report with $f passed the comparison" || ok "$kind: $f is found"
    done
done
[ -f "$T/tpm2/custos-token.conf" ] && expect_rc 0 "tpm2: token stop" "$CUSTOS" token stop --dir "$T/tpm2"
