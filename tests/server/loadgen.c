/* cu_loadgen: the load tests' driver. `run ...` is `custos bench load ...`
 * (the same code, tools/bench_load.c); `check` opens the store and checks
 * that every id listed (or <prefix>0..N-1) has an assigned record. */
#include <custos/server.h>
#include <custos/store.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cu_bench_load(int argc, char **argv);

static int check(const char *state, const char *prefix, long count, const char *ids_file)
{
    cu_srv_config cfg;
    cu_srv_state *st = NULL;
    cu_store *s = NULL;
    long missing = 0, checked = 0;
    cu_srv_config_init(&cfg);
    cu_srv_config_set(&cfg, "state", state);
    if (cu_srv_state_open(&cfg, false, &st) != CU_OK || cu_srv_state_store_open(st, &s) != CU_OK) {
        fprintf(stderr, "cu_loadgen: %s\n", cu_err_last()->msg);
        return 1;
    }
    FILE *f = ids_file ? fopen(ids_file, "r") : NULL;
    char id[200];
    for (long i = 0;; i++) {
        if (f != NULL) {
            if (fgets(id, sizeof id, f) == NULL)
                break;
            id[strcspn(id, "\r\n")] = 0;
        } else {
            if (i >= count)
                break;
            snprintf(id, sizeof id, "%s%ld", prefix, i);
        }
        cu_reg_record rec;
        checked++;
        if (cu_store_reg_get(s, id, &rec) != CU_OK || strcmp(rec.status, "assigned") != 0) {
            if (missing++ < 5)
                fprintf(stderr, "cu_loadgen: no assigned record for %s\n", id);
        }
        cu_reg_record_clear(&rec);
    }
    if (f != NULL)
        fclose(f);
    uint64_t total = 0;
    cu_store_count(s, CU_KIND_REGISTRATION, &total);
    printf("checked %ld, missing %ld, records in the store %llu\n", checked, missing, (unsigned long long)total);
    cu_store_close(s);
    cu_srv_state_free(st);
    cu_srv_config_clear(&cfg);
    return missing == 0 && checked > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "run"))
        return cu_bench_load(argc - 1, argv + 1);
    if (argc == 6 && !strcmp(argv[1], "check"))
        return check(argv[2], argv[3], atol(argv[4]), strcmp(argv[5], "-") ? argv[5] : NULL);
    fprintf(stderr, "usage: cu_loadgen run [bench load options] | check STATE PREFIX COUNT IDS_FILE|-\n");
    return 2;
}
