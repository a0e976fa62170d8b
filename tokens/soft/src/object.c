/* Objects: templates, attributes, visibility, search, and the key material
 * behind them. Callers hold cs_g.lock exclusively.
 *
 * Secrets never sit in the attribute list: a private key's material is kept
 * as PKCS#8 DER (the sealed form on disk) plus a cached EVP_PKEY, a secret
 * key's or private data object's CKA_VALUE as bytes. Both are wiped when the
 * user logs out (token objects) or the object is destroyed. */
#include "soft.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

cs_object *cs_object_new(void)
{
    return calloc(1, sizeof(cs_object));
}

void cs_object_forget_secret(cs_object *o)
{
    if (o->secret != NULL)
        OPENSSL_clear_free(o->secret, o->secret_len);
    o->secret = NULL;
    o->secret_len = 0;
    EVP_PKEY_free(o->pkey); /* EVP_PKEY_free wipes private key material */
    o->pkey = NULL;
    o->authentic = false;
}

void cs_object_free(cs_object *o)
{
    if (o == NULL)
        return;
    cs_object_forget_secret(o);
    cs_attrs_clear(&o->attrs);
    cs_sealed_clear(&o->sealed);
    free(o);
}

/* ---- handles ---- */

CK_RV cs_handle_add(cs_object *o)
{
    if (cs_g.nhandles == cs_g.caphandles) {
        size_t cap = cs_g.caphandles ? cs_g.caphandles * 2 : 64;
        cs_object **n = realloc(cs_g.handles, cap * sizeof *n);
        if (n == NULL)
            return CKR_HOST_MEMORY;
        cs_g.handles = n;
        cs_g.caphandles = cap;
    }
    cs_g.handles[cs_g.nhandles] = o;
    o->handle = ++cs_g.nhandles; /* never reused while the module is initialized */
    return CKR_OK;
}

void cs_handle_remove(cs_object *o)
{
    if (o->handle >= 1 && o->handle <= cs_g.nhandles && cs_g.handles[o->handle - 1] == o)
        cs_g.handles[o->handle - 1] = NULL;
}

cs_object *cs_handle_get(CK_OBJECT_HANDLE h)
{
    if (h < 1 || h > cs_g.nhandles)
        return NULL;
    return cs_g.handles[h - 1];
}

/* ---- key material ---- */

static const struct {
    const char *name;
    const unsigned char *der;
    size_t len;
} curves[] = {
    {"P-256", (const unsigned char *)"\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07", 10},
    {"P-384", (const unsigned char *)"\x06\x05\x2b\x81\x04\x00\x22", 7},
};

CK_RV cs_ec_params_to_group(const cs_attr *params, const char **_name)
{
    if (params == NULL)
        return CKR_TEMPLATE_INCOMPLETE;
    for (size_t i = 0; i < sizeof curves / sizeof curves[0]; i++) {
        if (params->len == curves[i].len && memcmp(params->val, curves[i].der, params->len) == 0) {
            *_name = curves[i].name;
            return CKR_OK;
        }
    }
    return CKR_CURVE_NOT_SUPPORTED;
}

static const unsigned char *curve_der(const char *group, size_t *_len)
{
    for (size_t i = 0; i < sizeof curves / sizeof curves[0]; i++) {
        if (strcmp(group, curves[i].name) == 0 ||
            (strcmp(group, "prime256v1") == 0 && i == 0) ||
            (strcmp(group, "secp384r1") == 0 && i == 1)) {
            *_len = curves[i].len;
            return curves[i].der;
        }
    }
    return NULL;
}

/* A big integer attribute; pad > 0 left-pads it to that many bytes, so an
 * EC scalar reads back with the width of the curve whatever its value. */
static CK_RV set_bn_padded(cs_attrs *l, CK_ATTRIBUTE_TYPE type, EVP_PKEY *pkey,
                           const char *param, int pad)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(pkey, param, &bn) != 1)
        return CKR_FUNCTION_FAILED;
    int n = BN_num_bytes(bn);
    if (pad > n)
        n = pad;
    unsigned char *b = OPENSSL_malloc(n > 0 ? (size_t)n : 1);
    CK_RV rv = CKR_HOST_MEMORY;
    if (b != NULL) {
        BN_bn2binpad(bn, b, n);
        rv = cs_attrs_set(l, type, b, (CK_ULONG)n);
        OPENSSL_clear_free(b, n > 0 ? (size_t)n : 1);
    }
    BN_clear_free(bn);
    return rv;
}

static CK_RV set_bn(cs_attrs *l, CK_ATTRIBUTE_TYPE type, EVP_PKEY *pkey, const char *param)
{
    return set_bn_padded(l, type, pkey, param, 0);
}

CK_RV cs_object_set_public_attrs(cs_attrs *l, EVP_PKEY *pkey, bool private_key)
{
    CK_RV rv;
    unsigned char *spki = NULL;
    int spki_len = i2d_PUBKEY(pkey, &spki);
    if (spki_len <= 0)
        return CKR_FUNCTION_FAILED;
    rv = cs_attrs_set(l, CKA_PUBLIC_KEY_INFO, spki, (CK_ULONG)spki_len);
    OPENSSL_free(spki);
    if (rv != CKR_OK)
        return rv;
    if (EVP_PKEY_is_a(pkey, "EC")) {
        char group[64];
        size_t glen = 0, plen = 0;
        const unsigned char *der;
        if (EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                           &glen) != 1 ||
            (der = curve_der(group, &glen)) == NULL)
            return CKR_CURVE_NOT_SUPPORTED;
        if ((rv = cs_attrs_set(l, CKA_EC_PARAMS, der, glen)) != CKR_OK)
            return rv;
        if (!private_key) {
            unsigned char pt[2 + 133];
            if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, pt + 2,
                                                sizeof pt - 2, &plen) != 1 ||
                plen > 127)
                return CKR_FUNCTION_FAILED;
            /* CKA_EC_POINT is the DER OCTET STRING of the point (v2.40). */
            pt[0] = 0x04;
            pt[1] = (unsigned char)plen;
            if ((rv = cs_attrs_set(l, CKA_EC_POINT, pt, plen + 2)) != CKR_OK)
                return rv;
        }
    } else if (EVP_PKEY_is_a(pkey, "RSA")) {
        if ((rv = set_bn(l, CKA_MODULUS, pkey, OSSL_PKEY_PARAM_RSA_N)) != CKR_OK ||
            (rv = set_bn(l, CKA_PUBLIC_EXPONENT, pkey, OSSL_PKEY_PARAM_RSA_E)) != CKR_OK)
            return rv;
        if (!private_key &&
            (rv = cs_attrs_set_ulong(l, CKA_MODULUS_BITS, (CK_ULONG)EVP_PKEY_get_bits(pkey))) !=
                CKR_OK)
            return rv;
    } else {
        return CKR_KEY_TYPE_INCONSISTENT;
    }
    return CKR_OK;
}

CK_RV cs_pkey_to_secret(EVP_PKEY *pkey, unsigned char **_out, size_t *_len)
{
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pkey);
    if (p8 == NULL)
        return CKR_FUNCTION_FAILED;
    unsigned char *der = NULL;
    int len = i2d_PKCS8_PRIV_KEY_INFO(p8, &der);
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (len <= 0)
        return CKR_FUNCTION_FAILED;
    *_out = der;
    *_len = (size_t)len;
    return CKR_OK;
}

/* The public key of a public-key object, from its attributes. */
static EVP_PKEY *public_from_attrs(const cs_attrs *l)
{
    const cs_attr *spki = cs_attrs_get(l, CKA_PUBLIC_KEY_INFO);
    if (spki != NULL && spki->len > 0) {
        const unsigned char *p = spki->val;
        return d2i_PUBKEY(NULL, &p, (long)spki->len);
    }
    return NULL;
}

CK_RV cs_object_set_secret(cs_object *o, unsigned char *pt, size_t len)
{
    CK_OBJECT_CLASS cls = cs_attrs_ulong(&o->attrs, CKA_CLASS, (CK_ULONG)-1);
    cs_object_forget_secret(o);
    if (cls == CKO_PUBLIC_KEY) {
        o->pkey = public_from_attrs(&o->attrs);
        return CKR_OK; /* a public key without SPKI just cannot verify */
    }
    if (pt == NULL)
        return CKR_OK;
    if (cls == CKO_PRIVATE_KEY) {
        const unsigned char *p = pt;
        PKCS8_PRIV_KEY_INFO *p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
        EVP_PKEY *k = p8 ? EVP_PKCS82PKEY(p8) : NULL;
        PKCS8_PRIV_KEY_INFO_free(p8);
        if (k == NULL) {
            OPENSSL_clear_free(pt, len);
            return CKR_FUNCTION_FAILED;
        }
        o->pkey = k;
    }
    o->secret = pt;
    o->secret_len = len;
    return CKR_OK;
}

/* ---- visibility and search ---- */

bool cs_object_is_private(const cs_object *o)
{
    return cs_attrs_bool(&o->attrs, CKA_PRIVATE, CK_TRUE) == CK_TRUE;
}

bool cs_object_visible(const cs_session *s, const cs_object *o)
{
    if (o->tok != s->tok || o->broken)
        return false;
    /* A record's digest proves no author: until the secret's AES-GCM tag has
     * vouched for its attributes, no custody flag of it may be shown. */
    if (o->has_secret && o->session == 0 && !o->authentic)
        return false;
    if (cs_object_is_private(o) && s->tok->login != CKU_USER)
        return false;
    return true;
}

bool cs_object_matches(const cs_object *o, const CK_ATTRIBUTE *t, CK_ULONG n)
{
    for (CK_ULONG i = 0; i < n; i++) {
        const cs_attr *a = cs_attrs_get(&o->attrs, t[i].type);
        if (a == NULL || a->len != t[i].ulValueLen ||
            (a->len > 0 && (t[i].pValue == NULL || memcmp(a->val, t[i].pValue, a->len) != 0)))
            return false;
    }
    return true;
}

/* ---- templates ---- */

/* Attributes the module computes: never taken from a template. */
static bool computed(CK_ATTRIBUTE_TYPE t)
{
    return t == CKA_LOCAL || t == CKA_ALWAYS_SENSITIVE || t == CKA_NEVER_EXTRACTABLE ||
           t == CKA_KEY_GEN_MECHANISM || t == CKA_VALUE_BITS || t == CKA_PUBLIC_KEY_INFO;
}

/* Secret components of keys (never stored as attributes). */
static bool secret_component(CK_OBJECT_CLASS cls, CK_ATTRIBUTE_TYPE t)
{
    if (cls == CKO_SECRET_KEY)
        return t == CKA_VALUE;
    if (cls == CKO_PRIVATE_KEY)
        return t == CKA_VALUE || t == CKA_PRIVATE_EXPONENT || t == CKA_PRIME_1 ||
               t == CKA_PRIME_2 || t == CKA_EXPONENT_1 || t == CKA_EXPONENT_2 ||
               t == CKA_COEFFICIENT;
    return false;
}

/* Attributes that belong to a class (others are template-inconsistent). */
static bool allowed_for(CK_OBJECT_CLASS cls, CK_KEY_TYPE kt, CK_ATTRIBUTE_TYPE t)
{
    switch (t) {
    case CKA_CLASS: case CKA_TOKEN: case CKA_PRIVATE: case CKA_LABEL: case CKA_MODIFIABLE:
    case CKA_COPYABLE: case CKA_DESTROYABLE:
        return true;
    default:
        break;
    }
    bool key = cls == CKO_PUBLIC_KEY || cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY;
    if (key) {
        switch (t) {
        case CKA_KEY_TYPE: case CKA_ID: case CKA_START_DATE: case CKA_END_DATE: case CKA_DERIVE:
        case CKA_LOCAL: case CKA_KEY_GEN_MECHANISM: case CKA_ALLOWED_MECHANISMS:
            return true;
        default:
            break;
        }
    }
    switch (cls) {
    case CKO_DATA:
        return t == CKA_APPLICATION || t == CKA_OBJECT_ID || t == CKA_VALUE;
    case CKO_CERTIFICATE:
        return t == CKA_CERTIFICATE_TYPE || t == CKA_TRUSTED || t == CKA_CERTIFICATE_CATEGORY ||
               t == CKA_CHECK_VALUE || t == CKA_START_DATE || t == CKA_END_DATE ||
               t == CKA_SUBJECT || t == CKA_ID || t == CKA_ISSUER || t == CKA_SERIAL_NUMBER ||
               t == CKA_VALUE || t == CKA_URL || t == CKA_HASH_OF_SUBJECT_PUBLIC_KEY ||
               t == CKA_HASH_OF_ISSUER_PUBLIC_KEY || t == CKA_JAVA_MIDP_SECURITY_DOMAIN ||
               t == CKA_NAME_HASH_ALGORITHM || t == CKA_PUBLIC_KEY_INFO;
    case CKO_PUBLIC_KEY:
        if (t == CKA_SUBJECT || t == CKA_ENCRYPT || t == CKA_VERIFY || t == CKA_VERIFY_RECOVER ||
            t == CKA_WRAP || t == CKA_TRUSTED || t == CKA_PUBLIC_KEY_INFO)
            return true;
        if (kt == CKK_EC)
            return t == CKA_EC_PARAMS || t == CKA_EC_POINT;
        if (kt == CKK_RSA)
            return t == CKA_MODULUS || t == CKA_MODULUS_BITS || t == CKA_PUBLIC_EXPONENT;
        return false;
    case CKO_PRIVATE_KEY:
        if (t == CKA_SUBJECT || t == CKA_SENSITIVE || t == CKA_DECRYPT || t == CKA_SIGN ||
            t == CKA_SIGN_RECOVER || t == CKA_UNWRAP || t == CKA_EXTRACTABLE ||
            t == CKA_ALWAYS_SENSITIVE || t == CKA_NEVER_EXTRACTABLE || t == CKA_WRAP_WITH_TRUSTED ||
            t == CKA_ALWAYS_AUTHENTICATE || t == CKA_PUBLIC_KEY_INFO)
            return true;
        if (kt == CKK_EC)
            return t == CKA_EC_PARAMS || t == CKA_VALUE;
        if (kt == CKK_RSA)
            return t == CKA_MODULUS || t == CKA_PUBLIC_EXPONENT || t == CKA_PRIVATE_EXPONENT ||
                   t == CKA_PRIME_1 || t == CKA_PRIME_2 || t == CKA_EXPONENT_1 ||
                   t == CKA_EXPONENT_2 || t == CKA_COEFFICIENT;
        return false;
    case CKO_SECRET_KEY:
        return t == CKA_SENSITIVE || t == CKA_ENCRYPT || t == CKA_DECRYPT || t == CKA_SIGN ||
               t == CKA_VERIFY || t == CKA_WRAP || t == CKA_UNWRAP || t == CKA_EXTRACTABLE ||
               t == CKA_ALWAYS_SENSITIVE || t == CKA_NEVER_EXTRACTABLE || t == CKA_CHECK_VALUE ||
               t == CKA_WRAP_WITH_TRUSTED || t == CKA_TRUSTED || t == CKA_VALUE ||
               t == CKA_VALUE_LEN;
    default:
        return false;
    }
}

/* Defaults for a new object of a class. `local` marks generated keys. */
static CK_RV set_defaults(cs_attrs *l, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt)
{
    static const CK_BYTE empty[1];
    CK_RV rv = CKR_OK;
#define B(t, v) if (rv == CKR_OK) rv = cs_attrs_set_bool(l, t, v)
#define U(t, v) if (rv == CKR_OK) rv = cs_attrs_set_ulong(l, t, v)
#define E(t) if (rv == CKR_OK) rv = cs_attrs_set(l, t, empty, 0)
    U(CKA_CLASS, cls);
    B(CKA_TOKEN, CK_FALSE);
    B(CKA_PRIVATE, cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY);
    E(CKA_LABEL);
    B(CKA_MODIFIABLE, CK_TRUE);
    B(CKA_COPYABLE, CK_TRUE);
    B(CKA_DESTROYABLE, CK_TRUE);
    if (cls == CKO_PUBLIC_KEY || cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY) {
        U(CKA_KEY_TYPE, kt);
        E(CKA_ID);
        E(CKA_START_DATE);
        E(CKA_END_DATE);
        B(CKA_DERIVE, CK_FALSE);
        B(CKA_LOCAL, CK_FALSE);
        U(CKA_KEY_GEN_MECHANISM, CK_UNAVAILABLE_INFORMATION);
    }
    switch (cls) {
    case CKO_DATA:
        E(CKA_APPLICATION);
        E(CKA_OBJECT_ID);
        break;
    case CKO_CERTIFICATE:
        B(CKA_TRUSTED, CK_FALSE);
        U(CKA_CERTIFICATE_CATEGORY, 0);
        E(CKA_ID);
        E(CKA_ISSUER);
        E(CKA_SERIAL_NUMBER);
        E(CKA_START_DATE);
        E(CKA_END_DATE);
        break;
    case CKO_PUBLIC_KEY:
        E(CKA_SUBJECT);
        B(CKA_ENCRYPT, CK_FALSE);
        B(CKA_VERIFY, CK_TRUE);
        B(CKA_VERIFY_RECOVER, CK_FALSE);
        B(CKA_WRAP, CK_FALSE);
        B(CKA_TRUSTED, CK_FALSE);
        break;
    case CKO_PRIVATE_KEY:
        E(CKA_SUBJECT);
        B(CKA_SENSITIVE, CK_TRUE);
        B(CKA_DECRYPT, CK_FALSE);
        B(CKA_SIGN, CK_TRUE);
        B(CKA_SIGN_RECOVER, CK_FALSE);
        B(CKA_UNWRAP, CK_FALSE);
        B(CKA_EXTRACTABLE, CK_FALSE);
        B(CKA_WRAP_WITH_TRUSTED, CK_FALSE);
        B(CKA_ALWAYS_AUTHENTICATE, CK_FALSE);
        break;
    case CKO_SECRET_KEY:
        B(CKA_SENSITIVE, CK_TRUE);
        B(CKA_ENCRYPT, CK_FALSE);
        B(CKA_DECRYPT, CK_FALSE);
        B(CKA_SIGN, CK_TRUE);
        B(CKA_VERIFY, CK_TRUE);
        B(CKA_WRAP, CK_FALSE);
        B(CKA_UNWRAP, CK_FALSE);
        B(CKA_EXTRACTABLE, CK_FALSE);
        B(CKA_WRAP_WITH_TRUSTED, CK_FALSE);
        B(CKA_TRUSTED, CK_FALSE);
        break;
    default:
        break;
    }
#undef B
#undef U
#undef E
    return rv;
}

/* Builds the attribute list of a new object from a template. Secret
 * components are left out (the caller reads them from the template). */
static CK_RV apply_template(cs_attrs *l, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt,
                            const CK_ATTRIBUTE *t, CK_ULONG n, bool generated)
{
    CK_RV rv = set_defaults(l, cls, kt);
    for (CK_ULONG i = 0; rv == CKR_OK && i < n; i++) {
        if ((rv = cs_attr_check_value(&t[i])) != CKR_OK)
            break;
        if (!allowed_for(cls, kt, t[i].type)) {
            rv = CKR_ATTRIBUTE_TYPE_INVALID;
            break;
        }
        if (computed(t[i].type)) {
            rv = CKR_ATTRIBUTE_READ_ONLY;
            break;
        }
        if (t[i].type == CKA_CLASS && cs_tmpl_ulong(&t[i]) != cls)
            rv = CKR_TEMPLATE_INCONSISTENT;
        else if (t[i].type == CKA_PRIVATE && !cs_tmpl_bool(&t[i]) &&
                 (cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY))
            rv = CKR_ATTRIBUTE_VALUE_INVALID; /* a key must never work without login */
        else if (t[i].type == CKA_ALWAYS_AUTHENTICATE && cs_tmpl_bool(&t[i]))
            rv = CKR_ATTRIBUTE_VALUE_INVALID; /* no context-specific login here */
        else if (t[i].type == CKA_KEY_TYPE && cs_tmpl_ulong(&t[i]) != kt)
            rv = CKR_TEMPLATE_INCONSISTENT;
        else if (secret_component(cls, t[i].type))
            continue;
        else if (generated && (t[i].type == CKA_MODULUS || t[i].type == CKA_EC_POINT ||
                               t[i].type == CKA_VALUE_LEN))
            continue; /* keygen parameters, not stored as given */
        else
            rv = cs_attrs_set(l, t[i].type, t[i].pValue, t[i].ulValueLen);
    }
    return rv;
}

/* Custody attributes, set once when a key is made (LOCAL etc.). */
static CK_RV set_custody(cs_attrs *l, CK_OBJECT_CLASS cls, bool generated, CK_MECHANISM_TYPE mech)
{
    CK_RV rv = cs_attrs_set_bool(l, CKA_LOCAL, generated);
    if (rv == CKR_OK)
        rv = cs_attrs_set_ulong(l, CKA_KEY_GEN_MECHANISM,
                                generated ? mech : CK_UNAVAILABLE_INFORMATION);
    if (rv == CKR_OK && (cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY)) {
        /* An imported key was once outside the token: never "always
         * sensitive" nor "never extractable", whatever it is now. */
        CK_BBOOL sens = cs_attrs_bool(l, CKA_SENSITIVE, CK_FALSE);
        CK_BBOOL extr = cs_attrs_bool(l, CKA_EXTRACTABLE, CK_TRUE);
        rv = cs_attrs_set_bool(l, CKA_ALWAYS_SENSITIVE, generated && sens);
        if (rv == CKR_OK)
            rv = cs_attrs_set_bool(l, CKA_NEVER_EXTRACTABLE, generated && !extr);
    }
    return rv;
}

CK_RV cs__object_template(cs_attrs *l, CK_OBJECT_CLASS cls, CK_KEY_TYPE kt, const CK_ATTRIBUTE *t,
                          CK_ULONG n, CK_MECHANISM_TYPE mech)
{
    CK_RV rv = apply_template(l, cls, kt, t, n, true);
    if (rv == CKR_OK)
        rv = set_custody(l, cls, true, mech);
    return rv;
}

static CK_RV check_session_rights(cs_session *s, const cs_attrs *l)
{
    bool token = cs_attrs_bool(l, CKA_TOKEN, CK_FALSE);
    bool priv = cs_attrs_bool(l, CKA_PRIVATE, CK_FALSE);
    if (token && !(s->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    if (priv && s->tok->login != CKU_USER)
        return CKR_USER_NOT_LOGGED_IN;
    return CKR_OK;
}

CK_RV cs_object_commit(cs_session *s, cs_object *o, CK_OBJECT_HANDLE *_h)
{
    CK_RV rv;
    o->tok = s->tok;
    if (cs_attrs_bool(&o->attrs, CKA_TOKEN, CK_FALSE)) {
        if (o->has_secret && s->tok->login != CKU_USER) {
            rv = CKR_USER_NOT_LOGGED_IN; /* secrets are sealed with the user's key */
            goto fail;
        }
        if ((rv = cs_token_store_object(s->tok, o)) != CKR_OK)
            goto fail;
        o->authentic = true; /* sealed by us, under our login */
        if ((rv = cs_token_add_object(s->tok, o)) != CKR_OK) {
            cs_token_delete_object(s->tok, o);
            goto fail;
        }
    } else {
        o->session = s->handle;
        if ((rv = cs_handle_add(o)) != CKR_OK)
            goto fail;
    }
    if (_h != NULL)
        *_h = o->handle;
    return CKR_OK;
fail:
    cs_object_free(o);
    return rv;
}

static CK_RV bn_from_tmpl(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type, BIGNUM **_bn)
{
    const CK_ATTRIBUTE *a = cs_tmpl_find(t, n, type);
    if (a == NULL || a->ulValueLen == 0)
        return CKR_TEMPLATE_INCOMPLETE;
    *_bn = BN_bin2bn(a->pValue, (int)a->ulValueLen, NULL);
    return *_bn ? CKR_OK : CKR_HOST_MEMORY;
}

/* Builds an EVP_PKEY from a key template (import). */
static CK_RV pkey_from_template(CK_OBJECT_CLASS cls, CK_KEY_TYPE kt, const cs_attrs *l,
                                const CK_ATTRIBUTE *t, CK_ULONG n, EVP_PKEY **_pkey)
{
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    BIGNUM *bn[8] = {0};
    EC_GROUP *grp = NULL;
    EC_POINT *pub = NULL;
    unsigned char *pubbuf = NULL;
    CK_RV rv = CKR_HOST_MEMORY;
    int sel;

    if (bld == NULL)
        goto cleanup;
    if (kt == CKK_RSA) {
        static const CK_ATTRIBUTE_TYPE pubt[] = {CKA_MODULUS, CKA_PUBLIC_EXPONENT};
        static const char *pubn[] = {OSSL_PKEY_PARAM_RSA_N, OSSL_PKEY_PARAM_RSA_E};
        static const CK_ATTRIBUTE_TYPE privt[] = {CKA_PRIVATE_EXPONENT, CKA_PRIME_1, CKA_PRIME_2,
                                                  CKA_EXPONENT_1, CKA_EXPONENT_2, CKA_COEFFICIENT};
        static const char *privn[] = {OSSL_PKEY_PARAM_RSA_D, OSSL_PKEY_PARAM_RSA_FACTOR1,
                                      OSSL_PKEY_PARAM_RSA_FACTOR2, OSSL_PKEY_PARAM_RSA_EXPONENT1,
                                      OSSL_PKEY_PARAM_RSA_EXPONENT2,
                                      OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
        for (int i = 0; i < 2; i++) {
            if ((rv = bn_from_tmpl(t, n, pubt[i], &bn[i])) != CKR_OK)
                goto cleanup;
            if (!OSSL_PARAM_BLD_push_BN(bld, pubn[i], bn[i])) {
                rv = CKR_HOST_MEMORY;
                goto cleanup;
            }
        }
        if (cls == CKO_PRIVATE_KEY) {
            int have = 0;
            for (int i = 0; i < 6; i++) {
                if (bn_from_tmpl(t, n, privt[i], &bn[2 + i]) != CKR_OK) {
                    if (i == 0) {
                        rv = CKR_TEMPLATE_INCOMPLETE;
                        goto cleanup;
                    }
                    continue;
                }
                have++;
            }
            /* Either d alone, or d with every CRT value. */
            for (int i = 0; i < 6; i++) {
                if (bn[2 + i] == NULL)
                    continue;
                if (have != 6 && i > 0)
                    break;
                if (!OSSL_PARAM_BLD_push_BN(bld, privn[i], bn[2 + i])) {
                    rv = CKR_HOST_MEMORY;
                    goto cleanup;
                }
            }
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    } else if (kt == CKK_EC) {
        const char *group;
        if ((rv = cs_ec_params_to_group(cs_attrs_get(l, CKA_EC_PARAMS), &group)) != CKR_OK)
            goto cleanup;
        rv = CKR_HOST_MEMORY;
        if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0))
            goto cleanup;
        grp = EC_GROUP_new_by_curve_name(strcmp(group, "P-256") == 0 ? NID_X9_62_prime256v1
                                                                      : NID_secp384r1);
        if (grp == NULL)
            goto cleanup;
        if (cls == CKO_PRIVATE_KEY) {
            if ((rv = bn_from_tmpl(t, n, CKA_VALUE, &bn[0])) != CKR_OK)
                goto cleanup;
            rv = CKR_HOST_MEMORY;
            pub = EC_POINT_new(grp);
            if (pub == NULL || !EC_POINT_mul(grp, pub, bn[0], NULL, NULL, NULL))
                goto cleanup;
            size_t pl = EC_POINT_point2buf(grp, pub, POINT_CONVERSION_UNCOMPRESSED, &pubbuf, NULL);
            if (pl == 0 || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bn[0]) ||
                !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pubbuf, pl))
                goto cleanup;
        } else {
            const cs_attr *pt = cs_attrs_get(l, CKA_EC_POINT);
            if (pt == NULL || pt->len < 3) {
                rv = CKR_TEMPLATE_INCOMPLETE;
                goto cleanup;
            }
            const unsigned char *p = pt->val;
            size_t pl = pt->len;
            /* DER OCTET STRING (v2.40) or a raw point (what some tools send). */
            if (p[0] == 0x04 && p[1] == pl - 2 && pl - 2 > 0 && (p[2] == 0x04 || p[2] == 0x02 || p[2] == 0x03)) {
                p += 2;
                pl -= 2;
            }
            EC_POINT *chk = EC_POINT_new(grp);
            bool ok = chk != NULL && EC_POINT_oct2point(grp, chk, p, pl, NULL) == 1;
            EC_POINT_free(chk);
            if (!ok) {
                rv = CKR_ATTRIBUTE_VALUE_INVALID;
                goto cleanup;
            }
            if (!OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, p, pl))
                goto cleanup;
        }
        ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    } else {
        rv = CKR_KEY_TYPE_INCONSISTENT;
        goto cleanup;
    }
    rv = CKR_HOST_MEMORY;
    params = OSSL_PARAM_BLD_to_param(bld);
    if (ctx == NULL || params == NULL || EVP_PKEY_fromdata_init(ctx) != 1)
        goto cleanup;
    sel = cls == CKO_PRIVATE_KEY ? EVP_PKEY_KEYPAIR : EVP_PKEY_PUBLIC_KEY;
    if (EVP_PKEY_fromdata(ctx, _pkey, sel, params) != 1) {
        rv = CKR_ATTRIBUTE_VALUE_INVALID;
        goto cleanup;
    }
    rv = CKR_OK;
cleanup:
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EVP_PKEY_CTX_free(ctx);
    for (int i = 0; i < 8; i++)
        BN_clear_free(bn[i]);
    EC_POINT_free(pub);
    EC_GROUP_free(grp);
    OPENSSL_free(pubbuf);
    return rv;
}

CK_RV cs_object_create(cs_session *s, const CK_ATTRIBUTE *t, CK_ULONG n, CK_OBJECT_HANDLE *_h)
{
    const CK_ATTRIBUTE *ca = cs_tmpl_find(t, n, CKA_CLASS);
    CK_RV rv;
    EVP_PKEY *pkey = NULL;
    if (ca == NULL)
        return CKR_TEMPLATE_INCOMPLETE;
    if ((rv = cs_attr_check_value(ca)) != CKR_OK)
        return rv;
    CK_OBJECT_CLASS cls = cs_tmpl_ulong(ca);
    CK_KEY_TYPE kt = CK_UNAVAILABLE_INFORMATION;
    if (cls == CKO_PUBLIC_KEY || cls == CKO_PRIVATE_KEY || cls == CKO_SECRET_KEY) {
        const CK_ATTRIBUTE *ka = cs_tmpl_find(t, n, CKA_KEY_TYPE);
        if (ka == NULL)
            return CKR_TEMPLATE_INCOMPLETE;
        if ((rv = cs_attr_check_value(ka)) != CKR_OK)
            return rv;
        kt = cs_tmpl_ulong(ka);
        bool ok = (cls == CKO_SECRET_KEY) ? kt == CKK_GENERIC_SECRET
                                          : (kt == CKK_EC || kt == CKK_RSA);
        if (!ok)
            return CKR_ATTRIBUTE_VALUE_INVALID;
    } else if (cls != CKO_DATA && cls != CKO_CERTIFICATE) {
        return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    cs_object *o = cs_object_new();
    if (o == NULL)
        return CKR_HOST_MEMORY;
    if ((rv = apply_template(&o->attrs, cls, kt, t, n, false)) != CKR_OK)
        goto fail;
    if ((rv = check_session_rights(s, &o->attrs)) != CKR_OK)
        goto fail;
    if (cls == CKO_CERTIFICATE) {
        if (cs_attrs_ulong(&o->attrs, CKA_CERTIFICATE_TYPE, (CK_ULONG)-1) != CKC_X_509) {
            rv = cs_attrs_get(&o->attrs, CKA_CERTIFICATE_TYPE) ? CKR_ATTRIBUTE_VALUE_INVALID
                                                                : CKR_TEMPLATE_INCOMPLETE;
            goto fail;
        }
        if (cs_attrs_get(&o->attrs, CKA_VALUE) == NULL ||
            cs_attrs_get(&o->attrs, CKA_SUBJECT) == NULL) {
            rv = CKR_TEMPLATE_INCOMPLETE;
            goto fail;
        }
    } else if (cls == CKO_DATA) {
        /* A private data object's value is sealed like a key. */
        const cs_attr *v = cs_attrs_get(&o->attrs, CKA_VALUE);
        if (v != NULL && cs_object_is_private(o)) {
            unsigned char *copy = OPENSSL_malloc(v->len ? v->len : 1);
            if (copy == NULL) {
                rv = CKR_HOST_MEMORY;
                goto fail;
            }
            memcpy(copy, v->val, v->len);
            o->secret = copy;
            o->secret_len = v->len;
            o->has_secret = true;
            cs_attrs_del(&o->attrs, CKA_VALUE);
        }
    } else if (cls == CKO_SECRET_KEY) {
        const CK_ATTRIBUTE *v = cs_tmpl_find(t, n, CKA_VALUE);
        if (v == NULL || v->ulValueLen == 0) {
            rv = CKR_TEMPLATE_INCOMPLETE;
            goto fail;
        }
        if (cs_tmpl_find(t, n, CKA_VALUE_LEN) != NULL) {
            rv = CKR_TEMPLATE_INCONSISTENT; /* VALUE_LEN is for generation only */
            goto fail;
        }
        unsigned char *copy = OPENSSL_malloc(v->ulValueLen);
        if (copy == NULL) {
            rv = CKR_HOST_MEMORY;
            goto fail;
        }
        memcpy(copy, v->pValue, v->ulValueLen);
        o->secret = copy;
        o->secret_len = v->ulValueLen;
        o->has_secret = true;
        if ((rv = cs_attrs_set_ulong(&o->attrs, CKA_VALUE_LEN, v->ulValueLen)) != CKR_OK ||
            (rv = set_custody(&o->attrs, cls, false, 0)) != CKR_OK)
            goto fail;
    } else {
        if ((rv = pkey_from_template(cls, kt, &o->attrs, t, n, &pkey)) != CKR_OK)
            goto fail;
        if (cls == CKO_PUBLIC_KEY) {
            if ((rv = cs_object_set_public_attrs(&o->attrs, pkey, false)) != CKR_OK)
                goto fail;
            o->pkey = pkey;
            pkey = NULL;
        } else {
            unsigned char *sec = NULL;
            size_t sl = 0;
            if ((rv = cs_object_set_public_attrs(&o->attrs, pkey, true)) != CKR_OK ||
                (rv = cs_pkey_to_secret(pkey, &sec, &sl)) != CKR_OK)
                goto fail;
            o->secret = sec;
            o->secret_len = sl;
            o->has_secret = true;
            o->pkey = pkey;
            pkey = NULL;
        }
        if ((rv = set_custody(&o->attrs, cls, false, 0)) != CKR_OK)
            goto fail;
    }
    return cs_object_commit(s, o, _h);
fail:
    EVP_PKEY_free(pkey);
    cs_object_free(o);
    return rv;
}

/* ---- attributes ---- */

static bool is_sensitive(const cs_object *o)
{
    return cs_attrs_bool(&o->attrs, CKA_SENSITIVE, CK_TRUE) ||
           !cs_attrs_bool(&o->attrs, CKA_EXTRACTABLE, CK_FALSE);
}

/* A secret component of a non-sensitive key, or NULL/len 0 if none. */
static CK_RV secret_attr(const cs_object *o, CK_ATTRIBUTE_TYPE type, unsigned char **_v,
                         size_t *_len)
{
    CK_OBJECT_CLASS cls = cs_attrs_ulong(&o->attrs, CKA_CLASS, (CK_ULONG)-1);
    *_v = NULL;
    *_len = 0;
    if (cls == CKO_SECRET_KEY || cls == CKO_DATA) {
        if (o->secret == NULL)
            return CKR_USER_NOT_LOGGED_IN;
        *_v = OPENSSL_memdup(o->secret, o->secret_len ? o->secret_len : 1);
        *_len = o->secret_len;
        return *_v ? CKR_OK : CKR_HOST_MEMORY;
    }
    if (o->pkey == NULL)
        return CKR_USER_NOT_LOGGED_IN;
    const char *param = NULL;
    switch (type) {
    case CKA_VALUE: param = OSSL_PKEY_PARAM_PRIV_KEY; break;
    case CKA_PRIVATE_EXPONENT: param = OSSL_PKEY_PARAM_RSA_D; break;
    case CKA_PRIME_1: param = OSSL_PKEY_PARAM_RSA_FACTOR1; break;
    case CKA_PRIME_2: param = OSSL_PKEY_PARAM_RSA_FACTOR2; break;
    case CKA_EXPONENT_1: param = OSSL_PKEY_PARAM_RSA_EXPONENT1; break;
    case CKA_EXPONENT_2: param = OSSL_PKEY_PARAM_RSA_EXPONENT2; break;
    case CKA_COEFFICIENT: param = OSSL_PKEY_PARAM_RSA_COEFFICIENT1; break;
    default: return CKR_ATTRIBUTE_TYPE_INVALID;
    }
    cs_attrs tmp = {0};
    int pad = 0;
    if (type == CKA_VALUE && EVP_PKEY_is_a(o->pkey, "EC"))
        pad = (EVP_PKEY_get_bits(o->pkey) + 7) / 8;
    CK_RV rv = set_bn_padded(&tmp, type, o->pkey, param, pad);
    if (rv != CKR_OK) {
        cs_attrs_clear(&tmp);
        return CKR_ATTRIBUTE_TYPE_INVALID;
    }
    *_v = tmp.a[0].val;
    *_len = tmp.a[0].len;
    tmp.a[0].val = NULL;
    tmp.a[0].len = 0;
    cs_attrs_clear(&tmp);
    return CKR_OK;
}

CK_RV cs_object_get_attrs(cs_session *s, cs_object *o, CK_ATTRIBUTE *t, CK_ULONG n)
{
    (void)s;
    CK_RV result = CKR_OK;
    CK_OBJECT_CLASS cls = cs_attrs_ulong(&o->attrs, CKA_CLASS, (CK_ULONG)-1);
    for (CK_ULONG i = 0; i < n; i++) {
        CK_RV rv = CKR_OK;
        const cs_attr *a = cs_attrs_get(&o->attrs, t[i].type);
        unsigned char *sv = NULL;
        size_t sl = 0;
        const unsigned char *v = NULL;
        size_t len = 0;
        if (a != NULL) {
            v = a->val;
            len = a->len;
        } else if (secret_component(cls, t[i].type) ||
                   (cls == CKO_DATA && t[i].type == CKA_VALUE && o->has_secret)) {
            if (cls != CKO_DATA && is_sensitive(o)) {
                rv = CKR_ATTRIBUTE_SENSITIVE;
            } else {
                rv = secret_attr(o, t[i].type, &sv, &sl);
                if (rv == CKR_USER_NOT_LOGGED_IN)
                    rv = CKR_ATTRIBUTE_SENSITIVE;
                v = sv;
                len = sl;
            }
        } else {
            rv = CKR_ATTRIBUTE_TYPE_INVALID;
        }
        if (rv == CKR_OK) {
            if (t[i].pValue == NULL) {
                t[i].ulValueLen = len;
            } else if (t[i].ulValueLen < len) {
                t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
                rv = CKR_BUFFER_TOO_SMALL;
            } else {
                if (len)
                    memcpy(t[i].pValue, v, len);
                t[i].ulValueLen = len;
            }
        } else {
            t[i].ulValueLen = CK_UNAVAILABLE_INFORMATION;
        }
        if (sv != NULL)
            OPENSSL_clear_free(sv, sl ? sl : 1);
        if (rv != CKR_OK && result == CKR_OK)
            result = rv;
    }
    return result;
}

CK_RV cs_object_set_attrs(cs_session *s, cs_object *o, const CK_ATTRIBUTE *t, CK_ULONG n)
{
    CK_OBJECT_CLASS cls = cs_attrs_ulong(&o->attrs, CKA_CLASS, (CK_ULONG)-1);
    CK_KEY_TYPE kt = cs_attrs_ulong(&o->attrs, CKA_KEY_TYPE, CK_UNAVAILABLE_INFORMATION);
    bool token = cs_attrs_bool(&o->attrs, CKA_TOKEN, CK_FALSE);
    cs_attrs next = {0};
    CK_RV rv;

    if (token && !(s->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    if (!cs_attrs_bool(&o->attrs, CKA_MODIFIABLE, CK_TRUE))
        return CKR_ACTION_PROHIBITED;
    if ((rv = cs_attrs_copy(&next, &o->attrs)) != CKR_OK)
        goto cleanup;
    for (CK_ULONG i = 0; i < n; i++) {
        CK_ATTRIBUTE_TYPE type = t[i].type;
        if ((rv = cs_attr_check_value(&t[i])) != CKR_OK)
            goto cleanup;
        if (!allowed_for(cls, kt, type)) {
            rv = CKR_ATTRIBUTE_TYPE_INVALID;
            goto cleanup;
        }
        switch (type) {
        case CKA_LABEL: case CKA_ID: case CKA_SUBJECT: case CKA_START_DATE: case CKA_END_DATE:
        case CKA_APPLICATION: case CKA_ENCRYPT: case CKA_DECRYPT: case CKA_SIGN: case CKA_VERIFY:
        case CKA_SIGN_RECOVER: case CKA_VERIFY_RECOVER: case CKA_WRAP: case CKA_UNWRAP:
        case CKA_DERIVE: case CKA_ISSUER: case CKA_SERIAL_NUMBER: case CKA_URL:
        case CKA_OBJECT_ID:
            break;
        case CKA_SENSITIVE:
            /* Never back to false: it was protected, it stays so. */
            if (!cs_tmpl_bool(&t[i]) && cs_attrs_bool(&o->attrs, CKA_SENSITIVE, CK_FALSE)) {
                rv = CKR_ATTRIBUTE_READ_ONLY;
                goto cleanup;
            }
            break;
        case CKA_EXTRACTABLE:
            if (cs_tmpl_bool(&t[i]) && !cs_attrs_bool(&o->attrs, CKA_EXTRACTABLE, CK_TRUE)) {
                rv = CKR_ATTRIBUTE_READ_ONLY;
                goto cleanup;
            }
            break;
        case CKA_VALUE:
            if (cls == CKO_DATA && !o->has_secret)
                break;
            rv = CKR_ATTRIBUTE_READ_ONLY;
            goto cleanup;
        default:
            rv = CKR_ATTRIBUTE_READ_ONLY;
            goto cleanup;
        }
        if ((rv = cs_attrs_set(&next, type, t[i].pValue, t[i].ulValueLen)) != CKR_OK)
            goto cleanup;
    }
    {
        cs_attrs old = o->attrs;
        o->attrs = next;
        next = old;
        if (token && (rv = cs_token_store_object(o->tok, o)) != CKR_OK) {
            next = o->attrs;
            o->attrs = old;
            goto cleanup;
        }
    }
    rv = CKR_OK;
cleanup:
    cs_attrs_clear(&next);
    return rv;
}

CK_RV cs_object_destroy(cs_session *s, cs_object *o)
{
    if (!cs_attrs_bool(&o->attrs, CKA_DESTROYABLE, CK_TRUE))
        return CKR_ACTION_PROHIBITED;
    if (o->session == 0) {
        if (!(s->flags & CKF_RW_SESSION))
            return CKR_SESSION_READ_ONLY;
        return cs_token_delete_object(o->tok, o);
    }
    cs_handle_remove(o);
    cs_object_free(o);
    return CKR_OK;
}

CK_RV cs_object_copy(cs_session *s, cs_object *o, const CK_ATTRIBUTE *t, CK_ULONG n,
                     CK_OBJECT_HANDLE *_h)
{
    CK_RV rv;
    if (!cs_attrs_bool(&o->attrs, CKA_COPYABLE, CK_TRUE))
        return CKR_ACTION_PROHIBITED;
    if (o->has_secret && o->secret == NULL)
        return CKR_USER_NOT_LOGGED_IN;
    cs_object *c = cs_object_new();
    if (c == NULL)
        return CKR_HOST_MEMORY;
    if ((rv = cs_attrs_copy(&c->attrs, &o->attrs)) != CKR_OK)
        goto fail;
    /* A copy may change where it lives and its usage labels, and may only
     * tighten protection (the same rules as C_SetAttributeValue). */
    for (CK_ULONG i = 0; i < n; i++) {
        if ((rv = cs_attr_check_value(&t[i])) != CKR_OK)
            goto fail;
        switch (t[i].type) {
        case CKA_TOKEN: case CKA_MODIFIABLE: case CKA_DESTROYABLE: case CKA_LABEL: case CKA_ID:
            break;
        case CKA_PRIVATE:
            /* Never from private to public: that would show a secret (or
             * let a key sign) without login. */
            if (!cs_tmpl_bool(&t[i]) && cs_object_is_private(o)) {
                rv = CKR_ATTRIBUTE_READ_ONLY;
                goto fail;
            }
            break;
        case CKA_SENSITIVE:
            if (!cs_tmpl_bool(&t[i]) && cs_attrs_bool(&o->attrs, CKA_SENSITIVE, CK_FALSE)) {
                rv = CKR_ATTRIBUTE_READ_ONLY;
                goto fail;
            }
            break;
        case CKA_EXTRACTABLE:
            if (cs_tmpl_bool(&t[i]) && !cs_attrs_bool(&o->attrs, CKA_EXTRACTABLE, CK_TRUE)) {
                rv = CKR_ATTRIBUTE_READ_ONLY;
                goto fail;
            }
            break;
        default:
            rv = CKR_ATTRIBUTE_READ_ONLY;
            goto fail;
        }
        if ((rv = cs_attrs_set(&c->attrs, t[i].type, t[i].pValue, t[i].ulValueLen)) != CKR_OK)
            goto fail;
    }
    if ((rv = check_session_rights(s, &c->attrs)) != CKR_OK)
        goto fail;
    const cs_attr *dv = cs_attrs_get(&c->attrs, CKA_VALUE);
    if (!o->has_secret && dv != NULL && cs_object_is_private(c) &&
        cs_attrs_ulong(&c->attrs, CKA_CLASS, (CK_ULONG)-1) == CKO_DATA) {
        /* A public data object copied as private: its value is sealed like
         * that of any private data object. */
        c->secret = OPENSSL_memdup(dv->val, dv->len ? dv->len : 1);
        if (c->secret == NULL) {
            rv = CKR_HOST_MEMORY;
            goto fail;
        }
        c->secret_len = dv->len;
        c->has_secret = true;
        cs_attrs_del(&c->attrs, CKA_VALUE);
        return cs_object_commit(s, c, _h);
    }
    c->has_secret = o->has_secret;
    if (o->secret != NULL) {
        c->secret = OPENSSL_memdup(o->secret, o->secret_len ? o->secret_len : 1);
        if (c->secret == NULL) {
            rv = CKR_HOST_MEMORY;
            goto fail;
        }
        c->secret_len = o->secret_len;
    }
    if (o->pkey != NULL) {
        EVP_PKEY_up_ref(o->pkey);
        c->pkey = o->pkey;
    }
    return cs_object_commit(s, c, _h);
fail:
    cs_object_free(c);
    return rv;
}
