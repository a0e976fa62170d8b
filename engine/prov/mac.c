/* EVP_MAC "CUSTOS-HMAC": HMAC-SHA256 with a secret key that stays in a token.
 *
 * The key is named by the settable parameter "key-uri" (a pkcs11: URI), or
 * by passing that URI as the key bytes of EVP_MAC_init; raw key bytes are
 * refused. The provisioning engine signs SAS tokens with it:
 *
 *   EVP_MAC *mac = EVP_MAC_fetch(libctx, "CUSTOS-HMAC", "provider=custos");
 *   EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
 *   OSSL_PARAM p[] = { OSSL_PARAM_utf8_string("key-uri", uri, 0), OSSL_PARAM_END };
 *   EVP_MAC_init(ctx, NULL, 0, p); EVP_MAC_update(ctx, msg, len);
 *   EVP_MAC_final(ctx, out, &outlen, sizeof out);
 *
 * Input up to 64 KiB is collected and MACed in one C_SignInit + C_Sign;
 * longer input streams through C_SignUpdate. The key object is looked up
 * once per provider and URI. */
#include "provider.h"

#include "implementations.h"

#include <openssl/core_names.h>
#include <openssl/params.h>
#include <string.h>

#define KEY_URI_PARAM "key-uri"
#define HMAC_SIZE 32
#define HMAC_BLOCK 64
#define BUFFER_MAX (64 * 1024)

typedef struct mac_ctx {
    cu_prov_ctx *pc;
    cu_object *key;   /* borrowed from the provider's object cache */
    uint8_t *buf;
    size_t len, cap;
    cu_sign_op *op;   /* streaming once the input outgrows buf */
    bool started;
} mac_ctx;

static const cu_sig hmac_sha256 = { CU_SIG_HMAC, CU_HASH_SHA256, CU_HASH_NONE, 0 };

static OSSL_FUNC_mac_newctx_fn mac_newctx;
static OSSL_FUNC_mac_dupctx_fn mac_dupctx;
static OSSL_FUNC_mac_freectx_fn mac_freectx;
static OSSL_FUNC_mac_init_fn mac_init;
static OSSL_FUNC_mac_update_fn mac_update;
static OSSL_FUNC_mac_final_fn mac_final;
static OSSL_FUNC_mac_gettable_params_fn mac_gettable_params;
static OSSL_FUNC_mac_get_params_fn mac_get_params;
static OSSL_FUNC_mac_gettable_ctx_params_fn mac_gettable_ctx_params;
static OSSL_FUNC_mac_get_ctx_params_fn mac_get_ctx_params;
static OSSL_FUNC_mac_settable_ctx_params_fn mac_settable_ctx_params;
static OSSL_FUNC_mac_set_ctx_params_fn mac_set_ctx_params;

static void *mac_newctx(void *provctx)
{
    mac_ctx *m = OPENSSL_zalloc(sizeof *m);
    if (m != NULL)
        m->pc = provctx;
    return m;
}

static void reset(mac_ctx *m)
{
    cu_sign_op_free(m->op);
    m->op = NULL;
    if (m->buf != NULL)
        OPENSSL_cleanse(m->buf, m->len);
    m->len = 0;
    m->started = false;
}

static void mac_freectx(void *vctx)
{
    mac_ctx *m = vctx;
    if (m == NULL)
        return;
    reset(m);
    OPENSSL_free(m->buf);
    OPENSSL_free(m);
}

static void *mac_dupctx(void *vctx)
{
    mac_ctx *m = vctx;
    if (m->op != NULL) {
        CU_PROV_RAISE(m->pc, CU_E_UNSUPPORTED, "a streaming token MAC cannot be duplicated");
        return NULL;
    }
    mac_ctx *d = OPENSSL_memdup(m, sizeof *m);
    if (d == NULL)
        return NULL;
    d->buf = NULL;
    d->cap = 0;
    if (m->len > 0 && (d->buf = OPENSSL_memdup(m->buf, m->len)) == NULL) {
        OPENSSL_free(d);
        return NULL;
    }
    d->cap = m->len;
    return d;
}

static int set_key_uri(mac_ctx *m, const char *uri)
{
    cu_object *obj = NULL;
    char *clean = NULL, *pin = NULL;
    if (!cu_prov_is_pkcs11_uri(uri)) {
        CU_PROV_RAISE(m->pc, CU_PROV_R_NOT_A_PKCS11_URI, "%s must be a pkcs11: URI", KEY_URI_PARAM);
        return 0;
    }
    if (!cu_prov_uri_split_pin(uri, &clean, &pin))
        return 0;
    cu_rc rc = cu_prov_cached_object(m->pc, clean, pin, CU_CLASS_SECRET_KEY, &obj);
    OPENSSL_free(clean);
    if (pin != NULL)
        OPENSSL_clear_free(pin, strlen(pin));
    if (rc != CU_OK)
        return CU_PROV_RAISE_RC(m->pc, rc, "finding the HMAC key");
    if (cu_object_key_type(obj) != CU_KEY_HMAC) {
        CU_PROV_RAISE(m->pc, CU_E_KEY_TYPE, "the key is a %s key, not an HMAC key",
                      cu_key_type_str(cu_object_key_type(obj)));
        return 0;
    }
    m->key = obj;
    return 1;
}

static int mac_set_ctx_params(void *vctx, const OSSL_PARAM params[])
{
    mac_ctx *m = vctx;
    const OSSL_PARAM *p;
    const char *s = NULL;
    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, KEY_URI_PARAM)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s) || !set_key_uri(m, s))
            return 0;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_MAC_PARAM_DIGEST)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s)
            || cu_prov_hash_from_name(m->pc, s) != CU_HASH_SHA256) {
            CU_PROV_RAISE(m->pc, CU_E_MECHANISM, "CUSTOS-HMAC is HMAC-SHA256 only");
            return 0;
        }
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_MAC_PARAM_KEY)) != NULL) {
        CU_PROV_RAISE(m->pc, CU_PROV_R_RAW_KEY, "CUSTOS-HMAC takes no key bytes; set %s", KEY_URI_PARAM);
        return 0;
    }
    return 1;
}

static int mac_init(void *vctx, const unsigned char *key, size_t keylen, const OSSL_PARAM params[])
{
    mac_ctx *m = vctx;
    reset(m);
    if (!mac_set_ctx_params(m, params))
        return 0;
    if (key != NULL && keylen > 0) {
        /* The key "bytes" may be the URI itself (openssl mac -macopt key:pkcs11:...). */
        char uri[2048];
        if (keylen >= sizeof uri || keylen < 7 || memchr(key, 0, keylen) != NULL) {
            CU_PROV_RAISE(m->pc, CU_PROV_R_RAW_KEY, "CUSTOS-HMAC takes no key bytes; set %s", KEY_URI_PARAM);
            return 0;
        }
        memcpy(uri, key, keylen);
        uri[keylen] = '\0';
        if (!cu_prov_is_pkcs11_uri(uri)) {
            CU_PROV_RAISE(m->pc, CU_PROV_R_RAW_KEY, "CUSTOS-HMAC takes no key bytes; set %s", KEY_URI_PARAM);
            return 0;
        }
        if (!set_key_uri(m, uri))
            return 0;
    }
    if (m->key == NULL) {
        CU_PROV_RAISE(m->pc, CU_PROV_R_NO_KEY_URI, "set %s to the pkcs11: URI of the HMAC key", KEY_URI_PARAM);
        return 0;
    }
    m->started = true;
    return 1;
}

static int mac_update(void *vctx, const unsigned char *in, size_t inl)
{
    mac_ctx *m = vctx;
    cu_rc rc;
    if (!m->started) {
        CU_PROV_RAISE(m->pc, CU_PROV_R_OPERATION, "MAC not initialized");
        return 0;
    }
    if (m->op == NULL && m->len + inl <= BUFFER_MAX) {
        if (m->len + inl > m->cap) {
            size_t cap = m->cap ? m->cap : 256;
            while (cap < m->len + inl)
                cap *= 2;
            uint8_t *b = OPENSSL_clear_realloc(m->buf, m->cap, cap);
            if (b == NULL)
                return 0;
            m->buf = b;
            m->cap = cap;
        }
        memcpy(m->buf + m->len, in, inl);
        m->len += inl;
        return 1;
    }
    if (m->op == NULL) {
        if ((rc = cu_sign_init(m->key, &hmac_sha256, &m->op)) != CU_OK)
            return CU_PROV_RAISE_RC(m->pc, rc, "starting the token HMAC");
        if (m->len > 0 && (rc = cu_sign_update(m->op, m->buf, m->len)) != CU_OK)
            return CU_PROV_RAISE_RC(m->pc, rc, "token HMAC");
        OPENSSL_cleanse(m->buf, m->len);
        m->len = 0;
    }
    if ((rc = cu_sign_update(m->op, in, inl)) != CU_OK)
        return CU_PROV_RAISE_RC(m->pc, rc, "token HMAC");
    return 1;
}

static int mac_final(void *vctx, unsigned char *out, size_t *outl, size_t outsize)
{
    mac_ctx *m = vctx;
    cu_rc rc;
    size_t len = outsize;
    if (!m->started) {
        CU_PROV_RAISE(m->pc, CU_PROV_R_OPERATION, "MAC not initialized");
        return 0;
    }
    if (outsize < HMAC_SIZE) {
        CU_PROV_RAISE(m->pc, CU_E_BUFFER_TOO_SMALL, "MAC buffer of %zu bytes, 32 needed", outsize);
        return 0;
    }
    if (m->op != NULL) {
        rc = cu_sign_final(m->op, out, &len);
        cu_sign_op_free(m->op);
        m->op = NULL;
    } else {
        rc = cu_sign(m->key, &hmac_sha256, m->buf != NULL ? m->buf : (const uint8_t *)"", m->len, out, &len);
    }
    m->started = false;
    if (m->buf != NULL)
        OPENSSL_cleanse(m->buf, m->len);
    m->len = 0;
    if (rc != CU_OK)
        return CU_PROV_RAISE_RC(m->pc, rc, "token HMAC");
    *outl = len;
    return 1;
}

static const OSSL_PARAM *mac_gettable_params(void *provctx)
{
    (void)provctx;
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_size_t(OSSL_MAC_PARAM_SIZE, NULL),
        OSSL_PARAM_size_t(OSSL_MAC_PARAM_BLOCK_SIZE, NULL),
        OSSL_PARAM_END,
    };
    return p;
}

static int get_sizes(OSSL_PARAM params[])
{
    OSSL_PARAM *p;
    if ((p = OSSL_PARAM_locate(params, OSSL_MAC_PARAM_SIZE)) != NULL && !OSSL_PARAM_set_size_t(p, HMAC_SIZE))
        return 0;
    if ((p = OSSL_PARAM_locate(params, OSSL_MAC_PARAM_BLOCK_SIZE)) != NULL
        && !OSSL_PARAM_set_size_t(p, HMAC_BLOCK))
        return 0;
    return 1;
}

static int mac_get_params(OSSL_PARAM params[])
{
    return get_sizes(params);
}

static const OSSL_PARAM *mac_gettable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx;
    return mac_gettable_params(provctx);
}

static int mac_get_ctx_params(void *vctx, OSSL_PARAM params[])
{
    (void)vctx;
    return get_sizes(params);
}

static const OSSL_PARAM *mac_settable_ctx_params(void *vctx, void *provctx)
{
    (void)vctx;
    (void)provctx;
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_utf8_string(KEY_URI_PARAM, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_MAC_PARAM_DIGEST, NULL, 0),
        OSSL_PARAM_END,
    };
    return p;
}

const OSSL_DISPATCH cu_prov_hmac_mac_functions[] = {
    { OSSL_FUNC_MAC_NEWCTX, (void (*)(void))mac_newctx },
    { OSSL_FUNC_MAC_DUPCTX, (void (*)(void))mac_dupctx },
    { OSSL_FUNC_MAC_FREECTX, (void (*)(void))mac_freectx },
    { OSSL_FUNC_MAC_INIT, (void (*)(void))mac_init },
    { OSSL_FUNC_MAC_UPDATE, (void (*)(void))mac_update },
    { OSSL_FUNC_MAC_FINAL, (void (*)(void))mac_final },
    { OSSL_FUNC_MAC_GETTABLE_PARAMS, (void (*)(void))mac_gettable_params },
    { OSSL_FUNC_MAC_GET_PARAMS, (void (*)(void))mac_get_params },
    { OSSL_FUNC_MAC_GETTABLE_CTX_PARAMS, (void (*)(void))mac_gettable_ctx_params },
    { OSSL_FUNC_MAC_GET_CTX_PARAMS, (void (*)(void))mac_get_ctx_params },
    { OSSL_FUNC_MAC_SETTABLE_CTX_PARAMS, (void (*)(void))mac_settable_ctx_params },
    { OSSL_FUNC_MAC_SET_CTX_PARAMS, (void (*)(void))mac_set_ctx_params },
    { 0, NULL },
};
