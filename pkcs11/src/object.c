/* Finding objects by URI and reading what they are. */
#include "internal.h"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/param_build.h>
#include <openssl/x509.h>
#include <p11-kit/uri.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { FIND_BATCH = 64, MAX_OBJECTS = 100000 };

const char *cu__object_name(const cu_object *o, char *buf, size_t len)
{
    char hex[65];
    cu__hex(o->id, o->id_len > 32 ? 32 : o->id_len, hex, sizeof hex);
    snprintf(buf, len, "token '%s': %s '%s' id %s", o->tok->desc.label, cu_class_str(o->cls),
             o->label ? o->label : "", o->id_len ? hex : "-");
    return buf;
}

static cu_class class_of(CK_OBJECT_CLASS c)
{
    switch (c) {
    case CKO_PRIVATE_KEY: return CU_CLASS_PRIVATE_KEY;
    case CKO_PUBLIC_KEY: return CU_CLASS_PUBLIC_KEY;
    case CKO_SECRET_KEY: return CU_CLASS_SECRET_KEY;
    case CKO_CERTIFICATE: return CU_CLASS_CERTIFICATE;
    case CKO_DATA: return CU_CLASS_DATA;
    default: return CU_CLASS_OTHER;
    }
}

static CK_OBJECT_CLASS ck_class_of(cu_class c)
{
    switch (c) {
    case CU_CLASS_PRIVATE_KEY: return CKO_PRIVATE_KEY;
    case CU_CLASS_PUBLIC_KEY: return CKO_PUBLIC_KEY;
    case CU_CLASS_SECRET_KEY: return CKO_SECRET_KEY;
    case CU_CLASS_CERTIFICATE: return CKO_CERTIFICATE;
    case CU_CLASS_DATA: return CKO_DATA;
    default: return (CK_OBJECT_CLASS)-1;
    }
}

static cu_key_type key_type_of(CK_KEY_TYPE k)
{
    switch (k) {
    case CKK_EC: return CU_KEY_EC;
    case CKK_RSA: return CU_KEY_RSA;
    case CKK_GENERIC_SECRET: case CKK_SHA256_HMAC: case CKK_SHA384_HMAC: case CKK_SHA512_HMAC:
        return CU_KEY_HMAC;
    default: return CU_KEY_OTHER;
    }
}

/* Reads one variable-length attribute (caller frees *_val). */
static CK_RV get_attr(cu_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
                      uint8_t **_val, size_t *_len)
{
    CK_ATTRIBUTE a = {type, NULL, 0};
    *_val = NULL;
    *_len = 0;
    CK_RV rv = CU__P11(t->f, C_GetAttributeValue, s, h, &a, 1);
    if (rv != CKR_OK)
        return rv;
    if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
        return CKR_ATTRIBUTE_TYPE_INVALID;
    a.pValue = malloc(a.ulValueLen + 1);
    if (a.pValue == NULL)
        return CKR_HOST_MEMORY;
    rv = CU__P11(t->f, C_GetAttributeValue, s, h, &a, 1);
    if (rv != CKR_OK) {
        free(a.pValue);
        return rv;
    }
    ((uint8_t *)a.pValue)[a.ulValueLen] = 0; /* so labels are C strings */
    *_val = a.pValue;
    *_len = a.ulValueLen;
    return CKR_OK;
}

/* The curve size in bits of a DER-encoded CKA_EC_PARAMS (named curves only). */
static unsigned ec_bits(const uint8_t *params, size_t len)
{
    const unsigned char *p = params;
    ASN1_OBJECT *oid = d2i_ASN1_OBJECT(NULL, &p, (long)len);
    unsigned bits = 0;
    if (oid == NULL)
        return 0;
    switch (OBJ_obj2nid(oid)) {
    case NID_X9_62_prime256v1: bits = 256; break;
    case NID_secp384r1: bits = 384; break;
    case NID_secp521r1: bits = 521; break;
    case NID_secp224r1: bits = 224; break;
    default: bits = 0;
    }
    ASN1_OBJECT_free(oid);
    return bits;
}

cu_rc cu__object_new(cu_token *t, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, cu_object **_out)
{
    CK_OBJECT_CLASS cls = (CK_OBJECT_CLASS)-1;
    CK_KEY_TYPE kt = (CK_KEY_TYPE)-1;
    CK_ATTRIBUTE fixed[] = {
        {CKA_CLASS, &cls, sizeof cls},
        {CKA_KEY_TYPE, &kt, sizeof kt},
    };
    CU__P11(t->f, C_GetAttributeValue, s, h, fixed, 2); /* CKA_KEY_TYPE is invalid on certs: fine */
    if (fixed[0].ulValueLen == CK_UNAVAILABLE_INFORMATION)
        return cu_err_set(CU_E_TOKEN, "object without a class on token '%s'", t->desc.label);

    cu_object *o = calloc(1, sizeof *o);
    if (o == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    cu__mutex_init_recursive(&o->lock);
    cu__live_link(&cu__live_objects, &o->live, &o->lock, NULL);
    o->tok = cu_token_ref(t);
    o->h = h;
    o->epoch = atomic_load(&t->epoch);
    o->ckc = cls;
    o->cls = class_of(cls);
    bool is_key = cls == CKO_PRIVATE_KEY || cls == CKO_PUBLIC_KEY || cls == CKO_SECRET_KEY;
    o->ckk = is_key ? kt : (CK_KEY_TYPE)-1;
    o->kt = is_key ? key_type_of(kt) : CU_KEY_NONE;

    size_t len;
    uint8_t *v;
    if (get_attr(t, s, h, CKA_LABEL, &v, &len) == CKR_OK)
        o->label = (char *)v;
    else
        o->label = strdup("");
    if (get_attr(t, s, h, CKA_ID, &o->id, &o->id_len) != CKR_OK)
        o->id = NULL;

    if (o->kt == CU_KEY_RSA) {
        CK_ULONG bits = 0;
        CK_ATTRIBUTE a = {CKA_MODULUS_BITS, &bits, sizeof bits};
        if (CU__P11(t->f, C_GetAttributeValue, s, h, &a, 1) == CKR_OK && bits > 0) {
            o->bits = (unsigned)bits;
        } else if (get_attr(t, s, h, CKA_MODULUS, &v, &len) == CKR_OK) {
            size_t skip = 0;
            while (skip < len && v[skip] == 0)
                skip++;
            o->bits = (unsigned)((len - skip) * 8);
            free(v);
        }
    } else if (o->kt == CU_KEY_EC) {
        if (get_attr(t, s, h, CKA_EC_PARAMS, &v, &len) == CKR_OK) {
            o->bits = ec_bits(v, len);
            free(v);
        }
    } else if (o->kt == CU_KEY_HMAC) {
        CK_ULONG vl = 0;
        CK_ATTRIBUTE a = {CKA_VALUE_LEN, &vl, sizeof vl};
        if (CU__P11(t->f, C_GetAttributeValue, s, h, &a, 1) == CKR_OK)
            o->bits = (unsigned)(vl * 8);
    }
    if (o->label == NULL) {
        cu_object_free(o);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    *_out = o;
    return CU_OK;
}

void cu_object_free(cu_object *o)
{
    if (o == NULL)
        return;
    /* The session copy lives until the keeper session closes; destroy it now
     * so that long-running processes do not accumulate copies. */
    if (o->fast != CK_INVALID_HANDLE && o->epoch == atomic_load(&o->tok->epoch) &&
        !o->tok->mod->finalized && o->tok->keeper != CK_INVALID_HANDLE)
        CU__P11(o->tok->f, C_DestroyObject, o->tok->keeper, o->fast);
    cu__live_unlink(&cu__live_objects, &o->live);
    pthread_mutex_destroy(&o->lock);
    cu_token_unref(o->tok);
    free(o->label);
    free(o->id);
    free(o);
}

void cu_objects_free(cu_object **objs, size_t n)
{
    for (size_t i = 0; objs && i < n; i++)
        cu_object_free(objs[i]);
    free(objs);
}

/* Runs one search; on success *_objs holds every match. */
static cu_rc search(cu_token *t, CK_ATTRIBUTE *tmpl, CK_ULONG n_tmpl, cu_object ***_objs, size_t *_n)
{
    CK_SESSION_HANDLE s;
    cu_object **objs = NULL;
    size_t n = 0, cap = 0;
    char name[96];
    cu_rc rc = cu__session_get(t, &s);
    if (rc != CU_OK)
        return rc;
    CK_RV rv = CU__P11(t->f, C_FindObjectsInit, s, tmpl, n_tmpl);
    if (rv != CKR_OK) {
        rc = cu_err_set_ckr(CU_E_TOKEN, rv, "%s: cannot search objects", cu__token_name(t, name, sizeof name));
        goto out;
    }
    for (;;) {
        CK_OBJECT_HANDLE hs[FIND_BATCH];
        CK_ULONG got = 0;
        rv = CU__P11(t->f, C_FindObjects, s, hs, FIND_BATCH, &got);
        if (rv != CKR_OK) {
            rc = cu_err_set_ckr(CU_E_TOKEN, rv, "%s: object search failed", cu__token_name(t, name, sizeof name));
            break;
        }
        if (got == 0)
            break;
        for (CK_ULONG i = 0; i < got && rc == CU_OK; i++) {
            if (n == cap) {
                size_t ncap = cap ? cap * 2 : 8;
                cu_object **no = ncap <= MAX_OBJECTS ? realloc(objs, ncap * sizeof *no) : NULL;
                if (no == NULL) {
                    rc = cu_err_set(CU_E_NOMEM, "%s: too many objects", cu__token_name(t, name, sizeof name));
                    break;
                }
                objs = no;
                cap = ncap;
            }
            if ((rc = cu__object_new(t, s, hs[i], &objs[n])) == CU_OK)
                n++;
        }
        if (rc != CU_OK)
            break;
    }
    CU__P11(t->f, C_FindObjectsFinal, s);
out:
    cu__session_put(t, s);
    if (rc != CU_OK) {
        cu_objects_free(objs, n);
        return rc;
    }
    *_objs = objs;
    *_n = n;
    return CU_OK;
}

cu_rc cu_token_find_all(cu_token *t, const char *uri, cu_class cls, cu_object ***_objs, size_t *_n)
{
    P11KitUri *u = NULL;
    /* URIs name token objects; session objects include our own session
     * copies of keys, which must never be found twice. */
    CK_BBOOL on_token = CK_TRUE;
    CK_ATTRIBUTE tmpl[5] = {{CKA_TOKEN, &on_token, sizeof on_token}};
    CK_ULONG nt = 1;
    CK_OBJECT_CLASS want;
    char name[96];
    cu_rc rc = CU_OK;

    if (t == NULL || _objs == NULL || _n == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "find: missing argument");
    *_objs = NULL;
    *_n = 0;
    if (uri != NULL) {
        if ((rc = cu__uri_parse(uri, &u)) != CU_OK)
            return rc;
        CK_TOKEN_INFO ti;
        if (CU__P11(t->f, C_GetTokenInfo, t->slot, &ti) != CKR_OK || !p11_kit_uri_match_token_info(u, &ti)) {
            char shown[256];
            rc = cu_err_set(CU_E_TOKEN_NOT_FOUND, "%s does not match %s", cu__token_name(t, name, sizeof name),
                            cu__uri_for_message(uri, shown, sizeof shown));
            goto out;
        }
        static const CK_ATTRIBUTE_TYPE types[] = {CKA_LABEL, CKA_ID, CKA_CLASS};
        for (size_t i = 0; i < 3; i++) {
            CK_ATTRIBUTE *a = p11_kit_uri_get_attribute(u, types[i]);
            if (a != NULL)
                tmpl[nt++] = *a;
        }
    }
    if (cls != CU_CLASS_ANY) {
        want = ck_class_of(cls);
        for (CK_ULONG i = 0; i < nt; i++) {
            if (tmpl[i].type == CKA_CLASS) {
                if (*(CK_OBJECT_CLASS *)tmpl[i].pValue != want) {
                    rc = cu_err_set(CU_E_OBJECT_NOT_FOUND, "the URI names a %s object, a %s was asked for",
                                    cu_class_str(class_of(*(CK_OBJECT_CLASS *)tmpl[i].pValue)), cu_class_str(cls));
                    goto out;
                }
                tmpl[i].type = (CK_ATTRIBUTE_TYPE)-1; /* replaced below */
            }
        }
        CK_ULONG k = 0;
        for (CK_ULONG i = 0; i < nt; i++)
            if (tmpl[i].type != (CK_ATTRIBUTE_TYPE)-1)
                tmpl[k++] = tmpl[i];
        nt = k;
        tmpl[nt].type = CKA_CLASS;
        tmpl[nt].pValue = &want;
        tmpl[nt].ulValueLen = sizeof want;
        nt++;
    }
    rc = search(t, tmpl, nt, _objs, _n);
out:
    if (u)
        p11_kit_uri_free(u);
    return rc;
}

cu_rc cu_token_find(cu_token *t, const char *uri, cu_class cls, cu_object **_out)
{
    cu_object **objs = NULL;
    size_t n = 0;
    char name[96], shown[256];
    if (_out == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "find: no output");
    cu_rc rc = cu_token_find_all(t, uri, cls, &objs, &n);
    if (rc != CU_OK)
        return rc;
    if (n == 0) {
        bool hint = t->login_required && !t->logged_in;
        rc = cu_err_set(CU_E_OBJECT_NOT_FOUND, "%s: no %s object matches %s%s",
                        cu__token_name(t, name, sizeof name), cu_class_str(cls),
                        cu__uri_for_message(uri, shown, sizeof shown),
                        hint ? " (not logged in: private objects are hidden; give a PIN)" : "");
    } else if (n > 1) {
        rc = cu_err_set(CU_E_AMBIGUOUS, "%s: %zu objects match %s: add object=, id= or type=",
                        cu__token_name(t, name, sizeof name), n, cu__uri_for_message(uri, shown, sizeof shown));
    } else {
        *_out = objs[0];
        objs[0] = NULL;
    }
    cu_objects_free(objs, n);
    return rc;
}

cu_rc cu_object_open(const char *uri, const cu_token_opts *opts, cu_class cls, cu_object **_out)
{
    cu_token *t = NULL;
    cu_rc rc = cu_token_open(uri, opts, &t);
    if (rc != CU_OK)
        return rc;
    rc = cu_token_find(t, uri, cls, _out);
    cu_token_unref(t); /* the object holds its own reference */
    return rc;
}

cu_token *cu_object_get0_token(const cu_object *o) { return o ? o->tok : NULL; }
cu_class cu_object_class(const cu_object *o) { return o ? o->cls : CU_CLASS_OTHER; }
cu_key_type cu_object_key_type(const cu_object *o) { return o ? o->kt : CU_KEY_NONE; }
const char *cu_object_label(const cu_object *o) { return o ? o->label : NULL; }
unsigned cu_object_bits(const cu_object *o) { return o ? o->bits : 0; }
unsigned long cu_object_get_handle(const cu_object *o) { return o ? o->h : CK_INVALID_HANDLE; }

const uint8_t *cu_object_id(const cu_object *o, size_t *_len)
{
    if (_len)
        *_len = o ? o->id_len : 0;
    return o ? o->id : NULL;
}

char *cu_object_uri(const cu_object *o)
{
    char *out = NULL;
    if (o == NULL)
        return NULL;
    P11KitUri *u = p11_kit_uri_new();
    if (u == NULL)
        return NULL;
    CK_TOKEN_INFO *ti = p11_kit_uri_get_token_info(u);
    cu_token *t = o->tok;
    if (CU__P11(t->f, C_GetTokenInfo, t->slot, ti) == CKR_OK) {
        cu__uri_token_fields(ti);
        CK_ATTRIBUTE attrs[3];
        CK_ULONG n = 0;
        attrs[n++] = (CK_ATTRIBUTE){CKA_CLASS, (void *)&o->ckc, sizeof o->ckc};
        if (o->label && *o->label)
            attrs[n++] = (CK_ATTRIBUTE){CKA_LABEL, o->label, strlen(o->label)};
        if (o->id_len)
            attrs[n++] = (CK_ATTRIBUTE){CKA_ID, o->id, o->id_len};
        p11_kit_uri_set_attributes(u, attrs, n);
        p11_kit_uri_set_module_path(u, t->mod->path);
        if (p11_kit_uri_format(u, P11_KIT_URI_FOR_OBJECT_ON_TOKEN_AND_MODULE, &out) != P11_KIT_URI_OK)
            out = NULL;
    }
    p11_kit_uri_free(u);
    return out;
}

/* Re-finds an object by class, id and label after its handle went stale. */
static cu_rc refind_unlocked(cu_object *o, CK_SESSION_HANDLE s)
{
    cu_token *t = o->tok;
    CK_BBOOL on_token = CK_TRUE;
    CK_ATTRIBUTE tmpl[4] = {{CKA_CLASS, &o->ckc, sizeof o->ckc}, {CKA_TOKEN, &on_token, sizeof on_token}};
    CK_ULONG n = 2;
    if (o->id_len)
        tmpl[n++] = (CK_ATTRIBUTE){CKA_ID, o->id, o->id_len};
    if (o->label && *o->label)
        tmpl[n++] = (CK_ATTRIBUTE){CKA_LABEL, o->label, strlen(o->label)};
    CK_OBJECT_HANDLE h[2];
    CK_ULONG got = 0;
    char name[160];
    CK_RV rv = CU__P11(t->f, C_FindObjectsInit, s, tmpl, n);
    if (rv == CKR_OK) {
        rv = CU__P11(t->f, C_FindObjects, s, h, 2, &got);
        CU__P11(t->f, C_FindObjectsFinal, s);
    }
    if (rv != CKR_OK)
        return cu_err_set_ckr(CU_E_TOKEN, rv, "%s: cannot find it again", cu__object_name(o, name, sizeof name));
    if (got != 1)
        return cu_err_set(CU_E_OBJECT_NOT_FOUND, "%s: gone from the token", cu__object_name(o, name, sizeof name));
    o->h = h[0];
    return CU_OK;
}

cu_rc cu__object_handle(cu_object *o, CK_SESSION_HANDLE s, bool for_signing, CK_OBJECT_HANDLE *_h)
{
    cu_token *t = o->tok;
    unsigned long epoch = atomic_load(&t->epoch);
    /* Fast path: nothing to refresh. Reads of h/fast race benignly with the
     * one-time copy below because both are set before epoch is published. */
    if (o->epoch == epoch && (!for_signing || o->fast_tried)) {
        *_h = (for_signing && o->fast) ? o->fast : o->h;
        return CU_OK;
    }
    cu_rc rc = CU_OK;
    pthread_mutex_lock(&o->lock);
    if (o->epoch != epoch) {
        o->fast = CK_INVALID_HANDLE;
        o->fast_tried = false;
        if ((rc = refind_unlocked(o, s)) != CU_OK)
            goto out;
        o->epoch = epoch;
    }
    if (for_signing && !o->fast_tried) {
        /* A session copy of the key signs faster on SoftHSM2 (no per-call
         * token-object checks). It stays inside the token and inherits the
         * key's CKA_SENSITIVE/CKA_EXTRACTABLE. */
        if (!(t->mod->quirks & CU_QUIRK_NO_SESSION_COPY)) {
            CK_BBOOL no = CK_FALSE;
            CK_ATTRIBUTE tmpl[] = {{CKA_TOKEN, &no, sizeof no}};
            CK_OBJECT_HANDLE copy;
            pthread_mutex_lock(&t->lock);
            CK_SESSION_HANDLE keeper = t->keeper;
            pthread_mutex_unlock(&t->lock);
            if (CU__P11(t->f, C_CopyObject, keeper, o->h, tmpl, 1, &copy) == CKR_OK)
                o->fast = copy;
        }
        o->fast_tried = true;
    }
    *_h = (for_signing && o->fast) ? o->fast : o->h;
out:
    pthread_mutex_unlock(&o->lock);
    return rc;
}

cu_rc cu_object_custody(cu_object *o, cu_custody *_c)
{
    CK_BBOOL sens = 0, extr = 0, asens = 0, nextr = 0, local = 0, modif = 0, copy = 0, priv = 0;
    CK_ATTRIBUTE a[] = {
        {CKA_SENSITIVE, &sens, sizeof sens},     {CKA_EXTRACTABLE, &extr, sizeof extr},
        {CKA_ALWAYS_SENSITIVE, &asens, sizeof asens}, {CKA_NEVER_EXTRACTABLE, &nextr, sizeof nextr},
        {CKA_LOCAL, &local, sizeof local},       {CKA_MODIFIABLE, &modif, sizeof modif},
        {CKA_COPYABLE, &copy, sizeof copy},      {CKA_PRIVATE, &priv, sizeof priv},
    };
    int *dst[] = {&_c->sensitive, &_c->extractable, &_c->always_sensitive, &_c->never_extractable,
                  &_c->local, &_c->modifiable, &_c->copyable, &_c->is_private};
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE h;
    char name[160];
    if (o == NULL || _c == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "custody: missing argument");
    memset(_c, 0, sizeof *_c);
    cu_rc rc = cu__session_get(o->tok, &s);
    if (rc != CU_OK)
        return rc;
    if ((rc = cu__object_handle(o, s, false, &h)) != CU_OK)
        goto out;
    CK_RV rv = CU__P11(o->tok->f, C_GetAttributeValue, s, h, a, sizeof a / sizeof a[0]);
    if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID && rv != CKR_ATTRIBUTE_SENSITIVE) {
        rc = cu_err_set_ckr(CU_E_TOKEN, rv, "%s: cannot read custody attributes",
                            cu__object_name(o, name, sizeof name));
        goto out;
    }
    for (size_t i = 0; i < sizeof a / sizeof a[0]; i++)
        *dst[i] = a[i].ulValueLen == CK_UNAVAILABLE_INFORMATION ? -1 : *(CK_BBOOL *)a[i].pValue != 0;
    _c->cls = o->cls;
    _c->type = o->kt;
    _c->ck_key_type = o->ckk;
    _c->bits = o->bits;
out:
    cu__session_put(o->tok, s);
    return rc;
}

bool cu_custody_flagged(const cu_custody *c)
{
    if (c->cls != CU_CLASS_PRIVATE_KEY && c->cls != CU_CLASS_SECRET_KEY)
        return false;
    return c->extractable != 0 || c->always_sensitive != 1 || c->never_extractable != 1 || c->local != 1;
}

/* Reads one attribute of the object through a pooled session. */
static cu_rc read_attr(cu_object *o, CK_ATTRIBUTE_TYPE type, uint8_t **_v, size_t *_len)
{
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE h;
    char name[160];
    cu_rc rc = cu__session_get(o->tok, &s);
    if (rc != CU_OK)
        return rc;
    if ((rc = cu__object_handle(o, s, false, &h)) == CU_OK) {
        CK_RV rv = get_attr(o->tok, s, h, type, _v, _len);
        if (rv == CKR_ATTRIBUTE_SENSITIVE)
            rc = cu_err_set_ckr(CU_E_STATE, rv, "%s: attribute is sensitive", cu__object_name(o, name, sizeof name));
        else if (rv != CKR_OK)
            rc = cu_err_set_ckr(rv == CKR_ATTRIBUTE_TYPE_INVALID ? CU_E_UNSUPPORTED : CU_E_TOKEN, rv,
                                "%s: cannot read attribute 0x%lx", cu__object_name(o, name, sizeof name),
                                (unsigned long)type);
    }
    cu__session_put(o->tok, s);
    return rc;
}

cu_rc cu_object_value(cu_object *o, uint8_t **_val, size_t *_len)
{
    if (o == NULL || _val == NULL || _len == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "value: missing argument");
    if (o->cls != CU_CLASS_CERTIFICATE && o->cls != CU_CLASS_DATA && o->cls != CU_CLASS_PUBLIC_KEY) {
        char name[160];
        return cu_err_set(CU_E_KEY_TYPE, "%s: only certificates and data objects have a readable value",
                          cu__object_name(o, name, sizeof name));
    }
    return read_attr(o, CKA_VALUE, _val, _len);
}

cu_rc cu__object_public_twin(cu_object *o, cu_object **_pub)
{
    char name[160];
    if (o->cls == CU_CLASS_PUBLIC_KEY)
        return cu_err_set(CU_E_INVALID_ARG, "already a public key");
    CK_OBJECT_CLASS pc = CKO_PUBLIC_KEY;
    CK_BBOOL on_token = CK_TRUE;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &pc, sizeof pc}, {CKA_ID, o->id, o->id_len}, {CKA_TOKEN, &on_token, sizeof on_token}};
    cu_object **objs = NULL;
    size_t n = 0;
    if (o->id_len == 0)
        return cu_err_set(CU_E_OBJECT_NOT_FOUND, "%s has no CKA_ID to find its public key by",
                          cu__object_name(o, name, sizeof name));
    cu_rc rc = search(o->tok, tmpl, 3, &objs, &n);
    if (rc != CU_OK)
        return rc;
    if (n == 0)
        rc = cu_err_set(CU_E_OBJECT_NOT_FOUND, "%s: no public key with the same id",
                        cu__object_name(o, name, sizeof name));
    else {
        *_pub = objs[0];
        objs[0] = NULL;
    }
    cu_objects_free(objs, n);
    return rc;
}

/* Builds an EVP_PKEY from public attributes and encodes it as SPKI DER. */
static cu_rc spki_from_attrs(cu_object *src, cu_key_type kt, uint8_t **_der, size_t *_len)
{
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *n = NULL, *e = NULL;
    uint8_t *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    ASN1_OBJECT *oid = NULL;
    ASN1_OCTET_STRING *os = NULL;
    char name[160];
    cu_rc rc;

    if ((bld = OSSL_PARAM_BLD_new()) == NULL) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto out;
    }
    if (kt == CU_KEY_RSA) {
        if ((rc = read_attr(src, CKA_MODULUS, &a, &alen)) != CU_OK ||
            (rc = read_attr(src, CKA_PUBLIC_EXPONENT, &b, &blen)) != CU_OK)
            goto out;
        n = BN_bin2bn(a, (int)alen, NULL);
        e = BN_bin2bn(b, (int)blen, NULL);
        if (!n || !e || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
            !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e)) {
            rc = cu_err_set(CU_E_CRYPTO, "%s: bad RSA public key", cu__object_name(src, name, sizeof name));
            goto out;
        }
    } else {
        if ((rc = read_attr(src, CKA_EC_PARAMS, &a, &alen)) != CU_OK ||
            (rc = read_attr(src, CKA_EC_POINT, &b, &blen)) != CU_OK)
            goto out;
        const unsigned char *p = a;
        oid = d2i_ASN1_OBJECT(NULL, &p, (long)alen);
        const char *group = oid ? OBJ_nid2sn(OBJ_obj2nid(oid)) : NULL;
        /* CKA_EC_POINT is a DER OCTET STRING; some modules give the raw point. */
        const unsigned char *pt = b;
        size_t ptlen = blen;
        p = b;
        if ((os = d2i_ASN1_OCTET_STRING(NULL, &p, (long)blen)) != NULL && p == b + blen) {
            pt = os->data;
            ptlen = (size_t)os->length;
        }
        if (group == NULL || OBJ_obj2nid(oid) == NID_undef ||
            !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, group, 0) ||
            !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen)) {
            rc = cu_err_set(CU_E_CRYPTO, "%s: unsupported EC parameters", cu__object_name(src, name, sizeof name));
            goto out;
        }
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, kt == CU_KEY_RSA ? "RSA" : "EC", "provider=default");
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
        rc = cu_err_set(CU_E_CRYPTO, "%s: cannot build the public key", cu__object_name(src, name, sizeof name));
        goto out;
    }
    unsigned char *der = NULL;
    int dlen = i2d_PUBKEY(pkey, &der);
    if (dlen <= 0) {
        rc = cu_err_set(CU_E_CRYPTO, "%s: cannot encode the public key", cu__object_name(src, name, sizeof name));
        goto out;
    }
    /* Hand out malloc'd memory so callers free() it. */
    if ((*_der = malloc((size_t)dlen)) == NULL) {
        OPENSSL_free(der);
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto out;
    }
    memcpy(*_der, der, (size_t)dlen);
    OPENSSL_free(der);
    *_len = (size_t)dlen;
    rc = CU_OK;
out:
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(oid);
    BN_free(n);
    BN_free(e);
    free(a);
    free(b);
    EVP_PKEY_free(pkey);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    return rc;
}

cu_rc cu_object_public_der(cu_object *o, uint8_t **_der, size_t *_len)
{
    char name[160];
    if (o == NULL || _der == NULL || _len == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "public key: missing argument");
    if (o->kt != CU_KEY_EC && o->kt != CU_KEY_RSA)
        return cu_err_set(CU_E_KEY_TYPE, "%s: not an EC or RSA key", cu__object_name(o, name, sizeof name));
    if (o->cls == CU_CLASS_PUBLIC_KEY)
        return spki_from_attrs(o, o->kt, _der, _len);
    /* Private keys: RSA carries n and e itself; EC keys need their twin. */
    cu_err_clear();
    if (o->kt == CU_KEY_RSA && spki_from_attrs(o, o->kt, _der, _len) == CU_OK)
        return CU_OK;
    cu_object *pub = NULL;
    cu_rc rc = cu__object_public_twin(o, &pub);
    if (rc != CU_OK)
        return rc;
    rc = spki_from_attrs(pub, o->kt, _der, _len);
    cu_object_free(pub);
    return rc;
}

cu_rc cu_object_destroy(cu_object *o)
{
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE h;
    char name[160];
    if (o == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "destroy: no object");
    cu_rc rc = cu__session_get(o->tok, &s);
    if (rc != CU_OK)
        return rc;
    if ((rc = cu__object_handle(o, s, false, &h)) == CU_OK) {
        pthread_mutex_lock(&o->lock);
        if (o->fast != CK_INVALID_HANDLE) {
            CU__P11(o->tok->f, C_DestroyObject, s, o->fast);
            o->fast = CK_INVALID_HANDLE;
        }
        pthread_mutex_unlock(&o->lock);
        CK_RV rv = CU__P11(o->tok->f, C_DestroyObject, s, h);
        if (rv != CKR_OK)
            rc = cu_err_set_ckr(cu_rc_from_ckr(rv), rv, "%s: cannot destroy", cu__object_name(o, name, sizeof name));
    }
    cu__session_put(o->tok, s);
    return rc;
}
