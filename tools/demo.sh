#!/usr/bin/env bash
# make demo: the provisioning service end to end, on this machine.
#
#   1. tokens: a SoftHSM2 token for custosd (its TLS key made inside it),
#      one token per device (SoftHSM2 or the Custos software keystore), one
#      for the factory's symmetric group key; `custos token list`;
#   2. the seed's five-device PKI: root -> A -> device-1..3, root -> B ->
#      device-4..5, each device key generated in its token and its
#      certificate issued by `custos pki issue --token-dir`;
#   3. custosd on a free loopback port, then the seed's three stages: one
#      enabled group on the root; a disabled group on B; a disabled individual
#      enrollment for device-3 -- every device registered by
#      `custos device register` in each stage, and a table of the outcomes;
#   4. a symmetric-key enrollment group and three devices whose keys are
#      derived inside a token;
#   5. a TPM device on a software TPM (swtpm behind a tpm2 token), when this
#      build's device client has --tpm;
#   6. `custos enrollment explain` for a refused device; the audit log, when
#      this build has it; the key custody report of every token.
# It stops everything it started (custosd; the swtpm of a tpm2 token), also
# on an error or Ctrl-C; results.tsv holds every registration's outcome
# (tests/demo checks it).
#
# usage: tools/demo.sh BUILD_DIR        (make demo runs: tools/demo.sh build)
# Everything goes to ./var/demo (CUSTOS_DEMO_VAR=DIR for another place),
# which is emptied at the start of every run. PINs come from files under
# var/demo/pins/ (mode 0600), never from argv.
set -euo pipefail

ROOT=$PWD
BUILD=$(cd "${1:-build}" 2>/dev/null && pwd) || { echo "demo: ${1:-build} is not a build directory (run make)" >&2; exit 1; }
BIN=$BUILD/bin
CUSTOS=$BIN/custos
CUSTOSD=$BIN/custosd
PROVIDERS=$BUILD/lib/ossl-modules
SOFT_MODULE=$BUILD/lib/pkcs11/custos-soft.so
for f in "$CUSTOS" "$CUSTOSD"; do
    [ -x "$f" ] || { echo "demo: $f is not built (run make)" >&2; exit 1; }
done
[ -f "$PROVIDERS/custos.so" ] || { echo "demo: $PROVIDERS/custos.so is not built (run make)" >&2; exit 1; }
[ -f "$SOFT_MODULE" ] || { echo "demo: $SOFT_MODULE is not built (run make)" >&2; exit 1; }

DEMO=${CUSTOS_DEMO_VAR:-$ROOT/var/demo}
case $DEMO in /*) ;; *) DEMO=$ROOT/$DEMO ;; esac
TOKENS=$DEMO/tokens
PINS=$DEMO/pins
PKI=$DEMO/pki
umask 077

# ---------------------------------------------------------------- output --
if [ -t 1 ]; then B=$'\033[1m' D=$'\033[2m' N=$'\033[0m'; else B='' D='' N=''; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
say() { printf '%s\n' "$*"; }
note() { printf '%s%s%s\n' "$D" "$*" "$N"; }
# How a command is shown: paths relative to where make runs, pkcs11: URIs
# without their query (module-path=…&pin-source=…), arguments quoted when
# the shell needs it.
shown() {
    local a out=
    for a in "$@"; do
        a=${a//$ROOT\//}
        case $a in pkcs11:*\?*) a=$(shown_uri "$a") ;; esac
        case $a in
            '&' | '>') ;;
            *[!A-Za-z0-9_./:=@%+,-]* | '') a="'$a'" ;;
        esac
        out+=" $a"
    done
    printf '%s$%s%s\n' "$B" "$out" "$N"
}
run() { shown "$@"; "$@"; }
quiet() { shown "$@"; "$@" >/dev/null; }
shown_uri() { printf '%s' "${1%%\?*}?…"; }
indent() { sed 's/^/    /'; }

# ------------------------------------------------------- stop what we start --
CUSTOSD_PID=
TPM_DIRS=()
stop_custosd() {
    local i
    if [ -n "$CUSTOSD_PID" ] && kill -0 "$CUSTOSD_PID" 2>/dev/null; then
        shown kill -TERM "$CUSTOSD_PID"
        kill -TERM "$CUSTOSD_PID" 2>/dev/null || true
        for i in $(seq 1 100); do
            kill -0 "$CUSTOSD_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$CUSTOSD_PID" 2>/dev/null; then
            echo "demo: custosd (PID $CUSTOSD_PID) did not stop on SIGTERM; killing it" >&2
            kill -KILL "$CUSTOSD_PID" 2>/dev/null || true
        fi
        wait "$CUSTOSD_PID" 2>/dev/null || true
        say "    custosd (PID $CUSTOSD_PID) stopped."
    fi
    CUSTOSD_PID=
}
stop_tokens() {
    local d
    for d in "${TPM_DIRS[@]}"; do
        [ -f "$d/custos-token.conf" ] || continue
        quiet "$CUSTOS" token stop --dir "$d" || echo "demo: could not stop the swtpm of $d" >&2
    done
    TPM_DIRS=()
}
cleanup() {
    local rc=$?
    trap - EXIT
    trap '' INT TERM                 # a second Ctrl-C must not cut the clean-up short
    stop_custosd
    stop_tokens
    case $rc in
        0) ;;
        130 | 143) echo "demo: interrupted; what it made is in $DEMO" >&2 ;;
        *) echo "demo: failed (exit $rc); logs and state are in $DEMO" >&2 ;;
    esac
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------ fresh start --
# The demo's directory is its own: emptied on every run, but only when it
# is one (a marker file), so a mistyped CUSTOS_DEMO_VAR never wipes a tree.
if [ -d "$DEMO" ] && [ -n "$(ls -A "$DEMO")" ]; then
    if [ ! -f "$DEMO/.custos-demo" ]; then
        echo "demo: $DEMO exists and is not a demo directory (no .custos-demo); not touching it" >&2
        exit 1
    fi
    if [ -s "$DEMO/custosd.pid" ]; then            # an earlier run that was killed hard
        old=$(cat "$DEMO/custosd.pid")
        if grep -qa -- "$DEMO" "/proc/$old/cmdline" 2>/dev/null; then
            echo "demo: stopping the custosd (PID $old) an earlier run left running"
            kill -TERM "$old" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$old" 2>/dev/null || break
                sleep 0.1
            done
        fi
    fi
    for d in "$TOKENS"/*/; do
        [ -f "$d/custos-token.conf" ] && grep -q '^kind=tpm2$' "$d/custos-token.conf" &&
            { "$CUSTOS" token stop --dir "$d" >/dev/null 2>&1 || true; }
    done
    rm -rf "$DEMO"
fi
mkdir -p "$DEMO" "$TOKENS" "$PINS" "$PKI"
: >"$DEMO/.custos-demo"

# PIN files (0600). One user PIN for every demo token, so that one custody
# run can read them all; a real fleet has one per token.
openssl rand -hex 8 >"$PINS/user.pin"
openssl rand -hex 8 >"$PINS/so.pin"
chmod 600 "$PINS"/*.pin
USER_PIN=$PINS/user.pin
SO_PIN=$PINS/so.pin

# Each PKCS#11 module reads its store from the environment (SOFTHSM2_CONF,
# CUSTOS_SOFT_DIR, ...), and a process uses one store of each kind: every
# command that touches a token gets that token's environment lines.
declare -A KIND ENVS MODULE
token_env() { # DIR -> NAME=VALUE words from the token's custos-token.conf
    sed -n 's/^env\.//p' "$1/custos-token.conf"
}
with_pin() { printf '%s&pin-source=file:%s' "$1" "$USER_PIN"; }

urlenc() { # percent-encodes what a URI query value must not hold as is
    local s=$1 out='' c i
    for ((i = 0; i < ${#s}; i++)); do
        c=${s:i:1}
        case $c in [A-Za-z0-9/._~-]) out+=$c ;; *) out+=$(printf '%%%02X' "'$c") ;; esac
    done
    printf '%s' "$out"
}
new_token() { # NAME KIND [quiet]: token init, shown; sets KIND[NAME], ENVS[NAME], MODULE[NAME]
    local name=$1 kind=$2 d=$TOKENS/$1 out
    shown "$CUSTOS" token init --kind "$kind" --label "$name" --dir "$d" \
        --pin-source "$USER_PIN" --so-pin-source "$SO_PIN"
    out=$("$CUSTOS" token init --kind "$kind" --label "$name" --dir "$d" \
        --pin-source "$USER_PIN" --so-pin-source "$SO_PIN")
    [ "${3:-}" = quiet ] || printf '%s\n' "$out" | indent
    KIND[$name]=$kind
    ENVS[$name]=$(token_env "$d")
    MODULE[$name]=$(sed -n 's/^module=//p' "$d/custos-token.conf")
}
keygen() { # TOKEN TYPE LABEL: the key made in the token; KEY_URI = its URI with the PIN file
    local class=private
    [ "$2" = hmac256 ] && class=secret-key
    quiet "$CUSTOS" token keygen --dir "$TOKENS/$1" --type "$2" --label "$3" --pin-source "$USER_PIN"
    KEY_URI="pkcs11:token=$1;object=$3;type=$class?module-path=$(urlenc "${MODULE[$1]}")&pin-source=file:$(urlenc "$USER_PIN")"
}
in_token() { # TOKEN COMMAND...: run with the token's environment, shown
    local t=$1; shift
    local -a e
    mapfile -t e <<<"${ENVS[$t]}"
    shown "${e[@]}" "$@"
    env "${e[@]}" "$@"
}

T0=$(date +%s)
say "${B}Custos demo${N}: the provisioning service with every key in a PKCS#11 token."
say "Working in ${DEMO#"$ROOT"/}/ (emptied at every run). PINs: ${PINS#"$ROOT"/}/*.pin (0600)."
note "pkcs11: URIs are shown without their query (?module-path=…&pin-source=file:…user.pin)."

# ================================================================ tokens ==
step "1. Tokens"
say "The service's token (SoftHSM2 stands in for an HSM): custosd's TLS key is made inside it."
new_token custosd softhsm2
keygen custosd ec-p256 tls
SERVER_KEY=$KEY_URI
say "    -> $(shown_uri "$SERVER_KEY")"

# The store's keyring: the HMAC key that seals enrollments and wraps their
# secrets (custosd: keyring = URI; the custos commands: CUSTOS_KEYRING_URI).
keygen custosd hmac256 store-seal
KEYRING=$KEY_URI
say "    -> $(shown_uri "$KEYRING")   (the store's keyring: seals every enrollment, wraps their secrets)"
AUDIT_KEY=
if "$CUSTOS" audit verify --help >/dev/null 2>&1; then
    keygen custosd ec-p256 audit
    AUDIT_KEY=$KEY_URI
    say "    -> $(shown_uri "$AUDIT_KEY")   (signs the heads of the audit log)"
fi
say ""
say "One token per device: devices 1, 3, 5 in SoftHSM2, devices 2, 4 in the Custos software keystore."
declare -A DEV_KEY
for i in 1 2 3 4 5; do
    case $i in 1 | 3 | 5) kind=softhsm2 ;; *) kind=soft ;; esac
    new_token "device-$i" "$kind" quiet
done
note "    (each device's key is made inside its token in step 2, with its certificate)"

say ""
say "What a PKCS#11 application sees (the service's token and one software keystore token):"
shown "$CUSTOS" token list --dir "$TOKENS/custosd" --dir "$TOKENS/device-2"
"$CUSTOS" token list --dir "$TOKENS/custosd" --dir "$TOKENS/device-2" | sed '/^       /d' | indent
note "    (mechanism lists cut after their first line)"

# ============================================================== the PKI ==
step "2. The seed's PKI: root -> A -> devices 1-3, root -> B -> devices 4-5"
note "The CA keys of this test PKI are files (${PKI#"$ROOT"/}/root.key, cert-a.key, cert-b.key); every device key is in its token."
run "$CUSTOS" pki issue --cn "Seed Root" --ca --days 3650 --out "$PKI/root"
run "$CUSTOS" pki issue --cn "Certificate A" --ca --days 1825 --issuer-cert "$PKI/root.pem" --issuer-key "$PKI/root.key" --out "$PKI/cert-a"
run "$CUSTOS" pki issue --cn "Certificate B" --ca --days 1825 --issuer-cert "$PKI/root.pem" --issuer-key "$PKI/root.key" --out "$PKI/cert-b"
say "Each device: its key generated inside its token, its certificate issued by A or B (custos pki"
say "issue --token-dir), and the chain the device sends (leaf + intermediate):"
for i in 1 2 3 4 5; do
    dev=device-$i
    if [ "$i" -le 3 ]; then ca=cert-a; else ca=cert-b; fi
    quiet "$CUSTOS" pki issue --cn "$dev" --days 365 --issuer-cert "$PKI/$ca.pem" --issuer-key "$PKI/$ca.key" \
        --out "$PKI/$dev" --token-dir "$TOKENS/$dev" --pin-source "$USER_PIN"
    # pki/device-N.uri: the key's pkcs11: URI (no PIN); the devices read the PIN from the file.
    DEV_KEY[$dev]="$(cat "$PKI/$dev.uri")&pin-source=file:$(urlenc "$USER_PIN")"
    cat "$PKI/$dev.pem" "$PKI/$ca.pem" >"$PKI/$dev-chain.pem"
done
say "    -> $(shown_uri "${DEV_KEY[device-1]}")   (pki/device-1.uri; the certificate is on the token too)"
note "(device-N-chain.pem = device-N.pem + cert-a/b.pem)"


# ============================================================== custosd ==
step "3. custosd on a free loopback port, its state in ${DEMO#"$ROOT"/}/"
{
    echo "# written by tools/demo.sh (docs/custosd.md)"
    echo "server-key = $SERVER_KEY"
    echo "keyring = $KEYRING"
    # custosd signs the audit log's head with the token's audit key as it goes.
    [ -n "$AUDIT_KEY" ] && echo "audit-key = $AUDIT_KEY"
    echo "hub = hub1.custos.local"
    echo "hub = hub2.custos.local"
    echo "retry-after = 1"
    echo "shutdown-grace = 3"
    echo "log-file = $DEMO/custosd.log"
} >"$DEMO/custosd.conf"
say "${DEMO#"$ROOT"/}/custosd.conf (docs/custosd.md):"
grep -v '^#' "$DEMO/custosd.conf" | sed -e 's/?[^ ]*$/?…/' -e "s|$ROOT/||" | indent
mapfile -t e <<<"${ENVS[custosd]}"
SVC_ENV=("${e[@]}" CUSTOS_KEYRING_URI="$KEYRING")
# The same for a shell: `. var/demo/service.env` before custos commands on the state.
for v in "${SVC_ENV[@]}"; do printf "export %s='%s'\n" "${v%%=*}" "${v#*=}"; done >"$DEMO/service.env"
shown "${e[@]}" "$CUSTOSD" --state "$DEMO" --listen 127.0.0.1:0 --config "$DEMO/custosd.conf" '&'
# In a session of its own (setsid), so that a Ctrl-C reaches this script,
# not custosd: custosd is stopped by the clean-up, with SIGTERM, in order.
setsid env "${e[@]}" "$CUSTOSD" --state "$DEMO" --listen 127.0.0.1:0 --config "$DEMO/custosd.conf" \
    </dev/null >>"$DEMO/custosd.log" 2>&1 &
CUSTOSD_PID=$!
echo "$CUSTOSD_PID" >"$DEMO/custosd.pid"
for _ in $(seq 1 600); do
    [ -s "$DEMO/endpoint" ] && break
    kill -0 "$CUSTOSD_PID" 2>/dev/null || break
    sleep 0.05
done
if [ ! -s "$DEMO/endpoint" ]; then
    echo "demo: custosd did not start:" >&2
    tail -n 20 "$DEMO/custosd.log" >&2
    exit 1
fi
ENDPOINT=$(cat "$DEMO/endpoint")
HOSTPORT=${ENDPOINT#https://}
up=
for _ in $(seq 1 300); do
    if curl -fsS --cacert "$DEMO/ca.crt" "$ENDPOINT/healthz" >"$DEMO/healthz" 2>/dev/null; then up=1; break; fi
    sleep 0.1
done
[ -n "$up" ] || { echo "demo: custosd does not answer $ENDPOINT/healthz" >&2; exit 1; }
shown curl --cacert "$DEMO/ca.crt" "$ENDPOINT/healthz"
indent <"$DEMO/healthz"; echo
say "custosd (PID $CUSTOSD_PID) serves $ENDPOINT; its certificate is for the key in the token:"
if cmp -s <(openssl x509 -in "$DEMO/server.crt" -noout -pubkey) \
        <(env "${SVC_ENV[@]}" openssl pkey -provider-path "$PROVIDERS" -provider custos -provider default -in "$SERVER_KEY" -pubout 2>/dev/null); then
    say "    server.crt's public key = the public half of pkcs11:token=custosd;object=tls (no server.key file)"
else
    say "    (server.crt does not match the token key!)"
fi
cli() { # KEEP-REGEX COMMAND...: a custos command on the service's state, shown; output lines matching KEEP
    local keep=$1
    shift
    shown "$@"
    env "${SVC_ENV[@]}" "$@" | { grep -E "$keep" || true; } | indent
}
ENTRY='^(enrollmentGroupId|registrationId|attestation|  primary|provisioningStatus)'

SCOPE=$(env "${SVC_ENV[@]}" "$CUSTOS" service info --state "$DEMO" --config "$DEMO/custosd.conf" --json |
        sed -n 's/.*"idScope":"\([^"]*\)".*/\1/p')
[ -n "$SCOPE" ] || { echo "demo: custos service info gave no id scope" >&2; exit 1; }
shown "$CUSTOS" service info --state "$DEMO" --config "$DEMO/custosd.conf"
env "${SVC_ENV[@]}" "$CUSTOS" service info --state "$DEMO" --config "$DEMO/custosd.conf" |
    grep -v -i 'connection string' | indent
note "    (the connection string is left out: it carries the service's shared access key)"
say ""
say "The custos commands on the service's state (group, enrollment, registration, service) open the"
say "store with the same keyring, through the service's token: its environment and CUSTOS_KEYRING_URI,"
say "written to ${DEMO#"$ROOT"/}/service.env for a shell:"
shown . "$DEMO/service.env"
sed -e "s/?[^ ]*\$/?…'/" -e "s|$ROOT/||" "$DEMO/service.env" | indent
DPS=(--scope "$SCOPE" --host "$HOSTPORT" --ca "$DEMO/ca.crt")
say ""
say "Every registration below is: custos device register \$DPS …   where"
say "    DPS='--scope $SCOPE --host $HOSTPORT --ca ${DEMO#"$ROOT"/}/ca.crt'"

# ------------------------------------------------------ registration table --
# Results: $DEMO/results.tsv, one line per registration:
# stage  device  mechanism  token  kind  result  hub
RESULTS=$DEMO/results.tsv
: >"$RESULTS"
register() { # STAGE DEVICE MECHANISM TOKEN ARGS...: one registration, recorded
    local stage=$1 dev=$2 mech=$3 tok=$4 rc=0 out result hub
    shift 4
    local -a e=()
    # --dir: the command reads the token's environment from its directory
    case " $* " in *" --dir "*) ;; *) mapfile -t e <<<"${ENVS[$tok]}" ;; esac
    local a shown_env=''
    for a in "${e[@]}"; do shown_env+=" ${a//$ROOT\//}"; done
    # shellcheck disable=SC2016 # $DPS is shown, not expanded
    printf '%s$%s %s device register $DPS' "$B" "$shown_env" "${CUSTOS#"$ROOT"/}"
    for a in "$@"; do
        a=${a//$ROOT\//}
        case $a in pkcs11:*\?*) a="'${a%%\?*}?…'" ;; esac
        printf ' %s' "$a"
    done
    printf '%s\n' "$N"
    out=$(env "${e[@]}" "$CUSTOS" device register "${DPS[@]}" --timeout 60 "$@" 2>&1) || rc=$?
    printf '%s\n' "$out" | indent
    hub=-
    case $rc in
        0) result=assigned
           hub=$(printf '%s\n' "$out" | sed -n 's/^assigned: .* -> \([^ ]*\).*/\1/p' | head -n 1) ;;
        3) result=refused ;;
        4) result=failed ;;
        *) result="error($rc)" ;;
    esac
    if [ "$result" != assigned ] && [ "$result" != refused ]; then
        kill -0 "$CUSTOSD_PID" 2>/dev/null || echo "demo: custosd (PID $CUSTOSD_PID) is no longer running; its log:" >&2
        kill -0 "$CUSTOSD_PID" 2>/dev/null || tail -n 5 "$DEMO/custosd.log" >&2
        echo "demo: the registration of $dev ended in $result, neither assigned nor refused: stopping" >&2
        exit 1
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$stage" "$dev" "$mech" "$tok" "${KIND[$tok]}" "$result" "${hub:--}" >>"$RESULTS"
}
x509_register() { # STAGE N
    register "$1" "device-$2" x509 "device-$2" --x509 --cert "$PKI/device-$2-chain.pem" --key "${DEV_KEY[device-$2]}"
}
table() { # STAGE EXPECTED-ASSIGNED...: the stage's table, checked against the seed
    local stage=$1 st dev mech tok kind result hub want got='' name
    shift
    printf '\n  %s%-10s %-13s %-22s %-9s %s%s\n' "$B" device mechanism "token (kind)" result hub "$N"
    while IFS=$'\t' read -r st dev mech tok kind result hub; do
        [ "$st" = "$stage" ] || continue
        name=$dev
        [ "${#name}" -le 10 ] || name="${name:0:9}…"
        printf '  %-10s %-13s %-22s %-9s %s\n' "$name" "$mech" "$tok ($kind)" "$result" "$hub"
        [ "$result" = assigned ] && got+="$dev "
    done <"$RESULTS"
    want="$* "
    if [ "$got" = "$want" ]; then
        if [ "$stage" = 4 ]; then say "  -> all three assigned."
        elif [ "$stage" = 5 ]; then say "  -> the TPM device is assigned."
        elif [ "$stage" = 1 ]; then say "  -> as the seed says: all five assigned."
        else say "  -> as the seed says: ${want% } assigned, the others refused."; fi
    else
        say "  -> NOT what the seed says: assigned ${got:-none }, expected ${want% }" >&2
        MISMATCH=1
    fi
}
MISMATCH=

# ================================================================ stages ==
step "Stage 1: one enabled enrollment group on the root certificate"
note "Seed: \"Initially, you can create a single enabled group enrollment entry for the root certificate to enable access for all five devices.\""
cli "$ENTRY" "$CUSTOS" group create root-group --cert "$PKI/root.pem" --state "$DEMO"
for i in 1 2 3 4 5; do x509_register 1 "$i"; done
table 1 device-1 device-2 device-3 device-4 device-5

step "Stage 2: certificate B is compromised: a disabled group for B"
note "Seed: \"If certificate B later becomes compromised, you can create a disabled enrollment group entry for certificate B to prevent Device 4 and Device 5 from enrolling.\""
cli "$ENTRY" "$CUSTOS" group create group-b --cert "$PKI/cert-b.pem" --disable --state "$DEMO"
for i in 1 2 3 4 5; do x509_register 2 "$i"; done
table 2 device-1 device-2 device-3

step "Stage 3: device 3 is compromised: a disabled individual enrollment for its certificate"
note "Seed: \"If still later Device 3 becomes compromised, you can create a disabled individual enrollment entry for its certificate. This revokes access for Device 3, but still allows Device 1 and Device 2 to enroll.\""
cli "$ENTRY" "$CUSTOS" enrollment create device-3 --cert "$PKI/device-3.pem" --disable --state "$DEMO"
for i in 1 2 3 4 5; do x509_register 3 "$i"; done
table 3 device-1 device-2

# ======================================================= symmetric keys ==
step "4. Symmetric keys: an enrollment group, three devices whose keys are derived from it"
say "The group key is made once, given to the service and imported into the factory's token (SoftHSM2)."
say "Each device key is HMAC-SHA256(group key, registration id), computed inside the token (--group)."
new_token factory softhsm2 quiet
mkdir -p "$DEMO/keys"
run openssl rand -out "$DEMO/keys/sensors.raw" 32
shown base64 -w0 "$DEMO/keys/sensors.raw" '>' "$DEMO/keys/sensors.b64"
base64 -w0 "$DEMO/keys/sensors.raw" >"$DEMO/keys/sensors.b64"
quiet "$CUSTOS" token hmac-import --dir "$TOKENS/factory" --key-file "$DEMO/keys/sensors.raw" --label sensors \
    --pin-source "$USER_PIN"
SYM_KEY="pkcs11:token=factory;object=sensors;type=secret-key?module-path=$(urlenc "${MODULE[factory]}")&pin-source=file:$(urlenc "$USER_PIN")"
cli "$ENTRY" "$CUSTOS" group create sensors --attestation symmetricKey --primary-key-file "$DEMO/keys/sensors.b64" --state "$DEMO"
run rm "$DEMO/keys/sensors.raw" "$DEMO/keys/sensors.b64"
note "    (the token holds the key, the store holds it wrapped by the keyring)"
for i in 1 2 3; do
    register 4 "sensor-$i" "symmetric key" factory --symmetric-key "$SYM_KEY" --group --registration-id "sensor-$i"
done
table 4 sensor-1 sensor-2 sensor-3

# ================================================================= TPM ==
step "5. A TPM device"
say "A device whose identity is its TPM's endorsement key (EK): a software TPM (swtpm) behind a tpm2 token."
say "The operator enrolls the EK before the device first connects; the device answers the service's"
say "challenge inside the TPM (ActivateCredential, Import) and signs its SAS token there."
TPM_DIRS+=("$TOKENS/tpm-device")       # before init: an interrupted init is stopped too
new_token tpm-device tpm2 quiet
shown "$CUSTOS" device tpm-identity --dir "$TOKENS/tpm-device" --json
ident=$("$CUSTOS" device tpm-identity --dir "$TOKENS/tpm-device" --json)
ek=$(printf '%s\n' "$ident" | sed -n 's/.*"endorsementKey":"\([^"]*\)".*/\1/p')
tpm_id=$(printf '%s\n' "$ident" | sed -n 's/.*"registrationId":"\([^"]*\)".*/\1/p')
if [ -z "$ek" ] || [ -z "$tpm_id" ]; then
    echo "demo: no EK from custos device tpm-identity: $ident" >&2
    exit 1
fi
say "    registration id $tpm_id (base32 of the EK's SHA-256), EK ${ek:0:24}… (base64 TPM2B_PUBLIC)"
mkdir -p "$DEMO/keys"
printf '%s\n' "$ek" >"$DEMO/keys/tpm-device.ek"
say "The enrollment without an id takes the TPM's default registration id, as the device does:"
cli "$ENTRY" "$CUSTOS" enrollment create --attestation tpm --ek-file "$DEMO/keys/tpm-device.ek" --state "$DEMO"
register 5 "$tpm_id" tpm tpm-device --tpm --dir "$TOKENS/tpm-device"
table 5 "$tpm_id"

# ============================================================= explain ==
step "6. Why was a device refused? custos enrollment explain"
say "custosd tells a refused device only '401 Unauthorized', as the public service does. Its log says why:"
rid=$(grep 'path=/[^ ]*/registrations/device-4/register ' "$DEMO/custosd.log" | grep ' status=401 ' | tail -n 1 |
      sed -n 's/.* reqid=\([^ ]*\) .*/\1/p')
if [ -n "$rid" ]; then
    grep -F "reqid=$rid " "$DEMO/custosd.log" | indent
fi
say "and the operator can ask the same question of the store, without a registration:"
shown "$CUSTOS" enrollment explain --cert "$PKI/device-4-chain.pem" --state "$DEMO"
env "${SVC_ENV[@]}" "$CUSTOS" enrollment explain --cert "$PKI/device-4-chain.pem" --state "$DEMO" | indent || true

# =========================================================== audit log ==
if [ -n "$AUDIT_KEY" ]; then
    step "The audit log: every decision and change, hash-chained in the store (docs/audit.md)"
    say "Records by type (custos audit export: one JSON object per record):"
    shown "$CUSTOS" audit export --state "$DEMO"
    env "${SVC_ENV[@]}" "$CUSTOS" audit export --state "$DEMO" |
        sed -n 's/^{"seq":[0-9]*,"at":"[^"]*","type":"\([^"]*\)".*/\1/p' | sort | uniq -c | sort -rn | indent
    # custos audit loads the key through OSSL_STORE: the custos provider
    # comes from an openssl.cnf (docs/provider.md).
    cat >"$DEMO/openssl.cnf" <<EOF
# written by tools/demo.sh: the custos provider beside the default one (docs/provider.md)
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
[provider_sect]
default = default_sect
custos = custos_sect
[default_sect]
activate = 1
[custos_sect]
module = $PROVIDERS/custos.so
activate = 1
EOF
    say "custosd signed the log's head with the audit key in the service's token as it ran;"
    say "sign the last records now, then verify the chain and every signature"
    say "(custos audit reads the key through OpenSSL: ${DEMO#"$ROOT"/}/openssl.cnf loads the custos provider):"
    cli . OPENSSL_CONF="$DEMO/openssl.cnf" "$CUSTOS" audit sign --key-uri "$AUDIT_KEY" --state "$DEMO"
    cli . OPENSSL_CONF="$DEMO/openssl.cnf" "$CUSTOS" audit verify --key-uri "$AUDIT_KEY" --state "$DEMO"
else
    note "(The audit log, custos audit verify/export, is not in this build yet: skipped.)"
fi

# ============================================================= custody ==
step "Key custody: where every key lives (custos audit custody)"
# A process can use one SoftHSM2 store and one software keystore at a time
# (docs/tokens.md), and `audit custody --state` reads every token in one
# process: with several SoftHSM2 token directories it cannot read them all.
# So: one run per token, the CSV rows joined into one table.
say "One run per token (a process reads one SoftHSM2 store at a time), the rows joined:"
shown "$CUSTOS" audit custody --dir "$TOKENS/TOKEN" --pin-source "$USER_PIN" --csv
custody_rc=0
{
    for d in "$TOKENS"/*/; do
        d=${d%/}
        # (the # summary lines and the header left out: the rows only)
        "$CUSTOS" audit custody --dir "$d" --pin-source "$USER_PIN" --csv | grep -v '^#' | tail -n +2 || custody_rc=1
    done
} >"$DEMO/custody.csv"
# CSV fields: kind, token, manufacturer, model, serial, class, type, bits,
# label, id, sensitive, extractable, always-sensitive, never-extractable,
# local, certificates, flags (quoted strings; a quoted field may hold commas).
awk '
function split_csv(line, f,    n, i, c, q, cur) {
    n = 0; cur = ""; q = 0
    for (i = 1; i <= length(line); i++) {
        c = substr(line, i, 1)
        if (q) { if (c == "\"") q = 0; else cur = cur c }
        else if (c == "\"") q = 1
        else if (c == ",") { f[++n] = cur; cur = "" }
        else cur = cur c
    }
    f[++n] = cur
    return n
}
BEGIN { printf "  %-10s %-9s %-12s %-8s %-10s %-5s %-5s %-6s %s\n", "token", "kind", "key", "class", "type", "sens", "extr", "local", "flags" }
{
    split_csv($0, f)
    cls = f[6]; sub(/-key$/, "", cls)
    printf "  %-10s %-9s %-12s %-8s %-10s %-5s %-5s %-6s %s\n", f[2], f[1], f[9], cls, f[7] " " f[8], f[11], f[12], f[15], f[17]
}' "$DEMO/custody.csv"
say "  sens/extr: CKA_SENSITIVE / CKA_EXTRACTABLE; local: generated inside the token."
say "  'imported': the service must know a symmetric group key, so that one key came from outside."
say "  tpm-device: its EK, SRK and the imported keys are TPM objects, not PKCS#11 ones (none listed)."
[ "$custody_rc" = 0 ] || say "  (a token could not be read: see the messages above)"

# ============================================================= summary ==
step "Summary"
stages=(1 2 3 4)
devs=(device-1 device-2 device-3 device-4 device-5 sensor-1 sensor-2 sensor-3)
stages+=(5); devs+=("$tpm_id")
printf '  %s%-10s %-14s' "$B" device mechanism
for st in "${stages[@]}"; do printf ' %-9s' "stage $st"; done
printf '%s\n' "$N"
for dev in "${devs[@]}"; do
    name=$dev
    [ "${#name}" -le 10 ] || name="${name:0:9}…"
    printf '  %-10s' "$name"
    row=
    mech=
    for st in "${stages[@]}"; do
        r=$(awk -F'\t' -v s="$st" -v d="$dev" '$1 == s && $2 == d { print ($6 == "assigned" ? $7 : $6) "\t" $3 }' "$RESULTS")
        if [ -n "$r" ]; then mech=${r#*$'\t'}; r=${r%%$'\t'*}; r=${r%%.*}; else r=-; fi
        row+=$(printf ' %-9s' "$r")
    done
    printf ' %-14s%s\n' "$mech" "$row"
done
say "  (hub1, hub2: hub1.custos.local, hub2.custos.local; -: not registered in that stage)"
if [ -n "$MISMATCH" ]; then
    echo "demo: the outcomes differ from the seed's example (see the tables above)" >&2
    exit 1
fi
say "Every outcome is the seed's: all five; then B's devices refused; then device-3 refused too."
say "The symmetric-key devices and the TPM device are assigned."

step "Where things are"
say "  ${DEMO#"$ROOT"/}/tokens/     the tokens: custosd (server keys), device-1..5, factory (group key), tpm-device (swtpm)"
say "  ${DEMO#"$ROOT"/}/pins/       the PIN files (0600)"
say "  ${DEMO#"$ROOT"/}/pki/        the test PKI: certificates; root/cert-a/cert-b keys are files"
say "  ${DEMO#"$ROOT"/}/            custosd's state: custos.db (SQLite), custosd.conf, custosd.log,"
extra=
[ -f "$DEMO/openssl.cnf" ] && extra=", openssl.cnf"
say "               service.env$extra, ca.crt/ca.key (custosd's CA, a file), server.crt"
say "  ${DEMO#"$ROOT"/}/results.tsv every registration of this run"
say "Look around:  . ${DEMO#"$ROOT"/}/service.env; ${CUSTOS#"$ROOT"/} registration list --state ${DEMO#"$ROOT"/}"
say "Run it again: make demo (starts from fresh tokens and state)."

step "Stop what the demo started"
stop_custosd
stop_tokens
say "Done in $(( $(date +%s) - T0 )) s."
