/* The authenticationKey blob (PROTOCOL.md §3.3, §3.4): MakeCredential to the
 * EK and an HMAC key duplicated to the SRK under an inner wrapper whose key
 * is the credential. Follows TPM 2.0 Part 1 §24 (credential protection) and
 * §23.3 (duplication: inner and outer wrappers). */
#include "internal.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#define INNER_KEY_LEN 16 /* AES-128 inner wrapper; the credential */
#define ID_KEY_ATTRS (CU_TPMA_SIGN | CU_TPMA_USER_WITH_AUTH | CU_TPMA_NO_DA) /* 0x00040440 */

static size_t md_len(uint16_t alg)
{
    const EVP_MD *md = cu_tpmsvc__md(alg);
    return md ? (size_t)EVP_MD_get_size(md) : 0;
}

/* Protection of a sensitive blob with a seed (credential or outer
 * wrapper): out = TPM2B(HMAC) || AES-CFB(KDFa STORAGE key, in). */
static cu_rc outer_wrap(const cu_tpmsvc_pub *protector, const uint8_t *seed, size_t seed_len,
                        const uint8_t *name, size_t name_len, const uint8_t *in, size_t in_len,
                        cu_tpmsvc_wr *w)
{
    uint16_t alg = protector->name_alg;
    size_t hlen = md_len(alg);
    uint8_t sym[32], hkey[EVP_MAX_MD_SIZE], mac[EVP_MAX_MD_SIZE];
    uint8_t *enc = malloc(in_len ? in_len : 1);
    cu_rc rc = CU_OK;
    if (enc == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    if ((rc = cu_tpmsvc_kdfa(alg, seed, seed_len, "STORAGE", name, name_len, NULL, 0,
                             protector->sym_bits, sym)) ||
        (rc = cu_tpmsvc__aes_cfb(sym, protector->sym_bits, true, in, in_len, enc)) ||
        (rc = cu_tpmsvc_kdfa(alg, seed, seed_len, "INTEGRITY", NULL, 0, NULL, 0, (unsigned)hlen * 8,
                             hkey)) ||
        (rc = cu_tpmsvc__hmac2(alg, hkey, hlen, enc, in_len, name, name_len, mac, NULL)))
        goto cleanup;
    cu_tpmsvc__wr_u16(w, (uint16_t)(2 + hlen + in_len));
    cu_tpmsvc__wr_2b(w, mac, hlen);
    cu_tpmsvc__wr_bytes(w, enc, in_len);
    if (w->fail)
        rc = cu_err_set(CU_E_INVALID_ARG, "TPM wrapper: output does not fit");
cleanup:
    OPENSSL_cleanse(sym, sizeof sym);
    OPENSSL_cleanse(hkey, sizeof hkey);
    OPENSSL_clear_free(enc, in_len ? in_len : 1);
    return rc;
}

static cu_rc check_protector(const cu_tpmsvc_pub *p, const char *who)
{
    if (p == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "no %s", who);
    if ((p->type != CU_TPM_ALG_RSA && p->type != CU_TPM_ALG_ECC) || p->sym_alg != CU_TPM_ALG_AES ||
        p->sym_mode != CU_TPM_ALG_CFB || md_len(p->name_alg) == 0)
        return cu_err_set(CU_E_KEY_TYPE,
                          "%s: not an RSA/ECC storage key with an AES-CFB symmetric definition",
                          who);
    return CU_OK;
}

cu_rc cu_tpmsvc_make_credential(const cu_tpmsvc_pub *ek, const uint8_t *name, size_t name_len,
                                const uint8_t *credential, size_t credential_len,
                                const cu_tpmsvc_blob_opts *opts, uint8_t **_id_object,
                                size_t *_id_object_len, uint8_t **_enc_secret,
                                size_t *_enc_secret_len)
{
    cu_rc rc = CU_OK;
    uint8_t seed[EVP_MAX_MD_SIZE], plain[2 + EVP_MAX_MD_SIZE];
    size_t seed_len = 0;
    uint8_t *idobj = NULL, *enc = NULL;
    size_t enc_len = 0;

    if (_id_object == NULL || _id_object_len == NULL || _enc_secret == NULL ||
        _enc_secret_len == NULL || name == NULL || name_len == 0 || credential == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_make_credential: NULL argument");
    *_id_object = *_enc_secret = NULL;
    if ((rc = check_protector(ek, "endorsement key")) != CU_OK)
        return rc;
    size_t hlen = md_len(ek->name_alg);
    if (credential_len == 0 || credential_len > hlen)
        return cu_err_set(CU_E_INVALID_ARG, "credential of %zu bytes (1..%zu)", credential_len,
                          hlen);
    if ((rc = cu_tpmsvc_share_secret(ek, "IDENTITY", opts, seed, &seed_len, &enc, &enc_len)) !=
        CU_OK)
        goto cleanup;
    /* The credential as a TPM2B_DIGEST. */
    plain[0] = (uint8_t)(credential_len >> 8);
    plain[1] = (uint8_t)credential_len;
    memcpy(plain + 2, credential, credential_len);
    size_t cap = 2 + 2 + hlen + 2 + credential_len;
    if ((idobj = malloc(cap)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    cu_tpmsvc_wr w = {.p = idobj, .cap = cap};
    if ((rc = outer_wrap(ek, seed, seed_len, name, name_len, plain, 2 + credential_len, &w)))
        goto cleanup;
    *_id_object = idobj;
    *_id_object_len = w.len;
    *_enc_secret = enc;
    *_enc_secret_len = enc_len;
    idobj = enc = NULL;
cleanup:
    OPENSSL_cleanse(seed, sizeof seed);
    OPENSSL_cleanse(plain, sizeof plain);
    free(idobj);
    free(enc);
    return rc;
}

/* The HMAC key as a KEYEDHASH object: its TPM2B_PUBLIC and TPM2B_SENSITIVE. */
static cu_rc key_object(const uint8_t *key, size_t key_len, const uint8_t seed_value[32],
                        uint8_t *pub, size_t *_pub_len, uint8_t *sens, size_t *_sens_len)
{
    uint8_t unique[32];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, seed_value, 32) == 1 &&
             EVP_DigestUpdate(ctx, key, key_len) == 1 && EVP_DigestFinal_ex(ctx, unique, NULL) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return cu_err_set(CU_E_CRYPTO, "SHA-256 failed");

    cu_tpmsvc_wr w = {.p = pub, .cap = *_pub_len};
    cu_tpmsvc__wr_u16(&w, 0); /* size, patched below */
    cu_tpmsvc__wr_u16(&w, CU_TPM_ALG_KEYEDHASH);
    cu_tpmsvc__wr_u16(&w, CU_TPM_ALG_SHA256);
    cu_tpmsvc__wr_u32(&w, ID_KEY_ATTRS);
    cu_tpmsvc__wr_u16(&w, 0); /* authPolicy: empty */
    cu_tpmsvc__wr_u16(&w, CU_TPM_ALG_HMAC);
    cu_tpmsvc__wr_u16(&w, CU_TPM_ALG_SHA256);
    cu_tpmsvc__wr_2b(&w, unique, sizeof unique);
    if (w.fail)
        return cu_err_set(CU_E_INVALID_ARG, "key public area does not fit");
    pub[0] = (uint8_t)((w.len - 2) >> 8);
    pub[1] = (uint8_t)(w.len - 2);
    *_pub_len = w.len;

    cu_tpmsvc_wr s = {.p = sens, .cap = *_sens_len};
    cu_tpmsvc__wr_u16(&s, 0); /* size, patched below */
    cu_tpmsvc__wr_u16(&s, CU_TPM_ALG_KEYEDHASH);
    cu_tpmsvc__wr_2b(&s, NULL, 0); /* authValue: empty */
    cu_tpmsvc__wr_2b(&s, seed_value, 32);
    cu_tpmsvc__wr_2b(&s, key, key_len);
    if (s.fail)
        return cu_err_set(CU_E_INVALID_ARG, "key sensitive area does not fit");
    sens[0] = (uint8_t)((s.len - 2) >> 8);
    sens[1] = (uint8_t)(s.len - 2);
    *_sens_len = s.len;
    return CU_OK;
}

cu_rc cu_tpmsvc_blob_build(const cu_tpmsvc_pub *ek, const cu_tpmsvc_pub *srk, const uint8_t *key,
                           size_t key_len, const cu_tpmsvc_blob_opts *opts, uint8_t **_blob,
                           size_t *_blob_len)
{
    cu_rc rc = CU_OK;
    uint8_t seed_value[32], w_key[INNER_KEY_LEN], seed[EVP_MAX_MD_SIZE];
    uint8_t pub[128], sens[2 + 2 + 2 + 2 + 32 + 2 + CU_TPM_KEY_MAX];
    uint8_t plain[2 + 32 + sizeof sens], inner[sizeof plain];
    uint8_t obj_name[CU_TPM_NAME_MAX], srk_name[CU_TPM_NAME_MAX];
    size_t pub_len = sizeof pub, sens_len = sizeof sens, obj_name_len = 0, srk_name_len = 0;
    size_t seed_len = 0, idobj_len = 0, encsec_len = 0, symseed_len = 0;
    uint8_t *idobj = NULL, *encsec = NULL, *symseed = NULL, *blob = NULL, *dup = NULL;

    if (_blob == NULL || _blob_len == NULL || key == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_blob_build: NULL argument");
    *_blob = NULL;
    *_blob_len = 0;
    if (key_len == 0 || key_len > CU_TPM_KEY_MAX)
        return cu_err_set(CU_E_INVALID_ARG, "HMAC key of %zu bytes (1..%d)", key_len,
                          CU_TPM_KEY_MAX);
    if ((rc = cu_tpmsvc_pub_check(ek, CU_TPM_ROLE_EK)) != CU_OK ||
        (rc = cu_tpmsvc_pub_check(srk, CU_TPM_ROLE_SRK)) != CU_OK)
        return rc;

    /* 1. the key object, its Name; 2. the inner wrapper key W. */
    if ((rc = cu_tpmsvc__random(opts, seed_value, sizeof seed_value)) ||
        (rc = cu_tpmsvc__random(opts, w_key, sizeof w_key)) ||
        (rc = key_object(key, key_len, seed_value, pub, &pub_len, sens, &sens_len)))
        goto cleanup;
    cu_tpmsvc_pub *obj = NULL;
    if ((rc = cu_tpmsvc_pub_parse(pub, pub_len, &obj)) != CU_OK)
        goto cleanup;
    rc = cu_tpmsvc_pub_name(obj, obj_name, &obj_name_len);
    cu_tpmsvc_pub_free(obj);
    if (rc != CU_OK || (rc = cu_tpmsvc_pub_name(srk, srk_name, &srk_name_len)) != CU_OK)
        goto cleanup;

    /* 3. the credential W to the EK, bound to the SRK's Name. */
    if ((rc = cu_tpmsvc_make_credential(ek, srk_name, srk_name_len, w_key, sizeof w_key, opts,
                                        &idobj, &idobj_len, &encsec, &encsec_len)) != CU_OK)
        goto cleanup;

    /* 4. inner wrapper: TPM2B(H(sensitive || Name)) || sensitive, AES-CFB(W). */
    unsigned dlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 &&
             EVP_DigestUpdate(ctx, sens, sens_len) == 1 &&
             EVP_DigestUpdate(ctx, obj_name, obj_name_len) == 1 &&
             EVP_DigestFinal_ex(ctx, plain + 2, &dlen) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok) {
        rc = cu_err_set(CU_E_CRYPTO, "inner integrity: SHA-256 failed");
        goto cleanup;
    }
    plain[0] = 0;
    plain[1] = (uint8_t)dlen;
    memcpy(plain + 2 + dlen, sens, sens_len);
    size_t plain_len = 2 + dlen + sens_len;
    if ((rc = cu_tpmsvc__aes_cfb(w_key, 8 * INNER_KEY_LEN, true, plain, plain_len, inner)) != CU_OK)
        goto cleanup;

    /* 5. outer wrapper to the SRK. */
    if ((rc = cu_tpmsvc_share_secret(srk, "DUPLICATE", opts, seed, &seed_len, &symseed,
                                     &symseed_len)) != CU_OK)
        goto cleanup;
    size_t dup_cap = 2 + 2 + EVP_MAX_MD_SIZE + plain_len;
    if ((dup = malloc(dup_cap)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    cu_tpmsvc_wr dw = {.p = dup, .cap = dup_cap};
    if ((rc = outer_wrap(srk, seed, seed_len, obj_name, obj_name_len, inner, plain_len, &dw)))
        goto cleanup;

    /* 6. the six fields; encUriData empty. */
    size_t cap = idobj_len + encsec_len + dw.len + symseed_len + pub_len + 2;
    if ((blob = malloc(cap)) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
    cu_tpmsvc_wr bw = {.p = blob, .cap = cap};
    cu_tpmsvc__wr_bytes(&bw, idobj, idobj_len);
    cu_tpmsvc__wr_bytes(&bw, encsec, encsec_len);
    cu_tpmsvc__wr_bytes(&bw, dup, dw.len);
    cu_tpmsvc__wr_bytes(&bw, symseed, symseed_len);
    cu_tpmsvc__wr_bytes(&bw, pub, pub_len);
    cu_tpmsvc__wr_u16(&bw, 0);
    if (bw.fail) {
        rc = cu_err_set(CU_E_INVALID_ARG, "blob does not fit");
        goto cleanup;
    }
    *_blob = blob;
    *_blob_len = bw.len;
    blob = NULL;
cleanup:
    OPENSSL_cleanse(seed_value, sizeof seed_value);
    OPENSSL_cleanse(w_key, sizeof w_key);
    OPENSSL_cleanse(seed, sizeof seed);
    OPENSSL_cleanse(sens, sizeof sens);
    OPENSSL_cleanse(plain, sizeof plain);
    free(idobj);
    free(encsec);
    free(symseed);
    free(dup);
    free(blob);
    return rc;
}

cu_rc cu_tpmsvc_blob_build_b64(const cu_tpmsvc_pub *ek, const cu_tpmsvc_pub *srk,
                               const uint8_t *key, size_t key_len, const cu_tpmsvc_blob_opts *opts,
                               char **_b64)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    if (_b64 == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_blob_build_b64: no output");
    *_b64 = NULL;
    cu_rc rc = cu_tpmsvc_blob_build(ek, srk, key, key_len, opts, &blob, &len);
    if (rc != CU_OK)
        return rc;
    if ((*_b64 = cu_tpmsvc__b64_encode(blob, len)) == NULL)
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    free(blob);
    return rc;
}

cu_rc cu_tpmsvc_blob_split(const uint8_t *blob, size_t len, cu_tpmsvc_blob_fields *_f)
{
    static const char *const names[6] = {"credential blob", "encrypted secret", "duplicate",
                                         "encrypted seed",  "key public area",  "encUriData"};
    const uint8_t **ptr[6];
    size_t *lens[6];
    if (blob == NULL || _f == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_blob_split: NULL argument");
    memset(_f, 0, sizeof *_f);
    ptr[0] = &_f->id_object, lens[0] = &_f->id_object_len;
    ptr[1] = &_f->enc_secret, lens[1] = &_f->enc_secret_len;
    ptr[2] = &_f->dup_private, lens[2] = &_f->dup_private_len;
    ptr[3] = &_f->sym_seed, lens[3] = &_f->sym_seed_len;
    ptr[4] = &_f->key_public, lens[4] = &_f->key_public_len;
    ptr[5] = &_f->uri_data, lens[5] = &_f->uri_data_len;
    cu_tpmsvc_rd r = {.p = blob, .len = len};
    for (int i = 0; i < 6; i++) {
        size_t start = r.off, n = 0;
        (void)cu_tpmsvc__rd_2b(&r, &n, names[i]);
        if (r.fail)
            return cu_err_set(CU_E_INVALID_ARG,
                              "authenticationKey: field %d (%s) is missing or short at offset %zu",
                              i + 1, names[i], start);
        if (i < 5 && n == 0)
            return cu_err_set(CU_E_INVALID_ARG, "authenticationKey: field %d (%s) is empty", i + 1,
                              names[i]);
        *ptr[i] = blob + start;
        *lens[i] = r.off - start;
    }
    if (r.off != len)
        return cu_err_set(CU_E_INVALID_ARG, "authenticationKey: %zu trailing bytes", len - r.off);
    return CU_OK;
}

cu_rc cu_tpmsvc_challenge_new(const char *ek_b64, const char *srk_b64,
                              const cu_tpmsvc_blob_opts *opts, uint8_t key[CU_TPM_ID_KEY_LEN],
                              char **_blob_b64)
{
    cu_rc rc = CU_OK;
    cu_tpmsvc_pub *ek = NULL, *srk = NULL;
    if (key == NULL || _blob_b64 == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "cu_tpmsvc_challenge_new: NULL argument");
    *_blob_b64 = NULL;
    if ((rc = cu_tpmsvc_pub_parse_b64(ek_b64, &ek)) != CU_OK) {
        rc = cu_err_wrap(rc, "tpm.endorsementKey");
        goto cleanup;
    }
    if ((rc = cu_tpmsvc_pub_parse_b64(srk_b64, &srk)) != CU_OK) {
        rc = cu_err_wrap(rc, "tpm.storageRootKey");
        goto cleanup;
    }
    if ((rc = cu_tpmsvc__random(opts, key, CU_TPM_ID_KEY_LEN)) != CU_OK ||
        (rc = cu_tpmsvc_blob_build_b64(ek, srk, key, CU_TPM_ID_KEY_LEN, opts, _blob_b64)) != CU_OK)
        OPENSSL_cleanse(key, CU_TPM_ID_KEY_LEN);
cleanup:
    cu_tpmsvc_pub_free(ek);
    cu_tpmsvc_pub_free(srk);
    return rc;
}
