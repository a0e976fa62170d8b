# The checks every shell test makes (sourced): one line per check, "ok   -"
# or "FAIL -", counted; the script ends with `summary`, whose status is the
# test's (ctest reads only that). expect_rc keeps the command's output in
# $T/out and $T/err, so the caller sets T, a private directory, first.
pass=0 fail=0
ok()  { pass=$((pass + 1)); echo "ok   - $1"; }
bad() { fail=$((fail + 1)); echo "FAIL - $1"; }
expect_rc() { # expected-rc description command...
  local want=$1 what=$2; shift 2
  "$@" >"$T/out" 2>"$T/err"; local rc=$?
  if [ "$rc" = "$want" ]; then ok "$what"; else bad "$what (exit $rc, wanted $want): $(head -c 400 "$T/out" "$T/err")"; fi
}
contains() { # file text description
  if grep -q -- "$2" "$1"; then ok "$3"; else bad "$3: '$2' not in $(head -c 400 "$1")"; fi
}
summary() {
  echo "$pass passed, $fail failed"
  [ "$fail" -eq 0 ]
}

# OSSL: the openssl command that loads the provider in MODS. In the
# sanitizer build the provider is instrumented, so openssl needs the
# sanitizer runtimes preloaded, and LeakSanitizer is off: the provider's
# PKCS#11 modules stay loaded at exit by design (SoftHSM2 is never
# finalized), which it would report in every process. (The whole ldd
# output first: with pipefail, grep -q closing the pipe early would make
# ldd fail and the test run where it must skip.)
openssl_for() { # MODS
  OSSL=openssl
  if [[ "$(ldd "$1/custos.so" 2>/dev/null)" == *libasan* ]]; then
    local pre
    pre="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
    OSSL="env LD_PRELOAD=$pre ASAN_OPTIONS=detect_leaks=0 openssl"
    export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
  fi
}
