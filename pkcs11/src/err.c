/* The thread-local error record and the names of codes. */
#include "internal.h"

#include <p11-kit/pkcs11.h>
#include <stdio.h>
#include <string.h>

static _Thread_local cu_err last;

const cu_err *cu_err_last(void)
{
    return &last;
}

void cu_err_clear(void)
{
    memset(&last, 0, sizeof last);
}

static cu_rc vset(cu_rc rc, cu_err_origin origin, unsigned long ckr, int sys,
                  const char *fmt, va_list ap)
{
    last.rc = rc;
    last.origin = origin;
    last.ckr = ckr;
    last.sys = sys;
    int n = vsnprintf(last.msg, sizeof last.msg, fmt, ap);
    size_t used = n < 0 ? 0 : (size_t)n >= sizeof last.msg ? sizeof last.msg - 1 : (size_t)n;
    if (origin == CU_ORIGIN_PKCS11)
        snprintf(last.msg + used, sizeof last.msg - used, " (%s)", cu_ckr_str(ckr));
    else if (origin == CU_ORIGIN_SYSTEM)
        snprintf(last.msg + used, sizeof last.msg - used, ": %s", strerror(sys));
    return rc;
}

cu_rc cu_err_set(cu_rc rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(rc, CU_ORIGIN_CUSTOS, 0, 0, fmt, ap);
    va_end(ap);
    return rc;
}

cu_rc cu__err_restore(const cu_err *e)
{
    last = *e;
    return e->rc;
}

cu_rc cu_err_wrap(cu_rc rc, const char *fmt, ...)
{
    /* Copied first: the new message is formatted into the same buffer. */
    char saved[sizeof(((cu_err *)0)->msg)], prefix[256];
    snprintf(saved, sizeof saved, "%s", cu_err_last()->msg);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    return cu_err_set(rc, "%s: %s", prefix, saved);
}

cu_rc cu_err_set_ckr(cu_rc rc, unsigned long ckr, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(rc, CU_ORIGIN_PKCS11, ckr, 0, fmt, ap);
    va_end(ap);
    return rc;
}

cu_rc cu_err_set_sys(cu_rc rc, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(rc, CU_ORIGIN_SYSTEM, 0, err, fmt, ap);
    va_end(ap);
    return rc;
}

const char *cu_rc_str(cu_rc rc)
{
    static const char *const names[CU_E__COUNT] = {
        [CU_OK] = "success",
        [CU_E_INVALID_ARG] = "invalid argument",
        [CU_E_NOMEM] = "out of memory",
        [CU_E_URI] = "bad pkcs11 URI",
        [CU_E_MODULE] = "module error",
        [CU_E_TOKEN_NOT_FOUND] = "token not found",
        [CU_E_OBJECT_NOT_FOUND] = "object not found",
        [CU_E_AMBIGUOUS] = "ambiguous URI",
        [CU_E_PIN_MISSING] = "PIN missing",
        [CU_E_PIN_INCORRECT] = "PIN incorrect",
        [CU_E_PIN_LOCKED] = "PIN locked",
        [CU_E_MECHANISM] = "mechanism not supported",
        [CU_E_KEY_TYPE] = "wrong key type",
        [CU_E_BUFFER_TOO_SMALL] = "buffer too small",
        [CU_E_VERIFY] = "verification failed",
        [CU_E_TOKEN] = "token error",
        [CU_E_IO] = "I/O error",
        [CU_E_CRYPTO] = "crypto error",
        [CU_E_UNSUPPORTED] = "not supported by this token",
        [CU_E_STATE] = "invalid state",
        [CU_E_EXISTS] = "already exists",
        [CU_E_PRECONDITION] = "precondition failed",
        [CU_E_PARSE] = "parse error",
        [CU_E_REFUSED] = "refused",
    };
    return (rc >= 0 && rc < CU_E__COUNT && names[rc]) ? names[rc] : "unknown error";
}

cu_rc cu_rc_from_ckr(unsigned long ckr)
{
    switch (ckr) {
    case CKR_OK: return CU_OK;
    case CKR_HOST_MEMORY: case CKR_DEVICE_MEMORY: return CU_E_NOMEM;
    case CKR_PIN_INCORRECT: case CKR_PIN_INVALID: case CKR_PIN_LEN_RANGE: return CU_E_PIN_INCORRECT;
    case CKR_PIN_LOCKED: return CU_E_PIN_LOCKED;
    case CKR_USER_NOT_LOGGED_IN: return CU_E_PIN_MISSING;
    case CKR_MECHANISM_INVALID: case CKR_MECHANISM_PARAM_INVALID: return CU_E_MECHANISM;
    case CKR_KEY_TYPE_INCONSISTENT: case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_KEY_SIZE_RANGE: return CU_E_KEY_TYPE;
    case CKR_BUFFER_TOO_SMALL: return CU_E_BUFFER_TOO_SMALL;
    case CKR_SIGNATURE_INVALID: case CKR_SIGNATURE_LEN_RANGE: return CU_E_VERIFY;
    case CKR_TOKEN_NOT_PRESENT: case CKR_SLOT_ID_INVALID: return CU_E_TOKEN_NOT_FOUND;
    case CKR_OBJECT_HANDLE_INVALID: case CKR_KEY_HANDLE_INVALID: return CU_E_OBJECT_NOT_FOUND;
    case CKR_FUNCTION_NOT_SUPPORTED: return CU_E_UNSUPPORTED;
    case CKR_ARGUMENTS_BAD: return CU_E_INVALID_ARG;
    default: return CU_E_TOKEN;
    }
}

const char *cu_ckr_str(unsigned long ckr)
{
#define N(x) case x: return #x
    switch (ckr) {
    N(CKR_OK); N(CKR_CANCEL); N(CKR_HOST_MEMORY); N(CKR_SLOT_ID_INVALID); N(CKR_GENERAL_ERROR);
    N(CKR_FUNCTION_FAILED); N(CKR_ARGUMENTS_BAD); N(CKR_NO_EVENT); N(CKR_NEED_TO_CREATE_THREADS);
    N(CKR_CANT_LOCK); N(CKR_ATTRIBUTE_READ_ONLY); N(CKR_ATTRIBUTE_SENSITIVE);
    N(CKR_ATTRIBUTE_TYPE_INVALID); N(CKR_ATTRIBUTE_VALUE_INVALID); N(CKR_ACTION_PROHIBITED);
    N(CKR_DATA_INVALID); N(CKR_DATA_LEN_RANGE); N(CKR_DEVICE_ERROR); N(CKR_DEVICE_MEMORY);
    N(CKR_DEVICE_REMOVED); N(CKR_ENCRYPTED_DATA_INVALID); N(CKR_ENCRYPTED_DATA_LEN_RANGE);
    N(CKR_FUNCTION_CANCELED); N(CKR_FUNCTION_NOT_PARALLEL); N(CKR_FUNCTION_NOT_SUPPORTED);
    N(CKR_KEY_HANDLE_INVALID); N(CKR_KEY_SIZE_RANGE); N(CKR_KEY_TYPE_INCONSISTENT);
    N(CKR_KEY_NOT_NEEDED); N(CKR_KEY_CHANGED); N(CKR_KEY_NEEDED); N(CKR_KEY_INDIGESTIBLE);
    N(CKR_KEY_FUNCTION_NOT_PERMITTED); N(CKR_KEY_NOT_WRAPPABLE); N(CKR_KEY_UNEXTRACTABLE);
    N(CKR_MECHANISM_INVALID); N(CKR_MECHANISM_PARAM_INVALID); N(CKR_OBJECT_HANDLE_INVALID);
    N(CKR_OPERATION_ACTIVE); N(CKR_OPERATION_NOT_INITIALIZED); N(CKR_PIN_INCORRECT);
    N(CKR_PIN_INVALID); N(CKR_PIN_LEN_RANGE); N(CKR_PIN_EXPIRED); N(CKR_PIN_LOCKED);
    N(CKR_SESSION_CLOSED); N(CKR_SESSION_COUNT); N(CKR_SESSION_HANDLE_INVALID);
    N(CKR_SESSION_PARALLEL_NOT_SUPPORTED); N(CKR_SESSION_READ_ONLY); N(CKR_SESSION_EXISTS);
    N(CKR_SESSION_READ_ONLY_EXISTS); N(CKR_SESSION_READ_WRITE_SO_EXISTS);
    N(CKR_SIGNATURE_INVALID); N(CKR_SIGNATURE_LEN_RANGE); N(CKR_TEMPLATE_INCOMPLETE);
    N(CKR_TEMPLATE_INCONSISTENT); N(CKR_TOKEN_NOT_PRESENT); N(CKR_TOKEN_NOT_RECOGNIZED);
    N(CKR_TOKEN_WRITE_PROTECTED); N(CKR_USER_ALREADY_LOGGED_IN); N(CKR_USER_NOT_LOGGED_IN);
    N(CKR_USER_PIN_NOT_INITIALIZED); N(CKR_USER_TYPE_INVALID);
    N(CKR_USER_ANOTHER_ALREADY_LOGGED_IN); N(CKR_USER_TOO_MANY_TYPES);
    N(CKR_RANDOM_SEED_NOT_SUPPORTED); N(CKR_RANDOM_NO_RNG); N(CKR_DOMAIN_PARAMS_INVALID);
    N(CKR_CURVE_NOT_SUPPORTED); N(CKR_BUFFER_TOO_SMALL); N(CKR_SAVED_STATE_INVALID);
    N(CKR_INFORMATION_SENSITIVE); N(CKR_STATE_UNSAVEABLE); N(CKR_CRYPTOKI_NOT_INITIALIZED);
    N(CKR_CRYPTOKI_ALREADY_INITIALIZED); N(CKR_MUTEX_BAD); N(CKR_MUTEX_NOT_LOCKED);
    N(CKR_FUNCTION_REJECTED); N(CKR_VENDOR_DEFINED);
    default: return "CKR_UNKNOWN";
    }
#undef N
}
