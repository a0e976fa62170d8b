/* Key generation on the token, and imports of certificates and secrets. */
#include "internal.h"

#include <openssl/rand.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    cu_keygen_type type;
    const char *name;
} keygen_names[] = {
    {CU_KEYGEN_EC_P256, "ec-p256"}, {CU_KEYGEN_EC_P384, "ec-p384"}, {CU_KEYGEN_RSA2048, "rsa2048"},
    {CU_KEYGEN_RSA3072, "rsa3072"}, {CU_KEYGEN_RSA4096, "rsa4096"}, {CU_KEYGEN_HMAC256, "hmac256"},
};

cu_rc cu_keygen_type_parse(const char *s, cu_keygen_type *_t)
{
    for (size_t i = 0; s && i < sizeof keygen_names / sizeof keygen_names[0]; i++) {
        if (strcmp(s, keygen_names[i].name) == 0) {
            *_t = keygen_names[i].type;
            return CU_OK;
        }
    }
    return cu_err_set(CU_E_INVALID_ARG, "unknown key type '%s' (ec-p256, ec-p384, rsa2048, rsa3072, rsa4096, hmac256)",
                      s ? s : "");
}

const char *cu_keygen_type_str(cu_keygen_type t)
{
    for (size_t i = 0; i < sizeof keygen_names / sizeof keygen_names[0]; i++)
        if (keygen_names[i].type == t)
            return keygen_names[i].name;
    return "unknown";
}

/* DER OIDs of the named curves, as CKA_EC_PARAMS takes them. */
static const uint8_t oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07};
static const uint8_t oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};

/* Runs one token call on a pooled session; finds the new object afterwards. */
static cu_rc finish(cu_token *t, CK_SESSION_HANDLE s, CK_RV rv, CK_OBJECT_HANDLE h, const char *what,
                    const char *label, cu_object **_out)
{
    char name[96];
    cu_rc rc;
    if (rv != CKR_OK) {
        rc = cu_rc_from_ckr(rv);
        if (rv == CKR_MECHANISM_INVALID || rv == CKR_TEMPLATE_INCONSISTENT || rv == CKR_ATTRIBUTE_VALUE_INVALID)
            rc = CU_E_UNSUPPORTED;
        if (rv == CKR_USER_NOT_LOGGED_IN)
            rc = CU_E_PIN_MISSING;
        rc = cu_err_set_ckr(rc, rv, "%s cannot %s '%s'", cu__token_name(t, name, sizeof name), what, label);
    } else if (_out != NULL) {
        rc = cu__object_new(t, s, h, _out);
    } else {
        rc = CU_OK;
    }
    cu__session_put(t, s);
    return rc;
}

static cu_rc make_id(const uint8_t **id, size_t *id_len, uint8_t buf[16])
{
    if (*id != NULL && *id_len > 0)
        return CU_OK;
    if (RAND_bytes(buf, 16) != 1)
        return cu_err_set(CU_E_CRYPTO, "no randomness for a key id");
    *id = buf;
    *id_len = 16;
    return CU_OK;
}

cu_rc cu_token_keygen(cu_token *t, cu_keygen_type type, const char *label, const uint8_t *id, size_t id_len,
                      cu_object **_key)
{
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG bits = 0;
    CK_BYTE e65537[] = {0x01, 0x00, 0x01};
    CK_OBJECT_CLASS secret = CKO_SECRET_KEY;
    CK_KEY_TYPE generic = CKK_GENERIC_SECRET;
    CK_ULONG value_len = 32;
    uint8_t idbuf[16];
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
    CK_RV rv;
    cu_rc rc;

    if (t == NULL || label == NULL || _key == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "keygen: token, label and output are required");
    if ((rc = make_id(&id, &id_len, idbuf)) != CU_OK)
        return rc;
    if ((rc = cu__session_get(t, &s)) != CU_OK)
        return rc;
    CK_ULONG llen = strlen(label);

    if (type == CU_KEYGEN_HMAC256) {
        CK_MECHANISM mech = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
        CK_ATTRIBUTE tmpl[] = {
            {CKA_CLASS, &secret, sizeof secret},   {CKA_KEY_TYPE, &generic, sizeof generic},
            {CKA_VALUE_LEN, &value_len, sizeof value_len}, {CKA_TOKEN, &yes, sizeof yes},
            {CKA_PRIVATE, &yes, sizeof yes},       {CKA_SENSITIVE, &yes, sizeof yes},
            {CKA_EXTRACTABLE, &no, sizeof no},     {CKA_SIGN, &yes, sizeof yes},
            {CKA_VERIFY, &yes, sizeof yes},        {CKA_LABEL, (void *)label, llen},
            {CKA_ID, (void *)id, id_len},
        };
        rv = CU__P11(t->f, C_GenerateKey, s, &mech, tmpl, sizeof tmpl / sizeof tmpl[0], &priv);
        return finish(t, s, rv, priv, "generate the HMAC key", label, _key);
    }

    CK_MECHANISM mech = {CKM_EC_KEY_PAIR_GEN, NULL, 0};
    CK_ATTRIBUTE pub_tmpl[6] = {
        {CKA_TOKEN, &yes, sizeof yes}, {CKA_VERIFY, &yes, sizeof yes},
        {CKA_LABEL, (void *)label, llen}, {CKA_ID, (void *)id, id_len},
    };
    CK_ULONG n_pub = 4;
    switch (type) {
    case CU_KEYGEN_EC_P256:
        pub_tmpl[n_pub++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid_p256, sizeof oid_p256};
        break;
    case CU_KEYGEN_EC_P384:
        pub_tmpl[n_pub++] = (CK_ATTRIBUTE){CKA_EC_PARAMS, (void *)oid_p384, sizeof oid_p384};
        break;
    case CU_KEYGEN_RSA2048: case CU_KEYGEN_RSA3072: case CU_KEYGEN_RSA4096:
        mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
        bits = type == CU_KEYGEN_RSA2048 ? 2048 : type == CU_KEYGEN_RSA3072 ? 3072 : 4096;
        pub_tmpl[n_pub++] = (CK_ATTRIBUTE){CKA_MODULUS_BITS, &bits, sizeof bits};
        pub_tmpl[n_pub++] = (CK_ATTRIBUTE){CKA_PUBLIC_EXPONENT, e65537, sizeof e65537};
        break;
    default:
        cu__session_put(t, s);
        return cu_err_set(CU_E_INVALID_ARG, "unknown key type %d", (int)type);
    }
    CK_ATTRIBUTE priv_tmpl[] = {
        {CKA_TOKEN, &yes, sizeof yes},     {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes}, {CKA_EXTRACTABLE, &no, sizeof no},
        {CKA_SIGN, &yes, sizeof yes},      {CKA_LABEL, (void *)label, llen},
        {CKA_ID, (void *)id, id_len},
    };
    rv = CU__P11(t->f, C_GenerateKeyPair, s, &mech, pub_tmpl, n_pub, priv_tmpl, sizeof priv_tmpl / sizeof priv_tmpl[0],
                                 &pub, &priv);
    return finish(t, s, rv, priv, "generate the key pair", label, _key);
}

cu_rc cu_token_import_cert(cu_token *t, const uint8_t *der, size_t len, const char *label, const uint8_t *id,
                           size_t id_len, cu_object **_cert)
{
    CK_OBJECT_CLASS cls = CKO_CERTIFICATE;
    CK_CERTIFICATE_TYPE ct = CKC_X_509;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    unsigned char *subj = NULL, *iss = NULL, *ser = NULL;
    uint8_t idbuf[16];
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    cu_rc rc;

    if (t == NULL || der == NULL || label == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "import: token, certificate and label are required");
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x == NULL || p != der + len) {
        X509_free(x);
        return cu_err_set(CU_E_INVALID_ARG, "import: not a DER X.509 certificate");
    }
    int ls = i2d_X509_NAME(X509_get_subject_name(x), &subj);
    int li = i2d_X509_NAME(X509_get_issuer_name(x), &iss);
    int lr = i2d_ASN1_INTEGER(X509_get_serialNumber(x), &ser);
    X509_free(x);
    if (ls <= 0 || li <= 0 || lr <= 0) {
        rc = cu_err_set(CU_E_CRYPTO, "import: cannot encode the certificate's names");
        goto out;
    }
    if ((rc = make_id(&id, &id_len, idbuf)) != CU_OK)
        goto out;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},       {CKA_CERTIFICATE_TYPE, &ct, sizeof ct},
        {CKA_TOKEN, &yes, sizeof yes},       {CKA_PRIVATE, &no, sizeof no},
        {CKA_LABEL, (void *)label, strlen(label)}, {CKA_ID, (void *)id, id_len},
        {CKA_SUBJECT, subj, (CK_ULONG)ls},   {CKA_ISSUER, iss, (CK_ULONG)li},
        {CKA_SERIAL_NUMBER, ser, (CK_ULONG)lr}, {CKA_VALUE, (void *)der, len},
    };
    if ((rc = cu__session_get(t, &s)) != CU_OK)
        goto out;
    CK_RV rv = CU__P11(t->f, C_CreateObject, s, tmpl, sizeof tmpl / sizeof tmpl[0], &h);
    rc = finish(t, s, rv, h, "store the certificate", label, _cert);
out:
    OPENSSL_free(subj);
    OPENSSL_free(iss);
    OPENSSL_free(ser);
    return rc;
}

cu_rc cu_token_import_hmac(cu_token *t, const uint8_t *key, size_t len, const char *label, const uint8_t *id,
                           size_t id_len, cu_object **_key)
{
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    uint8_t idbuf[16];
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
    cu_rc rc;

    if (t == NULL || key == NULL || len == 0 || label == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "import: token, key and label are required");
    if ((rc = make_id(&id, &id_len, idbuf)) != CU_OK)
        return rc;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},     {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_TOKEN, &yes, sizeof yes},     {CKA_PRIVATE, &yes, sizeof yes},
        {CKA_SENSITIVE, &yes, sizeof yes}, {CKA_EXTRACTABLE, &no, sizeof no},
        {CKA_SIGN, &yes, sizeof yes},      {CKA_VERIFY, &yes, sizeof yes},
        {CKA_LABEL, (void *)label, strlen(label)}, {CKA_ID, (void *)id, id_len},
        {CKA_VALUE, (void *)key, len},
    };
    if ((rc = cu__session_get(t, &s)) != CU_OK)
        return rc;
    CK_RV rv = CU__P11(t->f, C_CreateObject, s, tmpl, sizeof tmpl / sizeof tmpl[0], &h);
    return finish(t, s, rv, h, "import the HMAC key", label, _key);
}
