/* The key object: a token handle plus its public half, reference-counted. */
#include "key.h"

#include <openssl/x509.h>
#include <stdlib.h>

cu_prov_key *cu_prov_key_new(cu_prov_ctx *pc, cu_key_type type)
{
    cu_prov_key *k = OPENSSL_zalloc(sizeof *k);
    if (k == NULL)
        return NULL;
    k->pc = pc;
    k->refs = 1;
    k->type = type;
    return k;
}

cu_prov_key *cu_prov_key_ref(cu_prov_key *k)
{
    if (k != NULL)
        __atomic_add_fetch(&k->refs, 1, __ATOMIC_RELAXED);
    return k;
}

void cu_prov_key_unref(cu_prov_key *k)
{
    if (k == NULL || __atomic_sub_fetch(&k->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    cu_object_free(k->obj);
    EVP_PKEY_free(k->pub);
    OPENSSL_free(k);
}

const char *cu_prov_key_type_name(cu_key_type t)
{
    switch (t) {
    case CU_KEY_EC: return "EC";
    case CU_KEY_RSA: return "RSA";
    default: return NULL;
    }
}

/* DER length of an INTEGER of at most n content bytes (+1 for a sign byte). */
static size_t der_int_max(size_t n)
{
    n += 1;
    return 1 + (n < 128 ? 1 : n < 256 ? 2 : 3) + n;
}

int cu_prov_key_set_pub(cu_prov_key *k, EVP_PKEY *pub)
{
    int id = EVP_PKEY_get_base_id(pub);
    if ((k->type == CU_KEY_EC && id != EVP_PKEY_EC) || (k->type == CU_KEY_RSA && id != EVP_PKEY_RSA)) {
        CU_PROV_RAISE(k->pc, CU_E_KEY_TYPE, "public key is %s, expected %s",
                      EVP_PKEY_get0_type_name(pub), cu_prov_key_type_name(k->type));
        return 0;
    }
    if (!EVP_PKEY_up_ref(pub))
        return 0;
    EVP_PKEY_free(k->pub);
    k->pub = pub;
    k->has_public = true;
    k->bits = (unsigned)EVP_PKEY_get_bits(pub);
    if (k->type == CU_KEY_EC) {
        k->ec_field = (k->bits + 7) / 8;
        size_t body = 2 * der_int_max(k->ec_field);
        k->max_sig = 1 + (body < 128 ? 1 : body < 256 ? 2 : 3) + body;
    } else {
        k->ec_field = 0;
        k->max_sig = (k->bits + 7) / 8;
    }
    return 1;
}

int cu_prov_key_set_spki(cu_prov_key *k, const uint8_t *der, size_t len)
{
    const unsigned char *p = der;
    EVP_PKEY *pub = d2i_PUBKEY_ex(NULL, &p, (long)len, k->pc->sw, NULL);
    if (pub == NULL) {
        CU_PROV_RAISE(k->pc, CU_PROV_R_SOFTWARE, "cannot parse the token's public key");
        return 0;
    }
    int ok = cu_prov_key_set_pub(k, pub);
    EVP_PKEY_free(pub);
    return ok;
}

int cu_prov_key_from_object(cu_prov_ctx *pc, cu_object *obj, bool public_only, cu_prov_key **_key)
{
    int ok = 0;
    uint8_t *der = NULL;
    size_t len = 0;
    cu_prov_key *k = NULL;
    cu_key_type type = cu_object_key_type(obj);
    cu_class cls = cu_object_class(obj);
    cu_rc rc;

    if (type != CU_KEY_EC && type != CU_KEY_RSA) {
        CU_PROV_RAISE(pc, CU_E_KEY_TYPE, "object \"%s\" is a %s key; only EC and RSA keys are supported",
                      cu_object_label(obj) ? cu_object_label(obj) : "", cu_key_type_str(type));
        goto out;
    }
    if (cls != CU_CLASS_PRIVATE_KEY && cls != CU_CLASS_PUBLIC_KEY) {
        CU_PROV_RAISE(pc, CU_E_KEY_TYPE, "object is a %s, not a key", cu_class_str(cls));
        goto out;
    }
    if ((k = cu_prov_key_new(pc, type)) == NULL)
        goto out;
    rc = cu_object_public_der(obj, &der, &len);
    if (rc != CU_OK) {
        CU_PROV_RAISE_RC(pc, rc, "reading the public key");
        goto out;
    }
    if (!cu_prov_key_set_spki(k, der, len))
        goto out;
    if (cls == CU_CLASS_PRIVATE_KEY && !public_only) {
        k->obj = obj; /* the key owns it from here */
        obj = NULL;
    }
    *_key = k;
    k = NULL;
    ok = 1;
out:
    free(der);
    cu_object_free(obj);
    cu_prov_key_unref(k);
    return ok;
}
