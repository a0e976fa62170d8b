/* The keyring: seals and wraps through one MAC. */
#include <custos/keyring.h>

#include "prov_int.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct cu_keyring {
    const cu_keyring_ops *ops;
    void *ctx;
    /* The wrap key is derived once and cached: one token round-trip, not one
     * per enrollment. */
    pthread_mutex_t lock;
    int have_wrap_key;
    uint8_t wrap_key[32];
    void (*use)(void *ctx, cu_keyring_use what, const char *aad); /* observer, or NULL */
    void *use_ctx;
};

static const char WRAP_LABEL[] = "custos keyring wrap key v1";
static const char WRAP_PREFIX[] = "cw1:";

cu_rc cu_keyring_new(const cu_keyring_ops *ops, void *ctx, cu_keyring **_out)
{
    cu_prov__return_val_if_fail(ops != NULL && ops->mac != NULL && _out != NULL, CU_E_INVALID_ARG);
    cu_keyring *kr = calloc(1, sizeof *kr);
    if (kr == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    kr->ops = ops;
    kr->ctx = ctx;
    pthread_mutex_init(&kr->lock, NULL);
    *_out = kr;
    return CU_OK;
}

void cu_keyring_free(cu_keyring *kr)
{
    if (kr == NULL)
        return;
    if (kr->ops->free != NULL)
        kr->ops->free(kr->ctx);
    pthread_mutex_destroy(&kr->lock);
    OPENSSL_cleanse(kr->wrap_key, sizeof kr->wrap_key);
    free(kr);
}

const char *cu_keyring_name(const cu_keyring *kr)
{
    return kr ? kr->ops->name : NULL;
}

void cu_keyring_set_observer(cu_keyring *kr, void (*use)(void *ctx, cu_keyring_use what, const char *aad),
                             void *ctx)
{
    if (kr == NULL)
        return;
    kr->use = use;
    kr->use_ctx = ctx;
}

cu_rc cu_keyring_mac(cu_keyring *kr, const uint8_t *data, size_t len, uint8_t out[32])
{
    cu_prov__return_val_if_fail(kr != NULL && (data != NULL || len == 0) && out != NULL, CU_E_INVALID_ARG);
    if (kr->use != NULL)
        kr->use(kr->use_ctx, CU_KEYRING_USE_MAC, NULL);
    return kr->ops->mac(kr->ctx, data, len, out);
}

cu_rc cu_keyring_seal(cu_keyring *kr, const char *domain, const uint8_t *data, size_t len,
                      uint8_t out[32])
{
    cu_prov__return_val_if_fail(kr != NULL && domain != NULL && (data != NULL || len == 0), CU_E_INVALID_ARG);
    size_t dl = strlen(domain);
    uint8_t *buf = malloc(dl + 1 + len);
    if (buf == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    memcpy(buf, domain, dl);
    buf[dl] = 0;
    if (len)
        memcpy(buf + dl + 1, data, len);
    cu_rc rc = cu_keyring_mac(kr, buf, dl + 1 + len, out);
    free(buf);
    return rc;
}

cu_rc cu_keyring_seal_check(cu_keyring *kr, const char *domain, const uint8_t *data,
                            size_t len, const uint8_t seal[32])
{
    uint8_t mac[32];
    cu_rc rc = cu_keyring_seal(kr, domain, data, len, mac);
    if (rc == CU_OK && CRYPTO_memcmp(mac, seal, 32) != 0)
        rc = cu_err_set(CU_E_VERIFY, "the seal of a %s row does not verify: the row was changed "
                                     "outside Custos or under another service key", domain);
    OPENSSL_cleanse(mac, sizeof mac);
    return rc;
}

static cu_rc wrap_key(cu_keyring *kr, uint8_t key[32])
{
    cu_rc rc = CU_OK;
    pthread_mutex_lock(&kr->lock);
    if (!kr->have_wrap_key) {
        rc = cu_keyring_mac(kr, (const uint8_t *)WRAP_LABEL, sizeof WRAP_LABEL - 1, kr->wrap_key);
        kr->have_wrap_key = rc == CU_OK;
    }
    if (rc == CU_OK)
        memcpy(key, kr->wrap_key, 32);
    pthread_mutex_unlock(&kr->lock);
    return rc;
}

cu_rc cu_keyring_wrap(cu_keyring *kr, const uint8_t *secret, size_t len, const char *aad,
                      char **_out)
{
    cu_prov__return_val_if_fail(kr != NULL && secret != NULL && aad != NULL && _out != NULL &&
                               len <= 4096, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    EVP_CIPHER_CTX *c = NULL;
    uint8_t key[32], *buf = NULL;
    char *b64 = NULL;
    int n = 0;
    size_t blen = 12 + len + 16;

    *_out = NULL;
    if ((rc = wrap_key(kr, key)) != CU_OK)
        goto cleanup;
    if (kr->use != NULL)
        kr->use(kr->use_ctx, CU_KEYRING_USE_WRAP, aad);
    if ((buf = malloc(blen)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if (RAND_bytes(buf, 12) != 1 || (c = EVP_CIPHER_CTX_new()) == NULL ||
        EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, buf) != 1 ||
        EVP_EncryptUpdate(c, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) != 1 ||
        EVP_EncryptUpdate(c, buf + 12, &n, secret, (int)len) != 1 ||
        EVP_EncryptFinal_ex(c, buf + 12 + n, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, buf + 12 + len) != 1) {
        rc = cu_err_set(CU_E_CRYPTO, "AES-256-GCM wrap failed");
        goto cleanup;
    }
    if ((b64 = cu_prov__b64_encode(buf, blen)) == NULL ||
        (*_out = malloc(strlen(b64) + sizeof WRAP_PREFIX)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    strcpy(*_out, WRAP_PREFIX);
    strcat(*_out, b64);
cleanup:
    OPENSSL_cleanse(key, sizeof key);
    EVP_CIPHER_CTX_free(c);
    free(buf);
    free(b64);
    return rc;
}

cu_rc cu_keyring_unwrap(cu_keyring *kr, const char *wrapped, const char *aad, uint8_t **_out,
                        size_t *_len)
{
    cu_prov__return_val_if_fail(kr != NULL && wrapped != NULL && aad != NULL && _out != NULL &&
                               _len != NULL, CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    EVP_CIPHER_CTX *c = NULL;
    uint8_t key[32], *raw = NULL, *pt = NULL;
    size_t rawlen = 0, ptlen = 0;
    int n = 0;

    *_out = NULL;
    *_len = 0;
    if (strncmp(wrapped, WRAP_PREFIX, sizeof WRAP_PREFIX - 1) != 0) {
        rc = cu_err_set(CU_E_VERIFY, "a stored secret is not wrapped (expected '%s')", WRAP_PREFIX);
        goto cleanup;
    }
    wrapped += sizeof WRAP_PREFIX - 1;
    if ((rc = cu_prov__b64_decode(wrapped, strlen(wrapped), &raw, &rawlen)) != CU_OK ||
        rawlen < 12 + 16 + 1) {
        rc = cu_err_set(CU_E_VERIFY, "a wrapped secret is malformed");
        goto cleanup;
    }
    ptlen = rawlen - 28;
    if ((rc = wrap_key(kr, key)) != CU_OK)
        goto cleanup;
    if (kr->use != NULL)
        kr->use(kr->use_ctx, CU_KEYRING_USE_UNWRAP, aad);
    if ((pt = OPENSSL_malloc(ptlen + 1)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if ((c = EVP_CIPHER_CTX_new()) == NULL ||
        EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, raw) != 1 ||
        EVP_DecryptUpdate(c, NULL, &n, (const uint8_t *)aad, (int)strlen(aad)) != 1 ||
        EVP_DecryptUpdate(c, pt, &n, raw + 12, (int)ptlen) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16, raw + 12 + ptlen) != 1 ||
        EVP_DecryptFinal_ex(c, pt + n, &n) != 1) {
        rc = cu_err_set(CU_E_VERIFY, "a wrapped secret does not unwrap (tampered, moved to another "
                                     "row, or another service key)");
        goto cleanup;
    }
    pt[ptlen] = 0;
    *_out = pt;
    *_len = ptlen;
    pt = NULL;
cleanup:
    OPENSSL_cleanse(key, sizeof key);
    EVP_CIPHER_CTX_free(c);
    if (raw != NULL)
        OPENSSL_clear_free(raw, rawlen + 1);
    if (pt != NULL)
        OPENSSL_clear_free(pt, ptlen + 1);
    return rc;
}

void cu_keyring_secret_free(uint8_t *secret, size_t len)
{
    if (secret != NULL)
        OPENSSL_clear_free(secret, len + 1);
}

/* ---- EVP_MAC keyrings (software and provider-backed) ---- */

typedef struct mac_ctx {
    EVP_MAC *mac;
    EVP_MAC_CTX *tmpl; /* keyed once; duplicated per call (thread safety) */
} mac_ctx;

static cu_rc evp_mac(void *vctx, const uint8_t *data, size_t len, uint8_t out[32])
{
    mac_ctx *m = vctx;
    size_t olen = 0;
    EVP_MAC_CTX *c = EVP_MAC_CTX_dup(m->tmpl);
    cu_rc rc = CU_OK;
    if (c == NULL || EVP_MAC_init(c, NULL, 0, NULL) != 1 || EVP_MAC_update(c, data, len) != 1 ||
        EVP_MAC_final(c, out, &olen, 32) != 1 || olen != 32)
        rc = cu_err_set(CU_E_CRYPTO, "keyring HMAC failed");
    EVP_MAC_CTX_free(c);
    return rc;
}

static void evp_mac_free(void *vctx)
{
    mac_ctx *m = vctx;
    if (m == NULL)
        return;
    EVP_MAC_CTX_free(m->tmpl);
    EVP_MAC_free(m->mac);
    free(m);
}

static const cu_keyring_ops software_ops = {"software (key in memory; tests only)", evp_mac, evp_mac_free};
static const cu_keyring_ops provider_ops = {"token (EVP_MAC via provider)", evp_mac, evp_mac_free};

static cu_rc mac_keyring(OSSL_LIB_CTX *libctx, const char *propq, const uint8_t *key, size_t klen,
                         const char *key_uri, const cu_keyring_ops *ops, cu_keyring **_out)
{
    cu_rc rc = CU_OK;
    mac_ctx *m = calloc(1, sizeof *m);
    OSSL_PARAM params[3];
    int np = 0;

    if (m == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    params[np++] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    if (key_uri != NULL)
        params[np++] = OSSL_PARAM_construct_utf8_string("key-uri", (char *)key_uri, 0);
    params[np] = OSSL_PARAM_construct_end();
    /* A token key is the provider's own MAC; a key in memory, plain HMAC. */
    const char *name = key_uri != NULL ? "CUSTOS-HMAC" : "HMAC";
    if ((m->mac = EVP_MAC_fetch(libctx, name, propq)) == NULL || (m->tmpl = EVP_MAC_CTX_new(m->mac)) == NULL) {
        ERR_clear_error();
        rc = cu_err_set(CU_E_CRYPTO, "cannot fetch the MAC %s%s%s%s", name, propq ? " with " : "",
                        propq ? propq : "", key_uri ? " (is the custos provider loaded?)" : "");
        goto cleanup;
    }
    /* A provider-held key is named, not passed: init with no key bytes. */
    if (EVP_MAC_init(m->tmpl, key, klen, params) != 1) {
        char buf[256] = "";
        ERR_error_string_n(ERR_peek_last_error(), buf, sizeof buf);
        ERR_clear_error();
        rc = cu_err_set(CU_E_CRYPTO, "cannot key the keyring HMAC%s%s: %s", key_uri ? " with " : "",
                        key_uri ? key_uri : "", buf);
        goto cleanup;
    }
    rc = cu_keyring_new(ops, m, _out);
    if (rc == CU_OK)
        m = NULL;
cleanup:
    evp_mac_free(m);
    return rc;
}

cu_rc cu_keyring_software_new(const uint8_t *key, size_t len, cu_keyring **_out)
{
    cu_prov__return_val_if_fail(key != NULL && len >= 16 && _out != NULL, CU_E_INVALID_ARG);
    return mac_keyring(NULL, "provider=default", key, len, NULL, &software_ops, _out);
}

cu_rc cu_keyring_evp_mac_new(void *libctx, const char *propq, const char *key_uri,
                             cu_keyring **_out)
{
    cu_prov__return_val_if_fail(key_uri != NULL && _out != NULL, CU_E_INVALID_ARG);
    return mac_keyring(libctx, propq, NULL, 0, key_uri, &provider_ops, _out);
}
