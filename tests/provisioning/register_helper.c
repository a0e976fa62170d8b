/* Registers one symmetric-key device through the engine on a state
 * directory, as custosd would, so that the shell tests of the commands have
 * a registration record to show and delete (no command registers locally).
 *
 * usage: prov_register_helper STATE-DIR REGISTRATION-ID KEY-FILE
 * KEY-FILE holds the base64 key of the device's individual enrollment.
 * Prints the record's status; exit 0 when the device was provisioned. */
#include <custos/prov.h>
#include <custos/sas.h>
#include <custos/state.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(int argc, char **argv)
{
    char b64[256] = "", *tok = NULL;
    uint8_t *k = NULL;
    size_t kl = 0;
    cu_state *st = NULL;
    cu_prov *p = NULL;
    int rc = 1;
    if (argc != 4) {
        fprintf(stderr, "usage: %s STATE-DIR REGISTRATION-ID KEY-FILE\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[3], "r");
    if (f == NULL || fgets(b64, sizeof b64, f) == NULL) {
        fprintf(stderr, "cannot read %s\n", argv[3]);
        if (f != NULL)
            fclose(f);
        return 1;
    }
    fclose(f);
    b64[strcspn(b64, "\r\n")] = 0;
    if (cu_state_open(argv[1], NULL, &st) != CU_OK || cu_sas_key_decode(b64, &k, &kl) != CU_OK)
        goto fail;
    cu_prov_config cfg = {.id_scope = cu_state_id_scope(st), .use_default_skew = true};
    if (cu_prov_new(cu_state_get0_store(st), &cfg, &p) != CU_OK ||
        cu_sas_sign(k, kl, cfg.id_scope, argv[2], (uint64_t)time(NULL) + 600, "registration", &tok) != CU_OK)
        goto fail;
    cu_prov_request req = {.registration_id = argv[2], .authorization = tok};
    cu_prov_result res;
    if (cu_prov_register(p, &req, &res) != CU_OK)
        goto fail;
    printf("%s %s\n", res.outcome == CU_PROV_PROVISION ? res.record.status : "refused", res.explain.reason);
    rc = res.outcome == CU_PROV_PROVISION ? 0 : 1;
    cu_prov_result_clear(&res);
    goto done;
fail:
    fprintf(stderr, "%s\n", cu_err_last()->msg);
done:
    free(tok);
    cu_sas_key_free(k, kl);
    cu_prov_free(p);
    cu_state_close(st);
    return rc;
}
