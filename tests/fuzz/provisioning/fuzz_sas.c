/* libFuzzer: the SAS token parser and verifier. */
#include <custos/sas.h>

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const uint8_t key[32] = "fuzz-key-fuzz-key-fuzz-key-fuzz";
    cu_sas *sas = NULL;
    if (cu_sas_parse((const char *)data, size, &sas) == CU_OK) {
        cu_sas_key k = {key, sizeof key, "primary"};
        cu_sas_check chk = {"0ne00000001", "dev-1", "registration", 1700000000, 60};
        char reason[256];
        size_t m;
        (void)cu_sas_verify(sas, &chk, &k, 1, &m, reason, sizeof reason);
        (void)cu_sas_get0_sr_decoded(sas);
        cu_sas_free(sas);
    }
    return 0;
}
