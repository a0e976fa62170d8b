/* libFuzzer: the enrollment JSON parser (individual and group) and the
 * JSON writer. */
#include <custos/enrollment.h>

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    cu_enr_kind kind = data[0] & 1 ? CU_ENR_GROUP : CU_ENR_INDIVIDUAL;
    cu_enr *e = NULL;
    char reason[512];
    if (cu_enr_parse(kind, (const char *)data + 1, size - 1, &e, reason, sizeof reason) == CU_OK) {
        free(cu_enr_to_json(e, 0));
        free(cu_enr_to_json(e, CU_ENR_JSON_SHOW_KEYS | CU_ENR_JSON_COMPACT));
        (void)cu_enr_get0_allocation_policy(e);
        (void)cu_enr_get0_cert(e, CU_ENR_PRIMARY);
        cu_enr_free(e);
    }
    return 0;
}
