/* libFuzzer target: the two parsers of untrusted TPM input on the service
 * and device sides — a marshalled TPM2B_PUBLIC (tpm.endorsementKey /
 * storageRootKey of a request) and an authenticationKey blob — and what
 * runs on a public area that parses (Name, role checks, key comparison,
 * registration id); and the base64 form of a public area. */
#include <custos/tpmsvc.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cu_tpmsvc_pub *p = NULL;
    if (cu_tpmsvc_pub_parse(data, size, &p) == CU_OK) {
        uint8_t name[CU_TPM_NAME_MAX];
        size_t nl = 0;
        char id[CU_TPM_REGID_LEN + 1];
        cu_tpmsvc_pub_name(p, name, &nl);
        cu_tpmsvc_pub_check(p, CU_TPM_ROLE_EK);
        cu_tpmsvc_pub_check(p, CU_TPM_ROLE_SRK);
        (void)cu_tpmsvc_pub_same_key(p, p);
        cu_tpmsvc_registration_id(p, id);
        cu_tpmsvc_pub_free(p);
    }
    cu_tpmsvc_blob_fields f;
    cu_tpmsvc_blob_split(data, size, &f);
    /* The same bytes as the base64 text of a request or an enrollment. */
    char *s = malloc(size + 1);
    if (s != NULL) {
        memcpy(s, data, size);
        s[size] = '\0';
        bool match;
        cu_tpmsvc_ek_match(s, s, &match);
        free(s);
    }
    return 0;
}
