/* The provider context of `custos`: configuration from openssl.cnf, the
 * private library context used for public-key arithmetic, the cache of open
 * tokens, and the translation of token-layer errors into OpenSSL's error queue.
 *
 * Names: cu_prov_* are shared between the provider's source files; nothing
 * but OSSL_provider_init leaves custos.so (see engine/custos.map). */
#ifndef CUSTOS_PROV_PROVIDER_H
#define CUSTOS_PROV_PROVIDER_H

#include <custos/token.h>
#include <openssl/core.h>
#include <openssl/core_dispatch.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>

#define CU_PROV_NAME "custos"
#define CU_PROV_PROPS "provider=custos"
#define CU_PROV_SIG_ECDSA "CUSTOS-ECDSA"
#define CU_PROV_SIG_RSA "CUSTOS-RSA"

/* Reason codes: 1..CU_E__COUNT-1 are the token layer's cu_rc values, so a
 * token error keeps its meaning in OpenSSL's queue; the rest are ours. */
enum {
    CU_PROV_R_NO_PRIVATE_KEY = 100, /* the key has no private half in a token */
    CU_PROV_R_BAD_PARAM,            /* a parameter has a wrong type or value */
    CU_PROV_R_CONFIG,               /* openssl.cnf section is wrong */
    CU_PROV_R_NOT_A_PKCS11_URI,     /* the URI's scheme is not pkcs11: */
    CU_PROV_R_NO_KEY_URI,           /* a MAC or key generation without a URI */
    CU_PROV_R_RAW_KEY,              /* a raw key where a token key is required */
    CU_PROV_R_OPERATION,            /* an operation in the wrong state */
    CU_PROV_R_SOFTWARE,             /* OpenSSL's software part failed */
};

typedef enum cu_prov_log { CU_PROV_LOG_ERROR = 0, CU_PROV_LOG_WARN, CU_PROV_LOG_INFO,
                           CU_PROV_LOG_DEBUG } cu_prov_log;

/* The MDs a signature may use (index = cu_hash). */
#define CU_PROV_N_HASH (CU_HASH_SHA512 + 1)

typedef struct cu_prov_token_entry cu_prov_token_entry;

typedef struct cu_prov_ctx {
    const OSSL_CORE_HANDLE *handle;
    OSSL_LIB_CTX *libctx;   /* the caller's library context (from the core) */
    OSSL_LIB_CTX *sw;       /* private context with the default provider */
    OSSL_PROVIDER *sw_default;
    EVP_MD *md[CU_PROV_N_HASH]; /* pre-fetched digests in sw (NULL at NONE) */
    EVP_KEYMGMT *sw_ec, *sw_rsa; /* the default provider's key managers in sw */

    OSSL_FUNC_core_new_error_fn *up_new_error;
    OSSL_FUNC_core_set_error_debug_fn *up_set_error_debug;
    OSSL_FUNC_core_vset_error_fn *up_vset_error;

    /* configuration (openssl.cnf section, else environment) */
    char **modules;         /* default module paths, tried in order */
    size_t n_modules;
    char *pin_source;       /* default pin-source for URIs that carry none */
    char *quirks;           /* named quirks for every module (NULL: per module) */
    cu_prov_log log_level;

    bool counted;           /* counted in the instances of custos.so */
    struct cu_prov_ctx *next_live; /* the list of live contexts (provider.c) */
    pthread_mutex_t lock;   /* guards the token cache */
    cu_prov_token_entry *tokens;
    cu_prov_token_entry *objects; /* secret keys by URI (MAC keys) */
} cu_prov_ctx;

/* Records an OpenSSL error with our reason code and a formatted detail. */
void cu_prov_raise(const cu_prov_ctx *pc, const char *file, int line, const char *func,
                   int reason, const char *fmt, ...) __attribute__((format(printf, 6, 7)));
#define CU_PROV_RAISE(pc, reason, ...) \
    cu_prov_raise((pc), OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC, (reason), __VA_ARGS__)
/* Records the token layer's last error (cu_err_last) as an OpenSSL error,
 * prefixed by what we were doing. Returns 0 for `return CU_PROV_RAISE_RC(...)`. */
int cu_prov_raise_rc(const cu_prov_ctx *pc, const char *file, int line, const char *func,
                     cu_rc rc, const char *what);
#define CU_PROV_RAISE_RC(pc, rc, what) \
    cu_prov_raise_rc((pc), OPENSSL_FILE, OPENSSL_LINE, OPENSSL_FUNC, (rc), (what))

void cu_prov_log_msg(const cu_prov_ctx *pc, cu_prov_log level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The digest of a cu_hash in the private context (borrowed), and back. */
const EVP_MD *cu_prov_md(const cu_prov_ctx *pc, cu_hash h);
cu_hash cu_prov_hash_from_name(const cu_prov_ctx *pc, const char *name);
const char *cu_prov_hash_name(cu_hash h);

/* True if the string starts with "pkcs11:" (case-insensitive scheme). */
bool cu_prov_is_pkcs11_uri(const char *uri);

/* The percent-decoded value of a path attribute of a pkcs11: URI (e.g.
 * "object", "id") into a new buffer (caller frees with OPENSSL_free; *_len
 * without the terminating NUL that is added). 0 if absent or malformed. */
int cu_prov_uri_attr(const char *uri, const char *attr, char **_val, size_t *_len);
/* The same for a query attribute (e.g. "module-path"). */
int cu_prov_uri_query(const char *uri, const char *attr, char **_val, size_t *_len);

/* Splits a pin-value out of a URI, so that no PIN reaches a message: *_clean
 * is the URI without it (caller frees with OPENSSL_free), *_pin its decoded
 * value or NULL (caller frees with OPENSSL_clear_free(p, strlen(p))). */
int cu_prov_uri_split_pin(const char *uri, char **_clean, char **_pin);

/* Opens (or finds in the cache) the token the URI names and returns a new
 * reference. pin, if not NULL, overrides the URI's and the configured PIN
 * source. Errors are left in cu_err_last(). */
cu_rc cu_prov_token(cu_prov_ctx *pc, const char *uri, const char *pin, cu_token **_tok);


/* Finds the one object of class cls the URI names, opening its token, and
 * keeps it for the provider's lifetime (borrowed: do not free). For keys used
 * again and again by short-lived contexts (MAC keys). */
cu_rc cu_prov_cached_object(cu_prov_ctx *pc, const char *uri, const char *pin, cu_class cls, cu_object **_obj);

#endif
