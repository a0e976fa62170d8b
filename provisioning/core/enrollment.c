/* Enrollments: strict parsing and normalisation of the REST JSON. */
#include <custos/enrollment.h>
#include <custos/sas.h>
#include <custos/x509.h>

#include "prov_int.h"

#include <openssl/rand.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct cu_enr {
    cu_enr_kind kind;
    json_t *j;
};

/* ---- table-driven schema ---- */

typedef enum ftype { F_STR, F_BOOL, F_OBJ, F_ANYOBJ, F_STRARR, F_INT } ftype;

typedef struct field field;
typedef cu_rc (*check_fn)(json_t *v, const char *path, char *reason, size_t rlen);
struct field {
    const char *name;
    ftype type;
    bool required;
    const field *sub; /* for F_OBJ: its fields (NULL-name terminated) */
    check_fn check;   /* extra value check, may normalise in place */
};

static const char *type_name(ftype t)
{
    switch (t) {
    case F_STR: return "a string";
    case F_BOOL: return "true or false";
    case F_OBJ:
    case F_ANYOBJ: return "an object";
    case F_STRARR: return "an array of strings";
    case F_INT: return "an integer";
    }
    return "?";
}

static bool type_ok(json_t *v, ftype t)
{
    switch (t) {
    case F_STR: return json_is_string(v);
    case F_BOOL: return json_is_boolean(v);
    case F_OBJ:
    case F_ANYOBJ: return json_is_object(v);
    case F_INT: return json_is_integer(v);
    case F_STRARR: {
        if (!json_is_array(v))
            return false;
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) if (!json_is_string(x)) return false;
        return true;
    }
    }
    return false;
}

static cu_rc check_obj(json_t *obj, const field *fields, const char *path, char *reason, size_t rlen)
{
    const char *key;
    json_t *v;
    void *tmp;
    char sub[256];

    /* Nulls mean "absent": some SDKs serialise every field. */
    json_object_foreach_safe(obj, tmp, key, v) {
        if (json_is_null(v))
            json_object_del(obj, key);
    }
    json_object_foreach(obj, key, v) {
        const field *f = fields;
        while (f->name != NULL && strcmp(f->name, key) != 0)
            f++;
        if (f->name == NULL)
            return cu_prov__refuse(CU_E_INVALID_ARG, reason, rlen, "%s%s%.64s: unknown field", path,
                              *path ? "." : "", key);
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", key);
        if (!type_ok(v, f->type))
            return cu_prov__refuse(CU_E_INVALID_ARG, reason, rlen, "%s: must be %s", sub, type_name(f->type));
        cu_rc rc;
        if (f->type == F_OBJ && (rc = check_obj(v, f->sub, sub, reason, rlen)) != CU_OK)
            return rc;
        if (f->check != NULL && (rc = f->check(v, sub, reason, rlen)) != CU_OK)
            return rc;
    }
    for (const field *f = fields; f->name != NULL; f++)
        if (f->required && json_object_get(obj, f->name) == NULL)
            return cu_prov__refuse(CU_E_INVALID_ARG, reason, rlen, "%s%s%s: required", path,
                              *path ? "." : "", f->name);
    return CU_OK;
}

static cu_rc enum_check(json_t *v, const char *path, const char *const *allowed, char *reason, size_t rlen)
{
    for (const char *const *a = allowed; *a; a++)
        if (strcmp(json_string_value(v), *a) == 0)
            return CU_OK;
    return cu_prov__refuse(CU_E_INVALID_ARG, reason, rlen, "%s: '%.40s' is not one of the allowed values",
                      path, json_string_value(v));
}

static cu_rc chk_status(json_t *v, const char *path, char *r, size_t rl)
{
    static const char *const a[] = {"enabled", "disabled", NULL};
    return enum_check(v, path, a, r, rl);
}

static cu_rc chk_policy(json_t *v, const char *path, char *r, size_t rl)
{
    static const char *const a[] = {"hashed", "geoLatency", "static", "custom", NULL};
    return enum_check(v, path, a, r, rl);
}

static cu_rc chk_atype(json_t *v, const char *path, char *r, size_t rl)
{
    static const char *const a[] = {"none", "tpm", "x509", "symmetricKey", NULL};
    return enum_check(v, path, a, r, rl);
}

static cu_rc chk_regid(json_t *v, const char *path, char *r, size_t rl)
{
    if (!cu_prov__regid_valid(json_string_value(v)))
        return cu_prov__refuse(CU_E_INVALID_ARG, r, rl,
                          "%s: '%.64s' is not a valid id (1-128 of A-Z a-z 0-9 - . _ :, "
                          "alphanumeric first and last)", path, json_string_value(v));
    return CU_OK;
}

static cu_rc chk_symkey(json_t *v, const char *path, char *r, size_t rl)
{
    uint8_t *k = NULL;
    size_t n = 0;
    if (cu_sas_key_decode(json_string_value(v), &k, &n) != CU_OK)
        return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "%s: %s", path, cu_err_last()->msg);
    cu_sas_key_free(k, n);
    return CU_OK;
}

static cu_rc chk_tpm_ek(json_t *v, const char *path, char *r, size_t rl)
{
    uint8_t *k = NULL;
    size_t n = 0;
    const char *s = json_string_value(v);
    cu_rc rc = cu_prov__b64_decode(s, strlen(s), &k, &n);
    if (k != NULL)
        OPENSSL_clear_free(k, n + 1);
    if (rc != CU_OK || n < 4)
        return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "%s: not a base64 TPM2B_PUBLIC", path);
    return CU_OK;
}

/* A certificate: decode any accepted form, store PEM + the service's info. */
static cu_rc chk_cert_slot(json_t *v, const char *path, char *r, size_t rl)
{
    json_t *c = json_object_get(v, "certificate");
    X509 *x = NULL;
    char *pem = NULL;
    json_t *info = NULL;
    cu_rc rc = CU_OK;

    if (c == NULL) {
        if (json_object_get(v, "info") != NULL) /* an output form: info only */
            return CU_OK;
        return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "%s.certificate: required", path);
    }
    if ((rc = cu_x509_decode(json_string_value(c), json_string_length(c), &x)) != CU_OK) {
        rc = cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "%s.certificate: %s", path, cu_err_last()->msg);
        goto cleanup;
    }
    if ((pem = cu_x509_to_pem(x)) == NULL || (info = cu_prov__x509_info(x)) == NULL ||
        json_object_set_new(v, "certificate", json_string(pem)) != 0 ||
        json_object_set(v, "info", info) != 0) {
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
        goto cleanup;
    }
cleanup:
    json_decref(info);
    free(pem);
    X509_free(x);
    return rc;
}

static const field F_CERT_SLOT[] = {{"certificate", F_STR, false, NULL, NULL},
                                    {"info", F_ANYOBJ, false, NULL, NULL},
                                    {NULL, 0, false, NULL, NULL}};
static const field F_CERTS[] = {{"primary", F_OBJ, false, F_CERT_SLOT, chk_cert_slot},
                                {"secondary", F_OBJ, false, F_CERT_SLOT, chk_cert_slot},
                                {NULL, 0, false, NULL, NULL}};
static const field F_CAREFS[] = {{"primary", F_STR, false, NULL, NULL},
                                 {"secondary", F_STR, false, NULL, NULL},
                                 {NULL, 0, false, NULL, NULL}};
static const field F_X509[] = {{"clientCertificates", F_OBJ, false, F_CERTS, NULL},
                               {"signingCertificates", F_OBJ, false, F_CERTS, NULL},
                               {"caReferences", F_OBJ, false, F_CAREFS, NULL},
                               {NULL, 0, false, NULL, NULL}};
static const field F_SYM[] = {{"primaryKey", F_STR, false, NULL, chk_symkey},
                              {"secondaryKey", F_STR, false, NULL, chk_symkey},
                              {NULL, 0, false, NULL, NULL}};
static const field F_TPM[] = {{"endorsementKey", F_STR, true, NULL, chk_tpm_ek},
                              {"storageRootKey", F_STR, false, NULL, chk_tpm_ek},
                              {NULL, 0, false, NULL, NULL}};
static const field F_ATT[] = {{"type", F_STR, true, NULL, chk_atype},
                              {"tpm", F_OBJ, false, F_TPM, NULL},
                              {"x509", F_OBJ, false, F_X509, NULL},
                              {"symmetricKey", F_OBJ, false, F_SYM, NULL},
                              {NULL, 0, false, NULL, NULL}};
static const field F_CAPS[] = {{"iotEdge", F_BOOL, false, NULL, NULL}, {NULL, 0, false, NULL, NULL}};
static const field F_REPROV[] = {{"updateHubAssignment", F_BOOL, false, NULL, NULL},
                                 {"migrateDeviceData", F_BOOL, false, NULL, NULL},
                                 {NULL, 0, false, NULL, NULL}};
static const field F_CUSTOM[] = {{"webhookUrl", F_STR, true, NULL, NULL},
                                 {"apiVersion", F_STR, true, NULL, NULL},
                                 {NULL, 0, false, NULL, NULL}};
static const field F_TWINPROPS[] = {{"desired", F_ANYOBJ, false, NULL, NULL},
                                    {NULL, 0, false, NULL, NULL}};
static const field F_TWIN[] = {{"tags", F_ANYOBJ, false, NULL, NULL},
                               {"properties", F_OBJ, false, F_TWINPROPS, NULL},
                               {NULL, 0, false, NULL, NULL}};

#define COMMON_FIELDS                                                        \
    {"attestation", F_OBJ, true, F_ATT, NULL},                               \
    {"capabilities", F_OBJ, false, F_CAPS, NULL},                            \
    {"iotHubHostName", F_STR, false, NULL, NULL},                            \
    {"initialTwin", F_OBJ, false, F_TWIN, NULL},                             \
    {"etag", F_STR, false, NULL, NULL},                                      \
    {"provisioningStatus", F_STR, false, NULL, chk_status},                  \
    {"reprovisionPolicy", F_OBJ, false, F_REPROV, NULL},                     \
    {"createdDateTimeUtc", F_STR, false, NULL, NULL},                        \
    {"lastUpdatedDateTimeUtc", F_STR, false, NULL, NULL},                    \
    {"allocationPolicy", F_STR, false, NULL, chk_policy},                    \
    {"iotHubs", F_STRARR, false, NULL, NULL},                                \
    {"customAllocationDefinition", F_OBJ, false, F_CUSTOM, NULL}

static const field F_INDIVIDUAL[] = {{"registrationId", F_STR, true, NULL, chk_regid},
                                     {"deviceId", F_STR, false, NULL, NULL},
                                     {"registrationState", F_ANYOBJ, false, NULL, NULL},
                                     {"optionalDeviceInformation", F_ANYOBJ, false, NULL, NULL},
                                     COMMON_FIELDS,
                                     {NULL, 0, false, NULL, NULL}};
static const field F_GROUP[] = {{"enrollmentGroupId", F_STR, true, NULL, chk_regid},
                                COMMON_FIELDS,
                                {NULL, 0, false, NULL, NULL}};

static cu_rc gen_key(json_t *sym, const char *name)
{
    uint8_t k[64];
    if (RAND_bytes(k, sizeof k) != 1)
        return cu_err_set(CU_E_CRYPTO, "no randomness for a symmetric key");
    char *b = cu_prov__b64_encode(k, sizeof k);
    OPENSSL_cleanse(k, sizeof k);
    if (b == NULL || json_object_set_new(sym, name, json_string(b)) != 0) {
        free(b);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    OPENSSL_cleanse(b, strlen(b));
    free(b);
    return CU_OK;
}

/* Rules that cross fields. */
static cu_rc check_semantics(cu_enr_kind kind, json_t *j, char *r, size_t rl)
{
    json_t *att = json_object_get(j, "attestation");
    const char *type = json_string_value(json_object_get(att, "type"));
    json_t *x509 = json_object_get(att, "x509"), *sym = json_object_get(att, "symmetricKey");
    json_t *tpm = json_object_get(att, "tpm");
    cu_rc rc;

    if (strcmp(type, "none") == 0)
        return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "attestation.type: 'none' cannot provision a device");
    if ((x509 && strcmp(type, "x509")) || (sym && strcmp(type, "symmetricKey")) ||
        (tpm && strcmp(type, "tpm")))
        return cu_prov__refuse(CU_E_INVALID_ARG, r, rl,
                          "attestation: carries a mechanism other than its type '%s'", type);
    if (strcmp(type, "tpm") == 0) {
        if (kind == CU_ENR_GROUP)
            return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "attestation.type: an enrollment group cannot use tpm");
        if (tpm == NULL)
            return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "attestation.tpm: required");
    } else if (strcmp(type, "x509") == 0) {
        if (x509 == NULL)
            return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "attestation.x509: required");
        json_t *client = json_object_get(x509, "clientCertificates");
        json_t *signing = json_object_get(x509, "signingCertificates");
        json_t *refs = json_object_get(x509, "caReferences");
        if (kind == CU_ENR_INDIVIDUAL) {
            if (signing || refs)
                return cu_prov__refuse(CU_E_INVALID_ARG, r, rl,
                                  "attestation.x509: an individual enrollment takes clientCertificates only");
            if (client == NULL || json_object_get(client, "primary") == NULL)
                return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "attestation.x509.clientCertificates.primary: required");
        } else {
            if (client)
                return cu_prov__refuse(CU_E_INVALID_ARG, r, rl,
                                  "attestation.x509: an enrollment group takes signingCertificates or caReferences");
            if ((signing == NULL) == (refs == NULL))
                return cu_prov__refuse(CU_E_INVALID_ARG, r, rl,
                                  "attestation.x509: exactly one of signingCertificates and caReferences");
            json_t *set = signing ? signing : refs;
            if (json_object_get(set, "primary") == NULL)
                return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "attestation.x509.%s.primary: required",
                                  signing ? "signingCertificates" : "caReferences");
            /* A group's certificate is a trust anchor: it must be a CA. */
            const char *slots[2] = {"primary", "secondary"};
            for (int i = 0; signing != NULL && i < 2; i++) {
                const char *pem = json_string_value(json_object_get(json_object_get(signing, slots[i]), "certificate"));
                X509 *x = NULL;
                if (pem == NULL || cu_x509_decode(pem, strlen(pem), &x) != CU_OK)
                    continue;
                int ca = X509_check_ca(x);
                X509_free(x);
                if (ca == 0)
                    return cu_prov__refuse(CU_E_INVALID_ARG, r, rl,
                                           "attestation.x509.signingCertificates.%s: not a CA certificate "
                                           "(a group needs a root or intermediate CA)", slots[i]);
            }
        }
    } else { /* symmetricKey: generate what is missing, as the service does */
        if (sym == NULL) {
            if ((sym = json_object()) == NULL || json_object_set_new(att, "symmetricKey", sym) != 0)
                return cu_err_set(CU_E_NOMEM, "out of memory");
        }
        if (json_object_get(sym, "primaryKey") == NULL && (rc = gen_key(sym, "primaryKey")) != CU_OK)
            return rc;
        if (json_object_get(sym, "secondaryKey") == NULL && (rc = gen_key(sym, "secondaryKey")) != CU_OK)
            return rc;
    }
    const char *pol = json_string_value(json_object_get(j, "allocationPolicy"));
    size_t nhubs = json_array_size(json_object_get(j, "iotHubs"));
    if (pol && strcmp(pol, "static") == 0 && nhubs != 1 &&
        !(nhubs == 0 && json_object_get(j, "iotHubHostName")))
        return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "allocationPolicy 'static' needs exactly one hub in iotHubs");
    if (pol && strcmp(pol, "custom") == 0 && json_object_get(j, "customAllocationDefinition") == NULL)
        return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "allocationPolicy 'custom' needs customAllocationDefinition");
    const char *url = json_string_value(json_object_get(json_object_get(j, "customAllocationDefinition"), "webhookUrl"));
    if (url && strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0)
        return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "customAllocationDefinition.webhookUrl: not an http(s) URL");
    if (kind == CU_ENR_INDIVIDUAL) {
        const char *dev = json_string_value(json_object_get(j, "deviceId"));
        if (dev && (strlen(dev) == 0 || strlen(dev) > 128))
            return cu_prov__refuse(CU_E_INVALID_ARG, r, rl, "deviceId: 1 to 128 characters");
    }
    /* Read-only fields are the service's to set. */
    json_object_del(j, "registrationState");
    return CU_OK;
}

cu_rc cu_enr_parse(cu_enr_kind kind, const char *json, size_t len, cu_enr **_out, char *reason,
                   size_t reason_len)
{
    cu_prov__return_val_if_fail(json != NULL && _out != NULL &&
                               (kind == CU_ENR_INDIVIDUAL || kind == CU_ENR_GROUP), CU_E_INVALID_ARG);
    cu_rc rc = CU_OK;
    json_error_t err;
    json_t *j = NULL;

    *_out = NULL;
    if (len > CU_ENR_MAX_JSON) {
        rc = cu_prov__refuse(CU_E_INVALID_ARG, reason, reason_len, "enrollment JSON larger than %d bytes",
                        CU_ENR_MAX_JSON);
        goto cleanup;
    }
    j = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
    if (j == NULL) {
        rc = cu_prov__refuse(CU_E_INVALID_ARG, reason, reason_len, "malformed JSON at line %d column %d (byte %d): %s",
                        err.line, err.column, err.position, err.text);
        goto cleanup;
    }
    if (!json_is_object(j)) {
        rc = cu_prov__refuse(CU_E_INVALID_ARG, reason, reason_len, "an enrollment must be a JSON object");
        goto cleanup;
    }
    if ((rc = check_obj(j, kind == CU_ENR_INDIVIDUAL ? F_INDIVIDUAL : F_GROUP, "", reason, reason_len)) != CU_OK)
        goto cleanup;
    if ((rc = check_semantics(kind, j, reason, reason_len)) != CU_OK)
        goto cleanup;
    rc = cu_prov__enr_wrap(kind, j, _out);
    j = NULL;
cleanup:
    json_decref(j);
    return rc;
}

cu_rc cu_prov__enr_wrap(int kind, json_t *j, cu_enr **_out)
{
    cu_enr *e = calloc(1, sizeof *e);
    if (e == NULL) {
        json_decref(j);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    e->kind = (cu_enr_kind)kind;
    e->j = j;
    *_out = e;
    return CU_OK;
}

void cu_enr_free(cu_enr *e)
{
    if (e == NULL)
        return;
    /* Wipe key strings before jansson frees them. */
    json_t *sym = cu_prov__enr_symkey_obj(e);
    const char *k;
    json_t *v;
    if (sym != NULL)
        json_object_foreach(sym, k, v) if (json_is_string(v))
            OPENSSL_cleanse((void *)json_string_value(v), json_string_length(v));
    json_decref(e->j);
    free(e);
}

cu_rc cu_enr_dup(const cu_enr *e, cu_enr **_out)
{
    cu_prov__return_val_if_fail(e != NULL && _out != NULL, CU_E_INVALID_ARG);
    json_t *c = json_deep_copy(e->j);
    if (c == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    return cu_prov__enr_wrap(e->kind, c, _out);
}

json_t *cu_prov__enr_json(const cu_enr *e) { return e->j; }

json_t *cu_prov__enr_symkey_obj(const cu_enr *e)
{
    return json_object_get(json_object_get(e->j, "attestation"), "symmetricKey");
}

cu_rc cu_prov__enr_set_str(cu_enr *e, const char *key, const char *val)
{
    if (val == NULL) {
        json_object_del(e->j, key);
        return CU_OK;
    }
    if (json_object_set_new(e->j, key, json_string(val)) != 0)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    return CU_OK;
}

void cu_prov__strip_keys(json_t *enr)
{
    json_t *sym = json_object_get(json_object_get(enr, "attestation"), "symmetricKey");
    if (sym != NULL) {
        json_object_del(sym, "primaryKey");
        json_object_del(sym, "secondaryKey");
    }
}

char *cu_enr_to_json(const cu_enr *e, unsigned flags)
{
    if (e == NULL)
        return NULL;
    json_t *c = json_deep_copy(e->j);
    if (c == NULL)
        return NULL;
    if (!(flags & CU_ENR_JSON_SHOW_KEYS))
        cu_prov__strip_keys(c);
    char *s = json_dumps(c, JSON_PRESERVE_ORDER | (flags & CU_ENR_JSON_COMPACT ? JSON_COMPACT : JSON_INDENT(2)));
    json_decref(c);
    return s;
}

static const char *str_at(const cu_enr *e, const char *k)
{
    return e ? json_string_value(json_object_get(e->j, k)) : NULL;
}

cu_enr_kind cu_enr_get_kind(const cu_enr *e) { return e->kind; }

const char *cu_enr_get0_id(const cu_enr *e)
{
    return str_at(e, e && e->kind == CU_ENR_GROUP ? "enrollmentGroupId" : "registrationId");
}

cu_att_type cu_enr_get_att_type(const cu_enr *e)
{
    const char *t = json_string_value(json_object_get(json_object_get(e->j, "attestation"), "type"));
    if (t == NULL)
        return CU_ATT_NONE;
    if (strcmp(t, "x509") == 0)
        return CU_ATT_X509;
    if (strcmp(t, "symmetricKey") == 0)
        return CU_ATT_SYMMETRIC_KEY;
    if (strcmp(t, "tpm") == 0)
        return CU_ATT_TPM;
    return CU_ATT_NONE;
}

const char *cu_att_type_str(cu_att_type t)
{
    switch (t) {
    case CU_ATT_TPM: return "tpm";
    case CU_ATT_X509: return "x509";
    case CU_ATT_SYMMETRIC_KEY: return "symmetricKey";
    default: return "none";
    }
}

bool cu_enr_is_enabled(const cu_enr *e)
{
    const char *s = str_at(e, "provisioningStatus");
    return s == NULL || strcmp(s, "enabled") == 0;
}

cu_rc cu_enr_set_enabled(cu_enr *e, bool enabled)
{
    cu_prov__return_val_if_fail(e != NULL, CU_E_INVALID_ARG);
    return cu_prov__enr_set_str(e, "provisioningStatus", enabled ? "enabled" : "disabled");
}

const char *cu_enr_get0_etag(const cu_enr *e) { return str_at(e, "etag"); }
const char *cu_enr_get0_created(const cu_enr *e) { return str_at(e, "createdDateTimeUtc"); }
const char *cu_enr_get0_updated(const cu_enr *e) { return str_at(e, "lastUpdatedDateTimeUtc"); }

const char *cu_enr_get0_device_id(const cu_enr *e)
{
    return e && e->kind == CU_ENR_INDIVIDUAL ? str_at(e, "deviceId") : NULL;
}

const char *cu_enr_get0_allocation_policy(const cu_enr *e)
{
    const char *p = str_at(e, "allocationPolicy");
    return p ? p : "hashed";
}

size_t cu_enr_get_hub_count(const cu_enr *e)
{
    size_t n = json_array_size(json_object_get(e->j, "iotHubs"));
    return n ? n : (str_at(e, "iotHubHostName") ? 1 : 0);
}

const char *cu_enr_get0_hub(const cu_enr *e, size_t i)
{
    json_t *a = json_object_get(e->j, "iotHubs");
    if (json_array_size(a) == 0)
        return i == 0 ? str_at(e, "iotHubHostName") : NULL;
    return json_string_value(json_array_get(a, i));
}

const char *cu_enr_get0_webhook_url(const cu_enr *e)
{
    return json_string_value(json_object_get(json_object_get(e->j, "customAllocationDefinition"), "webhookUrl"));
}

bool cu_enr_has_reprovision_policy(const cu_enr *e)
{
    return json_object_get(e->j, "reprovisionPolicy") != NULL;
}

static bool reprov_flag(const cu_enr *e, const char *name)
{
    json_t *v = json_object_get(json_object_get(e->j, "reprovisionPolicy"), name);
    return v == NULL ? true : json_is_true(v); /* both default to true */
}

bool cu_enr_reprovision_update_hub(const cu_enr *e) { return reprov_flag(e, "updateHubAssignment"); }
bool cu_enr_reprovision_migrate(const cu_enr *e) { return reprov_flag(e, "migrateDeviceData"); }

static const char *slot_name(cu_enr_slot s) { return s == CU_ENR_SECONDARY ? "secondary" : "primary"; }

const char *cu_enr_get0_cert(const cu_enr *e, cu_enr_slot slot)
{
    json_t *x = json_object_get(json_object_get(e->j, "attestation"), "x509");
    json_t *set = json_object_get(x, e->kind == CU_ENR_GROUP ? "signingCertificates" : "clientCertificates");
    return json_string_value(json_object_get(json_object_get(set, slot_name(slot)), "certificate"));
}

const char *cu_enr_get0_ca_ref(const cu_enr *e, cu_enr_slot slot)
{
    json_t *x = json_object_get(json_object_get(e->j, "attestation"), "x509");
    return json_string_value(json_object_get(json_object_get(x, "caReferences"), slot_name(slot)));
}

const char *cu_enr_get0_symkey(const cu_enr *e, cu_enr_slot slot)
{
    return json_string_value(json_object_get(cu_prov__enr_symkey_obj(e),
                                             slot == CU_ENR_SECONDARY ? "secondaryKey" : "primaryKey"));
}

const char *cu_enr_get0_tpm_ek(const cu_enr *e)
{
    return json_string_value(json_object_get(json_object_get(json_object_get(e->j, "attestation"), "tpm"),
                                             "endorsementKey"));
}

bool cu_enr_regid_valid(const char *registration_id) { return cu_prov__regid_valid(registration_id); }
