#!/usr/bin/env bash
# The benchmarks' provider options, for real (not their speed): `custos bench
# sign --provider --other-provider`, `custos bench tls` and `custos bench
# s_server` on a KIND token,
# with a second copy of custos.so as the "other" provider, and their errors.
# Usage: bench.sh softhsm2|soft
. "$(dirname "$0")/lib.sh"
KIND=${1:-softhsm2}
make_token "$KIND" bench || exit 1
EC=$("$CUSTOS_BIN" token keygen --type ec-p256 --label ec --id 01 --dir "$TOKEN_DIR" --pin-source "$W/pin") || exit 1
HM=$("$CUSTOS_BIN" token keygen --type hmac256 --label sas --id 02 --dir "$TOKEN_DIR" --pin-source "$W/pin") || exit 1
mkdir -p "$W/other"
cp "$CUSTOS_OSSL_MODULES/custos.so" "$W/other/custos-copy.so"
B=("$CUSTOS_BIN" bench)
T=(--dir "$TOKEN_DIR" --pin-source "$W/pin" --seconds 0.3 --json)

# field JSON NAME: the number after "NAME": (nested objects: the first match).
field() { python3 -c 'import json,sys
j=json.loads(sys.argv[1]); p=sys.argv[2].split(".")
for k in p: j=j[k]
print(j)' "$1" "$2"; }
positive() { python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)' "$1"; }

if out=$("${B[@]}" sign --uri "$EC" "${T[@]}" --provider --other-provider "$W/other/custos-copy.so" 2>"$W/err") &&
   positive "$(field "$out" provider)" && positive "$(field "$out" other-provider)" &&
   positive "$(field "$out" raw-C_Sign-copy)" && positive "$(field "$out" openssl-software-evp)" &&
   positive "$(field "$out" provider-kept-ctx)"; then
    ok "bench sign: ECDSA through custos and through another provider module"
else
    bad "bench sign: ECDSA through custos and through another provider module"; cat "$W/err"; echo "$out"
fi
# HMAC has no EVP_DigestSign round nor a kept signature context: those
# contestants stay out (0).
if out=$("${B[@]}" sign --uri "$HM" "${T[@]}" --provider 2>"$W/err") && positive "$(field "$out" provider)" &&
   ! positive "$(field "$out" openssl-software-evp)" && ! positive "$(field "$out" provider-kept-ctx)"; then
    ok "bench sign: HMAC through CUSTOS-HMAC"
else
    bad "bench sign: HMAC through CUSTOS-HMAC"; cat "$W/err"; echo "$out"
fi
if out=$("${B[@]}" tls --uri "$EC" "${T[@]}" --other-provider "$W/other/custos-copy.so" 2>"$W/err") &&
   positive "$(field "$out" file.server_cpu_us)" && positive "$(field "$out" provider.server_cpu_us)" &&
   positive "$(field "$out" other-provider.handshakes_per_s)" && positive "$(field "$out" sign-token-layer_cpu_us)"; then
    ok "bench tls: handshakes with the key in a file, through custos, through another provider"
else
    bad "bench tls: handshakes with the key in a file, through custos, through another provider"; cat "$W/err"; echo "$out"
fi
# The openssl that bench s_server runs: with the sanitizer runtimes preloaded
# when custos.so is an ASan build (as ossl in lib.sh).
{
    echo '#!/bin/sh'
    [ -n "${CUSTOS_OSSL_PRELOAD:-}" ] &&
        echo "export LD_PRELOAD='$CUSTOS_OSSL_PRELOAD' ASAN_OPTIONS=detect_leaks=0:halt_on_error=1"
    echo 'exec openssl "$@"'
} >"$W/openssl-run"
chmod +x "$W/openssl-run"
S=(--dir "$TOKEN_DIR" --pin-source "$W/pin" --seconds 1 --json --openssl "$W/openssl-run")
mkdir -p "$W/tmp"
if out=$(TMPDIR=$W/tmp "${B[@]}" s_server --uri "$EC" "${S[@]}" --other-provider "$W/other/custos-copy.so" \
         --engine-pkcs11 2>"$W/err") &&
   positive "$(field "$out" file.server_cpu_us)" && positive "$(field "$out" provider.server_cpu_us)" &&
   positive "$(field "$out" other-provider.handshakes_per_s)" && positive "$(field "$out" engine-pkcs11.server_cpu_us)"; then
    ok "bench s_server: openssl s_server with the key in a file, through custos, another provider, the libp11 engine"
else
    bad "bench s_server: openssl s_server with the key in a file, through custos, another provider, the libp11 engine"
    cat "$W/err"; echo "$out"
fi
[ -z "$(ls -A "$W/tmp")" ] && ok "bench s_server removes its files (a PIN among them)" ||
    bad "bench s_server left $(ls "$W/tmp")"
# An openssl whose s_server fails at once: its message is reported.
printf '#!/bin/sh\n[ "$1" = s_server ] && { echo "s_server: no such luck" >&2; exit 1; }\nexec "%s" "$@"\n' "$W/openssl-run" >"$W/openssl"
chmod +x "$W/openssl"
check_fails "bench s_server: a server that does not start" "s_server exited: s_server: no such luck" \
    env TMPDIR="$W/tmp" "${B[@]}" s_server --uri "$EC" "${S[@]}" --openssl "$W/openssl"
check_fails "bench s_server: no openssl program" "cannot run $W/no-openssl" \
    "${B[@]}" s_server --uri "$EC" "${S[@]}" --openssl "$W/no-openssl"
[ -z "$(ls -A "$W/tmp")" ] && ok "... and leaves nothing behind" || bad "a failed bench s_server left $(ls "$W/tmp")"
# Stopped by a TERM in the middle: it says so and still removes its files.
TMPDIR=$W/tmp "${B[@]}" s_server --uri "$EC" "${S[@]}" --seconds 60 --engine-pkcs11 \
  >"$W/out" 2>"$W/err" &
bp=$!
for _ in $(seq 1 100); do [ -n "$(ls -A "$W/tmp" 2>/dev/null)" ] && break; sleep 0.05; done
sleep 2
kill -TERM "$bp"
rc=0
wait "$bp" || rc=$?
[ "$rc" = 1 ] && grep -q "interrupted (signal 15)" "$W/err" && ok "bench s_server stopped by TERM: exit 1, says so" ||
    bad "bench s_server after TERM: exit $rc, $(cat "$W/err")"
[ -z "$(ls -A "$W/tmp")" ] && ok "... and leaves nothing behind (the engine's PIN file included)" ||
    bad "an interrupted bench s_server left $(ls -R "$W/tmp")"
check_fails "bench sign: a missing provider module" "provider module $W/nothing.so" \
    "${B[@]}" sign --uri "$EC" "${T[@]}" --other-provider "$W/nothing.so"
check_fails "bench sign: a library that is no provider" "cannot load the provider" \
    "${B[@]}" sign --uri "$EC" "${T[@]}" --other-provider "$(dirname "$CUSTOS_OSSL_MODULES")/pkcs11/custos-soft.so"
check_fails "bench tls: an HMAC key" "private-key was asked for|no EC or RSA" "${B[@]}" tls --uri "$HM" "${T[@]}"
summary
