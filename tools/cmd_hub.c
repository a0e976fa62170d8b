/* custos hub …: the hubs devices are assigned to, with allocation weights. */
#include "cli.h"

#include <custos/record.h>
#include <custos/state.h>
#include <custos/store.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

int cu_pcli_open(const char *state, cu_state **_st);

static void usage(FILE *f)
{
    fputs("usage: custos hub <command> [options]\n\n"
          "commands:\n"
          "  add HOST [--weight N] [--no-apply]   link a hub (allocationWeight 1..1000, default 1)\n"
          "  update HOST [--weight N] [--apply | --no-apply]\n"
          "  show HOST | list | delete HOST\n"
          "  default-policy [hashed|geoLatency|static]   the policy of enrollments that name none\n"
          "--no-apply: applyAllocationPolicy=false, the hub keeps its devices but gets no new ones.\n"
          "\ncommon: --state DIR (default ./var), --json\n",
          f);
}

static void print_hub(const cu_hub *h, bool json, bool first)
{
    if (json) {
        printf("%s{\"name\":", first ? "" : ",");
        cu_cli_json_str(stdout, h->name);
        printf(",\"allocationWeight\":%u,\"applyAllocationPolicy\":%s}", h->weight, h->apply ? "true" : "false");
    } else {
        printf("%-40s weight %-4u %s\n", h->name, h->weight, h->apply ? "" : "(no new devices)");
    }
}

int cu_cmd_hub(int argc, char **argv)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'}, {"weight", required_argument, NULL, 'w'},
        {"apply", no_argument, NULL, 'a'},       {"no-apply", no_argument, NULL, 'n'},
        {"json", no_argument, NULL, 'j'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *state = NULL;
    long weight = -1;
    int apply = -1, c, rc;
    bool json = false;
    if (argc < 2 || cu_cli_is_help(argv[1])) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? CU_EXIT_USAGE : CU_EXIT_OK;
    }
    const char *cmd = argv[1];
    argc--;
    argv++;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': state = optarg; break;
        case 'w': weight = strtol(optarg, NULL, 10); break;
        case 'a': apply = 1; break;
        case 'n': apply = 0; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return CU_EXIT_OK;
        default: return cu_cli_usage("hub", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    const char *name = optind < argc ? argv[optind] : NULL;
    if (strcmp(cmd, "list") != 0 && strcmp(cmd, "default-policy") != 0 && name == NULL)
        return cu_cli_usage("hub", "%s needs a HOST", cmd);
    cu_state *st = NULL;
    char reason[512] = "";
    if ((rc = cu_pcli_open(state, &st)) != 0)
        return rc;
    cu_store *s = cu_state_get0_store(st);
    cu_hub h;
    memset(&h, 0, sizeof h);
    if (strcmp(cmd, "add") == 0 || strcmp(cmd, "update") == 0) {
        bool exists = cu_store_hub_get(s, name, &h) == CU_OK;
        if (strcmp(cmd, "add") == 0 && exists) {
            rc = cu_cli_fail("hub '%s' already exists", name);
            goto cleanup;
        }
        if (strcmp(cmd, "update") == 0 && !exists) {
            rc = cu_cli_fail("no hub '%s'", name);
            goto cleanup;
        }
        if (!exists) {
            snprintf(h.name, sizeof h.name, "%s", name);
            h.weight = 1;
            h.apply = true;
        }
        if (weight >= 0)
            h.weight = (unsigned)weight;
        if (apply >= 0)
            h.apply = apply;
        if (weight > 1000 || cu_store_hub_put(s, &h, reason, sizeof reason) != CU_OK) {
            rc = cu_cli_fail("%s", reason[0] ? reason : "allocationWeight must be 1..1000");
            goto cleanup;
        }
        print_hub(&h, json, true);
        if (json)
            putchar('\n');
    } else if (strcmp(cmd, "show") == 0) {
        if (cu_store_hub_get(s, name, &h) != CU_OK) {
            rc = cu_cli_fail("%s", cu_err_last()->msg);
            goto cleanup;
        }
        print_hub(&h, json, true);
        if (json)
            putchar('\n');
    } else if (strcmp(cmd, "delete") == 0) {
        if (cu_store_hub_delete(s, name) != CU_OK)
            rc = cu_cli_fail("%s", cu_err_last()->msg);
        else if (!json)
            printf("deleted %s\n", name);
        else
            printf("{\"deleted\":true}\n");
    } else if (strcmp(cmd, "default-policy") == 0) {
        char *cur = NULL;
        if (name != NULL) {
            /* custom cannot be the default (it needs a webhook per enrollment). */
            if (strcmp(name, "hashed") != 0 && strcmp(name, "geoLatency") != 0 && strcmp(name, "static") != 0) {
                rc = cu_cli_usage("hub", "default-policy is hashed, geoLatency or static");
                goto cleanup;
            }
            if (cu_store_setting_put(s, "defaultAllocationPolicy", name) != CU_OK) {
                rc = cu_cli_fail("%s", cu_err_last()->msg);
                goto cleanup;
            }
        }
        cu_rc gr = cu_store_setting_get(s, "defaultAllocationPolicy", &cur);
        const char *shown = gr == CU_OK ? cur : "hashed";
        if (json)
            printf("{\"defaultAllocationPolicy\":\"%s\"}\n", shown);
        else
            printf("%s\n", shown);
        free(cur);
    } else if (strcmp(cmd, "list") == 0) {
        cu_hub *hubs = NULL;
        size_t n = 0;
        if (cu_store_hub_list(s, &hubs, &n) != CU_OK) {
            rc = cu_cli_fail("%s", cu_err_last()->msg);
            goto cleanup;
        }
        if (json)
            printf("[");
        for (size_t i = 0; i < n; i++)
            print_hub(&hubs[i], json, i == 0);
        if (json)
            printf("]\n");
        free(hubs);
    } else {
        rc = cu_cli_usage("hub", "unknown command '%s'", cmd);
    }
cleanup:
    cu_state_close(st);
    return rc;
}
