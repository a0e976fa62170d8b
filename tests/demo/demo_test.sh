#!/usr/bin/env bash
# shellcheck disable=SC2015 # A && ok || bad: ok and bad always succeed
# `make demo` end to end (tools/demo.sh), in a temporary working directory
# with CUSTOS_DEMO_VAR pointing into it:
#   1. stopped with SIGTERM while custosd runs: exits, and custosd is gone;
#   2. a full run: exit 0, every registration's outcome as the seed says
#      (results.tsv and the printed summary), the symmetric-key devices
#      assigned, nothing it started still running;
#   3. a second full run over the first one's directory: fresh tokens and
#      state (new token serials, new id scope), the same outcomes.
# usage: demo_test.sh SOURCE_DIR BUILD_DIR
set -uo pipefail
SRC=$(cd "${1:?usage: demo_test.sh SOURCE_DIR BUILD_DIR}" && pwd)
BUILD=$(cd "${2:?usage: demo_test.sh SOURCE_DIR BUILD_DIR}" && pwd)
for f in "$BUILD/bin/custos" "$BUILD/bin/custosd" "$BUILD/lib/ossl-modules/custos.so" "$BUILD/lib/pkcs11/custos-soft.so"; do
    [ -e "$f" ] || { echo "skipped: $f is not built"; exit 77; }
done
# The demo runs the openssl command with the Custos provider; an
# instrumented provider (ASan build) cannot be loaded into it. The
# sanitizer build's other tests cover the same code.
# (the whole ldd output first: with pipefail, grep -q closing the pipe
# early would make ldd fail and the test run where it must skip)
if [[ "$(ldd "$BUILD/lib/ossl-modules/custos.so" 2>/dev/null)" == *libasan* ]]; then
    echo "skipped: sanitizer build (openssl cannot load the instrumented provider)"; exit 77
fi

T=$(mktemp -d /tmp/cu-demo-XXXXXX)
V=$T/v
DEMO_PID=
. "$SRC/tests/common/check.sh"
finish() {
    [ -n "$DEMO_PID" ] && kill -TERM "$DEMO_PID" 2>/dev/null && wait "$DEMO_PID" 2>/dev/null
    if [ "$fail" -ne 0 ]; then echo "kept: $T"; else rm -rf "$T"; fi
    summary
}
trap 'finish; exit $?' EXIT

# Processes (other than this test and its callers) whose command line or
# environment-free arguments name the temporary directory: what the demo
# started and left behind.
leftovers() {
    local p c me=$$ out=
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = "$me" ] && continue
        [ "$p" = "$BASHPID" ] && continue
        c=$( { tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null) || continue
        case $c in *"$T"*) out+="$p: ${c:0:200}"$'\n' ;; esac
    done
    printf '%s' "$out"
}
no_leftovers() { # what
    local l
    for _ in $(seq 1 50); do          # custosd may take a moment after its SIGTERM
        l=$(leftovers)
        [ -z "$l" ] && break
        sleep 0.1
    done
    if [ -z "$l" ]; then ok "$1: no process left running"; else bad "$1: still running: $l"; fi
}

cd "$T" || exit 1

# ---- 1. SIGTERM while custosd runs
CUSTOS_DEMO_VAR=$V "$SRC/tools/demo.sh" "$BUILD" >"$T/term.out" 2>&1 &
DEMO_PID=$!
up=
for _ in $(seq 1 1200); do
    [ -s "$V/endpoint" ] && [ -s "$V/custosd.pid" ] && { up=1; break; }
    kill -0 "$DEMO_PID" 2>/dev/null || break
    sleep 0.1
done
if [ -n "$up" ]; then
    sleep 0.5
    kill -TERM "$DEMO_PID"
    wait "$DEMO_PID"; rc=$?
    DEMO_PID=
    [ "$rc" = 143 ] && ok "SIGTERM: the demo exits 143" || bad "SIGTERM: exit $rc, wanted 143"
    pid=$(cat "$V/custosd.pid")
    kill -0 "$pid" 2>/dev/null && bad "SIGTERM: custosd $pid still runs" || ok "SIGTERM: custosd stopped"
    grep -q "custosd (PID $pid) stopped" "$T/term.out" && ok "SIGTERM: says custosd stopped" ||
        bad "SIGTERM: no 'custosd stopped' line: $(tail -5 "$T/term.out")"
    no_leftovers "SIGTERM"
else
    bad "custosd never came up: $(tail -20 "$T/term.out")"
fi

# The custody report of each of the demo's tokens against what the token
# itself reports through pkcs11-tool, field by field
# (tests/audit/custody_compare.py). The TPM device's token holds no
# PKCS#11 key (its keys are TPM objects): the report must list none.
custody_vs_tokens() { # what
    local d kind module label pin out rc
    local -a envs
    if ! command -v pkcs11-tool >/dev/null || ! command -v python3 >/dev/null; then
        echo "note: no pkcs11-tool or python3: the custody report is not compared with the tokens"
        return
    fi
    pin=$(cat "$V/pins/user.pin")
    for d in "$V"/tokens/*/; do
        d=${d%/}
        [ -f "$d/custos-token.conf" ] || continue
        kind=$(sed -n 's/^kind=//p' "$d/custos-token.conf")
        module=$(sed -n 's/^module=//p' "$d/custos-token.conf")
        label=$(sed -n 's/^label=//p' "$d/custos-token.conf")
        mapfile -t envs < <(sed -n 's/^env\.//p' "$d/custos-token.conf")
        [ "$kind" = tpm2 ] && "$BUILD/bin/custos" token start --dir "$d" >/dev/null 2>&1
        "$BUILD/bin/custos" audit custody --dir "$d" --pin-source "$V/pins/user.pin" --json >"$T/custody.json" 2>&1
        env "${envs[@]}" pkcs11-tool --module "$module" -L >"$T/custody.slots" 2>&1
        env "${envs[@]}" pkcs11-tool --module "$module" --token-label "$label" --login --pin "$pin" \
            --list-objects >"$T/custody.objects" 2>/dev/null
        out=$(python3 "$SRC/tests/audit/custody_compare.py" "$kind" "$module" "$label" "$T/custody.json" \
            "$T/custody.slots" "$T/custody.objects" $([ "$kind" = tpm2 ] && echo empty-ok) 2>&1)
        rc=$?
        [ "$kind" = tpm2 ] && "$BUILD/bin/custos" token stop --dir "$d" >/dev/null 2>&1
        if [ "$rc" = 0 ]; then ok "$1: custody of ${d##*/} ($kind) = what the token reports (${out##*$'\n'})"
        else bad "$1: custody of ${d##*/} ($kind): $out"; fi
    done
}

# ---- 2. a full run, and 3. a second one
check_run() { # N OUT
    local n=$1 out=$2 st dev want got r wrong=0
    r=$V/results.tsv
    [ -s "$r" ] || { bad "run $n: no results.tsv"; return; }
    # stage device result, as the seed's example says
    while read -r st dev want; do
        got=$(awk -F'\t' -v s="$st" -v d="$dev" '$1 == s && $2 == d { print $6 }' "$r")
        [ "$got" = "$want" ] || { bad "run $n: stage $st $dev: '$got', wanted '$want'"; wrong=1; }
    done <<'EOF'
1 device-1 assigned
1 device-2 assigned
1 device-3 assigned
1 device-4 assigned
1 device-5 assigned
2 device-1 assigned
2 device-2 assigned
2 device-3 assigned
2 device-4 refused
2 device-5 refused
3 device-1 assigned
3 device-2 assigned
3 device-3 refused
3 device-4 refused
3 device-5 refused
4 sensor-1 assigned
4 sensor-2 assigned
4 sensor-3 assigned
EOF
    # stage 5: one TPM device
    local want_n=19 tpm
    tpm=$(awk -F'\t' '$1 == 5' "$r")
    case $tpm in
        *$'\t'tpm$'\t'tpm-device$'\t'tpm2$'\t'assigned$'\t'hub[12].custos.local) ok "run $n: the TPM device is assigned" ;;
        *) bad "run $n: TPM device: '$tpm'" ;;
    esac
    [ "$(wc -l <"$r")" = "$want_n" ] && ok "run $n: $want_n registrations recorded" ||
        bad "run $n: $(wc -l <"$r") registrations, wanted $want_n"
    [ "$wrong" = 0 ] && ok "run $n: every outcome as the seed says"
    # every assigned device has a hub; refused ones none
    if awk -F'\t' '($6 == "assigned") != ($7 ~ /^hub[12]\.custos\.local$/) { bad = 1 } END { exit bad }' "$r"; then
        ok "run $n: assigned devices have a hub, refused ones none"
    else
        bad "run $n: hub column: $(cat "$r")"
    fi
    awk -F'\t' '$2 ~ /^device-/ && ($3 != "x509" || $5 != ($2 ~ /-[135]$/ ? "softhsm2" : "soft")) { bad = 1 }
                $2 ~ /^sensor-/ && ($3 != "symmetric key" || $4 != "factory" || $5 != "softhsm2") { bad = 1 }
                END { exit bad }' "$r" && ok "run $n: mechanisms and token kinds" || bad "run $n: mechanisms/tokens: $(cat "$r")"
    # the printed summary table
    local H='hub[12]'
    while read -r re; do
        grep -Eq "^  $re *\$" "$out" || bad "run $n: summary line /$re/ missing"
    done <<EOF
device-1 +x509 +$H +$H +$H +-( +-)?
device-2 +x509 +$H +$H +$H +-( +-)?
device-3 +x509 +$H +$H +refused +-( +-)?
device-4 +x509 +$H +refused +refused +-( +-)?
device-5 +x509 +$H +refused +refused +-( +-)?
sensor-1 +symmetric key +- +- +- +$H( +-)?
sensor-2 +symmetric key +- +- +- +$H( +-)?
sensor-3 +symmetric key +- +- +- +$H( +-)?
EOF
    grep -q "outcome: refuse" "$out" && grep -q "reason: *enrollment group 'group-b' is disabled" "$out" &&
        ok "run $n: explain shows why device-4 is refused" || bad "run $n: no explain output"
    grep -q "A device whose identity is its TPM's endorsement key" "$out" && ok "run $n: the TPM step says what it did" || bad "run $n: no TPM step"
    if "$BUILD/bin/custos" audit verify --help >/dev/null 2>&1; then
        grep -Eq '^    audit log verifies: [0-9]+ records .*[1-9][0-9]* signatures verified' "$out" &&
            grep -Eq '^ +5 registration\.refused$' "$out" &&
            ok "run $n: the audit log verifies, with the 5 refusals" || bad "run $n: audit log part"
    fi
    grep -Eq '^  factory +softhsm2 +sensors .*imported' "$out" && grep -Eq '^  device-2 +soft +device-2 .*software-keystore' "$out" &&
        ok "run $n: custody table" || bad "run $n: custody table"
    custody_vs_tokens "run $n"
    grep -q "a process can use one\|NOT what the seed says\|Sanitizer" "$out" && bad "run $n: error text in the output"
    for p in "$V"/pins/*.pin; do
        [ "$(stat -c %a "$p")" = 600 ] || bad "run $n: $p is not 0600"
        grep -qF -- "$(cat "$p")" "$out" "$V/custosd.log" && bad "run $n: a PIN appears in the output or the log"
    done
    no_leftovers "run $n"
    # tpm2-abrmd names the swtpm's port, not the token directory
    local port
    port=$(sed -n 's/^swtpm.port=//p' "$V/tokens/tpm-device/custos-token.conf" 2>/dev/null)
    if [ -n "$port" ]; then
        if pgrep -f "tpm2-abrmd.*port=$port\b" >/dev/null; then bad "run $n: tpm2-abrmd on port $port still runs"
        else ok "run $n: the TPM token's tpm2-abrmd stopped"; fi
    fi
}

for n in 2 3; do
    [ "$n" = 3 ] && serials1=$(cat "$V"/tokens/*/custos-token.conf | grep -o 'serial=[0-9a-f]*' | grep -v 'serial=0*$' | sort) &&
        scope1=$(grep -o 'idScope=[^ ]*' "$V/custosd.log" | head -n 1)
    start=$(date +%s)
    CUSTOS_DEMO_VAR=$V "$SRC/tools/demo.sh" "$BUILD" >"$T/run$n.out" 2>&1
    rc=$?
    secs=$(($(date +%s) - start))
    if [ "$rc" = 0 ]; then ok "run $n: exit 0 ($secs s)"; else bad "run $n: exit $rc: $(tail -20 "$T/run$n.out")"; fi
    check_run "$n" "$T/run$n.out"
done
# (a tpm2 token on swtpm always reports serial 0000000000000000)
serials2=$(cat "$V"/tokens/*/custos-token.conf | grep -o 'serial=[0-9a-f]*' | grep -v 'serial=0*$' | sort)
scope2=$(grep -o 'idScope=[^ ]*' "$V/custosd.log" | head -n 1)
[ -n "$serials2" ] && [ -z "$(comm -12 <(echo "$serials1") <(echo "$serials2"))" ] &&
    ok "run 3: fresh tokens (no serial of run 2 is left)" || bad "run 3: token serials reused"
[ -n "$scope2" ] && [ "$scope1" != "$scope2" ] && ok "run 3: fresh state (new id scope)" || bad "run 3: same id scope $scope2"

# A directory that is not the demo's is never emptied.
mkdir -p "$T/other" && echo keep >"$T/other/file"
CUSTOS_DEMO_VAR=$T/other "$SRC/tools/demo.sh" "$BUILD" >"$T/other.out" 2>&1
rc=$?
[ "$rc" != 0 ] && [ -f "$T/other/file" ] && ok "a non-demo directory is refused, not emptied" ||
    bad "non-demo directory: exit $rc, file $( [ -f "$T/other/file" ] && echo kept || echo GONE)"
