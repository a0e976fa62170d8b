/* The store's keyring with its key in a token: HMAC-SHA256 through the
 * Custos provider's MAC, keyed by pkcs11: URI, so the key never leaves the
 * token. The provider registers the MAC as "CUSTOS-HMAC" (an "HMAC" of
 * provider=custos is tried too); the seal is plain HMAC-SHA256 either way,
 * so a store sealed through one name opens through the other. */
#include "srv_int.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <stdlib.h>
#include <string.h>

typedef struct tok_mac {
    EVP_MAC_CTX *tmpl; /* initialised with the key URI; duplicated per MAC */
} tok_mac;

static cu_rc tok_mac_fn(void *ctx, const uint8_t *data, size_t len, uint8_t out[32])
{
    tok_mac *t = ctx;
    size_t ol = 0;
    EVP_MAC_CTX *c = EVP_MAC_CTX_dup(t->tmpl);
    cu_rc rc = CU_OK;
    if (c == NULL || !EVP_MAC_update(c, data, len) || !EVP_MAC_final(c, out, &ol, 32) || ol != 32) {
        char buf[200];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        ERR_clear_error();
        rc = cu_err_set(CU_E_CRYPTO, "keyring HMAC in the token failed: %s", buf);
    }
    EVP_MAC_CTX_free(c);
    return rc;
}

static void tok_free(void *ctx)
{
    tok_mac *t = ctx;
    if (t != NULL)
        EVP_MAC_CTX_free(t->tmpl);
    free(t);
}

static const cu_keyring_ops TOKEN_OPS = {"token (custos provider)", tok_mac_fn, tok_free};

cu_rc cu_srv__keyring_token_new(const char *uri, cu_keyring **_out)
{
    tok_mac *t = calloc(1, sizeof *t);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "CUSTOS-HMAC", NULL);
    if (mac == NULL)
        mac = EVP_MAC_fetch(NULL, "HMAC", "provider=custos");
    ERR_clear_error();
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("key-uri", (char *)uri, 0),
                           OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, "SHA256", 0),
                           OSSL_PARAM_construct_end()};
    cu_rc rc = CU_OK;
    if (t == NULL || mac == NULL || (t->tmpl = EVP_MAC_CTX_new(mac)) == NULL ||
        !EVP_MAC_init(t->tmpl, NULL, 0, params)) {
        char buf[200] = "no MAC CUSTOS-HMAC (is the custos provider loaded?)";
        if (mac != NULL)
            ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        ERR_clear_error();
        rc = cu_err_set(CU_E_CRYPTO, "keyring key %s: %s", uri, buf);
    }
    EVP_MAC_free(mac);
    if (rc == CU_OK) {
        rc = cu_keyring_new(&TOKEN_OPS, t, _out);
        if (rc == CU_OK)
            return CU_OK;
    }
    tok_free(t);
    return rc;
}
