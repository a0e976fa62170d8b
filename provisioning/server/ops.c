/* Operations: what a device polls after its PUT. One per device (the latest
 * registration attempt), kept in the store (cu_store_op_put), so that any
 * custosd sharing the store can answer the poll and the table grows with
 * devices, not with requests.
 *
 * The stored text is the operation's fields as one line of JSON, then a
 * newline and the final answer as the PUT rendered it (a poll sends it as
 * it is: an operation's result does not change once decided). Compact
 * JSON has no raw newline, so the first one ends the fields. */
#include "srv_int.h"

#include <ctype.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cu_srv__op_new_id(const char *registration_id, char out[96])
{
    /* The public service's shape: <n>.<16 hex>.<guid>; opaque to clients. */
    char h[65], g[37];
    cu_srv__sha256_hex(registration_id, strlen(registration_id), h);
    cu_srv__uuid(g);
    snprintf(out, 96, "5.%.16s.%s", h, g);
}

cu_rc cu_srv__op_put(cu_store *s, const cu_srv__op *op)
{
    if (op->reply == NULL || strchr(op->reply, '\n') != NULL)
        return cu_err_set(CU_E_INVALID_ARG, "an operation needs its final answer, on one line");
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "operationId", op->op_id, "registrationId",
                          op->registration_id, "attestation", op->attestation, "leaf", op->leaf, "auth", op->auth,
                          "etag", op->etag);
    char *fields = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL, *body = NULL;
    json_decref(j);
    size_t fl = fields ? strlen(fields) : 0, rl = strlen(op->reply);
    if (fields == NULL || (body = malloc(fl + 1 + rl + 1)) == NULL) {
        free(fields);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    memcpy(body, fields, fl);
    body[fl] = '\n';
    memcpy(body + fl + 1, op->reply, rl + 1);
    cu_rc rc = cu_store_op_put(s, op->registration_id, body);
    free(fields);
    free(body);
    return rc;
}

/* Before 2026-11-28 an operation was the sealed setting "op:<lower-case
 * id>": a device that registered on an older node may poll this one. */
static cu_rc legacy_get(cu_store *s, const char *registration_id, char **_body)
{
    char key[160];
    size_t i = 0;
    memcpy(key, "op:", 3);
    for (; registration_id[i] && i < 128; i++)
        key[3 + i] = (char)tolower((unsigned char)registration_id[i]);
    key[3 + i] = 0;
    return cu_store_setting_get(s, key, _body);
}

static void copy(char *dst, size_t n, json_t *j, const char *k)
{
    const char *v = json_string_value(json_object_get(j, k));
    snprintf(dst, n, "%s", v ? v : "");
}

cu_rc cu_srv__op_get(cu_store *s, const char *registration_id, cu_srv__op *_op)
{
    char *body = NULL;
    json_error_t e;
    cu_rc rc = cu_store_op_get(s, registration_id, &body);
    if (rc == CU_E_OBJECT_NOT_FOUND)
        rc = legacy_get(s, registration_id, &body);
    if (rc != CU_OK)
        return rc;
    memset(_op, 0, sizeof *_op);
    char *nl = strchr(body, '\n');
    if (nl != NULL && (_op->reply = strdup(nl + 1)) == NULL) {
        free(body);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    json_t *j = json_loadb(body, nl ? (size_t)(nl - body) : strlen(body), 0, &e);
    free(body);
    if (j == NULL) {
        cu_srv__op_clear(_op);
        return cu_err_set(CU_E_STATE, "stored operation does not parse");
    }
    copy(_op->op_id, sizeof _op->op_id, j, "operationId");
    copy(_op->registration_id, sizeof _op->registration_id, j, "registrationId");
    copy(_op->attestation, sizeof _op->attestation, j, "attestation");
    copy(_op->leaf, sizeof _op->leaf, j, "leaf");
    copy(_op->auth, sizeof _op->auth, j, "auth");
    copy(_op->etag, sizeof _op->etag, j, "etag");
    /* An operation of the older form: no answer kept, but the TPM blob. */
    const char *ta = json_string_value(json_object_get(j, "tpmAuthenticationKey"));
    if (ta != NULL && (_op->tpm_auth = strdup(ta)) == NULL) {
        json_decref(j);
        cu_srv__op_clear(_op);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    json_decref(j);
    return CU_OK;
}

void cu_srv__op_clear(cu_srv__op *op)
{
    free(op->tpm_auth);
    free(op->reply);
    memset(op, 0, sizeof *op);
}
