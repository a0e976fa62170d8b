/* Sign and verify. Every operation lives in its session (cs_op), so threads
 * on different sessions share nothing here; callers hold cs_g.lock shared.
 *
 * Speed: a session keeps its EVP_PKEY_CTX (or HMAC context) from one
 * operation to the next with the same key and mechanism, so a C_SignInit +
 * C_Sign pair on a hot key costs no allocation of contexts, no key lookup in
 * files, and no lock held exclusively. Hash-and-sign mechanisms hash here and
 * then use the same raw context. */
#include "soft.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>
#include <string.h>

void cs_op_reset(cs_op *op, bool keep_cache)
{
    op->kind = CS_OP_NONE;
    op->m = NULL;
    EVP_PKEY_free(op->pkey);
    op->pkey = NULL;
    op->update_called = false;
    if (!keep_cache) {
        EVP_PKEY_CTX_free(op->pctx);
        op->pctx = NULL;
        op->pctx_key = NULL;
        op->pctx_mech = 0;
        EVP_MAC_CTX_free(op->mac);
        op->mac = NULL;
        if (op->hkey != NULL)
            OPENSSL_clear_free(op->hkey, op->hkey_len);
        op->hkey = NULL;
        op->hkey_len = 0;
    }
}

void cs_op_free(cs_op *op)
{
    cs_op_reset(op, false);
    EVP_MD_CTX_free(op->mdctx);
    op->mdctx = NULL;
}

static const EVP_MD *md_for(CK_MECHANISM_TYPE t)
{
    switch (t) {
    case CKM_SHA_1: return EVP_sha1();
    case CKM_SHA224: return EVP_sha224();
    case CKM_SHA256: return EVP_sha256();
    case CKM_SHA384: return EVP_sha384();
    case CKM_SHA512: return EVP_sha512();
    default: return NULL;
    }
}

static const EVP_MD *mgf_for(CK_RSA_PKCS_MGF_TYPE t)
{
    switch (t) {
    case CKG_MGF1_SHA1: return EVP_sha1();
    case CKG_MGF1_SHA224: return EVP_sha224();
    case CKG_MGF1_SHA256: return EVP_sha256();
    case CKG_MGF1_SHA384: return EVP_sha384();
    case CKG_MGF1_SHA512: return EVP_sha512();
    default: return NULL;
    }
}

static const EVP_MD *md_by_name(const char *name)
{
    if (name == NULL)
        return NULL;
    if (strcmp(name, "SHA1") == 0) return EVP_sha1();
    if (strcmp(name, "SHA224") == 0) return EVP_sha224();
    if (strcmp(name, "SHA256") == 0) return EVP_sha256();
    if (strcmp(name, "SHA384") == 0) return EVP_sha384();
    if (strcmp(name, "SHA512") == 0) return EVP_sha512();
    return NULL;
}

static bool mech_allowed(const cs_object *key, CK_MECHANISM_TYPE t)
{
    const cs_attr *a = cs_attrs_get(&key->attrs, CKA_ALLOWED_MECHANISMS);
    if (a == NULL || a->len == 0)
        return true;
    for (size_t i = 0; i + sizeof(CK_MECHANISM_TYPE) <= a->len; i += sizeof(CK_MECHANISM_TYPE)) {
        CK_MECHANISM_TYPE m;
        memcpy(&m, a->val + i, sizeof m);
        if (m == t)
            return true;
    }
    return false;
}

/* (Re)creates the session's raw EVP_PKEY_CTX unless the cached one fits. */
static CK_RV setup_pctx(cs_op *op, EVP_PKEY *pkey, int kind)
{
    const cs_mech *m = op->m;
    CK_MECHANISM_TYPE cache_key = m->type | ((CK_MECHANISM_TYPE)kind << 60);
    if (op->pctx != NULL && op->pctx_key == pkey && op->pctx_mech == cache_key &&
        m->pad != RSA_PKCS1_PSS_PADDING)
        return CKR_OK;
    EVP_PKEY_CTX_free(op->pctx);
    op->pctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    op->pctx_key = NULL;
    if (op->pctx == NULL)
        return CKR_HOST_MEMORY;
    int ok = kind == CS_OP_SIGN ? EVP_PKEY_sign_init(op->pctx) : EVP_PKEY_verify_init(op->pctx);
    if (ok == 1 && m->key_type == CKK_RSA) {
        ok = EVP_PKEY_CTX_set_rsa_padding(op->pctx, m->pad);
        if (ok == 1 && m->pad == RSA_PKCS1_PSS_PADDING) {
            ok = EVP_PKEY_CTX_set_signature_md(op->pctx, op->pss_md) == 1 &&
                 EVP_PKEY_CTX_set_rsa_mgf1_md(op->pctx, op->pss_mgf) == 1 &&
                 EVP_PKEY_CTX_set_rsa_pss_saltlen(op->pctx, op->pss_salt) == 1;
        } else if (ok == 1 && m->md != NULL) {
            ok = EVP_PKEY_CTX_set_signature_md(op->pctx, md_by_name(m->md));
        }
    }
    if (ok != 1) {
        EVP_PKEY_CTX_free(op->pctx);
        op->pctx = NULL;
        return CKR_FUNCTION_FAILED;
    }
    op->pctx_key = pkey;
    op->pctx_mech = cache_key;
    return CKR_OK;
}

static CK_RV setup_hmac(cs_op *op, const cs_object *key)
{
    if (key->secret == NULL)
        return CKR_USER_NOT_LOGGED_IN;
    if (key->secret_len < op->m->info.ulMinKeySize || key->secret_len > op->m->info.ulMaxKeySize)
        return CKR_KEY_SIZE_RANGE;
    if (op->mac != NULL && op->hkey_len == key->secret_len &&
        op->pctx_mech == op->m->type &&
        CRYPTO_memcmp(op->hkey, key->secret, key->secret_len) == 0) {
        /* Same key: restart from the stored key state (no re-keying). */
        if (EVP_MAC_init(op->mac, NULL, 0, NULL) == 1)
            return CKR_OK;
    }
    EVP_MAC_CTX_free(op->mac);
    if (op->hkey != NULL)
        OPENSSL_clear_free(op->hkey, op->hkey_len);
    op->hkey = NULL;
    op->mac = EVP_MAC_CTX_new(cs_g.hmac);
    if (op->mac == NULL)
        return CKR_HOST_MEMORY;
    OSSL_PARAM p[2] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)op->m->md, 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_init(op->mac, key->secret, key->secret_len, p) != 1)
        return CKR_FUNCTION_FAILED;
    op->hkey = OPENSSL_memdup(key->secret, key->secret_len);
    if (op->hkey == NULL)
        return CKR_HOST_MEMORY;
    op->hkey_len = key->secret_len;
    op->pctx_mech = op->m->type;
    return CKR_OK;
}

CK_RV cs_sign_init(cs_session *s, const CK_MECHANISM *mech, cs_object *key, int kind)
{
    cs_op *op = &s->op;
    CK_RV rv;
    if (op->kind != CS_OP_NONE)
        return CKR_OPERATION_ACTIVE;
    const cs_mech *m = cs_mech_find(mech->mechanism);
    CK_FLAGS need = kind == CS_OP_SIGN ? CKF_SIGN : CKF_VERIFY;
    if (m == NULL || !(m->info.flags & need))
        return CKR_MECHANISM_INVALID;
    CK_OBJECT_CLASS cls = cs_attrs_ulong(&key->attrs, CKA_CLASS, (CK_ULONG)-1);
    CK_KEY_TYPE kt = cs_attrs_ulong(&key->attrs, CKA_KEY_TYPE, (CK_ULONG)-1);
    CK_OBJECT_CLASS want = m->key_type == CKK_GENERIC_SECRET
                               ? CKO_SECRET_KEY
                               : (kind == CS_OP_SIGN ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY);
    if (cls != want || kt != m->key_type)
        return CKR_KEY_TYPE_INCONSISTENT;
    if (!cs_attrs_bool(&key->attrs, kind == CS_OP_SIGN ? CKA_SIGN : CKA_VERIFY, CK_FALSE))
        return CKR_KEY_FUNCTION_NOT_PERMITTED;
    if (!mech_allowed(key, m->type))
        return CKR_MECHANISM_INVALID;
    /* A key asking for a context-specific login (made elsewhere: we refuse
     * to create one) cannot be honoured, so it does not sign. */
    if (kind == CS_OP_SIGN && cs_attrs_bool(&key->attrs, CKA_ALWAYS_AUTHENTICATE, CK_FALSE))
        return CKR_USER_NOT_LOGGED_IN;

    op->m = m;
    if (m->pad == RSA_PKCS1_PSS_PADDING) {
        if (mech->pParameter == NULL || mech->ulParameterLen != sizeof(CK_RSA_PKCS_PSS_PARAMS))
            return CKR_MECHANISM_PARAM_INVALID;
        CK_RSA_PKCS_PSS_PARAMS pp;
        memcpy(&pp, mech->pParameter, sizeof pp);
        op->pss_md = md_for(pp.hashAlg);
        op->pss_mgf = mgf_for(pp.mgf);
        if (op->pss_md == NULL || op->pss_mgf == NULL || pp.sLen > 1024 ||
            (m->md != NULL && op->pss_md != md_by_name(m->md)))
            return CKR_MECHANISM_PARAM_INVALID;
        op->pss_salt = (int)pp.sLen;
    } else if (mech->pParameter != NULL || mech->ulParameterLen != 0) {
        return CKR_MECHANISM_PARAM_INVALID;
    }

    if (m->key_type == CKK_GENERIC_SECRET) {
        if ((rv = setup_hmac(op, key)) != CKR_OK)
            return rv;
        op->sig_len = (size_t)EVP_MD_get_size(md_by_name(m->md));
    } else {
        if (key->pkey == NULL)
            return kind == CS_OP_SIGN ? CKR_USER_NOT_LOGGED_IN : CKR_KEY_TYPE_INCONSISTENT;
        int bits = EVP_PKEY_get_bits(key->pkey);
        if ((CK_ULONG)bits < m->info.ulMinKeySize || (CK_ULONG)bits > m->info.ulMaxKeySize)
            return CKR_KEY_SIZE_RANGE;
        if ((rv = setup_pctx(op, key->pkey, kind)) != CKR_OK)
            return rv;
        op->sig_len = m->key_type == CKK_EC ? 2 * (((size_t)bits + 7) / 8)
                                            : (size_t)EVP_PKEY_get_size(key->pkey);
        if (m->md != NULL) {
            if (op->mdctx == NULL && (op->mdctx = EVP_MD_CTX_new()) == NULL)
                return CKR_HOST_MEMORY;
            if (EVP_DigestInit_ex(op->mdctx, md_by_name(m->md), NULL) != 1)
                return CKR_FUNCTION_FAILED;
        }
        EVP_PKEY_up_ref(key->pkey);
        op->pkey = key->pkey;
    }
    op->update_called = false;
    op->kind = kind;
    return CKR_OK;
}

CK_RV cs_sign_update(cs_session *s, const unsigned char *data, size_t len, int kind)
{
    cs_op *op = &s->op;
    if (op->kind != kind)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (!op->m->multipart) {
        cs_op_reset(op, true);
        return CKR_FUNCTION_FAILED; /* raw mechanisms are single-part only */
    }
    int ok = op->mac != NULL && op->m->key_type == CKK_GENERIC_SECRET
                 ? EVP_MAC_update(op->mac, data, len)
                 : EVP_DigestUpdate(op->mdctx, data, len);
    if (ok != 1) {
        cs_op_reset(op, false);
        return CKR_FUNCTION_FAILED;
    }
    op->update_called = true;
    return CKR_OK;
}

/* Raw signature over `tbs` (a digest, or the data for CKM_RSA_PKCS). */
static CK_RV raw_sign(cs_op *op, const unsigned char *tbs, size_t tbs_len, unsigned char *sig,
                      CK_ULONG *sig_len)
{
    const cs_mech *m = op->m;
    if (m->key_type == CKK_RSA) {
        size_t k = op->sig_len;
        if (m->type == CKM_RSA_PKCS && tbs_len > k - 11)
            return CKR_DATA_LEN_RANGE;
        if (m->type == CKM_RSA_PKCS_PSS && tbs_len != (size_t)EVP_MD_get_size(op->pss_md))
            return CKR_DATA_LEN_RANGE;
        size_t out = k;
        if (EVP_PKEY_sign(op->pctx, sig, &out, tbs, tbs_len) != 1)
            return CKR_FUNCTION_FAILED;
        *sig_len = out;
        return CKR_OK;
    }
    /* ECDSA: OpenSSL gives DER, PKCS#11 wants r || s, each padded. */
    unsigned char der[160];
    size_t dl = sizeof der;
    if (tbs_len == 0)
        return CKR_DATA_LEN_RANGE;
    if (EVP_PKEY_sign(op->pctx, der, &dl, tbs, tbs_len) != 1)
        return CKR_FUNCTION_FAILED;
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dl);
    if (es == NULL)
        return CKR_FUNCTION_FAILED;
    size_t half = op->sig_len / 2;
    int ok = BN_bn2binpad(ECDSA_SIG_get0_r(es), sig, (int)half) == (int)half &&
             BN_bn2binpad(ECDSA_SIG_get0_s(es), sig + half, (int)half) == (int)half;
    ECDSA_SIG_free(es);
    if (!ok)
        return CKR_FUNCTION_FAILED;
    *sig_len = op->sig_len;
    return CKR_OK;
}

static CK_RV raw_verify(cs_op *op, const unsigned char *tbs, size_t tbs_len,
                        const unsigned char *sig, size_t sig_len)
{
    const cs_mech *m = op->m;
    if (sig_len != op->sig_len)
        return CKR_SIGNATURE_LEN_RANGE;
    if (m->key_type == CKK_RSA) {
        if (m->type == CKM_RSA_PKCS && tbs_len > op->sig_len - 11)
            return CKR_DATA_LEN_RANGE;
        if (m->type == CKM_RSA_PKCS_PSS && tbs_len != (size_t)EVP_MD_get_size(op->pss_md))
            return CKR_DATA_LEN_RANGE;
        return EVP_PKEY_verify(op->pctx, sig, sig_len, tbs, tbs_len) == 1 ? CKR_OK
                                                                           : CKR_SIGNATURE_INVALID;
    }
    size_t half = sig_len / 2;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, (int)half, NULL), *s = BN_bin2bn(sig + half, (int)half, NULL);
    unsigned char *der = NULL;
    CK_RV rv = CKR_HOST_MEMORY;
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        goto cleanup;
    }
    int dl = i2d_ECDSA_SIG(es, &der);
    if (dl <= 0)
        goto cleanup;
    rv = EVP_PKEY_verify(op->pctx, der, (size_t)dl, tbs, tbs_len) == 1 ? CKR_OK
                                                                       : CKR_SIGNATURE_INVALID;
cleanup:
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
    return rv;
}

/* Ends an operation unless the caller only asked for the size. */
static bool keeps_going(CK_RV rv, const unsigned char *sig)
{
    return rv == CKR_BUFFER_TOO_SMALL || (rv == CKR_OK && sig == NULL);
}

static CK_RV finish(cs_op *op, const unsigned char *digest, size_t dlen, unsigned char *sig,
                    CK_ULONG *sig_len)
{
    if (op->m->key_type == CKK_GENERIC_SECRET) {
        size_t out = *sig_len;
        return EVP_MAC_final(op->mac, sig, &out, *sig_len) == 1
                   ? (*sig_len = out, CKR_OK)
                   : CKR_FUNCTION_FAILED;
    }
    return raw_sign(op, digest, dlen, sig, sig_len);
}

CK_RV cs_sign_final(cs_session *s, unsigned char *sig, CK_ULONG *sig_len)
{
    cs_op *op = &s->op;
    CK_RV rv;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdl = 0;
    if (op->kind != CS_OP_SIGN)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (!op->m->multipart) {
        cs_op_reset(op, true);
        return CKR_FUNCTION_FAILED;
    }
    if (sig == NULL) {
        *sig_len = op->sig_len;
        return CKR_OK;
    }
    if (*sig_len < op->sig_len) {
        *sig_len = op->sig_len;
        return CKR_BUFFER_TOO_SMALL;
    }
    if (op->m->key_type != CKK_GENERIC_SECRET && EVP_DigestFinal_ex(op->mdctx, md, &mdl) != 1) {
        rv = CKR_FUNCTION_FAILED;
    } else {
        rv = finish(op, md, mdl, sig, sig_len);
    }
    OPENSSL_cleanse(md, sizeof md);
    cs_op_reset(op, rv == CKR_OK);
    return rv;
}

CK_RV cs_sign_oneshot(cs_session *s, const unsigned char *data, size_t len, unsigned char *sig,
                      CK_ULONG *sig_len)
{
    cs_op *op = &s->op;
    CK_RV rv;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdl = 0;
    if (op->kind != CS_OP_SIGN)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (op->update_called)
        return CKR_OPERATION_ACTIVE;
    if (sig == NULL) {
        *sig_len = op->sig_len;
        return CKR_OK;
    }
    if (*sig_len < op->sig_len) {
        *sig_len = op->sig_len;
        return CKR_BUFFER_TOO_SMALL;
    }
    if (op->m->key_type == CKK_GENERIC_SECRET) {
        rv = EVP_MAC_update(op->mac, data, len) == 1 ? finish(op, NULL, 0, sig, sig_len)
                                                    : CKR_FUNCTION_FAILED;
    } else if (op->m->md != NULL) {
        if (EVP_DigestUpdate(op->mdctx, data, len) != 1 ||
            EVP_DigestFinal_ex(op->mdctx, md, &mdl) != 1)
            rv = CKR_FUNCTION_FAILED;
        else
            rv = raw_sign(op, md, mdl, sig, sig_len);
    } else {
        rv = raw_sign(op, data, len, sig, sig_len);
    }
    OPENSSL_cleanse(md, sizeof md);
    if (!keeps_going(rv, sig))
        cs_op_reset(op, rv == CKR_OK);
    return rv;
}

static CK_RV verify_mac(cs_op *op, const unsigned char *sig, size_t sig_len)
{
    unsigned char mac[EVP_MAX_MD_SIZE];
    size_t ml = 0;
    if (sig_len != op->sig_len)
        return CKR_SIGNATURE_LEN_RANGE;
    if (EVP_MAC_final(op->mac, mac, &ml, sizeof mac) != 1)
        return CKR_FUNCTION_FAILED;
    CK_RV rv = (ml == sig_len && CRYPTO_memcmp(mac, sig, sig_len) == 0) ? CKR_OK
                                                                         : CKR_SIGNATURE_INVALID;
    OPENSSL_cleanse(mac, sizeof mac);
    return rv;
}

CK_RV cs_verify_final(cs_session *s, const unsigned char *sig, size_t sig_len)
{
    cs_op *op = &s->op;
    CK_RV rv;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdl = 0;
    if (op->kind != CS_OP_VERIFY)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (!op->m->multipart) {
        cs_op_reset(op, true);
        return CKR_FUNCTION_FAILED;
    }
    if (op->m->key_type == CKK_GENERIC_SECRET)
        rv = verify_mac(op, sig, sig_len);
    else if (EVP_DigestFinal_ex(op->mdctx, md, &mdl) != 1)
        rv = CKR_FUNCTION_FAILED;
    else
        rv = raw_verify(op, md, mdl, sig, sig_len);
    cs_op_reset(op, true);
    return rv;
}

CK_RV cs_verify_oneshot(cs_session *s, const unsigned char *data, size_t len,
                        const unsigned char *sig, size_t sig_len)
{
    cs_op *op = &s->op;
    CK_RV rv;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdl = 0;
    if (op->kind != CS_OP_VERIFY)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (op->update_called)
        return CKR_OPERATION_ACTIVE;
    if (op->m->key_type == CKK_GENERIC_SECRET) {
        rv = EVP_MAC_update(op->mac, data, len) == 1 ? verify_mac(op, sig, sig_len)
                                                    : CKR_FUNCTION_FAILED;
    } else if (op->m->md != NULL) {
        if (EVP_DigestUpdate(op->mdctx, data, len) != 1 ||
            EVP_DigestFinal_ex(op->mdctx, md, &mdl) != 1)
            rv = CKR_FUNCTION_FAILED;
        else
            rv = raw_verify(op, md, mdl, sig, sig_len);
    } else {
        rv = raw_verify(op, data, len, sig, sig_len);
    }
    cs_op_reset(op, true);
    return rv;
}
