/* The device registration API (PROTOCOL.md §1): register, poll the
 * operation, registration status lookup. The PUT decides at once (the
 * engine attests, resolves, allocates and writes the record); the reply is
 * 202 `assigning` with an operation id and Retry-After, as the public
 * service answers, or — with register-reply = final — the final state. */
#include "srv_int.h"

#include <custos/audit.h>
#include <custos/enrollment.h>
#include <custos/sas.h>
#include <custos/x509.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* DeviceRegistrationResult: the record in the public shape, with the etag
 * as the public service shows it to devices (base64 of the quoted etag). */
static json_t *reg_state(const cu_reg_record *rec)
{
    char *s = cu_reg_record_to_json(rec, true);
    json_error_t e;
    json_t *j = s ? json_loads(s, 0, &e) : NULL;
    free(s);
    if (j == NULL)
        return NULL;
    if (rec->etag[0]) {
        unsigned char b64[80];
        EVP_EncodeBlock(b64, (const unsigned char *)rec->etag, (int)strlen(rec->etag));
        json_object_set_new(j, "etag", json_string((const char *)b64));
    }
    if (!strcmp(rec->attestation, "x509") && json_object_get(j, "x509") == NULL)
        json_object_set_new(j, "x509", json_object());
    return j;
}

static json_t *final_body(const char *op_id, const cu_reg_record *rec, const char *tpm_auth)
{
    json_t *rs = reg_state(rec);
    if (rs == NULL)
        return NULL;
    /* TPM: the second activation; both SDKs fail without it (§3.8). */
    if (tpm_auth != NULL)
        json_object_set_new(rs, "tpm", json_pack("{s:s}", "authenticationKey", tpm_auth));
    return json_pack("{s:s, s:s, s:o}", "operationId", op_id, "status", rec->status, "registrationState", rs);
}


/* The evidence a device presents: a SAS in Authorization, else the TLS
 * client certificate with the intermediates it sent. */
typedef struct evidence {
    const char *authz;
    X509 *leaf;
    cu_x509_chain *chain;
    char leaf_sha[65];
} evidence;

static void evidence_clear(evidence *ev)
{
    X509_free(ev->leaf);
    cu_x509_chain_free(ev->chain);
    memset(ev, 0, sizeof *ev);
}

static cu_rc evidence_get(cu_srv__req *r, evidence *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->authz = cu_srv__req_header(r, "Authorization");
    SSL *ssl = cu_srv__tls_of(r->req);
    if (ssl != NULL)
        ev->leaf = SSL_get1_peer_certificate(ssl);
    if (ev->leaf != NULL)
        cu_x509_sha256_hex(ev->leaf, ev->leaf_sha);
    if (ev->authz != NULL || ev->leaf == NULL)
        return CU_OK;
    /* The server side's peer chain excludes the leaf; drop it anyway if a
     * client repeats it. On a resumed session there is no chain. */
    STACK_OF(X509) *sent = SSL_get_peer_cert_chain(ssl);
    STACK_OF(X509) *extra = sk_X509_new_null();
    cu_rc rc = CU_OK;
    if (extra == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    for (int i = 0; sent != NULL && i < sk_X509_num(sent); i++) {
        X509 *x = sk_X509_value(sent, i);
        if (X509_cmp(x, ev->leaf) != 0 && !sk_X509_push(extra, x)) {
            rc = cu_err_set(CU_E_NOMEM, "out of memory");
            break;
        }
    }
    if (rc == CU_OK)
        rc = cu_x509_chain_from_certs(ev->leaf, extra, &ev->chain); /* takes its own references */
    sk_X509_free(extra);
    return rc;
}

/* A refusal before the engine decides: the reply, and its audit record
 * (bounded per address and minute: refusals.c). */
static void early_refusal(cu_srv__req *r, const char *regid, int status, int code, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void early_refusal(cu_srv__req *r, const char *regid, int status, int code, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cu_srv__reply_error(r, status, code, "%s", msg);
    cu_srv__refusal_record(r, regid, status, code, msg);
}

/* The DeviceRegistration body: an object; registrationId, if present, must
 * name the device of the URL; payload and the TPM's keys are handed on. */
typedef struct dev_body {
    char *payload;   /* compact JSON or NULL */
    char *tpm_ek;    /* tpm.endorsementKey or NULL */
    char *tpm_srk;   /* tpm.storageRootKey or NULL */
} dev_body;

static void dev_body_clear(dev_body *b)
{
    free(b->payload);
    free(b->tpm_ek);
    free(b->tpm_srk);
    memset(b, 0, sizeof *b);
}

static bool parse_body(cu_srv__req *r, const char *regid, dev_body *_b)
{
    json_error_t e;
    memset(_b, 0, sizeof *_b);
    if (r->body_len == 0)
        return true;
    if (!cu_srv__req_json_type(r)) {
        early_refusal(r, regid, 415, 415000, "Content-Type must be application/json");
        return false;
    }
    json_t *j = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);
    if (j == NULL) {
        early_refusal(r, regid, 400, 400001, "malformed JSON at line %d column %d: %s", e.line, e.column, e.text);
        return false;
    }
    bool ok = false;
    json_t *id = json_object_get(j, "registrationId"), *pl = json_object_get(j, "payload");
    json_t *tpm = json_object_get(j, "tpm");
    json_t *ek = json_object_get(tpm, "endorsementKey"), *srk = json_object_get(tpm, "storageRootKey");
    if (!json_is_object(j)) {
        early_refusal(r, regid, 400, 400001, "the body must be a JSON object");
    } else if (id != NULL && !json_is_null(id) && (!json_is_string(id) || !cu_srv__ieq(json_string_value(id), regid))) {
        early_refusal(r, regid, 400, 400003, "registrationId in the body does not match the URL");
    } else if (tpm != NULL && !json_is_null(tpm) &&
               (!json_is_object(tpm) || !json_is_string(ek) || (srk != NULL && !json_is_string(srk)))) {
        early_refusal(r, regid, 400, 400001, "tpm must hold endorsementKey (and storageRootKey) strings");
    } else {
        ok = true;
        if ((pl != NULL && !json_is_null(pl) &&
             (_b->payload = json_dumps(pl, JSON_COMPACT | JSON_ENCODE_ANY)) == NULL) ||
            (json_is_string(ek) && (_b->tpm_ek = strdup(json_string_value(ek))) == NULL) ||
            (json_is_string(srk) && (_b->tpm_srk = strdup(json_string_value(srk))) == NULL)) {
            cu_srv__reply_error(r, 500, 500000, "out of memory");
            dev_body_clear(_b);
            ok = false;
        }
    }
    json_decref(j);
    return ok;
}

static void refuse(cu_srv__req *r, const char *why)
{
    cu_srv__lf f[] = {CU_LF_S("reqid", r->id), CU_LF_S("reason", why)};
    cu_srv__log(CU_LOG_INFO, "registration refused", f, 2);
    if (r->w->srv->cfg->error_detail)
        cu_srv__reply_error(r, 401, 401002, "Unauthorized: %s", why);
    else
        cu_srv__reply_error(r, 401, 401002, "Unauthorized");
}

/* refuse(), before the engine decided: audited here (the engine audits its
 * own decisions). */
static void refuse_early(cu_srv__req *r, const char *regid, const char *why)
{
    refuse(r, why);
    cu_srv__refusal_record(r, regid, 401, 401002, why);
}

static void store_failed(cu_srv__req *r, const char *what)
{
    cu_srv__metrics_store_error();
    cu_srv__lf f[] = {CU_LF_S("reqid", r->id), CU_LF_S("what", what), CU_LF_S("error", cu_err_last()->msg)};
    cu_srv__log(CU_LOG_ERROR, "store error", f, 3);
    if (cu_err_last()->rc == CU_E_IO && cu_store_last_http_status() == 503) {
        cu_srv__reply_store_down(r);
        return;
    }
    cu_srv__reply_error(r, 500, 500000, "internal error (tracking id %s)", r->id);
}

static int result_of(const cu_reg_record *rec)
{
    return !strcmp(rec->status, "assigned") ? CU_RES_ASSIGNED : CU_RES_FAILED;
}

/* The TPM challenge (PROTOCOL.md §3.2): 401 with the activation blob and
 * no "status" field — the C SDK reads exactly that as "challenge". */
static void tpm_challenge(cu_srv__req *r, const cu_prov_result *res)
{
    cu_srv__add_header(r, "x-ms-error-code", "401002");
    cu_srv__reply_json(r, 401, json_pack("{s:s, s:s, s:s}", "message",
                                         "Authorization required, resend request using supplied key",
                                         "authenticationKey", res->tpm_authentication_key, "keyName",
                                         "registration"));
}

/* The device API's store and engine (srv_int.h: one for all workers on
 * SQLite, used between dev_lock and dev_unlock; else the worker's own,
 * and the locks do nothing). */
static cu_store *dev_store(cu_srv__req *r) { return r->w->srv->dev_store ? r->w->srv->dev_store : r->w->store; }
static cu_prov *dev_prov(cu_srv__req *r) { return r->w->srv->dev_prov ? r->w->srv->dev_prov : r->w->prov; }

static void dev_lock(cu_srv__req *r)
{
    if (r->w->srv->dev_store != NULL) {
        pthread_mutex_lock(&r->w->srv->write_lock);
        cu_store_set_actor(r->w->srv->dev_store, r->actor);
    }
}

static void dev_unlock(cu_srv__req *r)
{
    if (r->w->srv->dev_store != NULL)
        pthread_mutex_unlock(&r->w->srv->write_lock);
}

/* One transaction for the record, its audit event and the operation (the
 * engine's own transaction nests inside). On a shared database there is
 * no process lock: the store's conditional writes settle a race. */
static cu_rc register_once(cu_srv__req *r, const cu_prov_request *preq, const evidence *ev, cu_prov_result *res,
                           cu_srv__op *op)
{
    dev_lock(r);
    cu_store *store = dev_store(r);
    cu_rc prc = cu_store_begin(store);
    if (prc == CU_OK)
        prc = cu_prov_register(dev_prov(r), preq, res);
    if (prc == CU_OK && res->outcome == CU_PROV_PROVISION) {
        cu_srv__op_new_id(res->record.registration_id, op->op_id);
        snprintf(op->registration_id, sizeof op->registration_id, "%s", res->record.registration_id);
        snprintf(op->attestation, sizeof op->attestation, "%s", res->record.attestation);
        snprintf(op->etag, sizeof op->etag, "%s", res->record.etag);
        if (ev->authz != NULL)
            cu_srv__sha256_hex(ev->authz, strlen(ev->authz), op->auth);
        else
            memcpy(op->leaf, ev->leaf_sha, sizeof op->leaf);
        json_t *fin = final_body(op->op_id, &res->record, res->tpm_authentication_key);
        free(op->reply);
        op->reply = fin ? json_dumps(fin, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(fin);
        prc = op->reply ? cu_srv__op_put(store, op) : cu_err_set(CU_E_NOMEM, "out of memory");
    }
    if (prc == CU_OK)
        prc = cu_store_commit(store);
    else
        cu_store_rollback(store);
    dev_unlock(r);
    return prc;
}

static void do_register(cu_srv__req *r, const char *regid)
{
    cu_srv__srv *srv = r->w->srv;
    dev_body body;
    evidence ev;
    cu_prov_result res;
    cu_srv__op op;
    unsigned wait;
    int result = CU_RES_INVALID;
    memset(&res, 0, sizeof res);
    memset(&ev, 0, sizeof ev);
    memset(&op, 0, sizeof op);
    memset(&body, 0, sizeof body);
    r->route = "register";

    bool shared = cu_srv__state_shared_store(srv->st), global_ok = false, charged = false;
    /* The device's budget counts the requests whose evidence verified
     * (limits.c): this node's is only looked at here and counted below; a
     * shared one is counted in the database now and taken back at the end
     * if the engine refuses. */
    if ((wait = cu_srv__limits_device_wait(srv->limits, regid)) == 0 &&
        (global_ok = cu_srv__limits_global(srv->limits)) && shared &&
        (wait = cu_srv__limits_shared_take(srv->limits, r->w->store, regid)) == 0)
        charged = true;
    if (wait != 0 || !global_ok) {
        /* New work only: an accepted registration is slowed on its poll. */
        cu_srv__retry_after(r, wait ? wait : 1);
        early_refusal(r, regid, 429, 429001, "too many requests; retry after %u s", wait ? wait : 1);
        result = CU_RES_THROTTLED;
        goto out;
    }
    if (!parse_body(r, regid, &body))
        goto out;
    if (evidence_get(r, &ev) != CU_OK) {
        cu_srv__reply_error(r, 500, 500000, "internal error (tracking id %s)", r->id);
        result = CU_RES_ERROR;
        goto out;
    }
    bool tpm = body.tpm_ek != NULL;
    r->mech = tpm ? CU_MECH_TPM : ev.authz ? CU_MECH_SYMKEY : ev.chain ? CU_MECH_X509 : CU_MECH_NONE;
    if (!tpm && ev.authz == NULL && ev.chain == NULL) {
        result = CU_RES_REFUSED;
        refuse_early(r, regid, "no credentials: neither a SAS token nor a client certificate");
        goto out;
    }
    /* One kind of evidence: a SAS (symmetric key, or TPM with its keys),
     * else the certificate. */
    cu_prov_request preq = {.registration_id = regid, .authorization = ev.authz,
                            .chain = ev.authz || tpm ? NULL : ev.chain, .payload_json = body.payload,
                            .tpm_ek = body.tpm_ek, .tpm_srk = body.tpm_srk};
    /* On a shared store there is no process lock: the store's conditional
     * writes make a concurrent registration of the same device (on another
     * node) fail as a conflict (409), and the attempt is made again over
     * the record that won. */
    cu_rc prc;
    for (int attempt = 0;; attempt++) {
        prc = register_once(r, &preq, &ev, &res, &op);
        if (prc != CU_E_STATE || cu_store_last_http_status() != 409 || attempt == 3)
            break;
        cu_prov_result_clear(&res);
        memset(&res, 0, sizeof res);
    }
    if (prc != CU_OK) {
        result = CU_RES_ERROR;
        store_failed(r, "register");
        goto out;
    }
    if (res.outcome == CU_PROV_CHALLENGE && res.tpm_authentication_key != NULL) {
        result = CU_RES_REFUSED; /* not yet: the device must come back with its SAS */
        tpm_challenge(r, &res);
        goto out;
    }
    if (res.outcome != CU_PROV_PROVISION) {
        result = CU_RES_REFUSED;
        if (res.http_status == 400) {
            cu_srv__reply_error(r, 400, 400006, "%s", res.explain.reason); /* TPM keys unusable */
            goto out;
        }
        refuse(r, res.explain.reason);
        goto out;
    }
    cu_srv__limits_device(srv->limits, regid);
    charged = false;
    result = result_of(&res.record);
    if (cu_srv__log_on(CU_LOG_INFO)) {
        cu_srv__lf f[] = {CU_LF_S("reqid", r->id), CU_LF_S("registrationId", res.record.registration_id),
                      CU_LF_S("attestation", res.record.attestation), CU_LF_S("status", res.record.status),
                      CU_LF_S("hub", res.record.assigned_hub), CU_LF_S("decision", res.explain.reason)};
        cu_srv__log(CU_LOG_INFO, "registration", f, 6);
    }
    if (srv->cfg->reply_final) {
        cu_srv__reply_text(r, 200, CU_SRV_JSON_TYPE, op.reply);
    } else {
        char loc[600];
        const char *host = cu_srv__req_header(r, "Host");
        snprintf(loc, sizeof loc, "https://%s/%s/registrations/%s/register", host ? host : "localhost",
                 cu_srv_state_id_scope(srv->st), regid);
        cu_srv__add_header(r, "Location", loc);
        cu_srv__retry_after(r, srv->cfg->retry_after);
        cu_srv__reply_json(r, 202, json_pack("{s:s, s:s}", "operationId", op.op_id, "status", "assigning"));
    }
out:
    if (charged)
        cu_srv__limits_shared_refund(srv->limits, r->w->store, regid);
    cu_srv__metrics_registration(r->mech, result, cu_srv__req_elapsed(r));
    dev_body_clear(&body);
    evidence_clear(&ev);
    cu_prov_result_clear(&res);
    cu_srv__op_clear(&op);
}

/* A poll is authorized by the operation and what registered it: the same
 * leaf certificate (a resumed TLS session carries only the leaf), or the
 * same SAS token (SDKs reuse it), or any other SAS that verifies now. */
static bool poll_authorized(cu_srv__req *r, const cu_srv__op *op, const evidence *ev)
{
    if (!strcmp(op->attestation, "x509"))
        return ev->leaf != NULL && op->leaf[0] && !strcmp(ev->leaf_sha, op->leaf);
    if (ev->authz == NULL)
        return false;
    char h[65];
    cu_srv__sha256_hex(ev->authz, strlen(ev->authz), h);
    if (op->auth[0] && CRYPTO_memcmp(h, op->auth, 64) == 0) {
        /* The same token: valid until it expires. */
        cu_sas *sas = NULL;
        bool live = cu_sas_parse(ev->authz, strlen(ev->authz), &sas) == CU_OK &&
                    cu_sas_get_expiry(sas) + r->w->srv->cfg->sas_skew > (uint64_t)time(NULL);
        cu_sas_free(sas);
        return live;
    }
    cu_prov_explain ex;
    memset(&ex, 0, sizeof ex);
    cu_prov_request preq = {.registration_id = op->registration_id, .authorization = ev->authz};
    dev_lock(r);
    bool ok = cu_prov_explain_request(dev_prov(r), &preq, &ex) == CU_OK && ex.outcome == CU_PROV_PROVISION;
    dev_unlock(r);
    cu_prov_explain_clear(&ex);
    return ok;
}

static void slow_poll(cu_srv__req *r, const char *op_id, unsigned wait)
{
    cu_srv__retry_after(r, wait);
    cu_srv__reply_json(r, 202, json_pack("{s:s, s:s}", "operationId", op_id, "status", "assigning"));
}

static void do_poll(cu_srv__req *r, const char *regid, const char *op_id)
{
    cu_srv__srv *srv = r->w->srv;
    evidence ev;
    cu_srv__op op;
    cu_reg_record rec;
    unsigned wait;
    memset(&op, 0, sizeof op);
    memset(&rec, 0, sizeof rec);
    memset(&ev, 0, sizeof ev);
    r->route = "operation";

    /* Over HTTPS some SDKs treat 429 as fatal: a device over its budget
     * is slowed with a longer Retry-After on `assigning` instead. Only a
     * poll that proves to be the device's counts (limits.c). */
    if ((wait = cu_srv__limits_device_wait(srv->limits, regid)) != 0) {
        slow_poll(r, op_id, wait);
        return;
    }
    dev_lock(r);
    cu_rc rc = cu_srv__op_get(dev_store(r), regid, &op);
    dev_unlock(r);
    if (rc == CU_E_OBJECT_NOT_FOUND || (rc == CU_OK && strcmp(op.op_id, op_id) != 0)) {
        early_refusal(r, regid, 404, 404002, "operation not found");
        goto out;
    }
    if (rc != CU_OK) {
        store_failed(r, "operation");
        goto out;
    }
    if (evidence_get(r, &ev) != CU_OK) {
        cu_srv__reply_error(r, 500, 500000, "internal error (tracking id %s)", r->id);
        goto out;
    }
    if (!poll_authorized(r, &op, &ev)) {
        refuse_early(r, regid, "the poll does not carry the credentials that registered");
        goto out;
    }
    if ((wait = cu_srv__limits_device_in(srv->limits, cu_srv__state_shared_store(srv->st) ? r->w->store : NULL,
                                         regid)) != 0) {
        slow_poll(r, op_id, wait);
        goto out;
    }
    if (op.reply != NULL) {
        cu_srv__reply_text(r, 200, CU_SRV_JSON_TYPE, op.reply);
        goto out;
    }
    /* An operation of before 2026-11-28: the answer from the record. */
    dev_lock(r);
    rc = cu_store_reg_get(dev_store(r), regid, &rec);
    dev_unlock(r);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        early_refusal(r, regid, 404, 404002, "the registration no longer exists");
        goto out;
    }
    if (rc != CU_OK) {
        store_failed(r, "registration");
        goto out;
    }
    cu_srv__reply_json(r, 200, final_body(op.op_id, &rec, op.tpm_auth));
out:
    cu_srv__op_clear(&op);
    evidence_clear(&ev);
    cu_reg_record_clear(&rec);
}

/* POST /{idScope}/registrations/{id}: the device's own registration state,
 * for the same evidence a registration would take; nothing is written. */
static void do_status(cu_srv__req *r, const char *regid)
{
    dev_body body;
    evidence ev;
    cu_prov_explain ex;
    cu_reg_record rec;
    memset(&ex, 0, sizeof ex);
    memset(&rec, 0, sizeof rec);
    memset(&ev, 0, sizeof ev);
    r->route = "status";
    memset(&body, 0, sizeof body);
    if (!parse_body(r, regid, &body))
        goto out;
    if (evidence_get(r, &ev) != CU_OK) {
        cu_srv__reply_error(r, 500, 500000, "internal error (tracking id %s)", r->id);
        goto out;
    }
    cu_prov_request preq = {.registration_id = regid, .authorization = ev.authz,
                            .chain = ev.authz || body.tpm_ek ? NULL : ev.chain, .tpm_ek = body.tpm_ek,
                            .tpm_srk = body.tpm_srk};
    if (ev.authz == NULL && ev.chain == NULL) {
        refuse_early(r, regid, "no credentials");
        goto out;
    }
    dev_lock(r);
    cu_rc rc = cu_prov_explain_request(dev_prov(r), &preq, &ex);
    dev_unlock(r);
    if (rc != CU_OK) {
        store_failed(r, "explain");
        goto out;
    }
    if (ex.outcome != CU_PROV_PROVISION) {
        refuse_early(r, regid, ex.reason); /* explained, not recorded by the engine */
        goto out;
    }
    dev_lock(r);
    rc = cu_store_reg_get(dev_store(r), regid, &rec);
    dev_unlock(r);
    if (rc == CU_E_OBJECT_NOT_FOUND)
        cu_srv__reply_error(r, 404, 404002, "no registration for this device");
    else if (rc != CU_OK)
        store_failed(r, "registration");
    else
        cu_srv__reply_json(r, 200, reg_state(&rec));
out:
    dev_body_clear(&body);
    evidence_clear(&ev);
    cu_prov_explain_clear(&ex);
    cu_reg_record_clear(&rec);
}

bool cu_srv__device_api(cu_srv__req *r)
{
    if (r->nsegs < 3 || !cu_srv__ieq(r->segs[1], "registrations") ||
        cu_srv__ieq(r->segs[0], "registrations") || cu_srv__ieq(r->segs[0], "enrollments") ||
        cu_srv__ieq(r->segs[0], "enrollmentGroups"))
        return false;
    cu_srv__srv *srv = r->w->srv;
    const char *regid = r->segs[2];
    char actor[CU_AUDIT_ACTOR_MAX], esc[160];
    r->route = "device";
    /* What this request writes is the device's doing (the engine names
     * the device of its decisions itself). */
    cu_srv__escape(regid, 128, esc, sizeof esc);
    snprintf(actor, sizeof actor, "device:%.150s", esc);
    cu_store_set_actor(r->w->store, actor);
    r->actor = actor;
    bool reg = r->nsegs == 4 && cu_srv__ieq(r->segs[3], "register");
    bool poll = r->nsegs == 5 && cu_srv__ieq(r->segs[3], "operations");
    bool status = r->nsegs == 3;
    if (!reg && !poll && !status) {
        early_refusal(r, regid, 404, 404000, "no such resource");
    } else if (!cu_srv__ieq(r->segs[0], cu_srv_state_id_scope(srv->st))) {
        early_refusal(r, regid, 404, 404001, "unknown id scope");
    } else if (!cu_enr_regid_valid(regid)) {
        early_refusal(r, regid, 400, 400002, "invalid registration id");
    } else if (!cu_srv__api_version_ok(cu_srv__req_query(r, "api-version"))) {
        early_refusal(r, regid, 400, 400004, "missing or unsupported api-version");
    } else if (reg && r->method == EVHTTP_REQ_PUT) {
        do_register(r, regid);
    } else if (poll && r->method == EVHTTP_REQ_GET) {
        do_poll(r, regid, r->segs[4]);
    } else if (status && r->method == EVHTTP_REQ_POST) {
        do_status(r, regid);
    } else {
        cu_srv__add_header(r, "Allow", reg ? "PUT" : poll ? "GET" : "POST");
        early_refusal(r, regid, 405, 405000, "method not allowed");
    }
    return true;
}
