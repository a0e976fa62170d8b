/* Internals of libcustos_device. */
#ifndef CU_DEV_INT_H
#define CU_DEV_INT_H

#include <custos/device.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <stdbool.h>


/* TPM attestation (tpm.c, on custos/tpmdev.h). */
struct cu_tpmdev;
typedef struct cu_dev__tpm {
    struct cu_tpmdev *dev;
    char *ek_b64, *srk_b64; /* as the body's tpm{} sends them */
    char regid[53];         /* the default registration id */
} cu_dev__tpm;
/* Opens the TPM of cfg and reads (or makes) its EK and SRK. */
cu_rc cu_dev__tpm_open(const cu_dev_config *cfg, cu_dev__tpm *t);
void cu_dev__tpm_close(cu_dev__tpm *t);
/* True if a 401 body is a TPM challenge (authenticationKey + keyName). */
bool cu_dev__tpm_is_challenge(json_t *ans);
/* Takes the challenge into the TPM and signs the SAS there: *_authz is the
 * "Authorization: ..." header line (caller frees). */
cu_rc cu_dev__tpm_answer(cu_dev__tpm *t, const cu_dev_config *cfg, const char *regid, json_t *ans,
                         char **_authz);
/* The final answer: imports registrationState.tpm.authenticationKey. */
cu_rc cu_dev__tpm_assigned(cu_dev__tpm *t, json_t *ans);

#endif
