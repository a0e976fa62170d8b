/* The service (management) API (PROTOCOL.md §5): individual enrollments,
 * enrollment groups, registration records, CA certificates with proof of
 * possession; queries with x-ms-max-item-count / x-ms-continuation (the
 * header is omitted on the last page), bulk operations, ETag / If-Match.
 * Every request carries a service SAS of the shared access policy. */
#include "srv_int.h"

#include <custos/enrollment.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_PAGE 100
#define MAX_PAGE 1000
#define MAX_BULK 100

static void reply_json_str(cu_srv__req *r, int status, char *s)
{
    json_error_t e;
    json_t *j = s ? json_loads(s, JSON_DECODE_ANY, &e) : NULL;
    free(s);
    if (j == NULL)
        cu_srv__reply_error(r, 500, 500000, "out of memory");
    else
        cu_srv__reply_json(r, status, j);
}

/* If-Match as stored: etags are quoted strings; accept them bare too. */
static const char *if_match(cu_srv__req *r, char buf[96])
{
    const char *v = cu_srv__req_header(r, "If-Match");
    if (v == NULL || !strcmp(v, "*") || v[0] == '"')
        return v;
    snprintf(buf, 96, "\"%.90s\"", v);
    return buf;
}

/* The error code (its first three digits the HTTP status) of a store's
 * refusal; 0 for an error the client did not cause. */
static int refusal_code(cu_rc rc, int not_found)
{
    switch (rc) {
    case CU_E_OBJECT_NOT_FOUND: return not_found;
    case CU_E_EXISTS: return 409001;
    case CU_E_PRECONDITION: return 412001;
    case CU_E_STATE: return cu_store_last_http_status() == 409 ? 409001 : 412001;
    case CU_E_INVALID_ARG:
    case CU_E_PARSE: return 400001;
    default: return 0;
    }
}

/* An error the client did not cause: counted and logged with the request's
 * id, which is all the client is told. */
static void log_store_error(cu_srv__req *r, const char *reason)
{
    cu_srv__metrics_store_error();
    cu_srv__lf f[] = {CU_LF_S("reqid", r->id), CU_LF_S("error", reason)};
    cu_srv__log(CU_LOG_ERROR, "store error", f, 2);
}

static void store_refusal(cu_srv__req *r, cu_rc rc, const char *reason, int not_found)
{
    if (reason == NULL || reason[0] == 0)
        reason = cu_err_last()->msg;
    int code = refusal_code(rc, not_found);
    if (code != 0) {
        cu_srv__reply_error(r, code / 1000, code, "%s", reason);
        return;
    }
    log_store_error(r, reason);
    if (rc == CU_E_IO && cu_store_last_http_status() == 503)
        cu_srv__reply_store_down(r);
    else
        cu_srv__reply_error(r, 500, 500000, "internal error (tracking id %s)", r->id);
}

static bool need_json(cu_srv__req *r)
{
    if (r->body_len == 0) {
        cu_srv__reply_error(r, 400, 400001, "a JSON body is required");
        return false;
    }
    if (!cu_srv__req_json_type(r)) {
        cu_srv__reply_error(r, 415, 415000, "Content-Type must be application/json");
        return false;
    }
    return true;
}

static json_t *body_object(cu_srv__req *r)
{
    json_error_t e;
    if (!need_json(r))
        return NULL;
    json_t *j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL || !json_is_object(j)) {
        if (j == NULL)
            cu_srv__reply_error(r, 400, 400001, "malformed JSON at line %d column %d: %s", e.line, e.column, e.text);
        else
            cu_srv__reply_error(r, 400, 400001, "the body must be a JSON object");
        json_decref(j);
        return NULL;
    }
    return j;
}

static const char *kind_name(cu_enr_kind k) { return k == CU_ENR_GROUP ? "enrollment group" : "enrollment"; }
static int nf_code(cu_enr_kind k) { return k == CU_ENR_GROUP ? 404202 : 404201; }

/* ---- enrollments and groups ---- */

static void enr_put(cu_srv__req *r, cu_enr_kind kind, const char *id)
{
    char reason[512] = "", im[96];
    cu_enr *e = NULL;
    if (!need_json(r))
        return;
    cu_rc rc = cu_enr_parse(kind, r->body, r->body_len, &e, reason, sizeof reason);
    if (rc != CU_OK) {
        cu_srv__reply_error(r, 400, 400001, "%s", reason[0] ? reason : cu_err_last()->msg);
        return;
    }
    if (!cu_srv__ieq(cu_enr_get0_id(e), id)) {
        cu_srv__reply_error(r, 400, 400003, "the %s id in the body does not match the URL", kind_name(kind));
    } else {
        const char *m = if_match(r, im);
        if (m == NULL)
            m = cu_enr_get0_etag(e); /* SDKs put the etag they hold in the body too */
        rc = cu_store_enr_put(r->w->store, e, m, 0, reason, sizeof reason);
        if (rc != CU_OK)
            store_refusal(r, rc, reason, nf_code(kind));
        else
            reply_json_str(r, 200, cu_enr_to_json(e, CU_ENR_JSON_COMPACT));
    }
    cu_enr_free(e);
}

static void enr_get(cu_srv__req *r, cu_enr_kind kind, const char *id, bool keys)
{
    cu_enr *e = NULL;
    cu_rc rc = cu_store_enr_get(r->w->store, kind, id, &e);
    if (rc != CU_OK) {
        store_refusal(r, rc, NULL, nf_code(kind));
        return;
    }
    char *s = cu_enr_to_json(e, CU_ENR_JSON_COMPACT | (keys ? CU_ENR_JSON_SHOW_KEYS : 0));
    cu_enr_free(e);
    if (!keys) {
        reply_json_str(r, 200, s);
        return;
    }
    /* …/attestationmechanism: the AttestationMechanism, keys included. */
    json_error_t je;
    json_t *j = s ? json_loads(s, 0, &je) : NULL;
    free(s);
    json_t *att = json_incref(json_object_get(j, "attestation"));
    json_decref(j);
    if (att == NULL)
        cu_srv__reply_error(r, 500, 500000, "out of memory");
    else
        cu_srv__reply_json(r, 200, att);
}

static void enr_delete(cu_srv__req *r, cu_enr_kind kind, const char *id)
{
    char reason[512] = "", im[96];
    cu_rc rc = cu_store_enr_delete(r->w->store, kind, id, if_match(r, im), reason, sizeof reason);
    if (rc != CU_OK)
        store_refusal(r, rc, reason, nf_code(kind));
    else
        cu_srv__reply_text(r, 204, NULL, NULL);
}

/* Continuation tokens: hex of the last id returned (opaque to clients). */
static void hex_of(const char *s, char *out, size_t cap)
{
    static const char H[] = "0123456789abcdef";
    size_t o = 0;
    for (; *s && o + 3 < cap; s++) {
        out[o++] = H[(unsigned char)*s >> 4];
        out[o++] = H[(unsigned char)*s & 15];
    }
    out[o] = 0;
}

static bool unhex(const char *s, char *out, size_t cap)
{
    size_t n = strlen(s), o = 0;
    if (n % 2 != 0 || n / 2 >= cap)
        return false;
    for (size_t i = 0; i < n; i += 2) {
        int a = isxdigit((unsigned char)s[i]) ? (isdigit((unsigned char)s[i]) ? s[i] - '0' : (tolower((unsigned char)s[i]) - 'a' + 10)) : -1;
        int b = isxdigit((unsigned char)s[i + 1]) ? (isdigit((unsigned char)s[i + 1]) ? s[i + 1] - '0' : (tolower((unsigned char)s[i + 1]) - 'a' + 10)) : -1;
        if (a < 0 || b < 0 || (a | b) == 0)
            return false;
        out[o++] = (char)(a * 16 + b);
    }
    out[o] = 0;
    return true;
}

/* Reads the paging headers and the query body. */
static bool page_args(cu_srv__req *r, const char *table, size_t *_limit, char after[300], bool *_has_after)
{
    const char *mc = cu_srv__req_header(r, "x-ms-max-item-count");
    const char *ct = cu_srv__req_header(r, "x-ms-continuation");
    *_limit = DEFAULT_PAGE;
    *_has_after = false;
    if (mc != NULL && *mc) {
        char *end = NULL;
        long v = strtol(mc, &end, 10);
        if (*end != 0 || v < 1 || v > MAX_PAGE) {
            cu_srv__reply_error(r, 400, 400001, "x-ms-max-item-count must be 1..%d", MAX_PAGE);
            return false;
        }
        *_limit = (size_t)v;
    }
    if (ct != NULL && *ct) {
        if (!unhex(ct, after, 300)) {
            cu_srv__reply_error(r, 400, 400001, "invalid x-ms-continuation");
            return false;
        }
        *_has_after = true;
    }
    if (table != NULL && r->body_len > 0) {
        json_t *j = body_object(r);
        if (j == NULL)
            return false;
        const char *q = json_string_value(json_object_get(j, "query"));
        char want[80];
        snprintf(want, sizeof want, "select * from %s", table);
        bool ok = q != NULL && (!strcmp(q, "*") || !strcasecmp(q, want));
        json_decref(j);
        if (!ok) {
            cu_srv__reply_error(r, 400, 400001, "only the query \"*\" (or \"%s\") is supported", want);
            return false;
        }
    }
    return true;
}

static void page_headers(cu_srv__req *r, const char *type, size_t limit, const char *last)
{
    char v[32], tok[600];
    snprintf(v, sizeof v, "%zu", limit);
    cu_srv__add_header(r, "x-ms-item-type", type);
    cu_srv__add_header(r, "x-ms-max-item-count", v);
    if (last != NULL) { /* omitted on the last page: an empty one makes clients loop */
        hex_of(last, tok, sizeof tok);
        cu_srv__add_header(r, "x-ms-continuation", tok);
    }
}

static void enr_query(cu_srv__req *r, cu_enr_kind kind)
{
    char after[300];
    size_t limit, n = 0;
    bool has_after;
    char **ids = NULL;
    json_t *arr = NULL;
    if (!page_args(r, kind == CU_ENR_GROUP ? "enrollmentGroups" : "enrollments", &limit, after, &has_after))
        return;
    cu_store_kind sk = kind == CU_ENR_GROUP ? CU_KIND_GROUP : CU_KIND_ENROLLMENT;
    cu_rc rc = cu_store_list(r->w->store, sk, has_after ? after : NULL, limit + 1, &ids, &n);
    if (rc != CU_OK) {
        store_refusal(r, rc, NULL, nf_code(kind));
        return;
    }
    if ((arr = json_array()) == NULL)
        goto oom;
    for (size_t i = 0; i < n && i < limit; i++) {
        cu_enr *e = NULL;
        if (cu_store_enr_get(r->w->store, kind, ids[i], &e) != CU_OK)
            continue; /* deleted meanwhile */
        char *s = cu_enr_to_json(e, CU_ENR_JSON_COMPACT);
        cu_enr_free(e);
        json_error_t je;
        json_t *j = s ? json_loads(s, 0, &je) : NULL;
        free(s);
        if (j == NULL || json_array_append_new(arr, j) != 0)
            goto oom;
    }
    page_headers(r, kind == CU_ENR_GROUP ? "EnrollmentGroup" : "Enrollment", limit, n > limit ? ids[limit - 1] : NULL);
    cu_srv__reply_json(r, 200, arr);
    cu_store_ids_free(ids, n);
    return;
oom:
    json_decref(arr);
    cu_store_ids_free(ids, n);
    cu_srv__reply_error(r, 500, 500000, "out of memory");
}

/* Bulk: per item, not atomic (the public API reports per-item errors). If
 * the store cannot be reached, the request stops there: before any item
 * was applied, it is a 503 like any other; after, the reply lists the item
 * that failed and every one not tried with 503000, and carries Retry-After,
 * so the client knows exactly what to send again. */
static void not_applied(json_t *errs, const char *id_key, const char *id)
{
    json_array_append_new(errs, json_pack("{s:s, s:i, s:s}", id_key, id ? id : "", "errorCode", 503000, "errorStatus",
                                          "not applied: the store cannot be reached"));
}

static void enr_bulk(cu_srv__req *r, cu_enr_kind kind)
{
    json_t *j = body_object(r), *errs = json_array();
    const char *list_key = kind == CU_ENR_GROUP ? "enrollmentGroups" : "enrollments";
    const char *id_key = kind == CU_ENR_GROUP ? "enrollmentGroupId" : "registrationId";
    if (j == NULL) {
        json_decref(errs);
        return;
    }
    const char *mode = json_string_value(json_object_get(j, "mode"));
    json_t *items = json_object_get(j, list_key);
    if (mode == NULL || (strcmp(mode, "create") && strcmp(mode, "update") && strcmp(mode, "updateIfMatchETag") &&
                         strcmp(mode, "delete"))) {
        cu_srv__reply_error(r, 400, 400001, "mode must be create, update, updateIfMatchETag or delete");
        goto out;
    }
    if (!json_is_array(items) || json_array_size(items) == 0 || json_array_size(items) > MAX_BULK) {
        cu_srv__reply_error(r, 400, 400001, "%s must be an array of 1..%d items", list_key, MAX_BULK);
        goto out;
    }
    size_t i, applied = 0;
    json_t *it;
    bool down = false;
    json_array_foreach(items, i, it) {
        const char *id = json_string_value(json_object_get(it, id_key));
        if (down) {
            not_applied(errs, id_key, id);
            continue;
        }
        char reason[512] = "", *s = json_dumps(it, JSON_COMPACT);
        cu_enr *e = NULL;
        cu_rc rc = s ? cu_enr_parse(kind, s, strlen(s), &e, reason, sizeof reason) : CU_E_NOMEM;
        free(s);
        if (rc == CU_OK) {
            const char *etag = cu_enr_get0_etag(e);
            if (!strcmp(mode, "delete"))
                rc = cu_store_enr_delete(r->w->store, kind, cu_enr_get0_id(e), etag, reason, sizeof reason);
            else if (!strcmp(mode, "updateIfMatchETag") && etag == NULL)
                rc = CU_E_STATE, snprintf(reason, sizeof reason, "updateIfMatchETag needs the item's etag (412)");
            else
                rc = cu_store_enr_put(r->w->store, e, !strcmp(mode, "updateIfMatchETag") ? etag : NULL,
                                      !strcmp(mode, "create") ? CU_STORE_CREATE : 0, reason, sizeof reason);
        }
        cu_enr_free(e);
        if (rc == CU_E_IO && cu_store_last_http_status() == 503) {
            if (applied == 0) {
                store_refusal(r, rc, reason, nf_code(kind));
                goto out;
            }
            cu_srv__metrics_store_error();
            down = true;
            not_applied(errs, id_key, id);
            continue;
        }
        if (rc == CU_OK) {
            applied++;
            continue;
        }
        int code = refusal_code(rc, nf_code(kind));
        if (code == 0) { /* as store_refusal */
            log_store_error(r, reason[0] ? reason : cu_err_last()->msg);
            code = 500000;
            snprintf(reason, sizeof reason, "internal error (tracking id %s)", r->id);
        }
        json_array_append_new(errs, json_pack("{s:s, s:i, s:s}", id_key, id ? id : "", "errorCode", code,
                                              "errorStatus", reason[0] ? reason : cu_err_last()->msg));
    }
    if (down) {
        cu_srv__lf f[] = {CU_LF_S("reqid", r->id), CU_LF_S("error", "the store went away during a bulk operation")};
        cu_srv__log(CU_LOG_ERROR, "store error", f, 2);
        cu_srv__retry_after(r, r->w->srv->cfg->retry_after);
    }
    cu_srv__reply_json(r, 200, json_pack("{s:b, s:O}", "isSuccessful", json_array_size(errs) == 0, "errors", errs));
out:
    json_decref(errs);
    json_decref(j);
}

/* ---- registration records ---- */

static void reg_get(cu_srv__req *r, const char *id)
{
    cu_reg_record rec;
    cu_rc rc = cu_store_reg_get(r->w->store, id, &rec);
    if (rc != CU_OK) {
        store_refusal(r, rc, NULL, 404203);
        return;
    }
    reply_json_str(r, 200, cu_reg_record_to_json(&rec, true));
    cu_reg_record_clear(&rec);
}

static void reg_delete(cu_srv__req *r, const char *id)
{
    char reason[512] = "", im[96];
    cu_rc rc = cu_store_reg_delete(r->w->store, id, if_match(r, im), reason, sizeof reason);
    if (rc != CU_OK)
        store_refusal(r, rc, reason, 404203);
    else
        cu_srv__reply_text(r, 204, NULL, NULL);
}

/* The registrations of one enrollment group, paged. */
static void reg_query(cu_srv__req *r, const char *group)
{
    char after[300];
    size_t limit, n = 0;
    bool has_after;
    char **ids = NULL;
    json_t *arr = json_array();
    /* The Node SDK sends a body here; it carries nothing we need. */
    size_t saved = r->body_len;
    r->body_len = 0;
    bool ok = page_args(r, NULL, &limit, after, &has_after);
    r->body_len = saved;
    if (!ok || arr == NULL) {
        json_decref(arr);
        return;
    }
    cu_rc rc = cu_store_reg_list_by_group(r->w->store, group, has_after ? after : NULL, limit + 1, &ids, &n);
    if (rc != CU_OK) {
        json_decref(arr);
        store_refusal(r, rc, NULL, 404203);
        return;
    }
    for (size_t i = 0; i < n && i < limit; i++) {
        cu_reg_record rec;
        if (cu_store_reg_get(r->w->store, ids[i], &rec) != CU_OK)
            continue;
        char *s = cu_reg_record_to_json(&rec, true);
        cu_reg_record_clear(&rec);
        json_error_t je;
        json_t *j = s ? json_loads(s, 0, &je) : NULL;
        free(s);
        if (j != NULL)
            json_array_append_new(arr, j);
    }
    page_headers(r, "DeviceRegistration", limit, n > limit ? ids[limit - 1] : NULL);
    cu_store_ids_free(ids, n);
    cu_srv__reply_json(r, 200, arr);
}

/* ---- CA certificates (proof of possession) ---- */

static void ca_reply(cu_srv__req *r, const char *name, const char *code)
{
    char *s = NULL;
    cu_rc rc = cu_store_ca_get_json(r->w->store, name, &s);
    if (rc != CU_OK) {
        store_refusal(r, rc, NULL, 404204);
        return;
    }
    json_error_t je;
    json_t *j = json_loads(s, 0, &je);
    free(s);
    if (j == NULL) {
        cu_srv__reply_error(r, 500, 500000, "out of memory");
        return;
    }
    if (code != NULL) {
        json_object_set_new(j, "verificationCode", json_string(code));
        json_object_set_new(j, "properties", json_pack("{s:s}", "verificationCode", code));
    }
    cu_srv__reply_json(r, 200, j);
}

/* 405 names what the resource takes (RFC 9110 §15.5.6). */
static void not_allowed(cu_srv__req *r, const char *allow)
{
    cu_srv__add_header(r, "Allow", allow);
    cu_srv__reply_error(r, 405, 405000, "method not allowed");
}

static void ca_route(cu_srv__req *r)
{
    char reason[512] = "", im[96];
    const char *name = r->segs[1];
    cu_rc rc;
    if (r->nsegs == 2 && r->method == EVHTTP_REQ_PUT) {
        json_t *j = body_object(r);
        if (j == NULL)
            return;
        const char *cert = json_string_value(json_object_get(j, "certificate"));
        json_t *v = json_object_get(j, "isVerified");
        if (cert == NULL || (v != NULL && !json_is_boolean(v))) {
            cu_srv__reply_error(r, 400, 400001, "expected {\"certificate\": \"<PEM>\", \"isVerified\": false}");
        } else if ((rc = cu_store_ca_add(r->w->store, name, cert, json_is_true(v), reason, sizeof reason)) != CU_OK) {
            store_refusal(r, rc, reason, 404204);
        } else {
            ca_reply(r, name, NULL);
        }
        json_decref(j);
    } else if (r->nsegs == 2 && r->method == EVHTTP_REQ_GET) {
        ca_reply(r, name, NULL);
    } else if (r->nsegs == 2 && r->method == EVHTTP_REQ_DELETE) {
        if ((rc = cu_store_ca_delete(r->w->store, name, if_match(r, im), reason, sizeof reason)) != CU_OK)
            store_refusal(r, rc, reason, 404204);
        else
            cu_srv__reply_text(r, 204, NULL, NULL);
    } else if (r->nsegs == 3 && r->method == EVHTTP_REQ_POST && cu_srv__ieq(r->segs[2], "generateVerificationCode")) {
        char *code = NULL;
        if ((rc = cu_store_ca_gen_code(r->w->store, name, if_match(r, im), &code, reason, sizeof reason)) != CU_OK)
            store_refusal(r, rc, reason, 404204);
        else
            ca_reply(r, name, code);
        free(code);
    } else if (r->nsegs == 3 && r->method == EVHTTP_REQ_POST && cu_srv__ieq(r->segs[2], "verify")) {
        json_t *j = body_object(r);
        if (j == NULL)
            return;
        const char *cert = json_string_value(json_object_get(j, "certificate"));
        if (cert == NULL)
            cu_srv__reply_error(r, 400, 400001, "expected {\"certificate\": \"<PEM>\"}");
        else if ((rc = cu_store_ca_verify(r->w->store, name, if_match(r, im), cert, reason, sizeof reason)) ==
                 CU_E_VERIFY) /* the proof does not hold: the caller's fault */
            cu_srv__reply_error(r, 400, 400005, "%s", reason[0] ? reason : "verification failed");
        else if (rc != CU_OK)
            store_refusal(r, rc, reason, 404204);
        else
            ca_reply(r, name, NULL);
        json_decref(j);
    } else if (r->nsegs == 2) {
        not_allowed(r, "GET, PUT, DELETE");
    } else if (cu_srv__ieq(r->segs[2], "generateVerificationCode") || cu_srv__ieq(r->segs[2], "verify")) {
        not_allowed(r, "POST");
    } else {
        cu_srv__reply_error(r, 404, 404000, "no such resource");
    }
}

/* ---- routing ---- */

static void enr_route(cu_srv__req *r, cu_enr_kind kind)
{
    enum evhttp_cmd_type m = r->method;
    if (r->nsegs == 1 && m == EVHTTP_REQ_POST)
        enr_bulk(r, kind);
    else if (r->nsegs == 2 && m == EVHTTP_REQ_POST && cu_srv__ieq(r->segs[1], "query"))
        enr_query(r, kind);
    else if (r->nsegs == 2 && m == EVHTTP_REQ_PUT)
        enr_put(r, kind, r->segs[1]);
    else if (r->nsegs == 2 && m == EVHTTP_REQ_GET)
        enr_get(r, kind, r->segs[1], false);
    else if (r->nsegs == 2 && m == EVHTTP_REQ_DELETE)
        enr_delete(r, kind, r->segs[1]);
    else if (r->nsegs == 3 && m == EVHTTP_REQ_POST && cu_srv__ieq(r->segs[2], "attestationmechanism"))
        enr_get(r, kind, r->segs[1], true);
    else if (r->nsegs == 1 || (r->nsegs == 2 && cu_srv__ieq(r->segs[1], "query")) ||
             (r->nsegs == 3 && cu_srv__ieq(r->segs[2], "attestationmechanism")))
        not_allowed(r, "POST");
    else if (r->nsegs == 2)
        not_allowed(r, "GET, PUT, DELETE");
    else
        cu_srv__reply_error(r, 404, 404000, "no such resource");
}

bool cu_srv__service_api(cu_srv__req *r)
{
    if (r->nsegs < 1)
        return false;
    const char *top = r->segs[0];
    int which = cu_srv__ieq(top, "enrollments")        ? 1
                : cu_srv__ieq(top, "enrollmentGroups") ? 2
                : cu_srv__ieq(top, "registrations")    ? 3
                : cu_srv__ieq(top, "certificates")     ? 4
                                                       : 0;
    if (which == 0)
        return false;
    r->route = "service";
    char why[200];
    if (cu_srv__service_sas_check(r->w->srv->st, cu_srv__req_header(r, "Authorization"), r->w->srv->cfg->sas_skew, why,
                                  sizeof why) != CU_OK) {
        cu_srv__lf f[] = {CU_LF_S("reqid", r->id), CU_LF_S("reason", why)};
        cu_srv__log(CU_LOG_INFO, "service request refused", f, 2);
        cu_srv__reply_error(r, 401, 401000, "Unauthorized: %s", why);
        cu_srv__service_refusal_record(r, 401, 401000, why);
        return true;
    }
    /* Every change this request makes is the policy's that signed it (the
     * check accepts this one policy only). */
    cu_store_set_actor(r->w->store, "service-api:" CU_SRV_POLICY);
    const char *ver = cu_srv__req_query(r, "api-version");
    if (!cu_srv__api_version_ok(ver)) {
        cu_srv__reply_error(r, 400, 400004, "missing or unsupported api-version");
        return true;
    }
    if (r->nsegs >= 2 && (which != 3 || r->nsegs != 3 || !cu_srv__ieq(r->segs[2], "query")) &&
        !cu_enr_regid_valid(r->segs[1]) && !(r->nsegs == 2 && cu_srv__ieq(r->segs[1], "query"))) {
        cu_srv__reply_error(r, 400, 400002, "invalid id '%.128s'", r->segs[1]);
        return true;
    }
    if (which == 1 || which == 2) {
        enr_route(r, which == 1 ? CU_ENR_INDIVIDUAL : CU_ENR_GROUP);
    } else if (which == 3) {
        if (r->nsegs == 2 && r->method == EVHTTP_REQ_GET)
            reg_get(r, r->segs[1]);
        else if (r->nsegs == 2 && r->method == EVHTTP_REQ_DELETE)
            reg_delete(r, r->segs[1]);
        else if (r->nsegs == 3 && r->method == EVHTTP_REQ_POST && cu_srv__ieq(r->segs[2], "query"))
            reg_query(r, r->segs[1]);
        else if (r->nsegs == 2)
            not_allowed(r, "GET, DELETE");
        else if (r->nsegs == 3 && cu_srv__ieq(r->segs[2], "query"))
            not_allowed(r, "POST");
        else
            cu_srv__reply_error(r, 404, 404000, "no such operation");
    } else if (r->nsegs >= 2 && r->nsegs <= 3) {
        ca_route(r);
    } else {
        cu_srv__reply_error(r, 404, 404000, "no such resource");
    }
    return true;
}
