/* The TPM's key derivation functions and the small OpenSSL wrappers the
 * blob needs: KDFa, KDFe, AES-CFB with a zero IV, HMAC, base64. */
#include "internal.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const EVP_MD *cu_tpmsvc__md(uint16_t hash_alg)
{
    switch (hash_alg) {
    case CU_TPM_ALG_SHA1:
        return EVP_sha1();
    case CU_TPM_ALG_SHA256:
        return EVP_sha256();
    case CU_TPM_ALG_SHA384:
        return EVP_sha384();
    case CU_TPM_ALG_SHA512:
        return EVP_sha512();
    default:
        return NULL;
    }
}

cu_rc cu_tpmsvc__random(const cu_tpmsvc_blob_opts *opts, uint8_t *buf, size_t len)
{
    if (opts != NULL && opts->rng != NULL)
        return opts->rng(opts->rng_ctx, buf, len);
    if (len > 0 && RAND_priv_bytes(buf, (int)len) != 1)
        return cu_err_set(CU_E_CRYPTO, "OpenSSL RAND_priv_bytes failed");
    return CU_OK;
}

cu_rc cu_tpmsvc__aes_cfb(const uint8_t *key, unsigned key_bits, bool encrypt, const uint8_t *in,
                         size_t len, uint8_t *out)
{
    static const uint8_t iv[16];
    const EVP_CIPHER *c = key_bits == 128   ? EVP_aes_128_cfb128()
                          : key_bits == 192 ? EVP_aes_192_cfb128()
                          : key_bits == 256 ? EVP_aes_256_cfb128()
                                            : NULL;
    if (c == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "AES-%u is not supported", key_bits);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0;
    int ok = ctx != NULL && EVP_CipherInit_ex(ctx, c, NULL, key, iv, encrypt ? 1 : 0) == 1 &&
             EVP_CipherUpdate(ctx, out, &n1, in, (int)len) == 1 &&
             EVP_CipherFinal_ex(ctx, out + n1, &n2) == 1 && (size_t)(n1 + n2) == len;
    EVP_CIPHER_CTX_free(ctx);
    return ok ? CU_OK : cu_err_set(CU_E_CRYPTO, "AES-CFB failed");
}

cu_rc cu_tpmsvc__hmac2(uint16_t hash_alg, const uint8_t *key, size_t key_len, const uint8_t *a,
                       size_t a_len, const uint8_t *b, size_t b_len, uint8_t *out, size_t *_out_len)
{
    const EVP_MD *md = cu_tpmsvc__md(hash_alg);
    if (md == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "hash algorithm 0x%04x is not supported", hash_alg);
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)EVP_MD_get0_name(md), 0),
        OSSL_PARAM_construct_end()};
    size_t n = 0;
    int ok = ctx != NULL && EVP_MAC_init(ctx, key, key_len, params) == 1 &&
             EVP_MAC_update(ctx, a, a_len) == 1 &&
             (b_len == 0 || EVP_MAC_update(ctx, b, b_len) == 1) &&
             EVP_MAC_final(ctx, out, &n, (size_t)EVP_MD_get_size(md)) == 1;
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    if (!ok)
        return cu_err_set(CU_E_CRYPTO, "HMAC failed");
    if (_out_len != NULL)
        *_out_len = n;
    return CU_OK;
}

static void put_u32(uint8_t *b, uint32_t v)
{
    b[0] = (uint8_t)(v >> 24);
    b[1] = (uint8_t)(v >> 16);
    b[2] = (uint8_t)(v >> 8);
    b[3] = (uint8_t)v;
}

cu_rc cu_tpmsvc_kdfa(uint16_t hash_alg, const uint8_t *key, size_t key_len, const char *label,
                     const uint8_t *ctx_u, size_t ctx_u_len, const uint8_t *ctx_v, size_t ctx_v_len,
                     unsigned bits, uint8_t *out)
{
    const EVP_MD *md = cu_tpmsvc__md(hash_alg);
    if (md == NULL || label == NULL || out == NULL || bits == 0 || bits % 8 != 0 ||
        (key == NULL && key_len) || (ctx_u == NULL && ctx_u_len) || (ctx_v == NULL && ctx_v_len))
        return cu_err_set(CU_E_INVALID_ARG, "KDFa: bad argument");
    size_t hlen = (size_t)EVP_MD_get_size(md), want = bits / 8, done = 0;
    EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)EVP_MD_get0_name(md), 0),
        OSSL_PARAM_construct_end()};
    uint8_t block[EVP_MAX_MD_SIZE], counter[4], lbits[4];
    cu_rc rc = CU_OK;
    put_u32(lbits, bits);
    for (uint32_t i = 1; done < want; i++) {
        size_t n = 0;
        put_u32(counter, i);
        /* label including its terminating NUL */
        if (ctx == NULL || EVP_MAC_init(ctx, key, key_len, params) != 1 ||
            EVP_MAC_update(ctx, counter, 4) != 1 ||
            EVP_MAC_update(ctx, (const uint8_t *)label, strlen(label) + 1) != 1 ||
            (ctx_u_len && EVP_MAC_update(ctx, ctx_u, ctx_u_len) != 1) ||
            (ctx_v_len && EVP_MAC_update(ctx, ctx_v, ctx_v_len) != 1) ||
            EVP_MAC_update(ctx, lbits, 4) != 1 ||
            EVP_MAC_final(ctx, block, &n, sizeof block) != 1 || n != hlen) {
            rc = cu_err_set(CU_E_CRYPTO, "KDFa: HMAC failed");
            break;
        }
        size_t take = want - done < hlen ? want - done : hlen;
        memcpy(out + done, block, take);
        done += take;
    }
    OPENSSL_cleanse(block, sizeof block);
    EVP_MAC_CTX_free(ctx);
    EVP_MAC_free(mac);
    return rc;
}

cu_rc cu_tpmsvc_kdfe(uint16_t hash_alg, const uint8_t *z, size_t z_len, const char *label,
                     const uint8_t *party_u, size_t party_u_len, const uint8_t *party_v,
                     size_t party_v_len, unsigned bits, uint8_t *out)
{
    const EVP_MD *md = cu_tpmsvc__md(hash_alg);
    if (md == NULL || z == NULL || label == NULL || out == NULL || bits == 0 || bits % 8 != 0)
        return cu_err_set(CU_E_INVALID_ARG, "KDFe: bad argument");
    size_t hlen = (size_t)EVP_MD_get_size(md), want = bits / 8, done = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t block[EVP_MAX_MD_SIZE], counter[4];
    cu_rc rc = CU_OK;
    for (uint32_t i = 1; done < want; i++) {
        unsigned n = 0;
        put_u32(counter, i);
        if (ctx == NULL || EVP_DigestInit_ex(ctx, md, NULL) != 1 ||
            EVP_DigestUpdate(ctx, counter, 4) != 1 || EVP_DigestUpdate(ctx, z, z_len) != 1 ||
            EVP_DigestUpdate(ctx, label, strlen(label) + 1) != 1 ||
            (party_u_len && EVP_DigestUpdate(ctx, party_u, party_u_len) != 1) ||
            (party_v_len && EVP_DigestUpdate(ctx, party_v, party_v_len) != 1) ||
            EVP_DigestFinal_ex(ctx, block, &n) != 1 || n != hlen) {
            rc = cu_err_set(CU_E_CRYPTO, "KDFe: digest failed");
            break;
        }
        size_t take = want - done < hlen ? want - done : hlen;
        memcpy(out + done, block, take);
        done += take;
    }
    OPENSSL_cleanse(block, sizeof block);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* ---- base64 ---- */

cu_rc cu_tpmsvc__b64_decode(const char *s, uint8_t **_out, size_t *_len)
{
    size_t n = strlen(s);
    *_out = NULL;
    *_len = 0;
    if (n == 0 || n % 4 != 0)
        return cu_err_set(CU_E_INVALID_ARG, "not base64 (length %zu)", n);
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '+' || c == '/' ||
                  (c == '=' && i >= n - 2 && (i == n - 1 || s[n - 1] == '='));
        if (!ok)
            return cu_err_set(CU_E_INVALID_ARG, "not base64 (character %zu)", i);
    }
    uint8_t *out = malloc(n / 4 * 3 + 1);
    if (out == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    int got = EVP_DecodeBlock(out, (const unsigned char *)s, (int)n);
    if (got < 0) {
        free(out);
        return cu_err_set(CU_E_INVALID_ARG, "not base64");
    }
    size_t pad = (s[n - 1] == '=') + (s[n - 2] == '=');
    *_out = out;
    *_len = (size_t)got - pad;
    return CU_OK;
}

char *cu_tpmsvc__b64_encode(const uint8_t *data, size_t len)
{
    char *out = malloc((len + 2) / 3 * 4 + 1);
    if (out != NULL)
        EVP_EncodeBlock((unsigned char *)out, data, (int)len);
    return out;
}

