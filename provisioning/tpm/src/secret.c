/* Secret sharing with a TPM key (TPM 2.0 Part 1, Annex B.10 / C.6): a fresh
 * seed encrypted to an RSA key with OAEP (label + NUL), or agreed with an
 * ECC key through a one-pass ECDH and KDFe. The OAEP encoding is done here
 * (RFC 8017 §7.1.1) so that every random byte comes from the injectable
 * RNG: the known-answer tests depend on it. The RSA operation itself is
 * OpenSSL's (raw, no padding). */
#include "internal.h"

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>
#include <openssl/rsa.h>
#include <stdlib.h>
#include <string.h>

/* MGF1(seed) xor-ed into buf. */
static cu_rc mgf1_xor(const EVP_MD *md, const uint8_t *seed, size_t seed_len, uint8_t *buf,
                      size_t len)
{
    size_t hlen = (size_t)EVP_MD_get_size(md), done = 0;
    uint8_t t[EVP_MAX_MD_SIZE], c[4];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    cu_rc rc = CU_OK;
    for (uint32_t i = 0; done < len; i++) {
        c[0] = (uint8_t)(i >> 24);
        c[1] = (uint8_t)(i >> 16);
        c[2] = (uint8_t)(i >> 8);
        c[3] = (uint8_t)i;
        if (ctx == NULL || EVP_DigestInit_ex(ctx, md, NULL) != 1 ||
            EVP_DigestUpdate(ctx, seed, seed_len) != 1 || EVP_DigestUpdate(ctx, c, 4) != 1 ||
            EVP_DigestFinal_ex(ctx, t, NULL) != 1) {
            rc = cu_err_set(CU_E_CRYPTO, "MGF1: digest failed");
            break;
        }
        for (size_t j = 0; j < hlen && done < len; j++)
            buf[done++] ^= t[j];
    }
    EVP_MD_CTX_free(ctx);
    OPENSSL_cleanse(t, sizeof t);
    return rc;
}

static cu_rc rsa_share(const cu_tpmsvc_pub *to, const char *label, const cu_tpmsvc_blob_opts *opts,
                       uint8_t *seed, size_t *_seed_len, uint8_t **_enc, size_t *_enc_len)
{
    cu_rc rc = CU_OK;
    const EVP_MD *md = cu_tpmsvc__md(to->name_alg);
    size_t hlen = (size_t)EVP_MD_get_size(md), k = to->modulus_len;
    size_t slen = opts && opts->rsa_seed_len ? opts->rsa_seed_len : hlen;
    uint8_t *em = NULL, *enc = NULL;
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL;

    if (slen > hlen || k < 2 * hlen + 2 + slen)
        return cu_err_set(CU_E_INVALID_ARG, "RSA secret sharing: seed of %zu bytes does not fit",
                          slen);
    if ((rc = cu_tpmsvc__random(opts, seed, slen)) != CU_OK)
        return rc;
    em = calloc(1, k);
    enc = malloc(2 + k);
    if (em == NULL || enc == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    /* EM = 0x00 || maskedSeed (hLen) || maskedDB (k - hLen - 1);
     * DB = lHash || PS || 0x01 || M */
    uint8_t *oseed = em + 1, *db = em + 1 + hlen;
    size_t dblen = k - hlen - 1;
    if (!EVP_Digest(label, strlen(label) + 1, db, NULL, md, NULL)) {
        rc = cu_err_set(CU_E_CRYPTO, "OAEP: label digest failed");
        goto cleanup;
    }
    db[dblen - slen - 1] = 0x01;
    memcpy(db + dblen - slen, seed, slen);
    if ((rc = cu_tpmsvc__random(opts, oseed, hlen)) != CU_OK ||
        (rc = mgf1_xor(md, oseed, hlen, db, dblen)) != CU_OK ||
        (rc = mgf1_xor(md, db, dblen, oseed, hlen)) != CU_OK ||
        (rc = cu_tpmsvc__pub_pkey(to, &pkey)) != CU_OK)
        goto cleanup;
    size_t outlen = k;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (ctx == NULL || EVP_PKEY_encrypt_init(ctx) <= 0 ||
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_NO_PADDING) <= 0 ||
        EVP_PKEY_encrypt(ctx, enc + 2, &outlen, em, k) <= 0 || outlen != k) {
        rc = cu_err_set(CU_E_CRYPTO, "RSA encryption of the seed failed");
        goto cleanup;
    }
    enc[0] = (uint8_t)(k >> 8);
    enc[1] = (uint8_t)k;
    *_enc = enc;
    *_enc_len = 2 + k;
    *_seed_len = slen;
    enc = NULL;
cleanup:
    if (em != NULL)
        OPENSSL_clear_free(em, k);
    free(enc);
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(pkey);
    return rc;
}

static cu_rc ecc_share(const cu_tpmsvc_pub *to, const char *label, const cu_tpmsvc_blob_opts *opts,
                       uint8_t *seed, size_t *_seed_len, uint8_t **_enc, size_t *_enc_len)
{
    cu_rc rc = CU_OK;
    int nid = to->curve == CU_TPM_ECC_NIST_P256   ? NID_X9_62_prime256v1
              : to->curve == CU_TPM_ECC_NIST_P384 ? NID_secp384r1
                                                  : NID_undef;
    size_t fl = to->curve == CU_TPM_ECC_NIST_P256 ? 32 : 48;
    EC_GROUP *g = NULL;
    EC_POINT *qs = NULL, *qe = NULL, *zp = NULL;
    BIGNUM *d = NULL, *x = NULL, *y = NULL, *zx = NULL;
    BN_CTX *bn = NULL;
    uint8_t buf[48], ex[48], ey[48], z[48];
    uint8_t *enc = NULL;

    if (nid == NID_undef || to->x_len != fl || to->y_len != fl)
        return cu_err_set(CU_E_KEY_TYPE, "ECC secret sharing: unsupported curve 0x%04x", to->curve);
    if ((g = EC_GROUP_new_by_curve_name(nid)) == NULL || (bn = BN_CTX_new()) == NULL ||
        (qs = EC_POINT_new(g)) == NULL || (qe = EC_POINT_new(g)) == NULL ||
        (zp = EC_POINT_new(g)) == NULL || (d = BN_secure_new()) == NULL || (x = BN_new()) == NULL ||
        (y = BN_new()) == NULL || (zx = BN_new()) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    if (!BN_bin2bn(to->x, (int)fl, x) || !BN_bin2bn(to->y, (int)fl, y) ||
        !EC_POINT_set_affine_coordinates(g, qs, x, y, bn) || EC_POINT_is_on_curve(g, qs, bn) != 1) {
        rc =
            cu_err_set(CU_E_INVALID_ARG, "ECC secret sharing: the key's point is not on the curve");
        goto cleanup;
    }
    /* Ephemeral private key in [1, n-1], drawn from the RNG. */
    const BIGNUM *order = EC_GROUP_get0_order(g);
    for (int tries = 0;; tries++) {
        if (tries == 16) {
            rc = cu_err_set(CU_E_CRYPTO, "ECC secret sharing: the RNG gives no usable scalar");
            goto cleanup;
        }
        if ((rc = cu_tpmsvc__random(opts, buf, fl)) != CU_OK)
            goto cleanup;
        if (!BN_bin2bn(buf, (int)fl, d)) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            goto cleanup;
        }
        if (!BN_is_zero(d) && BN_cmp(d, order) < 0)
            break;
    }
    if (!EC_POINT_mul(g, qe, d, NULL, NULL, bn) || !EC_POINT_mul(g, zp, NULL, qs, d, bn) ||
        !EC_POINT_get_affine_coordinates(g, qe, x, y, bn) ||
        !EC_POINT_get_affine_coordinates(g, zp, zx, NULL, bn) || BN_bn2binpad(x, ex, (int)fl) < 0 ||
        BN_bn2binpad(y, ey, (int)fl) < 0 || BN_bn2binpad(zx, z, (int)fl) < 0) {
        rc = cu_err_set(CU_E_CRYPTO, "ECC secret sharing: ECDH failed");
        goto cleanup;
    }
    size_t slen = (size_t)EVP_MD_get_size(cu_tpmsvc__md(to->name_alg));
    if ((rc = cu_tpmsvc_kdfe(to->name_alg, z, fl, label, ex, fl, to->x, fl, (unsigned)slen * 8,
                             seed)) != CU_OK)
        goto cleanup;
    /* TPM2B_ENCRYPTED_SECRET holding a TPMS_ECC_POINT. */
    size_t n = 2 + fl + 2 + fl;
    if ((enc = malloc(2 + n)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    cu_tpmsvc_wr w = {.p = enc, .cap = 2 + n};
    cu_tpmsvc__wr_u16(&w, (uint16_t)n);
    cu_tpmsvc__wr_2b(&w, ex, fl);
    cu_tpmsvc__wr_2b(&w, ey, fl);
    *_enc = enc;
    *_enc_len = w.len;
    *_seed_len = slen;
    enc = NULL;
cleanup:
    OPENSSL_cleanse(buf, sizeof buf);
    OPENSSL_cleanse(z, sizeof z);
    free(enc);
    EC_POINT_free(qs);
    EC_POINT_free(qe);
    EC_POINT_clear_free(zp);
    BN_clear_free(d);
    BN_free(x);
    BN_free(y);
    BN_clear_free(zx);
    BN_CTX_free(bn);
    EC_GROUP_free(g);
    return rc;
}

cu_rc cu_tpmsvc_share_secret(const cu_tpmsvc_pub *to, const char *label,
                             const cu_tpmsvc_blob_opts *opts, uint8_t *seed, size_t *_seed_len,
                             uint8_t **_enc, size_t *_enc_len)
{
    if (to == NULL || label == NULL || seed == NULL || _seed_len == NULL || _enc == NULL ||
        _enc_len == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_share_secret: NULL argument");
    *_enc = NULL;
    *_enc_len = 0;
    if (to->type == CU_TPM_ALG_RSA && to->modulus_len > 0)
        return rsa_share(to, label, opts, seed, _seed_len, _enc, _enc_len);
    if (to->type == CU_TPM_ALG_ECC)
        return ecc_share(to, label, opts, seed, _seed_len, _enc, _enc_len);
    return cu_err_set(CU_E_KEY_TYPE, "secret sharing needs an RSA or ECC key");
}
