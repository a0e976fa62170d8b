/* TPM attestation for cu_dev_register (PROTOCOL.md §3.2): the device sends
 * its EK and SRK, answers the 401 challenge inside its TPM (ActivateCredential,
 * Import, a SAS signed with the imported key) and, once assigned, imports the
 * second blob — the hub key — too. Everything TPM-side is custos/tpmdev.h. */
#include "dev_int.h"

#include <custos/tpmdev.h>

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The lifetime the C SDK gives its TPM-signed SAS (PROTOCOL.md §3.7). */
#define TPM_SAS_LIFETIME 2400

/* Prefixes the recorded error (copied first: cu_err_set writes where
 * cu_err_last() points). */
static cu_rc wrap(cu_rc rc, const char *what)
{
    char msg[400];
    snprintf(msg, sizeof msg, "%.399s", cu_err_last()->msg);
    return cu_err_set(rc, "%s: %s", what, msg);
}

cu_rc cu_dev__tpm_open(const cu_dev_config *cfg, cu_dev__tpm *t)
{
    memset(t, 0, sizeof *t);
    cu_tpmdev_opts o = {.ek = cfg->tpm_ek_ecc ? CU_TPMDEV_EK_ECC : CU_TPMDEV_EK_RSA,
                        .srk_handle = cfg->tpm_srk_handle};
    /* tpm2-tss logs its failures itself; ours carry the same, once. */
    setenv("TSS2_LOG", "all+none", 0);
    cu_rc rc = cu_tpmdev_open(cfg->tpm_tcti, &o, &t->dev);
    if (rc == CU_OK)
        rc = cu_tpmdev_identity(t->dev, &t->ek_b64, &t->srk_b64, t->regid);
    if (rc != CU_OK)
        cu_dev__tpm_close(t);
    return rc;
}

void cu_dev__tpm_close(cu_dev__tpm *t)
{
    cu_tpmdev_close(t->dev);
    free(t->ek_b64);
    free(t->srk_b64);
    memset(t, 0, sizeof *t);
}

bool cu_dev__tpm_is_challenge(json_t *ans)
{
    /* What the C SDK reads as a challenge: authenticationKey and keyName,
     * no status. */
    return json_is_string(json_object_get(ans, "authenticationKey")) &&
           json_is_string(json_object_get(ans, "keyName")) && json_object_get(ans, "status") == NULL;
}

cu_rc cu_dev__tpm_answer(cu_dev__tpm *t, const cu_dev_config *cfg, const char *regid, json_t *ans,
                         char **_authz)
{
    const char *blob = json_string_value(json_object_get(ans, "authenticationKey"));
    const char *skn = json_string_value(json_object_get(ans, "keyName"));
    char *token = NULL;
    *_authz = NULL;
    cu_rc rc = cu_tpmdev_import_blob(t->dev, blob);
    if (rc != CU_OK)
        return wrap(rc, "the TPM could not take the service's challenge");
    if ((rc = cu_tpmdev_sas_token(t->dev, cfg->id_scope, regid, (uint64_t)time(NULL) + TPM_SAS_LIFETIME, skn,
                                  &token)) != CU_OK)
        return wrap(rc, "TPM: signing the SAS token");
    if (asprintf(_authz, "Authorization: %s", token) < 0) {
        *_authz = NULL;
        rc = cu_err_set(CU_E_NOMEM, "out of memory");
    }
    OPENSSL_cleanse(token, strlen(token));
    free(token);
    return rc;
}

cu_rc cu_dev__tpm_assigned(cu_dev__tpm *t, json_t *ans)
{
    json_t *rs = json_object_get(ans, "registrationState");
    const char *blob = json_string_value(json_object_get(json_object_get(rs, "tpm"), "authenticationKey"));
    /* Both public SDKs fail without it (PROTOCOL.md §3.8). */
    if (blob == NULL)
        return cu_err_set(CU_E_PARSE, "assigned, but without registrationState.tpm.authenticationKey");
    cu_rc rc = cu_tpmdev_import_blob(t->dev, blob);
    if (rc != CU_OK)
        return wrap(rc, "assigned, but the TPM could not import the hub key");
    return CU_OK;
}
