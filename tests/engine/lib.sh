# Shared helpers of the provider's shell tests (sourced, bash).
#
# Environment (set by CTest, see tests/engine/CMakeLists.txt):
#   CUSTOS_BIN           build/bin/custos
#   CUSTOS_OSSL_MODULES  build/lib/ossl-modules (custos.so)
#   CUSTOS_OSSL_PRELOAD  set in ASan builds: the sanitizer runtimes that the
#                        uninstrumented `openssl` needs to load custos.so
#
# Each test makes its own token directory under a private work dir, stops
# what it started (the swtpm of a tpm2 token, servers) by PID and removes the
# work dir; it prints one line per check and "N passed, N failed".

set -u
. "$(dirname "${BASH_SOURCE[0]}")/../common/check.sh"
W=$(mktemp -d /tmp/cuprov.XXXXXX)
PIDS=()
TOKEN_DIRS=()
PROV=(-provider-path "$CUSTOS_OSSL_MODULES" -provider custos -provider default ${CUSTOS_TEST_PROPQ:+-propquery "$CUSTOS_TEST_PROPQ"})

cleanup() {
    local p d
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for d in "${TOKEN_DIRS[@]}"; do "$CUSTOS_BIN" token stop --dir "$d" >/dev/null 2>&1; done
    if [ -z "${CUSTOS_TEST_KEEP:-}" ]; then rm -rf "$W"; else echo "kept $W"; fi
}
trap cleanup EXIT


# openssl with the sanitizer runtimes preloaded when custos.so is an ASan
# build; leak checking is off for that foreign process. Bounded (120 s).
ossl() {
    if [ -n "${CUSTOS_OSSL_PRELOAD:-}" ]; then
        LD_PRELOAD="$CUSTOS_OSSL_PRELOAD" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 timeout "${CUSTOS_OSSL_TIMEOUT:-120}" openssl "$@"
    else
        timeout "${CUSTOS_OSSL_TIMEOUT:-120}" openssl "$@"
    fi
}

# Any other uninstrumented tool that loads an ASan-built module (pkcs11-tool
# with custos-soft.so).
preloaded() {
    if [ -n "${CUSTOS_OSSL_PRELOAD:-}" ]; then
        LD_PRELOAD="$CUSTOS_OSSL_PRELOAD" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1 "$@"
    else
        "$@"
    fi
}

# check NAME CMD...: the command must succeed.
check() {
    local name=$1
    shift
    if "$@" >"$W/out" 2>"$W/err"; then
        ok "$name"
    else
        bad "$name (exit $?)"
        sed 's/^/    | /' "$W/err" | tail -15
    fi
}

# check_fails NAME REGEX CMD...: the command must fail cleanly (no signal, no
# sanitizer report) with an error message matching REGEX.
check_fails() {
    local name=$1 re=$2 rc=0
    shift 2
    "$@" >"$W/out" 2>"$W/err" || rc=$?
    if [ "$rc" -eq 0 ]; then
        bad "$name (succeeded)"
    elif [ "$rc" -ge 128 ]; then
        bad "$name (killed by signal $((rc - 128)))"
    elif grep -q "Sanitizer" "$W/err"; then
        bad "$name (sanitizer report)"
        head -20 "$W/err"
    elif ! grep -Eq "$re" "$W/err" "$W/out"; then
        bad "$name (no error matching /$re/)"
        sed 's/^/    | /' "$W/err" | tail -10
    else
        ok "$name"
        [ -n "${CUSTOS_TEST_VERBOSE:-}" ] && grep -E 'custos:|parameter error' "$W/err" | head -3 | sed 's/^/    > /'
    fi
    return 0
}

# make_token KIND LABEL: a token in $W/KIND; sets TOKEN_DIR, TOKEN_URI and
# exports the module's environment; the user PIN is in $W/pin.
make_token() {
    local kind=$1 label=$2
    TOKEN_DIR="$W/$kind"
    [ -f "$W/pin" ] || { printf '%s\n' 4711 >"$W/pin"; chmod 600 "$W/pin"; }
    [ -f "$W/sopin" ] || { printf '%s\n' 12345678 >"$W/sopin"; chmod 600 "$W/sopin"; }
    if ! "$CUSTOS_BIN" token init --kind "$kind" --label "$label" --dir "$TOKEN_DIR" \
        --pin-source "$W/pin" --so-pin-source "$W/sopin" >"$W/init.out" 2>"$W/init.err"; then
        cat "$W/init.err"
        return 1
    fi
    TOKEN_DIRS+=("$TOKEN_DIR")
    TOKEN_URI=$(head -n 1 "$W/init.out")
    local l
    while IFS= read -r l; do export "${l?}"; done < <(tail -n +2 "$W/init.out")
}

# keygen TYPE LABEL ID: prints the private key's URI with the PIN source.
keygen() {
    local uri
    uri=$("$CUSTOS_BIN" token keygen --type "$1" --label "$2" --id "$3" --dir "$TOKEN_DIR" \
        --pin-source "$W/pin") || return 1
    printf '%s&pin-source=%s\n' "$uri" "$W/pin"
}

# with_pin URI: the URI with the test PIN source added.
with_pin() {
    case "$1" in
    *\?*) printf '%s&pin-source=%s\n' "$1" "$W/pin" ;;
    *) printf '%s?pin-source=%s\n' "$1" "$W/pin" ;;
    esac
}

# start_server LOG ARGS...: starts `openssl s_server -accept 127.0.0.1:0 ARGS`
# and sets PORT from its ACCEPT line.
start_server() {
    local log=$1 i
    shift
    rm -f "$log"
    if [ -n "${CUSTOS_OSSL_PRELOAD:-}" ]; then
        LD_PRELOAD="$CUSTOS_OSSL_PRELOAD" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=0 \
            openssl s_server "${PROV[@]}" -accept 127.0.0.1:0 "$@" >"$log" 2>&1 </dev/null &
    else
        openssl s_server "${PROV[@]}" -accept 127.0.0.1:0 "$@" >"$log" 2>&1 </dev/null &
    fi
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    PORT=
    for i in $(seq 1 200); do
        PORT=$(sed -n 's/^ACCEPT 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log" 2>/dev/null)
        [ -n "$PORT" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    cat "$log"
    return 1
}
