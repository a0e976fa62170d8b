/* Custos: the one error type of the project.
 *
 * Every fallible function returns a cu_rc. The detail of the last failure on
 * the calling thread (the PKCS#11 CK_RV if a token said no, and a message that
 * names the token and the object, never a PIN) is kept in a thread-local
 * record read with cu_err_last(). */
#ifndef CUSTOS_RC_H
#define CUSTOS_RC_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cu_rc {
    CU_OK = 0,
    CU_E_INVALID_ARG,      /* a caller's argument is out of range or NULL */
    CU_E_NOMEM,            /* an allocation failed */
    CU_E_URI,              /* malformed or unsupported pkcs11: URI */
    CU_E_MODULE,           /* a PKCS#11 module could not be loaded or initialized */
    CU_E_TOKEN_NOT_FOUND,  /* no token matches the URI */
    CU_E_OBJECT_NOT_FOUND, /* no object matches the URI */
    CU_E_AMBIGUOUS,        /* the URI matches several tokens or objects */
    CU_E_PIN_MISSING,      /* login is needed and no PIN was given */
    CU_E_PIN_INCORRECT,    /* the token refused the PIN */
    CU_E_PIN_LOCKED,       /* the token locked the PIN */
    CU_E_MECHANISM,        /* the token or key does not support the mechanism */
    CU_E_KEY_TYPE,         /* the key's type does not fit the operation */
    CU_E_BUFFER_TOO_SMALL, /* an output buffer is too small; the size is returned */
    CU_E_VERIFY,           /* a signature or MAC does not verify */
    CU_E_TOKEN,            /* any other refusal of the token: see cu_err.ckr */
    CU_E_IO,               /* a file or process operation failed: see cu_err.sys */
    CU_E_CRYPTO,           /* an OpenSSL operation failed */
    CU_E_UNSUPPORTED,      /* the operation is not possible on this token */
    CU_E_STATE,            /* the object is not in a state that allows this */
    CU_E_EXISTS,           /* the entry already exists (HTTP 409) */
    CU_E_PRECONDITION,     /* a stale etag / failed If-Match (HTTP 412) */
    CU_E_PARSE,            /* input (JSON, DER, PEM, SAS...) could not be parsed */
    CU_E_REFUSED,          /* a request was decided against (attestation, policy) */
    CU_E__COUNT
} cu_rc;

/* Which layer the failure came from. */
typedef enum cu_err_origin {
    CU_ORIGIN_CUSTOS = 0,
    CU_ORIGIN_PKCS11,
    CU_ORIGIN_OPENSSL,
    CU_ORIGIN_SYSTEM,
} cu_err_origin;

typedef struct cu_err {
    cu_rc rc;
    cu_err_origin origin;
    unsigned long ckr; /* CK_RV when origin is PKCS11, else 0 */
    int sys;           /* errno when origin is SYSTEM, else 0 */
    char msg[512];
} cu_err;

/* The last error recorded on this thread (never NULL; rc == CU_OK if none). */
const cu_err *cu_err_last(void);
void cu_err_clear(void);

/* Short stable names, e.g. "object not found", "CKR_PIN_INCORRECT". */
const char *cu_rc_str(cu_rc rc);
const char *cu_ckr_str(unsigned long ckr);

/* Records an error on this thread and returns rc (for `return cu_err_set(...)`). */
cu_rc cu_err_set(cu_rc rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
cu_rc cu_err_set_ckr(cu_rc rc, unsigned long ckr, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
cu_rc cu_err_set_sys(cu_rc rc, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Records rc with fmt's text put before this thread's current message
 * ("loading the EK: <what failed below>"), and returns rc. */
cu_rc cu_err_wrap(cu_rc rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Maps a CK_RV to the cu_rc a caller acts on (CKR_PIN_INCORRECT -> CU_E_PIN_INCORRECT ...). */
cu_rc cu_rc_from_ckr(unsigned long ckr);

#ifdef __cplusplus
}
#endif
#endif
