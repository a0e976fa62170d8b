/* custos ca …: CA certificates registered with the service, verified by
 * proof of possession (a verification code signed by the CA's key). */
#include "cli.h"

#include <custos/state.h>
#include <custos/store.h>
#include <custos/x509.h>

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

int cu_pcli_open(const char *state, cu_state **_st);
char *cu_pcli_read_file(const char *path, size_t max, size_t *_len);

static void usage(FILE *f)
{
    fputs("usage: custos ca <command> [options]\n\n"
          "commands:\n"
          "  add NAME --cert CA.pem [--verified]      register a CA certificate (--verified: trust on upload)\n"
          "  show NAME                                the CA, its thumbprint and whether it is verified\n"
          "  list                                     all CA certificates\n"
          "  verification-code NAME [--etag E]        issue a code: sign a certificate whose subject CN is it\n"
          "  verify NAME --cert PROOF.pem [--etag E]  prove possession of the CA key\n"
          "  delete NAME [--etag E]                   remove (refused while a group references it)\n"
          "\ncommon: --state DIR (default ./var), --json\n"
          "A proof certificate can be made with: custos pki verification-cert --ca-cert CA.pem --ca-key CA.key --code CODE\n",
          f);
}

int cu_cmd_ca(int argc, char **argv)
{
    static const struct option opts[] = {
        {"state", required_argument, NULL, 's'}, {"cert", required_argument, NULL, 'c'},
        {"etag", required_argument, NULL, 'e'},  {"verified", no_argument, NULL, 'v'},
        {"json", no_argument, NULL, 'j'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *state = NULL, *cert = NULL, *etag = NULL;
    bool verified = false, json = false;
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
        case 'c': cert = optarg; break;
        case 'e': etag = optarg; break;
        case 'v': verified = true; break;
        case 'j': json = true; break;
        case 'h': usage(stdout); return CU_EXIT_OK;
        default: return cu_cli_usage("ca", "unknown or incomplete option '%s'", argv[optind - 1]);
        }
    }
    const char *name = optind < argc ? argv[optind] : NULL;
    if (strcmp(cmd, "list") != 0 && name == NULL)
        return cu_cli_usage("ca", "%s needs a NAME", cmd);
    cu_state *st = NULL;
    char reason[512] = "", *text = NULL, *out = NULL;
    if ((rc = cu_pcli_open(state, &st)) != 0)
        return rc;
    cu_store *s = cu_state_get0_store(st);
    if (strcmp(cmd, "add") == 0 || strcmp(cmd, "verify") == 0) {
        if (cert == NULL) {
            rc = cu_cli_usage("ca", "%s needs --cert FILE", cmd);
            goto cleanup;
        }
        if ((text = cu_pcli_read_file(cert, CU_X509_MAX_INPUT, NULL)) == NULL) {
            rc = CU_EXIT_FAIL;
            goto cleanup;
        }
        cu_rc r = strcmp(cmd, "add") == 0 ? cu_store_ca_add(s, name, text, verified, reason, sizeof reason)
                                          : cu_store_ca_verify(s, name, etag, text, reason, sizeof reason);
        if (r != CU_OK) {
            rc = cu_cli_fail("%s", reason);
            goto cleanup;
        }
        if (!json)
            printf("%s %s\n", strcmp(cmd, "add") == 0 ? "added" : "verified", name);
    } else if (strcmp(cmd, "verification-code") == 0) {
        char *code = NULL;
        if (cu_store_ca_gen_code(s, name, etag, &code, reason, sizeof reason) != CU_OK) {
            rc = cu_cli_fail("%s", reason);
            goto cleanup;
        }
        if (json)
            printf("{\"verificationCode\":\"%s\"}\n", code);
        else
            printf("%s\n", code);
        free(code);
        goto cleanup;
    } else if (strcmp(cmd, "delete") == 0) {
        if (cu_store_ca_delete(s, name, etag, reason, sizeof reason) != CU_OK)
            rc = cu_cli_fail("%s", reason);
        else if (!json)
            printf("deleted %s\n", name);
        else
            printf("{\"deleted\":true}\n");
        goto cleanup;
    } else if (strcmp(cmd, "list") == 0) {
        char **ids = NULL;
        size_t n = 0;
        if (cu_store_list(s, CU_KIND_CA, NULL, 1000, &ids, &n) != CU_OK) {
            rc = cu_cli_fail("%s", cu_err_last()->msg);
            goto cleanup;
        }
        if (json)
            printf("[");
        for (size_t i = 0; i < n; i++) {
            char *js = NULL;
            X509 *x = NULL;
            bool v = false;
            if (json && cu_store_ca_get_json(s, ids[i], &js) == CU_OK)
                printf("%s%s", i ? "," : "", js);
            else if (!json && cu_store_ca_get_cert(s, ids[i], &x, &v) == CU_OK) {
                char *subj = cu_x509_name_str(X509_get_subject_name(x));
                printf("%-30s %-10s %s\n", ids[i], v ? "verified" : "unverified", subj ? subj : "");
                free(subj);
            } else if (!json)
                printf("%-30s ERROR %s\n", ids[i], cu_err_last()->msg);
            free(js);
            X509_free(x);
        }
        if (json)
            printf("]\n");
        cu_store_ids_free(ids, n);
        goto cleanup;
    } else if (strcmp(cmd, "show") != 0) {
        rc = cu_cli_usage("ca", "unknown command '%s'", cmd);
        goto cleanup;
    }
    if ((json || strcmp(cmd, "show") == 0) && cu_store_ca_get_json(s, name, &out) != CU_OK) {
        rc = cu_cli_fail("%s", cu_err_last()->msg);
        goto cleanup;
    }
    if (out)
        puts(out);
cleanup:
    free(out);
    free(text);
    cu_state_close(st);
    return rc;
}
