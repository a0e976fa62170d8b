/* Operations: what a device polls after its PUT. One per device (the latest
 * registration attempt), kept in the store's sealed settings under
 * "op:<lower-case registration id>", so that any custosd sharing the store
 * can answer the poll and the table grows with devices, not with requests. */
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

static void key_of(const char *registration_id, char key[160])
{
    size_t i = 0;
    memcpy(key, "op:", 3);
    for (; registration_id[i] && i < 128; i++)
        key[3 + i] = (char)tolower((unsigned char)registration_id[i]);
    key[3 + i] = 0;
}

cu_rc cu_srv__op_put(cu_store *s, const cu_srv__op *op)
{
    char key[160];
    key_of(op->registration_id, key);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s*}", "operationId", op->op_id, "registrationId",
                          op->registration_id, "attestation", op->attestation, "leaf", op->leaf, "auth", op->auth,
                          "etag", op->etag, "tpmAuthenticationKey", op->tpm_auth);
    char *body = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    cu_rc rc = body ? cu_store_setting_put(s, key, body) : cu_err_set(CU_E_NOMEM, "out of memory");
    free(body);
    json_decref(j);
    return rc;
}

static void copy(char *dst, size_t n, json_t *j, const char *k)
{
    const char *v = json_string_value(json_object_get(j, k));
    snprintf(dst, n, "%s", v ? v : "");
}

cu_rc cu_srv__op_get(cu_store *s, const char *registration_id, cu_srv__op *_op)
{
    char key[160], *body = NULL;
    json_error_t e;
    key_of(registration_id, key);
    cu_rc rc = cu_store_setting_get(s, key, &body);
    if (rc != CU_OK)
        return rc;
    json_t *j = json_loads(body, 0, &e);
    free(body);
    if (j == NULL)
        return cu_err_set(CU_E_STATE, "stored operation does not parse");
    memset(_op, 0, sizeof *_op);
    copy(_op->op_id, sizeof _op->op_id, j, "operationId");
    copy(_op->registration_id, sizeof _op->registration_id, j, "registrationId");
    copy(_op->attestation, sizeof _op->attestation, j, "attestation");
    copy(_op->leaf, sizeof _op->leaf, j, "leaf");
    copy(_op->auth, sizeof _op->auth, j, "auth");
    copy(_op->etag, sizeof _op->etag, j, "etag");
    const char *ta = json_string_value(json_object_get(j, "tpmAuthenticationKey"));
    if (ta != NULL && (_op->tpm_auth = strdup(ta)) == NULL) {
        json_decref(j);
        return cu_err_set(CU_E_NOMEM, "out of memory");
    }
    json_decref(j);
    return CU_OK;
}

void cu_srv__op_clear(cu_srv__op *op)
{
    free(op->tpm_auth);
    memset(op, 0, sizeof *op);
}
