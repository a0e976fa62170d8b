/* The engine: resolve, allocate, record. */
#include <custos/alloc.h>
#include <custos/enrollment.h>
#include <custos/prov.h>
#include <custos/store.h>
#include <custos/tpmsvc.h>

#include "prov_int.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

cu_rc cu_prov_new(cu_store *store, const cu_prov_config *cfg, cu_prov **_out)
{
    cu_prov__return_val_if_fail(store != NULL && cfg != NULL && _out != NULL, CU_E_INVALID_ARG);
    cu_prov__return_val_if_fail(cfg->id_scope == NULL || strlen(cfg->id_scope) < 64, CU_E_INVALID_ARG);
    cu_prov *p = calloc(1, sizeof *p);
    if (p == NULL)
        return cu_err_set(CU_E_NOMEM, "out of memory");
    p->store = store;
    snprintf(p->id_scope, sizeof p->id_scope, "%s", cfg->id_scope ? cfg->id_scope : "");
    p->skew = cfg->use_default_skew ? CU_PROV_DEFAULT_SKEW : cfg->sas_skew;
    p->now = cfg->now;
    p->webhook_timeout_ms = cfg->webhook_timeout_ms > 0 ? cfg->webhook_timeout_ms : 5000;
    *_out = p;
    return CU_OK;
}

void cu_prov_free(cu_prov *p) { free(p); }

void cu_prov_result_clear(cu_prov_result *res)
{
    if (res == NULL)
        return;
    cu_reg_record_clear(&res->record);
    cu_prov_explain_clear(&res->explain);
    free(res->tpm_authentication_key);
    OPENSSL_cleanse(res->hub_key, sizeof res->hub_key);
    memset(res, 0, sizeof *res);
}

cu_rc cu_prov_explain_request(cu_prov *p, const cu_prov_request *req, cu_prov_explain *_ex)
{
    cu_prov__return_val_if_fail(p != NULL && req != NULL && req->registration_id != NULL && _ex != NULL,
                           CU_E_INVALID_ARG);
    cu_enr *e = NULL;
    cu_rc rc = cu_prov__resolve(p, req, _ex, &e);
    cu_enr_free(e);
    return rc;
}

/* ---- allocation ---- */

/* Candidate hubs: the enrollment's iotHubs that are linked (with the linked
 * hubs' weights), else every linked hub. A name is checked when the
 * enrollment is written, but its hub may have been unlinked since: such a
 * name is skipped, never given a weight of its own. */
static cu_rc candidate_hubs(cu_prov *p, const cu_enr *e, cu_hub **_hubs, size_t *_n)
{
    cu_hub *linked = NULL, *out = NULL;
    size_t nl = 0, ne = cu_enr_get_hub_count(e);
    cu_rc rc = cu_store_hub_list(p->store, &linked, &nl);
    if (rc != CU_OK)
        return rc;
    if (ne == 0) {
        *_hubs = linked;
        *_n = nl;
        return CU_OK;
    }
    if ((out = calloc(ne, sizeof *out)) == NULL) {
        free(linked);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    size_t n = 0;
    for (size_t i = 0; i < ne; i++) {
        const char *name = cu_enr_get0_hub(e, i);
        for (size_t j = 0; j < nl; j++)
            if (cu_prov__ieq(linked[j].name, name)) {
                out[n++] = linked[j];
                break;
            }
    }
    free(linked);
    *_hubs = out;
    *_n = n;
    return CU_OK;
}

static json_t *webhook_request(const cu_enr *e, const cu_prov_request *req, const cu_reg_record *old,
                               const char *att, const cu_hub *hubs, size_t n)
{
    json_t *enr = json_deep_copy(cu_prov__enr_json(e));
    json_t *ctx = json_pack("{s:s}", "registrationId", req->registration_id);
    json_t *linked = json_array();
    json_t *j = NULL;
    if (enr == NULL || ctx == NULL || linked == NULL)
        goto fail;
    cu_prov__strip_keys(enr); /* never send secrets to a webhook */
    if (old != NULL && old->assigned_hub[0]) {
        json_object_set_new(ctx, "currentIotHubHostName", json_string(old->assigned_hub));
        json_object_set_new(ctx, "currentDeviceId", json_string(old->device_id));
    }
    json_object_set_new(ctx, att, json_object());
    if (req->payload_json != NULL) {
        json_error_t err;
        json_t *pl = json_loads(req->payload_json, JSON_DECODE_ANY, &err);
        if (pl != NULL)
            json_object_set_new(ctx, "payload", pl);
    }
    for (size_t i = 0; i < n; i++)
        json_array_append_new(linked, json_string(hubs[i].name));
    j = json_pack("{s:o, s:o, s:o}",
                  cu_enr_get_kind(e) == CU_ENR_GROUP ? "enrollmentGroup" : "individualEnrollment", enr,
                  "deviceRuntimeContext", ctx, "linkedHubs", linked);
    return j;
fail:
    json_decref(enr);
    json_decref(ctx);
    json_decref(linked);
    return NULL;
}

/* Picks the hub (or fails with errorCode 400208 and a message). */
static cu_rc allocate(cu_prov *p, const cu_enr *e, const cu_prov_request *req, const cu_reg_record *old,
                      const char *att, cu_reg_record *rec)
{
    cu_hub *hubs = NULL;
    size_t n = 0, idx = 0;
    char *policy_setting = NULL, *resp = NULL, *reqjs = NULL, why[512];
    json_t *rj = NULL, *r = NULL;
    cu_rc rc;
    const char *policy = json_string_value(json_object_get(cu_prov__enr_json(e), "allocationPolicy"));

    if (policy == NULL && cu_store_setting_get(p->store, "defaultAllocationPolicy", &policy_setting) == CU_OK)
        policy = policy_setting;
    if (policy == NULL)
        policy = "hashed";
    if ((rc = candidate_hubs(p, e, &hubs, &n)) != CU_OK)
        goto cleanup;
    if (n == 0 && cu_enr_get_hub_count(e) > 0) {
        snprintf(rec->error_message, sizeof rec->error_message,
                 "none of the enrollment's hubs is linked to this service (first: '%.150s')", cu_enr_get0_hub(e, 0));
        goto failed;
    }
    if (strcmp(policy, "static") == 0) {
        if (n == 0 || cu_enr_get_hub_count(e) == 0) {
            snprintf(rec->error_message, sizeof rec->error_message, "static allocation without a hub");
            goto failed;
        }
        snprintf(rec->assigned_hub, sizeof rec->assigned_hub, "%s", hubs[0].name);
    } else if (strcmp(policy, "custom") == 0) {
        const char *url = cu_enr_get0_webhook_url(e);
        if (url == NULL || (r = webhook_request(e, req, old, att, hubs, n)) == NULL ||
            (reqjs = json_dumps(r, JSON_COMPACT)) == NULL) {
            snprintf(rec->error_message, sizeof rec->error_message, "custom allocation without a webhook");
            goto failed;
        }
        if (cu_alloc_custom(url, reqjs, p->webhook_timeout_ms, &resp, why, sizeof why) != CU_OK) {
            snprintf(rec->error_message, sizeof rec->error_message, "%.250s", why);
            goto failed;
        }
        json_error_t err;
        rj = json_loads(resp, 0, &err);
        const char *hub = json_string_value(json_object_get(rj, "iotHubHostName"));
        bool known = false;
        for (size_t i = 0; hub != NULL && i < n; i++)
            known = known || cu_prov__ieq(hubs[i].name, hub);
        if (!known) {
            snprintf(rec->error_message, sizeof rec->error_message,
                     "custom allocation webhook chose '%.100s', which is not a linked hub", hub ? hub : "");
            goto failed;
        }
        snprintf(rec->assigned_hub, sizeof rec->assigned_hub, "%s", hub);
        json_t *pl = json_object_get(rj, "payload");
        if (pl != NULL)
            rec->payload_json = json_dumps(pl, JSON_COMPACT | JSON_ENCODE_ANY);
    } else { /* hashed, and geoLatency on one site */
        if (cu_alloc_hashed(hubs, n, req->registration_id, &idx) != CU_OK) {
            snprintf(rec->error_message, sizeof rec->error_message, "%.250s", cu_err_last()->msg);
            goto failed;
        }
        snprintf(rec->assigned_hub, sizeof rec->assigned_hub, "%s", hubs[idx].name);
    }
    snprintf(rec->status, sizeof rec->status, "assigned");
    goto cleanup;
failed:
    snprintf(rec->status, sizeof rec->status, "failed");
    rec->error_code = 400208;
    rec->assigned_hub[0] = 0;
cleanup:
    json_decref(rj);
    json_decref(r);
    free(reqjs);
    free(resp);
    free(policy_setting);
    free(hubs);
    return rc;
}

static void set_substatus(const cu_enr *e, const cu_reg_record *old, cu_reg_record *rec)
{
    const char *sub = "initialAssignment";
    if (old != NULL && strcmp(old->status, "assigned") == 0 && old->assigned_hub[0]) {
        if (cu_prov__ieq(old->assigned_hub, rec->assigned_hub))
            sub = old->substatus[0] ? old->substatus : "initialAssignment";
        else if (old->initial_hub[0] && cu_prov__ieq(old->initial_hub, rec->assigned_hub))
            sub = "reprovisionedToInitialAssignment";
        else
            sub = cu_enr_reprovision_migrate(e) ? "deviceDataMigrated" : "deviceDataReset";
    }
    snprintf(rec->substatus, sizeof rec->substatus, "%.39s", sub);
    snprintf(rec->initial_hub, sizeof rec->initial_hub, "%.255s",
             old && old->initial_hub[0] ? old->initial_hub : rec->assigned_hub);
}

/* The device's SRK, parsed and checked for its role; on refusal the answer
 * is 400 (400006 in custosd): the keys are unusable, not the device's
 * right to register. */
static bool tpm_srk_ok(const cu_prov_request *req, cu_prov_result *res)
{
    cu_tpmsvc_pub *srk = NULL;
    bool ok = req->tpm_srk != NULL && cu_tpmsvc_pub_parse_b64(req->tpm_srk, &srk) == CU_OK &&
              cu_tpmsvc_pub_check(srk, CU_TPM_ROLE_SRK) == CU_OK;
    cu_tpmsvc_pub_free(srk);
    if (!ok) {
        res->outcome = CU_PROV_REFUSE;
        res->http_status = 400;
        res->error_code = 400004;
        snprintf(res->explain.reason, sizeof res->explain.reason, "tpm.storageRootKey: %.400s",
                 req->tpm_srk ? cu_err_last()->msg : "required for the challenge");
    }
    return ok;
}

/* Issues a TPM challenge: the blob goes into the 401 answer; its identity
 * key K is kept sealed in the store, bound to this scope, id and EK, for
 * CU_PROV_TPM_CHALLENGE_TTL seconds (the SAS that follows is checked with
 * it, by whichever node serves the store). */
static cu_rc tpm_challenge(cu_prov *p, const cu_prov_request *req, cu_prov_result *res)
{
    uint8_t k[CU_TPM_ID_KEY_LEN];
    char *blob = NULL, *sealed = NULL;
    uint64_t now = p->now ? (uint64_t)p->now : (uint64_t)time(NULL);
    cu_rc rc;
    if (!tpm_srk_ok(req, res))
        return CU_OK;
    if ((rc = cu_tpmsvc_challenge_new(req->tpm_ek, req->tpm_srk, NULL, k, &blob)) != CU_OK)
        goto cleanup;
    if ((rc = cu_tpmsvc_challenge_seal(cu_store_get0_keyring(p->store), cu_prov__tpm_scope(p),
                                       req->registration_id, req->tpm_ek, now + CU_PROV_TPM_CHALLENGE_TTL, k,
                                       &sealed)) != CU_OK ||
        (rc = cu_store_tpm_challenge_put(p->store, req->registration_id, sealed)) != CU_OK)
        goto cleanup;
    res->tpm_authentication_key = blob;
    blob = NULL;
    res->http_status = 401;
cleanup:
    OPENSSL_cleanse(k, sizeof k);
    free(blob);
    free(sealed);
    return rc;
}

/* The second activation of the final answer: a fresh hub key for the same
 * TPM (PROTOCOL.md §3.8). */
static cu_rc tpm_second_blob(const cu_prov_request *req, cu_prov_result *res)
{
    cu_tpmsvc_pub *ek = NULL, *srk = NULL;
    cu_rc rc;
    if (req->tpm_srk == NULL)
        return cu_err_set(CU_E_INVALID_ARG, "tpm.storageRootKey is required");
    if (RAND_priv_bytes(res->hub_key, sizeof res->hub_key) != 1)
        return cu_err_set(CU_E_CRYPTO, "no random bytes for the hub key");
    if ((rc = cu_tpmsvc_pub_parse_b64(req->tpm_ek, &ek)) == CU_OK &&
        (rc = cu_tpmsvc_pub_parse_b64(req->tpm_srk, &srk)) == CU_OK &&
        (rc = cu_tpmsvc_pub_check(ek, CU_TPM_ROLE_EK)) == CU_OK && (rc = cu_tpmsvc_pub_check(srk, CU_TPM_ROLE_SRK)) == CU_OK)
        rc = cu_tpmsvc_blob_build_b64(ek, srk, res->hub_key, sizeof res->hub_key, NULL, &res->tpm_authentication_key);
    cu_tpmsvc_pub_free(ek);
    cu_tpmsvc_pub_free(srk);
    return rc;
}

/* A challenge answers one registration. Gone already means a concurrent
 * attempt used it (resolve read it in this transaction): a conflict, so
 * that the caller's retry finds no challenge and refuses. */
static cu_rc tpm_challenge_consume(cu_prov *p, const cu_prov_request *req)
{
    cu_rc rc = cu_store_tpm_challenge_del(p->store, req->registration_id);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        cu_prov__store_set_last_http(409);
        rc = cu_err_set(CU_E_STATE, "the TPM challenge of '%.128s' was used by another registration",
                        req->registration_id);
    }
    return rc;
}

/* The decision as an audit record: "registration" (with the record, in its
 * transaction), "registration.refused", "registration.challenge". The
 * actor is the device that asked. */
static cu_rc audit_decision(cu_prov *p, const cu_prov_request *req, const cu_prov_result *res, const char *type)
{
    char actor[CU_AUDIT_ACTOR_MAX], *js = NULL;
    json_t *j = cu_prov__audit_decision(req, res);
    cu_rc rc;
    snprintf(actor, sizeof actor, "device:%.140s", req->registration_id);
    if (j == NULL || (js = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER)) == NULL)
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    else
        rc = cu_audit_append(p->store, type, actor, js, NULL);
    free(js);
    json_decref(j);
    return rc;
}

/* A device refused by a disabled deciding entry keeps its record, marked
 * `disabled` with the entry named, so that an operator sees the device is
 * blocked and where it was (hub, device id and substatus are kept). A device
 * with no record gets none: a refusal creates nothing. An unchanged record
 * is not rewritten, so that repeated refusals (which need no proof of the
 * device: a disabled individual decides whatever is presented) only add
 * their audit records. */
static cu_rc record_disabled(cu_prov *p, const cu_prov_request *req, const cu_prov_result *res)
{
    cu_reg_record rec;
    char msg[sizeof rec.error_message];
    cu_rc rc = cu_store_reg_get(p->store, req->registration_id, &rec);
    if (rc == CU_E_OBJECT_NOT_FOUND) {
        cu_err_clear();
        return CU_OK;
    }
    if (rc != CU_OK)
        return rc;
    snprintf(msg, sizeof msg, "%.255s", res->explain.reason);
    if (strcmp(rec.status, "disabled") != 0 || rec.error_code != res->error_code || strcmp(rec.error_message, msg) != 0) {
        snprintf(rec.status, sizeof rec.status, "disabled");
        rec.error_code = res->error_code;
        snprintf(rec.error_message, sizeof rec.error_message, "%s", msg);
        rc = cu_store_reg_put(p->store, &rec, NULL);
    }
    cu_reg_record_clear(&rec);
    return rc;
}

cu_rc cu_prov_register(cu_prov *p, const cu_prov_request *req, cu_prov_result *_res)
{
    cu_prov__return_val_if_fail(p != NULL && req != NULL && req->registration_id != NULL && _res != NULL,
                           CU_E_INVALID_ARG);
    cu_enr *e = NULL;
    cu_reg_record old, *rec = &_res->record;
    bool have_old = false, in_txn = false;
    cu_rc rc;

    memset(_res, 0, sizeof *_res);
    memset(&old, 0, sizeof old);
    if ((rc = cu_prov__resolve(p, req, &_res->explain, &e)) != CU_OK)
        goto cleanup;
    _res->outcome = _res->explain.outcome;
    if (_res->outcome == CU_PROV_CHALLENGE) {
        /* The challenge key and its record commit together. */
        if ((rc = cu_store_begin(p->store)) != CU_OK)
            goto cleanup;
        in_txn = true;
        if ((rc = tpm_challenge(p, req, _res)) != CU_OK)
            goto cleanup;
        rc = audit_decision(p, req, _res,
                            _res->outcome == CU_PROV_CHALLENGE ? "registration.challenge" : "registration.refused");
        goto cleanup;
    }
    if (_res->outcome != CU_PROV_PROVISION) {
        _res->outcome = CU_PROV_REFUSE;
        _res->http_status = 401;
        _res->error_code = 401002;
        /* No new registration record; the refusal is audited on its own,
         * or with the existing record it marks disabled. */
        if (_res->explain.disabled) {
            if ((rc = cu_store_begin(p->store)) != CU_OK)
                goto cleanup;
            in_txn = true;
            if ((rc = record_disabled(p, req, _res)) != CU_OK)
                goto cleanup;
        }
        rc = audit_decision(p, req, _res, "registration.refused");
        goto cleanup;
    }
    have_old = cu_store_reg_get(p->store, req->registration_id, &old) == CU_OK;
    snprintf(rec->registration_id, sizeof rec->registration_id, "%s", req->registration_id);
    const char *dev = cu_enr_get0_device_id(e);
    snprintf(rec->device_id, sizeof rec->device_id, "%s", dev ? dev : req->registration_id);
    snprintf(rec->attestation, sizeof rec->attestation, "%s", _res->explain.attestation);
    if (cu_enr_get_kind(e) == CU_ENR_GROUP)
        snprintf(rec->enrollment_group_id, sizeof rec->enrollment_group_id, "%s", cu_enr_get0_id(e));

    /* A record marked disabled still says where the device was: once its
     * entry is enabled again, it counts as that assignment. */
    if (have_old && strcmp(old.status, "disabled") == 0 && old.assigned_hub[0]) {
        snprintf(old.status, sizeof old.status, "assigned");
        old.error_code = 0;
        old.error_message[0] = 0;
    }
    if (have_old && strcmp(old.status, "assigned") == 0 && !cu_enr_reprovision_update_hub(e)) {
        /* "Never re-provision": the device stays where it is. */
        snprintf(rec->assigned_hub, sizeof rec->assigned_hub, "%s", old.assigned_hub);
        snprintf(rec->status, sizeof rec->status, "assigned");
    } else if ((rc = allocate(p, e, req, have_old ? &old : NULL, _res->explain.attestation, rec)) != CU_OK) {
        goto cleanup;
    }
    if (strcmp(rec->status, "assigned") == 0)
        set_substatus(e, have_old ? &old : NULL, rec);
    /* TPM: the final answer carries a second activation (its key becomes
     * the device's hub key; PROTOCOL.md §3.8). */
    if (cu_enr_get_att_type(e) == CU_ATT_TPM && (rc = tpm_second_blob(req, _res)) != CU_OK)
        goto cleanup;
    /* The record and its decision commit together or not at all. */
    if ((rc = cu_store_begin(p->store)) != CU_OK)
        goto cleanup;
    in_txn = true;
    if ((rc = cu_store_reg_put(p->store, rec, NULL)) != CU_OK)
        goto cleanup;
    if (cu_enr_get_att_type(e) == CU_ATT_TPM && (rc = tpm_challenge_consume(p, req)) != CU_OK)
        goto cleanup;
    _res->http_status = 200;
    _res->error_code = rec->error_code;
    rc = audit_decision(p, req, _res, "registration");
cleanup:
    if (in_txn) {
        if (rc == CU_OK)
            rc = cu_store_commit(p->store);
        else
            cu_store_rollback(p->store);
    }
    cu_reg_record_clear(&old);
    cu_enr_free(e);
    return rc;
}
