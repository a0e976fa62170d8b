#!/usr/bin/env bash
# `p11-kit list-modules` shows custos-soft when it is configured. p11-kit
# reads a private config ($XDG_CONFIG_HOME/pkcs11, `user-config: only`) only
# for non-root users (TOKENS.md §4.3), so as root the check runs as `nobody`
# through setpriv; the system-wide config is never touched.
. "$(dirname "$0")/common.sh"
mkdir -p cfg/pkcs11/modules
echo "user-config: only" > cfg/pkcs11/pkcs11.conf
printf 'module: %s\ncritical: yes\n' "$M" > cfg/pkcs11/modules/custos-soft.module
check "init token" make_token
RUN=()
if [ "$(id -u)" = 0 ]; then
    chown -R nobody "$T"; chmod 755 "$T"
    RUN=(setpriv --reuid=nobody --regid=nogroup --clear-groups env HOME="$T")
    # the module file must be readable by nobody
    check "module readable by nobody" "${RUN[@]}" test -r "$M"
fi
check "p11-kit list-modules shows custos-soft" bash -c "
  ${RUN[*]} env XDG_CONFIG_HOME='$T/cfg' CUSTOS_SOFT_DIR='$CUSTOS_SOFT_DIR' \
    $W p11-kit list-modules > list.out 2>&1; head -5 list.out;
  grep -q 'custos-soft' list.out && grep -q 'library-description: Custos software keystore' list.out &&
  grep -q 'token: it' list.out && grep -q 'model: custos-soft' list.out"
check "only our module (user-config: only)" bash -c "! grep -q softhsm list.out"
finish
