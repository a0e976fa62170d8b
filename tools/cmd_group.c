/* custos group …: enrollment groups (the code is shared with `enrollment`),
 * and the store's limit on symmetric-key groups. */
#include "cli.h"

#include <custos/enrollment.h>
#include <custos/state.h>
#include <custos/store.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

int cu_pcli_enr(cu_enr_kind kind, int argc, char **argv);
int cu_pcli_open(const char *state, cu_state **_st);

/* symkey-limit [N]: shows, or sets then shows, how many symmetric-key
 * groups the store may hold. */
static int cmd_symkey_limit(int argc, char **argv)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0},
    };
    const char *state = NULL;
    bool json = false;
    int c, rc;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 's': state = optarg; break;
        case 'j': json = true; break;
        default: return cu_cli_usage("group", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    const char *arg = optind < argc ? argv[optind] : NULL;
    unsigned long want = 0;
    if (arg != NULL) {
        char *end = NULL;
        want = strtoul(arg, &end, 10);
        if (end == arg || *end != 0 || want == 0 || want > CU_STORE_MAX_SYMKEY_GROUPS_CEILING)
            return cu_cli_usage("group", "symkey-limit is a count, 1..%d", CU_STORE_MAX_SYMKEY_GROUPS_CEILING);
    }
    cu_state *st = NULL;
    if ((rc = cu_pcli_open(state, &st)) != 0)
        return rc;
    cu_store *s = cu_state_get0_store(st);
    unsigned long max = 0;
    if ((arg != NULL && cu_store_set_symkey_group_limit(s, want) != CU_OK) ||
        cu_store_symkey_group_limit(s, &max) != CU_OK)
        rc = cu_cli_fail("%s", cu_err_last()->msg);
    else if (json)
        printf("{\"maxSymmetricKeyGroups\":%lu}\n", max);
    else
        printf("%lu\n", max);
    cu_state_close(st);
    return rc;
}

int cu_cmd_group(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "symkey-limit") == 0)
        return cmd_symkey_limit(argc - 1, argv + 1);
    return cu_pcli_enr(CU_ENR_GROUP, argc, argv);
}
