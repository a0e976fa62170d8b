/* The OSSL_STORE loader for pkcs11: URIs: private keys, public keys and
 * certificates.
 *
 * When one key is wanted (OSSL_STORE_expect PKEY or PUBKEY) or the URI names
 * an object (object= or id=), a URI that matches several objects of a class
 * is an error that says how many and which; otherwise (a listing, e.g.
 * `openssl storeutl`, or X509_LOOKUP_store over a token's certificates) every
 * match is returned. A public key is read from a public-key object, else from
 * the private key's public half. If the token needs a PIN and none is given
 * (URI, openssl.cnf, $CUSTOS_PIN), the passphrase callback is asked. */
#include "key.h"

#include "implementations.h"

#include <openssl/core_names.h>
#include <openssl/core_object.h>
#include <openssl/params.h>
#include <openssl/store.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#define CKF_LOGIN_REQUIRED_FLAG 0x4UL /* CK_TOKEN_INFO.flags */

typedef struct result {
    int kind;          /* OSSL_STORE_INFO_PKEY, _PUBKEY or _CERT */
    cu_prov_key *key;
    uint8_t *der;      /* certificate */
    size_t len;
    char *desc;
} result;

typedef struct store_ctx {
    cu_prov_ctx *pc;
    char *uri;         /* without pin-value */
    char *pin;         /* the URI's pin-value, or NULL */
    int expect;
    uint8_t *subject;  /* DER of a subject name to filter certificates by */
    size_t subject_len;
    bool searched, failed;
    result *res;
    size_t n, next;
} store_ctx;

static OSSL_FUNC_store_open_fn st_open;
static OSSL_FUNC_store_settable_ctx_params_fn st_settable_ctx_params;
static OSSL_FUNC_store_set_ctx_params_fn st_set_ctx_params;
static OSSL_FUNC_store_load_fn st_load;
static OSSL_FUNC_store_eof_fn st_eof;
static OSSL_FUNC_store_close_fn st_close;

static void *st_open(void *provctx, const char *uri)
{
    cu_prov_ctx *pc = provctx;
    if (!cu_prov_is_pkcs11_uri(uri)) {
        CU_PROV_RAISE(pc, CU_PROV_R_NOT_A_PKCS11_URI, "not a pkcs11: URI");
        return NULL;
    }
    store_ctx *s = OPENSSL_zalloc(sizeof *s);
    if (s == NULL || !cu_prov_uri_split_pin(uri, &s->uri, &s->pin)) {
        OPENSSL_free(s);
        return NULL;
    }
    s->pc = pc;
    return s;
}

static const OSSL_PARAM *st_settable_ctx_params(void *provctx)
{
    (void)provctx;
    static const OSSL_PARAM p[] = {
        OSSL_PARAM_int(OSSL_STORE_PARAM_EXPECT, NULL),
        OSSL_PARAM_octet_string(OSSL_STORE_PARAM_SUBJECT, NULL, 0),
        OSSL_PARAM_utf8_string(OSSL_STORE_PARAM_PROPERTIES, NULL, 0),
        OSSL_PARAM_END,
    };
    return p;
}

static int st_set_ctx_params(void *loaderctx, const OSSL_PARAM params[])
{
    store_ctx *s = loaderctx;
    const OSSL_PARAM *p;
    if (params == NULL)
        return 1;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_EXPECT)) != NULL
        && !OSSL_PARAM_get_int(p, &s->expect))
        return 0;
    if ((p = OSSL_PARAM_locate_const(params, OSSL_STORE_PARAM_SUBJECT)) != NULL) {
        OPENSSL_free(s->subject);
        s->subject = NULL;
        if (!OSSL_PARAM_get_octet_string(p, (void **)&s->subject, 0, &s->subject_len))
            return 0;
    }
    return 1;
}

static int add_result(store_ctx *s, int kind, cu_prov_key *key, uint8_t *der, size_t len, const char *desc)
{
    result *r = OPENSSL_realloc(s->res, (s->n + 1) * sizeof *r);
    if (r == NULL)
        return 0;
    s->res = r;
    r[s->n].kind = kind;
    r[s->n].key = key;
    r[s->n].der = der;
    r[s->n].len = len;
    r[s->n].desc = desc != NULL ? OPENSSL_strdup(desc) : NULL;
    s->n++;
    return 1;
}

static bool subject_matches(store_ctx *s, const uint8_t *der, size_t len)
{
    if (s->subject == NULL)
        return true;
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    bool ok = false;
    if (x != NULL) {
        unsigned char *name = NULL;
        int n = i2d_X509_NAME(X509_get_subject_name(x), &name);
        ok = n > 0 && (size_t)n == s->subject_len && memcmp(name, s->subject, (size_t)n) == 0;
        OPENSSL_free(name);
        X509_free(x);
    }
    return ok;
}

static const char *class_words(cu_class c)
{
    switch (c) {
    case CU_CLASS_PRIVATE_KEY: return "private keys";
    case CU_CLASS_PUBLIC_KEY: return "public keys";
    case CU_CLASS_CERTIFICATE: return "certificates";
    default: return "objects";
    }
}

/* Finds the objects of one class; unique says several are an error. */
static int find_class(store_ctx *s, cu_token *tok, cu_class cls, bool unique, cu_object ***_objs, size_t *_n)
{
    cu_rc rc = cu_token_find_all(tok, s->uri, cls, _objs, _n);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        *_objs = NULL;
        *_n = 0;
        return 1;
    }
    if (rc != CU_OK)
        return CU_PROV_RAISE_RC(s->pc, rc, "searching the token");
    if (unique && *_n > 1) {
        char names[256] = "";
        size_t o = 0;
        for (size_t i = 0; i < *_n && o + 40 < sizeof names; i++) {
            const char *l = cu_object_label((*_objs)[i]);
            o += (size_t)snprintf(names + o, sizeof names - o, "%s\"%.32s\"", i ? ", " : "", l ? l : "");
        }
        CU_PROV_RAISE(s->pc, CU_E_AMBIGUOUS, "the URI matches %zu %s (labels %s); add object= or id= to name one",
                      *_n, class_words(cls), names);
        cu_objects_free(*_objs, *_n);
        *_objs = NULL;
        *_n = 0;
        return 0;
    }
    return 1;
}

static int search(store_ctx *s, OSSL_PASSPHRASE_CALLBACK *pw_cb, void *pw_cbarg)
{
    int ok = 0;
    cu_token *tok = NULL;
    cu_object **objs = NULL;
    size_t n = 0;
    char *type = NULL, *tmp = NULL;
    size_t tl = 0;
    char pin[256];

    /* Which classes: from what the caller expects, narrowed by the URI's type. */
    bool t_priv = true, t_pub = true, t_cert = true;
    if (cu_prov_uri_attr(s->uri, "type", &type, &tl)) {
        t_priv = strcmp(type, "private") == 0;
        t_pub = strcmp(type, "public") == 0;
        t_cert = strcmp(type, "cert") == 0;
        if (!t_priv && !t_pub && !t_cert) {
            CU_PROV_RAISE(s->pc, CU_E_URI, "type=%s: the store loads private, public and cert objects", type);
            goto out;
        }
    }
    if (s->expect == OSSL_STORE_INFO_PKEY && !t_priv) {
        CU_PROV_RAISE(s->pc, CU_PROV_R_NO_PRIVATE_KEY, "the URI names a %s (type=%s); a private key is needed",
                      t_pub ? "public key" : "certificate", type);
        goto out;
    }
    bool find_priv = false, find_pub = false, priv_for_pub = false, want_cert = false;
    switch (s->expect) {
    case OSSL_STORE_INFO_PKEY: find_priv = t_priv; break;
    case OSSL_STORE_INFO_PUBKEY: find_pub = t_pub; priv_for_pub = t_priv; break;
    case OSSL_STORE_INFO_CERT: want_cert = t_cert; break;
    case 0:
        /* A search by subject name is for certificates (X509_LOOKUP_store). */
        find_priv = t_priv && s->subject == NULL;
        find_pub = t_pub && s->subject == NULL;
        want_cert = t_cert;
        break;
    default: ok = 1; goto out; /* parameters, CRLs, names: none here */
    }
    bool named = cu_prov_uri_attr(s->uri, "object", &tmp, &tl);
    OPENSSL_free(tmp);
    tmp = NULL;
    named = named || cu_prov_uri_attr(s->uri, "id", &tmp, &tl);
    bool one_key = s->expect == OSSL_STORE_INFO_PKEY || s->expect == OSSL_STORE_INFO_PUBKEY;
    bool unique = named || one_key;

    cu_rc rc = cu_prov_token(s->pc, s->uri, s->pin, &tok);
    if (rc != CU_OK) {
        CU_PROV_RAISE_RC(s->pc, rc, "opening the token");
        goto out;
    }
    /* Private keys need a login: without a PIN from the URI, openssl.cnf or
     * $CUSTOS_PIN, ask the application's passphrase callback. */
    if ((find_priv || priv_for_pub) && (cu_token_get0_desc(tok)->flags & CKF_LOGIN_REQUIRED_FLAG)
        && !cu_token_logged_in(tok) && pw_cb != NULL) {
        size_t pinlen = 0;
        char info[80];
        snprintf(info, sizeof info, "PIN for token %s", cu_token_get0_desc(tok)->label);
        OSSL_PARAM pp[] = { OSSL_PARAM_utf8_string(OSSL_PASSPHRASE_PARAM_INFO, info, 0), OSSL_PARAM_END };
        if (pw_cb(pin, sizeof pin - 1, &pinlen, pp, pw_cbarg)) {
            pin[pinlen] = '\0';
            rc = cu_token_login(tok, pin);
        }
        OPENSSL_cleanse(pin, sizeof pin);
        if (rc != CU_OK) {
            CU_PROV_RAISE_RC(s->pc, rc, "logging in");
            goto out;
        }
    }

    for (int pass = 0; pass < 2; pass++) {
        /* pass 0: public-key objects; pass 1: private keys (or their public
         * halves when a public key is wanted and no public object matched) */
        bool public_only = false;
        cu_class cls;
        if (pass == 0) {
            if (!find_pub)
                continue;
            cls = CU_CLASS_PUBLIC_KEY;
            public_only = true;
        } else {
            if (priv_for_pub && s->n == 0) {
                public_only = true;
            } else if (!find_priv) {
                continue;
            }
            cls = CU_CLASS_PRIVATE_KEY;
        }
        if (!find_class(s, tok, cls, unique, &objs, &n))
            goto out;
        for (size_t i = 0; i < n; i++) {
            cu_prov_key *k = NULL;
            char *label = cu_object_label(objs[i]) ? OPENSSL_strdup(cu_object_label(objs[i])) : NULL;
            cu_object *o = objs[i];
            objs[i] = NULL;
            int kind = public_only ? OSSL_STORE_INFO_PUBKEY : OSSL_STORE_INFO_PKEY;
            if (!cu_prov_key_from_object(s->pc, o, public_only, &k) || !add_result(s, kind, k, NULL, 0, label)) {
                OPENSSL_free(label);
                cu_prov_key_unref(k);
                goto out;
            }
            OPENSSL_free(label);
        }
        cu_objects_free(objs, n);
        objs = NULL;
        n = 0;
    }
    if (want_cert) {
        if (!find_class(s, tok, CU_CLASS_CERTIFICATE, named, &objs, &n))
            goto out;
        for (size_t i = 0; i < n; i++) {
            uint8_t *der = NULL;
            size_t len = 0;
            if ((rc = cu_object_value(objs[i], &der, &len)) != CU_OK) {
                CU_PROV_RAISE_RC(s->pc, rc, "reading a certificate");
                goto out;
            }
            if (!subject_matches(s, der, len)) {
                free(der);
                continue;
            }
            uint8_t *copy = OPENSSL_memdup(der, len);
            free(der);
            if (copy == NULL || !add_result(s, OSSL_STORE_INFO_CERT, NULL, copy, len, cu_object_label(objs[i]))) {
                OPENSSL_free(copy);
                goto out;
            }
        }
    }
    if (s->n == 0 && s->subject == NULL) {
        const char *what = s->expect == OSSL_STORE_INFO_PKEY     ? "private key"
                           : s->expect == OSSL_STORE_INFO_PUBKEY ? "public key"
                           : s->expect == OSSL_STORE_INFO_CERT   ? "certificate"
                                                                 : "key or certificate";
        bool hint = (cu_token_get0_desc(tok)->flags & CKF_LOGIN_REQUIRED_FLAG) && !cu_token_logged_in(tok);
        CU_PROV_RAISE(s->pc, CU_E_OBJECT_NOT_FOUND, "no %s on token \"%s\" matches the URI%s", what,
                      cu_token_get0_desc(tok)->label,
                      hint ? " (not logged in: private keys are hidden; give a PIN)" : "");
        goto out;
    }
    ok = 1;
out:
    cu_objects_free(objs, n);
    cu_token_unref(tok);
    OPENSSL_free(type);
    OPENSSL_free(tmp);
    return ok;
}

static int emit(store_ctx *s, const result *r, OSSL_CALLBACK *object_cb, void *object_cbarg)
{
    OSSL_PARAM p[5], *q = p;
    int type;
    const cu_prov_key *ref = r->key;
    if (r->kind == OSSL_STORE_INFO_CERT) {
        type = OSSL_OBJECT_CERT;
        *q++ = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
        *q++ = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_DATA, r->der, r->len);
    } else {
        type = OSSL_OBJECT_PKEY;
        *q++ = OSSL_PARAM_construct_int(OSSL_OBJECT_PARAM_TYPE, &type);
        *q++ = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DATA_TYPE,
                                                (char *)cu_prov_key_type_name(r->key->type), 0);
        *q++ = OSSL_PARAM_construct_octet_string(OSSL_OBJECT_PARAM_REFERENCE, &ref, sizeof ref);
    }
    if (r->desc != NULL)
        *q++ = OSSL_PARAM_construct_utf8_string(OSSL_OBJECT_PARAM_DESC, r->desc, 0);
    *q = OSSL_PARAM_construct_end();
    (void)s;
    return object_cb(p, object_cbarg);
}

static int st_load(void *loaderctx, OSSL_CALLBACK *object_cb, void *object_cbarg, OSSL_PASSPHRASE_CALLBACK *pw_cb,
                   void *pw_cbarg)
{
    store_ctx *s = loaderctx;
    if (!s->searched) {
        s->searched = true;
        if (!search(s, pw_cb, pw_cbarg)) {
            s->failed = true;
            return 0;
        }
    }
    if (s->failed || s->next >= s->n)
        return 0;
    return emit(s, &s->res[s->next++], object_cb, object_cbarg);
}

static int st_eof(void *loaderctx)
{
    store_ctx *s = loaderctx;
    return s->searched && (s->failed || s->next >= s->n);
}

static int st_close(void *loaderctx)
{
    store_ctx *s = loaderctx;
    if (s == NULL)
        return 1;
    for (size_t i = 0; i < s->n; i++) {
        cu_prov_key_unref(s->res[i].key);
        OPENSSL_free(s->res[i].der);
        OPENSSL_free(s->res[i].desc);
    }
    OPENSSL_free(s->res);
    OPENSSL_free(s->subject);
    OPENSSL_free(s->uri);
    if (s->pin != NULL)
        OPENSSL_clear_free(s->pin, strlen(s->pin));
    OPENSSL_free(s);
    return 1;
}

const OSSL_DISPATCH cu_prov_pkcs11_store_functions[] = {
    { OSSL_FUNC_STORE_OPEN, (void (*)(void))st_open },
    { OSSL_FUNC_STORE_SETTABLE_CTX_PARAMS, (void (*)(void))st_settable_ctx_params },
    { OSSL_FUNC_STORE_SET_CTX_PARAMS, (void (*)(void))st_set_ctx_params },
    { OSSL_FUNC_STORE_LOAD, (void (*)(void))st_load },
    { OSSL_FUNC_STORE_EOF, (void (*)(void))st_eof },
    { OSSL_FUNC_STORE_CLOSE, (void (*)(void))st_close },
    { 0, NULL },
};
