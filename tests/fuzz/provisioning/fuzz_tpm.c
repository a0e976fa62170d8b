/* libFuzzer: TPM2B_PUBLIC parsing (endorsement and storage root keys as
 * devices send them), base64 and raw. */
#include <custos/tpm.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cu_tpm_pub *pub = NULL;
    if (cu_tpm_pub_decode_raw(data, size, &pub) == CU_OK) {
        uint8_t name[34];
        cu_tpm_pub_name(pub, name);
        cu_tpm_pub_free(pub);
    }
    char *s = malloc(size + 1);
    if (s == NULL)
        return 0;
    memcpy(s, data, size);
    s[size] = 0;
    if (cu_tpm_pub_decode(s, &pub) == CU_OK)
        cu_tpm_pub_free(pub);
    char *id = NULL;
    if (cu_tpm_registration_id(s, &id) == CU_OK)
        free(id);
    free(s);
    return 0;
}
