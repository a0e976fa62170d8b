/* Attribute lists: owned copies of PKCS#11 attribute values. Values are
 * wiped when removed, since some lists hold key material in transit. */
#include "soft.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

/* Every attribute type the module accepts, with its value kind. Types not
 * listed are refused with CKR_ATTRIBUTE_TYPE_INVALID. */
static const struct {
    CK_ATTRIBUTE_TYPE type;
    enum cs_attr_kind kind;
} known[] = {
    {CKA_CLASS, CS_AK_ULONG},
    {CKA_TOKEN, CS_AK_BOOL},
    {CKA_PRIVATE, CS_AK_BOOL},
    {CKA_LABEL, CS_AK_BYTES},
    {CKA_APPLICATION, CS_AK_BYTES},
    {CKA_VALUE, CS_AK_BYTES},
    {CKA_OBJECT_ID, CS_AK_BYTES},
    {CKA_CERTIFICATE_TYPE, CS_AK_ULONG},
    {CKA_ISSUER, CS_AK_BYTES},
    {CKA_SERIAL_NUMBER, CS_AK_BYTES},
    {CKA_AC_ISSUER, CS_AK_BYTES},
    {CKA_OWNER, CS_AK_BYTES},
    {CKA_ATTR_TYPES, CS_AK_BYTES},
    {CKA_TRUSTED, CS_AK_BOOL},
    {CKA_CERTIFICATE_CATEGORY, CS_AK_ULONG},
    {CKA_JAVA_MIDP_SECURITY_DOMAIN, CS_AK_ULONG},
    {CKA_URL, CS_AK_BYTES},
    {CKA_HASH_OF_SUBJECT_PUBLIC_KEY, CS_AK_BYTES},
    {CKA_HASH_OF_ISSUER_PUBLIC_KEY, CS_AK_BYTES},
    {CKA_NAME_HASH_ALGORITHM, CS_AK_ULONG},
    {CKA_CHECK_VALUE, CS_AK_BYTES},
    {CKA_KEY_TYPE, CS_AK_ULONG},
    {CKA_SUBJECT, CS_AK_BYTES},
    {CKA_ID, CS_AK_BYTES},
    {CKA_SENSITIVE, CS_AK_BOOL},
    {CKA_ENCRYPT, CS_AK_BOOL},
    {CKA_DECRYPT, CS_AK_BOOL},
    {CKA_WRAP, CS_AK_BOOL},
    {CKA_UNWRAP, CS_AK_BOOL},
    {CKA_SIGN, CS_AK_BOOL},
    {CKA_SIGN_RECOVER, CS_AK_BOOL},
    {CKA_VERIFY, CS_AK_BOOL},
    {CKA_VERIFY_RECOVER, CS_AK_BOOL},
    {CKA_DERIVE, CS_AK_BOOL},
    {CKA_START_DATE, CS_AK_BYTES},
    {CKA_END_DATE, CS_AK_BYTES},
    {CKA_MODULUS, CS_AK_BYTES},
    {CKA_MODULUS_BITS, CS_AK_ULONG},
    {CKA_PUBLIC_EXPONENT, CS_AK_BYTES},
    {CKA_PRIVATE_EXPONENT, CS_AK_BYTES},
    {CKA_PRIME_1, CS_AK_BYTES},
    {CKA_PRIME_2, CS_AK_BYTES},
    {CKA_EXPONENT_1, CS_AK_BYTES},
    {CKA_EXPONENT_2, CS_AK_BYTES},
    {CKA_COEFFICIENT, CS_AK_BYTES},
    {CKA_PUBLIC_KEY_INFO, CS_AK_BYTES},
    {CKA_VALUE_BITS, CS_AK_ULONG},
    {CKA_VALUE_LEN, CS_AK_ULONG},
    {CKA_EXTRACTABLE, CS_AK_BOOL},
    {CKA_LOCAL, CS_AK_BOOL},
    {CKA_NEVER_EXTRACTABLE, CS_AK_BOOL},
    {CKA_ALWAYS_SENSITIVE, CS_AK_BOOL},
    {CKA_KEY_GEN_MECHANISM, CS_AK_ULONG},
    {CKA_MODIFIABLE, CS_AK_BOOL},
    {CKA_COPYABLE, CS_AK_BOOL},
    {CKA_DESTROYABLE, CS_AK_BOOL},
    {CKA_EC_PARAMS, CS_AK_BYTES},
    {CKA_EC_POINT, CS_AK_BYTES},
    {CKA_ALWAYS_AUTHENTICATE, CS_AK_BOOL},
    {CKA_WRAP_WITH_TRUSTED, CS_AK_BOOL},
    {CKA_ALLOWED_MECHANISMS, CS_AK_BYTES},
};

bool cs_attr_known(CK_ATTRIBUTE_TYPE type, enum cs_attr_kind *_kind)
{
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
        if (known[i].type == type) {
            if (_kind != NULL)
                *_kind = known[i].kind;
            return true;
        }
    }
    return false;
}

static cs_attr *find(const cs_attrs *l, CK_ATTRIBUTE_TYPE type)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->a[i].type == type)
            return &l->a[i];
    return NULL;
}

CK_RV cs_attrs_set(cs_attrs *l, CK_ATTRIBUTE_TYPE type, const void *val, CK_ULONG len)
{
    unsigned char *copy = NULL;
    if (len > 0) {
        copy = OPENSSL_malloc(len);
        if (copy == NULL)
            return CKR_HOST_MEMORY;
        memcpy(copy, val, len);
    }
    cs_attr *a = find(l, type);
    if (a != NULL) {
        OPENSSL_clear_free(a->val, a->len);
    } else {
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 16;
            cs_attr *na = realloc(l->a, cap * sizeof *na);
            if (na == NULL) {
                OPENSSL_clear_free(copy, len);
                return CKR_HOST_MEMORY;
            }
            l->a = na;
            l->cap = cap;
        }
        a = &l->a[l->n++];
        a->type = type;
    }
    a->val = copy;
    a->len = len;
    return CKR_OK;
}

CK_RV cs_attrs_set_bool(cs_attrs *l, CK_ATTRIBUTE_TYPE type, CK_BBOOL v)
{
    v = v ? CK_TRUE : CK_FALSE;
    return cs_attrs_set(l, type, &v, sizeof v);
}

CK_RV cs_attrs_set_ulong(cs_attrs *l, CK_ATTRIBUTE_TYPE type, CK_ULONG v)
{
    return cs_attrs_set(l, type, &v, sizeof v);
}

const cs_attr *cs_attrs_get(const cs_attrs *l, CK_ATTRIBUTE_TYPE type)
{
    return find(l, type);
}

CK_BBOOL cs_attrs_bool(const cs_attrs *l, CK_ATTRIBUTE_TYPE type, CK_BBOOL def)
{
    const cs_attr *a = find(l, type);
    if (a == NULL || a->len != sizeof(CK_BBOOL))
        return def;
    return a->val[0] ? CK_TRUE : CK_FALSE;
}

CK_ULONG cs_attrs_ulong(const cs_attrs *l, CK_ATTRIBUTE_TYPE type, CK_ULONG def)
{
    const cs_attr *a = find(l, type);
    CK_ULONG v;
    if (a == NULL || a->len != sizeof v)
        return def;
    memcpy(&v, a->val, sizeof v);
    return v;
}

void cs_attrs_del(cs_attrs *l, CK_ATTRIBUTE_TYPE type)
{
    cs_attr *a = find(l, type);
    if (a == NULL)
        return;
    OPENSSL_clear_free(a->val, a->len);
    *a = l->a[--l->n];
}

void cs_attrs_clear(cs_attrs *l)
{
    for (size_t i = 0; i < l->n; i++)
        OPENSSL_clear_free(l->a[i].val, l->a[i].len);
    free(l->a);
    l->a = NULL;
    l->n = l->cap = 0;
}

CK_RV cs_attrs_copy(cs_attrs *dst, const cs_attrs *src)
{
    for (size_t i = 0; i < src->n; i++) {
        CK_RV rv = cs_attrs_set(dst, src->a[i].type, src->a[i].val, src->a[i].len);
        if (rv != CKR_OK)
            return rv;
    }
    return CKR_OK;
}

bool cs_attrs_equal(const cs_attrs *a, const cs_attrs *b)
{
    if (a->n != b->n)
        return false;
    for (size_t i = 0; i < a->n; i++) {
        const cs_attr *x = &a->a[i], *y = cs_attrs_get(b, x->type);
        if (y == NULL || y->len != x->len || (x->len > 0 && memcmp(x->val, y->val, x->len) != 0))
            return false;
    }
    return true;
}

CK_RV cs_attr_check_value(const CK_ATTRIBUTE *t)
{
    enum cs_attr_kind kind;
    if (!cs_attr_known(t->type, &kind))
        return CKR_ATTRIBUTE_TYPE_INVALID;
    if (t->pValue == NULL && t->ulValueLen != 0)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if (kind == CS_AK_BOOL && t->ulValueLen != sizeof(CK_BBOOL))
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if (kind == CS_AK_ULONG && t->ulValueLen != sizeof(CK_ULONG))
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if ((t->type == CKA_START_DATE || t->type == CKA_END_DATE) && t->ulValueLen != 0 &&
        t->ulValueLen != sizeof(CK_DATE))
        return CKR_ATTRIBUTE_VALUE_INVALID;
    return CKR_OK;
}

CK_BBOOL cs_tmpl_bool(const CK_ATTRIBUTE *t)
{
    return *(const CK_BBOOL *)t->pValue ? CK_TRUE : CK_FALSE;
}

CK_ULONG cs_tmpl_ulong(const CK_ATTRIBUTE *t)
{
    CK_ULONG v;
    memcpy(&v, t->pValue, sizeof v);
    return v;
}

const CK_ATTRIBUTE *cs_tmpl_find(const CK_ATTRIBUTE *t, CK_ULONG n, CK_ATTRIBUTE_TYPE type)
{
    for (CK_ULONG i = 0; i < n; i++)
        if (t[i].type == type)
            return &t[i];
    return NULL;
}

void cs_pad(unsigned char *dst, size_t n, const char *src)
{
    size_t l = src ? strlen(src) : 0;
    memset(dst, ' ', n);
    memcpy(dst, src, l < n ? l : n);
}
