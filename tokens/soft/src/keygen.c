/* Key generation: EC P-256/P-384 and RSA 2048..4096 key pairs, generic
 * secrets (HMAC keys). Keys made here are CKA_LOCAL, and ALWAYS_SENSITIVE /
 * NEVER_EXTRACTABLE follow from the template's SENSITIVE / EXTRACTABLE. */
#include "soft.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/rsa.h>
#include <string.h>

/* Defaults + template + custody attributes, and the session's rights. */
static CK_RV build(cs_session *s, cs_object *o, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt,
                   const CK_ATTRIBUTE *t, CK_ULONG n, CK_MECHANISM_TYPE mech);

CK_RV cs_keygen_pair(cs_session *s, const CK_MECHANISM *m, const CK_ATTRIBUTE *pub,
                     CK_ULONG npub, const CK_ATTRIBUTE *priv, CK_ULONG npriv,
                     CK_OBJECT_HANDLE *_hpub, CK_OBJECT_HANDLE *_hpriv)
{
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    cs_object *po = NULL, *ko = NULL;
    unsigned char *sec = NULL;
    size_t sl = 0;
    CK_RV rv;
    CK_KEY_TYPE kt;

    if (m->pParameter != NULL || m->ulParameterLen != 0)
        return CKR_MECHANISM_PARAM_INVALID;
    if (m->mechanism == CKM_EC_KEY_PAIR_GEN)
        kt = CKK_EC;
    else if (m->mechanism == CKM_RSA_PKCS_KEY_PAIR_GEN)
        kt = CKK_RSA;
    else
        return CKR_MECHANISM_INVALID;

    po = cs_object_new();
    ko = cs_object_new();
    if (po == NULL || ko == NULL) {
        rv = CKR_HOST_MEMORY;
        goto fail;
    }
    if ((rv = build(s, po, CKO_PUBLIC_KEY, kt, pub, npub, m->mechanism)) != CKR_OK ||
        (rv = build(s, ko, CKO_PRIVATE_KEY, kt, priv, npriv, m->mechanism)) != CKR_OK)
        goto fail;

    if (kt == CKK_EC) {
        const char *group;
        const cs_attr *params = cs_attrs_get(&po->attrs, CKA_EC_PARAMS);
        if (params == NULL)
            params = cs_attrs_get(&ko->attrs, CKA_EC_PARAMS);
        if ((rv = cs_ec_params_to_group(params, &group)) != CKR_OK)
            goto fail;
        pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", group);
    } else {
        CK_ULONG bits = cs_attrs_ulong(&po->attrs, CKA_MODULUS_BITS, 0);
        if (bits == 0) {
            rv = CKR_TEMPLATE_INCOMPLETE;
            goto fail;
        }
        if (bits < 2048 || bits > 4096) {
            rv = CKR_KEY_SIZE_RANGE;
            goto fail;
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
        if (ctx == NULL || EVP_PKEY_keygen_init(ctx) != 1 ||
            EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, (int)bits) != 1) {
            rv = CKR_FUNCTION_FAILED;
            goto fail;
        }
        const cs_attr *e = cs_attrs_get(&po->attrs, CKA_PUBLIC_EXPONENT);
        if (e != NULL && e->len > 0) {
            BIGNUM *bn = BN_bin2bn(e->val, (int)e->len, NULL);
            /* Only sane public exponents: odd, >= 3 (65537 normally). */
            if (bn == NULL || !BN_is_odd(bn) || BN_num_bits(bn) < 2 || BN_num_bits(bn) > 64 ||
                EVP_PKEY_CTX_set1_rsa_keygen_pubexp(ctx, bn) != 1) {
                BN_free(bn);
                rv = CKR_ATTRIBUTE_VALUE_INVALID;
                goto fail;
            }
            BN_free(bn);
        }
        if (EVP_PKEY_generate(ctx, &pkey) != 1)
            pkey = NULL;
    }
    if (pkey == NULL) {
        rv = CKR_FUNCTION_FAILED;
        goto fail;
    }
    if ((rv = cs_object_set_public_attrs(&po->attrs, pkey, false)) != CKR_OK ||
        (rv = cs_object_set_public_attrs(&ko->attrs, pkey, true)) != CKR_OK ||
        (rv = cs_pkey_to_secret(pkey, &sec, &sl)) != CKR_OK)
        goto fail;
    ko->secret = sec;
    ko->secret_len = sl;
    ko->has_secret = true;
    ko->pkey = pkey;
    EVP_PKEY_up_ref(pkey);
    po->pkey = pkey;
    pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    ctx = NULL;

    /* Private key first: if it cannot be stored, nothing is left behind. */
    rv = cs_object_commit(s, ko, _hpriv);
    ko = NULL;
    if (rv != CKR_OK)
        goto fail;
    rv = cs_object_commit(s, po, _hpub);
    po = NULL;
    if (rv != CKR_OK) {
        cs_object *k = cs_handle_get(*_hpriv);
        if (k != NULL)
            cs_object_destroy(s, k);
        goto fail;
    }
    return CKR_OK;
fail:
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    cs_object_free(po);
    cs_object_free(ko);
    return rv;
}

CK_RV cs_keygen_secret(cs_session *s, const CK_MECHANISM *m, const CK_ATTRIBUTE *t, CK_ULONG n,
                       CK_OBJECT_HANDLE *_h)
{
    CK_RV rv;
    if (m->mechanism != CKM_GENERIC_SECRET_KEY_GEN)
        return CKR_MECHANISM_INVALID;
    if (m->pParameter != NULL || m->ulParameterLen != 0)
        return CKR_MECHANISM_PARAM_INVALID;
    const CK_ATTRIBUTE *kta = cs_tmpl_find(t, n, CKA_KEY_TYPE);
    if (kta != NULL && (cs_attr_check_value(kta) != CKR_OK || cs_tmpl_ulong(kta) != CKK_GENERIC_SECRET))
        return CKR_TEMPLATE_INCONSISTENT;
    const CK_ATTRIBUTE *vl = cs_tmpl_find(t, n, CKA_VALUE_LEN);
    if (vl == NULL)
        return CKR_TEMPLATE_INCOMPLETE;
    if (cs_attr_check_value(vl) != CKR_OK)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    CK_ULONG len = cs_tmpl_ulong(vl);
    const cs_mech *gm = cs_mech_find(CKM_GENERIC_SECRET_KEY_GEN);
    if (len * 8 < gm->info.ulMinKeySize || len * 8 > gm->info.ulMaxKeySize)
        return CKR_KEY_SIZE_RANGE;
    if (cs_tmpl_find(t, n, CKA_VALUE) != NULL)
        return CKR_TEMPLATE_INCONSISTENT;
    cs_object *o = cs_object_new();
    if (o == NULL)
        return CKR_HOST_MEMORY;
    if ((rv = build(s, o, CKO_SECRET_KEY, CKK_GENERIC_SECRET, t, n, m->mechanism)) != CKR_OK)
        goto fail;
    o->secret = OPENSSL_malloc(len);
    if (o->secret == NULL) {
        rv = CKR_HOST_MEMORY;
        goto fail;
    }
    o->secret_len = len;
    o->has_secret = true;
    if ((rv = cs_random(o->secret, len)) != CKR_OK ||
        (rv = cs_attrs_set_ulong(&o->attrs, CKA_VALUE_LEN, len)) != CKR_OK)
        goto fail;
    return cs_object_commit(s, o, _h);
fail:
    cs_object_free(o);
    return rv;
}

static CK_RV build(cs_session *s, cs_object *o, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt,
                   const CK_ATTRIBUTE *t, CK_ULONG n, CK_MECHANISM_TYPE mech)
{
    CK_RV rv = cs__object_template(&o->attrs, cls, kt, t, n, mech);
    if (rv != CKR_OK)
        return rv;
    bool token = cs_attrs_bool(&o->attrs, CKA_TOKEN, CK_FALSE);
    bool priv = cs_attrs_bool(&o->attrs, CKA_PRIVATE, CK_FALSE);
    if (token && !(s->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    if ((priv || cls != CKO_PUBLIC_KEY) && s->tok->login != CKU_USER)
        return CKR_USER_NOT_LOGGED_IN;
    return CKR_OK;
}
