/* libFuzzer target: the two parsers of untrusted TPM input on the service
 * and device sides — a marshalled TPM2B_PUBLIC (tpm.endorsementKey /
 * storageRootKey of a request) and an authenticationKey blob — and what
 * runs on a public area that parses (Name, role checks, key comparison,
 * registration id). */
#include <custos/tpm.h>

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cu_tpm_pub *p = NULL;
    if (cu_tpm_pub_parse(data, size, &p) == CU_OK) {
        uint8_t name[CU_TPM_NAME_MAX];
        size_t nl = 0;
        char id[CU_TPM_REGID_LEN + 1];
        cu_tpm_pub_name(p, name, &nl);
        cu_tpm_pub_check(p, CU_TPM_ROLE_EK);
        cu_tpm_pub_check(p, CU_TPM_ROLE_SRK);
        (void)cu_tpm_pub_same_key(p, p);
        cu_tpm_registration_id(p, id);
        cu_tpm_pub_free(p);
    }
    cu_tpm_blob_fields f;
    cu_tpm_blob_split(data, size, &f);
    return 0;
}
