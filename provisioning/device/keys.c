/* Device keys: the TLS client key (file or pkcs11: URI through the
 * provider's OSSL_STORE) and the SAS signature (HMAC in software from a key
 * file, or in the token through the provider's EVP_MAC). */
#include "dev_int.h"

#include <custos/keyring.h>
#include <custos/sas.h>

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* HMAC-SHA256 with a token key: the provider's MAC, keyed by URI (the
 * same path as the service's keyring). */
static cu_rc token_hmac(const char *uri, const char *provider_path, const void *data, size_t len, uint8_t out[32])
{
    cu_keyring *kr = NULL;
    cu_rc rc = cu_keyring_provider_load(provider_path);
    if (rc == CU_OK)
        rc = cu_keyring_evp_mac_new(NULL, "provider=custos", uri, &kr);
    if (rc == CU_OK)
        rc = cu_keyring_mac(kr, data, len, out);
    cu_keyring_free(kr);
    return rc;
}

static cu_rc read_key_file(const char *path, uint8_t **_key, size_t *_len)
{
    char buf[512];
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return cu_err_set_sys(CU_E_IO, errno, "cannot open key file %s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *s = buf;
    while (isspace((unsigned char)*s))
        s++;
    size_t l = strcspn(s, " \t\r\n");
    s[l] = 0;
    cu_rc rc = cu_sas_key_decode(s, _key, _len);
    OPENSSL_cleanse(buf, sizeof buf);
    if (rc != CU_OK)
        return cu_err_set(rc, "%s: not a base64 key of 16..64 bytes", path);
    return CU_OK;
}

/* The C SDK's URL encoder: keeps A-Z a-z 0-9 ! ( ) * - . _, lower-case hex. */
static char *urlenc(const char *s)
{
    static const char HEX[] = "0123456789abcdef";
    char *o = malloc(strlen(s) * 3 + 1), *p = o;
    if (o == NULL)
        return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || strchr("!()*-._", c) != NULL) {
            *p++ = (char)c;
        } else {
            *p++ = '%';
            *p++ = HEX[c >> 4];
            *p++ = HEX[c & 15];
        }
    }
    *p = 0;
    return o;
}

cu_rc cu_dev_sas_token(const cu_dev_config *cfg, const char *regid, uint64_t expiry, char **_token)
{
    uint8_t *key = NULL, derived[32], mac[32];
    size_t klen = 0;
    char *res = NULL, *sr = NULL, *msg = NULL, *sig = NULL, b64[64];
    cu_rc rc = CU_OK;
    bool in_token = cfg->symkey_uri != NULL;

    size_t rl = strlen(cfg->id_scope) + strlen(regid) + 32;
    if ((res = malloc(rl)) == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    snprintf(res, rl, "%s/registrations/%s", cfg->id_scope, regid);
    if ((sr = urlenc(res)) == NULL || (msg = malloc(strlen(sr) + 32)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    snprintf(msg, strlen(sr) + 32, "%s\n%llu", sr, (unsigned long long)expiry);
    if (!in_token && (rc = read_key_file(cfg->key_file, &key, &klen)) != CU_OK)
        goto cleanup;
    if (cfg->group) {
        /* deviceKey = HMAC(groupKey, registrationId) (PROTOCOL.md §2.3). */
        if (in_token)
            rc = token_hmac(cfg->symkey_uri, cfg->provider_path, regid, strlen(regid), derived);
        else
            rc = cu_sas_derive_key(key, klen, regid, derived);
        if (rc != CU_OK)
            goto cleanup;
        if (key != NULL)
            cu_sas_key_free(key, klen);
        if ((key = OPENSSL_malloc(33)) == NULL) { /* cu_sas_key_free wipes len + 1 */
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
        memcpy(key, derived, 32);
        klen = 32;
        in_token = false;
    }
    if (in_token) {
        rc = token_hmac(cfg->symkey_uri, cfg->provider_path, msg, strlen(msg), mac);
    } else {
        unsigned ml = 0;
        if (HMAC(EVP_sha256(), key, (int)klen, (const unsigned char *)msg, strlen(msg), mac, &ml) == NULL)
            rc = cu_err_set(CU_E_CRYPTO, "HMAC failed");
    }
    if (rc != CU_OK)
        goto cleanup;
    EVP_EncodeBlock((unsigned char *)b64, mac, 32);
    if ((sig = urlenc(b64)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    size_t tl = strlen(sr) + strlen(sig) + 96;
    if ((*_token = malloc(tl)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    snprintf(*_token, tl, "SharedAccessSignature sr=%s&sig=%s&se=%llu&skn=registration", sr, sig,
             (unsigned long long)expiry);
cleanup:
    if (key != NULL)
        cu_sas_key_free(key, klen);
    OPENSSL_cleanse(derived, sizeof derived);
    OPENSSL_cleanse(mac, sizeof mac);
    free(res);
    free(sr);
    free(msg);
    free(sig);
    return rc;
}
