/* Key derivation and sealing: PBKDF2-HMAC-SHA256 for PIN keys, AES-256-GCM
 * for everything at rest. Plaintext buffers handed out are wiped on free. */
#include "soft.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

CK_RV cs_random(void *buf, size_t len)
{
    return RAND_bytes(buf, (int)len) == 1 ? CKR_OK : CKR_FUNCTION_FAILED;
}

CK_RV cs_pbkdf2(const unsigned char *pin, size_t pin_len, const unsigned char *salt,
                uint32_t iterations, unsigned char key[CS_KEY_LEN])
{
    if (PKCS5_PBKDF2_HMAC((const char *)pin, (int)pin_len, salt, CS_SALT_LEN, (int)iterations,
                          EVP_sha256(), CS_KEY_LEN, key) != 1)
        return CKR_FUNCTION_FAILED;
    return CKR_OK;
}

CK_RV cs_seal(const unsigned char key[CS_KEY_LEN], uint32_t generation, const void *aad,
              size_t aad_len, const void *pt, size_t pt_len, cs_sealed *out)
{
    CK_RV rv = CKR_FUNCTION_FAILED;
    EVP_CIPHER_CTX *c = NULL;
    int n = 0;

    memset(out, 0, sizeof *out);
    out->generation = generation;
    out->ct = OPENSSL_malloc(pt_len ? pt_len : 1);
    if (out->ct == NULL)
        return CKR_HOST_MEMORY;
    out->ct_len = pt_len;
    if (cs_random(out->nonce, sizeof out->nonce) != CKR_OK)
        goto cleanup;
    c = EVP_CIPHER_CTX_new();
    if (c == NULL)
        goto cleanup;
    if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, CS_NONCE_LEN, NULL) != 1 ||
        EVP_EncryptInit_ex(c, NULL, NULL, key, out->nonce) != 1)
        goto cleanup;
    if (aad_len > 0 && EVP_EncryptUpdate(c, NULL, &n, aad, (int)aad_len) != 1)
        goto cleanup;
    if (pt_len > 0 && EVP_EncryptUpdate(c, out->ct, &n, pt, (int)pt_len) != 1)
        goto cleanup;
    if (EVP_EncryptFinal_ex(c, out->ct + n, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, CS_TAG_LEN, out->tag) != 1)
        goto cleanup;
    rv = CKR_OK;
cleanup:
    EVP_CIPHER_CTX_free(c);
    if (rv != CKR_OK)
        cs_sealed_clear(out);
    return rv;
}

CK_RV cs_open(const unsigned char key[CS_KEY_LEN], const void *aad, size_t aad_len,
              const cs_sealed *s, unsigned char **_pt, size_t *_pt_len)
{
    CK_RV rv = CKR_FUNCTION_FAILED;
    EVP_CIPHER_CTX *c = NULL;
    unsigned char *pt = NULL;
    int n = 0, n2 = 0;

    pt = OPENSSL_malloc(s->ct_len ? s->ct_len : 1);
    if (pt == NULL)
        return CKR_HOST_MEMORY;
    c = EVP_CIPHER_CTX_new();
    if (c == NULL)
        goto cleanup;
    if (EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, CS_NONCE_LEN, NULL) != 1 ||
        EVP_DecryptInit_ex(c, NULL, NULL, key, s->nonce) != 1)
        goto cleanup;
    if (aad_len > 0 && EVP_DecryptUpdate(c, NULL, &n, aad, (int)aad_len) != 1)
        goto cleanup;
    n = 0;
    if (s->ct_len > 0 && EVP_DecryptUpdate(c, pt, &n, s->ct, (int)s->ct_len) != 1)
        goto cleanup;
    if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, CS_TAG_LEN, (void *)s->tag) != 1)
        goto cleanup;
    if (EVP_DecryptFinal_ex(c, pt + n, &n2) != 1) {
        rv = CKR_ENCRYPTED_DATA_INVALID; /* wrong key, or tampered data */
        goto cleanup;
    }
    *_pt = pt;
    *_pt_len = s->ct_len;
    pt = NULL;
    rv = CKR_OK;
cleanup:
    EVP_CIPHER_CTX_free(c);
    OPENSSL_clear_free(pt, s->ct_len ? s->ct_len : 1);
    return rv;
}

void cs_sealed_clear(cs_sealed *s)
{
    OPENSSL_free(s->ct);
    memset(s, 0, sizeof *s);
}

CK_RV cs_sealed_copy(cs_sealed *dst, const cs_sealed *src)
{
    *dst = *src;
    dst->ct = OPENSSL_malloc(src->ct_len ? src->ct_len : 1);
    if (dst->ct == NULL) {
        memset(dst, 0, sizeof *dst);
        return CKR_HOST_MEMORY;
    }
    if (src->ct_len)
        memcpy(dst->ct, src->ct, src->ct_len);
    return CKR_OK;
}
