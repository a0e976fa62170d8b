/* custos registration …: the registration records devices left. */
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
    fputs("usage: custos registration <command> [options]\n\n"
          "commands:\n"
          "  show REGISTRATION-ID                 the device's registration state\n"
          "  list [--group G] [--page-size N] [--after ID]\n"
          "                                       records in id order (of one enrollment group)\n"
          "  delete REGISTRATION-ID [--etag E]    forget a registration (the device registers afresh)\n"
          "\ncommon: --state DIR (default ./var), --json\n",
          f);
}

static void print_rec(const cu_reg_record *r, bool json)
{
    if (json) {
        char *s = cu_reg_record_to_json(r, false);
        puts(s ? s : "{}");
        free(s);
        return;
    }
    printf("%-24s %s\n%-24s %s\n%-24s %s\n%-24s %s%s%s\n", "registrationId:", r->registration_id,
           "deviceId:", r->device_id, "assignedHub:", r->assigned_hub, "status:", r->status,
           r->substatus[0] ? " / " : "", r->substatus);
    if (r->error_code)
        printf("%-24s %d %s\n", "error:", r->error_code, r->error_message);
    printf("%-24s %s%s%s\n", "attestation:", r->attestation, r->enrollment_group_id[0] ? " via group " : " (individual)",
           r->enrollment_group_id);
    printf("%-24s %s\n%-24s %s\n%-24s %s\n", "etag:", r->etag, "created:", r->created, "updated:", r->updated);
    if (r->payload_json)
        printf("%-24s %s\n", "payload:", r->payload_json);
}

int cu_cmd_registration(int argc, char **argv)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'},     {"etag", required_argument, NULL, 'e'},
        {"page-size", required_argument, NULL, 'p'}, {"after", required_argument, NULL, 'a'},
        {"group", required_argument, NULL, 'g'},     {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *state = NULL, *etag = NULL, *after = NULL, *group = NULL;
    long page = 100;
    bool json = false;
    int c, rc;
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
        case 'e': etag = optarg; break;
        case 'p': page = strtol(optarg, NULL, 10); break;
        case 'a': after = optarg; break;
        case 'g': group = optarg; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return CU_EXIT_OK;
        default: return cu_cli_usage("registration", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    if (page < 1 || page > 10000)
        return cu_cli_usage("registration", "--page-size must be 1..10000");
    const char *id = optind < argc ? argv[optind] : NULL;
    if (strcmp(cmd, "list") != 0 && id == NULL)
        return cu_cli_usage("registration", "%s needs a REGISTRATION-ID", cmd);
    cu_state *st = NULL;
    char reason[512];
    cu_reg_record r;
    memset(&r, 0, sizeof r);
    if ((rc = cu_pcli_open(state, &st)) != 0)
        return rc;
    cu_store *s = cu_state_get0_store(st);
    if (strcmp(cmd, "show") == 0) {
        if (cu_store_reg_get(s, id, &r) != CU_OK)
            rc = cu_cli_fail("%s", cu_err_last()->msg);
        else
            print_rec(&r, json);
    } else if (strcmp(cmd, "delete") == 0) {
        if (cu_store_reg_delete(s, id, etag, reason, sizeof reason) != CU_OK)
            rc = cu_cli_fail("%s", reason);
        else if (!json)
            printf("deleted %s\n", id);
        else
            printf("{\"deleted\":true}\n");
    } else if (strcmp(cmd, "list") == 0) {
        char **ids = NULL;
        size_t n = 0;
        cu_rc lr = group ? cu_store_reg_list_by_group(s, group, after, (size_t)page, &ids, &n)
                         : cu_store_list(s, CU_KIND_REGISTRATION, after, (size_t)page, &ids, &n);
        if (lr != CU_OK) {
            rc = cu_cli_fail("%s", cu_err_last()->msg);
            goto cleanup;
        }
        if (json)
            printf("[");
        for (size_t i = 0; i < n; i++) {
            if (cu_store_reg_get(s, ids[i], &r) != CU_OK) {
                fprintf(stderr, "custos: %s: %s\n", ids[i], cu_err_last()->msg);
                rc = CU_EXIT_FAIL;
                continue;
            }
            if (json) {
                char *js = cu_reg_record_to_json(&r, true);
                printf("%s%s", i ? "," : "", js ? js : "{}");
                free(js);
            } else {
                printf("%-40s %-9s %-35s %s\n", r.registration_id, r.status, r.assigned_hub,
                       r.enrollment_group_id[0] ? r.enrollment_group_id : "(individual)");
            }
            cu_reg_record_clear(&r);
        }
        if (json)
            printf("]\n");
        else if (n == (size_t)page)
            fprintf(stderr, "(more: --after %s)\n", ids[n - 1]);
        cu_store_ids_free(ids, n);
    } else {
        rc = cu_cli_usage("registration", "unknown command '%s'", cmd);
    }
cleanup:
    cu_reg_record_clear(&r);
    cu_state_close(st);
    return rc;
}
