/* A pending TPM challenge between the 401 and the second PUT: the identity
 * key wrapped by the service's keyring (custos/keyring.h: the key that
 * wraps it never leaves the service's token), bound to the id scope, the
 * registration id, the exact EK the device presented and an expiry. */
#include "internal.h"

#include <custos/keyring.h>

#include <ctype.h>
#include <inttypes.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFIX "tpmc1:"

/* aad = "custos tpm challenge v1|scope|regid|sha256(EK bytes)|expiry",
 * scope and registration id lower-cased (both are case-insensitive). */
static cu_rc make_aad(const char *id_scope, const char *registration_id, const char *ek_b64,
                      uint64_t expires, char **_aad)
{
    uint8_t *ek = NULL, h[32];
    size_t ek_len = 0;
    char hex[65];
    *_aad = NULL;
    cu_rc rc = cu_tpmsvc__b64_decode(ek_b64, &ek, &ek_len);
    if (rc != CU_OK)
        return cu_err_wrap(rc, "tpm.endorsementKey");
    int ok = EVP_Digest(ek, ek_len, h, NULL, EVP_sha256(), NULL);
    free(ek);
    if (!ok)
        return cu_err_set(CU_E_CRYPTO, "SHA-256 failed");
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", h[i]);
    size_t n = strlen(id_scope) + strlen(registration_id) + 128;
    char *aad = malloc(n);
    if (aad == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    snprintf(aad, n, "custos tpm challenge v1|%s|%s|%s|%" PRIu64, id_scope, registration_id, hex,
             expires);
    for (char *p = aad; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    *_aad = aad;
    return CU_OK;
}

static bool bad_id(const char *s)
{
    return s == NULL || *s == '\0' || strlen(s) > 128 || strchr(s, '|') != NULL;
}

cu_rc cu_tpmsvc_challenge_seal(cu_keyring *kr, const char *id_scope, const char *registration_id,
                               const char *ek_b64, uint64_t expires,
                               const uint8_t key[CU_TPM_ID_KEY_LEN], char **_sealed)
{
    char *aad = NULL, *wrapped = NULL;
    if (_sealed == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_challenge_seal: no output");
    *_sealed = NULL;
    if (kr == NULL || key == NULL || ek_b64 == NULL || bad_id(id_scope) || bad_id(registration_id))
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_challenge_seal: bad argument");
    cu_rc rc = make_aad(id_scope, registration_id, ek_b64, expires, &aad);
    if (rc == CU_OK)
        rc = cu_keyring_wrap(kr, key, CU_TPM_ID_KEY_LEN, aad, &wrapped);
    if (rc == CU_OK && asprintf(_sealed, PREFIX "%" PRIu64 ":%s", expires, wrapped) < 0) {
        *_sealed = NULL;
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    }
    free(aad);
    free(wrapped);
    return rc;
}

cu_rc cu_tpmsvc_challenge_open(cu_keyring *kr, const char *id_scope, const char *registration_id,
                               const char *ek_b64, time_t now, const char *sealed,
                               uint8_t key[CU_TPM_ID_KEY_LEN])
{
    char *aad = NULL, *end = NULL;
    uint8_t *k = NULL;
    size_t klen = 0;
    if (kr == NULL || key == NULL || ek_b64 == NULL || sealed == NULL || bad_id(id_scope) ||
        bad_id(registration_id))
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_challenge_open: bad argument");
    if (strncmp(sealed, PREFIX, sizeof PREFIX - 1) != 0)
        return cu_err_set(CU_E_INVALID_ARG, "pending TPM challenge: unknown format");
    const char *p = sealed + sizeof PREFIX - 1;
    if (*p < '0' || *p > '9')
        return cu_err_set(CU_E_INVALID_ARG, "pending TPM challenge: no expiry");
    unsigned long long expires = strtoull(p, &end, 10);
    if (end == NULL || *end != ':')
        return cu_err_set(CU_E_INVALID_ARG, "pending TPM challenge: no expiry");
    if (now == 0)
        now = time(NULL);
    if ((uint64_t)now >= expires)
        return cu_err_set(CU_E_VERIFY, "the TPM challenge expired %llu s ago: register again",
                          (unsigned long long)((uint64_t)now - expires));
    cu_rc rc = make_aad(id_scope, registration_id, ek_b64, expires, &aad);
    if (rc == CU_OK && (rc = cu_keyring_unwrap(kr, end + 1, aad, &k, &klen)) != CU_OK)
        rc = cu_err_wrap(CU_E_VERIFY, "pending TPM challenge: not for this device, "
                                              "registration or EK, or altered");
    if (rc == CU_OK && klen != CU_TPM_ID_KEY_LEN)
        rc = cu_err_set(CU_E_VERIFY, "pending TPM challenge: key of %zu bytes", klen);
    if (rc == CU_OK)
        memcpy(key, k, CU_TPM_ID_KEY_LEN);
    if (k != NULL)
        cu_keyring_secret_free(k, klen);
    free(aad);
    return rc;
}
