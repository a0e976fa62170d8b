/* Key management for EC and RSA keys whose private half stays in a token.
 *
 * Public parts come from the token once, when a key is loaded, and live as a
 * software key in the provider's private library context: get_params,
 * export (public parts only for token keys), match and import of a public
 * key (to compare with a certificate's key) all work on it. Key generation
 * with the "pkcs11-uri" parameter makes the key pair on the token; without
 * it, a software key for TLS ephemeral use (see key.h). */
#include "key.h"

#include "implementations.h"

#include <openssl/core_names.h>
#include <openssl/params.h>
#include <string.h>

#define KEYGEN_URI_PARAM "pkcs11-uri"

#define SELECT_KEYPAIR (OSSL_KEYMGMT_SELECT_PRIVATE_KEY | OSSL_KEYMGMT_SELECT_PUBLIC_KEY)

static OSSL_FUNC_keymgmt_new_fn ec_new, rsa_new;
static OSSL_FUNC_keymgmt_free_fn km_free;
static OSSL_FUNC_keymgmt_load_fn km_load;
static OSSL_FUNC_keymgmt_has_fn km_has;
static OSSL_FUNC_keymgmt_validate_fn km_validate;
static OSSL_FUNC_keymgmt_match_fn km_match;
static OSSL_FUNC_keymgmt_dup_fn km_dup;
static OSSL_FUNC_keymgmt_get_params_fn km_get_params;
static OSSL_FUNC_keymgmt_gettable_params_fn ec_gettable_params, rsa_gettable_params;
static OSSL_FUNC_keymgmt_set_params_fn km_set_params;
static OSSL_FUNC_keymgmt_settable_params_fn ec_settable_params, rsa_settable_params;
static OSSL_FUNC_keymgmt_query_operation_name_fn ec_query_operation_name, rsa_query_operation_name;
static OSSL_FUNC_keymgmt_import_fn km_import;
static OSSL_FUNC_keymgmt_import_types_fn ec_import_types, rsa_import_types;
static OSSL_FUNC_keymgmt_export_fn km_export;
static OSSL_FUNC_keymgmt_export_types_fn ec_export_types, rsa_export_types;
static OSSL_FUNC_keymgmt_gen_init_fn ec_gen_init, rsa_gen_init;
static OSSL_FUNC_keymgmt_gen_set_template_fn km_gen_set_template;
static OSSL_FUNC_keymgmt_gen_set_params_fn km_gen_set_params;
static OSSL_FUNC_keymgmt_gen_settable_params_fn ec_gen_settable_params, rsa_gen_settable_params;
static OSSL_FUNC_keymgmt_gen_fn km_gen;
static OSSL_FUNC_keymgmt_gen_cleanup_fn km_gen_cleanup;

static void *ec_new(void *provctx)
{
    return cu_prov_key_new(provctx, CU_KEY_EC);
}

static void *rsa_new(void *provctx)
{
    return cu_prov_key_new(provctx, CU_KEY_RSA);
}

static void km_free(void *keydata)
{
    cu_prov_key_unref(keydata);
}

/* The store loader passes a reference to its own key object. */
static void *km_load(const void *reference, size_t reference_sz)
{
    cu_prov_key *k = NULL;
    if (reference == NULL || reference_sz != sizeof k)
        return NULL;
    memcpy(&k, reference, sizeof k);
    return cu_prov_key_ref(k);
}

static int km_has(const void *keydata, int selection)
{
    const cu_prov_key *k = keydata;
    if (k == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && k->obj == NULL && !k->soft_private)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) && !k->has_public)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS) && k->pub == NULL)
        return 0;
    return 1;
}

static int km_validate(const void *keydata, int selection, int checktype)
{
    (void)checktype;
    return km_has(keydata, selection);
}

static int km_match(const void *keydata1, const void *keydata2, int selection)
{
    const cu_prov_key *a = keydata1, *b = keydata2;
    if (a == NULL || b == NULL || a->type != b->type)
        return 0;
    if (a == b || (a->obj != NULL && a->obj == b->obj))
        return 1;
    if (a->pub == NULL || b->pub == NULL)
        return 0;
    if (selection & SELECT_KEYPAIR)
        return EVP_PKEY_eq(a->pub, b->pub) == 1;
    if (selection & OSSL_KEYMGMT_SELECT_ALL_PARAMETERS)
        return EVP_PKEY_parameters_eq(a->pub, b->pub) == 1;
    return 1;
}

static void *km_dup(const void *keydata, int selection)
{
    (void)selection;
    cu_prov_key *k = (cu_prov_key *)keydata;
    if (k == NULL)
        return NULL;
    if (k->obj != NULL || k->pub == NULL)
        return cu_prov_key_ref(k); /* token keys never change */
    /* A software key may be changed by set_params: copy it. */
    cu_prov_key *d = cu_prov_key_new(k->pc, k->type);
    EVP_PKEY *pk = EVP_PKEY_dup(k->pub);
    if (d == NULL || pk == NULL || !cu_prov_key_set_pub(d, pk)) {
        EVP_PKEY_free(pk);
        cu_prov_key_unref(d);
        return NULL;
    }
    EVP_PKEY_free(pk);
    d->has_public = k->has_public;
    d->soft_private = k->soft_private;
    return d;
}

static int km_get_params(void *keydata, OSSL_PARAM params[])
{
    cu_prov_key *k = keydata;
    if (k == NULL)
        return 0;
    if (k->pub == NULL)
        return 1;
    /* Everything public (bits, security-bits, max-size, group, default
     * digest, encoded public key, n and e) is the software twin's. */
    if (!EVP_PKEY_get_params(k->pub, params))
        return 0;
    OSSL_PARAM *p = OSSL_PARAM_locate(params, OSSL_PKEY_PARAM_MAX_SIZE);
    if (p != NULL && !OSSL_PARAM_set_int(p, (int)k->max_sig))
        return 0;
    return 1;
}

static const OSSL_PARAM *ec_gettable_params(void *provctx)
{
    return EVP_KEYMGMT_gettable_params(((cu_prov_ctx *)provctx)->sw_ec);
}

static const OSSL_PARAM *rsa_gettable_params(void *provctx)
{
    return EVP_KEYMGMT_gettable_params(((cu_prov_ctx *)provctx)->sw_rsa);
}

static int km_set_params(void *keydata, const OSSL_PARAM params[])
{
    cu_prov_key *k = keydata;
    if (k == NULL)
        return 0;
    if (params == NULL || params[0].key == NULL)
        return 1;
    if (k->obj != NULL || k->pub == NULL) {
        CU_PROV_RAISE(k->pc, CU_PROV_R_BAD_PARAM, "a token key cannot be changed");
        return 0;
    }
    if (!EVP_PKEY_set_params(k->pub, (OSSL_PARAM *)params))
        return 0;
    if (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY) != NULL)
        k->has_public = true;
    return 1;
}

static const OSSL_PARAM *ec_settable_params(void *provctx)
{
    return EVP_KEYMGMT_settable_params(((cu_prov_ctx *)provctx)->sw_ec);
}

static const OSSL_PARAM *rsa_settable_params(void *provctx)
{
    return EVP_KEYMGMT_settable_params(((cu_prov_ctx *)provctx)->sw_rsa);
}

/* Other operations (ECDH, RSA encryption) are the default provider's: a
 * software key exports to it; a token key's private half does not. */
static const char *ec_query_operation_name(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? CU_PROV_SIG_ECDSA : operation_id == OSSL_OP_KEYEXCH ? "ECDH" : NULL;
}

static const char *rsa_query_operation_name(int operation_id)
{
    return operation_id == OSSL_OP_SIGNATURE ? CU_PROV_SIG_RSA : NULL;
}

/* Imports a software key: public parts (a certificate's key, for match) or a
 * whole key pair (EVP_PKEY_fromdata on "EC" or "RSA" when custos was met
 * first). It lives in the private library context and works in software. */
static int km_import(void *keydata, int selection, const OSSL_PARAM params[])
{
    cu_prov_key *k = keydata;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pk = NULL;
    int ok = 0;

    if (k == NULL || k->obj != NULL)
        return 0;
    bool priv = (selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY)
                && (OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_PRIV_KEY) != NULL
                    || OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_D) != NULL);
    int sel = priv ? EVP_PKEY_KEYPAIR
              : (selection & OSSL_KEYMGMT_SELECT_PUBLIC_KEY) ? EVP_PKEY_PUBLIC_KEY : EVP_PKEY_KEY_PARAMETERS;
    ctx = EVP_PKEY_CTX_new_from_name(k->pc->sw, cu_prov_key_type_name(k->type), NULL);
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0
        || EVP_PKEY_fromdata(ctx, &pk, sel, (OSSL_PARAM *)params) <= 0)
        goto out;
    if (!cu_prov_key_set_pub(k, pk))
        goto out;
    k->has_public = (sel != EVP_PKEY_KEY_PARAMETERS);
    k->soft_private = priv;
    ok = 1;
out:
    EVP_PKEY_free(pk);
    EVP_PKEY_CTX_free(ctx);
    return ok;
}

static const OSSL_PARAM ec_types[] = {
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
    OSSL_PARAM_octet_string(OSSL_PKEY_PARAM_PUB_KEY, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
    OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM rsa_types[] = {
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_N, NULL, 0),
    OSSL_PARAM_BN(OSSL_PKEY_PARAM_RSA_E, NULL, 0),
    OSSL_PARAM_END,
};

static const OSSL_PARAM *ec_import_types(int selection)
{
    (void)selection;
    return ec_types;
}

static const OSSL_PARAM *rsa_import_types(int selection)
{
    (void)selection;
    return rsa_types;
}

static const OSSL_PARAM *ec_export_types(int selection)
{
    (void)selection;
    return ec_types;
}

static const OSSL_PARAM *rsa_export_types(int selection)
{
    (void)selection;
    return rsa_types;
}

/* Exports public parts. The private half of a token key never leaves: a
 * request for it fails, which also tells OpenSSL to run the operation here
 * rather than in another provider. */
static int km_export(void *keydata, int selection, OSSL_CALLBACK *cb, void *cbarg)
{
    cu_prov_key *k = keydata;
    if (k == NULL || k->pub == NULL)
        return 0;
    if ((selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY) && k->obj != NULL)
        return 0;
    int sel = selection & (SELECT_KEYPAIR | OSSL_KEYMGMT_SELECT_ALL_PARAMETERS);
    if (!k->has_public)
        sel &= ~OSSL_KEYMGMT_SELECT_PUBLIC_KEY;
    return EVP_PKEY_export(k->pub, sel, cb, cbarg);
}

/* ---- Key generation ---- */

typedef struct gen_ctx {
    cu_prov_ctx *pc;
    cu_key_type type;
    int selection;
    char *uri;          /* pkcs11-uri: generate on this token (no pin-value) */
    char *pin;          /* its pin-value, if it had one */
    char *group;        /* EC curve name */
    size_t bits;        /* RSA modulus size */
    EVP_PKEY_CTX *sw;   /* software generation when there is no URI */
} gen_ctx;

static void *gen_init(cu_prov_ctx *pc, cu_key_type type, int selection, const OSSL_PARAM params[])
{
    gen_ctx *g = OPENSSL_zalloc(sizeof *g);
    if (g == NULL)
        return NULL;
    g->pc = pc;
    g->type = type;
    g->selection = selection;
    g->bits = 2048;
    g->sw = EVP_PKEY_CTX_new_from_name(pc->sw, cu_prov_key_type_name(type), NULL);
    int r = (selection & SELECT_KEYPAIR) ? EVP_PKEY_keygen_init(g->sw) : EVP_PKEY_paramgen_init(g->sw);
    if (g->sw == NULL || r <= 0 || !km_gen_set_params(g, params)) {
        km_gen_cleanup(g);
        return NULL;
    }
    return g;
}

static void *ec_gen_init(void *provctx, int selection, const OSSL_PARAM params[])
{
    return gen_init(provctx, CU_KEY_EC, selection, params);
}

static void *rsa_gen_init(void *provctx, int selection, const OSSL_PARAM params[])
{
    return gen_init(provctx, CU_KEY_RSA, selection, params);
}

static int set_str(char **dst, const char *s)
{
    char *c = OPENSSL_strdup(s);
    if (c == NULL)
        return 0;
    OPENSSL_free(*dst);
    *dst = c;
    return 1;
}

static int km_gen_set_template(void *genctx, void *templ)
{
    gen_ctx *g = genctx;
    cu_prov_key *t = templ;
    char name[64];
    if (g->type != CU_KEY_EC || t == NULL || t->pub == NULL)
        return 1;
    if (!EVP_PKEY_get_group_name(t->pub, name, sizeof name, NULL) || !set_str(&g->group, name))
        return 0;
    OSSL_PARAM p[] = { OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, name, 0), OSSL_PARAM_END };
    return EVP_PKEY_CTX_set_params(g->sw, p) > 0;
}

static int km_gen_set_params(void *genctx, const OSSL_PARAM params[])
{
    gen_ctx *g = genctx;
    const OSSL_PARAM *p;
    const char *s = NULL;
    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, KEYGEN_URI_PARAM)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s) || !cu_prov_is_pkcs11_uri(s)) {
            CU_PROV_RAISE(g->pc, CU_PROV_R_NOT_A_PKCS11_URI, "%s must be a pkcs11: URI", KEYGEN_URI_PARAM);
            return 0;
        }
        char *clean = NULL, *pin = NULL;
        if (!cu_prov_uri_split_pin(s, &clean, &pin))
            return 0;
        OPENSSL_free(g->uri);
        g->uri = clean;
        if (g->pin != NULL)
            OPENSSL_clear_free(g->pin, strlen(g->pin));
        g->pin = pin;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_GROUP_NAME)) != NULL) {
        if (!OSSL_PARAM_get_utf8_string_ptr(p, &s) || !set_str(&g->group, s))
            return 0;
    }
    if ((p = OSSL_PARAM_locate_const(params, OSSL_PKEY_PARAM_RSA_BITS)) != NULL) {
        if (!OSSL_PARAM_get_size_t(p, &g->bits))
            return 0;
    }
    /* The rest matters only for software keys; the default provider takes
     * what it knows and ignores the URI. */
    return EVP_PKEY_CTX_set_params(g->sw, params) > 0;
}

static const OSSL_PARAM *ec_gen_settable_params(void *genctx, void *provctx)
{
    (void)genctx;
    (void)provctx;
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_utf8_string(KEYGEN_URI_PARAM, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_ENCODING, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, NULL, 0),
        OSSL_PARAM_END,
    };
    return p;
}

static const OSSL_PARAM *rsa_gen_settable_params(void *genctx, void *provctx)
{
    (void)genctx;
    (void)provctx;
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_utf8_string(KEYGEN_URI_PARAM, NULL, 0),
        OSSL_PARAM_size_t(OSSL_PKEY_PARAM_RSA_BITS, NULL),
        OSSL_PARAM_END,
    };
    return p;
}

static int keygen_type(gen_ctx *g, cu_keygen_type *_t)
{
    if (g->type == CU_KEY_EC) {
        const char *c = g->group != NULL ? g->group : "P-256";
        if (OPENSSL_strcasecmp(c, "P-256") == 0 || OPENSSL_strcasecmp(c, "prime256v1") == 0
            || OPENSSL_strcasecmp(c, "secp256r1") == 0)
            *_t = CU_KEYGEN_EC_P256;
        else if (OPENSSL_strcasecmp(c, "P-384") == 0 || OPENSSL_strcasecmp(c, "secp384r1") == 0)
            *_t = CU_KEYGEN_EC_P384;
        else {
            CU_PROV_RAISE(g->pc, CU_E_UNSUPPORTED, "curve %s: tokens keys are P-256 or P-384", c);
            return 0;
        }
        return 1;
    }
    switch (g->bits) {
    case 2048: *_t = CU_KEYGEN_RSA2048; return 1;
    case 3072: *_t = CU_KEYGEN_RSA3072; return 1;
    case 4096: *_t = CU_KEYGEN_RSA4096; return 1;
    default:
        CU_PROV_RAISE(g->pc, CU_E_UNSUPPORTED, "RSA %zu bits: token keys are 2048, 3072 or 4096 bits", g->bits);
        return 0;
    }
}

static void *gen_on_token(gen_ctx *g)
{
    cu_keygen_type type;
    cu_token *tok = NULL;
    cu_object *obj = NULL;
    cu_prov_key *k = NULL;
    char *label = NULL, *id = NULL;
    size_t label_len = 0, id_len = 0;
    cu_rc rc;

    if (!(g->selection & OSSL_KEYMGMT_SELECT_PRIVATE_KEY)) {
        CU_PROV_RAISE(g->pc, CU_E_UNSUPPORTED, "only key pairs are generated on a token");
        return NULL;
    }
    if (!keygen_type(g, &type))
        return NULL;
    (void)cu_prov_uri_attr(g->uri, "object", &label, &label_len);
    (void)cu_prov_uri_attr(g->uri, "id", &id, &id_len);
    if ((rc = cu_prov_token(g->pc, g->uri, g->pin, &tok)) != CU_OK) {
        CU_PROV_RAISE_RC(g->pc, rc, "opening the token for key generation");
        goto out;
    }
    rc = cu_token_keygen(tok, type, label, (const uint8_t *)id, id_len, &obj);
    if (rc != CU_OK) {
        CU_PROV_RAISE_RC(g->pc, rc, "generating the key on the token");
        goto out;
    }
    cu_prov_log_msg(g->pc, CU_PROV_LOG_INFO, "generated %s key \"%s\" on token \"%s\"",
                    cu_keygen_type_str(type), label != NULL ? label : "", cu_token_get0_desc(tok)->label);
    (void)cu_prov_key_from_object(g->pc, obj, false, &k);
out:
    OPENSSL_free(label);
    OPENSSL_free(id);
    cu_token_unref(tok);
    return k;
}

static void *km_gen(void *genctx, OSSL_CALLBACK *cb, void *cbarg)
{
    gen_ctx *g = genctx;
    (void)cb;
    (void)cbarg;
    if (g->uri != NULL)
        return gen_on_token(g);

    EVP_PKEY *pk = NULL;
    cu_prov_key *k = NULL;
    bool pair = (g->selection & SELECT_KEYPAIR) != 0;
    if ((pair ? EVP_PKEY_generate(g->sw, &pk) : EVP_PKEY_paramgen(g->sw, &pk)) <= 0)
        return NULL;
    if ((k = cu_prov_key_new(g->pc, g->type)) != NULL && cu_prov_key_set_pub(k, pk)) {
        k->has_public = pair;
        k->soft_private = pair;
    } else {
        cu_prov_key_unref(k);
        k = NULL;
    }
    EVP_PKEY_free(pk);
    return k;
}

static void km_gen_cleanup(void *genctx)
{
    gen_ctx *g = genctx;
    if (g == NULL)
        return;
    EVP_PKEY_CTX_free(g->sw);
    OPENSSL_free(g->uri);
    if (g->pin != NULL)
        OPENSSL_clear_free(g->pin, strlen(g->pin));
    OPENSSL_free(g->group);
    OPENSSL_free(g);
}

#define COMMON_FUNCTIONS                                                                   \
    { OSSL_FUNC_KEYMGMT_FREE, (void (*)(void))km_free },                                   \
    { OSSL_FUNC_KEYMGMT_LOAD, (void (*)(void))km_load },                                   \
    { OSSL_FUNC_KEYMGMT_HAS, (void (*)(void))km_has },                                     \
    { OSSL_FUNC_KEYMGMT_VALIDATE, (void (*)(void))km_validate },                           \
    { OSSL_FUNC_KEYMGMT_MATCH, (void (*)(void))km_match },                                 \
    { OSSL_FUNC_KEYMGMT_DUP, (void (*)(void))km_dup },                                     \
    { OSSL_FUNC_KEYMGMT_GET_PARAMS, (void (*)(void))km_get_params },                       \
    { OSSL_FUNC_KEYMGMT_SET_PARAMS, (void (*)(void))km_set_params },                       \
    { OSSL_FUNC_KEYMGMT_IMPORT, (void (*)(void))km_import },                               \
    { OSSL_FUNC_KEYMGMT_EXPORT, (void (*)(void))km_export },                               \
    { OSSL_FUNC_KEYMGMT_GEN_SET_TEMPLATE, (void (*)(void))km_gen_set_template },           \
    { OSSL_FUNC_KEYMGMT_GEN_SET_PARAMS, (void (*)(void))km_gen_set_params },               \
    { OSSL_FUNC_KEYMGMT_GEN, (void (*)(void))km_gen },                                     \
    { OSSL_FUNC_KEYMGMT_GEN_CLEANUP, (void (*)(void))km_gen_cleanup }

const OSSL_DISPATCH cu_prov_ec_keymgmt_functions[] = {
    { OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))ec_new },
    { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))ec_gettable_params },
    { OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, (void (*)(void))ec_settable_params },
    { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))ec_query_operation_name },
    { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))ec_import_types },
    { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))ec_export_types },
    { OSSL_FUNC_KEYMGMT_GEN_INIT, (void (*)(void))ec_gen_init },
    { OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, (void (*)(void))ec_gen_settable_params },
    COMMON_FUNCTIONS,
    { 0, NULL },
};

const OSSL_DISPATCH cu_prov_rsa_keymgmt_functions[] = {
    { OSSL_FUNC_KEYMGMT_NEW, (void (*)(void))rsa_new },
    { OSSL_FUNC_KEYMGMT_GETTABLE_PARAMS, (void (*)(void))rsa_gettable_params },
    { OSSL_FUNC_KEYMGMT_SETTABLE_PARAMS, (void (*)(void))rsa_settable_params },
    { OSSL_FUNC_KEYMGMT_QUERY_OPERATION_NAME, (void (*)(void))rsa_query_operation_name },
    { OSSL_FUNC_KEYMGMT_IMPORT_TYPES, (void (*)(void))rsa_import_types },
    { OSSL_FUNC_KEYMGMT_EXPORT_TYPES, (void (*)(void))rsa_export_types },
    { OSSL_FUNC_KEYMGMT_GEN_INIT, (void (*)(void))rsa_gen_init },
    { OSSL_FUNC_KEYMGMT_GEN_SETTABLE_PARAMS, (void (*)(void))rsa_gen_settable_params },
    COMMON_FUNCTIONS,
    { 0, NULL },
};
